//! The evidence an agent gathers about its own Galera node's durable position
//! (`probe::grastate`, `probe::wsrep_recover`), checked on a real single-node Galera
//! mariadbd in a scratch directory: a fresh datadir (no `grastate.dat`, nothing to recover),
//! a clean shutdown (the seqno in `grastate.dat`, safe to bootstrap), and a `kill -9`
//! (`seqno: -1` in `grastate.dat`; `--wsrep-recover` finds the last commit).
//!
//! The node listens on a unix socket only (`skip-networking`); Galera's group channel is
//! bound to a free loopback port. `TRIAD_SAVE_GALERA_CAPTURES=1` writes the captured files
//! over the fixtures in `tests/fixtures/galera/` (new UUIDs: update the modules' tables).
//! The adapter's deadline, failure and refusal paths are also checked with stand-in scripts,
//! which need no MariaDB. A missing binary fails in CI and is skipped elsewhere
//! (`common::binary`).

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, free_port, is_root, signal_pid, Proc};
use mysql_async::prelude::Queryable;
use triad::probe::grastate::{read_grastate, Grastate};
use triad::probe::wsrep_recover::{
    parse_recover_log, recover_log, recover_position, Position, RecoverError, RecoverSpec,
};

const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";
const SAVE_ENV: &str = "TRIAD_SAVE_GALERA_CAPTURES";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Writes a capture over its fixture when asked to.
fn maybe_save(name: &str, text: &str) {
    if std::env::var_os(SAVE_ENV).is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/galera")
            .join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("saved {}", path.display());
    }
}

/// One Galera node in a scratch directory; its mariadbd is stopped on drop.
struct Node {
    proc: Proc,
    mariadbd: PathBuf,
    dir: tempfile::TempDir,
}

