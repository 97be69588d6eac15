//! `cg-models verify [--repair]`: has the library re-hash every present file, reports each
//! result, and with `--repair` has it download again what failed.

use std::collections::HashMap;

use context_graph_embeddings::artifacts::{MetricsRecorder, ModelArtifactManager};
use context_graph_embeddings::ModelId;

use crate::cli::VerifyArgs;
use crate::failure::{CliError, EXIT_FAILURE, EXIT_OK};
use crate::output::{Output, Style};
use crate::progress::track;

/// Runs `verify`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &VerifyArgs,
    metrics: Option<&MetricsRecorder>,
) -> Result<u8, CliError> {
    let parallelism = super::status::parallelism();
    output.info(format!(
        "Re-hashing the model files on disk ({parallelism} at a time)…"
    ));
    let results = if args.models.is_empty() {
        manager.verify_present(parallelism, false).await
    } else {
        manager
            .verify_models(&args.models, parallelism, false)
            .await
    };
    let mut bad: Vec<ModelId> = Vec::new();
    let mut missing: Vec<ModelId> = Vec::new();
    for result in &results {
        output.json("verify", result);
        if let (Some(metrics), Some(_), Some(passed)) = (metrics, &result.path, result.verified) {
            metrics.record_verification(result.model_id, passed);
        }
        let (mark, style, label) = match (&result.path, result.verified) {
            (Some(_), Some(true)) => ("✓", Style::Green, "ok"),
            (Some(_), Some(false)) => ("✗", Style::Red, "CORRUPT"),
            (Some(_), None) => ("?", Style::Red, "UNCHECKED"),
            (None, _) => ("-", Style::Dim, "missing"),
        };
        match (&result.path, result.verified) {
            (Some(_), Some(true)) => {}
            (Some(_), _) => bad.push(result.model_id),
            (None, _) => missing.push(result.model_id),
        }
        let detail = match (&result.path, &result.detail) {
            (_, Some(detail)) => detail.clone(),
            (Some(path), None) => path.display().to_string(),
            (None, None) => "not on disk".to_owned(),
        };
        let head = format!(
            "{} {:<16} {}",
            output.paint_stdout(style, mark),
            result.model_id.as_str(),
            // Padded only where a column follows (pipes); trailing blanks never reach a screen.
            if output.stdout_is_terminal {
                output.paint_stdout(style, label)
            } else {
                format!("{label:<9}")
            }
        );
        if output.stdout_is_terminal {
            // On a terminal: the verdict, and only what needs reading under it.
            output.result_line(&head);
            let needs_reading = result.verified != Some(true) && result.path.is_some();
            if needs_reading || output.verbose >= 1 {
                output.result_line(output.paint_stdout(Style::Dim, format!("    {detail}")));
            }
        } else {
            output.result_line(format!("{head} {detail}"));
        }
    }
    super::warn_unrecorded_stamps(manager, output);
    if !missing.is_empty() {
        output.info(format!(
            "{} model(s) not on disk; `cg-models ensure` fetches them.",
            missing.len()
        ));
    }

    let mut still_bad = bad.clone();
    if args.repair && !bad.is_empty() {
        still_bad = repair(manager, output, &bad).await;
    }

    let code = if still_bad.is_empty() {
        let checked = results.len() - missing.len();
        if bad.is_empty() {
            output.info(format!("All {checked} file(s) on disk are intact."));
        } else {
            output.info(format!(
                "Repaired {}; all files on disk are intact now.",
                join(&bad)
            ));
        }
        EXIT_OK
    } else {
        if !args.repair {
            output.error(&CliError::failure(format!(
                "{} file(s) failed verification ({}); run `cg-models verify --repair` to download them again",
                still_bad.len(),
                join(&still_bad)
            )));
        }
        EXIT_FAILURE
    };
    super::emit_report(manager, output, "verify", code);
    Ok(code)
}

/// Downloads the bad models again, one after the other; returns those still bad.
async fn repair(manager: &ModelArtifactManager, output: &Output, bad: &[ModelId]) -> Vec<ModelId> {
    output.info(format!("Repairing {}…", join(bad)));
    let work = async {
        let mut failures = Vec::new();
        for model in bad {
            if let Err(error) = manager.download(*model).await {
                failures.push((*model, error));
            }
        }
        failures
    };
    let (failures, _) = track(manager.subscribe_progress(), output, HashMap::new(), work).await;
    let still_bad: Vec<ModelId> = failures.iter().map(|(m, _)| *m).collect();
    for (model, error) in failures {
        output.error(&CliError::failure(format!(
            "cannot repair {model}: {error}"
        )));
    }
    still_bad
}

fn join(models: &[ModelId]) -> String {
    models
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
