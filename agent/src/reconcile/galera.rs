//! The local Galera recovery: what this node's agent does to its own mariadbd, decided by a
//! clock-free planner ([`GaleraRecovery`]) from the committed Galera authority (the target its
//! controller publishes) and what this agent sees itself ([`LocalFacts`]).
//!
//! The planner returns one [`Step`] per cycle; the adapter (`local`, and the simulation's
//! own glue) carries it out and reports back ([`GaleraRecovery::recovered`],
//! [`GaleraRecovery::started`]). Steps:
//! - **Rejoin** (no outage open): a stopped mariadbd is restarted only while a peer that this
//!   agent checks itself (after this node stopped) is in a Primary component, from the position
//!   `grastate.dat` holds after a clean stop or `--wsrep-recover` finds after a crash, so
//!   that a donor can send IST. Restarts back off (doubling from `backoff`, up to 16 times
//!   it) and are capped per hour; past the cap the node stays down and says why. The
//!   rejoin waits until the Primary component no longer counts this node (a crashed node's
//!   old process is dropped at the survivors' suspect timeout; a new process started
//!   before that stalls the group while it reconfigures), at most [`EVICT_WAIT_MS`]. The
//!   Primary must be of a majority, or be the node the newest outage committed to bootstrap
//!   (the most advanced by the evidence of every node, or the operator's explicit choice):
//!   that is how the other nodes rejoin a bootstrapped node once the outage has ended. Any
//!   other Primary of a minority (the last node of a cluster whose others stopped cleanly
//!   one by one stays Primary alone; or one made by hand) is joined only when this agent's
//!   own check shows it of this node's history (state UUID) and committed at least as far
//!   as this node's position: a Primary behind this node would make the join discard this
//!   node's newer commits, so that is left to an operator.
//! - **Non-Primary while peers are Primary** (a partition): left alone, since Galera rejoins
//!   it after the heal; stopped (then rejoined as above) only when it is still non-Primary
//!   `restart_non_primary_after` after this agent saw its peers reachable and Primary.
//! - **Full outage** (a committed, open outage): no rejoin of its own. A stopped node whose
//!   `grastate.dat` has `seqno: -1` runs `--wsrep-recover` so that its agent reports the
//!   position (the leader's evidence); it does so already when it sees no Primary anywhere,
//!   before the outage opens, which saves that time from the outage. The committed bootstrap
//!   node sets `safe_to_bootstrap: 1` and starts as a new cluster from its position (or runs
//!   `pc.bootstrap` when the decision says so), once this agent has checked every peer since
//!   its node stopped and found none Primary (a timed-out check is no check: a hung peer may
//!   be Primary), and only from the position the decision names (a node that ran since,
//!   because this agent bootstrapped it and then restarted, may hold or lack commits the
//!   decision did not weigh: the agent reports the outage as carried out and the leader
//!   decides the next one afresh); every other node clears the flag and starts
//!   from its position once the bootstrap node is Primary. The leader ends the outage as
//!   soon as the bootstrapped node reports itself Primary; if instead it stops again before
//!   that, with nothing Primary anywhere, the leader supersedes the outage with the next one
//!   (decided afresh); the planner reports the outage it bootstrapped (its view, and the
//!   probe's `bootstrapped` note) for that.
//! - **Maintenance** (committed): nothing at all.
//!
//! Fencing: a bootstrap is carried out at most once per outage number by an agent (its memory:
//! an agent restarted during its own bootstrap may carry it out again, which is harmless
//! since no Primary exists then, or it joins the one that does), and only for the committed
//! decision (its outage number and log index); the planner never bootstraps on its own. Every
//! action is idempotent (a start of a running service does nothing).
//!
//! Caveats:
//! - "Gone" is service control's word (the process is not running); a hung mariadbd
//!   (running, not answering) is never restarted by this module, it is `Unknown`.
//! - A rejoin trusts this agent's own checks of its peers (fresh, answered, Primary, made
//!   after this node was seen stopped): a node cut off from its peers does not restart its
//!   mariadbd, and checks from before all three died together do not count.
//! - A minority Primary made by hand that is at or past this node but behind a third,
//!   stopped node is joined, and the third node then rejoins the majority and loses its
//!   newer commits, as it would by hand: only the leader sees every node's position, and
//!   it does not decide rejoins.
//! - A backup hold does not exist yet (the backup issue adds it); maintenance is the only
//!   hold today.
//! - With `unit_recovers` (systemd: Debian's unit runs `galera_recovery` itself) a rejoin
//!   skips `--wsrep-recover`; an outage still runs it for the evidence.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::cluster::{BootstrapMode, GaleraAuthority, OutageId};
use crate::decide::galera::{
    evidence_of, GaleraEvidence, GaleraPosition, GrastateEvidence, ProcessState,
};
use crate::health::Seen;
use crate::ids::{LogIndex, NodeId};
use crate::observation::Service;

