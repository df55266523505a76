//! The Galera full-outage decision: one pure function from [`GaleraInputs`] to a
//! [`GaleraPlan`], and the checks of an operator's override ([`operator_override`]).
//!
//! Runs on the Raft leader every control-loop cycle. Everything comes in as values: the
//! committed [`GaleraAuthority`], each node's Galera evidence as its own agent last reported
//! it ([`GaleraEvidence`]), the age of every agent's latest report, and how long the leader
//! has seen no Primary component anywhere (measured by the controller on its monotonic
//! clock). The rejoin of a single fallen node is not decided here: it is each agent's own
//! business while a majority is Primary.
//!
//! # Outages are numbered, and opening one is a decision
//! A full outage is a committed span: `OpenGaleraOutage` (number = newest + 1) opens it,
//! `BootstrapGalera` names its one bootstrap, `EndGaleraOutage` ends it. The leader opens an
//! outage only when every member's agent reported fresh and knows whether its mariadbd runs,
//! no node is Primary (by its own report or by a peer's check), and that has lasted
//! `open_after_stopped` (every mariadbd stopped: nothing re-forms by itself) or
//! `open_after_non_primary` (some still run, and Galera may re-form a Primary on its own
//! after a short partition). Committing the opening first is what makes "one bootstrap per
//! outage" hold across leader changes and restarts:
//! - the outage number is agreed before any choice, so a bootstrap names it and applies only
//!   while that outage is open and undecided (compare-and-set); a second leader's decision,
//!   or one made on a view older than an end and a reopening, is rejected when it applies;
//! - a decided outage is never decided again, whatever a new leader's view says; it ends
//!   when a node's own agent reports a Primary component of a majority of the members, of
//!   the committed bootstrap node, or of a node holding every commit the others report, or
//!   it is superseded by the next outage when its bootstrap node fell again, nothing Primary
//!   anywhere: stopped for `galera.rebootstrap_after`, or running non-Primary (it formed a
//!   component of two with a joiner that then died: one of two is no majority) for the longer
//!   of that and `galera.open_after_non_primary`; the next outage is then decided afresh;
//! - every agent sees the open outage in its applied state: it stops restarting its node on
//!   its own (a restart would change the evidence under the decision) and reports the
//!   position `--wsrep-recover` finds on its stopped node.
//!
//! # Choosing the node
//! Each member's evidence gives it a standing:
//! - *unavailable*: its agent is silent or never reported, or its mariadbd state is unknown
//!   (a hung probe): no outage opens and no automatic bootstrap is decided;
//! - *recovering*: stopped with `seqno: -1` in grastate and no recovered position reported
//!   yet: the outage may open (that is when agents run `--wsrep-recover`), the bootstrap
//!   waits;
//! - *Primary*: it reports a Primary component, or a peer's fresh check saw one;
//! - a *position*: `UUID:SEQNO` from `grastate.dat` (clean stop), from `--wsrep-recover`
//!   (crash), or from `wsrep_last_committed` (running, non-Primary);
//! - *no state*: no `grastate.dat`, an unreadable one, one with the nil state UUID (an
//!   interrupted state transfer: its agent does not run `--wsrep-recover` on it), nothing
//!   recovered, a running node
//!   that knows no position, or a reported position the log would refuse (not a lowercase
//!   state UUID, a negative seqno).
//!
//! The common state UUID is the one most nodes with a position share (none on a tie). Then
//! the ranking: the one node with `safe_to_bootstrap: 1` of the common UUID, unless another
//! node of that UUID has a higher seqno (the flag is then distrusted and said so) or several
//! have it (ignored); then the common UUID's nodes by seqno, highest first; then foreign UUIDs
//! by seqno; then nodes with no state; ties by lowest node id, and the verdict says so.
//!
//! # Rules
//! - Never a bootstrap while any node is Primary; an open outage with a Primary of a majority
//!   is ended instead, and so is one with a smaller Primary when it is the committed
//!   bootstrap node, or when it holds every commit any other node holds (the others report
//!   positions of its history no further than its `wsrep_last_committed`, or no state);
//!   any other smaller Primary (a bootstrap under way, or done by hand) waits.
//! - No automatic bootstrap while any node is unavailable or recovering: a silent node may
//!   hold newer commits. The verdict names each node it waits for; the operator's override
//!   ([`operator_override`]) is the way past it. When no outage could open (a node is
//!   missing), the override opens the next one and decides it in one command.
//! - An automatic bootstrap needs its chosen node to hold a known position of the common UUID;
//!   otherwise (split UUIDs, only foreign or no-state nodes) an operator must choose.
//! - One decision per outage: nothing is proposed while a Galera proposal is in flight, a
//!   decided outage proposes nothing more, and apply refuses a second one.
//! - The chosen node bootstraps as a new cluster when stopped, by `pc.bootstrap` when it runs.
//! - In maintenance nothing is proposed.
//!
//! Caveats:
//! - Within one outage the first committed bootstrap stands: a decision is fenced by the
//!   outage number, not by the evidence it saw. Two leaders (or a leader and an operator)
//!   deciding the same outage differently cannot both apply; the later one is refused.
//! - The override trusts the operator about missing nodes: a silent node that is in fact
//!   Primary (cut off with clients) is not seen by the Primary check.
//! - A decided bootstrap stands for its outage. If the chosen node cannot start, the outage
//!   stays open until an operator repairs that node or brings a Primary back by hand (which
//!   ends it); there is no command to re-decide an outage.
//! - The evidence is only as good as the reports: an agent must drop its recovered position
//!   once its mariadbd starts again, and report peers' Primary sightings only while fresh.
//! - A hung mariadbd (state unknown) blocks both opening an outage and an automatic bootstrap
//!   until it answers or is stopped; the operator can override.
//! - A node outside the common UUID is never chosen automatically, even with a higher seqno.
//! - Sizes other than three members work arithmetically but are only tested with three.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cluster::{
    is_state_uuid, BootstrapKind, BootstrapMode, Command, GaleraAuthority, GaleraOutage, OutageId,
};
use crate::health::Seen;
use crate::ids::{LogIndex, NodeId};
use crate::observation::{FailureKind, Observation, Service, Status};

/// Tunables of the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaleraSettings {
    /// A report older than this does not count (and its agent counts as silent).
    pub freshness_ms: u64,
    /// How long no Primary must be seen anywhere, every mariadbd stopped, before an outage
    /// opens (guards against a report caught mid-restart).
    pub open_after_stopped_ms: u64,
    /// The same while some mariadbd still runs non-Primary: Galera re-forms a Primary by
    /// itself after a short partition heals, so this is longer.
    pub open_after_non_primary_ms: u64,
    /// How long a decided outage's bootstrap node must stay stopped after its agent says it
    /// carried the bootstrap out (or refused it: its position moved), nothing Primary
    /// anywhere, before the leader gives up on that bootstrap and opens the next outage.
    pub rebootstrap_after_ms: u64,
    /// A planted bug (simulation only; production: [`GaleraPlant::None`]).
    #[doc(hidden)]
    pub plant: GaleraPlant,
}

/// A bug the whole-cluster simulation plants in the decision, to prove its invariants catch
/// it. Production always runs [`GaleraPlant::None`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GaleraPlant {
    /// No bug.
    #[default]
    None,
    /// Rank the candidates by node id instead of position (tiers kept).
    RankByNodeId,
    /// Treat a silent or unknown node as absent: it holds back neither an outage nor a
    /// bootstrap (the controller's clock starts without its report, too).
    SilentAsAbsent,
}

/// Whether a node's mariadbd runs, as its own agent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// It runs (answers on its socket, or service control says so).
    Running,
    /// It does not run (service control says so, or its socket refuses).
    Stopped,
    /// Not known (the check hung or failed in a way that proves nothing).
    Unknown,
}

/// A node's `grastate.dat`, as its own agent read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrastateEvidence {
    /// No file in the datadir.
    Missing,
    /// The file exists but could not be used.
    Unreadable {
        /// Why.
        error: String,
    },
    /// The file as written.
    Present {
        /// Cluster state UUID, lowercase; `None` for the nil UUID.
        uuid: Option<String>,
        /// Last committed seqno; `None` for `-1` (running, or crashed).
        seqno: Option<i64>,
        /// `safe_to_bootstrap: 1`.
        safe_to_bootstrap: bool,
    },
}

