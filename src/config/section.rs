//! The JSON walker every reader uses: one object at a time, remembering which keys were asked
//! for so that any other key is reported as unknown with its full path and, for a near miss
//! such as `Servers`, the key that was meant.

use super::keys::Shape;
use super::{parse_duration, ConfigError};
use serde_json::{Map, Value};
use std::time::Duration;

/// One JSON object being read: remembers which keys were asked for, so that any other key
/// can be reported as unknown, with its full path.
pub(super) struct Section<'a> {
    pub(super) file: &'a str,
    pub(super) path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    pub(super) fn new(file: &'a str, path: String, value: &'a Value) -> Result<Section<'a>, ConfigError> {
        match value {
            Value::Object(map) => Ok(Section { file, path, map, known: Vec::new() }),
            _ => Err(ConfigError { file: file.to_string(), key: path, problem: "must be a JSON object".to_string() }),
        }
    }

    pub(super) fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A problem with this object as a whole.
    pub(super) fn error_here(&self, problem: &str) -> ConfigError {
        ConfigError { file: self.file.to_string(), key: self.path.clone(), problem: problem.to_string() }
    }

    pub(super) fn error(&self, key: &str, problem: &str) -> ConfigError {
        ConfigError { file: self.file.to_string(), key: self.child_path(key), problem: problem.to_string() }
    }

    /// Whether the object has `key`, without counting it as read.
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(super) fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key)
    }

    pub(super) fn str(&mut self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    pub(super) fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(key, "must be true or false")),
        }
    }

    pub(super) fn uint(&mut self, key: &'static str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let range = if max == u64::MAX {
            format!("must be a whole number of at least {min}")
        } else {
            format!("must be a whole number from {min} to {max}")
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(self.error(key, &range)),
            },
            Some(_) => Err(self.error(key, &range)),
        }
    }

    /// A number above 0 and at most 100.
    pub(super) fn percent(&mut self, key: &'static str) -> Result<Option<f64>, ConfigError> {
        match self.get(key).map(Value::as_f64) {
            None => Ok(None),
            Some(Some(v)) if v > 0.0 && v <= 100.0 => Ok(Some(v)),
            Some(_) => Err(self.error(key, "must be a percentage above 0 and at most 100, such as 90 or 99.5")),
        }
    }

    pub(super) fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s).map(Some).map_err(|p| self.error(key, &p)),
            Some(_) => Err(self.error(key, "must be a duration string with a unit, such as \"2s\"")),
        }
    }

    pub(super) fn section(&mut self, key: &'static str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => Section::new(self.file, self.child_path(key), value).map(Some),
        }
    }

    /// Fails on the first key `shape` does not declare. Readers call it before reading, so
    /// that a misspelt key is reported before the key it leaves missing: `Servers` is an
    /// unknown key (did you mean `servers`?), not a missing `servers`.
    pub(super) fn allow(&self, shape: &Shape) -> Result<(), ConfigError> {
        self.allow_names(&shape.names())
    }

    /// [`Section::allow`] for a list of names put together by the caller.
    pub(super) fn allow_names(&self, keys: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|key| !keys.contains(&key.as_str())) {
            Some(key) => Err(self.unknown(key, keys)),
            None => Ok(()),
        }
    }

    /// Fails on the first key that nothing asked for.
    pub(super) fn finish(self) -> Result<(), ConfigError> {
        match self.map.keys().find(|key| !self.known.contains(&key.as_str())) {
            Some(key) => Err(self.unknown(key, &self.known)),
            None => Ok(()),
        }
    }

    /// An unknown key, with the nearest known one when it is a near miss: `a` and `b` differ
    /// by case or by at most two single-letter edits (`Pool` means `pool`, not `host`).
    fn unknown(&self, key: &str, known: &[&str]) -> ConfigError {
        let nearest = known.iter().map(|k| (distance(k, key), k)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d);
        let hint = match nearest {
            Some((_, k)) => format!("unknown key (did you mean `{k}`?)"),
            None => format!("unknown key (known here: {})", known.join(", ")),
        };
        self.error(key, &hint)
    }
}

/// The number of single-letter edits between `a` and `b`, ignoring case.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
