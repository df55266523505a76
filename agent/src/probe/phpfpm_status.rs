//! Parser for PHP-FPM's `status?json` page and the rule that turns it into a status.
//!
//! Pure; table-tested on real captures in `agent/tests/fixtures/phpfpm/`.

use serde::{Deserialize, Serialize};

/// The fields of `status?json` that matter for health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpmStatus {
    /// Pool name.
    pub pool: String,
    /// `static`, `dynamic` or `ondemand`.
    #[serde(rename(deserialize = "process manager"))]
    pub process_manager: String,
    /// Requests accepted since start.
    #[serde(rename(deserialize = "accepted conn"))]
    pub accepted_conn: u64,
    /// Requests waiting for a free worker right now.
    #[serde(rename(deserialize = "listen queue"))]
    pub listen_queue: u64,
    /// Highest listen queue seen since start.
    #[serde(rename(deserialize = "max listen queue"))]
    pub max_listen_queue: u64,
    /// Idle workers.
    #[serde(rename(deserialize = "idle processes"))]
    pub idle_processes: u64,
    /// Busy workers.
    #[serde(rename(deserialize = "active processes"))]
    pub active_processes: u64,
    /// All workers.
    #[serde(rename(deserialize = "total processes"))]
    pub total_processes: u64,
    /// Times the pool hit `pm.max_children` since start.
    #[serde(rename(deserialize = "max children reached"))]
    pub max_children_reached: u64,
    /// Requests slower than `request_slowlog_timeout` since start.
    #[serde(rename(deserialize = "slow requests"))]
    pub slow_requests: u64,
}

/// Parses the JSON body of `status?json` (or `status?json&full`; per-process rows are ignored).
pub fn parse_status(body: &[u8]) -> Result<FpmStatus, String> {
    serde_json::from_slice(body).map_err(|e| format!("status page is not PHP-FPM status JSON: {e}"))
}

/// When a pool counts as saturated (`[phpfpm] queue_bound`, `queue_for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saturation {
    /// A listen queue above this many requests counts as queueing.
    pub queue_bound: u64,
    /// Queueing must last this long (from the first check that saw it), and at least two
    /// consecutive checks.
    pub queue_for: std::time::Duration,
}

impl Default for Saturation {
    /// Any queued request on two consecutive checks.
    fn default() -> Self {
        Saturation {
            queue_bound: 0,
            queue_for: std::time::Duration::ZERO,
        }
    }
}

/// Judges a pool from two consecutive status samples: degraded when the listen queue is above
/// the bound on both samples and has been for `s.queue_for` (`queued_for`: since the first
/// check above it), or when `max children reached` grew in between. Returns the reason.
pub fn degradation(
    previous: Option<&FpmStatus>,
    now: &FpmStatus,
    s: &Saturation,
    queued_for: std::time::Duration,
) -> Option<String> {
    if let Some(prev) = previous {
        if now.listen_queue > s.queue_bound
            && prev.listen_queue > s.queue_bound
            && queued_for >= s.queue_for
        {
            return Some(format!(
                "listen queue above {} for {:.1} s ({} then {})",
                s.queue_bound,
                queued_for.as_secs_f64(),
                prev.listen_queue,
                now.listen_queue
            ));
        }
        if now.max_children_reached > prev.max_children_reached {
            return Some(format!(
                "pool hit pm.max_children ({} -> {} times)",
                prev.max_children_reached, now.max_children_reached
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/phpfpm/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn parses_real_status_pages() {
        for f in ["status.json", "status_full.json"] {
            let s = parse_status(&fixture(f)).expect(f);
            assert_eq!(s.pool, "www", "{f}");
            assert_eq!(s.process_manager, "static", "{f}");
            assert_eq!(s.total_processes, 2, "{f}");
            assert_eq!(s.listen_queue, 0, "{f}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_status(b"pong").is_err());
        assert!(parse_status(b"").is_err());
    }

    /// (previous queue, previous max-children, now queue, now max-children, queued for ms,
    /// degraded?) with the default saturation (any queue on two checks), then with a bound of
    /// 5 requests for 2 s.
    #[test]
    fn degradation_rules() {
        let ms = std::time::Duration::from_millis;
        let default = Saturation::default();
        let bounded = Saturation {
            queue_bound: 5,
            queue_for: ms(2000),
        };
        let cases = [
            (default, None, 0, 0, 0, false),
            (default, Some((0, 0)), 3, 0, 0, false),
            (default, Some((2, 0)), 1, 0, 1000, true),
            (default, Some((2, 0)), 0, 0, 0, false),
            (default, Some((0, 1)), 0, 1, 0, false),
            (default, Some((0, 1)), 0, 2, 0, true),
            (bounded, Some((4, 0)), 5, 0, 3000, false),
            (bounded, Some((6, 0)), 7, 0, 1000, false),
            (bounded, Some((6, 0)), 7, 0, 2000, true),
            (bounded, Some((0, 1)), 0, 2, 0, true),
        ];
        for (s, prev, q, mc, for_ms, want) in cases {
            let p = prev.map(|(q, mc)| FpmStatus {
                listen_queue: q,
                max_children_reached: mc,
                ..FpmStatus::default()
            });
            let now = FpmStatus {
                listen_queue: q,
                max_children_reached: mc,
                ..FpmStatus::default()
            };
            assert_eq!(
                degradation(p.as_ref(), &now, &s, ms(for_ms)).is_some(),
                want,
                "{s:?} {prev:?} -> {q},{mc} for {for_ms} ms"
            );
        }
        let why = degradation(
            Some(&FpmStatus {
                listen_queue: 6,
                ..FpmStatus::default()
            }),
            &FpmStatus {
                listen_queue: 9,
                ..FpmStatus::default()
            },
            &bounded,
            ms(2500),
        );
        assert_eq!(
            why.as_deref(),
            Some("listen queue above 5 for 2.5 s (6 then 9)")
        );
    }
}
