//! The gluster CLI's XML: volume status, heal info (and the heal helper's two documents) and
//! peer status. Errors are fine; a panic
//! is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triad::probe::gluster_xml;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bricks) = gluster_xml::parse_volume_status(xml) {
        let expected: Vec<String> = bricks.iter().map(|b| b.name.clone()).collect();
        let _ = gluster_xml::bricks_down(&expected, &bricks);
    }
    let _ = gluster_xml::parse_heal_info(xml);
    if let Ok(h) = gluster_xml::parse_heal_docs(xml) {
        let _ = (h.pending(), h.split_brain());
        let _ = gluster_xml::entry_paths(&h.bricks, 20);
    }
    let _ = gluster_xml::parse_peer_status(xml);
});
