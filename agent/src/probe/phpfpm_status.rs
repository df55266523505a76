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

/// Judges a pool from two consecutive status samples: degraded when requests are queueing on
/// both samples, or when `max children reached` grew in between. Returns the reason.
pub fn degradation(previous: Option<&FpmStatus>, now: &FpmStatus) -> Option<String> {
    if let Some(prev) = previous {
        if now.listen_queue > 0 && prev.listen_queue > 0 {
            return Some(format!(
                "listen queue non-zero on two checks ({} then {})",
                prev.listen_queue, now.listen_queue
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

    /// (previous queue, previous max-children, now queue, now max-children, degraded?)
    #[test]
    fn degradation_rules() {
        let cases = [
            (None, 0, 0, false),
            (Some((0, 0)), 3, 0, false),
            (Some((2, 0)), 1, 0, true),
            (Some((2, 0)), 0, 0, false),
            (Some((0, 1)), 0, 1, false),
            (Some((0, 1)), 0, 2, true),
        ];
        for (prev, q, mc, want) in cases {
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
                degradation(p.as_ref(), &now).is_some(),
                want,
                "{prev:?} -> {q},{mc}"
            );
        }
    }
}
