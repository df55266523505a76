//! Operators' hooks and the webhook: an adapter that runs the `[hooks]` commands with one JSON
//! event on stdin, posts the same JSON to the webhook, and, on the leader, works through the
//! audited events whose post hooks have not run.
//!
//! - **Pre hooks** ([`Hooks::pre`]) run where a planned action is about to start (the agent
//!   running a switchover, the node holding a remediation or a backup lease). Exit 0 lets the action go.
//!   Any other exit, a timeout or a command that does not start vetoes it: no action on
//!   doubt. Emergencies (automatic failovers, bootstraps) never wait for one: the leader
//!   starts their pre hook as it proposes them ([`spawn_emergency_pre`]), in the background;
//!   it cannot veto, and its failure is a failure.
//! - **Post hooks** ([`spawn_post_runner`]) run on the Raft leader for each audited event
//!   ([`AuditEvent`]) above the committed progress, oldest first. Each run is committed as a
//!   `RecordHook` (the audit line with the exit status, and the progress a new leader
//!   continues from). A failure is logged and counted, never fatal, and never retried: the
//!   record says it failed.
//! - **The webhook** gets the same JSON, for both phases, with the command's `outcome` (a pre
//!   event's `vetoed`: the action does not start); its answer never vetoes.
//! - **Metrics** count a deliberate veto (`vetoed`) apart from a broken hook (`failed`: timed
//!   out, killed, could not start; a broken pre hook vetoes too, and the alert sees it).
//!
//! Caveats: a post hook runs at least once (a leader that loses its leadership between the
//! run and the record leaves the event to the next, which runs it again; the event's `id` is
//! stable, so a receiver can drop the repeat). Events older than `[hooks] max_age` when a
//! leader gets to them are skipped with one record. A hook's output is kept up to 4 KiB (the
//! rest is read and dropped) and read for at most 200 ms after it exits; its first non-empty
//! line goes to the history. A hook that outlives its timeout is killed (SIGKILL to the
//! process; its own children are its business).

// An adapter: it times the hooks it runs and reads the wall clock for the events' dates.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{AuditEntry, ClusterState, Command, EventKind, HookOutcome, HookPhase};
use crate::config::{HooksSection, Validated};
use crate::ids::{LogIndex, NodeId, UnixMillis};
use crate::metrics::Metrics;

/// The most output read from a hook (stdout and stderr each).
const OUTPUT_LIMIT: u64 = 4096;

/// How long a hook's output is still read after it exited (its background children may hold
/// the pipes).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// The most of a hook's output kept for the history.
const GIST_LIMIT: usize = 300;

/// Why the hooks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The webhook's CA file could not be read or parsed.
    #[error("hooks.webhook_ca_file {path}: {problem}")]
    WebhookCa {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The HTTP client could not be built.
    #[error("the webhook client could not be built: {0}")]
    Client(String),
}

/// One event as hooks and the webhook receive it (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HookEvent {
    /// A stable id: the cluster name and the audit entry's log index (post), or the agent
    /// and a time (pre). A repeated post hook carries the same id.
    pub id: String,
    /// `pre` or `post`.
    pub phase: HookPhase,
    /// `failover`, `switchover`, `bootstrap`, `remediation` or `backup`.
    pub what: EventKind,
    /// `redis`, `galera`, `php-fpm`, `gluster` or `backup`.
    pub service: String,
    /// The decision's verdict or the operator's reason, as the history words it.
    pub why: String,
    /// The new epoch, the outage, the remediation or the backup id.
    pub epoch: u64,
    /// The nodes concerned, the acting one first.
    pub nodes: Vec<NodeId>,
    /// Whether it succeeded (post hooks of remediations and backups).
    pub ok: bool,
    /// The audit entry's log index (post hooks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<LogIndex>,
    /// When it was decided (post) or is about to start (pre), ms since the Unix epoch.
    pub at_ms: UnixMillis,
    /// The cluster's name.
    pub cluster: String,
    /// The agent that runs the hook.
    pub node: NodeId,
    /// The webhook's copy only: how the hook command ended before it (`ok` when none is
    /// configured). On a pre event, `vetoed` means the action does not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<HookOutcome>,
}

