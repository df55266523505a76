//! TCP transport between agents: length-delimited protobuf frames (`triad_proto::v1::PeerFrame`).
//!
//! Why plain framed TCP rather than gRPC: Raft needs one-way, fire-and-forget message delivery
//! with loss tolerated, not request/response; a length-delimited prost frame over a long-lived
//! connection is exactly that, adds no HTTP/2 stack to the build, and keeps every byte that
//! crosses the wire defined in `proto/`.
//!
//! Shape: each node *dials* every peer and only *writes* on that connection; it *accepts*
//! connections from peers and only *reads* on those. Replies travel on the replier's own
//! outbound connection. Per peer there is one writer task with a bounded queue
//! ([`QUEUE_DEPTH`] frames): sending never blocks the caller; a full queue or a disconnected
//! peer drops frames (Raft retransmits), counted in `triad_peer_frames_dropped_total`.
//! Writers reconnect with exponential backoff (100 ms to 2 s).
//!
//! The first frame on a connection must be `Hello` with this cluster's name, the protocol
//! version, a configured peer id other than ours, and the same safety timings as ours (see
//! `config::safety_timings`: the lease argument assumes all three nodes have the same; a
//! peer with others is refused, counted as `safety_timings`, and shown in status). Anything else, a frame over
//! `raft.max_frame_bytes`, or a frame that is not a valid `PeerFrame` closes the connection and
//! counts in `triad_peer_bad_frames_total{reason}`. Nothing a peer sends can panic the agent.
//!
//! Every writer also sends a `Ping` each ping interval; the peer echoes a `Pong`, giving the
//! round-trip histogram and each peer's last contact, from which status reports reachability.
//! A pong is a lease grant: it is withheld from the peers under embargo, and each one given
//! is dated, under the same lock, for the health report (`Transport::pong_ages_ms`), so that
//! the leader can tell when a suspected master's lease was last renewed.
//!
//! **Mutual TLS** (on unless `tls.insecure_plaintext_peers`): the listener takes only TLS 1.3
//! with a client certificate from the cluster's CA (see [`crate::tls`]); the certificate names
//! the node, and the `Hello` that follows must claim that same node. A dialler verifies the
//! listener's certificate for the peer it dialled. A connection whose first byte is not a TLS
//! handshake is refused as plaintext before anything is parsed. Every refusal closes the
//! connection, counts in `triad_peer_refused_total{reason}` and is logged with the detail
//! (a dialler logs a repeated refusal once per change of reason).
//!
//! Certificates are replaced by a reload ([`Transport::set_tls`]): new connections use the new
//! ones, established connections go on, so a rotation never drops the quorum.
//!
//! Caveats: in insecure mode `Hello` only prevents mistakes, not attacks.

// Reads the clock (adapter: lease grants and peer contact on the process clock); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use triad_proto::v1 as pb;

use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::tls::{client_identity, is_tls_handshake, PeerTls, Refusal};

/// Frames queued per peer before new ones are dropped.
pub const QUEUE_DEPTH: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Cluster name carried in `Hello`.
    pub cluster: String,
    /// This node.
    pub me: NodeId,
    /// Address to accept peer connections on.
    pub listen: SocketAddr,
    /// Every other member's Raft address.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Largest accepted frame.
    pub max_frame_bytes: usize,
    /// Interval between pings to each peer.
    pub ping_interval: Duration,
    /// A peer heard from within this window counts as reachable.
    pub reachable_window: Duration,
    /// Mutual TLS at start (see [`Transport::set_tls`]); `None` only with
    /// `tls.insecure_plaintext_peers`.
    pub tls: Option<Arc<PeerTls>>,
    /// This node's safety timings (`config::safety_timings`), sent in `Hello`; a peer whose
    /// `Hello` carries others is refused.
    pub safety_timings: BTreeMap<String, String>,
}

/// A message received from a peer that passed the handshake.
#[derive(Debug)]
pub enum Inbound {
    /// A Raft message.
    Raft {
        /// The peer named in the connection's `Hello`.
        from: NodeId,
        /// The encoded raft-rs message.
        bytes: Bytes,
    },
    /// The peer's latest health observations.
    Report {
        /// The peer named in the connection's `Hello`.
        from: NodeId,
        /// The report, not yet validated (boxed: it is much larger than a Raft message).
        report: Box<pb::HealthReport>,
    },
}

