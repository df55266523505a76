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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use serde::{Deserialize, Serialize};

use crate::actuator::haproxy::HaproxySocket;
use crate::actuator::redis::RedisServer;
use crate::api;
use crate::cluster::{
    ChangeKind, ClusterState, Command, EntryMeta, Maintenance, MemberInfo, Outcome, RedisAuthority,
};
use crate::codec::{self, Proposal, ProposalId};
use crate::config::{self, Validated};
use crate::decide::redis::{first_failure_age_ms, RedisInputs, RedisPlan};
use crate::decide::timeline::{embargo, RedisTimeline};
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
use crate::reconcile::{usable_lease, CycleReport, HaproxyTarget, Reconciler, Target};

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
    /// Redis failover state, when Redis is managed.
    pub redis: Option<RedisCoreView>,
}

/// The Redis side of the published status.
#[derive(Clone, Debug)]
pub struct RedisCoreView {
    /// The leader's latest decision (absent on followers).
    pub plan: Option<RedisPlan>,
    /// Peers whose lease this node does not renew.
    pub embargo: Vec<NodeId>,
    /// The local reconciler's view (lease, last cycle), written by its task.
    pub local: Arc<std::sync::Mutex<LocalRedisView>>,
}

/// What the local reconciler last did, shown in status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocalRedisView {
    /// Whether this agent holds its lease.
    pub lease_valid: bool,
    /// Milliseconds of lease left.
    pub lease_remaining_ms: u64,
    /// Reconciliation cycles run since start.
    pub cycles: u64,
    /// The last cycle that ran, if any.
    pub last_cycle: Option<CycleReport>,
    /// Why cycles are not running, when they are not (start-up grace, no target yet).
    pub waiting: Option<String>,
    /// The log index of the newest Redis decision carried out on the local Redis (reported to
    /// the peers).
    #[serde(default)]
    pub reconciled_index: u64,
    /// When the last cycle ended (this process's monotonic clock); HAProxy's check of the
    /// local Redis trusts only a recent cycle.
    #[serde(skip)]
    pub last_cycle_at: Option<Instant>,
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
    /// Set while a switchover runs through this agent (one at a time).
    pub switchover_busy: Arc<AtomicBool>,
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
            snapshot_validator: codec::validate_state,
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
        redis: None,
    }));
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(256);
    let liveness = Arc::new(Liveness::new(tick * 3));
    liveness.beat();
    let probes = probe::build::from_config(&cfg)?;
    let mut local = LocalObservations::new(probes.iter().map(|p| (p.id().clone(), p.timing())));
    // The leader decides on every tick that follows news (a report, an applied entry) and
    // every 4th tick otherwise (waits and countdowns), not on every tick.
    let decision_due = std::cell::Cell::new(true);
    let mut decide_ticks: u64 = 0;
    let ingest = |observer: NodeId,
                  items: Vec<crate::health::Received>,
                  applied: u64,
                  reconciled: u64,
                  now: u64| {
        decision_due.set(true);
        if let Ok(mut h) = health_shared.lock() {
            h.ingest(observer, items, applied, now);
            h.set_reconciled(observer, reconciled);
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
    let member_ids: Vec<NodeId> = cfg.members.iter().map(|m| m.id).collect();
    let quorum = member_ids.len() / 2 + 1;
    let fo = cfg.config.failover.clone();
    let settings = fo.settings();
    let redis_probe_interval_ms = cfg.config.redis.as_ref().map_or(0, |r| {
        u64::try_from(r.effective_timing(&cfg.config.probes).interval.as_millis()).unwrap_or(0)
    });
    let redis_local = Arc::new(std::sync::Mutex::new(LocalRedisView {
        waiting: Some("starting".into()),
        ..LocalRedisView::default()
    }));
    // The reconciler starts from the restored state at once. Waiting for the first applied
    // entry would leave it idle for good when the snapshot sits exactly at the applied index
    // of a quiet cluster (nothing is replayed, nothing new commits): it would never fence,
    // route, or make its Redis follow the master. Acting on a restored, possibly stale state is
    // safe: without a lease it only fences, peers grant no lease to an agent whose reports
    // show it behind the newest decision, and the local Redis is untrusted until a fresh grant.
    let (target_tx, target_rx) = watch::channel::<Option<Target>>(Some(redis_target(&sm.state)));
    let redis_managed = cfg.config.redis.is_some();
    if redis_managed {
        spawn_reconciler(
            &cfg,
            transport.clone(),
            target_rx,
            redis_local.clone(),
            metrics.clone(),
            shutdown.clone(),
        )?;
    }
    let mut timeline = RedisTimeline::new(liveness.mono_ms());
    let mut redis_plan: Option<RedisPlan> = None;
    let mut redis_embargo: Vec<NodeId> = Vec::new();
    let mut seen_epoch = sm.state.redis.epoch;
    let mut seen_decision = (None, None);
    let mut last_reconciled = 0u64;
    let mut down_since: Option<Instant> = None;
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
            switchover_busy: Arc::new(AtomicBool::new(false)),
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
    let mut in_flight: BTreeMap<&'static str, ProposalId> = BTreeMap::new();
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
                                    ingest(from, r.observations, r.applied_index,
                                        r.reconciled_index, liveness.mono_ms());
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
                decision_due.set(true);
                if status.applied.0 >= raft.snapshot_index().0 + rcfg.snapshot_entries {
                    raft.compact(status.applied, codec::encode_state(&sm.state))?;
                    metrics.raft_snapshots.inc();
                    tracing::info!(index = %status.applied, "took snapshot and compacted the log");
                }
                cluster_arc = Arc::new(sm.state.clone());
                if redis_managed {
                    let target = redis_target(&sm.state);
                    target_tx.send_if_modified(|cur| {
                        let changed = cur.as_ref() != Some(&target);
                        if changed {
                            *cur = Some(target);
                        }
                        changed
                    });
                }
            }
            if status.leader != last_leader {
                metrics.raft_leader_changes.inc();
                tracing::info!(leader = ?status.leader.map(|l| l.to_string()), term = %status.term,
                    role = %status.role, "leader changed");
                last_leader = status.leader;
            }
            if ticked {
                let now = Instant::now();
                let reconciled = redis_local.lock().map_or(0, |v| v.reconciled_index);
                if reconciled != last_reconciled {
                    // The leader's fast path waits for this: report it at once.
                    last_reconciled = reconciled;
                    local.mark_dirty();
                }
                if local.report_due(now) {
                    let items = local.take_report(now);
                    let applied = sm.state.applied.0;
                    transport.broadcast_report(&codec::encode_report(&items, applied, reconciled));
                    ingest(me, observe::as_received(&items), applied, reconciled,
                        liveness.mono_ms());
                }
                expire(&mut pending, now, proposal_timeout, status.leader, &metrics);
                in_flight.retain(|_, id| pending.contains_key(id));
                let mono = liveness.mono_ms();
                let authority = &sm.state.redis;
                let decision_index = (
                    authority.last_change.as_ref().map(|c| c.index),
                    authority.suspect.as_ref().map(|c| c.index),
                );
                if decision_index != seen_decision {
                    // Peers lift their lease embargo on this node once its report shows that
                    // it applied the newest decision: report at once.
                    seen_decision = decision_index;
                    local.mark_dirty();
                }
                if authority.epoch != seen_epoch {
                    seen_epoch = authority.epoch;
                    on_master_change(authority, &member_ids, &metrics, &mut down_since);
                }
                let is_leader = status.role == Role::Leader;
                decide_ticks += 1;
                let decide_now = !is_leader || decision_due.replace(false) || decide_ticks.is_multiple_of(4);
                let (seen, ages, applied_by, reconciled_by) = match health_shared.lock() {
                    Ok(h) if redis_managed => (
                        if is_leader && decide_now { h.all(mono) } else { Vec::new() },
                        h.report_ages(mono),
                        h.applied(),
                        h.reconciled(),
                    ),
                    _ => Default::default(),
                };
                let suspect_reconciled = authority.suspect.as_ref().is_some_and(|s| {
                    reconciled_by.get(&s.node).is_some_and(|&r| r >= s.index.0)
                });
                if redis_managed {
                    timeline.observe(me, authority, &applied_by, mono);
                    let e = embargo(me, &member_ids, authority, &applied_by);
                    redis_embargo = e.iter().copied().collect();
                    transport.set_embargo(e);
                } else {
                    transport.set_embargo(Default::default());
                }
                if decide_now {
                    let redis_inputs = (redis_managed && is_leader).then(|| RedisInputs {
                        members: &member_ids,
                        authority,
                        seen: &seen,
                        report_age_ms: &ages,
                        since_change_ms: timeline.since_change_ms(
                            mono,
                            authority.last_change.as_ref().and_then(|c| {
                                u64::try_from(now_millis().0.saturating_sub(c.at.0)).ok()
                            }),
                        ),
                        suspect_embargo_ms: timeline.suspect_embargo_ms(quorum, mono),
                        suspect_reconciled,
                        maintenance: sm.state.maintenance.enabled,
                        in_flight: in_flight.contains_key("redis"),
                        settings,
                    });
                    let plan = decide::decide(&View {
                        me,
                        is_leader,
                        cluster: &sm.state,
                        configured: &configured,
                        members_in_flight: in_flight.contains_key("members"),
                        redis: redis_inputs,
                    });
                    if let Some(rp) = &plan.redis {
                        if !rp.candidates.is_empty() {
                            // Measured from the old master's first failed check (as the
                            // reports tell it), not from this decision.
                            down_since.get_or_insert_with(|| {
                                let age = sm.state.redis.master.and_then(|m| {
                                    first_failure_age_ms(&seen, m, redis_probe_interval_ms)
                                });
                                age.and_then(|a| now.checked_sub(Duration::from_millis(a)))
                                    .unwrap_or(now)
                            });
                        } else if rp.verdict.starts_with("no action") {
                            down_since = None;
                        }
                    }
                    redis_plan = plan.redis;
                    let mut next_verdict = plan.verdict;
                    for command in plan.proposals {
                        let automatic = matches!(
                            command,
                            Command::SetRedisMaster { kind: ChangeKind::Automatic, .. }
                                | Command::SuspectRedisMaster { .. }
                        );
                        if automatic && !fo.automatic {
                            next_verdict = format!("automatic failover off ([failover] automatic = false): would {next_verdict}");
                            continue;
                        }
                        let key = match command {
                            Command::RegisterMembers { .. } => "members",
                            _ => "redis",
                        };
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
                            in_flight.insert(key, id);
                        }
                    }
                    if next_verdict != verdict {
                        // Log a new verdict, not a new countdown ("lease runs out in 2.9s").
                        let shape = |v: &str| v.replace(|c: char| c.is_ascii_digit() || c == '.', "");
                        if shape(&next_verdict) != shape(&verdict) {
                            tracing::info!(verdict = %next_verdict, "decision");
                        }
                        verdict = next_verdict;
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
                let redis_changed = cur.redis.as_ref().is_some_and(|r| {
                    r.plan != redis_plan || r.embargo != redis_embargo
                });
                let changed = cur.raft != status
                    || !Arc::ptr_eq(&cur.cluster, &cluster_arc)
                    || cur.verdict != verdict
                    || redis_changed
                    || (redis_managed && cur.redis.is_none());
                if changed {
                    *cur = Arc::new(CoreStatus {
                        raft: status,
                        cluster: cluster_arc.clone(),
                        verdict: verdict.clone(),
                        storage_loaded: true,
                        health: health_shared.clone(),
                        redis: redis_managed.then(|| RedisCoreView {
                            plan: redis_plan.clone(),
                            embargo: redis_embargo.clone(),
                            local: redis_local.clone(),
                        }),
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

/// What the local reconciler drives towards, from the applied state (the lease and the clock
/// are filled in by the reconciler task).
fn redis_target(state: &ClusterState) -> Target {
    Target {
        authority: state.redis.clone(),
        maintenance: state.maintenance.enabled,
        has_lease: false,
        lease_granted_at_ms: None,
        now_ms: 0,
    }
}

/// Metrics and logs for a newly applied change of Redis master.
fn on_master_change(
    authority: &RedisAuthority,
    members: &[NodeId],
    metrics: &Metrics,
    down_since: &mut Option<Instant>,
) {
    metrics.redis_epoch.set(authority.epoch.0 as i64);
    for m in members {
        metrics
            .redis_committed_master
            .with_label_values(&[&m.to_string()])
            .set(i64::from(authority.master == Some(*m)));
    }
    let Some(c) = &authority.last_change else {
        return;
    };
    metrics
        .redis_failovers
        .with_label_values(&[c.kind.as_str()])
        .inc();
    if let Some(since) = down_since.take() {
        if c.kind == ChangeKind::Automatic {
            metrics
                .redis_failover_duration
                .with_label_values(&[c.kind.as_str()])
                .observe(since.elapsed().as_secs_f64());
        }
    }
    tracing::warn!(master = %c.to, from = ?c.from.map(|f| f.to_string()), epoch = %c.epoch,
        kind = c.kind.as_str(), index = %c.index, reason = %c.reason, "redis master changed");
}

/// Starts the local reconciler task: every `reconcile_interval` (and at once on a new
/// target) it checks the lease and runs one [`Reconciler::cycle`].
fn spawn_reconciler(
    cfg: &Validated,
    transport: Transport,
    mut targets: watch::Receiver<Option<Target>>,
    view: Arc<std::sync::Mutex<LocalRedisView>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let me = cfg.node_id();
    let c = &cfg.config;
    let Some(r) = &c.redis else {
        return Ok(());
    };
    let fo = c.failover.clone();
    let addrs: BTreeMap<NodeId, std::net::SocketAddr> = cfg
        .members
        .iter()
        .filter_map(|m| Some((m.id, m.redis_addr?)))
        .collect();
    let Some(&local) = addrs.get(&me) else {
        return Ok(());
    };
    let password = r
        .password_file
        .as_deref()
        .map(|p| config::read_secret(p, "redis.password_file"))
        .transpose()?;
    let redis = Arc::new(RedisServer::new(
        local,
        r.username.clone(),
        password,
        fo.action_timeout,
        fo.redis_min_replicas_to_write,
        fo.redis_min_replicas_max_lag,
    ));
    let haproxy = c.haproxy.as_ref().map(|h| {
        let mut sock = HaproxySocket::new(&h.admin_socket, fo.action_timeout);
        if let Some(f) = &h.state_file {
            sock = sock.with_state_file(f);
        }
        HaproxyTarget {
            haproxy: Arc::new(sock),
            backend: h.redis_backend.clone(),
            servers: cfg
                .members
                .iter()
                .map(|m| (m.id, h.redis_server(m.id)))
                .collect(),
            save_state: h.state_file.is_some(),
        }
    });
    // Each side of a cycle (Redis, HAProxy) shares one `action_timeout`; with the lease
    // counted as lapsed once less than a full cycle of it is left, a cut-off agent has taken
    // HAProxy out of service and fenced its Redis within max(reconcile_interval,
    // 2 * action_timeout) of its lease running out (the config check's arithmetic).
    let timer: crate::reconcile::Timer = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let mut rec =
        Reconciler::new(me, addrs, redis, haproxy).with_deadline(fo.action_timeout, timer);
    let quorum = cfg.members.len() / 2 + 1;
    let ping = c.raft.tick_interval * c.raft.heartbeat_ticks as u32;
    let grace = ping * 2;
    let started = Instant::now();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(fo.reconcile_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_errors: (Option<String>, Option<String>) = (None, None);
        // A quiet, converged node runs a full cycle (three reads) once a second; a new target,
        // a lease that came or went, or a cycle that still had work or trouble runs it at once
        // or on the next tick.
        let mut last_run: Option<(Option<Target>, bool)> = None;
        let mut quiet = false;
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => { ticks += 1; }
                r = targets.changed() => if r.is_err() { break },
            }
            let mut lease = transport.lease(fo.lease, quorum - 1);
            lease.valid = usable_lease(lease.valid, lease.remaining, fo.action_timeout);
            metrics.lease_valid.set(i64::from(lease.valid));
            let target = targets.borrow().clone();
            let key = (target.clone(), lease.valid);
            if quiet && last_run.as_ref() == Some(&key) && !ticks.is_multiple_of(4) {
                continue;
            }
            last_run = Some(key);
            let set_view = |f: &mut dyn FnMut(&mut LocalRedisView)| {
                if let Ok(mut v) = view.lock() {
                    v.lease_valid = lease.valid;
                    v.lease_remaining_ms = lease.remaining.as_millis() as u64;
                    f(&mut v);
                }
            };
            let Some(mut target) = target else {
                set_view(&mut |v| v.waiting = Some("no committed state applied yet".into()));
                continue;
            };
            if !lease.valid && started.elapsed() < grace {
                // Just started: the first pongs are on their way; do not fence on no news.
                set_view(&mut |v| {
                    v.waiting = Some("start-up: waiting for the first lease grants".into())
                });
                continue;
            }
            let now_ms = started.elapsed().as_millis() as u64;
            target.has_lease = lease.valid;
            target.now_ms = now_ms;
            target.lease_granted_at_ms = lease.valid.then(|| {
                (now_ms + lease.remaining.as_millis() as u64)
                    .saturating_sub(fo.lease.as_millis() as u64)
            });
            let report = rec.cycle(&target).await;
            quiet = report.redis_actions.is_empty()
                && report.haproxy_actions.is_empty()
                && report.redis_error.is_none()
                && report.haproxy_error.is_none()
                && !report.untrusted;
            if report.fenced_now {
                metrics.redis_fence_events.inc();
                tracing::warn!(lease = lease.valid, epoch = %target.authority.epoch,
                    "fenced the local Redis (writes refused)");
            }
            if !report.redis_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["redis"])
                    .inc_by(report.redis_actions.len() as u64);
                tracing::info!(actions = ?report.redis_actions, epoch = %target.authority.epoch,
                    lease = lease.valid, "reconciled the local Redis");
            }
            if !report.haproxy_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["haproxy"])
                    .inc_by(report.haproxy_actions.len() as u64);
                tracing::info!(actions = ?report.haproxy_actions, epoch = %target.authority.epoch,
                    lease = lease.valid, "reconciled the local HAProxy");
            }
            for (side, err, last) in [
                ("redis", &report.redis_error, &mut last_errors.0),
                ("haproxy", &report.haproxy_error, &mut last_errors.1),
            ] {
                if err.is_some() {
                    metrics.reconcile_errors.with_label_values(&[side]).inc();
                }
                if err != last {
                    match err {
                        Some(e) => {
                            tracing::warn!(side, error = %e, "reconciliation failed; retrying")
                        }
                        None => tracing::info!(side, "reconciliation works again"),
                    }
                    last.clone_from(err);
                }
            }
            set_view(&mut |v| {
                v.cycles += 1;
                v.waiting = None;
                v.last_cycle = Some(report.clone());
                v.last_cycle_at = Some(Instant::now());
                if report.redis_settled {
                    v.reconciled_index = v.reconciled_index.max(target.decision_index().0);
                }
            });
        }
    });
    Ok(())
}

/// Steps one peer message; a refused one is logged and counted in
/// `triad_raft_messages_rejected_total` by reason: `decode` (not a raft-rs message), `invalid`
/// (refused by the checks of `raft::validate`), `refused` (by raft-rs itself), `mismatch`
/// (sender, addressee or a local message type that does not fit this node).
pub(crate) fn step(raft: &mut RaftNode, metrics: &Metrics, from: NodeId, bytes: &[u8]) {
    if let Err(err) = raft.step(from, bytes) {
        let reason = match &err {
            RaftError::BadMessage { reason, .. } if reason.starts_with("not a raft") => "decode",
            // `RaftNode::step` words every validation refusal "invalid <type>: <why>".
            RaftError::BadMessage { reason, .. } if reason.starts_with("invalid ") => "invalid",
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
