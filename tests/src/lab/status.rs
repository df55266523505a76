//! `status`: every node, every service: running or not, its role, and the agent's own view.
//!
//! Nodes are queried in parallel, each query with a short deadline, so `status` answers in
//! about a second even with a frozen (SIGSTOP) or cut-off service, which then shows as
//! "running" with a failed query rather than hanging the command. Cut nodes stay reachable
//! from the host (cuts exempt the host address), so their own view is shown too.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::faults::service_proc;
use super::process::Liveness;
use super::query::{self, HaproxyServer};
use super::services::agent_get;
use super::spec::{LabSpec, Service};
use super::state::{Cut, LabState, Phase};

const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The whole lab.
#[derive(Clone, Debug, Serialize)]
pub struct LabStatus {
    /// `up`, `starting` (an `up` in progress or crashed) or `down`.
    pub phase: String,
    /// State directory.
    pub dir: String,
    /// Seconds `up` took.
    pub up_seconds: Option<f64>,
    /// Cuts in place.
    pub cuts: Vec<Cut>,
    /// Per node.
    pub nodes: Vec<NodeStatus>,
}

/// One node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// Node id.
    pub node: u64,
    /// Namespace.
    pub netns: String,
    /// Address.
    pub ip: String,
    /// Every service.
    pub services: Vec<ServiceStatus>,
    /// HAProxy servers as this node's HAProxy sees them.
    pub haproxy_servers: Vec<HaproxyServer>,
    /// The agent's `/v1/status` (raw JSON), when it answered.
    pub agent: Option<serde_json::Value>,
}

/// One service on one node.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceStatus {
    /// Service name.
    pub service: Service,
    /// `running`, `stopped` (SIGSTOP) or `not running`.
    pub state: String,
    /// Main pid when known.
    pub pid: Option<i32>,
    /// Role or health in words (Galera state, Redis role, HAProxy backends, agent role), or
    /// why the query failed.
    pub detail: String,
}

