//! Health probes: each agent watches its own node's services (and its peers' Redis and
//! MariaDB, for cross-checks), turns single check results into a steady state with HAProxy-style
//! rise/fall thresholds, and broadcasts what it sees to the other agents.
//!
//! Layers:
//! - [`Probe`]: one check of one service instance, async, behind a trait with a real
//!   implementation per technology and a simulated one ([`sim::SimProbe`]); both pass the same
//!   contract suite.
//! - [`Tracker`] (pure): consecutive results -> tracked status (`rise` successes to come up,
//!   `fall` failures to go down; the first result is taken as is).
//! - [`runner`]: one tokio task per probe, each check cut at its timeout, results sent to the
//!   event loop without blocking it. Blocking checks (filesystem mounts) run on a blocking
//!   thread with at most one in flight per probe, so a hung mount cannot pile up threads.
//!
//! Statuses: `healthy`; `degraded` (serving, with a problem worth attention); `down` (reachable
//! but not serving: Galera non-primary, a brick offline, a hung mount); `unreachable` (could not
//! talk to it at all; [`FailureKind`] says whether the connection was refused, which on the
//! service's own node means the process is dead, or timed out, which is weaker evidence).
//!
//! Caveats: credentials are read from files at start and never logged or shown; rotating them
//! needs an agent restart for now.

pub mod build;
pub mod galera_status;
pub mod gluster;
pub mod gluster_xml;
pub mod grastate;
pub mod mariadb;
pub mod phpfpm;
pub mod phpfpm_status;
pub mod redis;
pub mod redis_info;
pub mod runner;
pub mod sim;
pub mod wsrep_recover;

use futures::future::BoxFuture;

pub use crate::observation::{
    summarize, CheckResult, FailureKind, Observation, ProbeId, Service, Status, Thresholds, Tracker,
};

/// One check of one service instance. Implementations: [`redis::RedisProbe`],
/// [`mariadb::MariadbProbe`], [`phpfpm::PhpfpmProbe`], [`gluster::GlusterProbe`],
/// [`gluster::MountProbe`] and [`sim::SimProbe`].
///
/// `check` may take arbitrarily long; the runner cuts it at the probe's timeout and reports a
/// timeout. A check never panics and never logs credentials.
pub trait Probe: Send + Sync + 'static {
    /// Which instance this probe watches.
    fn id(&self) -> &ProbeId;
    /// Interval, timeout and thresholds.
    fn timing(&self) -> crate::config::ProbeTiming;
    /// Runs one check.
    fn check(&self) -> BoxFuture<'_, CheckResult>;
}

/// Implements [`Probe`] for a struct with `id: ProbeId` and `timing: ProbeTiming` fields and
/// an `async fn run(&self) -> CheckResult`.
macro_rules! impl_probe {
    ($t:ty) => {
        impl $crate::probe::Probe for $t {
            fn id(&self) -> &$crate::probe::ProbeId {
                &self.id
            }
            fn timing(&self) -> $crate::config::ProbeTiming {
                self.timing
            }
            fn check(&self) -> futures::future::BoxFuture<'_, $crate::probe::CheckResult> {
                Box::pin(self.run())
            }
        }
    };
}
pub(crate) use impl_probe;

/// A captured fixture, `agent/tests/fixtures/<dir>/<name>`, for the parsers' table tests.
#[cfg(test)]
pub(crate) fn fixture(dir: &str, name: &str) -> String {
    let path = format!("{}/tests/fixtures/{dir}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
