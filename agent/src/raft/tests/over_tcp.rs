//! The hostile-peer checks over real connections: three [`RaftNode`]s on in-memory stores,
//! each behind its own [`Transport`] on a 127.0.0.1 ephemeral port and driven like the agent's
//! event loop (ticks, inbound messages stepped through the agent's `driver::step`, which counts
//! refusals in its [`Metrics`], outputs sent through the transport).
//!
//! The nodes speak mutual TLS with certificates from `triad cert`'s functions. A fake peer
//! holding a member's certificate (a compromised member) connects to a node's Raft port,
//! passes the TLS and `Hello` handshakes as that member, then sends well-formed frames
//! carrying hostile raft-rs messages: a heartbeat
//! committing far beyond the log, an append with a gap, a snapshot whose data does not decode,
//! and a seeded random batch. Checked: no node stops, the targeted messages are each counted
//! once as `invalid` and leave leader and term alone, and after the random batch the cluster
//! still agrees on a leader and commits on all three nodes. Strangers (plaintext, another CA,
//! a member's certificate claiming another member) are refused and counted by reason.

// Reads the clock (test over real sockets and timers); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use triad_proto::v1 as pb;

use super::*;
use crate::metrics::Metrics;
use crate::raft::transport::{Inbound, Transport, TransportConfig};
use crate::tls::PeerTls;

const CLUSTER: &str = "over-tcp";
const TICK: Duration = Duration::from_millis(10);
/// Bound on anything the cluster should do (elect, commit, count a frame).
const WITHIN: Duration = Duration::from_secs(10);
/// The rejection labels of `driver::step`.
const LABELS: [&str; 4] = ["invalid", "decode", "refused", "mismatch"];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One node: its core, the metrics its driver records into, and what it committed.
struct WireNode {
    id: u64,
    addr: SocketAddr,
    raft: Arc<Mutex<RaftNode>>,
    metrics: Metrics,
    committed: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
    /// Its TLS setup (a fake peer claiming to be this node uses it).
    tls: Arc<PeerTls>,
}

impl WireNode {
    fn status(&self) -> RaftStatus {
        lock(&self.raft).status()
    }

    fn rejected(&self, label: &str) -> u64 {
        self.metrics
            .raft_messages_rejected
            .with_label_values(&[label])
            .get()
    }

    fn refused(&self, reason: crate::tls::Refusal) -> u64 {
        self.metrics
            .peer_refused
            .with_label_values(&[reason.as_str()])
            .get()
    }

    fn rejections(&self) -> BTreeMap<&'static str, u64> {
        LABELS.iter().map(|&l| (l, self.rejected(l))).collect()
    }

    /// (term, commit, last index, term of the last entry): what hostile values are built near.
    fn view(&self) -> (u64, u64, u64, u64) {
        let r = lock(&self.raft);
        let log = &r.raw.raft.raft_log;
        let last = log.last_index();
        (
            r.raw.raft.term,
            log.committed,
            last,
            log.term(last).unwrap_or(0),
        )
    }
}

/// Drives one core as the agent's event loop does, until `shutdown`. A panic in raft-rs ends
/// this task, which the test sees.
async fn drive(
    raft: Arc<Mutex<RaftNode>>,
    metrics: Metrics,
    transport: Transport,
    mut inbound: mpsc::Receiver<Inbound>,
    committed: Arc<Mutex<Vec<Vec<u8>>>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => lock(&raft).tick(),
            m = inbound.recv() => match m {
                Some(Inbound::Raft { from, bytes }) => {
                    crate::driver::step(&mut lock(&raft), &metrics, from, &bytes);
                }
                Some(Inbound::Report { .. }) => {}
                None => return,
            },
        }
        let out = lock(&raft)
            .process_ready()
            .expect("process_ready failed: the agent would stop");
        lock(&committed).extend(out.committed.into_iter().map(|e| e.data));
        for m in out.messages {
            transport.send_raft(m.to, m.bytes);
        }
    }
}

/// Three addresses on 127.0.0.1 that were free a moment ago.
fn free_addrs() -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = VOTERS
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address"))
        .collect()
}

