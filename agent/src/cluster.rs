//! The replicated cluster state machine: [`ClusterState`] and the [`Command`]s that change it.
//!
//! This module is pure: no I/O, no clock, no randomness. Every node applies the same committed
//! commands in the same order and so holds the same state; the time of an entry (the
//! proposer's wall clock) comes in as a value in [`EntryMeta`] and is only recorded, never used
//! to decide anything.
//!
//! What is replicated here is *authority*, not samples: who the members are, whether the
//! cluster is in maintenance, and the audit history of every decision. Health observations
//! are sent to the leader as messages and never enter the log. Later waves add the Redis
//! master and its epoch, the Galera bootstrap choice, HAProxy routing and backup leases.
//!
//! Invariant: `apply` is deterministic and never panics; an entry whose index is not above the
//! last applied one is ignored (replays after a restart are harmless).
//!
//! Galera recovery ([`GaleraAuthority`]) is numbered like the Redis epoch: an outage opens
//! only as the next number with none open, its bootstrap applies only while that very outage
//! is open and undecided (the same choice again is a harmless replay, any other is refused),
//! and it ends only by its own number; so there is one bootstrap per outage whatever the
//! leader changes, and a decision made for an older outage is rejected and audited.
//!
//! Caveats: the audit history is bounded ([`HISTORY_LIMIT`] entries, newest first); older
//! entries are dropped from the state (they remain in logs and metrics).

mod backup;
mod hooks;
mod remedy;
mod web;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

pub use backup::{
    BackupAuthority, BackupLease, BackupRecord, BackupRequest, BackupRetry, BackupRun,
    BackupSummary, BackupTrigger, Component, ComponentSummary, CATALOG_LIMIT, MAX_ATTEMPTS,
};

pub use hooks::{AuditEvent, EventKind, HookOutcome, HookPhase, HookProgress};
pub use remedy::{
    describe as describe_remedy, RemedyAction, RemedyAuthority, RemedyLease, RemedyRecord,
    RemedyRun, REMEDY_RECORDS,
};
pub use web::{WebAuthority, WebChange, WebDrain, WebKept};

use crate::ids::{BackupId, Epoch, LogIndex, NodeId, RemedyId, Term, UnixMillis};

/// How many audit entries the replicated history keeps.
pub const HISTORY_LIMIT: usize = 200;

/// Where and when a committed entry sits in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Term of the entry.
    pub term: Term,
    /// Index of the entry.
    pub index: LogIndex,
    /// The proposer's wall clock at proposal time (for display only).
    pub at: UnixMillis,
}

/// One member as recorded in the replicated membership view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Raft peer address.
    pub raft_addr: String,
    /// Operator API address.
    pub api_addr: String,
}

/// The maintenance flag. While enabled, no automatic action is taken (fencing still applies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Whether maintenance mode is on.
    pub enabled: bool,
    /// Why it was last switched (operator text).
    pub reason: String,
    /// Who switched it last (for example `api@n2`).
    pub by: String,
    /// When it was last switched.
    pub since: Option<UnixMillis>,
    /// Log index of the command that last switched it.
    pub index: Option<LogIndex>,
}

/// Why the Redis master changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The first master recorded (from what the servers reported).
    Initial,
    /// An automatic failover.
    Automatic,
    /// A planned switchover asked by an operator.
    Switchover,
    /// A failover forced by an operator (`triad failover redis --to N`): the old master was
    /// fenced or down from a majority, and the target named by the operator.
    Forced,
}

impl ChangeKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Initial => "initial",
            ChangeKind::Automatic => "automatic",
            ChangeKind::Switchover => "switchover",
            ChangeKind::Forced => "forced",
        }
    }

    /// Parses [`ChangeKind::as_str`] names.
    pub fn parse(s: &str) -> Option<ChangeKind> {
        [
            ChangeKind::Initial,
            ChangeKind::Automatic,
            ChangeKind::Switchover,
            ChangeKind::Forced,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The last committed change of Redis master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterChange {
    /// Why.
    pub kind: ChangeKind,
    /// The previous master.
    pub from: Option<NodeId>,
    /// The new master.
    pub to: NodeId,
    /// Epoch of the change.
    pub epoch: Epoch,
    /// Log index of the change.
    pub index: LogIndex,
    /// Raft term of the change's entry (with `index`, the decision epoch actions carry).
    #[serde(default)]
    pub term: Term,
    /// Proposer's wall clock.
    pub at: UnixMillis,
    /// The decision's verdict.
    pub reason: String,
}

/// A master whose agent went silent (the silent failover path).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    /// The suspected master.
    pub node: NodeId,
    /// The epoch it is master in.
    pub epoch: Epoch,
    /// Log index of the suspicion: once applied, peers stop renewing the node's lease.
    pub index: LogIndex,
    /// The decision's verdict.
    pub reason: String,
}

/// Who is the Redis master, at which epoch: the authority every agent reconciles to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisAuthority {
    /// The master, once one was recorded.
    pub master: Option<NodeId>,
    /// Grows by one with every change of master.
    pub epoch: Epoch,
    /// Set while the master is suspected on the silent path.
    pub suspect: Option<Suspect>,
    /// The last change of master.
    pub last_change: Option<MasterChange>,
}

/// Numbers the Galera full outages: grows by one with every outage opened, so a Galera
/// decision names the outage it was made for and one made for an earlier outage is refused.
/// 0 means "no outage yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct OutageId(pub u64);

impl OutageId {
    /// The outage after this one.
    pub fn next(self) -> OutageId {
        OutageId(self.0.saturating_add(1))
    }
}

impl std::fmt::Display for OutageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who chose the node a Galera outage bootstraps from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapKind {
    /// The leader's decision, from every node's evidence (`[failover] automatic` holds it
    /// back when off).
    Automatic,
    /// An operator's override (`triad galera bootstrap --node N --accept-data-loss`).
    Operator,
}

impl BootstrapKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootstrapKind::Automatic => "automatic",
            BootstrapKind::Operator => "operator",
        }
    }

    /// Parses [`BootstrapKind::as_str`] names.
    pub fn parse(s: &str) -> Option<BootstrapKind> {
        [BootstrapKind::Automatic, BootstrapKind::Operator]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// How the chosen node becomes the new Primary component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootstrapMode {
    /// The node is stopped: its agent sets `safe_to_bootstrap: 1` on it (clearing it
    /// elsewhere) and starts it with `--wsrep-new-cluster`.
    NewCluster,
    /// The node runs, non-Primary: its agent sets `pc.bootstrap=YES` on it, restarting nothing.
    PcBootstrap,
}

impl BootstrapMode {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootstrapMode::NewCluster => "new-cluster",
            BootstrapMode::PcBootstrap => "pc-bootstrap",
        }
    }

    /// Parses [`BootstrapMode::as_str`] names.
    pub fn parse(s: &str) -> Option<BootstrapMode> {
        [BootstrapMode::NewCluster, BootstrapMode::PcBootstrap]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The committed bootstrap of one Galera outage: which node starts the new Primary component
/// and from which position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraBootstrap {
    /// The node that bootstraps.
    pub node: NodeId,
    /// Its cluster state UUID (lowercase), when known (always for an automatic decision).
    pub uuid: Option<String>,
    /// Its last committed seqno, when known (always for an automatic decision).
    pub seqno: Option<i64>,
    /// New cluster from a stopped node, or `pc.bootstrap` on a running one.
    pub mode: BootstrapMode,
    /// Automatic or an operator's override.
    pub kind: BootstrapKind,
    /// Who asked (operator overrides; empty for automatic decisions).
    pub by: String,
    /// The decision's verdict, or the operator's reason.
    pub reason: String,
    /// Every node's evidence as the decision saw it, one line.
    pub evidence: String,
    /// Log index of the decision (with `term`, the decision epoch actions carry).
    pub index: LogIndex,
    /// Raft term of the decision's entry.
    pub term: Term,
    /// Proposer's wall clock.
    pub at: UnixMillis,
}

/// Where and why an outage opened or ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutageMark {
    /// Log index of the command.
    pub index: LogIndex,
    /// Raft term of the command's entry.
    pub term: Term,
    /// Proposer's wall clock.
    pub at: UnixMillis,
    /// The decision's verdict.
    pub reason: String,
}

/// One Galera full outage: no Primary component anywhere, until one of a majority is back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraOutage {
    /// Its number.
    pub number: OutageId,
    /// When and why it opened.
    pub opened: OutageMark,
    /// Its one bootstrap, once decided.
    pub bootstrap: Option<GaleraBootstrap>,
    /// When and why it ended; `None` while open.
    pub ended: Option<OutageMark>,
}

/// The Galera recovery authority: the newest full outage and its one bootstrap. Every agent
/// reconciles to it: while an outage is open no node is started except as its bootstrap
/// says, and the bootstrap's (outage, index) fences every action taken for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraAuthority {
    /// The newest outage, open or ended; `None` before the first.
    pub outage: Option<GaleraOutage>,
}

impl GaleraAuthority {
    /// The newest outage's number (0 before the first).
    pub fn number(&self) -> OutageId {
        self.outage.as_ref().map_or(OutageId(0), |o| o.number)
    }

