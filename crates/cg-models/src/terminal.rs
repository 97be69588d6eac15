//! The terminal the progress bars draw on: its size, and the few ANSI sequences indicatif
//! needs, written to stderr in one piece per redraw.
//!
//! Why not indicatif's own stderr target: it pads every line to the full terminal width and
//! leaves the cursor in the last column, in the terminal's pending-wrap state. The `^C` a
//! terminal echoes on Ctrl-C then wraps onto a new line, indicatif's idea of where its bars
//! are is one line off, and a stale bar stays on screen after the bars are cleared.
//!
//! So this terminal reports a width three columns short of the real one, and where indicatif
//! counts on the terminal wrapping a full line, it starts the next line itself. The cursor
//! never reaches the last column, and an echoed `^C` stays on the bars' last line, which the
//! next redraw or the final clear wipes.

use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::TermLike;

/// Columns left free at the right edge: room for an echoed `^C`, and never the last column.
const SPARE_COLUMNS: u16 = 3;
/// How often the size is asked again (terminals get resized).
const SIZE_REFRESH: Duration = Duration::from_secs(2);

/// stderr as indicatif's terminal, buffered until each redraw is complete.
#[derive(Debug)]
pub(crate) struct StderrTerminal {
    buffer: Mutex<Output>,
    size: Mutex<(Instant, u16, u16)>,
}

/// Bytes of the redraw in progress, and the column the cursor will be at.
#[derive(Debug, Default)]
struct Output {
    bytes: Vec<u8>,
    column: usize,
}

impl StderrTerminal {
    /// A terminal on stderr, sized now.
    pub(crate) fn new() -> Self {
        let (rows, cols) = terminal_size();
        StderrTerminal {
            buffer: Mutex::new(Output::default()),
            size: Mutex::new((Instant::now(), rows, cols)),
        }
    }

    fn output(&self) -> std::sync::MutexGuard<'_, Output> {
        match self.buffer.lock() {
            Ok(output) => output,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn size(&self) -> (u16, u16) {
        let mut size = match self.size.lock() {
            Ok(size) => size,
            Err(poisoned) => poisoned.into_inner(),
        };
        if size.0.elapsed() >= SIZE_REFRESH {
            let (rows, cols) = terminal_size();
            *size = (Instant::now(), rows, cols);
        }
        (size.1, size.2)
    }

    /// Appends text; a line that filled the reported width is ended here, where the real
    /// terminal (three columns wider) would not wrap by itself.
    fn text(&self, text: &str, newline: bool) -> io::Result<()> {
        let width = usize::from(self.width());
        let mut output = self.output();
        if !text.is_empty() && output.column >= width {
            output.bytes.extend_from_slice(b"\r\n");
            output.column = 0;
        }
        output.bytes.extend_from_slice(text.as_bytes());
        output.column = match text.rfind(['\n', '\r']) {
            Some(at) => visible_width(&text[at + 1..]),
            None => output.column + visible_width(text),
        };
        if newline {
            output.bytes.push(b'\n');
            output.column = 0;
        }
        Ok(())
    }

    fn cursor(&self, n: usize, code: char) -> io::Result<()> {
        // `ESC [ 0 A` moves one line on some terminals: no sequence at all for zero.
        if n == 0 {
            return Ok(());
        }
        let mut output = self.output();
        output
            .bytes
            .extend_from_slice(format!("\x1b[{n}{code}").as_bytes());
        match code {
            'C' => output.column += n,
            'D' => output.column = output.column.saturating_sub(n),
            _ => {}
        }
        Ok(())
    }
}

impl TermLike for StderrTerminal {
    fn width(&self) -> u16 {
        self.size().1.saturating_sub(SPARE_COLUMNS).max(20)
    }

    fn height(&self) -> u16 {
        self.size().0
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.text(s, true)
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.text(s, false)
    }

    fn clear_line(&self) -> io::Result<()> {
        let mut output = self.output();
        output.bytes.extend_from_slice(b"\r\x1b[2K");
        output.column = 0;
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.output().bytes);
        let mut err = io::stderr().lock();
        err.write_all(&pending)?;
        err.flush()
    }
}

/// Columns `text` takes: characters outside ANSI escape sequences (every character used in
/// bars and names is one column wide).
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c != '\r' && !c.is_control() {
            width += 1;
        }
    }
    width
}

/// Rows and columns of the controlling terminal (`stty size` on `/dev/tty`), else `LINES`
/// and `COLUMNS`, else 24 × 80.
fn terminal_size() -> (u16, u16) {
    let from_stty = std::fs::File::open("/dev/tty").ok().and_then(|tty| {
        let output = Command::new("stty")
            .arg("size")
            .stdin(Stdio::from(tty))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        parse_stty_size(&String::from_utf8_lossy(&output.stdout))
    });
    from_stty.unwrap_or_else(|| {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
        (var("LINES").unwrap_or(24), var("COLUMNS").unwrap_or(80))
    })
}

/// Parses `stty size` output, `"24 80"`; zero sizes (no real terminal) count as unknown.
fn parse_stty_size(text: &str) -> Option<(u16, u16)> {
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    let rows = parts.next()??;
    let cols = parts.next()??;
    (rows > 0 && cols > 0).then_some((rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stty_output_parses() {
        assert_eq!(parse_stty_size("24 80\n"), Some((24, 80)));
        assert_eq!(parse_stty_size("0 0\n"), None);
        assert_eq!(parse_stty_size(""), None);
        assert_eq!(parse_stty_size("x y"), None);
    }

    fn term(cols: u16) -> StderrTerminal {
        StderrTerminal {
            buffer: Mutex::new(Output::default()),
            size: Mutex::new((Instant::now(), 24, cols)),
        }
    }

    #[test]
    fn cursor_moves_of_zero_write_nothing_and_output_waits_for_flush() {
        let term = term(80);
        term.move_cursor_up(0).unwrap();
        term.move_cursor_up(2).unwrap();
        term.clear_line().unwrap();
        assert_eq!(term.output().bytes, b"\x1b[2A\r\x1b[2K");
        assert_eq!(term.width(), 77);
        assert_eq!(term.height(), 24);
    }

    #[test]
    fn a_line_filling_the_reported_width_is_ended_before_the_next_one() {
        let term = term(23); // reports 20 columns
        term.write_str(&"a".repeat(15)).unwrap();
        term.write_str("     ").unwrap(); // indicatif's filler up to the width
        term.write_str("").unwrap();
        term.write_str("\x1b[1mb\x1b[0m").unwrap();
        assert_eq!(
            String::from_utf8(term.output().bytes.clone()).unwrap(),
            format!("{}     \r\n\x1b[1mb\x1b[0m", "a".repeat(15))
        );
        assert_eq!(term.output().column, 1);
        term.write_line("x").unwrap();
        assert_eq!(term.output().column, 0);
    }

    #[test]
    fn escape_sequences_take_no_columns() {
        assert_eq!(visible_width("\x1b[36m━━╸\x1b[0m  5 MiB"), 10);
        assert_eq!(visible_width("\r\x1b[2K"), 0);
    }
}
