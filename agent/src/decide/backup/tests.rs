use super::*;
use crate::cluster::{BackupLease, BackupRecord, BackupRequest, BackupRetry};
use crate::ids::{BackupId, LogIndex, Term};

/// `2026-12-05T<h>:<m>:<s>Z` in milliseconds.
fn at(h: u32, m: u32, s: u32) -> UnixMillis {
    let d = chrono::NaiveDate::from_ymd_opt(2026, 12, 5)
        .and_then(|d| d.and_hms_opt(h, m, s))
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default();
    UnixMillis(d)
}

const H: i64 = 3_600_000;

/// Cron math, table-driven: (schedule, now, latest at or before now, next after now).
#[test]
fn schedule_windows_table() {
    let cases = [
        // Every six hours: between windows, exactly on one, a millisecond before one.
        (DEFAULT_SCHEDULE, at(13, 20, 0), at(12, 0, 0), at(18, 0, 0)),
        (DEFAULT_SCHEDULE, at(12, 0, 0), at(12, 0, 0), at(18, 0, 0)),
        (
            DEFAULT_SCHEDULE,
            UnixMillis(at(12, 0, 0).0 - 1),
            at(6, 0, 0),
            at(12, 0, 0),
        ),
        (DEFAULT_SCHEDULE, at(0, 0, 0), at(0, 0, 0), at(6, 0, 0)),
        // Daily at 03:30, before and after it.
        (
            "30 3 * * *",
            at(2, 0, 0),
            UnixMillis(at(3, 30, 0).0 - 24 * H),
            at(3, 30, 0),
        ),
        (
            "30 3 * * *",
            at(4, 0, 0),
            at(3, 30, 0),
            UnixMillis(at(3, 30, 0).0 + 24 * H),
        ),
        // Six fields: every 30 seconds.
        ("*/30 * * * * *", at(10, 0, 45), at(10, 0, 30), at(10, 1, 0)),
    ];
    for (src, now, latest, next) in cases {
        let s = BackupSchedule::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(
            s.latest_at_or_before(now),
            Some(latest),
            "{src} latest at {now:?}"
        );
        assert_eq!(s.next_after(now), Some(next), "{src} next after {now:?}");
    }
}

/// The window due: only one opened after `since`, and missed windows collapse into the
/// latest, which runs once.
#[test]
fn due_window_table() {
    let s = BackupSchedule::parse(DEFAULT_SCHEDULE).unwrap_or_else(|e| panic!("{e}"));
    // (since, now, due)
    let cases = [
        // Armed at 13:20: nothing due until 18:00.
        (at(13, 20, 0), at(17, 59, 59), None),
        (at(13, 20, 0), at(18, 0, 0), Some(at(18, 0, 0))),
        // The 12:00 window closed: 18:00 is due at 18:05.
        (at(12, 0, 0), at(18, 5, 0), Some(at(18, 0, 0))),
        (at(12, 0, 0), at(12, 30, 0), None),
        // Down from 05:00 to 23:10: 06:00, 12:00, 18:00 missed; only 18:00 runs.
        (at(5, 0, 0), at(23, 10, 0), Some(at(18, 0, 0))),
    ];
    for (since, now, due) in cases {
        assert_eq!(s.due_window(since, now), due, "since {since:?} now {now:?}");
    }
}

/// Bad schedules name the problem.
#[test]
fn bad_schedules_are_named() {
    for (src, needle) in [
        ("0 */6 * *", "4 fields"),
        ("", "0 fields"),
        ("0 */6 * * * * * *", "8 fields"),
        ("61 * * * *", "`61 * * * *`"),
    ] {
        let e = BackupSchedule::parse(src).err().unwrap_or_default();
        assert!(e.contains(needle), "{src}: {e}");
    }
}

/// A schedule whose years are past parses (parsing reads no clock) and has no next time after
/// them: config validation asks that with its clock and refuses it.
#[test]
fn a_past_schedule_has_no_next_time() {
    let s = BackupSchedule::parse("0 0 0 1 1 * 2001").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.next_after(at(0, 0, 0)), None);
    assert_eq!(
        s.latest_at_or_before(at(0, 0, 0)).map(|t| t.0),
        Some(978_307_200_000)
    );
}

fn settings() -> BackupSettings {
    BackupSettings {
        schedule: BackupSchedule::parse(DEFAULT_SCHEDULE).unwrap_or_else(|e| panic!("{e}")),
        max_duration_ms: 600_000,
        silence_ms: 30_000,
        ping_lease_ms: 3_000,
        clock_margin_ms: 1_000,
        freshness_ms: 3_000,
        db: true,
        files: true,
    }
}