/// A CA and certificates for nodes 1..=3 of [`CLUSTER`], in a new directory.
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a directory for the certificates");
    crate::tls::init_ca(dir.path(), CLUSTER, 1).expect("a CA");
    for &id in &VOTERS {
        crate::tls::issue(dir.path(), dir.path(), CLUSTER, NodeId(id), 1).expect("a certificate");
    }
    dir
}

fn load_tls(pki: &std::path::Path, id: u64) -> Arc<PeerTls> {
    let files = crate::tls::TlsFiles {
        ca: pki.join("ca.crt"),
        cert: pki.join(format!("n{id}.crt")),
        key: pki.join(format!("n{id}.key")),
    };
    Arc::new(PeerTls::load(&files, CLUSTER, NodeId(id)).expect("load the certificates"))
}

/// Starts the three nodes; the returned directory holds their certificates.
async fn start_cluster(shutdown: &CancellationToken) -> (Vec<WireNode>, tempfile::TempDir) {
    let pki = pki();
    let addrs = free_addrs();
    let peers: BTreeMap<NodeId, SocketAddr> = VOTERS
        .iter()
        .zip(&addrs)
        .map(|(&id, &a)| (NodeId(id), a))
        .collect();
    let mut nodes = Vec::new();
    for (&id, &addr) in VOTERS.iter().zip(&addrs) {
        let store = RaftStore::open_mem(SharedMemBackend::new(), &VOTERS).expect("open store");
        let raft = RaftNode::new(&core_config(id, 0x7463_7000 + id), store).expect("new node");
        let raft = Arc::new(Mutex::new(raft));
        let metrics = Metrics::new(&id.to_string()).expect("metrics");
        let (tx, rx) = mpsc::channel(4096);
        let tls = load_tls(pki.path(), id);
        let transport = Transport::start(
            TransportConfig {
                cluster: CLUSTER.into(),
                me: NodeId(id),
                listen: addr,
                peers: peers.clone(),
                max_frame_bytes: 1 << 20,
                ping_interval: TICK * 2,
                reachable_window: TICK * 20,
                tls: Some(tls.clone()),
                safety_timings: BTreeMap::new(),
            },
            tx,
            metrics.clone(),
            shutdown.clone(),
        )
        .await
        .expect("start the transport");
        let committed = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(drive(
            raft.clone(),
            metrics.clone(),
            transport,
            rx,
            committed.clone(),
            shutdown.clone(),
        ));
        nodes.push(WireNode {
            id,
            addr,
            raft,
            metrics,
            committed,
            task,
            tls,
        });
    }
    (nodes, pki)
}

/// Fails the test when a node's driver ended (a panic in the core).
fn assert_running(nodes: &[WireNode]) {
    for n in nodes {
        assert!(
            !n.task.is_finished(),
            "n{} stopped (its core panicked or failed)",
            n.id
        );
    }
}

/// The leader (index) and term once all three nodes name the same leader.
async fn agreed_leader(nodes: &[WireNode]) -> (usize, u64) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        assert_running(nodes);
        let st: Vec<RaftStatus> = nodes.iter().map(WireNode::status).collect();
        if let Some(l) = st.iter().position(|s| s.role == Role::Leader) {
            let leader = NodeId(nodes[l].id);
            if st
                .iter()
                .all(|s| s.leader == Some(leader) && s.term == st[l].term)
            {
                return (l, st[l].term.0);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader within {WITHIN:?}: {st:?}"
        );
        tokio::time::sleep(TICK * 5).await;
    }
}

