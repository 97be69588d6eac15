//! Pipeline start-up, step 0: the models must be on disk and verified before the registry
//! opens them, exactly as the spec's integration sketch has it.

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
    /// then builds the registry.
    pub async fn new(config: EmbeddingConfig) -> EmbeddingResult<Self> {
        // Step 0: Ensure all models are available
        let artifact_manager = ModelArtifactManager::new(config.artifacts.clone())?;

        if config.artifacts.auto_download {
            artifact_manager.ensure_all_models().await?;
        } else {
            let report = artifact_manager.readiness_report();
            if !report.missing_models.is_empty() {
                return Err(EmbeddingError::MissingModels(report.missing_models));
            }
        }

        // Step 1: Initialize ModelRegistry (models now guaranteed to exist)
        let registry = ModelRegistry::new(config.registry.clone()).await?;
        Ok(EmbeddingPipeline { registry })
    }

    /// The registry of opened models.
    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }
}
