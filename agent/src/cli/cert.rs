//! `triad cert`: the cluster CA and node certificates for mutual TLS between agents.
//!
//! `init` makes the CA once, on an operator's machine; `issue` makes each node's certificate
//! from it. The cluster name (part of every node's certificate name) comes from `--cluster`,
//! or else from the config file, which must then be readable. Files are never overwritten;
//! private keys get mode 0600. Copy `ca.crt`, `n<id>.crt` and `n<id>.key` into each node's
//! `/etc/triad/tls/` (the `[tls]` defaults) and keep `ca.key` off the VMs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::{DEFAULT_CONFIG, EXIT_SOFTWARE, EXIT_USAGE};
use crate::config;
use crate::ids::NodeId;
use crate::tls::{self, TlsError, Written};

/// `triad cert ...`.
#[derive(Subcommand, Debug)]
pub(super) enum CertCmd {
    /// Create the cluster CA: `ca.crt` and `ca.key` (mode 0600) in --dir. Once per cluster;
    /// keep `ca.key` off the VMs.
    Init {
        /// Directory to write into (created when missing).
        #[arg(long, default_value = "/etc/triad/tls")]
        dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Days the CA is valid for.
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue node N's certificate (for `n<N>.<cluster>.triad`) from the CA in --dir:
    /// `n<N>.crt` and `n<N>.key` (mode 0600) in --out.
    Issue {
        /// The node id.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        node: u64,
        /// Directory holding `ca.crt` and `ca.key`.
        #[arg(long, default_value = "/etc/triad/tls")]
        dir: PathBuf,
        /// Directory to write into (default: --dir).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Days the certificate is valid for.
        #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the cluster name comes from.
#[derive(clap::Args, Debug)]
pub(super) struct ClusterArg {
    /// The cluster name (`cluster_name`); default: read from --config.
    #[arg(long)]
    cluster: Option<String>,
    /// Config file to read `cluster_name` from when --cluster is not given.
    #[arg(long, env = "TRIAD_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

impl ClusterArg {
    fn name(&self) -> Result<String, String> {
        if let Some(c) = &self.cluster {
            return Ok(c.clone());
        }
        let text = std::fs::read_to_string(&self.config).map_err(|e| {
            format!(
                "cannot read {} for its cluster_name: {e}; give --cluster NAME or --config FILE",
                self.config.display()
            )
        })?;
        config::parse(&self.config, &text)
            .map(|c| c.cluster_name)
            .map_err(|e| format!("{e}; give --cluster NAME"))
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(code)
}

fn code(e: &TlsError) -> u8 {
    match e {
        TlsError::Crypto { .. } => EXIT_SOFTWARE,
        TlsError::Io { .. } | TlsError::Content { .. } => EXIT_USAGE,
    }
}

fn report(w: &Written, what: &str, json: bool, next: &str) -> ExitCode {
    if json {
        match serde_json::to_string(w) {
            Ok(j) => println!("{j}"),
            Err(e) => return fail(EXIT_SOFTWARE, e),
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "wrote {} ({what} `{}`, valid {} days)",
        w.cert.display(),
        w.name,
        w.days
    );
    println!("wrote {} (its private key, mode 0600)", w.key.display());
    println!("{next}");
    ExitCode::SUCCESS
}

/// Runs `triad cert ...`.
pub(super) fn run(cmd: CertCmd) -> ExitCode {
    match cmd {
        CertCmd::Init {
            dir,
            cluster,
            days,
            json,
        } => {
            let name = match cluster.name() {
                Ok(n) => n,
                Err(e) => return fail(EXIT_USAGE, e),
            };
            match tls::init_ca(&dir, &name, days) {
                Ok(w) => report(
                    &w,
                    "CA certificate",
                    json,
                    &format!(
                        "next: `triad cert issue --dir {} --cluster {name} --node N` for each \
                         node; keep ca.key off the VMs",
                        dir.display()
                    ),
                ),
                Err(e) => fail(code(&e), e),
            }
        }
        CertCmd::Issue {
            node,
            dir,
            out,
            cluster,
            days,
            json,
        } => {
            let name = match cluster.name() {
                Ok(n) => n,
                Err(e) => return fail(EXIT_USAGE, e),
            };
            let out = out.unwrap_or_else(|| dir.clone());
            match tls::issue(&dir, &out, &name, NodeId(node), days) {
                Ok(w) => report(&w, "node certificate", json, &next_issue(&dir, &w, node)),
                Err(e) => fail(code(&e), e),
            }
        }
    }
}

fn next_issue(dir: &Path, w: &Written, node: u64) -> String {
    format!(
        "next: copy {}, {} and {} to node {node}'s /etc/triad/tls/ (or where its [tls] \
         section points), owned by the agent's user",
        dir.join("ca.crt").display(),
        w.cert.display(),
        w.key.display()
    )
}
