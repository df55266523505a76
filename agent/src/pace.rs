//! Periodic timers on one grid, so that one wake-up of the agent serves them all.
//!
//! The agent runs a dozen periodic activities: the Raft tick, one task per probe, the
//! reconcilers and the peer links' lease pings. Each is a tokio interval. Started at
//! arbitrary instants, their deadlines fall at different moments and each costs a wake-up of
//! the (single-threaded) runtime: a third of the agent's CPU was the scheduler parking and
//! unparking. [`interval`] anchors every interval at multiples of its period from one
//! process-wide origin. Periods that are multiples of one another (every default is a
//! multiple of 50 ms, the default Raft tick) then share their deadlines, and tokio's timer
//! fires all timers of one millisecond in one wake-up.
//!
//! Missed ticks are skipped ([`MissedTickBehavior::Skip`]): a late tick is followed by the
//! next grid point, never by a burst, and the interval stays on the grid. [`realign`] moves
//! an interval's next tick to the first grid point at least one period away, for the callers
//! that restart their period (a probe kicked to check at once).
//!
//! The grid is per agent (its origin is the agent's start), so the three agents' grids have
//! unrelated phases. That is deliberate: each agent probes the Redis master on its own grid,
//! and a hung master is first seen by whichever agent checks next. With the grids aligned to
//! the wall clock all three checked at the same instants: the hung master was first seen ~100
//! ms later and its failover took ~110 ms longer at the median (lab, SIGSTOP runs), for no
//! measurable saving of wake-ups.
//!
//! **The metronome.** Tokio's timer wheel wakes the runtime at every 64 ms boundary of its own
//! clock that a pending timer crosses (it moves the timer to a finer level there), and a grid
//! of 50 ms multiples never lines up with it: about 15 of the agent's ~100 wake-ups a second
//! did nothing but that. [`start_metronome`] (called by the agent at start with the Raft tick)
//! replaces the periodic timers by one kernel timer (a `timerfd` on the monotonic clock,
//! armed on the grid). An [`Interval`] whose period is a multiple of the beat waits for its
//! beats on a channel of its period, which is signalled only on the beats that are multiples
//! of it, and the timer is armed only for the next beat that some period needs (with the
//! defaults, 2, 4, 5, 6, 10 and 20 beats: 36 beats in 60). One epoll wake-up per such beat
//! serves every periodic activity due, and the timer wheel is left with the short timeouts of
//! requests in flight. Without a metronome (tests, a period that is not a multiple of the
//! beat) an interval is a tokio interval on the same grid; when the metronome's runtime ends,
//! its intervals fall back to that too.
//!
//! Caveat: an agent's checks that share a deadline start together. Every probe does a few
//! hundred microseconds of work, so the burst is a few milliseconds at most; it was the
//! reason for the former staggered start, which cost one wake-up per check.

// Reads the clock (adapter: anchors timers); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// The process-wide origin of the grid: the first time any interval asked for it.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The first grid point of `period` from `origin` that is at or after `at`. A zero period is
/// treated as one nanosecond. `at` may lie before `origin` (a paused test clock).
pub fn next_on_grid(origin: Instant, at: Instant, period: Duration) -> Instant {
    let p = period.as_nanos().max(1);
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    if at >= origin {
        let since = (at - origin).as_nanos();
        origin + nanos(since.div_ceil(p) * p)
    } else {
        let before = (origin - at).as_nanos();
        origin - nanos(before / p * p)
    }
}

/// A periodic timer on the grid: ticks at multiples of its period from the origin, skipping
/// missed ones. Driven by the metronome's beats when one runs and the period is a multiple of
/// its beat, by a tokio interval otherwise (see the module docs).
pub struct Interval {
    period: Duration,
    inner: Inner,
}

enum Inner {
    Beats(Beats),
    Plain(tokio::time::Interval),
}

/// An interval driven by the metronome: `every` beats a period, next tick at beat `due`.
struct Beats {
    beat: Duration,
    every: u64,
    due: u64,
    rx: watch::Receiver<u64>,
}

