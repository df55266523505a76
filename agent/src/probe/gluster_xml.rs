//! Parsers for `gluster --mode=script ... --xml` output (`volume status VOL detail`, `volume
//! heal VOL info`, `peer status`) with roxmltree, and the comparison against the expected brick
//! list.
//!
//! `volume status` silently omits bricks it cannot reach, so a brick is judged against the
//! configured list: an expected brick that is absent from the XML counts as down.
//!
//! Pure; table-tested on real captures in `agent/tests/fixtures/gluster/`.

use serde::{Deserialize, Serialize};

/// One brick as `volume status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrickStatus {
    /// `host:path`.
    pub name: String,
    /// Whether the brick process is online.
    pub online: bool,
    /// Brick process pid, when known.
    pub pid: Option<i64>,
}

/// One brick's pending heal entries (or, from `heal info split-brain`, its entries in
/// split-brain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrickHeal {
    /// `host:path`.
    pub name: String,
    /// `Connected` or another state.
    pub status: String,
    /// Entries pending heal, when the brick answered.
    pub entries: Option<u64>,
    /// The entries listed: a path in the volume, or `<gfid:...>` when glusterd knows no path.
    pub files: Vec<String>,
}

/// `heal info`, and `heal info split-brain` when something is pending.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealInfo {
    /// Per brick, the entries pending heal.
    pub bricks: Vec<BrickHeal>,
    /// Per brick, the entries in split-brain: `None` when unknown (the split-brain listing was
    /// not available); empty when nothing is pending (a split-brain entry is pending too).
    pub split_brain: Option<Vec<BrickHeal>>,
}

impl HealInfo {
    /// Entries pending heal, summed over the bricks that answered.
    pub fn pending(&self) -> u64 {
        self.bricks.iter().filter_map(|b| b.entries).sum()
    }

    /// Entries in split-brain, when known: the largest count any brick gives (each replica
    /// lists the same file).
    pub fn split_brain(&self) -> Option<u64> {
        self.split_brain
            .as_ref()
            .map(|b| b.iter().filter_map(|b| b.entries).max().unwrap_or(0))
    }
}

/// The distinct entries of `bricks`, sorted, at most `limit` of them.
pub fn entry_paths(bricks: &[BrickHeal], limit: usize) -> Vec<String> {
    let all: std::collections::BTreeSet<&str> = bricks
        .iter()
        .flat_map(|b| b.files.iter().map(String::as_str))
        .collect();
    all.into_iter().take(limit).map(str::to_string).collect()
}

/// Parses what the heal helper prints: the `heal info` document, then, when something is
/// pending, the `heal info split-brain` document.
pub fn parse_heal_docs(text: &str) -> Result<HealInfo, String> {
    // Each document ends at its `</cliOutput>`: whatever follows (a failed second command's
    // words) is not part of it.
    let docs: Vec<&str> = text
        .split("<?xml")
        .map(|d| match d.rfind("</cliOutput>") {
            Some(end) => &d[..end + "</cliOutput>".len()],
            None => d,
        })
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let Some(first) = docs.first() else {
        return Err("the heal helper printed nothing".into());
    };
    let with_decl = |d: &str| {
        if d.starts_with('<') {
            d.to_string()
        } else {
            format!("<?xml{d}")
        }
    };
    let bricks = parse_heal_info(&with_decl(first))?;
    let pending: u64 = bricks.iter().filter_map(|b| b.entries).sum();
    let split_brain = match docs.get(1) {
        Some(d) => parse_heal_info(&with_decl(d)).ok(),
        None if pending == 0 => Some(Vec::new()),
        None => None,
    };
    Ok(HealInfo {
        bricks,
        split_brain,
    })
}

/// One peer as `peer status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Peer hostname.
    pub hostname: String,
    /// Whether glusterd is connected to it.
    pub connected: bool,
    /// State text (`Peer in Cluster`).
    pub state: String,
}

fn doc(xml: &str) -> Result<roxmltree::Document<'_>, String> {
    let d = roxmltree::Document::parse(xml).map_err(|e| format!("gluster XML: {e}"))?;
    let root = d.root_element();
    if root.tag_name().name() != "cliOutput" {
        return Err(format!(
            "gluster XML: root element is <{}>, expected <cliOutput>",
            root.tag_name().name()
        ));
    }
    let op_ret = child_text(root, "opRet").unwrap_or("0");
    if op_ret != "0" {
        let err = child_text(root, "opErrstr").unwrap_or("no error text");
        return Err(format!("gluster command failed (opRet {op_ret}): {err}"));
    }
    Ok(d)
}

fn child_text<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.has_tag_name(name))
        .and_then(|c| c.text())
        .map(str::trim)
}

/// Parses `volume status VOL detail --xml` into its bricks.
pub fn parse_volume_status(xml: &str) -> Result<Vec<BrickStatus>, String> {
    let d = doc(xml)?;
    let mut out = Vec::new();
    for vol in d.descendants().filter(|n| n.has_tag_name("volume")) {
        for node in vol.children().filter(|n| n.has_tag_name("node")) {
            let host = child_text(node, "hostname").unwrap_or_default();
            let path = child_text(node, "path").unwrap_or_default();
            // Self-heal daemons and other services are listed as nodes without a brick path.
            if !path.starts_with('/') {
                continue;
            }
            out.push(BrickStatus {
                name: format!("{host}:{path}"),
                online: child_text(node, "status") == Some("1"),
                pid: child_text(node, "pid").and_then(|p| p.parse().ok()),
            });
        }
    }
    Ok(out)
}

