//! The HAProxy actuator: reads and changes the administrative state of the local HAProxy's
//! servers over its admin socket (`stats socket PATH mode 600 level admin`), so that every
//! node's HAProxy routes Redis (and later Galera) traffic only where the cluster decided.
//!
//! Layers (submodules, re-exported here):
//! - Pure: `servers_state` ([`parse_servers_state`]: `show servers state` into [`ServerRow`]s
//!   with their [`AdminState`] bits; [`parse_show_info`]) and `planner` ([`plan`], which
//!   compares the desired [`AdminMode`] of a backend's servers with the current rows and
//!   returns the [`HaproxyAction`]s that converge them, none when converged). Table-tested on
//!   real captures in `agent/tests/fixtures/haproxy/`.
//! - [`Haproxy`] (here): the operations, behind a trait with the real [`HaproxySocket`]
//!   (`socket`) and the in-memory [`SimHaproxy`] (`sim`); both pass
//!   `agent/tests/haproxy_contract.rs`.
//! - [`apply`] (here): runs a plan's actions in order through an [`EpochFence`].
//!
//! What `srv_admin_state` means (HAProxy 2.6 `enum srv_admin`, checked against a running 2.6.12):
//! a bit mask where `0x01` forced maint (`set ... state maint`), `0x02` maint inherited from a
//! tracked server, `0x04` *configured* maint (the `disabled` keyword), `0x08` forced drain,
//! `0x10` inherited drain, `0x20` maint after a DNS resolution failure, `0x40` the FQDN was
//! changed at runtime. HAProxy itself computes MAINT as `state & 0x23` and DRAIN as
//! `state & 0x18`: **`0x04` is not part of the maintenance mask**. A `disabled` server starts
//! at `0x05` (configured + forced); `set server B/S state ready` clears only the forced bits and
//! leaves `0x04` set for the life of the process, while the server serves traffic (op_state 2,
//! `show stat` no longer says MAINT). So "admin_state == 0" is the wrong readiness test:
//! [`AdminState::is_ready`] masks like HAProxy does. The planner compares the *forced* bits,
//! which are the only ones `set state` can change; a server kept in maint or drain by an
//! inherited or resolver bit is reported as held instead of being re-set forever.
//!
//! Other behaviour the design relies on (seen on 2.6.12): one command per connection (HAProxy
//! answers and closes); a successful `set server` or `shutdown sessions` answers a single empty
//! line, a refusal answers its reason (`No such server.`, `No such backend.`, and for
//! `show servers state` of an unknown backend `Can't find backend.`); `set state maint` clears
//! a forced drain; `set state maint` leaves established sessions running (only `shutdown
//! sessions` cuts them), hence the planner's optional session shutdown; `;` separates commands
//! on one line, so names are validated before they are put into a command.
//!
//! Caveats:
//! - Runtime state survives a reload only if [`Haproxy::save_server_state`] wrote the state file
//!   just before, and haproxy.cfg has `server-state-file` and `load-server-state-from-file
//!   global`. A reload restores whatever the file says, so a stale file rolls state back: the
//!   reconciler re-converges after every reload anyway.
//! - On load, a server whose `disabled` keyword changed in haproxy.cfg since the file was written
//!   takes the configuration's state, not the file's.
//! - Session shutdown happens right after the server leaves service; if the agent dies between
//!   the two commands, the next plan sees the server already in maint and does not shut its
//!   sessions down again (`show servers state` does not report session counts).
//! - Only servers named in the desired map are managed; others in the backend are left alone.
//! - Health-check results (op_state) are reported, not acted on: a `ready` server may still be
//!   DOWN by its checks.

mod planner;
mod servers_state;
mod sim;
mod socket;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{EpochFence, StaleEpoch};

pub use planner::{plan, HaproxyAction, HaproxyOp, HaproxyPlan, Policy, Sessions};
pub use servers_state::{
    parse_servers_state, parse_show_info, render_servers_state, AdminMode, AdminState, HaproxyInfo,
    OpState, ParseError, ServerRow,
};
pub use sim::SimHaproxy;
pub use socket::HaproxySocket;

