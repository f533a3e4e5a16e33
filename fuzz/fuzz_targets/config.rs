//! The config loader on arbitrary text: any input is a `Config` or a `ConfigError` that
//! names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::parse(text, "fuzz.json") {
        assert!(e.to_string().starts_with("fuzz.json: "), "{e}");
    }
});
