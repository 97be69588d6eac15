//! The model-set measurement: every model as the set of files a loader opens (its weight
//! file, the JSON configs and tokenizer files, `vocab.txt`), not its weight file alone.
//! `cg-models ensure` reads a manifest naming each set with `include` patterns;
//! `huggingface_hub.snapshot_download` gets the same patterns and its 8 workers, repo after repo
//! (`max_workers` is per call, and one call fetches one repo). Both fill a fresh Hugging Face
//! cache; the harness then checks every snapshot holds exactly the matching files with the
//! served bytes. Reported: wall time, and the requests the Hub received per small (regular,
//! non-LFS) file, from the emulator's request log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use context_graph_embeddings::artifacts::matches_any;

use crate::bench::Bench;
use crate::contenders::{sha256_hex, Contender, WORKERS};
use crate::emulator::{repo_dir, Served};
use crate::process::{self, Job};
use crate::results::{num, secs, table, Row, Sample, MB};

/// Patterns added to each model's weight file: what a sentence-transformers or transformers
/// loader reads besides the weights (configs, tokenizer, vocabulary), and nothing else the
/// emulator serves (README, `.gitattributes`, the decoy `pytorch_model.bin` stay out).
pub(crate) const COMPANION_PATTERNS: [&str; 2] = ["*.json", "*.txt"];
/// Target: our wall time at most this multiple of `snapshot_download`'s.
const WALL_TARGET: f64 = 0.5;
/// Target: at most this many Hub requests per small file.
const REQUESTS_TARGET: f64 = 1.0;

/// The wall-time requirement and its threshold.
pub(crate) const WALL_REQUIREMENT: (&str, f64) = (
    "Model sets: the whole manifest with companions ≤ 0.5 × `snapshot_download`'s wall time (same patterns, 8 workers)",
    WALL_TARGET,
);
/// The request requirement and its threshold.
pub(crate) const REQUESTS_REQUIREMENT: (&str, f64) = (
    "Model sets: ≤ 1 Hub request per small (non-LFS) file",
    REQUESTS_TARGET,
);

/// The downloaders of this measurement.
const CONTENDERS: [Contender; 2] = [Contender::Ours, Contender::HuggingfaceHub];

/// Downloads each repo's files matching its patterns with `snapshot_download`.
///
/// Argument: one JSON object `{"cache_dir", "workers", "repos": [{"repo_id", "revision",
/// "patterns"}]}`.
const SNAPSHOT_SCRIPT: &str = r#"
import json
import sys

from huggingface_hub import snapshot_download


def main():
    spec = json.loads(sys.argv[1])
    for repo in spec["repos"]:
        print(
            snapshot_download(
                repo_id=repo["repo_id"],
                revision=repo["revision"],
                allow_patterns=repo["patterns"],
                cache_dir=spec["cache_dir"],
                max_workers=spec["workers"],
            )
        )


main()
"#;

/// One file of a set, as the emulator serves it.
#[derive(Debug, Clone)]
struct SetFile {
    size: u64,
    sha256: String,
    lfs: bool,
}

/// One model's set.
#[derive(Debug, Clone)]
struct ModelSet {
    repo_id: String,
    /// The commit (every entry of the built-in manifest pins one).
    commit: String,
    patterns: Vec<String>,
    /// Path in the repo → what is served there, for every path the patterns match.
    files: BTreeMap<String, SetFile>,
}

/// Requests the Hub (and its CDN) received during one run.
#[derive(Debug, Clone, Copy, Default)]
struct RequestCounts {
    /// Every request, to either host.
    total: usize,
    /// `/api/…` (revision info, tree listings).
    api: usize,
    /// Resolve requests (any method) for the sets' regular files.
    small_files: usize,
}

/// One contender's runs.
#[derive(Debug, Clone)]
struct SetsRow {
    row: Row,
    counts: Vec<RequestCounts>,
}

/// The model-set measurement.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetsReport {
    /// Why it was not measured.
    pub unavailable: Option<String>,
    /// Models, files in all sets, of them small (regular) files, and total bytes.
    models: usize,
    files: usize,
    small_files: usize,
    bytes: u64,
    rows: Vec<SetsRow>,
}

