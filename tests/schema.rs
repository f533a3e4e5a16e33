//! `sluice --schema` against every configuration the repository holds: the files, the JSON
//! blocks of the docs and README, and the JSON written in the tests' and the sources' string
//! literals. What the loader takes, the schema takes; an unknown key neither takes.

use sluice::config::schema::schema;
use sluice::config::Config;
use std::path::{Path, PathBuf};
use std::process::Command;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(folder: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Every JSON object the repository writes down as a configuration, named by where it is.
fn examples() -> Vec<(String, String)> {
    let root = repo();
    let mut found = Vec::new();
    let mut add = |place: String, text: &str| {
        if serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object()) {
            found.push((place, text.to_string()));
        }
    };
    let json_files = [root.join("config.json")]
        .into_iter()
        .chain(files(&root.join("docs"), "json"))
        .chain(files(&root.join("deploy"), "json"));
    for path in json_files.chain(files(&root.join("fuzz/seeds/config"), "json")) {
        add(path.display().to_string(), &std::fs::read_to_string(&path).unwrap());
    }
    for path in files(&root.join("docs"), "md").into_iter().chain([root.join("README.md")]) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, block) in text.split("```json\n").skip(1).enumerate() {
            add(format!("{} json block {i}", path.display()), block.split("```").next().unwrap());
        }
    }
    for path in files(&root.join("src"), "rs").into_iter().chain(files(&root.join("tests"), "rs")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, literal) in text.split("r#\"").skip(1).enumerate() {
            let literal = literal.split("\"#").next().unwrap();
            add(format!("{} raw string {i}", path.display()), literal);
            if literal.contains("{{") {
                // A format string's braces, when it has no placeholder.
                add(format!("{} format string {i}", path.display()), &literal.replace("{{", "{").replace("}}", "}"));
            }
        }
    }
    found
}

#[test]
fn every_configuration_the_loader_takes_the_schema_takes() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let (mut taken, mut unknown_keys) = (0, 0);
    for (place, text) in examples() {
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        match Config::parse(&text, "config.json") {
            Ok(_) => {
                taken += 1;
                let problems: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
                assert!(problems.is_empty(), "{place}: the loader takes it, the schema does not: {problems:?}\n{text}");
            }
            Err(e) if e.problem.starts_with("unknown key") => {
                unknown_keys += 1;
                assert!(!validator.is_valid(&value), "{place}: the schema takes an unknown key ({e})\n{text}");
            }
            Err(_) => {}
        }
    }
    // The repository's files, its docs and the tests hold many; a count this low means the
    // search for them broke.
    assert!(taken >= 30, "only {taken} configurations found");
    assert!(unknown_keys >= 5, "only {unknown_keys} configurations with an unknown key found");
}

#[test]
fn the_schema_refuses_an_unknown_key_at_any_depth() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let good =
        serde_json::json!({"port": ":8080", "servers": ["http://127.0.0.1:5001"], "timeouts": {"connect": "2s"}});
    assert!(validator.is_valid(&good));
    let cases = [
        serde_json::json!({"port": ":8080", "servers": ["http://127.0.0.1:5001"], "colour": "blue"}),
        serde_json::json!({"port": ":8080", "servers": ["http://127.0.0.1:5001"], "timeouts": {"conect": "2s"}}),
        serde_json::json!({"listeners": [{"listen": ":1", "pool": "a", "port": 2}], "pools": {"a": {"servers": ["http://127.0.0.1:1"]}}}),
        serde_json::json!({"listeners": [{"listen": ":1", "pool": "a"}], "pools": {"a": {"servers": [{"url": "http://127.0.0.1:1", "wieght": 2}]}}}),
    ];
    for case in cases {
        assert!(!validator.is_valid(&case), "{case}");
        assert!(Config::parse(&case.to_string(), "c.json").unwrap_err().problem.starts_with("unknown key"), "{case}");
    }
}

#[test]
fn every_algorithm_the_balancer_knows_is_in_the_schema() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for algorithm in sluice::config::Algorithm::ALL {
        let file =
            serde_json::json!({"port": ":8080", "servers": ["http://127.0.0.1:5001"], "algorithm": algorithm.name()});
        assert!(validator.is_valid(&file), "{file}");
    }
}

#[test]
fn a_schema_key_in_the_file_is_taken_and_ignored() {
    let plain = r#"{"port": ":8080", "servers": ["http://127.0.0.1:5001"]}"#;
    let with = r#"{"$schema": "./config.schema.json", "port": ":8080", "servers": ["http://127.0.0.1:5001"]}"#;
    let (plain, with) = (Config::parse(plain, "c.json").unwrap(), Config::parse(with, "c.json").unwrap());
    assert_eq!(format!("{:?}", plain.pools), format!("{:?}", with.pools));
    let err = Config::parse(r#"{"$schema": 1, "port": ":8080", "servers": ["http://127.0.0.1:5001"]}"#, "c.json");
    assert_eq!(err.unwrap_err().to_string(), "c.json: $schema: must be a string");
}

#[test]
fn sluice_schema_prints_the_schema_and_help_mentions_it() {
    let out = Command::new(SLUICE).arg("--schema").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--schema prints JSON");
    assert_eq!(printed, schema());
    assert_eq!(printed["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let help = Command::new(SLUICE).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--schema"));
}
