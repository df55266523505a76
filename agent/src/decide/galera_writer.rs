//! The Galera writer decision: which node every HAProxy routes MySQL writes to, and which
//! dead node the survivors evict at once.
//!
//! Pure: from each node's writer evidence ([`WriterEvidence`], built from the health reports
//! by [`writer_evidence_from_reports`]) and the committed [`GaleraWriterAuthority`] to a
//! [`WriterPlan`]: a ranking with its reasons (shown in the status) and the commands to
//! propose.
//!
//! Rules:
//! - **Eligible** is a member, not evicted, whose *own* agent's fresh check says Synced, in a
//!   Primary component and ready. Donor/Desynced, Joining, Joined, non-Primary, a silent agent
//!   (no fresh report) or a hung check are not eligible. The ranking puts eligible nodes
//!   first, the committed writer first among them (sticky), then the highest
//!   `wsrep_last_committed`, then the lowest id.
//! - **Initial**: with no writer recorded, the top eligible node.
//! - **Change**: the writer is no longer eligible, an eligible node exists, no Galera outage
//!   is open and maintenance is off: the top eligible node, automatically. Otherwise the
//!   writer stays (and no HAProxy routes to it while its own agent says it is not Synced).
//! - **Evict**: a node whose mariadbd is definitely gone (its own agent's fresh report says
//!   the process is stopped or its socket refuses, whatever service control last said; or,
//!   while its agent is silent, a majority of the members' fresh checks were refused), newer
//!   than every check that found it answering ([`WriterMemory`]: so only a dead process's
//!   UUID is named, never a restarted one's), whose gcomm UUID was reported while it was
//!   healthy, that is not the writer (after a change in the same cycle: not the new one), while
//!   another node is Primary: the survivors then continue at once instead of waiting out
//!   Galera's suspect timeout. Never on one agent's word about another node, never in
//!   maintenance or during an outage, and the apply rule keeps it to a minority.
//! - **Clear**: as soon as the eviction has done its work (every Primary survivor counts
//!   fewer members: its component dropped the node), or the node's own agent's fresh check
//!   answers again. Measured on the lab: a node restarted while the survivors' evict list
//!   still holds its old UUID hangs in the join for a suspect timeout, every commit stalled;
//!   so the node's own recovery rejoins only once its eviction is cleared. A node the
//!   survivors' component no longer counts is not evicted (nothing to gain).
//!
//! Caveats:
//! - A new leader knows a node's gcomm UUID only from reports of it while it answers (its own
//!   agent's or a peer's check); a node that died before the new leader heard of it is left to
//!   Galera's suspect timeout.
//! - A hung (SIGSTOPped) or cut-off node is never evicted here: the evidence is weaker, and
//!   Galera's own suspect timeout handles it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cluster::{ChangeKind, Command, GaleraWriterAuthority};
use crate::decide::galera::{evidence_of, ProcessState};
use crate::health::Seen;
use crate::ids::NodeId;
use crate::observation::{FailureKind, Service, Status};

/// `wsrep_local_state` 4: Synced (as `probe::galera_status` names it; the core does not
/// import the probes).
const STATE_SYNCED: i64 = 4;

/// Tunables of the writer decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterSettings {
    /// A report older than this is not evidence.
    pub freshness_ms: u64,
    /// Whether a dead node is evicted at once (`[galera] evict_dead`).
    pub evict: bool,
}

/// One node's writer evidence, from its own agent's fresh check and the peers' checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterEvidence {
    /// Whether its own agent's fresh check answered.
    pub answered: bool,
    /// Whether that check found it Synced, Primary and ready.
    pub serving: bool,
    /// Whether its mariadbd is definitely gone by its own agent's word (process stopped, or
    /// socket refused and service control does not say it runs).
    pub gone: bool,
    /// Whether that check found it in a Primary component.
    pub primary: bool,
    /// Its state for the reasons (`Synced`, `Donor/Desynced`, `stopped`, `hung`...).
    pub state: String,
    /// `wsrep_last_committed`, when it answered.
    pub last_committed: Option<i64>,
    /// Peers whose fresh check of it was refused.
    pub refused_by: BTreeSet<NodeId>,
    /// Whether its own agent reported at all (fresh).
    pub reported: bool,
    /// `auto_increment_offset`, when it answered.
    #[serde(default)]
    pub auto_increment_offset: Option<i64>,
    /// `wsrep_cluster_size`, when it answered.
    #[serde(default)]
    pub cluster_size: Option<u64>,
}