/// Errors starting the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The listen address could not be bound.
    #[error("cannot listen for peers on {addr}: {source} (is another agent running, or is the address wrong?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What is known about one peer's connectivity.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerHealth {
    /// When a frame from it last arrived.
    pub last_contact: Option<Instant>,
    /// Latest ping round-trip time.
    pub rtt: Option<Duration>,
}

/// This agent's lease, renewed by peers answering its pings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Whether enough peers granted it within the lease duration.
    pub valid: bool,
    /// Time left until it runs out (zero when expired).
    pub remaining: Duration,
}

/// A view of one peer for status output.
#[derive(Clone, Debug)]
pub struct PeerView {
    /// Heard from within the reachability window.
    pub reachable: bool,
    /// Milliseconds since last contact.
    pub last_contact_ms: Option<u64>,
    /// Latest round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Why this node refused the peer's last connection, when it did and the peer has not
    /// connected since (for example its safety timings differ).
    pub refused: Option<String>,
}

/// Whose pings are answered, and when each peer's was last answered: one lock, so that once
/// [`Transport::set_embargo`] returns, every pong decided before it is already recorded.
#[derive(Default)]
struct Embargo {
    /// Peers whose pings are not answered (their lease is not renewed).
    peers: std::collections::BTreeSet<NodeId>,
    /// Per peer, when (micros since the transport epoch) its ping was last answered.
    answered: BTreeMap<NodeId, u64>,
}

#[derive(Default)]
struct Shared {
    health: Mutex<BTreeMap<NodeId, PeerHealth>>,
    /// The TLS setup new connections use (`None`: plaintext peers); replaced by a reload.
    tls: std::sync::RwLock<Option<Arc<PeerTls>>>,
    /// Per peer, why its last connection was refused after it said who it is; cleared when
    /// it connects.
    refused: Mutex<BTreeMap<NodeId, String>>,
    /// The embargo and the answered pings.
    embargo: Mutex<Embargo>,
    /// Per peer, the send time (micros since the transport epoch) of the newest ping it
    /// answered: the start of the lease grant it gave us.
    granted: Mutex<BTreeMap<NodeId, u64>>,
}

impl Shared {
    fn touch(&self, peer: NodeId, rtt: Option<Duration>) {
        if let Ok(mut h) = self.health.lock() {
            let e = h.entry(peer).or_default();
            e.last_contact = Some(Instant::now());
            if rtt.is_some() {
                e.rtt = rtt;
            }
        }
    }
}

/// Handle to the running transport. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    senders: Arc<BTreeMap<NodeId, mpsc::Sender<pb::PeerFrame>>>,
    shared: Arc<Shared>,
    metrics: Metrics,
    epoch: Instant,
    reachable_window: Duration,
}

