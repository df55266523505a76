//! What the probes observe, as values: the service kinds, a single check's result, the rise/
//! fall [`Tracker`] and the tracked [`Observation`] that reports carry.
//!
//! This is part of the pure core: `health`, `decide` and the codec build on these types, and
//! the probe adapter (`probe`) produces them. Nothing here does I/O or reads a clock (a
//! result carries the time it was taken, as a value).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, UnixMillis};

/// A kind of service a probe watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// MariaDB with Galera.
    Mariadb,
    /// Redis.
    Redis,
    /// A PHP-FPM pool.
    Phpfpm,
    /// The GlusterFS volume (bricks, heal, peers).
    Gluster,
    /// One GlusterFS FUSE mount point.
    GlusterMount,
}

impl Service {
    /// Stable name used in the API, metrics and wire messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Mariadb => "mariadb",
            Service::Redis => "redis",
            Service::Phpfpm => "phpfpm",
            Service::Gluster => "gluster",
            Service::GlusterMount => "gluster_mount",
        }
    }

    /// Parses [`Service::as_str`] names.
    pub fn parse(s: &str) -> Option<Service> {
        [
            Service::Mariadb,
            Service::Redis,
            Service::Phpfpm,
            Service::Gluster,
            Service::GlusterMount,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which instance a probe watches: the node it belongs to, the service, and a target label
/// (empty for the node's single instance; the mount path for mounts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProbeId {
    /// The node whose service this is.
    pub subject: NodeId,
    /// The service.
    pub service: Service,
    /// Instance label within the node (empty when there is one).
    pub target: String,
}

impl fmt::Display for ProbeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.target.is_empty() {
            write!(f, "{}/{}", self.subject, self.service)
        } else {
            write!(f, "{}/{}:{}", self.subject, self.service, self.target)
        }
    }
}

/// Health of a service instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Serving normally.
    Healthy,
    /// Serving, with a problem worth attention.
    Degraded,
    /// Reachable but not serving.
    Down,
    /// Could not be talked to.
    Unreachable,
}

impl Status {
    /// Whether the instance serves (healthy or degraded).
    pub fn is_up(self) -> bool {
        matches!(self, Status::Healthy | Status::Degraded)
    }

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Down => "down",
            Status::Unreachable => "unreachable",
        }
    }

    /// Parses [`Status::as_str`] names.
    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Healthy,
            Status::Degraded,
            Status::Down,
            Status::Unreachable,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Why a check failed to talk to its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The connection was refused: nothing listens (on the local node: the process is dead).
    Refused,
    /// No answer within the timeout (hung process, partition, overload).
    Timeout,
    /// Credentials rejected.
    Auth,
    /// It answered something that is not the expected protocol.
    Protocol,
    /// Another I/O error (reset, unreachable network, missing socket file).
    Io,
    /// The service answered, but with a state that is not serving.
    State,
}

impl FailureKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Auth => "auth",
            FailureKind::Protocol => "protocol",
            FailureKind::Io => "io",
            FailureKind::State => "state",
        }
    }

    /// Classifies an I/O error.
    pub fn of_io(e: &std::io::Error) -> FailureKind {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => FailureKind::Timeout,
            _ => FailureKind::Io,
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What this single check saw.
    pub status: Status,
    /// Why it failed, when it did.
    pub failure: Option<FailureKind>,
    /// Human-readable reason for a non-healthy result (never contains credentials).
    pub error: Option<String>,
    /// Structured details (service-specific JSON object).
    pub details: serde_json::Value,
}

impl CheckResult {
    /// A healthy result.
    pub fn healthy(details: serde_json::Value) -> Self {
        CheckResult {
            status: Status::Healthy,
            failure: None,
            error: None,
            details,
        }
    }

    /// A serving-but-degraded result.
    pub fn degraded(details: serde_json::Value, why: impl Into<String>) -> Self {
        CheckResult {
            status: Status::Degraded,
            failure: None,
            error: Some(why.into()),
            details,
        }
    }

