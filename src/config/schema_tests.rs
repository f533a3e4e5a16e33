//! Walks every declared key, in both forms, and checks that the loader and the schema agree:
//! both take the key with a sample value, both refuse it misspelt, and writing its declared
//! default changes nothing the loader reads.

use super::schema;
use crate::config::full_form::FULL_FORM;
use crate::config::keys::{written_value, Key, Kind, Shape};
use crate::config::top_level::SHORT_FORM;
use crate::config::Config;
use serde_json::{json, Map, Value};

/// Puts a value of one object back into the whole file around it.
type Place<'a> = &'a dyn Fn(Value) -> Value;

/// One declared key in its place: the object path the loader names, the object's shape and
/// a valid object of that shape to start from.
struct Visit<'a> {
    path: String,
    shape: &'static Shape,
    base: &'a Map<String, Value>,
    key: &'static Key,
    place: Place<'a>,
}

/// A value the loader takes for `key` on its own.
fn sample(key: &Key) -> Value {
    match key.example.or(key.default) {
        Some(text) => written_value(&key.kind, text),
        None => sample_of(&key.kind, key.name),
    }
}

fn sample_of(kind: &Kind, name: &str) -> Value {
    match kind {
        Kind::Bool => json!(true),
        Kind::Duration => json!("1s"),
        Kind::Uint(min, _) => json!(min),
        Kind::Number(min, _) => json!(min),
        Kind::Percent => json!(50),
        Kind::OneOf(names) => json!(names[0]),
        Kind::List(item, _) => json!([sample_of(item, name)]),
        Kind::Map(entry, _) => json!({"web": sample_of(entry, name)}),
        Kind::Object(shape) => Value::Object(minimal(shape)),
        Kind::AnyOf(kinds) => sample_of(&kinds[0], name),
        Kind::Text | Kind::Pattern(_) => panic!("`{name}`: declare an example, since any string will not do"),
    }
}

/// The smallest object of `shape`: its required keys and its first `either` group.
fn minimal(shape: &Shape) -> Map<String, Value> {
    let first_group = match shape.either_or_none {
        true => &[][..],
        false => shape.either.first().copied().unwrap_or(&[]),
    };
    let keys = shape.keys().into_iter().filter(|k| k.required || first_group.contains(&k.name));
    keys.map(|k| (k.name.to_string(), sample(k))).collect()
}

/// `base` with `key` set to `value`: the keys of the other `either` groups removed, and the
/// rest of its own group filled in.
fn with_key(visit: &Visit, value: Value) -> Map<String, Value> {
    let mut object = visit.base.clone();
    if let Some(group) = visit.shape.either.iter().find(|g| g.contains(&visit.key.name)) {
        for other in visit.shape.either.iter().filter(|g| *g != group).flat_map(|g| g.iter()) {
            object.remove(*other);
        }
        for mate in visit.shape.keys().into_iter().filter(|k| group.contains(&k.name)) {
            object.entry(mate.name).or_insert_with(|| sample(mate));
        }
    }
    object.insert(visit.key.name.to_string(), value);
    object
}

/// Calls `each` for every key of `shape` and of the objects nested in it.
fn walk(shape: &'static Shape, path: &str, base: &Map<String, Value>, place: Place, each: &mut dyn FnMut(&Visit)) {
    for key in shape.keys() {
        let visit = Visit { path: path.to_string(), shape, base, key, place };
        each(&visit);
        let child_path = if path.is_empty() { key.name.to_string() } else { format!("{path}.{}", key.name) };
        let around = |value: Value| place(Value::Object(with_key(&visit, value)));
        walk_kind(&key.kind, &child_path, Some(sample(key)), &around, each);
    }
}

/// Finds the objects inside a value of `kind`, with how to put each back.
fn walk_kind(kind: &Kind, path: &str, sample: Option<Value>, place: Place, each: &mut dyn FnMut(&Visit)) {
    match kind {
        Kind::Object(shape) => {
            let base = match sample {
                Some(Value::Object(object)) => object,
                _ => minimal(shape),
            };
            walk(shape, path, &base, place, each);
        }
        Kind::List(item, _) => {
            let first = sample.and_then(|s| s.get(0).cloned());
            walk_kind(item, &format!("{path}[0]"), first, &|v| place(json!([v])), each);
        }
        Kind::Map(entry, _) => {
            let first = sample.and_then(|s| s.as_object().and_then(|m| m.values().next().cloned()));
            walk_kind(entry, &format!("{path}.web"), first, &|v| place(json!({ "web": v })), each);
        }
        Kind::AnyOf(kinds) => {
            for kind in kinds.iter() {
                walk_kind(kind, path, sample.clone(), place, each);
            }
        }
        _ => {}
    }
}

