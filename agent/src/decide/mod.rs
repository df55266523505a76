//! The decision policy: one pure function from an immutable [`View`] to a [`Plan`].
//!
//! Runs on the leader once per control-loop cycle. It reads no clock and does no I/O; what it
//! needs comes in the view, and what should happen goes out as commands to propose plus a
//! one-line human verdict that is logged and shown in the status API.
//!
//! Decisions: keep the replicated membership view equal to the leader's configured peers
//! (here), and the Redis master ([`redis`]). Galera recovery and backups add modules here.
//!
//! Invariant: a command whose earlier proposal is still in flight is never proposed again
//! (the view says so), so a slow commit cannot cause duplicate actions.

pub mod redis;
pub mod timeline;

use std::collections::BTreeMap;

use crate::cluster::{ClusterState, Command, MemberInfo};
use crate::ids::NodeId;

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
    /// The Redis decision's inputs, when Redis is managed.
    pub redis: Option<redis::RedisInputs<'a>>,
}

/// What to do this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One line for operators.
    pub verdict: String,
    /// Commands to propose.
    pub proposals: Vec<Command>,
    /// The Redis decision, when it was taken this cycle.
    pub redis: Option<redis::RedisPlan>,
}

/// Decides.
pub fn decide(view: &View<'_>) -> Plan {
    if !view.is_leader {
        return Plan {
            verdict: format!("no action: {} is not the leader", view.me),
            proposals: vec![],
            redis: None,
        };
    }
    if view.cluster.members != *view.configured {
        if view.members_in_flight {
            return Plan {
                verdict: "waiting: membership registration in flight".into(),
                proposals: vec![],
                redis: None,
            };
        }
        return Plan {
            verdict: format!(
                "register membership: replicated view has {} members, configuration has {}",
                view.cluster.members.len(),
                view.configured.len()
            ),
            proposals: vec![Command::RegisterMembers {
                members: view.configured.clone(),
            }],
            redis: None,
        };
    }
    if let Some(inputs) = &view.redis {
        let plan = redis::decide(inputs);
        return Plan {
            verdict: plan.verdict.clone(),
            proposals: plan.proposals.clone(),
            redis: Some(plan),
        };
    }
    let maintenance = if view.cluster.maintenance.enabled {
        format!(", maintenance on ({})", view.cluster.maintenance.reason)
    } else {
        String::new()
    };
    Plan {
        verdict: format!(
            "no action: {} members registered{maintenance}",
            view.cluster.members.len()
        ),
        proposals: vec![],
        redis: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> BTreeMap<NodeId, MemberInfo> {
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
                redis: None,
            });
            assert_eq!(plan.verdict, verdict);
            assert_eq!(!plan.proposals.is_empty(), proposes, "{verdict}");
        }
    }
}
