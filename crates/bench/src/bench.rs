//! The measurements: cold downloads (uncapped, capped, at two scales), verify-all,
//! readiness, and resume after a kill.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use context_graph_embeddings::artifacts::{ArtifactManagerConfig, ModelArtifactManager};
use sha2::{Digest, Sha256};

use crate::contenders::{check_outputs, Contender, Toolbox};
use crate::emulator::{repo_dir, snapshot_path, FileSpec, Served};
use crate::process::{self, Job, RssMethod};
use crate::results::{median, quantile, DownloadTable, Row, Sample, MB};

/// Fraction of the file on disk at which the resume test kills the first run.
pub(crate) const KILL_AT: f64 = 0.9;

/// Shared settings and state of one harness run.
pub(crate) struct Bench {
    /// Runs per contender and measurement.
    pub runs: usize,
    /// Longest a single process may take.
    pub timeout: Duration,
    /// Scratch directory; fresh download directories are made in it.
    pub work: PathBuf,
    /// The programs.
    pub tools: Toolbox,
    /// How peak memory is measured.
    pub rss: RssMethod,
    /// Where to append every download run's request log (`--dump-requests`).
    pub requests_log: Option<PathBuf>,
    /// A cache `cg-models ensure` filled at the main scale (for verify and readiness).
    warm: Option<PathBuf>,
}

impl Bench {
    /// A harness context.
    pub(crate) fn new(
        runs: usize,
        timeout: Duration,
        work: PathBuf,
        tools: Toolbox,
        rss: RssMethod,
    ) -> Self {
        Bench {
            runs,
            timeout,
            work,
            tools,
            rss,
            requests_log: None,
            warm: None,
        }
    }

    /// Every contender downloads `files` into a fresh directory, `runs` times, the contenders
    /// alternating run by run (the starting contender rotates each round).
    pub(crate) fn download_round(
        &self,
        served: &Served,
        files: &[&FileSpec],
        contenders: &[Contender],
        title: &str,
        what: String,
    ) -> Result<DownloadTable> {
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let mut rows: Vec<Row> = contenders
            .iter()
            .map(|&c| Row::new(c.name(), self.tools.unavailable(c)))
            .collect();
        for run in 0..self.runs {
            for k in 0..contenders.len() {
                let index = (run + k) % contenders.len();
                let contender = contenders[index];
                if rows[index].unavailable.is_some() {
                    continue;
                }
                let dir = tempfile::Builder::new()
                    .prefix("dl-")
                    .tempdir_in(&self.work)?;
                let Some(job) = self
                    .tools
                    .download_job(contender, served, files, dir.path())
                else {
                    bail!("no command for {}", contender.name());
                };
                rows[index].command = Some(self.shown(&job, dir.path()));
                process::settle_disk();
                served.hub.clear_requests();
                let finished = process::run(&job, Some(&self.rss), self.timeout, &self.work)?;
                let (_, requests) = served.body_bytes_sent();
                self.dump_requests(served, title, contender, run);
                let row = &mut rows[index];
                let problem = if finished.success {
                    check_outputs(contender, files, dir.path())
                } else {
                    Some(finished.detail.clone())
                };
                match problem {
                    None => {
                        eprintln!(
                            "cg-bench: {title}: run {}/{} {:<26} {:>8.3} s {:>8.1} MB/s",
                            run + 1,
                            self.runs,
                            contender.name(),
                            finished.wall.as_secs_f64(),
                            bytes as f64 / MB / finished.wall.as_secs_f64()
                        );
                        row.samples.push(Sample {
                            wall: finished.wall,
                            peak_rss_kib: finished.peak_rss_kib,
                            cpu: finished.cpu,
                            requests: Some(requests),
                        });
                    }
                    Some(problem) => {
                        eprintln!("cg-bench: {title}: {} failed: {problem}", contender.name());
                        row.failures.push(problem);
                    }
                }
            }
        }
        Ok(DownloadTable {
            title: title.to_owned(),
            what,
            bytes,
            files: files.len(),
            rows,
        })
    }