/// A durable position, `UUID:SEQNO`, as `--wsrep-recover` found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraPosition {
    /// Cluster state UUID, lowercase; `None` for the nil UUID.
    pub uuid: Option<String>,
    /// Seqno; `None` for `-1` (nothing recovered).
    pub seqno: Option<i64>,
}

/// One node's Galera evidence, as its own agent last reported it (peers add only what they
/// saw of its Primary component).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraEvidence {
    /// Whether its mariadbd runs.
    pub process: ProcessState,
    /// Running: whether it is in a Primary component (`wsrep_cluster_status`).
    pub primary: bool,
    /// Running: `wsrep_cluster_size`.
    pub cluster_size: Option<u64>,
    /// Running: `wsrep_local_state_comment` (`Synced`, `Donor/Desynced`...), for display.
    pub local_state: Option<String>,
    /// Running: `wsrep_local_state_uuid`, lowercase.
    pub wsrep_uuid: Option<String>,
    /// Running: `wsrep_last_committed`.
    pub last_committed: Option<i64>,
    /// Its `grastate.dat`.
    pub grastate: GrastateEvidence,
    /// Stopped: the position `--wsrep-recover` found, once its agent ran it.
    pub recovered: Option<GaleraPosition>,
    /// Peers whose fresh check of its MariaDB saw it in a Primary component.
    pub primary_seen_by: BTreeSet<NodeId>,
    /// Stopped or running: the outage whose committed bootstrap its agent says it carried
    /// out (since that agent started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrapped: Option<OutageId>,
}

impl GaleraEvidence {
    /// A stopped node with the given grastate and nothing else known.
    pub fn stopped(grastate: GrastateEvidence) -> Self {
        GaleraEvidence {
            process: ProcessState::Stopped,
            primary: false,
            cluster_size: None,
            local_state: None,
            wsrep_uuid: None,
            last_committed: None,
            grastate,
            recovered: None,
            primary_seen_by: BTreeSet::new(),
            bootstrapped: None,
        }
    }
}

/// Everything the Galera decision looks at.
#[derive(Clone, Debug)]
pub struct GaleraInputs<'a> {
    /// Cluster members, sorted.
    pub members: &'a [NodeId],
    /// The committed authority.
    pub authority: &'a GaleraAuthority,
    /// Each node's evidence from its own agent's latest report; absent when none.
    pub evidence: &'a BTreeMap<NodeId, GaleraEvidence>,
    /// Age of each agent's latest report; absent when never heard from.
    pub report_age_ms: &'a BTreeMap<NodeId, u64>,
    /// How long the leader has seen no Primary component in any fresh report (`None`: one is
    /// seen now, or not every node reports).
    pub no_primary_ms: Option<u64>,
    /// How long the open outage's committed bootstrap node has been seen fallen (stopped, or
    /// running non-Primary) after its agent said it carried the bootstrap out, no Primary
    /// anywhere, every node reporting (`None`: not so now).
    pub bootstrap_fallen_ms: Option<u64>,
    /// Whether that node runs (non-Primary: the node that joined it fell, and it is alone in
    /// a component of two) rather than stopped; it is then given up only after the longer
    /// `open_after_non_primary`, as Galera may re-form a Primary by itself.
    pub bootstrap_fallen_running: bool,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// Whether an earlier Galera proposal is still in flight.
    pub in_flight: bool,
    /// Tunables.
    pub settings: GaleraSettings,
}

/// Where a candidate's position comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionSource {
    /// `grastate.dat` after a clean stop.
    Grastate,
    /// `mariadbd --wsrep-recover` after a crash.
    Recovered,
    /// `wsrep_last_committed` of a running, non-Primary node.
    Committed,
}

impl PositionSource {
    /// How a verdict names a seqno from this source.
    pub fn label(self) -> &'static str {
        match self {
            PositionSource::Grastate => "grastate seqno",
            PositionSource::Recovered => "recovered seqno",
            PositionSource::Committed => "committed seqno",
        }
    }
}

/// Where a candidate stands in the ranking, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The one trusted `safe_to_bootstrap: 1` of the common UUID.
    Safe,
    /// A known position of the common UUID.
    Common,
    /// A known position of another UUID (or no UUID is common).
    Foreign,
    /// No usable position (no grastate, unreadable, nothing recovered).
    NoState,
    /// Cannot be ranked: missing, silent, unknown, or Primary.
    Excluded,
}

impl Tier {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Safe => "safe",
            Tier::Common => "common",
            Tier::Foreign => "foreign",
            Tier::NoState => "no_state",
            Tier::Excluded => "excluded",
        }
    }

    /// Whether an automatic bootstrap may choose a node of this tier.
    pub fn is_automatic_choice(self) -> bool {
        matches!(self, Tier::Safe | Tier::Common)
    }
}

/// One node in the ranking, with its evidence and why it ranks where it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraCandidate {
    /// The node.
    pub node: NodeId,
    /// Rank among the rankable nodes (1 = best); `None` when excluded.
    pub rank: Option<u32>,
    /// Its tier.
    pub tier: Tier,
    /// Its cluster state UUID, when known.
    pub uuid: Option<String>,
    /// Its seqno, when known.
    pub seqno: Option<i64>,
    /// Where the position comes from, when known.
    pub source: Option<PositionSource>,
    /// Whether its mariadbd runs (a bootstrap from it is `pc.bootstrap`).
    pub running: bool,
    /// Why it ranks where it does, or why it is excluded.
    pub reason: String,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaleraPlan {
    /// One line for operators.
    pub verdict: String,
    /// Commands to propose.
    #[serde(skip)]
    pub proposals: Vec<Command>,
    /// Every member, ranked for a bootstrap (the dry run), with its evidence.
    pub ranking: Vec<GaleraCandidate>,
}

/// A ranking function; [`rank`] is the real one. [`decide_ranked`] takes it so that a test
/// can prove the golden cases catch a wrong one.
pub type Ranker = fn(&GaleraInputs<'_>) -> Vec<GaleraCandidate>;

/// Why an operator's override is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// The operator did not accept that commits held by a missing node may be lost.
    #[error(
        "an override may lose commits that a missing or silent node holds: accept that \
         explicitly (--accept-data-loss)"
    )]
    DataLossNotAccepted,
    /// Who asked or why is empty.
    #[error("an override must say who asks and why")]
    Unexplained,
    /// The node is not a member.
    #[error("{0} is not a member")]
    NotAMember(NodeId),
    /// A node is in a Primary component.
    #[error("no bootstrap while a node is Primary: {0}")]
    Primary(String),
    /// The open outage already has its bootstrap.
    #[error("outage {outage} already bootstraps {node} (index {index}); one bootstrap per outage")]
    AlreadyDecided {
        /// The outage.
        outage: u64,
        /// Its bootstrap node.
        node: NodeId,
        /// Log index of the decision.
        index: LogIndex,
    },
    /// The chosen node's agent could not carry the bootstrap out.
    #[error("{node} cannot bootstrap: {why}")]
    Unavailable {
        /// The node.
        node: NodeId,
        /// Why.
        why: String,
    },
}

/// A node's standing, from its evidence.
#[derive(Clone, Debug)]
enum Standing {
    /// Missing, silent or in an unknown state: no outage opens and no automatic bootstrap is
    /// decided while a node is.
    Unavailable(String),
    /// Stopped after a crash (`seqno: -1`), its recovered position not reported yet: an
    /// outage may open (its agent then runs `--wsrep-recover`), no automatic bootstrap yet.
    Recovering,
    /// In a Primary component.
    Primary { own_size: Option<u64>, why: String },
    /// A known position.
    Known {
        uuid: String,
        seqno: i64,
        source: PositionSource,
        safe: bool,
        running: bool,
    },
    /// Complete evidence without a usable position.
    NoState { why: String, running: bool },
}

