//! Reloading on SIGHUP (`systemctl reload triad`): what may change without a restart.
//!
//! On SIGHUP the agent reads its config file again, validates it as at start, and compares it
//! with the running one key by key ([`changed_keys`]). Reloadable are the API tokens (the
//! token files' contents, or `api.token_file`, `api.read_token_file`) and the peer certificates (the files'
//! contents, or `tls.ca_file`, `tls.cert_file`, `tls.key_file`). Any other changed key
//! refuses the whole reload, naming the keys that need a restart, and nothing changes. A file
//! that does not load (an empty token, a certificate for another node) is an error, and
//! nothing changes either.
//!
//! New certificates apply to new peer connections; the established ones go on, so a rolling
//! rotation never drops the quorum (see the README). Each outcome is logged and counted in
//! `triad_config_reloads_total{result}` (`ok`, `refused`, `error`).
//!
//! The log filter (`log.level`) is reloadable too; removing it keeps the running filter. So
//! are the probe timings ([`is_reloadable_timing`]: `[probes]`, and the MariaDB, PHP-FPM and
//! Gluster probes' `timing`): every reader takes them from one watch channel (the probe tasks
//! from their next check, the trackers' rise and fall, `GET /galera/synced`'s freshness).
//!
//! Caveats: `node.data_dir` is not compared (`--data-dir` may override it). `redis.timing`
//! needs a restart: the Redis failover decision takes the probe's interval at start.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Validated};
use crate::metrics::Metrics;
use crate::raft::transport::Transport;

/// The API's bearer token, replaceable by a reload.
pub type TokenCell = Arc<RwLock<Option<Arc<str>>>>;

/// Keys a reload may change.
pub const RELOADABLE: [&str; 6] = [
    "log.level",
    "api.token_file",
    "api.read_token_file",
    "tls.ca_file",
    "tls.cert_file",
    "tls.key_file",
];

/// The dotted keys whose values differ between two configs, sorted (`node.data_dir` aside).
/// Pure.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["(the config does not serialise)".into()];
    };
    let mut out = BTreeSet::new();
    walk("", &a, &b, &mut out);
    out.remove("node.data_dir");
    out.into_iter().collect()
}

fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut BTreeSet<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => {
            out.insert(path.to_string());
        }
        _ => {}
    }
}

/// What a reload replaces.
#[derive(Clone)]
pub struct Targets {
    /// The API's admin token.
    pub token: TokenCell,
    /// The API's read token.
    pub read_token: TokenCell,
    /// The peer transport (its certificates).
    pub transport: Transport,
    /// For `triad_config_reloads_total`.
    pub metrics: Metrics,
    /// The probes' timings (probe tasks, trackers and the API read them); `None`: not
    /// reloadable here.
    pub probe_timings: Option<tokio::sync::watch::Sender<crate::probe::runner::ProbeTimings>>,
}

/// Whether `key` is a probe timing a reload may change: `[probes]` and the MariaDB, PHP-FPM
/// and Gluster probes' own `timing` tables. Not the Redis probe's: the failover decision
/// takes its interval at start.
pub fn is_reloadable_timing(key: &str) -> bool {
    [
        "probes.",
        "mariadb.timing.",
        "phpfpm.timing.",
        "gluster.timing.",
        "gluster.mount_timing.",
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Keys that need a restart changed.
    #[error(
        "reload refused, nothing changed: {} changed, which needs a restart (systemctl restart \
         triad); a reload applies only {}",
        .0.join(", "),
        RELOADABLE.join(", ")
    )]
    NeedsRestart(Vec<String>),
    /// The new config or a file it names does not load.
    #[error("reload failed, nothing changed: {0}")]
    Invalid(#[from] config::ConfigError),
}

/// Everything a reload would apply, read and checked before anything is replaced.
pub struct Prepared {
    /// The new config.
    pub config: Validated,
    /// The admin token.
    pub token: Option<Arc<str>>,
    /// The read token.
    pub read_token: Option<Arc<str>>,
    /// The peer TLS setup (`None` with plaintext peers).
    pub tls: Option<crate::tls::PeerTls>,
    /// The probes' new timings, when a timing key changed.
    pub timings: Option<crate::probe::runner::ProbeTimings>,
}

/// Reads `file` and checks it against the `running` config: a changed key that needs a
/// restart refuses it, and every file it names is read. Changes nothing.
pub fn prepare(file: &std::path::Path, running: &Validated) -> Result<Prepared, ReloadError> {
    let new = config::load(file, Some(&running.config.node.data_dir))?;
    let changed = changed_keys(&running.config, &new.config);
    let restart: Vec<String> = changed
        .iter()
        .filter(|k| !RELOADABLE.contains(&k.as_str()) && !is_reloadable_timing(k))
        .cloned()
        .collect();
    if !restart.is_empty() {
        return Err(ReloadError::NeedsRestart(restart));
    }
    let token = read_token(new.config.api.token_file.as_deref())?;
    let read_token = read_token(new.config.api.read_token_file.as_deref())?;
    let tls = config::load_tls(&new.file, &new.config)?;
    let timings = if changed.iter().any(|k| is_reloadable_timing(k)) {
        let probes = crate::probe::build::from_config(&new)?;
        Some(Arc::new(
            probes
                .iter()
                .map(|p| (p.id().clone(), p.timing()))
                .collect(),
        ))
    } else {
        None
    };
    Ok(Prepared {
        config: new,
        token,
        read_token,
        tls,
        timings,
    })
}