/// Proposes `data` on the leader until `want` nodes committed past its index (re-proposing
/// after a leadership change). Index-based, as Raft sees it: after accepted plausible-but-false
/// messages, a node's entry at an index may differ from the leader's (see the module docs of
/// `validate`), which no check here claims to prevent.
async fn commit(nodes: &[WireNode], data: &[u8], want: usize) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut proposed: Option<(tokio::time::Instant, u64)> = None;
    loop {
        assert_running(nodes);
        let st: Vec<RaftStatus> = nodes.iter().map(WireNode::status).collect();
        if let Some((_, target)) = proposed {
            if st.iter().filter(|s| s.commit.0 >= target).count() >= want {
                return;
            }
        }
        let now = tokio::time::Instant::now();
        assert!(
            now < deadline,
            "{:?} not committed on {want} nodes within {WITHIN:?} (proposed at {proposed:?}): \
             {st:?}",
            String::from_utf8_lossy(data)
        );
        // (Re)propose on the current leader; an entry lost to a leadership change is retried.
        if proposed.is_none_or(|(t, _)| now - t > Duration::from_secs(1)) {
            if let Some(l) = nodes.iter().find(|n| n.status().role == Role::Leader) {
                let mut raft = lock(&l.raft);
                let target = raft.status().last_index.0 + 1;
                if raft.propose(data.to_vec()).is_ok() {
                    proposed = Some((now, target));
                }
            }
        }
        tokio::time::sleep(TICK * 5).await;
    }
}

/// Commits `data` on all three nodes and checks each holds exactly that entry.
async fn commit_everywhere(nodes: &[WireNode], data: &[u8]) {
    commit(nodes, data, nodes.len()).await;
    for n in nodes {
        assert!(
            lock(&n.committed).iter().any(|d| d == data),
            "n{} committed past {:?} without that entry",
            n.id,
            String::from_utf8_lossy(data)
        );
    }
}

/// A connection to a node's Raft port that passed the handshake as a configured peer.
struct FakePeer {
    claims: u64,
    to: u64,
    sink: FramedWrite<tokio_rustls::client::TlsStream<TcpStream>, LengthDelimitedCodec>,
}

impl FakePeer {
    /// Connects to `node` with the certificate of `creds` and a `Hello` claiming `claims`.
    async fn connect_as(node: &WireNode, creds: &PeerTls, claims: u64) -> FakePeer {
        let stream = TcpStream::connect(node.addr)
            .await
            .expect("connect to the Raft port");
        let name = creds.server_name(NodeId(node.id)).expect("a server name");
        let stream = creds
            .connector()
            .connect(name, stream)
            .await
            .expect("TLS handshake");
        let mut peer = FakePeer {
            claims,
            to: node.id,
            sink: FramedWrite::new(stream, LengthDelimitedCodec::new()),
        };
        peer.frame(pb::peer_frame::Body::Hello(pb::Hello {
            cluster: CLUSTER.into(),
            node_id: claims,
            protocol_version: triad_proto::PROTOCOL_VERSION,
            safety_timings: Default::default(),
        }))
        .await;
        peer
    }

    async fn frame(&mut self, body: pb::peer_frame::Body) {
        let frame = pb::PeerFrame { body: Some(body) };
        self.sink
            .send(Bytes::from(frame.encode_to_vec()))
            .await
            .expect("send a frame");
    }

    /// Sends a raft-rs message in a well-formed `RaftMessage` frame.
    async fn raft(&mut self, m: &Message) {
        assert_eq!((m.from, m.to), (self.claims, self.to), "{m:?}");
        let bytes = protobuf::Message::write_to_bytes(m).expect("encode a raft message");
        self.frame(pb::peer_frame::Body::RaftMessage(bytes)).await;
    }
}

/// The three targeted hostile messages for `victim`, claiming to come from `from`.
fn targeted(victim: &WireNode, from: u64) -> Vec<(&'static str, Message)> {
    let (term, _, last, _) = victim.view();
    let to = victim.id;
    let mut heartbeat = message(MessageType::MsgHeartbeat, from, to, term);
    heartbeat.commit = last + 1000;
    let mut gap = message(MessageType::MsgAppend, from, to, term);
    gap.index = last;
    gap.log_term = term;
    gap.set_entries(vec![entry(last + 1, term), entry(last + 3, term)].into());
    let mut snap = message(MessageType::MsgSnapshot, from, to, term);
    snap.set_snapshot(snapshot(last + 10, term, &VOTERS, b"not a cluster state"));
    vec![
        ("heartbeat commit beyond the log", heartbeat),
        ("append with a gap", gap),
        ("snapshot whose data does not decode", snap),
    ]
}

