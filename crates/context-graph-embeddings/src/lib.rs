//! The model artifact manager of the context-graph embedding pipeline (spec M03-S13).
//!
//! It makes sure the pipeline's model weight files are on disk, complete and exactly right
//! before anything loads them: downloads from the Hugging Face Hub with resume and retries,
//! SHA-256 verified while streaming, in the Hugging Face cache layout shared with Python tools.
//!
//! ```no_run
//! use context_graph_embeddings::artifacts::{ArtifactManagerConfig, ModelArtifactManager};
//!
//! # async fn run() -> context_graph_embeddings::EmbeddingResult<()> {
//! let manager = ModelArtifactManager::new(ArtifactManagerConfig::from_env())?;
//! manager.ensure_all_models().await?;
//! let report = manager.readiness_report();
//! assert!(report.all_ready());
//! for model in &report.models {
//!     println!("{}: {:?} at {:?}", model.model_id, model.state, model.path);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The pipeline's start ([`pipeline::EmbeddingPipeline::new`]) does step 0 for you: with
//! `auto_download` it ensures every model, else it refuses to start while any is missing.

// Errors carry repo, revision, file, expected and actual values; they are rare, so their size
// on the error path is a fair price for messages that say what to do.
#![allow(clippy::result_large_err)]

pub mod artifacts;
pub mod config;
pub mod error;
pub mod model_id;
pub mod pipeline;
pub mod registry;
pub mod safetensors;

pub use config::{EmbeddingConfig, ModelRegistryConfig};
pub use error::{EmbeddingError, EmbeddingResult, FileLocation, HubRefusal};
pub use model_id::ModelId;
