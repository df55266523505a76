//! The local Galera node's SQL actuator: what the writer reconciler reads and changes on its
//! own mariadbd over the local socket, as the admin account (`[galera] admin_user`).
//!
//! - [`GaleraSql::read`]: `wsrep_cluster_status`, `wsrep_local_state`, `wsrep_ready`,
//!   `wsrep_gcomm_uuid` and `wsrep_evs_evict_list` in one statement;
//! - [`GaleraSql::evict`]: `SET GLOBAL wsrep_provider_options='evs.evict=UUID'` (the UUID is
//!   checked to be a gcomm UUID first: nothing else ever reaches the statement);
//! - [`GaleraSql::clear_evictions`]: `evs.evict=` (empty: clears this node's evict list);
//! - [`GaleraSql::set_evs`]: EVS timing options (`evs.join_retrans_period`,
//!   `evs.keepalive_period`: how soon Galera installs a view after an eviction or a join, see
//!   `galera.join_retrans_period`);
//! - [`GaleraSql::causal_wait`]: one read with `wsrep_sync_wait=1`, which returns only once
//!   this node has applied every write set committed in the cluster before it began: a new
//!   writer has applied everything the old one committed before it takes writes.
//!
//! [`MysqlGaleraSql`] is the real one (mysql_async, a connection per call: the calls are rare
//! and a kept connection to a restarted server would fail anyway); [`SimGaleraSql`] is an
//! in-memory node for tests and the simulation. Both pass `agent/tests/galera_sql_contract.rs`.
//!
//! Errors classify the cause like the other actuators: refused (no server), timeout (hung),
//! or the server's own refusal with its text (a missing privilege says which account needs
//! SUPER).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cluster::is_gcomm_uuid;
use crate::probe::galera_status::STATE_SYNCED;

/// What the local node says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalWsrep {
    /// `wsrep_cluster_status` is `Primary`.
    pub primary: bool,
    /// `wsrep_local_state` is 4 (Synced).
    pub synced: bool,
    /// `wsrep_ready` is ON.
    pub ready: bool,
    /// `wsrep_gcomm_uuid`, lowercase.
    pub gcomm_uuid: Option<String>,
    /// `wsrep_evs_evict_list`, split on commas, lowercase, sorted.
    pub evict_list: Vec<String>,
    /// `wsrep_local_state_comment`, for messages.
    pub state: String,
}

impl LocalWsrep {
    /// Synced, Primary and ready: the only state a writer may take writes in.
    pub fn serving(&self) -> bool {
        self.primary && self.synced && self.ready
    }
}

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GaleraSqlError {
    /// Nothing listens (mariadbd is not running).
    #[error("mariadbd at {at} refused the connection: it is not running")]
    Refused {
        /// The socket.
        at: String,
    },
    /// No answer in time.
    #[error("mariadbd at {at} did not answer within {after:?}: hung or overloaded")]
    Timeout {
        /// The socket.
        at: String,
        /// The deadline.
        after: Duration,
    },
    /// The server refused the statement.
    #[error("mariadbd refused `{what}` for {user}: {message} (galera.admin_user needs SUPER)")]
    Refusal {
        /// The statement, short.
        what: String,
        /// The account.
        user: String,
        /// The server's text.
        message: String,
    },
    /// Not a gcomm UUID: never sent.
    #[error("`{0}` is not a gcomm UUID; not sent")]
    BadUuid(String),
}

impl GaleraSqlError {
    /// Whether the server is surely not running.
    pub fn refused(&self) -> bool {
        matches!(self, GaleraSqlError::Refused { .. })
    }
}

/// The local node's SQL actuator. See the module docs.
pub trait GaleraSql: Send + Sync {
    /// Reads the local node's wsrep state and evict list.
    fn read(&self) -> BoxFuture<'_, Result<LocalWsrep, GaleraSqlError>>;
    /// Adds `gcomm_uuid` to the evict list (evicting it from the component).
    fn evict<'a>(&'a self, gcomm_uuid: &'a str) -> BoxFuture<'a, Result<(), GaleraSqlError>>;
    /// Clears this node's evict list.
    fn clear_evictions(&self) -> BoxFuture<'_, Result<(), GaleraSqlError>>;
    /// Waits until this node has applied everything committed in the cluster so far.
    fn causal_wait(&self) -> BoxFuture<'_, Result<(), GaleraSqlError>>;
    /// `SET GLOBAL wsrep_provider_options='evs.…=PT…S;…'` in one statement (until the process
    /// restarts).
    fn set_evs<'a>(
        &'a self,
        periods: &'a [(EvsPeriod, Duration)],
    ) -> BoxFuture<'a, Result<(), GaleraSqlError>>;
}

