//! The remediation decision: which node repairs what, one at a time, under a committed lease.
//!
//! Evidence ([`needs_from_reports`]): each node's own agent reports its PHP-FPM pool and its
//! GlusterFS mounts. A pool whose probe says it does not answer because nothing listens
//! (connection refused) or answers wrongly (`down`), past the probe's fall threshold and on its
//! last check too, needs a restart. A pool that times out (hung, or only slow) is not
//! restarted: it is drained by the web rotation and the status says why; a saturated pool is
//! never restarted. A mount that is down or hung (ENOTCONN after a cut, a dead client) needs a
//! remount when the agents can remount (`[gluster] remount_command`; otherwise it is only
//! drained). The volume probe's own view of this node: a gluster CLI refused (glusterd not
//! running) on its last check too needs a glusterd restart (`[gluster] restart_glusterd`);
//! this node's brick offline (the probe names its local brick among the bricks down) on its
//! last check too needs a brick start (`[gluster] restart_bricks`). Per node the order is: a
//! pool, glusterd, the brick, then the mounts; nodes in id order.
//!
//! The decision ([`decide`]):
//! - with a lease in force: end it from its agent's report (done or failed), or expire it once
//!   this leader has known it for its `max_duration` without a result; nothing else starts;
//! - without one, in maintenance or during a Galera outage: nothing starts;
//! - else the first need (nodes by id, then the order above) gets the lease, unless its node
//!   holds the backup lease, or that node's repairs of that kind in the last hour reached the
//!   cap (it stays drained, and the verdict says why), or that kind is backing off on that
//!   node: after `n` repairs in the last hour the next waits `backoff x 2^(n-1)` from the last
//!   grant. Holds are per action: a capped brick start does not hold the node's remount; but
//!   while a node's glusterd restart is held, its brick start and remounts (which need
//!   glusterd) wait too. The counts come from the committed records, so a new leader counts
//!   what the old one did.
//!
//! Caveat: the hourly window and the back-off compare the leader's wall clock with the
//! proposers' (the grant times); skewed clocks shift them by the skew.

use std::collections::BTreeMap;

use crate::cluster::{Command, RemedyAction, RemedyAuthority, RemedyRun};
use crate::health::Seen;
use crate::ids::{NodeId, UnixMillis};
use crate::observation::{FailureKind, Service, Status};

/// The decision's tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemedySettings {
    /// A report older than this (ms) is no evidence.
    pub freshness_ms: u64,
    /// Restarts of one kind on one node allowed in any hour.
    pub per_hour: u32,
    /// The first back-off (ms), doubled with every restart in the last hour.
    pub backoff_ms: u64,
    /// A lease's bound (ms): the leader expires it after this long without a result.
    pub max_duration_ms: u64,
    /// Whether dead PHP-FPM pools are restarted (`[web] restart_phpfpm`, a service control).
    pub restart_phpfpm: bool,
    /// Whether broken mounts are mounted again (`[gluster] remount_command`).
    pub remount: bool,
    /// Whether a node's dead brick is started again (`[gluster] restart_bricks`).
    pub start_bricks: bool,
    /// Whether a node's dead glusterd is restarted (`[gluster] restart_glusterd`, a service
    /// control that runs it).
    pub restart_glusterd: bool,
    /// The agents' ping lease (ms) and the clock margin on it: how long an expired holder
    /// that nobody answers may still believe it holds its lease.
    pub ping_lease_ms: u64,
    /// See `ping_lease_ms`.
    pub clock_margin_ms: u64,
}

/// After the lease of `node` expired at log index `end`: whether it surely stopped (it applied
/// the end and reports no run of that lease going on, or nobody answered its pings for longer
/// than its ping lease since it could have applied the end), or why that is not known yet.
#[allow(clippy::too_many_arguments)]
pub fn previous_stopped(
    members: &[NodeId],
    node: NodeId,
    id: crate::ids::RemedyId,
    end: u64,
    applied: &BTreeMap<NodeId, u64>,
    pongs: &BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    runs: &BTreeMap<NodeId, RemedyRun>,
    now_ms: u64,
    settings: &RemedySettings,
) -> Result<(), String> {
    crate::decide::timeline::expired_holder_stopped(
        members,
        node,
        &format!("remediation {id}"),
        end,
        runs.get(&node).is_some_and(|r| r.id == id && !r.done),
        applied,
        pongs,
        now_ms,
        settings.ping_lease_ms + settings.clock_margin_ms,
    )
}

/// One repair a node needs: the action, its target (a mount point; empty for a pool), why.
pub type Need = (RemedyAction, String, String);

