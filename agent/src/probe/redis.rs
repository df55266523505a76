//! The Redis probe: `PING` and `INFO replication persistence server`, pipelined. The connection is
//! kept between checks (a new one per second per server costs more CPU than the rest of the
//! agent); when the kept one fails, the same check retries on a fresh connection, so a dead or
//! cut-off server is still classified as refused or timed out, never as a stale connection.
//!
//! Status: `healthy`, or `degraded` for a replica whose link to its master is down or that is
//! in a full sync; `unreachable` with the failure kind when the server cannot be talked to;
//! `down` when it answers with an error (for example `LOADING`).

use std::net::SocketAddr;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::redis_info::{parse_info, RedisInfo, RedisRole};
use super::{CheckResult, FailureKind, ProbeId};
use crate::config::ProbeTiming;

/// Probes one Redis server.
pub struct RedisProbe {
    id: ProbeId,
    addr: SocketAddr,
    username: Option<String>,
    password: Option<String>,
    timing: ProbeTiming,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl RedisProbe {
    /// A probe of the server at `addr`.
    pub fn new(
        id: ProbeId,
        addr: SocketAddr,
        username: Option<String>,
        password: Option<String>,
        timing: ProbeTiming,
    ) -> Self {
        RedisProbe {
            id,
            addr,
            username,
            password,
            timing,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn run(&self) -> CheckResult {
        match self.info().await {
            Ok(info) => judge(info),
            Err(e) => classify(&e, self.addr),
        }
    }

    async fn info(&self) -> redis::RedisResult<RedisInfo> {
        let mut slot = self.conn.lock().await;
        if let Some(mut c) = slot.take() {
            if let Ok(info) = Self::read(&mut c).await {
                *slot = Some(c);
                return Ok(info);
            }
            // The kept connection broke: judge the server by a fresh one (refused, timeout).
        }
        let mut c = self.connect().await?;
        let info = Self::read(&mut c).await?;
        *slot = Some(c);
        Ok(info)
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        connect(
            self.addr,
            self.username.as_deref(),
            self.password.as_deref(),
            self.timing.timeout,
        )
        .await
    }

    async fn read(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<RedisInfo> {
        // One round trip: `PING` (refused with an error while the server loads, or to a user
        // not allowed to run it) and `INFO` (answered even then) pipelined.
        let (_pong, text): (String, String) = redis::pipe()
            .cmd("PING")
            .cmd("INFO")
            .arg("replication")
            .arg("persistence")
            .arg("server")
            .query_async(conn)
            .await?;
        Ok(parse_info(&text))
    }
}

/// Opens a connection to the Redis at `addr` with optional ACL credentials, connection and
/// response timeouts. Shared by the probe and the actuator.
pub async fn connect(
    addr: SocketAddr,
    username: Option<&str>,
    password: Option<&str>,
    timeout: std::time::Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(u) = username {
        settings = settings.set_username(u);
    }
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    let info = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
        .into_connection_info()?
        .set_redis_settings(settings);
    let client = redis::Client::open(info)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Turns one `INFO` answer into a check result (shared with the simulation).
pub fn judge(info: RedisInfo) -> CheckResult {
    let details = serde_json::to_value(&info).unwrap_or_default();
    match info.role {
        None => CheckResult::down(details, "INFO did not report a role"),
        Some(RedisRole::Replica) if info.master_link_up == Some(false) => {
            let since = info
                .master_link_down_since_seconds
                .filter(|s| *s >= 0)
                .map_or(String::new(), |s| format!(" for {s}s"));
            let target = match (&info.master_host, info.master_port) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                _ => "its master".into(),
            };
            CheckResult::degraded(details, format!("replica link to {target} down{since}"))
        }
        Some(RedisRole::Replica) if info.master_sync_in_progress == Some(true) => {
            CheckResult::degraded(details, "full sync from master in progress")
        }
        Some(_) => CheckResult::healthy(details),
    }
}

/// Maps a client error to a result; never includes credentials (the redis crate does not put
/// them in error texts).
fn classify(e: &redis::RedisError, addr: SocketAddr) -> CheckResult {
    let kind = if e.is_connection_refusal() {
        FailureKind::Refused
    } else if e.is_timeout() {
        FailureKind::Timeout
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.to_string().contains("NOAUTH")
        || e.to_string().contains("WRONGPASS")
    {
        FailureKind::Auth
    } else if e.is_io_error() {
        FailureKind::Io
    } else if e.code().is_some() {
        // The server answered with an error (LOADING, MASTERDOWN, ...): reachable, not serving.
        return CheckResult::down(serde_json::Value::Null, format!("redis {addr}: {e}"));
    } else {
        FailureKind::Protocol
    };
    CheckResult::unreachable(kind, format!("redis {addr}: {e}"))
}

super::impl_probe!(RedisProbe);
