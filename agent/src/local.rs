//! The local reconcilers: one tokio task per managed service that drives this VM's daemons to
//! the target its controller publishes (see `controller`), and reports what it carried out.
//!
//! The event loop (`node`) owns a [`LocalReconcilers`]: it hands it every target the driver
//! publishes ([`LocalReconcilers::publish`], one watch channel per service, sent only on a
//! change) and reads back the newest decision carried out
//! ([`LocalReconcilers::reconciled`]), which the agent reports to its peers. Each task paces
//! itself with its own clock-free pacer (`reconcile::redis::Pacer` for Redis), which the simulation
//! runs too; what is here is the thin tokio glue: timers, the lease source, logs, metrics and
//! the status view.
//!
//! Caveats:
//! - Only Redis has a reconciler today (with the local HAProxy's Redis backend on its side);
//!   the Galera and web-tier reconcilers add one `spawn_*` each.
//! - The reported reconciled index is Redis's (see `controller`).

// Reads the clock (adapter: cycle timestamps, the pacer's time); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::actuator::haproxy::HaproxySocket;
use crate::actuator::redis::RedisServer;
use crate::cluster::Authority;
use crate::config::{BackendRole, ConfigError, Validated};
use crate::controller::ServiceTarget;
use crate::decide::ServicePlan;
use crate::driver::Driver;
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::raft::transport::Transport;
use crate::reconcile::redis::{HaproxyTarget, Pace, Pacer, RedisReconciler};
use crate::reconcile::Timer;
use crate::status::{LocalRedisView, RedisCoreView, ServiceViews};

/// The running local reconcilers of this node. See the module docs.
pub struct LocalReconcilers {
    targets: BTreeMap<Authority, watch::Sender<Option<ServiceTarget>>>,
    redis: Arc<Mutex<LocalRedisView>>,
    redis_managed: bool,
}

