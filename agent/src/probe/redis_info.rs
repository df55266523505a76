//! Parser for Redis `INFO` output (sections `replication`, `persistence`, `server`).
//!
//! Pure and total: unknown keys are ignored, a missing or malformed field becomes `None` (or an
//! error only for what a decision cannot do without, such as `role`). Table-tested on real
//! captures in `agent/tests/fixtures/redis/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Replication role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisRole {
    /// A master (accepts writes unless fenced).
    Master,
    /// A replica (`role:slave` in INFO).
    Replica,
}

impl RedisRole {
    /// `master` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisRole::Master => "master",
            RedisRole::Replica => "replica",
        }
    }
}

/// One replica as listed by its master (`slaveN:` lines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedReplica {
    /// Replica address as the master sees it.
    pub ip: String,
    /// Replica port.
    pub port: u16,
    /// `online`, `wait_bgsave`, `send_bulk`, ...
    pub state: String,
    /// Replication offset acknowledged by the replica.
    pub offset: i64,
    /// Seconds since the last acknowledgement.
    pub lag: i64,
}

/// What the probes and decisions need from `INFO`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisInfo {
    /// Role; `None` only if INFO did not say.
    pub role: Option<RedisRole>,
    /// Replica: the master it follows.
    pub master_host: Option<String>,
    /// Replica: the master's port.
    pub master_port: Option<u16>,
    /// Replica: whether its link to the master is up.
    pub master_link_up: Option<bool>,
    /// Replica: seconds since the last I/O with the master (-1 when never).
    pub master_last_io_seconds_ago: Option<i64>,
    /// Replica: seconds the link has been down, when down.
    pub master_link_down_since_seconds: Option<i64>,
    /// Replica: whether a full sync is in progress.
    pub master_sync_in_progress: Option<bool>,
    /// Replica: processed replication offset.
    pub slave_repl_offset: Option<i64>,
    /// Replica: configured priority (0 = never promote).
    pub slave_priority: Option<i64>,
    /// Master (and replica): replication offset of its own stream.
    pub master_repl_offset: Option<i64>,
    /// Replication id.
    pub master_replid: Option<String>,
    /// Replicas connected to this master.
    pub replicas: Vec<ConnectedReplica>,
    /// A background RDB save is running.
    pub rdb_bgsave_in_progress: Option<bool>,
    /// An AOF rewrite is running.
    pub aof_rewrite_in_progress: Option<bool>,
    /// Server run id (changes on restart).
    pub run_id: Option<String>,
    /// Seconds since the server started.
    pub uptime_in_seconds: Option<i64>,
    /// Server version.
    pub redis_version: Option<String>,
}

impl RedisInfo {
    /// The replication offset that ranks this instance as a promotion candidate: a replica's
    /// processed offset, or a master's own offset.
    pub fn offset(&self) -> Option<i64> {
        match self.role {
            Some(RedisRole::Replica) => self.slave_repl_offset.or(self.master_repl_offset),
            _ => self.master_repl_offset,
        }
    }
}

fn key_values(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .collect()
}

fn flag(v: Option<&&str>) -> Option<bool> {
    match v.map(|s| s.trim()) {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    }
}

