//! One contract for every [`GaleraSql`]: [`SimGaleraSql`], and [`MysqlGaleraSql`] against a
//! real single-node Galera cluster (mariadbd with the Galera provider, bootstrapped with
//! `--wsrep-new-cluster`) in a scratch directory, as root over its unix socket.
//!
//! The contract: a bootstrapped node reads as serving (Primary, Synced, ready) with its gcomm
//! UUID and an empty evict list; evicting a UUID that is not a member lists it (real Galera
//! keeps any well-formed UUID in `wsrep_evs_evict_list`, member or not: seen on galera-4
//! 26.4.23 with MariaDB 10.11), and evicting it again is no error and lists it once; clearing
//! empties the list; a value that is not a gcomm UUID (an injection attempt among them) is
//! refused as `BadUuid` before anything reaches the server; a causal wait succeeds;
//! the EVS timing options are set as Galera writes them (`PT0.1S`); and once
//! the server is stopped, a read fails as refused, naming the socket.
//!
//! "Nothing reaches the server" is counted: the simulation's statement log, and the real
//! server's `Connections` plus `Com_set_option` status (a connection opened, or a `SET`
//! statement run: every evict-list change is one), read on an observer connection opened
//! beforehand, which itself adds to neither.
//!
//! The real actuator keeps its connection between calls: the real test also checks that reads
//! open no new connection, and that a kept connection killed on the server side is replaced
//! within the same call (the read still answers).
//!
//! A missing binary or provider fails in CI and is skipped elsewhere with a reason naming its
//! package (`common::binary`).

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, free_port, is_root, Proc, MARIADB_SIZES};
use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use triad::actuator::galera_sql::{
    EvsPeriod, GaleraSql, GaleraSqlError, MysqlGaleraSql, SimGaleraSql,
};
use triad::cluster::is_gcomm_uuid;

/// A well-formed gcomm UUID that is no member of any cluster here.
const STRANGER: &str = "0f1e2d3c-4b5a-11f1-8a9b-0c1d2e3f4a5b";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The node behind the actuator, as the contract observes and breaks it.
trait Node {
    /// How many statements (sim) or connections (real) have reached the server so far.
    fn reached(&mut self) -> BoxFuture<'_, u64>;
    /// Stops the server: afterwards nothing answers on its socket.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
    /// The socket the actuator talks to, as its errors name it.
    fn socket(&self) -> String;
    /// The node's provider option `key`, as it reports it.
    fn provider_option<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, String>;
}

