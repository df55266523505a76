//! One HAProxy backend kept on a committed routing: the part the Galera writer and web
//! reconcilers share.
//!
//! [`BackendRouter::route`] reads the backend's servers, plans with the pure planner
//! (`actuator::haproxy::plan`) towards the desired admin states, and applies the actions
//! through an [`EpochFence`] keyed by the decision's term and index, so a cycle planned from an
//! older decision never undoes a newer one. Once the backend was found as desired it is read
//! again only when the desired state or its epoch changes, after a failed pass, or every
//! `recheck` cycles: only the agent changes admin states, and a change made behind its back
//! (an operator, a restarted HAProxy) is undone within that time.

use std::collections::BTreeMap;

use crate::actuator::haproxy::{self, AdminMode, Policy};
use crate::actuator::{DecisionEpoch, EpochFence};
use crate::ids::NodeId;

use super::redis::HaproxyTarget;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// The commands run.
    pub actions: Vec<String>,
    /// What it would take to converge (the planner's verdict).
    pub verdict: Option<String>,
    /// What failed; the next pass retries.
    pub error: Option<String>,
}

/// Keeps one backend on what is desired. See the module docs.
pub struct BackendRouter {
    target: HaproxyTarget,
    policy: Policy,
    fence: EpochFence,
    recheck: u32,
    converged: Option<(BTreeMap<String, AdminMode>, DecisionEpoch, String)>,
    skipped: u32,
}

impl BackendRouter {
    /// A router of `target`'s backend that moves servers by `policy`, reading HAProxy every
    /// pass until [`BackendRouter::with_recheck`] says otherwise.
    pub fn new(target: HaproxyTarget, policy: Policy) -> Self {
        BackendRouter {
            target,
            policy,
            fence: EpochFence::new(),
            recheck: 1,
            converged: None,
            skipped: 0,
        }
    }

    /// Once found as desired, reads HAProxy again only every `cycles` passes while the desired
    /// state stays the same (default 1: every pass).
    pub fn with_recheck(mut self, cycles: u32) -> Self {
        self.recheck = cycles.max(1);
        self
    }

    /// Each node's server name in the backend.
    pub fn servers(&self) -> &BTreeMap<NodeId, String> {
        &self.target.servers
    }

    /// One pass towards `desired` (server name → admin state) for the decision `epoch`.
    pub async fn route(
        &mut self,
        desired: BTreeMap<String, AdminMode>,
        epoch: DecisionEpoch,
    ) -> Routed {
        let mut r = Routed::default();
        if let Some((d, e, verdict)) = &self.converged {
            if *d == desired && *e == epoch && self.skipped + 1 < self.recheck {
                self.skipped += 1;
                r.verdict = Some(verdict.clone());
                return r;
            }
        }
        self.skipped = 0;
        self.converged = None;
        let h = &self.target;
        let rows = match h.haproxy.show_servers_state(Some(&h.backend)).await {
            Ok(rows) => rows,
            Err(e) => {
                r.error = Some(e.to_string());
                return r;
            }
        };
        let plan = haproxy::plan(&h.backend, &desired, &rows, epoch, self.policy);
        r.verdict = Some(plan.verdict());
        if plan.actions.is_empty() {
            if plan.missing.is_empty() {
                self.converged = Some((desired, epoch, plan.verdict()));
            }
            return r;
        }
        match haproxy::apply(h.haproxy.as_ref(), &mut self.fence, &plan.actions).await {
            Ok(_) => {
                r.actions = plan.actions.iter().map(|a| a.command()).collect();
                if h.save_state {
                    if let Err(e) = h.haproxy.save_server_state().await {
                        r.error = Some(format!("saving the server-state file: {e}"));
                    }
                }
            }
            Err(e) => r.error = Some(e.to_string()),
        }
        r
    }
}
