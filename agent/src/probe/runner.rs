//! Runs probes: one tokio task per probe, each check cut at the probe's timeout, each result
//! sent to the event loop as a [`ProbeEvent`] without ever blocking on it (a full channel
//! drops the result and counts it). Checks are paced on the agent's timer grid
//! ([`crate::pace`]): probes whose intervals are multiples of one another check together, in
//! one wake-up of the agent, rather than staggered. A probe can also be kicked to check at once
//! (the local process it checks just exited).

// Reads the clock (adapter: stamps probe results); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{CheckResult, FailureKind, Probe, ProbeId};
use crate::config::ProbeTiming;
use crate::ids::UnixMillis;

/// The spacing of the follow-up checks after a kicked check failed (see [`spawn_all`]).
pub const KICK_RECHECK: Duration = Duration::from_millis(50);

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

/// Every probe's timing, as a reload replaces them (see [`spawn_all_with`]).
pub type ProbeTimings = Arc<BTreeMap<ProbeId, ProbeTiming>>;

/// Runs one check with the probe's timeout.
pub async fn check_once(probe: &dyn Probe) -> (CheckResult, Duration) {
    check_within(probe, probe.timing().timeout).await
}

/// Runs one check cut at `timeout`.
pub async fn check_within(probe: &dyn Probe, timeout: Duration) -> (CheckResult, Duration) {
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
/// `local::spawn_exit_watch`), and its next periodic check comes at the first point of its grid
/// at least one interval after that ([`crate::pace::realign`]); a kicked check that fails is repeated every [`KICK_RECHECK`] until it passes or the probe's
/// `fall` consecutive failures are in.
///
/// A probe with an entry in `rush` (the local Redis, with `failover.hung_after`) follows a
/// timed-out check with the next one at once, without waiting for its interval, until its run
/// of timeouts spans that long: the run then proves the server blocked for that long (each
/// check waits for its own answer, and the next starts when one gave up), and it reaches the
/// bound within one timeout of it. The burst is a handful of checks (`hung_after / timeout`)
/// per hang; after it the interval applies again.
pub fn spawn_all(
    probes: Vec<Arc<dyn Probe>>,
    tx: mpsc::Sender<ProbeEvent>,
    shutdown: CancellationToken,
    dropped: Arc<dyn Fn(&ProbeId) + Send + Sync>,
    kicks: &BTreeMap<ProbeId, Arc<Notify>>,
    rush: &BTreeMap<ProbeId, Duration>,
) {
    let (_, fixed) = watch::channel(ProbeTimings::default());
    spawn_all_with(probes, tx, shutdown, dropped, kicks, rush, fixed);
}

/// [`spawn_all`], with timings a reload may replace: a probe whose entry in `timings` changes
/// takes the new interval, timeout and fall from its next check on (a new interval starts a
/// new grid); a probe without an entry keeps its own.
pub fn spawn_all_with(
    probes: Vec<Arc<dyn Probe>>,
    tx: mpsc::Sender<ProbeEvent>,
    shutdown: CancellationToken,
    dropped: Arc<dyn Fn(&ProbeId) + Send + Sync>,
    kicks: &BTreeMap<ProbeId, Arc<Notify>>,
    rush: &BTreeMap<ProbeId, Duration>,
    timings: watch::Receiver<ProbeTimings>,
) {
    for probe in probes {
        let mut timings = timings.clone();
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        let dropped = dropped.clone();
        let kick = kicks.get(probe.id()).cloned();
        let rush_for = rush.get(probe.id()).copied();
        tokio::spawn(async move {
            let mut timing = timings
                .borrow_and_update()
                .get(probe.id())
                .copied()
                .unwrap_or_else(|| probe.timing());
            let mut ticker = crate::pace::interval(timing.interval);
            // Follow-up checks left after a kick: a kicked check that fails is repeated
            // every `KICK_RECHECK` until it passes or `fall` consecutive failures are in, so a
            // process known to have exited is judged down in ~`KICK_RECHECK * (fall - 1)`
            // rather than after `fall - 1` more intervals. A kick decides nothing by itself.
            let mut burst: u32 = 0;
            let mut follow_up = false;
            // The start of the current run of timed-out checks, and whether to check again at
            // once (see `rush`).
            let mut timeouts_since: Option<Instant> = None;
            let mut rushing = false;
            // The first check runs at once; the ticks follow on the grid.
            let mut first = true;
            // A reload replaced the timings while this probe waited.
            let mut retimed = false;
            loop {
                // A reloaded timing applies from here on.
                if std::mem::take(&mut retimed) || timings.has_changed().unwrap_or(false) {
                    let new = timings.borrow_and_update().get(probe.id()).copied();
                    if let Some(new) = new {
                        if new.interval != timing.interval {
                            ticker = crate::pace::interval(new.interval);
                            crate::pace::realign(&mut ticker);
                        }
                        timing = new;
                    }
                }
                if first {
                    first = false;
                    crate::pace::realign(&mut ticker);
                } else if rushing {
                    // Straight on to the next check.
                } else if follow_up {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(KICK_RECHECK) => {}
                    }
                } else {
                    let kicked = async {
                        match &kick {
                            Some(k) => k.notified().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        Ok(()) = timings.changed() => {
                            retimed = true;
                            continue;
                        }
                        _ = ticker.tick() => burst = 0,
                        _ = kicked => {
                            crate::pace::realign(&mut ticker);
                            burst = timing.fall.saturating_sub(1);
                        }
                    }
                }
                let (result, latency) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = check_within(probe.as_ref(), timing.timeout) => r,
                };
                follow_up = !result.status.is_up() && burst > 0;
                burst = if follow_up { burst - 1 } else { 0 };
                if result.failure == Some(FailureKind::Timeout) {
                    let since = *timeouts_since.get_or_insert(Instant::now() - latency);
                    rushing = rush_for.is_some_and(|bound| since.elapsed() < bound);
                } else {
                    timeouts_since = None;
                    rushing = false;
                }
                if rushing {
                    crate::pace::realign(&mut ticker);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeTiming;
    use crate::ids::NodeId;
    use crate::probe::sim::{SimControl, SimProbe};
    use crate::probe::Service;

    async fn next(rx: &mut mpsc::Receiver<ProbeEvent>) -> Option<ProbeEvent> {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// A reload's new timing reaches a probe that waits for a long interval at once: a probe
    /// at 10 s checks again within a few hundred milliseconds of its timing turning 100 ms,
    /// and keeps that pace.
    #[test]
    fn a_reloaded_interval_applies_without_waiting_for_the_old_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let id = ProbeId {
                subject: NodeId(1),
                service: Service::Phpfpm,
                target: String::new(),
            };
            let slow = ProbeTiming {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                rise: 1,
                fall: 1,
            };
            let probe: Arc<dyn Probe> =
                Arc::new(SimProbe::new(id.clone(), slow, SimControl::healthy()));
            let (tx, mut rx) = mpsc::channel(64);
            let shutdown = CancellationToken::new();
            let (timings_tx, timings_rx) =
                watch::channel(ProbeTimings::new(BTreeMap::from([(id.clone(), slow)])));
            spawn_all_with(
                vec![probe],
                tx,
                shutdown.clone(),
                Arc::new(|_| {}),
                &BTreeMap::new(),
                &BTreeMap::new(),
                timings_rx,
            );
            next(&mut rx).await.expect("the first check runs at once");
            let fast = ProbeTiming {
                interval: Duration::from_millis(100),
                ..slow
            };
            let reloaded = Instant::now();
            timings_tx.send_replace(ProbeTimings::new(BTreeMap::from([(id.clone(), fast)])));
            for _ in 0..5 {
                next(&mut rx).await.expect("checks at the new pace");
            }
            let took = reloaded.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "five checks took {took:?} after the reload"
            );
            shutdown.cancel();
        });
    }

    /// A kick checks at once; a kicked check that fails is repeated until `fall` failures are
    /// in (here 3), each `KICK_RECHECK` apart, long before the next interval (10 s); a kick of
    /// a healthy probe is one check.
    #[test]
    fn a_kick_checks_at_once_and_follows_a_failure_up_to_fall() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let id = ProbeId {
                subject: NodeId(1),
                service: Service::Redis,
                target: String::new(),
            };
            let timing = ProbeTiming {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                rise: 1,
                fall: 3,
            };
            let control = SimControl::healthy();
            let probe: Arc<dyn Probe> =
                Arc::new(SimProbe::new(id.clone(), timing, control.clone()));
            let (tx, mut rx) = mpsc::channel(16);
            let kick = Arc::new(Notify::new());
            let shutdown = CancellationToken::new();
            let kicks = BTreeMap::from([(id.clone(), kick.clone())]);
            spawn_all(
                vec![probe],
                tx,
                shutdown.clone(),
                Arc::new(|_| {}),
                &kicks,
                &BTreeMap::new(),
            );
            // The first check comes at once.
            assert!(next(&mut rx)
                .await
                .expect("first check")
                .result
                .status
                .is_up());
            kick.notify_one();
            assert!(next(&mut rx)
                .await
                .expect("kicked check")
                .result
                .status
                .is_up());
            assert!(next(&mut rx).await.is_none(), "a healthy kick is one check");
            control.stop();
            let start = Instant::now();
            kick.notify_one();
            for n in 1..=3 {
                let e = next(&mut rx).await.unwrap_or_else(|| panic!("failure {n}"));
                assert!(!e.result.status.is_up(), "failure {n}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the follow-ups come before the next interval"
            );
            assert!(next(&mut rx).await.is_none(), "no more than fall checks");
            shutdown.cancel();
        });
    }

    /// A probe in `rush` follows a timed-out check with the next at once until its run of
    /// timeouts spans the bound (here 4 timeouts of 100 ms reach 400 ms), then waits for its
    /// interval (10 s) again; a probe not in `rush` waits for its interval after a timeout.
    #[test]
    fn a_rushed_probe_checks_back_to_back_while_it_times_out_up_to_the_bound() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let timing = ProbeTiming {
                interval: Duration::from_secs(10),
                timeout: Duration::from_millis(100),
                rise: 1,
                fall: 2,
            };
            let id = |n| ProbeId {
                subject: NodeId(n),
                service: Service::Redis,
                target: String::new(),
            };
            for (rushed, expected) in [(true, 4), (false, 1)] {
                let control = SimControl::healthy();
                control.hang();
                let probe: Arc<dyn Probe> = Arc::new(SimProbe::new(id(1), timing, control.clone()));
                let (tx, mut rx) = mpsc::channel(16);
                let shutdown = CancellationToken::new();
                let rush = if rushed {
                    BTreeMap::from([(id(1), Duration::from_millis(350))])
                } else {
                    BTreeMap::new()
                };
                spawn_all(
                    vec![probe],
                    tx,
                    shutdown.clone(),
                    Arc::new(|_| {}),
                    &BTreeMap::new(),
                    &rush,
                );
                let mut timeouts = 0;
                while let Some(e) = next(&mut rx).await {
                    assert_eq!(e.result.failure, Some(FailureKind::Timeout));
                    timeouts += 1;
                }
                assert_eq!(timeouts, expected, "rushed: {rushed}");
                shutdown.cancel();
            }
        });
    }
}