async fn contract(sql: &dyn GaleraSql, node: &mut dyn Node) {
    // 1. A bootstrapped node serves, with its own gcomm UUID and no evictions.
    let w = sql.read().await.expect("read a bootstrapped node");
    assert!(w.serving(), "a bootstrapped node serves: {w:?}");
    assert!(w.primary && w.synced && w.ready, "{w:?}");
    let own = w.gcomm_uuid.clone().expect("a gcomm UUID");
    assert!(is_gcomm_uuid(&own), "{own:?} is not a gcomm UUID");
    assert_eq!(w.evict_list, Vec::<String>::new());
    assert_eq!(w.state, "Synced");

    // 2. A UUID that is not a member is listed all the same; evicting it again is no error
    //    and it is listed once.
    let before = node.reached().await;
    sql.evict(STRANGER).await.expect("evict a stranger");
    assert!(
        node.reached().await > before,
        "the eviction reached the server"
    );
    let w = sql.read().await.expect("read after evict");
    assert_eq!(w.evict_list, vec![STRANGER.to_string()]);
    assert!(
        w.serving(),
        "evicting a stranger changes nothing else: {w:?}"
    );
    sql.evict(STRANGER)
        .await
        .expect("evict the same stranger again");
    let w = sql.read().await.expect("read after the second evict");
    assert_eq!(w.evict_list, vec![STRANGER.to_string()]);

    // 3. Clearing empties the list.
    sql.clear_evictions().await.expect("clear evictions");
    let w = sql.read().await.expect("read after clear");
    assert_eq!(w.evict_list, Vec::<String>::new());
    assert!(w.serving(), "{w:?}");

    // 4. Anything but a gcomm UUID is refused by name and never sent.
    let before = node.reached().await;
    for bad in ["not-a-uuid", "x'; DROP TABLE t; --"] {
        match sql.evict(bad).await {
            Err(GaleraSqlError::BadUuid(b)) => assert_eq!(b, bad),
            other => panic!("evict({bad:?}) must fail as BadUuid, got {other:?}"),
        }
    }
    assert_eq!(
        node.reached().await,
        before,
        "a bad UUID reached the server"
    );
    let w = sql.read().await.expect("read after bad evicts");
    assert_eq!(w.evict_list, Vec::<String>::new());

    // 5. A causal wait on a lone node returns at once.
    sql.causal_wait().await.expect("causal wait");

    // 6. The EVS timing options are set in one statement as Galera writes them, and the
    //    node stays serving.
    let both = [
        (EvsPeriod::JoinRetrans, Duration::from_millis(100)),
        (EvsPeriod::Keepalive, Duration::from_millis(200)),
    ];
    sql.set_evs(&both).await.expect("set the EVS periods");
    assert_eq!(
        node.provider_option("evs.join_retrans_period").await,
        "PT0.1S"
    );
    assert_eq!(node.provider_option("evs.keepalive_period").await, "PT0.2S");
    sql.set_evs(&[(EvsPeriod::JoinRetrans, Duration::from_millis(1500))])
        .await
        .expect("set one again");
    assert_eq!(
        node.provider_option("evs.join_retrans_period").await,
        "PT1.5S"
    );
    assert_eq!(node.provider_option("evs.keepalive_period").await, "PT0.2S");
    assert!(sql.read().await.expect("read").serving());

    // 7. A stopped server: refused, naming the socket; a bad UUID is still refused by name.
    node.stop().await;
    let socket = node.socket();
    let err = sql.read().await.expect_err("read a stopped server");
    assert!(err.refused(), "a stopped server reads as refused: {err:?}");
    assert!(err.to_string().contains(&socket), "{err} names {socket}");
    let err = sql
        .evict(STRANGER)
        .await
        .expect_err("evict on a stopped server");
    assert!(err.refused(), "{err:?}");
    assert!(matches!(
        sql.evict("not-a-uuid").await,
        Err(GaleraSqlError::BadUuid(_))
    ));
}

/// The real actuator keeps one connection: reads after the first open none, and a kept
/// connection killed on the server (as a restart would break it) is replaced within the call.
async fn kept_connection(sql: &MysqlGaleraSql, node: &mut RealGalera) {
    async fn connections(node: &mut RealGalera) -> u64 {
        let c = node.observer.as_mut().expect("observer connection");
        let row: Option<(String, u64)> = c
            .query_first("SHOW GLOBAL STATUS LIKE 'Connections'")
            .await
            .expect("read Connections");
        row.expect("Connections").1
    }
    sql.read().await.expect("first read");
    let before = connections(node).await;
    for _ in 0..5 {
        sql.read().await.expect("read on the kept connection");
    }
    assert_eq!(connections(node).await, before, "reads opened connections");
    let c = node.observer.as_mut().expect("observer connection");
    let kept: Vec<u64> = c
        .query(
            "SELECT id FROM information_schema.processlist \
             WHERE id <> CONNECTION_ID() AND user = 'root'",
        )
        .await
        .expect("list connections");
    assert_eq!(
        kept.len(),
        1,
        "one kept connection besides the observer: {kept:?}"
    );
    c.query_drop(format!("KILL CONNECTION {}", kept[0]))
        .await
        .expect("kill the kept connection");
    let w = sql
        .read()
        .await
        .expect("read after the kept connection was killed");
    assert!(w.serving(), "{w:?}");
    assert_eq!(
        connections(node).await,
        before + 1,
        "the killed connection was replaced by one new connection"
    );
}

/// The simulated node: its statement log, and `fail` for a stopped server.
struct SimNode {
    sim: SimGaleraSql,
}

const SIM_SOCKET: &str = "/run/mysqld/mysqld.sock";