impl Transport {
    /// Binds the listener and starts the acceptor and one writer per peer. Tasks stop when
    /// `shutdown` is cancelled.
    pub async fn start(
        cfg: TransportConfig,
        inbound: mpsc::Sender<Inbound>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<Transport, TransportError> {
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| TransportError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        for r in Refusal::ALL {
            // Every reason's series exists from the start, at 0, for rate() and alerts.
            metrics.peer_refused.with_label_values(&[r.as_str()]);
        }
        let mut senders = BTreeMap::new();
        let mut receivers = Vec::new();
        for (&id, &addr) in &cfg.peers {
            if id == cfg.me {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            senders.insert(id, tx);
            receivers.push((id, addr, rx));
        }
        let transport = Transport {
            senders: Arc::new(senders),
            // Until the event loop has applied the stored log and computed the embargo, no peer
            // gets a lease grant: this node cannot yet tell whether a peer is behind.
            shared: Arc::new(Shared {
                tls: std::sync::RwLock::new(cfg.tls.clone()),
                embargo: Mutex::new(Embargo {
                    peers: cfg.peers.keys().copied().filter(|&p| p != cfg.me).collect(),
                    answered: BTreeMap::new(),
                }),
                ..Shared::default()
            }),
            metrics,
            epoch: Instant::now(),
            reachable_window: cfg.reachable_window,
        };
        let cfg = Arc::new(cfg);
        for (id, addr, rx) in receivers {
            tokio::spawn(writer(
                transport.clone(),
                cfg.clone(),
                id,
                addr,
                rx,
                shutdown.clone(),
            ));
        }
        tokio::spawn(acceptor(
            transport.clone(),
            cfg,
            listener,
            inbound,
            shutdown,
        ));
        Ok(transport)
    }

    /// Queues a Raft message for a peer; never blocks. Returns false when it was dropped.
    pub fn send_raft(&self, to: NodeId, bytes: Vec<u8>) -> bool {
        self.enqueue(
            to,
            pb::PeerFrame {
                body: Some(pb::peer_frame::Body::RaftMessage(bytes)),
            },
        )
    }

    /// Queues a health report for every peer; never blocks.
    pub fn broadcast_report(&self, report: &pb::HealthReport) {
        for &to in self.senders.keys() {
            self.enqueue(
                to,
                pb::PeerFrame {
                    body: Some(pb::peer_frame::Body::HealthReport(report.clone())),
                },
            );
        }
    }

    fn enqueue(&self, to: NodeId, frame: pb::PeerFrame) -> bool {
        let Some(tx) = self.senders.get(&to) else {
            return false;
        };
        match tx.try_send(frame) {
            Ok(()) => true,
            Err(_) => {
                self.metrics
                    .peer_frames_dropped
                    .with_label_values(&[&to.to_string()])
                    .inc();
                false
            }
        }
    }

    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The TLS setup for new connections (`None`: plaintext peers).
    fn tls(&self) -> Option<Arc<PeerTls>> {
        self.shared.tls.read().ok().and_then(|t| t.clone())
    }

    /// Replaces the certificates new connections use (a reload); established connections go
    /// on. Ignored with plaintext peers (switching needs a restart).
    pub fn set_tls(&self, tls: Arc<PeerTls>) {
        if let Ok(mut t) = self.shared.tls.write() {
            if t.is_some() {
                *t = Some(tls);
            }
        }
    }

    /// Sets the peers whose pings go unanswered, so their leases run out.
    pub fn set_embargo(&self, peers: std::collections::BTreeSet<NodeId>) {
        if let Ok(mut e) = self.shared.embargo.lock() {
            if e.peers != peers {
                let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
                if peers.is_empty() {
                    tracing::info!("lease renewal resumed for every peer");
                } else {
                    tracing::warn!(peers = ?list,
                        "lease renewal withheld (peer suspected or behind the newest decision)");
                }
                e.peers = peers;
            }
        }
    }

    /// Per peer, milliseconds since this agent last answered its ping, or since the transport
    /// started when it has not (a grant given before a restart is older than that). Rounded
    /// down, so a reader that dates the answer as `now - age` errs late, towards waiting
    /// longer. Every pong decided before the last [`Transport::set_embargo`] returned counts.
    pub fn pong_ages_ms(&self) -> BTreeMap<NodeId, u64> {
        let now = self.micros();
        let answered = self
            .shared
            .embargo
            .lock()
            .map(|e| e.answered.clone())
            // Unknown: report every answer as just given (the longest wait).
            .unwrap_or_else(|_| self.senders.keys().map(|&p| (p, now)).collect());
        self.senders
            .keys()
            .map(|&p| {
                let at = answered.get(&p).copied().unwrap_or(0);
                (p, now.saturating_sub(at) / 1000)
            })
            .collect()
    }

    /// This agent's lease: valid while at least `grants_needed` peers answered a ping sent
    /// within `duration`. The lease counts from the ping's *send* time, so it never outlives
    /// a grant even when the answer was slow.
    pub fn lease(&self, duration: Duration, grants_needed: usize) -> Lease {
        let grants: Vec<u64> = self
            .shared
            .granted
            .lock()
            .map(|g| g.values().copied().collect())
            .unwrap_or_default();
        lease_from_grants(&grants, self.micros(), duration, grants_needed)
    }

    /// Connectivity of every peer, sorted by id; also refreshes `triad_peer_reachable`.
    pub fn peers(&self) -> BTreeMap<NodeId, PeerView> {
        let health = self
            .shared
            .health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let refused = self
            .shared
            .refused
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let mut out = BTreeMap::new();
        for &id in self.senders.keys() {
            let h = health.get(&id).copied().unwrap_or_default();
            let age = h.last_contact.map(|t| t.elapsed());
            let reachable = age.is_some_and(|a| a <= self.reachable_window);
            self.metrics
                .peer_reachable
                .with_label_values(&[&id.to_string()])
                .set(i64::from(reachable));
            out.insert(
                id,
                PeerView {
                    reachable,
                    last_contact_ms: age.map(|a| a.as_millis() as u64),
                    rtt_ms: h.rtt.map(|r| r.as_secs_f64() * 1000.0),
                    refused: refused.get(&id).cloned(),
                },
            );
        }
        out
    }
}

/// The lease given grant start times (micros, same clock as `now`): it lasts as long as the
/// `needed`-th longest grant. Pure.
pub fn lease_from_grants(grants: &[u64], now: u64, duration: Duration, needed: usize) -> Lease {
    if needed == 0 {
        return Lease {
            valid: true,
            remaining: duration,
        };
    }
    let mut ends: Vec<u64> = grants
        .iter()
        .map(|&sent| sent.saturating_add(duration.as_micros() as u64))
        .collect();
    ends.sort_unstable_by(|a, b| b.cmp(a));
    let end = ends.get(needed - 1).copied().unwrap_or(0);
    Lease {
        valid: end > now,
        remaining: Duration::from_micros(end.saturating_sub(now)),
    }
}

async fn acceptor(
    t: Transport,
    cfg: Arc<TransportConfig>,
    listener: TcpListener,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(accept_peer(
                    t.clone(),
                    cfg.clone(),
                    stream,
                    remote,
                    inbound.clone(),
                    shutdown.clone(),
                ));
            }
            Err(err) => {
                tracing::warn!(%err, "accepting a peer connection failed");
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

fn bad_frame(t: &Transport, remote: SocketAddr, reason: &str, detail: &str) {
    t.metrics.peer_bad_frames.with_label_values(&[reason]).inc();
    tracing::warn!(%remote, reason, detail, "closing peer connection");
}

fn refused(t: &Transport, remote: SocketAddr, reason: Refusal, detail: &str) {
    t.metrics
        .peer_refused
        .with_label_values(&[reason.as_str()])
        .inc();
    tracing::warn!(%remote, reason = reason.as_str(), detail, "refused a peer connection");
}

/// Takes an accepted connection through the TLS handshake and the certificate's identity
/// (unless peers are plaintext), then reads it.
async fn accept_peer(
    t: Transport,
    cfg: Arc<TransportConfig>,
    stream: TcpStream,
    remote: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) {
    let Some(tls) = t.tls() else {
        return reader(t, cfg, stream, None, remote, inbound, shutdown).await;
    };
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        _ = shutdown.cancelled() => return,
        p = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)) => p,
    };
    match peeked {
        Ok(Ok(0)) | Ok(Err(_)) => return,
        Ok(Ok(_)) if !is_tls_handshake(first[0]) => {
            return refused(
                &t,
                remote,
                Refusal::Plaintext,
                "not a TLS handshake (a peer with tls.insecure_plaintext_peers, or not a peer)",
            )
        }
        Ok(Ok(_)) => {}
        Err(_) => return refused(&t, remote, Refusal::Timeout, "no handshake within 5s"),
    }
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return,
        a = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)) => a,
    };
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refused(&t, remote, Refusal::of_io(&e), &e.to_string()),
        Err(_) => return refused(&t, remote, Refusal::Timeout, "no handshake within 5s"),
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned());
    let Some(cert) = cert else {
        return refused(&t, remote, Refusal::NoCertificate, "no client certificate");
    };
    let certified = match client_identity(tls.cluster(), &cert) {
        Ok(id) => id,
        Err((reason, detail)) => return refused(&t, remote, reason, &detail),
    };
    reader(t, cfg, stream, Some(certified), remote, inbound, shutdown).await
}

