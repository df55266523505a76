//! The wiring: the one event loop that owns the Raft core and the cluster state, and connects
//! them to the adapters (peer transport, HTTP API, systemd).
//!
//! One tokio task runs [`run`]'s loop. It is the only router: a closed set of events (a tick,
//! an inbound peer message, an API request, shutdown) comes in through one `select!`; after each
//! event it drains the Raft core's ready state, applies committed entries, answers waiting
//! proposers, and publishes a fresh [`CoreStatus`] for the API. Nothing in the loop blocks on
//! the network: the transport queues without waiting and the API reads published snapshots.
//!
//! Proposals are tracked by a [`ProposalId`] carried inside the entry. The caller waits until
//! the entry is applied *on this node* (read-your-writes) or until `api.proposal_timeout`; an
//! entry lost to a leadership change simply times out. Nothing authoritative happens before
//! commit.
//!
//! Caveats: a storage error stops the agent (exit code 70) rather than continue on state that
//! is not durable; systemd restarts it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::cluster::{ClusterState, Command, EntryMeta, Maintenance, MemberInfo, Outcome};
use crate::codec::{self, Proposal, ProposalId};
use crate::config::{self, Validated};
use crate::decide::{self, View};
use crate::health::HealthStore;
use crate::ids::{LogIndex, NodeId, UnixMillis};
use crate::metrics::Metrics;
use crate::observe::{self, LocalObservations};
use crate::probe;
use crate::probe::runner::now_millis;
use crate::raft::transport::{Inbound, Transport, TransportConfig};
use crate::raft::{
    CommittedEntry, CoreConfig, Output, RaftError, RaftNode, RaftStatus, RaftStore, Role,
};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Configuration problem found at start.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data directory could not be created.
    #[error("data_dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Raft or its storage failed.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] crate::raft::StoreError),
    /// The stored snapshot cannot be read.
    #[error("stored snapshot: {0}")]
    Snapshot(#[from] codec::CodecError),
    /// The peer transport could not start.
    #[error(transparent)]
    Transport(#[from] crate::raft::transport::TransportError),
    /// The API could not start.
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The replicated state machine as the node applies it: the cluster state plus decoding.
#[derive(Debug, Default, Clone)]
pub struct StateMachine {
    /// The cluster state.
    pub state: ClusterState,
}

/// What applying one entry did, for answering its proposer.
#[derive(Clone, Debug)]
pub struct AppliedEntry {
    /// The entry's index.
    pub index: LogIndex,
    /// Who proposed it, when it carried a command.
    pub proposal: Option<ProposalId>,
    /// What it did.
    pub outcome: Outcome,
}

impl StateMachine {
    /// Restores from snapshot data (or starts empty).
    pub fn restore(data: Option<&[u8]>) -> Result<Self, codec::CodecError> {
        Ok(StateMachine {
            state: match data {
                Some(d) => codec::decode_state(d)?,
                None => ClusterState::default(),
            },
        })
    }

    /// Replaces the state with an installed snapshot.
    pub fn install(&mut self, data: &[u8]) -> Result<(), codec::CodecError> {
        self.state = codec::decode_state(data)?;
        Ok(())
    }

    /// Applies one committed entry. Deterministic; never panics.
    pub fn apply(&mut self, entry: &CommittedEntry) -> AppliedEntry {
        let mut meta = EntryMeta {
            term: entry.term,
            index: entry.index,
            at: UnixMillis(0),
        };
        if entry.data.is_empty() {
            return AppliedEntry {
                index: entry.index,
                proposal: None,
                outcome: self.state.apply_empty(meta),
            };
        }
        match codec::decode_entry(&entry.data) {
            Ok(p) => {
                meta.at = p.at;
                AppliedEntry {
                    index: entry.index,
                    proposal: Some(p.id),
                    outcome: self.state.apply(meta, &p.command),
                }
            }
            Err(err) => AppliedEntry {
                index: entry.index,
                proposal: None,
                outcome: self.state.apply_invalid(meta, &err.to_string()),
            },
        }
    }
}

/// The result of a committed proposal.
#[derive(Clone, Debug)]
pub struct Applied {
    /// Index at which it applied.
    pub index: LogIndex,
    /// What it did.
    pub outcome: Outcome,
    /// The maintenance flag after it applied.
    pub maintenance: Maintenance,
}

/// Why a proposal did not commit.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProposeError {
    /// No leader known.
    #[error("no leader known; retry once the cluster has elected one")]
    NoLeader,
    /// Not applied here within the timeout.
    #[error("not committed within {after:?} (leader: {leader}); it may still commit later")]
    Timeout {
        /// The wait.
        after: Duration,
        /// Leader known at timeout, or `unknown`.
        leader: String,
    },
    /// The agent is shutting down.
    #[error("agent is shutting down")]
    Stopping,
    /// Raft refused it.
    #[error("{0}")]
    Refused(String),
}

/// A request from the API to the event loop.
#[derive(Debug)]
pub enum Request {
    /// Propose a command and answer once it applied here.
    Propose {
        /// The command.
        command: Command,
        /// Where to answer.
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
    },
}

/// What the event loop publishes after each cycle for the API.
#[derive(Clone, Debug)]
pub struct CoreStatus {
    /// Raft's view.
    pub raft: RaftStatus,
    /// The applied cluster state.
    pub cluster: Arc<ClusterState>,
    /// The last decision's verdict.
    pub verdict: String,
    /// Whether storage was loaded (always true once published by the loop).
    pub storage_loaded: bool,
    /// Every agent's latest observations as known here (written only by the event loop).
    pub health: Arc<std::sync::Mutex<HealthStore>>,
}

/// Liveness of the event loop, shared with the API.
#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    last_ms: AtomicU64,
    /// The loop must run at least this often to count as live.
    pub max_gap: Duration,
}

