//! The web authority: which nodes every HAProxy's web backend keeps out of service.
//!
//! The leader decides the whole rotation at once ([`Command::SetWebRotation`](super::Command::SetWebRotation)):
//! the set of drained nodes, each with why, and the sick node kept in service because every
//! other one is drained, if any. Each change is numbered like the other authorities' epochs
//! (exactly the current epoch plus one), so a decision made from an older rotation is refused
//! and audited, and every agent's HAProxy fences its actions by the change's term and index.
//!
//! Invariants, checked on apply and on snapshot load:
//! - at least one member stays in rotation: a rotation that drains every member is refused
//!   (the decision keeps the least sick node instead, and says so in `kept`);
//! - drained and kept nodes are members, and the kept node is not drained.
//!
//! Caveat: a drained node keeps the index and time it was first drained while it stays
//! drained (its reason is the newest decision's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterState, EntryMeta, Outcome};
use crate::ids::{Epoch, LogIndex, NodeId, Term, UnixMillis};

/// One drained node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebDrain {
    /// Why it is out of the rotation (the decision's words for its sickness).
    pub reason: String,
    /// Log index of the change that first drained it.
    pub index: LogIndex,
    /// When (the proposer's wall clock).
    pub at: UnixMillis,
}

/// A sick node kept in service because every other member is drained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebKept {
    /// The node.
    pub node: NodeId,
    /// What is wrong with it, and why it was the one kept.
    pub reason: String,
}

/// The newest change of the rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebChange {
    /// Its log index.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// When (the proposer's wall clock).
    pub at: UnixMillis,
    /// The decision's verdict.
    pub reason: String,
}

/// The committed web rotation. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebAuthority {
    /// Grows by one with every change of the rotation.
    pub epoch: Epoch,
    /// Nodes out of the rotation, by node id.
    pub drained: BTreeMap<NodeId, WebDrain>,
    /// The sick node kept in service, when every other member is drained.
    pub kept: Option<WebKept>,
    /// The newest change.
    pub last_change: Option<WebChange>,
}

impl WebAuthority {
    /// Whether `node` is in the committed rotation.
    pub fn in_rotation(&self, node: NodeId) -> bool {
        !self.drained.contains_key(&node)
    }

    /// Checks what a snapshot may hold: node ids not 0, the kept node not drained, a change
    /// recorded for every epoch above 0. Names the first problem.
    pub fn check(&self) -> Result<(), String> {
        if self.drained.keys().any(|n| n.0 == 0) {
            return Err("web rotation drains node 0".into());
        }
        if let Some(k) = &self.kept {
            if k.node.0 == 0 {
                return Err("web rotation keeps node 0".into());
            }
            if self.drained.contains_key(&k.node) {
                return Err(format!("web rotation keeps {} and drains it", k.node));
            }
        }
        if (self.epoch.0 > 0) != self.last_change.is_some() {
            return Err("web rotation epoch and last change disagree".into());
        }
        Ok(())
    }
}

impl ClusterState {
    pub(super) fn set_web_rotation(
        &mut self,
        meta: EntryMeta,
        epoch: Epoch,
        drained: &BTreeMap<NodeId, String>,
        kept: Option<&WebKept>,
        reason: &str,
    ) -> Outcome {
        let w = &self.web;
        let what = format!(
            "web rotation at epoch {epoch} (drained: {})",
            names(drained.keys())
        );
        let outsider = drained
            .keys()
            .chain(kept.map(|k| &k.node))
            .find(|n| n.0 == 0 || (!self.members.is_empty() && !self.members.contains_key(n)));
        let refusal = if epoch != w.epoch.next() {
            Some(format!(
                "{what} rejected: current epoch is {} (stale decision)",
                w.epoch
            ))
        } else if let Some(n) = outsider {
            Some(format!("{what} rejected: {n} is not a member"))
        } else if !self.members.is_empty() && self.members.keys().all(|n| drained.contains_key(n)) {
            Some(format!(
                "{what} rejected: it drains every member (the last healthy web node stays)"
            ))
        } else if kept.is_some_and(|k| drained.contains_key(&k.node)) {
            Some(format!("{what} rejected: it keeps a node it drains"))
        } else {
            None
        };
        if let Some(why) = refusal {
            return self.reject(meta, "web", why);
        }
        let old = std::mem::take(&mut self.web.drained);
        let w = &mut self.web;
        w.drained = drained
            .iter()
            .map(|(n, why)| {
                let (index, at) = old
                    .get(n)
                    .map_or((meta.index, meta.at), |d| (d.index, d.at));
                (
                    *n,
                    WebDrain {
                        reason: why.clone(),
                        index,
                        at,
                    },
                )
            })
            .collect();
        w.kept = kept.cloned();
        w.epoch = epoch;
        w.last_change = Some(WebChange {
            index: meta.index,
            term: meta.term,
            at: meta.at,
            reason: reason.to_string(),
        });
        let kept_note = kept.map_or(String::new(), |k| {
            format!("; {} kept in service though sick: {}", k.node, k.reason)
        });
        self.record(
            meta,
            "web",
            format!(
                "web rotation at epoch {epoch}: drained {}{kept_note}: {reason}",
                names(drained.keys())
            ),
        );
        Outcome::Changed
    }
}