/// Reads one peer's connection. `certified` is the node its TLS certificate is for (`None`
/// with plaintext peers); its `Hello` must claim that node.
async fn reader<S: AsyncRead + Unpin>(
    t: Transport,
    cfg: Arc<TransportConfig>,
    stream: S,
    certified: Option<NodeId>,
    remote: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(cfg.max_frame_bytes)
        .new_codec();
    let mut frames = FramedRead::new(stream, codec);
    let decode = |bytes: &[u8]| pb::PeerFrame::decode(bytes).map(|f| f.body);
    let first = tokio::select! {
        _ = shutdown.cancelled() => return,
        f = tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next()) => f,
    };
    let from = match first {
        Ok(Some(Ok(bytes))) => match decode(&bytes) {
            Ok(Some(pb::peer_frame::Body::Hello(h))) => {
                let id = NodeId(h.node_id);
                if h.cluster != cfg.cluster {
                    let d = format!("cluster `{}`, expected `{}`", h.cluster, cfg.cluster);
                    return bad_frame(&t, remote, "handshake", &d);
                }
                if h.protocol_version != triad_proto::PROTOCOL_VERSION {
                    let d = format!("protocol version {}", h.protocol_version);
                    return bad_frame(&t, remote, "handshake", &d);
                }
                if id == cfg.me || !cfg.peers.contains_key(&id) {
                    let d = format!("node id {} is not a configured peer", h.node_id);
                    return bad_frame(&t, remote, "handshake", &d);
                }
                if let Some(c) = certified.filter(|&c| c != id) {
                    let d = format!("its certificate is for {c}, its Hello claims {id}");
                    return refused(&t, remote, Refusal::WrongNode, &d);
                }
                let diff = crate::config::safety_timings_diff(
                    &cfg.safety_timings,
                    &h.safety_timings.into_iter().collect(),
                );
                if !diff.is_empty() {
                    let d = format!(
                        "{id}'s safety timings differ from ours ({}); make [raft] and \
                         [failover] the same on every node",
                        diff.join("; ")
                    );
                    if let Ok(mut r) = t.shared.refused.lock() {
                        r.insert(id, d.clone());
                    }
                    return refused(&t, remote, Refusal::SafetyTimings, &d);
                }
                if let Ok(mut r) = t.shared.refused.lock() {
                    r.remove(&id);
                }
                id
            }
            Ok(_) => return bad_frame(&t, remote, "handshake", "first frame is not Hello"),
            Err(e) => return bad_frame(&t, remote, "decode", &e.to_string()),
        },
        Ok(Some(Err(e))) => return bad_frame(&t, remote, frame_reason(&e), &e.to_string()),
        Ok(None) => return,
        Err(_) => return bad_frame(&t, remote, "handshake", "no Hello within 5s"),
    };
    tracing::debug!(peer = %from, %remote, "peer connected");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = frames.next() => f,
        };
        let bytes = match next {
            None => return,
            Some(Err(e)) => return bad_frame(&t, remote, frame_reason(&e), &e.to_string()),
            Some(Ok(b)) => b,
        };
        let body = match decode(&bytes) {
            Ok(Some(body)) => body,
            Ok(None) => return bad_frame(&t, remote, "decode", "empty frame"),
            Err(e) => return bad_frame(&t, remote, "decode", &e.to_string()),
        };
        match body {
            pb::peer_frame::Body::RaftMessage(msg) => {
                t.shared.touch(from, None);
                let item = Inbound::Raft {
                    from,
                    bytes: Bytes::from(msg),
                };
                if inbound.send(item).await.is_err() {
                    return;
                }
            }
            pb::peer_frame::Body::HealthReport(report) => {
                t.shared.touch(from, None);
                if inbound
                    .send(Inbound::Report {
                        from,
                        report: Box::new(report),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            pb::peer_frame::Body::Ping(p) => {
                t.shared.touch(from, None);
                // Decided and recorded under the embargo's lock (see `Embargo`); a poisoned
                // lock answers nothing.
                let answer = t
                    .shared
                    .embargo
                    .lock()
                    .map(|mut e| {
                        let ok = !e.peers.contains(&from);
                        if ok {
                            let now = t.micros();
                            e.answered.insert(from, now);
                        }
                        ok
                    })
                    .unwrap_or(false);
                if !answer {
                    continue;
                }
                t.enqueue(
                    from,
                    pb::PeerFrame {
                        body: Some(pb::peer_frame::Body::Pong(pb::Pong {
                            sent_micros: p.sent_micros,
                        })),
                    },
                );
            }
            pb::peer_frame::Body::Pong(p) => {
                if p.sent_micros <= t.micros() {
                    if let Ok(mut g) = t.shared.granted.lock() {
                        let e = g.entry(from).or_insert(0);
                        *e = (*e).max(p.sent_micros);
                    }
                }
                let rtt = Duration::from_micros(t.micros().saturating_sub(p.sent_micros));
                t.metrics
                    .peer_rtt
                    .with_label_values(&[&from.to_string()])
                    .observe(rtt.as_secs_f64());
                t.shared.touch(from, Some(rtt));
            }
            pb::peer_frame::Body::Hello(_) => {
                return bad_frame(&t, remote, "handshake", "second Hello");
            }
        }
    }
}

fn frame_reason(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::InvalidData {
        "oversized"
    } else {
        "io"
    }
}

async fn writer(
    t: Transport,
    cfg: Arc<TransportConfig>,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<pb::PeerFrame>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_refusal: Option<Refusal> = None;
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)) => c,
        };
        let stream = match conn {
            Ok(Ok(s)) => s,
            Ok(Err(err)) => {
                tracing::debug!(%peer, %addr, %err, "peer connect failed");
                if !drain_for(&mut rx, backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                tracing::debug!(%peer, %addr, "peer connect timed out");
                if !drain_for(&mut rx, backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let end = match &t.tls() {
            None => {
                session(
                    &t,
                    &cfg,
                    peer,
                    addr,
                    stream,
                    &mut rx,
                    &shutdown,
                    &mut backoff,
                )
                .await
            }
            Some(tls) => {
                let connected = match tls.server_name(peer) {
                    Ok(name) => tokio::select! {
                        _ = shutdown.cancelled() => return,
                        c = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            tls.connector().connect(name, stream),
                        ) => c.map_err(|_| (Refusal::Timeout, "no handshake within 5s".to_string()))
                            .and_then(|r| r.map_err(|e| (Refusal::of_io(&e), e.to_string()))),
                    },
                    Err(e) => Err((Refusal::Handshake, e)),
                };
                match connected {
                    Ok(s) => {
                        last_refusal = None;
                        session(&t, &cfg, peer, addr, s, &mut rx, &shutdown, &mut backoff).await
                    }
                    Err((reason, detail)) => {
                        t.metrics
                            .peer_refused
                            .with_label_values(&[reason.as_str()])
                            .inc();
                        if last_refusal != Some(reason) {
                            tracing::warn!(%peer, %addr, reason = reason.as_str(), %detail,
                                "TLS handshake with peer failed");
                            last_refusal = Some(reason);
                        } else {
                            tracing::debug!(%peer, %addr, reason = reason.as_str(), %detail,
                                "TLS handshake with peer failed again");
                        }
                        Session::Refused
                    }
                }
            }
        };
        match end {
            Session::Shutdown => return,
            // Reconnect at once, as after any broken connection.
            Session::Lost => {}
            Session::Refused => {
                if !drain_for(&mut rx, backoff, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A session shorter than this that ends counts as refused (see `session`).
const SHORT_SESSION: Duration = Duration::from_secs(1);

/// How a connection's session ended.
enum Session {
    /// The agent is stopping, or the queue closed.
    Shutdown,
    /// The connection broke after it had lasted: reconnect at once.
    Lost,
    /// The TLS handshake failed, or the peer ended the connection at once: reconnect after
    /// the backoff.
    Refused,
}

/// Writes the `Hello`, then pings and queued frames until the connection breaks.
#[allow(clippy::too_many_arguments)]
async fn session<S: AsyncWrite + Unpin>(
    t: &Transport,
    cfg: &TransportConfig,
    peer: NodeId,
    addr: SocketAddr,
    stream: S,
    rx: &mut mpsc::Receiver<pb::PeerFrame>,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Session {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(cfg.max_frame_bytes)
        .new_codec();
    let mut sink = FramedWrite::new(stream, codec);
    let hello = pb::PeerFrame {
        body: Some(pb::peer_frame::Body::Hello(pb::Hello {
            cluster: cfg.cluster.clone(),
            node_id: cfg.me.get(),
            protocol_version: triad_proto::PROTOCOL_VERSION,
            safety_timings: cfg.safety_timings.clone().into_iter().collect(),
        })),
    };
    let connected = Instant::now();
    // A connection the peer ends at once (it refused our Hello: another cluster name, other
    // safety timings) is retried with the backoff, not in a loop; one that lasted resets it.
    let lost = |backoff: &mut Duration| {
        if connected.elapsed() < SHORT_SESSION {
            Session::Refused
        } else {
            *backoff = BACKOFF_MIN;
            Session::Lost
        }
    };
    if send(&mut sink, vec![hello]).await.is_err() {
        return lost(backoff);
    }
    tracing::debug!(%peer, %addr, "connected to peer");
    let mut ping = crate::pace::interval(cfg.ping_interval);
    let ping_frame = || pb::PeerFrame {
        body: Some(pb::peer_frame::Body::Ping(pb::Ping {
            sent_micros: t.micros(),
        })),
    };
    loop {
        let mut batch = Vec::new();
        let mut pinged = false;
        tokio::select! {
            _ = shutdown.cancelled() => return Session::Shutdown,
            f = rx.recv() => match f {
                Some(f) => batch.push(f),
                None => return Session::Shutdown,
            },
            _ = ping.tick() => {
                batch.push(ping_frame());
                pinged = true;
            }
        }
        // One write for what this turn of the runtime queues: let the tasks woken with
        // this one run first (the event loop answering a Raft message that came with a
        // ping, whose pong is already queued; the Raft tick that shares the ping's grid
        // point), then take everything queued by then. The peer then reads it all in one
        // wake-up too.
        tokio::task::yield_now().await;
        while batch.len() < BATCH_FRAMES {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        if !pinged && ping.tick().now_or_never().is_some() {
            batch.push(ping_frame());
        }
        if let Err(err) = send(&mut sink, batch).await {
            tracing::debug!(%peer, %addr, %err, "peer connection lost");
            return lost(backoff);
        }
    }
}

/// Frames written at most in one batch (see `writer`).
const BATCH_FRAMES: usize = 64;

/// Writes `frames` in order with one flush (one write when they fit the codec's buffer).
async fn send<S: AsyncWrite + Unpin>(
    sink: &mut FramedWrite<S, LengthDelimitedCodec>,
    frames: Vec<pb::PeerFrame>,
) -> Result<(), std::io::Error> {
    let write = async {
        for frame in frames {
            sink.feed(Bytes::from(frame.encode_to_vec())).await?;
        }
        SinkExt::<Bytes>::flush(sink).await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}

/// Waits `period`, dropping queued frames meanwhile (they would be stale by reconnect time).
/// Returns false on shutdown or when the queue is closed.
async fn drain_for(
    rx: &mut mpsc::Receiver<pb::PeerFrame>,
    period: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let deadline = tokio::time::sleep(period);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = &mut deadline => return true,
            f = rx.recv() => if f.is_none() { return false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lasts_as_long_as_the_needed_grant() {
        let d = Duration::from_millis(2000);
        // Two peers granted at 1.0 s and 1.5 s; now 2.8 s.
        let l = lease_from_grants(&[1_000_000, 1_500_000], 2_800_000, d, 1);
        assert!(l.valid);
        assert_eq!(l.remaining, Duration::from_millis(700));
        // Needing both: the older grant rules, and it ran out at 3.0 s.
        let l = lease_from_grants(&[1_000_000, 1_500_000], 3_100_000, d, 2);
        assert!(!l.valid);
        assert_eq!(l.remaining, Duration::ZERO);
        // No grants at all: no lease.
        assert!(!lease_from_grants(&[], 10, d, 1).valid);
        // A single-node cluster needs no grant.
        assert!(lease_from_grants(&[], 10, d, 0).valid);
    }
}
