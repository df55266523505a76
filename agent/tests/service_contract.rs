//! One contract for every [`ServiceControl`]: the simulated one, and `Process` against each
//! real daemon of a node (redis-server, mariadbd, php-fpm) in a scratch directory. `Systemd` is
//! not run here (it would need PID 1 to be systemd and root); its parser is unit-tested on
//! recorded `systemctl show` output.
//!
//! The contract: a configured service starts stopped; start runs it; a second start, and a
//! second controller (a restarted agent) reading the same pidfile, find it and start nothing;
//! restart runs a new process; a crashed service reads as stopped and starts again (a killed
//! php-fpm master leaves workers serving its port); a hung one is still stopped within the
//! stop timeout; stop is idempotent; Galera rejoin and bootstrap starts run the service with
//! the spec's extra arguments; an unknown service and a malformed Galera position are refused
//! by name. For real daemons, nothing of the service (children included) is left at the end.
//!
//! Each real daemon is data (a [`Daemon`]: its binaries, a scratch setup giving its spec, and
//! how to tell that it answers); one runner drives them all. Nothing here forms a Galera
//! cluster: a standalone mariadbd (no provider, `wsrep_on=OFF`) accepts
//! `--wsrep-start-position` and `--wsrep-new-cluster` and serves, so the rejoin is checked on
//! the started command line (`/proc/PID/cmdline`) and on the position the server reports.
//! A missing binary fails in CI and is skipped elsewhere with a reason naming its package
//! (`common::binary`, as for redis-server before).

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{binary, free_port, is_root, signal_pid, MARIADB_SIZES};
use mysql_async::prelude::Queryable;
use triad::actuator::service::{
    Process, ProcessSpec, ServiceControl, ServiceError, ServiceState, SimServices, StartMode,
};

/// A well-formed recovered Galera position.
const POSITION: &str = "6f0c2e64-1f0b-11ef-9c5b-0242ac120002:1234";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn pid(state: &ServiceState) -> u32 {
    match state {
        ServiceState::Running { pid: Some(p) } => *p,
        other => panic!("expected a running service with a pid, got {other:?}"),
    }
}

/// What the contract drives, and how it observes the service behind the controller.
struct Subject<'a> {
    ctl: &'a dyn ServiceControl,
    /// A second controller over the same services (a restarted agent).
    again: &'a dyn ServiceControl,
    service: &'a str,
    /// Kills the main process behind the controller's back.
    crash: &'a dyn Fn(u32),
    /// Freezes the main process (SIGSTOP), so that only a kill stops it.
    hang: &'a dyn Fn(u32),
    /// Told every main pid the contract sees (so that the real test can clean up after a
    /// failure and check that nothing of the service is left).
    started: &'a dyn Fn(u32),
    /// Whether the service answers now (one bounded try).
    answers: &'a dyn Fn() -> bool,
    /// How long a start may take to answer.
    ready_within: Duration,
    /// How long a stop of a hung service may take (its stop timeout, then the kill).
    stop_within: Duration,
    /// The command lines each start must run, where they can be read back.
    argv: Option<ExpectedArgv>,
    /// A MariaDB socket on which the server reports the rejoin position it was given.
    position_via_sql: Option<PathBuf>,
}

/// The command line each start mode must run (read back from `/proc/PID/cmdline`).
struct ExpectedArgv {
    normal: Vec<String>,
    rejoin: Vec<String>,
    bootstrap: Vec<String>,
}