/// What the Galera controller publishes for the local recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GaleraTarget {
    /// The committed Galera authority (the newest outage and its bootstrap).
    pub authority: GaleraAuthority,
    /// Whether maintenance is on (nothing is restarted).
    pub maintenance: bool,
    /// Nodes whose eviction from the component is committed and in force (the writer
    /// authority's): a node of them rejoins only once it is cleared.
    pub evicted: BTreeSet<NodeId>,
}

/// The recovery's tunables (`[galera]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoverySettings {
    /// Restart a fallen mariadbd (`rejoin`).
    pub rejoin: bool,
    /// First wait between restarts, in ms (doubles, up to 16 times).
    pub backoff_ms: u64,
    /// Restarts allowed in any hour.
    pub max_per_hour: u32,
    /// Restart a node still non-Primary this long after its peers were seen Primary.
    pub restart_non_primary_after_ms: u64,
    /// The service manager recovers the position itself on a start (Debian's unit).
    pub unit_recovers: bool,
}

/// What this agent sees of its own node and its peers this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFacts {
    /// Monotonic ms.
    pub now_ms: u64,
    /// Whether mariadbd runs, as service control says (unknown when it could not tell, or
    /// when it runs but does not answer its checks at all).
    pub process: ProcessState,
    /// This agent's fresh check of its own node: in a Primary component.
    pub primary: bool,
    /// ...and Synced.
    pub synced: bool,
    /// The node's `grastate.dat`.
    pub grastate: GrastateEvidence,
    /// Peers this agent's own fresh checks see in a Primary component, with its size.
    pub peers_primary: BTreeMap<NodeId, u64>,
    /// The age of each of those checks, in ms (a check older than this node's stop says
    /// nothing about the cluster after it: all three may have died together).
    pub peers_primary_age_ms: BTreeMap<NodeId, u64>,
    /// The age of this agent's newest fresh check of each peer's MariaDB that had a definite
    /// answer (answered, or refused; a timed-out check says nothing: a hung peer may be
    /// Primary), in ms.
    pub peers_checked_age_ms: BTreeMap<NodeId, u64>,
    /// Each running peer's position as this agent's fresh check saw it: its state UUID and
    /// `wsrep_last_committed`.
    pub peers_position: BTreeMap<NodeId, GaleraPosition>,
    /// This node's own position as its fresh check saw it running (state UUID and
    /// `wsrep_last_committed`), if it answered.
    pub own_position: Option<GaleraPosition>,
}

/// What this agent's own fresh MariaDB checks say, of its own node and of its peers (the
/// parts of [`LocalFacts`] that come from its health store).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerChecks {
    /// Its own node's evidence.
    pub own: Option<GaleraEvidence>,
    /// Peers seen in a Primary component, with its size.
    pub primary: BTreeMap<NodeId, u64>,
    /// The age of those checks (ms).
    pub primary_age_ms: BTreeMap<NodeId, u64>,
    /// The age of the newest check of each peer with a definite answer (ms).
    pub checked_age_ms: BTreeMap<NodeId, u64>,
    /// Running peers' state UUID and `wsrep_last_committed`.
    pub position: BTreeMap<NodeId, GaleraPosition>,
}

impl PeerChecks {
    /// This cycle's facts: service control's `process`, made `Unknown` when it runs but its
    /// own check timed out (hung, not gone); Primary and Synced from the own check.
    pub fn into_facts(
        self,
        now_ms: u64,
        process: ProcessState,
        grastate: GrastateEvidence,
    ) -> LocalFacts {
        let own = self.own.as_ref();
        let primary = own.is_some_and(|e| e.primary);
        let synced = primary && own.is_some_and(|e| e.local_state.as_deref() == Some("Synced"));
        let hung = own.is_some_and(|e| e.process == ProcessState::Unknown);
        let own_position =
            own.filter(|e| e.process == ProcessState::Running)
                .map(|e| GaleraPosition {
                    uuid: e.wsrep_uuid.clone(),
                    seqno: e.last_committed,
                });
        LocalFacts {
            own_position,
            now_ms,
            process: if process == ProcessState::Running && hung {
                ProcessState::Unknown
            } else {
                process
            },
            primary,
            synced,
            grastate,
            peers_primary: self.primary,
            peers_primary_age_ms: self.primary_age_ms,
            peers_checked_age_ms: self.checked_age_ms,
            peers_position: self.position,
        }
    }

