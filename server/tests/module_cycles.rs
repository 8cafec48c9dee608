//! The import graph of `server/src`: which module uses which, read from the
//! source (`use crate::...`, `use super::...` and inline `crate::a::b`
//! paths), one node per file. A folder's `mod.rs` and its own files are one
//! unit (re-exporting a child and a child using its parent are not layers),
//! so every cycle printed here crosses files that should be layered.
//!
//! The issue wants none, and there are none: [`ALLOWED`] is empty, and the
//! test fails on any edge that closes a cycle and is not listed (and on a
//! listed edge that no longer does, so the list only shrinks). Run it with
//! `--nocapture` to see the graph's cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Import edges allowed to close a cycle: none. Issue 10 removed the one
/// cycle of eight files (`node` spawning `cluster/*`, which took `&Node`
/// back; `metrics` rendering `Node` while `node` held the request metrics;
/// `group::submit` asking `cluster::flow` for the delay): `cluster` now gets
/// a `cluster::Handle` instead of the node, the request histograms live in
/// `request_metrics`, and flow control and the primary check reach `group`
/// through the traits of `group::gate`. Any edge that closes a cycle again
/// fails the test below.
const ALLOWED: &[(&str, &str)] = &[];

/// Module path (`cluster::flow`, `node`) of every source file.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read server/src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                parts = vec![String::new()];
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            out.insert(parts.join("::"), text);
        }
    }
    out
}

/// The code of `text` without comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands a use tree (`a::{b, c::d as e}`) into full paths.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let close = tree.rfind('}').expect("balanced braces in a use");
        let mut base = prefix.to_vec();
        base.extend(segments(&tree[..open]));
        let inner = &tree[open + 1..close];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &base, out);
    } else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut full = prefix.to_vec();
        full.extend(segments(path).filter(|s| s != "self" && s != "*"));
        out.push(full);
    }
}

fn segments(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Every `crate::`/`super::` path `module`'s code names, made absolute.
fn paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let here: Vec<String> = segments(module).collect();
    let parent = &here[..here.len().saturating_sub(1)];
    // use statements, possibly multi-line, possibly grouped.
    for stmt in code.split(';') {
        let Some(at) = stmt.find("use ") else {
            continue;
        };
        if at > 0
            && !stmt[..at].trim_end().ends_with("pub")
            && !stmt[..at].ends_with(char::is_whitespace)
        {
            continue;
        }
        let tree = stmt[at + 4..].trim();
        if let Some(rest) = tree.strip_prefix("crate::") {
            expand(rest, &[], &mut out);
        } else if let Some(rest) = tree.strip_prefix("super::") {
            expand(rest, parent, &mut out);
        }
    }
    // Inline paths: crate::a::b::c(...).
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + 7..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        out.push(segments(&rest[..end]).collect());
    }
    out
}

/// The module a path lands in: its longest prefix naming a module, or the
/// module a root re-export (`crate::Node`) comes from.
fn resolve(
    path: &[String],
    mods: &BTreeMap<String, String>,
    root: &BTreeMap<String, String>,
) -> Option<String> {
    for n in (1..=path.len()).rev() {
        let name = path[..n].join("::");
        if mods.contains_key(&name) {
            return Some(name);
        }
    }
    path.first().and_then(|p| root.get(p).cloned())
}

