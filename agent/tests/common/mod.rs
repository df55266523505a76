//! Helpers shared by the integration tests that start real servers on loopback.

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds a Debian binary, or explains why the real case is skipped (and fails in CI).
pub fn binary(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(p);
    }
    let msg = format!("{name} not installed: run tests/install-packages.sh as root");
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIPPED real {name} contract: {msg}");
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn signal(child: &Child, sig: &str) {
    signal_pid(child.id(), sig);
}

/// Sends `sig` to a process this test started (by pid; "no such process" is not an error).
pub fn signal_pid(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// The direct children of a process we started (its php-fpm workers), from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    /// Stops with SIGTERM (php-fpm's workers survive a SIGKILL of the master and keep serving
    /// on the inherited socket, so a graceful stop is what "stopped" means for it).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.0.take() {
            signal(&c, "CONT");
            signal(&c, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            signal(&c, "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn child(&self) -> &Child {
        self.0.as_ref().expect("running")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Graceful first: php-fpm's workers outlive a SIGKILL of their master.
        self.terminate();
    }
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A redis-server on a loopback port, killed on drop.
pub struct RealRedis {
    pub bin: PathBuf,
    pub port: u16,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl RealRedis {
    pub fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.proc = Proc(Some(child));
        wait_port(self.port);
    }
}

impl RealRedis {
    /// Starts a new server on a free port (`replicaof` another port when given).
    pub fn start(bin: PathBuf, replicaof: Option<u16>) -> Self {
        let mut r = RealRedis {
            bin,
            port: free_port(),
            proc: Proc(None),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        r.spawn_with(replicaof);
        r
    }

    /// Starts the process (again) on its port.
    pub fn spawn_with(&mut self, replicaof: Option<u16>) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = replicaof {
            cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
        }
        self.proc = Proc(Some(cmd.spawn().expect("start redis-server")));
        wait_port(self.port);
    }
}

/// Whether this test runs as root (mariadbd then needs `--user=root`).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// InnoDB sizes that keep a scratch datadir small (22 MB instead of 114 MB) and fast to create.
pub const MARIADB_SIZES: [&str; 2] = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M"];

/// Creates a scratch MariaDB datadir with `mariadb-install-db` (`--user=root` when root), and
/// prints how long it took.
pub fn mariadb_install_db(install_db: &std::path::Path, datadir: &std::path::Path) {
    let user: &[&str] = if is_root() { &["--user=root"] } else { &[] };
    let started = Instant::now();
    let out = Command::new(install_db)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(MARIADB_SIZES)
        .args(user)
        .output()
        .expect("run mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("mariadb-install-db took {:?}", started.elapsed());
}