impl Bench {
    /// Both contenders fetch every model's set into a fresh cache, `runs` times, alternating.
    pub(crate) fn sets(&self, served: &Served) -> Result<SetsReport> {
        let sets = model_sets(served)?;
        let manifest = write_sets_manifest(served, &self.work)?;
        let script = self.work.join("hf_snapshot.py");
        std::fs::write(&script, SNAPSHOT_SCRIPT).context("writing the snapshot script")?;
        let files: usize = sets.iter().map(|s| s.files.len()).sum();
        let small_files = sets
            .iter()
            .flat_map(|s| s.files.values())
            .filter(|f| !f.lfs)
            .count();
        let mut report = SetsReport {
            models: sets.len(),
            files,
            small_files,
            bytes: sets
                .iter()
                .flat_map(|s| s.files.values())
                .map(|f| f.size)
                .sum(),
            ..SetsReport::default()
        };
        report.rows = CONTENDERS
            .iter()
            .map(|&c| SetsRow {
                row: Row::new(c.name(), self.tools.unavailable(c)),
                counts: Vec::new(),
            })
            .collect();
        for run in 0..self.runs {
            for k in 0..CONTENDERS.len() {
                let index = (run + k) % CONTENDERS.len();
                let contender = CONTENDERS[index];
                if report.rows[index].row.unavailable.is_some() {
                    continue;
                }
                let dir = tempfile::Builder::new()
                    .prefix("sets-")
                    .tempdir_in(&self.work)?;
                let job =
                    self.sets_job(contender, served, &sets, &manifest, &script, dir.path())?;
                report.rows[index].row.command = Some(job.display(&[
                    (&dir.path().to_string_lossy(), "$DIR"),
                    (&self.work.to_string_lossy(), "$WORK"),
                ]));
                process::settle_disk();
                served.hub.clear_requests();
                let finished = process::run(&job, Some(&self.rss), self.timeout, &self.work)?;
                let counts = count_requests(served, &sets);
                self.dump_requests(served, "model sets", contender, run);
                let entry = &mut report.rows[index];
                let problem = if finished.success {
                    check_sets(&dir.path().join("cache"), &sets).err()
                } else {
                    Some(anyhow!(finished.detail.clone()))
                };
                match problem {
                    None => {
                        eprintln!(
                            "cg-bench: model sets: run {}/{} {:<26} {:>8.3} s, {} requests ({} for {} small files)",
                            run + 1,
                            self.runs,
                            contender.name(),
                            finished.wall.as_secs_f64(),
                            counts.total,
                            counts.small_files,
                            small_files
                        );
                        entry.row.samples.push(Sample {
                            wall: finished.wall,
                            peak_rss_kib: finished.peak_rss_kib,
                            cpu: finished.cpu,
                            requests: Some(counts.total),
                        });
                        entry.counts.push(counts);
                    }
                    Some(problem) => {
                        eprintln!(
                            "cg-bench: model sets: {} failed: {problem:#}",
                            contender.name()
                        );
                        entry.row.failures.push(format!("{problem:#}"));
                    }
                }
            }
        }
        Ok(report)
    }

    fn sets_job(
        &self,
        contender: Contender,
        served: &Served,
        sets: &[ModelSet],
        manifest: &Path,
        script: &Path,
        dir: &Path,
    ) -> Result<Job> {
        let cache = dir.join("cache");
        let home = dir.join("hf-home");
        match contender {
            Contender::Ours => Ok(self
                .tools
                .cg_models_with(served, &cache, manifest)
                .ok_or_else(|| anyhow!("cg-models is not available"))?
                .arg("--quiet")
                .arg("ensure")),
            Contender::HuggingfaceHub => {
                let python = self
                    .tools
                    .python
                    .as_ref()
                    .map_err(|why| anyhow!("python: {why}"))?;
                let repos: Vec<serde_json::Value> = sets
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "repo_id": s.repo_id, "revision": s.commit, "patterns": s.patterns,
                        })
                    })
                    .collect();
                let arg = serde_json::json!({
                    "cache_dir": cache, "workers": WORKERS, "repos": repos,
                });
                Ok(python
                    .job(script, &served.hub.endpoint(), &home)
                    .arg(arg.to_string()))
            }
            other => bail!(
                "{} does not take part in the model-set measurement",
                other.name()
            ),
        }
    }
}

