//! BENCHMARKS.md: the setting (machine, tools, command, method), every table, and the
//! targets with their measured ratios and PASS/MISS.

use crate::bench::{Readiness, ResumeRow, KILL_AT};
use crate::contenders::Contender;
use crate::machine::Machine;
use crate::results::{num, secs, table, DownloadTable, MB};

/// Everything one harness run measured (sections not run are `None`).
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Main scale.
    pub scale: f64,
    /// Second, smaller scale for the memory comparison.
    pub small_scale: f64,
    /// Runs per measurement.
    pub runs: usize,
    /// Per-connection cap in MB/s.
    pub cap_mbps: f64,
    /// Cold download of all files, uncapped.
    pub cold: Option<DownloadTable>,
    /// Every model with its companion files against `snapshot_download`.
    pub sets: Option<crate::sets::SetsReport>,
    /// Cold download of the largest file under the cap.
    pub capped: Option<DownloadTable>,
    /// Cold download of all files under the cap.
    pub capped_all: Option<DownloadTable>,
    /// The network rows (TLS with HTTP/2, per-connection caps, mixed edges), rendered.
    pub network: Option<String>,
    /// Cold download of the real Entity file (real bytes, the shipped pin).
    pub real: Option<DownloadTable>,
    /// Cold download of all files at the small scale (memory).
    pub cold_small: Option<DownloadTable>,
    /// Verify-all.
    pub verify: Option<DownloadTable>,
    /// Readiness.
    pub readiness: Option<Readiness>,
    /// Resume after a kill.
    pub resume: Option<Vec<ResumeRow>>,
    /// Per-node time with a warm mirror.
    pub mirror: Option<crate::mirror::MirrorReport>,
    /// A cold fleet starting at once against one mirror.
    pub fleet: Option<crate::fleet::FleetReport>,
    /// Load average (1, 5, 15 min) when each measurement finished.
    pub loads: Vec<(&'static str, String)>,
    /// Remarks found during the run (failures to set something up, ...).
    pub notes: Vec<String>,
}

/// One target: what is required, what was measured, whether it holds.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The requirement.
    pub requirement: String,
    /// The numbers it was judged on.
    pub measured: String,
    /// The ratio or value compared with the threshold.
    pub value: String,
    /// `Some(true)` PASS, `Some(false)` MISS, `None` not measured.
    pub pass: Option<bool>,
}

impl Target {
    fn new(requirement: impl Into<String>) -> Self {
        Target {
            requirement: requirement.into(),
            measured: "not measured in this run".to_owned(),
            value: "—".to_owned(),
            pass: None,
        }
    }

    fn result(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "**MISS**",
            None => "n/a",
        }
    }
}

/// Appends targets of the form "value ≤ threshold" (each `((requirement, threshold), value,
/// unit)`), judged on medians of `runs` runs.
fn push_at_most<const N: usize>(
    targets: &mut Vec<Target>,
    checks: [((&str, f64), Option<f64>, &str); N],
    runs: usize,
) {
    for ((requirement, threshold), value, unit) in checks {
        let mut t = Target::new(requirement);
        if let Some(v) = value {
            t.measured = format!("median of {runs} runs");
            t.value = format!("{v:.2}{unit}");
            t.pass = Some(v <= threshold);
        }
        targets.push(t);
    }
}

impl Report {
    /// The targets, judged on what was measured.
    pub(crate) fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let ours = Contender::Ours.name();

