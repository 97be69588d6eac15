//! Pipeline start-up, step 0: the models must be on disk and verified before the registry
//! opens them, as the spec's integration sketch has it; then the registry opens exactly what
//! that one manager verified (no second resolution, no second cache).

use crate::artifacts::ModelArtifactManager;
use crate::config::EmbeddingConfig;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::registry::ModelRegistry;

/// The embedding pipeline (the part of it this crate owns: its start).
#[derive(Debug)]
pub struct EmbeddingPipeline {
    registry: ModelRegistry,
}

impl EmbeddingPipeline {
    /// Ensures all models (with `auto_download`) or refuses to start while any is missing,
    /// then opens the registry on what the same artifact manager verified.
    ///
    /// Errors: `MissingModels` (without `auto_download`: run `cg-models ensure`),
    /// `DownloadsFailed` (with `auto_download`: each model's own error), `InvalidSafetensors`
    /// or `InvalidModelFile` (a verified file that cannot be used), and the manager's
    /// configuration errors (`ManifestRead`, `ManifestSyntax`, `ManifestEntry`, `Config`).
    pub async fn new(config: EmbeddingConfig) -> EmbeddingResult<Self> {
        let artifact_manager = ModelArtifactManager::new(config.artifacts.clone())?;
        Self::with_manager(config, &artifact_manager).await
    }

    /// [`new`](Self::new) with a manager the caller built from `config.artifacts` (to
    /// subscribe to its progress before step 0). A manager built from another configuration
    /// is refused with `Config`: the registry must open what this configuration names.
    pub async fn with_manager(
        config: EmbeddingConfig,
        artifact_manager: &ModelArtifactManager,
    ) -> EmbeddingResult<Self> {
        let theirs = artifact_manager.config();
        if theirs.cache_dir != config.artifacts.cache_dir
            || theirs.manifest_path != config.artifacts.manifest_path
        {
            return Err(EmbeddingError::Config(format!(
                "the artifact manager manages cache {} with manifest {}, but the pipeline's \
                 configuration names cache {} with manifest {}; build the manager from \
                 config.artifacts (or call EmbeddingPipeline::new)",
                theirs.cache_dir.display(),
                describe_manifest(theirs.manifest_path.as_deref()),
                config.artifacts.cache_dir.display(),
                describe_manifest(config.artifacts.manifest_path.as_deref()),
            )));
        }
        // Step 0: Ensure all models are available
        if config.artifacts.auto_download {
            artifact_manager.ensure_all_models().await?;
        } else {
            let report = artifact_manager.readiness_report();
            if !report.all_ready() {
                let mut missing = report.missing_models;
                missing.extend(report.failed_models.iter().map(|(m, _)| *m));
                missing.sort_by_key(|m| m.index());
                return Err(EmbeddingError::MissingModels(missing));
            }
        }

        // Step 1: Initialize ModelRegistry (models now guaranteed to exist): exactly what
        // this manager verified.
        let registry = ModelRegistry::new(config.registry.clone(), artifact_manager).await?;
        Ok(EmbeddingPipeline { registry })
    }

    /// The registry of opened models.
    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }
}

fn describe_manifest(path: Option<&std::path::Path>) -> String {
    path.map_or_else(|| "built-in".to_owned(), |p| p.display().to_string())
}
