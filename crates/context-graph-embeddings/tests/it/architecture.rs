//! The dependency rule of `src/artifacts/` (see `docs/architecture.md`), checked on the source:
//! every `super::…` and `crate::artifacts::…` path in non-test code is an edge from one module
//! (file) to another, and
//! - the leaves use only leaves; `store/` and `remote/` use leaves and their own folder;
//!   `transfer/`, `pinning`, `outdated` and `metrics` use those; `config` uses those (it holds their settings);
//!   `ensure/` uses everything below it; only the manager and the facade use `ensure/`;
//! - no two modules import each other, directly or through others (no cycles).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const ARTIFACTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/artifacts");

const LEAVES: &[&str] = &[
    "blocking",
    "environment",
    "fileset",
    "hash",
    "ids",
    "json",
    "manifest",
    "model_files",
    "progress",
    "signature",
    "status",
    "testing",
];

/// The group a module belongs to and its rank: a module may use modules of a lower rank, and
/// modules of its own group (the leaves are one group, each folder is one).
fn group_and_rank(module: &str) -> (String, u32) {
    let top = module.split("::").next().unwrap_or(module);
    match top {
        t if LEAVES.contains(&t) => ("leaves".to_owned(), 0),
        "store" | "remote" => (top.to_owned(), 1),
        "transfer" | "pinning" | "outdated" | "metrics" => (top.to_owned(), 2),
        "config" => ("config".to_owned(), 3),
        "ensure" => ("ensure".to_owned(), 4),
        "manager" | "mod" => (top.to_owned(), 5),
        // The fuzz entry points (`fuzzing` feature) drive the manager like a user of the crate.
        "fuzzing" => (top.to_owned(), 6),
        other => panic!(
            "module `{other}` of src/artifacts is not placed in the layering; add it to \
             tests/it/architecture.rs and docs/architecture.md"
        ),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `store/layout.rs` -> `store::layout`, `store/mod.rs` -> `store`, `mod.rs` -> `mod`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(ARTIFACTS).unwrap();
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code above a trailing `#[cfg(test)] mod tests`, without comments.
fn production_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules of `src/artifacts` that `code` (in `module`) names.
fn targets(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    // `use` groups (`use super::{a, b::c}`) are flattened by taking every path start.
    let flattened = code.replace(['{', '}', ',', '\n', ' '], " ");
    let parent: Vec<&str> = if module.contains("::") {
        module
            .rsplit_once("::")
            .map(|(p, _)| p.split("::").collect())
            .unwrap()
    } else {
        Vec::new()
    };
    for (prefix, base) in [("crate::artifacts::", Vec::new()), ("super::", parent)] {
        let mut rest = flattened.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut segments = base.clone();
            segments.extend(path.split("::").filter(|s| !s.is_empty()));
            // The longest known module that the path starts with.
            for len in (1..=segments.len()).rev() {
                let candidate = segments[..len].join("::");
                if known.contains(&candidate) {
                    if candidate != module {
                        found.insert(candidate);
                    }
                    break;
                }
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(Path::new(ARTIFACTS), &mut files);
    let known: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    files
        .iter()
        .map(|file| {
            let module = module_of(file);
            let code = production_code(&fs::read_to_string(file).unwrap());
            let edges = targets(&module, &code, &known);
            (module, edges)
        })
        .collect()
}

/// A folder's `mod.rs` only declares its modules; an edge to it means its children.
fn is_folder_root(module: &str, graph: &BTreeMap<String, BTreeSet<String>>) -> bool {
    graph.keys().any(|m| m.starts_with(&format!("{module}::")))
}

#[test]
fn artifacts_modules_depend_downwards_only() {
    let graph = graph();
    assert!(
        graph.len() > 30,
        "the source walk found too little: {graph:?}"
    );
    let mut violations = Vec::new();
    for (from, edges) in &graph {
        let (from_group, from_rank) = group_and_rank(from);
        for to in edges {
            if is_folder_root(to, &graph) && from.starts_with(&format!("{to}::")) {
                continue;
            }
            let (to_group, to_rank) = group_and_rank(to);
            let allowed = to_rank < from_rank || to_group == from_group;
            if !allowed {
                violations.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "edges against the dependency rule (docs/architecture.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = graph();
    // Depth-first search for a back edge; report the cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|m| m == module) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        stack.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_edges_and_catches_a_wrong_one() {
    // The checker itself must work: it finds real edges, and it would flag a store module
    // that imports ensure.
    let graph = graph();
    assert!(
        graph["transfer::blob"].contains("transfer::serial"),
        "{graph:?}"
    );
    assert!(graph["ensure::one"].contains("transfer::blob"), "{graph:?}");
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    let planted = targets(
        "store::layout",
        "use crate::artifacts::ensure::local::inspect;\nuse super::fs::write_atomic;",
        &known,
    );
    assert!(
        planted.contains("ensure::local") && planted.contains("store::fs"),
        "{planted:?}"
    );
    let (_, store_rank) = group_and_rank("store::layout");
    let (_, ensure_rank) = group_and_rank("ensure::local");
    assert!(ensure_rank > store_rank);
}