impl LocalReconcilers {
    /// Starts a reconciler for every service the driver has a target for (or will have, under
    /// a planted bug) and this node runs locally. Each starts from the driver's current target.
    pub fn spawn(
        cfg: &Validated,
        driver: &Driver,
        transport: &Transport,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Result<Self, ConfigError> {
        let redis = Arc::new(Mutex::new(LocalRedisView {
            waiting: Some("starting".into()),
            ..LocalRedisView::default()
        }));
        let mut targets = BTreeMap::new();
        if cfg.config.redis.is_some() {
            let (tx, rx) = watch::channel(driver.target(Authority::Redis).cloned());
            if spawn_redis(
                cfg,
                transport.clone(),
                rx,
                redis.clone(),
                metrics.clone(),
                shutdown.clone(),
            )? {
                targets.insert(Authority::Redis, tx);
            }
        }
        Ok(LocalReconcilers {
            targets,
            redis,
            redis_managed: cfg.config.redis.is_some(),
        })
    }

    /// Hands every reconciler the driver's current target (a send only on a change).
    pub fn publish(&self, driver: &Driver) {
        for (&authority, tx) in &self.targets {
            let target = driver.target(authority).cloned();
            tx.send_if_modified(|cur| {
                let changed = *cur != target;
                if changed {
                    *cur = target;
                }
                changed
            });
        }
    }

    /// The newest decision carried out locally (Redis's; 0 before the first cycle).
    pub fn reconciled(&self) -> u64 {
        self.redis.lock().map_or(0, |v| v.reconciled_index)
    }

    /// Each managed service's side of the published status: for Redis, the leader's plan,
    /// the lease embargo and the local reconciler's view.
    pub fn views(&self, driver: &Driver) -> ServiceViews {
        ServiceViews {
            redis: self.redis_managed.then(|| RedisCoreView {
                plan: redis_plan(driver).cloned(),
                embargo: driver.embargo().iter().copied().collect(),
                local: self.redis.clone(),
            }),
        }
    }

    /// Whether `views` still shows what [`LocalReconcilers::views`] would build now, without
    /// building it (the event loop asks after every event).
    pub fn views_current(&self, views: &ServiceViews, driver: &Driver) -> bool {
        match (&views.redis, self.redis_managed) {
            (None, managed) => !managed,
            (Some(_), false) => false,
            (Some(r), true) => {
                r.plan.as_ref() == redis_plan(driver)
                    && r.embargo.iter().eq(driver.embargo().iter())
                    && Arc::ptr_eq(&r.local, &self.redis)
            }
        }
    }
}

/// The leader's latest Redis plan, as the driver has it.
fn redis_plan(driver: &Driver) -> Option<&crate::decide::redis::RedisPlan> {
    driver
        .plan(Authority::Redis)
        .and_then(ServicePlan::as_redis)
}

/// Starts the Redis reconciler task: every `reconcile_interval` (and at once on a new target)
/// it checks the lease and runs one [`RedisReconciler::cycle`]. Returns false when this node has no
/// local Redis to reconcile (no `[redis]`, or no `redis_addr` for this node).
fn spawn_redis(
    cfg: &Validated,
    transport: Transport,
    mut targets: watch::Receiver<Option<ServiceTarget>>,
    view: Arc<Mutex<LocalRedisView>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<bool, ConfigError> {
    let me = cfg.node_id();
    let c = &cfg.config;
    let Some(r) = &c.redis else {
        return Ok(false);
    };
    let fo = c.failover.clone();
    let addrs: BTreeMap<NodeId, std::net::SocketAddr> = cfg
        .members
        .iter()
        .filter_map(|m| Some((m.id, m.redis_addr?)))
        .collect();
    let Some(&local) = addrs.get(&me) else {
        return Ok(false);
    };
    let redis = Arc::new(RedisServer::from_config(local, r, &fo)?);
    let haproxy = c.haproxy.as_ref().and_then(|h| {
        let backend = h.backend(BackendRole::RedisMaster)?;
        let mut sock = HaproxySocket::new(&h.admin_socket, fo.action_timeout);
        if let Some(f) = &h.state_file {
            sock = sock.with_state_file(f);
        }
        Some(HaproxyTarget {
            haproxy: Arc::new(sock),
            backend: backend.name.clone(),
            servers: cfg
                .members
                .iter()
                .map(|m| (m.id, backend.server(m.id)))
                .collect(),
            save_state: h.state_file.is_some(),
        })
    });
    // Each side of a cycle (Redis, HAProxy) shares one `action_timeout`; with the lease
    // counted as lapsed once less than a full cycle of it is left, a cut-off agent has taken
    // HAProxy out of service and fenced its Redis within max(reconcile_interval,
    // 2 * action_timeout) of its lease running out (the config check's arithmetic).
    let timer: Timer = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let mut rec =
        RedisReconciler::new(me, addrs, redis, haproxy).with_deadline(fo.action_timeout, timer);
    let quorum = cfg.members.len() / 2 + 1;
    let ping = c.raft.tick_interval * c.raft.heartbeat_ticks as u32;
    let started = Instant::now();
    let now_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut pacer = Pacer::new(fo.lease, ping * 2, fo.action_timeout, now_ms());
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(fo.reconcile_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_errors: (Option<String>, Option<String>) = (None, None);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => pacer.tick(),
                r = targets.changed() => if r.is_err() { break },
            }
            let lease = transport.lease(fo.lease, quorum - 1);
            let target = targets
                .borrow()
                .as_ref()
                .and_then(ServiceTarget::as_redis)
                .cloned();
            let pace = pacer.next(target.as_ref(), lease.valid, lease.remaining, now_ms());
            let valid = pacer.lease_valid();
            metrics.lease_valid.set(i64::from(valid));
            let set_view = |f: &mut dyn FnMut(&mut LocalRedisView)| {
                if let Ok(mut v) = view.lock() {
                    v.lease_valid = valid;
                    v.lease_remaining_ms = lease.remaining.as_millis() as u64;
                    f(&mut v);
                }
            };
            let target = match pace {
                Pace::Skip => continue,
                Pace::Wait(why) => {
                    set_view(&mut |v| v.waiting = Some(why.into()));
                    continue;
                }
                Pace::Run(target) => target,
            };
            let report = rec.cycle(&target).await;
            let reconciled = pacer.done(&target, &report);
            if report.fenced_now {
                metrics.redis_fence_events.inc();
                tracing::warn!(lease = valid, epoch = %target.authority.epoch,
                    "fenced the local Redis (writes refused)");
            }
            if !report.redis_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["redis"])
                    .inc_by(report.redis_actions.len() as u64);
                tracing::info!(actions = ?report.redis_actions, epoch = %target.authority.epoch,
                    lease = valid, "reconciled the local Redis");
            }
            if !report.haproxy_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["haproxy"])
                    .inc_by(report.haproxy_actions.len() as u64);
                tracing::info!(actions = ?report.haproxy_actions, epoch = %target.authority.epoch,
                    lease = valid, "reconciled the local HAProxy");
            }
            for (side, err, last) in [
                ("redis", &report.redis_error, &mut last_errors.0),
                ("haproxy", &report.haproxy_error, &mut last_errors.1),
            ] {
                if err.is_some() {
                    metrics.reconcile_errors.with_label_values(&[side]).inc();
                }
                if err != last {
                    match err {
                        Some(e) => {
                            tracing::warn!(side, error = %e, "reconciliation failed; retrying")
                        }
                        None => tracing::info!(side, "reconciliation works again"),
                    }
                    last.clone_from(err);
                }
            }
            set_view(&mut |v| {
                v.cycles += 1;
                v.waiting = None;
                v.last_cycle = Some(report.clone());
                v.last_cycle_at = Some(Instant::now());
                v.reconciled_index = reconciled;
            });
        }
    });
    Ok(true)
}
