//! The web rotation decision: which nodes every HAProxy's web backend keeps out of service.
//!
//! Evidence ([`web_health_from_reports`]): each node's own agent probes its PHP-FPM pool and
//! its GlusterFS mounts and reports them to the leader. A node is
//! - **healthy** when its fresh report has every one of them healthy (a degraded mount still
//!   serves files: it counts as healthy);
//! - **sick** when its PHP-FPM is down, unreachable or saturated (the probe's `degraded`:
//!   requests queueing, or the pool at `pm.max_children`), or a mount is down or hung. The
//!   sickness has a score, so that the least sick node can be kept: PHP-FPM not serving 4, a
//!   mount not serving 2 each, PHP-FPM saturated 1;
//! - **unknown** when its agent sent no fresh report: nothing is decided on doubt, the node
//!   stays as the rotation has it (HAProxy's own check of the server still takes a dead
//!   PHP-FPM out of that HAProxy).
//!
//! The statuses are the probes' trackers', so a node is drained only after its fall threshold
//! of failed checks and readmitted only after its rise threshold of good ones.
//!
//! The decision ([`decide`]): drain every sick node, readmit every healthy one, and never
//! drain every member: when every node would be out, the least sick stays in (lowest score;
//! then the one already in service; then the lowest id) and the rotation says so in `kept`.
//! A drained node is readmitted only once the leader has seen it healthy for
//! [`WebSettings::readmit_after_ms`] without a break (a drained pool sheds its load, and a
//! saturated one would look healthy at once and flap). The whole rotation is proposed as one
//! command at the next epoch, only when the drained set or the kept node changes (a new reason
//! alone is not a change). Maintenance freezes it.

use std::collections::BTreeMap;

use crate::cluster::{Command, WebAuthority, WebKept};
use crate::health::Seen;
use crate::ids::NodeId;
use crate::observation::{Service, Status};

/// The decision's tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebSettings {
    /// A report older than this (ms) is no evidence: its node counts as unknown.
    pub freshness_ms: u64,
    /// A drained node is readmitted once the leader has seen it healthy for this long (ms):
    /// a drained pool sheds its load, so a saturated one looks healthy again at once.
    pub readmit_after_ms: u64,
    /// A planted bug (simulation only; production: [`WebPlant::None`]).
    #[doc(hidden)]
    pub plant: WebPlant,
}

/// A bug the whole-cluster simulation plants in the decision, to prove its web invariants
/// catch it. Production always runs [`WebPlant::None`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WebPlant {
    /// No bug.
    #[default]
    None,
    /// Drain on doubt: a node without a fresh report is drained as if sick.
    UnknownAsSick,
    /// Drain every sick node, the last one too (no node kept).
    DrainEvery,
}

/// What the leader knows of one node's web tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeWeb {
    /// No fresh report of its PHP-FPM from its own agent.
    Unknown(String),
    /// PHP-FPM and every mount serve.
    Healthy,
    /// Something does not serve.
    Sick {
        /// How sick (see the module docs): the lowest is kept when every node is sick.
        score: u32,
        /// What is wrong, one phrase each, in a fixed order.
        reasons: Vec<String>,
    },
}

impl NodeWeb {
    fn score(&self) -> u32 {
        match self {
            NodeWeb::Healthy => 0,
            NodeWeb::Sick { score, .. } => *score,
            NodeWeb::Unknown(_) => u32::MAX,
        }
    }

    /// One line for the status.
    pub fn describe(&self) -> String {
        match self {
            NodeWeb::Unknown(why) => format!("unknown ({why})"),
            NodeWeb::Healthy => "healthy".into(),
            NodeWeb::Sick { reasons, .. } => reasons.join(", "),
        }
    }
}

/// Score of PHP-FPM not serving.
const PHPFPM_DOWN: u32 = 4;
/// Score of each mount not serving.
const MOUNT_DOWN: u32 = 2;
/// Score of a saturated PHP-FPM.
const PHPFPM_SATURATED: u32 = 1;