impl Node for SimNode {
    fn reached(&mut self) -> BoxFuture<'_, u64> {
        let n = self.sim.with(|n| n.log.len() as u64);
        Box::pin(async move { n })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        self.sim.with(|n| {
            n.fail = Some(GaleraSqlError::Refused {
                at: SIM_SOCKET.to_string(),
            })
        });
        Box::pin(async {})
    }

    fn socket(&self) -> String {
        SIM_SOCKET.to_string()
    }

    fn provider_option<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, String> {
        // The newest `evs` statement that set `key`.
        let value = self.sim.with(|n| {
            n.log
                .iter()
                .rev()
                .filter_map(|l| l.strip_prefix("evs "))
                .find_map(|opts| {
                    opts.split(';').find_map(|o| {
                        let (k, v) = o.split_once('=')?;
                        (k == key).then(|| v.to_string())
                    })
                })
                .unwrap_or_default()
        });
        Box::pin(async move { value })
    }
}

#[test]
fn sim_galera_sql_passes_the_contract() {
    let sim = SimGaleraSql::serving("5a1c0e7e-f02e-11f1-aa4e-ea8bab1cbfca");
    let mut node = SimNode { sim: sim.clone() };
    rt().block_on(contract(&sim, &mut node));
    assert_eq!(
        sim.with(|n| n.log.clone()),
        [
            format!("evict {STRANGER}"),
            format!("evict {STRANGER}"),
            "clear".to_string(),
            "causal".to_string(),
            "evs evs.join_retrans_period=PT0.1S;evs.keepalive_period=PT0.2S".to_string(),
            "evs evs.join_retrans_period=PT1.5S".to_string(),
        ]
    );
}

/// A single-node Galera cluster in a scratch directory: mariadbd stopped by its pid on drop.
struct RealGalera {
    proc: Proc,
    socket: PathBuf,
    log: PathBuf,
    /// Open before the contract runs, so that reading `Connections` adds none.
    observer: Option<mysql_async::Conn>,
    /// Removed after the server stopped (fields drop after `drop`).
    _dir: tempfile::TempDir,
}

impl RealGalera {
    /// Creates the datadir and bootstraps a new cluster on it; returns once it serves.
    async fn start(mariadbd: &Path, install_db: &Path, provider: &Path) -> RealGalera {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let socket = dir.path().join("galera.sock");
        let log = dir.path().join("mariadbd.err");
        common::mariadb_install_db(install_db, &data);
        // Root may run mariadbd only when it says so; the datadir is then root's.
        let user: &[&str] = if is_root() { &["--user=root"] } else { &[] };
        // Galera listens for its peers on loopback only; the SQL side on the socket only.
        // A small gcache: the default preallocates 128 MB in the datadir.
        let provider_options = format!(
            "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};gcache.size=8M",
            free_port()
        );
        let child = Command::new(mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg("--skip-networking")
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .args(MARIADB_SIZES)
            .args(user)
            .args(["--binlog-format=ROW", "--innodb-autoinc-lock-mode=2"])
            .args(["--wsrep-on=ON", "--wsrep-cluster-address=gcomm://"])
            .arg(format!("--wsrep-provider={}", provider.display()))
            .arg(provider_options)
            .arg("--wsrep-new-cluster")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        let mut g = RealGalera {
            proc: Proc(Some(child)),
            socket,
            log,
            observer: None,
            _dir: dir,
        };
        g.observer = Some(g.wait_serving().await);
        g
    }

    /// Waits until the node is Synced and ready, and returns a connection to it.
    async fn wait_serving(&mut self) -> mysql_async::Conn {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(status))) = self.proc.0.as_mut().map(|c| c.try_wait()) {
                panic!("mariadbd exited while starting: {status}");
            }
            if let Ok(mut c) = mysql_async::Conn::new(root(&self.socket)).await {
                let state: Option<(String, String)> = c
                    .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_local_state'")
                    .await
                    .unwrap_or(None);
                let ready: Option<(String, String)> = c
                    .query_first("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
                    .await
                    .unwrap_or(None);
                if state.is_some_and(|(_, v)| v == "4") && ready.is_some_and(|(_, v)| v == "ON") {
                    eprintln!("galera node serving after {:?}", started.elapsed());
                    return c;
                }
                let _ = c.disconnect().await;
            }
            assert!(Instant::now() < deadline, "galera node never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn root(socket: &Path) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .user(Some("root"))
        .socket(Some(socket.display().to_string()))
        .prefer_socket(true)
        .into()
}

impl Node for RealGalera {
    fn reached(&mut self) -> BoxFuture<'_, u64> {
        Box::pin(async move {
            let c = self.observer.as_mut().expect("observer connection");
            let rows: Vec<(String, String)> = c
                .query(
                    "SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections', 'Com_set_option')",
                )
                .await
                .expect("read Connections and Com_set_option");
            assert_eq!(rows.len(), 2, "{rows:?}");
            rows.iter()
                .map(|(k, v)| {
                    v.parse::<u64>()
                        .unwrap_or_else(|e| panic!("{k} = {v:?} is not a number: {e}"))
                })
                .sum()
        })
    }

    fn provider_option<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let c = self.observer.as_mut().expect("observer connection");
            let opts: Option<String> = c
                .query_first("SELECT @@GLOBAL.wsrep_provider_options")
                .await
                .expect("read wsrep_provider_options");
            let opts = opts.unwrap_or_default();
            opts.split(';')
                .find_map(|o| {
                    let (k, v) = o.split_once('=')?;
                    (k.trim() == key).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no {key} in {opts}"))
        })
    }

