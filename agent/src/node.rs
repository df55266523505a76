//! The wiring: the one event loop that owns the Raft core and the cluster state, and connects
//! them to the adapters (peer transport, HTTP API, systemd).
//!
//! One tokio task runs [`run`]'s loop. It is the only router: a closed set of events (a tick,
//! an inbound peer message, an API request, shutdown) comes in through one `select!`; after each
//! event it drains the Raft core's ready state, applies committed entries, answers waiting
//! proposers, and publishes a fresh [`CoreStatus`] for the API. Nothing in the loop blocks on
//! the network: the transport queues without waiting and the API reads published snapshots.
//!
//! Proposals are tracked by a [`ProposalId`] carried inside the entry. The caller waits until
//! the entry is applied *on this node* (read-your-writes) or until `api.proposal_timeout`; an
//! entry lost to a leadership change simply times out. Nothing authoritative happens before
//! commit.
//!
//! The agent runs every task on one thread (see `cli::run`), so the loop's own work holds up
//! the other tasks while it runs: it is short (microseconds) except for a Raft storage
//! write, one `fsync` per batch of new entries, which happen only around decisions. A disk
//! that takes long to sync delays this agent's pongs, API answers and probe checks by as much;
//! that errs on the safe side (a peer's lease is renewed later, an HAProxy check may time out
//! and take a server out, a local check may time out: one agent's view, and no failover rests
//! on one agent's view), never the other way.
//!
//! Caveats: a storage error stops the agent (exit code 70) rather than continue on state that
//! is not durable; systemd restarts it.

