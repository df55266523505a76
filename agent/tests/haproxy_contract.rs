//! One contract suite for every `Haproxy` implementation: run against `SimHaproxy` and against
//! a real HAProxy 2.6 (Debian's package; `tests/install-packages.sh` installs it) started here
//! in master-worker mode on loopback, with its admin socket and server-state file in a tempdir.
//!
//! The contract: the state of a backend is read; `set state` changes it; a plan applied through
//! the fence converges and a second plan is empty; a configured-`disabled` server set ready is
//! ready although its admin_state keeps 0x04; `maint` leaves established sessions and `shutdown
//! sessions` cuts them; the state saved to the state file (and only that) survives a reload;
//! unknown names get HAProxy's refusal text; a hung HAProxy gives a timeout within the timeout;
//! a stopped one the "down" kind. Without the binary (outside CI) the real case is skipped with
//! a printed reason; in CI (`CI` set) a missing binary fails the test.

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use triad::actuator::haproxy::{
    apply, plan, AdminMode, AdminState, ErrorKind, Haproxy, HaproxyError, HaproxyOp, HaproxySocket,
    Policy, ServerRow, Sessions, SimHaproxy,
};
use triad::actuator::{DecisionEpoch, EpochFence};

use common::{binary, free_port, signal_pid};

const TIMEOUT: Duration = Duration::from_millis(1000);

