//! Hostile-peer tests of [`RaftNode::step`]: three real cores on in-memory stores, one of which
//! receives well-formed raft-rs messages with hostile field values, as a buggy or newer peer
//! could send them past the transport's handshake.
//!
//! Checked for every message: nothing panics, [`RaftNode::process_ready`] never fails (the
//! agent would stop), every snapshot handed out or stored decodes, the node restarts from its
//! store, and afterwards the cluster still commits, with every committed entry on a majority.

use std::panic::{catch_unwind, AssertUnwindSafe};

use protobuf::ProtobufEnum;
use raft::eraftpb::{ConfState, Snapshot};

use super::*;
use crate::cluster::ClusterState;
use crate::codec;

const VOTERS: [u64; 3] = [1, 2, 3];

fn validate_snapshot(data: &[u8]) -> Result<(), String> {
    codec::validate_state(data)
}

fn core_config(id: u64, seed: u64) -> CoreConfig {
    CoreConfig {
        id: NodeId(id),
        election_ticks: 10,
        heartbeat_ticks: 2,
        timeout_seed: Some(seed),
        snapshot_validator: validate_snapshot,
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

/// Three cores wired by a lossless in-process network.
struct Net {
    nodes: Vec<Option<RaftNode>>,
    backends: Vec<SharedMemBackend>,
    /// Links cut in both directions (by node index).
    isolated: Option<usize>,
    /// Problems found; the test fails if any.
    failures: Vec<String>,
    /// Messages between the real nodes that a node refused (most recent last).
    real_refused: Vec<String>,
    seed: u64,
}

impl Net {
    fn new(seed: u64) -> Net {
        let mut net = Net {
            nodes: Vec::new(),
            backends: Vec::new(),
            isolated: None,
            failures: Vec::new(),
            real_refused: Vec::new(),
            seed,
        };
        for id in VOTERS {
            let backend = SharedMemBackend::new();
            let store = RaftStore::open_mem(backend.clone(), &VOTERS).expect("open store");
            let node = RaftNode::new(
                &core_config(id, seed.wrapping_mul(10).wrapping_add(id)),
                store,
            )
            .expect("new node");
            net.nodes.push(Some(node));
            net.backends.push(backend);
        }
        net.elect();
        net
    }

    fn node(&self, i: usize) -> &RaftNode {
        self.nodes[i].as_ref().expect("node is up")
    }

    fn elect(&mut self) {
        for _ in 0..200 {
            self.round();
            if let Some(l) = self.leader() {
                let leader = NodeId(VOTERS[l]);
                if (0..3).all(|i| self.node(i).status().leader == Some(leader)) {
                    return;
                }
            }
        }
        self.failures.push("no leader elected".into());
    }

    fn leader(&self) -> Option<usize> {
        (0..3).find(|&i| {
            self.nodes[i]
                .as_ref()
                .is_some_and(|n| n.status().role == Role::Leader)
        })
    }

    /// Ticks every node once and delivers until quiet.
    fn round(&mut self) {
        for i in 0..3 {
            if let Some(n) = self.nodes[i].as_mut() {
                let r = catch_unwind(AssertUnwindSafe(|| n.tick()));
                if let Err(p) = r {
                    let text = panic_text(&*p);
                    self.crashed(i, format!("tick panicked: {text}"));
                }
            }
        }
        self.settle();
    }

    /// Delivers messages until no node has anything ready.
    fn settle(&mut self) {
        for _ in 0..200 {
            let mut msgs = Vec::new();
            for (i, &id) in VOTERS.iter().enumerate() {
                let Some(n) = self.nodes[i].as_mut() else {
                    continue;
                };
                let r = catch_unwind(AssertUnwindSafe(|| n.process_ready()));
                match r {
                    Ok(Ok(out)) => {
                        if let Some(snap) = &out.snapshot {
                            if let Err(e) = validate_snapshot(&snap.data) {
                                self.failures.push(format!(
                                    "n{} handed out a snapshot that does not decode (node.rs \
                                     stops on it): {e}",
                                    id
                                ));
                            }
                        }
                        for m in out.messages {
                            msgs.push((i, m));
                        }
                    }
                    Ok(Err(e)) => {
                        self.crashed(i, format!("process_ready failed (agent stops): {e}"));
                    }
                    Err(p) => {
                        let text = panic_text(&*p);
                        self.crashed(i, format!("process_ready panicked: {text}"));
                    }
                }
            }
            if msgs.is_empty() {
                return;
            }
            for (from, m) in msgs {
                let to = (m.to.get() - 1) as usize;
                if self.isolated == Some(from) || self.isolated == Some(to) {
                    continue;
                }
                let Some(n) = self.nodes[to].as_mut() else {
                    continue;
                };
                let r = catch_unwind(AssertUnwindSafe(|| n.step(NodeId(VOTERS[from]), &m.bytes)));
                if let Ok(Err(e)) = &r {
                    self.real_refused.push(e.to_string());
                }
                if let Err(p) = r {
                    let text = panic_text(&*p);
                    self.crashed(to, format!("step of a real message panicked: {text}"));
                }
            }
        }
    }

    /// Records a crash of node `i` and restarts it from its store, as systemd would.
    fn crashed(&mut self, i: usize, what: String) {
        self.failures.push(format!("n{}: {what}", VOTERS[i]));
        self.nodes[i] = None;
        if let Err(e) = self.restart(i) {
            self.failures
                .push(format!("n{}: restart failed: {e}", VOTERS[i]));
        }
    }

    /// Drops node `i` and starts it again from what its store holds.
    fn restart(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i] = None;
        let store = RaftStore::open_mem(self.backends[i].clone(), &VOTERS)
            .map_err(|e| format!("open store: {e}"))?;
        let node = RaftNode::new(
            &core_config(VOTERS[i], self.seed.wrapping_add(100 + i as u64)),
            store,
        )
        .map_err(|e| format!("raft: {e}"))?;
        if let Some(snap) = node.snapshot_data() {
            validate_snapshot(&snap.data).map_err(|e| format!("stored snapshot: {e}"))?;
        }
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Hands `msg` to node `victim` as if it came from `from`, then lets the cluster react.
    fn inject(&mut self, victim: usize, from: u64, msg: &Message) -> Result<(), RaftError> {
        let bytes = protobuf::Message::write_to_bytes(msg).expect("encode");
        let Some(n) = self.nodes[victim].as_mut() else {
            return Ok(());
        };
        let r = catch_unwind(AssertUnwindSafe(|| n.step(NodeId(from), &bytes)));
        let result = match r {
            Ok(result) => result,
            Err(p) => {
                let text = panic_text(&*p);
                self.crashed(victim, format!("step panicked: {text}"));
                Ok(())
            }
        };
        self.settle();
        result
    }

    /// Proposes at the leader and runs until every up node applied past it. Returns whether
    /// `want` nodes committed it within a bounded number of rounds.
    fn commits(&mut self, want: usize) -> bool {
        for attempt in 0..5 {
            let Some(l) = self.leader() else {
                for _ in 0..30 {
                    self.round();
                }
                continue;
            };
            let target = self.node(l).status().last_index.0 + 1;
            let data = format!("probe {attempt}").into_bytes();
            if let Some(n) = self.nodes[l].as_mut() {
                if n.propose(data).is_err() {
                    continue;
                }
            }
            for _ in 0..60 {
                self.round();
                let done = (0..3)
                    .filter(|&i| {
                        self.nodes[i]
                            .as_ref()
                            .is_some_and(|n| n.status().commit.0 >= target)
                    })
                    .count();
                if done >= want {
                    return true;
                }
            }
        }
        false
    }

    /// Every node's committed index is held (same term) by a majority: the leader counted no
    /// match that does not exist.
    fn check_commits_replicated(&mut self) {
        for (i, &id) in VOTERS.iter().enumerate() {
            let Some(n) = self.nodes[i].as_ref() else {
                continue;
            };
            let c = n.raw.raft.raft_log.committed;
            let Ok(t) = n.raw.raft.raft_log.term(c) else {
                continue;
            };
            let holders = (0..3)
                .filter(|&j| {
                    self.nodes[j].as_ref().is_some_and(|o| {
                        c <= o.snapshot_index().0 || o.raw.raft.raft_log.term(c).ok() == Some(t)
                    })
                })
                .count();
            if holders < 2 {
                self.failures.push(format!(
                    "n{} committed index {c} (term {t}) but only {holders} node(s) hold it",
                    id
                ));
            }
        }
    }

    /// Every node restarts from its store (no crash loop).
    fn check_restarts(&mut self) {
        for (i, &id) in VOTERS.iter().enumerate() {
            if let Err(e) = self.restart(i) {
                self.failures
                    .push(format!("n{}: restart from store failed: {e}", id));
            }
        }
    }

    /// Whether the nodes' committed prefixes agree. Accepted hostile messages that look
    /// legitimate (a fake leader's entries and commit index) can make them diverge: Raft does
    /// not tolerate Byzantine peers, and then no liveness can be expected.
    fn committed_prefixes_agree(&self) -> bool {
        let up: Vec<&RaftNode> = self.nodes.iter().flatten().collect();
        up.iter().all(|a| {
            up.iter().all(|b| {
                // What `a` committed must be what `b` holds there, if `b` holds it.
                let c = a
                    .raw
                    .raft
                    .raft_log
                    .committed
                    .min(b.raw.raft.raft_log.last_index());
                let floor = a.snapshot_index().0.max(b.snapshot_index().0);
                c < floor
                    || (floor..=c).all(|i| {
                        a.raw.raft.raft_log.term(i).ok() == b.raw.raft.raft_log.term(i).ok()
                    })
            })
        })
    }

    fn view(&self, i: usize) -> (u64, u64, u64, u64) {
        let r = &self.node(i).raw.raft;
        let last = r.raft_log.last_index();
        (r.term, r.raft_log.committed, last, r.raft_log.last_term())
    }
}

fn message(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: b"hostile".to_vec().into(),
        ..Default::default()
    }
}

fn snapshot(index: u64, term: u64, voters: &[u64], data: &[u8]) -> Snapshot {
    let mut s = Snapshot::default();
    s.set_data(data.to_vec().into());
    let meta = s.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.mut_conf_state().set_voters(voters.to_vec());
    s
}

fn valid_state() -> Vec<u8> {
    codec::encode_state(&ClusterState::default())
}

/// One hostile case: given the net (leader elected, a few entries committed), which node gets
/// which message from whom.
type Case = fn(&Net, usize, usize) -> (usize, u64, Message);

fn cases() -> Vec<(&'static str, Case)> {
    // `l` is the leader's index, `f` a follower's; the message claims to come from the peer
    // that would legitimately send that type.
    vec![
        ("heartbeat commit beyond the follower's log", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgHeartbeat, VOTERS[l], VOTERS[f], term);
            m.commit = last + 100;
            (f, VOTERS[l], m)
        }),
        (
            "append with a gap between index and the first entry",
            |net, l, f| {
                let (term, _, last, last_term) = net.view(f);
                let mut m = message(MessageType::MsgAppend, VOTERS[l], VOTERS[f], term);
                m.index = last;
                m.log_term = last_term;
                m.set_entries(vec![entry(last + 5, term)].into());
                (f, VOTERS[l], m)
            },
        ),
        ("append with non-contiguous entries", |net, l, f| {
            let (term, commit, last, last_term) = net.view(f);
            let mut m = message(MessageType::MsgAppend, VOTERS[l], VOTERS[f], term);
            m.index = last;
            m.log_term = last_term;
            m.commit = commit;
            m.set_entries(vec![entry(last + 1, term), entry(last + 3, term)].into());
            (f, VOTERS[l], m)
        }),
        ("append conflicting with a committed entry", |net, l, f| {
            let (term, commit, _, _) = net.view(f);
            let log_term = net.node(f).raw.raft.raft_log.term(commit).unwrap_or(0);
            let mut m = message(MessageType::MsgAppend, VOTERS[l], VOTERS[f], term);
            m.index = commit;
            m.log_term = log_term;
            m.set_entries(vec![entry(commit - 1, term + 1)].into());
            (f, VOTERS[l], m)
        }),
        ("append far beyond the log with log term 0", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgAppend, VOTERS[l], VOTERS[f], term);
            m.index = last + 1000;
            m.log_term = 0;
            m.commit = last + 1000;
            (f, VOTERS[l], m)
        }),
        ("append with decreasing entry terms", |net, l, f| {
            let (term, commit, last, last_term) = net.view(f);
            let mut m = message(MessageType::MsgAppend, VOTERS[l], VOTERS[f], term + 1);
            m.index = last;
            m.log_term = last_term;
            m.commit = commit;
            m.set_entries(vec![entry(last + 1, term + 1), entry(last + 2, term)].into());
            (f, VOTERS[l], m)
        }),
        ("append with index near u64::MAX", |net, l, f| {
            let (term, _, _, last_term) = net.view(f);
            let mut m = message(MessageType::MsgAppend, VOTERS[l], VOTERS[f], term);
            m.index = u64::MAX;
            m.log_term = last_term;
            m.set_entries(vec![entry(0, term)].into());
            (f, VOTERS[l], m)
        }),
        ("append response beyond the leader's log", |net, l, f| {
            let (term, _, last, _) = net.view(l);
            let mut m = message(MessageType::MsgAppendResponse, VOTERS[f], VOTERS[l], term);
            m.index = last + 100;
            (l, VOTERS[f], m)
        }),
        ("empty proposal forwarded to the leader", |_, l, f| {
            (
                l,
                VOTERS[f],
                message(MessageType::MsgPropose, VOTERS[f], VOTERS[l], 0),
            )
        }),
        ("proposal forwarded with a term", |net, l, f| {
            let (term, _, _, _) = net.view(l);
            let mut m = message(MessageType::MsgPropose, VOTERS[f], VOTERS[l], term);
            m.set_entries(vec![entry(0, 0)].into());
            (l, VOTERS[f], m)
        }),
        ("vote request with term 0", |net, l, f| {
            let (_, _, last, last_term) = net.view(f);
            let mut m = message(MessageType::MsgRequestVote, VOTERS[l], VOTERS[f], 0);
            m.index = last;
            m.log_term = last_term;
            (f, VOTERS[l], m)
        }),
        ("read index without entries", |net, l, f| {
            let (term, _, _, _) = net.view(l);
            (
                l,
                VOTERS[f],
                message(MessageType::MsgReadIndex, VOTERS[f], VOTERS[l], term),
            )
        }),
        ("heartbeat with term u64::MAX", |_, l, f| {
            let mut m = message(MessageType::MsgHeartbeat, VOTERS[l], VOTERS[f], u64::MAX);
            m.commit = 0;
            (f, VOTERS[l], m)
        }),
        ("snapshot whose data does not decode", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            m.set_snapshot(snapshot(last + 10, term, &VOTERS, b"not a snapshot"));
            (f, VOTERS[l], m)
        }),
        ("snapshot of a future format", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            let data = br#"{"format":2,"state":{}}"#;
            m.set_snapshot(snapshot(last + 10, term, &VOTERS, data));
            (f, VOTERS[l], m)
        }),
        ("snapshot with a fourth voter", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            m.set_snapshot(snapshot(last + 10, term, &[1, 2, 3, 4], &valid_state()));
            (f, VOTERS[l], m)
        }),
        ("snapshot with other voters", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            let voters = [VOTERS[f], 7, 8];
            m.set_snapshot(snapshot(last + 10, term, &voters, &valid_state()));
            (f, VOTERS[l], m)
        }),
        ("snapshot without this node", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            let voters: Vec<u64> = VOTERS.into_iter().filter(|&v| v != VOTERS[f]).collect();
            m.set_snapshot(snapshot(last + 10, term, &voters, &valid_state()));
            (f, VOTERS[l], m)
        }),
        ("snapshot with a joint conf state", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            let mut s = snapshot(last + 10, term, &VOTERS, &valid_state());
            let cs: &mut ConfState = s.mut_metadata().mut_conf_state();
            cs.set_voters_outgoing(vec![1, 2, 9]);
            cs.set_learners(vec![1]);
            m.set_snapshot(s);
            (f, VOTERS[l], m)
        }),
        ("snapshot with term 0 beyond the log", |net, l, f| {
            let (term, _, last, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            m.set_snapshot(snapshot(last + 10, 0, &VOTERS, &valid_state()));
            (f, VOTERS[l], m)
        }),
        ("snapshot older than the commit index", |net, l, f| {
            let (term, commit, _, _) = net.view(f);
            let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
            m.set_snapshot(snapshot(commit - 1, 1, &VOTERS, &valid_state()));
            (f, VOTERS[l], m)
        }),
    ]
}