/// A Galera EVS timing option that Triad sets at runtime (see `galera.join_retrans_period`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EvsPeriod {
    /// `evs.join_retrans_period`: how often membership JOIN messages are retransmitted.
    JoinRetrans,
    /// `evs.keepalive_period`: how often a quiet member signals that it is alive.
    Keepalive,
}

impl EvsPeriod {
    /// The option's name.
    pub fn key(self) -> &'static str {
        match self {
            EvsPeriod::JoinRetrans => "evs.join_retrans_period",
            EvsPeriod::Keepalive => "evs.keepalive_period",
        }
    }
}

/// The options as `wsrep_provider_options` takes them: `evs.join_retrans_period=PT0.1S;…`.
pub fn evs_settings(periods: &[(EvsPeriod, Duration)]) -> String {
    periods
        .iter()
        .map(|(p, d)| format!("{}={}", p.key(), galera_duration(*d)))
        .collect::<Vec<_>>()
        .join(";")
}

/// A duration as Galera's options write it (ISO 8601, seconds with at most millisecond
/// precision): 100 ms is `PT0.1S`, 1.5 s is `PT1.5S`, 2 s is `PT2S`.
pub fn galera_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let (secs, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        format!("PT{secs}S")
    } else {
        let f = format!("{frac:03}");
        format!("PT{secs}.{}S", f.trim_end_matches('0'))
    }
}

/// Parses the evict list as `wsrep_evs_evict_list` shows it (comma separated UUIDs).
pub fn parse_evict_list(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The real actuator over the local socket.
///
/// One connection is kept between calls (the writer reconciler reads the node every cycle,
/// and authenticating each time cost more CPU than the rest of the agent). It is dropped on
/// any error other than the server's refusal of a statement, and on a timeout (its state is
/// then unknown); the call is then retried once on a fresh connection, which also tells a dead
/// server (refused) from a broken connection (a restarted mariadbd, `KILL`). The causal read
/// sets a session variable, so it runs on a connection of its own.
pub struct MysqlGaleraSql {
    socket: PathBuf,
    user: String,
    password: Option<String>,
    timeout: Duration,
    kept: tokio::sync::Mutex<Option<mysql_async::Conn>>,
}

impl MysqlGaleraSql {
    /// An actuator for the server at `socket`, as `user`.
    pub fn new(socket: PathBuf, user: String, password: Option<String>, timeout: Duration) -> Self {
        MysqlGaleraSql {
            socket,
            user,
            password,
            timeout,
            kept: tokio::sync::Mutex::new(None),
        }
    }

    fn at(&self) -> String {
        self.socket.display().to_string()
    }

    fn opts(&self) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .socket(Some(self.socket.to_string_lossy().into_owned()))
            .prefer_socket(true)
            .stmt_cache_size(0)
    }

    /// Runs `f` on the kept connection (see the type's docs), within the timeout.
    async fn run<T, F>(&self, what: &str, f: F) -> Result<T, GaleraSqlError>
    where
        F: for<'c> Fn(&'c mut mysql_async::Conn) -> BoxFuture<'c, Result<T, mysql_async::Error>>
            + Send
            + Sync,
        T: Send,
    {
        let work = async {
            let mut slot = self.kept.lock().await;
            // Taken out: a call cut by the timeout drops it, so it is never reused half-read.
            if let Some(mut conn) = slot.take() {
                match f(&mut conn).await {
                    Ok(v) => {
                        *slot = Some(conn);
                        return Ok(v);
                    }
                    Err(e @ mysql_async::Error::Server(_)) => {
                        *slot = Some(conn);
                        return Err(e);
                    }
                    // The kept connection broke: judge the server on a fresh one.
                    Err(_) => {}
                }
            }
            let mut conn = mysql_async::Conn::new(self.opts()).await?;
            let out = f(&mut conn).await;
            if matches!(out, Ok(_) | Err(mysql_async::Error::Server(_))) {
                *slot = Some(conn);
            }
            out
        };
        self.bounded(what, work).await
    }

    /// Runs `f` on a connection of its own, closed afterwards, within the timeout.
    async fn run_once<T, F>(&self, what: &str, f: F) -> Result<T, GaleraSqlError>
    where
        F: for<'c> FnOnce(
                &'c mut mysql_async::Conn,
            ) -> BoxFuture<'c, Result<T, mysql_async::Error>>
            + Send,
        T: Send,
    {
        let work = async {
            let mut conn = mysql_async::Conn::new(self.opts()).await?;
            let out = f(&mut conn).await;
            let _ = conn.disconnect().await;
            out
        };
        self.bounded(what, work).await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
    ) -> Result<T, GaleraSqlError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e, what, &self.user, self.at())),
            Err(_) => Err(GaleraSqlError::Timeout {
                at: self.at(),
                after: self.timeout,
            }),
        }
    }
}

