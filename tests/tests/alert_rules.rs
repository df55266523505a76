//! The example Prometheus alert rules in README.md ("no verified backup in two windows"):
//! `promtool check rules` accepts them, and every metric they name is one the agent exports.

use std::path::Path;
use std::process::Command;

/// The YAML between the README's `<!-- alert-rules -->` markers.
fn rules() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap_or_else(|e| panic!("README.md: {e}"));
    let start = readme
        .find("<!-- alert-rules -->")
        .unwrap_or_else(|| panic!("README.md has no <!-- alert-rules --> block"));
    let end = readme
        .find("<!-- /alert-rules -->")
        .unwrap_or_else(|| panic!("README.md has no <!-- /alert-rules --> end"));
    readme[start..end]
        .lines()
        .skip_while(|l| !l.starts_with("```yaml"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn readme_alert_rules_name_exported_metrics() {
    let rules = rules();
    let metrics = triad::metrics::Metrics::new("n1").unwrap_or_else(|e| panic!("{e}"));
    metrics
        .backup_last_success
        .with_label_values(&["db"])
        .set(1);
    metrics.backup_runs.with_label_values(&["verified"]).inc();
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
    assert!(named >= 2, "no triad_ metric in the rules:\n{rules}");
}

#[test]
fn readme_alert_rules_pass_promtool() {
    let promtool = Path::new("/usr/bin/promtool");
    if !promtool.is_file() {
        eprintln!("SKIPPED: /usr/bin/promtool is not installed (tests/install-packages.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("triad-backup.rules.yml");
    std::fs::write(&file, rules()).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
