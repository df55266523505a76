//! PHP-FPM's status page (JSON), and the saturation check between two of them. Errors are
//! fine; a panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triad::probe::phpfpm_status::{degradation, parse_status, Saturation};

fuzz_target!(|data: &[u8]| {
    // Two pages: the bytes before and after the first NUL.
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let Ok(now) = parse_status(second) else {
        let _ = parse_status(first);
        return;
    };
    let previous = parse_status(first).ok();
    let bounded = Saturation {
        queue_bound: 5,
        queue_for: std::time::Duration::from_secs(1),
    };
    for s in [Saturation::default(), bounded] {
        let _ = degradation(
            previous.as_ref(),
            &now,
            &s,
            std::time::Duration::from_secs(2),
        );
        let _ = degradation(None, &now, &s, std::time::Duration::ZERO);
    }
});