    /// The newest outage while it is open.
    pub fn open(&self) -> Option<&GaleraOutage> {
        self.outage.as_ref().filter(|o| o.ended.is_none())
    }

    /// The bootstrap decided for the open outage, if any.
    pub fn decided(&self) -> Option<&GaleraBootstrap> {
        self.open().and_then(|o| o.bootstrap.as_ref())
    }

    /// Checks what a snapshot may hold: outage numbers from 1, node ids not 0, state UUIDs
    /// as [`is_state_uuid`] says, seqnos not negative, an automatic bootstrap with its
    /// position, marks in log order. Names the first problem.
    pub fn check(&self) -> Result<(), String> {
        let Some(o) = &self.outage else {
            return Ok(());
        };
        if o.number.0 == 0 {
            return Err("galera outage number 0".into());
        }
        if let Some(b) = &o.bootstrap {
            if b.node.0 == 0 {
                return Err("galera bootstrap node 0".into());
            }
            if let Some(u) = b.uuid.as_deref().filter(|u| !is_state_uuid(u)) {
                return Err(format!("galera bootstrap uuid `{u}` is not a state UUID"));
            }
            if let Some(s) = b.seqno.filter(|s| *s < 0) {
                return Err(format!("galera bootstrap seqno {s} is negative"));
            }
            if b.kind == BootstrapKind::Automatic && (b.uuid.is_none() || b.seqno.is_none()) {
                return Err("automatic galera bootstrap without a position".into());
            }
            if b.index < o.opened.index {
                return Err("galera bootstrap before its outage opened".into());
            }
        }
        if let Some(e) = &o.ended {
            if e.index < o.opened.index {
                return Err("galera outage ended before it opened".into());
            }
        }
        Ok(())
    }
}

/// Whether `s` is a Galera cluster state UUID as the authority keeps it: `8-4-4-4-12`
/// lowercase hex digits, not the nil UUID (which means "no state").
pub fn is_state_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && s.bytes().any(|b| b != b'0' && b != b'-')
}

/// A committed eviction of a dead node from the Galera component (`evs.evict` of its gcomm
/// UUID on the survivors), kept until the node is back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraEviction {
    /// The node's `wsrep_gcomm_uuid` as its probe last reported it while healthy (a dead
    /// node cannot be asked).
    pub gcomm_uuid: String,
    /// Log index of the decision.
    pub index: LogIndex,
    /// Raft term of the decision's entry.
    pub term: Term,
    /// Proposer's wall clock.
    pub at: UnixMillis,
    /// The decision's verdict.
    pub reason: String,
}

/// The Galera writer authority: the one node every HAProxy routes MySQL writes to, at an
/// epoch that grows by one with every change, and the dead nodes the survivors evict.
///
/// The writer changes only by [`Command::SetGaleraWriter`] at exactly the next epoch; an
/// eviction names the gcomm UUID to evict and is cleared only for that very UUID. At most a
/// minority of the members is evicted at once (evicting does not make a minority Primary).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraWriterAuthority {
    /// The writer, once one was recorded.
    pub writer: Option<NodeId>,
    /// Grows by one with every change of writer.
    pub epoch: Epoch,
    /// The last change of writer (a [`MasterChange`] of the writer, not of Redis).
    pub last_change: Option<MasterChange>,
    /// Nodes evicted from the component, by node id.
    #[serde(default)]
    pub evicted: BTreeMap<NodeId, GaleraEviction>,
}

impl GaleraWriterAuthority {
    /// Checks what a snapshot may hold: node ids not 0, the writer not evicted, gcomm UUIDs
    /// well formed, the last change naming the writer at its epoch. Names the first problem.
    pub fn check(&self) -> Result<(), String> {
        if self.writer.is_some_and(|w| w.0 == 0) {
            return Err("galera writer 0".into());
        }
        if let Some(w) = self.writer.filter(|w| self.evicted.contains_key(w)) {
            return Err(format!("galera writer {w} is evicted"));
        }
        for (n, e) in &self.evicted {
            if n.0 == 0 {
                return Err("galera eviction of node 0".into());
            }
            if !is_gcomm_uuid(&e.gcomm_uuid) {
                return Err(format!(
                    "galera eviction of {n}: `{}` is not a gcomm UUID",
                    e.gcomm_uuid
                ));
            }
        }
        match (&self.last_change, self.writer) {
            (Some(c), Some(w)) if c.to != w || c.epoch != self.epoch => {
                Err("galera writer's last change does not name it at its epoch".into())
            }
            (Some(_), None) => Err("galera writer change without a writer".into()),
            _ => Ok(()),
        }
    }
}

/// Whether `s` is a gcomm UUID as Galera reports `wsrep_gcomm_uuid`: `8-4-4-4-12` lowercase
/// hex digits (a node's identity in the component, new at every start).
pub fn is_gcomm_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// One line of the replicated audit history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Term of the entry that caused it.
    pub term: Term,
    /// Log index of the entry that caused it.
    pub index: LogIndex,
    /// The proposer's wall clock.
    pub at: UnixMillis,
    /// Short machine-readable kind (`maintenance`, `members`, `invalid`).
    pub kind: String,
    /// Human-readable details.
    pub details: String,
    /// What the change was, for hooks and notifications: set on the changes an operator's
    /// hooks hear about (failovers, switchovers, bootstraps, finished remediations and
    /// backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<AuditEvent>,
}

/// A command of the state machine, as committed in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Turn maintenance mode on or off.
    SetMaintenance {
        /// On or off.
        enabled: bool,
        /// Operator's reason.
        reason: String,
        /// Who asked.
        by: String,
    },
    /// Record the membership view the leader was configured with.
    RegisterMembers {
        /// Members by id.
        members: BTreeMap<NodeId, MemberInfo>,
    },
    /// Make `node` the Redis master at `epoch` (exactly the current epoch plus one).
    SetRedisMaster {
        /// The new master.
        node: NodeId,
        /// The new epoch.
        epoch: Epoch,
        /// Why.
        kind: ChangeKind,
        /// The decision's verdict.
        reason: String,
        /// Automatic only: the log index of the suspicion the decision relied on. The change
        /// applies only while that suspicion is still in force (not cleared or replaced).
        suspect: Option<LogIndex>,
    },
    /// Suspect the master `node` at `epoch` (silent path): peers stop renewing its lease.
    SuspectRedisMaster {
        /// The master.
        node: NodeId,
        /// Its epoch (the current one).
        epoch: Epoch,
        /// The decision's verdict.
        reason: String,
    },
    /// Withdraw the suspicion of `node` at `epoch`.
    ClearRedisSuspect {
        /// The suspected master.
        node: NodeId,
        /// Its epoch.
        epoch: Epoch,
        /// The decision's verdict.
        reason: String,
    },
    /// Open Galera outage `outage` (exactly the newest number plus one, with none open): no
    /// Primary component anywhere, every node reported. Agents stop restarting their nodes
    /// on their own and gather evidence for the bootstrap. An open outage whose bootstrap is
    /// decided is superseded (ended, then the next one opened): its bootstrap left no
    /// Primary behind.
    OpenGaleraOutage {
        /// The new outage's number.
        outage: OutageId,
        /// The decision's verdict.
        reason: String,
    },
    /// Bootstrap the open outage `outage` from `node`: the outage's one bootstrap. An
    /// operator's override may also open the next outage with it (a node is missing, so the
    /// leader could not open it).
    BootstrapGalera {
        /// The outage it is decided for.
        outage: OutageId,
        /// The node that bootstraps.
        node: NodeId,
        /// Its cluster state UUID, when known (required for an automatic decision).
        uuid: Option<String>,
        /// Its last committed seqno, when known (required for an automatic decision).
        seqno: Option<i64>,
        /// New cluster or `pc.bootstrap`.
        mode: BootstrapMode,
        /// Automatic or an operator's override.
        kind: BootstrapKind,
        /// Who asked (operator overrides; empty for automatic decisions).
        by: String,
        /// The decision's verdict, or the operator's reason.
        reason: String,
        /// Every node's evidence as the decision saw it, one line.
        evidence: String,
    },
    /// End the open outage `outage`: a Primary component of a majority is back.
    EndGaleraOutage {
        /// The outage.
        outage: OutageId,
        /// The decision's verdict.
        reason: String,
    },
    /// Make `node` the Galera writer at `epoch` (exactly the current epoch plus one).
    SetGaleraWriter {
        /// The new writer.
        node: NodeId,
        /// The new epoch.
        epoch: Epoch,
        /// Initial, automatic or an operator's switchover.
        kind: ChangeKind,
        /// The decision's verdict.
        reason: String,
    },
    /// Evict `node`, whose mariadbd is gone, from the survivors' component: its agents run
    /// `evs.evict` of `gcomm_uuid` instead of waiting out Galera's suspect timeout.
    EvictGaleraNode {
        /// The gone node.
        node: NodeId,
        /// Its gcomm UUID as last reported.
        gcomm_uuid: String,
        /// The decision's verdict.
        reason: String,
    },
    /// Clear the eviction of `node` for `gcomm_uuid` (the node is back, with a new gcomm
    /// UUID).
    ClearGaleraEviction {
        /// The node.
        node: NodeId,
        /// The evicted gcomm UUID this clears.
        gcomm_uuid: String,
        /// The decision's verdict.
        reason: String,
    },
    /// Start counting backup windows from `since` (once, the first time a leader decides
    /// with backups configured): earlier windows were not this cluster's to take.
    ArmBackupSchedule {
        /// The leader's wall clock when it armed the schedule.
        since: UnixMillis,
    },
    /// An operator asks for a backup now (`triad backup now`); one request pends at a time.
    RequestBackup {
        /// Who asked.
        by: String,
        /// Why.
        reason: String,
    },
    /// Lease backup run `id` (exactly the last id plus one) to `node` for `trigger`.
    GrantBackupLease {
        /// The run's number.
        id: BackupId,
        /// The node that runs it.
        node: NodeId,
        /// What it is for.
        trigger: BackupTrigger,
        /// 1, or 2 for the retry of a failed first attempt (on another node).
        attempt: u32,
        /// The run's bound.
        max_duration_ms: u64,
        /// The decision's verdict.
        reason: String,
    },
    /// End backup run `id`: verified, failed as its runner reported, or expired.
    FinishBackup {
        /// The run.
        id: BackupId,
        /// Whether it is verified.
        verified: bool,
        /// Whether the leader ends it without its runner's result (the lease expired).
        expired: bool,
        /// What was verified, or why it failed.
        reason: String,
        /// What the runner reported (empty when the lease expired).
        summary: BackupSummary,
    },
    /// Set the web rotation at `epoch` (exactly the current epoch plus one): the nodes every
    /// HAProxy's web backend keeps out of service, each with why, and the sick node kept in
    /// service because every other one is drained. Never drains every member.
    SetWebRotation {
        /// The new epoch.
        epoch: Epoch,
        /// The drained nodes and why.
        drained: BTreeMap<NodeId, String>,
        /// The sick node kept in service, if any.
        kept: Option<WebKept>,
        /// The decision's verdict.
        reason: String,
    },
    /// Lease remediation `id` (exactly the last id plus one) to `node` for `action`; refused
    /// while another is in force, on the backup lease's holder and during a Galera outage.
    GrantRemedy {
        /// The lease's number.
        id: RemedyId,
        /// The node that carries it out on itself.
        node: NodeId,
        /// What it does.
        action: RemedyAction,
        /// What it acts on (the mount point of a remount; empty otherwise).
        target: String,
        /// Its bound: the leader expires it after this long.
        max_duration_ms: u64,
        /// The decision's verdict.
        reason: String,
    },
    /// End remediation `id`: done (succeeded or failed) as its agent reported, or expired.
    FinishRemedy {
        /// The lease.
        id: RemedyId,
        /// Whether its agent reported success.
        ok: bool,
        /// Whether the leader ends it without a result (its time ran out).
        expired: bool,
        /// What its agent reported, or why it expired.
        reason: String,
    },
    /// Audit a hook run; a post hook's record also moves [`HookProgress::post_done`] to its
    /// event (the next leader continues after it). A repeated post record changes nothing.
    RecordHook {
        /// Before a planned action, or after a committed change.
        phase: HookPhase,
        /// The kind of action.
        what: EventKind,
        /// The audited event's log index (post hooks); `None` for a pre hook.
        event: Option<LogIndex>,
        /// How it ended.
        outcome: HookOutcome,
        /// The exit status, the time taken, the output's gist, the webhook's answer.
        detail: String,
    },
}

