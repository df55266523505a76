//! One contract suite for every probe implementation: run against the simulated probe and
//! against real servers started here on loopback (redis-server, php-fpm from Debian's
//! packages; `tests/install-packages.sh` installs them). MariaDB/Galera and GlusterFS need the
//! lab and are covered by the lab tests.
//!
//! The contract: a healthy backend is reported up; a stopped one `unreachable` with
//! `refused`; a hung one (SIGSTOP) `unreachable` with `timeout`, and the check returns within
//! its timeout; after resuming, up again. Without the binaries (outside CI) the real cases are
//! skipped with a printed reason; in CI (`CI` set) a missing binary fails the test.

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{binary, children, free_port, signal, signal_pid, wait_port, Proc, RealRedis};
use std::sync::Arc;
use std::time::{Duration, Instant};

use triad::config::ProbeTiming;
use triad::ids::NodeId;
use triad::probe::phpfpm::PhpfpmProbe;
use triad::probe::redis::RedisProbe;
use triad::probe::runner::check_once;
use triad::probe::sim::{SimControl, SimProbe};
use triad::probe::{FailureKind, Probe, ProbeId, Service, Status};

const TIMING: ProbeTiming = ProbeTiming {
    interval: Duration::from_millis(1000),
    timeout: Duration::from_millis(400),
    rise: 1,
    fall: 1,
};

trait Backend {
    fn probe(&self) -> Arc<dyn Probe>;
    fn stop(&mut self);
    fn start(&mut self);
    fn hang(&mut self);
    fn resume(&mut self);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn contract(name: &str, backend: &mut dyn Backend) {
    let rt = rt();
    let probe = backend.probe();
    let check = |what: &str| {
        let (r, took) = rt.block_on(check_once(probe.as_ref()));
        eprintln!(
            "{name}: {what}: {} {:?} in {took:?}",
            r.status.as_str(),
            r.error
        );
        (r, took)
    };
    let wait_up = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (r, _) = check(what);
            if r.status.is_up() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: not up after {what}: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let r = wait_up("healthy");
    assert_eq!(r.failure, None, "{name}");

    backend.stop();
    let (r, _) = check("stopped");
    assert_eq!(r.status, Status::Unreachable, "{name}: {r:?}");
    assert_eq!(r.failure, Some(FailureKind::Refused), "{name}: {r:?}");
    assert!(
        r.error.as_deref().is_some_and(|e| !e.is_empty()),
        "{name}: {r:?}"
    );

    backend.start();
    wait_up("restarted");

    backend.hang();
    let (r, took) = check("hung");
    assert_eq!(r.status, Status::Unreachable, "{name}: {r:?}");
    assert_eq!(r.failure, Some(FailureKind::Timeout), "{name}: {r:?}");
    assert!(
        took < TIMING.timeout + Duration::from_millis(1000),
        "{name}: a hung check took {took:?}"
    );
    backend.resume();
    wait_up("resumed");
}

fn id(service: Service) -> ProbeId {
    ProbeId {
        subject: NodeId(1),
        service,
        target: String::new(),
    }
}

struct Sim(SimControl);

impl Backend for Sim {
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(SimProbe::new(id(Service::Redis), TIMING, self.0.clone()))
    }
    fn stop(&mut self) {
        self.0.stop();
    }
    fn start(&mut self) {
        self.0.start();
    }
    fn hang(&mut self) {
        self.0.hang();
    }
    fn resume(&mut self) {
        self.0.start();
    }
}

#[test]
fn sim_probe_meets_the_contract() {
    contract("sim", &mut Sim(SimControl::healthy()));
}

impl Backend for RealRedis {
    fn probe(&self) -> Arc<dyn Probe> {
        let addr = ([127, 0, 0, 1], self.port).into();
        Arc::new(RedisProbe::new(
            id(Service::Redis),
            addr,
            None,
            None,
            TIMING,
        ))
    }
    fn stop(&mut self) {
        self.proc.kill();
    }
    fn start(&mut self) {
        self.spawn();
    }
    fn hang(&mut self) {
        signal(self.proc.child(), "STOP");
    }
    fn resume(&mut self) {
        signal(self.proc.child(), "CONT");
    }
}