    /// Reads this agent's (`me`) own checks of the `members`' MariaDB from what its health
    /// store holds, those no older than `freshness_ms`.
    pub fn from_seen<'a>(
        seen: impl IntoIterator<Item = &'a Seen>,
        me: NodeId,
        members: &[NodeId],
        freshness_ms: u64,
    ) -> PeerChecks {
        let mut out = PeerChecks::default();
        for seen in seen {
            let id = &seen.observation.id;
            let m = id.subject;
            if seen.observer != me
                || id.service != Service::Mariadb
                || !id.target.is_empty()
                || seen.age_ms > freshness_ms
                || !members.contains(&m)
            {
                continue;
            }
            let e = evidence_of(&seen.observation);
            if m == me {
                out.own = Some(e);
                continue;
            }
            if e.process != ProcessState::Unknown {
                out.checked_age_ms.insert(m, seen.age_ms);
            }
            if let (ProcessState::Running, Some(u), Some(s)) =
                (e.process, &e.wsrep_uuid, e.last_committed)
            {
                out.position.insert(
                    m,
                    GaleraPosition {
                        uuid: Some(u.clone()),
                        seqno: Some(s),
                    },
                );
            }
            if e.primary {
                if let Some(size) = e.cluster_size {
                    out.primary.insert(m, size);
                    out.primary_age_ms.insert(m, seen.age_ms);
                }
            }
        }
        out
    }
}

/// How a start is asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartKind {
    /// Join the running cluster (rejoin, or after a bootstrap elsewhere); `safe_to_bootstrap`
    /// is cleared first.
    Join,
    /// Start as a new cluster (the committed bootstrap); `safe_to_bootstrap` is set first.
    NewCluster,
}

/// One cycle's step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// Nothing to do; why (shown in the status).
    Idle {
        /// Why.
        why: String,
    },
    /// Run `--wsrep-recover` on the stopped node and report back its position.
    Recover {
        /// Why.
        why: String,
    },
    /// Start mariadbd.
    Start {
        /// How.
        kind: StartKind,
        /// `uuid:seqno` to start from, when known.
        position: Option<String>,
        /// The outage this start belongs to (none for a plain rejoin).
        outage: Option<OutageId>,
        /// The committed bootstrap decision's log index, for a bootstrap.
        decision: Option<LogIndex>,
        /// Why.
        why: String,
    },
    /// `SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'` on the running node.
    PcBootstrap {
        /// The outage.
        outage: OutageId,
        /// The committed decision's log index.
        decision: LogIndex,
        /// Why.
        why: String,
    },
    /// Stop mariadbd (a node stuck non-Primary), to rejoin it from its position.
    Stop {
        /// Why.
        why: String,
    },
}

impl Step {
    fn idle(why: impl Into<String>) -> Step {
        Step::Idle { why: why.into() }
    }

    /// Whether the step changes anything.
    pub fn is_action(&self) -> bool {
        !matches!(self, Step::Idle { .. })
    }

    /// The step's reason.
    pub fn why(&self) -> &str {
        match self {
            Step::Idle { why }
            | Step::Recover { why }
            | Step::Start { why, .. }
            | Step::PcBootstrap { why, .. }
            | Step::Stop { why } => why,
        }
    }
}

/// The local recovery's view, for the status API and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryView {
    /// The last step's reason (what this node does or waits for).
    pub doing: String,
    /// The position `--wsrep-recover` found since mariadbd last ran.
    pub recovered: Option<GaleraPosition>,
    /// Restarts in the last hour.
    pub restarts_last_hour: u32,
    /// Restarts since mariadbd was last Synced.
    pub consecutive_restarts: u32,
    /// Whether the hourly cap holds restarts back.
    pub capped: bool,
    /// The outage this node last bootstrapped.
    pub bootstrapped: Option<OutageId>,
    /// Every restart this agent made (cumulative).
    pub restarts_total: u64,
}

const HOUR_MS: u64 = 3_600_000;

