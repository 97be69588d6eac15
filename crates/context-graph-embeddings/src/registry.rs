//! The model registry: opens exactly the files the artifact manager verified, before the
//! pipeline uses them, and proves cheaply that they can be used.
//!
//! It is handed [`VerifiedModel`]s (by [`ModelRegistry::new`] from the manager itself, or by
//! the caller through [`ModelRegistry::from_verified`]); it resolves nothing on its own and has
//! no cache or manifest of its own, so it cannot disagree with the manager. For each model:
//! safetensors weights get their header and every tensor's byte range checked (reading only
//! the header; for a sharded model every shard, and the index's tensor map against them),
//! every `.json` file must parse, a `tokenizer.json` must load as a tokenizer
//! (the `tokenizers` crate, no network, no native code), and pickle weights (`.bin`, `.pt`) are
//! reported as [`WeightFormat::PytorchPickle`]: only their checksum vouches for them. A broken
//! file fails here, with its path, not deep in inference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::artifacts::{ModelArtifactManager, VerifiedModel, WeightFormat};
use crate::config::ModelRegistryConfig;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;
use crate::safetensors::{self, SafetensorsSummary};

/// What the registry learnt from a model's `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerInfo {
    /// The file.
    pub path: PathBuf,
    /// Vocabulary size, added tokens included.
    pub vocab_size: usize,
}

/// A model the registry opened.
#[derive(Debug, Clone, PartialEq, Eq)]
// One value per model, built once at start-up: its size does not matter, boxing would only
// make matching on it clumsier.
#[allow(clippy::large_enum_variant)]
pub enum RegisteredModel {
    /// Computed in-process.
    Builtin,
    /// Verified files.
    Weights {
        /// The weights file (the snapshot path).
        path: PathBuf,
        /// Its format (`PytorchPickle`: only the checksum vouches for it; loading it with
        /// PyTorch can run code).
        format: WeightFormat,
        /// Its size.
        size_bytes: u64,
        /// Number of tensors (checked safetensors only).
        tensor_count: Option<usize>,
        /// The tensors: names, dtypes, shapes, byte ranges (checked safetensors only).
        safetensors: Option<SafetensorsSummary>,
        /// The snapshot folder the files are in.
        snapshot_dir: PathBuf,
        /// Every verified file of the model, weights first.
        files: Vec<PathBuf>,
        /// The `.json` files among them that were parsed.
        json_files: Vec<PathBuf>,
        /// The loaded `tokenizer.json`, if the model has one among its files.
        tokenizer: Option<TokenizerInfo>,
    },
}

/// The registry of the pipeline's twelve models.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    models: BTreeMap<ModelId, RegisteredModel>,
}

impl ModelRegistry {
    /// Opens every model of `manager`'s manifest from what that manager verified (built-ins
    /// are registered as such). Fails with `MissingModels` naming every model that is not
    /// verified (run `ensure_all_models` first, as [`EmbeddingPipeline::new`] does), and as
    /// [`from_verified`](Self::from_verified) does for a file that cannot be used.
    ///
    /// [`EmbeddingPipeline::new`]: crate::pipeline::EmbeddingPipeline::new
    pub async fn new(
        config: ModelRegistryConfig,
        manager: &ModelArtifactManager,
    ) -> EmbeddingResult<Self> {
        let verified = manager.verified_models().await?;
        let builtins: Vec<ModelId> = manager.manifest().builtins().collect();
        Self::from_verified(config, &builtins, verified).await
    }

