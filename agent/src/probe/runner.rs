//! Runs probes: one tokio task per probe, each check cut at the probe's timeout, each result
//! sent to the event loop as a [`ProbeEvent`] without ever blocking on it (a full channel
//! drops the result and counts it). Start times are staggered across the first interval so the
//! checks of one agent do not all fire at once. A probe can also be kicked to check at once
//! (the local process it checks just exited).

// Reads the clock (adapter: stamps probe results); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::{CheckResult, FailureKind, Probe, ProbeId};
use crate::ids::UnixMillis;

/// One finished check.
#[derive(Clone, Debug)]
pub struct ProbeEvent {
    /// Which instance.
    pub id: ProbeId,
    /// What it saw.
    pub result: CheckResult,
    /// How long the check took.
    pub latency: Duration,
    /// Wall clock at the end of the check (display only).
    pub at: UnixMillis,
    /// Monotonic time at the end of the check (for ages).
    pub at_instant: Instant,
}

/// Runs one check with the probe's timeout.
pub async fn check_once(probe: &dyn Probe) -> (CheckResult, Duration) {
    let timeout = probe.timing().timeout;
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, probe.check()).await {
        Ok(r) => r,
        Err(_) => CheckResult::unreachable(
            FailureKind::Timeout,
            format!("{}: no answer within {timeout:?}", probe.id()),
        ),
    };
    (result, start.elapsed())
}

/// The wall clock as [`UnixMillis`] (display and audit only; 0 if the clock is before 1970).
pub fn now_millis() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
}

/// Spawns one task per probe; they stop when `shutdown` is cancelled. `dropped` is called for
/// each result dropped on a full channel. A probe with an entry in `kicks` also checks at once
/// whenever that entry is notified (for example when the local process it checks exited: see
/// `local::spawn_exit_watch`), and its next periodic check comes one interval after that.
pub fn spawn_all(
    probes: Vec<Arc<dyn Probe>>,
    tx: mpsc::Sender<ProbeEvent>,
    shutdown: CancellationToken,
    dropped: Arc<dyn Fn(&ProbeId) + Send + Sync>,
    kicks: &BTreeMap<ProbeId, Arc<Notify>>,
) {
    let n = probes.len().max(1) as u32;
    for (i, probe) in probes.into_iter().enumerate() {
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        let dropped = dropped.clone();
        let kick = kicks.get(probe.id()).cloned();
        tokio::spawn(async move {
            let timing = probe.timing();
            let offset = timing.interval * i as u32 / n;
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, timing.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let kicked = async {
                    match &kick {
                        Some(k) => k.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                    _ = kicked => ticker.reset(),
                }
                let (result, latency) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = check_once(probe.as_ref()) => r,
                };
                let event = ProbeEvent {
                    id: probe.id().clone(),
                    result,
                    latency,
                    at: now_millis(),
                    at_instant: Instant::now(),
                };
                match tx.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(e)) => dropped(&e.id),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
    }
}
