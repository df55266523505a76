//! Per-service controllers: the one shape every managed service follows inside the driver.
//!
//! A managed service has
//! 1. an **authority** in the replicated state ([`Authority`], a part of
//!    [`ClusterState`]) that only committed commands change, each epoch-checked on apply;
//! 2. a **pure decision** in `decide::<service>` from its inputs to its plan, composed with
//!    the others by [`crate::decide::decide`];
//! 3. a **controller** here ([`Controller`]): the clock-free state the decision needs between
//!    cycles (when this node saw a change, when a quorum applied a suspicion), the inputs it
//!    builds, what it does with the plan (metrics), its lease embargo, and the **target** it
//!    publishes for the local reconciler;
//! 4. a **local reconciler** (an adapter, `reconcile` for Redis) that drives this VM's
//!    daemons to the target and reports what it carried out;
//! 5. its **status** (the plan, in the API) and **metrics**.
//!
//! The [`Driver`](crate::driver::Driver) owns a list of controllers and steps them all the
//! same way on every tick: [`Controller::observe`] (every node), then, on the leader when a
//! decision is due, [`Controller::inputs`] → `decide` → [`Controller::planned`]. Proposals
//! are keyed in flight by their command's [`Authority`], so one service's slow commit never
//! holds back another's, and `[failover] automatic = false` holds back exactly the commands
//! that say they are automatic ([`Command::is_automatic_failover`]).
//!
//! Adding a service (Galera, backups, the web tier) means: its authority and commands in
//! `cluster`, its decision module and one [`ServiceInputs`]/[`ServicePlan`] variant in
//! `decide`, a controller module here, one [`ServiceTarget`] variant, and its reconciler
//! adapter. The event loop does not change.
//!
//! Pure: no I/O and no clock; time comes in as [`Clock`] values and observations as the
//! [`Reports`] the driver extracted from the health store.
//!
//! Controllers today: [`redis`] (the Redis master), [`galera`] (full-outage recovery),
//! [`galera_writer`] (the writer every HAProxy routes to, and evictions), [`backup`] (the
//! backup schedule, lease and catalog), [`web`] (the web rotation every HAProxy's web
//! backend follows) and [`remedy`] (the one remediation at a time).
//!
//! Caveats:
//! - The lease embargo is the union of every controller's: a peer behind the newest decision
//!   of any authority gets no lease renewal from this node until it has applied it.
//! - The reconciled index an agent reports is one number (the newest Redis decision carried
//!   out); a second reconciled authority needs one per authority in the report.

pub mod backup;
pub mod galera;
pub mod galera_writer;
pub mod redis;
pub mod remedy;
pub mod web;

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Authority, ClusterState, Command};
use crate::config::Validated;
use crate::decide::backup::BackupSettings;
use crate::decide::galera::GaleraSettings;
use crate::decide::galera_writer::WriterSettings;
use crate::decide::redis::FailoverSettings;
use crate::decide::web::WebSettings;
use crate::decide::{ServiceInputs, ServicePlan};
use crate::health::Seen;
use crate::ids::{NodeId, UnixMillis};
use crate::metrics::Metrics;
use crate::observation::{Observation, Service};
use crate::reconcile::backup::BackupTarget;
use crate::reconcile::galera::GaleraTarget;
use crate::reconcile::galera_writer::WriterTarget;
use crate::reconcile::redis::RedisTarget;
use crate::reconcile::web::WebTarget;

/// The time, as the shell hands it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Milliseconds of the process's monotonic clock (the time base of [`crate::health::HealthStore`]).
    pub mono_ms: u64,
    /// Wall-clock time (stamped on proposals; compared with committed change times).
    pub wall: UnixMillis,
}

/// What a local reconciler drives its daemons towards, as the controller publishes it.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceTarget {
    /// The Redis master and maintenance (the reconciler task adds the lease and its clock).
    Redis(RedisTarget),
    /// The Galera authority and maintenance.
    Galera(GaleraTarget),
    /// The Galera writer authority, maintenance and whether an outage is open.
    GaleraWriter(WriterTarget),
    /// The backup lease and what the runner needs beside it.
    Backup(BackupTarget),
    /// The web rotation.
    Web(WebTarget),
    /// The remediation lease.
    Remedy(crate::reconcile::remedy::RemedyTarget),
}