/// Longest error text carried into a reason.
const MAX_ERROR: usize = 160;

/// Each member's web health from the fresh reports of its own agent.
pub fn web_health_from_reports(
    members: &[NodeId],
    seen: &[Seen],
    freshness_ms: u64,
) -> BTreeMap<NodeId, NodeWeb> {
    members
        .iter()
        .map(|&n| {
            let own: Vec<&Seen> = seen
                .iter()
                .filter(|s| {
                    s.observer == n
                        && s.observation.id.subject == n
                        && matches!(
                            s.observation.id.service,
                            Service::Phpfpm | Service::GlusterMount
                        )
                })
                .collect();
            let fpm = own
                .iter()
                .find(|s| s.observation.id.service == Service::Phpfpm);
            let health = match fpm {
                None => NodeWeb::Unknown("its agent reported no PHP-FPM check".into()),
                Some(f) if f.age_ms > freshness_ms => {
                    NodeWeb::Unknown(format!("no report from its agent within {freshness_ms} ms"))
                }
                Some(_) => judge(&own),
            };
            (n, health)
        })
        .collect()
}

fn judge(own: &[&Seen]) -> NodeWeb {
    let mut score = 0;
    let mut reasons = Vec::new();
    for s in own {
        let o = &s.observation;
        let error = o
            .last
            .error
            .as_deref()
            .filter(|_| o.last.status != Status::Healthy)
            .map(|e| {
                let e: String = e.chars().take(MAX_ERROR).collect();
                format!(": {e}")
            })
            .unwrap_or_default();
        match (o.id.service, o.status) {
            (_, Status::Healthy) | (Service::GlusterMount, Status::Degraded) => {}
            (Service::Phpfpm, Status::Degraded) => {
                score += PHPFPM_SATURATED;
                reasons.push(format!("php-fpm saturated{error}"));
            }
            (Service::Phpfpm, st) => {
                score += PHPFPM_DOWN;
                reasons.push(format!("php-fpm {}{error}", st.as_str()));
            }
            (_, st) => {
                score += MOUNT_DOWN;
                reasons.push(format!("mount {} {}{error}", o.id.target, st.as_str()));
            }
        }
    }
    if reasons.is_empty() {
        NodeWeb::Healthy
    } else {
        NodeWeb::Sick { score, reasons }
    }
}

/// The decision's inputs.
#[derive(Debug)]
pub struct WebInputs<'a> {
    /// The registered members, sorted.
    pub members: &'a [NodeId],
    /// The committed rotation.
    pub authority: &'a WebAuthority,
    /// Each member's web health.
    pub health: &'a BTreeMap<NodeId, NodeWeb>,
    /// How long (ms) the leader has seen each healthy member healthy without a break.
    pub healthy_for_ms: &'a BTreeMap<NodeId, u64>,
    /// The tunables.
    pub settings: WebSettings,
    /// Whether maintenance mode is on (freezes the rotation).
    pub maintenance: bool,
    /// Whether a rotation change is in flight.
    pub in_flight: bool,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebPlan {
    /// One line for operators.
    pub verdict: String,
    /// At most one [`Command::SetWebRotation`].
    pub proposals: Vec<Command>,
    /// Each member's health as the decision saw it, one line each (for the status).
    pub nodes: BTreeMap<NodeId, String>,
}

