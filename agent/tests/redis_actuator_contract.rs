//! The Redis actuator against a simulated server and real redis-server processes on loopback:
//! promote, follow, fence (writes refused with NOREPLICAS), unfence, and a clear error when the
//! server is down. A missing redis-server fails in CI and is skipped elsewhere with a reason.

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{binary, RealRedis};
use triad::actuator::redis::{RedisAction, RedisControl, RedisServer, SimRedis};
use triad::ids::Epoch;
use triad::probe::redis_info::{parse_info, RedisInfo, RedisRole};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn info(port: u16) -> RedisInfo {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "replication"])
        .output()
        .expect("redis-cli");
    parse_info(&String::from_utf8_lossy(&out.stdout))
}

fn raw_info(port: u16) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "replication"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `min_slaves_good_slaves` from INFO replication: the replicas the write guard counts.
fn good_replicas(port: u16) -> u32 {
    raw_info(port)
        .lines()
        .find_map(|l| l.trim().strip_prefix("min_slaves_good_slaves:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn write(port: u16) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SET", "k", "v"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sim_redis_follows_actions() {
    let rt = rt();
    let sim = SimRedis::new(RedisInfo {
        role: Some(RedisRole::Master),
        ..RedisInfo::default()
    });
    rt.block_on(sim.apply(&RedisAction::Fence, Epoch(3)))
        .expect("fence");
    assert!(rt.block_on(sim.is_fenced()).expect("read"));
    rt.block_on(sim.apply(&RedisAction::Follow(addr(7000)), Epoch(4)))
        .expect("follow");
    let s = sim.snapshot();
    assert_eq!(s.info.role, Some(RedisRole::Replica));
    assert_eq!(s.info.master_port, Some(7000));
    assert_eq!(s.log.len(), 2);
    sim.with(|s| s.down = true);
    let err = rt
        .block_on(sim.apply(&RedisAction::Promote, Epoch(5)))
        .expect_err("down");
    assert!(err.to_string().contains("refused"));
}

/// The actuator for the server on `port`: no credentials, a 1 s timeout, no write guard.
fn plain(port: u16) -> RedisServer {
    RedisServer::new(
        addr(port),
        None,
        None,
        Duration::from_secs(1),
        0,
        Duration::from_secs(10),
    )
}

#[test]
fn real_redis_promote_follow_fence() {
    let Some(bin) = binary("redis-server", &["/usr/bin/redis-server"]) else {
        return;
    };
    let rt = rt();
    let a = RealRedis::start(bin.clone(), None);
    let b = RealRedis::start(bin, Some(a.port));
    let ctl = plain;

    // Fence the master: writes refused at once; unfence: accepted again.
    assert_eq!(write(a.port), "OK");
    rt.block_on(ctl(a.port).apply(&RedisAction::Fence, Epoch(1)))
        .expect("fence");
    assert!(rt.block_on(ctl(a.port).is_fenced()).expect("read"));
    assert!(write(a.port).contains("NOREPLICAS"), "{}", write(a.port));
    rt.block_on(ctl(a.port).apply(&RedisAction::Unfence, Epoch(1)))
        .expect("unfence");
    assert_eq!(write(a.port), "OK");

    // Promote the replica, then make the old master follow it.
    rt.block_on(ctl(b.port).apply(&RedisAction::Promote, Epoch(2)))
        .expect("promote");
    assert_eq!(info(b.port).role, Some(RedisRole::Master));
    rt.block_on(ctl(a.port).apply(&RedisAction::Follow(addr(b.port)), Epoch(2)))
        .expect("follow");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let i = info(a.port);
        if i.role == Some(RedisRole::Replica) && i.master_link_up == Some(true) {
            assert_eq!(i.master_port, Some(b.port));
            break;
        }
        assert!(Instant::now() < deadline, "old master never linked: {i:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(write(a.port).contains("READONLY"), "{}", write(a.port));
    assert_eq!(write(b.port), "OK");

    // The configured write guard (min-replicas-to-write 1, max-lag 2): a server still at
    // Redis's defaults counts as not set up (`is_fenced`), and `Unfence` sets both values.
    let guarded = RedisServer::new(
        addr(b.port),
        None,
        None,
        Duration::from_secs(1),
        1,
        Duration::from_secs(2),
    );
    assert!(rt.block_on(guarded.is_fenced()).expect("read"));
    rt.block_on(guarded.apply(&RedisAction::Unfence, Epoch(2)))
        .expect("set up the guard");
    assert!(!rt.block_on(guarded.is_fenced()).expect("read"));
    // b has a linked replica (a), so the guard lets writes through. "Linked" is judged from
    // the master's side: Redis counts a replica as good only once that replica's first
    // REPLCONF ACK arrived (about a second after the replica sees its link up), so wait for
    // b's own count before writing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while good_replicas(b.port) < 1 {
        assert!(
            Instant::now() < deadline,
            "b never counted a good replica: {}",
            raw_info(b.port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(write(b.port), "OK");

    // A stopped server: a clear error naming it.
    drop(a);
    let err = rt
        .block_on(ctl(1).apply(&RedisAction::Promote, Epoch(3)))
        .expect_err("down");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

fn stat(port: u16, key: &str) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "stats"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in INFO stats"))
}

/// One handle keeps one connection: calls after the first open none; a kept connection
/// killed on the server (as a restart or `CLIENT KILL` breaks it) is replaced within the
/// call; once the server is gone, a call fails as refused (judged on a fresh connection, not
/// on the dead kept one).
#[test]
fn real_redis_server_keeps_one_connection() {
    let Some(bin) = binary("redis-server", &["/usr/bin/redis-server"]) else {
        return;
    };
    let rt = rt();
    let a = RealRedis::start(bin, None);
    let ctl = plain(a.port);
    rt.block_on(ctl.info()).expect("first read");
    // redis-cli's own connections count too: one per `stat` call.
    let before = stat(a.port, "total_connections_received");
    for _ in 0..5 {
        rt.block_on(ctl.info()).expect("info");
        rt.block_on(ctl.is_fenced()).expect("is_fenced");
    }
    rt.block_on(ctl.apply(&RedisAction::Unfence, Epoch(1)))
        .expect("unfence");
    assert_eq!(
        stat(a.port, "total_connections_received"),
        before + 1,
        "the calls opened connections (only the second redis-cli call should count)"
    );
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &a.port.to_string(),
            "CLIENT",
            "KILL",
            "TYPE",
            "normal",
        ])
        .output()
        .expect("redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "killed the kept one"
    );
    let i = rt
        .block_on(ctl.info())
        .expect("info after the kept connection was killed");
    assert_eq!(i.role, Some(RedisRole::Master));
    let port = a.port;
    drop(a);
    let err = rt.block_on(ctl.info()).expect_err("server gone");
    assert!(err.refused, "a stopped server reads as refused: {err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}