/// The replicated authority a command changes. Each authority has its own proposals in flight
/// (a slow Redis commit never holds back a membership change) and its own epoch fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    /// The membership view.
    Members,
    /// The maintenance flag.
    Maintenance,
    /// The Redis master and its epoch.
    Redis,
    /// The Galera outage and its bootstrap.
    Galera,
    /// The Galera writer, its epoch and the evicted nodes.
    #[serde(rename = "galera_writer")]
    GaleraWriter,
    /// The backup schedule, lease, request and catalog.
    Backup,
    /// The web rotation.
    Web,
    /// The remediation lease and the finished remediations.
    Remedy,
    /// The hook runs' progress and audit.
    Hooks,
}

impl Authority {
    /// Stable name (metric labels, status keys).
    pub fn as_str(self) -> &'static str {
        match self {
            Authority::Members => "members",
            Authority::Maintenance => "maintenance",
            Authority::Redis => "redis",
            Authority::Galera => "galera",
            Authority::GaleraWriter => "galera_writer",
            Authority::Backup => "backup",
            Authority::Web => "web",
            Authority::Remedy => "remedy",
            Authority::Hooks => "hooks",
        }
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Command {
    /// The authority this command changes.
    pub fn authority(&self) -> Authority {
        match self {
            Command::SetMaintenance { .. } => Authority::Maintenance,
            Command::RegisterMembers { .. } => Authority::Members,
            Command::SetRedisMaster { .. }
            | Command::SuspectRedisMaster { .. }
            | Command::ClearRedisSuspect { .. } => Authority::Redis,
            Command::OpenGaleraOutage { .. }
            | Command::BootstrapGalera { .. }
            | Command::EndGaleraOutage { .. } => Authority::Galera,
            Command::SetGaleraWriter { .. }
            | Command::EvictGaleraNode { .. }
            | Command::ClearGaleraEviction { .. } => Authority::GaleraWriter,
            Command::ArmBackupSchedule { .. }
            | Command::RequestBackup { .. }
            | Command::GrantBackupLease { .. }
            | Command::FinishBackup { .. } => Authority::Backup,
            Command::SetWebRotation { .. } => Authority::Web,
            Command::GrantRemedy { .. } | Command::FinishRemedy { .. } => Authority::Remedy,
            Command::RecordHook { .. } => Authority::Hooks,
        }
    }

    /// Whether this is an automatic failover step, which `[failover] automatic = false` holds
    /// back (a suspicion, an automatic change of master, an automatic Galera bootstrap).
    /// Withdrawing a suspicion, opening or ending a Galera outage (bookkeeping that starts
    /// nothing), operator commands and membership are never held back.
    pub fn is_automatic_failover(&self) -> bool {
        matches!(
            self,
            Command::SetRedisMaster {
                kind: ChangeKind::Automatic,
                ..
            } | Command::SuspectRedisMaster { .. }
                | Command::BootstrapGalera {
                    kind: BootstrapKind::Automatic,
                    ..
                }
                | Command::SetGaleraWriter {
                    kind: ChangeKind::Automatic,
                    ..
                }
                | Command::EvictGaleraNode { .. }
        )
    }

    /// The event of the emergency this command carries out, as `state` (the proposer's
    /// applied state) words it, and the decision's verdict: an automatic failover of the Redis
    /// master or of the Galera writer, an automatic Galera bootstrap. What pre hooks hear of
    /// as the leader proposes it (they never hold it back). `None` for anything else.
    pub fn emergency_event(&self, state: &ClusterState) -> Option<(AuditEvent, String)> {
        match self {
            Command::SetRedisMaster {
                node,
                epoch,
                kind: ChangeKind::Automatic,
                reason,
                ..
            } => change_event(
                ChangeKind::Automatic,
                "redis",
                *node,
                state.redis.master.filter(|m| m != node),
                *epoch,
            )
            .map(|e| (e, reason.clone())),
            Command::SetGaleraWriter {
                node,
                epoch,
                kind: ChangeKind::Automatic,
                reason,
            } => change_event(
                ChangeKind::Automatic,
                "galera",
                *node,
                state.galera_writer.writer.filter(|w| w != node),
                *epoch,
            )
            .map(|e| (e, reason.clone())),
            Command::BootstrapGalera {
                outage,
                node,
                kind: BootstrapKind::Automatic,
                reason,
                ..
            } => Some((
                AuditEvent {
                    what: EventKind::Bootstrap,
                    service: "galera".into(),
                    nodes: vec![*node],
                    epoch: outage.0,
                    ok: true,
                },
                reason.clone(),
            )),
            _ => None,
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed.
    Changed,
    /// The command was valid but the state already was as asked.
    Unchanged,
    /// The entry's index was not above the last applied index; ignored.
    Stale,
    /// The command no longer fits the state (a stale epoch, a changed master); nothing
    /// changed. Every node rejects it alike, and the audit history says why.
    Rejected(String),
}

impl Outcome {
    /// Stable name (`changed`, `unchanged`, `stale`, `rejected`).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Rejected(_) => "rejected",
        }
    }
}

/// The replicated cluster state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Membership view by node id.
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// Maintenance flag.
    pub maintenance: Maintenance,
    /// Audit history, newest first, at most [`HISTORY_LIMIT`] entries.
    pub history: VecDeque<AuditEntry>,
    /// Redis master authority.
    #[serde(default)]
    pub redis: RedisAuthority,
    /// Galera recovery authority.
    #[serde(default)]
    pub galera: GaleraAuthority,
    /// Galera writer authority.
    #[serde(default)]
    pub galera_writer: GaleraWriterAuthority,
    /// Backup authority.
    #[serde(default)]
    pub backup: BackupAuthority,
    /// Web rotation authority.
    #[serde(default)]
    pub web: WebAuthority,
    /// Remediation authority.
    #[serde(default)]
    pub remedy: RemedyAuthority,
    /// How far the post hooks got.
    #[serde(default)]
    pub hooks: HookProgress,
    /// Index of the last entry applied (commands, empty and invalid entries alike).
    pub applied: LogIndex,
}

