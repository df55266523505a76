//! The Raft adapter: a synchronous core ([`RaftNode`]) around tikv raft-rs's `RawNode`, its
//! durable storage ([`store`]) and the TCP peer transport ([`transport`]).
//!
//! This is the only module that imports the `raft` crate. Everything it hands out is Triad's
//! own types: messages leave as opaque bytes addressed to a [`NodeId`], committed entries as
//! (term, index, data).
//!
//! [`RaftNode`] does no networking and reads no clock: the owner calls [`RaftNode::tick`] on
//! its own schedule, feeds inbound messages with [`RaftNode::step`], and calls
//! [`RaftNode::process_ready`], which persists what must be durable *before* returning the
//! messages that depend on it. That makes the same code drive the production event loop and the
//! deterministic in-process simulation.
//!
//! Settings: pre-vote and check-quorum are always on (a partitioned node cannot disrupt the
//! cluster on return; a leader that loses its quorum steps down within an election timeout).
//! Proposals on a follower are forwarded to the leader by raft-rs itself; with no known leader
//! they are refused with [`RaftError::NoLeader`].
//!
//! Peer input: raft-rs trusts its peers and panics on messages no correct raft-rs of the same
//! version would send. [`RaftNode::step`] therefore checks every message first ([`validate`]):
//! term and index bounds, heartbeat commits within the local log, contiguous appends, append
//! responses within the leader's log, and snapshots whose conf state is the fixed voter set and
//! whose data the owner's [`SnapshotValidator`] accepts, so nothing invalid is ever persisted.
//! A refused message is [`RaftError::BadMessage`]; Raft tolerates the loss. Nothing a peer sends
//! can panic the node or leave a store it cannot restart from (the hostile-peer tests in
//! `tests.rs` check this).
//!
//! Caveats: membership is fixed (no conf changes yet). Raft does not tolerate Byzantine peers:
//! a peer sending well-formed, plausible but false messages (a fake leader's entries, a commit
//! it cannot justify) can still mislead it. Peers are accepted only after a handshake naming a
//! configured id; authenticating them (mTLS) keeps strangers out, the checks keep a buggy or
//! newer peer from crashing this one.

pub mod store;
pub mod transport;
pub mod validate;

use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use serde::Serialize;

pub use store::{RaftStore, SharedMemBackend, StoreError};
pub use validate::SnapshotValidator;

use crate::ids::{LogIndex, NodeId, Term};

/// A node's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Leader of the current term.
    Leader,
    /// Follower.
    Follower,
    /// Campaigning (pre-vote or vote).
    Candidate,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
        })
    }
}

/// Errors of the Raft core.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// Storage failed; the node must stop.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A proposal was dropped because no leader is known.
    #[error("no leader known; retry when the cluster has elected one")]
    NoLeader,
    /// A peer message could not be decoded or does not fit this node.
    #[error("bad peer message from {from}: {reason}")]
    BadMessage {
        /// The connection's authenticated peer.
        from: NodeId,
        /// What is wrong.
        reason: String,
    },
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(String),
}

/// Settings of the Raft core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This node.
    pub id: NodeId,
    /// Ticks before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// When set, election timeouts are drawn from this seed instead of the thread RNG, so a
    /// simulation replays exactly. Production leaves it `None`.
    pub timeout_seed: Option<u64>,
    /// Decides whether snapshot data from a peer is a state the owner can install. A snapshot
    /// it refuses is never stepped, so never persisted.
    pub snapshot_validator: SnapshotValidator,
}

/// SplitMix64: a tiny, well-known PRNG, enough to draw election timeouts reproducibly.
#[derive(Clone, Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A message to send to a peer.
#[derive(Clone, Debug)]
pub struct OutMessage {
    /// Destination.
    pub to: NodeId,
    /// raft-rs message, encoded.
    pub bytes: Vec<u8>,
}

/// A committed log entry.
#[derive(Clone, Debug)]
pub struct CommittedEntry {
    /// Term of the entry.
    pub term: Term,
    /// Index of the entry.
    pub index: LogIndex,
    /// Data; empty for a new leader's no-op entry.
    pub data: Vec<u8>,
}

/// A snapshot to install in the state machine.
#[derive(Clone, Debug)]
pub struct InstalledSnapshot {
    /// Index it covers.
    pub index: LogIndex,
    /// State machine data.
    pub data: Vec<u8>,
}