/// Decides the rotation. Pure.
pub fn decide(i: &WebInputs<'_>) -> WebPlan {
    let nodes: BTreeMap<NodeId, String> = i
        .members
        .iter()
        .map(|n| {
            (
                *n,
                i.health
                    .get(n)
                    .map_or_else(|| "unknown (no evidence)".into(), NodeWeb::describe),
            )
        })
        .collect();
    let plan = |verdict: String, proposals| WebPlan {
        verdict,
        proposals,
        nodes: nodes.clone(),
    };
    let a = i.authority;
    if i.maintenance {
        return plan(
            format!(
                "no action: maintenance on, web rotation frozen ({})",
                describe_rotation(a.drained.keys(), a.kept.as_ref().map(|k| k.node))
            ),
            vec![],
        );
    }
    if i.in_flight {
        return plan("waiting: a web rotation change is in flight".into(), vec![]);
    }
    let unknown = NodeWeb::Unknown("no evidence".into());
    let health = |n: &NodeId| i.health.get(n).unwrap_or(&unknown);
    let mut drained: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut waits = Vec::new();
    for n in i.members {
        match health(n) {
            NodeWeb::Healthy => {
                let for_ms = i.healthy_for_ms.get(n).copied().unwrap_or(0);
                if let Some(d) = a.drained.get(n) {
                    if for_ms < i.settings.readmit_after_ms {
                        drained.insert(*n, d.reason.clone());
                        waits.push(format!(
                            "{n} healthy for {for_ms} ms, readmitted after {} ms",
                            i.settings.readmit_after_ms
                        ));
                    }
                }
            }
            NodeWeb::Sick { reasons, .. } => {
                drained.insert(*n, reasons.join(", "));
            }
            NodeWeb::Unknown(why) => {
                if let Some(d) = a.drained.get(n) {
                    drained.insert(*n, d.reason.clone());
                } else if i.settings.plant == WebPlant::UnknownAsSick {
                    drained.insert(*n, format!("unknown ({why})"));
                }
            }
        }
    }
    let mut kept = None;
    if !i.members.is_empty()
        && i.members.iter().all(|n| drained.contains_key(n))
        && i.settings.plant != WebPlant::DrainEvery
    {
        let keep = i
            .members
            .iter()
            .copied()
            .min_by_key(|n| (health(n).score(), !a.in_rotation(*n), *n));
        if let Some(k) = keep {
            let what = drained.remove(&k).unwrap_or_default();
            kept = Some(WebKept {
                node: k,
                reason: format!(
                    "every web node is sick; {k} is the least sick and stays in service ({what})"
                ),
            });
        }
    }
    let same_set = drained.keys().eq(a.drained.keys());
    let same_kept = kept.as_ref().map(|k| k.node) == a.kept.as_ref().map(|k| k.node);
    if same_set && same_kept {
        let mut verdict = format!(
            "no action: web rotation {}",
            describe_rotation(a.drained.keys(), a.kept.as_ref().map(|k| k.node))
        );
        if let Some(k) = &a.kept {
            verdict.push_str(&format!("; {}", k.reason));
        }
        for w in &waits {
            verdict.push_str(&format!("; {w}"));
        }
        return plan(verdict, vec![]);
    }
    let mut changes = Vec::new();
    for (n, why) in &drained {
        if !a.drained.contains_key(n) {
            changes.push(format!("drain {n} ({why})"));
        }
    }
    for n in a.drained.keys() {
        // A drained node that becomes the kept one is named by the kept reason below.
        if !drained.contains_key(n) && kept.as_ref().is_none_or(|k| k.node != *n) {
            changes.push(format!("readmit {n}"));
        }
    }
    if let Some(k) = &kept {
        if a.kept.as_ref().map(|x| x.node) != Some(k.node) {
            changes.push(k.reason.clone());
        }
    } else if let Some(old) = &a.kept {
        changes.push(format!("{} no longer the only one in service", old.node));
    }
    let verdict = format!("web rotation: {}", changes.join("; "));
    plan(
        verdict.clone(),
        vec![Command::SetWebRotation {
            epoch: a.epoch.next(),
            drained,
            kept,
            reason: verdict,
        }],
    )
}

fn describe_rotation<'a>(
    drained: impl Iterator<Item = &'a NodeId>,
    kept: Option<NodeId>,
) -> String {
    let d: Vec<String> = drained.map(ToString::to_string).collect();
    let mut s = if d.is_empty() {
        "has every node in service".to_string()
    } else {
        format!("drains {}", d.join(", "))
    };
    if let Some(k) = kept {
        s.push_str(&format!(", keeps sick {k} in service"));
    }
    s
}

#[cfg(test)]
mod tests;
