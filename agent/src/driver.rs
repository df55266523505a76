//! The agent's clock-free core: everything between "an event arrived" and "these messages,
//! proposals and reconcile targets go out", as one synchronous value stepped by inputs.
//!
//! [`Driver`] owns the Raft node, the state machine, the health store, one controller per
//! managed service (`controller`: Redis today), the proposals in flight and the leader's
//! decision. It is stepped by:
//! - [`Driver::raft_tick`], [`Driver::step_peer`]: Raft's clock and a peer's Raft message;
//! - [`Driver::ingest`]: a health report (a peer's, or this agent's own);
//! - [`Driver::set_reconciled`]: what the local reconcilers last carried out;
//! - [`Driver::propose`]: an operator's command;
//! - [`Driver::on_tick`]: the periodic work (proposal expiry, every controller's observation
//!   and lease embargo, the composed decision); [`Driver::on_news`]: the same on the leader
//!   right after an event that brought news, and on a follower after an entry applied (so
//!   that the embargo, and the applied index its report claims, follow at once);
//! - [`Driver::process`]: drain Raft's ready state, apply, compact, answer proposers.
//!
//! Time comes in as a [`Clock`] value: the driver reads no clock and does no I/O (its store
//! is an adapter handed in inside the [`RaftNode`]). What goes out is collected in
//! [`Outputs`] and taken by the shell with [`Driver::take_outputs`], plus each service's
//! reconcile target ([`Driver::target`]) and the lease embargo, which the shell reads after
//! each event. `node.rs` runs the driver under tokio with the real transport and the local
//! reconcilers (`local`); the whole-cluster simulation (`agent/tests/cluster_sim.rs`) runs the
//! same driver on a simulated clock and network, so a bug in this wiring is a bug the
//! simulation can see.
//!
//! The driver knows no service by name beyond constructing its controllers: proposals are
//! keyed in flight by the [`Authority`] their command changes, the automatic-failover gate asks
//! the command, and the lease embargo is the union of the controllers'.
//!
//! Caveats:
//! - The reconcile targets are published from the restored state at construction. Waiting
//!   for the first applied entry would leave a restarted follower idle for good when its
//!   snapshot sits exactly at the applied index of a quiet cluster (nothing is replayed,
//!   nothing new commits). Acting on a restored, possibly stale state is safe: without a lease
//!   the reconciler only fences, peers grant no lease to an agent whose reports show it behind
//!   the newest decision, and the local Redis is untrusted until a fresh grant.
//! - The leader decides right after an event that brought news (a report, an applied entry:
//!   [`Driver::on_news`]) and on every 4th tick otherwise (waits and countdowns).
//! - [`Plant`] exists for the simulation's planted-bug tests only; production always runs
//!   [`Plant::None`].
//! - The reconciler tasks' pacing is `reconcile::redis::Pacer`, shared with the simulation; their
//!   tokio glue (timers, the lease source) is `local`, and the simulation has its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::{
    Authority, ClusterState, Command, EntryMeta, Maintenance, MemberInfo, Outcome,
};
use crate::codec::{self, Proposal, ProposalId};
pub use crate::controller::Clock;
pub use crate::controller::Services;
use crate::controller::{self, Context, Controller, Reports, ServiceTarget};
use crate::decide::{self, ServicePlan, View};
use crate::health::HealthStore;
use crate::ids::{LogIndex, NodeId, UnixMillis};
use crate::metrics::Metrics;
use crate::raft::{CommittedEntry, RaftError, RaftNode, RaftStatus, Role};

/// Errors that stop the driver (and with it the agent).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Raft or its storage failed.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// A snapshot (stored, or installed from the leader) cannot be read.
    #[error("snapshot: {0}")]
    Snapshot(#[from] codec::CodecError),
}

