//! Scenario scripts: multi-step stories of the whole cluster, written as text and checked
//! against their recorded output (`agent/tests/golden/sim/*.txt`), in the style of toydb's
//! goldenscripts. Each script drives the seeded [`Sim`] of this test target (three production
//! drivers with their Redis and HAProxy), so what it records is what the agents do, step by
//! step, with every invariant of the random runs checked after every step.
//!
//! A script is a list of blocks separated by blank lines. A block is one or more command
//! lines (`#` lines are comments, kept as they are), then a `---` line, then the expected
//! output up to the next blank line (`ok` when the commands print nothing). Run with
//! `TRIAD_GOLDEN_UPDATE=1` to rewrite every expected output, then review the diff. A mismatch
//! names the file and line of the block and shows a diff; a script error (unknown command, bad
//! node, bad duration) names the file and line; a violated invariant fails the script with the
//! simulation's report (seed, invariant, last events).
//!
//! Commands (nodes are `n1`..`n3`; durations `500ms`, `5s`, `1.5s`, `2m`, rounded up to
//! whole 50 ms steps):
//! - `cluster seed=S [galera]`: a new cluster on seed `S`: Redis n1 is master, n2 and n3
//!   replicate from it, every HAProxy routes to redis1, the agents start with empty logs.
//!   With `galera`, the Galera world of the random runs too (`sim_galera`): three mariadbd
//!   Synced in one Primary component, a client writing to it, every agent running its Galera
//!   controller and recovery task.
//! - `stabilize [within D]` (default 60s): steps until a leader exists and every Redis,
//!   fence and HAProxy matches the committed master; prints when and what.
//! - `status`: the Raft leader and term; the committed Redis master, epoch, suspicion and the
//!   maintenance flag; the leader's last verdict; then one row per node: its agent (Raft role,
//!   applied epoch, lease, network trouble), its Redis (role, fence, whether it takes
//!   writes), its HAProxy (servers in `ready` state, which server takes writes through it) and
//!   its agent's answer to HAProxy's check (`GET /redis/master`).
//! - `run D`: steps for `D` without injecting anything.
//! - `until COND [within D]` (default 10s): steps until `COND` holds (checked before each
//!   step); prints when it held, or that it did not (a result to record, not an error). Conditions: `leader`,
//!   `converged` (as in `stabilize`), `master-moved` (the committed master differs from the
//!   one when the command started), `master=nX`, `suspect=nX`, `no-suspect`, `nX-follows-nY`
//!   (Redis nX is configured to replicate from nY), `nX-fenced`, `nX-sees-master=nY` (agent nX
//!   applied nY as master), `writes-to=nX` (writes go to nX through the HAProxy of every node
//!   whose agent runs and that is not isolated, and to nothing else through any HAProxy),
//!   `writes-to-master` (the same, for the committed master), and with Galera:
//!   `galera-synced` (all three Synced in one Primary component of three, every agent past
//!   the last outage), `db-primary=nX` (mariadbd nX is in a Primary component), `outage-open`,
//!   `outage-ended` (an outage was opened and the newest one has ended), `bootstrap=nX` (the
//!   open outage's committed bootstrap is nX), `writer=nX` (the committed Galera writer is
//!   nX), `mysql-writes-to=nX` (mariadbd nX serves, and MySQL writes go to it through the
//!   HAProxy of every node whose agent runs and that is not isolated, and to nothing else
//!   through any HAProxy: `ready` in `be_mysql` and its own agent answering `GET
//!   /galera/writer` 200), `writer-moved` (the committed writer differs from the one when the
//!   wait began), `mysql-writes-to-writer` (`mysql-writes-to` the committed writer, whichever
//!   it is).
//! - Redis: `kill-redis nX` (SIGKILL: connections refused), `hang-redis nX` (SIGSTOP: nothing
//!   answers), `resume-redis nX` (SIGCONT), `start-redis nX` (a killed one boots from its
//!   config: a fenced master until its agent gives it its role), `restart-redis nX` (kill
//!   and start at once).
//! - Agents: `kill-agent nX` (memory lost, Raft store kept), `start-agent nX`,
//!   `restart-agent nX`.
//! - Network: `isolate nX` (agent and Redis cut off from both others, both ways; `isolate
//!   writer`: the committed Galera writer's node, whichever it is), `lag nX`
//!   (agent nX receives no Raft messages; reports and pings pass), `heal` (both undone).
//! - `maintenance on|off [REASON...]`: proposed on the leader as the API would; steps until it
//!   applied there (at most 5s).
//! - Galera: `galera` (the committed outage, the leader's Galera verdict, then one row per
//!   node: its mariadbd and component, its data `hN:SEQNO` (history N), its grastate
//!   `hN:SEQNO safe F`, and what its agent's recovery does), `kill-db nX` (SIGKILL),
//!   `stop-db nX` (a clean stop by an operator), `hang-db nX` / `resume-db nX` (SIGSTOP and
//!   SIGCONT), `break-db nX` / `repair-db nX` (its starts fail until repaired), `kill-all-db`;
//!   `writer` (the committed Galera writer, its epoch and the evictions in force (`n1#4`: the
//!   gcomm UUID of n1's fourth mariadbd process), then one row per node: the `be_mysql`
//!   servers `ready` in its HAProxy and where MySQL writes go through it, and its agent's
//!   answer to HAProxy's check of its own server, `GET /galera/writer`).
//!
//! `run`, `until`, `stabilize` and `maintenance` also print every decision committed while
//! they ran, from the audit history (`+0.4s committed ...`), and with Galera what the Galera
//! world did (`+0.4s galera: ...`: views, transfers, starts, exits) and every step an agent's
//! recovery carried out (`+0.4s n2 galera: ...`), and what each agent's Galera writer
//! reconciler did (`+0.4s n2 writer: ...`: its `evs.evict` statements, its HAProxy's
//! `be_mysql` changes). Every printed time counts from
//! the start of the block (so `kill-redis n1` then `until writes-to-master` prints the time
//! from the kill until writes work again); times are simulated, deterministic for a seed, and
//! rounded to 0.1 s. Replication offsets in verdicts are masked (`offset *`): any change of
//! timing moves them, and the ranking order already shows what they decided.
//!
//! Each script has its `#[test]` (`scripts!` below; a test fails when a file has none). Five
//! more run scripts with a bug planted, to prove the recorded stories catch what matters: a
//! driver that skips the silent path's lease wait (the output differs; no invariant breaks in
//! that world), agents that ignore their lease (the invariant stops the script), the two
//! Galera decision plants (a bootstrap chosen by node id, a silent node counted as absent:
//! the lost acknowledged writes stop the Galera scripts), and agents that answer HAProxy's
//! MySQL check as if their node were serving (the writer script stops at the routable,
//! non-Primary old writer).
//!
//! Caveats: the language covers the faults the scripts need, not every fault of the random
//! runs (no message loss, one-way cuts, slow probes or clock jumps, lost grastate); switchover
//! runs in the API adapter, outside the simulation, and has no command; a Galera cluster keeps
//! its client writing throughout (seqnos in the output move with any change of timing).

