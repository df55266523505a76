//! What an agent with a validated configuration will do, for `triad check-config`: one
//! [`Explanation`] value, shown as indented lines for people ([`Explanation::lines`]) and as
//! one JSON object for scripts (its `Serialize`), so the two never disagree.
//!
//! It reads the configuration only: nothing is probed or connected to, so a valid file can
//! still name a socket that is not there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{millis, BackendRole, ServiceControlKind, ServiceName, Validated};
use crate::ids::NodeId;
use crate::observation::Service;

/// What the agent will do with this configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The configuration file.
    pub file: PathBuf,
    /// Always true: only a valid configuration is explained.
    pub valid: bool,
    /// `cluster_name`.
    pub cluster_name: String,
    /// This node.
    pub node: NodeId,
    /// Every member, sorted.
    pub members: Vec<NodeId>,
    /// Where the operator API listens.
    pub api: SocketAddr,
    /// Where Raft listens.
    pub raft: SocketAddr,
    /// The probes this agent runs, one entry per service and target.
    pub probes: Vec<ProbePlan>,
    /// Redis failover.
    pub redis_failover: FailoverPlan,
    /// The local HAProxy (absent: not managed).
    pub haproxy: Option<HaproxyPlan>,
    /// How local services are started and stopped.
    pub service_control: ControlPlan,
    /// Galera recovery (absent: no `[galera]`, Galera is only probed).
    pub galera: Option<GaleraPlan>,
    /// The timings the safety arguments rest on.
    pub timing: TimingPlan,
    /// Backups (absent: no `[backup]`): one line saying what a run takes, when and where to.
    pub backup: Option<String>,
}

/// One probed service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbePlan {
    /// The service.
    pub service: Service,
    /// What is checked when the service alone does not say it: the FastCGI address, the
    /// volume, the mount point; empty otherwise.
    pub target: String,
    /// The nodes whose instance this agent checks (this node, and its peers with
    /// cross-checks on).
    pub nodes: Vec<NodeId>,
    /// Time between two checks, in milliseconds.
    pub interval_ms: u64,
    /// Per-check deadline, in milliseconds.
    pub timeout_ms: u64,
    /// Successes before a failed service counts as up.
    pub rise: u32,
    /// Failures before a serving service counts as failed.
    pub fall: u32,
}

/// Whether Redis failover runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    /// No `[redis]`: no failover, no fencing.
    Off,
    /// The leader promotes a replica when the master fails.
    Automatic,
    /// `failover.automatic = false`: the decision is computed and shown, never proposed;
    /// fencing, reconciliation and planned switchover still run.
    Manual,
}

/// Redis failover as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailoverPlan {
    /// Off, automatic or manual.
    pub mode: FailoverMode,
    /// No second automatic failover within this after a change, in milliseconds.
    pub hold_down_ms: u64,
    /// A replica lagging the best candidate by more bytes is not promoted.
    pub max_lag_bytes: u64,
}

/// The local HAProxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HaproxyPlan {
    /// Its admin socket.
    pub admin_socket: PathBuf,
    /// Where the runtime state is saved after each change (absent: not saved).
    pub state_file: Option<PathBuf>,
    /// The backends Triad drives.
    pub backends: Vec<BackendPlan>,
}

/// One backend Triad drives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendPlan {
    /// Its name in haproxy.cfg.
    pub name: String,
    /// The role it follows.
    pub role: BackendRole,
    /// What the role keeps in service, in words.
    pub keeps: &'static str,
    /// Its servers, one per member, in member order.
    pub servers: Vec<String>,
}

/// Galera recovery as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GaleraPlan {
    /// Whether this agent restarts its own mariadbd when it falls out.
    pub rejoin: bool,
    /// An outage opens after no Primary anywhere, every mariadbd stopped, for this long (ms).
    pub open_after_stopped_ms: u64,
    /// ... or some still running non-Primary, for this long (ms).
    pub open_after_non_primary_ms: u64,
    /// A bootstrapped node stopped again this long, nothing Primary: the next outage (ms).
    pub rebootstrap_after_ms: u64,
    /// Restarts allowed per hour.
    pub restarts_per_hour: u32,
    /// The first back-off between restarts (ms).
    pub restart_backoff_ms: u64,
    /// The option file `--wsrep-recover` reads.
    pub defaults_file: PathBuf,
    /// Every node's expected `auto_increment_increment`, which the MariaDB probes check
    /// (0: not checked).
    pub auto_increment_increment: u64,
    /// Whether a dead node is evicted from the survivors' component at once.
    pub evict_dead: bool,
    /// The writer reconciler's cycle (ms).
    pub writer_interval_ms: u64,
    /// `evs.join_retrans_period` set on each node (ms; 0: left alone).
    pub join_retrans_period_ms: u64,
    /// `evs.keepalive_period` set on each node (ms; 0: left alone).
    pub keepalive_period_ms: u64,
}

