//! One contract for every [`ServiceControl`]: the simulated one, and `Process` against a real
//! redis-server in a scratch directory. `Systemd` is not run here (it would need PID 1 to be
//! systemd and root); its parser is unit-tested on recorded `systemctl show` output.
//!
//! The contract: a configured service starts stopped; start runs it; a second start, and a
//! second controller (a restarted agent) reading the same pidfile, find it and start nothing;
//! restart runs a new process; a crashed service reads as stopped and starts again; stop is
//! idempotent; an unknown service and a malformed Galera position are refused by name.
//! A missing redis-server fails in CI and is skipped elsewhere with a reason.

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{binary, free_port};
use triad::actuator::service::{
    Process, ProcessSpec, ServiceControl, ServiceError, ServiceState, SimServices, StartMode,
};

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

/// The shared contract. `crash` kills the service behind the controller's back; `serving`
/// says whether the service really answers; `again` builds a second controller over the same
/// services (a restarted agent).
async fn contract(
    ctl: &dyn ServiceControl,
    again: &dyn ServiceControl,
    service: &str,
    crash: &dyn Fn(u32),
    serving: &dyn Fn() -> bool,
) {
    let normal = StartMode::Normal;
    assert_eq!(
        ctl.state(service).await.expect("state"),
        ServiceState::Stopped
    );

    ctl.start(service, &normal).await.expect("start");
    let first = pid(&ctl.state(service).await.expect("state"));
    assert!(serving(), "{service} does not answer after start");

    ctl.start(service, &normal).await.expect("second start");
    assert_eq!(
        pid(&ctl.state(service).await.expect("state")),
        first,
        "a second start started another process"
    );
    assert_eq!(
        pid(&again.state(service).await.expect("state")),
        first,
        "a restarted agent does not find the running service"
    );
    again
        .start(service, &normal)
        .await
        .expect("start by a restarted agent");
    assert_eq!(
        pid(&ctl.state(service).await.expect("state")),
        first,
        "a restarted agent started a second process"
    );

    ctl.restart(service, &normal).await.expect("restart");
    let second = pid(&ctl.state(service).await.expect("state"));
    assert_ne!(second, first, "restart kept the old process");
    assert!(serving(), "{service} does not answer after restart");

    crash(second);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ctl.state(service).await.expect("state").is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "a crashed {service} still reads as running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctl.start(service, &normal)
        .await
        .expect("start after a crash");
    assert!(ctl.state(service).await.expect("state").is_running());

    ctl.stop(service).await.expect("stop");
    assert_eq!(
        ctl.state(service).await.expect("state"),
        ServiceState::Stopped
    );
    assert!(!serving(), "{service} still answers after stop");
    ctl.stop(service).await.expect("second stop");

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
    rt().block_on(contract(
        &sim,
        &sim.clone(),
        "redis",
        &move |_| crash_sim.crash("redis"),
        &move || futures::executor::block_on(up.state("redis")).is_ok_and(|s| s.is_running()),
    ));
    let ops: Vec<String> = sim.log().into_iter().map(|(_, op)| op).collect();
    assert_eq!(
        ops,
        [
            "start Normal",
            "stop",
            "start Normal",
            "start Normal",
            "stop"
        ],
        "only real changes are carried out"
    );
}

#[test]
fn process_control_passes_the_contract_with_a_real_redis_server() {
    let Some(bin) = binary("redis-server", &["/usr/bin/redis-server"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let spec = ProcessSpec {
        argv: vec![
            bin.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
        ],
        rejoin_args: vec![],
        bootstrap_args: vec![],
        pidfile: dir.path().join("redis.pid"),
        log: dir.path().join("redis.log"),
    };
    let specs = BTreeMap::from([("redis".to_string(), spec)]);
    let ctl = Process::new(specs.clone(), Duration::from_secs(5));
    let again = Process::new(specs, Duration::from_secs(5));
    let serving = move || {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            // Just (re)started: give it the time to open its port.
            let deadline = std::time::Instant::now() + Duration::from_millis(300);
            while std::time::Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    };
    let crash = |pid: u32| common::signal_pid(pid, "KILL");
    let started = std::time::Instant::now();
    rt().block_on(async {
        contract(&ctl, &again, "redis", &crash, &|| {
            // After a stop nothing may answer; after a start it must.
            serving()
        })
        .await;
    });
    // Nothing left behind.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    eprintln!("process contract ran in {:?}", started.elapsed());
}
