//! The network users really have (issue 25): a CDN over TLS that offers HTTP/2, and CDN edges
//! or WAN paths that limit each TCP connection, some slow and some fast. Each row serves the
//! manifest from an emulator configured that way (`HubBuilder::cdn_tls`, `edge_mix`) and
//! compares `cg-models ensure` with `aria2c -x16 -s16 -j8` (what `hfd.sh` and many users fetch
//! Hub models with; it hashes and syncs nothing), the whole manifest and the largest file
//! alone. The emulator's request log gives the CDN connections each run opened.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hub_emulator::{Alpn, CdnTls, EdgeMix, Host, HubBuilder};

use crate::contenders::check_outputs;
use crate::emulator::{FileSpec, Served};
use crate::process::{self, capture, which, Job, RssMethod};
use crate::results::{median, secs};

const MB: f64 = 1e6;

/// One network the rows run on.
struct Network {
    name: &'static str,
    /// TLS on the CDN, and what it offers by ALPN.
    tls: Option<Alpn>,
    edges: &'static str,
}

const NETWORKS: [Network; 3] = [
    Network {
        name: "TLS, HTTP/2 offered, each TCP connection capped at 20 MB/s",
        tls: Some(Alpn::Http2AndHttp1),
        edges: "20MB/s",
    },
    Network {
        name: "HTTP/1.1, each TCP connection capped at 20 MB/s",
        tls: None,
        edges: "20MB/s",
    },
    Network {
        name: "HTTP/1.1, each new connection draws a 4 MB/s edge (two in three) or a 38 MB/s one",
        tls: None,
        edges: "4MB/s:2,38MB/s:1",
    },
];

/// What one contender's runs of one row gave.
#[derive(Default)]
struct Runs {
    walls: Vec<f64>,
    rss_mib: Vec<f64>,
    connections: Vec<usize>,
    failures: Vec<String>,
}

/// `aria2c` on `PATH`, or installed with `apt-get` (Debian's `aria2`) when it is missing and
/// this process may install packages; prints what it did.
pub(crate) fn find_or_install_aria2c() -> Result<PathBuf, String> {
    if let Some(path) = which("aria2c") {
        return Ok(path);
    }
    eprintln!("cg-bench: aria2c not found; installing Debian's aria2 with apt-get");
    let status = std::process::Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "aria2"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("apt-get install aria2 failed: {s}")),
        Err(e) => return Err(format!("apt-get could not run: {e}")),
    }
    which("aria2c").ok_or_else(|| "aria2c still not on PATH after apt-get".to_owned())
}

/// Runs every network row and returns the rendered section (markdown).
pub(crate) fn run(
    scale: f64,
    runs: usize,
    cg_models: &Path,
    timeout: Duration,
    work: &Path,
) -> Result<String> {
    let aria2c = find_or_install_aria2c();
    let aria2_version = match &aria2c {
        Ok(path) => {
            capture(&path.to_string_lossy(), &["--version"], true).unwrap_or_else(|| "?".to_owned())
        }
        Err(why) => format!("not available ({why})"),
    };
    eprintln!("cg-bench: aria2c: {aria2_version}");
    let rss = RssMethod::detect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### The network users really have: TLS with HTTP/2, per-connection caps, mixed edges\n"
    );
    let _ = writeln!(
        out,
        "Scale {scale}, {runs} run(s) per contender and row, contenders alternating. The CDN \
         paces each TCP connection (one token bucket per connection, shared by all its HTTP/2 \
         streams; `HubBuilder::edge_mix`); mixed edges are drawn per new connection from a \
         fixed seed. ours: `cg-models ensure` (release), trusting the emulator's CA with \
         `--ca-bundle` on the TLS row. aria2c ({aria2_version}): `-x16 -s16 -j8`, no hashing, \
         no sync, `--ca-certificate` on the TLS row. CDN connections: distinct TCP connections \
         the CDN accepted for the run's body requests (median). Peak RSS: {}.\n",
        rss.describe()
    );
    let _ = writeln!(
        out,
        "| network | files | ours: wall (median, range) | ours: CDN connections | ours: peak RSS | aria2c: wall | aria2c: CDN connections | ours / aria2c |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (n, network) in NETWORKS.iter().enumerate() {
        let dir = work.join(format!("network-{n}"));
        std::fs::create_dir_all(&dir)?;
        let edges: EdgeMix = network
            .edges
            .parse::<EdgeMix>()
            .map_err(anyhow::Error::msg)?
            .seed(25);
        let tls = network
            .tls
            .map(|alpn| CdnTls::generate().map(|t| t.alpn(alpn)))
            .transpose()
            .context("making the CDN certificate")?;
        let ca = dir.join("cdn-ca.pem");
        if let Some(tls) = &tls {
            std::fs::write(&ca, tls.ca_pem())?;
        }
        let served = Served::start_with(scale, &dir, |builder: HubBuilder| {
            let builder = builder.edge_mix(edges.clone());
            match &tls {
                Some(tls) => builder.cdn_tls(tls.clone()),
                None => builder,
            }
        })?;
        let all: Vec<&FileSpec> = served.files.iter().collect();
        let largest = served.largest().clone();
        for (label, files) in [
            (
                format!(
                    "all {} ({:.0} MB)",
                    all.len(),
                    served.total_bytes() as f64 / MB
                ),
                all.clone(),
            ),
            (
                format!("largest ({:.0} MB)", largest.size as f64 / MB),
                vec![&largest],
            ),
        ] {
            eprintln!("cg-bench: network row {:?}, {label}", network.name);
            let mut ours = Runs::default();
            let mut aria = Runs::default();
            for run in 0..runs {
                for contender in [0, 1] {
                    // Alternate who goes first.
                    let contender = (contender + run) % 2;
                    let target = if contender == 0 { &mut ours } else { &mut aria };
                    let run_dir = tempfile::tempdir_in(&dir)?;
                    let job = if contender == 0 {
                        Some(ours_job(
                            cg_models,
                            &served,
                            &files,
                            run_dir.path(),
                            tls.is_some().then_some(&ca),
                        ))
                    } else {
                        aria2c.as_ref().ok().map(|aria2c| {
                            aria2_job(aria2c, &files, run_dir.path(), tls.is_some().then_some(&ca))
                        })
                    };
                    let Some(job) = job else {
                        continue;
                    };
                    process::settle_disk();
                    served.hub.clear_requests();
                    let finished = process::run(&job, Some(&rss), timeout, &dir)?;
                    let output_kind = if contender == 0 {
                        crate::contenders::Contender::Ours
                    } else {
                        crate::contenders::Contender::Aria2
                    };
                    let wrong = check_outputs(output_kind, &files, run_dir.path());
                    if !finished.success || wrong.is_some() {
                        target
                            .failures
                            .push(wrong.unwrap_or_else(|| finished.detail.clone()));
                        continue;
                    }
                    target.walls.push(finished.wall.as_secs_f64());
                    if let Some(kib) = finished.peak_rss_kib {
                        target.rss_mib.push(kib as f64 / 1024.0);
                    }
                    target.connections.push(cdn_connections(&served));
                }
            }
            let ours_wall = median(ours.walls.clone());
            let aria_wall = median(aria.walls.clone());
            let ratio = match (ours_wall, aria_wall) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {} | {} | {} | {} | {ratio} |",
                network.name,
                wall_cell(&ours),
                count_cell(&ours.connections),
                median(ours.rss_mib.clone()).map_or("–".to_owned(), |m| format!("{m:.1} MiB")),
                wall_cell(&aria),
                count_cell(&aria.connections),
            );
        }
    }
    Ok(out)
}