/// The clock-free planner of the local recovery. See the module docs.
#[derive(Clone, Debug)]
pub struct GaleraRecovery {
    me: NodeId,
    /// Members of the cluster, this node included.
    members: usize,
    settings: RecoverySettings,
    recovered: Option<GaleraPosition>,
    /// Monotonic ms of every restart in the last hour.
    restarts: VecDeque<u64>,
    consecutive: u32,
    restarts_total: u64,
    non_primary_since: Option<u64>,
    /// Since when (monotonic ms) mariadbd has been seen stopped.
    stopped_since: Option<u64>,
    /// (outage, decision index) this node carried its bootstrap out for.
    bootstrapped: Option<(OutageId, LogIndex)>,
    /// The last failed `--wsrep-recover` (monotonic ms, error): retried after a pause.
    recover_failed: Option<(u64, String)>,
    last: Step,
}

/// The longest a rejoin waits for the Primary component to drop this node's old process
/// (several times Galera's default `evs.suspect_timeout`, 5 s): past it, it starts anyway.
pub const EVICT_WAIT_MS: u64 = 30_000;

/// Pause after a failed `--wsrep-recover` before it runs again.
pub const RECOVER_RETRY_MS: u64 = 10_000;

impl GaleraRecovery {
    /// A planner for node `me` of a cluster of `members` nodes.
    pub fn new(me: NodeId, members: usize, settings: RecoverySettings) -> Self {
        GaleraRecovery {
            me,
            members,
            settings,
            recovered: None,
            restarts: VecDeque::new(),
            consecutive: 0,
            restarts_total: 0,
            non_primary_since: None,
            stopped_since: None,
            bootstrapped: None,
            recover_failed: None,
            last: Step::idle("starting"),
        }
    }

    /// The position `--wsrep-recover` found (kept until mariadbd runs again).
    pub fn recovered(&mut self, position: GaleraPosition) {
        self.recovered = Some(position);
        self.recover_failed = None;
    }

    /// `--wsrep-recover` failed: it runs again after [`RECOVER_RETRY_MS`].
    pub fn recover_failed(&mut self, error: String, now_ms: u64) {
        self.recover_failed = Some((now_ms, error));
    }

    /// The recovered position, as the agent reports it while its mariadbd is stopped.
    pub fn recovered_position(&self) -> Option<&GaleraPosition> {
        self.recovered.as_ref()
    }

    /// Records a start or stop that `step` asked for (whether it succeeded or not: a failed
    /// start counts against the back-off and the cap as well).
    pub fn started(&mut self, step: &Step, now_ms: u64) {
        match step {
            Step::Start {
                kind,
                outage,
                decision,
                ..
            } => {
                self.restarts.push_back(now_ms);
                self.consecutive = self.consecutive.saturating_add(1);
                self.restarts_total = self.restarts_total.saturating_add(1);
                if let (StartKind::NewCluster, Some(o), Some(d)) = (kind, outage, decision) {
                    self.bootstrapped = Some((*o, *d));
                }
                // The next start needs a position found after this one ended.
                self.recovered = None;
            }
            Step::PcBootstrap {
                outage, decision, ..
            } => {
                self.bootstrapped = Some((*outage, *decision));
            }
            Step::Stop { .. } => {
                self.non_primary_since = None;
            }
            _ => {}
        }
    }

    /// What the status shows.
    pub fn view(&self, now_ms: u64) -> RecoveryView {
        let last_hour = self.last_hour(now_ms);
        RecoveryView {
            doing: self.last.why().to_string(),
            recovered: self.recovered.clone(),
            restarts_last_hour: last_hour,
            consecutive_restarts: self.consecutive,
            capped: last_hour >= self.settings.max_per_hour,
            bootstrapped: self.bootstrapped.map(|(o, _)| o),
            restarts_total: self.restarts_total,
        }
    }

    fn last_hour(&self, now_ms: u64) -> u32 {
        let n = self
            .restarts
            .iter()
            .filter(|&&t| now_ms.saturating_sub(t) < HOUR_MS)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Whether a restart may run now; otherwise why not.
    fn may_restart(&mut self, now_ms: u64) -> Result<(), String> {
        while self
            .restarts
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= HOUR_MS)
        {
            self.restarts.pop_front();
        }
        let n = self.last_hour(now_ms);
        if n >= self.settings.max_per_hour {
            return Err(format!(
                "restart cap reached ({n} restarts in the last hour, galera.restarts_per_hour = \
                 {}): mariadbd stays down until an operator looks (its log says why it stopped)",
                self.settings.max_per_hour
            ));
        }
        if self.consecutive == 0 {
            return Ok(());
        }
        let factor = 1u64 << self.consecutive.saturating_sub(1).min(4);
        let wait = self.settings.backoff_ms.saturating_mul(factor);
        let last = self.restarts.back().copied().unwrap_or(0);
        let since = now_ms.saturating_sub(last);
        if since < wait {
            return Err(format!(
                "backing off: restart {} in {:.1}s",
                self.consecutive + 1,
                (wait - since) as f64 / 1000.0
            ));
        }
        Ok(())
    }