/// The folder unit a module belongs to for the parent/child rule.
fn unit_of(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Whether `inner` is `outer` itself or a module below it.
fn is_within(inner: &str, outer: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with("::"))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut root = BTreeMap::new();
    for p in paths("", &code(&mods[""])) {
        if let (Some(first), Some(last)) = (p.first(), p.last()) {
            if mods.contains_key(first) {
                root.insert(last.clone(), first.clone());
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &mods {
        if module.is_empty() {
            continue;
        }
        let targets = edges.entry(module.clone()).or_default();
        for p in paths(module, &code(text)) {
            let Some(to) = resolve(&p, &mods, &root) else {
                continue;
            };
            // A folder's root and its own files are one unit, at any depth
            // (`group::state_machine` and `group::state_machine::dedup`).
            let family = is_within(module, &to) || is_within(&to, module);
            if to != *module && !to.is_empty() && !family {
                targets.insert(to);
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        let edges = t.edges;
        for w in edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w.as_str()) {
                visit(t, w);
                let lw = t.low[w.as_str()];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w.as_str()) {
                let iw = t.index[w.as_str()];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_graph_sees_the_imports_it_should() {
    let g = graph();
    // Spot checks that the reader works: a grouped use, an inline path, a
    // root re-export, and the parent/child rule.
    assert!(g["server"].contains("api::kv"), "{:?}", g["server"]);
    assert!(
        g["node::status"].contains("cluster::state"),
        "{:?}",
        g["node::status"]
    );
    assert!(
        g["metrics"].contains("cluster::snapshot"),
        "{:?}",
        g["metrics"]
    );
    assert!(g["api::kv"].contains("node"), "{:?}", g["api::kv"]);
    assert!(!g["api::kv"].contains("api"), "{:?}", g["api::kv"]);
    // Nested folders: a child and its parent are one unit, siblings are not.
    assert!(
        !g["group::state_machine::snapshots"].contains("group::state_machine"),
        "{:?}",
        g["group::state_machine::snapshots"]
    );
    assert!(
        g["raft::log_store::writer"].contains("raft::log_store::recovery"),
        "{:?}",
        g["raft::log_store::writer"]
    );
    assert!(
        g["group::state_machine"].contains("raft::types"),
        "{:?}",
        g["group::state_machine"]
    );
    assert!(
        g["certify"]
            .iter()
            .all(|m| m == "txn" || m == "storage" || m == "error"),
        "{:?}",
        g["certify"]
    );
}

#[test]
fn no_import_cycle_outside_the_allow_list() {
    let g = graph();
    let allowed: BTreeSet<(String, String)> = ALLOWED
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut in_cycles = BTreeSet::new();
    for scc in cycles(&g) {
        println!("import cycle among {} modules: {scc:?}", scc.len());
        for from in &scc {
            for to in g[from].intersection(&scc) {
                println!("  {from} -> {to}");
                in_cycles.insert((from.clone(), to.clone()));
            }
        }
    }
    let stale: Vec<_> = allowed.difference(&in_cycles).collect();
    assert!(
        stale.is_empty(),
        "allow-listed edges no longer in a cycle (remove them from ALLOWED): {stale:?}"
    );
    let new: Vec<_> = in_cycles.difference(&allowed).collect();
    assert!(
        new.is_empty(),
        "imports that close a cycle in server/src and are not in ALLOWED: {new:?}"
    );
}

/// The rules the folders' essays state, beyond "no cycle": `group` (the
/// replication service) never imports `cluster`, `node`, `api` or
/// `metrics`; `raft` (the openraft adapter) never imports those nor the
/// replication service, except the one payload type a log entry names
/// (`group::params`); `cluster` never imports `node`, `api` or `metrics`.
#[test]
fn the_layers_hold() {
    let g = graph();
    let rules: &[(&str, &[&str], &[&str])] = &[
        ("group", &["cluster", "node", "api", "metrics"], &[]),
        (
            "raft",
            &["group", "cluster", "node", "api", "metrics"],
            &["group::params"],
        ),
        (
            "cluster",
            &["node", "api", "metrics", "storage", "certify"],
            &[],
        ),
    ];
    for (folder, never, except) in rules {
        for (module, targets) in g.iter().filter(|(m, _)| unit_of(m) == *folder) {
            for to in targets.iter().filter(|t| !except.contains(&t.as_str())) {
                assert!(
                    !never.contains(&unit_of(to)),
                    "{module} imports {to}: {folder} must never import {never:?}"
                );
            }
        }
    }
}

#[test]
#[ignore = "prints the whole graph, for docs"]
fn print_graph() {
    for (m, to) in graph() {
        println!("{m} -> {to:?}");
    }
}
