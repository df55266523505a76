//! Parsers for MariaDB/Galera health: `SHOW GLOBAL STATUS LIKE 'wsrep_%'` rows, a few global
//! variables (`grastate.dat` is `probe::grastate`), and the per-node auto-increment check.
//!
//! Pure; table-tested on real captures in `agent/tests/fixtures/galera/`.
//!
//! `wsrep_gcomm_uuid` is the node's identity in the group channel (not the cluster's history,
//! `wsrep_local_state_uuid`): `evs.evict` names a member by it. It is new at every start
//! unless `gvwstate.dat` survives, so it must be read while the node answers; a dead node
//! cannot be asked.
//!
//! The auto-increment check ([`GaleraStatus::auto_increment_problem`]) is the platform's
//! convention, not Galera's: every node has the same fixed `auto_increment_increment` (3) and
//! its own `auto_increment_offset`, with `wsrep_auto_increment_control=OFF`. With Galera's
//! control on, Galera rewrites both at every membership change (seen on MariaDB 10.11: `SET
//! GLOBAL wsrep_auto_increment_control=ON` on a lone node made them 1 and 1 at once), so ids
//! taken on different nodes can collide after a failover. Whether two nodes share an offset
//! needs every node's report: `decide::auto_increment`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `wsrep_local_state` 4: the node is Synced and may take traffic.
pub const STATE_SYNCED: i64 = 4;
/// `wsrep_local_state` 2: the node is a state-transfer donor (or desynced).
pub const STATE_DONOR: i64 = 2;

/// What the probes and decisions need from the wsrep status and variables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GaleraStatus {
    /// `wsrep_local_state` (1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced).
    pub local_state: Option<i64>,
    /// `wsrep_local_state_comment` (`Synced`, `Donor/Desynced`, ...).
    pub local_state_comment: Option<String>,
    /// `wsrep_cluster_status` (`Primary`, `non-Primary`, `Disconnected`).
    pub cluster_status: Option<String>,
    /// `wsrep_cluster_size`.
    pub cluster_size: Option<i64>,
    /// `wsrep_ready`.
    pub ready: Option<bool>,
    /// `wsrep_connected`.
    pub connected: Option<bool>,
    /// `wsrep_last_committed` (the node's seqno).
    pub last_committed: Option<i64>,
    /// `wsrep_local_state_uuid` (the cluster's history id).
    pub state_uuid: Option<String>,
    /// `wsrep_flow_control_paused` (fraction of time paused since the last FLUSH STATUS).
    pub flow_control_paused: Option<f64>,
    /// `wsrep_local_recv_queue`.
    pub recv_queue: Option<i64>,
    /// `read_only`.
    pub read_only: Option<bool>,
    /// `auto_increment_increment`.
    pub auto_increment_increment: Option<i64>,
    /// `auto_increment_offset`.
    pub auto_increment_offset: Option<i64>,
    /// `wsrep_auto_increment_control` (a variable): whether Galera sets the two above by
    /// itself from the cluster's membership. The platform wants it OFF.
    pub auto_increment_control: Option<bool>,
    /// `wsrep_gcomm_uuid`: the node's member id in the group channel, which `evs.evict`
    /// takes. Changes when mariadbd restarts (unless `gvwstate.dat` is kept).
    pub gcomm_uuid: Option<String>,
}

impl GaleraStatus {
    /// Whether the node is Synced in a Primary component and ready: the only state in which
    /// it should take traffic.
    pub fn is_serving(&self) -> bool {
        self.local_state == Some(STATE_SYNCED)
            && self.cluster_status.as_deref() == Some("Primary")
            && self.ready == Some(true)
    }

    /// Why the node should not take traffic, if so.
    pub fn problem(&self) -> Option<String> {
        if self.cluster_status.as_deref() != Some("Primary") {
            return Some(format!(
                "cluster status {} (not Primary)",
                self.cluster_status.as_deref().unwrap_or("unknown")
            ));
        }
        if self.local_state != Some(STATE_SYNCED) {
            return Some(format!(
                "local state {} ({})",
                self.local_state.map_or("unknown".into(), |s| s.to_string()),
                self.local_state_comment.as_deref().unwrap_or("?")
            ));
        }
        if self.ready != Some(true) {
            return Some("wsrep_ready is OFF".into());
        }
        None
    }

