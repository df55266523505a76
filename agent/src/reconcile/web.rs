//! The web reconciler: every agent keeps *its own* HAProxy's web backend (`web-pool`, `be_php`
//! in the lab) on the committed web rotation.
//!
//! A drained node's server is set `maint` without cutting its sessions: requests in flight
//! finish, no new request goes to it. Every other server is set `ready`; it is not forced up,
//! so its own HAProxy check (`option httpchk`) brings it back once PHP-FPM answers. Actions are
//! admitted by an epoch fence keyed by the rotation change's term and index
//! ([`BackendRouter`]).
//!
//! Caveat: the HAProxy side follows the committed state without a lease; a cut-off agent's
//! HAProxy keeps its last rotation, and its checks still take a dead PHP-FPM out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actuator::haproxy::{AdminMode, Policy, Sessions};
use crate::actuator::DecisionEpoch;
use crate::cluster::WebAuthority;
use crate::ids::{Epoch, NodeId};

use super::redis::HaproxyTarget;
use super::route::BackendRouter;

/// What the web reconciler drives towards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebTarget {
    /// The committed rotation.
    pub authority: WebAuthority,
}

impl WebTarget {
    /// The decision epoch of the newest rotation change (default before the first).
    pub fn epoch(&self) -> DecisionEpoch {
        DecisionEpoch::of_change(
            self.authority
                .last_change
                .as_ref()
                .map(|c| (c.term, c.index)),
        )
    }
}

/// The outcome of one cycle, for the status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebReport {
    /// The rotation epoch this cycle worked towards.
    pub epoch: Epoch,
    /// HAProxy actions run this cycle.
    pub haproxy_actions: Vec<String>,
    /// HAProxy verdict.
    pub haproxy_verdict: Option<String>,
    /// HAProxy error of this cycle (the next cycle retries).
    pub haproxy_error: Option<String>,
}

/// The desired admin state of the web backend: drained nodes `maint`, the others `ready`.
pub fn desired_backend(
    authority: &WebAuthority,
    servers: &BTreeMap<NodeId, String>,
) -> BTreeMap<String, AdminMode> {
    servers
        .iter()
        .map(|(n, name)| {
            let mode = if authority.in_rotation(*n) {
                AdminMode::Ready
            } else {
                AdminMode::Maint
            };
            (name.clone(), mode)
        })
        .collect()
}

/// Keeps one node's HAProxy web backend on the committed rotation.
pub struct WebReconciler {
    router: BackendRouter,
}

impl WebReconciler {
    /// A reconciler of `haproxy`'s web backend, re-reading it every `recheck` quiet cycles.
    pub fn new(haproxy: HaproxyTarget, recheck: u32) -> Self {
        WebReconciler {
            router: BackendRouter::new(
                haproxy,
                Policy {
                    sessions: Sessions::Keep,
                    force_up_on_enter: false,
                },
            )
            .with_recheck(recheck),
        }
    }

    /// Runs one cycle towards `target`. Never panics; errors end up in the report.
    pub async fn cycle(&mut self, target: &WebTarget) -> WebReport {
        let desired = desired_backend(&target.authority, self.router.servers());
        let routed = self.router.route(desired, target.epoch()).await;
        WebReport {
            epoch: target.authority.epoch,
            haproxy_actions: routed.actions,
            haproxy_verdict: routed.verdict,
            haproxy_error: routed.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::actuator::haproxy::{Haproxy, SimHaproxy};
    use crate::cluster::{ClusterState, Command, EntryMeta, WebKept};
    use crate::ids::{LogIndex, Term, UnixMillis};

    fn target(h: &SimHaproxy) -> HaproxyTarget {
        HaproxyTarget {
            haproxy: Arc::new(h.clone()),
            backend: "be_php".into(),
            servers: (1..=3).map(|n| (NodeId(n), format!("php{n}"))).collect(),
            save_state: false,
        }
    }

    fn futures_block<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    fn sim() -> SimHaproxy {
        let h = SimHaproxy::new(std::time::Duration::from_secs(1));
        for n in 1..=3 {
            h.add_server("be_php", &format!("php{n}"), 9000, false);
        }
        h
    }

    /// Drain, keep, readmit, through the simulated HAProxy; an older rotation applied after a
    /// newer one changes nothing.
    #[test]
    fn follows_the_committed_rotation() {
        let h = sim();
        let mut rec = WebReconciler::new(target(&h), 1);
        let mut state = ClusterState {
            members: crate::cluster::fixtures::members(3),
            ..ClusterState::default()
        };
        let mut apply = |i: u64, epoch: u64, drained: &[u64], kept: Option<u64>| {
            state.apply(
                EntryMeta {
                    term: Term(1),
                    index: LogIndex(i),
                    at: UnixMillis(0),
                },
                &Command::SetWebRotation {
                    epoch: Epoch(epoch),
                    drained: drained
                        .iter()
                        .map(|&n| (NodeId(n), "sick".to_string()))
                        .collect(),
                    kept: kept.map(|n| WebKept {
                        node: NodeId(n),
                        reason: "least sick".into(),
                    }),
                    reason: String::new(),
                },
            );
            WebTarget {
                authority: state.web.clone(),
            }
        };
        let modes = |h: &SimHaproxy| -> Vec<String> {
            futures_block(h.show_servers_state(Some("be_php")))
                .iter()
                .flatten()
                .map(|r| format!("{}={}", r.server, r.admin_state.mode()))
                .collect()
        };
        let t1 = apply(1, 1, &[2], None);
        let r = futures_block(rec.cycle(&t1));
        assert_eq!(r.haproxy_actions, ["set server be_php/php2 state maint"]);
        assert_eq!(modes(&h), ["php1=ready", "php2=maint", "php3=ready"]);
        // Converged: nothing more.
        assert!(futures_block(rec.cycle(&t1)).haproxy_actions.is_empty());
        let t2 = apply(2, 2, &[1, 3], Some(2));
        futures_block(rec.cycle(&t2));
        assert_eq!(modes(&h), ["php1=maint", "php2=ready", "php3=maint"]);
        // A stale target (the first rotation) is fenced off.
        let r = futures_block(rec.cycle(&t1));
        assert_eq!(
            modes(&h),
            ["php1=maint", "php2=ready", "php3=maint"],
            "{r:?}"
        );
        let t3 = apply(3, 3, &[], None);
        futures_block(rec.cycle(&t3));
        assert_eq!(modes(&h), ["php1=ready", "php2=ready", "php3=ready"]);
    }
}