fn good() -> Candidate {
    Candidate {
        reporting: true,
        synced: Some(true),
        db_state: "Synced".into(),
        mounts_ok: Some(true),
    }
}

fn lease(id: u64, node: u64, trigger: BackupTrigger, attempt: u32) -> BackupLease {
    BackupLease {
        id: BackupId(id),
        node: NodeId(node),
        trigger,
        attempt,
        max_duration_ms: 600_000,
        index: LogIndex(10),
        term: Term(1),
        at: at(18, 0, 1),
        reason: String::new(),
    }
}

fn record(id: u64, node: u64) -> BackupRecord {
    BackupRecord {
        id: BackupId(id),
        node: NodeId(node),
        trigger: BackupTrigger::Scheduled {
            window: at(6, 0, 0),
        },
        attempt: 1,
        started_at: at(6, 0, 1),
        finished_at: at(6, 1, 0),
        verified: true,
        reason: String::new(),
        expired: false,
        index: LogIndex(5),
        summary: BackupSummary::default(),
    }
}

/// One case of the decision table.
struct Case {
    name: &'static str,
    authority: BackupAuthority,
    now: UnixMillis,
    candidates: [Candidate; 3],
    runs: Vec<(u64, BackupRun)>,
    ages: [u64; 3],
    lease_seen_ms: Option<u64>,
    previous: Result<(), String>,
    maintenance: bool,
    /// The Redis master.
    master: u64,
    /// The expected proposal, `Debug`-formatted in short (`-` for none).
    expect: &'static str,
    /// A piece of the expected verdict.
    verdict: &'static str,
}

/// A case with the usual inputs: the schedule armed and the 12:00 window done, one second
/// into the 18:00 window, every node a good candidate reporting fresh, no run, no lease, the
/// Redis master on n2 (n1 is the Galera writer), no maintenance; no proposal expected.
fn case() -> Case {
    Case {
        name: "",
        authority: armed(),
        now: at(18, 0, 1),
        candidates: [good(), good(), good()],
        runs: vec![],
        ages: [0; 3],
        lease_seen_ms: None,
        previous: Ok(()),
        maintenance: false,
        master: 2,
        expect: "-",
        verdict: "",
    }
}

fn armed() -> BackupAuthority {
    BackupAuthority {
        armed_at: Some(at(1, 0, 0)),
        done_window: Some(at(12, 0, 0)),
        last_id: BackupId(4),
        ..BackupAuthority::default()
    }
}

fn short(c: &Command) -> String {
    match c {
        Command::ArmBackupSchedule { .. } => "arm".into(),
        Command::GrantBackupLease {
            id,
            node,
            trigger,
            attempt,
            ..
        } => format!("grant {id} {node} {trigger} #{attempt}"),
        Command::FinishBackup { id, verified, .. } => format!("finish {id} {verified}"),
        other => format!("{other:?}"),
    }
}

fn run(id: u64, done: bool, verified: bool) -> BackupRun {
    BackupRun {
        id: BackupId(id),
        phase: if done { "done" } else { "db copy" }.into(),
        bytes: 1000,
        elapsed_ms: 5000,
        done,
        verified,
        reason: if verified {
            "verified"
        } else {
            "restic check failed"
        }
        .into(),
        summary: BackupSummary::default(),
    }
}

