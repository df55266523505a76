//! Galera's outputs: `SHOW STATUS` rows (tab-separated, as the probe reads them),
//! `grastate.dat`, and the log of `mariadbd --wsrep-recover`. Errors are fine; a panic is a
//! bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triad::probe::{galera_status, grastate, wsrep_recover};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rows = galera_status::parse_tsv(&text);
    let _ = galera_status::from_rows(rows);
    let _ = grastate::parse_grastate(&text, std::path::Path::new("grastate.dat"));
    let _ = wsrep_recover::parse_recover_log(&text);
});
