//! The backup decision: when a backup is due, which node takes it, and when a run is over.
//!
//! Pure: the leader's wall clock (`now`, for the cron schedule) and its monotonic measures
//! (how long it has seen the lease, how long nobody answered the holder) come in as values;
//! the plan goes out as commands of the backup authority (`cluster::BackupAuthority`).
//!
//! **When.** The schedule is a cron expression in UTC ([`BackupSchedule`]). A *window* is a
//! scheduled time; the window due is the latest one at or before now, if it is after the time
//! the schedule was armed and after the last window closed. Windows missed while the cluster
//! was down collapse into that one: it runs once, not once per missed window. A fresh cluster
//! arms its schedule at its first decision, so its first scheduled backup is at the next cron
//! time (`triad backup now` takes one at once).
//!
//! **Who.** A member whose own agent reports fresh, whose MariaDB is Synced and Primary (a
//! joiner or a desynced node is not) and not the Galera writer nor evicted, and whose Gluster
//! mounts are healthy, where those services are configured. Among them, one that is not the
//! Redis master, then the one whose last backup is oldest (rotation), then the lowest id. The
//! retry of a failed first attempt never goes to the node it failed on.
//!
//! **Until when.** A run ends by its runner's report (`done`, verified or failed with the
//! reason), or the leader expires its lease: after `max_duration + silence` of seeing it (the
//! runner itself stops at `max_duration` from its start), or once the holder's agent has been
//! silent for `silence`.
//!
//! **Never two at once, without trusting clocks.** A runner runs only while its agent holds
//! its ping lease from a majority (the one that keeps a Redis master writable). After an
//! expiry, every agent that applied it stops answering the old holder's pings until the old
//! holder's report shows it applied the expiry (the controller's lease embargo). The next
//! lease is granted only once the old holder's runner has surely stopped: its agent reported
//! that it applied the expiry and runs nothing, or every other agent applied the expiry and
//! none has answered its pings for longer than the ping lease and the clock margin (so its
//! lease ran out and its runner stopped). An end reported by the runner itself needs no wait.
//!
//! Nothing is granted in maintenance, while a Galera outage is open, or while a proposal of
//! this authority is in flight. A run already going on is left to finish in maintenance (its
//! runner stops at its bound).
//!
//! Caveats: the expired holder's lease embargo also withholds its Redis lease (it is one
//! lease), so a Redis master cut off during its backup fences itself, as it would anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::cluster::BackupRun;
use crate::cluster::{BackupAuthority, BackupSummary, BackupTrigger, Command};
use crate::ids::{NodeId, UnixMillis};

/// A cron schedule in UTC: five fields (`minute hour day-of-month month day-of-week`, as in
/// crontab) or six and seven with seconds first and a year last, as the `cron` crate reads
/// them.
#[derive(Clone, Debug)]
pub struct BackupSchedule {
    source: String,
    schedule: Arc<cron::Schedule>,
}

impl PartialEq for BackupSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The default schedule: every six hours on the hour, UTC.
pub const DEFAULT_SCHEDULE: &str = "0 */6 * * *";