/// Every input of the writer decision.
#[derive(Clone, Debug)]
pub struct WriterInputs<'a> {
    /// Cluster members, sorted.
    pub members: &'a [NodeId],
    /// The committed authority.
    pub authority: &'a GaleraWriterAuthority,
    /// Each member's evidence (absent: nothing fresh about it at all).
    pub evidence: &'a BTreeMap<NodeId, WriterEvidence>,
    /// The newest gcomm UUID seen for each node while it answered.
    pub gcomm: &'a BTreeMap<NodeId, String>,
    /// Whether a Galera full outage is open.
    pub outage_open: bool,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// Whether a writer-authority proposal is still in flight.
    pub in_flight: bool,
    /// Tunables.
    pub settings: WriterSettings,
}

/// One line of the ranking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterRank {
    /// The node.
    pub node: NodeId,
    /// Whether it may be the writer.
    pub eligible: bool,
    /// Why (state, position, or what rules it out).
    pub reason: String,
}

/// The writer decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterPlan {
    /// One line for operators.
    pub verdict: String,
    /// Best first.
    pub ranking: Vec<WriterRank>,
    /// Commands to propose, in order.
    pub proposals: Vec<Command>,
}

/// The ranking: eligible first, the committed writer first among them, then the highest
/// last committed seqno, then the lowest id.
///
/// A node that shares its `auto_increment_offset` with another stays eligible (one writer at a
/// time takes ids from the replicated counters) but its reason says it is degraded: after a
/// change of writer, or with a second writer, the two take the same ids.
pub fn rank(i: &WriterInputs<'_>) -> Vec<WriterRank> {
    let offsets: BTreeMap<NodeId, i64> = i
        .evidence
        .iter()
        .filter_map(|(&n, e)| Some((n, e.auto_increment_offset?)))
        .collect();
    let shared = crate::decide::auto_increment::shared_offsets(&offsets);
    let mut rows: Vec<(bool, bool, i64, NodeId, String)> = i
        .members
        .iter()
        .map(|&n| {
            let e = i.evidence.get(&n);
            let evicted = i.authority.evicted.get(&n);
            let (eligible, reason) = match (e, evicted) {
                (_, Some(ev)) => (
                    false,
                    format!("evicted ({}) at index {}", ev.gcomm_uuid, ev.index),
                ),
                (Some(e), None) if e.serving => (
                    true,
                    format!(
                        "Synced, Primary, last committed {}",
                        e.last_committed
                            .map_or_else(|| "unknown".into(), |c| c.to_string())
                    ),
                ),
                (Some(e), None) if e.reported => (false, e.state.clone()),
                _ => (false, "no fresh report from its agent".into()),
            };
            let committed = e.and_then(|e| e.last_committed).unwrap_or(-1);
            let reason = match shared.get(&n) {
                Some(why) => format!("{reason}; degraded: {why}"),
                None => reason,
            };
            (
                eligible,
                i.authority.writer == Some(n),
                committed,
                n,
                reason,
            )
        })
        .collect();
    rows.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
            .then(a.3.cmp(&b.3))
    });
    rows.into_iter()
        .map(|(eligible, writer, _, node, reason)| WriterRank {
            node,
            eligible,
            reason: if writer {
                format!("writer: {reason}")
            } else {
                reason
            },
        })
        .collect()
}

