//! Running a contender as a child process: wall time, exit status, peak resident memory and a
//! timeout.
//!
//! Peak memory comes from GNU `time -f %M` wrapped around the child when `/usr/bin/time` is
//! GNU time (it reads the child's `ru_maxrss` from `wait4`), else from polling the child's
//! `VmHWM` in `/proc/<pid>/status` every 10 ms (the kernel's high-water mark of its resident
//! set; growth in the last 10 ms of its life can be missed).
//!
//! Every child runs in a process group of its own, so a timeout ends it and everything it
//! started (by that group's id) and nothing else. `HF_*` variables of the harness's own
//! environment are removed from every child: each job sets the ones it needs.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A command line to run, with the environment variables it needs.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Program to execute.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables set for it (on top of the harness's environment minus `HF_*`).
    pub envs: Vec<(String, OsString)>,
}

impl Job {
    /// A job running `program` without arguments.
    pub(crate) fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Appends one argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child.
    pub(crate) fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The command line as a shell would show it, with the variables it sets in front, each
    /// `(from, to)` of `replace` applied (e.g. temporary paths to `$DIR`), long arguments
    /// (JSON file lists) shortened and at most 14 arguments shown.
    pub(crate) fn display(&self, replace: &[(&str, &str)]) -> String {
        let edit = |text: &str| {
            replace
                .iter()
                .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
        };
        let mut parts: Vec<String> = self
            .envs
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(&edit(&v.to_string_lossy()))))
            .collect();
        parts.push(quote(&edit(&self.program.to_string_lossy())));
        const SHOWN: usize = 14;
        for arg in self.args.iter().take(SHOWN) {
            let arg = edit(&arg.to_string_lossy());
            if arg.chars().count() > 120 {
                let cut: String = arg.chars().take(100).collect();
                parts.push(format!("'{cut}…'"));
            } else {
                parts.push(quote(&arg));
            }
        }
        if self.args.len() > SHOWN {
            parts.push(format!("… ({} more arguments)", self.args.len() - SHOWN));
        }
        parts.join(" ")
    }

    /// The `Command` for this job: `HF_*` variables removed, the job's set, stdin and stdout
    /// to null, in a process group of its own.
    fn command(&self, program: &Path, leading: &[OsString]) -> Command {
        let mut command = Command::new(program);
        command.args(leading).args(&self.args);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("HF_") || key.starts_with("HUGGING_FACE") {
                command.env_remove(key.as_ref());
            }
        }
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        command
    }

    /// Starts the job directly (no memory measurement) with stderr to `stderr`; the caller
    /// waits for or kills the child.
    pub(crate) fn spawn(&self, stderr: File) -> Result<Child> {
        self.command(&self.program, &[])
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))
    }
}

/// Quotes a word for display when it has characters a shell would interpret.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%$".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How peak resident memory of a child is measured.
#[derive(Debug, Clone)]
pub(crate) enum RssMethod {
    /// GNU time at this path, `-f '%M %U %S'` (`ru_maxrss` and CPU times from `wait4`).
    GnuTime(PathBuf),
    /// `VmHWM` of `/proc/<pid>/status`, polled every 10 ms.
    ProcPolling,
}

impl RssMethod {
    /// GNU time when `/usr/bin/time -f %M true` works, else polling.
    pub(crate) fn detect() -> Self {
        let time = PathBuf::from("/usr/bin/time");
        let works = Command::new(&time)
            .args(["-f", "%M %U %S", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && parse_time_line(String::from_utf8_lossy(&out.stderr).trim()).is_some()
            });
        if works {
            RssMethod::GnuTime(time)
        } else {
            RssMethod::ProcPolling
        }
    }

    /// One sentence for the report.
    pub(crate) fn describe(&self) -> String {
        match self {
            RssMethod::GnuTime(path) => format!(
                "`{} -f '%M %U %S'` around the child: the child's `ru_maxrss` as returned by \
                 `wait4` (peak resident set of the contender's process; child processes it \
                 waits for are included by the kernel only if they were larger); CPU time = \
                 user + system seconds from the same `rusage`",
                path.display()
            ),
            RssMethod::ProcPolling => "`VmHWM` of `/proc/<pid>/status` of the child, polled every \
                 10 ms (GNU time was not available)"
                .to_owned(),
        }
    }
}

/// Flushes every dirty page of the machine to disk (`sync`), untimed, before a timed run: a
/// contender that returns with its bytes still in the page cache (curl, the Hub clients)
/// would otherwise have them written back during the next contender's run, and one that
/// fsyncs (ours) would pay for both.
pub(crate) fn settle_disk() {
    let _ = Command::new("sync").stdin(Stdio::null()).status();
}

