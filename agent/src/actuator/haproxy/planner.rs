//! The pure reconciliation planner: from the desired [`AdminMode`] of a backend's servers and
//! the rows HAProxy reports, the [`HaproxyAction`]s that converge them, in a safe order, each
//! stamped with the decision's epoch. A converged backend gives no action.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::servers_state::{AdminMode, AdminState, ServerRow};
use crate::actuator::DecisionEpoch;

/// Whether the planner also cuts the established sessions of a server that leaves service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sessions {
    /// Leave established sessions alone (they end by themselves).
    Keep,
    /// `shutdown sessions server` right after a server goes from ready to drain or maint, or
    /// from drain to maint (a demoted Redis master must lose its clients at once).
    ShutdownOnLeave,
}

/// How a plan moves servers: what happens to sessions of a server that leaves service, and
/// whether a server entering service is forced up at once instead of waiting for its next
/// health check. A bare [`Sessions`] converts into a policy without forcing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Sessions of a server that leaves service.
    pub sessions: Sessions,
    /// `set server B/S health up` right after a server whose checks do not currently pass
    /// (it was out of service, so HAProxy did not check it) is set `ready`. Used when the
    /// caller has just verified the server itself (the committed Redis master): otherwise the
    /// first connections wait in HAProxy's queue for up to `inter` x `rise`. Checks keep
    /// running and take it down again if it does not answer.
    pub force_up_on_enter: bool,
}

impl From<Sessions> for Policy {
    fn from(sessions: Sessions) -> Self {
        Policy {
            sessions,
            force_up_on_enter: false,
        }
    }
}

/// One change to one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaproxyOp {
    /// `set server B/S state MODE`.
    SetState(AdminMode),
    /// `shutdown sessions server B/S`.
    ShutdownSessions,
    /// `set server B/S health up`.
    ForceHealthUp,
}

/// An action on one server, stamped with the decision it implements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaproxyAction {
    /// The committed decision this implements.
    pub epoch: DecisionEpoch,
    /// Backend name.
    pub backend: String,
    /// Server name.
    pub server: String,
    /// What to do.
    pub op: HaproxyOp,
}

impl HaproxyAction {
    /// The CLI command line this action sends.
    pub fn command(&self) -> String {
        match self.op {
            HaproxyOp::SetState(m) => {
                format!("set server {}/{} state {m}", self.backend, self.server)
            }
            HaproxyOp::ShutdownSessions => {
                format!("shutdown sessions server {}/{}", self.backend, self.server)
            }
            HaproxyOp::ForceHealthUp => {
                format!("set server {}/{} health up", self.backend, self.server)
            }
        }
    }
}

impl fmt::Display for HaproxyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (decision {})", self.command(), self.epoch)
    }
}

/// What [`plan`] found for one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaproxyPlan {
    /// The backend planned for.
    pub backend: String,
    /// Actions in execution order: servers leave service first, then enter it.
    pub actions: Vec<HaproxyAction>,
    /// Desired servers that HAProxy does not have in this backend (haproxy.cfg out of date).
    pub missing: Vec<String>,
    /// Servers kept from their desired mode by a bit no command clears (tracked server in
    /// maint or drain, DNS resolution failure), with their current state.
    pub held: Vec<(String, AdminState)>,
}

impl HaproxyPlan {
    /// Nothing to do and nothing in the way.
    pub fn is_converged(&self) -> bool {
        self.actions.is_empty() && self.missing.is_empty() && self.held.is_empty()
    }

    /// A one-line human verdict for logs and the status API.
    pub fn verdict(&self) -> String {
        let mut parts = Vec::new();
        if self.actions.is_empty() {
            parts.push("no action".to_string());
        } else {
            let list: Vec<String> = self
                .actions
                .iter()
                .map(|a| match a.op {
                    HaproxyOp::SetState(m) => format!("{} {m}", a.server),
                    HaproxyOp::ShutdownSessions => format!("{} shutdown-sessions", a.server),
                    HaproxyOp::ForceHealthUp => format!("{} health-up", a.server),
                })
                .collect();
            parts.push(list.join(", "));
        }
        if !self.missing.is_empty() {
            parts.push(format!("not in haproxy.cfg: {}", self.missing.join(", ")));
        }
        if !self.held.is_empty() {
            let list: Vec<String> = self.held.iter().map(|(s, a)| format!("{s} {a}")).collect();
            parts.push(format!(
                "held by tracking or DNS (no command clears it): {}",
                list.join(", ")
            ));
        }
        format!("haproxy {}: {}", self.backend, parts.join("; "))
    }
}