impl Interval {
    /// Waits for the next tick and returns its grid instant (a late tick returns at once; ticks
    /// missed meanwhile are skipped). Cancel-safe: a tick is consumed only when returned.
    pub async fn tick(&mut self) -> Instant {
        loop {
            match &mut self.inner {
                Inner::Plain(i) => return i.tick().await,
                Inner::Beats(b) => {
                    let n = *b.rx.borrow_and_update();
                    if n >= b.due {
                        b.due = (n / b.every + 1) * b.every;
                        return beat_instant(n, b.beat);
                    }
                    if b.rx.changed().await.is_err() {
                        // The metronome's runtime ended: keep ticking on the grid alone.
                        self.inner = Inner::Plain(plain(self.period));
                    }
                }
            }
        }
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

fn plain(period: Duration) -> tokio::time::Interval {
    let start = next_on_grid(origin(), Instant::now(), period);
    let mut i = tokio::time::interval_at(start, period.max(Duration::from_nanos(1)));
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

/// The grid instant of beat `n` (beat 0 is the origin).
fn beat_instant(n: u64, beat: Duration) -> Instant {
    let nanos = u128::from(n) * beat.as_nanos();
    origin() + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// An interval of `period` whose ticks fall on the process-wide grid: the first at the next
/// grid point, then every `period`, skipping missed ticks.
pub fn interval(period: Duration) -> Interval {
    let inner = match subscribe(period) {
        Some((beat, every, rx)) => {
            let n = *rx.borrow();
            Inner::Beats(Beats {
                beat,
                every,
                due: (n / every + 1) * every,
                rx,
            })
        }
        None => Inner::Plain(plain(period)),
    };
    Interval { period, inner }
}

/// Moves `interval`'s next tick to the first grid point at least one period from now.
pub fn realign(interval: &mut Interval) {
    let period = interval.period;
    match &mut interval.inner {
        Inner::Plain(i) => i.reset_at(next_on_grid(origin(), Instant::now() + period, period)),
        Inner::Beats(b) => {
            // Now lies after beat `n`: the first multiple of `every` after `n + every`.
            let n = *b.rx.borrow();
            b.due = (n + b.every + 1).div_ceil(b.every) * b.every;
        }
    }
}

/// The running metronome: its beat, and a channel per period (in beats) signalled on the
/// beats that are multiples of it.
struct Metronome {
    beat: Duration,
    channels: Mutex<BTreeMap<u64, watch::Sender<u64>>>,
    /// Closed when the metronome's task ends (it holds the sender).
    alive: watch::Receiver<()>,
    /// Notified when a new period registers: the timer is re-armed for its beats.
    rearm: tokio::sync::Notify,
    /// Beats fired so far.
    fired: std::sync::atomic::AtomicU64,
}

impl Metronome {
    /// The beat that `at` falls in (beat 0 starts at the origin).
    fn beat_at(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(origin()).as_nanos();
        u64::try_from(since / self.beat.as_nanos().max(1)).unwrap_or(u64::MAX)
    }
}

thread_local! {
    /// The metronome started on this thread. Per thread rather than per process: the agent's
    /// runtime runs every task on its one thread, and tests on other threads (some with a
    /// paused clock) keep plain tokio intervals.
    static CURRENT: std::cell::RefCell<Option<Arc<Metronome>>> =
        const { std::cell::RefCell::new(None) };
}

/// The channel of `period`'s beats, when a live metronome's beat divides it.
fn subscribe(period: Duration) -> Option<(Duration, u64, watch::Receiver<u64>)> {
    let m = CURRENT.try_with(|c| c.borrow().clone()).ok()??;
    if m.alive.has_changed().is_err() {
        return None;
    }
    let beat = m.beat.as_nanos();
    let p = period.as_nanos();
    if beat == 0 || p == 0 || !p.is_multiple_of(beat) {
        return None;
    }
    let every = u64::try_from(p / beat).ok()?;
    let now = m.beat_at(Instant::now());
    let mut channels = m.channels.lock().ok()?;
    let rx = match channels.get(&every) {
        Some(tx) => tx.subscribe(),
        None => {
            let (tx, rx) = watch::channel(now);
            channels.insert(every, tx);
            m.rearm.notify_one();
            rx
        }
    };
    Some((m.beat, every, rx))
}

/// The first beat after `now` that is a multiple of one of `periods` (in beats); `None`
/// without periods.
pub fn next_needed_beat(now: u64, periods: impl IntoIterator<Item = u64>) -> Option<u64> {
    periods
        .into_iter()
        .filter(|&p| p > 0)
        .map(|p| (now / p).saturating_add(1).saturating_mul(p))
        .min()
}

/// Why the metronome could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetronomeError {
    /// The kernel refused the interval timer.
    #[error("cannot create the agent's interval timer (timerfd): {0}")]
    Timer(#[source] std::io::Error),
    /// Not called inside a tokio runtime with I/O enabled.
    #[error("cannot register the agent's interval timer with the runtime: {0}")]
    Register(#[source] std::io::Error),
}

/// Starts the metronome on the current tokio runtime, with beats every `beat` (at least
/// 1 ms) on the grid. Intervals created afterwards on this thread whose period is a multiple
/// of `beat` follow its beats; a later call replaces it for new intervals. It fires only the
/// beats that some period needs: with periods of 2, 5 and 6 beats, 36 beats in 60.
pub fn start_metronome(beat: Duration) -> Result<(), MetronomeError> {
    use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
    let beat = beat.max(Duration::from_millis(1));
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )
    .map_err(|e| MetronomeError::Timer(e.into()))?;
    // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`: it stays open, and its
    // `as_raw_fd` is the same descriptor, until the `AsyncFd` is dropped (tokio's condition).
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| MetronomeError::Register(e.into()))?;
    let (alive_tx, alive) = watch::channel(());
    let m = Arc::new(Metronome {
        beat,
        channels: Mutex::new(BTreeMap::new()),
        alive,
        rearm: tokio::sync::Notify::new(),
        fired: std::sync::atomic::AtomicU64::new(0),
    });
    let _ = CURRENT.try_with(|c| *c.borrow_mut() = Some(m.clone()));
    tokio::spawn(run_metronome(fd, m, alive_tx));
    Ok(())
}

/// Closes every period's channel when the metronome's task ends (also when its runtime drops
/// it), so that its intervals fall back to tokio timers instead of waiting forever.
struct CloseOnDrop(Arc<Metronome>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Ok(mut channels) = self.0.channels.lock() {
            channels.clear();
        }
        let _ = CURRENT.try_with(|c| {
            if let Ok(mut cur) = c.try_borrow_mut() {
                if cur.as_ref().is_some_and(|m| Arc::ptr_eq(m, &self.0)) {
                    *cur = None;
                }
            }
        });
    }
}

/// Arms `fd` once, for the instant of `beat` (disarms it for `None`).
fn arm(fd: &OwnedFd, beat: Option<(u64, Duration)>) -> std::io::Result<()> {
    use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
    let spec = |d: Duration| Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    };
    let value = match beat {
        // A zero value disarms; a deadline already passed fires at once.
        Some((n, len)) => beat_instant(n, len)
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1)),
        None => Duration::ZERO,
    };
    timerfd_settime(
        fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: spec(Duration::ZERO),
            it_value: spec(value),
        },
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

