//! `triad-lab`: the lab of real services in network namespaces, for people. Run it through
//! `tests/lab`, which installs the packages and builds this binary and the agent first.
//!
//! Exit codes: 0 ok, 1 failure (the message names the step and the log to read), 64 usage
//! (unknown node, service or signal), 69 the lab is not up, 77 not root. The library behind
//! it is `triad_tests::lab`; see its module docs for the design.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use triad_tests::lab::{
    self, down, faults, parse_node, status, up, LabError, LabSpec, Progress, Service, Signal,
    StartOptions,
};

/// The three-node Triad lab: MariaDB Galera, Redis, PHP-FPM, GlusterFS, HAProxy and the
/// agent in each of three network namespaces.
#[derive(Parser, Debug)]
#[command(name = "triad-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the lab (idempotent: a healthy lab is left alone, a broken one rebuilt).
    Up,
    /// Every node and service: running or not, role, and each agent's own view.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop everything the lab started and remove its namespaces, bridge and mounts.
    Down,
    /// Send a signal to a service of a node (default SIGKILL).
    Kill {
        /// Node: 1, 2, 3 (or n1, ha1).
        #[arg(value_parser = node_arg)]
        node: u64,
        /// Service: mariadb, redis, phpfpm, haproxy, glusterd, brick, mount, agent.
        #[arg(value_parser = service_arg)]
        service: Service,
        /// KILL, TERM, STOP or CONT.
        #[arg(long, short, default_value = "KILL", value_parser = signal_arg)]
        signal: Signal,
    },
    /// Start a service of a node that is not running, and wait until it serves.
    Start {
        /// Node: 1, 2, 3.
        #[arg(value_parser = node_arg)]
        node: u64,
        /// Service name (see `kill`).
        #[arg(value_parser = service_arg)]
        service: Service,
        /// MariaDB only: bootstrap a new cluster on this node (when no node is Primary).
        #[arg(long)]
        bootstrap: bool,
    },
    /// Cut a node from its peers (nftables drops inside it; the host still reaches it).
    Partition {
        /// The node to cut.
        #[arg(value_parser = node_arg)]
        node: u64,
        /// Cut only from this peer (default: from both others).
        #[arg(long, value_parser = node_arg)]
        from: Option<u64>,
        /// Drop only traffic towards NODE; NODE can still send.
        #[arg(long)]
        oneway: bool,
    },
    /// Remove every cut.
    Heal,
    /// Run a command inside a node's network namespace: `exec 2 -- redis-cli -h 10.77.0.12 ping`.
    Exec {
        /// Node: 1, 2, 3.
        #[arg(value_parser = node_arg)]
        node: u64,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

fn node_arg(s: &str) -> Result<u64, String> {
    parse_node(s).map_err(|e| e.to_string())
}

fn service_arg(s: &str) -> Result<Service, String> {
    s.parse::<Service>().map_err(|e| e.to_string())
}

fn signal_arg(s: &str) -> Result<Signal, String> {
    match Signal::parse(s) {
        Some(sig @ (Signal::Kill | Signal::Term | Signal::Stop | Signal::Cont)) => Ok(sig),
        _ => Err(format!(
            "unknown signal `{s}`; use KILL, TERM, STOP or CONT"
        )),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("triad-lab: {e:#}");
            ExitCode::from(lab::exit_code(&e))
        }
    }
}

fn spec() -> Result<LabSpec> {
    Ok(LabSpec::new(triad_tests::triad_bin()?))
}

/// A spec for commands that do not start agents (no need to locate or build `triad`).
fn spec_no_bin() -> LabSpec {
    LabSpec::new("triad")
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Cmd::Up => {
            lab::error::require_root("`up`")?;
            let spec = spec()?;
            let progress = Progress::stdout();
            progress.line(&format!(
                "building the lab in {} (agents: {})",
                spec.dir.display(),
                spec.triad_bin.display()
            ));
            up::up(&spec, &progress).map_err(|e| {
                if down::traces(&spec).is_empty() {
                    e
                } else {
                    e.context(format!(
                        "`up` failed; the partial lab is left for inspection (logs under \
                         {}/nN); `tests/lab down` removes it",
                        spec.dir.display()
                    ))
                }
            })?;
            print_hints(&spec);
            Ok(0)
        }
        Cmd::Status { json } => {
            lab::error::require_root("`status`")?;
            let spec = spec_no_bin();
            let st = status::collect(&spec)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&st).context("cannot encode the status")?
                );
            } else if st.phase != "down" {
                print!("{}", status::render(&st));
            }
            if st.phase == "down" {
                if !json {
                    eprintln!(
                        "triad-lab: {}",
                        LabError::NotUp("no state file".to_string())
                    );
                }
                return Ok(69);
            }
            Ok(0)
        }
        Cmd::Down => {
            let spec = spec_no_bin();
            let progress = Progress::stdout();
            let report = down::down(&spec, &progress)?;
            if !report.had_lab {
                progress.line("no lab here; nothing to do");
                return Ok(0);
            }
            if report.leftovers.is_empty() {
                progress.line(&format!(
                    "lab down in {:.1}s; logs and configs kept in {}",
                    report.took.as_secs_f64(),
                    spec.logs_dir().display()
                ));
                Ok(0)
            } else {
                anyhow::bail!("down left behind: {}", report.leftovers.join("; "))
            }
        }
        Cmd::Kill {
            node,
            service,
            signal,
        } => {
            println!("{}", faults::kill(&spec_no_bin(), node, service, signal)?);
            Ok(0)
        }
        Cmd::Start {
            node,
            service,
            bootstrap,
        } => {
            let opts = StartOptions { bootstrap };
            println!("{}", faults::start(&spec_no_bin(), node, service, opts)?);
            Ok(0)
        }
        Cmd::Partition { node, from, oneway } => {
            println!("{}", faults::partition(&spec_no_bin(), node, from, oneway)?);
            Ok(0)
        }
        Cmd::Heal => {
            println!("{}", faults::heal(&spec_no_bin())?);
            Ok(0)
        }
        Cmd::Exec { node, command } => {
            let code = faults::exec(&spec_no_bin(), node, &command)?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
    }
}

fn print_hints(spec: &LabSpec) {
    let cwd = std::env::current_dir().unwrap_or_default();
    let bin = spec
        .triad_bin
        .strip_prefix(&cwd)
        .unwrap_or(&spec.triad_bin)
        .display()
        .to_string();
    println!(
        "\nLook:\n  \
         {bin} status --api {api} --read-token-file {token}     # the agents' view\n  \
         tests/lab status [--json]                 # every node and service\n  \
         tests/lab exec 2 -- redis-cli -h 10.77.0.12 info replication\n  \
         curl http://10.77.0.11:8080/              # the shop page through n1's HAProxy\n\
         Break:\n  \
         tests/lab kill 1 redis                    # SIGKILL the Redis master (--signal TERM|STOP|CONT)\n  \
         tests/lab partition 3                     # cut n3 from its peers (--from 1, --oneway)\n  \
         tests/lab heal; tests/lab start 1 redis   # undo\n  \
         tests/lab down                            # remove everything",
        api = spec.api_url(1),
        token = spec.token_file().display()
    );
}
