//! A peer's health report (protobuf), decoded and validated as the leader does before any of
//! it counts as evidence. Errors are fine; a panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use triad_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = pb::HealthReport::decode(data) {
        let _ = triad::codec::decode_report(report, |n| (1..=3).contains(&n.get()));
    }
});
