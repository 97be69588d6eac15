//! Showing the library's progress events while a command runs: progress bars on a terminal,
//! timestamped lines in pipes and CI logs, JSON objects with `--json`; and tallying how each
//! model became ready for the final summary.
//!
//! The events come from [`ModelArtifactManager::subscribe_progress`]; this module only
//! displays them, it never decides anything about downloads.
//!
//! [`ModelArtifactManager::subscribe_progress`]: context_graph_embeddings::artifacts::ModelArtifactManager::subscribe_progress

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::{Outcome, ProgressEvent, ProgressKind};
use context_graph_embeddings::ModelId;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::output::{timestamp_now, wrap_list, Mode, Output, Style};
use crate::size::{eta, format_duration, format_size, format_speed};
use crate::terminal::StderrTerminal;

/// Redraws per second of the progress bars (indicatif's rate limit).
const REDRAW_HZ: u8 = 8;
/// Smallest interval between two plain progress lines of one model.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);
/// Width the bar lines and notices are laid out for (the narrowest usual terminal).
const LINE_WIDTH: usize = 80;
/// Width of the model name column of the bars.
const NAME_WIDTH: usize = 15;

/// How one model ended in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Ready, and how it became so.
    Ready {
        /// The library's outcome.
        outcome: Outcome,
        /// Bytes received over the network.
        transferred: u64,
        /// Size of the file.
        size: u64,
    },
    /// Failed, with the error as shown to users.
    Failed(String),
}

/// What happened to every model that reported an ending.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Endings by model.
    pub endings: BTreeMap<ModelId, Ending>,
    /// Events lost because the display fell behind (the library never waits for it).
    pub lagged: u64,
    /// Files per model: (in place and verified, in the set).
    pub files: BTreeMap<ModelId, (usize, usize)>,
    /// Files fetched over the network (not already present or reused).
    pub files_fetched: usize,
}

impl Tally {
    /// Models that ended with `outcome`, and their summed transferred bytes.
    pub(crate) fn with_outcome(&self, wanted: Outcome) -> (Vec<ModelId>, u64) {
        let mut models = Vec::new();
        let mut bytes = 0;
        for (model, ending) in &self.endings {
            if let Ending::Ready {
                outcome,
                transferred,
                ..
            } = ending
            {
                if *outcome == wanted {
                    models.push(*model);
                    bytes += transferred;
                }
            }
        }
        (models, bytes)
    }

    /// Models that failed.
    pub(crate) fn failed(&self) -> Vec<ModelId> {
        self.endings
            .iter()
            .filter(|(_, e)| matches!(e, Ending::Failed(_)))
            .map(|(m, _)| *m)
            .collect()
    }
}

/// Runs `work` while showing the progress events of `events`, and returns its result with the
/// tally of how each model ended. `expected` gives the sizes of the models about to be
/// fetched, when known, for the total line.
///
/// The display lives inside the returned future: dropping it (Ctrl-C) drops the work and
/// clears the bars at once, before anything else is printed.
pub(crate) async fn track<T>(
    mut events: broadcast::Receiver<ProgressEvent>,
    output: &Output,
    expected: HashMap<ModelId, u64>,
    work: impl Future<Output = T>,
) -> (T, Tally) {
    let multi = (output.mode == Mode::Terminal && !output.quiet).then(|| {
        MultiProgress::with_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(StderrTerminal::new()),
            REDRAW_HZ,
        ))
    });
    let mut renderer = Renderer::new(output.clone(), multi, expected);
    let mut work = std::pin::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            received = events.recv() => match received {
                Ok(event) => renderer.handle(&event),
                Err(broadcast::error::RecvError::Lagged(n)) => renderer.tally.lagged += n,
                Err(broadcast::error::RecvError::Closed) => break work.await,
            },
        }
    };
    // Everything the work caused was sent before it returned: show the rest.
    loop {
        match events.try_recv() {
            Ok(event) => renderer.handle(&event),
            Err(broadcast::error::TryRecvError::Lagged(n)) => renderer.tally.lagged += n,
            Err(_) => break,
        }
    }
    renderer.close();
    let tally = std::mem::take(&mut renderer.tally);
    (result, tally)
}

