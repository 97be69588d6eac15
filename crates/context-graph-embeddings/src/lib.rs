//! The model artifact manager of the context-graph embedding pipeline (spec M03-S13).
//!
//! It makes sure the pipeline's model files are on disk, complete and exactly right before
//! anything loads them: downloads from the Hugging Face Hub with resume and retries, SHA-256
//! verified while streaming, in the Hugging Face cache layout shared with Python tools; then
//! the model registry opens exactly the files the manager verified.
//!
//! # Start-up of an embedding service
//!
//! What to construct: one [`ArtifactManagerConfig`](artifacts::ArtifactManagerConfig) (the
//! cache folder, the manifest, the endpoint). What to call: [`ModelArtifactManager::new`],
//! optionally [`subscribe_progress`], [`ensure_all_models`], [`readiness_report`], then
//! [`EmbeddingPipeline::new`] on an [`EmbeddingConfig`] around the same configuration. This is
//! `examples/embedder.rs`, shortened (CI runs the example against the Hub emulator):
//!
//! ```no_run
//! use context_graph_embeddings::artifacts::{
//!     ArtifactManagerConfig, ModelArtifactManager, ProgressKind,
//! };
//! use context_graph_embeddings::pipeline::EmbeddingPipeline;
//! use context_graph_embeddings::registry::RegisteredModel;
//! use context_graph_embeddings::{EmbeddingConfig, ModelId};
//!
//! # async fn run() -> context_graph_embeddings::EmbeddingResult<()> {
//! // 1. Configure: cache folder, manifest, endpoint (the rest from HF_* variables).
//! let mut config = ArtifactManagerConfig::from_env();
//! config.cache_dir = "/var/cache/models/hub".into();
//! config.manifest_path = Some("/etc/embedder/models.json".into()); // None: the built-in one
//! config.endpoint = "https://huggingface.co".to_owned();
//!
//! // 2. Subscribe to progress and print it (a slow subscriber never slows a download).
//! let manager = ModelArtifactManager::new(config.clone())?;
//! let mut progress = manager.subscribe_progress();
//! let printer = tokio::spawn(async move {
//!     while let Ok(event) = progress.recv().await {
//!         if let ProgressKind::Completed { path, outcome, .. } = event.kind {
//!             println!("{}: {outcome:?} {}", event.model_id, path.display());
//!         }
//!     }
//! });
//!
//! // 3. Ensure every model, then read the readiness report (metadata only, no network).
//! manager.ensure_all_models().await?;
//! let report = manager.readiness_report();
//! println!("{} of {} models ready", report.ready_models.len(), report.models.len());
//! drop(manager);
//! let _ = printer.await;
//!
//! // 4. Start the pipeline on the same configuration: its registry opens exactly what the
//! //    manager verified, in that one cache.
//! let pipeline = EmbeddingPipeline::new(EmbeddingConfig::new(config)).await?;
//!
//! // 5. Open one model's files.
//! if let Some(RegisteredModel::Weights { path, files, tensor_count, .. }) =
//!     pipeline.registry().get(ModelId::Entity)
//! {
//!     println!("{}: {tensor_count:?} tensors, {} files", path.display(), files.len());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`ModelArtifactManager::new`]: artifacts::ModelArtifactManager::new
//! [`subscribe_progress`]: artifacts::ModelArtifactManager::subscribe_progress
//! [`ensure_all_models`]: artifacts::ModelArtifactManager::ensure_all_models
//! [`readiness_report`]: artifacts::ModelArtifactManager::readiness_report
//! [`EmbeddingPipeline::new`]: pipeline::EmbeddingPipeline::new
//!
//! There is one cache and one manifest, the artifact manager's: the registry's configuration
//! ([`ModelRegistryConfig`]) only says what to check and cannot name another cache, and the
//! registry resolves nothing itself; it opens the [`VerifiedModel`](artifacts::VerifiedModel)s
//! the manager hands it. Nothing reads the process environment unless it is called
//! `from_env` (there is no `Default` that does).
//!
//! # Errors and what to do
//!
//! Every error is an [`EmbeddingError`]; its message names the model, repo, revision and file
//! and says what to do. At start-up the ones to expect:
//!
//! | error | means | do |
//! |---|---|---|
//! | `MissingModels` | models not on disk or not verified, and `auto_download` is off (or the registry was handed unverified models) | run `cg-models ensure`, or turn `auto_download` on |
//! | `DownloadsFailed` | some downloads failed; the others completed | read each model's error below it; start again to retry (finished files are kept, partial ones resume) |
//! | `OfflineMissing` | offline mode and the file is not cached | go online once, or copy the cache from a machine that has it |
//! | `FileMissing`, `SetUnknown`, `NoDigestKnown` | a file of the set is absent, or nothing local says which files make up the set or what a file must be | run `cg-models ensure` online once, or lock the manifest (`cg-models lock`) |
//! | `ForeignEntry` | a snapshot entry or folder is a link that leaves the cache | nothing was read through it; `cg-models ensure` replaces it where the cache is writable |
//! | `GatedRepo`, `RepoNotFound`, `HubRefused` | the Hub refused (terms not accepted, private repo, bad token) | accept the terms on the repo page, give a token (`HF_TOKEN`, `hf_token`) |
//! | `RetriesExhausted`, `Network`, `IdleTimeout` | the network or server kept failing | check the connection, proxy (`HTTPS_PROXY`) or `HF_ENDPOINT`; raise `download_timeout` on slow links |
//! | `PinMismatch` | the Hub advertises another hash or size than the manifest pins | nothing was downloaded; if the Hub is right, re-pin (`cg-models lock --force`) |
//! | `HashMismatch`, `SizeMismatch` | the bytes are not the pinned ones | the file was not used; `cg-models repair` fetches it again |
//! | `InsufficientDisk`, `CacheLimitExceeded` | the batch does not fit | free space, raise `max_cache_bytes`, or point the cache elsewhere |
//! | `InvalidSafetensors` | a verified weights file is malformed (header, tensor ranges) | the repo's file itself is broken: pin another revision |
//! | `InvalidModelFile` | a `.json` file that does not parse, a `tokenizer.json` that does not load, or a file handed to the registry that is not in its snapshot folder | pin another revision; hand the registry only `verified_models()` |
//! | `ManifestRead`, `ManifestSyntax`, `ManifestEntry`, `Config` | the configuration or manifest is unusable | fix the field the message names |

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

/// The fuzz targets' entry points (`fuzzing` feature only); see [`artifacts::fuzzing`].
#[cfg(feature = "fuzzing")]
pub use artifacts::fuzzing;

pub use config::{EmbeddingConfig, ModelRegistryConfig};
pub use error::{EmbeddingError, EmbeddingResult, FileLocation, HubRefusal};
pub use model_id::ModelId;
