//! `cg-models`: the command line of the model artifact manager. Parses the command line,
//! runs one command on a tokio runtime, stops cleanly on Ctrl-C or SIGTERM, and maps the
//! outcome to an exit code. All model logic lives in `context-graph-embeddings`.

// The command-line program is the one crate that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;
mod config;
mod failure;
mod metrics;
mod output;
mod progress;
mod size;
mod terminal;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::failure::{CliError, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_TERMINATED};
use crate::output::Output;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let output = Output::new(&cli.global);
    if cli.global.verbose >= 2 {
        show_library_diagnostics(output.color);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            output.error(&CliError::failure(format!(
                "cannot start the async runtime: {error}"
            )));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(run(&cli, &output));
    // Hashing threads of an interrupted command are not waited for.
    runtime.shutdown_background();
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

/// Caps glibc's malloc arenas at the number of cores before any thread starts. glibc gives
/// each new thread an arena of its own (up to eight per core), and memory freed in an arena
/// stays with it: a set's many small files are handled on many blocking threads, which took a
/// cold `ensure` of eight models with their companions from 29 to 45 MiB peak RSS (measured,
/// `docs/architecture.md`, "Transfer: connections and memory"). `MALLOC_ARENA_MAX`, when set,
/// still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` takes two integers and changes allocator settings; called once at the
    // start of `main`, before this program starts any thread. A refusal (return 0) only keeps
    // glibc's default.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// With `-vv`: the library's own diagnostics (`tracing` records of the
/// `context_graph_embeddings` crate, debug level and up) on stderr, such as each connection
/// plan the download governor measures and decides, CDN URL refreshes and fleet steps. Other
/// crates' records (HTTP internals) stay off. The typed events are what the rest of the
/// output is made of; these are for finding out why a run behaved as it did.
fn show_library_diagnostics(color: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let only_ours = Targets::new().with_target("context_graph_embeddings", LevelFilter::DEBUG);
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(color);
    // Already set (cannot happen in this binary): the diagnostics stay off.
    let _ = tracing_subscriber::registry()
        .with(lines)
        .with(only_ours)
        .try_init();
}

/// Runs the command until it ends or a signal arrives; returns the exit code.
async fn run(cli: &Cli, output: &Output) -> u8 {
    let mut work = Box::pin(commands::run(cli, output));
    let outcome = tokio::select! {
        result = &mut work => Some(result),
        code = shutdown_signal() => {
            // Drop the command first: downloads stop, bars are cleared, partial files stay.
            drop(work);
            return interrupted(output, code);
        }
    };
    match outcome {
        Some(Ok(code)) => code,
        Some(Err(error)) => {
            output.error(&error);
            error.code
        }
        None => EXIT_FAILURE,
    }
}

fn interrupted(output: &Output, code: u8) -> u8 {
    let message = "Interrupted; partial downloads are kept and resume next time.";
    output.stderr_line(message);
    output.json(
        "interrupted",
        &serde_json::json!({ "message": message, "exit_code": code }),
    );
    code
}

/// Waits for Ctrl-C (exit 130) or SIGTERM (exit 143). A signal that cannot be listened to
/// never fires.
async fn shutdown_signal() -> u8 {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                if terminate.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => EXIT_INTERRUPTED,
        () = terminate => EXIT_TERMINATED,
    }
}