/// What each member needs, from the fresh reports of its own agent, among the repairs
/// `settings` turn on.
pub fn needs_from_reports(
    members: &[NodeId],
    seen: &[Seen],
    settings: &RemedySettings,
) -> BTreeMap<NodeId, Vec<Need>> {
    let freshness_ms = settings.freshness_ms;
    let mut out: BTreeMap<NodeId, Vec<Need>> = BTreeMap::new();
    for &n in members {
        let own = seen.iter().filter(|s| {
            s.observer == n && s.observation.id.subject == n && s.age_ms <= freshness_ms
        });
        let mut needs = Vec::new();
        let mut bricks = Vec::new();
        let mut mounts = Vec::new();
        for s in own {
            let o = &s.observation;
            let error = o.last.error.as_deref().unwrap_or("");
            match o.id.service {
                Service::Phpfpm if settings.restart_phpfpm => {
                    let dead = match o.status {
                        Status::Down => true,
                        Status::Unreachable => o.last.failure == Some(FailureKind::Refused),
                        Status::Healthy | Status::Degraded => false,
                    };
                    // The last check failed too: a pool that just came back is left alone.
                    if dead && !o.last.status.is_up() {
                        needs.push((
                            RemedyAction::RestartPhpfpm,
                            String::new(),
                            format!("php-fpm {}: {error}", o.status.as_str()),
                        ));
                    }
                }
                // The gluster CLI refused: glusterd is not running (on its last check too).
                Service::Gluster
                    if settings.restart_glusterd
                        && o.status == Status::Unreachable
                        && o.last.failure == Some(FailureKind::Refused)
                        && !o.last.status.is_up() =>
                {
                    bricks.push((
                        RemedyAction::RestartGlusterd,
                        String::new(),
                        format!("glusterd not answering: {error}"),
                    ));
                }
                // The volume probe says `down` only for this node's own brick (its details
                // name it), on its last check too.
                Service::Gluster
                    if settings.start_bricks
                        && o.status == Status::Down
                        && o.last.status == Status::Down =>
                {
                    let d = &o.last.details;
                    let local = d.get("local_brick").and_then(|v| v.as_str());
                    let down = d.get("bricks_down").and_then(|v| v.as_array());
                    if let (Some(local), Some(down)) = (local, down) {
                        if down.iter().any(|b| b.as_str() == Some(local)) {
                            bricks.push((
                                RemedyAction::StartBrick,
                                local.to_string(),
                                format!("brick {local} down: {error}"),
                            ));
                        }
                    }
                }
                Service::GlusterMount
                    if settings.remount && !o.status.is_up() && !o.last.status.is_up() =>
                {
                    mounts.push((
                        RemedyAction::Remount,
                        o.id.target.clone(),
                        format!("mount {} {}: {error}", o.id.target, o.status.as_str()),
                    ));
                }
                _ => {}
            }
        }
        // A dead brick before a broken mount: the mount is mounted again onto every brick.
        needs.extend(bricks);
        needs.extend(mounts);
        if !needs.is_empty() {
            out.insert(n, needs);
        }
    }
    out
}

/// The decision's inputs.
#[derive(Debug)]
pub struct RemedyInputs<'a> {
    /// The registered members, sorted.
    pub members: &'a [NodeId],
    /// The committed remediation authority.
    pub authority: &'a RemedyAuthority,
    /// What each node needs.
    pub needs: &'a BTreeMap<NodeId, Vec<Need>>,
    /// What each agent reports of its remediation.
    pub runs: &'a BTreeMap<NodeId, RemedyRun>,
    /// How long this leader has known the lease in force (ms), if one is.
    pub lease_known_ms: Option<u64>,
    /// The leader's wall clock (the hourly cap and the back-off).
    pub now: UnixMillis,
    /// The backup lease's holder, if a backup runs.
    pub backup_holder: Option<NodeId>,
    /// Whether a Galera outage is open.
    pub galera_outage: bool,
    /// Whether maintenance is on.
    pub maintenance: bool,
    /// Whether a remediation command is in flight.
    pub in_flight: bool,
    /// After an expired lease: whether its holder surely stopped (see [`previous_stopped`]).
    pub previous_stopped: Result<(), String>,
    /// The tunables.
    pub settings: RemedySettings,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemedyPlan {
    /// One line for operators.
    pub verdict: String,
    /// At most one command.
    pub proposals: Vec<Command>,
    /// Why a node's repairs wait (cap, back-off, backup lease), by node; one node's holds
    /// joined with "; ". A node may have a repair granted and another held.
    pub held: BTreeMap<NodeId, String>,
}

const HOUR_MS: i64 = 3_600_000;

/// Why `n`'s next repair of `action` must wait (its hourly cap, its back-off), if it must:
/// the counts come from the committed records.
fn waits(i: &RemedyInputs<'_>, n: NodeId, action: RemedyAction) -> Option<String> {
    let recent: Vec<_> = i
        .authority
        .records
        .iter()
        .filter(|r| r.node == n && r.action == action && i.now.0 - r.granted_at.0 < HOUR_MS)
        .collect();
    let count = u32::try_from(recent.len()).unwrap_or(u32::MAX);
    if count >= i.settings.per_hour {
        let then = match action {
            RemedyAction::RestartPhpfpm | RemedyAction::Remount => {
                "it stays drained until an operator repairs it"
            }
            RemedyAction::StartBrick | RemedyAction::RestartGlusterd => "it waits for an operator",
        };
        return Some(format!(
            "capped: {count} in the last hour (at most {}); {then}",
            i.settings.per_hour
        ));
    }
    let last = recent.first()?;
    let wait = i
        .settings
        .backoff_ms
        .saturating_mul(1 << (count.saturating_sub(1)).min(16));
    let since = u64::try_from(i.now.0 - last.granted_at.0).unwrap_or(0);
    (since < wait).then(|| {
        format!(
            "backing off: {count} in the last hour, the next in {} ms",
            wait - since
        )
    })
}

