//! `cg-models export FILE [MODEL…]` and `cg-models import FILE`: have the library write the
//! verified files into one bundle, or verify and place a bundle's files, and show what was
//! done.

use context_graph_embeddings::artifacts::ModelArtifactManager;

use crate::cli::{ExportArgs, ImportArgs};
use crate::failure::{CliError, EXIT_OK};
use crate::output::Output;
use crate::size::format_size;

/// Runs `export`.
pub(super) async fn export(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &ExportArgs,
) -> Result<u8, CliError> {
    let (artifacts, _) = super::select_models(manager, &args.models);
    if artifacts.is_empty() {
        return Err(CliError::usage(
            "none of the named models has files to export (they are computed in-process)",
        ));
    }
    output.info(format!(
        "Exporting {} model(s) to {}…",
        artifacts.len(),
        args.file.display()
    ));
    let export = manager.export_bundle(&args.file, &artifacts).await?;
    for file in &export.files {
        output.detail(
            1,
            format!(
                "  {:<16} {} {} ({})",
                file.model_id.as_str(),
                file.repo_id,
                file.path,
                format_size(file.size)
            ),
        );
    }
    output.json("export", &export);
    output.info(format!(
        "Wrote {} file(s), {}, to {}. On the other machine: cg-models import {}",
        export.files.len(),
        format_size(export.content_bytes),
        export.path.display(),
        export.path.display()
    ));
    super::emit_report(manager, output, "export", EXIT_OK);
    Ok(EXIT_OK)
}

/// Runs `import`.
pub(super) async fn import(
    manager: &ModelArtifactManager,
    output: &Output,
    args: &ImportArgs,
) -> Result<u8, CliError> {
    output.info(format!(
        "Importing {} into {} (every byte verified before it is placed)…",
        args.file.display(),
        manager.config().cache_dir.display()
    ));
    let import = manager.import_bundle(&args.file).await?;
    for file in &import.files {
        output.result_line(format!(
            "✓ {:<16} {}@{} {}",
            file.model_id.as_str(),
            file.repo_id,
            file.commit.chars().take(12).collect::<String>(),
            file.path
        ));
    }
    output.json("import", &import);
    let kept = if import.skipped_blobs > 0 {
        format!(
            " ({} already verified in the cache, kept)",
            import.skipped_blobs
        )
    } else {
        String::new()
    };
    output.info(format!(
        "Imported {} file(s), {} written{kept}.",
        import.files.len(),
        format_size(import.bytes_written)
    ));
    super::emit_report(manager, output, "import", EXIT_OK);
    Ok(EXIT_OK)
}