        let cold = self.cold.as_ref();
        let cold_rate = |name: &str| {
            cold.and_then(|t| t.row(name))
                .and_then(|r| r.throughput(cold.map_or(0, |t| t.bytes)))
        };
        let cold_wall = |name: &str| {
            cold.and_then(|t| t.row(name))
                .and_then(|r| r.median_wall())
                .map(|w| w.as_secs_f64())
        };
        let mut t = Target::new("Uncapped, all files: our wall ≤ 1.05 × curl's sequential fetch");
        if let (Some(a), Some(b)) = (cold_wall(ours), cold_wall(Contender::Curl.name())) {
            t.measured = format!("ours {a:.3} s, curl {b:.3} s");
            t.value = format!("{:.2}×", a / b);
            t.pass = Some(a / b <= 1.05);
        }
        targets.push(t);
        // Not one of the issue's targets: the like-for-like comparison behind the one above
        // (ours fsyncs each blob before it is renamed into place; curl leaves dirty pages).
        let mut t = Target::new(
            "Uncapped, all files, both durable: our wall ≤ 1.05 × curl's followed by `sync` of its files",
        );
        if let (Some(a), Some(b)) = (cold_wall(ours), cold_wall(Contender::CurlSynced.name())) {
            t.measured = format!("ours {a:.3} s, curl then sync {b:.3} s");
            t.value = format!("{:.2}×", a / b);
            t.pass = Some(a / b <= 1.05);
        }
        targets.push(t);
        let mut t = Target::new("Uncapped, all files: ≤ 2 body responses per file on average");
        if let Some((requests, files)) = cold.and_then(|t| {
            t.row(ours)
                .and_then(|r| r.median_requests())
                .map(|r| (r, t.files))
        }) {
            t.measured = format!("{requests:.0} body responses for {files} files");
            t.value = format!("{:.2} per file", requests / files.max(1) as f64);
            t.pass = Some(requests / files.max(1) as f64 <= 2.0);
        }
        targets.push(t);
        for (other, factor) in [(Contender::HuggingfaceHub, 0.5), (Contender::HfHub, 0.8)] {
            let mut t = Target::new(format!(
                "Uncapped, all files: our wall ≤ {factor} × {}'s",
                other.name()
            ));
            if let (Some(a), Some(b)) = (cold_wall(ours), cold_wall(other.name())) {
                t.measured = format!("ours {a:.3} s, {} {b:.3} s", other.name());
                t.value = format!("{:.2}×", a / b);
                t.pass = Some(a / b <= factor);
            }
            targets.push(t);
        }

        // CPU seconds per GB: ours and hf-hub from the cold table, one core of sha2 from the
        // verify table (its in-process loop is CPU-bound: wall = CPU).
        let gb = cold.map_or(0.0, |t| t.bytes as f64 / 1e9);
        let cpu_per_gb = |name: &str| {
            cold.and_then(|t| t.row(name))
                .and_then(|r| r.median_cpu())
                .filter(|_| gb > 0.0)
                .map(|c| c / gb)
        };
        let sha_per_gb = self.verify.as_ref().and_then(|v| {
            let wall = v.rows.get(2)?.median_wall()?.as_secs_f64();
            (v.bytes > 0).then(|| wall / (v.bytes as f64 / 1e9))
        });
        let mut t = Target::new(
            "Uncapped, all files: our CPU s/GB ≤ 1.1 × (one core of sha2 per GB + hf-hub's CPU per GB)",
        );
        if let (Some(a), Some(h), Some(s)) = (
            cpu_per_gb(ours),
            cpu_per_gb(Contender::HfHub.name()),
            sha_per_gb,
        ) {
            t.measured = format!(
                "ours {a:.2} s/GB; sha2 one core {s:.2} s/GB + hf-hub {h:.2} s/GB = {:.2} s/GB",
                s + h
            );
            t.value = format!("{:.2}×", a / (s + h));
            t.pass = Some(a / (s + h) <= 1.1);
        }
        targets.push(t);

        let sets = self.sets.as_ref();
        push_at_most(
            &mut targets,
            [
                (
                    crate::sets::WALL_REQUIREMENT,
                    sets.and_then(|s| s.wall_ratio()),
                    "× `snapshot_download`",
                ),
                (
                    crate::sets::REQUESTS_REQUIREMENT,
                    sets.and_then(|s| s.requests_per_small_file()),
                    " per small file",
                ),
            ],
            sets.map_or(0, |s| s.runs_of_ours()),
        );

        let cap = self.cap_mbps;
        for (label, table) in [
            ("largest file", &self.capped),
            ("all files", &self.capped_all),
        ] {
            let mut t = Target::new(format!(
                "Capped at {cap} MB/s per connection, {label}: ≥ 0.9 × min(16 × {cap}, our uncapped rate)"
            ));
            if let Some(capped) = table {
                if let Some(rate) = capped.row(ours).and_then(|r| r.throughput(capped.bytes)) {
                    let uncapped = cold_rate(ours);
                    let ceiling = uncapped.map_or(16.0 * cap, |u| u.min(16.0 * cap));
                    t.measured = format!(
                        "ours {rate:.1} MB/s; 16 × cap = {:.0} MB/s, our uncapped rate {}",
                        16.0 * cap,
                        uncapped.map_or("not measured".to_owned(), |u| format!("{u:.1} MB/s"))
                    );
                    t.value = format!("{:.2} × the ceiling", rate / ceiling);
                    t.pass = Some(rate / ceiling >= 0.9);
                }
            }
            targets.push(t);
        }