impl ClusterState {
    /// Applies one committed command. Deterministic; never panics.
    pub fn apply(&mut self, meta: EntryMeta, command: &Command) -> Outcome {
        if meta.index <= self.applied {
            return Outcome::Stale;
        }
        self.applied = meta.index;
        match command {
            Command::SetMaintenance {
                enabled,
                reason,
                by,
            } => {
                let changed = self.maintenance.enabled != *enabled;
                self.maintenance = Maintenance {
                    enabled: *enabled,
                    reason: reason.clone(),
                    by: by.clone(),
                    since: if changed {
                        Some(meta.at)
                    } else {
                        self.maintenance.since.or(Some(meta.at))
                    },
                    index: Some(meta.index),
                };
                let state = if *enabled { "on" } else { "off" };
                let note = if changed { "" } else { " (already)" };
                self.record(
                    meta,
                    "maintenance",
                    format!("maintenance {state}{note} by {by}: {reason}"),
                );
                if changed {
                    Outcome::Changed
                } else {
                    Outcome::Unchanged
                }
            }
            Command::RegisterMembers { members } => {
                if &self.members == members {
                    return Outcome::Unchanged;
                }
                self.members = members.clone();
                let list = members
                    .iter()
                    .map(|(id, m)| format!("{id}@{}", m.raft_addr))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.record(meta, "members", format!("membership view: {list}"));
                Outcome::Changed
            }
            Command::SetRedisMaster {
                node,
                epoch,
                kind,
                reason,
                suspect,
            } => self.set_redis_master(meta, *node, *epoch, *kind, reason, *suspect),
            Command::SuspectRedisMaster {
                node,
                epoch,
                reason,
            } => {
                let r = &self.redis;
                let refusal = if r.master != Some(*node) || r.epoch != *epoch {
                    Some(format!(
                        "suspect {node} at epoch {epoch} rejected: master is {} at epoch {}",
                        fmt_node(r.master),
                        r.epoch
                    ))
                } else if r.suspect.is_some() {
                    return Outcome::Unchanged;
                } else {
                    None
                };
                if let Some(why) = refusal {
                    self.record(meta, "redis", why.clone());
                    return Outcome::Rejected(why);
                }
                self.redis.suspect = Some(Suspect {
                    node: *node,
                    epoch: *epoch,
                    index: meta.index,
                    reason: reason.clone(),
                });
                self.record(
                    meta,
                    "redis",
                    format!("suspect master {node} at epoch {epoch}: {reason}"),
                );
                Outcome::Changed
            }
            Command::ClearRedisSuspect {
                node,
                epoch,
                reason,
            } => match &self.redis.suspect {
                Some(s) if s.node == *node && s.epoch == *epoch => {
                    self.redis.suspect = None;
                    self.record(
                        meta,
                        "redis",
                        format!("suspicion of {node} at epoch {epoch} withdrawn: {reason}"),
                    );
                    Outcome::Changed
                }
                _ => Outcome::Unchanged,
            },
            Command::OpenGaleraOutage { outage, reason } => {
                self.open_galera_outage(meta, *outage, reason)
            }
            Command::BootstrapGalera {
                outage,
                node,
                uuid,
                seqno,
                mode,
                kind,
                by,
                reason,
                evidence,
            } => self.bootstrap_galera(
                meta,
                *outage,
                GaleraBootstrap {
                    node: *node,
                    uuid: uuid.clone(),
                    seqno: *seqno,
                    mode: *mode,
                    kind: *kind,
                    by: by.clone(),
                    reason: reason.clone(),
                    evidence: evidence.clone(),
                    index: meta.index,
                    term: meta.term,
                    at: meta.at,
                },
            ),
            Command::EndGaleraOutage { outage, reason } => {
                self.end_galera_outage(meta, *outage, reason)
            }
            Command::SetGaleraWriter {
                node,
                epoch,
                kind,
                reason,
            } => self.set_galera_writer(meta, *node, *epoch, *kind, reason),
            Command::EvictGaleraNode {
                node,
                gcomm_uuid,
                reason,
            } => self.evict_galera_node(meta, *node, gcomm_uuid, reason),
            Command::ClearGaleraEviction {
                node,
                gcomm_uuid,
                reason,
            } => {
                let w = &mut self.galera_writer;
                if w.evicted.get(node).map(|e| &e.gcomm_uuid) != Some(gcomm_uuid) {
                    return Outcome::Unchanged;
                }
                w.evicted.remove(node);
                self.record(
                    meta,
                    "galera_writer",
                    format!("eviction of {node} ({gcomm_uuid}) cleared: {reason}"),
                );
                Outcome::Changed
            }
            Command::ArmBackupSchedule { since } => self.arm_backups(meta, *since),
            Command::RequestBackup { by, reason } => self.request_backup(meta, by, reason),
            Command::GrantBackupLease {
                id,
                node,
                trigger,
                attempt,
                max_duration_ms,
                reason,
            } => self.grant_backup_lease(
                meta,
                *id,
                *node,
                trigger,
                *attempt,
                *max_duration_ms,
                reason,
            ),
            Command::FinishBackup {
                id,
                verified,
                expired,
                reason,
                summary,
            } => self.finish_backup(meta, *id, *verified, *expired, reason, summary),
            Command::SetWebRotation {
                epoch,
                drained,
                kept,
                reason,
            } => self.set_web_rotation(meta, *epoch, drained, kept.as_ref(), reason),
            Command::GrantRemedy {
                id,
                node,
                action,
                target,
                max_duration_ms,
                reason,
            } => self.grant_remedy(meta, *id, *node, *action, target, *max_duration_ms, reason),
            Command::FinishRemedy {
                id,
                ok,
                expired,
                reason,
            } => self.finish_remedy(meta, *id, *ok, *expired, reason),
            Command::RecordHook {
                phase,
                what,
                event,
                outcome,
                detail,
            } => self.record_hook(meta, *phase, *what, *event, *outcome, detail),
        }
    }

    fn set_galera_writer(
        &mut self,
        meta: EntryMeta,
        node: NodeId,
        epoch: Epoch,
        kind: ChangeKind,
        reason: &str,
    ) -> Outcome {
        let w = &self.galera_writer;
        let what = format!("{} galera writer {node} at epoch {epoch}", kind.as_str());
        let refusal = if epoch != w.epoch.next() {
            Some(format!(
                "{what} rejected: current epoch is {} (stale decision)",
                w.epoch
            ))
        } else if !self.members.is_empty() && !self.members.contains_key(&node) {
            Some(format!("{what} rejected: not a member"))
        } else if w.evicted.contains_key(&node) {
            Some(format!("{what} rejected: it is evicted"))
        } else if kind == ChangeKind::Initial && w.writer.is_some() {
            Some(format!(
                "{what} rejected: {} is already the writer",
                fmt_node(w.writer)
            ))
        } else if kind != ChangeKind::Initial && w.writer.is_none() {
            Some(format!("{what} rejected: no writer recorded yet"))
        } else if w.writer == Some(node) {
            Some(format!("{what} rejected: it is already the writer"))
        } else {
            None
        };
        if let Some(why) = refusal {
            return self.reject(meta, "galera_writer", why);
        }
        let from = w.writer;
        let w = &mut self.galera_writer;
        w.writer = Some(node);
        w.epoch = epoch;
        w.last_change = Some(MasterChange {
            kind,
            from,
            to: node,
            epoch,
            index: meta.index,
            term: meta.term,
            at: meta.at,
            reason: reason.to_string(),
        });
        self.record_event(
            meta,
            "galera_writer",
            format!(
                "{} galera writer {} -> {node} at epoch {epoch}: {reason}",
                kind.as_str(),
                fmt_node(from)
            ),
            change_event(kind, "galera", node, from, epoch),
        );
        Outcome::Changed
    }