/// What one round of [`RaftNode::process_ready`] produced, in the order the owner must act:
/// install the snapshot, apply the entries, send the messages.
#[derive(Debug, Default)]
pub struct Output {
    /// A snapshot received from the leader, to replace the state machine.
    pub snapshot: Option<InstalledSnapshot>,
    /// Newly committed entries, in log order.
    pub committed: Vec<CommittedEntry>,
    /// Messages to peers (already safe to send: what they promise is durable).
    pub messages: Vec<OutMessage>,
}

impl Output {
    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.committed.is_empty() && self.messages.is_empty()
    }
}

/// A summary of the node's Raft state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Known leader, if any.
    pub leader: Option<NodeId>,
    /// Highest committed index known.
    pub commit: LogIndex,
    /// Highest index handed out for applying.
    pub applied: LogIndex,
    /// Last index in the local log.
    pub last_index: LogIndex,
    /// Index of the latest snapshot.
    pub snapshot_index: LogIndex,
}

/// The Raft core of one node.
pub struct RaftNode {
    raw: RawNode<RaftStore>,
    id: NodeId,
    election_ticks: usize,
    jitter: Option<SplitMix>,
    snapshots_sent: Vec<u64>,
    /// The fixed voter set, sorted.
    voters: Vec<u64>,
    snapshot_validator: SnapshotValidator,
}