impl GaleraInputs<'_> {
    fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    fn standing(&self, node: NodeId) -> Standing {
        let fresh = self.settings.freshness_ms;
        match self.report_age_ms.get(&node) {
            None => return Standing::Unavailable("its agent never reported".into()),
            Some(&age) if age > fresh => {
                return Standing::Unavailable(format!(
                    "its agent is silent, last report {} ago",
                    secs(age)
                ))
            }
            Some(_) => {}
        }
        let Some(e) = self.evidence.get(&node) else {
            return Standing::Unavailable("its agent reports no Galera evidence".into());
        };
        if e.process == ProcessState::Running && e.primary {
            return Standing::Primary {
                own_size: e.cluster_size,
                why: format!("Primary (size {})", fmt_opt(e.cluster_size)),
            };
        }
        if !e.primary_seen_by.is_empty() {
            return Standing::Primary {
                own_size: None,
                why: format!("seen Primary by {}", join_nodes(&e.primary_seen_by)),
            };
        }
        match e.process {
            ProcessState::Unknown => Standing::Unavailable("its mariadbd state is unknown".into()),
            ProcessState::Running => match (&e.wsrep_uuid, e.last_committed) {
                (Some(u), Some(s)) => known(u, s, PositionSource::Committed, false, true),
                _ => Standing::NoState {
                    why: "running non-Primary with no known position".into(),
                    running: true,
                },
            },
            ProcessState::Stopped => match &e.grastate {
                GrastateEvidence::Missing => Standing::NoState {
                    why: "no grastate".into(),
                    running: false,
                },
                GrastateEvidence::Unreadable { error } => Standing::NoState {
                    why: format!("grastate unreadable: {error}"),
                    running: false,
                },
                GrastateEvidence::Present {
                    uuid: Some(u),
                    seqno: Some(s),
                    safe_to_bootstrap,
                } => known(u, *s, PositionSource::Grastate, *safe_to_bootstrap, false),
                // The nil UUID: no history (a state transfer was interrupted, or it never
                // joined); `--wsrep-recover` would report whatever the half-written data
                // says, so it is not asked.
                GrastateEvidence::Present { uuid: None, .. } => Standing::NoState {
                    why: "grastate has the nil state UUID (an interrupted state transfer, or \
                          never joined)"
                        .into(),
                    running: false,
                },
                GrastateEvidence::Present {
                    safe_to_bootstrap, ..
                } => match &e.recovered {
                    None => Standing::Recovering,
                    Some(GaleraPosition {
                        uuid: Some(u),
                        seqno: Some(s),
                    }) => known(u, *s, PositionSource::Recovered, *safe_to_bootstrap, false),
                    Some(_) => Standing::NoState {
                        why: "nothing recovered (grastate seqno -1)".into(),
                        running: false,
                    },
                },
            },
        }
    }

    fn standings(&self) -> Vec<(NodeId, Standing)> {
        self.members
            .iter()
            .map(|&m| (m, self.standing(m)))
            .filter(|(_, s)| {
                self.settings.plant != GaleraPlant::SilentAsAbsent
                    || !matches!(s, Standing::Unavailable(_))
            })
            .collect()
    }
}

/// A reported position, if it is one the log accepts (a lowercase state UUID, a seqno from
/// 0): a bad report then ranks as no state instead of yielding a command every node's codec
/// would refuse.
fn known(uuid: &str, seqno: i64, source: PositionSource, safe: bool, running: bool) -> Standing {
    if !is_state_uuid(uuid) || seqno < 0 {
        return Standing::NoState {
            why: format!("invalid position {uuid}:{seqno} reported"),
            running,
        };
    }
    Standing::Known {
        uuid: uuid.to_string(),
        seqno,
        source,
        safe,
        running,
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn join_nodes<'a>(nodes: impl IntoIterator<Item = &'a NodeId>) -> String {
    nodes
        .into_iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first group of a state UUID: enough to tell histories apart in a verdict.
fn short(uuid: &str) -> &str {
    uuid.split('-').next().unwrap_or(uuid)
}

/// The UUID most nodes with a position share; `None` when none or on a tie.
fn common_uuid(standings: &[(NodeId, Standing)]) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in standings {
        if let Standing::Known { uuid, .. } = s {
            *counts.entry(uuid.as_str()).or_default() += 1;
        }
    }
    let best = counts.values().copied().max()?;
    let mut top = counts.into_iter().filter(|(_, c)| *c == best);
    match (top.next(), top.next()) {
        (Some((u, _)), None) => Some(u.to_string()),
        _ => None,
    }
}

/// The ranking: every member with its tier, rank and reason (see the module docs).
pub fn rank(i: &GaleraInputs<'_>) -> Vec<GaleraCandidate> {
    let standings = i.standings();
    let common = common_uuid(&standings);
    let of_common = |u: &str| common.as_deref() == Some(u);
    // The most advanced node of the common history (lowest id on a tie).
    let ahead: Option<(i64, NodeId)> = standings
        .iter()
        .filter_map(|(n, s)| match s {
            Standing::Known { uuid, seqno, .. } if of_common(uuid) => Some((*seqno, *n)),
            _ => None,
        })
        .min_by_key(|(seqno, n)| (std::cmp::Reverse(*seqno), *n));
    let safe: Vec<NodeId> = standings
        .iter()
        .filter(|(_, s)| matches!(s, Standing::Known { uuid, safe: true, .. } if of_common(uuid)))
        .map(|(n, _)| *n)
        .collect();
    let mut out: Vec<GaleraCandidate> = standings
        .iter()
        .map(|(node, s)| {
            let mut c = GaleraCandidate {
                node: *node,
                rank: None,
                tier: Tier::Excluded,
                uuid: None,
                seqno: None,
                source: None,
                running: false,
                reason: String::new(),
            };
            match s {
                Standing::Unavailable(why) | Standing::Primary { why, .. } => {
                    c.reason = format!("excluded: {why}");
                }
                Standing::Recovering => {
                    c.reason =
                        "excluded: its recovered position is not reported yet (grastate seqno -1)"
                            .into();
                }
                Standing::NoState { why, running } => {
                    c.tier = Tier::NoState;
                    c.running = *running;
                    c.reason = why.clone();
                }
                Standing::Known {
                    uuid,
                    seqno,
                    source,
                    safe: is_safe,
                    running,
                } => {
                    c.uuid = Some(uuid.clone());
                    c.seqno = Some(*seqno);
                    c.source = Some(*source);
                    c.running = *running;
                    let position = format!("{} {seqno}", source.label());
                    c.tier = if of_common(uuid) {
                        Tier::Common
                    } else {
                        Tier::Foreign
                    };
                    // Reasons hold no commas: verdicts list them separated by commas.
                    c.reason = match (&common, c.tier) {
                        (Some(_), Tier::Common) => position,
                        (Some(_), _) => format!("{position} of foreign uuid {}", short(uuid)),
                        (None, _) => format!("{position} of uuid {}", short(uuid)),
                    };
                    if *is_safe && c.tier == Tier::Common {
                        match ahead {
                            _ if safe.len() > 1 => {
                                c.reason += " (safe_to_bootstrap 1 on several nodes: ignored)";
                            }
                            Some((top, n)) if top > *seqno => {
                                let _ = write!(
                                    c.reason,
                                    " (safe_to_bootstrap 1 ignored: {n} is ahead at {top})"
                                );
                            }
                            _ => {
                                c.tier = Tier::Safe;
                                c.reason += " with safe_to_bootstrap 1";
                            }
                        }
                    }
                }
            }
            c
        })
        .collect();
    let mut eligible: Vec<&mut GaleraCandidate> = out
        .iter_mut()
        .filter(|c| c.tier != Tier::Excluded)
        .collect();
    eligible.sort_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then(b.seqno.cmp(&a.seqno))
            .then(a.node.cmp(&b.node))
    });
    for (k, c) in eligible.into_iter().enumerate() {
        c.rank = Some(u32::try_from(k).unwrap_or(u32::MAX).saturating_add(1));
    }
    out.sort_by_key(|c| (c.rank.is_none(), c.rank, c.node));
    out
}