/// The backup decision, table-driven: who takes which trigger, when a run ends.
#[test]
fn decision_table() {
    let w18 = BackupTrigger::Scheduled {
        window: at(18, 0, 0),
    };
    let cases: Vec<Case> = vec![
        Case {
            name: "a fresh cluster arms its schedule",
            authority: BackupAuthority::default(),
            now: at(13, 0, 0),
            expect: "arm",
            verdict: "first window is 2026-12-05T18:00:00Z",
            ..case()
        },
        Case {
            name: "nothing due between windows",
            now: at(13, 0, 0),
            expect: "-",
            verdict: "next window 2026-12-05T18:00:00Z",
            ..case()
        },
        Case {
            name: "the 18:00 window goes to a non-writer that is not the Redis master",
            // n1 is the writer, n2 the Redis master.
            master: 2,
            expect: "grant b5 n3 window 1796493600000 #1",
            verdict: "grant backup b5",
            ..case()
        },
        Case {
            name: "rotation: the node that ran the last backup waits its turn",
            authority: BackupAuthority {
                catalog: [record(4, 3), record(3, 2)].into(),
                ..armed()
            },
            master: 1,
            expect: "grant b5 n2 window 1796493600000 #1",
            verdict: "on n2",
            ..case()
        },
        Case {
            name: "keeping off the Redis master comes before rotation",
            authority: BackupAuthority {
                catalog: [record(4, 3), record(3, 2)].into(),
                ..armed()
            },
            expect: "grant b5 n3 window 1796493600000 #1",
            verdict: "on n3",
            ..case()
        },
        Case {
            name: "a joiner, a bad mount and the writer: nobody; every reason said",
            candidates: [
                good(),
                Candidate {
                    synced: Some(false),
                    db_state: "Joiner".into(),
                    ..good()
                },
                Candidate {
                    mounts_ok: Some(false),
                    ..good()
                },
            ],
            expect: "-",
            verdict: "n1: Galera writer; n2: MariaDB Joiner; n3: a Gluster mount is not healthy",
            ..case()
        },
        Case {
            name: "maintenance holds a due window back",
            maintenance: true,
            expect: "-",
            verdict: "maintenance is on",
            ..case()
        },
        Case {
            name: "a running backup is waited for, with its progress",
            authority: BackupAuthority {
                lease: Some(lease(5, 3, w18.clone(), 1)),
                last_id: BackupId(5),
                ..armed()
            },
            now: at(18, 1, 0),
            runs: vec![(3, run(5, false, false))],
            lease_seen_ms: Some(60_000),
            expect: "-",
            verdict: "running on n3: db copy, 1000 bytes, 5 s",
            ..case()
        },
        Case {
            name: "the runner's result ends the run",
            authority: BackupAuthority {
                lease: Some(lease(5, 3, w18.clone(), 1)),
                last_id: BackupId(5),
                ..armed()
            },
            now: at(18, 1, 0),
            runs: vec![(3, run(5, true, true))],
            lease_seen_ms: Some(60_000),
            maintenance: true,
            expect: "finish b5 true",
            verdict: "verified",
            ..case()
        },
        Case {
            name: "a result of an older run on that node does not end this one",
            authority: BackupAuthority {
                lease: Some(lease(5, 3, w18.clone(), 1)),
                last_id: BackupId(5),
                ..armed()
            },
            now: at(18, 1, 0),
            runs: vec![(3, run(2, true, true))],
            lease_seen_ms: Some(60_000),
            expect: "-",
            verdict: "not started yet",
            ..case()
        },
        Case {
            name: "the lease expires on the leader's clock",
            authority: BackupAuthority {
                lease: Some(lease(5, 3, w18.clone(), 1)),
                last_id: BackupId(5),
                ..armed()
            },
            now: at(18, 11, 0),
            runs: vec![(3, run(5, false, false))],
            lease_seen_ms: Some(630_000),
            expect: "finish b5 false",
            verdict: "lease expired: no result from n3 within 630 s",
            ..case()
        },
        Case {
            name: "a silent holder's lease expires",
            authority: BackupAuthority {
                lease: Some(lease(5, 3, w18.clone(), 1)),
                last_id: BackupId(5),
                ..armed()
            },
            now: at(18, 1, 0),
            runs: vec![(3, run(5, false, false))],
            ages: [0, 0, 31_000],
            lease_seen_ms: Some(40_000),
            expect: "finish b5 false",
            verdict: "lease expired: n3's agent silent for 31 s",
            ..case()
        },
        Case {
            name: "a holder heard from keeps its lease",
            authority: BackupAuthority {
                lease: Some(lease(5, 3, w18.clone(), 1)),
                last_id: BackupId(5),
                ..armed()
            },
            now: at(18, 1, 0),
            runs: vec![(3, run(5, false, false))],
            ages: [0, 0, 29_000],
            lease_seen_ms: Some(40_000),
            expect: "-",
            verdict: "running on n3",
            ..case()
        },
        Case {
            name: "no retry while the expired holder may still run",
            authority: BackupAuthority {
                last_id: BackupId(5),
                retry: Some(BackupRetry {
                    trigger: w18.clone(),
                    failed_on: NodeId(3),
                    failed: BackupId(5),
                }),
                ..armed()
            },
            now: at(18, 12, 0),
            previous: Err("n3's expired backup b5 may still run".into()),
            expect: "-",
            verdict: "waits: n3's expired backup b5 may still run",
            ..case()
        },
        Case {
            name: "the retry goes to another node than the failed one",
            authority: BackupAuthority {
                last_id: BackupId(5),
                retry: Some(BackupRetry {
                    trigger: w18.clone(),
                    failed_on: NodeId(3),
                    failed: BackupId(5),
                }),
                ..armed()
            },
            now: at(18, 12, 0),
            expect: "grant b6 n2 window 1796493600000 #2",
            verdict: "retry; the first attempt failed on n3",
            ..case()
        },
        Case {
            name: "a newer window supersedes a retry still owed",
            authority: BackupAuthority {
                last_id: BackupId(5),
                retry: Some(BackupRetry {
                    trigger: BackupTrigger::Scheduled {
                        window: at(12, 0, 0),
                    },
                    failed_on: NodeId(3),
                    failed: BackupId(5),
                }),
                done_window: Some(at(6, 0, 0)),
                ..armed()
            },
            now: at(18, 0, 5),
            expect: "grant b6 n3 window 1796493600000 #1",
            verdict: "grant backup b6",
            ..case()
        },
        Case {
            name: "an operator's request runs between windows",
            authority: BackupAuthority {
                request: Some(BackupRequest {
                    by: "api@n1".into(),
                    reason: "before upgrade".into(),
                    index: LogIndex(42),
                    at: at(13, 0, 0),
                }),
                ..armed()
            },
            now: at(13, 0, 1),
            expect: "grant b5 n3 request at index 42 #1",
            verdict: "grant backup b5",
            ..case()
        },
    ];
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let settings = settings();
    for c in cases {
        let candidates: BTreeMap<NodeId, Candidate> = members
            .iter()
            .copied()
            .zip(c.candidates.iter().cloned())
            .collect();
        let runs: BTreeMap<NodeId, BackupRun> = c
            .runs
            .iter()
            .map(|(n, r)| (NodeId(*n), r.clone()))
            .collect();
        let ages: BTreeMap<NodeId, u64> = members.iter().copied().zip(c.ages).collect();
        let plan = decide_backup(&BackupInputs {
            members: &members,
            authority: &c.authority,
            maintenance: c.maintenance,
            galera_outage_open: false,
            galera_writer: Some(NodeId(1)),
            galera_evicted: BTreeSet::new(),
            redis_master: Some(NodeId(c.master)),
            candidates: &candidates,
            runs: &runs,
            report_ages: &ages,
            lease_seen_ms: c.lease_seen_ms,
            previous_stopped: c.previous.clone(),
            now: c.now,
            in_flight: false,
            settings: &settings,
        });
        let got = plan
            .proposals
            .first()
            .map_or_else(|| "-".to_string(), short);
        assert_eq!(got, c.expect, "{}: {}", c.name, plan.verdict);
        assert!(
            plan.verdict.contains(c.verdict),
            "{}: verdict `{}` lacks `{}`",
            c.name,
            plan.verdict,
            c.verdict
        );
    }
}