    /// Appends the emulator's request log of the run just finished to `requests_log`, one
    /// JSON object per request (to see which ranges a contender asked for).
    pub(crate) fn dump_requests(
        &self,
        served: &Served,
        title: &str,
        contender: Contender,
        run: usize,
    ) {
        use std::io::Write as _;
        let Some(path) = &self.requests_log else {
            return;
        };
        let mut lines = String::new();
        for r in served.hub.requests() {
            let line = serde_json::json!({
                "measurement": title, "contender": contender.name(), "run": run + 1,
                "host": format!("{:?}", r.host), "method": r.method, "path": r.path,
                "range": r.range(), "status": r.status, "body_bytes": r.body_bytes_sent,
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(lines.as_bytes()));
        if let Err(e) = appended {
            eprintln!("cg-bench: cannot append to {}: {e}", path.display());
        }
    }

    /// A job's command line for the report, with the run's directory as `$DIR` and the
    /// scratch directory as `$WORK`.
    fn shown(&self, job: &Job, dir: &Path) -> String {
        job.display(&[
            (&dir.to_string_lossy(), "$DIR"),
            (&self.work.to_string_lossy(), "$WORK"),
        ])
    }

    /// A cache filled by one (untimed) `cg-models ensure` at `served`'s scale, made once.
    pub(crate) fn warm_cache(&mut self, served: &Served) -> Result<PathBuf> {
        if let Some(warm) = &self.warm {
            return Ok(warm.clone());
        }
        let dir = self.work.join("warm");
        let cache = dir.join("cache");
        let files: Vec<&FileSpec> = served.files.iter().collect();
        let job = self
            .tools
            .download_job(Contender::Ours, served, &files, &dir)
            .context("cg-models is not available")?;
        eprintln!("cg-bench: filling a cache with cg-models ensure (untimed)");
        let finished = process::run(&job, None, self.timeout, &self.work)?;
        if !finished.success {
            bail!("cg-models ensure failed: {}", finished.detail);
        }
        if let Some(problem) = check_outputs(Contender::Ours, &files, &dir) {
            bail!("cg-models ensure left the cache incomplete: {problem}");
        }
        self.warm = Some(cache.clone());
        Ok(cache)
    }

    /// Verify-all: `cg-models verify` against `sha256sum` and a one-core sha2 loop over the
    /// same (page-cached) files, alternating.
    pub(crate) fn verify(&mut self, served: &Served) -> Result<DownloadTable> {
        let cache = self.warm_cache(served)?;
        let paths: Vec<PathBuf> = served
            .files
            .iter()
            .map(|f| snapshot_path(&cache, f))
            .collect();
        let sha256sum = process::which("sha256sum");
        let mut rows = vec![
            Row::new(
                "ours (cg-models verify)",
                self.tools.unavailable(Contender::Ours),
            ),
            Row::new(
                "sha256sum (coreutils, one process)",
                sha256sum.is_none().then(|| "not installed".to_owned()),
            ),
            Row::new("sha2 crate, one core (loop in the harness)", None),
        ];
        // Read everything once so every contender starts from the page cache.
        let _ = sha2_one_core(&paths)?;
        for run in 0..self.runs {
            for k in 0..rows.len() {
                let index = (run + k) % rows.len();
                if rows[index].unavailable.is_some() {
                    continue;
                }
                let outcome = match index {
                    0 => {
                        let job = self
                            .tools
                            .cg_models(served, &cache)
                            .context("cg-models")?
                            .arg("--quiet")
                            .arg("verify");
                        rows[0].command = Some(self.shown(&job, &self.work.join("warm")));
                        let finished =
                            process::run(&job, Some(&self.rss), self.timeout, &self.work)?;
                        finished
                            .success
                            .then_some((finished.wall, finished.cpu))
                            .ok_or(finished.detail)
                    }
                    1 => {
                        let job = Job::new(sha256sum.clone().unwrap_or_default()).args(&paths);
                        rows[1].command = Some("sha256sum <the eight snapshot files>".to_owned());
                        let finished =
                            process::run(&job, Some(&self.rss), self.timeout, &self.work)?;
                        finished
                            .success
                            .then_some((finished.wall, finished.cpu))
                            .ok_or(finished.detail)
                    }
                    _ => {
                        rows[2].command = Some(
                            "in process: for each file, read 1 MiB blocks into one sha2::Sha256"
                                .to_owned(),
                        );
                        let wall = sha2_one_core(&paths)?;
                        // One thread doing nothing else: its CPU time is its wall time.
                        Ok((wall, Some(wall)))
                    }
                };
                match outcome {
                    Ok((wall, cpu)) => {
                        eprintln!(
                            "cg-bench: verify: run {}/{} {:<42} {:>8.3} s",
                            run + 1,
                            self.runs,
                            rows[index].name,
                            wall.as_secs_f64()
                        );
                        rows[index].samples.push(Sample {
                            wall,
                            peak_rss_kib: None,
                            cpu,
                            requests: None,
                        });
                    }
                    Err(problem) => rows[index].failures.push(problem),
                }
            }
        }
        Ok(DownloadTable {
            title: "Verify-all: SHA-256 of every cached file".to_owned(),
            what: format!(
                "The {} files `cg-models ensure` placed ({:.0} MB), in the page cache (read once \
                 before timing). MB/s = bytes hashed / median wall time.",
                paths.len(),
                served.total_bytes() as f64 / MB
            ),
            bytes: served.total_bytes(),
            files: paths.len(),
            rows,
        })
    }

    /// Readiness of a fully cached manifest: `readiness_report()` in this process and the
    /// whole `cg-models status` process.
    pub(crate) fn readiness(
        &mut self,
        served: &Served,
        iterations: usize,
        status_runs: usize,
    ) -> Result<Readiness> {
        let cache = self.warm_cache(served)?;
        let mut config = ArtifactManagerConfig::with_cache_dir(&cache);
        config.manifest_path = Some(served.manifest_path.clone());
        config.endpoint = served.hub.endpoint();
        config.implicit_token = false;
        let manager = ModelArtifactManager::new(config).context("building the artifact manager")?;
        let report = manager.readiness_report();
        let all_ready = report.all_ready();
        for _ in 0..iterations.min(50) {
            std::hint::black_box(manager.readiness_report());
        }
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations.max(1) {
            let start = Instant::now();
            std::hint::black_box(manager.readiness_report());
            times.push(start.elapsed().as_secs_f64());
        }
        let mut status = Row::new(
            "cg-models status (whole process)",
            self.tools.unavailable(Contender::Ours),
        );
        if status.unavailable.is_none() {
            let job = self
                .tools
                .cg_models(served, &cache)
                .context("cg-models")?
                .arg("status");
            status.command = Some(self.shown(&job, &self.work.join("warm")));
            for run in 0..status_runs.max(1) + 1 {
                let finished = process::run(&job, None, self.timeout, &self.work)?;
                if run == 0 {
                    // The first run loads the binary from disk: a warm-up, not counted.
                    continue;
                }
                if finished.success {
                    status.samples.push(Sample {
                        wall: finished.wall,
                        peak_rss_kib: None,
                        cpu: None,
                        requests: None,
                    });
                } else {
                    status.failures.push(finished.detail);
                }
            }
        }
        eprintln!(
            "cg-bench: readiness: in process {:.3} ms (median of {}), status {:.1} ms",
            median(times.clone()).unwrap_or(0.0) * 1e3,
            times.len(),
            status.median_wall().unwrap_or_default().as_secs_f64() * 1e3
        );
        Ok(Readiness {
            in_process_median: median(times.clone()).map(Duration::from_secs_f64),
            in_process_p95: quantile(times.clone(), 0.95).map(Duration::from_secs_f64),
            iterations: times.len(),
            all_ready,
            models: report.models.len(),
            status,
        })
    }

    /// Resume: each contender starts downloading the largest file alone, is killed with
    /// SIGKILL when its partial file holds [`KILL_AT`] of the bytes, and is started again;
    /// the emulator's log gives the body bytes of the second run.
    pub(crate) fn resume(
        &self,
        served: &Served,
        contenders: &[Contender],
    ) -> Result<Vec<ResumeRow>> {
        let file = served.largest();
        let mut rows: Vec<ResumeRow> = contenders
            .iter()
            .map(|&c| ResumeRow {
                row: Row::new(c.name(), self.tools.unavailable(c)),
                killed_at: Vec::new(),
                second_run_bytes: Vec::new(),
                file_size: file.size,
            })
            .collect();
        for run in 0..self.runs {
            for k in 0..contenders.len() {
                let index = (run + k) % contenders.len();
                if rows[index].row.unavailable.is_some() {
                    continue;
                }
                let contender = contenders[index];
                match self.resume_once(served, contender, file)? {
                    Ok((killed_at, wall, bytes, shown)) => {
                        eprintln!(
                            "cg-bench: resume: run {}/{} {:<26} killed at {:.1}%, second run sent {:.1}% of the file in {:.3} s",
                            run + 1,
                            self.runs,
                            contender.name(),
                            killed_at * 100.0,
                            bytes as f64 * 100.0 / file.size as f64,
                            wall.as_secs_f64()
                        );
                        let row = &mut rows[index];
                        row.row.command = Some(shown);
                        row.killed_at.push(killed_at);
                        row.second_run_bytes.push(bytes);
                        row.row.samples.push(Sample {
                            wall,
                            peak_rss_kib: None,
                            cpu: None,
                            requests: None,
                        });
                    }
                    Err(problem) => {
                        eprintln!("cg-bench: resume: {} failed: {problem}", contender.name());
                        rows[index].row.failures.push(problem);
                    }
                }
            }
        }
        Ok(rows)
    }

    /// One kill-and-restart trial: `Ok(Ok((fraction on disk at the kill, second run wall,
    /// second run body bytes, command shown)))`, `Ok(Err(why))` for a failed trial.
    #[allow(clippy::type_complexity)]
    fn resume_once(
        &self,
        served: &Served,
        contender: Contender,
        file: &FileSpec,
    ) -> Result<std::result::Result<(f64, Duration, u64, String), String>> {
        let dir = tempfile::Builder::new()
            .prefix("resume-")
            .tempdir_in(&self.work)?;
        let job = self
            .tools
            .download_job(contender, served, &[file], dir.path())
            .context("no command")?;
        let blobs = repo_dir(&dir.path().join("cache"), &file.repo_id).join("blobs");
        let threshold = (file.size as f64 * KILL_AT) as u64;
        let stderr = tempfile::NamedTempFile::new_in(&self.work)?;
        let mut child = job.spawn(stderr.reopen()?)?;
        let shown = self.shown(&job, dir.path());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Err(format!(
                    "the first run ended ({status}) before {:.0}% was on disk: {}",
                    KILL_AT * 100.0,
                    process::tail(stderr.path(), 2)
                )));
            }
            if partial_bytes(&blobs) >= threshold {
                child.kill()?;
                child.wait()?;
                break;
            }
            if start.elapsed() > self.timeout {
                child.kill()?;
                child.wait()?;
                return Ok(Err("the first run timed out".to_owned()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let killed_at = partial_bytes(&blobs) as f64 / file.size as f64;
        // Let the emulator notice the dead connections before the log is cleared.
        std::thread::sleep(Duration::from_millis(300));
        served.hub.clear_requests();
        let finished = process::run(&job, None, self.timeout, &self.work)?;
        if !finished.success {
            return Ok(Err(format!("second run: {}", finished.detail)));
        }
        if let Some(problem) = check_outputs(contender, &[file], dir.path()) {
            return Ok(Err(format!("second run: {problem}")));
        }
        let (bytes, _) = served.body_bytes_sent();
        Ok(Ok((killed_at, finished.wall, bytes, shown)))
    }
}

/// Bytes on disk in the partial downloads of a `blobs/` folder: every `*.incomplete` file,
/// counted as the smaller of its length and its allocated blocks (a parallel download may
/// size the file up front and fill it out of order, leaving holes).
pub(crate) fn partial_bytes(blobs: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(blobs) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len().min(m.blocks() * 512))
        .sum()
}

/// Hashes the files one after another on this thread; returns the time taken.
pub(crate) fn sha2_one_core(paths: &[PathBuf]) -> Result<Duration> {
    let start = Instant::now();
    let mut buffer = vec![0u8; 1 << 20];
    for path in paths {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut hasher = Sha256::new();
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        std::hint::black_box(hasher.finalize());
    }
    Ok(start.elapsed())
}

/// Readiness measurements.
#[derive(Debug, Clone)]
pub(crate) struct Readiness {
    /// Median time of one `readiness_report()`.
    pub in_process_median: Option<Duration>,
    /// Its 95th percentile.
    pub in_process_p95: Option<Duration>,
    /// Calls timed.
    pub iterations: usize,
    /// Whether the report said every model is ready (it should: the cache is full).
    pub all_ready: bool,
    /// Entries in the report.
    pub models: usize,
    /// `cg-models status` runs.
    pub status: Row,
}

/// Resume trials of one contender.
#[derive(Debug, Clone)]
pub(crate) struct ResumeRow {
    /// Name, second-run wall times, failures.
    pub row: Row,
    /// Fraction of the file on disk when the first run was killed, per trial.
    pub killed_at: Vec<f64>,
    /// Body bytes sent to the second run, per trial.
    pub second_run_bytes: Vec<u64>,
    /// Size of the file.
    pub file_size: u64,
}

impl ResumeRow {
    /// Median of the second runs' bytes as a percentage of the file.
    pub(crate) fn median_percent(&self) -> Option<f64> {
        median(
            self.second_run_bytes
                .iter()
                .map(|&b| b as f64 * 100.0 / self.file_size as f64)
                .collect(),
        )
    }
}
