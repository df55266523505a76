//! Checks on every peer message before raft-rs sees it.
//!
//! raft-rs assumes its peers are correct raft-rs instances of the same version and answers
//! anything else with a panic (`fatal!`, an out-of-range slice, an integer overflow) or with a
//! Ready that storage cannot hold. Each check here closes one such path reachable from fields a
//! peer controls (raft-rs 0.7):
//!
//! - terms and indexes at or above [`MAX_PLAUSIBLE`] overflow `term + 1` / `index + n`;
//! - a vote message with term 0, or a forwarded proposal with a term, trips `Raft::send`;
//! - a heartbeat commit beyond the local log trips `RaftLog::commit_to`;
//! - a `MsgAppend` with log term 0 beyond the log "matches" the empty term and commits past
//!   the log; entries not contiguous from `index + 1` slice out of range or "conflict with a
//!   committed entry"; decreasing terms or terms above the message's build an invalid log;
//! - a successful `MsgAppendResponse` beyond the leader's log counts a match that does not
//!   exist (a safety bug before it is a crash: the leader could commit with one copy);
//! - a `MsgSnapshot` with term 0, a conf state other than the fixed voters (raft-rs panics on
//!   a joint one, and the store would refuse to open on different voters at every start), or
//!   data the state machine cannot decode (the node would stop, and fail again at every start
//!   because the snapshot is already stored);
//! - message types Triad never uses (`MsgReadIndex` panics on missing entries,
//!   `MsgTransferLeader`, `MsgTimeoutNow`, snapshot requests) and empty or conf-change
//!   proposals.
//!
//! What remains: a peer that sends well-formed, plausible but false messages (a fake leader's
//! entries at its own term, a commit index its log does not justify) can still mislead Raft.
//! Raft does not tolerate Byzantine peers; mTLS keeps strangers out, these checks keep a buggy
//! or newer peer from crashing this one.

use raft::eraftpb::{EntryType, Message, MessageType};

/// Terms and indexes at or above this are refused. No real cluster gets near it (2^62 entries
/// or elections), and it leaves raft-rs room for `+ 1` and `+ entries.len()` without overflow.
pub const MAX_PLAUSIBLE: u64 = 1 << 62;

/// Checks whether snapshot data decodes as the state machine's format: `Ok` or why not.
pub type SnapshotValidator = fn(&[u8]) -> Result<(), String>;

/// What the checks need to know about the local node.
pub(super) struct Local<'a> {
    pub id: u64,
    pub term: u64,
    pub last_index: u64,
    /// The fixed voter set, sorted.
    pub voters: &'a [u64],
    pub snapshot_validator: SnapshotValidator,
}

/// `Ok` when raft-rs may step `msg`, otherwise a reason naming the field and its value.
pub(super) fn check(msg: &Message, local: &Local<'_>) -> Result<(), String> {
    let t = msg.get_msg_type();
    if msg.from == local.id || local.voters.binary_search(&msg.from).is_err() {
        return Err(format!("from {} is not a peer", msg.from));
    }
    check_sizes(msg)?;
    match t {
        MessageType::MsgReadIndex
        | MessageType::MsgReadIndexResp
        | MessageType::MsgTransferLeader
        | MessageType::MsgTimeoutNow => {
            return Err(format!("{t:?} is not used by Triad"));
        }
        MessageType::MsgPropose => return check_proposal(msg),
        _ => {}
    }
    if msg.term == 0 {
        return Err(format!("{t:?} with term 0"));
    }
    if msg.request_snapshot != 0 {
        return Err(format!(
            "request_snapshot {}: snapshot requests are not used",
            msg.request_snapshot
        ));
    }
    match t {
        MessageType::MsgHeartbeat if msg.commit > local.last_index => Err(format!(
            "heartbeat commit {} beyond the local log (last index {})",
            msg.commit, local.last_index
        )),
        MessageType::MsgAppend => check_append(msg),
        // Responses at a higher term only make raft-rs step down; at a lower term they are
        // ignored. At our term, a success must not claim entries we do not have.
        MessageType::MsgAppendResponse
            if !msg.reject && msg.term == local.term && msg.index > local.last_index =>
        {
            Err(format!(
                "append response claims index {} beyond our last index {}",
                msg.index, local.last_index
            ))
        }
        MessageType::MsgSnapshot => check_snapshot(msg, local),
        _ => Ok(()),
    }
}