/// Decides. See the module docs.
pub fn decide(i: &WriterInputs<'_>) -> WriterPlan {
    let ranking = rank(i);
    let plan = |verdict: String, proposals: Vec<Command>, ranking: Vec<WriterRank>| WriterPlan {
        verdict,
        ranking,
        proposals,
    };
    if i.in_flight {
        return plan(
            "waiting: a writer decision is in flight".into(),
            vec![],
            ranking,
        );
    }
    let a = i.authority;
    let top = ranking.first().filter(|r| r.eligible).map(|r| r.node);
    let eligible = |n: NodeId| ranking.iter().any(|r| r.node == n && r.eligible);
    let mut proposals = Vec::new();
    let mut verdicts = Vec::new();
    let mut writer = a.writer;
    match (a.writer, top) {
        (None, Some(t)) => {
            proposals.push(Command::SetGaleraWriter {
                node: t,
                epoch: a.epoch.next(),
                kind: ChangeKind::Initial,
                reason: format!("first writer: {} is the best Synced node", t),
            });
            verdicts.push(format!("record {t} as the first writer"));
            writer = Some(t);
        }
        (None, None) => verdicts.push("no writer yet: no node is Synced and Primary".into()),
        (Some(w), _) if eligible(w) => {}
        (Some(w), Some(t)) if !i.maintenance && !i.outage_open => {
            let why = ranking
                .iter()
                .find(|r| r.node == w)
                .map_or_else(String::new, |r| r.reason.clone());
            proposals.push(Command::SetGaleraWriter {
                node: t,
                epoch: a.epoch.next(),
                kind: ChangeKind::Automatic,
                reason: format!("writer {w} is not eligible ({why}); {t} is the best Synced node"),
            });
            verdicts.push(format!("move the writer {w} -> {t}"));
            writer = Some(t);
        }
        (Some(w), Some(_)) => verdicts.push(format!(
            "writer {w} is not Synced but stays: {}",
            if i.maintenance {
                "maintenance is on"
            } else {
                "a Galera outage is open"
            }
        )),
        (Some(w), None) => verdicts.push(format!(
            "writer {w} is not Synced and no other node is: nothing to move to"
        )),
    }
    if !i.maintenance && !i.outage_open {
        if let Some(c) = eviction(i, writer) {
            if let Command::EvictGaleraNode { node, .. } = &c {
                verdicts.push(format!("evict {node}, whose mariadbd is gone"));
            }
            proposals.push(c);
        }
    }
    for (&n, ev) in &a.evicted {
        let why = if i.evidence.get(&n).is_some_and(|e| e.answered) {
            "it answers again"
        } else if dropped_by_survivors(i, n) {
            "the survivors' component no longer counts it"
        } else {
            continue;
        };
        verdicts.push(format!("clear the eviction of {n}: {why}"));
        proposals.push(Command::ClearGaleraEviction {
            node: n,
            gcomm_uuid: ev.gcomm_uuid.clone(),
            reason: format!("{n}: {why}"),
        });
    }
    let verdict = if verdicts.is_empty() {
        match a.writer {
            Some(w) => format!("no action: writer {w} at epoch {} is Synced", a.epoch),
            None => "no action".into(),
        }
    } else {
        verdicts.join("; ")
    };
    plan(verdict, proposals, ranking)
}

/// Whether every other node that reports itself Primary counts fewer members than the
/// cluster has (at least one does): its component no longer holds `n`.
fn dropped_by_survivors(i: &WriterInputs<'_>, n: NodeId) -> bool {
    let members = u64::try_from(i.members.len()).unwrap_or(u64::MAX);
    let mut sizes = i
        .members
        .iter()
        .filter(|&&m| m != n)
        .filter_map(|m| i.evidence.get(m))
        .filter(|e| e.primary)
        .map(|e| e.cluster_size)
        .peekable();
    sizes.peek().is_some() && sizes.all(|s| s.is_some_and(|s| s < members))
}

