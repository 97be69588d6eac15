//! Pipeline-level configuration: the embedding config and the model registry's config.

use std::path::PathBuf;

use crate::artifacts::ArtifactManagerConfig;

/// Configuration of the model registry.
#[derive(Debug, Clone)]
pub struct ModelRegistryConfig {
    /// The hub cache the weight files are in.
    pub cache_dir: PathBuf,
    /// The manifest naming the files (`None`: the embedded one).
    pub manifest_path: Option<PathBuf>,
    /// Whether safetensors headers and tensor ranges are checked when opening.
    pub check_safetensors: bool,
}

impl ModelRegistryConfig {
    /// A registry configuration reading the files `artifacts` manages.
    pub fn for_artifacts(artifacts: &ArtifactManagerConfig) -> Self {
        ModelRegistryConfig {
            cache_dir: artifacts.cache_dir.clone(),
            manifest_path: artifacts.manifest_path.clone(),
            check_safetensors: true,
        }
    }
}

/// Configuration of the embedding pipeline (the parts this crate owns).
#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    /// Model artifacts: where, from where, and how to fetch them.
    pub artifacts: ArtifactManagerConfig,
    /// The model registry.
    pub registry: ModelRegistryConfig,
}

impl EmbeddingConfig {
    /// A configuration whose registry reads what `artifacts` manages.
    pub fn new(artifacts: ArtifactManagerConfig) -> Self {
        let registry = ModelRegistryConfig::for_artifacts(&artifacts);
        EmbeddingConfig {
            artifacts,
            registry,
        }
    }
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self::new(ArtifactManagerConfig::from_env())
    }
}