impl BackupSchedule {
    /// Parses a cron expression; the error names the problem. Pure: whether the schedule still
    /// fires after today is for the caller to ask ([`BackupSchedule::next_after`] with its
    /// clock), as config validation does.
    pub fn parse(source: &str) -> Result<BackupSchedule, String> {
        let fields = source.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {}", source.trim()),
            6 | 7 => source.trim().to_string(),
            n => {
                return Err(format!(
                    "`{source}` has {n} fields; write 5 (minute hour day month weekday), or 6-7 \
                     with seconds first and a year last"
                ))
            }
        };
        let schedule = cron::Schedule::from_str(&full).map_err(|e| format!("`{source}`: {e}"))?;
        Ok(BackupSchedule {
            source: source.trim().to_string(),
            schedule: Arc::new(schedule),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The latest scheduled time at or before `now`.
    pub fn latest_at_or_before(&self, now: UnixMillis) -> Option<UnixMillis> {
        let now = to_datetime(now)?;
        if self.schedule.includes(now) {
            return Some(from_datetime(now));
        }
        self.schedule.after(&now).next_back().map(from_datetime)
    }

    /// The first scheduled time after `t`.
    pub fn next_after(&self, t: UnixMillis) -> Option<UnixMillis> {
        let t = to_datetime(t)?;
        self.schedule.after(&t).next().map(from_datetime)
    }

    /// The window due at `now`: the latest scheduled time at or before it, when that is after
    /// `since` (the later of the arming and the last closed window). `None` when no window
    /// opened since.
    pub fn due_window(&self, since: UnixMillis, now: UnixMillis) -> Option<UnixMillis> {
        self.latest_at_or_before(now).filter(|w| *w > since)
    }
}

fn to_datetime(t: UnixMillis) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(t.0)
}

fn from_datetime(t: DateTime<Utc>) -> UnixMillis {
    UnixMillis(t.timestamp_millis())
}

/// The backup decision's tunables (`[backup]`).
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSettings {
    /// When windows open.
    pub schedule: BackupSchedule,
    /// A run's bound (`backup.max_duration`).
    pub max_duration_ms: u64,
    /// How long the holder's agent may be silent before its lease expires (`backup.silence`).
    pub silence_ms: u64,
    /// The ping lease the runner needs to go on (`failover.lease`).
    pub ping_lease_ms: u64,
    /// Slack for the clocks' rates when waiting out a ping lease (`failover.clock_margin`).
    pub clock_margin_ms: u64,
    /// How old a report may be to count (`failover.report_freshness`).
    pub freshness_ms: u64,
    /// Whether the database is backed up (`[galera]` configured): candidates must be Synced
    /// non-writers.
    pub db: bool,
    /// Whether the Gluster directories are backed up: candidates' mounts must be healthy.
    pub files: bool,
}

impl BackupSettings {
    /// How long after first seeing a lease the leader expires it, whatever it hears.
    pub fn expire_after_ms(&self) -> u64 {
        self.max_duration_ms.saturating_add(self.silence_ms)
    }
}

/// What the decision knows of one member as a place to take a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Its own agent reports, fresh.
    pub reporting: bool,
    /// Its MariaDB is Synced and Primary, by its own agent's fresh check (`None`: no check).
    pub synced: Option<bool>,
    /// Its MariaDB state for the reasons (`Synced`, `Donor/Desynced`, `Joining`...).
    pub db_state: String,
    /// Every Gluster mount of it is healthy, by its own agent (`None`: no mount checked).
    pub mounts_ok: Option<bool>,
}

/// Every input of the backup decision.
#[derive(Clone, Debug)]
pub struct BackupInputs<'a> {
    /// Cluster members, sorted.
    pub members: &'a [NodeId],
    /// The committed backup authority.
    pub authority: &'a BackupAuthority,
    /// Maintenance is on.
    pub maintenance: bool,
    /// A Galera full outage is open.
    pub galera_outage_open: bool,
    /// The committed Galera writer.
    pub galera_writer: Option<NodeId>,
    /// Nodes evicted from the Galera component.
    pub galera_evicted: BTreeSet<NodeId>,
    /// The committed Redis master.
    pub redis_master: Option<NodeId>,
    /// Each member as a candidate.
    pub candidates: &'a BTreeMap<NodeId, Candidate>,
    /// The backup run each agent's fresh report carries.
    pub runs: &'a BTreeMap<NodeId, BackupRun>,
    /// Age of each agent's latest report.
    pub report_ages: &'a BTreeMap<NodeId, u64>,
    /// How long this leader has seen the running lease (its monotonic clock).
    pub lease_seen_ms: Option<u64>,
    /// After an expired lease: whether its holder's runner has surely stopped, or why that is
    /// not known yet ([`previous_stopped`]). `Ok` when the last run ended otherwise.
    pub previous_stopped: Result<(), String>,
    /// The leader's wall clock.
    pub now: UnixMillis,
    /// A proposal of this authority is in flight.
    pub in_flight: bool,
    /// The tunables.
    pub settings: &'a BackupSettings,
}

/// The backup decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPlan {
    /// Commands to propose.
    pub proposals: Vec<Command>,
    /// One line: why.
    pub verdict: String,
    /// When the next scheduled window opens (or the one due now).
    pub next_due: Option<UnixMillis>,
}