/// What kind of failure a [`HaproxyError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// HAProxy is not running (socket missing, or connection refused).
    Down,
    /// No complete answer in time (hung, overloaded, or stopped with SIGSTOP).
    Timeout,
    /// HAProxy answered with a refusal.
    Refused,
    /// Another I/O error on the socket (permissions, reset).
    Io,
    /// An answer Triad cannot read.
    Parse,
    /// A backend or server name that cannot be put into a command.
    BadName,
    /// No server-state file is configured.
    NoStateFile,
    /// The server-state file could not be written.
    StateFile,
    /// The action was older than one already executed.
    Stale,
}

/// Failure of an HAProxy operation.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// The socket file is missing or nobody accepts on it.
    #[error(
        "haproxy admin socket {}: {source}; haproxy is not running, or its `stats socket` \
         is not at this path",
        path.display()
    )]
    Down {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error(
        "haproxy admin socket {}: no complete answer to `{command}` within {timeout:?}; \
         haproxy is hung or overloaded",
        path.display()
    )]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The command sent.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// HAProxy refused the command; `message` is its own text.
    #[error("haproxy refused `{command}`: {message}")]
    Refused {
        /// The command sent.
        command: String,
        /// HAProxy's answer, trimmed.
        message: String,
    },
    /// Another I/O failure on the socket.
    #[error(
        "haproxy admin socket {}: `{command}` failed: {source}; check the socket's owner and \
         mode in `stats socket` against the user triad runs as",
        path.display()
    )]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The command sent.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer could not be read.
    #[error("haproxy answered `{command}` with output triad cannot read: {source}")]
    Parse {
        /// The command sent.
        command: String,
        /// What is wrong with it.
        source: ParseError,
    },
    /// A name that would break the command line.
    #[error(
        "{what} name {name:?} cannot be sent to haproxy: names use only letters, digits, \
         '-', '_', '.' and ':'"
    )]
    BadName {
        /// `backend` or `server`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Saving state needs a configured state file.
    #[error(
        "no server-state file configured: set the same path as haproxy.cfg's \
         `server-state-file` (with `load-server-state-from-file global`) so runtime state \
         survives reloads"
    )]
    NoStateFile,
    /// Writing the state file failed.
    #[error(
        "server-state file {}: {source}; check that its directory exists and is writable by \
         triad",
        path.display()
    )]
    StateFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Refused by the epoch fence.
    #[error(transparent)]
    Stale(#[from] StaleEpoch),
}

impl HaproxyError {
    /// The failure's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HaproxyError::Down { .. } => ErrorKind::Down,
            HaproxyError::Timeout { .. } => ErrorKind::Timeout,
            HaproxyError::Refused { .. } => ErrorKind::Refused,
            HaproxyError::Io { .. } => ErrorKind::Io,
            HaproxyError::Parse { .. } => ErrorKind::Parse,
            HaproxyError::BadName { .. } => ErrorKind::BadName,
            HaproxyError::NoStateFile => ErrorKind::NoStateFile,
            HaproxyError::StateFile { .. } => ErrorKind::StateFile,
            HaproxyError::Stale(_) => ErrorKind::Stale,
        }
    }
}

/// Rejects names that could split or inject CLI commands (`;`, spaces, newlines, `/`).
/// HAProxy itself accepts only letters, digits, `-`, `_`, `.` and `:` in these names.
pub fn check_name(what: &'static str, name: &str) -> Result<(), HaproxyError> {
    if crate::config::is_haproxy_name(name) {
        Ok(())
    } else {
        Err(HaproxyError::BadName {
            what,
            name: name.to_string(),
        })
    }
}

/// The operations Triad needs from one HAProxy. Implementations: [`HaproxySocket`] (the real
/// admin socket) and [`SimHaproxy`]. Every call is bounded by the implementation's timeout and
/// never panics.
pub trait Haproxy: Send + Sync + 'static {
    /// `show servers state [BACKEND]`: all servers, or those of one backend.
    fn show_servers_state<'a>(
        &'a self,
        backend: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ServerRow>, HaproxyError>>;

    /// `set server BACKEND/SERVER state MODE`.
    fn set_server_state<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
        mode: AdminMode,
    ) -> BoxFuture<'a, Result<(), HaproxyError>>;

    /// `shutdown sessions server BACKEND/SERVER`: cuts its established sessions.
    fn shutdown_sessions<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Result<(), HaproxyError>>;

    /// `set server BACKEND/SERVER health up`: marks it as passing its checks now.
    fn force_health_up<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Result<(), HaproxyError>>;

    /// `show info`: reachability, worker pid and uptime.
    fn show_info(&self) -> BoxFuture<'_, Result<HaproxyInfo, HaproxyError>>;

    /// Writes the current `show servers state` of all backends to the server-state file
    /// (atomically), so that the next reload restores it. Returns the number of servers saved.
    fn save_server_state(&self) -> BoxFuture<'_, Result<usize, HaproxyError>>;
}