/// After an expiry, the next lease waits until the old holder's runner surely stopped: it
/// applied the end and runs nothing, or every other agent applied the end and none has
/// answered its pings for longer than its lease.
#[test]
fn previous_holder_stopped_table() {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let s = settings();
    let end = 50;
    let holder = NodeId(3);
    // (name, applied by n1..n3, pong times of n1 and n2 to n3, n3's run report, ok?)
    type Row = (
        &'static str,
        [u64; 3],
        [Option<u64>; 2],
        Option<BackupRun>,
        bool,
    );
    let rows: Vec<Row> = vec![
        (
            "the holder applied the end and runs nothing",
            [50, 50, 50],
            [Some(9_900), Some(9_900)],
            None,
            true,
        ),
        (
            "the holder applied the end, its run still going",
            [50, 50, 50],
            [Some(9_900), Some(9_900)],
            Some(run(5, false, false)),
            false,
        ),
        (
            "the holder applied the end, its run over",
            [50, 50, 51],
            [Some(9_900), Some(9_900)],
            Some(run(5, true, false)),
            true,
        ),
        (
            "the holder behind, the others answered it lately",
            [50, 50, 49],
            [Some(9_000), Some(6_000)],
            Some(run(5, false, false)),
            false,
        ),
        (
            "the holder behind, unanswered past its lease",
            [50, 50, 49],
            [Some(5_000), Some(4_000)],
            Some(run(5, false, false)),
            true,
        ),
        (
            "the holder behind, one other behind too",
            [50, 49, 49],
            [Some(1_000), Some(1_000)],
            None,
            false,
        ),
        (
            "the holder behind, one other's pongs unknown",
            [50, 50, 49],
            [Some(1_000), None],
            None,
            false,
        ),
    ];
    for (name, applied, pongs, report, ok) in rows {
        let applied: BTreeMap<NodeId, u64> = members.iter().copied().zip(applied).collect();
        let pongs: BTreeMap<NodeId, BTreeMap<NodeId, u64>> = members
            .iter()
            .copied()
            .zip(pongs)
            .filter_map(|(m, p)| Some((m, BTreeMap::from([(holder, p?)]))))
            .collect();
        let runs: BTreeMap<NodeId, BackupRun> = report.map(|r| (holder, r)).into_iter().collect();
        let got = previous_stopped(
            &members,
            holder,
            BackupId(5),
            end,
            &applied,
            &pongs,
            &runs,
            10_000,
            &s,
        );
        assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
    }
}
