//! Pipeline-level configuration: the embedding config and the model registry's config.
//!
//! There is one cache and one manifest: the artifact manager's (`EmbeddingConfig::artifacts`).
//! The registry's configuration only says what to check when opening; it cannot name a cache
//! or a manifest, so the registry can never open files other than those the manager verified.
//! Nothing here reads the process environment except the constructors called `from_env`.

use crate::artifacts::ArtifactManagerConfig;

/// Configuration of the model registry: which checks run when it opens a verified model.
///
/// It names no cache and no manifest: the registry opens exactly the files the artifact
/// manager verified ([`VerifiedModel`](crate::artifacts::VerifiedModel)). Pointing it at
/// another cache does not compile:
///
/// ```compile_fail
/// use context_graph_embeddings::ModelRegistryConfig;
/// let config = ModelRegistryConfig {
///     cache_dir: "/somewhere/else".into(),
///     ..ModelRegistryConfig::default()
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRegistryConfig {
    /// Whether safetensors headers and tensor ranges are checked when opening (reads only
    /// the header).
    pub check_safetensors: bool,
    /// Whether the model's other files are checked when opening: every `.json` file must
    /// parse, and a `tokenizer.json` must load as a tokenizer.
    pub check_files: bool,
}

impl Default for ModelRegistryConfig {
    /// Every check on. Reads no environment.
    fn default() -> Self {
        ModelRegistryConfig {
            check_safetensors: true,
            check_files: true,
        }
    }
}

/// Configuration of the embedding pipeline (the parts this crate owns).
///
/// There is deliberately no `Default`: a default would have to read the process environment
/// (`HF_HUB_CACHE`, `HF_ENDPOINT`, ...). Say which you mean: [`EmbeddingConfig::new`] with a
/// configuration you built, or [`EmbeddingConfig::from_env`].
#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    /// Model artifacts: where (the one cache), which (the one manifest), from where, and how
    /// to fetch them.
    pub artifacts: ArtifactManagerConfig,
    /// What the model registry checks when it opens the verified files.
    pub registry: ModelRegistryConfig,
}

impl EmbeddingConfig {
    /// A configuration around an artifact manager configuration, every registry check on.
    /// Reads no environment.
    pub fn new(artifacts: ArtifactManagerConfig) -> Self {
        EmbeddingConfig {
            artifacts,
            registry: ModelRegistryConfig::default(),
        }
    }

    /// [`EmbeddingConfig::new`] on [`ArtifactManagerConfig::from_env`]: the cache, endpoint,
    /// offline mode and timeouts from `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`,
    /// `HF_HUB_OFFLINE`, ... as `huggingface_hub` resolves them.
    pub fn from_env() -> Self {
        Self::new(ArtifactManagerConfig::from_env())
    }
}