/// How one hook run (command and webhook) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookReport {
    /// The outcome (a pre hook's failure is a veto).
    pub outcome: HookOutcome,
    /// The exit status, the time taken, the output's gist, the webhook's answer.
    pub detail: String,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CommandEnd {
    /// It exited with this status (`None`: killed by a signal).
    Exited(Option<i32>),
    /// It outlived the timeout and was killed.
    TimedOut,
    /// It could not start.
    NotStarted(String),
}

/// The configured hooks of this agent.
pub struct Hooks {
    pre: Option<Vec<String>>,
    post: Option<Vec<String>>,
    timeout: Duration,
    max_age: Duration,
    webhook: Option<(String, reqwest::Client)>,
    cluster: String,
    node: NodeId,
    metrics: Metrics,
}

impl Hooks {
    /// The hooks of `cfg`, or `None` when `[hooks]` configures none.
    pub fn from_config(
        cfg: &Validated,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Hooks>>, HookError> {
        let Some(h) = &cfg.config.hooks else {
            return Ok(None);
        };
        Self::from_section(h, &cfg.config.cluster_name, cfg.config.node.id, metrics)
    }

    /// The hooks of one `[hooks]` section.
    pub fn from_section(
        h: &HooksSection,
        cluster: &str,
        node: NodeId,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Hooks>>, HookError> {
        if h.pre.is_none() && h.post.is_none() && h.webhook.is_none() {
            return Ok(None);
        }
        let webhook = match &h.webhook {
            None => None,
            Some(url) => {
                let mut b = reqwest::Client::builder()
                    .timeout(h.timeout)
                    .connect_timeout(h.timeout);
                if let Some(ca) = &h.webhook_ca_file {
                    let bad = |problem: String| HookError::WebhookCa {
                        path: ca.display().to_string(),
                        problem,
                    };
                    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| bad(e.to_string()))?;
                    if certs.is_empty() {
                        return Err(bad("no PEM certificate in it".into()));
                    }
                    for c in certs {
                        b = b.add_root_certificate(c);
                    }
                }
                let client = b.build().map_err(|e| HookError::Client(e.to_string()))?;
                Some((url.clone(), client))
            }
        };
        Ok(Some(Arc::new(Hooks {
            pre: h.pre.clone(),
            post: h.post.clone(),
            timeout: h.timeout,
            max_age: h.max_age,
            webhook,
            cluster: cluster.to_string(),
            node,
            metrics: metrics.clone(),
        })))
    }

    /// Whether anything runs before a planned action (a pre command or the webhook).
    pub fn has_pre(&self) -> bool {
        self.pre.is_some() || self.webhook.is_some()
    }

    /// Whether anything runs after a change (a post command or the webhook).
    pub fn has_post(&self) -> bool {
        self.post.is_some() || self.webhook.is_some()
    }

    /// The event of a planned action about to start on this agent.
    pub fn planned(
        &self,
        what: EventKind,
        service: &str,
        why: &str,
        epoch: u64,
        nodes: Vec<NodeId>,
    ) -> HookEvent {
        let at = crate::probe::runner::now_millis();
        HookEvent {
            id: format!("{}-{}-pre-{}", self.cluster, self.node, at.0),
            phase: HookPhase::Pre,
            what,
            service: service.to_string(),
            why: why.to_string(),
            epoch,
            nodes,
            ok: true,
            index: None,
            at_ms: at,
            cluster: self.cluster.clone(),
            node: self.node,
            outcome: None,
        }
    }

    /// The pre event of an emergency the leader is about to propose (`event`, with the
    /// decision's verdict `why`; see [`Command::emergency_event`]).
    pub fn emergency(&self, event: &crate::cluster::AuditEvent, why: &str) -> HookEvent {
        self.planned(
            event.what,
            &event.service,
            why,
            event.epoch,
            event.nodes.clone(),
        )
    }

    /// The post event of an audited change (`None`: the entry is not an event).
    pub fn audited(&self, entry: &AuditEntry) -> Option<HookEvent> {
        let e = entry.event.as_ref()?;
        Some(HookEvent {
            id: format!("{}-{}", self.cluster, entry.index),
            phase: HookPhase::Post,
            what: e.what,
            service: e.service.clone(),
            why: entry.details.clone(),
            epoch: e.epoch,
            nodes: e.nodes.clone(),
            ok: e.ok,
            index: Some(entry.index),
            at_ms: entry.at,
            cluster: self.cluster.clone(),
            node: self.node,
            outcome: None,
        })
    }

    /// Runs the pre hook and the webhook for `event`: `Ok` lets the action go (no pre hook
    /// configured, or it exited 0), `Vetoed` stops it. The webhook's answer never vetoes.
    pub async fn pre(&self, event: &HookEvent) -> HookReport {
        self.run(self.pre.as_deref(), event, HookOutcome::Vetoed)
            .await
    }

    /// Runs the post hook and the webhook for `event`.
    pub async fn post(&self, event: &HookEvent) -> HookReport {
        self.run(self.post.as_deref(), event, HookOutcome::Failed)
            .await
    }

    async fn run(
        &self,
        argv: Option<&[String]>,
        event: &HookEvent,
        failure: HookOutcome,
    ) -> HookReport {
        let json = match serde_json::to_vec(event) {
            Ok(j) => j,
            Err(e) => {
                return HookReport {
                    outcome: failure,
                    detail: format!("the event could not be encoded: {e}"),
                }
            }
        };
        let mut outcome = HookOutcome::Ok;
        // The hook itself did not work (timed out, killed, could not start; the webhook
        // failed), whatever it meant for the action: counted as `failed`, which the alert
        // watches.
        let mut broken = false;
        let mut parts = Vec::new();
        if let Some(argv) = argv {
            let start = Instant::now();
            let (end, gist) = run_command(argv, &json, event, self.timeout).await;
            let took = start.elapsed().as_secs_f64();
            let said = if gist.is_empty() {
                String::new()
            } else {
                format!(": {gist}")
            };
            let part = match &end {
                CommandEnd::Exited(Some(0)) => format!("exit 0 in {took:.1} s{said}"),
                CommandEnd::Exited(Some(c)) => {
                    outcome = failure;
                    format!("exit {c} in {took:.1} s{said}")
                }
                CommandEnd::Exited(None) => {
                    outcome = failure;
                    broken = true;
                    format!("killed by a signal after {took:.1} s{said}")
                }
                CommandEnd::TimedOut => {
                    outcome = failure;
                    broken = true;
                    format!(
                        "still running after {} s: killed{said}",
                        self.timeout.as_secs_f64()
                    )
                }
                CommandEnd::NotStarted(e) => {
                    outcome = failure;
                    broken = true;
                    format!(
                        "{} could not start: {e}",
                        argv.first().map_or("", |p| p.as_str())
                    )
                }
            };
            parts.push(part);
        }
        if let Some((url, client)) = &self.webhook {
            let told = HookEvent {
                outcome: Some(outcome),
                ..event.clone()
            };
            let body = serde_json::to_vec(&told).unwrap_or(json);
            let answer = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let part = match answer {
                Ok(r) if r.status().is_success() => {
                    self.metrics.webhooks.with_label_values(&["ok"]).inc();
                    format!("webhook {}", r.status().as_u16())
                }
                Ok(r) => {
                    self.metrics.webhooks.with_label_values(&["failed"]).inc();
                    broken = true;
                    if event.phase == HookPhase::Post {
                        outcome = HookOutcome::Failed;
                    }
                    format!("webhook answered {}", r.status().as_u16())
                }
                Err(e) => {
                    self.metrics.webhooks.with_label_values(&["failed"]).inc();
                    broken = true;
                    if event.phase == HookPhase::Post {
                        outcome = HookOutcome::Failed;
                    }
                    format!("webhook failed: {}", one_line(&e.to_string()))
                }
            };
            parts.push(part);
        }
        let result = if broken {
            HookOutcome::Failed.as_str()
        } else {
            outcome.as_str()
        };
        self.metrics
            .hooks
            .with_label_values(&[event.phase.as_str(), event.what.as_str(), result])
            .inc();
        let detail = parts.join("; ");
        match outcome {
            HookOutcome::Ok => {
                tracing::info!(phase = event.phase.as_str(), what = event.what.as_str(), id = %event.id, %detail, "hook ran")
            }
            _ => {
                tracing::warn!(phase = event.phase.as_str(), what = event.what.as_str(), id = %event.id, outcome = outcome.as_str(), %detail, "hook did not succeed")
            }
        }
        HookReport { outcome, detail }
    }
}

/// Runs `argv` with `json` on stdin and a bounded time; answers how it ended and the first
/// non-empty line of its output (stderr first: that is where a veto says why).
async fn run_command(
    argv: &[String],
    json: &[u8],
    event: &HookEvent,
    timeout: Duration,
) -> (CommandEnd, String) {
    let Some((program, args)) = argv.split_first() else {
        return (CommandEnd::NotStarted("no program".into()), String::new());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("TRIAD_HOOK_PHASE", event.phase.as_str())
        .env("TRIAD_HOOK_WHAT", event.what.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (CommandEnd::NotStarted(e.to_string()), String::new()),
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let write = async move {
        if let Some(mut s) = stdin {
            // A hook that does not read its stdin is its business.
            let _ = s.write_all(json).await;
            let _ = s.shutdown().await;
        }
    };
    // The output is read beside the run (a hook that fills a pipe would block), and after
    // the hook exits for at most OUTPUT_GRACE more: a background child of the hook that keeps
    // the pipes open does not hold the hook's result.
    let out_task = tokio::spawn(read_some(stdout));
    let err_task = tokio::spawn(read_some(stderr));
    let work = async {
        let ((), status) = tokio::join!(write, child.wait());
        status
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(status) => {
            let collect = |t: tokio::task::JoinHandle<Vec<u8>>| async move {
                let abort = t.abort_handle();
                match tokio::time::timeout(OUTPUT_GRACE, t).await {
                    Ok(Ok(bytes)) => bytes,
                    _ => {
                        abort.abort();
                        Vec::new()
                    }
                }
            };
            let (out, err) = tokio::join!(collect(out_task), collect(err_task));
            let gist = gist(&err).or_else(|| gist(&out)).unwrap_or_default();
            let end = match status {
                Ok(s) => CommandEnd::Exited(s.code()),
                Err(e) => CommandEnd::NotStarted(format!("waiting for it failed: {e}")),
            };
            (end, gist)
        }
        Err(_) => {
            // kill_on_drop reaps it; kill now so the timeout is the bound.
            let _ = child.start_kill();
            let _ = child.wait().await;
            out_task.abort();
            err_task.abort();
            (CommandEnd::TimedOut, String::new())
        }
    }
}

/// Keeps the first [`OUTPUT_LIMIT`] bytes of a hook's output and reads (and drops) the rest
/// until the end: a chatty hook is never killed by a closed pipe.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        let _ = (&mut r).take(OUTPUT_LIMIT).read_to_end(&mut buf).await;
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    }
    buf
}

fn gist(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(one_line(line))
}

fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(GIST_LIMIT)
        .collect();
    if s.chars().count() > GIST_LIMIT {
        out.push('…');
    }
    out
}

