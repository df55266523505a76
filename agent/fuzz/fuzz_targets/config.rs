//! A config file's text: parsed, then validated (as `triad check-config` does). Relative
//! paths resolve under a directory that does not exist, so validation finds no files.
//! Errors are fine; a panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/nonexistent/triad-fuzz/triad.toml");
    if let Ok(config) = triad::config::parse(path, text) {
        let _ = triad::config::validate(path, config);
    }
});
