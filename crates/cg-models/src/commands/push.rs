//! `cg-models push oci://HOST/REPO[:TAG] [MODEL…] [--image]`: have the library push the
//! verified files to a registry, and show what was sent and what the registry already had.

use context_graph_embeddings::artifacts::{ModelArtifactManager, PushOptions};

use crate::cli::PushArgs;
use crate::failure::{CliError, EXIT_OK};
use crate::output::Output;
use crate::size::format_size;

/// Runs `push`.
pub(super) async fn run(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &PushArgs,
) -> Result<u8, CliError> {
    let (artifacts, _) = super::select_models(manager, &args.models);
    if artifacts.is_empty() {
        return Err(CliError::usage(
            "none of the named models has files to push (they are computed in-process)",
        ));
    }
    output.info(format!(
        "Pushing {} model(s) to {}{}…",
        artifacts.len(),
        args.target,
        if args.image {
            " as one cache image"
        } else {
            ""
        }
    ));
    let options = PushOptions {
        image: args.image,
        ..PushOptions::default()
    };
    let report = manager
        .push_to_registry(&args.target, &artifacts, options)
        .await?;
    for model in &report.models {
        output.detail(
            1,
            format!(
                "  {:<16} {}@{} {} file(s), {}",
                model.model_id.as_str(),
                model.repo_id,
                model.commit.chars().take(12).collect::<String>(),
                model.files,
                format_size(model.bytes)
            ),
        );
    }
    for (tag, digest) in &report.tags {
        output.result_line(format!("✓ {tag} {digest}"));
    }
    output.json("push", &report);
    output.info(format!(
        "Pushed {} model(s): {} blob(s) uploaded ({}), {} already in the registry, {} mounted from another repository.",
        report.models.len(),
        report.blobs_uploaded,
        format_size(report.bytes_uploaded),
        report.blobs_present,
        report.blobs_mounted
    ));
    super::emit_report(manager, output, "push", EXIT_OK);
    Ok(EXIT_OK)
}