use std::path::{Path, PathBuf};

use triad::actuator::haproxy::{AdminMode, Haproxy};
use triad::cluster::Command;
use triad::driver::Plant as DriverPlant;
use triad::ids::NodeId;
use triad::probe::redis_info::RedisRole;
use triad::raft::Role;

use super::{serving_master, Agent, Plant, Sim, N, STEP_MS, TEST};
use crate::simkit::report;

/// Where the scripts live.
fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sim")
}

/// One block: its input lines (commands and comments, verbatim, with line numbers) and the
/// expected output (`None` when the block has no `---` yet).
struct Block {
    input: Vec<(usize, String)>,
    expected: Option<Vec<String>>,
}

impl Block {
    fn commands(&self) -> impl Iterator<Item = &(usize, String)> {
        self.input.iter().filter(|(_, l)| !l.starts_with('#'))
    }
}

fn parse(path: &str, text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut cur = Block {
        input: Vec::new(),
        expected: None,
    };
    for (i, line) in text.lines().enumerate() {
        let no = i + 1;
        let line = line.trim_end();
        if line.is_empty() {
            if !cur.input.is_empty() {
                blocks.push(std::mem::replace(
                    &mut cur,
                    Block {
                        input: Vec::new(),
                        expected: None,
                    },
                ));
            }
        } else if let Some(out) = cur.expected.as_mut() {
            out.push(line.to_string());
        } else if line == "---" {
            if cur.commands().next().is_none() {
                return Err(format!("{path}:{no}: `---` without a command above it"));
            }
            cur.expected = Some(Vec::new());
        } else {
            cur.input.push((no, line.trim().to_string()));
        }
    }
    if !cur.input.is_empty() {
        blocks.push(cur);
    }
    Ok(blocks)
}

/// The script with `outputs` (one per block) as its expected outputs.
fn render(blocks: &[Block], outputs: &[Vec<String>]) -> String {
    let mut parts = Vec::new();
    for (b, out) in blocks.iter().zip(outputs) {
        let mut s: Vec<String> = b.input.iter().map(|(_, l)| l.clone()).collect();
        if b.commands().next().is_some() {
            s.push("---".into());
            if out.is_empty() {
                s.push("ok".into());
            } else {
                s.extend(out.iter().cloned());
            }
        }
        parts.push(s.join("\n"));
    }
    parts.join("\n\n") + "\n"
}

/// A line diff of `expected` against `got` (`-` expected only, `+` got only), by longest
/// common subsequence.
fn diff(expected: &[String], got: &[String]) -> String {
    let (n, m) = (expected.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == got[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == got[j] {
            out += &format!("    {}\n", expected[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("  - {}\n", expected[i]);
            i += 1;
        } else {
            out += &format!("  + {}\n", got[j]);
            j += 1;
        }
    }
    out
}

/// Bugs planted in the simulated world and in every agent's driver, to prove the scripts
/// catch them ([`NO_BUG`] otherwise).
type Plants = (Plant, DriverPlant);

const NO_BUG: Plants = (Plant::None, DriverPlant::None);

/// Runs the script `text` (named `path` in messages) with `plants`. Answers the script with
/// its actual outputs and the mismatches; an error when a command fails (the script stops
/// there).
fn run_text(path: &str, text: &str, plants: Plants) -> Result<(String, Vec<String>), String> {
    let blocks = parse(path, text)?;
    let mut runner = Runner {
        sim: None,
        plants,
        printed: 0,
        block_start: 0,
    };
    let mut outputs = Vec::new();
    let mut mismatches = Vec::new();
    for b in &blocks {
        let mut out = Vec::new();
        runner.block_start = runner.sim.as_ref().map_or(0, |s| s.now);
        for (no, cmd) in b.commands() {
            runner
                .exec_guarded(cmd, &mut out)
                .map_err(|e| format!("{path}:{no}: `{cmd}`: {}", without_replay(&e)))?;
        }
        if let (Some((no, _)), Some(expected)) = (b.commands().next(), b.expected.as_ref()) {
            let got = if out.is_empty() {
                vec!["ok".to_string()]
            } else {
                out.clone()
            };
            if &got != expected {
                let cmds: Vec<&str> = b.commands().map(|(_, c)| c.as_str()).collect();
                mismatches.push(format!(
                    "{path}:{no}: output of `{}` differs (- expected, + got):\n{}",
                    cmds.join("; "),
                    diff(expected, &got)
                ));
            }
        } else if let Some((no, _)) = b.commands().next() {
            mismatches.push(format!("{path}:{no}: no expected output (`---`) yet"));
        }
        outputs.push(out);
    }
    Ok((render(&blocks, &outputs), mismatches))
}

/// A simulation report without its replay hint, which names the random test: a script
/// replays by running it again.
fn without_replay(report: &str) -> String {
    match report.find(" (replay: ") {
        Some(i) => match report[i..].find("), ") {
            Some(j) => format!("{}{}", &report[..i], &report[i + j + 1..]),
            None => report.to_string(),
        },
        None => report.to_string(),
    }
}

/// Runs the script file `name` (in `tests/golden/sim/`); with `TRIAD_GOLDEN_UPDATE` set (and
/// no plant) rewrites its expected outputs instead of comparing them.
fn check_file(name: &str, plants: Plants) -> Result<(), String> {
    let file = dir().join(name);
    let path = format!("agent/tests/golden/sim/{name}");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{path}: {e}"))?;
    let (rendered, mismatches) = run_text(&path, &text, plants)?;
    if std::env::var_os("TRIAD_GOLDEN_UPDATE").is_some() && plants == NO_BUG {
        if rendered != text {
            std::fs::write(&file, rendered).map_err(|e| format!("{path}: {e}"))?;
        }
        return Ok(());
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n(if the new behaviour is intended: rerun with TRIAD_GOLDEN_UPDATE=1 and review \
             the diff of {path})",
            mismatches.join("\n")
        ))
    }
}

fn check(name: &str) {
    if let Err(e) = check_file(name, NO_BUG) {
        panic!("{e}");
    }
}

struct Runner {
    sim: Option<Sim>,
    plants: Plants,
    /// The newest log index whose audit line was printed.
    printed: u64,
    /// When the current block started (simulated ms): printed times count from there.
    block_start: u64,
}

/// A script condition (`until`).
#[derive(Clone, Copy, Debug)]
enum Cond {
    Leader,
    Converged,
    MasterMoved,
    Master(u64),
    Suspect(u64),
    NoSuspect,
    Follows(u64, u64),
    Fenced(u64),
    SeesMaster(u64, u64),
    WritesTo(u64),
    WritesToMaster,
    GaleraSynced,
    DbPrimary(u64),
    OutageOpen,
    OutageEnded,
    Bootstrap(u64),
    Writer(u64),
    WriterMoved,
    MysqlWritesTo(u64),
    MysqlWritesToWriter,
}

fn node(s: &str) -> Result<u64, String> {
    s.strip_prefix('n')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (1..=N).contains(n))
        .ok_or_else(|| format!("bad node `{s}` (n1..n{N})"))
}

