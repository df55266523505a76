//! Parsers for MariaDB/Galera health: `SHOW GLOBAL STATUS LIKE 'wsrep_%'` rows, a few global
//! variables (`grastate.dat` is `probe::grastate`).
//!
//! Pure; table-tested on real captures in `agent/tests/fixtures/galera/`.

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
}

fn on_off(v: &str) -> Option<bool> {
    match v.trim().to_ascii_uppercase().as_str() {
        "ON" | "1" | "TRUE" => Some(true),
        "OFF" | "0" | "FALSE" => Some(false),
        _ => None,
    }
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
        assert!(g.is_serving());
        assert_eq!(g.problem(), None);
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
}
