//! The cross-node half of the auto-increment check: two Galera nodes with the same
//! `auto_increment_offset`.
//!
//! The platform gives every node the same fixed `auto_increment_increment` (3) and its own
//! offset, with `wsrep_auto_increment_control=OFF`, so that ids taken on different nodes never
//! collide, whichever node writes. Two nodes sharing an offset take the same ids: after a
//! writer change, inserts can fail with duplicate keys. Each node's own settings (its
//! increment, its offset within `1..=increment`, Galera's auto-control) are checked by its
//! probe (`probe::galera_status::GaleraStatus::auto_increment_problem`); whether two nodes
//! share an offset needs every node's report, hence this function, for the status.
//!
//! Pure. Caveats, for the caller:
//! - Pass only offsets the nodes reported in fresh checks that answered (the details'
//!   `auto_increment_offset`); a node absent from the map is simply not compared.
//! - Offsets are compared as reported. An offset greater than the increment is ignored by
//!   MariaDB, so two nodes can collide with different offsets (4 and 1 with increment 3); the
//!   per-node check names that node already.

use std::collections::BTreeMap;

use crate::ids::NodeId;

/// Every node whose offset another node also has, with the reason: the offset and the other
/// node(s), for example `auto_increment_offset 2 is also n3's` or `auto_increment_offset 1 is
/// also that of n2 and n3`. Nodes with an offset of their own are not in the result.
pub fn shared_offsets(offsets: &BTreeMap<NodeId, i64>) -> BTreeMap<NodeId, String> {
    let mut by_offset: BTreeMap<i64, Vec<NodeId>> = BTreeMap::new();
    for (&node, &offset) in offsets {
        by_offset.entry(offset).or_default().push(node);
    }
    let mut out = BTreeMap::new();
    for (offset, nodes) in by_offset.iter().filter(|(_, n)| n.len() > 1) {
        for &node in nodes {
            let others: Vec<String> = nodes
                .iter()
                .filter(|&&n| n != node)
                .map(NodeId::to_string)
                .collect();
            let whose = match others.as_slice() {
                [one] => format!("{one}'s"),
                [first @ .., last] => format!("that of {} and {last}", first.join(", ")),
                [] => continue,
            };
            out.insert(
                node,
                format!("auto_increment_offset {offset} is also {whose}"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (node:offset pairs) -> (node, reason) for every node sharing its offset.
    #[test]
    fn shared_offsets_table() {
        type Case<'a> = (&'a [(u64, i64)], &'a [(u64, &'a str)]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&[(1, 1)], &[]),
            (&[(1, 1), (2, 2), (3, 3)], &[]),
            (
                &[(1, 1), (2, 2), (3, 2)],
                &[
                    (2, "auto_increment_offset 2 is also n3's"),
                    (3, "auto_increment_offset 2 is also n2's"),
                ],
            ),
            (
                &[(1, 1), (2, 1), (3, 1)],
                &[
                    (1, "auto_increment_offset 1 is also that of n2 and n3"),
                    (2, "auto_increment_offset 1 is also that of n1 and n3"),
                    (3, "auto_increment_offset 1 is also that of n1 and n2"),
                ],
            ),
            (
                &[(1, 1), (2, 1), (3, 1), (4, 1)],
                &[
                    (1, "auto_increment_offset 1 is also that of n2, n3 and n4"),
                    (2, "auto_increment_offset 1 is also that of n1, n3 and n4"),
                    (3, "auto_increment_offset 1 is also that of n1, n2 and n4"),
                    (4, "auto_increment_offset 1 is also that of n1, n2 and n3"),
                ],
            ),
            // Two pairs, each named with its own offset.
            (
                &[(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)],
                &[
                    (1, "auto_increment_offset 1 is also n2's"),
                    (2, "auto_increment_offset 1 is also n1's"),
                    (3, "auto_increment_offset 2 is also n4's"),
                    (4, "auto_increment_offset 2 is also n3's"),
                ],
            ),
            // Compared as reported, out-of-range values included.
            (
                &[(1, 0), (2, 0), (3, -1)],
                &[
                    (1, "auto_increment_offset 0 is also n2's"),
                    (2, "auto_increment_offset 0 is also n1's"),
                ],
            ),
        ];
        for (input, want) in cases {
            let offsets: BTreeMap<NodeId, i64> =
                input.iter().map(|&(n, o)| (NodeId(n), o)).collect();
            let want: BTreeMap<NodeId, String> = want
                .iter()
                .map(|&(n, why)| (NodeId(n), why.to_string()))
                .collect();
            assert_eq!(shared_offsets(&offsets), want, "{input:?}");
        }
    }
}