impl ServiceTarget {
    /// The Redis target, when this is one.
    pub fn as_redis(&self) -> Option<&RedisTarget> {
        match self {
            ServiceTarget::Redis(t) => Some(t),
            _ => None,
        }
    }

    /// The Galera target, when this is one.
    pub fn as_galera(&self) -> Option<&GaleraTarget> {
        match self {
            ServiceTarget::Galera(t) => Some(t),
            _ => None,
        }
    }

    /// The backup target, when this is one.
    pub fn as_backup(&self) -> Option<&BackupTarget> {
        match self {
            ServiceTarget::Backup(t) => Some(t),
            _ => None,
        }
    }

    /// The remediation target, when this is one.
    pub fn as_remedy(&self) -> Option<&crate::reconcile::remedy::RemedyTarget> {
        match self {
            ServiceTarget::Remedy(t) => Some(t),
            _ => None,
        }
    }

    /// The web target, when this is one.
    pub fn as_web(&self) -> Option<&WebTarget> {
        match self {
            ServiceTarget::Web(t) => Some(t),
            _ => None,
        }
    }

    /// The Galera writer target, when this is one.
    pub fn as_galera_writer(&self) -> Option<&WriterTarget> {
        match self {
            ServiceTarget::GaleraWriter(t) => Some(t),
            _ => None,
        }
    }
}

/// What the health store says this cycle, extracted once for every controller.
#[derive(Debug, Default)]
pub struct Reports {
    /// Every observer's latest observations, aged; filled only when the leader decides.
    pub seen: Vec<Seen>,
    /// Age of each agent's latest report.
    pub ages: BTreeMap<NodeId, u64>,
    /// The applied index each agent last reported.
    pub applied: BTreeMap<NodeId, u64>,
    /// The reconciled index each agent last reported.
    pub reconciled: BTreeMap<NodeId, u64>,
    /// Per agent, per peer: when (this node's monotonic ms) the agent last answered that
    /// peer's lease ping, as its latest report told.
    pub pongs: BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    /// The backup run each agent's latest report carried.
    pub backup_runs: BTreeMap<NodeId, crate::cluster::BackupRun>,
    /// The remediation each agent's latest report carried.
    pub remedy_runs: BTreeMap<NodeId, crate::cluster::RemedyRun>,
}

/// Everything a controller may look at in one driver cycle.
#[derive(Debug)]
pub struct Context<'a> {
    /// This node.
    pub me: NodeId,
    /// The configured voters, sorted.
    pub members: &'a [NodeId],
    /// Whether this node is the Raft leader.
    pub is_leader: bool,
    /// The applied cluster state.
    pub state: &'a ClusterState,
    /// The health reports.
    pub reports: &'a Reports,
    /// Authorities with a proposal in flight.
    pub in_flight: &'a BTreeSet<Authority>,
    /// Now.
    pub clock: Clock,
    /// A planted bug (simulation only): tell the decision that a suspect's lease has long
    /// run out.
    #[doc(hidden)]
    pub skip_lease_wait: bool,
    /// A planted bug (simulation only): tell the decision that every agent applied the
    /// current suspicion.
    #[doc(hidden)]
    pub assume_applied_by_all: bool,
    /// A planted bug (simulation only): tell the backup decision that the holder of an
    /// expired lease has stopped.
    #[doc(hidden)]
    pub assume_backup_stopped: bool,
}

impl Context<'_> {
    /// Whether a proposal for `authority` is in flight.
    pub fn in_flight(&self, authority: Authority) -> bool {
        self.in_flight.contains(&authority)
    }
}

/// One managed service inside the driver. See the module docs.
pub trait Controller: Send {
    /// The authority this controller decides for.
    fn authority(&self) -> Authority;

    /// Follows the applied state on every node, every tick (timelines, metrics of committed
    /// changes). Returns true when this agent should report its health at once.
    fn observe(&mut self, cx: &Context<'_>) -> bool;

    /// Peers whose lease this node must not renew because of this authority.
    fn embargo(&self) -> BTreeSet<NodeId> {
        BTreeSet::new()
    }

    /// The decision's inputs; called on the leader when a decision is due.
    fn inputs<'a>(&'a self, cx: &'a Context<'a>) -> Option<ServiceInputs<'a>>;

