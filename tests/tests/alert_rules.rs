//! The shipped Prometheus alert rules (`systemd/monitoring/triad-alerts.yml`): every metric
//! they name is one the agent exports, `promtool check rules` accepts them, and `promtool test
//! rules` runs each alert's unit test (`triad-alerts.test.yml`: firing, and not firing).

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
    let metrics = triad::metrics::Metrics::new("n1").unwrap_or_else(|e| panic!("{e}"));
    // Labelled series appear once they have a child; give each family the rules use one.
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
    metrics
        .peer_refused
        .with_label_values(&["plaintext"])
        .inc();
    let text = metrics.render();
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("triad_") {
            named += 1;
            assert!(
                text.contains(&format!("\n{word}")) || text.contains(&format!("\n{word}{{")),
                "the alert rules name {word}, which the agent does not export"
            );
        }
    }
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
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert} missing");
    }
}

fn promtool(args: &[&str]) {
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
        .current_dir(monitoring())
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
