//! Where and how things are printed: the output mode (terminal, plain lines for pipes and CI
//! logs, JSON), colours (never with `NO_COLOR` or off a terminal), UTC timestamps, and the
//! one place errors are shown.
//!
//! Streams: stdout carries a command's result (the status table, `gc`'s list, the pinned
//! manifest, or in `--json` mode every JSON object); stderr carries progress, notes, warnings
//! and errors, so `cg-models status > file` and `--json | jq` stay clean.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::json;

use crate::cli::GlobalArgs;
use crate::failure::CliError;

/// How progress and notes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// stderr is a terminal: progress bars, redrawn in place.
    Terminal,
    /// stderr is a pipe or file: timestamped plain lines, no escape codes.
    Plain,
    /// `--json`: newline-delimited JSON objects on stdout.
    Json,
}

/// A text style; rendered as ANSI colours only when colours are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Success marks.
    Green,
    /// Failures.
    Red,
    /// Warnings and retries.
    Yellow,
    /// Headings and names.
    Bold,
    /// Secondary detail.
    Dim,
}

/// The printer every command uses.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// The mode.
    pub mode: Mode,
    /// Whether ANSI colours are used.
    pub color: bool,
    /// Only errors (and a command's primary output).
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
    /// Whether stdout is a terminal (tables pick their layout by it).
    pub stdout_is_terminal: bool,
}

impl Output {
    /// The output for these options and the real terminals.
    pub(crate) fn new(args: &GlobalArgs) -> Self {
        let stderr_is_terminal = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let mode = if args.json {
            Mode::Json
        } else if stderr_is_terminal {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Output {
            mode,
            color: mode == Mode::Terminal && !no_color,
            quiet: args.quiet,
            verbose: args.verbose,
            stdout_is_terminal: std::io::stdout().is_terminal(),
        }
    }

    /// Whether human notes are shown (not quiet, not JSON).
    pub(crate) fn chatty(&self) -> bool {
        !self.quiet && self.mode != Mode::Json
    }

    /// `text` in `style`, when colours are on.
    pub(crate) fn paint(&self, style: Style, text: impl Display) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match style {
            Style::Green => "32",
            Style::Red => "31",
            Style::Yellow => "33",
            Style::Bold => "1",
            Style::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// A note on stderr (timestamped in plain mode); nothing when quiet or in JSON mode.
    pub(crate) fn info(&self, message: impl Display) {
        if self.chatty() {
            self.stderr_line(&message.to_string());
        }
    }

    /// A detail shown with `-v` (or more, at `level`).
    pub(crate) fn detail(&self, level: u8, message: impl Display) {
        if self.verbose >= level && !self.quiet {
            self.stderr_line(&self.paint(Style::Dim, message));
        }
    }

    /// A warning on stderr; shown unless quiet.
    pub(crate) fn warn(&self, message: impl Display) {
        if !self.quiet {
            let label = self.paint(Style::Yellow, "warning:");
            self.stderr_line(&format!("{label} {message}"));
        }
    }

    /// One line on stderr, with a UTC timestamp in plain mode.
    pub(crate) fn stderr_line(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let result = if self.mode == Mode::Plain {
            writeln!(err, "{} {line}", timestamp_now())
        } else {
            writeln!(err, "{line}")
        };
        drop(result);
    }

    /// One line of a command's result on stdout (not in JSON or quiet mode).
    pub(crate) fn result_line(&self, line: impl Display) {
        if self.mode != Mode::Json && !self.quiet {
            println!("{line}");
        }
    }

    /// `text` in `style` for stdout: coloured only when stdout is a terminal too.
    pub(crate) fn paint_stdout(&self, style: Style, text: impl Display) -> String {
        if self.stdout_is_terminal {
            self.paint(style, text)
        } else {
            text.to_string()
        }
    }

    /// One JSON object on stdout (only in JSON mode). `value` must serialise to an object;
    /// a `"type": kind` field is put first, the value's fields follow in their order.
    pub(crate) fn json(&self, kind: &str, value: &impl Serialize) {
        if self.mode != Mode::Json {
            return;
        }
        let line = json_line(kind, value);
        let mut out = std::io::stdout().lock();
        drop(writeln!(out, "{line}").and_then(|()| out.flush()));
    }

    /// Shows an error: one sentence (the error's `Display`) on stderr, its causes with `-v`,
    /// its full structure with `-vv`; in JSON mode also an `error` object on stdout.
    pub(crate) fn error(&self, error: &CliError) {
        let message = error.error.to_string();
        let label = self.paint(Style::Red, "error:");
        self.stderr_line(&format!("{label} {message}"));
        if self.verbose >= 1 {
            for cause in error.error.chain().skip(1) {
                let cause = cause.to_string();
                // The library's messages already include their source; do not repeat it.
                if !message.contains(&cause) {
                    self.stderr_line(&format!("  caused by: {cause}"));
                }
            }
        }
        if self.verbose >= 2 {
            self.stderr_line(&format!("  details: {:?}", error.error));
        }
        self.json(
            "error",
            &json!({ "message": message, "exit_code": error.code }),
        );
    }
}

/// `value` as one JSON object line with `"type": kind` first.
pub(crate) fn json_line(kind: &str, value: &impl Serialize) -> String {
    let kind_json = serde_json::Value::from(kind).to_string();
    match serde_json::to_string(value) {
        Ok(body) if body == "{}" => format!("{{\"type\":{kind_json}}}"),
        Ok(body) if body.starts_with('{') => format!("{{\"type\":{kind_json},{}", &body[1..]),
        Ok(other) => format!("{{\"type\":{kind_json},\"value\":{other}}}"),
        Err(error) => json!({ "type": kind, "serialization_error": error.to_string() }).to_string(),
    }
}

/// The current UTC time as `2026-11-26T04:50:01Z`.
pub(crate) fn timestamp_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_timestamp(secs)
}

/// Seconds since the Unix epoch as an RFC 3339 UTC timestamp, second precision.
pub(crate) fn format_timestamp(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Wraps `items` joined by `, ` into lines of at most `width` characters, continuation lines
/// indented by `indent` spaces (the first line is not indented; the caller prints its label).
pub(crate) fn wrap_list(items: &[String], width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line_len = indent;
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{item},")
        } else {
            item.clone()
        };
        if i > 0 {
            if line_len + 1 + piece.len() > width {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                line_len = indent;
            } else {
                out.push(' ');
                line_len += 1;
            }
        }
        out.push_str(&piece);
        line_len += piece.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_timestamp(1_795_668_601), "2026-11-26T04:50:01Z");
        assert_eq!(timestamp_now().len(), 20);
    }

    #[test]
    fn json_lines_start_with_their_type() {
        assert_eq!(json_line("x", &json!({})), r#"{"type":"x"}"#);
        assert_eq!(json_line("gc", &json!({"a": 1})), r#"{"type":"gc","a":1}"#);
        assert_eq!(json_line("v", &json!(3)), r#"{"type":"v","value":3}"#);
    }

    #[test]
    fn lists_wrap_at_the_width() {
        let items: Vec<String> = ["Semantic", "Causal", "Sparse", "Code", "Graph"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            wrap_list(&items, 80, 4),
            "Semantic, Causal, Sparse, Code, Graph"
        );
        let wrapped = wrap_list(&items, 24, 4);
        assert_eq!(wrapped, "Semantic, Causal,\n    Sparse, Code, Graph");
        assert!(wrapped.lines().all(|l| l.len() <= 24));
    }
}