/// A duration as a number of simulation steps (rounded up).
fn steps(s: &str) -> Result<u64, String> {
    let bad = || format!("bad duration `{s}` (500ms, 5s, 1.5s, 2m)");
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return Err(bad());
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    let ms = (v * unit_ms).round() as u64;
    Ok(ms.div_ceil(STEP_MS))
}

/// `[within D]` at the end of `args`, or `default`.
fn within(args: &[&str], default: &str) -> Result<u64, String> {
    match args {
        [] => steps(default),
        ["within", d] => steps(d),
        _ => Err(format!(
            "expected `within DURATION`, got `{}`",
            args.join(" ")
        )),
    }
}

fn cond(s: &str) -> Result<Cond, String> {
    let c = match s {
        "leader" => Cond::Leader,
        "converged" => Cond::Converged,
        "master-moved" => Cond::MasterMoved,
        "no-suspect" => Cond::NoSuspect,
        "writes-to-master" => Cond::WritesToMaster,
        "galera-synced" => Cond::GaleraSynced,
        "outage-open" => Cond::OutageOpen,
        "outage-ended" => Cond::OutageEnded,
        "writer-moved" => Cond::WriterMoved,
        "mysql-writes-to-writer" => Cond::MysqlWritesToWriter,
        _ => {
            if let Some(n) = s.strip_prefix("master=") {
                Cond::Master(node(n)?)
            } else if let Some(n) = s.strip_prefix("suspect=") {
                Cond::Suspect(node(n)?)
            } else if let Some(n) = s.strip_prefix("writes-to=") {
                Cond::WritesTo(node(n)?)
            } else if let Some((a, b)) = s.split_once("-follows-") {
                Cond::Follows(node(a)?, node(b)?)
            } else if let Some((a, b)) = s.split_once("-sees-master=") {
                Cond::SeesMaster(node(a)?, node(b)?)
            } else if let Some(a) = s.strip_suffix("-fenced") {
                Cond::Fenced(node(a)?)
            } else if let Some(n) = s.strip_prefix("db-primary=") {
                Cond::DbPrimary(node(n)?)
            } else if let Some(n) = s.strip_prefix("bootstrap=") {
                Cond::Bootstrap(node(n)?)
            } else if let Some(n) = s.strip_prefix("writer=") {
                Cond::Writer(node(n)?)
            } else if let Some(n) = s.strip_prefix("mysql-writes-to=") {
                Cond::MysqlWritesTo(node(n)?)
            } else {
                return Err(format!(
                    "unknown condition `{s}` (leader, converged, master-moved, master=nX, \
                     suspect=nX, no-suspect, nX-follows-nY, nX-fenced, nX-sees-master=nY, \
                     writes-to=nX, writes-to-master, galera-synced, db-primary=nX, \
                     outage-open, outage-ended, bootstrap=nX, writer=nX, writer-moved, \
                     mysql-writes-to=nX, mysql-writes-to-writer)"
                ));
            }
        }
    };
    Ok(c)
}

/// Simulated milliseconds as seconds, rounded to 0.1 s.
fn secs(ms: u64) -> String {
    let tenths = (ms + 50) / 100;
    format!("{}.{}s", tenths / 10, tenths % 10)
}

/// `text` with every replication offset masked (`offset 1234` -> `offset *`).
fn mask_offsets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("offset ") {
        let (head, tail) = rest.split_at(i + "offset ".len());
        out += head;
        let tail_digits = tail.strip_prefix('-').unwrap_or(tail);
        let n = tail_digits.len()
            - tail_digits
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        if n > 0 {
            out.push('*');
            rest = &tail_digits[n..];
        } else {
            rest = tail;
        }
    }
    out + rest
}

/// Lines padded into columns (no trailing spaces).
fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
}

impl Sim {
    /// The live agent that applied the most (ties: the lowest node): what is committed.
    fn newest(&self) -> Option<&Agent> {
        (1..=N)
            .rev()
            .filter_map(|n| self.agents[n as usize - 1].as_ref())
            .max_by_key(|a| a.d.state().applied.0)
    }

    /// The committed Redis master, as the newest agent applied it.
    fn committed(&self) -> Option<u64> {
        self.newest()?.d.state().redis.master.map(NodeId::get)
    }

    /// The committed Galera writer, as the most advanced agent applied it.
    fn committed_writer(&self) -> Option<u64> {
        self.newest()?
            .d
            .state()
            .galera_writer
            .writer
            .map(NodeId::get)
    }

    /// The leader of the highest term among the agents that claim leadership.
    fn current_leader(&self) -> Option<(u64, u64)> {
        (1..=N)
            .filter_map(|n| {
                let st = self.agents[n as usize - 1].as_ref()?.d.raft_status();
                (st.role == Role::Leader).then_some((st.term.0, n))
            })
            .max()
            .map(|(t, n)| (n, t))
    }

