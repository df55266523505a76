//! The writer reconciler against the simulated MariaDB and HAProxy.

use super::*;
use crate::actuator::galera_sql::SimGaleraSql;
use crate::actuator::haproxy::{Haproxy, SimHaproxy};
use crate::cluster::{ChangeKind, ClusterState, Command, EntryMeta};
use crate::ids::{LogIndex, Term, UnixMillis};

const U1: &str = "11111111-aaaa-11f1-b809-474591e831a5";
const U2: &str = "22222222-aaaa-11f1-b809-474591e831a5";
const U3: &str = "33333333-aaaa-11f1-b809-474591e831a5";

fn setup(me: u64, uuid: &str) -> (WriterReconciler, SimGaleraSql, SimHaproxy) {
    let sql = SimGaleraSql::serving(uuid);
    let h = SimHaproxy::new(Duration::from_secs(1));
    let mut servers = BTreeMap::new();
    for i in 1..=3u64 {
        h.add_server("be_mysql", &format!("db{i}"), 3306, i != 1);
        servers.insert(NodeId(i), format!("db{i}"));
    }
    let rec = WriterReconciler::new(
        NodeId(me),
        Arc::new(sql.clone()),
        Some(HaproxyTarget {
            haproxy: Arc::new(h.clone()),
            backend: "be_mysql".into(),
            servers,
            save_state: false,
        }),
    );
    (rec, sql, h)
}

fn modes(h: &SimHaproxy) -> Vec<AdminMode> {
    let rows = futures::executor::block_on(h.show_servers_state(Some("be_mysql")));
    rows.iter()
        .flatten()
        .map(|r| r.admin_state.mode())
        .collect()
}

struct Log {
    state: ClusterState,
    index: u64,
}

impl Log {
    fn new() -> Self {
        let mut state = ClusterState::default();
        state.apply(
            meta(1),
            &Command::RegisterMembers {
                members: crate::cluster::fixtures::members(3),
            },
        );
        Log { state, index: 1 }
    }

    fn apply(&mut self, c: Command) {
        self.index += 1;
        let out = self.state.apply(meta(self.index), &c);
        assert_eq!(out.name(), "changed", "{c:?}");
    }

    fn writer(&mut self, node: u64, kind: ChangeKind) {
        let epoch = self.state.galera_writer.epoch.next();
        self.apply(Command::SetGaleraWriter {
            node: NodeId(node),
            epoch,
            kind,
            reason: String::new(),
        });
    }

    fn target(&self) -> WriterTarget {
        WriterTarget {
            authority: self.state.galera_writer.clone(),
            maintenance: false,
            outage_open: false,
        }
    }
}