/// What the suite needs to do to an implementation besides calling it.
trait Backend {
    /// The implementation under test.
    fn haproxy(&self) -> Arc<dyn Haproxy>;
    /// Configured ports of `redis` r1, r2, r3.
    fn ports(&self) -> [u16; 3];
    /// Reloads the configuration and returns once the new process answers.
    fn reload(&mut self);
    /// Establishes one client session through the frontend to `redis/<server>`.
    fn open_session(&mut self, server: &str);
    /// Whether the last session is still established.
    fn session_alive(&mut self) -> bool;
    /// Makes HAProxy stop answering (SIGSTOP).
    fn hang(&mut self);
    /// Undoes [`Backend::hang`].
    fn resume(&mut self);
    /// Stops HAProxy.
    fn stop(&mut self);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn modes(rows: &[ServerRow]) -> Vec<(String, AdminMode)> {
    rows.iter()
        .map(|r| (r.server.clone(), r.admin_state.mode()))
        .collect()
}

fn want(list: &[(&str, AdminMode)]) -> Vec<(String, AdminMode)> {
    list.iter().map(|(s, m)| (s.to_string(), *m)).collect()
}

fn refusal<T: std::fmt::Debug>(r: Result<T, HaproxyError>) -> String {
    match r {
        Err(HaproxyError::Refused { message, .. }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn contract(name: &str, b: &mut dyn Backend) {
    use AdminMode::{Drain, Maint, Ready};
    let rt = rt();
    let h = b.haproxy();
    let redis = |rt: &tokio::runtime::Runtime| {
        rt.block_on(h.show_servers_state(Some("redis")))
            .unwrap_or_else(|e| panic!("{name}: show servers state redis: {e}"))
    };

    // Read state: three ready servers at their configured ports; the `disabled` one in maint.
    let rows = redis(&rt);
    assert_eq!(
        modes(&rows),
        want(&[("r1", Ready), ("r2", Ready), ("r3", Ready)]),
        "{name}"
    );
    let ports: Vec<u16> = rows.iter().map(|r| r.port).collect();
    assert_eq!(ports, b.ports(), "{name}");
    assert!(rows.iter().all(|r| r.is_serving()), "{name}: {rows:?}");
    let all = rt.block_on(h.show_servers_state(None)).expect("show all");
    let w1 = all.iter().find(|r| r.server == "w1").expect("w1 listed");
    assert!(
        w1.is_maint() && w1.admin_state.has(AdminState::CONFIGURED_MAINT),
        "{name}: {w1:?}"
    );
    let info = rt.block_on(h.show_info()).expect("show info");
    eprintln!("{name}: haproxy {} pid {}", info.version, info.pid);

    // Set one server ready and the others maint.
    rt.block_on(h.set_server_state("redis", "r1", Ready))
        .expect("set r1");
    rt.block_on(h.set_server_state("redis", "r2", Maint))
        .expect("set r2");
    rt.block_on(h.set_server_state("redis", "r3", Maint))
        .expect("set r3");
    assert_eq!(
        modes(&redis(&rt)),
        want(&[("r1", Ready), ("r2", Maint), ("r3", Maint)]),
        "{name}"
    );

    // Converge through the planner; the second plan is empty.
    let desired: BTreeMap<String, AdminMode> = [("r1", Maint), ("r2", Ready), ("r3", Drain)]
        .into_iter()
        .map(|(s, m)| (s.to_string(), m))
        .collect();
    let epoch = DecisionEpoch::new(5, 50);
    let mut fence = EpochFence::new();
    let first = plan(
        "redis",
        &desired,
        &redis(&rt),
        epoch,
        Sessions::ShutdownOnLeave,
    );
    eprintln!("{name}: {}", first.verdict());
    assert_eq!(first.actions.len(), 4, "{name}: {first:?}");
    let done = rt.block_on(apply(h.as_ref(), &mut fence, &first.actions));
    assert_eq!(done.ok(), Some(4), "{name}");
    let second = plan(
        "redis",
        &desired,
        &redis(&rt),
        epoch,
        Sessions::ShutdownOnLeave,
    );
    assert!(second.is_converged(), "{name}: {second:?}");
    assert_eq!(
        modes(&redis(&rt)),
        want(&[("r1", Maint), ("r2", Ready), ("r3", Drain)]),
        "{name}"
    );
    // An older decision is refused by the fence and changes nothing.
    let stale = plan(
        "redis",
        &BTreeMap::from([("r1".to_string(), Ready)]),
        &redis(&rt),
        DecisionEpoch::new(5, 49),
        Sessions::Keep,
    );
    let err = rt.block_on(apply(h.as_ref(), &mut fence, &stale.actions));
    assert_eq!(
        err.err().map(|e| e.kind()),
        Some(ErrorKind::Stale),
        "{name}"
    );

    // The `disabled` trap: once set ready it serves, with 0x04 still set; plans stay empty.
    let web = BTreeMap::from([("w1".to_string(), Ready)]);
    let web_rows = || rt.block_on(h.show_servers_state(Some("web"))).expect("web");
    let p = plan("web", &web, &web_rows(), epoch, Sessions::Keep);
    assert_eq!(p.actions.len(), 1, "{name}: {p:?}");
    rt.block_on(apply(h.as_ref(), &mut fence, &p.actions))
        .expect("w1 ready");
    let w1 = web_rows().remove(0);
    assert!(w1.is_ready() && w1.is_serving(), "{name}: {w1:?}");
    assert_eq!(
        w1.admin_state,
        AdminState(AdminState::CONFIGURED_MAINT),
        "{name}"
    );
    assert!(plan("web", &web, &web_rows(), epoch, Sessions::Keep).is_converged());

    // A server entering service whose checks have not passed (it was out of service): with
    // `force_up_on_enter` the planner forces it up, so it serves at once.
    let checked = BTreeMap::from([("c1".to_string(), Ready)]);
    let c_rows = || {
        rt.block_on(h.show_servers_state(Some("checked")))
            .expect("checked")
    };
    let force = Policy {
        sessions: Sessions::Keep,
        force_up_on_enter: true,
    };
    let p = plan("checked", &checked, &c_rows(), epoch, force);
    let ops: Vec<HaproxyOp> = p.actions.iter().map(|a| a.op).collect();
    assert_eq!(
        ops,
        [HaproxyOp::SetState(Ready), HaproxyOp::ForceHealthUp],
        "{name}: {p:?}"
    );
    rt.block_on(apply(h.as_ref(), &mut fence, &p.actions))
        .expect("c1 ready and up");
    let c1 = c_rows().remove(0);
    assert!(c1.is_ready() && c1.op_state.is_up(), "{name}: {c1:?}");
    assert!(plan("checked", &checked, &c_rows(), epoch, force).is_converged());

    // Sessions: maint leaves them, shutdown sessions cuts them.
    b.open_session("r2");
    assert!(b.session_alive(), "{name}: session not established");
    rt.block_on(h.set_server_state("redis", "r2", Maint))
        .expect("r2 maint");
    assert!(b.session_alive(), "{name}: maint alone cut the session");
    rt.block_on(h.shutdown_sessions("redis", "r2"))
        .expect("shutdown");
    let deadline = Instant::now() + Duration::from_secs(3);
    while b.session_alive() {
        assert!(
            Instant::now() < deadline,
            "{name}: session survived shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(h.set_server_state("redis", "r2", Ready))
        .expect("r2 ready");

    // The saved state, not the live one, survives a reload.
    let saved = rt.block_on(h.save_server_state()).expect("save state");
    assert_eq!(saved, 5, "{name}");
    rt.block_on(h.set_server_state("redis", "r3", Maint))
        .expect("r3 maint");
    let pid = rt.block_on(h.show_info()).expect("info").pid;
    b.reload();
    let after = rt.block_on(h.show_info()).expect("info after reload");
    assert_ne!(after.pid, pid, "{name}: no new worker after reload");
    assert_eq!(
        modes(&redis(&rt)),
        want(&[("r1", Maint), ("r2", Ready), ("r3", Drain)]),
        "{name}"
    );
    assert!(
        web_rows()[0].is_ready(),
        "{name}: w1 back in maint after reload"
    );

    // Unknown names: HAProxy's own refusal text.
    let r = rt.block_on(h.set_server_state("redis", "nope", Ready));
    assert_eq!(refusal(r), "No such server.", "{name}");
    let r = rt.block_on(h.set_server_state("nope", "r1", Ready));
    assert_eq!(refusal(r), "No such backend.", "{name}");
    let r = rt.block_on(h.shutdown_sessions("redis", "nope"));
    assert_eq!(refusal(r), "No such server.", "{name}");
    let r = rt.block_on(h.show_servers_state(Some("nope")));
    assert_eq!(refusal(r), "Can't find backend.", "{name}");

    // Hung: a timeout, within the timeout; then it answers again.
    b.hang();
    let started = Instant::now();
    let r = rt.block_on(h.show_info());
    let took = started.elapsed();
    assert_eq!(
        r.err().map(|e| e.kind()),
        Some(ErrorKind::Timeout),
        "{name}"
    );
    assert!(
        took < TIMEOUT + Duration::from_millis(500),
        "{name}: took {took:?}"
    );
    b.resume();
    rt.block_on(h.show_info()).expect("answers after resume");

    // Stopped: the "down" kind, with a message saying so.
    b.stop();
    let err = rt.block_on(h.set_server_state("redis", "r1", Ready)).err();
    assert_eq!(
        err.as_ref().map(|e| e.kind()),
        Some(ErrorKind::Down),
        "{name}: {err:?}"
    );
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("not running"), "{name}: {text}");
    assert_eq!(
        rt.block_on(h.show_info()).err().map(|e| e.kind()),
        Some(ErrorKind::Down),
        "{name}"
    );
}

struct Sim {
    sim: SimHaproxy,
    session: Option<String>,
}

impl Backend for Sim {
    fn haproxy(&self) -> Arc<dyn Haproxy> {
        Arc::new(self.sim.clone())
    }
    fn ports(&self) -> [u16; 3] {
        [6379, 6380, 6381]
    }
    fn reload(&mut self) {
        self.sim.reload();
    }
    fn open_session(&mut self, server: &str) {
        assert!(
            self.sim.open_session("redis", server),
            "sim: {server} not ready"
        );
        self.session = Some(server.to_string());
    }
    fn session_alive(&mut self) -> bool {
        self.session
            .as_deref()
            .is_some_and(|s| self.sim.sessions("redis", s) > 0)
    }
    fn hang(&mut self) {
        self.sim.set_hung(true);
    }
    fn resume(&mut self) {
        self.sim.set_hung(false);
    }
    fn stop(&mut self) {
        self.sim.set_running(false);
    }
}

#[test]
fn sim_haproxy_meets_the_contract() {
    let sim = SimHaproxy::new(TIMEOUT);
    for (i, s) in ["r1", "r2", "r3"].into_iter().enumerate() {
        sim.add_server("redis", s, 6379 + i as u16, false);
    }
    sim.add_server("web", "w1", 8080, true);
    sim.add_server("checked", "c1", 8081, true);
    contract("sim", &mut Sim { sim, session: None });
}

/// `show info`'s Pid over a blocking connection (the harness waits without a runtime).
fn worker_pid(sock: &Path) -> Option<u32> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"show info\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse().ok())
}

/// A real haproxy in master-worker mode, stopped (by its pid) on drop.
struct RealHaproxy {
    dir: tempfile::TempDir,
    master: Option<Child>,
    worker: Option<u32>,
    frontend: u16,
    ports: [u16; 3],
    session: Option<TcpStream>,
}

impl RealHaproxy {
    fn start(bin: &Path) -> RealHaproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let frontend = free_port();
        let ports = [free_port(), free_port(), free_port()];
        let d = dir.path().display();
        let cfg = format!(
            "global\n    stats socket {d}/admin.sock mode 600 level admin\n    \
             server-state-file {d}/server-state\n    nbthread 1\n\
             defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    \
             timeout server 30s\n    load-server-state-from-file global\n\
             frontend fe\n    bind 127.0.0.1:{frontend}\n    default_backend redis\n\
             backend redis\n    server r1 127.0.0.1:{}\n    server r2 127.0.0.1:{}\n    \
             server r3 127.0.0.1:{}\n\
             backend web\n    server w1 127.0.0.1:{} disabled\n\
             backend checked\n    server c1 127.0.0.1:{} check inter 60s rise 1 fall 1 disabled\n",
            ports[0],
            ports[1],
            ports[2],
            free_port(),
            free_port(),
        );
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let master = Command::new(bin)
            .arg("-W")
            .arg("-S")
            .arg(dir.path().join("master.sock"))
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start haproxy");
        let mut h = RealHaproxy {
            dir,
            master: Some(master),
            worker: None,
            frontend,
            ports,
            session: None,
        };
        h.wait_worker(None);
        h
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Waits until a worker other than `old` answers on the admin socket.
    fn wait_worker(&mut self, old: Option<u32>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = worker_pid(&self.sock()).filter(|p| Some(*p) != old) {
                self.worker = Some(pid);
                return;
            }
            let log = std::fs::read_to_string(self.dir.path().join("haproxy.log"));
            assert!(
                Instant::now() < deadline,
                "haproxy worker never answered: {}",
                log.unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Backend for RealHaproxy {
    fn haproxy(&self) -> Arc<dyn Haproxy> {
        Arc::new(
            HaproxySocket::new(self.sock(), TIMEOUT)
                .with_state_file(self.dir.path().join("server-state")),
        )
    }
    fn ports(&self) -> [u16; 3] {
        self.ports
    }
    fn reload(&mut self) {
        let master = self.master.as_ref().expect("running").id();
        signal_pid(master, "USR2");
        self.wait_worker(self.worker);
    }
    fn open_session(&mut self, server: &str) {
        let i = ["r1", "r2", "r3"]
            .iter()
            .position(|s| *s == server)
            .expect("known server");
        // The Redis stand-in: accepts one connection and echoes until it closes.
        let listener = TcpListener::bind(("127.0.0.1", self.ports[i])).expect("bind server port");
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 256];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        let mut client = TcpStream::connect(("127.0.0.1", self.frontend)).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        client.write_all(b"PING\n").expect("write");
        let mut echo = [0u8; 5];
        client.read_exact(&mut echo).expect("echo through haproxy");
        assert_eq!(&echo, b"PING\n");
        self.session = Some(client);
    }
    fn session_alive(&mut self) -> bool {
        let Some(client) = self.session.as_mut() else {
            return false;
        };
        let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 16];
        match client.read(&mut buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
    fn hang(&mut self) {
        signal_pid(self.worker.expect("worker"), "STOP");
    }
    fn resume(&mut self) {
        signal_pid(self.worker.expect("worker"), "CONT");
    }
    fn stop(&mut self) {
        if let Some(w) = self.worker {
            signal_pid(w, "CONT");
        }
        if let Some(mut master) = self.master.take() {
            // The master stops its workers on SIGTERM and exits once they are gone.
            signal_pid(master.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = master.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = master.kill();
            let _ = master.wait();
            if let Some(w) = self.worker {
                signal_pid(w, "KILL");
            }
        }
    }
}

impl Drop for RealHaproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn real_haproxy_meets_the_contract() {
    let Some(bin) = binary("haproxy", &["/usr/sbin/haproxy"]) else {
        return;
    };
    let mut h = RealHaproxy::start(&bin);
    contract("haproxy", &mut h);
}

#[test]
fn missing_socket_is_down_and_bad_state_file_is_reported() {
    let rt = rt();
    let dir = tempfile::tempdir().expect("tempdir");
    let h = HaproxySocket::new(dir.path().join("absent.sock"), TIMEOUT)
        .with_state_file(dir.path().join("no-such-dir/state"));
    let err = rt.block_on(h.show_servers_state(Some("redis"))).err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Down));
    // A socket that accepts and never answers: a timeout, not a hang.
    let path = dir.path().join("silent.sock");
    let _silent = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let h = HaproxySocket::new(&path, Duration::from_millis(300));
    let started = Instant::now();
    let err = rt.block_on(h.show_info()).err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Timeout));
    assert!(started.elapsed() < Duration::from_secs(1));

    let Some(bin) = binary("haproxy", &["/usr/sbin/haproxy"]) else {
        return;
    };
    let real = RealHaproxy::start(&bin);
    let bad = HaproxySocket::new(real.sock(), TIMEOUT)
        .with_state_file(dir.path().join("no-such-dir/state"));
    let err = rt.block_on(bad.save_server_state()).err();
    assert_eq!(
        err.as_ref().map(|e| e.kind()),
        Some(ErrorKind::StateFile),
        "{err:?}"
    );
}