/// Notes why one of `n`'s repairs waits (a node's holds are joined with "; ").
fn hold(plan: &mut RemedyPlan, n: NodeId, why: String) {
    plan.held
        .entry(n)
        .and_modify(|w| {
            w.push_str("; ");
            w.push_str(&why);
        })
        .or_insert(why);
}

/// Decides. Pure.
pub fn decide(i: &RemedyInputs<'_>) -> RemedyPlan {
    let mut plan = RemedyPlan {
        verdict: String::new(),
        proposals: vec![],
        held: BTreeMap::new(),
    };
    let a = i.authority;
    if i.in_flight {
        plan.verdict = "waiting: a remediation command is in flight".into();
        return plan;
    }
    if let Some(l) = &a.lease {
        let what = format!(
            "remediation {} ({} on {})",
            l.id,
            crate::cluster::describe_remedy(l.action, &l.target),
            l.node
        );
        let run = i.runs.get(&l.node).filter(|r| r.id == l.id && r.done);
        if let Some(r) = run {
            let how = if r.ok { "done" } else { "failed" };
            plan.verdict = format!("end {what}: {how}: {}", r.detail);
            plan.proposals.push(Command::FinishRemedy {
                id: l.id,
                ok: r.ok,
                expired: false,
                reason: r.detail.clone(),
            });
        } else if i.lease_known_ms.is_some_and(|k| k >= l.max_duration_ms) {
            let why = format!("no result from {} within {} ms", l.node, l.max_duration_ms);
            plan.verdict = format!("expire {what}: {why}");
            plan.proposals.push(Command::FinishRemedy {
                id: l.id,
                ok: false,
                expired: true,
                reason: why,
            });
        } else {
            plan.verdict = format!("waiting: {what} in progress");
        }
        return plan;
    }
    if i.needs.is_empty() {
        plan.verdict = "no action: nothing to repair".into();
        return plan;
    }
    if let Err(why) = &i.previous_stopped {
        plan.verdict = format!("waiting: {why}");
        return plan;
    }
    if i.maintenance {
        plan.verdict = "no action: maintenance on, no remediation starts".into();
        return plan;
    }
    if i.galera_outage {
        plan.verdict = "waiting: a Galera outage is open, no remediation starts".into();
        return plan;
    }
    for (&n, acts) in i.needs {
        if !i.members.contains(&n) {
            continue;
        }
        if i.backup_holder == Some(n) {
            let doing: Vec<String> = acts
                .iter()
                .map(|(action, target, _)| crate::cluster::describe_remedy(*action, target))
                .collect();
            let doing = doing.join(", ");
            hold(&mut plan, n, format!("{doing}: {n} holds the backup lease"));
            continue;
        }
        // Holds are per action: a repair that is capped or backing off (a brick that never
        // starts) does not hold the node's other repairs (a mount that would remount), but
        // for glusterd: while its restart is held, the node's brick and mounts, which need
        // it, wait too.
        let mut glusterd_held = false;
        for (action, target, why) in acts {
            if plan
                .proposals
                .iter()
                .any(|p| matches!(p, Command::GrantRemedy { node, .. } if *node == n))
            {
                break;
            }
            let doing = crate::cluster::describe_remedy(*action, target);
            if glusterd_held && matches!(action, RemedyAction::StartBrick | RemedyAction::Remount) {
                hold(
                    &mut plan,
                    n,
                    format!("{doing} waits for restart glusterd on {n}"),
                );
                continue;
            }
            if let Some(wait) = waits(i, n, *action) {
                glusterd_held |= *action == RemedyAction::RestartGlusterd;
                hold(&mut plan, n, format!("{doing} {wait}"));
                continue;
            }
            if plan.proposals.is_empty() {
                let id = a.last_id.next();
                plan.verdict = format!("remediation {id}: {doing} on {n} ({why})");
                plan.proposals.push(Command::GrantRemedy {
                    id,
                    node: n,
                    action: *action,
                    target: target.clone(),
                    max_duration_ms: i.settings.max_duration_ms,
                    reason: why.clone(),
                });
            }
        }
    }
    if plan.proposals.is_empty() {
        let held: Vec<String> = plan
            .held
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect();
        plan.verdict = format!("no action: {}", held.join("; "));
    }
    plan
}

#[cfg(test)]
mod tests;