    /// Whether writes go to `m` through the HAProxy of every node whose agent runs and that is
    /// not isolated, and to no other server through any HAProxy. (A node whose agent is dead or
    /// that is cut off keeps its HAProxy as it was: the status table shows it.)
    fn writes_only_to(&self, m: u64) -> bool {
        (1..=N).all(|h| {
            let w = self.writable_through(h);
            let counted = self.agents[h as usize - 1].is_some() && !self.is_isolated(h);
            w.iter().all(|&x| x == m) && (!counted || w == [m])
        })
    }

    /// Whether node `n` is cut off from every other node (one way or both).
    fn is_isolated(&self, n: u64) -> bool {
        self.cut_links(n) == N as usize - 1
    }

    /// How many other nodes node `n` is cut off from (one way or both).
    fn cut_links(&self, n: u64) -> usize {
        (1..=N)
            .filter(|&o| o != n)
            .filter(|&o| self.blocked.contains(&(n, o)) || self.blocked.contains(&(o, n)))
            .count()
    }

    /// Servers in `ready` state on node `h`'s HAProxy.
    fn ready_servers(&self, h: u64) -> Vec<String> {
        futures::executor::block_on(
            self.haproxy[h as usize - 1].show_servers_state(Some("be_redis")),
        )
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.admin_state.mode() == AdminMode::Ready)
        .map(|r| r.server)
        .collect()
    }

    /// Whether `c` holds; `start` is the committed Redis master and Galera writer when the
    /// wait began (for `master-moved` and `writer-moved`).
    fn holds(&self, c: Cond, start: (Option<u64>, Option<u64>)) -> bool {
        let (start_master, start_writer) = start;
        match c {
            Cond::Leader => self.current_leader().is_some(),
            Cond::Converged => {
                self.current_leader().is_some()
                    && self
                        .newest()
                        .is_some_and(|a| self.converged_on(a.d.state().redis.master).is_ok())
            }
            Cond::MasterMoved => self.committed() != start_master,
            Cond::Master(m) => self.committed() == Some(m),
            Cond::Suspect(m) => self.newest().is_some_and(|a| {
                a.d.state()
                    .redis
                    .suspect
                    .as_ref()
                    .is_some_and(|s| s.node.get() == m)
            }),
            Cond::NoSuspect => self
                .newest()
                .is_some_and(|a| a.d.state().redis.suspect.is_none()),
            Cond::Follows(r, m) => self.follows(r, m),
            Cond::Fenced(n) => self.redis_state(n).1,
            Cond::SeesMaster(n, m) => self.applied(n).is_some_and(|(x, _)| x == Some(m)),
            Cond::WritesTo(m) => self.writes_only_to(m),
            Cond::WritesToMaster => self.committed().is_some_and(|m| self.writes_only_to(m)),
            Cond::GaleraSynced => self.galera.is_some() && self.galera_converged().is_ok(),
            Cond::DbPrimary(n) => self
                .galera
                .as_ref()
                .is_some_and(|g| g.world.is_primary(n as usize - 1)),
            Cond::OutageOpen => self
                .newest()
                .is_some_and(|a| a.d.state().galera.open().is_some()),
            Cond::OutageEnded => self.newest().is_some_and(|a| {
                let g = &a.d.state().galera;
                g.outage.is_some() && g.open().is_none()
            }),
            Cond::Bootstrap(n) => self.newest().is_some_and(|a| {
                a.d.state()
                    .galera
                    .decided()
                    .is_some_and(|b| b.node.get() == n)
            }),
            Cond::Writer(n) => self
                .newest()
                .is_some_and(|a| a.d.state().galera_writer.writer == Some(NodeId(n))),
            Cond::WriterMoved => self.committed_writer() != start_writer,
            Cond::MysqlWritesTo(m) => self.mysql_writes_only_to(m),
            Cond::MysqlWritesToWriter => self
                .committed_writer()
                .is_some_and(|w| self.mysql_writes_only_to(w)),
        }
    }

    /// MySQL servers each HAProxy would send a write to now: `ready`, and that server's own
    /// agent answers HAProxy's check (`GET /galera/writer`) 200.
    fn mysql_routes(&self, h: u64) -> Vec<u64> {
        self.mysql_ready(h)
            .into_iter()
            .filter(|&s| matches!(self.writer_answer(s), Some(Ok(()))))
            .collect()
    }

    /// Whether MySQL writes go to `m` through the HAProxy of every node whose agent runs and
    /// that is not isolated, and to no other server through any HAProxy, with `m` serving.
    fn mysql_writes_only_to(&self, m: u64) -> bool {
        let serving = self
            .galera
            .as_ref()
            .is_some_and(|g| g.world.serving(m as usize - 1));
        serving
            && (1..=N).all(|h| {
                let w = self.mysql_routes(h);
                let counted = self.agents[h as usize - 1].is_some() && !self.is_isolated(h);
                w.iter().all(|&x| x == m) && (!counted || w == [m])
            })
    }

    /// The status table (see the module docs).
    fn status_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let claims: Vec<String> = (1..=N)
            .filter_map(|n| {
                let st = self.agents[n as usize - 1].as_ref()?.d.raft_status();
                (st.role == Role::Leader).then_some((n, st.term.0))
            })
            .filter(|&c| Some(c) != self.current_leader())
            .map(|(n, t)| format!("n{n} still claims term {t}"))
            .collect();
        let leader = self.current_leader();
        out.push(match leader {
            Some((n, t)) if claims.is_empty() => format!("raft: leader n{n}, term {t}"),
            Some((n, t)) => format!("raft: leader n{n}, term {t} ({})", claims.join(", ")),
            None => "raft: no leader".into(),
        });
        match self.newest() {
            Some(a) => {
                let st = a.d.state();
                let r = &st.redis;
                let master = r.master.map_or("none".into(), |m| m.to_string());
                let suspect = r
                    .suspect
                    .as_ref()
                    .map_or("no suspicion".into(), |s| format!("{} suspected", s.node));
                let maint = if st.maintenance.enabled {
                    format!("maintenance on ({})", st.maintenance.reason)
                } else {
                    "maintenance off".into()
                };
                out.push(format!(
                    "redis: master {master}, epoch {}, {suspect}; {maint}",
                    r.epoch
                ));
            }
            None => out.push("redis: no agent running".into()),
        }
        let verdict = leader
            .and_then(|(n, _)| self.agents[n as usize - 1].as_ref())
            .map(|a| mask_offsets(a.d.verdict()));
        out.push(match (leader, verdict) {
            (Some((n, _)), Some(v)) => format!("verdict (n{n}): {v}"),
            _ => "verdict: none (no leader)".into(),
        });
        let mut rows = vec![vec![
            "node".to_string(),
            "agent".into(),
            "redis".into(),
            "haproxy".into(),
            "/redis/master".into(),
        ]];
        for n in 1..=N {
            rows.push(vec![
                format!("n{n}"),
                self.agent_cell(n),
                self.redis_cell(n),
                self.haproxy_cell(n),
                self.check_cell(n),
            ]);
        }
        out.extend(table(&rows));
        out
    }

    fn agent_cell(&self, n: u64) -> String {
        let Some(a) = self.agents[n as usize - 1].as_ref() else {
            return "dead".into();
        };
        let st = a.d.raft_status();
        let mut s = format!(
            "{}, epoch {}, {}",
            st.role,
            a.d.state().redis.epoch,
            if a.lease_valid { "lease" } else { "no lease" }
        );
        let cut = self.cut_links(n);
        if cut == N as usize - 1 {
            s += ", isolated";
        } else if cut > 0 {
            s += ", partly cut";
        }
        if self.raft_cut.iter().any(|&(_, to)| to == n) {
            s += ", lagging";
        }
        s
    }

    fn redis_cell(&self, n: u64) -> String {
        let s = self.redis[n as usize - 1].server.snapshot();
        if s.down {
            return "down".into();
        }
        let cell = match s.info.role {
            Some(RedisRole::Master) if s.hung => "master".to_string(),
            Some(RedisRole::Master) if s.fenced => "master, fenced".to_string(),
            Some(RedisRole::Master) if self.accepts_writes(n) => "master, writable".to_string(),
            Some(RedisRole::Master) => "master, no replica acknowledges".to_string(),
            Some(RedisRole::Replica) => {
                let of = s
                    .info
                    .master_host
                    .as_deref()
                    .and_then(|h| h.strip_prefix("10.0.0."))
                    .map_or("?".to_string(), |m| format!("n{m}"));
                let link = if s.info.master_link_up == Some(true) {
                    "up"
                } else {
                    "down"
                };
                if s.hung {
                    format!("replica of {of}")
                } else {
                    format!("replica of {of}, link {link}")
                }
            }
            None => "unknown role".into(),
        };
        if s.hung {
            format!("hung ({cell})")
        } else {
            cell
        }
    }

    fn haproxy_cell(&self, h: u64) -> String {
        let ready = self.ready_servers(h);
        let ready = if ready.is_empty() {
            "none".to_string()
        } else {
            ready.join("+")
        };
        match self.writable_through(h).as_slice() {
            [] => format!("{ready}, no writes"),
            w => {
                let w: Vec<String> = w.iter().map(|m| format!("n{m}")).collect();
                format!("{ready}, writes to {}", w.join("+"))
            }
        }
    }

    fn check_cell(&self, n: u64) -> String {
        let Some(a) = self.agents[n as usize - 1].as_ref() else {
            return "refused (agent dead)".into();
        };
        match serving_master(
            NodeId(n),
            &a.d.state().redis,
            a.lease_valid,
            a.last_report.as_ref(),
        ) {
            Ok(()) => "200".into(),
            Err(why) => format!("503 {why}"),
        }
    }
}

