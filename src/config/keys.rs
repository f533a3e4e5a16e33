//! The declarations every reader makes of the keys its JSON object may hold: each key's name,
//! JSON type, meaning, default and an example value.
//!
//! The readers keep their lists beside their code (`POOL_KEYS` in `pool.rs`, `LISTENER_KEYS`
//! in `full_form.rs`, ...). `Section::allow` takes the allowed names from them, and
//! `sluice --schema` (`schema.rs`) builds the JSON Schema from the same lists, so a key the
//! loader accepts is in the schema and the other way round. Adding a key is one line:
//!
//! ```text
//! Key::new("retries", Kind::Uint(0, 100), "what it does").default("2"),
//! ```
//!
//! Defaults and examples are written as the value would appear in the file, without quotes
//! for a string (`"2s"` is written `2s`); lists and objects are JSON text.

/// One key of a JSON object.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// What the key does, for the schema's `description` (an editor's hover text).
    pub about: &'static str,
    /// The value sluice uses when the key is absent.
    pub default: Option<&'static str>,
    /// The object is refused without this key.
    pub required: bool,
    /// A value the loader accepts for this key on its own, when the kind alone does not give
    /// one (any string, a list of backends): the schema's `examples`, and what the tests write.
    pub example: Option<&'static str>,
}

/// The JSON type of a key's value, with the bounds the loader checks.
#[derive(Debug)]
pub enum Kind {
    Bool,
    /// Any string; the loader checks its form.
    Text,
    /// A string matching a regular expression.
    Pattern(&'static str),
    /// A duration with a unit: `250ms`, `2s`, `1m`, `1h`.
    Duration,
    /// A whole number within the bounds, both included.
    Uint(u64, u64),
    /// A number within the bounds, both included.
    Number(f64, f64),
    /// A number above 0 and at most 100.
    Percent,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A list of at least `.1` items of the kind.
    List(&'static Kind, usize),
    /// An object of entries named freely (pools, users, header fields), at least `.1` of them.
    Map(&'static Kind, usize),
    /// A nested object with its own keys.
    Object(&'static Shape),
    /// Any of these kinds, such as a backend's URL string or a backend object.
    AnyOf(&'static [Kind]),
}

/// The keys of one JSON object: any other key is an error.
#[derive(Debug)]
pub struct Shape {
    /// Lists of keys, joined; a name declared twice takes its first declaration.
    pub parts: &'static [&'static [Key]],
    /// Groups of keys of which exactly one group must be given whole, such as `port` or
    /// `listen`.
    pub either: &'static [&'static [&'static str]],
    /// Whether the object may also hold no key of any `either` group.
    pub either_or_none: bool,
}

impl Key {
    pub const fn new(name: &'static str, kind: Kind, about: &'static str) -> Key {
        Key { name, kind, about, default: None, required: false, example: None }
    }

    pub const fn default(self, value: &'static str) -> Key {
        Key { default: Some(value), ..self }
    }

    pub const fn required(self) -> Key {
        Key { required: true, ..self }
    }

    pub const fn example(self, value: &'static str) -> Key {
        Key { example: Some(value), ..self }
    }
}

impl Kind {
    /// Whether every value of this kind is a JSON string, so that defaults and examples are
    /// taken as written rather than as JSON text.
    pub fn is_string(&self) -> bool {
        matches!(self, Kind::Text | Kind::Pattern(_) | Kind::Duration | Kind::OneOf(_))
    }
}

impl Shape {
    pub const fn new(parts: &'static [&'static [Key]]) -> Shape {
        Shape { parts, either: &[], either_or_none: false }
    }

    pub const fn either(self, groups: &'static [&'static [&'static str]]) -> Shape {
        Shape { either: groups, ..self }
    }

    /// At most one of `groups`, given whole.
    pub const fn either_or_none(self, groups: &'static [&'static [&'static str]]) -> Shape {
        Shape { either: groups, either_or_none: true, ..self }
    }

    /// Every key, in declaration order, each name once.
    pub fn keys(&self) -> Vec<&'static Key> {
        let mut keys: Vec<&'static Key> = Vec::new();
        for key in self.parts.iter().flat_map(|part| part.iter()) {
            if !keys.iter().any(|k| k.name == key.name) {
                keys.push(key);
            }
        }
        keys
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.keys().into_iter().map(|k| k.name).collect()
    }
}

/// A value written as a default or example is: the text itself for a string kind, else JSON
/// text, else (a string allowed beside numbers, such as `"25%"`) the text itself.
pub fn written_value(kind: &Kind, text: &str) -> serde_json::Value {
    if kind.is_string() {
        return serde_json::Value::String(text.to_string());
    }
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// A listen address: `":8080"`, `"127.0.0.1:8080"`, or a bare port number.
pub const LISTEN: Kind = Kind::AnyOf(&[Kind::Text, Kind::Uint(0, 65535)]);