/// A bug the simulation plants in the driver to prove its invariants are not vacuous.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Plant {
    /// Production: no bug.
    #[default]
    None,
    /// Tell the decision that the suspect's lease has long run out (skips the silent path's
    /// wait).
    SkipLeaseWait,
    /// Publish the reconcile target only after an entry is applied (a restarted follower of a
    /// quiet cluster stays idle).
    TargetOnlyAfterApply,
    /// Tell the decision that every agent applied the suspicion of a hung master (skips the
    /// hung path's wait for every HAProxy to drain it).
    HungWithoutEveryAgent,
    /// Tell the backup decision that the holder of an expired lease has stopped (skips the
    /// wait for its runner to lose its lease before the next grant).
    BackupSkipsQuarantine,
}

/// The leader decides at least every this many Raft ticks (200 ms at the default tick), for
/// the decisions that wait on time alone (a lease running out, a hung master's bound); news
/// (a report, an applied entry) is decided on at once.
pub const DECIDE_EVERY_TICKS: u64 = 4;

/// What the driver needs to know, fixed at start.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// This node.
    pub me: NodeId,
    /// The configured voters, sorted.
    pub members: Vec<NodeId>,
    /// Members as configured (addresses), for registration.
    pub configured: BTreeMap<NodeId, MemberInfo>,
    /// `failover.automatic`: whether automatic suspicions and promotions are proposed.
    pub automatic: bool,
    /// The managed services and their controllers' settings.
    pub services: Services,
    /// `raft.snapshot_entries`: applied entries between snapshots.
    pub snapshot_entries: u64,
    /// `api.proposal_timeout`, in milliseconds.
    pub proposal_timeout_ms: u64,
    /// A planted bug (simulation only).
    #[doc(hidden)]
    pub plant: Plant,
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

/// What the driver produced since the shell last took it.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Raft messages to send, by addressee.
    pub messages: Vec<(NodeId, Vec<u8>)>,
    /// Answers to proposals (applied here, or timed out); the shell answers those it has a
    /// waiter for.
    pub answers: Vec<(ProposalId, Result<Applied, ProposeError>)>,
    /// Entries applied, in order (the simulation checks log matching on them).
    pub committed: Vec<CommittedEntry>,
    /// Commands the decision proposed.
    pub proposed: Vec<Command>,
    /// Whether this agent should report its health at once (its reconciler carried out a
    /// decision, or a new decision applied: the leader's fast path and the peers' lease
    /// embargo wait for that report).
    pub report_now: bool,
}

/// The clock-free core of one agent. See the module docs.
pub struct Driver {
    cfg: DriverConfig,
    raft: RaftNode,
    sm: StateMachine,
    metrics: Metrics,
    health: Arc<Mutex<HealthStore>>,
    /// The managed services, in a fixed order (see `controller`).
    controllers: Vec<Box<dyn Controller>>,
    seq: u64,
    /// Proposals in flight: their deadlines (monotonic ms).
    pending: BTreeMap<ProposalId, u64>,
    /// The decision's proposals in flight, by the authority they change.
    in_flight: BTreeMap<Authority, ProposalId>,
    decision_due: bool,
    decide_ticks: u64,
    /// Whether the last ticks passed a multiple of [`DECIDE_EVERY_TICKS`].
    periodic_due: bool,
    last_reconciled: u64,
    /// What the local backup runner last reported.
    backup_run: Option<codec::BackupRun>,
    remedy_run: Option<codec::RemedyRun>,
    /// The applied index as of the controllers' last observation (see
    /// [`Driver::reported_applied`]).
    observed_applied: u64,
    verdict: String,
    embargo: BTreeSet<NodeId>,
    targets: BTreeMap<Authority, ServiceTarget>,
    cluster: Arc<ClusterState>,
    last_leader: Option<NodeId>,
    out: Outputs,
}

