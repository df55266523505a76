//! The `triad` command line: the daemon (`run`), config checking, and operator commands that
//! talk to an agent's HTTP API.
//!
//! Exit codes: 0 success; 1 the agent refused the request (its message is printed);
//! 64 bad usage or configuration; 69 the agent's API could not be reached; 70 the daemon
//! stopped on a fatal error.
//!
//! Operator commands find the API from `--api URL`, else `TRIAD_API`, else the `api.listen` of
//! the config file (`--config` or `TRIAD_CONFIG`; else `/etc/triad/triad.toml` when it
//! exists), else `http://127.0.0.1:7100`. A config file that was named, or the default one
//! that exists, must read and parse: it is never skipped silently. Every command accepts
//! `--json` for machine-readable output.

mod backup;
mod cert;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::api::StatusBody;
use crate::config;

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 64;
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_SOFTWARE: u8 = 70;
const DEFAULT_CONFIG: &str = "/etc/triad/triad.toml";
/// The API's address when nothing else says (the port of the example config).
const DEFAULT_API: &str = "http://127.0.0.1:7100";

#[derive(Parser, Debug)]
#[command(
    name = "triad",
    version,
    about = "Triad: keeps a three-node web-shop cluster alive"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent (normally from systemd).
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `node.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a configuration file and explain what an agent with it will do: exit 0 when
    /// valid, 64 with the problem otherwise.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
        /// Print the explanation as one JSON object (`{"valid": false, "error": ...}` when
        /// invalid, with the error on stderr too).
        #[arg(long)]
        json: bool,
    },
    /// Show the cluster as one agent sees it, with every member's own role.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the raw status JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turn maintenance mode on or off (no automatic actions while on).
    Maintenance {
        /// `on` or `off`.
        state: OnOff,
        /// Why (recorded in the audit history).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
        /// File with the API bearer token (default: the config's api.token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Backups: list, take one now, show one, restore a component into a directory.
    Backup {
        #[command(subcommand)]
        cmd: backup::BackupCmd,
    },
    /// Certificates for mutual TLS between agents: create the cluster CA, issue a node's.
    Cert {
        #[command(subcommand)]
        cmd: cert::CertCmd,
    },
    /// Galera recovery: status, and the bootstrap after a full outage.
    Galera {
        #[command(subcommand)]
        cmd: GaleraCmd,
    },
    /// Forced failover of the Redis master to the node you name, for when the cluster will
    /// not do it itself (automatic failover off, maintenance, hold-down, or a dead master it
    /// still waits on). Refused unless the old master is fenced (it is, first, when it still
    /// answers) or down as seen from a majority of agents. Writes the old master had not yet
    /// replicated to the target are lost: prefer `switchover` while the master is healthy.
    Failover {
        /// What to fail over (only `redis`).
        service: FailoverService,
        /// The node to promote.
        #[arg(long)]
        to: u64,
        /// Why (recorded in the audit history).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: Target,
        /// File with the API bearer token (default: the config's api.token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover: Redis (pause writes on the master, wait for the target to catch
    /// up, commit the change, resume) or the Galera writer (commit, drain the old writer,
    /// the new one takes writes once it has applied everything). No acknowledged write is lost.
    Switchover {
        /// What to switch over (`redis` or `galera`).
        service: SwitchService,
        /// Target node id (default: the best-ranked replica).
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        target: Target,
        /// File with the API bearer token (default: the config's api.token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GaleraCmd {
    /// Per node: the state, Primary or not, size, UUID, seqno, safe flag, the recovered
    /// position; the committed outage; and what Triad would do next and why.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the raw JSON (`GET /v1/galera`).
        #[arg(long)]
        json: bool,
    },
    /// Bootstrap after a full outage: `--dry-run` shows the choice and every node's evidence
    /// and changes nothing; `--node N --accept-data-loss --reason R` is the operator's
    /// override when a node is missing (recorded in the history with who and why).
    Bootstrap {
        /// Only show what would be chosen, and why.
        #[arg(long, conflicts_with_all = ["node", "accept_data_loss"])]
        dry_run: bool,
        /// The node to bootstrap.
        #[arg(long, required_unless_present = "dry_run")]
        node: Option<u64>,
        /// Accept that commits held only by a missing or silent node are lost.
        #[arg(long)]
        accept_data_loss: bool,
        /// Why (recorded in the history).
        #[arg(long, required_unless_present = "dry_run")]
        reason: Option<String>,
        /// Who asks (recorded in the history). Default: $USER@host as the CLI sees it.
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        target: Target,
        /// File with the API bearer token (default: the config's api.token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailoverService {
    /// The Redis master.
    Redis,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SwitchService {
    /// The Redis master.
    Redis,
    /// The Galera writer every HAProxy routes MySQL writes to.
    Galera,
}

#[derive(clap::Args, Debug)]
struct Target {
    /// Agent API base URL, e.g. http://127.0.0.1:7101.
    #[arg(long, env = "TRIAD_API")]
    api: Option<String>,
    /// Config file to find the API address and token file in (default:
    /// /etc/triad/triad.toml when it exists).
    #[arg(long, env = "TRIAD_CONFIG")]
    config: Option<PathBuf>,
    /// File with a token that opens reads (the read or the admin token; default: the config's
    /// api.read_token_file, else its api.token_file).
    #[arg(long, env = "TRIAD_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for an https API (default: the config's
    /// api.tls_ca_file).
    #[arg(long, env = "TRIAD_CA_FILE")]
    ca_file: Option<PathBuf>,
}

impl Target {
    /// Lets a command's admin token (`--token-file`) also open its reads, unless a read
    /// token was given.
    fn reads_with(&mut self, token_file: &Option<PathBuf>) {
        if self.read_token_file.is_none() {
            self.read_token_file = token_file.clone();
        }
    }

    /// The config file named, or the default.
    fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { file, json } => check_config(&file, json),
        Cmd::Run {
            config,
            data_dir,
            log_format,
        } => run(&config, data_dir.as_deref(), log_format),
        Cmd::Status { target, json } => client(async move { status(&target, json).await }),
        Cmd::Backup { cmd } => client(backup::dispatch(cmd)),
        Cmd::Cert { cmd } => cert::run(cmd),
        Cmd::Maintenance {
            state,
            reason,
            target,
            token_file,
            json,
        } => client(async move {
            maintenance(
                &target,
                matches!(state, OnOff::On),
                &reason,
                token_file,
                json,
            )
            .await
        }),
        Cmd::Failover {
            service: FailoverService::Redis,
            to,
            reason,
            target,
            token_file,
            json,
        } => client(async move { failover(&target, to, &reason, token_file, json).await }),
        Cmd::Switchover {
            service: SwitchService::Redis,
            to,
            target,
            token_file,
            json,
        } => client(async move { switchover(&target, to, token_file, json).await }),
        Cmd::Switchover {
            service: SwitchService::Galera,
            to,
            target,
            token_file,
            json,
        } => client(async move { galera_switchover(&target, to, token_file, json).await }),
        Cmd::Galera {
            cmd: GaleraCmd::Status { target, json },
        } => client(async move { galera_status(&target, json, false).await }),
        Cmd::Galera {
            cmd:
                GaleraCmd::Bootstrap {
                    dry_run: true,
                    mut target,
                    token_file,
                    json,
                    ..
                },
        } => client(async move {
            // The admin token also opens the read a dry run is.
            target.reads_with(&token_file);
            galera_status(&target, json, true).await
        }),
        Cmd::Galera {
            cmd:
                GaleraCmd::Bootstrap {
                    node,
                    accept_data_loss,
                    reason,
                    by,
                    target,
                    token_file,
                    json,
                    ..
                },
        } => client(async move {
            galera_bootstrap(
                &target,
                node.unwrap_or_default(),
                accept_data_loss,
                reason.as_deref().unwrap_or_default(),
                by,
                token_file,
                json,
            )
            .await
        }),
    }
}

/// `triad check-config`: the summary line, then what the agent will do (indented), or the
/// same as JSON.
fn check_config(file: &Path, json: bool) -> ExitCode {
    match config::load(file, None) {
        Ok(v) => {
            let explained = config::Explanation::of(&v);
            if json {
                match serde_json::to_string_pretty(&explained) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("{}: cannot encode the explanation: {e}", file.display());
                        return ExitCode::from(EXIT_SOFTWARE);
                    }
                }
            } else {
                println!("{}", explained.summary());
                for line in explained.lines() {
                    println!("  {line}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            if json {
                let body = serde_json::json!({
                    "file": file.display().to_string(),
                    "valid": false,
                    "error": e.to_string(),
                });
                println!("{body}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    let format = match format {
        LogFormat::Text => crate::logging::Format::Text,
        LogFormat::Json => crate::logging::Format::Json,
    };
    crate::logging::init(format, level);
}

fn run(path: &Path, data_dir: Option<&Path>, log_format: LogFormat) -> ExitCode {
    let cfg = match config::load(path, data_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(log_format, cfg.config.log.level.as_deref());
    // One thread runs every task (the event loop, the transport, probes, reconcilers, the
    // API): the agent's work is many tiny events, and handing them between worker threads
    // cost a third more wake-ups than the work itself. Blocking work stays off it
    // (`spawn_blocking`: the gluster CLI, mount checks, state-file writes); see `node` for
    // what a slow storage write holds up.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, shutting down");
            signals.cancel();
        });
        let grace = shutdown.clone();
        let node = crate::node::run(cfg, shutdown);
        tokio::pin!(node);
        let result = tokio::select! {
            r = &mut node => r,
            _ = async { grace.cancelled().await; tokio::time::sleep(Duration::from_secs(10)).await } => {
                tracing::error!("shutdown did not finish within 10s; exiting");
                return ExitCode::from(EXIT_SOFTWARE);
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(crate::node::NodeError::Config(e)) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(e) => {
                eprintln!("triad: {e}");
                ExitCode::from(EXIT_SOFTWARE)
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A failed client command: what to print and the exit code.
struct Failure {
    code: u8,
    message: String,
}

fn client<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The config file: the one named, or the default when it exists (`None` when not). One that
/// cannot be read or parsed is an error, never skipped.
fn config_file(target: &Target) -> Result<Option<config::Config>, Failure> {
    let path = target.config_path();
    if target.config.is_none() && !path.exists() {
        return Ok(None);
    }
    config::read(&path).map(Some).map_err(|e| Failure {
        code: EXIT_USAGE,
        message: format!(
            "{e}\n(the CLI reads the API address and token file from it; pass --api URL and \
             --token-file FILE to do without)"
        ),
    })
}

fn base_url(target: &Target) -> Result<String, Failure> {
    let raw = match &target.api {
        Some(a) => a.clone(),
        None => match config_file(target)? {
            Some(c) => {
                let listen = c.api.listen.replace("0.0.0.0", "127.0.0.1");
                if c.api.tls_cert_file.is_some() {
                    format!("https://{listen}")
                } else {
                    listen
                }
            }
            None => DEFAULT_API.to_string(),
        },
    };
    let url = if raw.contains("://") {
        raw
    } else {
        format!("http://{raw}")
    };
    Ok(url.trim_end_matches('/').to_string())
}

fn http(target: &Target) -> Result<reqwest::Client, Failure> {
    client_with(target, Duration::from_secs(10))
}

/// An HTTP client with this timeout that trusts the CA for an https API: `--ca-file`, else
/// the config's `api.tls_ca_file` (none: no https API can be verified).
fn client_with(target: &Target, timeout: Duration) -> Result<reqwest::Client, Failure> {
    let ca = match &target.ca_file {
        Some(f) => Some(f.clone()),
        None => config_file(target)?.and_then(|c| c.api.tls_ca_file),
    };
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2));
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca).map_err(|e| Failure {
            code: EXIT_USAGE,
            message: format!("cannot read the CA file {}: {e}", ca.display()),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Failure {
            code: EXIT_USAGE,
            message: format!("{}: not PEM certificates ({e})", ca.display()),
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| Failure {
        code: EXIT_SOFTWARE,
        message: format!("cannot build HTTP client: {e}"),
    })
}

fn unreachable(url: &str, e: &reqwest::Error) -> Failure {
    Failure {
        code: EXIT_UNAVAILABLE,
        message: format!(
            "cannot reach the triad API at {url}: {e}\n\
             is the agent running? pass --api URL or set TRIAD_API to point at another node"
        ),
    }
}

/// The token for read requests: `--read-token-file`, else the config's
/// `api.read_token_file`, else its `api.token_file` (`None` without any: the agent may have
/// `api.open_reads`). A file that is named but cannot be read is an error.
fn read_token_for(target: &Target) -> Result<Option<String>, Failure> {
    let file = match &target.read_token_file {
        Some(f) => f.clone(),
        None => {
            let Some(c) = config_file(target)? else {
                return Ok(None);
            };
            let Some(file) = c.api.read_token_file.or(c.api.token_file) else {
                return Ok(None);
            };
            file
        }
    };
    config::read_token(&file).map(Some).map_err(|e| Failure {
        code: EXIT_USAGE,
        message: format!(
            "{e}\n(reads send the read token; run as the agent's user, or pass \
             --read-token-file FILE)"
        ),
    })
}

/// A GET with the read token, when there is one.
fn get_with(client: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let rb = client.get(url);
    match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

async fn fetch_status(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> Result<StatusBody, Failure> {
    let url = format!("{base}/v1/status");
    let resp = get_with(client, &url, token)
        .send()
        .await
        .map_err(|e| unreachable(&url, &e))?;
    if !resp.status().is_success() {
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("{url} answered {}", resp.status()),
        });
    }
    resp.json::<StatusBody>().await.map_err(|e| Failure {
        code: EXIT_SOFTWARE,
        message: format!("{url} answered something that is not a triad status: {e}"),
    })
}

async fn status(target: &Target, json: bool) -> Result<(), Failure> {
    let base = base_url(target)?;
    let token = read_token_for(target)?;
    let token = token.as_deref();
    let client = http(target)?;
    if json {
        let url = format!("{base}/v1/status");
        let resp = get_with(&client, &url, token)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let code = resp.status();
        let text = resp.text().await.map_err(|e| unreachable(&url, &e))?;
        println!("{text}");
        if !code.is_success() {
            return Err(Failure {
                code: EXIT_REFUSED,
                message: format!("{url} answered {code}"),
            });
        }
        return Ok(());
    }
    let s = fetch_status(&client, &base, token).await?;
    // Ask every other member for its own role; an unreachable one shows as such.
    let quick = client_with(target, Duration::from_millis(1500))?;
    // The other agents speak what this one speaks.
    let scheme = base.split_once("://").map_or("http", |(s, _)| s);
    let others = futures::future::join_all(s.members.iter().map(|m| {
        let quick = quick.clone();
        let is_self = m.is_self;
        let url = format!("{scheme}://{}", m.api_addr);
        async move {
            if is_self {
                None
            } else {
                Some(fetch_status(&quick, &url, token).await.ok())
            }
        }
    }))
    .await;
    print!("{}", render_status(&s, &others));
    Ok(())
}

fn render_status(s: &StatusBody, others: &[Option<Option<StatusBody>>]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let leader = s
        .leader_id
        .map_or_else(|| "none".to_string(), |l| l.to_string());
    let _ = writeln!(
        out,
        "cluster {}  leader {}  term {}  commit {}  (as seen by {})",
        s.cluster_name, leader, s.term, s.commit_index, s.node_id
    );
    let m = &s.cluster.maintenance;
    if m.enabled {
        let _ = writeln!(out, "maintenance: ON  ({}; by {})", m.reason, m.by);
    } else {
        let _ = writeln!(out, "maintenance: off");
    }
    let _ = writeln!(out, "verdict: {}", s.verdict);
    let _ = writeln!(
        out,
        "\n{:<5} {:<10} {:<6} {:<10} {:<13} {:<8} {:<22} API",
        "ID", "ROLE", "TERM", "REACHABLE", "LAST CONTACT", "RTT", "RAFT"
    );
    for (i, mem) in s.members.iter().enumerate() {
        let (role, term) = if mem.is_self {
            (s.role.clone(), s.term.to_string())
        } else {
            match others.get(i).and_then(|o| o.as_ref()) {
                Some(Some(o)) => (o.role.clone(), o.term.to_string()),
                _ => ("no api".to_string(), "-".to_string()),
            }
        };
        let marker = if mem.is_leader { "*" } else { " " };
        let reach = if mem.is_self {
            "self"
        } else if mem.reachable {
            "yes"
        } else {
            "NO"
        };
        let contact = match (mem.is_self, mem.last_contact_ms) {
            (true, _) => "-".to_string(),
            (false, Some(ms)) => format!("{ms} ms ago"),
            (false, None) => "never".to_string(),
        };
        let rtt = mem
            .rtt_ms
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}ms"));
        let _ = writeln!(
            out,
            "{:<5} {:<10} {:<6} {:<10} {:<13} {:<8} {:<22} {}",
            format!("{}{marker}", mem.id),
            role,
            term,
            reach,
            contact,
            rtt,
            mem.raft_addr,
            mem.api_addr
        );
    }
    for mem in s.members.iter() {
        if let Some(why) = &mem.refused {
            let _ = writeln!(out, "  refused {}: {why}", mem.id);
        }
    }
    if !s.nodes.is_empty() {
        let name_of = |svc: &crate::api::ServiceStatus| {
            if svc.target.is_empty() {
                svc.service.clone()
            } else {
                format!("{}:{}", svc.service, svc.target)
            }
        };
        let w = s
            .nodes
            .values()
            .flatten()
            .map(|svc| name_of(svc).len())
            .max()
            .unwrap_or(7)
            .max(7);
        let _ = writeln!(
            out,
            "\n{:<5} {:<w$} {:<12} {:<7} {:<26} DETAILS",
            "NODE", "SERVICE", "STATUS", "AGE", "SEEN BY PEERS"
        );
        for (node, services) in &s.nodes {
            for svc in services {
                let name = name_of(svc);
                let peers: Vec<String> = svc
                    .seen_by
                    .iter()
                    .filter(|(o, _)| **o != svc.observer)
                    .map(|(o, st)| format!("{o}:{}", st.as_str()))
                    .collect();
                let mut detail = svc.summary.clone();
                if !svc.status.is_up() || svc.status == crate::probe::Status::Degraded {
                    if let Some(e) = &svc.error {
                        detail = format!("{detail} ({e})");
                    }
                }
                let _ = writeln!(
                    out,
                    "{:<5} {:<w$} {:<12} {:<7} {:<26} {}",
                    node.to_string(),
                    name,
                    svc.status.as_str(),
                    format!("{:.1}s", svc.age_ms as f64 / 1000.0),
                    if peers.is_empty() {
                        "-".to_string()
                    } else {
                        peers.join(" ")
                    },
                    detail
                );
            }
        }
    }
    render_redis(&mut out, s, others);
    render_galera_writer(&mut out, s, others);
    render_web(&mut out, s, others);
    if let Some(b) = &s.backup {
        out.push_str(&backup::status_lines(b));
    }
    if let Some(h) = s.history.front() {
        let _ = writeln!(
            out,
            "\nlast event: [{}] {} (index {})",
            h.kind, h.details, h.index
        );
    }
    out
}

/// The Galera writer section: the committed writer and evictions, the leader's verdict and
/// ranking (else this node's dry run), and every reachable node's local state and routing.
fn render_galera_writer(out: &mut String, s: &StatusBody, others: &[Option<Option<StatusBody>>]) {
    use std::fmt::Write as _;
    let Some(w) = &s.galera_writer else {
        return;
    };
    let writer = w
        .writer
        .map_or_else(|| "none".to_string(), |n| n.to_string());
    let _ = write!(out, "\ngalera: writer {writer}  epoch {}", w.epoch);
    if let Some(c) = &w.change {
        let _ = write!(
            out,
            "  (last change: {} at index {})",
            c.kind.as_str(),
            c.index
        );
    }
    let _ = writeln!(out);
    for (n, e) in &w.evicted {
        let _ = writeln!(
            out,
            "  evicted: {n} ({}) at index {}: {}",
            e.gcomm_uuid, e.index, e.reason
        );
    }
    let mut views: Vec<&StatusBody> = vec![s];
    views.extend(others.iter().filter_map(|o| o.as_ref()?.as_ref()));
    let leader = views
        .iter()
        .find(|v| v.leader_id == Some(v.node_id))
        .and_then(|v| v.galera_writer.as_ref().map(|w| (v.node_id, w)));
    let (who, ranking) = match leader {
        Some((id, lw)) => {
            let verdict = lw.verdict.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  decision (leader {id}): {verdict}");
            (format!("leader {id}"), &lw.ranking)
        }
        None => ("this node's dry run".to_string(), &w.ranking),
    };
    let _ = writeln!(out, "  ranking ({who}):");
    for r in ranking {
        let mark = if r.eligible { "ok" } else { "--" };
        let _ = writeln!(out, "    {mark} {} {}", r.node, r.reason);
    }
    let mut nodes = views;
    nodes.sort_by_key(|v| v.node_id);
    nodes.dedup_by_key(|v| v.node_id);
    for v in nodes {
        let Some(vw) = &v.galera_writer else { continue };
        let line = match &vw.local.last_cycle {
            None => "no cycle yet".to_string(),
            Some(c) => format!(
                "local {}{}{}",
                c.local_state.as_deref().unwrap_or("unknown"),
                c.local_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!(" (error: {e})")),
                c.haproxy_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!("; haproxy error: {e}")),
            ),
        };
        let _ = writeln!(out, "  {}: {line}", v.node_id);
    }
}

/// The web section: who is in the rotation and who is drained (why), the sick node kept in
/// service, the leader's verdict, each node's web health (the leader's, else this node's dry
/// run) and every reachable node's HAProxy web backend error.
fn render_web(out: &mut String, s: &StatusBody, others: &[Option<Option<StatusBody>>]) {
    use std::fmt::Write as _;
    let Some(w) = &s.web else {
        return;
    };
    let _ = writeln!(out, "\nweb: rotation epoch {}", w.epoch);
    let mut views: Vec<&StatusBody> = vec![s];
    views.extend(others.iter().filter_map(|o| o.as_ref()?.as_ref()));
    let leader = views
        .iter()
        .find(|v| v.leader_id == Some(v.node_id))
        .and_then(|v| v.web.as_ref().map(|w| (v.node_id, w)));
    let nodes = match leader {
        Some((id, lw)) => {
            let verdict = lw.verdict.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  decision (leader {id}): {verdict}");
            &lw.nodes
        }
        None => &w.nodes,
    };
    if let Some(k) = &w.kept {
        let _ = writeln!(out, "  KEPT SICK {}: {}", k.node, k.reason);
    }
    for (n, health) in nodes {
        let place = match w.drained.get(n) {
            Some(d) => format!("drained since index {}: {}", d.index, d.reason),
            None if w.kept.as_ref().is_some_and(|k| k.node == *n) => "in service (kept)".into(),
            None => "in service".into(),
        };
        let _ = writeln!(out, "  {n}: {place}; now {health}");
    }
    let remedy_leader = views
        .iter()
        .find(|v| v.leader_id == Some(v.node_id))
        .and_then(|v| v.remedy.as_ref());
    if let Some(r) = &s.remedy {
        if let Some(l) = &r.lease {
            let _ = writeln!(
                out,
                "  remediation {} in force: {} on {} ({})",
                l.id,
                l.action.describe(),
                l.node,
                l.reason
            );
        }
        if let Some(lr) = remedy_leader {
            for (n, why) in &lr.held {
                let _ = writeln!(out, "  {n} repair waits: {why}");
            }
        }
        if let Some(last) = r.recent.first() {
            let how = match last.ok {
                Some(true) => "done",
                Some(false) => "failed",
                None => "expired",
            };
            let _ = writeln!(
                out,
                "  last remediation {}: {} on {} {how}: {}",
                last.id,
                last.action.describe(),
                last.node,
                last.result
            );
        }
    }
    let mut all = views;
    all.sort_by_key(|v| v.node_id);
    all.dedup_by_key(|v| v.node_id);
    for v in all {
        let err = v
            .web
            .as_ref()
            .and_then(|w| w.local.last_cycle.as_ref())
            .and_then(|c| c.haproxy_error.as_deref());
        if let Some(e) = err {
            let _ = writeln!(out, "  {}: haproxy web backend error: {e}", v.node_id);
        }
    }
}

/// The Redis section: authority, the leader's decision and ranking, and every reachable
/// node's lease and local reconciliation.
fn render_redis(out: &mut String, s: &StatusBody, others: &[Option<Option<StatusBody>>]) {
    use std::fmt::Write as _;
    let Some(r) = &s.redis else {
        return;
    };
    let a = &r.authority;
    let master = a
        .master
        .map_or_else(|| "none".to_string(), |m| m.to_string());
    let _ = write!(out, "\nredis: master {master}  epoch {}", a.epoch);
    if let Some(c) = &a.last_change {
        let _ = write!(
            out,
            "  (last change: {} at index {})",
            c.kind.as_str(),
            c.index
        );
    }
    let _ = writeln!(out);
    if let Some(sus) = &a.suspect {
        let _ = writeln!(out, "  suspected: {} ({})", sus.node, sus.reason);
    }
    // The decision is the leader's: use its status when this node is not the leader.
    let mut views: Vec<&StatusBody> = vec![s];
    views.extend(others.iter().filter_map(|o| o.as_ref()?.as_ref()));
    let leader_view = views
        .iter()
        .find(|v| v.leader_id == Some(v.node_id))
        .and_then(|v| v.redis.as_ref().map(|r| (v.node_id, r)));
    match leader_view {
        Some((id, lr)) => {
            let verdict = lr.verdict.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  decision (leader {id}): {verdict}");
            for c in &lr.candidates {
                let rank = c.rank.map_or_else(|| "-".to_string(), |r| format!("#{r}"));
                let _ = writeln!(out, "    {rank:<3} {} {}", c.node, c.reason);
            }
        }
        None => {
            let _ = writeln!(out, "  decision: no leader reachable");
        }
    }
    let mut nodes: Vec<&StatusBody> = views.clone();
    nodes.sort_by_key(|v| v.node_id);
    nodes.dedup_by_key(|v| v.node_id);
    for v in nodes {
        let Some(vr) = &v.redis else { continue };
        let l = &vr.local;
        let lease = if l.lease_valid {
            format!("lease {:.1}s", l.lease_remaining_ms as f64 / 1000.0)
        } else {
            "NO LEASE".to_string()
        };
        let local = match (&l.waiting, &l.last_cycle) {
            (Some(w), _) => format!("waiting: {w}"),
            (None, Some(c)) => {
                let mut t = format!(
                    "redis {} {}",
                    c.redis_role.as_deref().unwrap_or("?"),
                    match c.redis_fenced {
                        Some(true) => "FENCED",
                        Some(false) => "not fenced",
                        None => "?",
                    }
                );
                if let Some(e) = &c.redis_error {
                    t.push_str(&format!(" (error: {e})"));
                }
                if let Some(e) = &c.haproxy_error {
                    t.push_str(&format!("; haproxy error: {e}"));
                } else if let Some(h) = &c.haproxy_verdict {
                    t.push_str(&format!("; {h}"));
                }
                t
            }
            (None, None) => "no cycle yet".to_string(),
        };
        let _ = writeln!(out, "  {:<4} {:<11} {local}", v.node_id.to_string(), lease);
    }
}

fn token_for(target: &Target, token_file: Option<PathBuf>) -> Result<String, Failure> {
    let token_path = match token_file {
        Some(p) => p,
        None => config_file(target)?
            .and_then(|c| c.api.token_file)
            .ok_or_else(|| Failure {
                code: EXIT_USAGE,
                message: format!(
                    "no API token: pass --token-file FILE (or a --config whose api.token_file is set; \
                     {} has none)",
                    target.config_path().display()
                ),
            })?,
    };
    config::read_token(&token_path).map_err(|e| Failure {
        code: EXIT_USAGE,
        message: e.to_string(),
    })
}

/// POSTs `body` with the token; prints the raw answer with `--json`; fails on non-2xx.
async fn post_json(
    target: &Target,
    path: &str,
    token_file: Option<PathBuf>,
    body: serde_json::Value,
    timeout: Duration,
    json: bool,
) -> Result<serde_json::Value, Failure> {
    let token = token_for(target, token_file)?;
    let url = format!("{}{path}", base_url(target)?);
    let resp = http(target)?
        .post(&url)
        .bearer_auth(token)
        .timeout(timeout)
        .json(&body)
        .send()
        .await
        .map_err(|e| unreachable(&url, &e))?;
    let code = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if json {
        println!("{body}");
    }
    if !code.is_success() {
        let msg = body
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no error message");
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("{url} refused ({code}): {msg}"),
        });
    }
    Ok(body)
}

async fn switchover(
    target: &Target,
    to: Option<u64>,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let body = match to {
        Some(t) => serde_json::json!({ "to": t }),
        None => serde_json::json!({}),
    };
    if !json {
        eprintln!(
            "switching the Redis master over{} (writes pause for the duration) ...",
            to.map(|t| format!(" to n{t}")).unwrap_or_default()
        );
    }
    let r = post_json(
        target,
        "/v1/redis/switchover",
        token_file,
        body,
        Duration::from_secs(30),
        json,
    )
    .await?;
    if !json {
        print_steps(&r);
        println!(
            "redis master is now n{} at epoch {} (writes paused {} ms)",
            r["to"], r["epoch"], r["paused_ms"]
        );
    }
    Ok(())
}

/// Prints an answer's `steps`, one per line, indented.
fn print_steps(r: &serde_json::Value) {
    if let Some(steps) = r["steps"].as_array() {
        for s in steps.iter().filter_map(|s| s.as_str()) {
            println!("  {s}");
        }
    }
}

/// `triad failover redis --to N --reason R`: `POST /v1/redis/failover`.
async fn failover(
    target: &Target,
    to: u64,
    reason: &str,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    if !json {
        eprintln!("forcing a Redis failover to n{to} ...");
    }
    let r = post_json(
        target,
        "/v1/redis/failover",
        token_file,
        serde_json::json!({ "to": to, "reason": reason }),
        Duration::from_secs(30),
        json,
    )
    .await?;
    if !json {
        print_steps(&r);
        println!(
            "redis master is now n{} at epoch {} (old master n{}: {})",
            r["to"],
            r["epoch"],
            r["from"],
            r["old_master"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `triad switchover galera [--to N]`: `POST /v1/galera/switchover`.
async fn galera_switchover(
    target: &Target,
    to: Option<u64>,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let body = match to {
        Some(t) => serde_json::json!({ "to": t }),
        None => serde_json::json!({}),
    };
    if !json {
        eprintln!(
            "moving the Galera writer{} (writes pause until the new writer has caught up) ...",
            to.map(|t| format!(" to n{t}")).unwrap_or_default()
        );
    }
    let r = post_json(
        target,
        "/v1/galera/switchover",
        token_file,
        body,
        Duration::from_secs(30),
        json,
    )
    .await?;
    if !json {
        print_steps(&r);
        println!(
            "galera writer is now n{} at epoch {} (writes paused {} ms, plus one HAProxy check)",
            r["to"], r["epoch"], r["paused_ms"]
        );
    }
    Ok(())
}

async fn maintenance(
    target: &Target,
    enabled: bool,
    reason: &str,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let body = post_json(
        target,
        "/v1/maintenance",
        token_file,
        serde_json::json!({ "enabled": enabled, "reason": reason }),
        Duration::from_secs(30),
        json,
    )
    .await?;
    if !json {
        println!(
            "maintenance {} (applied at index {}, {})",
            if enabled { "on" } else { "off" },
            body["applied_index"],
            body["outcome"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `triad galera status` and `triad galera bootstrap --dry-run`: `GET /v1/galera`.
/// GETs `path` from the agent; on success, the body as text and as JSON (`Null` when it is not
/// JSON). A refusal names the URL, the status and the agent's `error`.
async fn get_json(target: &Target, path: &str) -> Result<(String, serde_json::Value), Failure> {
    let url = format!("{}{path}", base_url(target)?);
    let token = read_token_for(target)?;
    let resp = get_with(&http(target)?, &url, token.as_deref())
        .send()
        .await
        .map_err(|e| unreachable(&url, &e))?;
    let code = resp.status();
    let text = resp.text().await.map_err(|e| unreachable(&url, &e))?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !code.is_success() {
        let msg = v["error"].as_str().unwrap_or(&text).to_string();
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("{url} answered {code}: {msg}"),
        });
    }
    Ok((text, v))
}

async fn galera_status(target: &Target, json: bool, dry_run: bool) -> Result<(), Failure> {
    let (text, _) = get_json(target, "/v1/galera").await?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let g: crate::api::GaleraStatusBody = serde_json::from_str(&text).map_err(|e| Failure {
        code: EXIT_SOFTWARE,
        message: format!("the agent's /v1/galera is not a Galera status: {e}"),
    })?;
    print!("{}", render_galera(&g, dry_run));
    Ok(())
}

/// The human rendering of the Galera status (the dry run shows the choice first).
fn render_galera(g: &crate::api::GaleraStatusBody, dry_run: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let outage = match &g.authority.outage {
        None => "none so far".to_string(),
        Some(o) => {
            let state = match (&o.bootstrap, &o.ended) {
                (_, Some(e)) => format!("ended at index {} ({})", e.index, e.reason),
                (Some(b), None) => format!(
                    "open, bootstrapping {} ({} {}, index {})",
                    b.node,
                    b.kind.as_str(),
                    b.mode.as_str(),
                    b.index
                ),
                (None, None) => format!("open since index {}, undecided", o.opened.index),
            };
            format!("{} {state}", o.number)
        }
    };
    let _ = writeln!(out, "galera outage: {outage}");
    if dry_run {
        let _ = writeln!(out, "dry run (nothing changes): {}", g.next.verdict);
    } else {
        if let Some(v) = &g.verdict {
            let _ = writeln!(out, "leader's verdict: {v}");
        }
        let _ = writeln!(out, "next: {}", g.next.verdict);
    }
    let _ = writeln!(
        out,
        "node  process      primary   size  state            uuid                                   seqno    safe  recovered"
    );
    for c in &g.next.ranking {
        let e = g.evidence.get(&c.node);
        let (uuid, seqno, safe) = match e.map(|e| &e.grastate) {
            Some(crate::decide::galera::GrastateEvidence::Present {
                uuid,
                seqno,
                safe_to_bootstrap,
            }) => (
                uuid.clone(),
                *seqno,
                if *safe_to_bootstrap { "1" } else { "0" },
            ),
            Some(crate::decide::galera::GrastateEvidence::Missing) => (None, None, "none"),
            // Running: grastate is only read while mariadbd is down.
            _ if e.is_some_and(|e| e.process == crate::decide::galera::ProcessState::Running) => {
                (None, None, "-")
            }
            _ => (None, None, "?"),
        };
        let running_uuid = e.and_then(|e| e.wsrep_uuid.clone());
        let _ = writeln!(
            out,
            "{:<5} {:<12} {:<9} {:<5} {:<16} {:<38} {:<8} {:<5} {}",
            c.node.to_string(),
            e.map_or("silent".to_string(), |e| format!("{:?}", e.process)
                .to_lowercase()),
            e.map_or("?", |e| if e.primary { "yes" } else { "no" }),
            e.and_then(|e| e.cluster_size)
                .map_or("-".to_string(), |s| s.to_string()),
            e.and_then(|e| e.local_state.clone())
                .unwrap_or_else(|| "-".into()),
            running_uuid.or(uuid).unwrap_or_else(|| "-".into()),
            e.and_then(|e| e.last_committed)
                .or(seqno)
                .map_or("-".to_string(), |s| s.to_string()),
            safe,
            e.and_then(|e| e.recovered.as_ref())
                .map_or("-".to_string(), |p| format!(
                    "{}:{}",
                    p.uuid.as_deref().unwrap_or("nil"),
                    p.seqno.unwrap_or(-1)
                )),
        );
        let _ = writeln!(
            out,
            "      rank {}: {}",
            c.rank.map_or("-".to_string(), |r| r.to_string()),
            c.reason
        );
    }
    let l = &g.local;
    let _ = writeln!(
        out,
        "this node: {} (restarts last hour {}{}, total {})",
        l.recovery.doing,
        l.recovery.restarts_last_hour,
        if l.recovery.capped { ", CAPPED" } else { "" },
        l.recovery.restarts_total
    );
    if let Some(e) = &l.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    out
}

/// `triad galera bootstrap --node N --accept-data-loss --reason R`.
async fn galera_bootstrap(
    target: &Target,
    node: u64,
    accept_data_loss: bool,
    reason: &str,
    by: Option<String>,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let by = by.unwrap_or_else(|| {
        let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        if host.is_empty() {
            user
        } else {
            format!("{user}@{host}")
        }
    });
    if !json {
        eprintln!("asking for a Galera bootstrap of n{node} ...");
    }
    let r = post_json(
        target,
        "/v1/galera/bootstrap",
        token_file,
        serde_json::json!({
            "node": node,
            "accept_data_loss": accept_data_loss,
            "by": by,
            "reason": reason,
        }),
        Duration::from_secs(30),
        json,
    )
    .await?;
    if let Some(why) = r["rejected"].as_str() {
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("the bootstrap was refused when it applied: {why}"),
        });
    }
    if !json {
        println!(
            "bootstrap of n{node} committed at index {}; n{node}'s agent starts it as a new \
             cluster, the others join it (follow with `triad galera status`)",
            r["applied_index"]
        );
    }
    Ok(())
}