impl Sim {
    /// Moves what the Galera world and the agents' Galera tasks did into `out`, timed from
    /// `start`.
    fn flush_galera(&mut self, start: u64, out: &mut Vec<String>) {
        if let Some(r) = self.galera_record.as_mut() {
            for (at, line) in r.drain(..) {
                out.push(format!("+{} {line}", secs(at.saturating_sub(start))));
            }
        }
    }

    /// The `galera` status: the committed outage, the leader's verdict, then one row per
    /// node: its mariadbd, data and grastate, and what its agent's recovery does.
    fn galera_lines(&self) -> Result<Vec<String>, String> {
        let g = self
            .galera
            .as_ref()
            .ok_or("no Galera in this cluster (`cluster seed=N galera`)")?;
        let mut out = Vec::new();
        out.push(match self.newest().map(|a| &a.d.state().galera) {
            None => "galera: no agent running".into(),
            Some(auth) => match (&auth.outage, auth.open()) {
                (None, _) => "galera: no outage yet".into(),
                (Some(o), None) => format!("galera: outage {} ended", o.number),
                (Some(o), Some(_)) => match &o.bootstrap {
                    None => format!("galera: outage {} open, no bootstrap decided", o.number),
                    Some(b) => format!(
                        "galera: outage {} open, bootstraps {} at seqno {} ({} {})",
                        o.number,
                        b.node,
                        b.seqno.map_or("?".into(), |s| s.to_string()),
                        b.kind.as_str(),
                        b.mode.as_str()
                    ),
                },
            },
        });
        let verdict = self.current_leader().and_then(|(l, _)| {
            let a = self.agents[l as usize - 1].as_ref()?;
            let p =
                a.d.plan(triad::cluster::Authority::Galera)
                    .and_then(|p| p.as_galera())?;
            Some(format!("verdict (n{l}): {}", p.verdict))
        });
        out.push(verdict.unwrap_or_else(|| "verdict: none (no leader)".into()));
        let mut rows = vec![vec![
            "node".to_string(),
            "mariadbd".into(),
            "data".into(),
            "grastate".into(),
            "recovery".into(),
        ]];
        for (n, mut row) in g.world.status_rows(self.now).into_iter().enumerate() {
            let doing = self.agents[n]
                .as_ref()
                .and_then(|a| a.glue.as_ref())
                .map_or("agent dead".to_string(), |glue| {
                    glue.planner.view(self.now).doing
                });
            for cell in row.iter_mut().skip(2) {
                if let Some((_, v)) = cell.split_once(' ') {
                    *cell = v.to_string();
                }
            }
            row.push(doing);
            rows.push(row);
        }
        out.extend(table(&rows));
        Ok(out)
    }
}

