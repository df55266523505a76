//! The hooks against real processes (`/bin/sh` scripts) and a real HTTP listener on loopback.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use super::*;
use crate::cluster::{AuditEvent, ClusterState};
use crate::ids::Term;

fn section(pre: Option<&str>, post: Option<&str>, webhook: Option<String>) -> HooksSection {
    let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
    HooksSection {
        pre: pre.map(sh),
        post: post.map(sh),
        timeout: Duration::from_millis(800),
        webhook,
        webhook_ca_file: None,
        max_age: Duration::from_secs(900),
    }
}

fn hooks(s: &HooksSection) -> Arc<Hooks> {
    let metrics = Metrics::new("1").expect("metrics");
    Hooks::from_section(s, "shop", NodeId(1), &metrics)
        .expect("hooks")
        .expect("configured")
}

fn switchover(h: &Hooks) -> HookEvent {
    h.planned(
        EventKind::Switchover,
        "redis",
        "operator asked",
        3,
        vec![NodeId(2), NodeId(1)],
    )
}

#[test]
fn nothing_configured_is_no_hooks() {
    let metrics = Metrics::new("1").expect("metrics");
    let none = Hooks::from_section(&section(None, None, None), "shop", NodeId(1), &metrics);
    assert!(none.expect("ok").is_none());
}

