//! The decision policy: one pure function from an immutable [`View`] to a [`Plan`].
//!
//! Runs on the leader once per control-loop cycle. It reads no clock and does no I/O; what it
//! needs comes in the view, and what should happen goes out as commands to propose plus a
//! one-line human verdict that is logged and shown in the status API.
//!
//! The plan is composed: membership first (here), then every managed service's own decision
//! module, each from its own inputs ([`ServiceInputs`]) to its own plan ([`ServicePlan`]).
//! Today that is the Redis master ([`redis`]), Galera full-outage recovery ([`galera`]) and
//! the Galera writer with its evictions ([`galera_writer`]), backups ([`backup`]), the web
//! rotation ([`web`]) and remediations ([`remedy`]). A service's decision never sees another service's inputs, and the
//! composition only concatenates: no service can hold back another.
//! Beside them, [`auto_increment`] is a pure cross-node check for the status (Galera nodes
//! sharing an `auto_increment_offset`); it proposes nothing.
//!
//! Invariants:
//! - Until the replicated membership equals the configured one, no service decides: each
//!   decision counts quorums over the registered members.
//! - A command whose earlier proposal for the same authority is still in flight is never
//!   proposed again (each service's inputs say so), so a slow commit cannot cause duplicate
//!   actions.

pub mod auto_increment;
pub mod backup;
pub mod galera;
pub mod galera_writer;
pub mod redis;
pub mod remedy;
pub mod timeline;
pub mod web;

use std::collections::BTreeMap;

use crate::cluster::{Authority, ClusterState, Command, MemberInfo};
use crate::ids::NodeId;