impl Sim {
    /// The `writer` status: the committed Galera writer, its epoch and the evictions in
    /// force, then one row per node: the servers `ready` in its HAProxy's MySQL backend, and
    /// its agent's answer to HAProxy's check of its own server (`GET /galera/writer`).
    fn writer_lines(&self) -> Result<Vec<String>, String> {
        if self.galera.is_none() {
            return Err("no Galera in this cluster (`cluster seed=N galera`)".into());
        }
        let mut out = Vec::new();
        out.push(match self.newest().map(|a| &a.d.state().galera_writer) {
            None => "writer: no agent running".into(),
            Some(w) => {
                let evicted: Vec<String> = w
                    .evicted
                    .iter()
                    .map(|(n, e)| {
                        format!("{n} ({})", crate::sim_galera::gcomm_short(&e.gcomm_uuid))
                    })
                    .collect();
                format!(
                    "writer: {}, epoch {}; evicted: {}",
                    w.writer.map_or("none".into(), |n| n.to_string()),
                    w.epoch,
                    if evicted.is_empty() {
                        "none".into()
                    } else {
                        evicted.join(", ")
                    }
                )
            }
        });
        let mut rows = vec![vec![
            "node".to_string(),
            "be_mysql".into(),
            "/galera/writer".into(),
        ]];
        for n in 1..=N {
            let ready: Vec<String> = self
                .mysql_ready(n)
                .iter()
                .map(|s| format!("db{s}"))
                .collect();
            let routes: Vec<String> = self
                .mysql_routes(n)
                .iter()
                .map(|s| format!("n{s}"))
                .collect();
            let haproxy = match (ready.is_empty(), routes.is_empty()) {
                (true, _) => "none, no writes".to_string(),
                (false, true) => format!("{}, no writes", ready.join("+")),
                (false, false) => format!("{}, writes to {}", ready.join("+"), routes.join("+")),
            };
            let answer = match self.writer_answer(n) {
                None => "refused (agent dead)".to_string(),
                Some(Ok(())) => "200".into(),
                Some(Err(why)) => format!("503 {why}"),
            };
            rows.push(vec![format!("n{n}"), haproxy, answer]);
        }
        out.extend(table(&rows));
        Ok(out)
    }
}

impl Runner {
    fn sim(&mut self) -> Result<&mut Sim, String> {
        self.sim
            .as_mut()
            .ok_or_else(|| "no cluster yet (start with `cluster seed=N`)".to_string())
    }