/// How local services are started and stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControlPlan {
    /// systemd, process or none.
    pub kind: ServiceControlKind,
    /// `services.stop_timeout`, in milliseconds.
    pub stop_timeout_ms: u64,
    /// What each controllable service maps to: its unit (systemd) or its program (process).
    pub services: BTreeMap<String, String>,
    /// The services this node probes, which the control must be able to start.
    pub managed: Vec<ServiceName>,
    /// Whether the agent acts through it (the Galera recovery does).
    pub active: bool,
}

/// The timings the safety arguments rest on (see `FailoverSection`), in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimingPlan {
    /// One Raft tick.
    pub raft_tick_ms: u64,
    /// The shortest election timeout (Raft randomises it up to twice this).
    pub election_timeout_ms: u64,
    /// Heartbeats and lease pings.
    pub ping_interval_ms: u64,
    /// `failover.lease`.
    pub lease_ms: u64,
    /// `failover.clock_margin`.
    pub clock_margin_ms: u64,
    /// The longest a cut-off agent takes, after its lease lapsed, to take its HAProxy out of
    /// service and fence its Redis: `max(reconcile_interval, 2 * action_timeout)`.
    pub fencing_bound_ms: u64,
    /// The silent path promotes a replica this long after the old master's lease was last
    /// renewed (the last ping a peer answered for it): `lease + clock_margin`.
    pub silent_promotion_ms: u64,
}

impl Explanation {
    /// Explains `v`.
    pub fn of(v: &Validated) -> Explanation {
        let c = &v.config;
        let me = v.node_id();
        let members: Vec<NodeId> = v.members.iter().map(|m| m.id).collect();
        let mut probes = Vec::new();
        let plan = |service, target: String, nodes, t: super::ProbeTiming| ProbePlan {
            service,
            target,
            nodes,
            interval_ms: millis(t.interval),
            timeout_ms: millis(t.timeout),
            rise: t.rise,
            fall: t.fall,
        };
        if let Some(r) = &c.redis {
            let nodes = v
                .members
                .iter()
                .filter(|m| (m.id == me || r.cross_check) && m.redis_addr.is_some())
                .map(|m| m.id)
                .collect();
            probes.push(plan(
                Service::Redis,
                String::new(),
                nodes,
                r.effective_timing(&c.probes),
            ));
        }
        if let Some(db) = &c.mariadb {
            let nodes = v
                .members
                .iter()
                .filter(|m| {
                    if m.id == me {
                        db.socket.is_some() || m.mysql_addr.is_some()
                    } else {
                        db.cross_check && m.mysql_addr.is_some()
                    }
                })
                .map(|m| m.id)
                .collect();
            probes.push(plan(
                Service::Mariadb,
                String::new(),
                nodes,
                db.effective_timing(&c.probes),
            ));
        }
        if let Some(f) = &c.phpfpm {
            probes.push(plan(
                Service::Phpfpm,
                f.address.clone(),
                vec![me],
                f.timing.resolve(&c.probes),
            ));
        }
        if let Some(g) = &c.gluster {
            probes.push(plan(
                Service::Gluster,
                g.volume.clone(),
                vec![me],
                g.volume_timing(&c.probes),
            ));
            for m in &g.mounts {
                probes.push(plan(
                    Service::GlusterMount,
                    m.display().to_string(),
                    vec![me],
                    g.mount_timing.resolve(&c.probes),
                ));
            }
        }
        let fo = &c.failover;
        let redis_failover = FailoverPlan {
            mode: match (c.redis.is_some(), fo.automatic) {
                (false, _) => FailoverMode::Off,
                (true, true) => FailoverMode::Automatic,
                (true, false) => FailoverMode::Manual,
            },
            hold_down_ms: millis(fo.hold_down),
            max_lag_bytes: fo.max_lag_bytes,
        };
        let haproxy = c.haproxy.as_ref().map(|h| HaproxyPlan {
            admin_socket: h.admin_socket.clone(),
            state_file: h.state_file.clone(),
            backends: h
                .backends()
                .iter()
                .map(|b| BackendPlan {
                    name: b.name.clone(),
                    role: b.role,
                    keeps: b.role.describe(),
                    servers: members.iter().map(|&id| b.server(id)).collect(),
                })
                .collect(),
        });
        let s = &c.services;
        let service_control = ControlPlan {
            kind: s.control,
            stop_timeout_ms: millis(s.stop_timeout),
            services: match s.control {
                ServiceControlKind::Systemd => s.systemd_units(),
                ServiceControlKind::Process => s
                    .process
                    .iter()
                    .map(|(name, p)| (name.clone(), p.argv.first().cloned().unwrap_or_default()))
                    .collect(),
                ServiceControlKind::None => BTreeMap::new(),
            },
            managed: c.managed_services(),
            active: c.galera.is_some() && s.control != ServiceControlKind::None,
        };
        let galera = c.galera.as_ref().map(|g| GaleraPlan {
            rejoin: g.rejoin,
            open_after_stopped_ms: millis(g.open_after_stopped),
            open_after_non_primary_ms: millis(g.open_after_non_primary),
            rebootstrap_after_ms: millis(g.rebootstrap_after),
            restarts_per_hour: g.restarts_per_hour,
            restart_backoff_ms: millis(g.restart_backoff),
            defaults_file: g.defaults_file.clone(),
            auto_increment_increment: g.auto_increment_increment,
            evict_dead: g.evict_dead,
            writer_interval_ms: millis(g.writer_interval),
            join_retrans_period_ms: millis(g.join_retrans_period),
            keepalive_period_ms: millis(g.keepalive_period),
        });
        // Validation bounds every factor far below overflow; saturate all the same.
        let ticks = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let tick = c.raft.tick_interval;
        let ping = tick.saturating_mul(ticks(c.raft.ping_ticks));
        let fencing = fo
            .reconcile_interval
            .max(fo.action_timeout.saturating_mul(2));
        let timing = TimingPlan {
            raft_tick_ms: millis(tick),
            election_timeout_ms: millis(tick.saturating_mul(ticks(c.raft.election_ticks))),
            ping_interval_ms: millis(ping),
            lease_ms: millis(fo.lease),
            clock_margin_ms: millis(fo.clock_margin),
            fencing_bound_ms: millis(fencing),
            silent_promotion_ms: millis(fo.lease.saturating_add(fo.clock_margin)),
        };
        Explanation {
            file: v.file.clone(),
            valid: true,
            cluster_name: c.cluster_name.clone(),
            node: me,
            members,
            api: v.api_listen,
            raft: v.raft_listen,
            probes,
            redis_failover,
            haproxy,
            service_control,
            galera,
            timing,
            backup: c.backup.as_ref().map(|b| {
                let mut parts = Vec::new();
                if c.galera.is_some() && c.mariadb.is_some() {
                    parts.push(format!("db (as {})", b.db_user));
                }
                if c.redis.is_some() {
                    parts.push("redis (RDB of a replica)".to_string());
                }
                if !b.files.is_empty() {
                    parts.push(format!("{} directories", b.files.len()));
                }
                format!(
                    "backup `{}` (UTC) of {} to restic {}, each run bounded by {} and verified \
                     by a restore; retention {}",
                    b.schedule,
                    if parts.is_empty() {
                        "nothing".to_string()
                    } else {
                        parts.join(", ")
                    },
                    b.repository,
                    humantime::format_duration(b.max_duration),
                    b.retention.args().join(" ")
                )
            }),
        }
    }