    /// A reachable-but-not-serving result.
    pub fn down(details: serde_json::Value, why: impl Into<String>) -> Self {
        CheckResult {
            status: Status::Down,
            failure: Some(FailureKind::State),
            error: Some(why.into()),
            details,
        }
    }

    /// A could-not-talk-to-it result.
    pub fn unreachable(kind: FailureKind, why: impl Into<String>) -> Self {
        CheckResult {
            status: Status::Unreachable,
            failure: Some(kind),
            error: Some(why.into()),
            details: serde_json::Value::Null,
        }
    }
}

/// Rise/fall thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Consecutive successes to be considered up again.
    pub rise: u32,
    /// Consecutive failures to be considered down.
    pub fall: u32,
}

/// A tracked observation: the steady status plus the last single result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Which instance.
    pub id: ProbeId,
    /// Status after rise/fall.
    pub status: Status,
    /// The last single check.
    pub last: CheckResult,
    /// Consecutive failed checks (0 when the last one succeeded).
    pub failures: u32,
    /// Consecutive successful checks (0 when the last one failed).
    pub successes: u32,
    /// How long the last check took, in microseconds.
    pub latency_us: u64,
    /// Wall clock of the last check (display only).
    pub observed_at: UnixMillis,
}

/// Rise/fall tracking for one probe. Pure.
#[derive(Clone, Debug)]
pub struct Tracker {
    thresholds: Thresholds,
    current: Option<Observation>,
}

impl Tracker {
    /// A tracker with no result yet.
    pub fn new(thresholds: Thresholds) -> Self {
        Tracker {
            thresholds,
            current: None,
        }
    }

    /// Replaces the thresholds; the current observation stays.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    /// The current observation, once there was a result.
    pub fn current(&self) -> Option<&Observation> {
        self.current.as_ref()
    }

    /// Feeds one result and returns the new observation.
    pub fn record(
        &mut self,
        id: &ProbeId,
        result: CheckResult,
        latency_us: u64,
        at: UnixMillis,
    ) -> &Observation {
        let ok = result.status.is_up();
        let (prev_status, failures, successes) = match &self.current {
            None => (None, u32::from(!ok), u32::from(ok)),
            Some(o) if ok => (Some(o.status), 0, o.successes.saturating_add(1)),
            Some(o) => (Some(o.status), o.failures.saturating_add(1), 0),
        };
        let status = match prev_status {
            // The first result is taken as is: there is no history to smooth.
            None => result.status,
            Some(prev) if prev.is_up() && ok => result.status,
            Some(prev) if prev.is_up() => {
                if failures >= self.thresholds.fall {
                    result.status
                } else {
                    prev
                }
            }
            Some(_) if ok => {
                if successes >= self.thresholds.rise {
                    result.status
                } else {
                    prev_status.unwrap_or(result.status)
                }
            }
            // Still failing: follow the latest failure kind (down vs unreachable).
            Some(_) => result.status,
        };
        self.current.insert(Observation {
            id: id.clone(),
            status,
            last: result,
            failures,
            successes,
            latency_us,
            observed_at: at,
        })
    }
}

