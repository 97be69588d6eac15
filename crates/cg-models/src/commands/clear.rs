//! `cg-models clear [MODEL…]`: has the library remove the cached files of this manifest's
//! models, after a confirmation on a terminal (or `--yes`).

use std::io::{BufRead, IsTerminal, Write};

use context_graph_embeddings::artifacts::ModelArtifactManager;
use context_graph_embeddings::ModelId;
use serde_json::json;

use crate::cli::ClearArgs;
use crate::failure::{CliError, EXIT_FAILURE, EXIT_OK};
use crate::output::Output;
use crate::size::format_size;

/// Runs `clear`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &ClearArgs,
) -> Result<u8, CliError> {
    let (artifacts, builtins) = super::select_models(manager, &args.models);
    if !args.models.is_empty() {
        for model in &builtins {
            output.info(format!("{model} is computed in-process; it has no files"));
        }
    }
    let report = manager.readiness_report();
    let on_disk: Vec<(ModelId, u64)> = report
        .models
        .iter()
        .filter(|m| artifacts.contains(&m.model_id))
        .filter(|m| m.path.is_some() || m.partial_bytes > 0)
        .map(|m| {
            let present = if m.path.is_some() {
                m.size_bytes.unwrap_or(0)
            } else {
                0
            };
            (m.model_id, present + m.partial_bytes)
        })
        .collect();
    let cache = manager.config().cache_dir.display().to_string();
    if on_disk.is_empty() {
        output.result_line(format!(
            "Nothing to clear: none of these models has files in {cache}."
        ));
        output.json("clear", &json!({ "models": [], "freed_bytes": 0 }));
        super::emit_report(manager, output, "clear", EXIT_OK);
        return Ok(EXIT_OK);
    }
    let names: Vec<&str> = on_disk.iter().map(|(m, _)| m.as_str()).collect();
    let bytes: u64 = on_disk.iter().map(|(_, b)| b).sum();
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(
                "refusing to remove model files without confirmation: stdin is not a terminal; pass --yes to confirm",
            ));
        }
        let question = format!(
            "Remove the cached files of {} model(s) ({}; about {}) from {cache}? [y/N] ",
            names.len(),
            names.join(", "),
            format_size(bytes)
        );
        if !confirm(&question).await {
            output.result_line("Cancelled; nothing was removed.");
            super::emit_report(manager, output, "clear", EXIT_FAILURE);
            return Ok(EXIT_FAILURE);
        }
    }
    let to_clear: Vec<ModelId> = on_disk.iter().map(|(m, _)| *m).collect();
    let freed = manager.clear_models(&to_clear).await?;
    output.json("clear", &json!({ "models": names, "freed_bytes": freed }));
    output.result_line(format!(
        "Removed the files of {} ({}); freed {}.",
        names.join(", "),
        if names.len() == 1 {
            "1 model".to_owned()
        } else {
            format!("{} models", names.len())
        },
        format_size(freed)
    ));
    super::emit_report(manager, output, "clear", EXIT_OK);
    Ok(EXIT_OK)
}

/// Asks on stderr, reads one line from stdin; only `y` or `yes` confirms. The read runs on a
/// blocking thread so Ctrl-C still interrupts at the prompt.
async fn confirm(question: &str) -> bool {
    let mut err = std::io::stderr().lock();
    if write!(err, "{question}")
        .and_then(|()| err.flush())
        .is_err()
    {
        return false;
    }
    drop(err);
    let answer = tokio::task::spawn_blocking(|| {
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map(|_| answer)
    })
    .await;
    match answer {
        Ok(Ok(answer)) => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        _ => false,
    }
}
