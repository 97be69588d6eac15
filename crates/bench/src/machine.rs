//! What the numbers were measured on: the machine and the versions of every tool involved.

use std::path::Path;

use crate::contenders::Toolbox;
use crate::process::capture;

/// The machine.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// `MemTotal` of `/proc/meminfo`, in GiB.
    pub memory_gib: f64,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Load average when the run started (the machine is shared).
    pub load: String,
}

impl Machine {
    /// Reads `/proc` (fields that cannot be read say `?`).
    pub(crate) fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "?".to_owned());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let load = load_average();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            cpu,
            kernel: if kernel.is_empty() {
                "?".into()
            } else {
                kernel
            },
            load,
        }
    }
}

/// The 1, 5 and 15-minute load averages of `/proc/loadavg`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(tool, version)` for every tool and library the numbers depend on.
pub(crate) fn tool_versions(root: &Path, tools: &Toolbox) -> Vec<(String, String)> {
    let mut versions = Vec::new();
    let missing = |why: &String| format!("not available ({why})");
    versions.push((
        "rustc".to_owned(),
        capture("rustc", &["--version"], true).unwrap_or_else(|| "?".into()),
    ));
    let ours = match &tools.cg_models {
        Ok(path) => capture(&path.to_string_lossy(), &["--version"], true)
            .unwrap_or_else(|| "cg-models (no --version)".to_owned()),
        Err(why) => missing(why),
    };
    versions.push((
        "ours: cg-models / context-graph-embeddings".to_owned(),
        format!(
            "{ours}, crate {}, {}",
            env!("CARGO_PKG_VERSION"),
            git_commit(root)
        ),
    ));
    versions.push((
        "huggingface_hub (Python)".to_owned(),
        match &tools.python {
            Ok(env) => format!("{} (Python {})", env.hub_version, env.python_version),
            Err(why) => missing(why),
        },
    ));
    versions.push((
        "hf-hub (Rust crate)".to_owned(),
        match &tools.hf_hub_fetch {
            Ok(_) => locked_version(root, "hf-hub").unwrap_or_else(|| "?".to_owned()),
            Err(why) => missing(why),
        },
    ));
    versions.push((
        "curl".to_owned(),
        match &tools.curl {
            Ok(_) => capture("curl", &["--version"], true).unwrap_or_else(|| "?".into()),
            Err(why) => missing(why),
        },
    ));
    versions.push((
        "aria2c".to_owned(),
        match &tools.aria2c {
            Ok(_) => capture("aria2c", &["--version"], true).unwrap_or_else(|| "?".into()),
            Err(why) => missing(why),
        },
    ));
    versions.push((
        "sha256sum".to_owned(),
        capture("sha256sum", &["--version"], true).unwrap_or_else(|| "not installed".into()),
    ));
    versions.push((
        "sha2 (crate, one-core baseline)".to_owned(),
        locked_version(root, "sha2").unwrap_or_else(|| "?".to_owned()),
    ));
    versions
}

/// `HEAD`'s short commit, with a note when the working tree has uncommitted changes to
/// tracked files (several engineers share it).
fn git_commit(root: &Path) -> String {
    let root = root.to_string_lossy();
    let Some(commit) = capture(
        "git",
        &["-C", &root, "rev-parse", "--short=12", "HEAD"],
        true,
    ) else {
        return "git commit unknown".to_owned();
    };
    let dirty = capture(
        "git",
        &["-C", &root, "status", "--porcelain", "--untracked-files=no"],
        false,
    )
    .is_some();
    if dirty {
        format!("git {commit} + uncommitted changes in the working tree")
    } else {
        format!("git {commit}")
    }
}

/// Versions of `package` in the workspace's `Cargo.lock`, comma-separated when several are
/// locked (e.g. `sha2` 0.10 for us and 0.11 for hf-hub).
fn locked_version(root: &Path, package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{package}\"");
    let mut found = Vec::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == needle {
            if let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                found.push(version.trim_matches('"').to_owned());
            }
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}
