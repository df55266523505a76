//! Local reconcilers: each agent drives *its own* services towards the committed authority of
//! each managed service, one idempotent cycle at a time (see `controller` for the shape).
//!
//! One module per service: [`redis`] (the local Redis and its HAProxy backend), [`galera`]
//! (the local mariadbd's rejoin and bootstrap), [`galera_writer`] (the HAProxy MySQL
//! backend and the local evict list) and [`web`] (the HAProxy web backend; [`route`] is the
//! backend routing it shares with the writer's). A reconciler
//! - plans with pure planners from what the service reports and the target its controller
//!   published, and runs the actions through the actuator traits (real or `Sim*`);
//! - admits every action through its own [`crate::actuator::EpochFence`], keyed by the epoch
//!   of *its* authority's newest decision (for Redis, the term and index of the committed
//!   change of master): a newer decision of another authority (a maintenance switch, later a
//!   Galera bootstrap) never makes its actions look stale, and a cycle planned from an older
//!   state of its own authority can never undo a newer decision;
//! - acts on its authority only while this agent holds its lease ([`usable_lease`]), and
//!   otherwise only makes its services safe (fence, out of service);
//! - bounds each side of a cycle by a deadline ([`Timer`]) so that a hung service cannot hold
//!   the cycle past its lease.
//!
//! The same code runs against the real adapters in the agent (`local` spawns the tasks) and
//! against the `Sim*` ones in the simulation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub mod backup;
pub mod galera;
pub mod galera_writer;
pub mod redis;
pub mod remedy;
pub mod route;
pub mod web;

/// Sleeps for the given time: how the reconciler measures its deadlines without naming a
/// runtime (the agent passes tokio's sleep).
pub type Timer = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// Runs `work` to completion, or until the deadline passes; whether it completed.
async fn within(deadline: &Option<(Duration, Timer)>, work: impl Future<Output = ()>) -> bool {
    let Some((d, timer)) = deadline else {
        work.await;
        return true;
    };
    let sleep = timer(*d);
    futures::pin_mut!(work);
    matches!(
        futures::future::select(work, sleep).await,
        futures::future::Either::Left(_)
    )
}

/// Whether a lease can be acted on: valid, with at least one full cycle (two sides, each
/// bounded by `side_deadline`) left, so that a cycle that starts with the lease finishes
/// before the lease runs out. A cycle that starts later runs as without a lease: it takes
/// HAProxy out of service first and fences.
pub fn usable_lease(valid: bool, remaining: Duration, side_deadline: Duration) -> bool {
    valid && remaining > side_deadline.saturating_mul(2)
}

/// How much longer a lease with `remaining` left stays usable (see [`usable_lease`]) if it is
/// not renewed; `None` when it is not usable now. The reconciler wakes then, so that a lease
/// that lapses is acted on at once rather than at the next interval.
pub fn usable_for(valid: bool, remaining: Duration, side_deadline: Duration) -> Option<Duration> {
    let cut = side_deadline.saturating_mul(2);
    (valid && remaining > cut).then(|| remaining - cut)
}