/// What the leader does next for the post hooks, from the applied state and the wall clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostStep {
    /// Nothing pending.
    Idle,
    /// Record a skip of every pending event up to `upto` (older than `max_age`).
    Skip {
        /// The newest skipped event.
        upto: LogIndex,
        /// Its kind (the record names one).
        what: EventKind,
        /// How many.
        count: usize,
        /// The oldest skipped event.
        from: LogIndex,
    },
    /// Run the post hooks of this event.
    Run(Box<AuditEntry>),
}

/// The next post-hook step: skip the events older than `max_age` (all at once), else run the
/// oldest pending one.
pub fn next_post_step(
    state: &crate::cluster::ClusterState,
    now: UnixMillis,
    max_age: Duration,
) -> PostStep {
    let pending = state.pending_post_hooks();
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let old: Vec<&&AuditEntry> = pending
        .iter()
        .take_while(|e| now.0.saturating_sub(e.at.0) > max_age_ms)
        .collect();
    match (old.first(), old.last(), pending.first()) {
        (Some(first), Some(last), _) => PostStep::Skip {
            upto: last.index,
            what: last.event.as_ref().map_or(EventKind::Failover, |e| e.what),
            count: old.len(),
            from: first.index,
        },
        (_, _, Some(e)) => PostStep::Run(Box::new((*e).clone())),
        _ => PostStep::Idle,
    }
}