fn parse_replica(value: &str) -> Option<ConnectedReplica> {
    let fields: BTreeMap<&str, &str> = value
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    Some(ConnectedReplica {
        ip: fields.get("ip")?.to_string(),
        port: fields.get("port")?.parse().ok()?,
        state: fields.get("state").unwrap_or(&"").to_string(),
        offset: fields
            .get("offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        lag: fields.get("lag").and_then(|v| v.parse().ok()).unwrap_or(-1),
    })
}

/// Parses the concatenated text of one or more INFO sections. Lines may end in `\r\n`.
pub fn parse_info(text: &str) -> RedisInfo {
    let kv = key_values(text);
    let num = |k: &str| kv.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    let string = |k: &str| kv.get(k).map(|v| v.trim().to_string());
    let mut replicas: Vec<(u32, ConnectedReplica)> = kv
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("slave")?.parse::<u32>().ok()?;
            Some((n, parse_replica(v.trim())?))
        })
        .collect();
    replicas.sort_by_key(|(n, _)| *n);
    RedisInfo {
        role: match kv.get("role").map(|s| s.trim()) {
            Some("master") => Some(RedisRole::Master),
            Some("slave") | Some("replica") => Some(RedisRole::Replica),
            _ => None,
        },
        master_host: string("master_host"),
        master_port: num("master_port").and_then(|p| u16::try_from(p).ok()),
        master_link_up: kv.get("master_link_status").map(|s| s.trim() == "up"),
        master_last_io_seconds_ago: num("master_last_io_seconds_ago"),
        master_link_down_since_seconds: num("master_link_down_since_seconds"),
        master_sync_in_progress: flag(kv.get("master_sync_in_progress")),
        slave_repl_offset: num("slave_repl_offset"),
        slave_priority: num("slave_priority").or_else(|| num("replica_priority")),
        master_repl_offset: num("master_repl_offset"),
        master_replid: string("master_replid"),
        replicas: replicas.into_iter().map(|(_, r)| r).collect(),
        rdb_bgsave_in_progress: flag(kv.get("rdb_bgsave_in_progress")),
        aof_rewrite_in_progress: flag(kv.get("aof_rewrite_in_progress")),
        run_id: string("run_id"),
        uptime_in_seconds: num("uptime_in_seconds"),
        redis_version: string("redis_version"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::probe::fixture("redis", name)
    }

    #[test]
    fn master_synced() {
        let i = parse_info(&fixture("master_replication_synced.txt"));
        assert_eq!(i.role, Some(RedisRole::Master));
        assert_eq!(i.master_repl_offset, Some(100));
        assert_eq!(i.offset(), Some(100));
        assert_eq!(
            i.replicas,
            vec![ConnectedReplica {
                ip: "127.0.0.1".into(),
                port: 16380,
                state: "online".into(),
                offset: 100,
                lag: 0
            }]
        );
    }

    #[test]
    fn master_during_full_sync() {
        let i = parse_info(&fixture("master_replication.txt"));
        assert_eq!(i.replicas[0].state, "wait_bgsave");
        assert_eq!(i.replicas[0].offset, 0);
    }

    /// (fixture, link up, last io, link down since, offset)
    #[test]
    fn replica_states() {
        let cases = [
            (
                "replica_replication.txt",
                false,
                Some(-1),
                Some(-1),
                Some(1),
            ),
            (
                "replica_replication_synced.txt",
                true,
                Some(1),
                None,
                Some(100),
            ),
            (
                "replica_replication_master_dead.txt",
                false,
                Some(-1),
                Some(1),
                Some(100),
            ),
        ];
        for (file, up, io, down, offset) in cases {
            let i = parse_info(&fixture(file));
            assert_eq!(i.role, Some(RedisRole::Replica), "{file}");
            assert_eq!(i.master_host.as_deref(), Some("127.0.0.1"), "{file}");
            assert_eq!(i.master_port, Some(16379), "{file}");
            assert_eq!(i.master_link_up, Some(up), "{file}");
            assert_eq!(i.master_last_io_seconds_ago, io, "{file}");
            assert_eq!(i.master_link_down_since_seconds, down, "{file}");
            assert_eq!(i.offset(), offset, "{file}");
            assert_eq!(i.slave_priority, Some(100), "{file}");
        }
    }

    #[test]
    fn server_and_persistence() {
        let text = fixture("server.txt") + &fixture("persistence.txt");
        let i = parse_info(&text);
        assert_eq!(i.redis_version.as_deref(), Some("7.0.15"));
        assert_eq!(i.run_id.as_deref().map(str::len), Some(40));
        assert_eq!(i.rdb_bgsave_in_progress, Some(false));
        assert_eq!(i.aof_rewrite_in_progress, Some(false));
    }

    #[test]
    fn garbage_and_crlf_are_tolerated() {
        let i = parse_info("role:master\r\nmaster_repl_offset:12\r\nslave0:garbage\r\n::::\n");
        assert_eq!(i.role, Some(RedisRole::Master));
        assert_eq!(i.master_repl_offset, Some(12));
        assert!(i.replicas.is_empty());
        assert_eq!(parse_info("").role, None);
    }
}