    /// The first line `check-config` prints.
    pub fn summary(&self) -> String {
        format!(
            "{}: valid (node {}, {} peers, api {}, raft {})",
            self.file.display(),
            self.node,
            self.members.len(),
            self.api,
            self.raft
        )
    }

    /// What the agent will do, one fact per line, without indentation.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "cluster {}: members {}",
            self.cluster_name,
            ids(&self.members)
        )];
        if self.probes.is_empty() {
            out.push("probes: none (no [redis], [mariadb], [phpfpm] or [gluster])".into());
        }
        for p in &self.probes {
            let what = if p.target.is_empty() {
                String::new()
            } else {
                format!("{} ", p.target)
            };
            out.push(format!(
                "probe {}: {what}on {} every {} (timeout {}, rise {}, fall {})",
                p.service,
                ids(&p.nodes),
                ms(p.interval_ms),
                ms(p.timeout_ms),
                p.rise,
                p.fall
            ));
        }
        let f = &self.redis_failover;
        out.push(match f.mode {
            FailoverMode::Off => "redis failover: off (no [redis])".into(),
            FailoverMode::Automatic => format!(
                "redis failover: automatic (hold-down {}, a replica lagging over {} bytes is \
                 not promoted)",
                ms(f.hold_down_ms),
                f.max_lag_bytes
            ),
            FailoverMode::Manual => "redis failover: manual (failover.automatic = false: the \
                                     decision is shown, never proposed; fencing and switchover \
                                     still run)"
                .into(),
        });
        match &self.haproxy {
            None => out.push("haproxy: not managed (no [haproxy])".into()),
            Some(h) => {
                let state = match &h.state_file {
                    Some(f) => format!("state saved to {}", f.display()),
                    None => "state not saved".into(),
                };
                let backends = if h.backends.is_empty() {
                    "; no backends driven"
                } else {
                    ""
                };
                out.push(format!(
                    "haproxy: admin socket {}, {state}{backends}",
                    h.admin_socket.display()
                ));
                for b in &h.backends {
                    out.push(format!(
                        "haproxy backend {} ({}): {} (servers {})",
                        b.name,
                        b.role,
                        b.keeps,
                        servers(&b.servers, &self.members)
                    ));
                }
            }
        }
        let s = &self.service_control;
        out.push(match s.kind {
            ServiceControlKind::None => "service control: none (Triad starts and stops no \
                                         service)"
                .into(),
            kind => format!(
                "service control: {} (stop timeout {}): {}; {}",
                kind.as_str(),
                ms(s.stop_timeout_ms),
                s.services
                    .iter()
                    .map(|(name, what)| format!("{name} = {what}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if s.active {
                    "used by the Galera recovery"
                } else {
                    "not acted on (no [galera])"
                }
            ),
        });
        out.push(match &self.galera {
            None => "galera recovery: off (no [galera]; MariaDB is only probed)".into(),
            Some(g) => format!(
                "galera recovery: {}; after a full outage the leader bootstraps the most \
                 advanced node (outage opens after {} with every mariadbd stopped, {} with \
                 some non-Primary; a bootstrapped node that falls again before anyone joined \
                 it: the next outage after {}); --wsrep-recover reads {}",
                if g.rejoin {
                    format!(
                        "a fallen mariadbd is restarted from its position while a majority is \
                         Primary (back-off from {}, at most {} per hour)",
                        ms(g.restart_backoff_ms),
                        g.restarts_per_hour
                    )
                } else {
                    "no rejoin (galera.rejoin = false)".into()
                },
                ms(g.open_after_stopped_ms),
                ms(g.open_after_non_primary_ms),
                ms(g.rebootstrap_after_ms),
                g.defaults_file.display()
            ),
        });
        if let Some(g) = &self.galera {
            out.push(format!(
                "galera writer: the leader commits one writer (sticky; moved when it is not \
                 Synced and Primary) and every HAProxy's galera-writer backend routes to it \
                 only; each agent checks its node every {}; {}",
                ms(g.writer_interval_ms),
                if g.evict_dead {
                    "a node whose mariadbd is gone is evicted at once (evs.evict)"
                } else {
                    "a gone node is left to Galera's suspect timeout (galera.evict_dead = false)"
                }
            ));
            let evs: Vec<String> = [
                ("evs.join_retrans_period", g.join_retrans_period_ms),
                ("evs.keepalive_period", g.keepalive_period_ms),
            ]
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k} {}", ms(v)))
            .collect();
            out.push(if evs.is_empty() {
                "galera EVS timing: left as each node configures it (Galera's defaults of PT1S \
                 stall commits about a second after an eviction or a rejoin)"
                    .to_string()
            } else {
                format!(
                    "galera EVS timing: {}, set on each node by its agent once per mariadbd \
                     process (views after an eviction or a join come that soon)",
                    evs.join(", ")
                )
            });
            out.push(match g.auto_increment_increment {
                0 => "galera auto-increment: not checked (galera.auto_increment_increment = 0)"
                    .into(),
                n => format!(
                    "galera auto-increment: every node increment {n} with its own offset in \
                     1..={n}, wsrep_auto_increment_control OFF; a serving node that differs is \
                     degraded"
                ),
            });
        }
        let t = &self.timing;
        out.push(format!(
            "raft timing: tick {}, election timeout {} to {}, ping every {}",
            ms(t.raft_tick_ms),
            ms(t.election_timeout_ms),
            ms(t.election_timeout_ms.saturating_mul(2)),
            ms(t.ping_interval_ms)
        ));
        if f.mode != FailoverMode::Off {
            out.push(format!(
                "failover timing: lease {}, clock margin {}, fencing bound {} (a cut-off agent \
                 has stopped routing to its Redis and fenced it that long after its lease \
                 lapsed), silent-path promotion {} after the old master's last lease renewal",
                ms(t.lease_ms),
                ms(t.clock_margin_ms),
                ms(t.fencing_bound_ms),
                ms(t.silent_promotion_ms)
            ));
        }
        out.extend(self.backup.clone());
        out
    }
}

fn ms(n: u64) -> String {
    humantime::format_duration(Duration::from_millis(n)).to_string()
}

fn ids(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `redis1..redis3` when the members are numbered 1, 2, 3 without a gap; the full list
/// otherwise.
fn servers(names: &[String], members: &[NodeId]) -> String {
    let consecutive = members
        .windows(2)
        .all(|w| w[0].get().checked_add(1) == Some(w[1].get()));
    match (names.first(), names.last()) {
        (Some(first), Some(last)) if names.len() > 2 && consecutive => format!("{first}..{last}"),
        _ => names.join(", "),
    }
}