    /// Runs one command; a panic (raft-rs asserts, a failed restart) becomes an error with the
    /// simulation's report.
    fn exec_guarded(&mut self, cmd: &str, out: &mut Vec<String>) -> Result<(), String> {
        let trace = self.sim.as_ref().map(|s| (s.seed, s.trace.clone()));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.exec(cmd, out)));
        let r = r.unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(match trace {
                Some((seed, t)) => report(TEST, seed, &format!("panic: {msg}"), &t),
                None => format!("panic: {msg}"),
            })
        });
        r?;
        let start = self.block_start;
        if let Some(sim) = self.sim.as_mut() {
            sim.flush_galera(start, out);
        }
        // The invariants are checked after every step; this also covers a command that changed
        // the world without stepping.
        match self.sim.as_mut() {
            Some(sim) => {
                sim.check_writable()?;
                sim.check_galera_writer()
            }
            None => Ok(()),
        }
    }

    fn exec(&mut self, cmd: &str, out: &mut Vec<String>) -> Result<(), String> {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let (name, args) = words.split_first().ok_or("empty command")?;
        let one_node = || match args {
            [n] => node(n),
            _ => Err(format!("`{name}` takes one node, like `{name} n1`")),
        };
        match *name {
            "cluster" => {
                let (seed, galera) = match args {
                    [s] => (*s, false),
                    [s, "galera"] => (*s, true),
                    _ => return Err("usage: cluster seed=N [galera]".into()),
                };
                let seed = seed
                    .strip_prefix("seed=")
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| format!("bad argument `{seed}` (seed=N)"))?;
                let mut sim = Sim::build(seed, self.plants.0, self.plants.1, galera, false);
                if galera {
                    sim.galera_record = Some(Vec::new());
                }
                self.sim = Some(sim);
                self.printed = 0;
                self.block_start = 0;
            }
            "galera" => {
                if !args.is_empty() {
                    return Err("`galera` takes no arguments".into());
                }
                let lines = self.sim()?.galera_lines()?;
                out.extend(lines);
            }
            "writer" => {
                if !args.is_empty() {
                    return Err("`writer` takes no arguments".into());
                }
                let lines = self.sim()?.writer_lines()?;
                out.extend(lines);
            }
            "kill-db" | "stop-db" | "hang-db" | "resume-db" | "break-db" | "repair-db" => {
                let n = one_node()? as usize - 1;
                let sim = self.sim()?;
                let now = sim.now;
                let w = &mut sim
                    .galera
                    .as_mut()
                    .ok_or("no Galera in this cluster (`cluster seed=N galera`)")?
                    .world;
                let running = w.dbs[n].proc.is_some();
                match *name {
                    "kill-db" | "stop-db" if !running => {
                        return Err(format!("n{}'s mariadbd is not running", n + 1))
                    }
                    "hang-db" if !w.alive(n) => {
                        return Err(format!("n{}'s mariadbd is not running", n + 1))
                    }
                    "kill-db" => w.kill(n, now),
                    "stop-db" => w.stop(n, now, "an operator"),
                    "hang-db" => w.hang(n, u64::MAX, now),
                    "resume-db" => w.resume(n, now),
                    "break-db" => w.dbs[n].broken_until = u64::MAX,
                    _ => w.dbs[n].broken_until = 0,
                }
                sim.galera_events();
            }
            "kill-all-db" => {
                if !args.is_empty() {
                    return Err("`kill-all-db` takes no arguments".into());
                }
                let sim = self.sim()?;
                let now = sim.now;
                let w = &mut sim
                    .galera
                    .as_mut()
                    .ok_or("no Galera in this cluster (`cluster seed=N galera`)")?
                    .world;
                for n in 0..N as usize {
                    w.kill(n, now);
                }
                sim.galera_events();
            }
            "stabilize" => {
                let limit = within(args, "60s")?;
                let start = self.block_start;
                if self.step_until(Cond::Converged, limit, out)? {
                    let sim = self.sim()?;
                    let took = secs(sim.now - start);
                    let (l, t) = sim.current_leader().ok_or("no leader")?;
                    let m = sim.committed().ok_or("no master")?;
                    let epoch = sim.newest().map_or(0, |a| a.d.state().redis.epoch.0);
                    out.push(format!(
                        "stable after {took}: raft leader n{l} (term {t}), redis master n{m} \
                         (epoch {epoch}), every HAProxy sends writes to n{m}"
                    ));
                } else {
                    let sim = self.sim()?;
                    let why = match sim.newest() {
                        Some(a) => sim
                            .converged_on(a.d.state().redis.master)
                            .err()
                            .unwrap_or_else(|| "no leader".into()),
                        None => "no agent running".into(),
                    };
                    out.push(format!(
                        "not stable within {}: {why}",
                        secs(limit * STEP_MS)
                    ));
                }
            }
            "status" => {
                if !args.is_empty() {
                    return Err("`status` takes no arguments".into());
                }
                out.extend(self.sim()?.status_lines());
            }
            "run" => {
                let n = match args {
                    [d] => steps(d)?,
                    _ => return Err("usage: run DURATION".into()),
                };
                for _ in 0..n {
                    self.step(out)?;
                }
            }
            "until" => {
                let (c, rest) = args.split_first().ok_or("usage: until COND [within D]")?;
                let c = cond(c)?;
                let limit = within(rest, "10s")?;
                if self.step_until(c, limit, out)? {
                    let took = secs(self.sim()?.now - self.block_start);
                    out.push(format!("{} after {took}", args[0]));
                } else {
                    out.push(format!("{}: not within {}", args[0], secs(limit * STEP_MS)));
                }
            }
            "kill-redis" => {
                let n = one_node()?;
                let sim = self.sim()?;
                if sim.redis[n as usize - 1].server.snapshot().down {
                    return Err(format!("n{n}'s Redis is already down"));
                }
                sim.crash_redis(n);
            }
            "hang-redis" => {
                let n = one_node()?;
                let sim = self.sim()?;
                let s = sim.redis[n as usize - 1].server.snapshot();
                if s.down || s.hung {
                    return Err(format!("n{n}'s Redis is not running"));
                }
                sim.hang_redis(n);
            }
            "resume-redis" => {
                let n = one_node()?;
                let sim = self.sim()?;
                let s = sim.redis[n as usize - 1].server.snapshot();
                if !s.hung || s.down {
                    return Err(format!("n{n}'s Redis is not hung"));
                }
                sim.restart_redis(n);
            }
            "start-redis" => {
                let n = one_node()?;
                let sim = self.sim()?;
                if !sim.redis[n as usize - 1].server.snapshot().down {
                    return Err(format!("n{n}'s Redis is not down (use restart-redis)"));
                }
                sim.restart_redis(n);
            }
            "restart-redis" => {
                let n = one_node()?;
                let sim = self.sim()?;
                if !sim.redis[n as usize - 1].server.snapshot().down {
                    sim.crash_redis(n);
                }
                sim.restart_redis(n);
            }
            "kill-agent" => {
                let n = one_node()?;
                let sim = self.sim()?;
                if sim.agents[n as usize - 1].is_none() {
                    return Err(format!("n{n}'s agent is already dead"));
                }
                sim.kill_agent(n);
            }
            "start-agent" => {
                let n = one_node()?;
                let sim = self.sim()?;
                if sim.agents[n as usize - 1].is_some() {
                    return Err(format!("n{n}'s agent is running (use restart-agent)"));
                }
                sim.restart(n as usize - 1);
            }
            "restart-agent" => {
                let n = one_node()?;
                let sim = self.sim()?;
                sim.kill_agent(n);
                sim.restart(n as usize - 1);
            }
            "isolate" => {
                // `isolate writer`: the node of the committed Galera writer, whichever it is.
                let n = match args {
                    ["writer"] => self
                        .sim()?
                        .committed_writer()
                        .ok_or("`isolate writer`: no Galera writer committed")?,
                    _ => one_node()?,
                };
                self.sim()?.isolate(n);
            }
            "lag" => {
                let n = one_node()?;
                self.sim()?.lag(n);
            }
            "heal" => {
                if !args.is_empty() {
                    return Err("`heal` takes no arguments".into());
                }
                let sim = self.sim()?;
                sim.raft_cut.clear();
                sim.heal_links();
            }
            "maintenance" => {
                let (on, reason) = match args.split_first() {
                    Some((&"on", r)) => (true, r.join(" ")),
                    Some((&"off", r)) => (false, r.join(" ")),
                    _ => return Err("usage: maintenance on|off [REASON...]".into()),
                };
                let sim = self.sim()?;
                let (l, _) = sim
                    .current_leader()
                    .ok_or("no leader to propose maintenance to")?;
                let clock = sim.clock(l as usize - 1);
                let a = sim.agents[l as usize - 1].as_mut().ok_or("leader down")?;
                let command = Command::SetMaintenance {
                    enabled: on,
                    reason: if reason.is_empty() {
                        "scenario".into()
                    } else {
                        reason
                    },
                    by: "script".into(),
                };
                a.d.propose(command, clock)
                    .map_err(|e| format!("proposal refused: {e}"))?;
                sim.log(format!("scenario: maintenance {on} proposed on n{l}"));
                let limit = steps("5s")?;
                let mut applied = false;
                for _ in 0..limit {
                    self.step(out)?;
                    let sim = self.sim()?;
                    if sim.agents[l as usize - 1]
                        .as_ref()
                        .is_some_and(|a| a.d.state().maintenance.enabled == on)
                    {
                        applied = true;
                        break;
                    }
                }
                if !applied {
                    out.push("maintenance: not applied on the leader within 5.0s".into());
                }
            }
            other => return Err(format!("unknown command `{other}`")),
        }
        Ok(())
    }

    /// One quiet step, then the audit lines of whatever committed meanwhile.
    fn step(&mut self, out: &mut Vec<String>) -> Result<(), String> {
        let (printed, start) = (self.printed, self.block_start);
        let sim = self.sim()?;
        sim.step(false)?;
        let Some(a) = sim.newest() else {
            return Ok(());
        };
        let st = a.d.state();
        let mut new: Vec<String> = st
            .history
            .iter()
            .take_while(|h| h.index.0 > printed)
            .map(|h| {
                format!(
                    "+{} committed {}",
                    secs(sim.now - start),
                    mask_offsets(&h.details)
                )
            })
            .collect();
        new.reverse();
        let applied = st.applied.0.max(printed);
        // What the Galera world and the agents' Galera tasks did, in order, before what
        // committed in this step.
        sim.flush_galera(start, out);
        out.extend(new);
        self.printed = applied;
        Ok(())
    }

    /// Steps until `c` holds (checked before each step), at most `limit` steps.
    fn step_until(&mut self, c: Cond, limit: u64, out: &mut Vec<String>) -> Result<bool, String> {
        let sim = self.sim()?;
        let start = (sim.committed(), sim.committed_writer());
        for _ in 0..limit {
            if self.sim()?.holds(c, start) {
                return Ok(true);
            }
            self.step(out)?;
        }
        Ok(self.sim()?.holds(c, start))
    }
}

