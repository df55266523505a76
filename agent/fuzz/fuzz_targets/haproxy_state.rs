//! HAProxy's admin socket answers: `show servers state` and `show info`. A state that parses
//! must survive a render and a second parse unchanged (the agent writes the state file from
//! it). Errors are fine; a panic or a round trip that changes the rows is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triad::actuator::haproxy::{parse_servers_state, parse_show_info, render_servers_state};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rows) = parse_servers_state(text) {
        let again =
            parse_servers_state(&render_servers_state(&rows)).expect("a rendered state parses");
        assert_eq!(rows, again, "render/parse round trip changed the rows");
    }
    let _ = parse_show_info(text);
});