/// One progress event as a JSON object (`"type": "progress"` is added by the printer).
#[derive(Serialize)]
struct JsonEvent<'a> {
    time: String,
    model_id: ModelId,
    bytes_downloaded: u64,
    total_bytes: u64,
    speed_bps: u64,
    #[serde(flatten)]
    kind: &'a ProgressKind,
}

/// Per-model display state.
struct Active {
    bar: Option<ProgressBar>,
    bytes: u64,
    total: u64,
    speed: u64,
    started: Instant,
    last_line: Option<Instant>,
}

struct Renderer {
    output: Output,
    multi: Option<MultiProgress>,
    total_bar: Option<ProgressBar>,
    expected: HashMap<ModelId, u64>,
    active: HashMap<ModelId, Active>,
    /// Bytes on disk and size of models that finished, for the total line.
    done_bytes: u64,
    tally: Tally,
    /// Retry reasons already shown (URLs left out): without `-v` the same failure of several
    /// models, such as a Hub that cannot be resolved, is said once.
    retry_reasons: std::collections::HashSet<String>,
}

/// A retry reason without its URLs, so the same failure of two files compares equal.
fn reason_key(reason: &str) -> String {
    reason
        .split_whitespace()
        .filter(|word| !word.contains("://"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Renderer {
    fn new(output: Output, multi: Option<MultiProgress>, expected: HashMap<ModelId, u64>) -> Self {
        Renderer {
            output,
            multi,
            total_bar: None,
            expected,
            active: HashMap::new(),
            done_bytes: 0,
            tally: Tally::default(),
            retry_reasons: std::collections::HashSet::new(),
        }
    }

    /// Removes every bar from the screen.
    fn close(&mut self) {
        let bars: Vec<ProgressBar> = self
            .active
            .drain()
            .filter_map(|(_, active)| active.bar)
            .chain(self.total_bar.take())
            .collect();
        for bar in bars {
            bar.finish_and_clear();
            if let Some(multi) = &self.multi {
                multi.remove(&bar);
            }
        }
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }

    fn handle(&mut self, event: &ProgressEvent) {
        if self.output.mode == Mode::Json {
            self.output.json(
                "progress",
                &JsonEvent {
                    time: timestamp_now(),
                    model_id: event.model_id,
                    bytes_downloaded: event.bytes_downloaded,
                    total_bytes: event.total_bytes,
                    speed_bps: event.speed_bps,
                    kind: &event.kind,
                },
            );
        }
        let model = event.model_id;
        // An `if let` chain rather than a `match`: kinds the library adds later are shown
        // generically instead of breaking the build.
        let kind = &event.kind;
        if let ProgressKind::Started { resumed_from } = kind {
            self.start_model(event, *resumed_from);
        } else if let ProgressKind::Progress = kind {
            self.progress(event);
        } else if let ProgressKind::Retrying {
            attempt,
            delay_ms,
            reason,
        } = kind
        {
            let delay = format_duration(Duration::from_millis(*delay_ms));
            let first = self.retry_reasons.insert(reason_key(reason));
            if first || self.output.verbose >= 1 {
                self.notice(
                    Style::Yellow,
                    "↻",
                    model,
                    &format!("retry {attempt} in {delay}: {reason}"),
                );
            }
        } else if let ProgressKind::WaitingForLock { lock_path } = kind {
            self.notice(
                Style::Yellow,
                "…",
                model,
                &format!(
                    "another process is downloading this file; waiting for its lock ({})",
                    lock_path.display()
                ),
            );
        } else if let ProgressKind::Verifying = kind {
            if let Some(bar) = self.active.get(&model).and_then(|a| a.bar.as_ref()) {
                bar.set_message(pad_message("verifying…"));
            }
            if self.output.mode == Mode::Plain && self.output.verbose >= 1 {
                self.notice(Style::Dim, "", model, "all bytes in; verifying");
            }
        } else if let ProgressKind::Completed {
            path,
            outcome,
            bytes_transferred,
            ..
        } = kind
        {
            self.completed(event, path, *outcome, *bytes_transferred);
        } else if let ProgressKind::FilesResolved { files } = kind {
            self.tally.files.entry(model).or_insert((0, 0)).1 = *files;
            if self.output.verbose >= 1 {
                self.notice(Style::Dim, "", model, &format!("{files} files in its set"));
            }
        } else if let ProgressKind::FileReady { file, outcome, .. } = kind {
            let entry = self.tally.files.entry(model).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(entry.0);
            if matches!(outcome, Outcome::Downloaded | Outcome::Resumed) {
                self.tally.files_fetched += 1;
            }
            let (done, total) = *entry;
            if let Some(bar) = self.active.get(&model).and_then(|a| a.bar.as_ref()) {
                bar.set_message(pad_message(&format!("files {done}/{total}")));
            }
            if self.output.verbose >= 1 {
                self.notice(
                    Style::Dim,
                    "",
                    model,
                    &format!("file {done}/{total} {file} ({})", outcome_name(*outcome)),
                );
            }
        } else if let ProgressKind::FallingBack { from, reason } = kind {
            self.notice(
                Style::Yellow,
                "↪",
                model,
                &format!("{from} failed, trying the Hub: {reason}"),
            );
        } else if let ProgressKind::Warning { message } = kind {
            self.notice(Style::Yellow, "!", model, message);
        } else if let ProgressKind::Failed { error } = kind {
            let was_transferring = self.active.contains_key(&model);
            self.end_model(model, 0);
            self.tally
                .endings
                .insert(model, Ending::Failed(error.clone()));
            // The full error closes the run; repeat it here only when asked for detail. A
            // model that failed before any transfer began is named in the summary and the
            // error at the end, so without `-v` it gets no line of its own here.
            if self.output.verbose >= 1 {
                self.notice(Style::Red, "✗", model, &format!("failed: {error}"));
            } else if was_transferring {
                self.notice(
                    Style::Red,
                    "✗",
                    model,
                    "failed (the error follows at the end)",
                );
            }
        } else {
            self.notice(Style::Yellow, "•", model, &describe_kind(kind));
        }
        self.update_total();
    }

    fn start_model(&mut self, event: &ProgressEvent, resumed_from: u64) {
        let model = event.model_id;
        let total = event
            .total_bytes
            .max(self.expected.get(&model).copied().unwrap_or(0));
        if total > 0 {
            self.expected.insert(model, total);
        }
        let bar = self.multi.as_ref().map(|multi| {
            let bar =
                ProgressBar::with_draw_target(Some(total.max(1)), ProgressDrawTarget::hidden())
                    .with_style(bar_style(self.output.color))
                    .with_prefix(truncate(model.as_str(), NAME_WIDTH))
                    .with_position(resumed_from)
                    .with_finish(ProgressFinish::AndClear);
            bar.set_message(pad_message(&transfer_text(resumed_from, total, 0)));
            let bar = match &self.total_bar {
                Some(total_bar) => multi.insert_before(total_bar, bar),
                None => multi.add(bar),
            };
            if self.total_bar.is_none() {
                let total_bar =
                    ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::hidden())
                        .with_style(bar_style(self.output.color))
                        .with_prefix(truncate("total", NAME_WIDTH))
                        .with_finish(ProgressFinish::AndClear);
                self.total_bar = Some(multi.add(total_bar));
            }
            bar
        });
        let previous = self.active.insert(
            model,
            Active {
                bar,
                bytes: resumed_from,
                total,
                speed: 0,
                started: Instant::now(),
                // The "downloading" line was just printed: the first progress line waits.
                last_line: Some(Instant::now()),
            },
        );
        if let Some(bar) = previous.and_then(|p| p.bar) {
            bar.finish_and_clear();
            if let Some(multi) = &self.multi {
                multi.remove(&bar);
            }
        }
        let size = if total > 0 {
            format_size(total)
        } else {
            "unknown size".to_owned()
        };
        match self.output.mode {
            Mode::Terminal if resumed_from > 0 => self.notice(
                Style::Dim,
                "↪",
                model,
                &format!("resuming at {} of {size}", format_size(resumed_from)),
            ),
            Mode::Plain if resumed_from > 0 => self.notice(
                Style::Dim,
                "",
                model,
                &format!("resuming at {} of {size}", format_size(resumed_from)),
            ),
            Mode::Plain => self.notice(Style::Dim, "", model, &format!("downloading {size}")),
            _ => {}
        }
    }

    fn progress(&mut self, event: &ProgressEvent) {
        let verbose = self.output.verbose;
        let mode = self.output.mode;
        let Some(active) = self.active.get_mut(&event.model_id) else {
            return;
        };
        active.bytes = event.bytes_downloaded;
        if event.total_bytes > 0 {
            active.total = event.total_bytes;
        }
        active.speed = event.speed_bps;
        if let Some(bar) = &active.bar {
            if active.total > 0 {
                bar.set_length(active.total);
            }
            bar.set_position(active.bytes);
            bar.set_message(pad_message(&transfer_text(
                active.bytes,
                active.total,
                active.speed,
            )));
        }
        if mode == Mode::Plain {
            let due = active
                .last_line
                .is_none_or(|last| last.elapsed() >= PLAIN_INTERVAL);
            if due || verbose >= 2 {
                active.last_line = Some(Instant::now());
                let text = plain_progress(active.bytes, active.total, active.speed);
                self.notice(Style::Dim, "", event.model_id, &text);
            }
        }
        if let Some(total) = self.expected.get_mut(&event.model_id) {
            *total = (*total).max(event.total_bytes);
        }
    }

    fn completed(
        &mut self,
        event: &ProgressEvent,
        path: &Path,
        outcome: Outcome,
        transferred: u64,
    ) {
        let model = event.model_id;
        let size = event.total_bytes.max(event.bytes_downloaded);
        let elapsed = self.active.get(&model).map(|a| a.started.elapsed());
        self.end_model(model, size);
        self.tally.endings.insert(
            model,
            Ending::Ready {
                outcome,
                transferred,
                size,
            },
        );
        let text = if outcome == Outcome::Downloaded {
            match elapsed {
                Some(elapsed) => format!(
                    "downloaded {} in {}{}",
                    format_size(size),
                    format_duration(elapsed),
                    average_speed(transferred, elapsed)
                ),
                None => format!("downloaded {}", format_size(size)),
            }
        } else if outcome == Outcome::Resumed {
            format!(
                "resumed: fetched the last {} of {}",
                format_size(transferred),
                format_size(size)
            )
        } else if outcome == Outcome::Reused {
            format!(
                "reused the copy already in the cache ({})",
                format_size(size)
            )
        } else if outcome == Outcome::Verified {
            format!("verified the file already on disk ({})", format_size(size))
        } else if outcome == Outcome::AlreadyPresent {
            "already present and verified".to_owned()
        } else {
            format!("ready ({}, {})", outcome_name(outcome), format_size(size))
        };
        // Already present models are listed in the summary; one line each is noise.
        let quiet_outcome = outcome == Outcome::AlreadyPresent && self.output.verbose == 0;
        if !quiet_outcome {
            self.notice(Style::Green, "✓", model, &text);
        }
        self.output
            .detail(1, format!("  {model}: {}", path.display()));
    }

    /// Removes a model's bar; its bytes count as done in the total.
    fn end_model(&mut self, model: ModelId, size: u64) {
        if let Some(active) = self.active.remove(&model) {
            if let Some(bar) = active.bar {
                bar.finish_and_clear();
                if let Some(multi) = &self.multi {
                    multi.remove(&bar);
                }
            }
            if self.expected.contains_key(&model) {
                self.done_bytes += size.max(active.bytes);
            }
        }
        if self.active.is_empty() {
            // A later download brings the total line back, with the counts kept.
            if let Some(total) = self.total_bar.take() {
                total.finish_and_clear();
                if let Some(multi) = &self.multi {
                    multi.remove(&total);
                }
            }
        }
    }

    fn update_total(&self) {
        let Some(bar) = &self.total_bar else {
            return;
        };
        let length: u64 = self.expected.values().sum::<u64>().max(1);
        let bytes: u64 = self.done_bytes + self.active.values().map(|a| a.bytes).sum::<u64>();
        let speed: u64 = self.active.values().map(|a| a.speed).sum();
        bar.set_length(length.max(bytes));
        bar.set_position(bytes);
        bar.set_message(pad_message(&transfer_text(bytes, length, speed)));
    }

    /// A line about one model: above the bars on a terminal, timestamped in plain mode,
    /// nothing in JSON or quiet mode.
    fn notice(&self, style: Style, mark: &str, model: ModelId, text: &str) {
        if !self.output.chatty() {
            return;
        }
        match self.output.mode {
            Mode::Terminal => {
                let mut line = format!("{mark} {:<NAME_WIDTH$} {text}", model.as_str());
                if self.output.verbose == 0 {
                    line = truncate(&line, LINE_WIDTH);
                }
                let mark_len = mark.len();
                let painted = if mark.is_empty() {
                    self.output.paint(style, &line)
                } else {
                    format!("{}{}", self.output.paint(style, mark), &line[mark_len..])
                };
                // Printed with the bars suspended rather than with `MultiProgress::println`,
                // which pads lines to the terminal width and leaves the cursor in the
                // pending-wrap column, so the next line would become a wrapped continuation.
                match &self.multi {
                    Some(multi) => multi.suspend(|| self.output.stderr_line(&painted)),
                    None => self.output.stderr_line(&painted),
                }
            }
            Mode::Plain => self.output.stderr_line(&format!("{model}: {text}")),
            Mode::Json => {}
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.close();
    }
}

/// The serde name of an outcome (`downloaded`, `resumed`, ...).
fn outcome_name(outcome: Outcome) -> String {
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{outcome:?}"))
}

/// A progress kind this program has no special display for: its name and fields.
fn describe_kind(kind: &ProgressKind) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(kind) else {
        return format!("{kind:?}");
    };
    let name = fields
        .get("event")
        .and_then(|v| v.as_str())
        .unwrap_or("event")
        .replace('_', " ");
    let details: Vec<String> = fields
        .iter()
        .filter(|(key, _)| key.as_str() != "event")
        .map(|(key, value)| match value.as_str() {
            Some(text) => format!("{key}: {text}"),
            None => format!("{key}: {value}"),
        })
        .collect();
    if details.is_empty() {
        name
    } else {
        format!("{name} ({})", details.join("; "))
    }
}

/// Bars fill the width the terminal reports, which [`StderrTerminal`] keeps three columns
/// short of the real one (77 on an 80-column terminal).
fn bar_style(color: bool) -> ProgressStyle {
    let (template, chars) = if color {
        ("{prefix:15.bold} {wide_bar:.cyan/blue} {msg}", "━╸━")
    } else {
        ("{prefix:15} {wide_bar} {msg}", "=> ")
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars(chars)
}

/// `  512 MiB/1.25 GiB  12.3 MiB/s   1m05s`: fixed width, so bars line up and fit 80 columns.
fn transfer_text(bytes: u64, total: u64, speed: u64) -> String {
    let total_text = if total > 0 {
        format_size(total)
    } else {
        "?".to_owned()
    };
    let speed_text = if speed > 0 {
        format_speed(speed)
    } else {
        String::new()
    };
    let eta_text = eta(total.saturating_sub(bytes), speed)
        .filter(|_| total > 0)
        .map(format_duration)
        .unwrap_or_default();
    format!(
        "{:>8}/{:<8} {:>10} {:>5}",
        format_size(bytes),
        total_text,
        speed_text,
        eta_text
    )
}

/// Pads a bar message to the width of [`transfer_text`], so the bar keeps its width.
fn pad_message(text: &str) -> String {
    format!("{text:<34}")
}

fn plain_progress(bytes: u64, total: u64, speed: u64) -> String {
    let mut text = format_size(bytes);
    if total > 0 {
        text.push_str(&format!(
            " of {} ({}%)",
            format_size(total),
            bytes.saturating_mul(100) / total
        ));
    }
    if speed > 0 {
        text.push_str(&format!(", {}", format_speed(speed)));
        if let Some(left) = eta(total.saturating_sub(bytes), speed).filter(|_| total > 0) {
            text.push_str(&format!(", ETA {}", format_duration(left)));
        }
    }
    text
}

fn average_speed(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if bytes == 0 || secs < 0.05 {
        return String::new();
    }
    format!(" ({})", format_speed((bytes as f64 / secs) as u64))
}

/// Cuts `text` to at most `width` characters, marking the cut with `…`.
pub(crate) fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The summary lines after a download run: what was downloaded, resumed, reused, verified,
/// already present, failed; each list wrapped to 80 columns.
pub(crate) fn summary_lines(tally: &Tally, output: &Output) -> Vec<String> {
    let mut lines = Vec::new();
    let groups = [
        (Outcome::Downloaded, "downloaded"),
        (Outcome::Resumed, "resumed"),
        (Outcome::Reused, "reused"),
        (Outcome::Verified, "verified"),
        (Outcome::AlreadyPresent, "already present"),
    ];
    for (outcome, label) in groups {
        let (models, bytes) = tally.with_outcome(outcome);
        if models.is_empty() {
            continue;
        }
        let mut names: Vec<String> = models.iter().map(|m| m.to_string()).collect();
        if bytes > 0 {
            if let Some(last) = names.last_mut() {
                last.push_str(&format!(" ({} fetched)", format_size(bytes)));
            }
        }
        lines.push(format!(
            "  {} {}",
            output.paint(Style::Green, format!("{label:<16}")),
            wrap_list(&names, LINE_WIDTH, 19)
        ));
    }
    let mut other: Vec<String> = tally
        .endings
        .iter()
        .filter_map(|(model, ending)| match ending {
            Ending::Ready { outcome, .. } if !groups.iter().any(|(known, _)| known == outcome) => {
                Some(format!("{model} ({})", outcome_name(*outcome)))
            }
            _ => None,
        })
        .collect();
    if !other.is_empty() {
        other.sort();
        lines.push(format!(
            "  {} {}",
            output.paint(Style::Green, format!("{:<16}", "ready")),
            wrap_list(&other, LINE_WIDTH, 19)
        ));
    }
    let (files_done, files_total) = tally
        .files
        .values()
        .fold((0, 0), |(d, t), (done, total)| (d + done, t + total));
    if files_total > 0 {
        lines.push(format!(
            "  {} {files_done} of {files_total} in place and verified ({} fetched)",
            output.paint(Style::Green, format!("{:<16}", "files")),
            tally.files_fetched
        ));
    }
    let failed = tally.failed();
    if !failed.is_empty() {
        let names: Vec<String> = failed.iter().map(|m| m.to_string()).collect();
        lines.push(format!(
            "  {} {}",
            output.paint(Style::Red, format!("{:<16}", "failed")),
            wrap_list(&names, LINE_WIDTH, 19)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_lines_fit_eighty_columns() {
        let widest = transfer_text(1023 * (1 << 20), 1023 * (1 << 20), 1023 * (1 << 20));
        // name, space, a bar of at least 20 columns, space, message: within 77 columns
        assert!(NAME_WIDTH + 1 + 20 + 1 + pad_message(&widest).chars().count() <= LINE_WIDTH - 3);
        assert_eq!(widest.chars().count(), 34);
        assert_eq!(pad_message("verifying…").chars().count(), 34);
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("LateInteraction", 15), "LateInteraction");
        assert_eq!(truncate("TemporalPositional", 15), "TemporalPositi…");
    }

    #[test]
    fn plain_progress_reads_well() {
        assert_eq!(
            plain_progress(512 << 20, 1 << 30, 2 << 20),
            "512 MiB of 1.00 GiB (50%), 2.00 MiB/s, ETA 4m16s"
        );
        assert_eq!(plain_progress(10, 0, 0), "10 B");
    }
}