    /// The position to start from, or that `--wsrep-recover` must run first (`Err`).
    fn position(&self, f: &LocalFacts) -> Result<Option<(String, i64)>, ()> {
        match &f.grastate {
            GrastateEvidence::Present {
                uuid: Some(u),
                seqno: Some(s),
                ..
            } => Ok(Some((u.clone(), *s))),
            GrastateEvidence::Present { uuid: Some(_), .. } => match &self.recovered {
                Some(GaleraPosition {
                    uuid: Some(u),
                    seqno: Some(s),
                }) => Ok(Some((u.clone(), *s))),
                Some(_) => Ok(None),
                None => Err(()),
            },
            // No history (the nil UUID: an interrupted state transfer), no file, or an
            // unreadable one: nothing to start from; the node joins by a full state transfer.
            _ => Ok(None),
        }
    }

    /// Plans this cycle. See the module docs.
    pub fn next(&mut self, target: Option<&GaleraTarget>, f: &LocalFacts) -> Step {
        let step = self.plan(target, f);
        self.last = step.clone();
        step
    }

    fn plan(&mut self, target: Option<&GaleraTarget>, f: &LocalFacts) -> Step {
        if f.process == ProcessState::Running {
            // A position recovered before this start is stale once it runs.
            self.recovered = None;
            if f.primary && f.synced {
                self.consecutive = 0;
            }
        }
        if f.process != ProcessState::Running || f.primary {
            self.non_primary_since = None;
        }
        if f.process == ProcessState::Stopped {
            self.stopped_since.get_or_insert(f.now_ms);
        } else {
            self.stopped_since = None;
        }
        let Some(t) = target else {
            return Step::idle("no committed state yet");
        };
        if f.process == ProcessState::Unknown {
            return Step::idle("mariadbd's state is unknown (service control or its checks do not answer): nothing is done");
        }
        if t.maintenance {
            return Step::idle("maintenance: mariadbd is left as it is");
        }
        if let Some(outage) = t.authority.open() {
            return self.in_outage(outage.number, outage.bootstrap.as_ref(), f);
        }
        // A Primary of fewer than a majority is rejoined only when it is the node the newest
        // (ended) outage committed to bootstrap.
        let bootstrapped = t
            .authority
            .outage
            .as_ref()
            .and_then(|o| o.bootstrap.as_ref())
            .map(|b| b.node);
        self.no_outage(f, bootstrapped, t.evicted.contains(&self.me))
    }

    fn recover_or(&self, f: &LocalFacts, why: &str) -> Result<Option<String>, Step> {
        self.recover_or_at(f, why)
            .map(|p| p.map(|(u, s)| format!("{u}:{s}")))
    }

    /// The position to start from (`UUID`, seqno), or the step that finds it first.
    fn recover_or_at(&self, f: &LocalFacts, why: &str) -> Result<Option<(String, i64)>, Step> {
        self.position(f).map_err(|()| match &self.recover_failed {
            Some((at, e)) if f.now_ms.saturating_sub(*at) < RECOVER_RETRY_MS => {
                Step::idle(format!(
                    "{why}: --wsrep-recover failed, retrying in {:.0}s: {e}",
                    (RECOVER_RETRY_MS - f.now_ms.saturating_sub(*at)) as f64 / 1000.0
                ))
            }
            _ => Step::Recover {
                why: format!(
                    "{why}: grastate has seqno -1, finding the position with --wsrep-recover"
                ),
            },
        })
    }

