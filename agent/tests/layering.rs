//! The module layering, checked on the source: the pure core (`cluster`, `decide`, `health`,
//! `observation`, `ids`) imports nothing but the core, and no two top-level modules import
//! each other, directly or in a circle. Test code (`#[cfg(test)]` onwards, `tests.rs` files and `tests/` folders)
//! is not counted, nor are comments.
//!
//! Caveat: this reads `crate::name` paths in the text; a `use super::...` that climbs out of a
//! top-level module would escape it (none does today).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const CORE: &[&str] = &["cluster", "decide", "health", "observation", "ids"];

/// Top-level module -> the top-level modules its non-test code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || path.file_name().is_some_and(|n| n == "tests.rs")
            {
                continue;
            }
            let rel = path.strip_prefix(&root).expect("under src");
            let first = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_string();
            if first == "lib" || first == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            // Code only: not the tests at the end, not comments (doc links name modules too).
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = out.entry(first.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != first {
                    deps.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn the_pure_core_imports_only_the_core() {
    let g = graph();
    for m in CORE {
        let deps = g.get(*m).unwrap_or_else(|| panic!("no module {m}"));
        let outside: Vec<_> = deps
            .iter()
            .filter(|d| !CORE.contains(&d.as_str()))
            .collect();
        assert!(
            outside.is_empty(),
            "the pure core module `{m}` imports adapter modules {outside:?}: move the types it \
             needs into the core"
        );
    }
}

#[test]
fn no_import_circles_between_modules() {
    let g = graph();
    // Depth-first search for a back edge; report the circle it closes.
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            if g.contains_key(d) {
                if let Some(c) = visit(g, d, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(circle) = visit(&g, m, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}