impl ServiceStatus {
    /// Whether the process runs (not stopped, not gone).
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// Collects the status of the lab (root needed for the process and namespace checks).
pub fn collect(lab: &LabSpec) -> Result<LabStatus> {
    let state = LabState::load(lab)?;
    let Some(state) = state else {
        return Ok(LabStatus {
            phase: "down".to_string(),
            dir: lab.dir.display().to_string(),
            up_seconds: None,
            cuts: Vec::new(),
            nodes: Vec::new(),
        });
    };
    let nodes = std::thread::scope(|scope| {
        let handles: Vec<_> = lab
            .nodes()
            .into_iter()
            .map(|n| {
                let state = &state;
                scope.spawn(move || node_status(lab, state, n))
            })
            .collect();
        handles
            .into_iter()
            .zip(lab.nodes())
            .map(|(h, n)| {
                h.join().unwrap_or_else(|_| NodeStatus {
                    node: n,
                    netns: lab.netns(n),
                    ip: lab.node_ip(n).to_string(),
                    services: Vec::new(),
                    haproxy_servers: Vec::new(),
                    agent: None,
                })
            })
            .collect()
    });
    Ok(LabStatus {
        phase: match state.phase {
            Phase::Up => "up".to_string(),
            Phase::Starting => "starting".to_string(),
        },
        dir: lab.dir.display().to_string(),
        up_seconds: state.up_seconds,
        cuts: state.cuts.clone(),
        nodes,
    })
}

fn node_status(lab: &LabSpec, state: &LabState, n: u64) -> NodeStatus {
    let mut services = Vec::new();
    let mut haproxy_servers = Vec::new();
    let mut agent = None;
    for svc in Service::ALL {
        let id = service_proc(lab, state, n, svc);
        let live = id.map_or(Liveness::Gone, |id| id.liveness());
        let (state_word, pid) = match live {
            Liveness::Running => ("running", id.map(|i| i.pid)),
            Liveness::Stopped => ("stopped", id.map(|i| i.pid)),
            Liveness::Gone => ("not running", None),
        };
        let detail = if live == Liveness::Running {
            match svc {
                Service::Agent => match agent_view(lab, n) {
                    Ok((text, json)) => {
                        agent = Some(json);
                        text
                    }
                    Err(e) => format!("{e:#}"),
                },
                Service::Haproxy => match query::haproxy_servers(lab, n, STATUS_TIMEOUT) {
                    Ok(servers) => {
                        let text = haproxy_summary(&servers);
                        haproxy_servers = servers;
                        text
                    }
                    Err(e) => format!("{e:#}"),
                },
                _ => detail(lab, state, n, svc),
            }
        } else if live == Liveness::Stopped {
            "frozen by SIGSTOP (`kill N SERVICE --signal CONT`)".to_string()
        } else {
            String::new()
        };
        services.push(ServiceStatus {
            service: svc,
            state: state_word.to_string(),
            pid,
            detail,
        });
    }
    NodeStatus {
        node: n,
        netns: lab.netns(n),
        ip: lab.node_ip(n).to_string(),
        services,
        haproxy_servers,
        agent,
    }
}

fn detail(lab: &LabSpec, state: &LabState, n: u64, svc: Service) -> String {
    let res: Result<String> = match svc {
        Service::Mariadb => query::galera_status(lab, n, STATUS_TIMEOUT).map(|g| g.to_string()),
        Service::Redis => query::redis_role(lab, n, STATUS_TIMEOUT).map(|r| r.to_string()),
        Service::Phpfpm => {
            if super::services::tcp_open(lab.phpfpm_addr(n), STATUS_TIMEOUT) {
                Ok(format!("listening on {}", lab.phpfpm_addr(n)))
            } else {
                Ok(format!("not accepting on {}", lab.phpfpm_addr(n)))
            }
        }
        Service::Mount => Ok(if query::is_mounted(&lab.gluster_mount(n), "fuse") {
            format!("mounted at {}", lab.gluster_mount(n).display())
        } else {
            "not mounted".to_string()
        }),
        Service::Glusterd => match state.proc(n, Service::Glusterd) {
            Some(id) => query::gluster(id.pid, &["pool", "list"], STATUS_TIMEOUT).map(|out| {
                let connected = out.lines().filter(|l| l.contains("\tConnected")).count();
                format!("pool: {connected} of 3 connected")
            }),
            None => Ok(String::new()),
        },
        Service::Brick => Ok(lab.gluster_brick_spec(n)),
        Service::Haproxy | Service::Agent => Ok(String::new()),
    };
    res.unwrap_or_else(|e| format!("query failed: {e:#}"))
}

fn haproxy_summary(servers: &[HaproxyServer]) -> String {
    let mut parts = Vec::new();
    for be in ["be_redis", "be_mysql", "be_mysql_recipe", "be_php"] {
        let list: Vec<String> = servers
            .iter()
            .filter(|s| s.backend == be)
            .map(|s| {
                let b = if s.backup { " (backup)" } else { "" };
                format!("{} {}{b}", s.server, s.word())
            })
            .collect();
        parts.push(format!(
            "{}: {}",
            be.trim_start_matches("be_"),
            list.join(", ")
        ));
    }
    parts.join(" | ")
}

fn agent_view(lab: &LabSpec, n: u64) -> Result<(String, serde_json::Value)> {
    let (code, body) = agent_get(lab, n, "/v1/status", STATUS_TIMEOUT)?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
        anyhow::anyhow!("GET /v1/status answered {code} with no JSON ({e}): {body}")
    })?;
    let leader = json["leader_id"]
        .as_u64()
        .map_or_else(|| "none".to_string(), |l| format!("n{l}"));
    let mut text = format!(
        "{} term {}, leader {leader}, applied {}, verdict: {}",
        json["role"].as_str().unwrap_or("?"),
        json["term"],
        json["applied_index"],
        json["verdict"].as_str().unwrap_or("?")
    );
    // An agent without the Galera writer authority has no such section.
    if let Ok(w) = super::galera_writer::writer_view(&json) {
        text.push_str(&format!("; galera {}", w.line()));
    }
    Ok((text, json))
}

/// The status as text, one block per node.
pub fn render(status: &LabStatus) -> String {
    let mut out = String::new();
    let took = status
        .up_seconds
        .map(|s| format!(", built in {s:.1}s"))
        .unwrap_or_default();
    let _ = writeln!(out, "lab {}{took} ({})", status.phase, status.dir);
    if status.cuts.is_empty() {
        let _ = writeln!(out, "cuts: none");
    } else {
        for c in &status.cuts {
            let _ = writeln!(out, "cut: {c}");
        }
    }
    for node in &status.nodes {
        let _ = writeln!(out, "n{} {} {}", node.node, node.netns, node.ip);
        for s in &node.services {
            let pid = s.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
            let _ = writeln!(
                out,
                "  {:<9} {:<11} {:>7}  {}",
                s.service.as_str(),
                s.state,
                pid,
                s.detail
            );
        }
    }
    out
}
