//! The agent's clock-free core: everything between "an event arrived" and "these messages,
//! proposals and reconcile targets go out", as one synchronous value stepped by inputs.
//!
//! [`Driver`] owns the Raft node, the state machine, the health store, the Redis timeline
//! and embargo, the proposals in flight and the leader's decision. It is stepped by:
//! - [`Driver::raft_tick`], [`Driver::step_peer`]: Raft's clock and a peer's Raft message;
//! - [`Driver::ingest`]: a health report (a peer's, or this agent's own);
//! - [`Driver::set_reconciled`]: what the local reconciler last carried out;
//! - [`Driver::propose`]: an operator's command;
//! - [`Driver::on_tick`]: the periodic work (proposal expiry, the decision, the embargo);
//! - [`Driver::process`]: drain Raft's ready state, apply, compact, answer proposers.
//!
//! Time comes in as a [`Clock`] value: the driver reads no clock and does no I/O (its store
//! is an adapter handed in inside the [`RaftNode`]). What goes out is collected in
//! [`Outputs`] and taken by the shell with [`Driver::take_outputs`], plus the reconcile
//! [`Target`] and embargo, which the shell reads after each event. `node.rs` runs the driver
//! under tokio with the real transport and reconciler task; the whole-cluster simulation
//! (`agent/tests/cluster_sim.rs`) runs the same driver on a simulated clock and network, so a
//! bug in this wiring is a bug the simulation can see.
//!
//! Caveats:
//! - The reconciler target is published from the restored state at construction. Waiting for
//!   the first applied entry would leave a restarted follower idle for good when its snapshot
//!   sits exactly at the applied index of a quiet cluster (nothing is replayed, nothing new
//!   commits). Acting on a restored, possibly stale state is safe: without a lease the
//!   reconciler only fences, peers grant no lease to an agent whose reports show it behind the
//!   newest decision, and the local Redis is untrusted until a fresh grant.
//! - The leader decides on every tick that follows news (a report, an applied entry) and on
//!   every 4th tick otherwise (waits and countdowns).
//! - [`Plant`] exists for the simulation's planted-bug tests only; production always runs
//!   [`Plant::None`].
//! - The reconciler task (lease, cycle pacing) is still in `node.rs` and copied by the
//!   simulation; it moves behind this driver next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::{
    ChangeKind, ClusterState, Command, EntryMeta, Maintenance, MemberInfo, Outcome, RedisAuthority,
};
use crate::codec::{self, Proposal, ProposalId};
use crate::decide::redis::{first_failure_age_ms, FailoverSettings, RedisInputs, RedisPlan};
use crate::decide::timeline::{embargo, RedisTimeline};
use crate::decide::{self, View};
use crate::health::{HealthStore, Received};
use crate::ids::{LogIndex, NodeId, UnixMillis};
use crate::metrics::Metrics;
use crate::raft::{CommittedEntry, RaftError, RaftNode, RaftStatus, Role};
use crate::reconcile::Target;

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

/// The time, as the shell hands it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Milliseconds of the process's monotonic clock (the time base of [`HealthStore`]).
    pub mono_ms: u64,
    /// Wall-clock time (stamped on proposals; compared with committed change times).
    pub wall: UnixMillis,
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
}

