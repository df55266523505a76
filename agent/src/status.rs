//! The seam between the event loop and the HTTP API: what the loop publishes ([`CoreStatus`]),
//! what it accepts ([`Request`]), its liveness, and the [`Handles`] the API gets at start.
//! Neither side imports the other: `node` fills these in, `api` reads them.
//!
//! Caveat: [`Liveness`] reads the process's monotonic clock (an adapter concern; the driver
//! gets its time from the shell as a value).

// Reads the clock (loop liveness); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::{ClusterState, Command};
use crate::config::Validated;
use crate::decide::galera::{GaleraPlan, ProcessState};
use crate::decide::galera_writer::WriterPlan;
use crate::decide::redis::RedisPlan;
use crate::decide::web::WebPlan;
use crate::driver::{Applied, ProposeError};
use crate::health::HealthStore;
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::raft::transport::Transport;
use crate::raft::RaftStatus;
use crate::reconcile::galera::{RecoveryView, Step};
use crate::reconcile::galera_writer::WriterReport;
use crate::reconcile::redis::CycleReport;
use crate::reconcile::web::WebReport;

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
    /// Each managed service's published view.
    pub services: ServiceViews,
}

/// Each managed service's side of the published status (built by `local`).
#[derive(Clone, Debug, Default)]
pub struct ServiceViews {
    /// Redis failover state, when Redis is managed.
    pub redis: Option<RedisCoreView>,
    /// Galera recovery state, when `[galera]` is configured.
    pub galera: Option<GaleraCoreView>,
    /// The Galera writer, when `[galera]` is configured.
    pub galera_writer: Option<WriterCoreView>,
    /// The web rotation, when `[web]` is configured.
    pub web: Option<WebCoreView>,
    /// Remediations, when they are on (`[web] restart_phpfpm` with a service control).
    pub remedy: Option<RemedyCoreView>,
}

/// The remediation side of the published status.
#[derive(Clone, Debug)]
pub struct RemedyCoreView {
    /// The leader's latest decision (absent on followers).
    pub plan: Option<crate::decide::remedy::RemedyPlan>,
    /// What this node's remediation task reports, written by its task.
    pub local: Arc<std::sync::Mutex<Option<crate::cluster::RemedyRun>>>,
}

/// The web side of the published status.
#[derive(Clone, Debug)]
pub struct WebCoreView {
    /// The leader's latest decision (absent on followers).
    pub plan: Option<WebPlan>,
    /// The local web reconciler's view, written by its task.
    pub local: Arc<std::sync::Mutex<LocalWebView>>,
}

/// What the local web reconciler last did, shown in status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocalWebView {
    /// Cycles run since start.
    pub cycles: u64,
    /// The last cycle, if any.
    pub last_cycle: Option<WebReport>,
}

/// The Galera writer side of the published status.
#[derive(Clone, Debug)]
pub struct WriterCoreView {
    /// The leader's latest decision (absent on followers).
    pub plan: Option<WriterPlan>,
    /// The local writer reconciler's view, written by its task.
    pub local: Arc<std::sync::Mutex<LocalWriterView>>,
}

/// What the local writer reconciler last did, shown in status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocalWriterView {
    /// Cycles run since start.
    pub cycles: u64,
    /// The last cycle, if any.
    pub last_cycle: Option<WriterReport>,
    /// When the last cycle ended (this process's monotonic clock): `GET /galera/writer`
    /// trusts only a recent cycle.
    #[serde(skip)]
    pub last_cycle_at: Option<Instant>,
}

/// The Galera side of the published status.
#[derive(Clone, Debug)]
pub struct GaleraCoreView {
    /// The leader's latest decision (absent on followers).
    pub plan: Option<GaleraPlan>,
    /// The local recovery's view, written by its task.
    pub local: Arc<std::sync::Mutex<LocalGaleraView>>,
}

/// What the local Galera recovery last saw and did, shown in status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocalGaleraView {
    /// Cycles run since start.
    pub cycles: u64,
    /// Whether the local mariadbd runs, as service control says.
    pub process: Option<ProcessState>,
    /// The last step planned (an action, or why nothing is done).
    pub step: Option<Step>,
    /// Restarts, the cap, the recovered position.
    pub recovery: RecoveryView,
    /// The last failed action, with its error.
    pub last_error: Option<String>,
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
    /// Starts counting now.
    pub(crate) fn new(max_gap: Duration) -> Self {
        Liveness {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            max_gap,
        }
    }
    /// The loop ran now.
    pub(crate) fn beat(&self) {
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

    /// `at` in milliseconds of the same clock as [`Liveness::mono_ms`].
    pub fn ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
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
    /// The admin bearer token (mutating endpoints and reads), if configured (replaced by a
    /// reload).
    pub token: crate::reload::TokenCell,
    /// The read-only bearer token, if configured (replaced by a reload).
    pub read_token: crate::reload::TokenCell,
    /// The rate limits of mutating requests.
    pub limits: Arc<std::sync::Mutex<crate::ratelimit::Limits>>,
    /// Set while a switchover runs through this agent (one at a time).
    pub switchover_busy: Arc<AtomicBool>,
    /// Every probe's current timing (replaced by a reload).
    pub probe_timings: watch::Receiver<crate::probe::runner::ProbeTimings>,
    /// The operator's hooks (`[hooks]`), if any.
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
}

impl Handles {
    /// Proposes `command` through the event loop and waits until it applied on this node, or
    /// failed. A request that never reached the loop was provably not proposed (`Refused`); a
    /// loop that dropped it may have proposed it (`Stopping`).
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Propose { command, reply: tx })
            .await
            .map_err(|_| {
                ProposeError::Refused("agent is shutting down; the change was not proposed".into())
            })?;
        rx.await.unwrap_or(Err(ProposeError::Stopping))
    }
}