impl Node {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }
    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("mariadbd.pid")
    }
    fn cnf(&self) -> PathBuf {
        self.dir.path().join("my.cnf")
    }
    fn error_log(&self) -> PathBuf {
        self.dir.path().join("mariadbd.err")
    }
    /// Root may run mariadbd only when it says so; the datadir is then root's.
    fn user(&self) -> Option<&'static str> {
        is_root().then_some("root")
    }

    /// A datadir from mariadb-install-db and a Galera defaults file for it.
    fn create(mariadbd: PathBuf, install_db: &Path) -> Node {
        let node = Node {
            proc: Proc(None),
            mariadbd,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        common::mariadb_install_db(install_db, &node.data());
        // The group channel on loopback, and a small gcache (128 MB by default).
        let cnf = format!(
            "[mysqld]\ndatadir={data}\nsocket={socket}\npid-file={pid}\nlog-error={log}\n\
             skip-networking\ninnodb-log-file-size=4M\ninnodb-buffer-pool-size=16M\n\
             wsrep_on=ON\nwsrep_provider={PROVIDER}\nwsrep_cluster_address=gcomm://\n\
             wsrep_node_address=127.0.0.1\n\
             wsrep_provider_options=\"gmcast.listen_addr=tcp://127.0.0.1:{port};gcache.size=8M\"\n\
             binlog_format=ROW\ninnodb_autoinc_lock_mode=2\n",
            data = node.data().display(),
            socket = node.socket().display(),
            pid = node.pidfile().display(),
            log = node.error_log().display(),
            port = free_port(),
        );
        std::fs::write(node.cnf(), cnf).expect("write my.cnf");
        node
    }

    /// The recover spec for this node, checking its pidfile and socket.
    fn spec(&self) -> RecoverSpec {
        RecoverSpec {
            mariadbd: self.mariadbd.clone(),
            user: self.user().map(str::to_string),
            pidfile: Some(self.pidfile()),
            socket: Some(self.socket()),
            timeout: Duration::from_secs(20),
            ..RecoverSpec::new(self.cnf())
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.error_log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Starts mariadbd as a new cluster and waits (bounded) until it is Synced.
    fn start_new_cluster(&mut self, rt: &tokio::runtime::Runtime) {
        let started = Instant::now();
        let mut cmd = Command::new(&self.mariadbd);
        cmd.arg(format!("--defaults-file={}", self.cnf().display()));
        if let Some(u) = self.user() {
            cmd.arg(format!("--user={u}"));
        }
        cmd.arg("--wsrep-new-cluster")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.proc = Proc(Some(cmd.spawn().expect("start mariadbd")));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.proc.0.as_mut().expect("started").try_wait() {
                self.proc.0 = None;
                panic!("mariadbd exited at start ({status}):\n{}", self.log_tail());
            }
            if rt
                .block_on(status_var(&self.socket(), "wsrep_local_state_comment"))
                .as_deref()
                == Some("Synced")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not Synced within 30 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("mariadbd Synced after {:?}", started.elapsed());
    }

    /// A clean shutdown (SIGTERM), waited for (bounded).
    fn stop(&mut self) {
        let started = Instant::now();
        let mut child = self.proc.0.take().expect("running");
        signal_pid(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mariadbd did not stop within 30 s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "mariadbd stopped with {status}");
        eprintln!("clean shutdown took {:?}", started.elapsed());
    }

    fn grastate(&self) -> Grastate {
        read_grastate(&self.data())
            .expect("grastate.dat parses")
            .expect("grastate.dat exists")
    }
}

async fn connect(socket: &Path) -> Option<mysql_async::Conn> {
    let opts = mysql_async::OptsBuilder::default()
        .user(Some("root"))
        .socket(Some(socket.display().to_string()));
    mysql_async::Conn::new(opts).await.ok()
}

/// One status variable, or None when the server does not answer.
async fn status_var(socket: &Path, name: &str) -> Option<String> {
    let mut conn = connect(socket).await?;
    let row: Option<(String, String)> = conn
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await
        .ok()?;
    let _ = conn.disconnect().await;
    row.map(|(_, v)| v)
}

/// Inserts `rows` rows, one commit each (creating the table first if needed); returns the
/// node's state UUID and last committed seqno afterwards.
async fn write_rows(socket: &Path, rows: u32) -> (String, i64) {
    let mut conn = connect(socket).await.expect("connect to mariadbd");
    conn.query_drop("CREATE DATABASE IF NOT EXISTS shop")
        .await
        .expect("create database");
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, v INT)",
    )
    .await
    .expect("create table");
    for v in 0..rows {
        conn.exec_drop("INSERT INTO shop.orders (v) VALUES (?)", (v,))
            .await
            .expect("insert");
    }
    let uuid: Option<(String, String)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_local_state_uuid'")
        .await
        .expect("state uuid");
    let seqno: Option<(String, i64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_last_committed'")
        .await
        .expect("last committed");
    let _ = conn.disconnect().await;
    (
        uuid.expect("wsrep_local_state_uuid").1,
        seqno.expect("wsrep_last_committed").1,
    )
}

/// The tests, under the name of the lib module they check, so that
/// `cargo test --lib probe:: --test galera_evidence` selects them too.
mod probe {
    use super::*;

    /// A fresh datadir, a clean stop, and a `kill -9`, as the node's own agent sees them.
    #[test]
    fn real_galera_node_fresh_clean_stop_and_kill9() {
        let (Some(mariadbd), Some(install_db), Some(_)) = (
            binary("mariadbd", &["/usr/sbin/mariadbd"]),
            binary("mariadb-install-db", &["/usr/bin/mariadb-install-db"]),
            binary("galera-4 (libgalera_smm.so)", &[PROVIDER]),
        ) else {
            return;
        };
        let total = Instant::now();
        let rt = rt();
        let mut node = Node::create(mariadbd, &install_db);

        // (c) A fresh datadir: no grastate.dat, and --wsrep-recover recovers nothing.
        assert_eq!(read_grastate(&node.data()).expect("no error"), None);
        let started = Instant::now();
        let log = rt
            .block_on(recover_log(&node.spec()))
            .expect("recover on a fresh datadir");
        eprintln!("--wsrep-recover (fresh) took {:?}", started.elapsed());
        let fresh = parse_recover_log(&log).expect("a position line");
        assert_eq!(
            fresh,
            Position {
                uuid: None,
                seqno: None
            }
        );
        assert_eq!(fresh.start_position(), None);
        maybe_save("recover_fresh_datadir.log", &log);

        node.start_new_cluster(&rt);
        let running = node.grastate();
        assert_eq!(running.seqno, None, "seqno -1 while running");
        let uuid = running.uuid.clone().expect("a state UUID once started");

        // The node's mariadbd runs: recovery is refused, by pidfile and by socket.
        let by_pidfile = RecoverSpec {
            socket: None,
            ..node.spec()
        };
        let by_socket = RecoverSpec {
            pidfile: None,
            ..node.spec()
        };
        for (spec, names) in [(by_pidfile, node.pidfile()), (by_socket, node.socket())] {
            match rt.block_on(recover_position(&spec)) {
                Err(e @ RecoverError::Running { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&names.display().to_string()), "{msg}");
                    assert!(msg.contains("stop it"), "{msg}");
                }
                other => panic!("recovery on a running node must be refused, got {other:?}"),
            }
        }

        let (state_uuid, first) = rt.block_on(write_rows(&node.socket(), 3));
        assert_eq!(state_uuid, uuid, "grastate.dat names the running history");
        // Two DDL statements and three inserts, each one Galera commit.
        assert!(first >= 5, "last committed {first} after 5 commits");

        // (a) Clean shutdown: the seqno is saved and this last node is safe to bootstrap.
        node.stop();
        let clean = node.grastate();
        assert_eq!(clean.uuid.as_deref(), Some(&*uuid));
        assert_eq!(clean.seqno, Some(first));
        assert!(clean.safe_to_bootstrap);
        maybe_save(
            "grastate_clean_stop.dat",
            &std::fs::read_to_string(node.data().join("grastate.dat")).expect("read"),
        );
        let log = rt
            .block_on(recover_log(&node.spec()))
            .expect("recover after a clean stop");
        let p = parse_recover_log(&log).expect("a position line");
        assert_eq!(p.start_position(), Some(format!("{uuid}:{first}")));
        maybe_save("recover_after_clean_stop.log", &log);

        // (b) kill -9 after more commits: grastate.dat keeps -1; recovery finds the last commit.
        node.start_new_cluster(&rt);
        let (state_uuid, last) = rt.block_on(write_rows(&node.socket(), 4));
        assert_eq!(
            state_uuid, uuid,
            "a bootstrap from a clean stop keeps the history"
        );
        assert!(
            last >= first + 4,
            "last committed {last} after 4 more commits"
        );
        node.proc.kill();
        let crashed = node.grastate();
        assert_eq!(crashed.uuid.as_deref(), Some(&*uuid));
        assert_eq!(crashed.seqno, None, "seqno -1 after kill -9");
        // A single node is the whole Primary component: Galera leaves it safe to bootstrap.
        assert!(crashed.safe_to_bootstrap);
        let crashed_text = std::fs::read_to_string(node.data().join("grastate.dat")).expect("read");
        assert!(node.pidfile().exists(), "kill -9 leaves the pidfile behind");

        // The stale pidfile and socket do not block recovery.
        let started = Instant::now();
        let log = rt
            .block_on(recover_log(&node.spec()))
            .expect("recover after kill -9");
        eprintln!(
            "--wsrep-recover (after kill -9) took {:?}",
            started.elapsed()
        );
        let p = parse_recover_log(&log).expect("a position line");
        assert_eq!(
            p,
            Position {
                uuid: Some(uuid.clone()),
                seqno: Some(last)
            }
        );
        assert_eq!(
            rt.block_on(recover_position(&node.spec()))
                .expect("recover again"),
            p,
            "recovery is repeatable"
        );
        assert_eq!(
            node.grastate(),
            crashed,
            "recovery does not rewrite grastate.dat"
        );
        maybe_save("grastate_killed_single_node.dat", &crashed_text);
        maybe_save("recover_after_kill9.log", &log);
        eprintln!("real Galera evidence test took {:?}", total.elapsed());
    }

    /// Writes an executable stand-in for mariadbd through a child process, so that no file of
    /// ours is open for writing when a thread forks (`Text file busy` on exec).
    fn stand_in(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-mariadbd");
        let status = Command::new("sh")
            .args([
                "-c",
                "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"",
                "sh",
            ])
            .arg(format!("#!/bin/sh\n{body}\n"))
            .arg(&path)
            .status()
            .expect("write stand-in");
        assert!(status.success());
        path
    }

    fn stand_in_spec(dir: &Path, mariadbd: PathBuf) -> RecoverSpec {
        RecoverSpec {
            mariadbd,
            user: Some("mysql".into()),
            timeout: Duration::from_secs(10),
            ..RecoverSpec::new(dir.join("my.cnf"))
        }
    }

    /// The command line, the deadline (the process is killed and reaped), a failure with its
    /// log and hint, a missing binary, and the running checks, with no MariaDB needed.
    #[test]
    fn recover_adapter_runs_under_a_deadline_and_refuses_a_running_node() {
        let rt = rt();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();

        let argv = d.join("argv");
        let ok = stand_in(
            d,
            &format!(
                "printf '%s\\n' \"$@\" > {}\necho '[Note] WSREP: Recovered position: \
                 9039132d-efab-11f1-969b-4b1ca4c7fa79:9' >&2",
                argv.display()
            ),
        );
        let p = rt
            .block_on(recover_position(&stand_in_spec(d, ok.clone())))
            .expect("recovers");
        assert_eq!(p.to_string(), "9039132d-efab-11f1-969b-4b1ca4c7fa79:9");
        assert_eq!(
            std::fs::read_to_string(&argv)
                .expect("argv")
                .lines()
                .collect::<Vec<_>>(),
            [
                &*format!("--defaults-file={}", d.join("my.cnf").display()),
                "--wsrep-recover",
                "--disable-log-error",
                "--user=mysql",
            ]
        );

        std::fs::remove_file(&ok).expect("rm");
        let pidfile = d.join("hung.pid");
        let hung = stand_in(
            d,
            &format!(
                "echo $$ > {}\necho 'Will retry for 30 seconds' >&2\nexec sleep 30",
                pidfile.display()
            ),
        );
        let spec = RecoverSpec {
            timeout: Duration::from_millis(500),
            ..stand_in_spec(d, hung.clone())
        };
        let started = Instant::now();
        match rt.block_on(recover_position(&spec)) {
            Err(e @ RecoverError::Timeout { .. }) => {
                assert!(e.to_string().contains("Will retry for 30 seconds"), "{e}")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let pid = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .to_string();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the timed-out process {pid} is still there"
        );

        std::fs::remove_file(&hung).expect("rm");
        let root = stand_in(
            d,
            "echo 'mariadbd: Please consult the MariaDB Documentation to find out how to run \
             mariadbd as root!' >&2\necho '[ERROR] Aborting' >&2\nexit 1",
        );
        match rt.block_on(recover_position(&stand_in_spec(d, root.clone()))) {
            Err(e @ RecoverError::Failed { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("exit status: 1") && msg.contains("--user"),
                    "{msg}"
                );
                assert!(msg.contains("[ERROR] Aborting"), "{msg}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }

        let missing = d.join("no-such-mariadbd");
        match rt.block_on(recover_position(&stand_in_spec(d, missing.clone()))) {
            Err(e @ RecoverError::Spawn { .. }) => {
                assert!(
                    e.to_string().contains(&missing.display().to_string()),
                    "{e}"
                )
            }
            other => panic!("expected a spawn error, got {other:?}"),
        }

        // Running checks: a listening socket refuses; a pidfile naming another program is stale.
        let socket = d.join("mariadb.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let spec = RecoverSpec {
            socket: Some(socket.clone()),
            ..stand_in_spec(d, root.clone())
        };
        match rt.block_on(recover_position(&spec)) {
            Err(e @ RecoverError::Running { .. }) => {
                assert!(e.to_string().contains("accepts connections"), "{e}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let own = d.join("own.pid");
        std::fs::write(&own, format!("{}\n", std::process::id())).expect("write pidfile");
        let spec = RecoverSpec {
            pidfile: Some(own),
            ..stand_in_spec(d, root)
        };
        assert!(
            matches!(
                rt.block_on(recover_position(&spec)),
                Err(RecoverError::Failed { .. })
            ),
            "a pidfile naming another program must not block recovery"
        );
    }
}