impl RaftNode {
    /// Builds the core on an opened store. Entries after the store's snapshot are re-delivered
    /// as committed entries, so the owner rebuilds its state from [`RaftNode::snapshot_data`]
    /// plus those.
    pub fn new(cfg: &CoreConfig, store: RaftStore) -> Result<Self, RaftError> {
        let applied = store.snapshot_index();
        let mut voters = store
            .initial_state()
            .map_err(|e| RaftError::Raft(e.to_string()))?
            .conf_state
            .voters;
        voters.sort_unstable();
        let raft_cfg = Config {
            id: cfg.id.get(),
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        raft_cfg
            .validate()
            .map_err(|e| RaftError::Raft(e.to_string()))?;
        let logger = slog::Logger::root(
            tracing_slog::TracingSlogDrain,
            slog::o!("raft_id" => cfg.id.get()),
        );
        let raw =
            RawNode::new(&raft_cfg, store, &logger).map_err(|e| RaftError::Raft(e.to_string()))?;
        let mut node = RaftNode {
            raw,
            id: cfg.id,
            election_ticks: cfg.election_ticks,
            jitter: cfg.timeout_seed.map(SplitMix),
            snapshots_sent: Vec::new(),
            voters,
            snapshot_validator: cfg.snapshot_validator,
        };
        node.reseed_timeout();
        Ok(node)
    }

    /// With a seed configured, replaces the election timeout raft-rs just drew (it resets
    /// `election_elapsed` to 0 whenever it draws one) by one from the seeded generator, in
    /// raft-rs's range `[election_ticks, 2 * election_ticks)`.
    fn reseed_timeout(&mut self) {
        if let Some(rng) = &mut self.jitter {
            if self.raw.raft.election_elapsed == 0 {
                let span = self.election_ticks.max(1) as u64;
                let t = self.election_ticks + (rng.next() % span) as usize;
                self.raw.raft.set_randomized_election_timeout(t);
            }
        }
    }

    /// The state-machine data of the stored snapshot, if any (used at start-up).
    pub fn snapshot_data(&self) -> Option<InstalledSnapshot> {
        let snap = self.raw.store().snapshot_ref();
        let index = snap.get_metadata().index;
        (index > 0).then(|| InstalledSnapshot {
            index: LogIndex(index),
            data: snap.get_data().to_vec(),
        })
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.reseed_timeout();
    }

    /// Feeds one message received from peer `from` (the connection's authenticated id).
    pub fn step(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), RaftError> {
        let bad = |reason: String| RaftError::BadMessage { from, reason };
        let msg: Message = protobuf::Message::parse_from_bytes(bytes)
            .map_err(|e| bad(format!("not a raft message: {e}")))?;
        if msg.from != from.get() {
            return Err(bad(format!(
                "claims to be from {} on a connection from {from}",
                NodeId(msg.from)
            )));
        }
        if msg.to != self.id.get() {
            return Err(bad(format!("addressed to {}", NodeId(msg.to))));
        }
        if raft::raw_node::is_local_msg(msg.get_msg_type()) {
            return Err(bad(format!("local message type {:?}", msg.get_msg_type())));
        }
        let local = validate::Local {
            id: self.id.get(),
            term: self.raw.raft.term,
            last_index: self.raw.raft.raft_log.last_index(),
            voters: &self.voters,
            snapshot_validator: self.snapshot_validator,
        };
        if let Err(reason) = validate::check(&msg, &local) {
            return Err(bad(format!("invalid {:?}: {reason}", msg.get_msg_type())));
        }
        let result = self
            .raw
            .step(msg)
            .map_err(|e| bad(format!("refused by raft: {e}")));
        self.reseed_timeout();
        result
    }

    /// Proposes entry data. Succeeds once raft accepted it for replication (locally as leader,
    /// or forwarded to the known leader); the entry is committed later, or lost if leadership
    /// changes first.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return Err(RaftError::NoLeader);
        }
        self.raw.propose(vec![], data).map_err(|e| match e {
            raft::Error::ProposalDropped => RaftError::NoLeader,
            other => RaftError::Raft(other.to_string()),
        })
    }

    /// Persists and collects everything raft-rs has ready. Call after every tick, step or
    /// propose. On error the node must stop: storage could not be made durable.
    pub fn process_ready(&mut self) -> Result<Output, RaftError> {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        self.encode_messages(rd.take_messages(), &mut out.messages);
        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        if let Some(snap) = &snapshot {
            out.snapshot = Some(InstalledSnapshot {
                index: LogIndex(snap.get_metadata().index),
                data: snap.get_data().to_vec(),
            });
        }
        collect_committed(rd.take_committed_entries(), &mut out.committed);
        self.raw
            .mut_store()
            .persist(snapshot.as_ref(), rd.entries(), rd.hs())?;
        self.encode_messages(rd.take_persisted_messages(), &mut out.messages);
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.encode_messages(light.take_messages(), &mut out.messages);
        collect_committed(light.take_committed_entries(), &mut out.committed);
        self.raw.advance_apply();
        // raft-rs pauses replication to a follower after handing out a snapshot for it until
        // the application reports the outcome. The transport cannot confirm delivery, so report
        // it as sent at once: if it was lost, the follower rejects the next append and the
        // leader sends the snapshot again. Without this a single lost snapshot message stalls
        // that follower forever (found by the simulation).
        for to in std::mem::take(&mut self.snapshots_sent) {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
        Ok(out)
    }

    /// Snapshots the state machine at `index` (already applied) and compacts the log.
    pub fn compact(&mut self, index: LogIndex, data: Vec<u8>) -> Result<(), RaftError> {
        Ok(self.raw.mut_store().compact(index.0, data)?)
    }

    /// Index of the latest snapshot.
    pub fn snapshot_index(&self) -> LogIndex {
        LogIndex(self.raw.store().snapshot_index())
    }

    /// Tells raft a peer could not be reached, so it stops pipelining to it.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.raw.report_unreachable(peer.get());
    }

    fn encode_messages(&mut self, msgs: Vec<Message>, out: &mut Vec<OutMessage>) {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_sent.push(m.to);
            }
            match protobuf::Message::write_to_bytes(&m) {
                Ok(bytes) => out.push(OutMessage {
                    to: NodeId(m.to),
                    bytes,
                }),
                // Encoding an in-memory message cannot fail in practice; dropping one is safe
                // because Raft tolerates message loss.
                Err(err) => tracing::error!(%err, to = m.to, "dropping unencodable raft message"),
            }
        }
    }

    /// Current status.
    pub fn status(&self) -> RaftStatus {
        let r = &self.raw.raft;
        let role = match r.state {
            StateRole::Leader => Role::Leader,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
        };
        RaftStatus {
            id: self.id,
            role,
            term: Term(r.term),
            leader: (r.leader_id != raft::INVALID_ID).then_some(NodeId(r.leader_id)),
            commit: LogIndex(r.raft_log.committed),
            applied: LogIndex(r.raft_log.applied),
            last_index: LogIndex(self.raw.store().last_index().unwrap_or_default()),
            snapshot_index: self.snapshot_index(),
        }
    }
}

fn collect_committed(entries: Vec<Entry>, out: &mut Vec<CommittedEntry>) {
    for e in entries {
        let data = match e.get_entry_type() {
            EntryType::EntryNormal => e.data.to_vec(),
            // Conf changes are never proposed (fixed membership); treat any as empty.
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => Vec::new(),
        };
        out.push(CommittedEntry {
            term: Term(e.term),
            index: LogIndex(e.index),
            data,
        });
    }
}

#[cfg(test)]
mod tests;
