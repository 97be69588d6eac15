//! `cg-models ensure` (aliases `pull`, `download`): asks the library to make the requested
//! models ready, shows its progress, and summarises what was downloaded, resumed, reused,
//! verified or failed.

use std::collections::HashMap;
use std::time::Instant;

use context_graph_embeddings::artifacts::{ModelArtifactManager, ReadinessState};

use crate::cli::EnsureArgs;
use crate::failure::{exit_code_of, CliError, EXIT_FAILURE, EXIT_OK};
use crate::output::{Output, Style};
use crate::progress::{summary_lines, track};
use crate::size::format_duration;

/// Runs `ensure`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &EnsureArgs,
) -> Result<u8, CliError> {
    let (artifacts, builtins) = super::select_models(manager, &args.models);
    if !args.models.is_empty() {
        for model in &builtins {
            output.info(format!(
                "{model} is computed in-process; it has no files to download"
            ));
        }
    }
    let before = manager.readiness_report();
    let expected: HashMap<_, _> = before
        .models
        .iter()
        .filter(|m| artifacts.contains(&m.model_id))
        // Sizes of what will be downloaded; unverified files are hashed, not fetched.
        .filter(|m| matches!(m.state, ReadinessState::Missing | ReadinessState::Failed))
        .filter_map(|m| m.size_bytes.map(|size| (m.model_id, size)))
        .collect();
    let to_check = before
        .models
        .iter()
        .filter(|m| artifacts.contains(&m.model_id) && m.state != ReadinessState::Ready)
        .count();
    if to_check > 0 {
        let place = if manager.config().offline {
            "the cache (offline)".to_owned()
        } else {
            manager.config().endpoint.clone()
        };
        let noun = if to_check == 1 { "model" } else { "models" };
        let to_fetch = before
            .models
            .iter()
            .filter(|m| artifacts.contains(&m.model_id))
            .filter(|m| matches!(m.state, ReadinessState::Missing | ReadinessState::Failed))
            .count();
        if to_fetch == 0 {
            // Only files on disk without a stamp: they are hashed, nothing is fetched.
            output.info(format!(
                "Verifying {to_check} {noun} found on disk but not verified yet…"
            ));
        } else {
            output.info(format!("Fetching {to_check} {noun} from {place}"));
        }
    }

    let started = Instant::now();
    let (result, tally) = track(
        manager.subscribe_progress(),
        output,
        expected,
        manager.ensure_models(&artifacts),
    )
    .await;
    if tally.lagged > 0 {
        output.detail(1, format!("{} progress events were skipped", tally.lagged));
    }

    let report = manager.readiness_report();
    let requested = artifacts.len() + builtins.len();
    let not_ready: Vec<_> = report
        .models
        .iter()
        .filter(|m| artifacts.contains(&m.model_id))
        .filter(|m| !matches!(m.state, ReadinessState::Ready | ReadinessState::Builtin))
        .collect();
    let ready = requested - not_ready.len();

    if output.chatty() {
        let elapsed = format_duration(started.elapsed());
        let which = if args.models.is_empty() {
            "models"
        } else {
            "requested models"
        };
        let headline = if to_check == 0 {
            format!("All {requested} {which} are ready; nothing to download.")
        } else if not_ready.is_empty() {
            format!("Finished in {elapsed}: all {requested} {which} are ready.")
        } else {
            format!("Finished in {elapsed}: {ready} of {requested} {which} are ready.")
        };
        let style = if not_ready.is_empty() {
            Style::Bold
        } else {
            Style::Red
        };
        output.stderr_line(&output.paint(style, headline));
        if to_check > 0 {
            for line in summary_lines(&tally, output) {
                output.stderr_line(&line);
            }
        }
    }

    let code = match result {
        Ok(()) if not_ready.is_empty() => EXIT_OK,
        Ok(()) => {
            // Each model says which file and why, never just its name.
            let reasons: Vec<String> = not_ready
                .iter()
                .map(|m| {
                    let why = m
                        .error
                        .as_deref()
                        .or(m.problem.as_deref())
                        .unwrap_or("not verified");
                    format!("{}: {why}", m.model_id.as_str())
                })
                .collect();
            output.error(&CliError::failure(format!(
                "models not ready after ensure: {}",
                reasons.join("; ")
            )));
            EXIT_FAILURE
        }
        Err(error) => {
            let code = exit_code_of(&error).max(EXIT_FAILURE);
            output.error(&CliError::from(error));
            code
        }
    };
    super::emit_report(manager, output, "ensure", code);
    Ok(code)
}