fn meta(index: u64) -> EntryMeta {
    EntryMeta {
        term: Term(1),
        index: LogIndex(index),
        at: UnixMillis(0),
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// The committed writer is the only ready server; a change moves it, cutting the old
/// writer's sessions; the writer's agent says yes only after its causal read.
#[test]
fn haproxy_follows_the_committed_writer_only() {
    use AdminMode::{Maint, Ready};
    let (mut rec, sql, h) = setup(2, U2);
    let mut log = Log::new();
    let r = block(rec.cycle(&log.target()));
    assert_eq!(
        modes(&h),
        [Ready, Maint, Maint],
        "no writer yet: config kept"
    );
    assert_eq!(
        r.haproxy_verdict.as_deref(),
        Some("haproxy: no Galera writer recorded yet")
    );
    log.writer(1, ChangeKind::Initial);
    block(rec.cycle(&log.target()));
    assert_eq!(modes(&h), [Ready, Maint, Maint]);
    assert!(h.open_session("be_mysql", "db1"));
    log.writer(2, ChangeKind::Automatic);
    let r = block(rec.cycle(&log.target()));
    assert_eq!(modes(&h), [Maint, Ready, Maint], "{r:?}");
    assert_eq!(
        h.sessions("be_mysql", "db1"),
        0,
        "the old writer's sessions were cut"
    );
    assert_eq!(r.caught_up, Some(log.state.galera_writer.epoch));
    assert!(sql.with(|n| n.log.contains(&"causal".to_string())));
    let a = &log.state.galera_writer;
    let fresh = Duration::from_millis(100);
    assert_eq!(
        serving_writer(NodeId(2), a, Some((&r, fresh)), Duration::from_secs(1)),
        Ok(())
    );
    let old = Duration::from_secs(5);
    assert!(
        serving_writer(NodeId(2), a, Some((&r, old)), Duration::from_secs(1))
            .expect_err("stale")
            .contains("not trusted")
    );
    assert!(
        serving_writer(NodeId(1), a, Some((&r, fresh)), Duration::from_secs(1))
            .expect_err("not the writer")
            .contains("n2 is")
    );
    // Converged: a second cycle changes nothing and runs no second causal read.
    let r = block(rec.cycle(&log.target()));
    assert!(r.haproxy_actions.is_empty(), "{r:?}");
    let causal = sql.with(|n| n.log.iter().filter(|l| *l == "causal").count());
    assert_eq!(causal, 1);
}

/// A writer whose node is a donor is not serving: its agent says no, and no causal read
/// counts for it until it is Synced again.
#[test]
fn a_donor_writer_is_not_serving() {
    let (mut rec, sql, _h) = setup(1, U1);
    let mut log = Log::new();
    log.writer(1, ChangeKind::Initial);
    sql.with(|n| {
        n.wsrep.synced = false;
        n.wsrep.state = "Donor/Desynced".into();
    });
    let r = block(rec.cycle(&log.target()));
    assert!(!r.serving);
    let why = serving_writer(
        NodeId(1),
        &log.state.galera_writer,
        Some((&r, Duration::ZERO)),
        Duration::from_secs(1),
    )
    .expect_err("donor");
    assert_eq!(
        why,
        "local MariaDB is Donor/Desynced, not Synced, Primary and ready"
    );
    let refused = crate::actuator::galera_sql::GaleraSqlError::Refused { at: "sock".into() };
    sql.with(|n| n.fail = Some(refused));
    let r = block(rec.cycle(&log.target()));
    let why = serving_writer(
        NodeId(1),
        &log.state.galera_writer,
        Some((&r, Duration::ZERO)),
        Duration::from_secs(1),
    )
    .expect_err("down");
    assert!(why.contains("refused the connection"), "{why}");
}

/// Evictions: a survivor's list follows the committed one (evict, then clear once the node
/// is back); a non-Primary node and the evicted node itself do nothing.
#[test]
fn evict_lists_follow_the_committed_evictions() {
    let (mut rec, sql, _h) = setup(1, U1);
    let mut log = Log::new();
    log.writer(1, ChangeKind::Initial);
    log.apply(Command::EvictGaleraNode {
        node: NodeId(3),
        gcomm_uuid: U3.into(),
        reason: String::new(),
    });
    let r = block(rec.cycle(&log.target()));
    assert_eq!(r.evictions, [format!("evict {U3}")]);
    let r = block(rec.cycle(&log.target()));
    assert!(r.evictions.is_empty(), "idempotent: {r:?}");
    log.apply(Command::ClearGaleraEviction {
        node: NodeId(3),
        gcomm_uuid: U3.into(),
        reason: String::new(),
    });
    let r = block(rec.cycle(&log.target()));
    assert_eq!(r.evictions, ["clear"]);
    assert!(sql.with(|n| n.wsrep.evict_list.is_empty()));
    // Non-Primary: nothing.
    log.apply(Command::EvictGaleraNode {
        node: NodeId(3),
        gcomm_uuid: U3.into(),
        reason: String::new(),
    });
    sql.with(|n| n.wsrep.primary = false);
    let r = block(rec.cycle(&log.target()));
    assert!(r.evictions.is_empty());
    // The evicted node itself: nothing.
    let (mut rec3, sql3, _h3) = setup(3, U3);
    let r = block(rec3.cycle(&log.target()));
    assert!(r.evictions.is_empty(), "{r:?}");
    assert!(sql3.with(|n| n.log.is_empty()));
}

#[test]
fn eviction_plans() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let e = |u: &str| EvictOp::Evict(u.into());
    let cases: Vec<(Vec<String>, Vec<String>, Vec<EvictOp>)> = vec![
        (s(&[]), s(&[]), vec![]),
        (s(&[U2]), s(&[]), vec![e(U2)]),
        (s(&[U2]), s(&[U2]), vec![]),
        (s(&[]), s(&[U2]), vec![EvictOp::Clear]),
        (s(&[U3]), s(&[U2]), vec![EvictOp::Clear, e(U3)]),
        (s(&[U2, U3]), s(&[U2]), vec![e(U3)]),
    ];
    for (desired, actual, want) in cases {
        assert_eq!(
            plan_evictions(&desired, &actual),
            want,
            "{desired:?} {actual:?}"
        );
    }
}

/// The EVS timing options are set once per mariadbd process: again after a restart (a new
/// gcomm UUID), never while the node does not answer, and a zero period is left alone.
#[test]
fn evs_periods_are_set_once_per_process() {
    use crate::actuator::galera_sql::EvsPeriod::{JoinRetrans, Keepalive};
    const BOTH: &str = "evs.join_retrans_period=PT0.1S;evs.keepalive_period=PT0.2S";
    let sets = |sql: &SimGaleraSql| {
        sql.with(|n| {
            n.log
                .iter()
                .filter_map(|l| l.strip_prefix("evs "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
    };
    let (rec, sql, _h) = setup(1, U1);
    let mut rec = rec.with_evs_periods(&[
        (JoinRetrans, Duration::from_millis(100)),
        (Keepalive, Duration::from_millis(200)),
    ]);
    let mut log = Log::new();
    log.writer(1, ChangeKind::Initial);
    let r = block(rec.cycle(&log.target()));
    assert_eq!(r.provider_options, [BOTH]);
    block(rec.cycle(&log.target()));
    assert_eq!(sets(&sql), [BOTH], "once for this process");
    sql.with(|n| {
        n.fail = Some(crate::actuator::galera_sql::GaleraSqlError::Refused { at: "sock".into() })
    });
    block(rec.cycle(&log.target()));
    sql.with(|n| {
        n.fail = None;
        n.wsrep.gcomm_uuid = Some("44444444-aaaa-11f1-b809-474591e831a5".into());
    });
    let r = block(rec.cycle(&log.target()));
    assert_eq!(r.provider_options, [BOTH]);
    assert_eq!(sets(&sql), [BOTH, BOTH], "again for the restarted process");

    let (rec, sql, _h) = setup(1, U1);
    let mut rec = rec.with_evs_periods(&[
        (JoinRetrans, Duration::ZERO),
        (Keepalive, Duration::from_millis(100)),
    ]);
    block(rec.cycle(&log.target()));
    assert_eq!(
        sets(&sql),
        ["evs.keepalive_period=PT0.1S"],
        "0s is left alone"
    );
    let (rec, sql, _h) = setup(1, U1);
    let mut rec = rec.with_evs_periods(&[(JoinRetrans, Duration::ZERO)]);
    block(rec.cycle(&log.target()));
    assert!(sets(&sql).is_empty(), "nothing to set: no statement");
}

/// Once HAProxy is as desired, a quiet reconciler reads it only every `recheck` cycles (a
/// stopped HAProxy goes unnoticed until then: no call is made); after a failed pass it reads
/// every cycle; a change made behind its back is undone at the next read; a new writer is
/// routed at once, whatever the count.
#[test]
fn a_quiet_reconciler_reads_haproxy_every_recheck_cycles_and_at_once_on_news() {
    use AdminMode::{Maint, Ready};
    let (rec, _sql, h) = setup(2, U2);
    let mut rec = rec.with_haproxy_recheck(3);
    let mut log = Log::new();
    log.writer(1, ChangeKind::Initial);
    let first = block(rec.cycle(&log.target()));
    assert_eq!(first.haproxy_error, None);
    assert_eq!(modes(&h), [Ready, Maint, Maint]);
    h.set_running(false);
    for i in 0..2 {
        let r = block(rec.cycle(&log.target()));
        assert_eq!(r.haproxy_error, None, "quiet cycle {i} called HAProxy");
        assert_eq!(r.haproxy_verdict, first.haproxy_verdict, "quiet cycle {i}");
    }
    let r = block(rec.cycle(&log.target()));
    assert!(r.haproxy_error.is_some(), "the third cycle reads: {r:?}");
    let r = block(rec.cycle(&log.target()));
    assert!(
        r.haproxy_error.is_some(),
        "after a failed pass, every cycle: {r:?}"
    );
    h.set_running(true);
    let r = block(rec.cycle(&log.target()));
    assert_eq!(r.haproxy_error, None);

    // An operator (or a restart) puts db3 in service behind the agent's back.
    block(h.set_server_state("be_mysql", "db3", Ready)).expect("operator's change");
    for _ in 0..2 {
        block(rec.cycle(&log.target()));
        assert_eq!(modes(&h), [Ready, Maint, Ready], "not read yet");
    }
    let r = block(rec.cycle(&log.target()));
    assert_eq!(
        modes(&h),
        [Ready, Maint, Maint],
        "undone at the read: {r:?}"
    );
    assert!(!r.haproxy_actions.is_empty(), "{r:?}");

    // A new writer right after a read: routed in the very next cycle.
    block(rec.cycle(&log.target()));
    log.writer(2, ChangeKind::Automatic);
    let r = block(rec.cycle(&log.target()));
    assert_eq!(modes(&h), [Maint, Ready, Maint], "{r:?}");
}

#[test]
fn recheck_cycles_span_about_the_period() {
    let ms = Duration::from_millis;
    assert_eq!(cycles_per(ms(1000), ms(200)), 5);
    assert_eq!(cycles_per(ms(1000), ms(300)), 3);
    assert_eq!(cycles_per(ms(1000), ms(5000)), 1);
    assert_eq!(cycles_per(ms(1000), Duration::ZERO), 1_000_000);
}