// Reads the clock (adapter: the tokio shell hands the driver its time); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::cluster::MemberInfo;
use crate::codec::{self, ProposalId};
use crate::config::{self, Validated};
use crate::driver::{Clock, Driver, DriverConfig, Plant, Services};
use crate::ids::NodeId;
use crate::local::LocalReconcilers;
use crate::metrics::Metrics;
use crate::observation::Thresholds;
use crate::observe::{self, LocalObservations};
use crate::probe;
use crate::probe::runner::now_millis;
use crate::raft::transport::{Inbound, Transport, TransportConfig};
use crate::raft::{CoreConfig, RaftError, RaftNode, RaftStore, Role};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Configuration problem found at start.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data directory could not be created.
    #[error("data_dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Raft or its storage failed.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// Storage could not be opened.
    #[error(transparent)]
    Store(#[from] crate::raft::StoreError),
    /// The stored snapshot cannot be read.
    #[error("stored snapshot: {0}")]
    Snapshot(#[from] codec::CodecError),
    /// The peer transport could not start.
    #[error(transparent)]
    Transport(#[from] crate::raft::transport::TransportError),
    /// The API could not start.
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The driver failed (storage, or a snapshot that cannot be read).
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
    /// The hooks could not be set up (the webhook's CA file).
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
}

pub use crate::driver::{Applied, AppliedEntry, ProposeError, StateMachine};

pub use crate::status::{CoreStatus, Handles, Liveness, Request, ServiceViews};

type Reply = oneshot::Sender<Result<Applied, ProposeError>>;

/// The probes checked back to back while they time out (`probe::runner::spawn_all`): this
/// node's Redis, up to `failover.hung_after`, so that its run of timeouts proves a hung master
/// within one probe timeout of that bound.
fn rush_probes(cfg: &Validated) -> BTreeMap<crate::probe::ProbeId, Duration> {
    let hung_after = cfg.config.failover.hung_after;
    if cfg.config.redis.is_none() || hung_after.is_zero() {
        return BTreeMap::new();
    }
    let id = crate::probe::ProbeId {
        subject: cfg.node_id(),
        service: crate::probe::Service::Redis,
        target: String::new(),
    };
    BTreeMap::from([(id, hung_after)])
}

/// Raft ticks applied per wake-up of the loop's ticker: the ticker runs every two ticks and
/// applies both. Raft's logical time keeps its rate; the leader's heartbeats (every
/// `heartbeat_ticks`, 2 by default) still go out every 100 ms, and a follower's election
/// timeout (10 to 20 ticks) fires at most one tick late. Ticking every 50 ms made the Raft
/// tick the only user of half the grid's beats (see `pace`): every other wake-up of every
/// agent did nothing else. The whole-cluster simulation steps single ticks; the driver's
/// decisions count ticks, not wake-ups ([`Driver::on_ticks`]).
const RAFT_TICKS_PER_WAKE: u32 = 2;

/// Sends this agent's health report to its peers and ingests it here, when one is due (a
/// changed observation past the shortest gap, a request from the driver, or the longest gap).
fn send_report_if_due(
    driver: &mut Driver,
    local: &mut LocalObservations,
    transport: &Transport,
    me: NodeId,
    reconciled: u64,
    clock: Clock,
) {
    if driver.take_report_request() {
        local.mark_dirty();
    }
    let mono = clock.mono_ms;
    if !local.report_due(mono) {
        return;
    }
    let items = local.take_report(mono);
    tracing::debug!(observations = items.len(), "health report sent");
    // The index the installed embargo follows, and the pongs given up to now (see
    // `Driver::reported_applied`): the caller installed the embargo first.
    let applied = driver.reported_applied();
    let pongs = transport.pong_ages_ms();
    let backup_run = driver.backup_run().cloned();
    let remedy_run = driver.remedy_run().cloned();
    transport.broadcast_report(&codec::encode_report(
        &items,
        applied,
        reconciled,
        &pongs,
        backup_run.as_ref(),
        remedy_run.as_ref(),
    ));
    driver.ingest(
        me,
        codec::DecodedReport {
            observations: observe::as_received(&items),
            applied_index: applied,
            reconciled_index: reconciled,
            // Its own pongs: when it last answered each peer, on its own clock.
            pongs,
            backup_run,
            remedy_run,
        },
        clock,
    );
}

/// Runs the agent until `shutdown` is cancelled or a fatal error occurs.
pub async fn run(cfg: Validated, shutdown: CancellationToken) -> Result<(), NodeError> {
    let me = cfg.node_id();
    let data_dir = cfg.config.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| NodeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let voters: Vec<u64> = cfg.members.iter().map(|m| m.id.get()).collect();
    let store = RaftStore::open_dir(&data_dir, &voters)?;
    let rcfg = cfg.config.raft.clone();
    let raft = RaftNode::new(
        &CoreConfig {
            id: me,
            election_ticks: rcfg.election_ticks,
            heartbeat_ticks: rcfg.heartbeat_ticks,
            timeout_seed: None,
            snapshot_validator: codec::validate_state,
        },
        store,
    )?;
    let metrics = Metrics::new(&me.to_string())?;
    let token: crate::reload::TokenCell = Arc::new(std::sync::RwLock::new(
        crate::reload::read_token(cfg.config.api.token_file.as_deref())?,
    ));
    let read_token: crate::reload::TokenCell = Arc::new(std::sync::RwLock::new(
        crate::reload::read_token(cfg.config.api.read_token_file.as_deref())?,
    ));
    let tick = rcfg.tick_interval;
    let election_timeout = tick * rcfg.election_ticks as u32;
    // One kernel timer beating on the Raft tick's grid drives every periodic task started
    // below (see `pace`); without it they run on tokio timers, correctly but with more
    // wake-ups.
    if let Err(err) = crate::pace::start_metronome(tick) {
        tracing::warn!(%err, "periodic work runs on tokio timers");
    }
    let tls = config::load_tls(&cfg.file, &cfg.config)?.map(Arc::new);
    match &tls {
        Some(_) => tracing::info!(cluster = %cfg.config.cluster_name, "peers: mutual TLS 1.3"),
        None => tracing::warn!(
            "peers: PLAINTEXT, unauthenticated (tls.insecure_plaintext_peers = true): anything \
             that reaches the Raft port can join this cluster; for throwaway test clusters only"
        ),
    }
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(4096);
    let transport = Transport::start(
        TransportConfig {
            cluster: cfg.config.cluster_name.clone(),
            me,
            listen: cfg.raft_listen,
            peers: cfg.members.iter().map(|m| (m.id, m.raft_addr)).collect(),
            max_frame_bytes: rcfg.max_frame_bytes,
            ping_interval: tick * rcfg.ping_ticks as u32,
            reachable_window: election_timeout,
            tls,
            safety_timings: config::safety_timings(&cfg.config),
        },
        inbound_tx,
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    let configured: BTreeMap<NodeId, MemberInfo> = cfg
        .members
        .iter()
        .map(|m| {
            (
                m.id,
                MemberInfo {
                    raft_addr: m.raft_addr.to_string(),
                    api_addr: m.api_addr.to_string(),
                },
            )
        })
        .collect();
    let liveness = Arc::new(Liveness::new(tick * 3 * RAFT_TICKS_PER_WAKE));
    liveness.beat();
    let clock = || Clock {
        mono_ms: liveness.mono_ms(),
        wall: now_millis(),
    };
    let proposal_timeout = cfg.config.api.proposal_timeout;
    let mut member_ids: Vec<NodeId> = cfg.members.iter().map(|m| m.id).collect();
    member_ids.sort();
    let fo = cfg.config.failover.clone();
    let mut driver = Driver::new(
        raft,
        DriverConfig {
            me,
            members: member_ids,
            configured,
            automatic: fo.automatic,
            services: Services::from_config(&cfg),
            snapshot_entries: rcfg.snapshot_entries,
            proposal_timeout_ms: u64::try_from(proposal_timeout.as_millis()).unwrap_or(u64::MAX),
            plant: Plant::None,
        },
        metrics.clone(),
        clock(),
    )?;
    let (status_tx, status_rx) = watch::channel(Arc::new(CoreStatus {
        raft: driver.raft_status(),
        cluster: driver.cluster().clone(),
        verdict: driver.verdict().to_string(),
        storage_loaded: true,
        health: driver.health().clone(),
        services: ServiceViews::default(),
    }));
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(256);
    let galera_notes = crate::probe::mariadb::GaleraNotes::default();
    let probes = probe::build::from_config_with(
        &cfg,
        cfg.config.galera.is_some().then(|| galera_notes.clone()),
    )?;
    let mut local = LocalObservations::new(probes.iter().map(|p| {
        let t = p.timing();
        (
            p.id().clone(),
            Thresholds {
                rise: t.rise,
                fall: t.fall,
            },
        )
    }))
    .with_link_stale_after(
        u64::try_from(cfg.config.failover.link_stale_after.as_millis()).unwrap_or(u64::MAX),
    );
    let (probe_tx, mut probe_rx) = mpsc::channel::<probe::runner::ProbeEvent>(1024);
    // Every probe's timing; a reload replaces it (probe tasks, trackers, the API read it).
    let (timings_tx, timings_rx) =
        tokio::sync::watch::channel::<probe::runner::ProbeTimings>(Arc::new(
            probes
                .iter()
                .map(|p| (p.id().clone(), p.timing()))
                .collect(),
        ));
    let mut thresholds_rx = timings_rx.clone();
    let probe_count = probes.len();
    // Probes checked at once when a watched process exits (see `local::spawn_watches`).
    let kicks = crate::local::spawn_watches(&cfg, &shutdown);
    {
        let m = metrics.clone();
        probe::runner::spawn_all_with(
            probes,
            probe_tx,
            shutdown.clone(),
            Arc::new(move |_| m.probe_results_dropped.inc()),
            &kicks.by_probe,
            &rush_probes(&cfg),
            timings_rx.clone(),
        );
    }
    let is_member = {
        let ids: Vec<NodeId> = cfg.members.iter().map(|m| m.id).collect();
        move |n: NodeId| ids.contains(&n)
    };
    let hooks = crate::hooks::Hooks::from_config(&cfg, &metrics)?;
    // The driver publishes its targets from the restored state at once (see `driver`).
    let reconcilers = LocalReconcilers::spawn(
        &cfg,
        &driver,
        &transport,
        &metrics,
        crate::local::LocalShared {
            galera_notes: &galera_notes,
            liveness: &liveness,
            mariadb_kick: kicks.mariadb,
            phpfpm_kick: kicks.phpfpm,
            hooks: hooks.clone(),
        },
        &shutdown,
    )?;
    let cfg = Arc::new(cfg);
    let handles = Handles {
        config: cfg.clone(),
        status: status_rx,
        requests: req_tx,
        transport: transport.clone(),
        metrics: metrics.clone(),
        liveness: liveness.clone(),
        token: token.clone(),
        read_token: read_token.clone(),
        limits: Arc::new(std::sync::Mutex::new(crate::ratelimit::Limits::of(
            &cfg.config.api,
        ))),
        switchover_busy: Arc::new(AtomicBool::new(false)),
        probe_timings: timings_rx,
        hooks: hooks.clone(),
    };
    if let Some(h) = hooks.as_ref().filter(|h| h.has_post()) {
        let requests = handles.clone();
        crate::hooks::spawn_post_runner(
            h.clone(),
            handles.status.clone(),
            |core: &Arc<CoreStatus>| (core.raft.role == Role::Leader).then(|| core.cluster.clone()),
            move |command| {
                let requests = requests.clone();
                async move {
                    requests
                        .propose(command)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            },
            shutdown.clone(),
        );
    }
    // The emergency pre hooks (failovers, bootstraps) commit their audit line as any request.
    let emergency_requests = handles.clone();
    let api_task = api::serve(handles, shutdown.clone()).await?;
    crate::reload::spawn(
        cfg.file.clone(),
        cfg.clone(),
        crate::reload::Targets {
            token,
            read_token,
            transport: transport.clone(),
            metrics: metrics.clone(),
            probe_timings: Some(timings_tx),
        },
        shutdown.clone(),
    );
    tracing::info!(node = %me, raft = %cfg.raft_listen, api = %cfg.api_listen,
        applied = %driver.state().applied, probes = probe_count, "agent started");

    let watchdog = sd_notify::watchdog_enabled();
    let mut last_watchdog = Instant::now();
    // READY now that storage is loaded and the listeners are up, not once a leader is known:
    // an agent started while its peers are down must not be killed at systemd's start
    // timeout, again and again. Whether there is a leader goes to STATUS= (and `/ready`).
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut notified_status = String::new();
    // The last emergency whose pre hook was started: a proposal retried after a timeout does
    // not run it again.
    let mut last_emergency: Option<(crate::cluster::EventKind, String, u64)> = None;
    let mut waiters: BTreeMap<ProposalId, Reply> = BTreeMap::new();
    let mut ticker = crate::pace::interval(tick * RAFT_TICKS_PER_WAKE);
    // A changed observation waiting only for the shortest report gap wakes the loop then.
    let mut report_wake: Option<tokio::time::Instant> = None;
    let reconciled_changed = reconcilers.reconciled_changed();

    let result: Result<(), NodeError> = async {
        loop {
            let mut ticked = false;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    for _ in 0..RAFT_TICKS_PER_WAKE {
                        driver.raft_tick();
                    }
                    ticked = true;
                }
                // The local reconciler carried out a decision: report it at once (the leader's
                // fast path waits for it).
                _ = reconciled_changed.notified() => {}
                _ = tokio::time::sleep_until(report_wake.unwrap_or_else(tokio::time::Instant::now)),
                    if report_wake.is_some() => {}
                Some(msg) = inbound_rx.recv() => {
                    let mut handle = |m: Inbound| match m {
                        Inbound::Raft { from, bytes } => driver.step_peer(from, &bytes),
                        Inbound::Report { from, report } => {
                            tracing::debug!(peer = %from, "health report received");
                            match codec::decode_report(*report, &is_member) {
                                Ok(r) => driver.ingest(from, r, clock()),
                                Err(err) => {
                                    metrics.reports_rejected.inc();
                                    tracing::warn!(peer = %from, %err, "health report rejected");
                                }
                            }
                        }
                    };
                    handle(msg);
                    // Batch what else is waiting, so one fsync covers many messages.
                    for _ in 0..256 {
                        match inbound_rx.try_recv() {
                            Ok(m) => handle(m),
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = probe_rx.recv() => {
                    let at_ms = liveness.ms_at(ev.at_instant);
                    local.record(&ev.id, ev.result, ev.latency, ev.at, at_ms, &metrics);
                }
                // A reload replaced the probe timings: the trackers take the new rise/fall.
                Ok(()) = thresholds_rx.changed() => {
                    let timings = thresholds_rx.borrow_and_update().clone();
                    local.set_thresholds(timings.iter().map(|(id, t)| {
                        (id.clone(), Thresholds { rise: t.rise, fall: t.fall })
                    }));
                }
                Some(req) = req_rx.recv() => match req {
                    Request::Propose { command, reply } => match driver.propose(command, clock()) {
                        Ok(id) => {
                            waiters.insert(id, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                },
            }
            liveness.beat();
            driver.process()?;
            // Reports and decisions follow events, not the tick: a changed observation goes
            // out at once (within the shortest report gap), and the leader decides on news
            // within the same event (see `Driver::on_news`).
            let reconciled = reconcilers.reconciled();
            driver.set_reconciled(reconciled);
            driver.set_backup_run(reconcilers.backup_run());
            driver.set_remedy_run(reconcilers.remedy_run());
            if ticked {
                driver.on_ticks(clock(), u64::from(RAFT_TICKS_PER_WAKE))?;
            } else {
                driver.on_news(clock())?;
            }
            // The embargo goes in before a report that claims its applied index (see
            // `Driver::reported_applied`); the leader then decides on its own report too.
            transport.set_embargo(driver.embargo().clone());
            send_report_if_due(&mut driver, &mut local, &transport, me, reconciled, clock());
            driver.on_news(clock())?;
            transport.set_embargo(driver.embargo().clone());
            report_wake = local
                .next_report_in(liveness.mono_ms())
                .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
            if ticked {
                let now = Instant::now();
                if let Some(period) = watchdog {
                    if now.duration_since(last_watchdog) >= period / 4 {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                        last_watchdog = now;
                    }
                }
                metrics.loop_last_run.set(now_millis().0 as f64 / 1000.0);
            }
            let out = driver.take_outputs();
            for (to, bytes) in out.messages {
                transport.send_raft(to, bytes);
            }
            if let Some(h) = hooks.as_ref().filter(|h| h.has_pre()) {
                for command in &out.proposed {
                    let Some((event, why)) = command.emergency_event(driver.state()) else {
                        continue;
                    };
                    let key = (event.what, event.service.clone(), event.epoch);
                    if last_emergency.as_ref() == Some(&key) {
                        continue;
                    }
                    last_emergency = Some(key);
                    let requests = emergency_requests.clone();
                    crate::hooks::spawn_emergency_pre(
                        h.clone(),
                        h.emergency(&event, &why),
                        move |record| async move {
                            requests
                                .propose(record)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        },
                    );
                }
            }
            for (id, answer) in out.answers {
                if let Some(reply) = waiters.remove(&id) {
                    let _ = reply.send(answer);
                }
            }
            reconcilers.publish(&driver);
            let status = driver.raft_status();
            metrics.raft_term.set(status.term.0 as i64);
            metrics
                .raft_is_leader
                .set(i64::from(status.role == Role::Leader));
            metrics.raft_commit_index.set(status.commit.0 as i64);
            metrics.raft_applied_index.set(status.applied.0 as i64);
            let line = match status.leader {
                Some(l) => format!("leader {l}, term {}", status.term),
                None => "no leader: waiting for a quorum of peers".to_string(),
            };
            if line != notified_status {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
                tracing::info!(status = %line, "cluster status");
                notified_status = line;
            }
            status_tx.send_if_modified(|cur| {
                let changed = cur.raft != status
                    || !Arc::ptr_eq(&cur.cluster, driver.cluster())
                    || cur.verdict != driver.verdict()
                    || !reconcilers.views_current(&cur.services, &driver);
                if changed {
                    *cur = Arc::new(CoreStatus {
                        raft: status,
                        cluster: driver.cluster().clone(),
                        verdict: driver.verdict().to_string(),
                        storage_loaded: true,
                        health: driver.health().clone(),
                        services: reconcilers.views(&driver),
                    });
                }
                changed
            });
        }
        Ok(())
    }
    .await;

    driver.drain_pending();
    for (_, reply) in std::mem::take(&mut waiters) {
        let _ = reply.send(Err(ProposeError::Stopping));
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), api_task)
        .await
        .is_err()
    {
        tracing::warn!("API did not stop within 5s");
    }
    if let Err(err) = &result {
        tracing::error!(%err, "agent stopped on a fatal error");
    } else {
        tracing::info!("agent stopped");
    }
    result
}