macro_rules! scripts {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($file);
            }
        )*

        /// Every script in the directory has its test above.
        #[test]
        fn every_script_has_a_test() {
            let listed = [$($file),*];
            let mut missing = Vec::new();
            for entry in std::fs::read_dir(dir()).expect("tests/golden/sim") {
                let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
                if name.ends_with(".txt") && !listed.contains(&name.as_str()) {
                    missing.push(name);
                }
            }
            assert!(missing.is_empty(), "scripts without a test in scenarios/mod.rs: {missing:?}");
        }
    };
}

scripts! {
    script_killed_master_fast_path => "01_killed_master_fast_path.txt",
    script_hung_master_silent_path => "02_hung_master_silent_path.txt",
    script_partitioned_master => "03_partitioned_master.txt",
    script_killed_replica_agent => "04_killed_replica_agent.txt",
    script_maintenance_holds_failover => "05_maintenance_holds_failover.txt",
    script_old_master_node_rejoins => "06_old_master_node_rejoins.txt",
    script_galera_full_outage => "07_galera_full_outage.txt",
    script_galera_last_node_standing => "08_galera_last_node_standing.txt",
    script_galera_writer => "09_galera_writer.txt",
    script_hung_master_hung_path => "10_hung_master_hung_path.txt",
}

/// Bugs planted in the decision or the simulated agents, each caught by the script named,
/// with what the failure must say. Each breaks a guard that the script's story depends on:
/// - the driver's silent path does not wait for the old master's lease: no invariant breaks
///   in this world (the Redis-side guard is on), but the recorded story catches it (the
///   promotion comes too early);
/// - the hung path does not wait for every agent to apply the suspicion (take the hung master
///   out of its HAProxy): caught by the story likewise (the promotion comes too early);
/// - a cut-off master's agent acts as if it held its lease: the partition script stops at
///   the violated invariant, with the seed (the island keeps taking writes through its own
///   HAProxy once the majority has promoted another master);
/// - Galera candidates ranked by node id, not by position: the full outage stops at lost
///   acknowledged writes (n1, behind, is bootstrapped);
/// - a silent Galera node counts as absent: the last node standing stops at lost
///   acknowledged writes (a node without n3's newest commits is bootstrapped while n3's
///   agent is silent);
/// - each agent answers HAProxy's check of its MySQL server as if its node were serving
///   (`serving_writer` ignoring its last cycle's `serving`): the writer script stops when
///   the cut-off old writer, non-Primary, is still routable through its own HAProxy.
#[test]
fn scripts_catch_planted_bugs() {
    type Case = (&'static str, Plant, DriverPlant, &'static [&'static str]);
    let cases: [Case; 6] = [
        (
            "02_hung_master_silent_path.txt",
            Plant::None,
            DriverPlant::SkipLeaseWait,
            &["+ master-moved after"],
        ),
        (
            "10_hung_master_hung_path.txt",
            Plant::None,
            DriverPlant::HungWithoutEveryAgent,
            &["+ master-moved after"],
        ),
        (
            "03_partitioned_master.txt",
            Plant::IgnoreLease,
            DriverPlant::None,
            &[
                "simulation failed: seed 2",
                "invariant: lost writes: n1 takes writes through HAProxy",
            ],
        ),
        (
            "07_galera_full_outage.txt",
            Plant::GaleraRankByNodeId,
            DriverPlant::None,
            &["invariant: lost acknowledged writes"],
        ),
        (
            "08_galera_last_node_standing.txt",
            Plant::GaleraSilentAsAbsent,
            DriverPlant::None,
            &["invariant: lost acknowledged writes"],
        ),
        (
            "09_galera_writer.txt",
            Plant::WriterIgnoresServing,
            DriverPlant::None,
            &[
                "invariant: galera writer: db",
                "is routable (ready in a HAProxy, its agent answers /galera/writer 200) but its \
                 mariadbd is not alive",
            ],
        ),
    ];
    for (file, plant, driver, says) in cases {
        match check_file(file, (plant, driver)) {
            Ok(()) => panic!("{file}: the planted bug {plant:?}/{driver:?} was not caught"),
            Err(e) => {
                let at = format!("agent/tests/golden/sim/{file}:");
                assert!(
                    e.starts_with(&at) && says.iter().all(|s| e.contains(s)),
                    "{file}: caught, but as: {e}"
                );
            }
        }
    }
}

/// Script errors name the file and line, and stop the script.
#[test]
fn script_errors_name_file_and_line() {
    let run = |text: &str| run_text("inline.txt", text, NO_BUG).err();
    let e = run("cluster seed=1\n---\nok\n\n# a comment\nfrobnicate n1\n---\nok\n");
    assert_eq!(
        e.as_deref(),
        Some("inline.txt:6: `frobnicate n1`: unknown command `frobnicate`")
    );
    let e = run("cluster seed=1\nkill-redis n4\n---\nok\n");
    assert_eq!(
        e.as_deref(),
        Some("inline.txt:2: `kill-redis n4`: bad node `n4` (n1..n3)")
    );
    let e = run("status\n---\nok\n");
    assert!(e.is_some_and(|e| e.starts_with("inline.txt:1: `status`: no cluster yet")));
    let e = run("cluster seed=1\nuntil n1-melts\n---\nok\n");
    assert!(e.is_some_and(|e| e.starts_with("inline.txt:2: `until n1-melts`: unknown condition")));
    let e = run("---\nok\n");
    assert_eq!(
        e.as_deref(),
        Some("inline.txt:1: `---` without a command above it")
    );
}