    /// Takes note of the plan the decision made for this authority (metrics, status); `None`
    /// when a decision was due but this authority got none (a follower, membership pending).
    fn planned(&mut self, plan: Option<&ServicePlan>, cx: &Context<'_>);

    /// The leader's latest plan (absent on followers and before the first decision).
    fn plan(&self) -> Option<&ServicePlan>;

    /// What the local reconciler should drive towards, from the applied state; `None` when
    /// this node has nothing to reconcile for the service.
    fn target(&self, state: &ClusterState) -> Option<ServiceTarget>;
}

/// Which services this agent manages, with each controller's settings (from the config).
#[derive(Clone, Debug, Default)]
pub struct Services {
    /// Redis, when `[redis]` is configured.
    pub redis: Option<RedisSettings>,
    /// Galera recovery, when `[galera]` is configured.
    pub galera: Option<GaleraSettings>,
    /// The Galera writer and evictions, when `[galera]` is configured.
    pub galera_writer: Option<WriterSettings>,
    /// Backups, when `[backup]` is configured.
    pub backup: Option<BackupSettings>,
    /// The web rotation, when `[web]` is configured.
    pub web: Option<WebSettings>,
    /// Remediations, when `[web]` is configured with `restart_phpfpm` and a service control.
    pub remedy: Option<crate::decide::remedy::RemedySettings>,
}

/// The Redis controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct RedisSettings {
    /// The failover decision's tunables (`[failover]`).
    pub failover: FailoverSettings,
    /// The Redis probe's interval in milliseconds (dates a master's first failed check).
    pub probe_interval_ms: u64,
}

impl Services {
    /// The services the configuration manages.
    pub fn from_config(cfg: &Validated) -> Self {
        let c = &cfg.config;
        Services {
            redis: c.redis.as_ref().map(|r| RedisSettings {
                failover: c.failover.settings(),
                probe_interval_ms: u64::try_from(
                    r.effective_timing(&c.probes).interval.as_millis(),
                )
                .unwrap_or(u64::MAX),
            }),
            galera: c.galera.as_ref().map(|g| g.settings()),
            galera_writer: c.galera.as_ref().map(|g| g.writer_settings()),
            backup: crate::config::backup_settings(c),
            web: c.web.as_ref().map(|w| w.settings()),
            remedy: cfg.remedy_settings(),
        }
    }

    /// One controller per managed service, in a fixed order, for an agent that started at
    /// `started_ms` with `state` restored.
    pub fn controllers(
        &self,
        me: NodeId,
        members: &[NodeId],
        state: &ClusterState,
        metrics: &Metrics,
        started_ms: u64,
    ) -> Vec<Box<dyn Controller>> {
        let mut out: Vec<Box<dyn Controller>> = Vec::new();
        if let Some(r) = &self.redis {
            out.push(Box::new(redis::RedisController::new(
                me,
                members,
                state,
                r.failover,
                r.probe_interval_ms,
                metrics.clone(),
                started_ms,
            )));
        }
        if let Some(g) = &self.galera {
            out.push(Box::new(galera::GaleraController::new(*g, metrics.clone())));
        }
        if let Some(w) = &self.galera_writer {
            out.push(Box::new(galera_writer::GaleraWriterController::new(
                *w,
                metrics.clone(),
            )));
        }
        if let Some(b) = &self.backup {
            out.push(Box::new(backup::BackupController::new(
                b.clone(),
                metrics.clone(),
            )));
        }
        if let Some(w) = &self.web {
            out.push(Box::new(web::WebController::new(*w, metrics.clone())));
        }
        if let Some(r) = &self.remedy {
            out.push(Box::new(remedy::RemedyController::new(*r, metrics.clone())));
        }
        out
    }
}

/// Whether `command` may be proposed with automatic failover set as configured.
pub fn allowed(command: &Command, automatic: bool) -> bool {
    automatic || !command.is_automatic_failover()
}

/// The observations of the services that a decision cycle's evidence is computed from: who
/// reported each, the observation itself (shared, `Arc`, until a newer report replaces it),
/// whether it was within the freshness bound and when it was taken. The leader decides several
/// times a second but reports change about once a second per agent; two cycles with the same
/// key yield the same evidence, so a controller keeps its evidence instead of parsing every
/// observation's JSON details again (that parsing was most of the leader's decision time).
/// Holding the `Arc`s keeps their addresses from being reused while compared.
#[derive(Debug, Default)]
pub(crate) struct SeenKey(Vec<(NodeId, std::sync::Arc<Observation>, bool, u64)>);