/// Plans the actions that bring `backend`'s servers to `desired`, given the current rows
/// (a `show servers state` of that backend or of all). Pure and idempotent: a converged
/// backend gives no action.
///
/// Order: servers going to maint, then to drain (each followed by its session shutdown when
/// `sessions` asks for it), then servers going to ready, so that a failover never has two
/// servers ready at once between two commands.
pub fn plan(
    backend: &str,
    desired: &BTreeMap<String, AdminMode>,
    rows: &[ServerRow],
    epoch: DecisionEpoch,
    policy: impl Into<Policy>,
) -> HaproxyPlan {
    let policy = policy.into();
    let sessions = policy.sessions;
    let current: BTreeMap<&str, &ServerRow> = rows
        .iter()
        .filter(|r| r.backend == backend)
        .map(|r| (r.server.as_str(), r))
        .collect();
    let mut out = HaproxyPlan {
        backend: backend.to_string(),
        actions: Vec::new(),
        missing: Vec::new(),
        held: Vec::new(),
    };
    let action = |server: &str, op| HaproxyAction {
        epoch,
        backend: backend.to_string(),
        server: server.to_string(),
        op,
    };
    for target in [AdminMode::Maint, AdminMode::Drain, AdminMode::Ready] {
        for (server, _) in desired.iter().filter(|(_, m)| **m == target) {
            let Some(row) = current.get(server.as_str()) else {
                continue;
            };
            if row.admin_state.is_held_from(target) {
                out.held.push((server.clone(), row.admin_state));
            }
            if row.admin_state.is_forced(target) {
                continue;
            }
            out.actions
                .push(action(server, HaproxyOp::SetState(target)));
            if target == AdminMode::Ready && policy.force_up_on_enter && !row.op_state.is_up() {
                out.actions.push(action(server, HaproxyOp::ForceHealthUp));
            }
            let leaves = target.rank() < row.admin_state.mode().rank();
            if leaves && sessions == Sessions::ShutdownOnLeave {
                out.actions
                    .push(action(server, HaproxyOp::ShutdownSessions));
            }
        }
    }
    out.missing = desired
        .keys()
        .filter(|s| !current.contains_key(s.as_str()))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::haproxy::parse_servers_state;

    fn rows(name: &str) -> Vec<ServerRow> {
        let path = format!(
            "{}/tests/fixtures/haproxy/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse_servers_state(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn desired(spec: &str) -> BTreeMap<String, AdminMode> {
        spec.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(s, m)| Some((s.to_string(), AdminMode::parse(m)?)))
            .collect()
    }

    fn plan_text(p: &HaproxyPlan) -> String {
        p.actions
            .iter()
            .map(|a| match a.op {
                HaproxyOp::SetState(m) => format!("{}:{m}", a.server),
                HaproxyOp::ShutdownSessions => format!("{}:shutdown", a.server),
                HaproxyOp::ForceHealthUp => format!("{}:health-up", a.server),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// (fixture, desired, session policy, expected actions in order)
    #[test]
    fn plans_from_captured_states() {
        use Sessions::{Keep, ShutdownOnLeave as Cut};
        let cases = [
            ("redis_all_ready.txt", "r1=ready r2=ready r3=ready", Cut, ""),
            (
                "redis_all_ready.txt",
                "r1=ready r2=maint r3=maint",
                Keep,
                "r2:maint r3:maint",
            ),
            (
                "redis_all_ready.txt",
                "r1=ready r2=maint r3=maint",
                Cut,
                "r2:maint r2:shutdown r3:maint r3:shutdown",
            ),
            // Failover from r1 to r2 (in maint): leave service first, then enter it.
            (
                "redis_r2_maint.txt",
                "r1=maint r2=ready r3=drain",
                Cut,
                "r1:maint r1:shutdown r3:drain r3:shutdown r2:ready",
            ),
            (
                "redis_r2_drain.txt",
                "r2=maint",
                Cut,
                "r2:maint r2:shutdown",
            ),
            ("redis_r2_drain.txt", "r2=drain r1=ready", Cut, ""),
            ("redis_r2_maint.txt", "r2=drain", Cut, "r2:drain"),
            // Configured `disabled`: 0x05 is maint; after `set state ready` 0x04 is ready.
            ("redis_r3_disabled.txt", "r3=maint", Cut, ""),
            ("redis_r3_disabled.txt", "r3=ready", Cut, "r3:ready"),
            ("redis_r3_disabled_set_ready.txt", "r3=ready", Cut, ""),
            (
                "redis_r3_disabled_set_ready.txt",
                "r3=maint",
                Cut,
                "r3:maint r3:shutdown",
            ),
            ("redis_r3_disabled_set_drain.txt", "r3=drain", Cut, ""),
            // A server down by its checks is still administratively ready: nothing to set.
            ("redis_r1_check_down.txt", "r1=ready", Cut, ""),
        ];
        let epoch = DecisionEpoch::new(2, 17);
        for (file, want_state, sessions, want) in cases {
            let p = plan("redis", &desired(want_state), &rows(file), epoch, sessions);
            assert_eq!(plan_text(&p), want, "{file} {want_state}");
            assert!(p.missing.is_empty() && p.held.is_empty(), "{file}: {p:?}");
            assert!(p
                .actions
                .iter()
                .all(|a| a.epoch == epoch && a.backend == "redis"));
            assert_eq!(p.is_converged(), want.is_empty(), "{file} {want_state}");
        }
    }

    /// Applying a plan's actions with HAProxy's flag semantics converges: the second plan is
    /// empty, from every captured state to every desired combination.
    #[test]
    fn plans_are_idempotent() {
        let modes = ["ready", "drain", "maint"];
        for file in [
            "redis_all_ready.txt",
            "redis_r2_maint.txt",
            "redis_r2_drain.txt",
            "redis_r3_disabled.txt",
            "redis_r3_disabled_set_ready.txt",
            "redis_r3_disabled_set_drain.txt",
        ] {
            for a in modes {
                for b in modes {
                    let want = desired(&format!("r1={a} r2={b} r3={a}"));
                    let mut current = rows(file);
                    let first = plan(
                        "redis",
                        &want,
                        &current,
                        DecisionEpoch::new(1, 1),
                        Sessions::ShutdownOnLeave,
                    );
                    for action in &first.actions {
                        if let HaproxyOp::SetState(m) = action.op {
                            for r in current.iter_mut().filter(|r| r.server == action.server) {
                                let (fm, fd) = (AdminState::FORCED_MAINT, AdminState::FORCED_DRAIN);
                                r.admin_state.0 = match m {
                                    AdminMode::Ready => r.admin_state.0 & !(fm | fd),
                                    AdminMode::Drain => (r.admin_state.0 & !fm) | fd,
                                    AdminMode::Maint => (r.admin_state.0 & !fd) | fm,
                                };
                            }
                        }
                    }
                    for r in &current {
                        assert_eq!(
                            Some(&r.admin_state.mode()),
                            want.get(&r.server),
                            "{file} {a} {b}"
                        );
                    }
                    let second = plan(
                        "redis",
                        &want,
                        &current,
                        DecisionEpoch::new(1, 1),
                        Sessions::ShutdownOnLeave,
                    );
                    assert!(second.is_converged(), "{file} {a} {b}: {second:?}");
                }
            }
        }
    }

    #[test]
    fn plan_reports_missing_and_held_servers() {
        let mut current = rows("redis_all_ready.txt");
        current[0].admin_state = AdminState(AdminState::INHERITED_MAINT);
        current[1].admin_state = AdminState(AdminState::RESOLVER_MAINT | AdminState::FORCED_MAINT);
        let want = desired("r1=ready r2=ready r3=maint r9=ready");
        let p = plan(
            "redis",
            &want,
            &current,
            DecisionEpoch::new(1, 1),
            Sessions::Keep,
        );
        // r1: nothing `set` can do; r2: the forced bit is cleared, the resolver bit remains.
        assert_eq!(plan_text(&p), "r3:maint r2:ready");
        assert_eq!(p.missing, ["r9"]);
        let held: Vec<&str> = p.held.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(held, ["r1", "r2"]);
        assert!(!p.is_converged());
        let v = p.verdict();
        assert!(
            v.contains("not in haproxy.cfg: r9") && v.contains("r1 maint (0x02)"),
            "{v}"
        );
        // Rows of other backends are ignored.
        let other = plan(
            "web",
            &want,
            &current,
            DecisionEpoch::new(1, 1),
            Sessions::Keep,
        );
        assert!(other.actions.is_empty());
        assert_eq!(other.missing.len(), 4);
    }

    #[test]
    fn action_commands_and_verdicts() {
        let a = HaproxyAction {
            epoch: DecisionEpoch::new(4, 90),
            backend: "redis".into(),
            server: "r2".into(),
            op: HaproxyOp::SetState(AdminMode::Maint),
        };
        assert_eq!(a.command(), "set server redis/r2 state maint");
        assert_eq!(
            a.to_string(),
            "set server redis/r2 state maint (decision 4/90)"
        );
        let p = plan(
            "redis",
            &desired("r1=ready r2=ready r3=ready"),
            &rows("redis_all_ready.txt"),
            DecisionEpoch::new(1, 1),
            Sessions::Keep,
        );
        assert_eq!(p.verdict(), "haproxy redis: no action");
    }
}