fn classify(e: &mysql_async::Error, what: &str, user: &str, at: String) -> GaleraSqlError {
    if let mysql_async::Error::Io(io) = e {
        let text = io.to_string();
        if text.contains("refused") || text.contains("No such file") {
            return GaleraSqlError::Refused { at };
        }
    }
    GaleraSqlError::Refusal {
        what: what.to_string(),
        user: user.to_string(),
        message: e.to_string(),
    }
}

impl GaleraSql for MysqlGaleraSql {
    fn read(&self) -> BoxFuture<'_, Result<LocalWsrep, GaleraSqlError>> {
        Box::pin(self.run("SHOW GLOBAL STATUS", |c| {
            Box::pin(async move {
                use mysql_async::prelude::Queryable;
                let rows: Vec<(String, String)> = c
                    .query(
                        "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', \
                         'wsrep_local_state', 'wsrep_local_state_comment', 'wsrep_ready', \
                         'wsrep_gcomm_uuid', 'wsrep_evs_evict_list')",
                    )
                    .await?;
                let get = |k: &str| {
                    rows.iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                Ok(LocalWsrep {
                    primary: get("wsrep_cluster_status").as_deref() == Some("Primary"),
                    synced: get("wsrep_local_state")
                        .and_then(|s| s.parse::<i64>().ok())
                        .is_some_and(|s| s == STATE_SYNCED),
                    ready: get("wsrep_ready").is_some_and(|s| s.eq_ignore_ascii_case("ON")),
                    gcomm_uuid: get("wsrep_gcomm_uuid").map(|u| u.to_ascii_lowercase()),
                    evict_list: parse_evict_list(&get("wsrep_evs_evict_list").unwrap_or_default()),
                    state: get("wsrep_local_state_comment").unwrap_or_default(),
                })
            })
        }))
    }

    fn evict<'a>(&'a self, gcomm_uuid: &'a str) -> BoxFuture<'a, Result<(), GaleraSqlError>> {
        Box::pin(async move {
            if !is_gcomm_uuid(gcomm_uuid) {
                return Err(GaleraSqlError::BadUuid(gcomm_uuid.to_string()));
            }
            let stmt = format!("SET GLOBAL wsrep_provider_options='evs.evict={gcomm_uuid}'");
            self.run("evs.evict", move |c| {
                let stmt = stmt.clone();
                Box::pin(async move {
                    use mysql_async::prelude::Queryable;
                    c.query_drop(stmt).await
                })
            })
            .await
        })
    }

    fn clear_evictions(&self) -> BoxFuture<'_, Result<(), GaleraSqlError>> {
        Box::pin(self.run("evs.evict= (clear)", |c| {
            Box::pin(async move {
                use mysql_async::prelude::Queryable;
                c.query_drop("SET GLOBAL wsrep_provider_options='evs.evict='")
                    .await
            })
        }))
    }

    fn set_evs<'a>(
        &'a self,
        periods: &'a [(EvsPeriod, Duration)],
    ) -> BoxFuture<'a, Result<(), GaleraSqlError>> {
        // Built from the enum's names and formatted durations only: nothing else reaches it.
        let stmt = format!(
            "SET GLOBAL wsrep_provider_options='{}'",
            evs_settings(periods)
        );
        Box::pin(self.run("evs timing options", move |c| {
            let stmt = stmt.clone();
            Box::pin(async move {
                use mysql_async::prelude::Queryable;
                c.query_drop(stmt).await
            })
        }))
    }

    fn causal_wait(&self) -> BoxFuture<'_, Result<(), GaleraSqlError>> {
        Box::pin(self.run_once("wsrep_sync_wait read", |c| {
            Box::pin(async move {
                use mysql_async::prelude::Queryable;
                c.query_drop("SET SESSION wsrep_sync_wait=1").await?;
                c.query_drop("SELECT 1").await
            })
        }))
    }
}

