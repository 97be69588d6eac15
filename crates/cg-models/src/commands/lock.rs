//! `cg-models lock [--force] [--output FILE]`: has the library pin the manifest from the Hub,
//! shows what was filled and what changed, refuses changed pins without `--force`, and writes
//! the result (atomically) or prints it.

use std::path::{Path, PathBuf};

use context_graph_embeddings::artifacts::{ModelArtifactManager, PinChange};
use serde_json::json;

use crate::cli::LockArgs;
use crate::failure::{CliError, EXIT_FAILURE, EXIT_OK};
use crate::output::{Mode, Output, Style};

/// Runs `lock`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &LockArgs,
) -> Result<u8, CliError> {
    if manager.config().offline {
        return Err(CliError::usage(
            "lock asks the Hub for commits and hashes, but offline mode is on (--offline or HF_HUB_OFFLINE); run it online",
        ));
    }
    if args.upgrade {
        return upgrade(manager, output, args).await;
    }
    let entries = manager.manifest().artifacts().count();
    output.info(format!(
        "Pinning {entries} manifest entries from {}…",
        manager.config().endpoint
    ));
    let outcome = manager.pin_manifest().await?;
    for change in &outcome.filled {
        show_change(output, "filled", Style::Green, change);
    }
    for change in &outcome.changed {
        show_change(output, "changed", Style::Red, change);
    }
    let text = outcome.manifest.to_json_pretty();
    let manifest_value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let report = |written: Option<&Path>| {
        json!({
            "filled": outcome.filled,
            "changed": outcome.changed,
            "written_to": written,
            "manifest": manifest_value,
        })
    };

    if !outcome.changed.is_empty() && !args.force {
        output.json("lock", &report(None));
        output.error(&CliError::failure(format!(
            "refusing to change {} pinned value(s) that the Hub now contradicts; nothing was written. \
             A commit's content never changes, so check the endpoint ({}) first; rerun with --force to accept the Hub's values",
            outcome.changed.len(),
            manager.config().endpoint
        )));
        super::emit_report(manager, output, "lock", EXIT_FAILURE);
        return Ok(EXIT_FAILURE);
    }

    let nothing_new = outcome.filled.is_empty() && outcome.changed.is_empty();
    let target: Option<PathBuf> = args
        .output
        .clone()
        .or_else(|| manager.config().manifest_path.clone());
    let written = match target {
        Some(path) if nothing_new && args.output.is_none() => {
            output.info(format!(
                "{} is already fully pinned; nothing to write.",
                path.display()
            ));
            None
        }
        Some(path) => {
            write_atomically(&path, &text)?;
            output.info(format!(
                "Wrote the pinned manifest to {} ({} filled, {} changed).",
                path.display(),
                outcome.filled.len(),
                outcome.changed.len()
            ));
            Some(path)
        }
        None => {
            if output.mode != Mode::Json {
                print!("{text}");
            }
            output.info(
                "The built-in manifest cannot be rewritten: the pinned manifest was printed to stdout \
                 (pass --output FILE to write it, then use it with --manifest FILE).",
            );
            None
        }
    };
    output.json("lock", &report(written.as_deref()));
    super::emit_report(manager, output, "lock", EXIT_OK);
    Ok(EXIT_OK)
}

/// `lock --upgrade [MODEL…]`: the named pins move to the head of their branch. The changes
/// are shown first; with `--dry-run` nothing is written.
async fn upgrade(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &LockArgs,
) -> Result<u8, CliError> {
    let (artifacts, _) = super::select_models(manager, &args.models);
    output.info(format!(
        "Upgrading {} pin(s) to the head of their branch on {}…",
        artifacts.len(),
        manager.config().endpoint
    ));
    let outcome = manager.upgrade_pins(&artifacts).await?;
    for change in outcome.filled.iter().chain(&outcome.changed) {
        show_change(output, "upgrade", Style::Yellow, change);
    }
    let text = outcome.manifest.to_json_pretty();
    let manifest_value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let nothing_new = outcome.filled.is_empty() && outcome.changed.is_empty();
    let target: Option<PathBuf> = args
        .output
        .clone()
        .or_else(|| manager.config().manifest_path.clone());
    let written = if nothing_new {
        output.info("Every pin is already at the head of its branch; nothing to write.");
        None
    } else if args.dry_run {
        output.info("Dry run: nothing was written.");
        None
    } else {
        match target {
            Some(path) => {
                write_atomically(&path, &text)?;
                output.info(format!(
                    "Wrote the upgraded manifest to {} ({} value(s) moved). Run `cg-models ensure` to fetch the new files.",
                    path.display(),
                    outcome.filled.len() + outcome.changed.len()
                ));
                Some(path)
            }
            None => {
                if output.mode != Mode::Json {
                    print!("{text}");
                }
                output.info(
                    "The built-in manifest cannot be rewritten: the upgraded manifest was printed to stdout (pass --output FILE).",
                );
                None
            }
        }
    };
    output.json(
        "lock",
        &json!({
            "upgrade": true,
            "filled": outcome.filled,
            "changed": outcome.changed,
            "written_to": written,
            "manifest": manifest_value,
        }),
    );
    super::emit_report(manager, output, "lock", EXIT_OK);
    Ok(EXIT_OK)
}

fn show_change(output: &Output, label: &str, style: Style, change: &PinChange) {
    if output.quiet || output.mode == Mode::Json {
        return;
    }
    let old = change
        .old
        .as_deref()
        .map_or_else(|| "(unknown)".to_owned(), short);
    output.stderr_line(&format!(
        "  {} {:<16} {:<10} {old} → {}",
        output.paint(style, format!("{label:<7}")),
        change.model_id.as_str(),
        change.field,
        short(&change.new)
    ));
}

/// Long hashes shortened for display (the file gets them in full).
fn short(value: &str) -> String {
    if value.len() > 16 {
        format!("{}…", value.chars().take(12).collect::<String>())
    } else {
        value.to_owned()
    }
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`, so a crash
/// never leaves a half-written manifest.
fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    let cannot = |error: std::io::Error| {
        CliError::failure(format!("cannot write {}: {error}", path.display()))
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::usage(format!("{} is not a file path", path.display())))?;
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text).map_err(cannot)?;
    std::fs::rename(&temporary, path).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        cannot(error)
    })
}
