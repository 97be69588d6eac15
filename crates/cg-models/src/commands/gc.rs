//! `cg-models gc --max-size SIZE`: has the library evict least recently used blobs until the
//! cache fits, and prints what goes and what it frees.

use context_graph_embeddings::artifacts::ModelArtifactManager;

use crate::cli::GcArgs;
use crate::failure::{CliError, EXIT_OK};
use crate::output::{format_timestamp, Output, Style};
use crate::size::format_size;

/// Runs `gc`; `default_max` is the global `--max-cache-size`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &GcArgs,
    default_max: Option<u64>,
) -> Result<u8, CliError> {
    let max = args.max_size.or(default_max).ok_or_else(|| {
        CliError::usage("gc needs a target size: pass --max-size SIZE (e.g. --max-size 20GiB)")
    })?;
    let report = manager
        .collect_garbage(max, args.include_manifest, args.dry_run)
        .await?;
    output.json("gc", &report);
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for candidate in &report.removed {
        let name: String = candidate.blob_name.chars().take(16).collect();
        let partial = if candidate.partial {
            " (partial download)"
        } else {
            ""
        };
        output.result_line(format!(
            "{} {:>8}  {}/blobs/{name}…{partial}  last used {}",
            output.paint_stdout(Style::Yellow, verb),
            format_size(candidate.bytes),
            candidate.repo_folder,
            format_timestamp(candidate.last_used)
        ));
    }
    let limit = format_size(max);
    let summary = if report.removed.is_empty() && report.size_before > max {
        format!(
            "Nothing can be evicted: the cache holds {}.",
            format_size(report.size_before)
        )
    } else if report.removed.is_empty() {
        format!(
            "Nothing to evict: the cache holds {}, within the {limit} limit.",
            format_size(report.size_before)
        )
    } else if args.dry_run {
        format!(
            "Would free {} in {} file(s): {} → {} (limit {limit}). Run without --dry-run to evict.",
            format_size(report.freed_bytes),
            report.removed.len(),
            format_size(report.size_before),
            format_size(report.size_after)
        )
    } else {
        format!(
            "Freed {} in {} file(s): {} → {} (limit {limit}).",
            format_size(report.freed_bytes),
            report.removed.len(),
            format_size(report.size_before),
            format_size(report.size_after)
        )
    };
    output.result_line(summary);
    if report.size_after > max {
        let hint = if args.include_manifest {
            "the remaining files are in use (locked or metadata)".to_owned()
        } else {
            "the rest is needed by the manifest; add --include-manifest to evict those files too (ensure downloads them again)".to_owned()
        };
        output.warn(format!(
            "the cache is still {} over the {limit} limit: {hint}",
            format_size(report.size_after - max)
        ));
    }
    super::emit_report(manager, output, "gc", EXIT_OK);
    Ok(EXIT_OK)
}