/// An in-memory Galera node: its state, its evict list, and every statement it received.
#[derive(Clone, Default)]
pub struct SimGaleraSql {
    inner: Arc<Mutex<SimNode>>,
}

/// The simulated node's state.
#[derive(Clone, Debug, Default)]
pub struct SimNode {
    /// What [`GaleraSql::read`] answers (its evict list is kept by the statements).
    pub wsrep: LocalWsrep,
    /// `None`: answers; `Some(e)`: every call fails with it.
    pub fail: Option<GaleraSqlError>,
    /// Statements received, in order (`evict UUID`, `clear`, `causal`, `evs KEY=PT…S;…`).
    pub log: Vec<String>,
}

impl SimGaleraSql {
    /// A Synced, Primary node with `gcomm_uuid`.
    pub fn serving(gcomm_uuid: &str) -> Self {
        let s = SimGaleraSql::default();
        s.with(|n| {
            n.wsrep = LocalWsrep {
                primary: true,
                synced: true,
                ready: true,
                gcomm_uuid: Some(gcomm_uuid.to_string()),
                evict_list: vec![],
                state: "Synced".into(),
            }
        });
        s
    }

    /// Runs `f` on the node's state.
    pub fn with<T>(&self, f: impl FnOnce(&mut SimNode) -> T) -> T {
        match self.inner.lock() {
            Ok(mut n) => f(&mut n),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn call(&self, what: String, f: impl FnOnce(&mut SimNode)) -> Result<(), GaleraSqlError> {
        self.with(|n| {
            if let Some(e) = &n.fail {
                return Err(e.clone());
            }
            n.log.push(what);
            f(n);
            Ok(())
        })
    }
}

impl GaleraSql for SimGaleraSql {
    fn read(&self) -> BoxFuture<'_, Result<LocalWsrep, GaleraSqlError>> {
        let r = self.with(|n| match &n.fail {
            Some(e) => Err(e.clone()),
            None => Ok(n.wsrep.clone()),
        });
        Box::pin(async move { r })
    }

    fn evict<'a>(&'a self, gcomm_uuid: &'a str) -> BoxFuture<'a, Result<(), GaleraSqlError>> {
        let r = if is_gcomm_uuid(gcomm_uuid) {
            self.call(format!("evict {gcomm_uuid}"), |n| {
                n.wsrep.evict_list.push(gcomm_uuid.to_string());
                n.wsrep.evict_list.sort();
                n.wsrep.evict_list.dedup();
            })
        } else {
            Err(GaleraSqlError::BadUuid(gcomm_uuid.to_string()))
        };
        Box::pin(async move { r })
    }

    fn clear_evictions(&self) -> BoxFuture<'_, Result<(), GaleraSqlError>> {
        let r = self.call("clear".into(), |n| n.wsrep.evict_list.clear());
        Box::pin(async move { r })
    }

    fn causal_wait(&self) -> BoxFuture<'_, Result<(), GaleraSqlError>> {
        let r = self.call("causal".into(), |_| {});
        Box::pin(async move { r })
    }

    fn set_evs<'a>(
        &'a self,
        periods: &'a [(EvsPeriod, Duration)],
    ) -> BoxFuture<'a, Result<(), GaleraSqlError>> {
        let r = self.call(format!("evs {}", evs_settings(periods)), |_| {});
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_galera_reads_them() {
        for (ms, want) in [
            (100, "PT0.1S"),
            (10, "PT0.01S"),
            (1500, "PT1.5S"),
            (2000, "PT2S"),
            (1250, "PT1.25S"),
        ] {
            assert_eq!(galera_duration(Duration::from_millis(ms)), want, "{ms} ms");
        }
    }

    #[test]
    fn evict_lists_parse_sorted_lowercase_and_without_blanks() {
        let cases: [(&str, &[&str]); 4] = [
            ("", &[]),
            (" ", &[]),
            (
                "B1111111-aaaa-11f1-b809-474591e831a5,a2222222-aaaa-11f1-b809-474591e831a5",
                &[
                    "a2222222-aaaa-11f1-b809-474591e831a5",
                    "b1111111-aaaa-11f1-b809-474591e831a5",
                ],
            ),
            ("x, x ,", &["x"]),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_evict_list(raw), want, "{raw:?}");
        }
    }
}