/// The first node to evict this cycle, if any (see the module docs).
fn eviction(i: &WriterInputs<'_>, writer: Option<NodeId>) -> Option<Command> {
    if !i.settings.evict || !i.authority.evicted.is_empty() {
        return None;
    }
    let quorum = i.members.len() / 2 + 1;
    let primary_elsewhere = |n: NodeId| {
        i.members
            .iter()
            .any(|&m| m != n && i.evidence.get(&m).is_some_and(|e| e.primary))
    };
    i.members.iter().find_map(|&n| {
        if writer == Some(n) || !primary_elsewhere(n) || dropped_by_survivors(i, n) {
            return None;
        }
        let e = i.evidence.get(&n)?;
        let why = if e.reported && e.gone {
            format!("its own agent reports mariadbd {}", e.state)
        } else if !e.reported && e.refused_by.len() >= quorum {
            format!(
                "its agent is silent and {} of {} members' checks were refused",
                e.refused_by.len(),
                i.members.len()
            )
        } else {
            return None;
        };
        let uuid = i.gcomm.get(&n)?;
        Some(Command::EvictGaleraNode {
            node: n,
            gcomm_uuid: uuid.clone(),
            reason: why,
        })
    })
}

/// The ranking a newly elected leader would make from these reports alone (no memory
/// between decisions): what a follower's status shows and what a switchover checks its
/// target against.
pub fn rank_from_reports(
    members: &[NodeId],
    seen: &[Seen],
    state: &crate::cluster::ClusterState,
    now_ms: u64,
    settings: WriterSettings,
) -> Vec<WriterRank> {
    let mut memory = WriterMemory::default();
    let evidence =
        writer_evidence_from_reports(members, seen, settings.freshness_ms, now_ms, &mut memory);
    let gcomm = memory.uuids();
    rank(&WriterInputs {
        members,
        authority: &state.galera_writer,
        evidence: &evidence,
        gcomm: &gcomm,
        outage_open: state.galera.open().is_some(),
        maintenance: state.maintenance.enabled,
        in_flight: false,
        settings,
    })
}

/// Details of a MariaDB check the writer decision reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Details {
    local_state: Option<i64>,
    local_state_comment: Option<String>,
    auto_increment_offset: Option<i64>,
    cluster_status: Option<String>,
    ready: Option<bool>,
    gcomm_uuid: Option<String>,
}

/// The gcomm UUID an observation reports, lowercase, when it answered with one.
pub fn gcomm_uuid_of(o: &crate::observation::Observation) -> Option<String> {
    if o.last.status == Status::Unreachable {
        return None;
    }
    let d = Details::deserialize(&o.last.details).unwrap_or_default();
    d.gcomm_uuid
        .map(|u| u.to_ascii_lowercase())
        .filter(|u| crate::cluster::is_gcomm_uuid(u))
}

/// What the leader keeps between decisions about each member's MariaDB, on its own monotonic
/// clock (a report's time is `now_ms` minus its age): the newest gcomm UUID a check found,
/// and when a check last found the node answering. A new leader starts empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterMemory {
    /// The gcomm UUID the newest answered check of each node reported, and that check's time.
    pub gcomm: BTreeMap<NodeId, (String, u64)>,
    /// When a check (anyone's) last found each node answering.
    pub answered_at: BTreeMap<NodeId, u64>,
}

impl WriterMemory {
    /// The gcomm UUID known for each node.
    pub fn uuids(&self) -> BTreeMap<NodeId, String> {
        self.gcomm
            .iter()
            .map(|(n, (u, _))| (*n, u.clone()))
            .collect()
    }
}