    /// SIGTERM by pid, and waits for the exit (SIGKILL after 10 s: then the test fails).
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(c) = self.observer.take() {
                let _ = c.disconnect().await;
            }
            let mut child = self.proc.0.take().expect("mariadbd running");
            common::signal(&child, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Ok(Some(s)) = child.try_wait() {
                    break Some(s);
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let status = status.expect("mariadbd did not exit within 10 s of SIGTERM");
            assert!(status.success(), "mariadbd stopped with {status}");
        })
    }

    fn socket(&self) -> String {
        self.socket.display().to_string()
    }
}

impl Drop for RealGalera {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("last lines of {}:\n{tail}", self.log.display());
        }
        // The server first (by its pid, waiting for its exit), then its scratch directory.
        self.proc.terminate();
    }
}

#[test]
fn mysql_galera_sql_passes_the_contract_with_a_real_galera_node() {
    let needs = [
        ("/usr/sbin/mariadbd", "mariadb-server"),
        ("/usr/bin/mariadb-install-db", "mariadb-server"),
        ("/usr/lib/galera/libgalera_smm.so", "galera-4"),
    ];
    let mut bins = Vec::new();
    for (path, package) in needs {
        let name = Path::new(path).file_name().and_then(|n| n.to_str());
        let name = format!("{} (Debian package {package})", name.unwrap_or(path));
        let Some(bin) = binary(&name, &[path]) else {
            return;
        };
        bins.push(bin);
    }
    let started = Instant::now();
    let rt = rt();
    rt.block_on(async {
        let mut node = RealGalera::start(&bins[0], &bins[1], &bins[2]).await;
        // The evict list is a status variable (what `MysqlGaleraSql::read` reads), not a
        // system variable.
        let c = node.observer.as_mut().expect("observer connection");
        let status: Vec<(String, String)> = c
            .query("SHOW GLOBAL STATUS LIKE 'wsrep_evs_evict_list'")
            .await
            .expect("status");
        assert_eq!(status.len(), 1, "wsrep_evs_evict_list is a status variable");
        let vars: Vec<(String, String)> = c
            .query("SHOW GLOBAL VARIABLES LIKE 'wsrep_evs_evict_list'")
            .await
            .expect("variables");
        assert_eq!(vars, vec![], "wsrep_evs_evict_list is no system variable");

        let sql = MysqlGaleraSql::new(
            node.socket.clone(),
            "root".into(),
            None,
            Duration::from_secs(10),
        );
        kept_connection(&sql, &mut node).await;
        contract(&sql, &mut node).await;
        // Stopped: nothing answers on the socket, and the server removed it.
        assert!(node.proc.0.is_none());
        assert!(!node.socket.exists(), "socket left after a clean stop");
    });
    eprintln!(
        "galera sql contract (real node) ran in {:?}",
        started.elapsed()
    );
}
