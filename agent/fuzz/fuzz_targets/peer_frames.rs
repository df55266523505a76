//! A peer's byte stream, after TLS: length-delimited frames, each a `PeerFrame`, dispatched as
//! the transport does. Raft messages are stepped into a real `RaftNode` (node 1 of 3, in
//! memory) from the peer the first byte names; health reports are decoded and validated;
//! a `Hello`'s safety timings are compared with ours. Errors are fine; a panic is a bug.
//!
//! Caveat: one `RaftNode` serves many inputs (a fresh one per input ran 13 inputs/s: the
//! instrumented redb store is slow to open and drop), renewed every [`RENEW_EVERY`] inputs,
//! so a crash may depend on the messages before it; replaying the saved input alone on a
//! fresh node tells.
#![no_main]

use std::cell::RefCell;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tokio_util::codec::{Decoder as _, LengthDelimitedCodec};
use triad::ids::NodeId;
use triad::raft::{CoreConfig, RaftNode, RaftStore, SharedMemBackend};
use triad_proto::v1 as pb;

/// Inputs one node serves before a fresh one replaces it.
const RENEW_EVERY: u32 = 10_000;

fn fresh_node() -> RaftNode {
    let store = RaftStore::open_mem(SharedMemBackend::new(), &[1, 2, 3]).expect("in-memory store");
    let cfg = CoreConfig {
        id: NodeId(1),
        election_ticks: 10,
        heartbeat_ticks: 2,
        timeout_seed: Some(7),
        snapshot_validator: triad::codec::validate_state,
    };
    RaftNode::new(&cfg, store).expect("raft node")
}

thread_local! {
    static NODE: RefCell<(u32, Option<RaftNode>)> = const { RefCell::new((0, None)) };
}

fuzz_target!(|data: &[u8]| {
    NODE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (served, slot) = &mut *cell;
        *served += 1;
        if slot.is_none() || *served % RENEW_EVERY == 0 {
            *slot = Some(fresh_node());
        }
        if let Some(node) = slot.as_mut() {
            feed(node, data);
        }
    });
});

fn feed(node: &mut RaftNode, data: &[u8]) {
    let Some((&who, stream)) = data.split_first() else {
        return;
    };
    let from = NodeId(u64::from(who % 4));
    let mut codec = LengthDelimitedCodec::builder()
        .max_frame_length(1 << 20)
        .new_codec();
    let mut buf = BytesMut::from(stream);
    let ours =
        std::collections::BTreeMap::from([("raft.election_ticks".to_string(), "10".to_string())]);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let Ok(frame) = pb::PeerFrame::decode(frame.as_ref()) else {
            break;
        };
        match frame.body {
            Some(pb::peer_frame::Body::RaftMessage(bytes)) => {
                if node.step(from, &bytes).is_ok() {
                    let _ = node.process_ready();
                }
            }
            Some(pb::peer_frame::Body::HealthReport(report)) => {
                let _ = triad::codec::decode_report(report, |n| (1..=3).contains(&n.get()));
            }
            Some(pb::peer_frame::Body::Hello(hello)) => {
                let theirs = hello.safety_timings.into_iter().collect();
                let _ = triad::config::safety_timings_diff(&ours, &theirs);
            }
            _ => {}
        }
    }
}
