//! Redis `INFO` output as the probe parses it. A panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = triad::probe::redis_info::parse_info(&text);
});