/// Every member's writer evidence from the fresh reports: its own agent's check of its
/// MariaDB, and which peers' checks of it were refused. Updates `memory` first: the gcomm UUID
/// of the newest fresh check that answered with one (its own agent's or a peer's), and when a
/// check last found each node answering.
///
/// Death is judged against that memory, so that only a dead process's UUID is ever evicted:
/// a node is gone (and a peer's refusal counts) only if the report saying so is newer than
/// every check that found it answering. Once a check found it answering after its own agent
/// said "stopped" or "refused", it came back as a new process (whose new UUID `memory` now
/// holds); evicting that would cut the live, rejoining process off. The memory keeps this
/// across decisions: the answering check may be replaced by a failed one (a cut) before the
/// own agent's next report.
pub fn writer_evidence_from_reports(
    members: &[NodeId],
    seen: &[Seen],
    freshness_ms: u64,
    now_ms: u64,
    memory: &mut WriterMemory,
) -> BTreeMap<NodeId, WriterEvidence> {
    let mut out = BTreeMap::new();
    for &m in members {
        let fresh: Vec<&Seen> = seen
            .iter()
            .filter(|s| {
                s.age_ms <= freshness_ms
                    && s.observation.id.subject == m
                    && s.observation.id.service == Service::Mariadb
                    && s.observation.id.target.is_empty()
            })
            .collect();
        let at = |s: &Seen| now_ms.saturating_sub(s.age_ms);
        // The newest answered check that names a UUID (ties: the own agent's, then by id).
        let newest_uuid = fresh
            .iter()
            .filter_map(|s| {
                Some((
                    at(s),
                    s.observer != m,
                    s.observer,
                    gcomm_uuid_of(&s.observation)?,
                ))
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
        if let Some((t, _, _, u)) = newest_uuid {
            let newer = memory.gcomm.get(&m).is_none_or(|(_, known)| t >= *known);
            if newer {
                memory.gcomm.insert(m, (u, t));
            }
        }
        if let Some(t) = fresh
            .iter()
            .filter(|s| s.observation.last.status != Status::Unreachable)
            .map(|s| at(s))
            .max()
        {
            let last = memory.answered_at.entry(m).or_insert(t);
            *last = (*last).max(t);
        }
        let answered_at = memory.answered_at.get(&m).copied();
        let after_last_answer = |s: &Seen| answered_at.is_none_or(|a| at(s) > a);
        let refused_by: BTreeSet<NodeId> = fresh
            .iter()
            .filter(|s| {
                s.observer != m
                    && s.observation.last.status == Status::Unreachable
                    && s.observation.last.failure == Some(FailureKind::Refused)
                    && after_last_answer(s)
            })
            .map(|s| s.observer)
            .collect();
        let own = fresh.iter().find(|s| s.observer == m);
        let mut e = WriterEvidence {
            refused_by,
            ..WriterEvidence::default()
        };
        if let Some(own) = own {
            let o = &own.observation;
            let d = Details::deserialize(&o.last.details).unwrap_or_default();
            let g = evidence_of(o);
            e.reported = true;
            e.answered = o.last.status != Status::Unreachable;
            e.primary = e.answered && d.cluster_status.as_deref() == Some("Primary");
            e.serving = e.primary && d.local_state == Some(STATE_SYNCED) && d.ready == Some(true);
            // Definitive (issue 13): the process is gone, or its socket refuses. A refusal
            // counts even while service control last said "running" (its note is up to a
            // recovery cycle old): a mariadbd that refuses is exiting or starting, and the
            // UUID evicted is the one its *previous* process reported, so a starting process
            // (a new gcomm UUID) is never the one evicted.
            // Only if nothing found it answering since (see above).
            e.gone = !e.answered
                && after_last_answer(own)
                && (o.last.failure == Some(FailureKind::Refused)
                    || g.process == ProcessState::Stopped);
            e.last_committed = g.last_committed;
            e.auto_increment_offset = d.auto_increment_offset.filter(|_| e.answered);
            e.cluster_size = g.cluster_size.filter(|_| e.answered);
            e.state = if e.answered {
                match (d.cluster_status.as_deref(), d.local_state_comment) {
                    (Some("Primary"), Some(c)) if d.ready == Some(true) => c,
                    (Some("Primary"), Some(c)) => format!("{c}, not ready"),
                    (Some(s), _) => s.to_string(),
                    (None, _) => "answers without wsrep status".into(),
                }
            } else {
                match (g.process, o.last.failure) {
                    (ProcessState::Stopped, Some(FailureKind::Refused)) => "refused".into(),
                    (ProcessState::Stopped, _) => "stopped".into(),
                    (_, Some(FailureKind::Timeout)) => "hung (its check timed out)".into(),
                    _ => "unreachable".into(),
                }
            };
        } else if e.refused_by.is_empty() {
            continue;
        }
        out.insert(m, e);
    }
    out
}

#[cfg(test)]
mod tests;