    /// Opens exactly `verified` (from [`ModelArtifactManager::verified_models`] or
    /// [`ModelArtifactManager::verified_model`]) and registers `builtins`. Every file must lie
    /// in its model's snapshot folder of a Hugging Face cache and the weights must be among the
    /// files, else `InvalidModelFile` says so; a malformed safetensors file is
    /// `InvalidSafetensors`; a `.json` file that does not parse or a `tokenizer.json` that does
    /// not load is `InvalidModelFile`, naming the file.
    pub async fn from_verified(
        config: ModelRegistryConfig,
        builtins: &[ModelId],
        verified: Vec<VerifiedModel>,
    ) -> EmbeddingResult<Self> {
        let mut models: BTreeMap<ModelId, RegisteredModel> = builtins
            .iter()
            .map(|id| (*id, RegisteredModel::Builtin))
            .collect();
        let mut opened = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for model in verified {
            if models.contains_key(&model.model_id) || !seen.insert(model.model_id) {
                return Err(EmbeddingError::Config(format!(
                    "model {} was handed to the registry twice",
                    model.model_id
                )));
            }
            check_placement(&model)?;
            let config = config.clone();
            opened.push(tokio::task::spawn_blocking(move || open(&config, model)));
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

    /// Every registered model, in model order.
    pub fn iter(&self) -> impl Iterator<Item = (ModelId, &RegisteredModel)> {
        self.models.iter().map(|(id, m)| (*id, m))
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

/// Refuses a handed model whose files are not where a verified model's files are: inside its
/// snapshot folder (`.../models--org--name/snapshots/<commit>`), weights among them.
fn check_placement(model: &VerifiedModel) -> EmbeddingResult<()> {
    let refuse = |path: &Path, why: String| EmbeddingError::InvalidModelFile {
        model_id: model.model_id,
        path: path.to_path_buf(),
        reason: format!(
            "{why}; the registry opens only what the artifact manager verified: hand it \
             ModelArtifactManager::verified_models() of the manager that ensured the models \
             (EmbeddingPipeline::new does)"
        ),
    };
    let dir = &model.snapshot_dir;
    let is_snapshot_dir = dir.is_absolute()
        && dir
            .parent()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        && dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with("models--"));
    if !is_snapshot_dir {
        return Err(refuse(
            dir,
            "this is not a snapshot folder of a Hugging Face cache \
             (<cache>/models--org--name/snapshots/<commit>)"
                .to_owned(),
        ));
    }
    if !model.files.contains(&model.weights) {
        return Err(refuse(
            &model.weights,
            "the weights file is not among the model's verified files".to_owned(),
        ));
    }
    for file in &model.files {
        let inside = file.strip_prefix(dir).is_ok_and(|rest| {
            rest.components().next().is_some()
                && rest
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        });
        if !inside {
            return Err(refuse(
                file,
                format!(
                    "the file is not inside the model's snapshot folder {}",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Opens one verified model (blocking).
fn open(
    config: &ModelRegistryConfig,
    model: VerifiedModel,
) -> EmbeddingResult<(ModelId, RegisteredModel)> {
    let path = model.weights.clone();
    let size_bytes = std::fs::metadata(&path)
        .map_err(|e| EmbeddingError::io("cannot open", &path, e))?
        .len();
    let summary = match model.format {
        WeightFormat::Safetensors if config.check_safetensors => {
            Some(safetensors::check_file(&path)?)
        }
        WeightFormat::ShardedSafetensors if config.check_safetensors => {
            Some(safetensors::check_sharded(&path, &model.files)?)
        }
        _ => None,
    };
    let mut json_files = Vec::new();
    let mut tokenizer = None;
    if config.check_files {
        for file in &model.files {
            let is_json = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            if !is_json {
                continue;
            }
            let invalid = |reason: String| EmbeddingError::InvalidModelFile {
                model_id: model.model_id,
                path: file.clone(),
                reason,
            };
            let bytes =
                std::fs::read(file).map_err(|e| EmbeddingError::io("cannot read", file, e))?;
            check_json(&bytes).map_err(invalid)?;
            json_files.push(file.clone());
            if file.file_name().is_some_and(|n| n == "tokenizer.json") {
                let vocab_size = load_tokenizer(&bytes).map_err(invalid)?;
                tokenizer = Some(TokenizerInfo {
                    path: file.clone(),
                    vocab_size,
                });
            }
        }
    }
    Ok((
        model.model_id,
        RegisteredModel::Weights {
            path,
            format: model.format,
            size_bytes,
            tensor_count: summary.as_ref().map(|s| s.tensors.len()),
            safetensors: summary,
            snapshot_dir: model.snapshot_dir,
            files: model.files,
            json_files,
            tokenizer,
        },
    ))
}

/// Whether `bytes` are one JSON value; the parser's message if not.
pub fn check_json(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "not valid JSON ({e}); the file passed its checksum, so the repo's file itself is \
                 broken: pin another revision"
            )
        })
}

/// Loads `bytes` as a Hugging Face `tokenizer.json` (the `tokenizers` crate) and tokenizes a
/// probe sentence; the vocabulary size, or why it does not load.
pub fn load_tokenizer(bytes: &[u8]) -> Result<usize, String> {
    let tokenizer = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
        format!(
            "not a loadable tokenizer ({e}); the file passed its checksum, so the repo's file \
             itself is broken or of a format this build does not know: pin another revision"
        )
    })?;
    tokenizer
        .encode("The registry opens exactly what was verified.", true)
        .map_err(|e| format!("the tokenizer loads but cannot tokenize: {e}"))?;
    Ok(tokenizer.get_vocab_size(true))
}