/// How a child ended.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// From spawn to reaped.
    pub wall: Duration,
    /// Peak resident set in KiB, when measured.
    pub peak_rss_kib: Option<u64>,
    /// User + system CPU time of the child (GNU time only).
    pub cpu: Option<Duration>,
    /// Exit status 0 (and not timed out).
    pub success: bool,
    /// For a failure: the exit status and the end of stderr.
    pub detail: String,
}

/// Runs `job` to completion (or `timeout`), measuring wall time and, with `rss`, peak memory.
/// `scratch` holds the stderr capture and GNU time's output.
pub(crate) fn run(
    job: &Job,
    rss: Option<&RssMethod>,
    timeout: Duration,
    scratch: &Path,
) -> Result<Finished> {
    let stderr_file = tempfile::NamedTempFile::new_in(scratch)?;
    let rss_file = tempfile::NamedTempFile::new_in(scratch)?;
    let mut command = match rss {
        Some(RssMethod::GnuTime(time)) => {
            let leading: Vec<OsString> = vec![
                "-f".into(),
                "%M %U %S".into(),
                "-o".into(),
                rss_file.path().into(),
                job.program.clone().into(),
            ];
            job.command(time, &leading)
        }
        _ => job.command(&job.program, &[]),
    };
    command.stderr(stderr_file.reopen()?);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", job.program.display()))?;
    let pid = child.id();

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let timed_out = Arc::clone(&timed_out);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                timed_out.store(true, Ordering::SeqCst);
                kill_group(pid);
            }
        })
    };
    let finished = Arc::new(AtomicBool::new(false));
    let hwm = Arc::new(AtomicU64::new(0));
    let poller = matches!(rss, Some(RssMethod::ProcPolling)).then(|| {
        let finished = Arc::clone(&finished);
        let hwm = Arc::clone(&hwm);
        std::thread::spawn(move || {
            while !finished.load(Ordering::SeqCst) {
                if let Some(kib) = vm_hwm_kib(pid) {
                    hwm.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    });
    let status = child.wait()?;
    let wall = start.elapsed();
    finished.store(true, Ordering::SeqCst);
    let _ = done_tx.send(());
    let _ = watchdog.join();
    if let Some(poller) = poller {
        let _ = poller.join();
    }

    let (peak_rss_kib, cpu) = match rss {
        Some(RssMethod::GnuTime(_)) => std::fs::read_to_string(rss_file.path())
            .ok()
            .and_then(|text| text.lines().rev().find_map(parse_time_line))
            .map_or((None, None), |(kib, cpu)| (Some(kib), Some(cpu))),
        Some(RssMethod::ProcPolling) => (Some(hwm.load(Ordering::SeqCst)).filter(|&k| k > 0), None),
        None => (None, None),
    };
    let timed_out = timed_out.load(Ordering::SeqCst);
    let success = status.success() && !timed_out;
    let detail = if success {
        String::new()
    } else if timed_out {
        format!("timed out after {} s", timeout.as_secs())
    } else {
        format!("{status}: {}", tail(stderr_file.path(), 3))
    };
    Ok(Finished {
        wall,
        peak_rss_kib,
        cpu,
        success,
        detail,
    })
}

/// GNU time's `%M %U %S` line: peak RSS in KiB and user + system CPU time.
fn parse_time_line(line: &str) -> Option<(u64, Duration)> {
    let mut fields = line.split_whitespace();
    let kib = fields.next()?.parse().ok()?;
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((kib, Duration::from_secs_f64(user + system)))
}

/// The last `lines` non-empty lines of a file, joined with ` | `.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Command exited with"))
        .collect();
    let start = kept.len().saturating_sub(lines);
    let joined = kept[start..].join(" | ");
    let count = joined.chars().count();
    if count > 400 {
        let end: String = joined.chars().skip(count - 400).collect();
        format!("…{end}")
    } else {
        joined
    }
}

/// SIGKILL to the process group led by `pid` (a child the harness started with
/// `process_group(0)`).
pub(crate) fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// `VmHWM` of a live process in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs a short helper command and returns its trimmed stdout (first line with `first_line`),
/// or `None` when it cannot run or fails.
pub(crate) fn capture(program: &str, args: &[&str], first_line: bool) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let text = if first_line {
        text.lines().next().unwrap_or_default().to_owned()
    } else {
        text
    };
    (!text.is_empty()).then_some(text)
}

/// Finds an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| {
                std::fs::metadata(candidate).is_ok_and(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
            })
    })
}
