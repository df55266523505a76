//! The shipped example files beside the unit (`systemd/`) work with the real programs:
//! `haproxy -c` accepts `haproxy.cfg.example`, and a real `redis-server` starts from
//! `redis.conf.example` with its ACL user, which can run what Triad runs. (`triad.toml.example`
//! is validated by the agent's own config tests.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The program, or `None` (a skip, said) when it is not installed outside CI.
fn program(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{path} is not installed (tests/install-packages.sh)"
    );
    eprintln!("SKIPPED: {path} is not installed (tests/install-packages.sh)");
    None
}

#[test]
fn haproxy_accepts_the_example() {
    let Some(haproxy) = program("/usr/sbin/haproxy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Its sockets and state file live where the test may write.
    let text = std::fs::read_to_string(systemd_dir().join("haproxy.cfg.example"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("/run/haproxy/", &format!("{}/", dir.path().display()))
        .replace("/var/lib/haproxy/", &format!("{}/", dir.path().display()));
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, text).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("haproxy: {e}"));
    assert!(
        out.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            "triad",
            "--no-auth-warning",
        ])
        .env("REDISCLI_AUTH", "example-password")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_starts_from_the_example_and_its_acl_user_runs_what_triad_runs() {
    let Some(server) = program("/usr/bin/redis-server") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let hash = {
        let out = Command::new("sh")
            .args([
                "-c",
                "printf %s example-password | sha256sum | cut -d' ' -f1",
            ])
            .output()
            .unwrap_or_else(|e| panic!("sha256sum: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let text = std::fs::read_to_string(systemd_dir().join("redis.conf.example"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("PASSWORD-SHA256", &hash);
    let port = free_port();
    let conf = dir.path().join("redis.conf");
    std::fs::write(
        &conf,
        format!(
            "{text}\nport {port}\nbind 127.0.0.1\ndir {}\ndaemonize no\nsave \"\"\n",
            dir.path().display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(server)
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e}"));
    let start = Instant::now();
    while cli(port, &["ping"]) != "PONG" && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    type Check = (Vec<&'static str>, Box<dyn Fn(&str) -> bool>);
    let checks: Vec<Check> = vec![
        (vec!["ping"], Box::new(|o| o == "PONG")),
        (
            vec!["info", "replication"],
            Box::new(|o| o.contains("role:master")),
        ),
        (
            vec!["config", "get", "min-replicas-to-write"],
            Box::new(|o| o.ends_with("1000")),
        ),
        (
            vec!["config", "set", "min-replicas-to-write", "1"],
            Box::new(|o| o == "OK"),
        ),
        (
            vec!["client", "pause", "100", "write"],
            Box::new(|o| o == "OK"),
        ),
        (vec!["client", "unpause"], Box::new(|o| o == "OK")),
        (
            vec!["client", "kill", "type", "pubsub"],
            Box::new(|o| !o.contains("NOPERM")),
        ),
        (vec!["replicaof", "no", "one"], Box::new(|o| o == "OK")),
        // And nothing of the shop's data.
        (vec!["get", "k"], Box::new(|o| o.contains("NOPERM"))),
    ];
    let mut failed = Vec::new();
    for (args, ok) in &checks {
        let o = cli(port, args);
        if !ok(&o) {
            failed.push(format!("{args:?}: {o}"));
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        failed.is_empty(),
        "the example's ACL user: {failed:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
