//! The database component: a consistent copy of this node's MariaDB, taken without slowing
//! the writer, and its verification in a throwaway server.
//!
//! **Copy.** On one connection of the backup account: `FLUSH TABLES WITH READ LOCK`. On a
//! Galera node this desyncs the node (`wsrep_desync_count` 1, state `Donor/Desynced`: it
//! leaves flow control, so the writer is never slowed by it) and pauses its applier, so the
//! data holds still: the row count of every table, the Galera position (`uuid:seqno`) and
//! `mariadb-backup --backup --no-lock --galera-info` all see the same point. Then
//! `UNLOCK TABLES`: the node applies what queued meanwhile; the run waits until its receive
//! queue is empty and it is Synced again (bounded by `backup.resync_timeout`) before it goes
//! on, so it is a writer candidate again only once caught up. Then `mariadb-backup --prepare`.
//!
//! The lock lives with the connection: if the run is stopped or the agent dies, the server
//! drops the lock and the node resyncs by itself. The account needs `RELOAD` (the lock),
//! `PROCESS, LOCK TABLES, BINLOG MONITOR` (mariadb-backup) and `SELECT` (the counts); not
//! `SUPER` (setting `wsrep_desync` would need it; the lock desyncs without it).
//!
//! **Verify.** The prepared copy, restored from the repository into a throwaway directory, is
//! started as a private mariadbd (no networking, its own socket, no wsrep, no grant tables,
//! bounded by `backup.verify_timeout`); its table list and row counts must equal those taken
//! under the lock. The directory is removed afterwards; the live datadir is never touched.
//!
//! Caveats: the throwaway server runs as the agent's user (`--user=root` while the agent runs
//! as root); the counts cover base tables of every schema but the system ones.

// Reads the clock (adapter: run durations and deadlines); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tokio::process::Command;

use super::run_program;

/// A database step that failed, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A statement failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done.
        what: String,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// A program failed or could not run.
    #[error("{0}")]
    Program(String),
    /// The node did not catch up in time.
    #[error("the node did not resync within {0:?} after the copy (state {1}, receive queue {2})")]
    Resync(Duration, String, u64),
    /// The restored copy differs from what was counted.
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// A file could not be written or read.
    #[error("{0}")]
    Io(String),
}

/// How to reach the local server and its tools.
#[derive(Clone, Debug)]
pub struct DbSpec {
    /// The local server's socket.
    pub socket: PathBuf,
    /// The live datadir (read by mariadb-backup, never written).
    pub datadir: PathBuf,
    /// The backup account.
    pub user: String,
    /// Its password, if any.
    pub password: Option<String>,
    /// `mariadb-backup`.
    pub mariadb_backup: PathBuf,
    /// `mariadbd` (the throwaway server).
    pub mariadbd: PathBuf,
    /// Bound for the resync after the copy.
    pub resync_timeout: Duration,
    /// Bound for the throwaway server's start, count and stop.
    pub verify_timeout: Duration,
    /// Bound for each mariadb-backup run.
    pub copy_timeout: Duration,
}

/// What the copy recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbCopy {
    /// `uuid:seqno` under the lock.
    pub position: String,
    /// Rows of every base table, by `schema.table`, under the lock.
    pub counts: BTreeMap<String, u64>,
}

fn sql(what: &str) -> impl FnOnce(mysql_async::Error) -> DbError + '_ {
    move |source| DbError::Sql {
        what: what.to_string(),
        source,
    }
}

fn opts(socket: &Path, user: &str, password: Option<&str>) -> OptsBuilder {
    OptsBuilder::default()
        .user(Some(user.to_string()))
        .pass(password.map(str::to_string))
        .socket(Some(socket.to_string_lossy().into_owned()))
        .prefer_socket(true)
        .stmt_cache_size(0)
}

/// `schema`.`table` with backticks doubled, for a statement.
fn quoted(schema: &str, table: &str) -> String {
    format!(
        "`{}`.`{}`",
        schema.replace('`', "``"),
        table.replace('`', "``")
    )
}