fn names<'a>(nodes: impl Iterator<Item = &'a NodeId>) -> String {
    let v: Vec<String> = nodes.map(ToString::to_string).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::members;
    use crate::cluster::fixtures::meta;
    use crate::cluster::Command;

    fn rotation(epoch: u64, drained: &[u64], kept: Option<u64>) -> Command {
        Command::SetWebRotation {
            epoch: Epoch(epoch),
            drained: drained
                .iter()
                .map(|&n| (NodeId(n), format!("n{n} sick")))
                .collect(),
            kept: kept.map(|n| WebKept {
                node: NodeId(n),
                reason: "least sick".into(),
            }),
            reason: "test".into(),
        }
    }

    /// Data-driven: a sequence of rotations and each one's outcome; the state after each
    /// always passes `check`, and at least one member is always in rotation.
    #[test]
    fn rotations_apply_in_epoch_order_and_never_drain_every_member() {
        let mut s = ClusterState {
            members: members(3),
            ..ClusterState::default()
        };
        // (command, outcome name, drained afterwards)
        let steps: Vec<(Command, &str, Vec<u64>)> = vec![
            (rotation(1, &[2], None), "changed", vec![2]),
            // Stale: epoch 1 again.
            (rotation(1, &[3], None), "rejected", vec![2]),
            // Skipping an epoch.
            (rotation(3, &[3], None), "rejected", vec![2]),
            // Every member.
            (rotation(2, &[1, 2, 3], None), "rejected", vec![2]),
            // Not a member.
            (rotation(2, &[4], None), "rejected", vec![2]),
            (rotation(2, &[2], Some(4)), "rejected", vec![2]),
            // Keeps one it drains.
            (rotation(2, &[1, 2], Some(2)), "rejected", vec![2]),
            (rotation(2, &[2, 3], Some(1)), "changed", vec![2, 3]),
            (rotation(3, &[], None), "changed", vec![]),
        ];
        for (i, (cmd, outcome, drained)) in steps.into_iter().enumerate() {
            let got = s.apply(meta(i as u64 + 1), &cmd);
            assert_eq!(got.name(), outcome, "step {i}: {got:?}");
            let now: Vec<u64> = s.web.drained.keys().map(|n| n.0).collect();
            assert_eq!(now, drained, "step {i}");
            assert!(s.web.check().is_ok(), "step {i}");
            assert!(s.members.keys().any(|n| s.web.in_rotation(*n)), "step {i}");
        }
        assert_eq!(s.web.epoch, Epoch(3));
        assert!(s.web.kept.is_none());
        assert!(
            s.history[0].details.contains("drained none"),
            "{:?}",
            s.history[0]
        );
    }

    /// A node that stays drained keeps when it was first drained.
    #[test]
    fn a_node_that_stays_drained_keeps_its_first_index() {
        let mut s = ClusterState {
            members: members(3),
            ..ClusterState::default()
        };
        s.apply(meta(1), &rotation(1, &[2], None));
        s.apply(meta(2), &rotation(2, &[2, 3], None));
        assert_eq!(s.web.drained[&NodeId(2)].index, LogIndex(1));
        assert_eq!(s.web.drained[&NodeId(3)].index, LogIndex(2));
        assert_eq!(
            s.web.last_change.as_ref().map(|c| c.index),
            Some(LogIndex(2))
        );
    }

    #[test]
    fn check_names_impossible_values() {
        let drain = WebDrain {
            reason: String::new(),
            index: LogIndex(1),
            at: UnixMillis(0),
        };
        let bad = [
            WebAuthority {
                drained: [(NodeId(0), drain.clone())].into(),
                ..WebAuthority::default()
            },
            WebAuthority {
                drained: [(NodeId(1), drain)].into(),
                kept: Some(WebKept {
                    node: NodeId(1),
                    reason: String::new(),
                }),
                ..WebAuthority::default()
            },
            WebAuthority {
                epoch: Epoch(2),
                ..WebAuthority::default()
            },
        ];
        for a in bad {
            assert!(a.check().is_err(), "{a:?}");
        }
        assert!(WebAuthority::default().check().is_ok());
    }
}