impl Driver {
    /// Starts from what the Raft node restored; publishes the reconcile target at once (see
    /// the module caveats).
    pub fn new(
        raft: RaftNode,
        cfg: DriverConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<Self, DriverError> {
        let sm = StateMachine::restore(raft.snapshot_data().as_ref().map(|s| s.data.as_slice()))?;
        let controllers =
            cfg.services
                .controllers(cfg.me, &cfg.members, &sm.state, &metrics, clock.mono_ms);
        let targets = if cfg.plant == Plant::TargetOnlyAfterApply {
            BTreeMap::new()
        } else {
            targets_of(&controllers, &sm.state)
        };
        let embargo = union_embargo(&controllers);
        Ok(Driver {
            cluster: Arc::new(sm.state.clone()),
            controllers,
            cfg,
            raft,
            sm,
            metrics,
            health: Arc::new(Mutex::new(HealthStore::default())),
            seq: 0,
            pending: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            decision_due: true,
            decide_ticks: 0,
            periodic_due: false,
            last_reconciled: 0,
            backup_run: None,
            remedy_run: None,
            observed_applied: 0,
            verdict: "starting".into(),
            embargo,
            targets,
            last_leader: None,
            out: Outputs::default(),
        })
    }

    /// Advances Raft's logical clock by one tick.
    pub fn raft_tick(&mut self) {
        self.raft.tick();
    }

    /// Steps one peer message; a refused one is logged and counted in
    /// `triad_raft_messages_rejected_total` by reason (`decode`, `invalid`, `refused`, `mismatch`).
    pub fn step_peer(&mut self, from: NodeId, bytes: &[u8]) {
        step(&mut self.raft, &self.metrics, from, bytes);
    }

    /// Ingests a health report (a peer's, or this agent's own).
    pub fn ingest(&mut self, observer: NodeId, report: codec::DecodedReport, clock: Clock) {
        self.decision_due = true;
        if let Ok(mut h) = self.health.lock() {
            h.ingest(
                observer,
                report.observations,
                report.applied_index,
                clock.mono_ms,
            );
            h.set_reconciled(observer, report.reconciled_index);
            h.set_pongs(observer, &report.pongs);
            h.set_backup_run(observer, report.backup_run);
            h.set_remedy_run(observer, report.remedy_run);
        }
    }

    /// Records the newest decision the local reconciler carried out; a change asks for a
    /// report at once (the leader's fast path waits for it).
    pub fn set_reconciled(&mut self, index: u64) {
        if index != self.last_reconciled {
            self.last_reconciled = index;
            self.out.report_now = true;
        }
    }

    /// Records what the local backup runner reports (the run under this node's lease, or
    /// none); a change asks for a report at once (the leader commits the end from it).
    pub fn set_backup_run(&mut self, run: Option<codec::BackupRun>) {
        if run != self.backup_run {
            self.backup_run = run;
            self.out.report_now = true;
        }
    }

    /// Records what the local remediation task reports (the remediation under this node's
    /// lease, or none); a change asks for a report at once (the leader commits the end from
    /// it).
    pub fn set_remedy_run(&mut self, run: Option<codec::RemedyRun>) {
        if run != self.remedy_run {
            self.remedy_run = run;
            self.out.report_now = true;
        }
    }

    /// What the local remediation task last reported, for this agent's health report.
    pub fn remedy_run(&self) -> Option<&codec::RemedyRun> {
        self.remedy_run.as_ref()
    }

    /// What the local backup runner last reported, for this agent's health report.
    pub fn backup_run(&self) -> Option<&codec::BackupRun> {
        self.backup_run.as_ref()
    }

    /// The newest decision the local reconciler carried out, as last set.
    pub fn reconciled(&self) -> u64 {
        self.last_reconciled
    }

    /// Proposes an operator's command; the answer comes in [`Outputs::answers`] once it
    /// applied here, or at `api.proposal_timeout`.
    pub fn propose(&mut self, command: Command, clock: Clock) -> Result<ProposalId, ProposeError> {
        match self.propose_inner(command, clock) {
            Ok(id) => Ok(id),
            Err(RaftError::NoLeader) => {
                self.metrics
                    .proposals
                    .with_label_values(&["no_leader"])
                    .inc();
                Err(ProposeError::NoLeader)
            }
            Err(e) => {
                self.metrics.proposals.with_label_values(&["error"]).inc();
                Err(ProposeError::Refused(e.to_string()))
            }
        }
    }

    fn propose_inner(&mut self, command: Command, clock: Clock) -> Result<ProposalId, RaftError> {
        self.seq += 1;
        let id = ProposalId {
            node: self.cfg.me,
            seq: self.seq,
        };
        let data = codec::encode_entry(&Proposal {
            id,
            at: clock.wall,
            command,
        });
        self.raft.propose(data)?;
        self.pending
            .insert(id, clock.mono_ms + self.cfg.proposal_timeout_ms);
        Ok(id)
    }

    /// Drains Raft's ready state: installs snapshots, applies entries, answers proposers,
    /// takes a snapshot when due, and republishes the reconcile target.
    pub fn process(&mut self) -> Result<(), DriverError> {
        let mut applied_any = false;
        loop {
            let out = self.raft.process_ready()?;
            if out.is_empty() {
                break;
            }
            if let Some(snap) = &out.snapshot {
                self.sm.install(&snap.data)?;
                tracing::info!(index = %snap.index, "installed snapshot from leader");
                applied_any = true;
            }
            for entry in out.committed {
                let applied = self.sm.apply(&entry);
                applied_any = true;
                if let Some(id) = applied.proposal {
                    if self.pending.remove(&id).is_some() {
                        self.metrics
                            .proposals
                            .with_label_values(&["committed"])
                            .inc();
                        self.out.answers.push((
                            id,
                            Ok(Applied {
                                index: applied.index,
                                outcome: applied.outcome,
                                maintenance: self.sm.state.maintenance.clone(),
                            }),
                        ));
                    }
                }
                self.out.committed.push(entry);
            }
            self.out
                .messages
                .extend(out.messages.into_iter().map(|m| (m.to, m.bytes)));
        }
        if applied_any {
            self.decision_due = true;
            let applied = self.sm.state.applied;
            if applied.0
                >= self
                    .raft
                    .snapshot_index()
                    .0
                    .saturating_add(self.cfg.snapshot_entries)
            {
                self.raft
                    .compact(applied, codec::encode_state(&self.sm.state))?;
                self.metrics.raft_snapshots.inc();
                tracing::info!(index = %applied, "took snapshot and compacted the log");
            }
            self.cluster = Arc::new(self.sm.state.clone());
            self.targets = targets_of(&self.controllers, &self.sm.state);
        }
        let status = self.raft.status();
        if status.leader != self.last_leader {
            self.metrics.raft_leader_changes.inc();
            tracing::info!(leader = ?status.leader.map(|l| l.to_string()), term = %status.term,
                role = %status.role, "leader changed");
            self.last_leader = status.leader;
        }
        Ok(())
    }

    /// The periodic work: proposal expiry, every controller's observation and lease embargo,
    /// the leader's decision and its proposals. Ends with [`Driver::process`].
    pub fn on_tick(&mut self, clock: Clock) -> Result<(), DriverError> {
        self.on_ticks(clock, 1)
    }

    /// [`Driver::on_tick`] once for `ticks` Raft ticks that passed together (the agent
    /// applies its ticks in pairs, see `node`): the periodic decision is due when the count
    /// passes a multiple of its period, as it would tick by tick.
    pub fn on_ticks(&mut self, clock: Clock, ticks: u64) -> Result<(), DriverError> {
        let before = self.decide_ticks;
        self.decide_ticks = before.saturating_add(ticks);
        self.periodic_due = before / DECIDE_EVERY_TICKS != self.decide_ticks / DECIDE_EVERY_TICKS;
        self.work(clock, true)
    }

    /// The same work as [`Driver::on_tick`], right after an event, but only on the leader and
    /// only when there is news to decide on (a report was ingested, an entry applied): the
    /// leader then decides within the event instead of at the next tick, which is one tick
    /// less per step of a failover (suspicion, then promotion). Does nothing otherwise.
    ///
    /// On a follower it does the same work only when an entry applied since the controllers'
    /// last observation, so that the embargo follows the applied state within the event: the
    /// index a report may claim as applied is the one the embargo in force was computed from
    /// ([`Driver::reported_applied`]).
    pub fn on_news(&mut self, clock: Clock) -> Result<(), DriverError> {
        if !self.decision_due {
            return Ok(());
        }
        if self.raft.status().role != Role::Leader
            && self.sm.state.applied.0 == self.observed_applied
        {
            return Ok(());
        }
        self.work(clock, false)
    }

    /// The applied index this agent's health report may claim: the one from which the
    /// controllers last computed the lease embargo ([`Driver::embargo`]). Peers read "applied"
    /// in a report as "its lease embargo follows this decision" (the silent failover path
    /// counts the suspect's lease from the last pong of an agent that applied the suspicion),
    /// so the shell installs the embargo before it sends a report with this index.
    pub fn reported_applied(&self) -> u64 {
        self.observed_applied
    }

    fn work(&mut self, clock: Clock, periodic: bool) -> Result<(), DriverError> {
        let mono = clock.mono_ms;
        let status = self.raft.status();
        self.expire(mono, status.leader);
        let pending = &self.pending;
        self.in_flight.retain(|_, id| pending.contains_key(id));
        let is_leader = status.role == Role::Leader;
        let due = std::mem::replace(&mut self.decision_due, false);
        let decide_now = !is_leader || due || (periodic && self.periodic_due);
        let reports = match self.health.lock() {
            Ok(h) if !self.controllers.is_empty() => Reports {
                seen: if is_leader && decide_now {
                    h.all(mono)
                } else {
                    Vec::new()
                },
                ages: h.report_ages(mono),
                applied: h.applied(),
                reconciled: h.reconciled(),
                pongs: h.pongs(),
                backup_runs: h.backup_runs(),
                remedy_runs: h.remedy_runs(),
            },
            _ => Reports::default(),
        };
        let in_flight: BTreeSet<Authority> = self.in_flight.keys().copied().collect();
        let cx = Context {
            me: self.cfg.me,
            members: &self.cfg.members,
            is_leader,
            state: &self.sm.state,
            reports: &reports,
            in_flight: &in_flight,
            clock,
            skip_lease_wait: self.cfg.plant == Plant::SkipLeaseWait,
            assume_applied_by_all: self.cfg.plant == Plant::HungWithoutEveryAgent,
            assume_backup_stopped: self.cfg.plant == Plant::BackupSkipsQuarantine,
        };
        for c in &mut self.controllers {
            if c.observe(&cx) {
                self.out.report_now = true;
            }
        }
        self.embargo = union_embargo(&self.controllers);
        self.observed_applied = self.sm.state.applied.0;
        if !decide_now {
            return self.process();
        }
        let plan = decide::decide(&View {
            me: self.cfg.me,
            is_leader,
            cluster: &self.sm.state,
            configured: &self.cfg.configured,
            members_in_flight: in_flight.contains(&Authority::Members),
            services: self
                .controllers
                .iter()
                .filter_map(|c| c.inputs(&cx))
                .collect(),
        });
        for c in &mut self.controllers {
            c.planned(plan.service(c.authority()), &cx);
        }
        let mut next_verdict = plan.verdict.clone();
        let mut proposed = Vec::new();
        for command in plan.all_proposals() {
            if !controller::allowed(command, self.cfg.automatic) {
                next_verdict = format!(
                    "automatic failover off ([failover] automatic = false): would {next_verdict}"
                );
                continue;
            }
            proposed.push(command.clone());
        }
        for command in proposed {
            let authority = command.authority();
            self.out.proposed.push(command.clone());
            if let Ok(id) = self.propose_inner(command, clock) {
                self.in_flight.insert(authority, id);
            }
        }
        if next_verdict != self.verdict {
            // Log a new verdict, not a new countdown ("lease runs out in 2.9s").
            let shape = |v: &str| v.replace(|c: char| c.is_ascii_digit() || c == '.', "");
            if shape(&next_verdict) != shape(&self.verdict) {
                tracing::info!(verdict = %next_verdict, "decision");
            }
            self.verdict = next_verdict;
        }
        self.process()
    }

    fn expire(&mut self, mono: u64, leader: Option<NodeId>) {
        let expired: Vec<ProposalId> = self
            .pending
            .iter()
            .filter(|(_, &deadline)| deadline <= mono)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.pending.remove(&id);
            self.metrics.proposals.with_label_values(&["timeout"]).inc();
            self.out.answers.push((
                id,
                Err(ProposeError::Timeout {
                    after: Duration::from_millis(self.cfg.proposal_timeout_ms),
                    leader: leader.map_or_else(|| "unknown".into(), |l| l.to_string()),
                }),
            ));
        }
    }

