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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let output = Output::new(&cli.global);
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
