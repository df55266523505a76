//! The web tier on the lab (issue 17): each HAProxy's `be_php` servers as Triad's web rotation
//! leaves them, the shop page polled through every node's HAProxy, and the remediation entries
//! of the agents' history. Shared by the lab tests and the web benchmark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::{agents_leader, query, Lab, LabSpec};

/// Each node's HAProxy's word (`UP`, `DOWN`, `MAINT`, `DRAIN`) for `be_php/php{p}`, by the
/// HAProxy's node.
pub fn php_words(lab: &Lab, p: u64) -> Result<BTreeMap<u64, &'static str>, String> {
    let mut out = BTreeMap::new();
    for n in lab.spec().nodes() {
        let servers = lab.haproxy_servers(n).map_err(|e| format!("{e:#}"))?;
        let s = servers
            .iter()
            .find(|s| s.backend == "be_php" && s.server == format!("php{p}"))
            .ok_or_else(|| format!("haproxy n{n} has no be_php/php{p}"))?;
        out.insert(n, s.word());
    }
    Ok(out)
}

/// Waits until every HAProxy shows `be_php/php{p}` as `word` (`MAINT`: drained by Triad; the
/// servers' own checks only ever make it `DOWN`); how long that took.
pub fn wait_php_everywhere(lab: &Lab, p: u64, word: &str, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    lab.wait_for(
        &format!("every HAProxy to show be_php/php{p} {word}"),
        within,
        || {
            let words = php_words(lab, p)?;
            if words.values().all(|w| *w == word) {
                Ok(())
            } else {
                Err(format!("{words:?}"))
            }
        },
    )?;
    Ok(started.elapsed())
}

/// What the page poller saw through one node's HAProxy.
#[derive(Clone, Debug, Default)]
pub struct Pages {
    /// Pages answered 200.
    pub ok: u32,
    /// Pages that failed.
    pub failed: u32,
    /// The first failure.
    pub first_failure: Option<String>,
}

/// Polls the shop page through every node's HAProxy until `stop` (at most 3 minutes).
pub fn poll_pages(
    spec: LabSpec,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<u64, Pages>> {
    std::thread::spawn(move || {
        let mut out: BTreeMap<u64, Pages> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for n in spec.nodes() {
                let e = out.entry(n).or_default();
                match query::http_get_in(&spec, n, "http://127.0.0.1:8080/", Duration::from_secs(3))
                {
                    Ok(r) if r.status == 200 => e.ok += 1,
                    Ok(r) => {
                        e.failed += 1;
                        e.first_failure
                            .get_or_insert(format!("{} {}", r.status, r.body.trim()));
                    }
                    Err(err) => {
                        e.failed += 1;
                        e.first_failure.get_or_insert(format!("{err:#}"));
                    }
                }
            }
        }
        out
    })
}

/// The remediation entries of the leader's history, oldest first: (index, details).
pub fn remedy_history(lab: &Lab) -> Result<Vec<(u64, String)>> {
    let (leader, _) = agents_leader(lab.spec()).map_err(|e| anyhow!(e))?;
    let status = lab.agent_status(leader)?;
    let mut h: Vec<(u64, String)> = status
        .history
        .iter()
        .filter(|h| h.kind == "remedy")
        .map(|h| (h.index.0, h.details.clone()))
        .collect();
    h.sort();
    Ok(h)
}
