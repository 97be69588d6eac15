//! `cg-models status`: the library's readiness report as a table (or JSON), after hashing
//! once any file that is present but was never verified here; exit 1 when a model is not
//! ready, so it serves as a container readiness check. Works on a read-only cache: files
//! without a stamp are hashed every time (one notice says so), files with one are not.

use std::path::Path;

use context_graph_embeddings::artifacts::{
    DigestKind, FileReadiness, HashSource, ModelArtifactManager, ModelReadiness, ReadinessState,
};

use crate::failure::{CliError, EXIT_FAILURE, EXIT_OK};
use crate::output::{Output, Style};
use crate::progress::truncate;
use crate::size::format_size;

/// Runs `status`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    files: bool,
) -> Result<u8, CliError> {
    let files = files || output.verbose >= 1;
    let before = manager.readiness_report();
    let unverified = before
        .models
        .iter()
        .filter(|m| m.state == ReadinessState::Unverified)
        .count();
    if unverified > 0 {
        output.info(format!(
            "Verifying {unverified} file(s) found on disk but not verified yet…"
        ));
        let outcomes = manager.verify_present(parallelism(), true).await;
        // Only a digest that was computed and differs is a warning here; a file that is
        // missing or cannot be checked shows in the model's row below, with its reason.
        for outcome in outcomes.iter().filter(|o| o.verified == Some(false)) {
            output.warn(format!(
                "{}: {}",
                outcome.model_id,
                outcome
                    .detail
                    .as_deref()
                    .unwrap_or("a file of the set is corrupt")
            ));
        }
    }
    let report = manager.readiness_report();
    print_table(manager, output, &report.models, files);
    super::warn_unrecorded_stamps(manager, output);

    let not_ready = report
        .models
        .iter()
        .filter(|m| !matches!(m.state, ReadinessState::Ready | ReadinessState::Builtin))
        .count();
    let (files_ready, files_total) =
        report
            .models
            .iter()
            .flat_map(|m| &m.files)
            .fold((0, 0), |(ready, total), f| {
                (
                    ready + usize::from(f.state == ReadinessState::Ready),
                    total + 1,
                )
            });
    let code = if not_ready == 0 {
        output.info(format!(
            "All {} models are ready ({files_ready} of {files_total} files verified).",
            report.models.len()
        ));
        EXIT_OK
    } else {
        output.info(format!(
            "{not_ready} of {} models are not ready ({files_ready} of {files_total} known files verified); run `cg-models ensure` to fetch them.",
            report.models.len(),
        ));
        EXIT_FAILURE
    };
    super::emit_report(manager, output, "status", code);
    Ok(code)
}

/// How many files are hashed at once: one per core.
pub(super) fn parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn print_table(
    manager: &ModelArtifactManager,
    output: &Output,
    models: &[ModelReadiness],
    files: bool,
) {
    let cache = &manager.config().cache_dir;
    output.result_line(format!(
        "{} {}  {} {}",
        output.paint_stdout(Style::Bold, "Cache:"),
        cache.display(),
        output.paint_stdout(Style::Bold, "Manifest:"),
        manager.manifest().origin
    ));
    // On a terminal the path or error goes on a line of its own under each row.
    let last_column = if output.stdout_is_terminal {
        ""
    } else {
        "PATH / ERROR"
    };
    let header = format!(
        "{:<18} {:<10} {:>8}  {:<12}  {:<21}  {last_column}",
        "MODEL", "STATE", "SIZE", "REVISION", "SHA-256"
    );
    output.result_line(output.paint_stdout(Style::Bold, header.trim_end()));
    for model in models {
        let (state, style) = state_label(model);
        let size = model.size_bytes.map(format_size).unwrap_or_else(|| {
            if model.state == ReadinessState::Builtin {
                "-"
            } else {
                "?"
            }
            .to_owned()
        });
        let revision = model
            .commit
            .as_deref()
            .or(model.revision.as_deref())
            .map_or_else(|| "-".to_owned(), |r| short(r, 12));
        let hash = match (&model.expected_sha256, model.hash_source) {
            (Some(sha), HashSource::Pinned) => format!("{} pinned", short(sha, 12)),
            (Some(sha), HashSource::HubAdvertised) => format!("{} hub", short(sha, 12)),
            _ if model.state == ReadinessState::Builtin => "-".to_owned(),
            _ => "unknown".to_owned(),
        };
        let location = location_text(model, cache);
        let row = format!(
            "{:<18} {} {:>8}  {:<12}  {:<21}",
            model.model_id.as_str(),
            output.paint_stdout(style, format!("{state:<10}")),
            size,
            revision,
            hash,
        );
        if output.stdout_is_terminal {
            // On a terminal the long part goes on its own line, so rows stay readable.
            output.result_line(row.trim_end());
            if model.state != ReadinessState::Builtin {
                output.result_line(output.paint_stdout(Style::Dim, format!("    {location}")));
            }
        } else {
            output.result_line(format!("{row}  {location}").trim_end());
        }
        if files && model.state != ReadinessState::Builtin {
            print_files(output, model);
        }
    }
}