/// What the driver needs to know, fixed at start.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// This node.
    pub me: NodeId,
    /// The configured voters, sorted.
    pub members: Vec<NodeId>,
    /// Members as configured (addresses), for registration.
    pub configured: BTreeMap<NodeId, MemberInfo>,
    /// The failover decision's tunables.
    pub settings: FailoverSettings,
    /// `failover.automatic`: whether automatic suspicions and promotions are proposed.
    pub automatic: bool,
    /// Whether Redis is managed here (`[redis]` configured).
    pub redis_managed: bool,
    /// `raft.snapshot_entries`: applied entries between snapshots.
    pub snapshot_entries: u64,
    /// `api.proposal_timeout`, in milliseconds.
    pub proposal_timeout_ms: u64,
    /// The Redis probe's interval, in milliseconds (dates a master's first failed check).
    pub redis_probe_interval_ms: u64,
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
    timeline: RedisTimeline,
    seq: u64,
    /// Proposals in flight: their deadlines (monotonic ms).
    pending: BTreeMap<ProposalId, u64>,
    in_flight: BTreeMap<&'static str, ProposalId>,
    decision_due: bool,
    decide_ticks: u64,
    seen_epoch: crate::ids::Epoch,
    seen_decision: (Option<LogIndex>, Option<LogIndex>),
    last_reconciled: u64,
    /// When the committed master's failure began (monotonic ms), for the duration metric.
    down_since_ms: Option<u64>,
    verdict: String,
    redis_plan: Option<RedisPlan>,
    embargo: BTreeSet<NodeId>,
    target: Option<Target>,
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
        let target = (cfg.plant != Plant::TargetOnlyAfterApply).then(|| redis_target(&sm.state));
        // Until the first computation, no peer's lease is renewed (as in the transport).
        let embargo = if cfg.redis_managed {
            cfg.members
                .iter()
                .copied()
                .filter(|&m| m != cfg.me)
                .collect()
        } else {
            BTreeSet::new()
        };
        Ok(Driver {
            seen_epoch: sm.state.redis.epoch,
            cluster: Arc::new(sm.state.clone()),
            timeline: RedisTimeline::new(clock.mono_ms),
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
            seen_decision: (None, None),
            last_reconciled: 0,
            down_since_ms: None,
            verdict: "starting".into(),
            redis_plan: None,
            embargo,
            target,
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
    pub fn ingest(
        &mut self,
        observer: NodeId,
        items: Vec<Received>,
        applied: u64,
        reconciled: u64,
        clock: Clock,
    ) {
        self.decision_due = true;
        if let Ok(mut h) = self.health.lock() {
            h.ingest(observer, items, applied, clock.mono_ms);
            h.set_reconciled(observer, reconciled);
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
            if self.cfg.redis_managed {
                self.target = Some(redis_target(&self.sm.state));
            }
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

    /// The periodic work: proposal expiry, the Redis timeline and embargo, the leader's
    /// decision and its proposals. Ends with [`Driver::process`].
    pub fn on_tick(&mut self, clock: Clock) -> Result<(), DriverError> {
        let mono = clock.mono_ms;
        let status = self.raft.status();
        self.expire(mono, status.leader);
        let pending = &self.pending;
        self.in_flight.retain(|_, id| pending.contains_key(id));
        let authority = self.sm.state.redis.clone();
        let decision_index = (
            authority.last_change.as_ref().map(|c| c.index),
            authority.suspect.as_ref().map(|c| c.index),
        );
        if decision_index != self.seen_decision {
            // Peers lift their lease embargo on this node once its report shows that it
            // applied the newest decision: report at once.
            self.seen_decision = decision_index;
            self.out.report_now = true;
        }
        if authority.epoch != self.seen_epoch {
            self.seen_epoch = authority.epoch;
            self.on_master_change(&authority, mono);
        }
        let is_leader = status.role == Role::Leader;
        self.decide_ticks += 1;
        let due = std::mem::replace(&mut self.decision_due, false);
        let decide_now = !is_leader || due || self.decide_ticks.is_multiple_of(4);
        let managed = self.cfg.redis_managed;
        let (seen, ages, applied_by, reconciled_by) = match self.health.lock() {
            Ok(h) if managed => (
                if is_leader && decide_now {
                    h.all(mono)
                } else {
                    Vec::new()
                },
                h.report_ages(mono),
                h.applied(),
                h.reconciled(),
            ),
            _ => Default::default(),
        };
        let suspect_reconciled = authority
            .suspect
            .as_ref()
            .is_some_and(|s| reconciled_by.get(&s.node).is_some_and(|&r| r >= s.index.0));
        if managed {
            self.timeline
                .observe(self.cfg.me, &authority, &applied_by, mono);
            self.embargo = embargo(self.cfg.me, &self.cfg.members, &authority, &applied_by);
        }
        if decide_now {
            let quorum = self.cfg.members.len() / 2 + 1;
            let mut suspect_embargo_ms = self.timeline.suspect_embargo_ms(quorum, mono);
            if self.cfg.plant == Plant::SkipLeaseWait && authority.suspect.is_some() {
                suspect_embargo_ms = Some(u64::MAX / 2);
            }
            let redis_inputs = (managed && is_leader).then(|| RedisInputs {
                members: &self.cfg.members,
                authority: &authority,
                seen: &seen,
                report_age_ms: &ages,
                since_change_ms: self.timeline.since_change_ms(
                    mono,
                    authority
                        .last_change
                        .as_ref()
                        .and_then(|c| u64::try_from(clock.wall.0.saturating_sub(c.at.0)).ok()),
                ),
                suspect_embargo_ms,
                suspect_reconciled,
                maintenance: self.sm.state.maintenance.enabled,
                in_flight: self.in_flight.contains_key("redis"),
                settings: self.cfg.settings,
            });
            let plan = decide::decide(&View {
                me: self.cfg.me,
                is_leader,
                cluster: &self.sm.state,
                configured: &self.cfg.configured,
                members_in_flight: self.in_flight.contains_key("members"),
                redis: redis_inputs,
            });
            if let Some(rp) = &plan.redis {
                if !rp.candidates.is_empty() {
                    // Measured from the old master's first failed check (as the reports tell
                    // it), not from this decision.
                    if self.down_since_ms.is_none() {
                        let age = authority.master.and_then(|m| {
                            first_failure_age_ms(&seen, m, self.cfg.redis_probe_interval_ms)
                        });
                        self.down_since_ms = Some(age.map_or(mono, |a| mono.saturating_sub(a)));
                    }
                } else if rp.verdict.starts_with("no action") {
                    self.down_since_ms = None;
                }
            }
            self.redis_plan = plan.redis;
            let mut next_verdict = plan.verdict;
            for command in plan.proposals {
                let automatic = matches!(
                    command,
                    Command::SetRedisMaster {
                        kind: ChangeKind::Automatic,
                        ..
                    } | Command::SuspectRedisMaster { .. }
                );
                if automatic && !self.cfg.automatic {
                    next_verdict = format!(
                        "automatic failover off ([failover] automatic = false): would {next_verdict}"
                    );
                    continue;
                }
                let key = match command {
                    Command::RegisterMembers { .. } => "members",
                    _ => "redis",
                };
                self.out.proposed.push(command.clone());
                if let Ok(id) = self.propose_inner(command, clock) {
                    self.in_flight.insert(key, id);
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

    /// Metrics and logs for a newly applied change of Redis master.
    fn on_master_change(&mut self, authority: &RedisAuthority, mono: u64) {
        let metrics = &self.metrics;
        metrics.redis_epoch.set(authority.epoch.0 as i64);
        for m in &self.cfg.members {
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
        if let Some(since) = self.down_since_ms.take() {
            if c.kind == ChangeKind::Automatic {
                metrics
                    .redis_failover_duration
                    .with_label_values(&[c.kind.as_str()])
                    .observe(mono.saturating_sub(since) as f64 / 1000.0);
            }
        }
        tracing::warn!(master = %c.to, from = ?c.from.map(|f| f.to_string()), epoch = %c.epoch,
            kind = c.kind.as_str(), index = %c.index, reason = %c.reason, "redis master changed");
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

    /// What the local reconciler drives towards (absent only under a planted bug).
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
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

    /// The leader's latest Redis decision (absent on followers).
    pub fn redis_plan(&self) -> Option<&RedisPlan> {
        self.redis_plan.as_ref()
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