        let verify = self.verify.as_ref();
        let verify_wall = |i: usize| {
            verify
                .and_then(|t| t.rows.get(i))
                .and_then(|r| r.median_wall())
                .map(|w| w.as_secs_f64())
        };
        for (index, label, factor) in [(2usize, "one core of sha2", 1.7), (1, "sha256sum", 3.0)] {
            let mut t = Target::new(format!("Verify-all: ≥ {factor} × the speed of {label}"));
            if let (Some(a), Some(b)) = (verify_wall(0), verify_wall(index)) {
                t.measured = format!("ours {a:.3} s, {label} {b:.3} s");
                t.value = format!("{:.2}×", b / a);
                t.pass = Some(b / a >= factor);
            }
            targets.push(t);
        }

        let mut t = Target::new("Readiness in process (`readiness_report()`): < 2 ms");
        let mut s = Target::new("Readiness, whole `cg-models status` process: < 30 ms");
        if let Some(r) = &self.readiness {
            if let Some(m) = r.in_process_median {
                t.measured = format!("median of {} calls", r.iterations);
                t.value = format!("{:.3} ms", m.as_secs_f64() * 1e3);
                t.pass = Some(m.as_secs_f64() < 0.002);
            }
            if let Some(m) = r.status.median_wall() {
                s.measured = format!("median of {} runs", r.status.samples.len());
                s.value = format!("{:.1} ms", m.as_secs_f64() * 1e3);
                s.pass = Some(m.as_secs_f64() < 0.030);
            }
        }
        targets.push(t);
        targets.push(s);

        let big = self
            .cold
            .as_ref()
            .and_then(|t| t.row(ours))
            .and_then(|r| r.peak_rss_mib());
        let small = self
            .cold_small
            .as_ref()
            .and_then(|t| t.row(ours))
            .and_then(|r| r.peak_rss_mib());
        let mut t =
            Target::new("Peak memory of ours during a cold download: ≤ 32 MiB at both scales");
        let known: Vec<f64> = [big, small].into_iter().flatten().collect();
        if let Some(max) = known.iter().copied().reduce(f64::max) {
            t.measured = format!(
                "scale {}: {} MiB, scale {}: {} MiB",
                self.scale,
                num(big, 1),
                self.small_scale,
                num(small, 1)
            );
            t.value = format!("{max:.1} MiB");
            t.pass = Some(max <= 32.0);
        }
        targets.push(t);
        let mut t = Target::new(format!(
            "Peak memory of ours: scales {} and {} ≤ 16 MiB apart",
            self.scale, self.small_scale
        ));
        if let (Some(a), Some(b)) = (big, small) {
            t.measured = format!("{a:.1} MiB vs {b:.1} MiB");
            t.value = format!("{:.1} MiB apart", (a - b).abs());
            t.pass = Some((a - b).abs() <= 16.0);
        }
        targets.push(t);

        let mut t = Target::new(format!(
            "Resume after {:.0}%: second run transfers ≤ 12% of the file",
            KILL_AT * 100.0
        ));
        if let Some(row) = self
            .resume
            .as_ref()
            .and_then(|rows| rows.iter().find(|r| r.row.name == ours))
        {
            if let Some(p) = row.median_percent() {
                t.measured = format!("median of {} trials", row.second_run_bytes.len());
                t.value = format!("{p:.1}%");
                t.pass = Some(p <= 12.0);
            }
        }
        targets.push(t);