fn check_sizes(msg: &Message) -> Result<(), String> {
    let fields = [
        ("term", msg.term),
        ("log_term", msg.log_term),
        ("index", msg.index),
        ("commit", msg.commit),
        ("commit_term", msg.commit_term),
        ("reject_hint", msg.reject_hint),
        ("request_snapshot", msg.request_snapshot),
    ];
    for (name, v) in fields {
        if v >= MAX_PLAUSIBLE {
            return Err(format!("{name} {v} is implausibly large"));
        }
    }
    for e in msg.get_entries() {
        if e.index >= MAX_PLAUSIBLE || e.term >= MAX_PLAUSIBLE {
            return Err(format!(
                "entry index {} term {} is implausibly large",
                e.index, e.term
            ));
        }
    }
    let meta = msg.get_snapshot().get_metadata();
    if meta.index >= MAX_PLAUSIBLE || meta.term >= MAX_PLAUSIBLE {
        return Err(format!(
            "snapshot index {} term {} is implausibly large",
            meta.index, meta.term
        ));
    }
    Ok(())
}

fn check_proposal(msg: &Message) -> Result<(), String> {
    // raft-rs forwards proposals without a term and panics when forwarding one with a term.
    if msg.term != 0 {
        return Err(format!("forwarded proposal with term {}", msg.term));
    }
    if msg.get_entries().is_empty() {
        return Err("forwarded proposal without entries".into());
    }
    if let Some(e) = msg
        .get_entries()
        .iter()
        .find(|e| e.get_entry_type() != EntryType::EntryNormal)
    {
        return Err(format!(
            "forwarded proposal with a {:?} entry: membership is fixed",
            e.get_entry_type()
        ));
    }
    Ok(())
}

fn check_append(msg: &Message) -> Result<(), String> {
    // Only index 0 has term 0; raft-rs reports term 0 for any index beyond its log, so this
    // would "match" there and commit past the end of the log.
    if msg.log_term == 0 && msg.index != 0 {
        return Err(format!("append log_term 0 at index {}", msg.index));
    }
    if msg.log_term > msg.term {
        return Err(format!(
            "append log_term {} above the message term {}",
            msg.log_term, msg.term
        ));
    }
    let mut prev_term = msg.log_term;
    for (k, e) in msg.get_entries().iter().enumerate() {
        let want = msg.index + 1 + k as u64;
        if e.index != want {
            return Err(format!(
                "append entry {k} has index {}, expected {want} (entries must follow index {} \
                 without gaps)",
                e.index, msg.index
            ));
        }
        if e.term < prev_term || e.term > msg.term {
            return Err(format!(
                "append entry {} has term {}, outside [{prev_term}, {}] (terms must not \
                 decrease nor exceed the message term)",
                e.index, e.term, msg.term
            ));
        }
        if e.get_entry_type() != EntryType::EntryNormal {
            return Err(format!(
                "append entry {} is a {:?}: membership is fixed",
                e.index,
                e.get_entry_type()
            ));
        }
        prev_term = e.term;
    }
    Ok(())
}

fn check_snapshot(msg: &Message, local: &Local<'_>) -> Result<(), String> {
    if !msg.has_snapshot() {
        return Err("snapshot message without a snapshot".into());
    }
    let snap = msg.get_snapshot();
    let meta = snap.get_metadata();
    if meta.index == 0 || meta.term == 0 {
        return Err(format!(
            "snapshot index {} term {}: both must be at least 1",
            meta.index, meta.term
        ));
    }
    if meta.term > msg.term {
        return Err(format!(
            "snapshot term {} above the message term {}",
            meta.term, msg.term
        ));
    }
    let cs = meta.get_conf_state();
    let mut voters = cs.get_voters().to_vec();
    voters.sort_unstable();
    if voters != local.voters
        || !cs.get_learners().is_empty()
        || !cs.get_voters_outgoing().is_empty()
        || !cs.get_learners_next().is_empty()
        || cs.auto_leave
    {
        return Err(format!(
            "snapshot conf state (voters {:?}, learners {:?}, outgoing {:?}, learners_next {:?}) \
             is not the fixed voter set {:?}",
            cs.get_voters(),
            cs.get_learners(),
            cs.get_voters_outgoing(),
            cs.get_learners_next(),
            local.voters
        ));
    }
    (local.snapshot_validator)(snap.get_data())
        .map_err(|e| format!("snapshot {} data does not decode: {e}", meta.index))
}
