//! The model registry: opens every ready weight file before the pipeline uses it. For
//! safetensors files the header and every tensor's byte range are checked (reading only the
//! header), so a truncated or malformed file fails here, with its path, not deep in inference.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::artifacts::{ArtifactManagerConfig, ModelArtifactManager, ReadinessState, WeightFormat};
use crate::config::ModelRegistryConfig;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;
use crate::safetensors;

/// A model the registry opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisteredModel {
    /// Computed in-process.
    Builtin,
    /// A weight file.
    Weights {
        /// Its path (the snapshot path).
        path: PathBuf,
        /// Its format.
        format: WeightFormat,
        /// Its size.
        size_bytes: u64,
        /// Number of tensors (safetensors only).
        tensor_count: Option<usize>,
    },
}

/// The registry of the pipeline's twelve models.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    models: BTreeMap<ModelId, RegisteredModel>,
}

impl ModelRegistry {
    /// Opens every model of the manifest. Fails with `MissingModels` if any is not ready, and
    /// with `InvalidSafetensors` naming the file if one is malformed.
    pub async fn new(config: ModelRegistryConfig) -> EmbeddingResult<Self> {
        let artifacts = ArtifactManagerConfig {
            cache_dir: config.cache_dir.clone(),
            manifest_path: config.manifest_path.clone(),
            offline: true,
            ..ArtifactManagerConfig::from_env()
        };
        let manager = ModelArtifactManager::new(artifacts)?;
        let report = manager.readiness_report();
        if !report.all_ready() {
            let mut missing = report.missing_models.clone();
            missing.extend(report.failed_models.iter().map(|(m, _)| *m));
            return Err(EmbeddingError::MissingModels(missing));
        }
        let mut models = BTreeMap::new();
        let mut opened = Vec::new();
        for readiness in report.models {
            if readiness.state == ReadinessState::Builtin {
                models.insert(readiness.model_id, RegisteredModel::Builtin);
                continue;
            }
            let Some(path) = readiness.path else {
                return Err(EmbeddingError::MissingModels(vec![readiness.model_id]));
            };
            let format = readiness.format.unwrap_or(WeightFormat::Other);
            let check = config.check_safetensors && format == WeightFormat::Safetensors;
            opened.push(tokio::task::spawn_blocking(move || {
                let size_bytes = std::fs::metadata(&path)
                    .map_err(|e| EmbeddingError::io("cannot open", &path, e))?
                    .len();
                let tensor_count = if check {
                    Some(safetensors::check_file(&path)?.tensors.len())
                } else {
                    None
                };
                Ok::<_, EmbeddingError>((
                    readiness.model_id,
                    RegisteredModel::Weights {
                        path,
                        format,
                        size_bytes,
                        tensor_count,
                    },
                ))
            }));
        }
        for task in opened {
            let (model_id, model) = task
                .await
                .map_err(|e| EmbeddingError::Config(format!("registry task failed: {e}")))??;
            models.insert(model_id, model);
        }
        Ok(ModelRegistry { models })
    }

    /// The opened model.
    pub fn get(&self, model_id: ModelId) -> Option<&RegisteredModel> {
        self.models.get(&model_id)
    }

    /// How many models are registered.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether no model is registered.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}