/// Each downloadable model's set: its weight file and the companion patterns, matched against
/// what the emulator serves at the commit.
fn model_sets(served: &Served) -> Result<Vec<ModelSet>> {
    served
        .files
        .iter()
        .map(|weights| {
            let patterns: Vec<String> = std::iter::once(weights.filename.clone())
                .chain(COMPANION_PATTERNS.iter().map(|p| (*p).to_owned()))
                .collect();
            let paths = served
                .hub
                .paths(&weights.repo_id, &weights.commit)
                .ok_or_else(|| anyhow!("{}: no files at {}", weights.repo_id, weights.commit))?;
            let mut files = BTreeMap::new();
            for path in paths {
                if !matches_any(&patterns, &path) {
                    continue;
                }
                let info = served
                    .hub
                    .file_info(&weights.repo_id, &weights.commit, &path)
                    .ok_or_else(|| anyhow!("{}: {path} not served", weights.repo_id))?;
                files.insert(
                    path,
                    SetFile {
                        size: info.size,
                        sha256: info.sha256,
                        lfs: info.lfs,
                    },
                );
            }
            Ok(ModelSet {
                repo_id: weights.repo_id.clone(),
                commit: weights.commit.clone(),
                patterns,
                files,
            })
        })
        .collect()
}

/// The weights-only synthetic manifest with each entry's `include` set to its weight file and
/// [`COMPANION_PATTERNS`] (the same list the Python contender passes as `allow_patterns`).
fn write_sets_manifest(served: &Served, work: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(&served.manifest_path)
        .with_context(|| format!("reading {}", served.manifest_path.display()))?;
    let mut manifest: serde_json::Value = serde_json::from_str(&text)?;
    for entry in manifest.as_array_mut().into_iter().flatten() {
        let Some(filename) = entry["filename"].as_str().map(str::to_owned) else {
            continue;
        };
        if entry["builtin"].as_bool() == Some(true) || entry["repo_id"].is_null() {
            continue;
        }
        let include: Vec<String> = std::iter::once(filename)
            .chain(COMPANION_PATTERNS.iter().map(|p| (*p).to_owned()))
            .collect();
        entry["include"] = serde_json::json!(include);
    }
    let path = work.join("manifest-sets.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The request log of the run just finished, counted against the sets.
fn count_requests(served: &Served, sets: &[ModelSet]) -> RequestCounts {
    let records = served.hub.requests();
    let mut counts = RequestCounts {
        total: records.len(),
        ..RequestCounts::default()
    };
    for record in &records {
        if record.path.starts_with("/api/") {
            counts.api += 1;
            continue;
        }
        // `/{repo_id}/resolve/{revision}/{path}`
        let Some((repo, rest)) = record.path.trim_start_matches('/').split_once("/resolve/") else {
            continue;
        };
        let Some((_, path)) = rest.split_once('/') else {
            continue;
        };
        let small = sets
            .iter()
            .any(|s| s.repo_id == repo && s.files.get(path).is_some_and(|f| !f.lfs));
        if small {
            counts.small_files += 1;
        }
    }
    counts
}

/// `Ok` when each set's snapshot holds exactly its files, each with the served size and
/// SHA-256 (hashed after the run, untimed).
fn check_sets(cache: &Path, sets: &[ModelSet]) -> Result<()> {
    for set in sets {
        let snapshot = repo_dir(cache, &set.repo_id)
            .join("snapshots")
            .join(&set.commit);
        let mut found = Vec::new();
        walk_files(&snapshot, &snapshot, &mut found)
            .with_context(|| format!("listing {}", snapshot.display()))?;
        found.sort();
        let expected: Vec<&String> = set.files.keys().collect();
        if found.iter().collect::<Vec<_>>() != expected {
            bail!(
                "{}: the snapshot holds {found:?}, the patterns match {expected:?}",
                set.repo_id
            );
        }
        for (path, file) in &set.files {
            let on_disk = snapshot.join(path);
            let size = std::fs::metadata(&on_disk)?.len();
            let sha = sha256_hex(&on_disk)?;
            if size != file.size || sha != file.sha256 {
                bail!(
                    "{}: {size} bytes with SHA-256 {sha}, expected {} bytes with {}",
                    on_disk.display(),
                    file.size,
                    file.sha256
                );
            }
        }
    }
    Ok(())
}

/// Relative paths of the files under `dir` (links followed, as a loader would).
fn walk_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if std::fs::metadata(&path)?.is_dir() {
            walk_files(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

impl SetsReport {
    /// A report that says why the measurement did not run.
    pub(crate) fn not_measured(why: String) -> Self {
        SetsReport {
            unavailable: Some(why),
            ..SetsReport::default()
        }
    }

    fn row(&self, contender: Contender) -> Option<&SetsRow> {
        self.rows.iter().find(|r| r.row.name == contender.name())
    }

    /// Our median wall time over `snapshot_download`'s.
    pub(crate) fn wall_ratio(&self) -> Option<f64> {
        let ours = self.row(Contender::Ours)?.row.median_wall()?;
        let python = self.row(Contender::HuggingfaceHub)?.row.median_wall()?;
        Some(ours.as_secs_f64() / python.as_secs_f64().max(1e-9))
    }

    /// Our median Hub requests per small file.
    pub(crate) fn requests_per_small_file(&self) -> Option<f64> {
        per_small_file(self.row(Contender::Ours)?, self.small_files)
    }

    /// Our successful runs.
    pub(crate) fn runs_of_ours(&self) -> usize {
        self.row(Contender::Ours).map_or(0, |r| r.row.samples.len())
    }
}

fn per_small_file(row: &SetsRow, small_files: usize) -> Option<f64> {
    crate::results::median(
        row.counts
            .iter()
            .map(|c| c.small_files as f64 / small_files.max(1) as f64)
            .collect(),
    )
}

fn median_count(row: &SetsRow, field: fn(&RequestCounts) -> usize) -> Option<f64> {
    crate::results::median(row.counts.iter().map(|c| field(c) as f64).collect())
}

/// Markdown: heading, what was fetched, the table, commands and failures.
pub(crate) fn render(report: &SetsReport) -> String {
    let mut out = String::from("### Model sets: every model with its companion files\n\n");
    if let Some(why) = &report.unavailable {
        out.push_str(&format!("Not measured: {why}\n"));
        return out;
    }
    out.push_str(&format!(
        "{} models, {} files ({} of them small regular files), {:.0} MB in all. Each model's \
         set is its weight file and `{}`: `include` in our manifest, `allow_patterns` for \
         `snapshot_download` (8 workers, one call per repo, one repo after another). Every run \
         fills a fresh cache; it counts only when each snapshot holds exactly the matching files \
         with the served bytes. Requests are every request either emulator host received during \
         the run; \"per small file\" counts the resolve requests (HEAD or GET) for the regular \
         files.\n\n",
        report.models,
        report.files,
        report.small_files,
        report.bytes as f64 / MB,
        COMPANION_PATTERNS.join("`, `"),
    ));
    let headers = [
        "contender",
        "runs ok",
        "wall, median (s)",
        "wall, min–max (s)",
        "CPU user+sys (s, median)",
        "peak RSS (MiB, max)",
        "requests / run",
        "of them API",
        "requests per small file",
    ];
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            vec![
                r.row.name.clone(),
                r.row.runs_cell(),
                secs(r.row.median_wall()),
                r.row.range_cell(),
                num(r.row.median_cpu(), 2),
                num(r.row.peak_rss_mib(), 1),
                num(median_count(r, |c| c.total), 0),
                num(median_count(r, |c| c.api), 0),
                num(per_small_file(r, report.small_files), 2),
            ]
        })
        .collect();
    out.push_str(&table(&headers, &rows));
    let plain: Vec<Row> = report.rows.iter().map(|r| r.row.clone()).collect();
    out.push_str(&crate::results::render_commands_and_failures(&plain));
    out
}