/// Any message type and field values around the victim's state or extreme, entries and
/// snapshots often malformed. Some pass the checks and reach raft-rs.
fn random_hostile(victim: &WireNode, from: u64, d: &mut Dice) -> Message {
    let (term, commit, last, last_term) = victim.view();
    let t = if d.chance(60) {
        PEER_TYPES[d.below(PEER_TYPES.len() as u64) as usize]
    } else {
        MessageType::from_i32(d.below(19) as i32).unwrap_or(MessageType::MsgHeartbeat)
    };
    let mut m = message(t, from, victim.id, d.around(term));
    m.log_term = d.around(last_term);
    m.index = d.around(last);
    m.commit = if d.chance(50) {
        d.around(commit)
    } else {
        d.around(last)
    };
    m.commit_term = d.around(term);
    m.reject = d.chance(30);
    m.reject_hint = d.around(last);
    if d.chance(5) {
        m.request_snapshot = d.around(last);
    }
    let mut idx = if d.chance(70) {
        m.index.saturating_add(1)
    } else {
        d.around(last)
    };
    let mut et = d.around(m.log_term);
    let mut ents = Vec::new();
    for _ in 0..d.below(4) {
        let mut e = entry(idx, et);
        if d.chance(5) {
            e.set_entry_type(EntryType::EntryConfChange);
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
        let data = match d.below(3) {
            0 => b"garbage".to_vec(),
            1 => Vec::new(),
            _ => valid_state(),
        };
        let voters: Vec<u64> = match d.below(4) {
            0 => vec![1, 2],
            1 => vec![1, 2, 3, 4],
            _ => VOTERS.to_vec(),
        };
        m.set_snapshot(snapshot(d.around(last), d.around(term), &voters, &data));
    }
    m
}

/// Waits until node `n` counted at least `want` rejections labelled `label`.
async fn counted(n: &WireNode, label: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while n.rejected(label) < want {
        assert_running(std::slice::from_ref(n));
        assert!(
            tokio::time::Instant::now() < deadline,
            "n{}: {} `{label}` rejections counted, expected {want} (all: {:?})",
            n.id,
            n.rejected(label),
            n.rejections()
        );
        tokio::time::sleep(TICK * 5).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_over_tcp_are_counted_and_the_cluster_keeps_its_quorum() {
    let shutdown = CancellationToken::new();
    let (nodes, _pki) = start_cluster(&shutdown).await;
    let (l, term) = agreed_leader(&nodes).await;
    commit_everywhere(&nodes, b"before").await;

    // Targeted: each node gets the three messages from the peer that would send them (the
    // leader for a follower, a follower for the leader). Each is refused as `invalid`.
    let before: Vec<_> = nodes.iter().map(WireNode::rejections).collect();
    let mut peers = Vec::new();
    for (i, victim) in nodes.iter().enumerate() {
        let from = if i == l {
            nodes[(l + 1) % 3].id
        } else {
            nodes[l].id
        };
        let creds = &nodes.iter().find(|n| n.id == from).expect("the sender").tls;
        let mut peer = FakePeer::connect_as(victim, creds, from).await;
        for (what, m) in targeted(victim, from) {
            eprintln!("n{}: sending {what} as n{from}", victim.id);
            peer.raft(&m).await;
        }
        peers.push(peer);
    }
    for (n, b) in nodes.iter().zip(&before) {
        counted(n, "invalid", b["invalid"] + 3).await;
    }
    // Let any late effect show, then: exactly those three, nothing else, same leader and term.
    tokio::time::sleep(TICK * 20).await;
    for (n, b) in nodes.iter().zip(&before) {
        let after = n.rejections();
        for label in LABELS {
            let want = b[label] + u64::from(label == "invalid") * 3;
            assert_eq!(after[label], want, "n{} `{label}`: {after:?}", n.id);
        }
    }
    assert_eq!(
        agreed_leader(&nodes).await,
        (l, term),
        "leader or term changed"
    );
    commit_everywhere(&nodes, b"after targeted").await;

    // A seeded random batch, on the connections still open; nodes keep running and still
    // count (the seed is fixed so that a failure replays).
    let mut d = Dice(SplitMix(0x7463_705f_6261_7463));
    let before: u64 = nodes.iter().map(|n| n.rejected("invalid")).sum();
    const BATCH: usize = 600;
    for k in 0..BATCH {
        let p = &mut peers[k % 3];
        let victim = nodes.iter().find(|n| n.id == p.to).expect("victim");
        let m = random_hostile(victim, p.claims, &mut d);
        p.raft(&m).await;
        if k % 50 == 0 {
            assert_running(&nodes);
        }
    }
    let after: u64 = nodes.iter().map(|n| n.rejected("invalid")).sum();
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut after = after;
    while after <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the random batch counted no `invalid` rejection"
        );
        tokio::time::sleep(TICK * 5).await;
        after = nodes.iter().map(|n| n.rejected("invalid")).sum();
    }
    drop(peers);
    // Quorum kept: the nodes agree on a leader and a majority commits a new entry.
    let (l2, term2) = agreed_leader(&nodes).await;
    commit(&nodes, b"after random", 2).await;
    assert_running(&nodes);
    let after: u64 = nodes.iter().map(|n| n.rejected("invalid")).sum();
    let counts: Vec<_> = nodes.iter().map(|n| (n.id, n.rejections())).collect();
    eprintln!(
        "random batch of {BATCH}: `invalid` {before} -> {after}; leader n{} term {term2}; \
         rejections {counts:?}",
        nodes[l2].id
    );
    shutdown.cancel();
    for n in nodes {
        n.task.await.expect("driver task");
    }
}

/// Waits until `node` counted `want` refusals for `reason`.
async fn refused_within(node: &WireNode, reason: crate::tls::Refusal, want: u64) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while node.refused(reason) < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "n{} counted {} `{}` refusals, want {want}",
            node.id,
            node.refused(reason),
            reason.as_str()
        );
        tokio::time::sleep(TICK).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_by_reason_and_the_cluster_keeps_its_quorum() {
    use crate::tls::Refusal;
    use tokio::io::AsyncWriteExt as _;
    let shutdown = CancellationToken::new();
    let (nodes, certs) = start_cluster(&shutdown).await;
    agreed_leader(&nodes).await;
    let victim = &nodes[0];

    // Plaintext: a well-formed Hello without TLS.
    let mut plain = TcpStream::connect(victim.addr).await.expect("connect");
    let hello = pb::PeerFrame {
        body: Some(pb::peer_frame::Body::Hello(pb::Hello {
            cluster: CLUSTER.into(),
            node_id: 2,
            protocol_version: triad_proto::PROTOCOL_VERSION,
            safety_timings: Default::default(),
        })),
    }
    .encode_to_vec();
    let mut framed = (hello.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&hello);
    plain.write_all(&framed).await.expect("write");
    refused_within(victim, Refusal::Plaintext, 1).await;

    // Another CA's certificate for the right name (from a client that trusts the victim, so
    // that it gets as far as presenting its certificate).
    let stranger_pki = pki();
    let stranger = crate::tls::raw_connector(
        &certs.path().join("ca.crt"),
        &stranger_pki.path().join("n2.crt"),
        &stranger_pki.path().join("n2.key"),
    );
    let stream = TcpStream::connect(victim.addr).await.expect("connect");
    let name = nodes[1].tls.server_name(NodeId(victim.id)).expect("name");
    if let Ok(mut tls) = stranger.connect(name, stream).await {
        // TLS 1.3: the client's handshake ends before the server has checked its certificate.
        let _ = tls.write_all(b"x").await;
    }
    refused_within(victim, Refusal::UnknownCa, 1).await;

    // A member's certificate whose Hello claims another member.
    let mut liar = FakePeer::connect_as(victim, &nodes[1].tls, 3).await;
    liar.frame(pb::peer_frame::Body::Ping(pb::Ping { sent_micros: 0 }))
        .await;
    refused_within(victim, Refusal::WrongNode, 1).await;

    // The members themselves were never refused, and the cluster still commits.
    commit_everywhere(&nodes, b"after strangers").await;
    for n in &nodes[1..] {
        for r in Refusal::ALL {
            assert_eq!(
                n.refused(r),
                0,
                "n{} refused a member: {}",
                n.id,
                r.as_str()
            );
        }
    }
    drop(certs);
    shutdown.cancel();
}