/// Parses `volume heal VOL info --xml`.
pub fn parse_heal_info(xml: &str) -> Result<Vec<BrickHeal>, String> {
    let d = doc(xml)?;
    Ok(d.descendants()
        .filter(|n| n.has_tag_name("brick"))
        .map(|b| BrickHeal {
            name: child_text(b, "name").unwrap_or_default().to_string(),
            status: child_text(b, "status").unwrap_or_default().to_string(),
            entries: child_text(b, "numberOfEntries").and_then(|n| n.parse().ok()),
            files: b
                .children()
                .filter(|c| c.has_tag_name("file"))
                .filter_map(|c| c.text())
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        })
        .collect())
}

/// Parses `peer status --xml`.
pub fn parse_peer_status(xml: &str) -> Result<Vec<PeerStatus>, String> {
    let d = doc(xml)?;
    Ok(d.descendants()
        .filter(|n| n.has_tag_name("peer"))
        .map(|p| PeerStatus {
            hostname: child_text(p, "hostname").unwrap_or_default().to_string(),
            connected: child_text(p, "connected") == Some("1"),
            state: child_text(p, "stateStr").unwrap_or_default().to_string(),
        })
        .collect())
}

/// The bricks that are not online: expected ones missing from the status or listed offline.
pub fn bricks_down(expected: &[String], listed: &[BrickStatus]) -> Vec<String> {
    expected
        .iter()
        .filter(|want| !listed.iter().any(|b| &b.name == *want && b.online))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::probe::fixture("gluster", name)
    }

    fn expected() -> Vec<String> {
        (1..=3)
            .map(|i| format!("10.77.0.1{i}:/tmp/labproto/n{i}/brick"))
            .collect()
    }

    #[test]
    fn volume_status_lists_three_online_bricks() {
        let bricks = parse_volume_status(&fixture("volume_status_detail.xml")).expect("parses");
        assert_eq!(bricks.len(), 3);
        assert!(bricks.iter().all(|b| b.online && b.pid.is_some()));
        assert_eq!(bricks[0].name, expected()[0]);
        assert!(bricks_down(&expected(), &bricks).is_empty());
    }

    /// The XML omits an unreachable brick; the expected list catches it.
    #[test]
    fn absent_and_offline_bricks_are_down() {
        let mut bricks = parse_volume_status(&fixture("volume_status_detail.xml")).expect("parses");
        bricks.remove(2);
        bricks[1].online = false;
        assert_eq!(bricks_down(&expected(), &bricks), expected()[1..].to_vec());
    }

    #[test]
    fn heal_info_and_peers() {
        let heal = parse_heal_info(&fixture("heal_info.xml")).expect("parses");
        assert_eq!(heal.len(), 3);
        assert!(heal
            .iter()
            .all(|b| b.status == "Connected" && b.entries == Some(0)));
        let peers = parse_peer_status(&fixture("peer_status.xml")).expect("parses");
        assert_eq!(peers.len(), 2);
        assert!(peers
            .iter()
            .all(|p| p.connected && p.state == "Peer in Cluster"));
    }

    /// A real capture with a brick down and six entries pending on the two others; the
    /// helper's two documents (heal info, then split-brain) parse into one.
    #[test]
    fn pending_heals_list_their_paths_and_split_brain_follows() {
        let pending = fixture("heal_info_pending.xml");
        let heal = parse_heal_info(&pending).expect("parses");
        assert_eq!(heal.len(), 3);
        assert_eq!(heal[0].entries, Some(6));
        assert_eq!(heal[2].entries, None, "the dead brick answers `-`");
        assert!(heal[0].files.contains(&"/healdir/f".to_string()));
        let paths = entry_paths(&heal, 3);
        assert_eq!(paths, vec!["/", "/healcap-1.txt", "/healcap-2.txt"]);

        let split = fixture("heal_info_split_brain.xml");
        let both = parse_heal_docs(&format!("{pending}\n{split}")).expect("two docs");
        assert_eq!(both.pending(), 12);
        assert_eq!(both.split_brain(), Some(1));
        assert_eq!(
            entry_paths(both.split_brain.as_deref().unwrap_or_default(), 20),
            vec!["/healcap-2.txt"]
        );
        // Pending without the split-brain listing: unknown, not zero; a failed listing's
        // words after the first document change nothing.
        let only = parse_heal_docs(&pending).expect("one doc");
        assert_eq!(only.split_brain(), None);
        let failed = format!(
            "{pending}\nConnection failed. Please check if gluster daemon is operational.\n"
        );
        let only = parse_heal_docs(&failed).expect("one doc and words");
        assert_eq!((only.pending(), only.split_brain()), (12, None));
        // Nothing pending: no split-brain either.
        let clean = parse_heal_docs(&fixture("heal_info.xml")).expect("clean");
        assert_eq!((clean.pending(), clean.split_brain()), (0, Some(0)));
        assert!(parse_heal_docs("")
            .expect_err("empty")
            .contains("printed nothing"));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse_volume_status("not xml")
            .expect_err("bad")
            .contains("gluster XML"));
        let failed = "<cliOutput><opRet>-1</opRet><opErrno>2</opErrno>\
                      <opErrstr>Volume shop does not exist</opErrstr></cliOutput>";
        let e = parse_heal_info(failed).expect_err("failed op");
        assert!(e.contains("does not exist"), "{e}");
        assert!(parse_peer_status("<other/>")
            .expect_err("root")
            .contains("cliOutput"));
    }
}