    fn in_outage(
        &mut self,
        n: OutageId,
        bootstrap: Option<&crate::cluster::GaleraBootstrap>,
        f: &LocalFacts,
    ) -> Step {
        let stopped = f.process == ProcessState::Stopped;
        let Some(b) = bootstrap else {
            if stopped {
                if let Err(step) = self.recover_or(f, &format!("outage {n} open")) {
                    return step;
                }
            }
            return Step::idle(format!(
                "outage {n} open: waiting for the leader's bootstrap decision"
            ));
        };
        let done = self.bootstrapped == Some((n, b.index));
        if b.node == self.me {
            if f.process == ProcessState::Running {
                if f.primary {
                    return Step::idle(format!(
                        "outage {n}: bootstrapped here, Primary; waiting for the peers to join"
                    ));
                }
                if done {
                    return Step::idle(format!("outage {n}: bootstrap of this node under way"));
                }
                if b.mode == BootstrapMode::PcBootstrap {
                    return Step::PcBootstrap {
                        outage: n,
                        decision: b.index,
                        why: format!(
                            "outage {n}: committed bootstrap of this node (pc.bootstrap, index {})",
                            b.index
                        ),
                    };
                }
                // It committed past the decision's position: it can only have done so in a
                // Primary component, the one this bootstrap formed (this agent carried it out,
                // then restarted and forgot), which it has lost since. It fell as surely as a
                // stopped one: say so (the probe's `bootstrapped` note), and the leader opens
                // the next outage.
                let past = match (b.seqno, &f.own_position) {
                    (Some(decided), Some(p)) => {
                        p.uuid.as_deref() == b.uuid.as_deref()
                            && p.seqno.is_some_and(|s| s > decided)
                    }
                    _ => false,
                };
                if past {
                    self.bootstrapped = Some((n, b.index));
                    return Step::idle(format!(
                        "outage {n}: this node committed past the decision's seqno {}, so it \
                         was bootstrapped (before this agent restarted), and runs non-Primary \
                         now: the leader opens the next outage",
                        b.seqno.unwrap_or(-1)
                    ));
                }
                return Step::idle(format!(
                    "outage {n}: committed to start this node as a new cluster, but mariadbd \
                     runs non-Primary: stop it (it will then be bootstrapped) or bring a \
                     Primary back by hand"
                ));
            }
            // Stopped. A peer already Primary (this node bootstrapped, they joined, then it
            // fell): join them, never a second Primary. Already carried out: never again.
            if !self.fresh_primaries(f, 1).is_empty() {
                let position = match self.recover_or(f, &format!("outage {n}")) {
                    Ok(p) => p,
                    Err(step) => return step,
                };
                if let Err(why) = self.may_restart(f.now_ms) {
                    return Step::idle(format!("outage {n}: join held: {why}"));
                }
                return Step::Start {
                    kind: StartKind::Join,
                    position,
                    outage: Some(n),
                    decision: None,
                    why: format!(
                        "outage {n}: this node's bootstrap stopped but a peer is Primary: joining it"
                    ),
                };
            }
            if done {
                return Step::idle(format!(
                    "outage {n}: no second bootstrap of this node for this outage (it was \
                     carried out and the node stopped since, or the node's position moved \
                     since the decision): the leader opens the next outage if it stays down"
                ));
            }
            // Every peer checked since this node was seen stopped, none Primary (an agent
            // that just started knows nothing of its peers yet).
            let checked = self.checked_since_stop(f);
            if checked < self.members.saturating_sub(1) {
                return Step::idle(format!(
                    "outage {n}: bootstrap of this node waits for a check of every peer made \
                     since it stopped ({checked} of {})",
                    self.members.saturating_sub(1)
                ));
            }
            // (A pc.bootstrap decision whose node stopped since starts it the same way: same
            // data, same position.)
            let at = match self.recover_or_at(f, &format!("outage {n}: bootstrap of this node")) {
                Ok(p) => p,
                Err(step) => return step,
            };
            // Only from the position the decision was made on: a node that has run since
            // (this agent bootstrapped it, then restarted and forgot) may have taken commits
            // its peers now hold too, or lost some; the leader decides afresh instead.
            if let Some(decided) = b.seqno {
                let same = at
                    .as_ref()
                    .is_some_and(|(u, s)| *s == decided && b.uuid.as_deref() == Some(u.as_str()));
                if !same {
                    self.bootstrapped = Some((n, b.index));
                    return Step::idle(format!(
                        "outage {n}: committed to bootstrap this node from {}:{decided}, but it \
                         is at {} now (it ran since the decision): no bootstrap from another \
                         position; the leader opens the next outage and decides afresh",
                        b.uuid.as_deref().unwrap_or("nil"),
                        at.as_ref()
                            .map_or_else(|| "no position".to_string(), |(u, s)| format!("{u}:{s}"))
                    ));
                }
            }
            let position = at.map(|(u, s)| format!("{u}:{s}"));
            if let Err(why) = self.may_restart(f.now_ms) {
                return Step::idle(format!("outage {n}: bootstrap of this node held: {why}"));
            }
            return Step::Start {
                kind: StartKind::NewCluster,
                position,
                outage: Some(n),
                decision: Some(b.index),
                why: format!(
                    "outage {n}: committed bootstrap of this node (index {}), starting a new cluster",
                    b.index
                ),
            };
        }
        if !stopped {
            return Step::idle(format!(
                "outage {n}: {} bootstraps; Galera joins this running node to it",
                b.node
            ));
        }
        let position = match self.recover_or(f, &format!("outage {n}")) {
            Ok(p) => p,
            Err(step) => return step,
        };
        if !self.fresh_primaries(f, 1).contains(&b.node) {
            return Step::idle(format!(
                "outage {n}: waiting for {} (the committed bootstrap) to be Primary before joining",
                b.node
            ));
        }
        if let Err(why) = self.may_restart(f.now_ms) {
            return Step::idle(format!("outage {n}: join held: {why}"));
        }
        Step::Start {
            kind: StartKind::Join,
            position,
            outage: Some(n),
            decision: None,
            why: format!("outage {n}: {} is Primary, joining it", b.node),
        }
    }

