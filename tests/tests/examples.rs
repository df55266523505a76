//! The shipped example files beside the unit (`systemd/`) work with the real programs:
//! `haproxy -c` accepts `haproxy.cfg.example`, and a real `redis-server` starts from
//! `redis.conf.example` with its ACL user, which can run what Triad runs. (`triad.toml.example`
//! is validated by the agent's own config tests.) The package's pieces agree with each other:
//! every unit the example config names is shipped, each helper unit leaves its output where
//! the agent reads it, and the polkit rule (evaluated by node, as polkit's JavaScript engine
//! would) allows the `triad` user exactly those units and verbs.

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
        .replace("/var/lib/triad/", &format!("{}/", dir.path().display()));
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

/// `Key=value` lines of a unit file (all values of a key, in order).
fn unit_keys(name: &str) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(systemd_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn unit_value(name: &str, key: &str) -> Option<String> {
    unit_keys(name)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// The units the example config has the agent start: the managed services, and the helper
/// units with the file each must leave its output in (`None`: no output read).
fn example_units() -> (Vec<String>, Vec<(String, Option<PathBuf>)>) {
    let config = triad::config::read(&systemd_dir().join("triad.toml.example"))
        .unwrap_or_else(|e| panic!("example: {e}"));
    let managed = config.services.systemd_units().into_values().collect();
    let data_dir = &config.node.data_dir;
    let out = |unit: &str| Some(data_dir.join(format!("{unit}.out")));
    let mut helpers = Vec::new();
    if let Some(u) = &config.services.bootstrap_unit {
        helpers.push((u.clone(), None));
    }
    if let Some(u) = config.galera.as_ref().and_then(|g| g.recover_unit.clone()) {
        let o = out(&u);
        helpers.push((u, o));
    }
    if let Some(u) = config.gluster.as_ref().and_then(|g| g.heal_unit.clone()) {
        let o = out(&u);
        helpers.push((u, o));
    }
    // The remount helper, once per mount, as the agent names it (`{mount_unit}` replaced).
    if let Some(g) = &config.gluster {
        let argv = g.remount_command.clone().unwrap_or_default();
        for m in &g.mounts {
            let unit = triad::helper_unit::escape_path(m);
            if let Some(u) = argv.iter().find(|a| a.ends_with(".service")) {
                helpers.push((u.replace("{mount_unit}", &unit), None));
            }
        }
    }
    (managed, helpers)
}

#[test]
fn every_helper_unit_the_example_names_is_shipped_and_writes_where_the_agent_reads() {
    let (_, helpers) = example_units();
    assert_eq!(helpers.len(), 4, "{helpers:?}");
    for (unit, output) in helpers {
        // A template instance (`x@shop.service`) is shipped as its template (`x@.service`).
        let (file, instance) = match unit.split_once('@') {
            Some((base, rest)) => (
                format!("{base}@.service"),
                rest.trim_end_matches(".service").to_string(),
            ),
            None => (unit.clone(), String::new()),
        };
        assert!(systemd_dir().join(&file).is_file(), "{file} is not shipped");
        assert_eq!(
            unit_value(&file, "Type").as_deref(),
            Some("oneshot"),
            "{file}"
        );
        let Some(output) = output else { continue };
        let sink = unit_value(&file, "StandardOutput")
            .filter(|v| v.starts_with("truncate:"))
            .or_else(|| unit_value(&file, "StandardError"))
            .unwrap_or_else(|| panic!("{file} sends its output nowhere"));
        let path = sink
            .trim_start_matches("truncate:")
            .replace("%n", &unit)
            .replace("%i", &instance);
        assert_eq!(Path::new(&path), output, "{file}");
    }
}

#[test]
fn the_agent_unit_runs_unprivileged_with_the_sandbox_the_features_need() {
    let unit = "triad.service";
    assert_eq!(unit_value(unit, "User").as_deref(), Some("triad"));
    assert_eq!(
        unit_value(unit, "CapabilityBoundingSet").as_deref(),
        Some("")
    );
    assert_eq!(unit_value(unit, "NoNewPrivileges").as_deref(), Some("yes"));
    // `strict` made a Gluster mount present at start read-only (issue 16).
    assert_eq!(unit_value(unit, "ProtectSystem").as_deref(), Some("full"));
    assert!(unit_value(unit, "ExecStartPre").is_none());
    assert_eq!(
        unit_value(unit, "ExecStart").as_deref(),
        Some("/usr/bin/triad run --config /etc/triad/triad.toml")
    );
    assert_eq!(
        unit_value(unit, "StartLimitIntervalSec").as_deref(),
        Some("0")
    );
    // The state file HAProxy reloads from is written where the agent may write.
    let config = triad::config::read(&systemd_dir().join("triad.toml.example"))
        .unwrap_or_else(|e| panic!("example: {e}"));
    let state = config
        .haproxy
        .as_ref()
        .and_then(|h| h.state_file.clone())
        .expect("the example keeps a server-state file");
    assert!(
        state.starts_with(&config.node.data_dir),
        "{}",
        state.display()
    );
}

#[test]
fn polkit_rule_allows_the_triad_user_exactly_its_units() {
    let Some(node) = program("/usr/bin/node") else {
        return;
    };
    let (managed, helpers) = example_units();
    // [unit, verb, user, expected]
    let mut cases: Vec<(String, &str, &str, bool)> = Vec::new();
    for unit in &managed {
        for verb in ["start", "stop", "restart"] {
            cases.push((unit.clone(), verb, "triad", true));
            cases.push((unit.clone(), verb, "www-data", false));
        }
        for verb in ["enable", "reload-or-restart", "kill"] {
            cases.push((unit.clone(), verb, "triad", false));
        }
    }
    for (unit, _) in &helpers {
        cases.push((unit.clone(), "start", "triad", true));
        cases.push((unit.clone(), "stop", "triad", false));
    }
    for unit in [
        "ssh.service",
        "triad.service",
        "polkit.service",
        "triad-gluster-heal@x;y.service",
        "triad-gluster-remount@x;y.service",
        "triad-gluster-remount@../x.service.d",
        "emergency.target",
    ] {
        cases.push((unit.to_string(), "start", "triad", false));
    }
    let script = format!(
        "const fs = require('fs'); let rule;\n\
         const polkit = {{ Result: {{ YES: 'yes', NO: 'no', NOT_HANDLED: null }}, \
         addRule: (f) => {{ rule = f; }} }};\n\
         eval(fs.readFileSync({rules:?}, 'utf8'));\n\
         const cases = {cases};\n\
         const got = cases.map(([unit, verb, user]) => rule(\n\
           {{ id: 'org.freedesktop.systemd1.manage-units', lookup: (k) => k === 'unit' ? unit : verb }},\n\
           {{ user }}) === 'yes');\n\
         const other = rule({{ id: 'org.freedesktop.systemd1.set-environment', lookup: () => null }}, \
         {{ user: 'triad' }});\n\
         console.log(JSON.stringify({{ got, other }}));\n",
        rules = systemd_dir().join("triad.rules").display().to_string(),
        cases = serde_json::to_string(
            &cases
                .iter()
                .map(|(u, v, who, _)| [u.as_str(), v, who])
                .collect::<Vec<_>>()
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let out = Command::new(node)
        .args(["-e", &script])
        .output()
        .unwrap_or_else(|e| panic!("node: {e}"));
    assert!(
        out.status.success(),
        "node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    for (i, (unit, verb, user, want)) in cases.iter().enumerate() {
        assert_eq!(
            answer["got"][i].as_bool(),
            Some(*want),
            "{user} {verb} {unit}: allowed should be {want}"
        );
    }
    // Nothing but unit management: setting the manager's environment would be root.
    assert!(answer["other"].is_null(), "{answer}");
}
