//! The shipped monitoring assets in `systemd/monitoring/`:
//! - the Prometheus alert rules (`triad-alerts.yml`): every metric they name is one the agent
//!   exports, `promtool check rules` accepts them, and `promtool test rules` runs each
//!   alert's unit test (`triad-alerts.test.yml`: firing, and not firing);
//! - the Grafana dashboard (`triad-dashboard.json`): it parses, has the sections an operator
//!   looks for, names only exported metrics, and every query is PromQL that promtool accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/monitoring")
}

fn rules() -> String {
    let file = monitoring().join("triad-alerts.yml");
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn alert_rules_name_exported_metrics() {
    let rules = rules();
    let named = exported_only(&rules, "the alert rules");
    assert!(named >= 10, "few triad_ metrics in the rules:\n{rules}");
    // The alerts the operator installs on day one (issue 16), each present.
    for alert in [
        "TriadAgentDown",
        "TriadNoLeader",
        "TriadLeaseLost",
        "TriadRedisMasterChanged",
        "TriadGaleraNodeNotSynced",
        "TriadNoVerifiedBackup",
        "TriadProbeFailing",
        "TriadReconcileErrors",
        "TriadGlusterSplitBrain",
        "TriadHookFailing",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}\n")),
            "{alert} missing"
        );
    }
}

/// A metrics registry with a child in every labelled family the assets use, rendered.
fn exported() -> String {
    let metrics = triad::metrics::Metrics::new("n1").unwrap_or_else(|e| panic!("{e}"));
    metrics
        .backup_last_success
        .with_label_values(&["db"])
        .set(1);
    metrics.backup_runs.with_label_values(&["verified"]).inc();
    metrics.galera_local_state.with_label_values(&["n1"]).set(4);
    metrics
        .redis_failovers
        .with_label_values(&["automatic"])
        .inc();
    metrics
        .probe_failures
        .with_label_values(&["redis", "refused"])
        .inc();
    metrics.reconcile_errors.with_label_values(&["redis"]).inc();
    metrics.peer_refused.with_label_values(&["plaintext"]).inc();
    metrics
        .service_up
        .with_label_values(&["n1", "redis", ""])
        .set(1);
    metrics.redis_is_master.with_label_values(&["n1"]).set(1);
    metrics
        .galera_bootstraps
        .with_label_values(&["automatic"])
        .inc();
    metrics
        .redis_failover_duration
        .with_label_values(&["automatic"])
        .observe(0.1);
    metrics.peer_rtt.with_label_values(&["n2"]).observe(0.001);
    metrics
        .gluster_split_brain
        .with_label_values(&["n1"])
        .set(0);
    metrics
        .hooks
        .with_label_values(&["post", "failover", "failed"])
        .inc();
    metrics.render()
}

/// Asserts every `triad_` name in `text` is exported; returns how many there were.
fn exported_only(text: &str, what: &str) -> usize {
    let exported = exported();
    let mut named = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("triad_") {
            named += 1;
            assert!(
                exported.contains(&format!("\n{word}"))
                    || exported.contains(&format!("\n{word}{{")),
                "{what} name {word}, which the agent does not export"
            );
        }
    }
    named
}

fn promtool(args: &[&str]) {
    promtool_in(&monitoring(), args);
}

fn promtool_in(dir: &Path, args: &[&str]) {
    let promtool = Path::new("/usr/bin/promtool");
    if !promtool.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "/usr/bin/promtool is not installed (tests/install-packages.sh)"
        );
        eprintln!("SKIPPED: /usr/bin/promtool is not installed (tests/install-packages.sh)");
        return;
    }
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    promtool(&["check", "rules", "triad-alerts.yml"]);
}

#[test]
fn every_alert_passes_its_promtool_unit_test() {
    promtool(&["test", "rules", "triad-alerts.test.yml"]);
}

fn dashboard() -> serde_json::Value {
    let file = monitoring().join("triad-dashboard.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every query of the dashboard, with Grafana's variables replaced by values.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$job", "triad");
            out.push((p["title"].as_str().unwrap_or_default().to_string(), expr));
        }
    }
    out
}

#[test]
fn dashboard_has_the_sections_and_exported_metrics() {
    let d = dashboard();
    assert_eq!(d["uid"], "triad-cluster");
    let panels = d["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("no panels"));
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Cluster overview",
        "Leader and term",
        "Services per node",
        "Failover history",
        "Lease state",
        "Backups",
    ] {
        assert!(rows.contains(&want), "no `{want}` row: {rows:?}");
    }
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a panel without an id: {p}"));
        assert!(ids.insert(id), "panel id {id} twice");
        if p["type"] != "row" {
            let targets = p["targets"].as_array().map_or(0, Vec::len);
            assert!(targets > 0, "panel `{}` has no query", p["title"]);
        }
    }
    let queries = dashboard_queries(&d);
    let all: String = queries.iter().map(|(_, q)| format!("{q}\n")).collect();
    // Histogram queries name the series' `_bucket`.
    let named = exported_only(&all.replace("_bucket", ""), "the dashboard's queries");
    assert!(named >= 15, "few triad_ metrics in the dashboard");
}

#[test]
fn dashboard_queries_are_promql() {
    let d = dashboard();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, q)) in dashboard_queries(&d).into_iter().enumerate() {
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&q).unwrap_or_default()
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap_or_else(|e| panic!("{e}"));
    promtool_in(dir.path(), &["check", "rules", "dashboard.yml"]);
}
