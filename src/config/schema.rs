//! `sluice --schema`: the JSON Schema (draft 2020-12) of config.json, built from the key
//! declarations the readers allow keys by (`keys.rs`), so editors check a file as it is typed
//! against exactly what the loader takes.
//!
//! The schema checks names, types, bounds and which keys go together; the loader checks the
//! rest (that a URL parses, that a route names a pool that exists), and its messages stay the
//! final word.

use super::full_form::FULL_FORM;
use super::keys::{written_value, Key, Kind, Shape};
use super::top_level::SHORT_FORM;
use serde_json::{json, Map, Value};

/// The dialect the schema is written in.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The whole schema. As the loader does, it reads a file with `listeners` or `pools` as the
/// full form and any other as the short form, so an editor reports a problem against the
/// form the file is in rather than against both.
pub fn schema() -> Value {
    let mut short = object(&SHORT_FORM);
    short["title"] = json!("short form: one listener in front of one pool");
    let mut full = object(&FULL_FORM);
    full["title"] = json!("full form: listeners and named pools");
    json!({
        "$schema": DIALECT,
        "title": "sluice configuration",
        "description": "config.json for sluice, as printed by `sluice --schema`",
        "type": "object",
        "if": {"anyOf": [{"required": ["listeners"]}, {"required": ["pools"]}]},
        "then": full,
        "else": short,
    })
}

/// An object of `shape`'s keys and no other.
fn object(shape: &Shape) -> Value {
    let mut properties = Map::new();
    for key in shape.keys() {
        properties.insert(key.name.to_string(), property(key));
    }
    let required: Vec<&str> = shape.keys().iter().filter(|k| k.required).map(|k| k.name).collect();
    let mut object = json!({"type": "object", "properties": properties, "additionalProperties": false});
    if !required.is_empty() {
        object["required"] = json!(required);
    }
    if !shape.either.is_empty() {
        let mut groups: Vec<Value> = shape.either.iter().map(|group| json!({"required": group})).collect();
        if shape.either_or_none {
            let any: Vec<Value> = shape.either.concat().iter().map(|key| json!({"required": [key]})).collect();
            groups.push(json!({"not": {"anyOf": any}}));
        }
        object["oneOf"] = Value::Array(groups);
    }
    object
}

/// One key: its kind, with the description, default and example an editor shows.
fn property(key: &Key) -> Value {
    let mut property = kind(&key.kind);
    property["description"] = json!(key.about);
    if let Some(default) = key.default {
        property["default"] = written_value(&key.kind, default);
    }
    if let Some(example) = key.example {
        property["examples"] = json!([written_value(&key.kind, example)]);
    }
    property
}

fn kind(kind: &Kind) -> Value {
    match kind {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Text => json!({"type": "string"}),
        Kind::Pattern(pattern) => json!({"type": "string", "pattern": pattern}),
        Kind::Duration => json!({"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}),
        Kind::Uint(min, max) if *max == u64::MAX => json!({"type": "integer", "minimum": min}),
        Kind::Uint(min, max) => json!({"type": "integer", "minimum": min, "maximum": max}),
        Kind::Number(min, max) => json!({"type": "number", "minimum": min, "maximum": max}),
        Kind::Percent => json!({"type": "number", "exclusiveMinimum": 0, "maximum": 100}),
        Kind::OneOf(names) => json!({"enum": names}),
        Kind::List(item, min) => json!({"type": "array", "items": self::kind(item), "minItems": min}),
        Kind::Map(entry, min) => {
            json!({"type": "object", "additionalProperties": self::kind(entry), "minProperties": min})
        }
        Kind::Object(shape) => object(shape),
        Kind::AnyOf(kinds) => json!({"anyOf": kinds.iter().map(self::kind).collect::<Vec<Value>>()}),
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