    /// Peers seen Primary (of at least `min_size`) by a check made after this node was
    /// seen stopped (any fresh check while it runs).
    fn fresh_primaries(&self, f: &LocalFacts, min_size: u64) -> BTreeSet<NodeId> {
        let stopped_for = self.stopped_since.map(|s| f.now_ms.saturating_sub(s));
        f.peers_primary
            .iter()
            .filter(|(_, &size)| size >= min_size)
            .filter(|(n, _)| match stopped_for {
                None => true,
                Some(t) => f.peers_primary_age_ms.get(n).is_some_and(|&age| age <= t),
            })
            .map(|(&n, _)| n)
            .collect()
    }

    /// Peers this agent checked (any answer) since this node was seen stopped.
    fn checked_since_stop(&self, f: &LocalFacts) -> usize {
        let stopped_for = self.stopped_since.map(|s| f.now_ms.saturating_sub(s));
        f.peers_checked_age_ms
            .iter()
            .filter(|(n, _)| **n != self.me)
            .filter(|(_, &age)| stopped_for.is_none_or(|t| age <= t))
            .count()
    }

    /// A rejoin of a Primary of fewer than a majority (`minority`, not a committed bootstrap):
    /// the last node of a cluster whose others stopped cleanly one by one stays Primary on
    /// its own. It is joined only when this node knows its own position (`at`) and every such
    /// Primary is of the same history (state UUID) and has committed at least as far, so the
    /// join loses nothing of this node's; otherwise `None` (an operator decides).
    fn join_minority(
        &mut self,
        f: &LocalFacts,
        minority: &BTreeSet<NodeId>,
        at: Option<(String, i64)>,
    ) -> Option<Step> {
        let (uuid, seqno) = at?;
        if minority.is_empty() || !self.settings.rejoin {
            return None;
        }
        let ahead = minority.iter().all(|n| {
            f.peers_position.get(n).is_some_and(|p| {
                p.uuid.as_deref() == Some(uuid.as_str()) && p.seqno.is_some_and(|s| s >= seqno)
            })
        });
        if !ahead {
            return None;
        }
        let peers = minority
            .iter()
            .map(NodeId::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if let Err(why) = self.may_restart(f.now_ms) {
            return Some(Step::idle(format!(
                "stopped while {peers} is Primary (of fewer than a majority, at or past this \
                 node's position); {why}"
            )));
        }
        Some(Step::Start {
            kind: StartKind::Join,
            position: Some(format!("{uuid}:{seqno}")),
            outage: None,
            decision: None,
            why: format!(
                "stopped while {peers} is Primary of fewer than a majority, of this node's \
                 history and at or past its position {seqno}: rejoining"
            ),
        })
    }

    fn no_outage(&mut self, f: &LocalFacts, bootstrapped: Option<NodeId>, evicted: bool) -> Step {
        let quorum = u64::try_from(self.members / 2 + 1).unwrap_or(u64::MAX);
        let mut primaries = self.fresh_primaries(f, quorum);
        if let Some(b) = bootstrapped.filter(|b| self.fresh_primaries(f, 1).contains(b)) {
            primaries.insert(b);
        }
        let peers = primaries
            .iter()
            .map(NodeId::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match f.process {
            ProcessState::Running if f.primary => Step::idle(if f.synced {
                "Primary and Synced"
            } else {
                "Primary, not Synced yet (state transfer or catching up)"
            }),
            ProcessState::Running => {
                if primaries.is_empty() {
                    return Step::idle(
                        "non-Primary, and no Primary component seen elsewhere: the leader decides",
                    );
                }
                let since = *self.non_primary_since.get_or_insert(f.now_ms);
                let waited = f.now_ms.saturating_sub(since);
                let limit = self.settings.restart_non_primary_after_ms;
                if waited < limit {
                    return Step::idle(format!(
                        "non-Primary while {peers} are Primary: Galera should rejoin it; \
                         restart in {:.0}s if it does not",
                        (limit - waited) as f64 / 1000.0
                    ));
                }
                if !self.settings.rejoin {
                    return Step::idle(
                        "non-Primary while peers are Primary; galera.rejoin = false",
                    );
                }
                if let Err(why) = self.may_restart(f.now_ms) {
                    return Step::idle(format!(
                        "non-Primary while {peers} are Primary; restart held: {why}"
                    ));
                }
                Step::Stop {
                    why: format!(
                        "non-Primary for {:.0}s while {peers} are Primary: stopping it to rejoin",
                        waited as f64 / 1000.0
                    ),
                }
            }
            ProcessState::Stopped => {
                if primaries.is_empty() {
                    // Perhaps a full outage: the leader will want this node's position, so
                    // find it now rather than after the outage opens.
                    let at = match self
                        .recover_or_at(f, "stopped, no Primary component seen elsewhere")
                    {
                        Ok(at) => at,
                        Err(step) => return step,
                    };
                    let minority = self.fresh_primaries(f, 1);
                    if let Some(step) = self.join_minority(f, &minority, at) {
                        return step;
                    }
                    if !minority.is_empty() {
                        return Step::idle(format!(
                            "stopped; {} Primary without a majority, and not the committed \
                             bootstrap of an outage (made by hand?): not joined automatically, \
                             it may be behind this node; an operator decides",
                            minority
                                .iter()
                                .map(NodeId::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    return Step::idle(
                        "stopped, and no Primary component seen elsewhere: not restarted (a \
                         full outage is the leader's decision)",
                    );
                }
                if !self.settings.rejoin {
                    return Step::idle(format!(
                        "stopped while {peers} are Primary; galera.rejoin = false"
                    ));
                }
                let position = if self.settings.unit_recovers {
                    None
                } else {
                    match self.recover_or(f, "rejoin") {
                        Ok(p) => p,
                        Err(step) => return step,
                    }
                };
                // A crashed node's old process is still a member until the survivors'
                // suspect timeout drops it (`evs.suspect_timeout`, 5 s by default); a new
                // process started before that takes the same place under a new identity and
                // the group reconfigures for many seconds, every commit stalled. So the
                // rejoin waits until a Primary peer's component no longer counts this node
                // (its size is below the members'), up to `EVICT_WAIT_MS`.
                let members = u64::try_from(self.members).unwrap_or(u64::MAX);
                let stopped_for = self.stopped_since.map_or(0, |s| f.now_ms.saturating_sub(s));
                let dropped = primaries
                    .iter()
                    .any(|p| f.peers_primary.get(p).is_some_and(|&size| size < members));
                if !dropped && stopped_for < EVICT_WAIT_MS {
                    return Step::idle(format!(
                        "stopped while {peers} are Primary: rejoining once their component has \
                         dropped this node's old process (it still counts {members} nodes; \
                         at most {:.0}s more)",
                        (EVICT_WAIT_MS - stopped_for) as f64 / 1000.0
                    ));
                }
                // Measured on the lab: a process started while the survivors' evict list
                // still holds this node's old gcomm UUID hangs in the join for a suspect
                // timeout (~6 s, every commit stalled); the leader clears the eviction as soon
                // as the survivors' component has dropped the old process.
                if evicted && stopped_for < EVICT_WAIT_MS {
                    return Step::idle(format!(
                        "stopped while {peers} are Primary: rejoining once the eviction of this \
                         node's old process is cleared (at most {:.0}s more)",
                        (EVICT_WAIT_MS - stopped_for) as f64 / 1000.0
                    ));
                }
                if let Err(why) = self.may_restart(f.now_ms) {
                    return Step::idle(format!("stopped while {peers} are Primary; {why}"));
                }
                Step::Start {
                    kind: StartKind::Join,
                    position,
                    outage: None,
                    decision: None,
                    why: format!("stopped while {peers} are Primary: rejoining"),
                }
            }
            ProcessState::Unknown => Step::idle("mariadbd's state is unknown"),
        }
    }
}

#[cfg(test)]
mod tests;