#[tokio::test]
async fn a_pre_hook_that_exits_0_lets_the_action_go_and_gets_the_event() {
    let dir = std::env::temp_dir().join(format!("triad-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let got = dir.join("event.json");
    let script = format!(
        "cat > {} && echo \"$TRIAD_HOOK_PHASE $TRIAD_HOOK_WHAT\" >> {}",
        got.display(),
        got.display()
    );
    let h = hooks(&section(Some(&script), None, None));
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(report.outcome, HookOutcome::Ok, "{report:?}");
    assert!(report.detail.starts_with("exit 0 in "), "{}", report.detail);
    let text = std::fs::read_to_string(&got).expect("the hook wrote its stdin");
    let (json, env) = text.split_at(text.rfind('}').expect("json") + 1);
    let v: serde_json::Value = serde_json::from_str(json).expect("json on stdin");
    assert_eq!(v["phase"], "pre");
    assert_eq!(v["what"], "switchover");
    assert_eq!(v["service"], "redis");
    assert_eq!(v["epoch"], 3);
    assert_eq!(v["nodes"], serde_json::json!([2, 1]));
    assert_eq!(v["cluster"], "shop");
    assert!(
        v.get("outcome").is_none(),
        "the command's copy has no outcome: {v}"
    );
    assert_eq!(env.trim(), "pre switchover");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failing_slow_or_missing_pre_hook_vetoes_with_its_reason() {
    let h = hooks(&section(
        Some("echo 'change freeze until 18:00' >&2; exit 3"),
        None,
        None,
    ));
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(report.outcome, HookOutcome::Vetoed);
    assert!(report.detail.starts_with("exit 3 in "), "{}", report.detail);
    assert!(
        report.detail.ends_with(": change freeze until 18:00"),
        "{}",
        report.detail
    );
    assert_eq!(
        counted(&h, "vetoed"),
        1,
        "a deliberate veto is counted as one"
    );
    assert_eq!(counted(&h, "failed"), 0);

    let h = hooks(&section(Some("sleep 30"), None, None));
    let start = Instant::now();
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(report.outcome, HookOutcome::Vetoed);
    assert!(
        report.detail.contains("still running after 0.8 s: killed"),
        "{}",
        report.detail
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the timeout bounds the hook"
    );
    assert_eq!(
        counted(&h, "failed"),
        1,
        "a hook that hangs is broken: alerted"
    );

    let mut s = section(None, None, None);
    s.pre = Some(vec!["/nonexistent/triad-pre-hook".into()]);
    let h = hooks(&s);
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(report.outcome, HookOutcome::Vetoed);
    assert!(
        report
            .detail
            .starts_with("/nonexistent/triad-pre-hook could not start: "),
        "{}",
        report.detail
    );
    assert_eq!(
        counted(&h, "failed"),
        1,
        "a hook that cannot start is broken: alerted"
    );
    assert_eq!(counted(&h, "vetoed"), 0);
}

/// `triad_hooks_total{phase="pre",what="switchover",result}`.
fn counted(h: &Hooks, result: &str) -> u64 {
    h.metrics
        .hooks
        .with_label_values(&["pre", "switchover", result])
        .get()
}

/// A hook that leaves a background child holding its output, or that writes far more than is
/// kept, is judged by its own exit, at once.
#[tokio::test]
async fn background_children_and_chatty_hooks_do_not_change_the_result() {
    let h = hooks(&section(Some("sleep 5 & echo started; exit 0"), None, None));
    let start = Instant::now();
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(report.outcome, HookOutcome::Ok, "{report:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the background child held the result"
    );
    let h = hooks(&section(
        Some("head -c 100000 /dev/zero | tr '\\0' x; echo; echo done >&2; exit 0"),
        None,
        None,
    ));
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(report.outcome, HookOutcome::Ok, "{report:?}");
    assert!(report.detail.ends_with(": done"), "{}", report.detail);
}

/// Nothing runs for a phase without its command or the webhook.
#[test]
fn phases_without_a_command_run_nothing() {
    let h = hooks(&section(None, Some("exit 0"), None));
    assert!(!h.has_pre() && h.has_post());
    let h = hooks(&section(Some("exit 0"), None, None));
    assert!(h.has_pre() && !h.has_post());
}

#[tokio::test]
async fn a_failing_post_hook_is_a_failure_not_a_veto() {
    let h = hooks(&section(None, Some("exit 1"), None));
    let entry = entry(7, 10);
    let event = h.audited(&entry).expect("an event");
    assert_eq!(event.id, "shop-7");
    let report = h.post(&event).await;
    assert_eq!(report.outcome, HookOutcome::Failed);
    assert!(report.detail.starts_with("exit 1 in "), "{}", report.detail);
}

/// A one-shot HTTP listener on loopback answering `status`; hands back the body it got.
async fn listener(status: u16) -> (String, tokio::task::JoinHandle<String>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/triad", l.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + len || n == 0 {
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    return text[head_end + 4..].to_string();
                }
            }
            if n == 0 {
                return String::new();
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn the_webhook_gets_the_same_json_and_never_vetoes() {
    let (url, got) = listener(204).await;
    let h = hooks(&section(None, Some("exit 0"), Some(url)));
    let event = h.audited(&entry(7, 10)).expect("an event");
    let report = h.post(&event).await;
    assert_eq!(report.outcome, HookOutcome::Ok, "{report:?}");
    assert!(
        report.detail.ends_with("; webhook 204"),
        "{}",
        report.detail
    );
    let body: serde_json::Value =
        serde_json::from_str(&got.await.expect("listener")).expect("json");
    assert_eq!(body["id"], "shop-7");
    assert_eq!(body["what"], "failover");
    assert_eq!(body["outcome"], "ok", "the command's outcome rides along");

    // A pre event tells the webhook whether the action goes.
    let (url, got) = listener(204).await;
    let h = hooks(&section(Some("exit 1"), None, Some(url)));
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(report.outcome, HookOutcome::Vetoed);
    let body: serde_json::Value =
        serde_json::from_str(&got.await.expect("listener")).expect("json");
    assert_eq!(body["phase"], "pre");
    assert_eq!(body["outcome"], "vetoed");

    let (url, _got) = listener(500).await;
    let h = hooks(&section(None, None, Some(url)));
    let report = h.pre(&switchover(&h)).await;
    assert_eq!(
        report.outcome,
        HookOutcome::Ok,
        "a webhook never vetoes: {report:?}"
    );
    assert_eq!(report.detail, "webhook answered 500");
    assert_eq!(counted(&h, "failed"), 1, "a failing webhook is alerted on");
    let (url, _got) = listener(500).await;
    let h = hooks(&section(None, None, Some(url)));
    let report = h.post(&h.audited(&entry(7, 10)).expect("event")).await;
    assert_eq!(report.outcome, HookOutcome::Failed);
}

fn entry(index: u64, at_s: i64) -> AuditEntry {
    AuditEntry {
        term: Term(2),
        index: LogIndex(index),
        at: UnixMillis(at_s * 1000),
        kind: "redis".into(),
        details: "automatic master 1 -> 2 at epoch 3: master down".into(),
        event: Some(AuditEvent {
            what: EventKind::Failover,
            service: "redis".into(),
            nodes: vec![NodeId(2), NodeId(1)],
            epoch: 3,
            ok: true,
        }),
    }
}

#[test]
fn the_leader_skips_old_events_at_once_then_runs_the_oldest() {
    let mut s = ClusterState::default();
    for (i, at) in [(3, 100), (5, 200), (9, 5_000), (12, 5_010)] {
        s.history.push_front(entry(i, at));
    }
    let max_age = Duration::from_secs(900);
    let now = UnixMillis(5_100 * 1000);
    assert_eq!(
        next_post_step(&s, now, max_age),
        PostStep::Skip {
            upto: LogIndex(5),
            what: EventKind::Failover,
            count: 2,
            from: LogIndex(3),
        }
    );
    s.hooks.post_done = LogIndex(5);
    match next_post_step(&s, now, max_age) {
        PostStep::Run(e) => assert_eq!(e.index, LogIndex(9)),
        other => panic!("expected a run, got {other:?}"),
    }
    s.hooks.post_done = LogIndex(12);
    assert_eq!(next_post_step(&s, now, max_age), PostStep::Idle);
}

/// The next proposal, within 5 s.
async fn next(prx: &mut tokio::sync::mpsc::UnboundedReceiver<Command>) -> Command {
    tokio::time::timeout(Duration::from_secs(5), prx.recv())
        .await
        .expect("a proposal within 5 s")
        .expect("runner alive")
}

/// The post runner against a real hook and a stand-in event loop (a channel of proposals and
/// a watch of the applied state, as `node` wires it): a record that did not commit is
/// proposed again without running the hook again; a leader that lost and regained leadership
/// runs the hook again (at least once); a committed record ends the runs.
#[tokio::test]
async fn the_post_runner_proposes_again_and_runs_again_after_losing_leadership() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = std::env::temp_dir().join(format!("triad-post-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let runs = dir.join("runs");
    let _ = std::fs::remove_file(&runs);
    let h = hooks(&section(
        None,
        Some(&format!("cat > /dev/null; echo run >> {}", runs.display())),
        None,
    ));
    let runs_so_far = || {
        std::fs::read_to_string(&runs)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let mut state = ClusterState::default();
    let now_s = crate::probe::runner::now_millis().0 / 1000;
    state.history.push_front(entry(7, now_s));
    let (tx, rx) = watch::channel(Some(Arc::new(state.clone())));
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<Command>();
    let calls = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let propose = {
        let calls = calls.clone();
        move |c: Command| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let sent = ptx.send(c);
            async move {
                sent.map_err(|e| e.to_string())?;
                if first {
                    Err("not leader any more (stand-in)".to_string())
                } else {
                    Ok(())
                }
            }
        }
    };
    let task = spawn_post_runner(
        h,
        rx,
        |s: &Option<Arc<ClusterState>>| s.clone(),
        propose,
        shutdown.clone(),
    );
    let first = next(&mut prx).await;
    match &first {
        Command::RecordHook {
            phase: HookPhase::Post,
            what: EventKind::Failover,
            event: Some(LogIndex(7)),
            outcome: HookOutcome::Ok,
            ..
        } => {}
        other => panic!("expected the post record of entry 7, got {other:?}"),
    }
    let again = next(&mut prx).await;
    assert_eq!(again, first, "the same record, proposed again");
    assert_eq!(
        runs_so_far(),
        1,
        "the hook is not run again for a re-proposal"
    );

    // Leadership lost, then regained before the record committed: the new term runs it again.
    tx.send(None).expect("send");
    tokio::time::sleep(Duration::from_millis(700)).await;
    while prx.try_recv().is_ok() {}
    tx.send(Some(Arc::new(state.clone()))).expect("send");
    let rerun = next(&mut prx).await;
    assert!(
        matches!(
            rerun,
            Command::RecordHook {
                event: Some(LogIndex(7)),
                ..
            }
        ),
        "{rerun:?}"
    );
    assert_eq!(
        runs_so_far(),
        2,
        "at least once: run again after losing leadership"
    );

    // The record commits: nothing more runs or is proposed.
    let meta = crate::cluster::fixtures::meta(8);
    assert_eq!(state.apply(meta, &rerun), crate::cluster::Outcome::Changed);
    tx.send(Some(Arc::new(state.clone()))).expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    while prx.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        prx.try_recv().is_err(),
        "nothing proposed after the record committed"
    );
    assert_eq!(runs_so_far(), 2);
    shutdown.cancel();
    task.await.expect("runner ends on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An emergency's pre hook runs in the background and cannot veto: a failing one is audited
/// as failed, with the verdict it was told of.
#[tokio::test]
async fn an_emergency_pre_hook_is_not_waited_for_and_never_vetoes() {
    let h = hooks(&section(Some("echo 'not now' >&2; exit 1"), None, None));
    let event = crate::cluster::AuditEvent {
        what: EventKind::Failover,
        service: "redis".into(),
        nodes: vec![NodeId(2), NodeId(1)],
        epoch: 7,
        ok: true,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
    crate::hooks::spawn_emergency_pre(h.clone(), h.emergency(&event, "master down"), move |c| {
        let sent = tx.send(c);
        async move { sent.map_err(|e| e.to_string()) }
    });
    match next(&mut rx).await {
        Command::RecordHook {
            phase: HookPhase::Pre,
            what: EventKind::Failover,
            event: None,
            outcome: HookOutcome::Failed,
            detail,
        } => assert!(
            detail.contains("exit 1")
                && detail.ends_with("(an emergency, not waited for: master down)"),
            "{detail}"
        ),
        other => panic!("expected the emergency's pre record, got {other:?}"),
    }
    assert_eq!(
        h.metrics
            .hooks
            .with_label_values(&["pre", "failover", "failed"])
            .get(),
        1
    );
}
