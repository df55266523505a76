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
//! The grid is also shared between agents: its origin is the last whole minute of the wall
//! clock when the agent started (read once; the grid then runs on the monotonic clock). Three
//! agents with synchronised clocks send their lease pings and heartbeats at the same moments,
//! so each receives its peers' messages together, in one wake-up, instead of at three unrelated
//! phases. With clocks apart by more than a message's flight, or a wall clock stepped before
//! start, the grids drift apart and nothing but that saving is lost.
//!
//! **The metronome.** Tokio's timer wheel wakes the runtime at every 64 ms boundary of its own
//! clock that a pending timer crosses (it moves the timer to a finer level there), and a grid
//! of 50 ms multiples never lines up with it: about 15 of the agent's ~100 wake-ups a second
//! did nothing but that. [`start_metronome`] (called by the agent at start with the Raft tick)
//! replaces the periodic timers by one kernel interval timer (a `timerfd` on the monotonic
//! clock, armed on the grid). Each expiration is a beat; an [`Interval`] whose period is a
//! multiple of the beat waits for its beats on a channel of its period, which is signalled
//! only on the beats that are multiples of it. One epoll wake-up per beat then serves every
//! periodic activity, and the timer wheel is left with the short timeouts of requests in
//! flight. Without a metronome (tests, a period that is not a multiple of the beat) an
//! interval is a tokio interval on the same grid; when the metronome's runtime ends, its
//! intervals fall back to that too.
//!
//! Caveat: checks that share a deadline start together. Every probe does a few hundred
//! microseconds of work, so a cluster-wide burst is a few milliseconds at most; it was the
//! reason for the former staggered start, which cost one wake-up per check.

// Reads the clock (adapter: anchors timers); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Every default period divides it, so grids of the same period agree between agents.
const ORIGIN_SPAN: Duration = Duration::from_secs(60);

/// The process-wide origin of the grid, fixed the first time any interval asks for it: the
/// last whole minute of the wall clock, as a monotonic instant.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        aligned_origin(Instant::now(), since_epoch, ORIGIN_SPAN)
    })
}

/// The instant, at or before `now`, at which the wall clock showed the last whole multiple of
/// `span` since the epoch, given that it shows `since_epoch` at `now`. `now` itself when that
/// instant is not representable (a monotonic clock younger than `span`) or `span` is zero.
pub fn aligned_origin(now: Instant, since_epoch: Duration, span: Duration) -> Instant {
    let span = span.as_nanos();
    if span == 0 {
        return now;
    }
    let into = u64::try_from(since_epoch.as_nanos() % span).unwrap_or(0);
    now.checked_sub(Duration::from_nanos(into)).unwrap_or(now)
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
    /// Closed when the metronome's task ends.
    alive: watch::Receiver<u64>,
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
    let now = *m.alive.borrow();
    let mut channels = m.channels.lock().ok()?;
    let tx = channels
        .entry(every)
        .or_insert_with(|| watch::channel(now).0);
    Some((m.beat, every, tx.subscribe()))
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

/// Starts the metronome on the current tokio runtime: one beat every `beat` (at least 1 ms),
/// on the grid. Intervals created afterwards on this thread whose period is a multiple of
/// `beat` follow its beats; a later call replaces it for new intervals.
pub fn start_metronome(beat: Duration) -> Result<(), MetronomeError> {
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    let beat = beat.max(Duration::from_millis(1));
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )
    .map_err(|e| MetronomeError::Timer(e.into()))?;
    let now = Instant::now();
    let first = next_on_grid(origin(), now + Duration::from_micros(100), beat);
    let first_beat = u64::try_from((first - origin()).as_nanos() / beat.as_nanos()).unwrap_or(0);
    let spec = |d: Duration| Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    };
    timerfd_settime(
        &fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: spec(beat),
            it_value: spec((first - now).max(Duration::from_nanos(1))),
        },
    )
    .map_err(|e| MetronomeError::Timer(e.into()))?;
    // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`: it stays open, and its
    // `as_raw_fd` is the same descriptor, until the `AsyncFd` is dropped (tokio's condition).
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| MetronomeError::Register(e.into()))?;
    let (alive_tx, alive) = watch::channel(first_beat.saturating_sub(1));
    let m = Arc::new(Metronome {
        beat,
        channels: Mutex::new(BTreeMap::new()),
        alive,
    });
    let _ = CURRENT.try_with(|c| *c.borrow_mut() = Some(m.clone()));
    tokio::spawn(run_metronome(fd, m, alive_tx, first_beat));
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

/// Reads the timer's expirations and signals each period's channel on its beats.
async fn run_metronome(
    fd: AsyncFd<OwnedFd>,
    m: Arc<Metronome>,
    alive: watch::Sender<u64>,
    first_beat: u64,
) {
    let _close = CloseOnDrop(m.clone());
    // The beat that the next expiration is.
    let mut next = first_beat;
    loop {
        let Ok(mut guard) = fd.readable().await else {
            tracing::error!(
                "the agent's interval timer failed; periodic work falls back to tokio timers"
            );
            return;
        };
        let mut buf = [0u8; 8];
        let count = match guard
            .try_io(|fd| rustix::io::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from))
        {
            Ok(Ok(8)) => u64::from_ne_bytes(buf),
            Ok(Ok(_)) | Err(_) => continue,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the agent's interval timer failed; periodic work falls back to tokio timers");
                return;
            }
        };
        if count == 0 {
            continue;
        }
        let from = next;
        let now = next + count - 1;
        next += count;
        alive.send_replace(now);
        let Ok(channels) = m.channels.lock() else {
            return;
        };
        for (&every, tx) in channels.iter() {
            // Signal a period whose multiple is among the beats just passed.
            if now / every * every >= from {
                tx.send_replace(now);
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

    /// Table: (wall clock at `now` in ms since the epoch, span in ms, expected origin as ms
    /// before `now`).
    #[test]
    fn origin_is_the_last_whole_span_of_the_wall_clock() {
        let now = Instant::now() + Duration::from_secs(3600);
        let cases: &[(u64, u64, u64)] = &[
            (1_796_000_000_000, 60_000, 20_000),
            (1_796_000_040_000, 60_000, 0),
            (1_796_000_040_001, 60_000, 1),
            (1_796_000_099_999, 60_000, 59_999),
            (1_796_000_000_123, 1_000, 123),
            (5, 0, 0),
        ];
        for &(wall, span, before) in cases {
            assert_eq!(
                aligned_origin(
                    now,
                    Duration::from_millis(wall),
                    Duration::from_millis(span)
                ),
                now - Duration::from_millis(before),
                "wall {wall} ms, span {span} ms"
            );
        }
        // Two agents started at different moments of one synchronised clock share the grid:
        // the same wall-clock instant is on both grids.
        let a = aligned_origin(now, Duration::from_millis(1_796_000_012_345), ORIGIN_SPAN);
        let later = now + Duration::from_millis(7_777);
        let b = aligned_origin(later, Duration::from_millis(1_796_000_020_122), ORIGIN_SPAN);
        assert_eq!(a, b);
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
}