/// Reloads `file` against the `running` config: on success, the new config and what was
/// applied (for the log).
pub fn reload(
    file: &std::path::Path,
    running: &Validated,
    targets: &Targets,
) -> Result<(Validated, String), ReloadError> {
    // Everything is read before anything is replaced.
    let p = prepare(file, running)?;
    let mut applied = vec![match (&p.token, &p.read_token) {
        (Some(_), Some(_)) => "API tokens (admin, read)",
        (Some(_), None) => "API token (admin)",
        (None, Some(_)) => "API token (read)",
        (None, None) => "no API tokens",
    }];
    if let Ok(mut t) = targets.token.write() {
        *t = p.token;
    }
    if let Ok(mut t) = targets.read_token.write() {
        *t = p.read_token;
    }
    if let Some(tls) = p.tls {
        targets.transport.set_tls(Arc::new(tls));
        applied.push("peer certificates (for new connections)");
    }
    if let Some(timings) = p.timings {
        if let Some(tx) = &targets.probe_timings {
            tx.send_replace(timings);
            applied.push("probe timings (from each probe's next check)");
        }
    }
    if let Some(level) = &p.config.config.log.level {
        // Validated with the config; a process without a subscriber (tests) has none to set.
        if crate::logging::set_level(level).is_ok() {
            applied.push("log level");
        }
    }
    Ok((p.config, applied.join(", ")))
}

/// A token file's token (`None` without a file).
pub fn read_token(file: Option<&std::path::Path>) -> Result<Option<Arc<str>>, config::ConfigError> {
    file.map(|f| config::read_token(f).map(Arc::<str>::from))
        .transpose()
}

/// Reloads on every SIGHUP until `shutdown`. The handler is installed at once, so a SIGHUP
/// never ends the agent (the default action would).
pub fn spawn(
    file: PathBuf,
    running: Arc<Validated>,
    targets: Targets,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%err, "cannot handle SIGHUP: reloads are not available");
            return;
        }
    };
    tokio::spawn(async move {
        let mut current = (*running).clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                s = hup.recv() => if s.is_none() { return },
            }
            let count = |result: &str| {
                targets
                    .metrics
                    .config_reloads
                    .with_label_values(&[result])
                    .inc();
            };
            match reload(&file, &current, &targets) {
                Ok((new, applied)) => {
                    tracing::info!(file = %file.display(), %applied, "config reloaded");
                    count("ok");
                    current = new;
                }
                Err(e @ ReloadError::NeedsRestart(_)) => {
                    tracing::error!(file = %file.display(), error = %e, "config reload refused");
                    count("refused");
                }
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "config reload failed");
                    count("error");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Config {
        let text = format!(
            "[node]\nid = 1\ndata_dir = \"/tmp/x\"\n[[peers]]\nid = 1\n\
             raft_addr = \"127.0.0.1:7201\"\napi_addr = \"127.0.0.1:7101\"\n\
             [api]\nlisten = \"127.0.0.1:7101\"\n{extra}"
        );
        config::parse(std::path::Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A reload of probe timings: `[probes]` and the PHP-FPM probe's own table reach the
    /// probes' new timings; the Redis probe's table needs a restart and is named.
    #[test]
    fn probe_timings_reload_but_not_the_redis_probes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("triad.toml");
        let base = "[node]\nid = 1\ndata_dir = \"/tmp/x\"\n[[peers]]\nid = 1\n\
                    raft_addr = \"127.0.0.1:7201\"\napi_addr = \"127.0.0.1:7101\"\n\
                    redis_addr = \"127.0.0.1:6379\"\n\
                    [api]\nlisten = \"127.0.0.1:7101\"\n[tls]\ninsecure_plaintext_peers = true\n\
                    [redis]\n[phpfpm]\naddress = \"127.0.0.1:9000\"\n";
        std::fs::write(&file, base).expect("write");
        let running = config::load(&file, None).expect("running config");
        let phpfpm = |t: &crate::probe::runner::ProbeTimings| {
            t.iter()
                .find(|(id, _)| id.service == crate::observation::Service::Phpfpm)
                .map(|(_, t)| *t)
                .expect("a PHP-FPM probe")
        };
        std::fs::write(
            &file,
            format!("{base}[phpfpm.timing]\ninterval = \"3s\"\n[probes]\nfall = 4\n"),
        )
        .expect("write");
        let p = prepare(&file, &running).expect("a timing reload");
        let timings = p.timings.expect("new timings");
        let t = phpfpm(&timings);
        assert_eq!((t.interval, t.fall), (std::time::Duration::from_secs(3), 4));
        std::fs::write(&file, format!("{base}[redis.timing]\nrise = 3\n")).expect("write");
        match prepare(&file, &running) {
            Err(ReloadError::NeedsRestart(keys)) => {
                assert_eq!(keys, ["redis.timing.rise"]);
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a Redis probe timing was reloaded"),
        }
        std::fs::write(&file, base).expect("write");
        assert!(prepare(&file, &running)
            .expect("nothing changed")
            .timings
            .is_none());
    }

    /// Changed keys, dotted and sorted, table-driven.
    #[test]
    fn changed_keys_are_named() {
        let base = parse("");
        let cases: [(&str, &[&str]); 5] = [
            ("", &[]),
            ("[tls]\nca_file = \"/x/ca.crt\"\n", &["tls.ca_file"]),
            (
                "[raft]\nelection_ticks = 12\n[failover]\nlease = \"3s\"\n",
                &["failover.lease", "raft.election_ticks"],
            ),
            (
                "[tls]\ninsecure_plaintext_peers = true\n",
                &["tls.insecure_plaintext_peers"],
            ),
            ("[redis]\n", &["redis"]),
        ];
        for (extra, want) in cases {
            let mut new = parse(extra);
            if extra.contains("[redis]") {
                // A new section shows as its own key.
                assert!(new.redis.is_some());
            }
            new.node.data_dir = "/elsewhere".into();
            assert_eq!(changed_keys(&base, &new), want, "{extra}");
        }
    }
}
