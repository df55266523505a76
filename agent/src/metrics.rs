//! Prometheus metrics of the agent, all prefixed `triad_`, plus the process collector.
//!
//! One [`Metrics`] value is built at start-up and cloned into the adapters that record into it
//! (the prometheus handles are cheap reference-counted clones). The output of
//! [`Metrics::render`] passes `promtool check metrics` with no findings; a test checks it when
//! promtool is installed.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Handles to every metric the agent records.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Current Raft term.
    pub raft_term: IntGauge,
    /// 1 while this node is the Raft leader.
    pub raft_is_leader: IntGauge,
    /// Highest committed log index known.
    pub raft_commit_index: IntGauge,
    /// Highest applied log index.
    pub raft_applied_index: IntGauge,
    /// Times the known leader changed.
    pub raft_leader_changes: IntCounter,
    /// Snapshots taken for log compaction.
    pub raft_snapshots: IntCounter,
    /// Proposals by result (`committed`, `no_leader`, `timeout`, `error`).
    pub proposals: IntCounterVec,
    /// Peer messages refused by Raft, by reason.
    pub raft_messages_rejected: IntCounterVec,
    /// 1 when a peer was heard from recently.
    pub peer_reachable: IntGaugeVec,
    /// Round-trip time of pings to each peer.
    pub peer_rtt: HistogramVec,
    /// Inbound peer frames that closed their connection, by reason.
    pub peer_bad_frames: IntCounterVec,
    /// Peer connections refused in the TLS handshake or for their certificate's identity, by
    /// reason (`tls::Refusal`), on either side of the connection.
    pub peer_refused: IntCounterVec,
    /// Config reloads (SIGHUP), by result (`ok`, `refused`, `error`).
    pub config_reloads: IntCounterVec,
    /// Outbound frames dropped because a peer's queue was full, by peer.
    pub peer_frames_dropped: IntCounterVec,
    /// Unix time the event loop last ran.
    pub loop_last_run: Gauge,
    /// 1 when a probed service instance is up (healthy or degraded) after rise/fall.
    pub service_up: IntGaugeVec,
    /// Duration of probe checks, by service.
    pub probe_duration: HistogramVec,
    /// Failed probe checks, by service and reason.
    pub probe_failures: IntCounterVec,
    /// `wsrep_cluster_size` as seen on each probed node.
    pub galera_cluster_size: IntGaugeVec,
    /// `wsrep_local_state` (4 = Synced) of each probed node.
    pub galera_local_state: IntGaugeVec,
    /// 1 when the node's Redis reports role master.
    pub redis_is_master: IntGaugeVec,
    /// Replication offset of each probed Redis.
    pub redis_repl_offset: IntGaugeVec,
    /// Replica: seconds since the last I/O with its master (-1 never).
    pub redis_master_last_io: IntGaugeVec,
    /// PHP-FPM listen queue.
    pub phpfpm_listen_queue: IntGaugeVec,
    /// PHP-FPM active processes.
    pub phpfpm_active: IntGaugeVec,
    /// Gluster bricks online, as seen from this node.
    pub gluster_bricks_online: IntGaugeVec,
    /// Gluster entries pending heal.
    pub gluster_heal_pending: IntGaugeVec,
    /// Gluster entries in split-brain (never resolved by Triad).
    pub gluster_split_brain: IntGaugeVec,
    /// Health reports from peers refused as invalid.
    pub reports_rejected: IntCounter,
    /// Probe results dropped because the event loop was behind.
    pub probe_results_dropped: IntCounter,
    /// Committed Redis master in this node's view: 1 for the master, 0 for the others.
    pub redis_committed_master: IntGaugeVec,
    /// Committed Redis epoch in this node's view.
    pub redis_epoch: IntGauge,
    /// Committed changes of Redis master applied here, by kind.
    pub redis_failovers: IntCounterVec,
    /// Leader only: seconds from the old master's first failed check (estimated from the reports)
    /// to the automatic change of master applied here.
    pub redis_failover_duration: HistogramVec,
    /// Times this agent fenced its local Redis.
    pub redis_fence_events: IntCounter,
    /// 1 while this agent holds its lease.
    pub lease_valid: IntGauge,
    /// Failed reconciliation cycles, by side (`redis`, `haproxy`).
    pub reconcile_errors: IntCounterVec,
    /// Actions run by the reconciler, by side.
    pub reconcile_actions: IntCounterVec,
    /// The newest Galera outage number in this node's view (0 before the first).
    pub galera_outage_number: IntGauge,
    /// 1 while a Galera full outage is open in this node's view.
    pub galera_outage_open: IntGauge,
    /// Committed Galera bootstraps applied here, by kind (automatic, operator).
    pub galera_bootstraps: IntCounterVec,
    /// Starts of the local mariadbd by its agent, by kind (join, new_cluster).
    pub galera_restarts: IntCounterVec,
    /// 1 while the hourly restart cap holds the local mariadbd down.
    pub galera_restart_capped: IntGauge,
    /// Local recovery steps that failed, by step (recover, start, stop, pc_bootstrap).
    pub galera_recovery_errors: IntCounterVec,
    /// The committed Galera writer's epoch in this node's view.
    pub galera_writer_epoch: IntGauge,
    /// The committed Galera writer's node id in this node's view (0: none yet).
    pub galera_writer_node: IntGauge,
    /// Nodes evicted from the Galera component in this node's view.
    pub galera_evicted: IntGauge,
    /// Writer decisions proposed by this node as leader, by kind (initial, automatic,
    /// evict, clear).
    pub galera_writer_decisions: IntCounterVec,
    /// `evs.evict` statements run on the local mariadbd, by op (evict, clear).
    pub galera_evictions_run: IntCounterVec,
    /// Unix time of the newest verified backup holding each component (committed catalog).
    pub backup_last_success: IntGaugeVec,
    /// Seconds the newest verified backup took per component.
    pub backup_last_duration: IntGaugeVec,
    /// Bytes of the newest verified backup per component.
    pub backup_last_size: IntGaugeVec,
    /// 1 when the newest finished backup is verified, 0 when it failed (-1: none yet).
    pub backup_last_verified: IntGauge,
    /// 1 while a backup lease is held.
    pub backup_running: IntGauge,
    /// Unix time the next backup window opens (leader only; 0 elsewhere).
    pub backup_next_due: IntGauge,
    /// Finished backups applied here, by result (verified, failed).
    pub backup_runs: IntCounterVec,
    /// The committed web rotation's epoch in this node's view.
    pub web_epoch: IntGauge,
    /// 1 while a node is in the committed web rotation, by node.
    pub web_in_rotation: IntGaugeVec,
    /// 1 while every other node is drained and a sick one is kept in service.
    pub web_kept_sick: IntGauge,
    /// Web rotation changes proposed by this node as leader.
    pub web_decisions: IntCounter,
    /// 1 while a remediation lease is in force.
    pub remedy_running: IntGauge,
    /// Remediations ended, by action and result (done, failed, expired).
    pub remedies: IntCounterVec,
    /// Nodes whose repair waits (hourly cap, back-off, backup lease), leader only.
    pub remedy_held: IntGauge,
    /// Hook runs by this agent, by phase, kind of action and result (ok, failed, vetoed,
    /// skipped).
    pub hooks: IntCounterVec,
    /// Webhook deliveries by this agent, by result (ok, failed).
    pub webhooks: IntCounterVec,
}