/// Every member's evidence in one line, as the audit history keeps it with a bootstrap.
pub fn evidence_summary(i: &GaleraInputs<'_>) -> String {
    let fresh = i.settings.freshness_ms;
    i.members
        .iter()
        .map(|&n| {
            let age = match i.report_age_ms.get(&n) {
                None => return format!("{n} never reported"),
                Some(&a) if a > fresh => return format!("{n} silent {}", secs(a)),
                Some(&a) => a,
            };
            let Some(e) = i.evidence.get(&n) else {
                return format!("{n} no evidence");
            };
            let mut s = format!("{n} {}", describe_process(e, false));
            match &e.grastate {
                // Not read while it runs: nothing to say.
                GrastateEvidence::Unreadable { .. } if e.process == ProcessState::Running => {}
                GrastateEvidence::Missing => s += ", no grastate",
                GrastateEvidence::Unreadable { error } => {
                    let _ = write!(s, ", grastate unreadable ({error})");
                }
                GrastateEvidence::Present {
                    uuid,
                    seqno,
                    safe_to_bootstrap,
                } => {
                    let _ = write!(
                        s,
                        ", grastate {}:{} safe {}",
                        uuid.as_deref().unwrap_or("nil"),
                        seqno.unwrap_or(-1),
                        u8::from(*safe_to_bootstrap)
                    );
                }
            }
            if let Some(r) = &e.recovered {
                let _ = write!(
                    s,
                    ", recovered {}:{}",
                    r.uuid.as_deref().unwrap_or("nil"),
                    r.seqno.unwrap_or(-1)
                );
            }
            if !e.primary_seen_by.is_empty() {
                let _ = write!(s, ", seen Primary by {}", join_nodes(&e.primary_seen_by));
            }
            let _ = write!(s, " ({} old)", secs(age));
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a node's mariadbd is doing; `brief` shortens the UUID for a verdict.
fn describe_process(e: &GaleraEvidence, brief: bool) -> String {
    let uuid = e.wsrep_uuid.as_deref().unwrap_or("nil");
    match e.process {
        ProcessState::Stopped => "stopped".into(),
        ProcessState::Unknown => "state unknown".into(),
        ProcessState::Running => format!(
            "{} {} size {} at {}:{}",
            if e.primary { "Primary" } else { "non-Primary" },
            e.local_state.as_deref().unwrap_or("?"),
            fmt_opt(e.cluster_size),
            if brief { short(uuid) } else { uuid },
            e.last_committed.unwrap_or(-1)
        ),
    }
}

/// The Primary nodes, grouped by what was seen (`n1, n2, n3 Primary (size 3)`); empty when
/// none.
fn primaries(standings: &[(NodeId, Standing)]) -> String {
    let mut groups: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for (n, s) in standings {
        if let Standing::Primary { why, .. } = s {
            groups.entry(why.as_str()).or_default().push(*n);
        }
    }
    groups
        .into_iter()
        .map(|(why, nodes)| format!("{} {why}", join_nodes(&nodes)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The nodes that hold back an outage (unavailable) or, with `bootstrap`, also a bootstrap
/// (recovering), each with why: `n2 (its agent is silent, ...)`.
fn waiting_for(standings: &[(NodeId, Standing)], bootstrap: bool) -> Vec<String> {
    standings
        .iter()
        .filter_map(|(n, s)| match s {
            Standing::Unavailable(why) => Some(format!("{n} ({why})")),
            Standing::Recovering if bootstrap => {
                Some(format!("{n} (its recovered position: grastate seqno -1)"))
            }
            _ => None,
        })
        .collect()
}

/// Decides, with the real ranking.
pub fn decide(i: &GaleraInputs<'_>) -> GaleraPlan {
    match i.settings.plant {
        GaleraPlant::RankByNodeId => decide_ranked(i, rank_by_node_id),
        _ => decide_ranked(i, rank),
    }
}

/// The planted [`GaleraPlant::RankByNodeId`]: [`rank`]'s tiers, ordered by node id within
/// each.
fn rank_by_node_id(i: &GaleraInputs<'_>) -> Vec<GaleraCandidate> {
    let mut out = rank(i);
    let mut eligible: Vec<&mut GaleraCandidate> = out
        .iter_mut()
        .filter(|c| c.tier != Tier::Excluded)
        .collect();
    eligible.sort_by_key(|c| (c.tier, c.node));
    for (k, c) in eligible.into_iter().enumerate() {
        c.rank = Some(u32::try_from(k).unwrap_or(u32::MAX).saturating_add(1));
    }
    out.sort_by_key(|c| (c.rank.is_none(), c.rank, c.node));
    out
}

/// Decides with `ranker` choosing the order of the candidates; everything else (the rules,
/// the checks, the verdicts) is [`decide`]'s.
pub fn decide_ranked(i: &GaleraInputs<'_>, ranker: Ranker) -> GaleraPlan {
    let ranking = ranker(i);
    let plan = |verdict: String| only(verdict, &ranking);
    if i.in_flight {
        return plan("waiting: a Galera decision is being committed".into());
    }
    let standings = i.standings();
    let primaries = primaries(&standings);
    let Some(outage) = i.authority.open() else {
        return no_outage(i, &standings, &primaries, &ranking);
    };
    let n = outage.number;
    let quorum = i.quorum();
    let bootstrap_node = outage.bootstrap.as_ref().map(|b| b.node);
    // Ended by its own agent's report of a Primary component of a majority, or of the
    // committed bootstrap node alone (before anyone joined it: the cluster runs again, and
    // the others rejoin it as after any fall). Peers' sightings only block, and so does a
    // Primary of a minority that Triad did not commit (bootstrapped by hand).
    let back = standings
        .iter()
        .filter_map(|(node, s)| match s {
            Standing::Primary {
                own_size: Some(size),
                ..
            } if usize::try_from(*size).is_ok_and(|s| s >= quorum)
                || bootstrap_node == Some(*node) =>
            {
                Some((*node, *size))
            }
            _ => None,
        })
        .min_by_key(|&(node, size)| (std::cmp::Reverse(size), node))
        .map(|(node, size)| (node, size, String::new()))
        .or_else(|| holds_everything(i, &standings));
    if let Some((node, size, holds)) = back {
        let reason = format!(
            "{node} is Primary with {size} node{}{holds}",
            if size == 1 { "" } else { "s" }
        );
        if i.maintenance {
            return plan(format!(
                "no action (maintenance): outage {n} open, but {reason}"
            ));
        }
        return GaleraPlan {
            verdict: format!("end galera outage {n}: {reason}"),
            proposals: vec![Command::EndGaleraOutage { outage: n, reason }],
            ranking,
        };
    }
    if !primaries.is_empty() {
        let under_way = outage
            .bootstrap
            .as_ref()
            .map(|b| format!("bootstrap of {} under way; ", b.node))
            .unwrap_or_default();
        return plan(format!(
            "waiting: outage {n}: {under_way}{primaries}; no bootstrap while any node is \
             Primary, the outage ends at a Primary of {quorum} nodes, of the committed \
             bootstrap node, or of a node holding every other node's commits (if it does not \
             end, an operator stops that Primary or joins the others to it)"
        ));
    }
    if let Some(b) = &outage.bootstrap {
        if let Some(t) = i.bootstrap_fallen_ms {
            let (how, wait) = if i.bootstrap_fallen_running {
                (
                    "has run non-Primary",
                    i.settings
                        .rebootstrap_after_ms
                        .max(i.settings.open_after_non_primary_ms),
                )
            } else {
                ("has been stopped", i.settings.rebootstrap_after_ms)
            };
            let fallen = format!(
                "{}'s agent is done with the bootstrap of outage {n} (carried out, or refused \
                 as its position moved) and its mariadbd {how} for {}, nothing Primary \
                 anywhere",
                b.node,
                secs(t)
            );
            if i.maintenance {
                return plan(format!("no action (maintenance): {fallen}"));
            }
            if t >= wait {
                let next = n.next();
                let reason = format!("{fallen}: the bootstrap is given up");
                return GaleraPlan {
                    verdict: format!("open galera outage {next}: {reason}"),
                    proposals: vec![Command::OpenGaleraOutage {
                        outage: next,
                        reason,
                    }],
                    ranking,
                };
            }
            return plan(format!(
                "waiting: {fallen}; the next outage opens after {}",
                secs(wait)
            ));
        }
        return plan(format!(
            "no action: outage {n} bootstraps {} at {}:{} ({} {}, index {}); waiting for it \
             to become Primary",
            b.node,
            b.uuid.as_deref().map_or("?", short),
            fmt_opt(b.seqno),
            b.kind.as_str(),
            b.mode.as_str(),
            b.index
        ));
    }
    if i.maintenance {
        return plan(format!(
            "no action (maintenance): outage {n} open, no bootstrap decided"
        ));
    }
    choose(i, outage, &waiting_for(&standings, true), &ranking)
}

/// The one node whose own agent reports it Primary (of any size) when it holds every commit
/// any other node holds: every other node reports, is not Primary, and is either without
/// state or at a position of the Primary's history no further than its
/// `wsrep_last_committed`. The outage is then over (the others rejoin it, see
/// `reconcile::galera`); this is how a bootstrap carried out for an outage that was
/// superseded meanwhile (its agent acted on a state not yet caught up) ends the newer one.
/// Answers the node, its component's size, and the reason's tail.
fn holds_everything(
    i: &GaleraInputs<'_>,
    standings: &[(NodeId, Standing)],
) -> Option<(NodeId, u64, String)> {
    let mut primary = standings.iter().filter_map(|(n, s)| match s {
        Standing::Primary {
            own_size: Some(size),
            ..
        } => Some((*n, *size)),
        _ => None,
    });
    let (node, size) = primary.next()?;
    if primary.next().is_some() || standings.len() != i.members.len() {
        return None;
    }
    let e = i.evidence.get(&node)?;
    let (uuid, committed) = (e.wsrep_uuid.as_deref()?, e.last_committed?);
    let mut others = Vec::new();
    for (n, s) in standings {
        match s {
            _ if *n == node => {}
            Standing::Known { uuid: u, seqno, .. } if u == uuid && *seqno <= committed => {
                others.push(format!("{n} at {seqno}"))
            }
            Standing::NoState { .. } => others.push(format!("{n} without state")),
            _ => return None,
        }
    }
    Some((
        node,
        size,
        format!(
            " at {}:{committed}, holding every other node's commits ({})",
            short(uuid),
            others.join(", ")
        ),
    ))
}

/// No outage open: is one starting?
fn no_outage(
    i: &GaleraInputs<'_>,
    standings: &[(NodeId, Standing)],
    primaries: &str,
    ranking: &[GaleraCandidate],
) -> GaleraPlan {
    let plan = |verdict: String| only(verdict, ranking);
    let others: Vec<String> = standings
        .iter()
        .filter(|(_, s)| !matches!(s, Standing::Primary { .. }))
        .map(|(n, s)| match s {
            Standing::Unavailable(why) => format!("{n} {why}"),
            _ => format!(
                "{n} {}",
                i.evidence
                    .get(n)
                    .map_or_else(String::new, |e| describe_process(e, true))
            ),
        })
        .collect();
    let waiting = waiting_for(standings, false);
    if !primaries.is_empty() {
        let mut v = format!("no action: galera {primaries}");
        if !others.is_empty() {
            let _ = write!(v, "; {}", others.join(", "));
        }
        return plan(v);
    }
    if !waiting.is_empty() {
        return plan(format!(
            "waiting for {}: no Primary component in any report, but no outage opens until \
             every node reports",
            waiting.join(", ")
        ));
    }
    if i.maintenance {
        return plan(format!(
            "no action (maintenance): no Primary component anywhere ({})",
            others.join(", ")
        ));
    }
    let all_stopped = i.members.iter().all(|m| {
        i.evidence
            .get(m)
            .is_some_and(|e| e.process == ProcessState::Stopped)
    });
    let grace = if all_stopped {
        i.settings.open_after_stopped_ms
    } else {
        i.settings.open_after_non_primary_ms
    };
    let t = i.no_primary_ms.unwrap_or(0);
    let states = others.join(", ");
    if t < grace {
        return plan(format!(
            "waiting: no Primary component anywhere for {}, an outage opens after {} ({states})",
            secs(t),
            secs(grace)
        ));
    }
    let outage = i.authority.number().next();
    let reason = format!("no Primary component anywhere for {} ({states})", secs(t));
    GaleraPlan {
        verdict: format!("open galera outage {outage}: {reason}"),
        proposals: vec![Command::OpenGaleraOutage { outage, reason }],
        ranking: ranking.to_vec(),
    }
}

/// A plan that proposes nothing.
fn only(verdict: String, ranking: &[GaleraCandidate]) -> GaleraPlan {
    GaleraPlan {
        verdict,
        proposals: vec![],
        ranking: ranking.to_vec(),
    }
}

/// The open, undecided outage: the automatic bootstrap, or why not yet.
fn choose(
    i: &GaleraInputs<'_>,
    outage: &GaleraOutage,
    waiting: &[String],
    ranking: &[GaleraCandidate],
) -> GaleraPlan {
    let n = outage.number;
    let plan = |verdict: String| only(verdict, ranking);
    if !waiting.is_empty() {
        return plan(format!(
            "waiting for {}: outage {n} gets no automatic bootstrap until every node's \
             position is known (a missing or silent node may hold newer commits); `triad \
             galera bootstrap --node N --accept-data-loss` overrides",
            waiting.join(", ")
        ));
    }
    let Some(best) = ranking.iter().find(|c| c.rank == Some(1)) else {
        return plan(format!("waiting: outage {n}: no node can be ranked"));
    };
    if best.tier == Tier::Foreign && ranking.iter().all(|c| c.tier != Tier::Common) {
        // Several histories, none held by most nodes: which one the shop runs on is a
        // human's call.
        return plan(format!(
            "cannot bootstrap automatically (outage {n}): no state UUID is shared by most \
             nodes ({}); an operator must choose with `triad galera bootstrap --node N \
             --accept-data-loss`",
            list(ranking)
        ));
    }
    let (Some(uuid), Some(seqno), Some(source)) = (&best.uuid, best.seqno, best.source) else {
        return cannot(n, ranking);
    };
    if !best.tier.is_automatic_choice() {
        return cannot(n, ranking);
    }
    let mode = if best.running {
        BootstrapMode::PcBootstrap
    } else {
        BootstrapMode::NewCluster
    };
    let why = match best.tier {
        Tier::Safe => format!(
            "the only node with safe_to_bootstrap 1 at {} {seqno} of uuid {}",
            source.label(),
            short(uuid)
        ),
        _ => format!("highest {} {seqno} of uuid {}", source.label(), short(uuid)),
    };
    let tied: Vec<NodeId> = ranking
        .iter()
        .filter(|c| {
            c.node != best.node && c.rank.is_some() && c.tier == best.tier && c.seqno == Some(seqno)
        })
        .map(|c| c.node)
        .collect();
    let mut verdict = format!(
        "bootstrap {} (outage {n}, {}): {why}",
        best.node,
        match mode {
            BootstrapMode::NewCluster => "new cluster",
            BootstrapMode::PcBootstrap => "pc.bootstrap",
        }
    );
    if !tied.is_empty() {
        let _ = write!(
            verdict,
            " (tied with {}: lowest node id first)",
            join_nodes(&tied)
        );
    }
    let others: Vec<String> = ranking
        .iter()
        .filter(|c| c.node != best.node)
        .map(|c| format!("{} {}", c.node, c.reason))
        .collect();
    if !others.is_empty() {
        let _ = write!(verdict, "; {}", others.join(", "));
    }
    GaleraPlan {
        proposals: vec![Command::BootstrapGalera {
            outage: n,
            node: best.node,
            uuid: Some(uuid.clone()),
            seqno: Some(seqno),
            mode,
            kind: BootstrapKind::Automatic,
            by: String::new(),
            reason: verdict.clone(),
            evidence: evidence_summary(i),
        }],
        verdict,
        ranking: ranking.to_vec(),
    }
}

fn list(ranking: &[GaleraCandidate]) -> String {
    ranking
        .iter()
        .map(|c| format!("{} {}", c.node, c.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cannot(n: OutageId, ranking: &[GaleraCandidate]) -> GaleraPlan {
    only(
        format!(
            "cannot bootstrap automatically (outage {n}): no node holds a known position of \
             the common state UUID ({}); an operator must choose with `triad galera bootstrap \
             --node N --accept-data-loss`",
            list(ranking)
        ),
        ranking,
    )
}

/// The dry run an operator asks for: the decision as it stands when an outage is open, and
/// otherwise what it would be if one were open now (the verdict says which). Proposes
/// nothing.
pub fn dry_run(i: &GaleraInputs<'_>) -> GaleraPlan {
    let primary = i
        .standings()
        .iter()
        .any(|(_, s)| matches!(s, Standing::Primary { .. }));
    if i.authority.open().is_some() || primary {
        // An outage is open (the decision as it stands), or a Primary runs (nothing to
        // bootstrap: the decision says so).
        let mut plan = decide(i);
        plan.proposals.clear();
        return plan;
    }
    let number = i.authority.number().next();
    let hypothetical = GaleraAuthority {
        outage: Some(GaleraOutage {
            number,
            opened: crate::cluster::OutageMark {
                index: LogIndex(0),
                term: crate::ids::Term(0),
                at: crate::ids::UnixMillis(0),
                reason: "dry run".into(),
            },
            bootstrap: None,
            ended: None,
        }),
    };
    let mut plan = decide(&GaleraInputs {
        authority: &hypothetical,
        in_flight: false,
        ..i.clone()
    });
    plan.proposals.clear();
    plan.verdict = format!("no outage is open; if one were: {}", plan.verdict);
    plan
}

/// Builds an operator's override: bootstrap `node` for the open outage, or for the next one
/// when none is open (a node is missing, so the leader could not open it). Refused without
/// `accept_data_loss`, without who and why, for a non-member, while any node is Primary,
/// when the open outage is already decided, and when `node`'s own agent is silent or cannot
/// tell its state (it would carry the bootstrap out).
pub fn operator_override(
    i: &GaleraInputs<'_>,
    node: NodeId,
    accept_data_loss: bool,
    by: &str,
    reason: &str,
) -> Result<Command, OverrideError> {
    if !accept_data_loss {
        return Err(OverrideError::DataLossNotAccepted);
    }
    if by.trim().is_empty() || reason.trim().is_empty() {
        return Err(OverrideError::Unexplained);
    }
    if !i.members.contains(&node) {
        return Err(OverrideError::NotAMember(node));
    }
    if let (Some(o), Some(b)) = (i.authority.open(), i.authority.decided()) {
        return Err(OverrideError::AlreadyDecided {
            outage: o.number.0,
            node: b.node,
            index: b.index,
        });
    }
    let standings = i.standings();
    let primaries = primaries(&standings);
    if !primaries.is_empty() {
        return Err(OverrideError::Primary(primaries));
    }
    let (uuid, seqno, running) = match standings.into_iter().find(|(n, _)| *n == node) {
        Some((
            _,
            Standing::Known {
                uuid,
                seqno,
                running,
                ..
            },
        )) => (Some(uuid), Some(seqno), running),
        Some((_, Standing::NoState { running, .. })) => (None, None, running),
        // Stopped, its recovered position not reported yet: the operator accepts that.
        Some((_, Standing::Recovering)) => (None, None, false),
        Some((_, Standing::Unavailable(why))) => {
            return Err(OverrideError::Unavailable { node, why })
        }
        Some((_, Standing::Primary { why, .. })) => return Err(OverrideError::Primary(why)),
        None => return Err(OverrideError::NotAMember(node)),
    };
    let outage = i
        .authority
        .open()
        .map_or_else(|| i.authority.number().next(), |o| o.number);
    Ok(Command::BootstrapGalera {
        outage,
        node,
        uuid,
        seqno,
        mode: if running {
            BootstrapMode::PcBootstrap
        } else {
            BootstrapMode::NewCluster
        },
        kind: BootstrapKind::Operator,
        by: by.to_string(),
        reason: reason.to_string(),
        evidence: evidence_summary(i),
    })
}

/// The keys of a MariaDB observation's details that the evidence reads (the probe writes
/// them: the wsrep status when mariadbd answers; `grastate`, `grastate_missing`,
/// `grastate_error`, `service` and `recovered` when it does not).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Details {
    cluster_status: Option<String>,
    cluster_size: Option<i64>,
    local_state_comment: Option<String>,
    state_uuid: Option<String>,
    last_committed: Option<i64>,
    grastate: Option<DetailsGrastate>,
    grastate_missing: bool,
    grastate_error: Option<String>,
    service: Option<String>,
    recovered: Option<GaleraPosition>,
    bootstrapped: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct DetailsGrastate {
    uuid: Option<String>,
    seqno: Option<i64>,
    safe_to_bootstrap: bool,
}

/// Whether an observation of MariaDB shows a Primary component of at least `min_size`
/// nodes (answered, `wsrep_cluster_status` Primary).
pub fn observed_primary(o: &Observation, min_size: u64) -> bool {
    let d = Details::deserialize(&o.last.details).unwrap_or_default();
    o.last.failure != Some(FailureKind::Timeout)
        && o.last.status != Status::Unreachable
        && d.cluster_status.as_deref() == Some("Primary")
        && d.cluster_size
            .and_then(|s| u64::try_from(s).ok())
            .is_some_and(|s| s >= min_size)
}

/// One node's evidence from its own agent's observation of its MariaDB.
///
/// Whether mariadbd runs: it answered (any status but unreachable) → running; a check that
/// timed out → unknown (hung, or overloaded); otherwise what service control said
/// (`service`), else a refused socket → stopped; anything else → unknown.
pub fn evidence_of(o: &Observation) -> GaleraEvidence {
    let d = Details::deserialize(&o.last.details).unwrap_or_default();
    let process = if o.last.status != Status::Unreachable {
        ProcessState::Running
    } else if o.last.failure == Some(FailureKind::Timeout) {
        ProcessState::Unknown
    } else {
        match (d.service.as_deref(), o.last.failure) {
            (Some("running"), _) => ProcessState::Running,
            (Some("stopped"), _) | (_, Some(FailureKind::Refused)) => ProcessState::Stopped,
            _ => ProcessState::Unknown,
        }
    };
    let grastate = match (&d.grastate, d.grastate_missing, &d.grastate_error) {
        (Some(g), _, _) => GrastateEvidence::Present {
            uuid: g.uuid.clone(),
            seqno: g.seqno,
            safe_to_bootstrap: g.safe_to_bootstrap,
        },
        (None, true, _) => GrastateEvidence::Missing,
        (None, false, Some(e)) => GrastateEvidence::Unreadable { error: e.clone() },
        // The probe reads grastate only while mariadbd does not answer (it says -1 then).
        (None, false, None) if process == ProcessState::Running => GrastateEvidence::Unreadable {
            error: "not read while mariadbd runs".into(),
        },
        (None, false, None) => GrastateEvidence::Unreadable {
            error: "not reported (is [mariadb] datadir set?)".into(),
        },
    };
    let answered = o.last.status != Status::Unreachable;
    GaleraEvidence {
        process,
        primary: answered && d.cluster_status.as_deref() == Some("Primary"),
        cluster_size: d.cluster_size.and_then(|s| u64::try_from(s).ok()),
        local_state: d.local_state_comment.clone(),
        wsrep_uuid: d.state_uuid.as_deref().map(str::to_ascii_lowercase),
        last_committed: d.last_committed,
        grastate,
        recovered: if process == ProcessState::Stopped {
            d.recovered
        } else {
            None
        },
        primary_seen_by: BTreeSet::new(),
        bootstrapped: d
            .bootstrapped
            .filter(|_| process != ProcessState::Unknown)
            .map(OutageId),
    }
}

/// Every member's evidence from the health reports: its own agent's fresh observation of its
/// MariaDB (a member without one is absent: silent), plus the peers whose fresh check saw it
/// in a Primary component of a majority.
pub fn evidence_from_reports(
    members: &[NodeId],
    seen: &[Seen],
    freshness_ms: u64,
) -> BTreeMap<NodeId, GaleraEvidence> {
    let quorum = u64::try_from(members.len() / 2 + 1).unwrap_or(u64::MAX);
    let mut out = BTreeMap::new();
    for &m in members {
        let fresh = |s: &&Seen| {
            s.age_ms <= freshness_ms
                && s.observation.id.subject == m
                && s.observation.id.service == Service::Mariadb
                && s.observation.id.target.is_empty()
        };
        let Some(own) = seen.iter().filter(fresh).find(|s| s.observer == m) else {
            continue;
        };
        let mut e = evidence_of(&own.observation);
        e.primary_seen_by = seen
            .iter()
            .filter(fresh)
            .filter(|s| s.observer != m && observed_primary(&s.observation, quorum))
            .map(|s| s.observer)
            .collect();
        out.insert(m, e);
    }
    out
}

/// Whether any fresh report shows a Primary component anywhere (its own agent's or a peer's
/// check).
pub fn any_primary(seen: &[Seen], freshness_ms: u64) -> bool {
    seen.iter().any(|s| {
        s.age_ms <= freshness_ms
            && s.observation.id.service == Service::Mariadb
            && observed_primary(&s.observation, 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{fixtures, ClusterState, EntryMeta, Outcome};
    use crate::ids::{Term, UnixMillis};

    const UUID: &str = "9eaceb67-efac-11f1-b809-474591e831a5";

    fn settings() -> GaleraSettings {
        GaleraSettings {
            freshness_ms: 2000,
            open_after_stopped_ms: 1000,
            open_after_non_primary_ms: 10_000,
            rebootstrap_after_ms: 5_000,
            plant: GaleraPlant::None,
        }
    }

    fn crashed(recovered: Option<i64>) -> GaleraEvidence {
        let mut e = GaleraEvidence::stopped(GrastateEvidence::Present {
            uuid: Some(UUID.into()),
            seqno: None,
            safe_to_bootstrap: false,
        });
        e.recovered = recovered.map(|s| GaleraPosition {
            uuid: Some(UUID.into()),
            seqno: Some(s),
        });
        e
    }

    fn primary(size: u64) -> GaleraEvidence {
        let mut e = crashed(None);
        e.process = ProcessState::Running;
        e.primary = true;
        e.cluster_size = Some(size);
        e.wsrep_uuid = Some(UUID.into());
        e.last_committed = Some(1300);
        e
    }

    struct World {
        members: Vec<NodeId>,
        state: ClusterState,
        evidence: BTreeMap<NodeId, GaleraEvidence>,
        ages: BTreeMap<NodeId, u64>,
        index: u64,
    }

    impl World {
        fn new() -> World {
            let mut w = World {
                members: (1..=3).map(NodeId).collect(),
                state: ClusterState::default(),
                evidence: BTreeMap::new(),
                ages: (1..=3).map(|n| (NodeId(n), 100)).collect(),
                index: 0,
            };
            w.apply(&Command::RegisterMembers {
                members: fixtures::members(3),
            });
            w
        }

        fn inputs(&self) -> GaleraInputs<'_> {
            GaleraInputs {
                members: &self.members,
                authority: &self.state.galera,
                evidence: &self.evidence,
                report_age_ms: &self.ages,
                no_primary_ms: Some(5000),
                bootstrap_fallen_ms: None,
                bootstrap_fallen_running: false,
                maintenance: false,
                in_flight: false,
                settings: settings(),
            }
        }

        fn apply(&mut self, command: &Command) -> Outcome {
            self.index += 1;
            self.state.apply(
                EntryMeta {
                    term: Term(1),
                    index: LogIndex(self.index),
                    at: UnixMillis(0),
                },
                command,
            )
        }

        /// Decides, applies what the plan proposes, and returns the verdict.
        fn step(&mut self) -> String {
            let plan = decide(&self.inputs());
            for c in &plan.proposals {
                assert_eq!(self.apply(c), Outcome::Changed, "{}", plan.verdict);
            }
            plan.verdict
        }
    }

    /// From the crash to the end of the outage: each step's proposal applies, a decision a
    /// former leader made on an older view is rejected, and a new leader with another view
    /// decides nothing more.
    #[test]
    fn a_full_outage_is_opened_decided_once_and_ended() {
        let mut w = World::new();
        for n in 1..=3 {
            w.evidence.insert(NodeId(n), crashed(None));
        }
        assert!(w.step().starts_with("open galera outage 1:"));
        // The agents report their recovered positions; n3 is ahead.
        for (n, s) in [(1, 1200), (2, 1210), (3, 1234)] {
            w.evidence.insert(NodeId(n), crashed(Some(s)));
        }
        // A former leader's decision for another outage than the open one (made on an older
        // view) arrives late.
        let stale = Command::BootstrapGalera {
            outage: OutageId(2),
            node: NodeId(2),
            uuid: Some(UUID.into()),
            seqno: Some(1210),
            mode: BootstrapMode::NewCluster,
            kind: BootstrapKind::Automatic,
            by: String::new(),
            reason: "older view".into(),
            evidence: String::new(),
        };
        assert!(matches!(w.apply(&stale), Outcome::Rejected(why) if why.contains("stale")));
        assert!(w.step().starts_with("bootstrap n3 (outage 1, new cluster)"));
        // A new leader whose view now ranks n1 first proposes no second bootstrap.
        w.evidence.insert(NodeId(1), crashed(Some(9999)));
        let v = w.step();
        assert!(v.starts_with("no action: outage 1 bootstraps n3"), "{v}");
        assert_eq!(
            rank(&w.inputs())[0].node,
            NodeId(1),
            "the dry run shows the new view"
        );
        // n1 sees n3 Primary before n3's own report says so: that only blocks.
        w.evidence.get_mut(&NodeId(3)).expect("n3").primary_seen_by = [NodeId(1)].into();
        assert!(w
            .step()
            .starts_with("waiting: outage 1: bootstrap of n3 under way"));
        // n3 reports itself Primary, alone: the outage ends; the others rejoin it.
        w.evidence.insert(NodeId(3), primary(1));
        assert_eq!(w.step(), "end galera outage 1: n3 is Primary with 1 node");
        assert!(w.state.galera.open().is_none());
        w.evidence.insert(NodeId(1), primary(2));
        w.evidence.insert(NodeId(3), primary(2));
        assert!(w
            .step()
            .starts_with("no action: galera n1, n3 Primary (size 2)"));
    }

    /// The override's refusals that the golden scripts do not show.
    #[test]
    fn override_refusals() {
        let mut w = World::new();
        for n in 1..=3 {
            w.evidence.insert(NodeId(n), crashed(Some(1000 + n as i64)));
        }
        let i = w.inputs();
        let cases = [
            (NodeId(3), true, "api@n1", "", OverrideError::Unexplained),
            (NodeId(3), true, " ", "why", OverrideError::Unexplained),
            (
                NodeId(7),
                true,
                "api@n1",
                "why",
                OverrideError::NotAMember(NodeId(7)),
            ),
            (
                NodeId(3),
                false,
                "api@n1",
                "why",
                OverrideError::DataLossNotAccepted,
            ),
        ];
        for (node, accept, by, why, want) in cases {
            assert_eq!(operator_override(&i, node, accept, by, why), Err(want));
        }
        let ok = operator_override(&i, NodeId(1), true, "api@n1", "why").expect("override");
        assert!(matches!(
            ok,
            Command::BootstrapGalera {
                outage: OutageId(1),
                seqno: Some(1001),
                kind: BootstrapKind::Operator,
                ..
            }
        ));
    }

    /// A report with an impossible position ranks as no state, and never reaches a command.
    #[test]
    fn invalid_reported_positions_rank_as_no_state() {
        let mut w = World::new();
        w.apply(&Command::OpenGaleraOutage {
            outage: OutageId(1),
            reason: "test".into(),
        });
        w.evidence.insert(NodeId(1), crashed(Some(1200)));
        w.evidence.insert(NodeId(2), crashed(Some(-5)));
        let mut shouting = crashed(None);
        shouting.recovered = Some(GaleraPosition {
            uuid: Some(UUID.to_uppercase()),
            seqno: Some(99_999),
        });
        w.evidence.insert(NodeId(3), shouting);
        let plan = decide(&w.inputs());
        let tiers: Vec<(NodeId, Tier)> = plan.ranking.iter().map(|c| (c.node, c.tier)).collect();
        assert_eq!(
            tiers,
            [
                (NodeId(1), Tier::Common),
                (NodeId(2), Tier::NoState),
                (NodeId(3), Tier::NoState)
            ]
        );
        assert!(plan.ranking[1].reason.contains("invalid position"));
        assert!(
            plan.verdict
                .starts_with("bootstrap n1 (outage 1, new cluster)"),
            "{}",
            plan.verdict
        );
    }

    /// Never a bootstrap proposal while any node is Primary, whatever else holds.
    #[test]
    fn no_bootstrap_while_any_node_is_primary() {
        let mut w = World::new();
        w.apply(&Command::OpenGaleraOutage {
            outage: OutageId(1),
            reason: "test".into(),
        });
        for size in [1, 2, 3] {
            for who in 1..=3 {
                for n in 1..=3 {
                    w.evidence.insert(NodeId(n), crashed(Some(1000 + n as i64)));
                }
                w.evidence.insert(NodeId(who), primary(size));
                let plan = decide(&w.inputs());
                assert!(
                    !plan
                        .proposals
                        .iter()
                        .any(|c| matches!(c, Command::BootstrapGalera { .. })),
                    "n{who} Primary size {size}: {}",
                    plan.verdict
                );
            }
        }
    }

    fn observation(subject: u64, last: crate::observation::CheckResult) -> Observation {
        Observation {
            id: crate::observation::ProbeId {
                subject: NodeId(subject),
                service: Service::Mariadb,
                target: String::new(),
            },
            status: last.status,
            last,
            failures: 0,
            successes: 1,
            latency_us: 0,
            observed_at: UnixMillis(0),
        }
    }

    fn answered(primary: bool, size: i64, seqno: i64) -> crate::observation::CheckResult {
        let d = serde_json::json!({
            "cluster_status": if primary { "Primary" } else { "non-Primary" },
            "cluster_size": size,
            "local_state_comment": if primary { "Synced" } else { "Initialized" },
            "state_uuid": UUID.to_uppercase(),
            "last_committed": seqno,
        });
        if primary {
            crate::observation::CheckResult::healthy(d)
        } else {
            crate::observation::CheckResult::down(d, "non-Primary")
        }
    }

    fn failed(kind: FailureKind, details: serde_json::Value) -> crate::observation::CheckResult {
        let mut r = crate::observation::CheckResult::unreachable(kind, "x");
        r.details = details;
        r
    }

    /// Data-driven: what each observation of a node's own MariaDB says as evidence.
    #[test]
    fn evidence_of_observations() {
        let grastate = serde_json::json!({
            "grastate": {"version": "2.1", "uuid": UUID, "seqno": null, "safe_to_bootstrap": false},
            "service": "stopped",
            "recovered": {"uuid": UUID, "seqno": 41},
        });
        type Case = (
            &'static str,
            crate::observation::CheckResult,
            ProcessState,
            bool,
            GrastateEvidence,
            Option<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                "primary",
                answered(true, 3, 9),
                ProcessState::Running,
                true,
                GrastateEvidence::Unreadable {
                    error: "not read while mariadbd runs".into(),
                },
                None,
            ),
            (
                "non-primary",
                answered(false, 1, 9),
                ProcessState::Running,
                false,
                GrastateEvidence::Unreadable {
                    error: "not read while mariadbd runs".into(),
                },
                None,
            ),
            (
                "hung",
                failed(
                    FailureKind::Timeout,
                    serde_json::json!({"service": "running"}),
                ),
                ProcessState::Unknown,
                false,
                GrastateEvidence::Unreadable {
                    error: "not reported (is [mariadb] datadir set?)".into(),
                },
                None,
            ),
            (
                "crashed, recovered",
                failed(FailureKind::Refused, grastate.clone()),
                ProcessState::Stopped,
                false,
                GrastateEvidence::Present {
                    uuid: Some(UUID.into()),
                    seqno: None,
                    safe_to_bootstrap: false,
                },
                Some(41),
            ),
            (
                "refused without notes",
                failed(
                    FailureKind::Refused,
                    serde_json::json!({"grastate_missing": true}),
                ),
                ProcessState::Stopped,
                false,
                GrastateEvidence::Missing,
                None,
            ),
            (
                "socket missing, service says running (starting)",
                failed(
                    FailureKind::Io,
                    serde_json::json!({"service": "running", "grastate_missing": true}),
                ),
                ProcessState::Running,
                false,
                GrastateEvidence::Missing,
                None,
            ),
            (
                "socket missing, no notes",
                failed(
                    FailureKind::Io,
                    serde_json::json!({"grastate_error": "bad"}),
                ),
                ProcessState::Unknown,
                false,
                GrastateEvidence::Unreadable {
                    error: "bad".into(),
                },
                None,
            ),
        ];
        for (name, check, process, primary, grastate, recovered) in cases {
            let e = evidence_of(&observation(1, check));
            assert_eq!(e.process, process, "{name}");
            assert_eq!(e.primary, primary, "{name}");
            assert_eq!(e.grastate, grastate, "{name}");
            assert_eq!(e.recovered.and_then(|p| p.seqno), recovered, "{name}");
            if process == ProcessState::Running && e.wsrep_uuid.is_some() {
                assert_eq!(e.wsrep_uuid.as_deref(), Some(UUID), "{name}: lowercased");
            }
        }
    }

    /// Evidence comes from each node's own agent; peers only add Primary sightings of a
    /// majority; stale reports do not count.
    #[test]
    fn evidence_from_reports_uses_own_reports_and_fresh_peer_sightings() {
        let seen =
            |observer: u64, subject: u64, age_ms: u64, r: crate::observation::CheckResult| Seen {
                observer: NodeId(observer),
                observation: observation(subject, r).into(),
                age_ms,
            };
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let reports = vec![
            seen(
                1,
                1,
                100,
                failed(
                    FailureKind::Refused,
                    serde_json::json!({"grastate_missing": true}),
                ),
            ),
            // n2's own report is stale: n2 is absent.
            seen(2, 2, 9_000, answered(true, 3, 5)),
            // n1 sees n2 Primary of 2 (a majority of 3); n3's sighting is stale.
            seen(1, 2, 100, answered(true, 2, 5)),
            seen(3, 2, 9_000, answered(true, 2, 5)),
            seen(3, 3, 100, answered(false, 1, 5)),
            // n2 sees n3 Primary of 1 only: not a majority.
            seen(2, 3, 100, answered(true, 1, 5)),
        ];
        let e = evidence_from_reports(&members, &reports, 2000);
        assert_eq!(
            e.keys().copied().collect::<Vec<_>>(),
            vec![NodeId(1), NodeId(3)]
        );
        assert!(e[&NodeId(3)].primary_seen_by.is_empty());
        assert!(any_primary(&reports, 2000));
        assert!(!any_primary(&reports[..1], 2000));
        let reports2 = vec![
            seen(2, 2, 100, answered(false, 1, 5)),
            seen(1, 2, 100, answered(true, 2, 5)),
        ];
        let e = evidence_from_reports(&members, &reports2, 2000);
        assert_eq!(
            e[&NodeId(2)]
                .primary_seen_by
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![NodeId(1)]
        );
    }

    /// The dry run: the choice as if an outage were open, and nothing proposed.
    #[test]
    fn dry_run_shows_the_choice_and_proposes_nothing() {
        let mut w = World::new();
        for (n, s) in [(1, 38), (2, 40), (3, 39)] {
            w.evidence.insert(NodeId(n), crashed(Some(s)));
        }
        let plan = dry_run(&w.inputs());
        assert!(plan.proposals.is_empty());
        assert!(
            plan.verdict
                .starts_with("no outage is open; if one were: bootstrap n2"),
            "{}",
            plan.verdict
        );
        w.ages.remove(&NodeId(1));
        let plan = dry_run(&w.inputs());
        assert!(plan.verdict.contains("waiting for n1"), "{}", plan.verdict);
        // A Primary anywhere: nothing to bootstrap, and the dry run says so.
        w.ages.insert(NodeId(1), 100);
        w.evidence.insert(NodeId(1), primary(3));
        let plan = dry_run(&w.inputs());
        assert!(
            plan.verdict.starts_with("no action: galera n1"),
            "{}",
            plan.verdict
        );
    }
}