/// Runs the post hooks on this agent while it leads: each pending event once, oldest first,
/// each committed as a `RecordHook`. A record that did not commit is proposed again (the
/// hook is not run again while this agent stays leader). `led` reads, from what `changes`
/// carries, the applied state when this agent leads (`None` otherwise); `propose` commits a
/// command through the event loop.
pub fn spawn_post_runner<T, L, P, F>(
    hooks: Arc<Hooks>,
    mut changes: watch::Receiver<T>,
    led: L,
    propose: P,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    T: Send + Sync + 'static,
    L: Fn(&T) -> Option<Arc<ClusterState>> + Send + 'static,
    P: Fn(Command) -> F + Send + 'static,
    F: Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        // An event run here whose record has not committed yet: (event, record).
        let mut unrecorded: Option<(LogIndex, Command)> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let Some(state) = led(&changes.borrow()) else {
                unrecorded = None;
                continue;
            };
            let step = next_post_step(&state, crate::probe::runner::now_millis(), hooks.max_age);
            let record = match step {
                PostStep::Idle => continue,
                PostStep::Skip {
                    upto,
                    what,
                    count,
                    from,
                } => {
                    hooks
                        .metrics
                        .hooks
                        .with_label_values(&["post", what.as_str(), "skipped"])
                        .inc();
                    Command::RecordHook {
                        phase: HookPhase::Post,
                        what,
                        event: Some(upto),
                        outcome: HookOutcome::Skipped,
                        detail: format!(
                            "{count} event(s) from entry {from} older than {} when this \
                             leader got to them: not run",
                            humantime::format_duration(hooks.max_age)
                        ),
                    }
                }
                PostStep::Run(entry) => match &unrecorded {
                    Some((i, record)) if *i == entry.index => record.clone(),
                    _ => {
                        let Some(event) = hooks.audited(&entry) else {
                            continue;
                        };
                        let report = hooks.post(&event).await;
                        let record = Command::RecordHook {
                            phase: HookPhase::Post,
                            what: event.what,
                            event: Some(entry.index),
                            outcome: report.outcome,
                            detail: report.detail,
                        };
                        unrecorded = Some((entry.index, record.clone()));
                        record
                    }
                },
            };
            if let Err(e) = propose(record).await {
                tracing::warn!(error = %e, "the post hook's record did not commit; proposed again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
}

/// Starts the pre hook (and the webhook) of an emergency the leader is proposing (a failover,
/// a bootstrap) in the background: nothing waits for it and it vetoes nothing; a failure is a
/// failure (logged, counted, audited), not a veto. Its audit line is committed with
/// `propose` when it ends.
pub fn spawn_emergency_pre<P, F>(hooks: Arc<Hooks>, event: HookEvent, propose: P)
where
    P: FnOnce(Command) -> F + Send + 'static,
    F: Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        let report = hooks
            .run(hooks.pre.as_deref(), &event, HookOutcome::Failed)
            .await;
        let record = Command::RecordHook {
            phase: HookPhase::Pre,
            what: event.what,
            event: None,
            outcome: report.outcome,
            detail: format!(
                "{} (an emergency, not waited for: {})",
                report.detail, event.why
            ),
        };
        if let Err(e) = propose(record).await {
            tracing::warn!(error = %e, "the emergency pre hook's audit line did not commit");
        }
    });
}

/// Runs the pre hook (and the webhook) for a planned action about to start on this agent and
/// commits its audit line with `propose`. `Err` carries the veto, worded for the operator.
pub async fn pre_check<P, F>(
    hooks: Option<&Arc<Hooks>>,
    event: HookEvent,
    propose: P,
) -> Result<(), String>
where
    P: FnOnce(Command) -> F,
    F: Future<Output = Result<(), String>>,
{
    let Some(hooks) = hooks.filter(|h| h.has_pre()) else {
        return Ok(());
    };
    let report = hooks.pre(&event).await;
    let record = Command::RecordHook {
        phase: HookPhase::Pre,
        what: event.what,
        event: None,
        outcome: report.outcome,
        detail: format!("{} ({})", report.detail, event.why),
    };
    if let Err(e) = propose(record).await {
        tracing::warn!(error = %e, "the pre hook's audit line did not commit");
    }
    match report.outcome {
        HookOutcome::Vetoed => Err(format!(
            "vetoed by the pre hook ({}); nothing was changed",
            report.detail
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