/// One managed service's decision inputs.
#[derive(Debug)]
pub enum ServiceInputs<'a> {
    /// The Redis master.
    Redis(redis::RedisInputs<'a>),
    /// Galera full-outage recovery.
    Galera(galera::GaleraInputs<'a>),
    /// The Galera writer and evictions.
    GaleraWriter(galera_writer::WriterInputs<'a>),
    /// Backups.
    Backup(backup::BackupInputs<'a>),
    /// The web rotation.
    Web(web::WebInputs<'a>),
    /// Remediations.
    Remedy(remedy::RemedyInputs<'a>),
}

impl ServiceInputs<'_> {
    /// The authority the decision proposes changes to.
    pub fn authority(&self) -> Authority {
        match self {
            ServiceInputs::Redis(_) => Authority::Redis,
            ServiceInputs::Galera(_) => Authority::Galera,
            ServiceInputs::GaleraWriter(_) => Authority::GaleraWriter,
            ServiceInputs::Backup(_) => Authority::Backup,
            ServiceInputs::Web(_) => Authority::Web,
            ServiceInputs::Remedy(_) => Authority::Remedy,
        }
    }
}

/// One managed service's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicePlan {
    /// The Redis master.
    Redis(redis::RedisPlan),
    /// Galera full-outage recovery.
    Galera(galera::GaleraPlan),
    /// The Galera writer and evictions.
    GaleraWriter(galera_writer::WriterPlan),
    /// Backups.
    Backup(backup::BackupPlan),
    /// The web rotation.
    Web(web::WebPlan),
    /// Remediations.
    Remedy(remedy::RemedyPlan),
}

impl ServicePlan {
    /// The authority the plan proposes changes to.
    pub fn authority(&self) -> Authority {
        match self {
            ServicePlan::Redis(_) => Authority::Redis,
            ServicePlan::Galera(_) => Authority::Galera,
            ServicePlan::GaleraWriter(_) => Authority::GaleraWriter,
            ServicePlan::Backup(_) => Authority::Backup,
            ServicePlan::Web(_) => Authority::Web,
            ServicePlan::Remedy(_) => Authority::Remedy,
        }
    }

    /// The plan's one-line verdict.
    pub fn verdict(&self) -> &str {
        match self {
            ServicePlan::Redis(p) => &p.verdict,
            ServicePlan::Galera(p) => &p.verdict,
            ServicePlan::GaleraWriter(p) => &p.verdict,
            ServicePlan::Backup(p) => &p.verdict,
            ServicePlan::Web(p) => &p.verdict,
            ServicePlan::Remedy(p) => &p.verdict,
        }
    }

    /// The Redis plan, when this is one.
    pub fn as_redis(&self) -> Option<&redis::RedisPlan> {
        match self {
            ServicePlan::Redis(p) => Some(p),
            _ => None,
        }
    }

    /// The Galera plan, when this is one.
    pub fn as_galera(&self) -> Option<&galera::GaleraPlan> {
        match self {
            ServicePlan::Galera(p) => Some(p),
            _ => None,
        }
    }

    /// The Galera writer plan, when this is one.
    pub fn as_galera_writer(&self) -> Option<&galera_writer::WriterPlan> {
        match self {
            ServicePlan::GaleraWriter(p) => Some(p),
            _ => None,
        }
    }

    /// The web rotation plan, when this is one.
    pub fn as_web(&self) -> Option<&web::WebPlan> {
        match self {
            ServicePlan::Web(p) => Some(p),
            _ => None,
        }
    }

    /// The remediation plan, when this is one.
    pub fn as_remedy(&self) -> Option<&remedy::RemedyPlan> {
        match self {
            ServicePlan::Remedy(p) => Some(p),
            _ => None,
        }
    }

    /// The backup plan, when this is one.
    pub fn as_backup(&self) -> Option<&backup::BackupPlan> {
        match self {
            ServicePlan::Backup(p) => Some(p),
            _ => None,
        }
    }

    /// The commands the plan proposes.
    pub fn proposals(&self) -> &[Command] {
        match self {
            ServicePlan::Redis(p) => &p.proposals,
            ServicePlan::Galera(p) => &p.proposals,
            ServicePlan::GaleraWriter(p) => &p.proposals,
            ServicePlan::Backup(p) => &p.proposals,
            ServicePlan::Web(p) => &p.proposals,
            ServicePlan::Remedy(p) => &p.proposals,
        }
    }

    /// Whether the plan wants nothing done.
    pub fn is_no_action(&self) -> bool {
        self.verdict().starts_with("no action")
    }
}

/// Everything a decision may look at, built once per cycle.
#[derive(Debug)]
pub struct View<'a> {
    /// This node.
    pub me: NodeId,
    /// Whether this node is the Raft leader.
    pub is_leader: bool,
    /// The committed cluster state.
    pub cluster: &'a ClusterState,
    /// Members as this node is configured.
    pub configured: &'a BTreeMap<NodeId, MemberInfo>,
    /// Whether a membership registration proposed earlier is still in flight.
    pub members_in_flight: bool,
    /// The managed services' inputs, in a fixed order.
    pub services: Vec<ServiceInputs<'a>>,
}

/// What to do this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One line for operators: the membership verdict, or every service's verdict.
    pub verdict: String,
    /// Commands to propose (membership only; each service's are in its plan).
    pub proposals: Vec<Command>,
    /// Each service's decision, in the order of the view's inputs; empty while membership
    /// is not settled.
    pub services: Vec<ServicePlan>,
}

impl Plan {
    /// Every command to propose: membership's, then each service's.
    pub fn all_proposals(&self) -> impl Iterator<Item = &Command> {
        self.proposals
            .iter()
            .chain(self.services.iter().flat_map(ServicePlan::proposals))
    }

    /// The plan of `authority`, when it decided this cycle.
    pub fn service(&self, authority: Authority) -> Option<&ServicePlan> {
        self.services.iter().find(|p| p.authority() == authority)
    }
}

fn membership_only(verdict: String, proposals: Vec<Command>) -> Plan {
    Plan {
        verdict,
        proposals,
        services: vec![],
    }
}

/// Decides.
pub fn decide(view: &View<'_>) -> Plan {
    if !view.is_leader {
        return membership_only(format!("no action: {} is not the leader", view.me), vec![]);
    }
    if view.cluster.members != *view.configured {
        if view.members_in_flight {
            return membership_only("waiting: membership registration in flight".into(), vec![]);
        }
        return membership_only(
            format!(
                "register membership: replicated view has {} members, configuration has {}",
                view.cluster.members.len(),
                view.configured.len()
            ),
            vec![Command::RegisterMembers {
                members: view.configured.clone(),
            }],
        );
    }
    let services: Vec<ServicePlan> = view
        .services
        .iter()
        .map(|inputs| match inputs {
            ServiceInputs::Redis(i) => ServicePlan::Redis(redis::decide(i)),
            ServiceInputs::Galera(i) => ServicePlan::Galera(galera::decide(i)),
            ServiceInputs::GaleraWriter(i) => ServicePlan::GaleraWriter(galera_writer::decide(i)),
            ServiceInputs::Backup(i) => ServicePlan::Backup(backup::decide_backup(i)),
            ServiceInputs::Web(i) => ServicePlan::Web(web::decide(i)),
            ServiceInputs::Remedy(i) => ServicePlan::Remedy(remedy::decide(i)),
        })
        .collect();
    let verdict = match services.as_slice() {
        [] => {
            let maintenance = if view.cluster.maintenance.enabled {
                format!(", maintenance on ({})", view.cluster.maintenance.reason)
            } else {
                String::new()
            };
            format!(
                "no action: {} members registered{maintenance}",
                view.cluster.members.len()
            )
        }
        [only] => only.verdict().to_string(),
        many => many
            .iter()
            .map(|p| format!("{}: {}", p.authority(), p.verdict()))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Plan {
        verdict,
        proposals: vec![],
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::fixtures::members;

    /// Data-driven: (is_leader, registered members, in flight, maintenance) -> verdict, proposes?
    #[test]
    fn decisions_table() {
        let configured = members(3);
        let cases = [
            (
                false,
                0,
                false,
                false,
                "no action: n1 is not the leader",
                false,
            ),
            (
                true,
                0,
                false,
                false,
                "register membership: replicated view has 0 members, configuration has 3",
                true,
            ),
            (
                true,
                0,
                true,
                false,
                "waiting: membership registration in flight",
                false,
            ),
            (
                true,
                2,
                false,
                false,
                "register membership: replicated view has 2 members, configuration has 3",
                true,
            ),
            (
                true,
                3,
                false,
                false,
                "no action: 3 members registered",
                false,
            ),
            (
                true,
                3,
                false,
                true,
                "no action: 3 members registered, maintenance on (upgrade)",
                false,
            ),
        ];
        for (is_leader, registered, in_flight, maint, verdict, proposes) in cases {
            let mut cluster = ClusterState {
                members: members(registered),
                ..ClusterState::default()
            };
            cluster.maintenance.enabled = maint;
            cluster.maintenance.reason = "upgrade".into();
            let plan = decide(&View {
                me: NodeId(1),
                is_leader,
                cluster: &cluster,
                configured: &configured,
                members_in_flight: in_flight,
                services: vec![],
            });
            assert_eq!(plan.verdict, verdict);
            assert_eq!(!plan.proposals.is_empty(), proposes, "{verdict}");
        }
    }

    /// The composition: services decide only once membership is settled, a single service's
    /// verdict is the plan's, and the plan carries each service's proposals.
    #[test]
    fn services_decide_only_after_membership_and_compose() {
        use crate::cluster::RedisAuthority;
        use crate::decide::redis::{self, FailoverSettings, RedisInputs};
        let configured = members(3);
        let ids: Vec<NodeId> = configured.keys().copied().collect();
        let authority = RedisAuthority::default();
        let ages = BTreeMap::new();
        let settings = FailoverSettings {
            freshness_ms: 3000,
            lease_ms: 3000,
            clock_margin_ms: 1000,
            hold_down_ms: 30_000,
            max_lag_bytes: 1 << 20,
            link_stale_after_ms: 5000,
            hung_after_ms: 750,
        };
        let inputs = || RedisInputs {
            members: &ids,
            authority: &authority,
            seen: &[],
            report_age_ms: &ages,
            since_change_ms: None,
            suspect_embargo_ms: None,
            suspect_reconciled: false,
            suspect_applied_by_all: false,
            maintenance: false,
            in_flight: false,
            settings,
        };
        // (registered members, expected verdict prefix, services decided)
        let cases = [
            (2, "register membership", 0),
            (3, &*redis::decide(&inputs()).verdict, 1),
        ];
        for (registered, verdict, decided) in cases {
            let cluster = ClusterState {
                members: members(registered),
                ..ClusterState::default()
            };
            let plan = decide(&View {
                me: NodeId(1),
                is_leader: true,
                cluster: &cluster,
                configured: &configured,
                members_in_flight: false,
                services: vec![ServiceInputs::Redis(inputs())],
            });
            assert!(plan.verdict.starts_with(verdict), "{}", plan.verdict);
            assert_eq!(plan.services.len(), decided, "{}", plan.verdict);
            assert_eq!(
                plan.service(Authority::Redis).is_some(),
                decided == 1,
                "{}",
                plan.verdict
            );
            let all: Vec<&Command> = plan.all_proposals().collect();
            let expected = plan.proposals.len()
                + plan
                    .services
                    .iter()
                    .map(|p| p.proposals().len())
                    .sum::<usize>();
            assert_eq!(all.len(), expected);
        }
    }
}