#[test]
fn redis_probe_meets_the_contract() {
    let Some(bin) = binary("redis-server", &["/usr/bin/redis-server"]) else {
        return;
    };
    let mut r = RealRedis {
        bin,
        port: free_port(),
        proc: Proc(None),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    r.spawn();
    contract("redis", &mut r);
}

#[test]
fn redis_probe_reports_replication_and_bad_input() {
    let Some(bin) = binary("redis-server", &["/usr/bin/redis-server"]) else {
        return;
    };
    let mut master = RealRedis {
        bin: bin.clone(),
        port: free_port(),
        proc: Proc(None),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    master.spawn();
    let rt = rt();
    let (r, _) = rt.block_on(check_once(master.probe().as_ref()));
    assert_eq!(r.status, Status::Healthy, "{r:?}");
    assert_eq!(r.details["role"], "master", "{}", r.details);

    // A server that answers `PING` with an error (here a user not allowed to run it; a
    // loading server does the same) but `INFO` fine: down, with Redis's error.
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], master.port).into();
    rt.block_on(async {
        let mut admin = triad::probe::redis::connect(addr, None, None, Duration::from_secs(2))
            .await
            .expect("connect as default");
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("noping")
            .arg("on")
            .arg(">pw")
            .arg("+info")
            .query_async(&mut admin)
            .await
            .expect("ACL SETUSER");
    });
    let noping = RedisProbe::new(
        id(Service::Redis),
        addr,
        Some("noping".into()),
        Some("pw".into()),
        TIMING,
    );
    let (r, _) = rt.block_on(check_once(&noping));
    assert_eq!(r.status, Status::Down, "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("no permissions to run the 'ping' command"),
        "Redis's own error is shown: {r:?}"
    );

    // Wrong password against a server without one: a clear auth failure, no panic.
    let wrong = RedisProbe::new(
        id(Service::Redis),
        addr,
        Some("nobody".into()),
        Some("not-the-password".into()),
        TIMING,
    );
    let (r, _) = rt.block_on(check_once(&wrong));
    assert_eq!(r.status, Status::Unreachable, "{r:?}");
    assert_eq!(r.failure, Some(FailureKind::Auth), "{r:?}");
    assert!(
        !r.error
            .as_deref()
            .unwrap_or("")
            .contains("not-the-password"),
        "the password must not appear in errors: {r:?}"
    );

    // Garbage on the port: something that is not Redis answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let garbage_port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut s in listener.incoming().take(3).flatten() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nhello\r\n");
        }
    });
    let garbage = RedisProbe::new(
        id(Service::Redis),
        ([127, 0, 0, 1], garbage_port).into(),
        None,
        None,
        TIMING,
    );
    let (r, _) = rt.block_on(check_once(&garbage));
    assert_eq!(r.status, Status::Unreachable, "{r:?}");
    assert!(
        matches!(
            r.failure,
            Some(FailureKind::Protocol | FailureKind::Io | FailureKind::Timeout)
        ),
        "{r:?}"
    );
}

struct RealFpm {
    bin: PathBuf,
    port: u16,
    proc: Proc,
    dir: tempfile::TempDir,
}

impl RealFpm {
    fn spawn(&mut self) {
        let conf = self.dir.path().join("fpm.conf");
        let text = format!(
            "[global]\nerror_log = {dir}/error.log\ndaemonize = no\n\
             [www]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 2\n\
             pm.status_path = /status\nping.path = /ping\nping.response = pong\n",
            dir = self.dir.path().display(),
            port = self.port
        );
        std::fs::write(&conf, text).expect("write fpm.conf");
        let child = Command::new(&self.bin)
            .arg("-y")
            .arg(&conf)
            .args(["-F", "-R"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        self.proc = Proc(Some(child));
        wait_port(self.port);
    }
}

impl Backend for RealFpm {
    fn probe(&self) -> Arc<dyn Probe> {
        Arc::new(PhpfpmProbe::new(
            id(Service::Phpfpm),
            triad::config::FcgiAddr::Tcp(([127, 0, 0, 1], self.port).into()),
            "/ping".into(),
            "pong".into(),
            "/status".into(),
            TIMING,
        ))
    }
    fn stop(&mut self) {
        self.proc.terminate();
    }
    fn start(&mut self) {
        self.spawn();
    }
    fn hang(&mut self) {
        // Stopping the master alone leaves idle workers answering: stop the whole group.
        for worker in children(self.proc.child().id()) {
            signal_pid(worker, "STOP");
        }
        signal(self.proc.child(), "STOP");
    }
    fn resume(&mut self) {
        signal(self.proc.child(), "CONT");
        for worker in children(self.proc.child().id()) {
            signal_pid(worker, "CONT");
        }
    }
}

/// The TCP connections made to `port` in the last minute or still open, from the kernel's
/// table: the set of the clients' ports (a closed connection stays listed in TIME_WAIT on the
/// side that closed first, and both sides are in this network namespace).
fn connections_to(port: u16) -> std::collections::BTreeSet<String> {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state) = (*f.get(1)?, *f.get(2)?, *f.get(3)?);
            if state == "0A" {
                return None; // LISTEN
            }
            if local.ends_with(&port) {
                Some(remote.to_string())
            } else if remote.ends_with(&port) {
                Some(local.to_string())
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn phpfpm_probe_meets_the_contract() {
    let Some(bin) = binary("php-fpm", &["/usr/sbin/php-fpm8.2"]) else {
        return;
    };
    let mut f = RealFpm {
        bin,
        port: free_port(),
        proc: Proc(None),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    f.spawn();
    let rt = rt();
    let (r, _) = rt.block_on(check_once(f.probe().as_ref()));
    assert_eq!(r.details["pool"], "www", "{r:?}");
    // A static pool of 2 (the second child may still be forking right after start-up).
    let total = r.details["total_processes"].as_u64().unwrap_or(0);
    assert!((1..=2).contains(&total), "{r:?}");
    // One connection per check: the ping and the status request share it (FastCGI
    // keep-alive), and the probe closes it when the check ends.
    let before = connections_to(f.port).len();
    for _ in 0..3 {
        let (r, _) = rt.block_on(check_once(f.probe().as_ref()));
        assert_eq!(r.status, Status::Healthy, "{r:?}");
    }
    assert_eq!(
        connections_to(f.port).len() - before,
        3,
        "one connection per check"
    );
    contract("php-fpm", &mut f);

    // A wrong ping path: php-fpm answers "File not found.", which is not the ping response.
    let wrong = PhpfpmProbe::new(
        id(Service::Phpfpm),
        triad::config::FcgiAddr::Tcp(([127, 0, 0, 1], f.port).into()),
        "/not-ping".into(),
        "pong".into(),
        "/status".into(),
        TIMING,
    );
    let (r, _) = rt.block_on(check_once(&wrong));
    assert_eq!(r.status, Status::Down, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("/not-ping"),
        "{r:?}"
    );
}