/// Runs `actions` in order, each admitted by `fence` first. Stops at the first failure (the
/// next reconciliation cycle re-plans from what HAProxy then reports). Returns how many ran.
pub async fn apply(
    haproxy: &dyn Haproxy,
    fence: &mut EpochFence,
    actions: &[HaproxyAction],
) -> Result<usize, HaproxyError> {
    for (done, a) in actions.iter().enumerate() {
        let outcome = match fence.admit(a.epoch) {
            Err(stale) => Err(HaproxyError::from(stale)),
            Ok(()) => match a.op {
                HaproxyOp::SetState(m) => haproxy.set_server_state(&a.backend, &a.server, m).await,
                HaproxyOp::ShutdownSessions => {
                    haproxy.shutdown_sessions(&a.backend, &a.server).await
                }
                HaproxyOp::ForceHealthUp => haproxy.force_health_up(&a.backend, &a.server).await,
            },
        };
        match outcome {
            Ok(()) => tracing::info!(
                backend = %a.backend, server = %a.server, command = %a.command(),
                epoch = %a.epoch, "haproxy action applied"
            ),
            Err(err) => {
                tracing::warn!(
                    backend = %a.backend, server = %a.server, command = %a.command(),
                    epoch = %a.epoch, done, %err, "haproxy action failed; plan stopped"
                );
                return Err(err);
            }
        }
    }
    Ok(actions.len())
}

/// Turns a `show servers state` answer into rows, or HAProxy's refusal into an error.
fn read_servers_state(backend: Option<&str>, text: &str) -> Result<Vec<ServerRow>, HaproxyError> {
    let command = match backend {
        Some(b) => format!("show servers state {b}"),
        None => "show servers state".into(),
    };
    match parse_servers_state(text) {
        Ok(rows) => Ok(rows),
        Err(ParseError::NotServersState(_)) => Err(HaproxyError::Refused {
            command,
            message: text.trim().to_string(),
        }),
        Err(source) => Err(HaproxyError::Parse { command, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::DecisionEpoch;

    #[test]
    fn names_are_checked() {
        for ok in ["redis", "r1", "be_redis-2.x:a"] {
            assert!(check_name("server", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "r1; disable server redis/r2",
            "a b",
            "a/b",
            "r1\nshow info",
        ] {
            let e = check_name("server", bad).err().map(|e| e.kind());
            assert_eq!(e, Some(ErrorKind::BadName), "{bad:?}");
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    #[test]
    fn apply_stops_at_stale_epochs_and_refusals() {
        let rt = rt();
        let sim = SimHaproxy::new(Duration::from_secs(1));
        for s in ["r1", "r2"] {
            sim.add_server("redis", s, 6379, false);
        }
        let act = |term, server: &str, m| HaproxyAction {
            epoch: DecisionEpoch::new(term, 10),
            backend: "redis".into(),
            server: server.into(),
            op: HaproxyOp::SetState(m),
        };
        let mut fence = EpochFence::new();
        let done = rt.block_on(apply(&sim, &mut fence, &[act(2, "r1", AdminMode::Maint)]));
        assert_eq!(done.ok(), Some(1));
        let stale = rt.block_on(apply(&sim, &mut fence, &[act(1, "r1", AdminMode::Ready)]));
        assert_eq!(stale.err().map(|e| e.kind()), Some(ErrorKind::Stale));
        let refused = rt.block_on(apply(
            &sim,
            &mut fence,
            &[
                act(2, "r9", AdminMode::Ready),
                act(2, "r2", AdminMode::Maint),
            ],
        ));
        match refused {
            Err(HaproxyError::Refused { message, .. }) => assert_eq!(message, "No such server."),
            other => panic!("{other:?}"),
        }
        let r = rt.block_on(sim.show_servers_state(Some("redis")));
        let modes: Vec<AdminMode> = r.iter().flatten().map(|r| r.admin_state.mode()).collect();
        // r1 stayed in maint (stale action refused); r2 untouched (plan stopped before it).
        assert_eq!(modes, [AdminMode::Maint, AdminMode::Ready]);
    }
}