impl Liveness {
    fn new(max_gap: Duration) -> Self {
        Liveness {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            max_gap,
        }
    }
    fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Time since the loop last ran.
    pub fn since_last(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
    /// Whether the loop ran within `max_gap`.
    pub fn is_live(&self) -> bool {
        self.since_last() <= self.max_gap
    }

    /// Milliseconds of this process's monotonic clock (the time base of [`HealthStore`]).
    pub fn mono_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Everything the API needs, handed over once at start.
#[derive(Clone)]
pub struct Handles {
    /// This node's validated config.
    pub config: Arc<Validated>,
    /// Latest published status.
    pub status: watch::Receiver<Arc<CoreStatus>>,
    /// Requests into the loop.
    pub requests: mpsc::Sender<Request>,
    /// Peer connectivity.
    pub transport: Transport,
    /// Metrics.
    pub metrics: Metrics,
    /// Loop liveness.
    pub liveness: Arc<Liveness>,
    /// Bearer token for mutating endpoints, if configured.
    pub token: Option<Arc<str>>,
}

struct Pending {
    reply: Option<oneshot::Sender<Result<Applied, ProposeError>>>,
    deadline: Instant,
}

/// Runs the agent until `shutdown` is cancelled or a fatal error occurs.
pub async fn run(cfg: Validated, shutdown: CancellationToken) -> Result<(), NodeError> {
    let me = cfg.node_id();
    let data_dir = cfg.config.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| NodeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let voters: Vec<u64> = cfg.members.iter().map(|m| m.id.get()).collect();
    let store = RaftStore::open_dir(&data_dir, &voters)?;
    let rcfg = cfg.config.raft.clone();
    let mut raft = RaftNode::new(
        &CoreConfig {
            id: me,
            election_ticks: rcfg.election_ticks,
            heartbeat_ticks: rcfg.heartbeat_ticks,
            timeout_seed: None,
        },
        store,
    )?;
    let mut sm = StateMachine::restore(raft.snapshot_data().as_ref().map(|s| s.data.as_slice()))?;
    let metrics = Metrics::new(&me.to_string())?;
    let token = match &cfg.config.api.token_file {
        Some(f) => Some(Arc::<str>::from(config::read_token(f)?)),
        None => None,
    };
    let tick = rcfg.tick_interval;
    let election_timeout = tick * rcfg.election_ticks as u32;
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(4096);
    let transport = Transport::start(
        TransportConfig {
            cluster: cfg.config.cluster_name.clone(),
            me,
            listen: cfg.raft_listen,
            peers: cfg.members.iter().map(|m| (m.id, m.raft_addr)).collect(),
            max_frame_bytes: rcfg.max_frame_bytes,
            ping_interval: tick * rcfg.heartbeat_ticks as u32,
            reachable_window: election_timeout,
        },
        inbound_tx,
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    let configured: BTreeMap<NodeId, MemberInfo> = cfg
        .members
        .iter()
        .map(|m| {
            (
                m.id,
                MemberInfo {
                    raft_addr: m.raft_addr.to_string(),
                    api_addr: m.api_addr.to_string(),
                },
            )
        })
        .collect();
    let mut cluster_arc = Arc::new(sm.state.clone());
    let health_shared = Arc::new(std::sync::Mutex::new(HealthStore::default()));
    let (status_tx, status_rx) = watch::channel(Arc::new(CoreStatus {
        raft: raft.status(),
        cluster: cluster_arc.clone(),
        verdict: "starting".into(),
        storage_loaded: true,
        health: health_shared.clone(),
    }));
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(256);
    let liveness = Arc::new(Liveness::new(tick * 3));
    liveness.beat();
    let probes = probe::build::from_config(&cfg)?;
    let mut local = LocalObservations::new(probes.iter().map(|p| (p.id().clone(), p.timing())));
    let ingest = |observer: NodeId, items: Vec<crate::health::Received>, applied: u64, now: u64| {
        if let Ok(mut h) = health_shared.lock() {
            h.ingest(observer, items, applied, now);
        }
    };
    let (probe_tx, mut probe_rx) = mpsc::channel::<probe::runner::ProbeEvent>(1024);
    let probe_count = probes.len();
    {
        let m = metrics.clone();
        probe::runner::spawn_all(
            probes,
            probe_tx,
            shutdown.clone(),
            Arc::new(move |_| m.probe_results_dropped.inc()),
        );
    }
    let is_member = {
        let ids: Vec<NodeId> = cfg.members.iter().map(|m| m.id).collect();
        move |n: NodeId| ids.contains(&n)
    };
    let proposal_timeout = cfg.config.api.proposal_timeout;
    let cfg = Arc::new(cfg);
    let api_task = api::serve(
        Handles {
            config: cfg.clone(),
            status: status_rx,
            requests: req_tx,
            transport: transport.clone(),
            metrics: metrics.clone(),
            liveness: liveness.clone(),
            token,
        },
        shutdown.clone(),
    )
    .await?;
    tracing::info!(node = %me, raft = %cfg.raft_listen, api = %cfg.api_listen,
        applied = %sm.state.applied, probes = probe_count, "agent started");

    let watchdog = sd_notify::watchdog_enabled();
    let mut last_watchdog = Instant::now();
    let mut notified_ready = false;
    let mut seq: u64 = 0;
    let mut pending: BTreeMap<ProposalId, Pending> = BTreeMap::new();
    let mut members_in_flight: Option<ProposalId> = None;
    let mut last_leader: Option<NodeId> = None;
    let mut verdict = String::from("starting");
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let result: Result<(), NodeError> = async {
        loop {
            let mut ticked = false;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    raft.tick();
                    ticked = true;
                }
                Some(msg) = inbound_rx.recv() => {
                    let mut handle = |m: Inbound| match m {
                        Inbound::Raft { from, bytes } => step(&mut raft, &metrics, from, &bytes),
                        Inbound::Report { from, report } => {
                            match codec::decode_report(report, &is_member) {
                                Ok(r) => {
                                    ingest(from, r.observations, r.applied_index, liveness.mono_ms());
                                }
                                Err(err) => {
                                    metrics.reports_rejected.inc();
                                    tracing::warn!(peer = %from, %err, "health report rejected");
                                }
                            }
                        }
                    };
                    handle(msg);
                    // Batch what else is waiting, so one fsync covers many messages.
                    for _ in 0..256 {
                        match inbound_rx.try_recv() {
                            Ok(m) => handle(m),
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = probe_rx.recv() => {
                    local.record(ev, &metrics);
                }
                Some(req) = req_rx.recv() => match req {
                    Request::Propose { command, reply } => {
                        seq += 1;
                        let id = ProposalId { node: me, seq };
                        let data = codec::encode_entry(&Proposal { id, at: now_millis(), command });
                        match raft.propose(data) {
                            Ok(()) => {
                                pending.insert(id, Pending {
                                    reply: Some(reply),
                                    deadline: Instant::now() + proposal_timeout,
                                });
                            }
                            Err(RaftError::NoLeader) => {
                                metrics.proposals.with_label_values(&["no_leader"]).inc();
                                let _ = reply.send(Err(ProposeError::NoLeader));
                            }
                            Err(e) => {
                                metrics.proposals.with_label_values(&["error"]).inc();
                                let _ = reply.send(Err(ProposeError::Refused(e.to_string())));
                            }
                        }
                    }
                },
            }
            liveness.beat();
            let mut applied_any = false;
            loop {
                let out = raft.process_ready()?;
                if out.is_empty() {
                    break;
                }
                applied_any |= handle_output(&mut sm, &transport, &metrics, &mut pending, out)?;
            }
            let status = raft.status();
            if applied_any {
                if status.applied.0 >= raft.snapshot_index().0 + rcfg.snapshot_entries {
                    raft.compact(status.applied, codec::encode_state(&sm.state))?;
                    metrics.raft_snapshots.inc();
                    tracing::info!(index = %status.applied, "took snapshot and compacted the log");
                }
                cluster_arc = Arc::new(sm.state.clone());
            }
            if status.leader != last_leader {
                metrics.raft_leader_changes.inc();
                tracing::info!(leader = ?status.leader.map(|l| l.to_string()), term = %status.term,
                    role = %status.role, "leader changed");
                last_leader = status.leader;
            }
            if ticked {
                let now = Instant::now();
                if local.report_due(now) {
                    let items = local.take_report(now);
                    let applied = sm.state.applied.0;
                    transport.broadcast_report(&codec::encode_report(&items, applied));
                    ingest(me, observe::as_received(&items), applied, liveness.mono_ms());
                }
                expire(&mut pending, now, proposal_timeout, status.leader, &metrics);
                if let Some(id) = members_in_flight {
                    if !pending.contains_key(&id) {
                        members_in_flight = None;
                    }
                }
                let plan = decide::decide(&View {
                    me,
                    is_leader: status.role == Role::Leader,
                    cluster: &sm.state,
                    configured: &configured,
                    members_in_flight: members_in_flight.is_some(),
                });
                if plan.verdict != verdict {
                    tracing::info!(verdict = %plan.verdict, "decision");
                    verdict = plan.verdict;
                }
                for command in plan.proposals {
                    seq += 1;
                    let id = ProposalId { node: me, seq };
                    let data = codec::encode_entry(&Proposal {
                        id,
                        at: now_millis(),
                        command,
                    });
                    if raft.propose(data).is_ok() {
                        pending.insert(
                            id,
                            Pending {
                                reply: None,
                                deadline: now + proposal_timeout,
                            },
                        );
                        members_in_flight = Some(id);
                    }
                }
                if let Some(period) = watchdog {
                    if now.duration_since(last_watchdog) >= period / 4 {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                        last_watchdog = now;
                    }
                }
                metrics.loop_last_run.set(now_millis().0 as f64 / 1000.0);
            }
            metrics.raft_term.set(status.term.0 as i64);
            metrics
                .raft_is_leader
                .set(i64::from(status.role == Role::Leader));
            metrics.raft_commit_index.set(status.commit.0 as i64);
            metrics.raft_applied_index.set(status.applied.0 as i64);
            if !notified_ready && status.leader.is_some() {
                notified_ready = true;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                tracing::info!(leader = ?status.leader.map(|l| l.to_string()), "ready");
            }
            status_tx.send_if_modified(|cur| {
                let changed = cur.raft != status
                    || !Arc::ptr_eq(&cur.cluster, &cluster_arc)
                    || cur.verdict != verdict;
                if changed {
                    *cur = Arc::new(CoreStatus {
                        raft: status,
                        cluster: cluster_arc.clone(),
                        verdict: verdict.clone(),
                        storage_loaded: true,
                        health: health_shared.clone(),
                    });
                }
                changed
            });
        }
        Ok(())
    }
    .await;

    for (_, p) in std::mem::take(&mut pending) {
        if let Some(reply) = p.reply {
            let _ = reply.send(Err(ProposeError::Stopping));
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), api_task)
        .await
        .is_err()
    {
        tracing::warn!("API did not stop within 5s");
    }
    if let Err(err) = &result {
        tracing::error!(%err, "agent stopped on a fatal error");
    } else {
        tracing::info!("agent stopped");
    }
    result
}

fn step(raft: &mut RaftNode, metrics: &Metrics, from: NodeId, bytes: &[u8]) {
    if let Err(err) = raft.step(from, bytes) {
        let reason = match &err {
            RaftError::BadMessage { reason, .. } if reason.starts_with("not a raft") => "decode",
            RaftError::BadMessage { reason, .. } if reason.starts_with("refused") => "refused",
            _ => "mismatch",
        };
        metrics
            .raft_messages_rejected
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(%err, "peer message rejected");
    }
}

fn handle_output(
    sm: &mut StateMachine,
    transport: &Transport,
    metrics: &Metrics,
    pending: &mut BTreeMap<ProposalId, Pending>,
    out: Output,
) -> Result<bool, NodeError> {
    let mut applied_any = false;
    if let Some(snap) = &out.snapshot {
        sm.install(&snap.data)?;
        tracing::info!(index = %snap.index, "installed snapshot from leader");
        applied_any = true;
    }
    for entry in &out.committed {
        let applied = sm.apply(entry);
        applied_any = true;
        if let Some(id) = applied.proposal {
            if let Some(p) = pending.remove(&id) {
                metrics.proposals.with_label_values(&["committed"]).inc();
                if let Some(reply) = p.reply {
                    let _ = reply.send(Ok(Applied {
                        index: applied.index,
                        outcome: applied.outcome,
                        maintenance: sm.state.maintenance.clone(),
                    }));
                }
            }
        }
    }
    for m in out.messages {
        transport.send_raft(m.to, m.bytes);
    }
    Ok(applied_any)
}

fn expire(
    pending: &mut BTreeMap<ProposalId, Pending>,
    now: Instant,
    after: Duration,
    leader: Option<NodeId>,
    metrics: &Metrics,
) {
    let expired: Vec<ProposalId> = pending
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in expired {
        if let Some(p) = pending.remove(&id) {
            metrics.proposals.with_label_values(&["timeout"]).inc();
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(ProposeError::Timeout {
                    after,
                    leader: leader.map_or_else(|| "unknown".into(), |l| l.to_string()),
                }));
            }
        }
    }
}