impl SeenKey {
    /// The key of `seen`'s observations of `services`.
    pub(crate) fn of(seen: &[Seen], services: &[Service], freshness_ms: u64, now_ms: u64) -> Self {
        SeenKey(
            seen.iter()
                .filter(|s| services.contains(&s.observation.id.service))
                .map(|s| {
                    (
                        s.observer,
                        s.observation.clone(),
                        s.age_ms <= freshness_ms,
                        now_ms.saturating_sub(s.age_ms),
                    )
                })
                .collect(),
        )
    }

    /// Whether both keys name the same observations, alike in freshness and time.
    pub(crate) fn same(&self, other: &SeenKey) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|(a, b)| {
                a.0 == b.0 && std::sync::Arc::ptr_eq(&a.1, &b.1) && a.2 == b.2 && a.3 == b.3
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::{CheckResult, ProbeId};
    use std::sync::Arc;

    fn observation(subject: u64, service: Service) -> Arc<Observation> {
        let last = CheckResult::healthy(serde_json::json!({"cluster_status": "Primary"}));
        Arc::new(Observation {
            id: ProbeId {
                subject: NodeId(subject),
                service,
                target: String::new(),
            },
            status: last.status,
            last,
            failures: 0,
            successes: 1,
            latency_us: 0,
            observed_at: UnixMillis(0),
        })
    }

    fn seen(observer: u64, observation: &Arc<Observation>, age_ms: u64) -> Seen {
        Seen {
            observer: NodeId(observer),
            observation: observation.clone(),
            age_ms,
        }
    }

    /// Evidence is reused only for the very same observations, alike in freshness and in the
    /// time they were taken; other services' observations do not matter.
    #[test]
    fn seen_key_names_the_same_observations_only() {
        let db1 = observation(1, Service::Mariadb);
        let db2 = observation(2, Service::Mariadb);
        let redis = observation(1, Service::Redis);
        let key = |seen: &[Seen], now: u64| SeenKey::of(seen, &[Service::Mariadb], 2000, now);
        let base = key(&[seen(1, &db1, 100), seen(2, &db2, 300)], 10_000);
        // The same reports 50 ms later: older by 50 ms, taken at the same time, still fresh.
        let later = key(
            &[seen(1, &db1, 150), seen(2, &db2, 350), seen(1, &redis, 10)],
            10_050,
        );
        assert!(base.same(&later));
        // One of them went stale.
        assert!(!base.same(&key(&[seen(1, &db1, 2100), seen(2, &db2, 2300)], 12_000)));
        // A new observation with the same content (a newer report).
        let db1_again = observation(1, Service::Mariadb);
        assert!(!base.same(&key(
            &[seen(1, &db1_again, 100), seen(2, &db2, 300)],
            10_000
        )));
        // The same observation arriving with a different age (another report).
        assert!(!base.same(&key(&[seen(1, &db1, 100), seen(2, &db2, 200)], 10_000)));
        // One missing, or seen by another observer.
        assert!(!base.same(&key(&[seen(1, &db1, 100)], 10_000)));
        assert!(!base.same(&key(&[seen(3, &db1, 100), seen(2, &db2, 300)], 10_000)));
        assert!(SeenKey::default().same(&key(&[seen(1, &redis, 1)], 5)));
    }

    /// A key over several services (the web and remediation evidence): a new observation of
    /// any of them changes it, one of another service does not.
    #[test]
    fn seen_key_over_several_services() {
        let fpm = observation(1, Service::Phpfpm);
        let mount = observation(1, Service::GlusterMount);
        let db = observation(1, Service::Mariadb);
        let web = [Service::Phpfpm, Service::GlusterMount];
        let key = |seen: &[Seen]| SeenKey::of(seen, &web, 3000, 10_000);
        let base = key(&[seen(1, &fpm, 100), seen(1, &mount, 100)]);
        assert!(base.same(&key(&[
            seen(1, &fpm, 100),
            seen(1, &db, 5),
            seen(1, &mount, 100)
        ])));
        let mount_again = observation(1, Service::GlusterMount);
        assert!(!base.same(&key(&[seen(1, &fpm, 100), seen(1, &mount_again, 100)])));
        assert!(!base.same(&key(&[seen(1, &fpm, 100)])));
    }
}
