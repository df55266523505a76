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
//! Caveat: checks that share a deadline start together. Every probe does a few hundred
//! microseconds of work, so a cluster-wide burst is a few milliseconds at most; it was the
//! reason for the former staggered start, which cost one wake-up per check.

// Reads the clock (adapter: anchors timers); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

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

/// An interval of `period` whose ticks fall on the process-wide grid: the first at the next
/// grid point, then every `period`, skipping missed ticks.
pub fn interval(period: Duration) -> Interval {
    let start = next_on_grid(origin(), Instant::now(), period);
    let mut i = tokio::time::interval_at(start, period.max(Duration::from_nanos(1)));
    i.set_missed_tick_behavior(MissedTickBehavior::Skip);
    i
}

/// Moves `interval`'s next tick to the first grid point at least one period from now.
pub fn realign(interval: &mut Interval) {
    let period = interval.period();
    interval.reset_at(next_on_grid(origin(), Instant::now() + period, period));
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
}
