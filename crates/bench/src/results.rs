//! Measurements and their summaries: samples per contender, medians, throughput, and the
//! markdown tables they are shown in.

use std::time::Duration;

/// Bytes in a megabyte (throughput is in MB/s, decimal, like the tools report it).
pub(crate) const MB: f64 = 1_000_000.0;
/// Bytes in a mebibyte (memory is in MiB).
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// One timed run of one contender.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Wall time of the whole process (or the in-process loop).
    pub wall: Duration,
    /// Peak resident set in KiB, when measured.
    pub peak_rss_kib: Option<u64>,
    /// User + system CPU time, when measured.
    pub cpu: Option<Duration>,
    /// `GET` responses with a body (200/206) the emulator sent during the run.
    pub requests: Option<usize>,
}

/// All runs of one contender in one measurement.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Contender name.
    pub name: String,
    /// Command line of its last run (`$DIR` = that run's fresh directory).
    pub command: Option<String>,
    /// Successful runs.
    pub samples: Vec<Sample>,
    /// Failed runs, with what went wrong.
    pub failures: Vec<String>,
    /// Why it did not run at all.
    pub unavailable: Option<String>,
}

impl Row {
    /// An empty row.
    pub(crate) fn new(name: impl Into<String>, unavailable: Option<String>) -> Self {
        Row {
            name: name.into(),
            command: None,
            samples: Vec::new(),
            failures: Vec::new(),
            unavailable,
        }
    }

    /// Median wall time of the successful runs.
    pub(crate) fn median_wall(&self) -> Option<Duration> {
        median(self.samples.iter().map(|s| s.wall.as_secs_f64()).collect())
            .map(Duration::from_secs_f64)
    }

    /// Fastest and slowest successful run.
    pub(crate) fn range(&self) -> Option<(Duration, Duration)> {
        let min = self.samples.iter().map(|s| s.wall).min()?;
        let max = self.samples.iter().map(|s| s.wall).max()?;
        Some((min, max))
    }

    /// "min–max" of the successful runs' wall times in seconds, `—` for none.
    pub(crate) fn range_cell(&self) -> String {
        self.range().map_or_else(
            || "—".to_owned(),
            |(a, b)| format!("{:.3}–{:.3}", a.as_secs_f64(), b.as_secs_f64()),
        )
    }

    /// `bytes` over the median wall time, in MB/s.
    pub(crate) fn throughput(&self, bytes: u64) -> Option<f64> {
        self.median_wall()
            .map(|wall| bytes as f64 / MB / wall.as_secs_f64().max(1e-9))
    }

    /// Largest peak resident set over the runs, in MiB.
    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        self.samples
            .iter()
            .filter_map(|s| s.peak_rss_kib)
            .max()
            .map(|kib| kib as f64 * 1024.0 / MIB)
    }

    /// Median user + system CPU seconds of the runs that measured it.
    pub(crate) fn median_cpu(&self) -> Option<f64> {
        median(
            self.samples
                .iter()
                .filter_map(|s| s.cpu.map(|c| c.as_secs_f64()))
                .collect(),
        )
    }

    /// Median number of body responses per run.
    pub(crate) fn median_requests(&self) -> Option<f64> {
        median(
            self.samples
                .iter()
                .filter_map(|s| s.requests.map(|r| r as f64))
                .collect(),
        )
    }

    /// "3/3", or the reason it did not run.
    pub(crate) fn runs_cell(&self) -> String {
        if let Some(why) = &self.unavailable {
            return format!("not run: {why}");
        }
        let total = self.samples.len() + self.failures.len();
        format!("{}/{total}", self.samples.len())
    }
}

/// Median of a list (mean of the two middle values for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The `q` quantile (0..=1) of a list, nearest rank.
pub(crate) fn quantile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// Seconds with three decimals, `—` for none.
pub(crate) fn secs(wall: Option<Duration>) -> String {
    wall.map_or_else(|| "—".to_owned(), |w| format!("{:.3}", w.as_secs_f64()))
}

/// A number with `decimals` decimals, `—` for none.
pub(crate) fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Renders a markdown table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out.push_str(&format!(
        "|{}|\n",
        headers.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    ));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// One download measurement: the same files fetched by every contender, runs alternated.
#[derive(Debug, Clone)]
pub(crate) struct DownloadTable {
    /// Heading.
    pub title: String,
    /// What was downloaded, for the text under the heading.
    pub what: String,
    /// Total bytes of the files.
    pub bytes: u64,
    /// Number of files.
    pub files: usize,
    /// One row per contender.
    pub rows: Vec<Row>,
}

impl DownloadTable {
    /// The row named `name`.
    pub(crate) fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// Markdown: heading, table, commands, failures.
    pub(crate) fn render(&self, with_rss: bool, with_requests: bool) -> String {
        let mut headers = vec![
            "contender",
            "runs ok",
            "wall, median (s)",
            "wall, min–max (s)",
            "MB/s (median)",
        ];
        let with_cpu = self
            .rows
            .iter()
            .any(|r| r.samples.iter().any(|s| s.cpu.is_some()));
        if with_cpu {
            headers.push("CPU user+sys (s, median)");
        }
        if with_rss {
            headers.push("peak RSS (MiB, max)");
        }
        if with_requests {
            headers.push("file body responses / run (API answers excluded)");
        }
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let mut cells = vec![
                    row.name.clone(),
                    row.runs_cell(),
                    secs(row.median_wall()),
                    row.range_cell(),
                    num(row.throughput(self.bytes), 1),
                ];
                if with_cpu {
                    cells.push(num(row.median_cpu(), 2));
                }
                if with_rss {
                    cells.push(num(row.peak_rss_mib(), 1));
                }
                if with_requests {
                    cells.push(num(row.median_requests(), 0));
                }
                cells
            })
            .collect();
        let mut out = format!("### {}\n\n{}\n\n", self.title, self.what);
        out.push_str(&table(&headers, &rows));
        out.push_str(&render_commands_and_failures(&self.rows));
        out
    }
}

/// The command of each row and every failed run, as a list under a table.
pub(crate) fn render_commands_and_failures(rows: &[Row]) -> String {
    let mut out = String::new();
    let commands: Vec<&Row> = rows.iter().filter(|r| r.command.is_some()).collect();
    if !commands.is_empty() {
        out.push_str("\nCommands:\n");
        for row in commands {
            out.push_str(&format!(
                "- {}: `{}`\n",
                row.name,
                row.command.as_deref().unwrap_or_default()
            ));
        }
    }
    for row in rows {
        for failure in &row.failures {
            out.push_str(&format!("- **failed run** of {}: {failure}\n", row.name));
        }
    }
    out
}
