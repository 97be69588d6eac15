//! `cg-models outdated [MODEL…]`: has the library compare each pin with the head of its
//! branch on the Hub and shows, per model and file, what moved. Never changes the manifest;
//! exits 3 when a pin is stale so a CI job can gate on it.

use context_graph_embeddings::artifacts::{DriftState, FileChange, ModelArtifactManager};

use crate::cli::OutdatedArgs;
use crate::failure::{CliError, EXIT_OK, EXIT_OUTDATED};
use crate::output::{Output, Style};

/// Runs `outdated`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &OutdatedArgs,
) -> Result<u8, CliError> {
    if manager.config().offline {
        return Err(CliError::usage(
            "outdated asks the Hub where each branch points, but offline mode is on (--offline or HF_HUB_OFFLINE); run it online",
        ));
    }
    let (artifacts, _) = super::select_models(manager, &args.models);
    output.info(format!(
        "Comparing {} pin(s) with their branch on {}…",
        artifacts.len(),
        manager.config().endpoint
    ));
    let drifts = manager.check_outdated(&artifacts).await?;
    output.result_line(format!(
        "{:<16} {:<9} {:<12} {:<12} {:<8} REPO",
        "MODEL", "STATE", "PINNED", "HEAD", "BRANCH"
    ));
    for drift in &drifts {
        output.json("outdated", drift);
        let (label, style) = match drift.state {
            DriftState::UpToDate => ("current", Style::Green),
            DriftState::Behind => ("behind", Style::Yellow),
            DriftState::Changed => ("changed", Style::Red),
            DriftState::Following => ("follows", Style::Dim),
        };
        let pinned = drift
            .pinned_commit
            .as_deref()
            .map_or_else(|| "(branch)".to_owned(), short);
        output.result_line(format!(
            "{:<16} {} {:<12} {:<12} {:<8} {}",
            drift.model_id.as_str(),
            output.paint_stdout(style, format!("{label:<9}")),
            pinned,
            short(&drift.head_commit),
            drift.branch,
            drift.repo_id
        ));
        for file in &drift.files {
            let what = match file.change {
                FileChange::Unchanged => continue,
                FileChange::Removed => "removed at the head".to_owned(),
                FileChange::Unknown => "not pinned; nothing to compare".to_owned(),
                FileChange::Changed => {
                    let mut parts = Vec::new();
                    if file.pinned_digest != file.head_digest {
                        parts.push(format!(
                            "{} {} → {}",
                            file.digest_kind.label(),
                            file.pinned_digest.as_deref().map_or("?".to_owned(), short),
                            file.head_digest.as_deref().map_or("?".to_owned(), short)
                        ));
                    }
                    if file.pinned_size != file.head_size {
                        parts.push(format!(
                            "size {} → {}",
                            file.pinned_size.map_or("?".to_owned(), |s| s.to_string()),
                            file.head_size.map_or("?".to_owned(), |s| s.to_string())
                        ));
                    }
                    parts.join(", ")
                }
            };
            output.result_line(format!("  {:<40} {what}", file.path));
        }
        if let Some(refused) = &drift.head_signature_refused {
            output.result_line(format!(
                "  the head's signature does not verify; `lock --upgrade` refuses it: {refused}"
            ));
        }
    }
    let stale: Vec<&str> = drifts
        .iter()
        .filter(|d| d.is_outdated() && d.head_signature_refused.is_none())
        .map(|d| d.model_id.as_str())
        .collect();
    let unsigned_heads: Vec<&str> = drifts
        .iter()
        .filter(|d| d.is_outdated() && d.head_signature_refused.is_some())
        .map(|d| d.model_id.as_str())
        .collect();
    if !unsigned_heads.is_empty() {
        output.info(format!(
            "{} head(s) whose signature does not verify under the model's policy: {}. `lock --upgrade` refuses to move the pin there.",
            unsigned_heads.len(),
            unsigned_heads.join(", ")
        ));
    }
    let code = if !unsigned_heads.is_empty() && stale.is_empty() {
        EXIT_OUTDATED
    } else if stale.is_empty() {
        output.info("Every pin is at the head of its branch.");
        EXIT_OK
    } else {
        output.info(format!(
            "{} pin(s) behind their branch: {}. `cg-models lock --upgrade {}` moves them.",
            stale.len(),
            stale.join(", "),
            stale.join(" ")
        ));
        EXIT_OUTDATED
    };
    super::emit_report(manager, output, "outdated", code);
    Ok(code)
}

/// A commit or hash shortened for the table (the JSON has them in full).
fn short(value: &str) -> String {
    value.chars().take(12).collect()
}