impl Metrics {
    /// Builds and registers every metric. Fails only on a programming error (a bad name or a
    /// double registration), which the unit test catches.
    pub fn new(node: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c);
        let int_gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            reg(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            reg(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                reg(Box::new(c.clone()))?;
                Ok(c)
            };
        let build_info = IntGaugeVec::new(
            Opts::new("triad_build_info", "Build of the running agent; always 1."),
            &["version", "node"],
        )?;
        reg(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), node])
            .set(1);
        let peer_reachable = IntGaugeVec::new(
            Opts::new(
                "triad_peer_reachable",
                "1 when the peer was heard from within the reachability window.",
            ),
            &["peer"],
        )?;
        reg(Box::new(peer_reachable.clone()))?;
        let peer_rtt = HistogramVec::new(
            HistogramOpts::new(
                "triad_peer_rtt_seconds",
                "Round-trip time of agent-to-agent pings.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
            &["peer"],
        )?;
        reg(Box::new(peer_rtt.clone()))?;
        let loop_last_run = Gauge::new(
            "triad_loop_last_run_timestamp_seconds",
            "Unix time at which the agent's event loop last ran.",
        )?;
        reg(Box::new(loop_last_run.clone()))?;
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                reg(Box::new(g.clone()))?;
                Ok(g)
            };
        let probe_duration = HistogramVec::new(
            HistogramOpts::new("triad_probe_duration_seconds", "Duration of probe checks.")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            &["service"],
        )?;
        reg(Box::new(probe_duration.clone()))?;
        let redis_failover_duration = HistogramVec::new(
            HistogramOpts::new(
                "triad_redis_failover_duration_seconds",
                "Leader: time from the old Redis master's first failed check (estimated from \
                 the reports: their age plus the probe interval per failed check) to the \
                 automatic change of master applied on the leader.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0]),
            &["kind"],
        )?;
        reg(Box::new(redis_failover_duration.clone()))?;
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            raft_term: int_gauge("triad_raft_term", "Current Raft term of this node.")?,
            raft_is_leader: int_gauge(
                "triad_raft_is_leader",
                "1 while this node is the Raft leader.",
            )?,
            raft_commit_index: int_gauge(
                "triad_raft_commit_index",
                "Highest committed Raft log index known to this node.",
            )?,
            raft_applied_index: int_gauge(
                "triad_raft_applied_index",
                "Highest Raft log index applied to the cluster state.",
            )?,
            raft_leader_changes: counter(
                "triad_raft_leader_changes_total",
                "Times the leader known to this node changed.",
            )?,
            raft_snapshots: counter(
                "triad_raft_snapshots_total",
                "Snapshots taken to compact the Raft log.",
            )?,
            proposals: counter_vec(
                "triad_proposals_total",
                "Proposals made through this node, by result.",
                &["result"],
            )?,
            raft_messages_rejected: counter_vec(
                "triad_raft_messages_rejected_total",
                "Peer Raft messages refused, by reason.",
                &["reason"],
            )?,
            peer_reachable,
            peer_rtt,
            peer_bad_frames: counter_vec(
                "triad_peer_bad_frames_total",
                "Inbound peer connections closed for a bad frame, by reason.",
                &["reason"],
            )?,
            config_reloads: counter_vec(
                "triad_config_reloads_total",
                "Config reloads on SIGHUP, by result (ok, refused: a key needs a restart, error).",
                &["result"],
            )?,
            peer_refused: counter_vec(
                "triad_peer_refused_total",
                "Peer connections refused (TLS handshake or certificate identity), by reason.",
                &["reason"],
            )?,
            peer_frames_dropped: counter_vec(
                "triad_peer_frames_dropped_total",
                "Outbound peer frames dropped on a full queue, by peer.",
                &["peer"],
            )?,
            loop_last_run,
            service_up: gauge_vec(
                "triad_service_up",
                "1 when the service instance is up (healthy or degraded) after rise/fall.",
                &["node", "service", "target"],
            )?,
            probe_duration,
            probe_failures: counter_vec(
                "triad_probe_failures_total",
                "Failed probe checks, by service and reason.",
                &["service", "reason"],
            )?,
            galera_cluster_size: gauge_vec(
                "triad_galera_cluster_size",
                "wsrep_cluster_size reported by the node's MariaDB.",
                &["node"],
            )?,
            galera_local_state: gauge_vec(
                "triad_galera_local_state",
                "wsrep_local_state of the node's MariaDB (4 = Synced).",
                &["node"],
            )?,
            redis_is_master: gauge_vec(
                "triad_redis_is_master",
                "1 when the node's Redis reports role master.",
                &["node"],
            )?,
            redis_repl_offset: gauge_vec(
                "triad_redis_replication_offset",
                "Replication offset of the node's Redis.",
                &["node"],
            )?,
            redis_master_last_io: gauge_vec(
                "triad_redis_master_last_io_seconds",
                "Replica: seconds since the last I/O with its master (-1 never).",
                &["node"],
            )?,
            phpfpm_listen_queue: gauge_vec(
                "triad_phpfpm_listen_queue",
                "Requests waiting in the PHP-FPM pool's listen queue.",
                &["node"],
            )?,
            phpfpm_active: gauge_vec(
                "triad_phpfpm_active_processes",
                "Busy PHP-FPM workers.",
                &["node"],
            )?,
            gluster_bricks_online: gauge_vec(
                "triad_gluster_bricks_online",
                "Gluster bricks online as seen from the node.",
                &["node"],
            )?,
            gluster_heal_pending: gauge_vec(
                "triad_gluster_heal_pending_entries",
                "Gluster entries pending heal.",
                &["node"],
            )?,
            gluster_split_brain: gauge_vec(
                "triad_gluster_split_brain_entries",
                "Gluster entries in split-brain; Triad never resolves them (see the probe's reason).",
                &["node"],
            )?,
            reports_rejected: counter(
                "triad_health_reports_rejected_total",
                "Health reports from peers refused as invalid.",
            )?,
            probe_results_dropped: counter(
                "triad_probe_results_dropped_total",
                "Probe results dropped because the event loop was behind.",
            )?,
            redis_committed_master: gauge_vec(
                "triad_redis_committed_master",
                "1 for the committed Redis master in this node's view, 0 for the other nodes.",
                &["node"],
            )?,
            redis_epoch: int_gauge(
                "triad_redis_epoch",
                "Committed Redis epoch in this node's view.",
            )?,
            redis_failovers: counter_vec(
                "triad_redis_master_changes_total",
                "Committed changes of Redis master applied here, by kind.",
                &["kind"],
            )?,
            redis_failover_duration,
            redis_fence_events: counter(
                "triad_redis_fence_events_total",
                "Times this agent fenced its local Redis.",
            )?,
            lease_valid: int_gauge(
                "triad_lease_valid",
                "1 while this agent holds its lease (renewed by a quorum).",
            )?,
            reconcile_errors: counter_vec(
                "triad_reconcile_errors_total",
                "Failed reconciliation cycles, by side (redis, haproxy).",
                &["side"],
            )?,
            reconcile_actions: counter_vec(
                "triad_reconcile_actions_total",
                "Actions run by the local reconciler, by side (redis, haproxy).",
                &["side"],
            )?,
            galera_outage_number: int_gauge(
                "triad_galera_outage_number",
                "Newest Galera full-outage number in this node's view (0 before the first).",
            )?,
            galera_outage_open: int_gauge(
                "triad_galera_outage_open",
                "1 while a Galera full outage is open in this node's view.",
            )?,
            galera_bootstraps: counter_vec(
                "triad_galera_bootstraps_total",
                "Committed Galera bootstraps applied here, by kind (automatic, operator).",
                &["kind"],
            )?,
            galera_writer_epoch: int_gauge(
                "triad_galera_writer_epoch",
                "The committed Galera writer's epoch in this node's view.",
            )?,
            galera_writer_node: int_gauge(
                "triad_galera_writer_node",
                "The committed Galera writer's node id in this node's view (0: none yet).",
            )?,
            galera_evicted: int_gauge(
                "triad_galera_evicted_nodes",
                "Nodes evicted from the Galera component in this node's view.",
            )?,
            galera_writer_decisions: counter_vec(
                "triad_galera_writer_decisions_total",
                "Writer decisions proposed by this node as leader, by kind (initial, \
                 automatic, evict, clear).",
                &["kind"],
            )?,
            galera_evictions_run: counter_vec(
                "triad_galera_evictions_run_total",
                "evs.evict statements run on the local mariadbd, by op (evict, clear).",
                &["op"],
            )?,
            galera_restarts: counter_vec(
                "triad_galera_restarts_total",
                "Starts of the local mariadbd by its agent, by kind (join, new_cluster).",
                &["kind"],
            )?,
            galera_restart_capped: int_gauge(
                "triad_galera_restart_capped",
                "1 while the hourly restart cap (galera.restarts_per_hour) holds the local mariadbd down.",
            )?,
            galera_recovery_errors: counter_vec(
                "triad_galera_recovery_errors_total",
                "Local Galera recovery steps that failed, by step.",
                &["step"],
            )?,
            backup_last_success: gauge_vec(
                "triad_backup_last_success_timestamp_seconds",
                "Unix time of the newest verified backup holding each component.",
                &["component"],
            )?,
            backup_last_duration: gauge_vec(
                "triad_backup_last_duration_seconds",
                "Seconds the newest verified backup took, per component.",
                &["component"],
            )?,
            backup_last_size: gauge_vec(
                "triad_backup_last_size_bytes",
                "Bytes of the newest verified backup, per component.",
                &["component"],
            )?,
            backup_last_verified: int_gauge(
                "triad_backup_last_verified",
                "1 when the newest finished backup is verified, 0 when it failed, -1 before the first.",
            )?,
            backup_running: int_gauge(
                "triad_backup_running",
                "1 while a backup lease is held in this node's view.",
            )?,
            backup_next_due: int_gauge(
                "triad_backup_next_due_timestamp_seconds",
                "Unix time the next backup window opens, on the leader (0 elsewhere).",
            )?,
            backup_runs: counter_vec(
                "triad_backup_runs_total",
                "Finished backups applied here, by result (verified, failed).",
                &["result"],
            )?,
            web_epoch: int_gauge(
                "triad_web_epoch",
                "The committed web rotation's epoch in this node's view.",
            )?,
            web_in_rotation: gauge_vec(
                "triad_web_in_rotation",
                "1 while a node is in the committed web rotation, by node.",
                &["node"],
            )?,
            web_kept_sick: int_gauge(
                "triad_web_kept_sick",
                "1 while every other node is drained and a sick one is kept in service.",
            )?,
            web_decisions: counter(
                "triad_web_decisions_total",
                "Web rotation changes proposed by this node as leader.",
            )?,
            remedy_running: int_gauge(
                "triad_remedy_running",
                "1 while a remediation lease is in force.",
            )?,
            remedies: counter_vec(
                "triad_remedies_total",
                "Remediations ended, by action and result (done, failed, expired).",
                &["action", "result"],
            )?,
            remedy_held: int_gauge(
                "triad_remedy_held",
                "Nodes whose repair waits (hourly cap, back-off, backup lease); leader only.",
            )?,
            hooks: counter_vec(
                "triad_hooks_total",
                "Hook runs by this agent, by phase (pre, post), action and result (ok; vetoed: a pre \
                 hook exited non-zero; failed: a post hook or the webhook failed, or any hook \
                 timed out, was killed or could not start, a pre hook's such failure vetoing \
                 too; skipped).",
                &["phase", "what", "result"],
            )?,
            webhooks: counter_vec(
                "triad_webhooks_total",
                "Webhook deliveries by this agent, by result (ok, failed).",
                &["result"],
            )?,
            registry,
        })
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_render() {
        let m = Metrics::new("n1").expect("metrics");
        m.proposals.with_label_values(&["committed"]).inc();
        m.peer_rtt.with_label_values(&["n2"]).observe(0.001);
        let text = m.render();
        assert!(text.contains("triad_build_info{node=\"n1\",version="));
        assert!(text.contains("triad_proposals_total{result=\"committed\"} 1"));
        assert!(text.contains("triad_peer_rtt_seconds_bucket"));
    }
}