    fn evict_galera_node(
        &mut self,
        meta: EntryMeta,
        node: NodeId,
        gcomm_uuid: &str,
        reason: &str,
    ) -> Outcome {
        let w = &self.galera_writer;
        let what = format!("eviction of {node} ({gcomm_uuid})");
        let others = w.evicted.keys().filter(|&&n| n != node).count();
        let members = self.members.len();
        let refusal = if !self.members.is_empty() && !self.members.contains_key(&node) {
            Some(format!("{what} rejected: not a member"))
        } else if !is_gcomm_uuid(gcomm_uuid) {
            Some(format!("{what} rejected: not a gcomm UUID"))
        } else if w.writer == Some(node) {
            Some(format!(
                "{what} rejected: it is the writer (change the writer first)"
            ))
        } else if members > 0 && 2 * (others + 1) >= members {
            Some(format!(
                "{what} rejected: {others} other node(s) already evicted of {members};                  evicting a majority makes no Primary"
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            return self.reject(meta, "galera_writer", why);
        }
        if w.evicted
            .get(&node)
            .is_some_and(|e| e.gcomm_uuid == gcomm_uuid)
        {
            return Outcome::Unchanged;
        }
        self.galera_writer.evicted.insert(
            node,
            GaleraEviction {
                gcomm_uuid: gcomm_uuid.to_string(),
                index: meta.index,
                term: meta.term,
                at: meta.at,
                reason: reason.to_string(),
            },
        );
        self.record(
            meta,
            "galera_writer",
            format!("evict {node} ({gcomm_uuid}) from the galera component: {reason}"),
        );
        Outcome::Changed
    }

    fn reject(&mut self, meta: EntryMeta, kind: &str, why: String) -> Outcome {
        self.record(meta, kind, why.clone());
        Outcome::Rejected(why)
    }

    fn open_galera_outage(&mut self, meta: EntryMeta, outage: OutageId, reason: &str) -> Outcome {
        let g = &self.galera;
        if let Some(open) = g.open() {
            if open.number == outage {
                return Outcome::Unchanged;
            }
            if outage == open.number.next() && open.bootstrap.is_some() {
                // A decided outage whose bootstrap left no Primary behind: superseded.
                let old = open.number;
                if let Some(o) = self.galera.outage.as_mut() {
                    o.ended = Some(mark(
                        meta,
                        &format!("superseded by outage {outage}: {reason}"),
                    ));
                }
                self.record(
                    meta,
                    "galera",
                    format!("galera outage {old} ended: superseded by outage {outage}"),
                );
                return self.open_galera_outage(meta, outage, reason);
            }
            let why = format!(
                "galera outage {outage} rejected: outage {} is open (stale decision)",
                open.number
            );
            return self.reject(meta, "galera", why);
        }
        if outage != g.number().next() {
            let why = format!(
                "galera outage {outage} rejected: the next outage is {} (stale decision)",
                g.number().next()
            );
            return self.reject(meta, "galera", why);
        }
        self.galera.outage = Some(GaleraOutage {
            number: outage,
            opened: mark(meta, reason),
            bootstrap: None,
            ended: None,
        });
        self.record(
            meta,
            "galera",
            format!("galera outage {outage} opened: {reason}"),
        );
        Outcome::Changed
    }

    fn bootstrap_galera(
        &mut self,
        meta: EntryMeta,
        outage: OutageId,
        b: GaleraBootstrap,
    ) -> Outcome {
        let g = &self.galera;
        let node = b.node;
        let what = format!(
            "{} galera bootstrap {node} for outage {outage}",
            b.kind.as_str()
        );
        let opens = g.open().is_none() && b.kind == BootstrapKind::Operator;
        let refusal = if !self.members.is_empty() && !self.members.contains_key(&node) {
            Some(format!("{what} rejected: not a member"))
        } else if b.kind == BootstrapKind::Automatic && (b.uuid.is_none() || b.seqno.is_none()) {
            Some(format!(
                "{what} rejected: an automatic bootstrap needs a known position"
            ))
        } else {
            match (g.open(), g.decided()) {
                (Some(o), _) if o.number != outage => Some(format!(
                    "{what} rejected: outage {} is open (stale decision)",
                    o.number
                )),
                (Some(_), Some(d)) if d.node == node => return Outcome::Unchanged,
                (Some(_), Some(d)) => Some(format!(
                    "{what} rejected: outage {outage} already bootstraps {} (index {}); one \
                     bootstrap per outage",
                    d.node, d.index
                )),
                (Some(_), None) => None,
                (None, _) if b.kind == BootstrapKind::Automatic => Some(match g.number() {
                    OutageId(0) => format!("{what} rejected: no outage was ever opened"),
                    last => format!("{what} rejected: no outage is open (outage {last} ended)"),
                }),
                (None, _) if outage != g.number().next() => Some(format!(
                    "{what} rejected: the next outage is {} (stale decision)",
                    g.number().next()
                )),
                (None, _) => None,
            }
        };
        if let Some(why) = refusal {
            return self.reject(meta, "galera", why);
        }
        let position = match (&b.uuid, b.seqno) {
            (Some(u), Some(s)) => format!("{u}:{s}"),
            (Some(u), None) => format!("{u}:-1"),
            (None, Some(s)) => format!("unknown uuid:{s}"),
            (None, None) => "an unknown position".to_string(),
        };
        let who = match b.kind {
            BootstrapKind::Automatic => "automatic bootstrap".to_string(),
            BootstrapKind::Operator => format!("operator override by {}: bootstrap", b.by),
        };
        let opened = if opens { " (opened by it)" } else { "" };
        let details = format!(
            "galera outage {outage}{opened}: {who} {node} at {position} ({}): {}; evidence: {}",
            b.mode.as_str(),
            b.reason,
            b.evidence
        );
        if opens {
            self.galera.outage = Some(GaleraOutage {
                number: outage,
                opened: mark(
                    meta,
                    &format!("opened by the operator override of {}", b.by),
                ),
                bootstrap: Some(b),
                ended: None,
            });
        } else if let Some(o) = self.galera.outage.as_mut() {
            o.bootstrap = Some(b);
        }
        let event = AuditEvent {
            what: EventKind::Bootstrap,
            service: "galera".into(),
            nodes: vec![node],
            epoch: outage.0,
            ok: true,
        };
        self.record_event(meta, "galera", details, Some(event));
        Outcome::Changed
    }

    fn end_galera_outage(&mut self, meta: EntryMeta, outage: OutageId, reason: &str) -> Outcome {
        let Some(o) = self.galera.outage.as_mut().filter(|o| o.number == outage) else {
            let why = format!(
                "end of galera outage {outage} rejected: the newest outage is {} (stale decision)",
                self.galera.number()
            );
            return self.reject(meta, "galera", why);
        };
        if o.ended.is_some() {
            return Outcome::Unchanged;
        }
        o.ended = Some(mark(meta, reason));
        self.record(
            meta,
            "galera",
            format!("galera outage {outage} ended: {reason}"),
        );
        Outcome::Changed
    }

    fn set_redis_master(
        &mut self,
        meta: EntryMeta,
        node: NodeId,
        epoch: Epoch,
        kind: ChangeKind,
        reason: &str,
        suspect: Option<LogIndex>,
    ) -> Outcome {
        let r = &self.redis;
        let in_force = r.suspect.as_ref().map(|s| s.index);
        let refusal = if epoch != r.epoch.next() {
            Some(format!(
                "{} master {node} at epoch {epoch} rejected: current epoch is {} (stale decision)",
                kind.as_str(),
                r.epoch
            ))
        } else if !self.members.is_empty() && !self.members.contains_key(&node) {
            Some(format!("master {node} rejected: not a member"))
        } else if kind == ChangeKind::Initial && r.master.is_some() {
            Some(format!(
                "initial master {node} rejected: {} is already master",
                fmt_node(r.master)
            ))
        } else if kind != ChangeKind::Initial && r.master.is_none() {
            Some(format!(
                "{} to {node} rejected: no master recorded yet",
                kind.as_str()
            ))
        } else if kind == ChangeKind::Automatic && (suspect.is_none() || suspect != in_force) {
            Some(format!(
                "automatic master {node} rejected: it relied on the suspicion at index {}, \
                 which is no longer in force (stale decision)",
                suspect.map_or_else(|| "none".to_string(), |i| i.to_string())
            ))
        } else if kind != ChangeKind::Initial && r.master == Some(node) {
            Some(format!(
                "{} to {node} rejected: it is already master",
                kind.as_str()
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.record(meta, "redis", why.clone());
            return Outcome::Rejected(why);
        }
        let from = self.redis.master;
        self.redis = RedisAuthority {
            master: Some(node),
            epoch,
            suspect: None,
            last_change: Some(MasterChange {
                kind,
                from,
                to: node,
                epoch,
                index: meta.index,
                term: meta.term,
                at: meta.at,
                reason: reason.to_string(),
            }),
        };
        self.record_event(
            meta,
            "redis",
            format!(
                "{} master {} -> {node} at epoch {epoch}: {reason}",
                kind.as_str(),
                fmt_node(from)
            ),
            change_event(kind, "redis", node, from, epoch),
        );
        Outcome::Changed
    }

    /// Notes an entry that carries no command (a new leader's empty entry) so the applied
    /// index keeps up.
    pub fn apply_empty(&mut self, meta: EntryMeta) -> Outcome {
        if meta.index <= self.applied {
            return Outcome::Stale;
        }
        self.applied = meta.index;
        Outcome::Unchanged
    }

    /// Notes a committed entry that could not be decoded (for example written by a newer
    /// version). Every node decodes the same bytes the same way, so every node records the
    /// same audit line and the states stay equal.
    pub fn apply_invalid(&mut self, meta: EntryMeta, error: &str) -> Outcome {
        if meta.index <= self.applied {
            return Outcome::Stale;
        }
        self.applied = meta.index;
        self.record(meta, "invalid", format!("entry ignored: {error}"));
        Outcome::Unchanged
    }

    fn record(&mut self, meta: EntryMeta, kind: &str, details: String) {
        self.record_event(meta, kind, details, None);
    }

    /// [`ClusterState::record`] of a change that hooks hear about.
    fn record_event(
        &mut self,
        meta: EntryMeta,
        kind: &str,
        details: String,
        event: Option<AuditEvent>,
    ) {
        self.history.push_front(AuditEntry {
            term: meta.term,
            index: meta.index,
            at: meta.at,
            kind: kind.to_string(),
            details,
            event,
        });
        self.history.truncate(HISTORY_LIMIT);
    }
}

/// The event of a change of master or writer: none for the first one recorded.
fn change_event(
    kind: ChangeKind,
    service: &str,
    to: NodeId,
    from: Option<NodeId>,
    epoch: Epoch,
) -> Option<AuditEvent> {
    let what = match kind {
        ChangeKind::Initial => return None,
        ChangeKind::Automatic | ChangeKind::Forced => EventKind::Failover,
        ChangeKind::Switchover => EventKind::Switchover,
    };
    Some(AuditEvent {
        what,
        service: service.to_string(),
        nodes: std::iter::once(to).chain(from).collect(),
        epoch: epoch.0,
        ok: true,
    })
}

fn mark(meta: EntryMeta, reason: &str) -> OutageMark {
    OutageMark {
        index: meta.index,
        term: meta.term,
        at: meta.at,
        reason: reason.to_string(),
    }
}

fn fmt_node(n: Option<NodeId>) -> String {
    n.map_or_else(|| "none".to_string(), |n| n.to_string())
}

/// Test fixtures shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The metadata of entry `i`: term 1, proposed at `i` seconds.
    pub fn meta(i: u64) -> EntryMeta {
        EntryMeta {
            term: Term(1),
            index: LogIndex(i),
            at: UnixMillis(i as i64 * 1000),
        }
    }

    /// Members 1..=`n` on loopback (Raft port 720N, API port 710N).
    pub fn members(n: u64) -> BTreeMap<NodeId, MemberInfo> {
        (1..=n)
            .map(|i| {
                (
                    NodeId(i),
                    MemberInfo {
                        raft_addr: format!("127.0.0.1:720{i}"),
                        api_addr: format!("127.0.0.1:710{i}"),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only automatic failovers and bootstraps are emergencies for the pre hooks; the event
    /// names the new node first and the one it replaces, as the audited event will.
    #[test]
    fn emergencies_carry_their_event() {
        let mut state = ClusterState::default();
        state.redis.master = Some(NodeId(1));
        state.galera_writer.writer = Some(NodeId(3));
        let redis = |kind| Command::SetRedisMaster {
            node: NodeId(2),
            epoch: Epoch(7),
            kind,
            reason: "master down".into(),
            suspect: None,
        };
        let (e, why) = redis(ChangeKind::Automatic)
            .emergency_event(&state)
            .expect("a failover");
        assert_eq!(
            (e.what, e.service.as_str(), e.nodes, e.epoch, why.as_str()),
            (
                EventKind::Failover,
                "redis",
                vec![NodeId(2), NodeId(1)],
                7,
                "master down"
            )
        );
        assert!(redis(ChangeKind::Switchover)
            .emergency_event(&state)
            .is_none());
        assert!(redis(ChangeKind::Forced).emergency_event(&state).is_none());
        let writer = Command::SetGaleraWriter {
            node: NodeId(1),
            epoch: Epoch(4),
            kind: ChangeKind::Automatic,
            reason: "writer gone".into(),
        };
        let (e, _) = writer.emergency_event(&state).expect("a writer failover");
        assert_eq!(
            (e.service.as_str(), e.nodes),
            ("galera", vec![NodeId(1), NodeId(3)])
        );
        let bootstrap = |kind| Command::BootstrapGalera {
            outage: OutageId(5),
            node: NodeId(2),
            uuid: None,
            seqno: None,
            mode: BootstrapMode::NewCluster,
            kind,
            by: String::new(),
            reason: "most advanced".into(),
            evidence: String::new(),
        };
        let (e, _) = bootstrap(BootstrapKind::Automatic)
            .emergency_event(&state)
            .expect("a bootstrap");
        assert_eq!((e.what, e.epoch), (EventKind::Bootstrap, 5));
        assert!(bootstrap(BootstrapKind::Operator)
            .emergency_event(&state)
            .is_none());
    }

    /// Each command belongs to one authority, and only automatic failover steps are held back
    /// by `[failover] automatic = false`.
    #[test]
    fn commands_know_their_authority_and_whether_they_are_automatic() {
        let redis_master = |kind| Command::SetRedisMaster {
            node: NodeId(2),
            epoch: Epoch(2),
            kind,
            reason: String::new(),
            suspect: None,
        };
        let cases = [
            (
                Command::SetMaintenance {
                    enabled: true,
                    reason: String::new(),
                    by: String::new(),
                },
                Authority::Maintenance,
                false,
            ),
            (
                Command::RegisterMembers {
                    members: BTreeMap::new(),
                },
                Authority::Members,
                false,
            ),
            (redis_master(ChangeKind::Automatic), Authority::Redis, true),
            (
                redis_master(ChangeKind::Switchover),
                Authority::Redis,
                false,
            ),
            (redis_master(ChangeKind::Initial), Authority::Redis, false),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: String::new(),
                },
                Authority::Redis,
                true,
            ),
            (
                Command::ClearRedisSuspect {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: String::new(),
                },
                Authority::Redis,
                false,
            ),
        ];
        for (command, authority, automatic) in cases {
            assert_eq!(command.authority(), authority, "{command:?}");
            assert_eq!(command.is_automatic_failover(), automatic, "{command:?}");
        }
    }

    fn meta(index: u64) -> EntryMeta {
        EntryMeta {
            term: Term(2),
            index: LogIndex(index),
            at: UnixMillis(1_000 + index as i64),
        }
    }

    fn maint(enabled: bool, reason: &str) -> Command {
        Command::SetMaintenance {
            enabled,
            reason: reason.into(),
            by: "api@n1".into(),
        }
    }

    #[test]
    fn maintenance_on_off_and_repeat() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply(meta(1), &maint(true, "upgrade")), Outcome::Changed);
        assert!(s.maintenance.enabled);
        assert_eq!(s.maintenance.since, Some(UnixMillis(1001)));
        assert_eq!(s.apply(meta(2), &maint(true, "still")), Outcome::Unchanged);
        assert_eq!(s.maintenance.since, Some(UnixMillis(1001)), "since kept");
        assert_eq!(s.maintenance.reason, "still");
        assert_eq!(s.apply(meta(3), &maint(false, "done")), Outcome::Changed);
        assert!(!s.maintenance.enabled);
        assert_eq!(s.maintenance.index, Some(LogIndex(3)));
        let details: Vec<_> = s.history.iter().map(|h| h.details.as_str()).collect();
        assert_eq!(
            details,
            [
                "maintenance off by api@n1: done",
                "maintenance on (already) by api@n1: still",
                "maintenance on by api@n1: upgrade"
            ]
        );
    }

    #[test]
    fn stale_entries_are_ignored() {
        let mut s = ClusterState::default();
        s.apply(meta(5), &maint(true, "a"));
        let before = s.clone();
        assert_eq!(s.apply(meta(5), &maint(false, "replay")), Outcome::Stale);
        assert_eq!(s.apply(meta(4), &maint(false, "old")), Outcome::Stale);
        assert_eq!(s.apply_empty(meta(3)), Outcome::Stale);
        assert_eq!(s.apply_invalid(meta(2), "x"), Outcome::Stale);
        assert_eq!(s, before);
    }

    #[test]
    fn register_members_records_once() {
        let mut s = ClusterState::default();
        let cmd = Command::RegisterMembers {
            members: fixtures::members(3),
        };
        assert_eq!(s.apply(meta(1), &cmd), Outcome::Changed);
        assert_eq!(s.apply(meta(2), &cmd), Outcome::Unchanged);
        assert_eq!(s.members.len(), 3);
        assert_eq!(s.history.len(), 1);
        assert_eq!(
            s.history[0].details,
            "membership view: n1@127.0.0.1:7201, n2@127.0.0.1:7202, n3@127.0.0.1:7203"
        );
        assert_eq!(s.applied, LogIndex(2));
    }

    fn set_master(node: u64, epoch: u64, kind: ChangeKind) -> Command {
        Command::SetRedisMaster {
            node: NodeId(node),
            epoch: Epoch(epoch),
            kind,
            reason: "test".into(),
            suspect: (kind == ChangeKind::Automatic).then_some(LogIndex(7)),
        }
    }

    /// Data-driven: a sequence of commands and the outcome of each, then the final authority.
    #[test]
    fn redis_authority_epochs_are_compare_and_set() {
        let mut s = ClusterState::default();
        let steps: Vec<(Command, &str)> = vec![
            (
                set_master(1, 2, ChangeKind::Initial),
                "rejected: current epoch is 0",
            ),
            (
                set_master(1, 1, ChangeKind::Automatic),
                "rejected: no master recorded yet",
            ),
            (set_master(1, 1, ChangeKind::Initial), "changed"),
            (
                set_master(2, 1, ChangeKind::Initial),
                "rejected: current epoch is 1",
            ),
            (
                set_master(2, 2, ChangeKind::Initial),
                "rejected: n1 is already master",
            ),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(2),
                    epoch: Epoch(1),
                    reason: "x".into(),
                },
                "rejected: master is n1 at epoch 1",
            ),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: "silent".into(),
                },
                "changed",
            ),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: "again".into(),
                },
                "unchanged",
            ),
            (
                Command::SetRedisMaster {
                    node: NodeId(2),
                    epoch: Epoch(2),
                    kind: ChangeKind::Automatic,
                    reason: "relied on an older suspicion".into(),
                    suspect: Some(LogIndex(3)),
                },
                "rejected: no longer in force",
            ),
            (set_master(2, 2, ChangeKind::Automatic), "changed"),
            (
                Command::ClearRedisSuspect {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: "late".into(),
                },
                "unchanged",
            ),
            (
                set_master(3, 2, ChangeKind::Switchover),
                "rejected: current epoch is 2 (stale decision)",
            ),
            (set_master(3, 3, ChangeKind::Switchover), "changed"),
        ];
        for (i, (cmd, want)) in steps.iter().enumerate() {
            let got = match s.apply(meta(i as u64 + 1), cmd) {
                Outcome::Changed => "changed".to_string(),
                Outcome::Unchanged => "unchanged".to_string(),
                Outcome::Stale => "stale".to_string(),
                Outcome::Rejected(why) => format!("rejected: {why}"),
            };
            let ok = if let Some(w) = want.strip_prefix("rejected: ") {
                got.starts_with("rejected: ") && got.contains(w)
            } else {
                got == *want
            };
            assert!(ok, "step {i}: {cmd:?}: got {got:?}, want {want:?}");
        }
        assert_eq!(s.redis.master, Some(NodeId(3)));
        assert_eq!(s.redis.epoch, Epoch(3));
        assert_eq!(
            s.redis.suspect, None,
            "a change of master clears the suspicion"
        );
        let last = s.redis.last_change.as_ref().expect("change");
        assert_eq!(
            (last.kind, last.from, last.to),
            (ChangeKind::Switchover, Some(NodeId(2)), NodeId(3))
        );
        assert!(
            s.history
                .iter()
                .any(|h| h.details.contains("stale decision")),
            "rejections are audited"
        );
    }

    /// Only an automatic Galera bootstrap is held back by `[failover] automatic = false`;
    /// every Galera command belongs to the Galera authority.
    #[test]
    fn galera_commands_know_their_authority_and_whether_they_are_automatic() {
        let cases = [
            (open_outage(1), false),
            (bootstrap(1, 3, BootstrapKind::Automatic), true),
            (bootstrap(1, 3, BootstrapKind::Operator), false),
            (end_outage(1), false),
        ];
        for (command, automatic) in cases {
            assert_eq!(command.authority(), Authority::Galera, "{command:?}");
            assert_eq!(command.is_automatic_failover(), automatic, "{command:?}");
        }
        assert_eq!(Authority::Galera.to_string(), "galera");
    }

    fn open_outage(n: u64) -> Command {
        Command::OpenGaleraOutage {
            outage: OutageId(n),
            reason: "no Primary anywhere".into(),
        }
    }

    fn end_outage(n: u64) -> Command {
        Command::EndGaleraOutage {
            outage: OutageId(n),
            reason: "n1 Primary with 3 nodes".into(),
        }
    }

    const UUID: &str = "9eaceb67-efac-11f1-b809-474591e831a5";

    fn bootstrap(outage: u64, node: u64, kind: BootstrapKind) -> Command {
        Command::BootstrapGalera {
            outage: OutageId(outage),
            node: NodeId(node),
            uuid: Some(UUID.into()),
            seqno: Some(1234),
            mode: BootstrapMode::NewCluster,
            kind,
            by: if kind == BootstrapKind::Operator {
                "api@n1".into()
            } else {
                String::new()
            },
            reason: "test".into(),
            evidence: "n1 stopped; n2 stopped; n3 stopped".into(),
        }
    }

    /// Data-driven: one bootstrap per outage, outage numbers compare-and-set, replays
    /// idempotent, every refusal audited with its reason.
    #[test]
    fn galera_outages_are_compare_and_set_with_one_bootstrap_each() {
        use BootstrapKind::{Automatic, Operator};
        let mut s = ClusterState::default();
        let unknown_position = Command::BootstrapGalera {
            outage: OutageId(2),
            node: NodeId(2),
            uuid: None,
            seqno: None,
            mode: BootstrapMode::NewCluster,
            kind: Operator,
            by: "api@n3".into(),
            reason: "n3 lost its disk".into(),
            evidence: "n3 never reported".into(),
        };
        let mut automatic_without_position = bootstrap(1, 3, Automatic);
        if let Command::BootstrapGalera { seqno, .. } = &mut automatic_without_position {
            *seqno = None;
        }
        let steps: Vec<(Command, &str)> = vec![
            (
                Command::RegisterMembers {
                    members: fixtures::members(3),
                },
                "changed",
            ),
            (
                bootstrap(1, 3, Automatic),
                "rejected: no outage was ever opened",
            ),
            (
                end_outage(1),
                "rejected: the newest outage is 0 (stale decision)",
            ),
            (
                open_outage(2),
                "rejected: the next outage is 1 (stale decision)",
            ),
            (open_outage(1), "changed"),
            (open_outage(1), "unchanged"),
            (
                open_outage(2),
                "rejected: outage 1 is open (stale decision)",
            ),
            (
                automatic_without_position,
                "rejected: an automatic bootstrap needs a known position",
            ),
            (bootstrap(1, 9, Automatic), "rejected: not a member"),
            (
                bootstrap(2, 3, Automatic),
                "rejected: outage 1 is open (stale decision)",
            ),
            (bootstrap(1, 3, Automatic), "changed"),
            // A second leader proposing the same choice: harmless.
            (bootstrap(1, 3, Automatic), "unchanged"),
            (
                bootstrap(1, 1, Automatic),
                "rejected: outage 1 already bootstraps n3 (index 11); one bootstrap per outage",
            ),
            (
                bootstrap(1, 2, Operator),
                "rejected: outage 1 already bootstraps n3",
            ),
            (
                end_outage(2),
                "rejected: the newest outage is 1 (stale decision)",
            ),
            (end_outage(1), "changed"),
            (end_outage(1), "unchanged"),
            // A decision made before the end, applied after it.
            (
                bootstrap(1, 1, Automatic),
                "rejected: no outage is open (outage 1 ended)",
            ),
            (
                bootstrap(3, 2, Operator),
                "rejected: the next outage is 2 (stale decision)",
            ),
            // A node is missing: the override opens outage 2 and decides it in one step.
            (unknown_position, "changed"),
            (open_outage(2), "unchanged"),
            (
                open_outage(4),
                "rejected: outage 2 is open (stale decision)",
            ),
            (
                bootstrap(2, 3, Automatic),
                "rejected: outage 2 already bootstraps n2",
            ),
        ];
        for (i, (cmd, want)) in steps.iter().enumerate() {
            let got = match s.apply(meta(i as u64 + 1), cmd) {
                Outcome::Changed => "changed".to_string(),
                Outcome::Unchanged => "unchanged".to_string(),
                Outcome::Stale => "stale".to_string(),
                Outcome::Rejected(why) => format!("rejected: {why}"),
            };
            let ok = if let Some(w) = want.strip_prefix("rejected: ") {
                got.starts_with("rejected: ") && got.contains(w)
            } else {
                got == *want
            };
            assert!(ok, "step {i}: {cmd:?}: got {got:?}, want {want:?}");
        }
        let g = &s.galera;
        assert_eq!(g.number(), OutageId(2));
        let open = g.open().expect("outage 2 open");
        assert_eq!(
            open.opened.index,
            LogIndex(20),
            "opened by the override's entry"
        );
        assert!(open.opened.reason.contains("operator override of api@n3"));
        let decided = g.decided().expect("decided");
        assert_eq!(
            (
                decided.node,
                decided.kind,
                decided.by.as_str(),
                decided.seqno
            ),
            (NodeId(2), Operator, "api@n3", None)
        );
        assert_eq!(g.check(), Ok(()));
        let details: Vec<&str> = s
            .history
            .iter()
            .filter(|h| h.kind == "galera")
            .map(|h| h.details.as_str())
            .collect();
        assert!(details.contains(
            &"galera outage 1: automatic bootstrap n3 at \
              9eaceb67-efac-11f1-b809-474591e831a5:1234 (new-cluster): test; evidence: n1 \
              stopped; n2 stopped; n3 stopped"
        ));
        assert!(details.contains(
            &"galera outage 2 (opened by it): operator override by api@n3: bootstrap n2 at an unknown \
              position (new-cluster): n3 lost its disk; evidence: n3 never reported"
        ));
        assert!(details.contains(&"galera outage 1 ended: n1 Primary with 3 nodes"));
        assert_eq!(
            details
                .iter()
                .filter(|d| d.contains("stale decision"))
                .count(),
            7,
            "every stale refusal is audited: {details:#?}"
        );
        // The decided outage 2 left no Primary behind: outage 3 supersedes it, undecided.
        assert_eq!(s.apply(meta(30), &open_outage(3)), Outcome::Changed);
        let g = &s.galera;
        let open = g.open().expect("outage 3 open");
        assert_eq!((open.number, open.bootstrap.is_none()), (OutageId(3), true));
        assert_eq!(g.check(), Ok(()));
        assert!(s
            .history
            .iter()
            .any(|h| h.details == "galera outage 2 ended: superseded by outage 3"));
        // ...but an undecided outage is never superseded.
        assert!(matches!(
            s.apply(meta(31), &open_outage(4)),
            Outcome::Rejected(why) if why.contains("outage 3 is open")
        ));
    }

    /// What a snapshot may hold: `check` names the first impossible value.
    #[test]
    fn galera_authority_check_names_impossible_values() {
        let mut s = ClusterState::default();
        s.apply(meta(1), &open_outage(1));
        s.apply(meta(2), &bootstrap(1, 3, BootstrapKind::Automatic));
        assert_eq!(s.galera.check(), Ok(()));
        type Mutation = fn(&mut GaleraOutage);
        let cases: [(Mutation, &str); 6] = [
            (|o| o.number = OutageId(0), "outage number 0"),
            (
                |o| o.bootstrap.as_mut().expect("b").node = NodeId(0),
                "node 0",
            ),
            (
                |o| o.bootstrap.as_mut().expect("b").uuid = Some("NOT-A-UUID".into()),
                "not a state UUID",
            ),
            (
                |o| o.bootstrap.as_mut().expect("b").seqno = Some(-1),
                "negative",
            ),
            (
                |o| o.bootstrap.as_mut().expect("b").seqno = None,
                "without a position",
            ),
            (|o| o.opened.index = LogIndex(9), "before its outage opened"),
        ];
        for (mutate, want) in cases {
            let mut g = s.galera.clone();
            mutate(g.outage.as_mut().expect("outage"));
            let err = g.check().expect_err(want);
            assert!(err.contains(want), "{err} lacks {want}");
        }
        for (uuid, ok) in [
            (UUID, true),
            ("9EACEB67-efac-11f1-b809-474591e831a5", false),
            ("00000000-0000-0000-0000-000000000000", false),
            ("9eaceb67-efac-11f1-b809-474591e831a", false),
            ("9eaceb67efac11f1b809474591e831a5", false),
            ("", false),
        ] {
            assert_eq!(is_state_uuid(uuid), ok, "{uuid}");
        }
    }

    #[test]
    fn empty_and_invalid_entries_advance_applied() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply_empty(meta(1)), Outcome::Unchanged);
        assert_eq!(s.apply_invalid(meta(2), "bad bytes"), Outcome::Unchanged);
        assert_eq!(s.applied, LogIndex(2));
        assert_eq!(s.history[0].kind, "invalid");
        assert!(s.history[0].details.contains("bad bytes"));
    }

    #[test]
    fn history_is_bounded_newest_first() {
        let mut s = ClusterState::default();
        for i in 1..=(HISTORY_LIMIT as u64 + 50) {
            s.apply(meta(i), &maint(i % 2 == 1, &format!("r{i}")));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].index, LogIndex(HISTORY_LIMIT as u64 + 50));
        assert_eq!(s.history[HISTORY_LIMIT - 1].index, LogIndex(51));
    }

    fn writer(node: u64, epoch: u64, kind: ChangeKind) -> Command {
        Command::SetGaleraWriter {
            node: NodeId(node),
            epoch: Epoch(epoch),
            kind,
            reason: "r".into(),
        }
    }

    fn evict(node: u64, uuid: &str) -> Command {
        Command::EvictGaleraNode {
            node: NodeId(node),
            gcomm_uuid: uuid.into(),
            reason: "gone".into(),
        }
    }

    fn clear(node: u64, uuid: &str) -> Command {
        Command::ClearGaleraEviction {
            node: NodeId(node),
            gcomm_uuid: uuid.into(),
            reason: "back".into(),
        }
    }

    const U1: &str = "11111111-aaaa-11f1-b809-474591e831a5";
    const U2: &str = "22222222-aaaa-11f1-b809-474591e831a5";
    const U3: &str = "33333333-aaaa-11f1-b809-474591e831a5";

    /// The writer authority, step by step: each command, its outcome, and the writer, epoch
    /// and evicted nodes after it. Refusals are audited and change nothing.
    #[test]
    fn galera_writer_is_compare_and_set_and_evictions_are_bounded() {
        type Step = (Command, &'static str, Option<u64>, u64, &'static [u64]);
        let steps: Vec<Step> = vec![
            (writer(1, 2, ChangeKind::Initial), "rejected", None, 0, &[]),
            (
                writer(1, 1, ChangeKind::Automatic),
                "rejected",
                None,
                0,
                &[],
            ),
            (writer(9, 1, ChangeKind::Initial), "rejected", None, 0, &[]),
            (
                writer(1, 1, ChangeKind::Initial),
                "changed",
                Some(1),
                1,
                &[],
            ),
            (
                writer(2, 2, ChangeKind::Initial),
                "rejected",
                Some(1),
                1,
                &[],
            ),
            (
                writer(1, 2, ChangeKind::Automatic),
                "rejected",
                Some(1),
                1,
                &[],
            ),
            (evict(1, U1), "rejected", Some(1), 1, &[]),
            (evict(2, "not-a-uuid"), "rejected", Some(1), 1, &[]),
            (evict(2, U2), "changed", Some(1), 1, &[2]),
            (evict(2, U2), "unchanged", Some(1), 1, &[2]),
            (evict(3, U3), "rejected", Some(1), 1, &[2]),
            (
                writer(2, 2, ChangeKind::Automatic),
                "rejected",
                Some(1),
                1,
                &[2],
            ),
            (
                writer(3, 2, ChangeKind::Automatic),
                "changed",
                Some(3),
                2,
                &[2],
            ),
            (clear(2, U3), "unchanged", Some(3), 2, &[2]),
            (clear(2, U2), "changed", Some(3), 2, &[]),
            (clear(2, U2), "unchanged", Some(3), 2, &[]),
            (evict(1, U1), "changed", Some(3), 2, &[1]),
            (evict(1, U3), "changed", Some(3), 2, &[1]),
            (
                writer(2, 3, ChangeKind::Switchover),
                "changed",
                Some(2),
                3,
                &[1],
            ),
        ];
        let mut s = ClusterState::default();
        s.apply(
            meta(1),
            &Command::RegisterMembers {
                members: fixtures::members(3),
            },
        );
        for (i, (command, outcome, w, epoch, evicted)) in steps.into_iter().enumerate() {
            let before = s.history.len();
            let got = s.apply(meta(i as u64 + 2), &command);
            assert_eq!(got.name(), outcome, "step {i}: {command:?}: {got:?}");
            let g = &s.galera_writer;
            assert_eq!(g.writer, w.map(NodeId), "step {i}");
            assert_eq!(g.epoch, Epoch(epoch), "step {i}");
            let ev: Vec<u64> = g.evicted.keys().map(|n| n.0).collect();
            assert_eq!(ev, evicted, "step {i}");
            let audited = s.history.len() > before;
            assert_eq!(audited, outcome != "unchanged", "step {i}: audit");
            assert_eq!(g.check(), Ok(()), "step {i}");
        }
        assert_eq!(s.galera_writer.evicted[&NodeId(1)].gcomm_uuid, U3);
        let c = s.galera_writer.last_change.as_ref().expect("a change");
        assert_eq!(
            (c.from, c.to, c.kind),
            (Some(NodeId(3)), NodeId(2), ChangeKind::Switchover)
        );
    }

    /// Writer commands belong to the writer authority; automatic changes and evictions are
    /// held back by `[failover] automatic = false`, switchovers and clears are not.
    #[test]
    fn galera_writer_commands_know_their_authority() {
        let cases = [
            (writer(2, 2, ChangeKind::Automatic), true),
            (writer(2, 2, ChangeKind::Switchover), false),
            (writer(2, 1, ChangeKind::Initial), false),
            (evict(2, U2), true),
            (clear(2, U2), false),
        ];
        for (command, automatic) in cases {
            assert_eq!(command.authority(), Authority::GaleraWriter, "{command:?}");
            assert_eq!(command.is_automatic_failover(), automatic, "{command:?}");
        }
    }

    #[test]
    fn galera_writer_check_names_impossible_values() {
        let ok = GaleraWriterAuthority::default();
        assert_eq!(ok.check(), Ok(()));
        let eviction = |u: &str| GaleraEviction {
            gcomm_uuid: u.into(),
            index: LogIndex(1),
            term: Term(1),
            at: UnixMillis(0),
            reason: String::new(),
        };
        let mut a = ok.clone();
        a.writer = Some(NodeId(2));
        a.evicted.insert(NodeId(2), eviction(U2));
        assert_eq!(a.check(), Err("galera writer n2 is evicted".into()));
        let mut b = ok.clone();
        b.evicted.insert(NodeId(3), eviction("XYZ"));
        assert!(b
            .check()
            .expect_err("bad uuid")
            .contains("not a gcomm UUID"));
        let mut c = ok;
        c.writer = Some(NodeId(0));
        assert_eq!(c.check(), Err("galera writer 0".into()));
    }
}