impl Subject<'_> {
    async fn running_pid(&self) -> u32 {
        let p = pid(&self.ctl.state(self.service).await.expect("state"));
        (self.started)(p);
        p
    }

    /// Crashes the service's main process `pid` and waits (bounded) until its control no
    /// longer reads it as running.
    async fn crash_and_wait(&self, pid: u32) {
        (self.crash)(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .ctl
            .state(self.service)
            .await
            .expect("state")
            .is_running()
        {
            assert!(
                Instant::now() < deadline,
                "a crashed {} still reads as running",
                self.service
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the service answers.
    async fn wait_answers(&self, after: &str) {
        let deadline = Instant::now() + self.ready_within;
        while !(self.answers)() {
            assert!(
                Instant::now() < deadline,
                "{} does not answer within {:?} after {after}",
                self.service,
                self.ready_within
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_argv(&self, pid: u32, want: impl Fn(&ExpectedArgv) -> &Vec<String>) {
        if let Some(expected) = &self.argv {
            assert_eq!(&cmdline(pid), want(expected), "command line of pid {pid}");
        }
    }
}

/// The shared contract.
async fn contract(s: &Subject<'_>) {
    let (ctl, service) = (s.ctl, s.service);
    let normal = StartMode::Normal;
    assert_eq!(
        ctl.state(service).await.expect("state"),
        ServiceState::Stopped
    );

    ctl.start(service, &normal).await.expect("start");
    let first = s.running_pid().await;
    s.wait_answers("start").await;
    s.check_argv(first, |a| &a.normal);

    ctl.start(service, &normal).await.expect("second start");
    assert_eq!(
        s.running_pid().await,
        first,
        "a second start started another process"
    );
    assert_eq!(
        pid(&s.again.state(service).await.expect("state")),
        first,
        "a restarted agent does not find the running service"
    );
    s.again
        .start(service, &normal)
        .await
        .expect("start by a restarted agent");
    assert_eq!(
        s.running_pid().await,
        first,
        "a restarted agent started a second process"
    );

    ctl.restart(service, &normal).await.expect("restart");
    let second = s.running_pid().await;
    assert_ne!(second, first, "restart kept the old process");
    s.wait_answers("restart").await;

    s.crash_and_wait(second).await;
    ctl.start(service, &normal)
        .await
        .expect("start after a crash");
    let third = s.running_pid().await;
    s.wait_answers("a start after a crash").await;
    assert_eq!(
        s.running_pid().await,
        third,
        "{service} started after a crash did not stay up"
    );

    (s.hang)(third);
    let stopping = Instant::now();
    ctl.stop(service).await.expect("stop of a hung service");
    assert!(
        stopping.elapsed() <= s.stop_within,
        "stopping a hung {service} took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        ctl.state(service).await.expect("state"),
        ServiceState::Stopped
    );
    assert!(!(s.answers)(), "{service} still answers after stop");
    ctl.stop(service).await.expect("second stop");

    let rejoin = StartMode::GaleraRejoin {
        position: POSITION.into(),
    };
    ctl.start(service, &rejoin).await.expect("rejoin start");
    let rejoined = s.running_pid().await;
    s.wait_answers("a rejoin start").await;
    s.check_argv(rejoined, |a| &a.rejoin);
    if let Some(socket) = &s.position_via_sql {
        assert_eq!(sql_start_position(socket).await, POSITION);
    }
    // A crash of the main process alone, then what the exit watch does: whatever is left of
    // the service (php-fpm's workers would go on serving) is ended, and nothing answers.
    s.crash_and_wait(rejoined).await;
    ctl.end_leftovers(service)
        .await
        .expect("ending what a crash left");
    assert!(
        !(s.answers)(),
        "{service} still answers after its main process crashed and its leftovers were ended"
    );
    ctl.end_leftovers(service)
        .await
        .expect("ending leftovers twice");
    match ctl.end_leftovers("nosuch").await {
        Err(ServiceError::Unknown(_)) => {}
        other => panic!("an unknown service must be refused by name, got {other:?}"),
    }
    ctl.stop(service).await.expect("stop");

    ctl.start(service, &StartMode::GaleraBootstrap { position: None })
        .await
        .expect("bootstrap start");
    let bootstrapped = s.running_pid().await;
    s.wait_answers("a bootstrap start").await;
    s.check_argv(bootstrapped, |a| &a.bootstrap);
    ctl.stop(service).await.expect("stop");
    assert!(!(s.answers)(), "{service} still answers after stop");

    match ctl.state("nosuch").await {
        Err(e @ ServiceError::Unknown(_)) => assert!(e.to_string().contains("\"nosuch\""), "{e}"),
        other => panic!("an unknown service must be refused by name, got {other:?}"),
    }
    let bad = StartMode::GaleraRejoin {
        position: "x; rm -rf /".into(),
    };
    match ctl.start(service, &bad).await {
        Err(e @ ServiceError::Mode { .. }) => {
            assert!(e.to_string().contains("not a Galera position"), "{e}")
        }
        other => panic!("a malformed position must be refused, got {other:?}"),
    }
    assert_eq!(
        ctl.state(service).await.expect("state"),
        ServiceState::Stopped
    );
}

#[test]
fn sim_services_pass_the_contract() {
    let sim = SimServices::new(["redis"]);
    let crash_sim = sim.clone();
    let up = sim.clone();
    rt().block_on(contract(&Subject {
        ctl: &sim,
        again: &sim.clone(),
        service: "redis",
        crash: &move |_| crash_sim.crash("redis"),
        // A simulated service cannot hang: a stop always stops it.
        hang: &|_| {},
        started: &|_| {},
        answers: &move || {
            futures::executor::block_on(up.state("redis")).is_ok_and(|s| s.is_running())
        },
        ready_within: Duration::ZERO,
        stop_within: Duration::from_millis(100),
        argv: None,
        position_via_sql: None,
    }));
    let ops: Vec<String> = sim.log().into_iter().map(|(_, op)| op).collect();
    let rejoin = format!("start GaleraRejoin {{ position: {POSITION:?} }}");
    assert_eq!(
        ops,
        [
            "start Normal",
            "stop",
            "start Normal",
            "start Normal",
            "stop",
            &rejoin,
            // The rejoined one crashed: its stop had nothing to do.
            "start GaleraBootstrap { position: None }",
            "stop",
        ],
        "only real changes are carried out"
    );
}

// ----- real daemons ----------------------------------------------------------------------

/// A real daemon under the contract.
struct Daemon {
    service: &'static str,
    /// The binaries it needs, each with the Debian package that ships it; `setup` gets their
    /// paths in this order.
    needs: &'static [(&'static str, &'static str)],
    /// Prepares the scratch directory and says how to run the daemon there.
    setup: fn(&Path, &[PathBuf]) -> Setup,
    /// How long a start may take to answer (a bound for failures, not a pause).
    ready_within: Duration,
    /// `Process`'s wait after SIGTERM before it kills.
    stop_timeout: Duration,
}

/// A daemon set up in a scratch directory.
struct Setup {
    /// A normal start's command line (foreground).
    argv: Vec<String>,
    rejoin_args: Vec<String>,
    bootstrap_args: Vec<String>,
    /// How to tell that it answers.
    answer: Answer,
    /// The daemon's own logs (shown when the test fails).
    logs: Vec<PathBuf>,
    /// Whether `/proc/PID/cmdline` shows the command line (redis-server and php-fpm rewrite
    /// it into a process title).
    keeps_cmdline: bool,
    /// See [`Subject::position_via_sql`].
    position_via_sql: Option<PathBuf>,
}

/// "Answers" means: a connection opens, `send` is written, and the reply holds `expect` (an
/// empty `expect` is satisfied by the connection alone).
struct Answer {
    at: Endpoint,
    send: &'static [u8],
    expect: &'static str,
}

enum Endpoint {
    Tcp(u16),
    Unix(PathBuf),
}

impl Answer {
    fn answers(&self) -> bool {
        let io = Duration::from_millis(500);
        let mut conn: Box<dyn ReadWrite> = match &self.at {
            Endpoint::Tcp(port) => {
                match std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], *port).into(), io) {
                    Ok(c) if c.set_read_timeout(Some(io)).is_ok() => Box::new(c),
                    _ => return false,
                }
            }
            Endpoint::Unix(path) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(c) if c.set_read_timeout(Some(io)).is_ok() => Box::new(c),
                _ => return false,
            },
        };
        if self.expect.is_empty() {
            return true;
        }
        if conn.write_all(self.send).is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.len() < 4096 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&got).contains(self.expect) {
                return true;
            }
        }
        false
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

const REDIS: Daemon = Daemon {
    service: "redis",
    needs: &[("/usr/bin/redis-server", "redis-server")],
    setup: redis_setup,
    ready_within: Duration::from_secs(10),
    stop_timeout: Duration::from_secs(2),
};

fn redis_setup(dir: &Path, bins: &[PathBuf]) -> Setup {
    let port = free_port();
    let mut argv = vec![s(&bins[0]), "--port".into(), port.to_string()];
    argv.extend(strings(&["--bind", "127.0.0.1", "--save", ""]));
    argv.extend(strings(&["--appendonly", "no", "--dir"]));
    argv.push(s(dir));
    Setup {
        argv,
        rejoin_args: vec![],
        bootstrap_args: vec![],
        answer: Answer {
            at: Endpoint::Tcp(port),
            send: b"PING\r\n",
            expect: "+PONG",
        },
        logs: vec![],
        keeps_cmdline: false,
        position_via_sql: None,
    }
}

const MARIADB: Daemon = Daemon {
    service: "mariadb",
    needs: &[
        ("/usr/sbin/mariadbd", "mariadb-server"),
        ("/usr/bin/mariadb-install-db", "mariadb-server"),
    ],
    setup: mariadb_setup,
    ready_within: Duration::from_secs(20),
    stop_timeout: Duration::from_secs(2),
};

/// mariadb-install-db is the slowest step of this file: 0.5 s to 4.3 s on 2 busy cores.
fn mariadb_setup(dir: &Path, bins: &[PathBuf]) -> Setup {
    let data = dir.join("data");
    let socket = dir.join("mariadb.sock");
    // Root may run mariadbd only when it says so; the datadir is then root's.
    let user: &[&str] = if is_root() { &["--user=root"] } else { &[] };
    common::mariadb_install_db(&bins[1], &data);
    let mut argv = vec![s(&bins[0]), "--no-defaults".into()];
    argv.push(format!("--datadir={}", s(&data)));
    argv.push(format!("--socket={}", s(&socket)));
    argv.push("--skip-networking".into());
    // mariadbd's own pidfile, apart from the one Triad writes.
    argv.push(format!("--pid-file={}", s(&dir.join("mariadbd-own.pid"))));
    argv.extend(strings(&MARIADB_SIZES));
    argv.extend(strings(user));
    Setup {
        argv,
        rejoin_args: strings(&["--wsrep-start-position={position}"]),
        bootstrap_args: strings(&["--wsrep-new-cluster"]),
        // The server speaks first: its greeting names it.
        answer: Answer {
            at: Endpoint::Unix(socket.clone()),
            send: b"",
            expect: "MariaDB",
        },
        logs: vec![],
        keeps_cmdline: true,
        position_via_sql: Some(socket),
    }
}

const PHPFPM: Daemon = Daemon {
    service: "phpfpm",
    needs: &[("/usr/sbin/php-fpm8.2", "php-fpm (php8.2-fpm)")],
    setup: phpfpm_setup,
    ready_within: Duration::from_secs(10),
    stop_timeout: Duration::from_secs(2),
};

fn phpfpm_setup(dir: &Path, bins: &[PathBuf]) -> Setup {
    let port = free_port();
    let conf = dir.join("php-fpm.conf");
    // A static pool of two: the service is a master and its workers, one process group.
    let text = format!(
        "[global]\npid = {dir}/php-fpm-own.pid\nerror_log = {dir}/php-fpm-error.log\n\
         daemonize = no\n[www]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 2\n",
        dir = s(dir),
    );
    std::fs::write(&conf, text).expect("write php-fpm.conf");
    let mut argv = vec![s(&bins[0]), "--nodaemonize".into(), "--fpm-config".into()];
    argv.push(s(&conf));
    argv.push("--allow-to-run-as-root".into());
    Setup {
        argv,
        rejoin_args: vec![],
        bootstrap_args: vec![],
        answer: Answer {
            at: Endpoint::Tcp(port),
            send: b"",
            expect: "",
        },
        logs: vec![dir.join("php-fpm-error.log")],
        keeps_cmdline: false,
        position_via_sql: None,
    }
}

/// `SELECT @@wsrep_start_position` as root over the socket.
async fn sql_start_position(socket: &Path) -> String {
    let opts = mysql_async::OptsBuilder::default()
        .user(Some("root"))
        .socket(Some(s(socket)));
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("connect to mariadbd");
    let pos: Option<String> = conn
        .query_first("SELECT @@wsrep_start_position")
        .await
        .expect("query @@wsrep_start_position");
    let _ = conn.disconnect().await;
    pos.unwrap_or_default()
}

/// The command line of a running process.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Live (not zombie) processes running `exe` whose process group is one of `groups`: what is
/// left of a service that `Process` started in its own group.
fn left_in_groups(groups: &BTreeSet<u32>, exe: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state, ppid, pgrp.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().take(3).collect())
                .unwrap_or_default();
            let in_group = fields
                .get(2)
                .and_then(|g| g.parse::<u32>().ok())
                .is_some_and(|g| groups.contains(&g));
            in_group
                && fields.first().is_some_and(|st| *st != "Z")
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
        })
        .collect()
}