/// One indented row per file of a model's set.
fn print_files(output: &Output, model: &ModelReadiness) {
    for file in &model.files {
        output.result_line(file_row(file).trim_end());
    }
    if !model.refs.is_empty() {
        let names: Vec<String> = model
            .refs
            .iter()
            .map(|r| {
                if r.len() == 40 {
                    format!("{}… (the commit)", short(r, 12))
                } else {
                    r.clone()
                }
            })
            .collect();
        output.result_line(format!("    (refs: {})", names.join(", ")));
    }
    if let Some(signer) = &model.signer {
        output.result_line(format!("    (signed by {signer})"));
    }
    match model.set_origin {
        Some(origin) => output.result_line(format!("    (file list: {})", origin.describe())),
        None => output.result_line(
            "    (the rest of the set is resolved from the Hub's file list at `ensure`)",
        ),
    }
}

fn file_row(file: &FileReadiness) -> String {
    let state = match file.state {
        ReadinessState::Ready => "ready",
        ReadinessState::Unverified => "unverified",
        _ => "missing",
    };
    let size = file.size_bytes.map_or_else(|| "?".to_owned(), format_size);
    let digest = match (&file.expected_digest, file.digest_kind) {
        (Some(d), Some(DigestKind::Sha256)) => format!("sha256 {}", short(d, 12)),
        (Some(d), Some(DigestKind::GitBlobSha1)) => format!("git-sha1 {}", short(d, 12)),
        _ => "unknown".to_owned(),
    };
    let row = format!("    {:<36} {state:<10} {size:>8}  {digest}", file.path);
    match (&file.problem, file.state) {
        (Some(problem), ReadinessState::Missing) if problem.contains("link") => {
            format!("{row}  {problem}")
        }
        _ => row,
    }
}

fn state_label(model: &ModelReadiness) -> (String, Style) {
    match model.state {
        ReadinessState::Builtin => ("builtin".to_owned(), Style::Dim),
        ReadinessState::Ready => ("ready".to_owned(), Style::Green),
        ReadinessState::Unverified => ("unverified".to_owned(), Style::Yellow),
        ReadinessState::Missing if model.partial_bytes > 0 => ("partial".to_owned(), Style::Yellow),
        ReadinessState::Missing => ("missing".to_owned(), Style::Yellow),
        ReadinessState::Failed => ("failed".to_owned(), Style::Red),
    }
}

fn location_text(model: &ModelReadiness, cache: &Path) -> String {
    if let Some(error) = &model.error {
        return format!("error: {}", truncate(error, 300));
    }
    if let (Some(problem), Some(_)) = (&model.problem, &model.commit) {
        if model.state != ReadinessState::Ready {
            return format!("not ready: {}", truncate(problem, 300));
        }
    }
    match (&model.path, model.state) {
        (Some(path), _) => match model.source.as_deref() {
            Some(source) if source.starts_with("s3://") => {
                format!("{} (from {source})", path.display())
            }
            _ => path.display().to_string(),
        },
        (None, ReadinessState::Builtin) => "computed in-process".to_owned(),
        (None, ReadinessState::Missing) if model.partial_bytes > 0 => format!(
            "{} downloaded so far in {}",
            format_size(model.partial_bytes),
            cache.display()
        ),
        (None, _) => format!(
            "{}/{}",
            model.repo_id.as_deref().unwrap_or("?"),
            model.filename.as_deref().unwrap_or("?")
        ),
    }
}

fn short(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}