    /// What is wrong with the node's auto-increment settings for a cluster whose nodes all
    /// use `expected_increment` with one offset each (`0`: no check), if anything: an
    /// increment other than expected, an offset outside `1..=increment` (MariaDB ignores it
    /// then), or Galera's `wsrep_auto_increment_control` ON. Several problems are joined with
    /// `; `. A value the node did not report is not a problem: it is not evidence of a
    /// misconfiguration (the whole-cluster simulation reports none of them).
    pub fn auto_increment_problem(&self, expected_increment: u64) -> Option<String> {
        if expected_increment == 0 {
            return None;
        }
        let mut problems = Vec::new();
        if let Some(inc) = self.auto_increment_increment {
            if u64::try_from(inc).ok() != Some(expected_increment) {
                problems.push(format!(
                    "auto_increment_increment is {inc}, expected {expected_increment}"
                ));
            }
        }
        if let (Some(off), Some(inc)) = (self.auto_increment_offset, self.auto_increment_increment)
        {
            // An increment below 1 is named above; no range to hold the offset to.
            if inc >= 1 && (off < 1 || off > inc) {
                problems.push(format!(
                    "auto_increment_offset {off} is outside 1..={inc}: MariaDB ignores it"
                ));
            }
        }
        if self.auto_increment_control == Some(true) {
            problems.push(
                "wsrep_auto_increment_control is ON: Galera rewrites the increment and offset \
                 at every membership change (set it OFF)"
                    .to_string(),
            );
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

fn on_off(v: &str) -> Option<bool> {
    match v.trim().to_ascii_uppercase().as_str() {
        "ON" | "1" | "TRUE" => Some(true),
        "OFF" | "0" | "FALSE" => Some(false),
        _ => None,
    }
}

/// The status variables [`from_rows`] reads (what the probe asks for).
pub const STATUS_NAMES: &[&str] = &[
    "wsrep_local_state",
    "wsrep_local_state_comment",
    "wsrep_cluster_status",
    "wsrep_cluster_size",
    "wsrep_ready",
    "wsrep_connected",
    "wsrep_last_committed",
    "wsrep_local_state_uuid",
    "wsrep_flow_control_paused",
    "wsrep_local_recv_queue",
    "wsrep_gcomm_uuid",
];

/// The system variables [`from_rows`] reads.
pub const VARIABLE_NAMES: &[&str] = &[
    "read_only",
    "auto_increment_increment",
    "auto_increment_offset",
    "wsrep_on",
    "wsrep_auto_increment_control",
];

/// `SHOW GLOBAL STATUS|VARIABLES WHERE Variable_name IN (...)` for `names`.
pub fn show_query(what: &str, names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!(
        "SHOW GLOBAL {what} WHERE Variable_name IN ({})",
        list.join(", ")
    )
}

/// Builds the status from `(name, value)` rows of status and variables (names in any case).
pub fn from_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> GaleraStatus {
    let map: BTreeMap<String, &str> = rows
        .into_iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v))
        .collect();
    let get = |k: &str| map.get(k).map(|v| v.trim());
    let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    GaleraStatus {
        local_state: num("wsrep_local_state"),
        local_state_comment: get("wsrep_local_state_comment").map(str::to_string),
        cluster_status: get("wsrep_cluster_status").map(str::to_string),
        cluster_size: num("wsrep_cluster_size"),
        ready: get("wsrep_ready").and_then(on_off),
        connected: get("wsrep_connected").and_then(on_off),
        last_committed: num("wsrep_last_committed"),
        state_uuid: get("wsrep_local_state_uuid").map(str::to_string),
        flow_control_paused: get("wsrep_flow_control_paused").and_then(|v| v.parse().ok()),
        recv_queue: num("wsrep_local_recv_queue"),
        read_only: get("read_only").and_then(on_off),
        auto_increment_increment: num("auto_increment_increment"),
        auto_increment_offset: num("auto_increment_offset"),
        auto_increment_control: get("wsrep_auto_increment_control").and_then(on_off),
        gcomm_uuid: get("wsrep_gcomm_uuid")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    }
}

/// Parses tab-separated `mariadb -B` output (a header row, then `name<TAB>value` rows).
pub fn parse_tsv(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .skip_while(|l| l.starts_with("Variable_name"))
        .filter_map(|l| l.split_once('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::probe::fixture("galera", name)
    }

    #[test]
    fn synced_node() {
        let status = fixture("status_synced_size2.tsv");
        let vars = fixture("variables.tsv");
        let mut rows = parse_tsv(&status);
        rows.extend(parse_tsv(&vars));
        let g = from_rows(rows);
        assert_eq!(g.local_state, Some(STATE_SYNCED));
        assert_eq!(g.local_state_comment.as_deref(), Some("Synced"));
        assert_eq!(g.cluster_status.as_deref(), Some("Primary"));
        assert_eq!(g.cluster_size, Some(2));
        assert_eq!(g.ready, Some(true));
        assert_eq!(g.connected, Some(true));
        assert_eq!(g.last_committed, Some(11));
        assert_eq!(g.recv_queue, Some(0));
        assert_eq!(g.flow_control_paused, Some(0.0));
        assert_eq!(g.read_only, Some(false));
        assert_eq!(g.auto_increment_increment, Some(3));
        assert_eq!(g.auto_increment_offset, Some(2));
        assert_eq!(g.auto_increment_control, Some(false));
        assert_eq!(
            g.gcomm_uuid.as_deref(),
            Some("de9c8213-ebe1-11f1-99b5-eea5fd5db039")
        );
        assert_eq!(
            g.state_uuid.as_deref(),
            Some("de5b593b-ebe1-11f1-b996-0bbce3f5b979")
        );
        assert!(g.is_serving());
        assert_eq!(g.problem(), None);
        assert_eq!(g.auto_increment_problem(3), None);
        assert_eq!(g.auto_increment_problem(0), None);
    }

    /// The variables right after `SET GLOBAL wsrep_auto_increment_control=ON` on a lone node
    /// that had 3 and 2: Galera rewrote them to 1 and 1.
    #[test]
    fn galera_auto_control_on() {
        let vars = fixture("variables_auto_control_on.tsv");
        let g = from_rows(parse_tsv(&vars));
        assert_eq!(g.auto_increment_control, Some(true));
        assert_eq!(g.auto_increment_increment, Some(1));
        assert_eq!(g.auto_increment_offset, Some(1));
        assert_eq!(g.gcomm_uuid, None);
        let p = g.auto_increment_problem(3).unwrap_or_default();
        for want in [
            "auto_increment_increment is 1, expected 3",
            "wsrep_auto_increment_control is ON",
        ] {
            assert!(p.contains(want), "{p:?} lacks {want:?}");
        }
        assert_eq!(g.auto_increment_problem(0), None);
    }

    /// (increment, offset, auto-control, expected increment) -> the problem's parts, in order
    /// (none: no problem).
    #[test]
    fn auto_increment_problems() {
        type Case<'a> = (Option<i64>, Option<i64>, Option<bool>, u64, &'a [&'a str]);
        let cases: &[Case] = &[
            (Some(3), Some(1), Some(false), 3, &[]),
            (Some(3), Some(3), Some(false), 3, &[]),
            (Some(3), Some(2), None, 3, &[]),
            (None, None, None, 3, &[]),
            (
                Some(1),
                Some(1),
                Some(false),
                3,
                &["increment is 1, expected 3"],
            ),
            (
                Some(5),
                Some(2),
                Some(false),
                3,
                &["increment is 5, expected 3"],
            ),
            (
                Some(-1),
                Some(1),
                Some(false),
                3,
                &["increment is -1, expected 3"],
            ),
            (
                Some(3),
                Some(4),
                Some(false),
                3,
                &["offset 4 is outside 1..=3"],
            ),
            (
                Some(3),
                Some(0),
                Some(false),
                3,
                &["offset 0 is outside 1..=3"],
            ),
            (
                Some(3),
                Some(2),
                Some(true),
                3,
                &["wsrep_auto_increment_control is ON"],
            ),
            (
                Some(2),
                Some(3),
                Some(true),
                3,
                &[
                    "increment is 2, expected 3",
                    "offset 3 is outside 1..=2",
                    "control is ON",
                ],
            ),
            // Another fixed increment.
            (Some(5), Some(4), Some(false), 5, &[]),
            // 0: the check is off, whatever the node says.
            (Some(1), Some(9), Some(true), 0, &[]),
        ];
        for &(inc, off, control, expected, wants) in cases {
            let g = GaleraStatus {
                auto_increment_increment: inc,
                auto_increment_offset: off,
                auto_increment_control: control,
                ..GaleraStatus::default()
            };
            let got = g.auto_increment_problem(expected);
            let case = format!("{inc:?} {off:?} {control:?} expect {expected}");
            if wants.is_empty() {
                assert_eq!(got, None, "{case}");
                continue;
            }
            let p = got.unwrap_or_else(|| panic!("{case}: no problem"));
            assert_eq!(p.split("; ").count(), wants.len(), "{case}: {p}");
            for (part, want) in p.split("; ").zip(wants.iter()) {
                assert!(part.contains(want), "{case}: {part:?} lacks {want:?}");
            }
        }
    }

    /// An empty `wsrep_gcomm_uuid` is no id (wsrep status rows can be empty, as
    /// `wsrep_evs_delayed` is in the captures; an empty gcomm id was not seen).
    #[test]
    fn empty_gcomm_uuid_is_none() {
        let g = from_rows([
            ("wsrep_gcomm_uuid", ""),
            ("wsrep_auto_increment_control", "OFF"),
        ]);
        assert_eq!(g.gcomm_uuid, None);
        assert_eq!(g.auto_increment_control, Some(false));
    }

    /// (cluster_status, local_state, comment, ready) -> problem mentions
    #[test]
    fn not_serving_states() {
        let cases = [
            ("non-Primary", "0", "Initialized", "OFF", "not Primary"),
            ("Primary", "2", "Donor/Desynced", "ON", "Donor/Desynced"),
            ("Primary", "1", "Joining", "OFF", "Joining"),
            ("Primary", "4", "Synced", "OFF", "wsrep_ready is OFF"),
        ];
        for (cs, ls, comment, ready, want) in cases {
            let g = from_rows([
                ("wsrep_cluster_status", cs),
                ("wsrep_local_state", ls),
                ("wsrep_local_state_comment", comment),
                ("wsrep_ready", ready),
            ]);
            assert!(!g.is_serving(), "{cs} {ls}");
            let p = g.problem().unwrap_or_default();
            assert!(p.contains(want), "{p} lacks {want}");
        }
    }

    #[test]
    fn the_probe_asks_for_every_name_the_status_reads() {
        // Every field filled from the named rows alone: nothing read is left out of the query.
        let rows: Vec<(&str, &str)> = STATUS_NAMES
            .iter()
            .chain(VARIABLE_NAMES)
            .map(|&n| {
                let v = match n {
                    "wsrep_cluster_status" | "wsrep_local_state_comment" => "Primary",
                    "wsrep_local_state_uuid" | "wsrep_gcomm_uuid" => "u",
                    "wsrep_flow_control_paused" => "0.5",
                    "wsrep_ready"
                    | "wsrep_connected"
                    | "read_only"
                    | "wsrep_on"
                    | "wsrep_auto_increment_control" => "ON",
                    _ => "4",
                };
                (n, v)
            })
            .collect();
        let g = from_rows(rows);
        let json = serde_json::to_value(&g).unwrap_or_default();
        let fields = json.as_object().map(|o| o.len()).unwrap_or(0);
        assert!(fields > 0, "{json}");
        for (k, v) in json.as_object().into_iter().flatten() {
            assert!(
                !v.is_null(),
                "{k} is not filled from the queried names: {json}"
            );
        }
        assert_eq!(
            show_query("STATUS", &["a", "b"]),
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('a', 'b')"
        );
    }
}