/// A one-line summary of a check's details, for `triad status`.
pub fn summarize(service: Service, d: &serde_json::Value) -> String {
    if d.is_null() {
        return String::new();
    }
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let n = |k: &str| d.get(k).and_then(|v| v.as_i64());
    let or_q = |v: Option<i64>| v.map_or("?".to_string(), |x| x.to_string());
    match service {
        Service::Mariadb if d.get("grastate").is_some() => {
            let g = &d["grastate"];
            // The seqno is null while mariadbd runs or after a crash (-1 in the file).
            let seqno = g["seqno"]
                .as_i64()
                .map_or_else(|| "unknown (-1)".to_string(), |x| x.to_string());
            format!(
                "grastate seqno {seqno} safe_to_bootstrap {}",
                g["safe_to_bootstrap"]
            )
        }
        Service::Mariadb => format!(
            "{} {} size {} seqno {}",
            s("cluster_status").unwrap_or_else(|| "?".into()),
            s("local_state_comment").unwrap_or_else(|| "?".into()),
            or_q(n("cluster_size")),
            or_q(n("last_committed")),
        ),
        Service::Redis => match s("role").as_deref() {
            Some("master") => format!(
                "master offset {} replicas {}",
                or_q(n("master_repl_offset")),
                d.get("replicas")
                    .and_then(|r| r.as_array())
                    .map_or(0, |r| r.len())
            ),
            Some("replica") => format!(
                "replica of {}:{} link {} offset {}",
                s("master_host").unwrap_or_else(|| "?".into()),
                or_q(n("master_port")),
                match d.get("master_link_up").and_then(|v| v.as_bool()) {
                    Some(true) => "up",
                    Some(false) => "DOWN",
                    None => "?",
                },
                or_q(n("slave_repl_offset")),
            ),
            _ => String::new(),
        },
        Service::Phpfpm => format!(
            "queue {} active {}/{} max-children-reached {}",
            or_q(n("listen_queue")),
            or_q(n("active_processes")),
            or_q(n("total_processes")),
            or_q(n("max_children_reached")),
        ),
        Service::Gluster => format!(
            "bricks {}/{} heal {}",
            or_q(n("bricks_online")),
            or_q(n("bricks_expected")),
            or_q(n("heal_pending")),
        ),
        Service::GlusterMount => s("path").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ProbeId {
        ProbeId {
            subject: NodeId(1),
            service: Service::Redis,
            target: String::new(),
        }
    }

    fn result(code: char) -> CheckResult {
        match code {
            'H' => CheckResult::healthy(serde_json::Value::Null),
            'G' => CheckResult::degraded(serde_json::Value::Null, "slow"),
            'D' => CheckResult::down(serde_json::Value::Null, "non-primary"),
            _ => CheckResult::unreachable(FailureKind::Refused, "refused"),
        }
    }

    fn status(code: char) -> Status {
        match code {
            'H' => Status::Healthy,
            'G' => Status::Degraded,
            'D' => Status::Down,
            _ => Status::Unreachable,
        }
    }

    /// Data-driven: a sequence of single results (H healthy, G degraded, D down,
    /// U unreachable) and the tracked status after each, with rise 2 and fall 3.
    #[test]
    fn rise_and_fall() {
        let cases = [
            ("HHHH", "HHHH"),
            ("U", "U"),
            ("HUUU", "HHHU"),
            ("HUUHUUU", "HHHHHHU"),
            ("UUH", "UUU"),
            ("UUHH", "UUUH"),
            ("UHUHH", "UUUUH"),
            ("HUUD", "HHHD"),
            ("DUD", "DUD"),
            ("HGH", "HGH"),
            ("UHG", "UUG"),
        ];
        for (input, want) in cases {
            let mut t = Tracker::new(Thresholds { rise: 2, fall: 3 });
            let got: String = input
                .chars()
                .map(|c| {
                    let o = t.record(&id(), result(c), 10, UnixMillis(0));
                    let s = o.status;
                    ['H', 'G', 'D', 'U']
                        .into_iter()
                        .find(|&k| status(k) == s)
                        .unwrap_or('?')
                })
                .collect();
            assert_eq!(got, want, "input {input}");
        }
    }

    #[test]
    fn counts_consecutive_results() {
        let mut t = Tracker::new(Thresholds { rise: 1, fall: 1 });
        t.record(&id(), result('U'), 1, UnixMillis(0));
        let o = t.record(&id(), result('U'), 1, UnixMillis(0));
        assert_eq!((o.failures, o.successes), (2, 0));
        let o = t.record(&id(), result('H'), 1, UnixMillis(0));
        assert_eq!((o.failures, o.successes), (0, 1));
    }

    #[test]
    fn names_round_trip() {
        for s in [
            Status::Healthy,
            Status::Degraded,
            Status::Down,
            Status::Unreachable,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for s in [
            Service::Mariadb,
            Service::Redis,
            Service::Phpfpm,
            Service::Gluster,
            Service::GlusterMount,
        ] {
            assert_eq!(Service::parse(s.as_str()), Some(s));
        }
        assert_eq!(Service::parse("nginx"), None);
    }
}