/// Every base table outside the system schemas, with its row count.
async fn count_rows(conn: &mut Conn) -> Result<BTreeMap<String, u64>, DbError> {
    let tables: Vec<(String, String)> = conn
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN \
             ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY table_schema, table_name",
        )
        .await
        .map_err(sql("listing the tables"))?;
    let mut out = BTreeMap::new();
    for (schema, table) in tables {
        let n: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM {}", quoted(&schema, &table)))
            .await
            .map_err(sql("counting rows"))?;
        out.insert(format!("{schema}.{table}"), n.unwrap_or(0));
    }
    Ok(out)
}

async fn status(conn: &mut Conn, name: &str) -> Result<String, DbError> {
    let row: Option<(String, String)> = conn
        .exec_first("SHOW GLOBAL STATUS WHERE Variable_name = ?", (name,))
        .await
        .map_err(sql("reading the Galera status"))?;
    Ok(row.map(|(_, v)| v).unwrap_or_default())
}

impl DbSpec {
    /// Writes the option file that hands mariadb-backup the account (mode 0600, in the run's
    /// private directory; the password never goes on a command line).
    fn client_cnf(&self, run_dir: &Path) -> Result<PathBuf, DbError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = run_dir.join("client.cnf");
        let mut text = format!(
            "[client]\nuser={}\nsocket={}\n",
            self.user,
            self.socket.display()
        );
        if let Some(p) = &self.password {
            text.push_str(&format!("password={p}\n"));
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| DbError::Io(format!("{}: {e}", path.display())))?;
        f.write_all(text.as_bytes())
            .map_err(|e| DbError::Io(format!("{}: {e}", path.display())))?;
        Ok(path)
    }

    /// Takes the copy into `target` (which must not exist); `phase` is told what happens.
    pub async fn take(
        &self,
        run_dir: &Path,
        target: &Path,
        phase: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<DbCopy, DbError> {
        let cnf = self.client_cnf(run_dir)?;
        let mut conn = Conn::new(opts(&self.socket, &self.user, self.password.as_deref()))
            .await
            .map_err(sql("connecting as the backup account"))?;
        phase("db lock");
        conn.query_drop("FLUSH TABLES WITH READ LOCK")
            .await
            .map_err(sql("FLUSH TABLES WITH READ LOCK (needs RELOAD)"))?;
        let uuid = status(&mut conn, "wsrep_local_state_uuid").await?;
        let seqno = status(&mut conn, "wsrep_last_committed").await?;
        let state = status(&mut conn, "wsrep_local_state_comment").await?;
        tracing::info!(state = %state, position = %format!("{uuid}:{seqno}"),
            "backup: tables locked, node desynced");
        phase("db count");
        let counts = count_rows(&mut conn).await?;
        phase("db copy");
        let mut c = Command::new(&self.mariadb_backup);
        c.arg(format!("--defaults-extra-file={}", cnf.display()))
            .args(["--backup", "--no-lock", "--galera-info"])
            .arg(format!("--target-dir={}", target.display()))
            .arg(format!("--datadir={}", self.datadir.display()));
        let copied = run_program("mariadb-backup --backup", c, self.copy_timeout).await;
        // Unlock whatever happened: the node catches up from here.
        let unlocked = conn.query_drop("UNLOCK TABLES").await;
        copied.map_err(|e| DbError::Program(e.to_string()))?;
        unlocked.map_err(sql("UNLOCK TABLES"))?;
        phase("db resync");
        let deadline = tokio::time::Instant::now() + self.resync_timeout;
        loop {
            let state = status(&mut conn, "wsrep_local_state_comment").await?;
            let queue: u64 = status(&mut conn, "wsrep_local_recv_queue")
                .await?
                .parse()
                .unwrap_or(u64::MAX);
            if state == "Synced" && queue == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DbError::Resync(self.resync_timeout, state, queue));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = conn.disconnect().await;
        let _ = std::fs::remove_file(&cnf);
        phase("db prepare");
        let mut c = Command::new(&self.mariadb_backup);
        c.arg("--prepare")
            .arg(format!("--target-dir={}", target.display()));
        run_program("mariadb-backup --prepare", c, self.copy_timeout)
            .await
            .map_err(|e| DbError::Program(e.to_string()))?;
        Ok(DbCopy {
            position: format!("{uuid}:{seqno}"),
            counts,
        })
    }

    /// Starts the restored copy in `datadir` as a throwaway server (scratch files in
    /// `scratch`), compares its tables and rows with `expected`, stops it. A one-line summary.
    pub async fn verify(
        &self,
        datadir: &Path,
        scratch: &Path,
        expected: &BTreeMap<String, u64>,
    ) -> Result<String, DbError> {
        std::fs::create_dir_all(scratch)
            .map_err(|e| DbError::Io(format!("{}: {e}", scratch.display())))?;
        let socket = scratch.join("verify.sock");
        let mut c = Command::new(&self.mariadbd);
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                scratch.join("verify.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                scratch.join("verify.err").display()
            ))
            .args([
                "--skip-networking",
                "--wsrep-on=OFF",
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
            ]);
        if rustix::process::geteuid().is_root() {
            c.arg("--user=root");
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        super::die_with_parent(&mut c);
        let mut server = c
            .spawn()
            .map_err(|e| DbError::Program(format!("cannot start the throwaway mariadbd: {e}")))?;
        let work = async {
            // Wait for its socket.
            let mut conn = loop {
                match Conn::new(opts(&socket, "root", None)).await {
                    Ok(c) => break c,
                    Err(e) => {
                        if let Ok(Some(status)) = server.try_wait() {
                            let log = std::fs::read_to_string(scratch.join("verify.err"))
                                .unwrap_or_default();
                            let last: Vec<&str> = log.lines().rev().take(3).collect();
                            return Err(DbError::Program(format!(
                                "the throwaway mariadbd exited ({status}) before answering: {} ({e})",
                                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let got = count_rows(&mut conn).await?;
            let _ = conn.query_drop("SHUTDOWN").await;
            Ok(got)
        };
        let got = tokio::time::timeout(self.verify_timeout, work).await;
        // Stopped by SHUTDOWN; killed if it did not stop in a few seconds (or timed out).
        if tokio::time::timeout(Duration::from_secs(10), server.wait())
            .await
            .is_err()
        {
            let _ = server.kill().await;
        }
        let got = got.map_err(|_| {
            DbError::Program(format!(
                "the throwaway mariadbd did not answer within {:?}",
                self.verify_timeout
            ))
        })??;
        compare_counts(expected, &got).map_err(DbError::Mismatch)
    }
}

/// Compares the restored tables and rows with those counted at backup time; a summary, or
/// the differences.
pub fn compare_counts(
    expected: &BTreeMap<String, u64>,
    got: &BTreeMap<String, u64>,
) -> Result<String, String> {
    let mut diffs = Vec::new();
    for (t, n) in expected {
        match got.get(t) {
            None => diffs.push(format!("{t} missing")),
            Some(m) if m != n => diffs.push(format!("{t} has {m} rows, {n} at backup time")),
            Some(_) => {}
        }
    }
    for t in got.keys().filter(|t| !expected.contains_key(*t)) {
        diffs.push(format!("{t} not there at backup time"));
    }
    if diffs.is_empty() {
        let rows: u64 = expected.values().sum();
        Ok(format!(
            "{} tables, {rows} rows as at backup time",
            expected.len()
        ))
    } else {
        diffs.truncate(10);
        Err(diffs.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted("shop", "visits"), "`shop`.`visits`");
        assert_eq!(quoted("a`b", "c"), "`a``b`.`c`");
    }

    #[test]
    fn counts_compare_table_by_table() {
        let e: BTreeMap<String, u64> = [("shop.a".into(), 3), ("shop.b".into(), 0)].into();
        assert_eq!(
            compare_counts(&e, &e).ok().as_deref(),
            Some("2 tables, 3 rows as at backup time")
        );
        let mut g = e.clone();
        g.insert("shop.a".into(), 2);
        g.remove("shop.b");
        g.insert("shop.c".into(), 1);
        assert_eq!(
            compare_counts(&e, &g).err().as_deref(),
            Some(
                "shop.a has 2 rows, 3 at backup time; shop.b missing; shop.c not there at \
                 backup time"
            )
        );
    }
}