/// Every main pid seen. On drop after a failure: shows the daemon's log and kills, by pid,
/// whatever is left of their groups that still runs the daemon's binary.
struct Leftovers {
    exe: PathBuf,
    pidfile: PathBuf,
    /// The spec's log and the daemon's own.
    logs: Vec<PathBuf>,
    groups: RefCell<BTreeSet<u32>>,
}

impl Leftovers {
    fn remaining(&self) -> Vec<u32> {
        let mut groups = self.groups.borrow().clone();
        if let Some(p) = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            groups.insert(p);
        }
        left_in_groups(&groups, &self.exe)
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                eprintln!("last lines of {}:\n{tail}", log.display());
            }
        }
        for pid in self.remaining() {
            signal_pid(pid, "CONT");
            signal_pid(pid, "KILL");
        }
    }
}

/// Runs the contract over `Process` with the real daemon `d` in a scratch directory.
fn process_passes_the_contract(d: &Daemon) {
    let started = Instant::now();
    let mut bins = Vec::new();
    for (path, package) in d.needs {
        let name = Path::new(path).file_name().and_then(|n| n.to_str());
        let name = format!("{} (Debian package {package})", name.unwrap_or(path));
        let Some(bin) = binary(&name, &[path]) else {
            return;
        };
        bins.push(bin);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = (d.setup)(dir.path(), &bins);
    let spec = ProcessSpec {
        argv: setup.argv.clone(),
        rejoin_args: setup.rejoin_args.clone(),
        bootstrap_args: setup.bootstrap_args.clone(),
        pidfile: dir.path().join(format!("{}.pid", d.service)),
        log: dir.path().join(format!("{}.log", d.service)),
    };
    let leftovers = Leftovers {
        exe: bins[0].canonicalize().expect("canonical binary path"),
        pidfile: spec.pidfile.clone(),
        logs: [&[spec.log.clone()][..], &setup.logs[..]].concat(),
        groups: RefCell::default(),
    };
    let specs = BTreeMap::from([(d.service.to_string(), spec)]);
    let ctl = Process::new(specs.clone(), d.stop_timeout);
    let again = Process::new(specs, d.stop_timeout);
    let with_rejoin = setup
        .rejoin_args
        .iter()
        .map(|a| a.replace("{position}", POSITION));
    let expected = ExpectedArgv {
        normal: setup.argv.clone(),
        rejoin: setup.argv.iter().cloned().chain(with_rejoin).collect(),
        bootstrap: [&setup.argv[..], &setup.bootstrap_args[..]].concat(),
    };
    let subject = Subject {
        ctl: &ctl,
        again: &again,
        service: d.service,
        crash: &|pid| signal_pid(pid, "KILL"),
        hang: &|pid| signal_pid(pid, "STOP"),
        started: &|pid| {
            leftovers.groups.borrow_mut().insert(pid);
        },
        answers: &|| setup.answer.answers(),
        ready_within: d.ready_within,
        // The stop timeout, the kill, and a loaded machine.
        stop_within: d.stop_timeout + Duration::from_secs(3),
        argv: setup.keeps_cmdline.then_some(expected),
        position_via_sql: setup.position_via_sql.clone(),
    };
    rt().block_on(contract(&subject));
    // Nothing of the service is left: not its main processes, not their children.
    assert!(!setup.answer.answers(), "{} still answers", d.service);
    assert_eq!(
        leftovers.remaining(),
        Vec::<u32>::new(),
        "processes of {} left after stop",
        d.service
    );
    eprintln!(
        "process contract for {} ran in {:?}",
        d.service,
        started.elapsed()
    );
}

#[test]
fn process_control_passes_the_contract_with_a_real_redis_server() {
    process_passes_the_contract(&REDIS);
}

#[test]
fn process_control_passes_the_contract_with_a_real_mariadbd() {
    process_passes_the_contract(&MARIADB);
}

#[test]
fn process_control_passes_the_contract_with_a_real_php_fpm() {
    process_passes_the_contract(&PHPFPM);
}