/// Calls `each` with every declared key of both forms.
fn every_key(each: &mut dyn FnMut(&Visit)) {
    for form in [&SHORT_FORM, &FULL_FORM] {
        // A listener's "tls": {"acme": [...]} needs the top-level "acme" object.
        let mut base = minimal(form);
        base.insert("acme".to_string(), json!({}));
        walk(form, "", &base, &|v| v, each);
    }
}

fn parse(value: &Value) -> Result<Config, String> {
    Config::parse(&value.to_string(), "config.json").map_err(|e| e.to_string())
}

/// The path the loader names `name` by in the object `visit` is in.
fn key_path(visit: &Visit, name: &str) -> String {
    if visit.path.is_empty() {
        name.to_string()
    } else {
        format!("{}.{name}", visit.path)
    }
}

/// `config` as Debug text, without the instants taken while reading it.
fn without_instants(config: &Config) -> String {
    let text = format!("{config:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("Instant {") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("an Instant's Debug text closes");
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// `name` with the case of its first letter swapped: `servers` becomes `Servers`.
fn misspelt(name: &str) -> String {
    let i = name.find(|c: char| c.is_ascii_alphabetic()).expect("a key has a letter");
    let c = name.as_bytes()[i] as char;
    let swapped = if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
    format!("{}{swapped}{}", &name[..i], &name[i + 1..])
}

#[test]
fn every_declared_key_is_taken_by_the_loader_and_the_schema_and_refused_misspelt() {
    let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
    let mut count = 0;
    every_key(&mut |visit| {
        count += 1;
        let name = visit.key.name;
        let file = (visit.place)(Value::Object(with_key(visit, sample(visit.key))));
        if let Err(e) = parse(&file) {
            panic!("{}: the loader refuses `{name}` in {file}: {e}", visit.path);
        }
        let problems: Vec<String> = validator.iter_errors(&file).map(|e| e.to_string()).collect();
        assert!(problems.is_empty(), "{}: the schema refuses `{name}` in {file}: {problems:?}", visit.path);
        // Every name a key may take is a name the loader knows (it may still want other keys
        // to go with it, as "mode": "tcp" wants a tcp pool).
        if let Kind::OneOf(names) = visit.key.kind {
            for option in names.iter() {
                let file = (visit.place)(Value::Object(with_key(visit, json!(option))));
                let refused =
                    parse(&file).err().filter(|e| e.starts_with(&format!("config.json: {}:", key_path(visit, name))));
                assert_eq!(refused, None, "{file}");
            }
        }
        let mut object = with_key(visit, sample(visit.key));
        let value = object.remove(name).unwrap();
        let wrong = misspelt(name);
        object.insert(wrong.clone(), value);
        let file = (visit.place)(Value::Object(object));
        let expected = format!("config.json: {}: unknown key (did you mean `{name}`?)", key_path(visit, &wrong));
        assert_eq!(parse(&file).map(|_| ()), Err(expected), "in {file}");
        assert!(!validator.is_valid(&file), "the schema takes the misspelt `{wrong}` in {file}");
    });
    assert!(count > 100, "the walk reached only {count} keys");
}

#[test]
fn declared_defaults_are_what_the_loader_uses_without_the_key() {
    let mut count = 0;
    every_key(&mut |visit| {
        let Some(default) = visit.key.default else { return };
        count += 1;
        let mut without = with_key(visit, Value::Null);
        without.remove(visit.key.name);
        let without = parse(&(visit.place)(Value::Object(without))).unwrap();
        let written = (visit.place)(Value::Object(with_key(visit, written_value(&visit.key.kind, default))));
        let with =
            parse(&written).unwrap_or_else(|e| panic!("the declared default of {} is refused: {e}", visit.key.name));
        assert_eq!(
            without_instants(&with),
            without_instants(&without),
            "{}: {default}",
            key_path(visit, visit.key.name)
        );
    });
    assert!(count > 40, "only {count} defaults checked");
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::meta::validate(&schema).expect("the schema is valid against its meta-schema");
}

#[test]
fn every_short_form_key_in_the_full_form_says_where_it_goes() {
    let full_names = FULL_FORM.names();
    let mut count = 0;
    for key in SHORT_FORM.keys().into_iter().filter(|k| !full_names.contains(&k.name)) {
        count += 1;
        let mut file = minimal(&FULL_FORM);
        file.insert(key.name.to_string(), sample(key));
        let err = parse(&Value::Object(file)).unwrap_err();
        let expected = format!(
            "config.json: {}: belongs to the short form; with \"listeners\" and \"pools\" it goes in ",
            key.name
        );
        assert!(err.starts_with(&expected), "{err}");
    }
    assert!(count > 10, "only {count} short-form keys");
}