        let fleet = self.fleet.as_ref();
        push_at_most(
            &mut targets,
            [
                (
                    crate::fleet::EGRESS_REQUIREMENT,
                    fleet.and_then(|f| f.egress()),
                    "× the manifest",
                ),
                (
                    crate::fleet::WALL_REQUIREMENT,
                    fleet.and_then(|f| f.wall_ratio()),
                    "× one node alone",
                ),
            ],
            fleet.map_or(0, |f| f.cold.len()),
        );
        targets
    }

    /// The results and targets (what is printed to the terminal).
    pub(crate) fn render_results(&self) -> String {
        let mut out = String::from("## Results\n\n");
        if let Some(cold) = &self.cold {
            out.push_str(&cold.render(true, true));
            out.push('\n');
        }
        if let Some(sets) = &self.sets {
            out.push_str(&crate::sets::render(sets));
            out.push('\n');
        }
        if let Some(capped) = &self.capped {
            out.push_str(&capped.render(true, true));
            out.push('\n');
        }
        if let Some(capped) = &self.capped_all {
            out.push_str(&capped.render(true, true));
            out.push('\n');
        }
        if let Some(network) = &self.network {
            out.push_str(network);
            out.push('\n');
        }
        if let Some(real) = &self.real {
            out.push_str(&real.render(true, true));
            out.push('\n');
        }
        if let Some(verify) = &self.verify {
            out.push_str(&verify.render(false, false));
            out.push('\n');
        }
        if let Some(r) = &self.readiness {
            out.push_str(&render_readiness(r));
            out.push('\n');
        }
        if let Some(rows) = &self.resume {
            out.push_str(&render_resume(rows));
            out.push('\n');
        }
        if let Some(mirror) = &self.mirror {
            out.push_str(&crate::mirror::render(mirror, self.runs));
            out.push('\n');
        }
        if let Some(fleet) = &self.fleet {
            out.push_str(&crate::fleet::render(fleet, self.scale));
            out.push('\n');
        }
        if self.cold.is_some() || self.cold_small.is_some() {
            out.push_str(&self.render_memory());
            out.push('\n');
        }
        if !self.loads.is_empty() {
            out.push_str(
                "### Machine load\n\nLoad average (1, 5, 15 min) when each measurement finished: \
                 on 2 cores, a 1-minute load above ~1 means other work competed for the CPU.\n\n",
            );
            let rows: Vec<Vec<String>> = self
                .loads
                .iter()
                .map(|(what, load)| vec![(*what).to_owned(), load.clone()])
                .collect();
            out.push_str(&table(&["after", "load average"], &rows));
            out.push('\n');
        }
        out.push_str("## Targets\n\n");
        let rows: Vec<Vec<String>> = self
            .targets()
            .iter()
            .map(|t| {
                vec![
                    t.requirement.clone(),
                    t.measured.clone(),
                    t.value.clone(),
                    t.result().to_owned(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["target", "measured", "ratio / value", "result"],
            &rows,
        ));
        if !self.notes.is_empty() {
            out.push_str("\nNotes from this run:\n");
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }

    fn render_memory(&self) -> String {
        let mut out = format!(
            "### Peak resident memory during the cold download (scales {} and {})\n\n",
            self.scale, self.small_scale
        );
        if let Some(small) = &self.cold_small {
            out.push_str(&small.render(true, true).replace("### ", "#### "));
            out.push('\n');
        }
        out.push_str("#### Peak resident memory per contender\n\n");
        let names: Vec<&str> = Contender::ALL.iter().map(|c| c.name()).collect();
        let rss = |table: &Option<DownloadTable>, name: &str| {
            table
                .as_ref()
                .and_then(|t| t.row(name))
                .and_then(|r| r.peak_rss_mib())
        };
        let rows: Vec<Vec<String>> = names
            .iter()
            .map(|name| {
                let a = rss(&self.cold, name);
                let b = rss(&self.cold_small, name);
                vec![
                    (*name).to_owned(),
                    num(a, 1),
                    num(b, 1),
                    num(a.zip(b).map(|(a, b)| a - b), 1),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "contender",
                &format!("scale {} (MiB)", self.scale),
                &format!("scale {} (MiB)", self.small_scale),
                "difference (MiB)",
            ],
            &rows,
        ));
        out
    }
}

fn render_readiness(r: &Readiness) -> String {
    let mut out = String::from("### Readiness of a fully cached manifest\n\n");
    out.push_str(&format!(
        "`readiness_report()` reports {} entries{}; no hashing, no network.\n\n",
        r.models,
        if r.all_ready {
            ", all ready"
        } else {
            " — **not all ready**, so this measures a different path"
        }
    ));
    let status_range = r.status.range().map_or_else(
        || "—".to_owned(),
        |(a, b)| format!("{:.1}–{:.1}", a.as_secs_f64() * 1e3, b.as_secs_f64() * 1e3),
    );
    let rows = vec![
        vec![
            "`ModelArtifactManager::readiness_report()` in process".to_owned(),
            format!("{} calls", r.iterations),
            num(r.in_process_median.map(|d| d.as_secs_f64() * 1e3), 3),
            format!(
                "p95 {}",
                num(r.in_process_p95.map(|d| d.as_secs_f64() * 1e3), 3)
            ),
        ],
        vec![
            "`cg-models status` (spawn to exit)".to_owned(),
            r.status.runs_cell(),
            num(r.status.median_wall().map(|d| d.as_secs_f64() * 1e3), 1),
            format!("min–max {status_range}"),
        ],
    ];
    out.push_str(&table(
        &["what", "runs", "median (ms)", "spread (ms)"],
        &rows,
    ));
    out.push_str(&crate::results::render_commands_and_failures(
        std::slice::from_ref(&r.status),
    ));
    out
}

fn render_resume(rows: &[ResumeRow]) -> String {
    let size = rows.first().map_or(0, |r| r.file_size);
    let mut out = format!(
        "### Resume after a kill at {:.0}%\n\nThe largest file ({:.0} MB) alone; the first run is \
         killed with SIGKILL once its partial download holds {:.0}% of the bytes, then the same \
         command runs again. \"Second run\" = body bytes of `GET` responses (200/206) the \
         emulator sent to the second run, from its request log.\n\n",
        KILL_AT * 100.0,
        size as f64 / MB,
        KILL_AT * 100.0
    );
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let killed = crate::results::median(r.killed_at.iter().map(|k| k * 100.0).collect());
            let bytes =
                crate::results::median(r.second_run_bytes.iter().map(|&b| b as f64).collect());
            vec![
                r.row.name.clone(),
                r.row.runs_cell(),
                num(killed, 1),
                num(bytes.map(|b| b / MB), 1),
                num(r.median_percent(), 1),
                secs(r.row.median_wall()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "contender",
            "trials ok",
            "on disk at kill (%, median)",
            "second run sent (MB, median)",
            "second run sent (% of file)",
            "second run wall (s)",
        ],
        &table_rows,
    ));
    let inner: Vec<crate::results::Row> = rows.iter().map(|r| r.row.clone()).collect();
    out.push_str(&crate::results::render_commands_and_failures(&inner));
    out
}

/// The header of BENCHMARKS.md: command, machine, tools, method.
pub(crate) fn render_header(
    report: &Report,
    command: &str,
    date: &str,
    machine: &Machine,
    versions: &[(String, String)],
    method: &[String],
) -> String {
    let mut out = String::from("# Benchmarks: model artifact downloads\n\n");
    out.push_str(&format!(
        "Generated by `cg-bench` (`crates/bench`) on {date}, scale {}, {} run(s) per contender \
         and measurement.\n\nCommand:\n\n```sh\n{command}\n```\n\n",
        report.scale, report.runs
    ));
    out.push_str(
        "Longer, more faithful runs: `--scale 1` (real file sizes, ~5.1 GB per download, \
         an estimated 20–30 min on 2 cores, the capped runs alone ~7 min) and `--runs 5`. `--only cold,sets,capped,capped-all,real-bytes,verify,readiness,resume,memory,mirror,fleet` \
         runs a subset (memory includes cold).\n\n",
    );
    out.push_str("## Machine\n\n");
    out.push_str(&table(
        &["cores", "memory", "CPU", "kernel", "load average at start"],
        &[vec![
            machine.cores.to_string(),
            format!("{:.1} GiB", machine.memory_gib),
            machine.cpu.clone(),
            machine.kernel.clone(),
            machine.load.clone(),
        ]],
    ));
    out.push_str("\n## Tools\n\n");
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|(tool, version)| vec![tool.clone(), version.clone()])
        .collect();
    out.push_str(&table(&["tool", "version"], &rows));
    out.push_str("\n## Method\n\n");
    for line in method {
        out.push_str(&format!("- {line}\n"));
    }
    out.push('\n');
    out
}