/// Fires the beats the registered periods need, and signals each period's channel on its
/// beats. A beat fired late is still that beat; the next one is computed from the time it
/// actually fired, so beats missed meanwhile are skipped.
async fn run_metronome(fd: AsyncFd<OwnedFd>, m: Arc<Metronome>, _alive: watch::Sender<()>) {
    let _close = CloseOnDrop(m.clone());
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "{what} the agent's interval timer failed; periodic work falls back to tokio timers");
    };
    loop {
        let now = m.beat_at(Instant::now());
        let next = {
            let Ok(channels) = m.channels.lock() else {
                return;
            };
            next_needed_beat(now, channels.keys().copied())
        };
        if let Err(e) = arm(fd.get_ref(), next.map(|n| (n, m.beat))) {
            fail("arming", &e);
            return;
        }
        let mut guard = tokio::select! {
            _ = m.rearm.notified() => continue,
            g = fd.readable() => match g {
                Ok(g) => g,
                Err(e) => {
                    fail("waiting on", &e);
                    return;
                }
            },
        };
        let mut buf = [0u8; 8];
        match guard
            .try_io(|fd| rustix::io::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from))
        {
            // The expiration is consumed: wait for the next one rather than read again.
            Ok(Ok(8)) => guard.clear_ready(),
            Ok(Ok(_)) | Err(_) => continue,
            Ok(Err(e)) => {
                fail("reading", &e);
                return;
            }
        }
        let Some(beat) = next else { continue };
        m.fired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(channels) = m.channels.lock() else {
            return;
        };
        for (&every, tx) in channels.iter() {
            if beat.is_multiple_of(every) {
                tx.send_replace(beat);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table: (offset of `at` from the origin in ms, period in ms, expected offset in ms).
    #[test]
    fn next_on_grid_is_the_first_multiple_of_the_period_at_or_after() {
        let origin = Instant::now() + Duration::from_secs(10);
        let cases: &[(i64, u64, i64)] = &[
            (0, 50, 0),
            (1, 50, 50),
            (49, 50, 50),
            (50, 50, 50),
            (51, 300, 300),
            (301, 300, 600),
            (1000, 500, 1000),
            (-1, 50, 0),
            (-50, 50, -50),
            (-51, 50, -50),
            (-120, 50, -100),
        ];
        let at = |ms: i64| {
            if ms >= 0 {
                origin + Duration::from_millis(ms.unsigned_abs())
            } else {
                origin - Duration::from_millis(ms.unsigned_abs())
            }
        };
        for &(offset, period, expected) in cases {
            assert_eq!(
                next_on_grid(origin, at(offset), Duration::from_millis(period)),
                at(expected),
                "at {offset} ms, period {period} ms"
            );
        }
        assert_eq!(next_on_grid(origin, at(7), Duration::ZERO), at(7));
    }

    /// Intervals of different periods started at different moments tick on one grid: every
    /// tick of a 300 ms interval is also a point of the 50 ms grid, and a realigned interval
    /// stays on its grid.
    /// (Real clock, short periods: the instants checked are the scheduled deadlines that
    /// `tick` returns, so the test does not depend on how late the runtime wakes.)
    #[tokio::test]
    async fn intervals_started_apart_tick_on_one_grid() {
        let ms = Duration::from_millis;
        let on = |t: Instant, period: u64| next_on_grid(origin(), t, ms(period)) == t;
        let mut fast = interval(ms(5));
        tokio::time::sleep(ms(7)).await;
        let mut slow = interval(ms(30));
        for _ in 0..3 {
            let t = slow.tick().await;
            assert!(on(t, 30) && on(t, 5), "a 30 ms tick off the grid");
            let f = fast.tick().await;
            assert!(on(f, 5), "a 5 ms tick off the grid");
        }
        tokio::time::sleep(ms(3)).await;
        let asked = Instant::now();
        realign(&mut slow);
        let t = slow.tick().await;
        assert!(on(t, 30), "a realigned tick off the grid");
        assert!(
            t >= asked + ms(30),
            "a realigned tick comes a period later at the soonest"
        );
        assert_eq!(slow.period(), ms(30));
    }

    /// Under a metronome, intervals whose period is a multiple of its beat follow its beats:
    /// ticks on the grid, shared between periods, realigned a period away; other periods stay
    /// tokio intervals. When the metronome's runtime ends, its intervals keep ticking on the
    /// grid on tokio timers.
    #[test]
    fn intervals_follow_the_metronome_and_outlive_it() {
        let ms = Duration::from_millis;
        let on = |t: Instant, period: u64| next_on_grid(origin(), t, ms(period)) == t;
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let first = rt();
        let mut slow = first.block_on(async {
            start_metronome(ms(5)).expect("metronome");
            let mut fast = interval(ms(5));
            tokio::time::sleep(ms(7)).await;
            let mut slow = interval(ms(15));
            let odd = interval(ms(7));
            assert!(
                matches!(fast.inner, Inner::Beats(_)),
                "a 5 ms interval off the beats"
            );
            assert!(
                matches!(slow.inner, Inner::Beats(_)),
                "a 15 ms interval off the beats"
            );
            assert!(
                matches!(odd.inner, Inner::Plain(_)),
                "7 ms is not a multiple of 5 ms"
            );
            let mut last = None;
            for _ in 0..3 {
                let t = slow.tick().await;
                assert!(on(t, 15), "a 15 ms tick off the grid");
                assert!(
                    last.is_none_or(|l| t >= l + ms(15)),
                    "two 15 ms ticks too close"
                );
                last = Some(t);
                let f = fast.tick().await;
                assert!(on(f, 5), "a 5 ms tick off the grid");
            }
            tokio::time::sleep(ms(3)).await;
            let asked = Instant::now();
            realign(&mut slow);
            let t = slow.tick().await;
            assert!(on(t, 15), "a realigned tick off the grid");
            assert!(
                t + ms(1) >= asked + ms(15),
                "a realigned tick comes a period later"
            );
            assert_eq!(slow.period(), ms(15));
            slow
        });
        drop(first);
        // The metronome is gone with its runtime: the interval falls back, new ones are plain.
        rt().block_on(async {
            let t = tokio::time::timeout(ms(200), slow.tick())
                .await
                .expect("an interval of a stopped metronome still ticks");
            assert!(on(t, 15), "a fallen-back tick off the grid");
            assert!(matches!(slow.inner, Inner::Plain(_)));
            assert!(matches!(interval(ms(5)).inner, Inner::Plain(_)));
        });
    }

    /// Table: the first beat after `now` that one of the periods needs.
    #[test]
    fn next_needed_beat_is_the_first_multiple_of_a_period() {
        let cases: &[(u64, &[u64], Option<u64>)] = &[
            (0, &[1], Some(1)),
            (7, &[2, 5, 6], Some(8)),
            (8, &[2, 5, 6], Some(10)),
            (10, &[5, 6], Some(12)),
            (11, &[4, 6], Some(12)),
            (59, &[4, 5, 6], Some(60)),
            (3, &[], None),
            (3, &[0], None),
        ];
        for &(now, periods, expected) in cases {
            assert_eq!(
                next_needed_beat(now, periods.iter().copied()),
                expected,
                "now {now}, periods {periods:?}"
            );
        }
    }

    /// The metronome fires only the beats its intervals need: a lone 15 ms interval on 5 ms
    /// beats costs one beat in three.
    #[test]
    fn the_metronome_fires_only_needed_beats() {
        let ms = Duration::from_millis;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            start_metronome(ms(5)).expect("metronome");
            let m = CURRENT
                .with(|c| c.borrow().clone())
                .expect("the metronome is installed");
            let mut slow = interval(ms(15));
            slow.tick().await;
            let fired = m.fired.load(std::sync::atomic::Ordering::Relaxed);
            for _ in 0..10 {
                let t = slow.tick().await;
                assert_eq!(next_on_grid(origin(), t, ms(15)), t, "a tick off the grid");
            }
            let beats = m.fired.load(std::sync::atomic::Ordering::Relaxed) - fired;
            assert!(
                (10..=12).contains(&beats),
                "{beats} beats fired for 10 ticks of a 15 ms interval"
            );
        });
    }
}