/// A net with a leader and a few committed entries; returns it with (leader, follower).
fn ready_net(seed: u64) -> (Net, usize, usize) {
    let mut net = Net::new(seed);
    for _ in 0..3 {
        assert!(net.commits(3), "warm-up commit: {:?}", net.failures);
    }
    let l = net.leader().expect("leader");
    let f = (l + 1) % 3;
    (net, l, f)
}

#[test]
fn hostile_messages_are_refused_and_the_node_keeps_working() {
    let mut report = Vec::new();
    for (seed, (name, case)) in cases().into_iter().enumerate() {
        let (mut net, l, f) = ready_net(seed as u64 + 1);
        let (victim, from, msg) = case(&net, l, f);
        let before = net.view(victim);
        let result = net.inject(victim, from, &msg);
        // A leader that counted a phantom match would commit with a single copy: cut the
        // third node off and see whether the leader commits alone.
        net.isolated = Some(3 - l - f);
        for _ in 0..3 {
            net.round();
        }
        if let Some(n) = net.nodes[l].as_mut() {
            let _ = n.propose(b"while isolated".to_vec());
        }
        for _ in 0..5 {
            net.round();
        }
        net.check_commits_replicated();
        net.isolated = None;
        let healthy = net.commits(3);
        net.check_commits_replicated();
        net.check_restarts();
        if !net.commits(3) || !healthy {
            net.failures
                .push("the cluster did not commit on all three nodes afterwards".into());
        }
        let outcome = match &result {
            Ok(()) => "accepted".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        eprintln!("{name}: {outcome}");
        // An old but valid snapshot is for raft-rs to ignore; everything else must be refused.
        if result.is_ok() && !name.starts_with("snapshot older") {
            net.failures.push("accepted".into());
        }
        if !net.failures.is_empty() {
            report.push(format!(
                "{name} (victim n{}, before {before:?}, {outcome}):\n    {}",
                VOTERS[victim],
                net.failures.join("\n    ")
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// SplitMix-driven choice helpers for the random phase.
struct Dice(SplitMix);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    /// A value around `near`, or an extreme.
    fn around(&mut self, near: u64) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX - self.below(2),
            2 => self.0.next(),
            3 => near.saturating_add(self.below(2000)),
            4 => near.saturating_sub(self.below(3)),
            _ => near.saturating_add(self.below(3)),
        }
    }
}

/// Message types a peer legitimately sends.
const PEER_TYPES: [MessageType; 10] = [
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

/// Half of the messages are plausible (the types and values a peer sends, slightly off) so
/// that many get past the checks into raft-rs; the rest are anything at all.
fn random_message(net: &Net, d: &mut Dice) -> (usize, u64, Message) {
    if d.chance(50) {
        return plausible_message(net, d);
    }
    let victim = d.below(3) as usize;
    let from = VOTERS[(victim + 1 + d.below(2) as usize) % 3];
    let (term, commit, last, last_term) = net.view(victim);
    let t = MessageType::from_i32(d.below(19) as i32).unwrap_or(MessageType::MsgHeartbeat);
    let mut m = message(t, from, VOTERS[victim], d.around(term));
    m.log_term = d.around(last_term);
    m.index = match d.below(3) {
        0 => d.around(commit),
        _ => d.around(last),
    };
    m.commit = match d.below(3) {
        0 => d.around(last),
        _ => d.around(commit),
    };
    m.commit_term = d.around(term);
    m.reject = d.chance(30);
    m.reject_hint = d.around(last);
    if d.chance(5) {
        m.request_snapshot = d.around(last);
    }
    if d.chance(10) {
        m.context = b"ctx".to_vec().into();
    }
    let n = d.below(4);
    let mut idx = if d.chance(70) {
        m.index.saturating_add(1)
    } else {
        d.around(last)
    };
    let mut et = d.around(m.log_term);
    let mut ents = Vec::new();
    for _ in 0..n {
        let mut e = entry(idx, et);
        if d.chance(5) {
            e.set_entry_type(EntryType::EntryConfChange);
            e.data = vec![0xff, 0x01].into();
        }
        ents.push(e);
        idx = if d.chance(85) {
            idx.saturating_add(1)
        } else {
            d.around(idx)
        };
        if d.chance(20) {
            et = d.around(et);
        }
    }
    m.set_entries(ents.into());
    if t == MessageType::MsgSnapshot || d.chance(5) {
        let data: Vec<u8> = match d.below(4) {
            0 => b"garbage".to_vec(),
            1 => br#"{"format":2,"state":{}}"#.to_vec(),
            2 => Vec::new(),
            _ => valid_state(),
        };
        let voters: Vec<u64> = match d.below(5) {
            0 => vec![1, 2],
            1 => vec![1, 2, 3, 4],
            2 => vec![],
            _ => VOTERS.to_vec(),
        };
        let mut s = snapshot(d.around(last), d.around(term), &voters, &data);
        if d.chance(10) {
            s.mut_metadata().mut_conf_state().set_learners(vec![4]);
        }
        m.set_snapshot(s);
    }
    (victim, from, m)
}

fn plausible_message(net: &Net, d: &mut Dice) -> (usize, u64, Message) {
    let victim = d.below(3) as usize;
    let from = VOTERS[(victim + 1 + d.below(2) as usize) % 3];
    let (term, commit, last, last_term) = net.view(victim);
    let near = |d: &mut Dice, v: u64| v.saturating_sub(d.below(3)).saturating_add(d.below(3));
    let t = PEER_TYPES[d.below(PEER_TYPES.len() as u64) as usize];
    let term = if t == MessageType::MsgPropose {
        0
    } else {
        term + d.below(2)
    };
    let mut m = message(t, from, VOTERS[victim], term);
    m.index = near(d, last);
    m.log_term = net
        .node(victim)
        .raw
        .raft
        .raft_log
        .term(m.index)
        .unwrap_or(last_term)
        .max(1);
    if d.chance(20) {
        m.log_term = near(d, m.log_term).max(1);
    }
    m.commit = near(d, commit);
    m.commit_term = m.log_term;
    m.reject = d.chance(20);
    m.reject_hint = near(d, last);
    let n = if t == MessageType::MsgPropose {
        1 + d.below(2)
    } else {
        d.below(3)
    };
    let mut ents = Vec::new();
    let mut et = m.log_term;
    for k in 0..n {
        if d.chance(30) {
            et = (et + 1).min(term.max(1));
        }
        let mut e = entry(m.index + 1 + k, et);
        if d.chance(3) {
            e.index = near(d, e.index);
        }
        ents.push(e);
    }
    m.set_entries(ents.into());
    if t == MessageType::MsgSnapshot {
        let data = if d.chance(80) {
            valid_state()
        } else {
            b"{}".to_vec()
        };
        m.set_snapshot(snapshot(
            near(d, last).max(1) + d.below(5),
            term.max(1),
            &VOTERS,
            &data,
        ));
    }
    (victim, from, m)
}

#[test]
fn seeded_random_messages_never_panic_or_persist_garbage() {
    // `TRIAD_FUZZ_SEED` explores other seeds; the default keeps the test deterministic.
    let seed = std::env::var("TRIAD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7261_6674_6675_7a7a_u64);
    const ITERATIONS: usize = 3000;
    let mut d = Dice(SplitMix(seed));
    let mut net = Net::new(seed);
    let mut refused = 0usize;
    let mut accepted = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..ITERATIONS {
        if net.nodes.iter().any(Option::is_none) {
            break;
        }
        let (victim, from, msg) = random_message(&net, &mut d);
        let what = format!("{:?}", msg.get_msg_type());
        let before = net.failures.len();
        match net.inject(victim, from, &msg) {
            Ok(()) => *accepted.entry(what.clone()).or_insert(0) += 1,
            Err(_) => refused += 1,
        }
        if net.failures.len() > before {
            let found = net.failures.split_off(before);
            net.failures.push(format!(
                "iteration {i}, {what} to n{}: {}",
                VOTERS[victim],
                found.join("; ")
            ));
            if net.failures.len() > 20 {
                break;
            }
        }
        if i % 25 == 0 {
            net.round();
            if let Some(l) = net.leader() {
                if let Some(n) = net.nodes[l].as_mut() {
                    let _ = n.propose(format!("real {i}").into_bytes());
                }
            }
        }
        if i % 500 == 0 {
            let victim = d.below(3) as usize;
            if let Err(e) = net.restart(victim) {
                net.failures.push(format!(
                    "iteration {i}: restart of n{}: {e}",
                    VOTERS[victim]
                ));
            }
        }
    }
    eprintln!("refused {refused} of {ITERATIONS}; accepted by type: {accepted:?}");
    // Hostile traffic stops: a majority must still commit, and every node must restart.
    for _ in 0..50 {
        net.round();
    }
    net.real_refused.clear();
    let agree = net.committed_prefixes_agree();
    if !agree {
        eprintln!("seed {seed}: hostile messages made the committed logs diverge");
    }
    if !net.commits(2) && agree {
        let views: Vec<_> = (0..3)
            .map(|i| (net.node(i).status(), net.view(i)))
            .collect();
        let refused: std::collections::BTreeSet<_> = net.real_refused.iter().collect();
        net.failures.push(format!(
            "no majority commits after the hostile traffic stopped: {views:?}; last refusals \
             between real nodes: {refused:?}"
        ));
    }
    net.check_restarts();
    assert!(
        net.failures.is_empty(),
        "seed {seed}: {refused} of {ITERATIONS} refused; failures:\n{}",
        net.failures.join("\n")
    );
    assert!(refused > ITERATIONS / 10, "only {refused} refused");
}

#[test]
fn a_refused_snapshot_leaves_a_store_that_restarts() {
    let (mut net, l, f) = ready_net(77);
    let (term, _, last, _) = net.view(f);
    for data in [&b"not json"[..], br#"{"format":2,"state":{}}"#] {
        let mut m = message(MessageType::MsgSnapshot, VOTERS[l], VOTERS[f], term);
        m.set_snapshot(snapshot(last + 10, term, &VOTERS, data));
        let err = net.inject(f, VOTERS[l], &m).expect_err("refused");
        assert!(err.to_string().contains("snapshot"), "{err}");
    }
    net.restart(f).expect("restarts from its store");
    assert_eq!(net.node(f).snapshot_index(), LogIndex(0));
    assert!(net.commits(3), "{:?}", net.failures);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
}

mod over_tcp;