/// `cg-models ensure` of `files` into `dir/cache`, trusting `ca` when given.
fn ours_job(
    cg_models: &Path,
    served: &Served,
    files: &[&FileSpec],
    dir: &Path,
    ca: Option<&PathBuf>,
) -> Job {
    let cache = dir.join("cache");
    let mut job = Job::new(cg_models)
        .arg("--endpoint")
        .arg(served.hub.endpoint())
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--manifest")
        .arg(&served.manifest_path)
        .env("HF_HOME", dir.join("hf-home"));
    if let Some(ca) = ca {
        job = job.arg("--ca-bundle").arg(ca);
    }
    job = job.arg("--quiet").arg("ensure");
    if files.len() != served.files.len() {
        job = job.args(files.iter().map(|f| f.model_id.as_str()));
    }
    job
}

/// `aria2c -x16 -s16 -j8` of `files` into `dir/files`, trusting `ca` when given.
fn aria2_job(aria2c: &Path, files: &[&FileSpec], dir: &Path, ca: Option<&PathBuf>) -> Job {
    let mut input = String::new();
    for file in files {
        let _ = writeln!(input, "{}\n  out={}", file.url, file.flat_name());
    }
    let input_path = dir.join("aria2-input.txt");
    // A failed write shows as a failed run.
    let _ = std::fs::write(&input_path, input);
    let mut job = Job::new(aria2c)
        .args(["-x16", "-s16", "-j8", "--quiet=true"])
        .args(["--allow-overwrite=true", "--auto-file-renaming=false"])
        .arg("--dir")
        .arg(dir.join("files"))
        .arg("--input-file")
        .arg(input_path);
    if let Some(ca) = ca {
        job = job.arg(format!("--ca-certificate={}", ca.display()));
    }
    job
}

/// Distinct CDN connections that carried a body request since the log was cleared.
fn cdn_connections(served: &Served) -> usize {
    served
        .hub
        .requests()
        .iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET")
        .map(|r| r.connection)
        .collect::<BTreeSet<_>>()
        .len()
}

fn wall_cell(runs: &Runs) -> String {
    let Some(m) = median(runs.walls.clone()) else {
        return match runs.failures.first() {
            Some(why) => format!("failed: {why}"),
            None => "–".to_owned(),
        };
    };
    let lo = runs.walls.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = runs.walls.iter().copied().fold(0.0, f64::max);
    let failed = if runs.failures.is_empty() {
        String::new()
    } else {
        format!(" ({} failed: {})", runs.failures.len(), runs.failures[0])
    };
    format!(
        "{} ({}-{}){failed}",
        secs(Some(Duration::from_secs_f64(m))),
        secs(Some(Duration::from_secs_f64(lo))),
        secs(Some(Duration::from_secs_f64(hi)))
    )
}

fn count_cell(counts: &[usize]) -> String {
    median(counts.iter().map(|c| *c as f64).collect())
        .map_or("–".to_owned(), |m| format!("{m:.0}"))
}
