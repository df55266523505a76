//! What the decision golden tests share (`golden_redis`, `golden_galera`): the script helpers
//! (`nX` node names, `key=value` words) and the runner over `agent/tests/golden/<dir>/*.txt`.
//!
//! A golden file is a script, a line `----`, and the output the script must produce. With
//! `TRIAD_GOLDEN_UPDATE=1` the outputs are rewritten for review instead of compared.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use triad::ids::NodeId;

/// `n2` (or `2`) as a node id; panics with the word on anything else (test input).
pub fn node(s: &str) -> NodeId {
    NodeId(
        s.trim_start_matches('n')
            .parse()
            .unwrap_or_else(|_| panic!("bad node `{s}`")),
    )
}

/// The `key=value` words of a line.
pub fn kv(parts: &[&str]) -> BTreeMap<String, String> {
    parts
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The golden files of `agent/tests/golden/<dir>`, sorted; at least `min` of them.
pub fn scripts(dir: &str, min: usize) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "expected the golden scripts in {}",
        dir.display()
    );
    files
}

/// A golden file's script and expected output.
pub fn split(text: &str) -> (&str, &str) {
    match text.split_once("\n----\n") {
        Some((s, e)) => (s, e),
        None => (text, ""),
    }
}

/// Every file whose output under `run` differs: (file, expected, got).
pub fn mismatches(
    files: &[PathBuf],
    run: impl Fn(&str) -> String,
) -> Vec<(PathBuf, String, String)> {
    let mut out = vec![];
    for f in files {
        let text = std::fs::read_to_string(f).expect("read");
        let (script, expected) = split(&text);
        let got = run(script);
        if got != expected {
            out.push((f.clone(), expected.to_string(), got));
        }
    }
    out
}

/// The golden test: compares every file (or rewrites them under `TRIAD_GOLDEN_UPDATE=1`).
pub fn check(files: &[PathBuf], run: impl Fn(&str) -> String) {
    if std::env::var_os("TRIAD_GOLDEN_UPDATE").is_some() {
        for f in files {
            let text = std::fs::read_to_string(f).expect("read");
            let (script, _) = split(&text);
            std::fs::write(f, format!("{script}\n----\n{}", run(script))).expect("write");
        }
        return;
    }
    let failures: Vec<String> = mismatches(files, run)
        .into_iter()
        .map(|(f, expected, got)| {
            format!("{}:\n--- expected\n{expected}--- got\n{got}", f.display())
        })
        .collect();
    assert!(
        failures.is_empty(),
        "golden mismatches (rerun with TRIAD_GOLDEN_UPDATE=1 and review the diff):\n{}",
        failures.join("\n")
    );
}