    /// Whether a report at once was asked for since the last call (clears the request).
    pub fn take_report_request(&mut self) -> bool {
        std::mem::take(&mut self.out.report_now)
    }

    /// Takes what was produced since the last call.
    pub fn take_outputs(&mut self) -> Outputs {
        std::mem::take(&mut self.out)
    }

    /// Drops every proposal in flight (at shutdown), returning their ids.
    pub fn drain_pending(&mut self) -> Vec<ProposalId> {
        std::mem::take(&mut self.pending).into_keys().collect()
    }

    /// What the local reconciler of `authority` drives towards (absent when that service is
    /// not managed here, and under a planted bug).
    pub fn target(&self, authority: Authority) -> Option<&ServiceTarget> {
        self.targets.get(&authority)
    }

    /// Peers whose lease this node does not renew (they are behind the newest decision).
    pub fn embargo(&self) -> &BTreeSet<NodeId> {
        &self.embargo
    }

    /// The applied cluster state.
    pub fn state(&self) -> &ClusterState {
        &self.sm.state
    }

    /// The applied cluster state, shared (a new `Arc` after each apply).
    pub fn cluster(&self) -> &Arc<ClusterState> {
        &self.cluster
    }

    /// Raft's view.
    pub fn raft_status(&self) -> RaftStatus {
        self.raft.status()
    }

    /// The last decision's verdict.
    pub fn verdict(&self) -> &str {
        &self.verdict
    }

    /// The leader's latest decision for `authority` (absent on followers).
    pub fn plan(&self, authority: Authority) -> Option<&ServicePlan> {
        self.controllers
            .iter()
            .find(|c| c.authority() == authority)
            .and_then(|c| c.plan())
    }

    /// Every agent's latest observations as known here.
    pub fn health(&self) -> &Arc<Mutex<HealthStore>> {
        &self.health
    }

    /// Index of the newest snapshot.
    pub fn snapshot_index(&self) -> LogIndex {
        self.raft.snapshot_index()
    }
}

/// Every controller's reconcile target for `state`.
fn targets_of(
    controllers: &[Box<dyn Controller>],
    state: &ClusterState,
) -> BTreeMap<Authority, ServiceTarget> {
    controllers
        .iter()
        .filter_map(|c| Some((c.authority(), c.target(state)?)))
        .collect()
}

/// The peers whose lease this node renews for no authority.
fn union_embargo(controllers: &[Box<dyn Controller>]) -> BTreeSet<NodeId> {
    controllers.iter().flat_map(|c| c.embargo()).collect()
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