/// A time as status and the CLI show it: `2026-12-05T18:00:00Z` (UTC).
pub fn fmt_time(t: UnixMillis) -> String {
    to_datetime(t).map_or_else(
        || format!("{} ms", t.0),
        |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// The window due at `now` or, when none is, the next one to open: the decision's `next_due`
/// and what status shows. Before the schedule is armed nothing is due, and the next window is
/// the first after `now`.
pub fn next_due(
    schedule: &BackupSchedule,
    a: &BackupAuthority,
    now: UnixMillis,
) -> Option<UnixMillis> {
    windows(schedule, a, now).1
}

/// The window due at `now` (armed schedules only), and [`next_due`].
fn windows(
    schedule: &BackupSchedule,
    a: &BackupAuthority,
    now: UnixMillis,
) -> (Option<UnixMillis>, Option<UnixMillis>) {
    let since = a.armed_at.max(a.done_window).unwrap_or(now);
    let due = a.armed_at.and_then(|_| schedule.due_window(since, now));
    (due, due.or_else(|| schedule.next_after(now.max(since))))
}

/// Decides. See the module docs.
pub fn decide_backup(i: &BackupInputs<'_>) -> BackupPlan {
    let a = i.authority;
    let s = i.settings;
    let (due, next_due) = windows(&s.schedule, a, i.now);
    let plan = |proposals: Vec<Command>, verdict: String| BackupPlan {
        proposals,
        verdict,
        next_due,
    };
    if i.in_flight {
        return plan(Vec::new(), "a backup proposal is in flight".into());
    }
    if a.armed_at.is_none() {
        return plan(
            vec![Command::ArmBackupSchedule { since: i.now }],
            format!(
                "arm the backup schedule `{}`: the first window is {}",
                s.schedule.source(),
                next_due.map_or_else(|| "never".to_string(), fmt_time)
            ),
        );
    }
    if let Some(l) = &a.lease {
        let finish = |verified: bool, expired: bool, reason: String, summary: BackupSummary| {
            Command::FinishBackup {
                id: l.id,
                verified,
                expired,
                reason,
                summary,
            }
        };
        if let Some(r) = i.runs.get(&l.node).filter(|r| r.id == l.id) {
            if r.done {
                let word = if r.verified { "verified" } else { "failed" };
                return plan(
                    vec![finish(
                        r.verified,
                        false,
                        r.reason.clone(),
                        r.summary.clone(),
                    )],
                    format!("backup {} on {} {word}: {}", l.id, l.node, r.reason),
                );
            }
        }
        let seen = i.lease_seen_ms.unwrap_or(0);
        if seen >= s.expire_after_ms() {
            let why = format!(
                "lease expired: no result from {} within {} s (max_duration {} s and silence \
                 {} s)",
                l.node,
                s.expire_after_ms() / 1000,
                s.max_duration_ms / 1000,
                s.silence_ms / 1000
            );
            return plan(
                vec![finish(false, true, why.clone(), BackupSummary::default())],
                format!("backup {} {why}", l.id),
            );
        }
        let silent_ms = i.report_ages.get(&l.node).copied().unwrap_or(seen);
        if silent_ms >= s.silence_ms && seen >= s.silence_ms {
            let why = format!(
                "lease expired: {}'s agent silent for {} s (backup.silence {} s)",
                l.node,
                silent_ms.min(seen) / 1000,
                s.silence_ms / 1000
            );
            return plan(
                vec![finish(false, true, why.clone(), BackupSummary::default())],
                format!("backup {} {why}", l.id),
            );
        }
        let progress = i.runs.get(&l.node).filter(|r| r.id == l.id).map_or_else(
            || "not started yet".to_string(),
            |r| format!("{}, {} bytes, {} s", r.phase, r.bytes, r.elapsed_ms / 1000),
        );
        return plan(
            Vec::new(),
            format!(
                "backup {} (attempt {}) for {} running on {}: {progress}",
                l.id, l.attempt, l.trigger, l.node
            ),
        );
    }
    // What is owed: a newer window first, then a retry, then the window, then a request.
    let window = due.map(|w| BackupTrigger::Scheduled { window: w });
    let retry = a.retry.as_ref().filter(|r| a.is_open(&r.trigger));
    let (trigger, attempt, exclude) = match (retry, &window) {
        (Some(r), Some(w))
            if matches!(r.trigger, BackupTrigger::Scheduled { .. }) && *w > r.trigger =>
        {
            (w.clone(), 1, None)
        }
        (Some(r), _) => (r.trigger.clone(), 2, Some(r.failed_on)),
        (None, Some(w)) => (w.clone(), 1, None),
        (None, None) => match &a.request {
            Some(req) => (BackupTrigger::Manual { request: req.index }, 1, None),
            None => {
                return plan(
                    Vec::new(),
                    format!(
                        "no backup due; next window {}",
                        next_due.map_or_else(|| "never".to_string(), fmt_time)
                    ),
                )
            }
        },
    };
    if i.maintenance {
        return plan(
            Vec::new(),
            format!("backup for {trigger} waits: maintenance is on"),
        );
    }
    if i.galera_outage_open {
        return plan(
            Vec::new(),
            format!("backup for {trigger} waits: a Galera outage is open"),
        );
    }
    if let Err(why) = &i.previous_stopped {
        return plan(Vec::new(), format!("backup for {trigger} waits: {why}"));
    }
    match choose_node(i, exclude) {
        Ok(node) => {
            let id = a.last_id.next();
            let retry_note = exclude.map_or_else(String::new, |n| {
                format!(" (retry; the first attempt failed on {n})")
            });
            let reason = format!("backup for {trigger} on {node}{retry_note}");
            plan(
                vec![Command::GrantBackupLease {
                    id,
                    node,
                    trigger,
                    attempt,
                    max_duration_ms: s.max_duration_ms,
                    reason: reason.clone(),
                }],
                format!("grant backup {id}: {reason}"),
            )
        }
        Err(why) => plan(
            Vec::new(),
            format!("backup for {trigger} waits: no node can take it ({why})"),
        ),
    }
}

/// After the lease of `node` expired at log index `end`: whether its runner has surely
/// stopped, or why that is not known yet. `applied`, `pongs`, `runs` and `ages` are what the
/// agents' latest reports said (pongs dated on this node's clock, `now_ms`).
#[allow(clippy::too_many_arguments)]
pub fn previous_stopped(
    members: &[NodeId],
    node: NodeId,
    id: crate::ids::BackupId,
    end: u64,
    applied: &BTreeMap<NodeId, u64>,
    pongs: &BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    runs: &BTreeMap<NodeId, BackupRun>,
    now_ms: u64,
    settings: &BackupSettings,
) -> Result<(), String> {
    crate::decide::timeline::expired_holder_stopped(
        members,
        node,
        &format!("backup {id}"),
        end,
        runs.get(&node).is_some_and(|r| r.id == id && !r.done),
        applied,
        pongs,
        now_ms,
        settings.ping_lease_ms + settings.clock_margin_ms,
    )
}

/// The node to take the backup, or why none can (every member's reason).
fn choose_node(i: &BackupInputs<'_>, exclude: Option<NodeId>) -> Result<NodeId, String> {
    let s = i.settings;
    let mut eligible = Vec::new();
    let mut reasons = Vec::new();
    for &n in i.members {
        let c = i.candidates.get(&n).cloned().unwrap_or_default();
        let why = if exclude == Some(n) {
            Some("the first attempt failed there".to_string())
        } else if !c.reporting {
            Some("its agent does not report".to_string())
        } else if s.db && i.galera_writer == Some(n) {
            Some("Galera writer".to_string())
        } else if s.db && i.galera_evicted.contains(&n) {
            Some("evicted from Galera".to_string())
        } else if s.db && c.synced != Some(true) {
            Some(if c.db_state.is_empty() {
                "MariaDB not checked".to_string()
            } else {
                format!("MariaDB {}", c.db_state)
            })
        } else if s.files && c.mounts_ok != Some(true) {
            Some(if c.mounts_ok.is_none() {
                "no Gluster mount checked".to_string()
            } else {
                "a Gluster mount is not healthy".to_string()
            })
        } else {
            None
        };
        match why {
            Some(w) => reasons.push(format!("{n}: {w}")),
            None => eligible.push(n),
        }
    }
    // Rotation: the position of each node's newest run in the catalog (newest first); a node
    // never used sorts first.
    let last_used = |n: NodeId| {
        i.authority
            .catalog
            .iter()
            .position(|r| r.node == n)
            .map_or(usize::MAX, |p| p)
    };
    eligible
        .into_iter()
        .min_by_key(|&n| {
            (
                i.redis_master == Some(n),
                std::cmp::Reverse(last_used(n)),
                n,
            )
        })
        .ok_or_else(|| reasons.join("; "))
}

#[cfg(test)]
mod tests;
