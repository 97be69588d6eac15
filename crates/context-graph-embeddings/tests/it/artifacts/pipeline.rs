//! Pipeline start-up: step 0 then the registry.

use context_graph_embeddings::artifacts::{ModelArtifactManager, WeightFormat};
use context_graph_embeddings::pipeline::EmbeddingPipeline;
use context_graph_embeddings::registry::{ModelRegistry, RegisteredModel};
use context_graph_embeddings::{EmbeddingConfig, EmbeddingError, ModelId, ModelRegistryConfig};

use crate::support::{model, Fixture};

#[tokio::test]
async fn without_auto_download_missing_models_are_named() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 10_000, true),
        model(ModelId::Causal, 10_000, false),
    ]);
    let mut config = EmbeddingConfig::new(fx.config());
    config.artifacts.auto_download = false;
    let error = EmbeddingPipeline::new(config).await.unwrap_err();
    match &error {
        EmbeddingError::MissingModels(models) => {
            assert_eq!(models, &[ModelId::Causal, ModelId::Entity])
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("cg-models ensure"), "{error}");
    assert!(fx.hub.requests().is_empty());
}

#[tokio::test]
async fn with_auto_download_the_models_are_ensured_then_registered() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 50_000, true),
        model(ModelId::Causal, 40_000, false),
    ]);
    let config = EmbeddingConfig::new(fx.config());
    let pipeline = EmbeddingPipeline::new(config).await.unwrap();
    let registry = pipeline.registry();
    assert_eq!(registry.len(), 12);
    assert_eq!(registry.get(ModelId::Hdc), Some(&RegisteredModel::Builtin));
    match registry.get(ModelId::Entity) {
        Some(RegisteredModel::Weights {
            tensor_count: Some(n),
            size_bytes,
            ..
        }) => {
            assert!(*n > 0);
            assert_eq!(*size_bytes, 50_000);
        }
        other => panic!("{other:?}"),
    }
    // The pickle file gets no safetensors check, but is registered, reported as pickle.
    assert!(matches!(
        registry.get(ModelId::Causal),
        Some(RegisteredModel::Weights {
            tensor_count: None,
            safetensors: None,
            format: WeightFormat::PytorchPickle,
            ..
        })
    ));
}

#[tokio::test]
async fn a_malformed_safetensors_file_stops_the_registry() {
    let fx = Fixture::new(&[model(ModelId::Entity, 50_000, false)]);
    let bad = b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage".to_vec();
    fx.hub
        .set_file(&fx.file(ModelId::Entity).repo_id, "model.safetensors", bad);
    // Follow the branch, not the fixed commit, to get the new bytes.
    fx.write_manifest(|_, entry| entry["revision"] = "main".into());
    let config = EmbeddingConfig::new(fx.config());
    let error = EmbeddingPipeline::new(config).await.unwrap_err();
    assert!(
        matches!(error, EmbeddingError::InvalidSafetensors { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("header length"), "{error}");
}

/// The program of issue 16, written the obvious way: configure, ensure, read the report, then
/// start the pipeline on an `EmbeddingConfig` whose `artifacts` is that same configuration
/// (the rest from the environment). The registry opens the files in that cache, and starting
/// it downloads nothing again.
#[tokio::test]
async fn the_obvious_program_starts_the_pipeline_after_ensure() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 30_000, true),
        model(ModelId::Graph, 20_000, false),
    ]);
    let config = fx.config();
    let manager = ModelArtifactManager::new(config.clone()).unwrap();
    manager.ensure_all_models().await.unwrap();
    let report = manager.readiness_report();
    assert!(report.all_ready(), "{report:?}");
    assert_eq!(report.ready_models.len(), 12);
    let downloads = fx.hub.requests().len();

    let pipeline = EmbeddingPipeline::new(EmbeddingConfig {
        artifacts: config.clone(),
        ..EmbeddingConfig::from_env()
    })
    .await
    .unwrap();
    let registry = pipeline.registry();
    assert_eq!(registry.len(), 12);
    for id in [ModelId::Entity, ModelId::Graph] {
        let verified = manager.verified_model(id).expect("verified");
        match registry.get(id) {
            Some(RegisteredModel::Weights {
                path,
                snapshot_dir,
                files,
                format,
                ..
            }) => {
                assert_eq!(path, &fx.snapshot_path(id));
                assert!(path.starts_with(&config.cache_dir), "{}", path.display());
                assert_eq!(path, &verified.weights);
                assert_eq!(snapshot_dir, &verified.snapshot_dir);
                assert_eq!(files, &verified.files);
                assert_eq!(*format, WeightFormat::Safetensors);
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(
        fx.hub.requests().len(),
        downloads,
        "starting the pipeline after ensure asked the Hub again"
    );
}

/// A manager of one cache and a pipeline configuration naming another: refused, saying both.
#[tokio::test]
async fn a_manager_of_another_cache_is_refused_with_the_reason() {
    let fx = Fixture::new(&[model(ModelId::Entity, 10_000, true)]);
    let manager = fx.manager();
    let mut other = fx.config();
    other.cache_dir = fx.dir.path().join("another-cache");
    let error = EmbeddingPipeline::with_manager(EmbeddingConfig::new(other.clone()), &manager)
        .await
        .unwrap_err();
    assert!(matches!(error, EmbeddingError::Config(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains(&fx.cache_dir().display().to_string())
            && text.contains(&other.cache_dir.display().to_string())
            && text.contains("build the manager from config.artifacts"),
        "{text}"
    );
    assert!(fx.hub.requests().is_empty(), "refused before any request");
    assert!(!other.cache_dir.exists());
    // The same manager with its own configuration starts.
    let pipeline = EmbeddingPipeline::with_manager(EmbeddingConfig::new(fx.config()), &manager)
        .await
        .unwrap();
    assert_eq!(pipeline.registry().len(), 12);
}

/// The registry opens only verified files: a file outside the model's snapshot folder, or a
/// snapshot folder that is not in a cache, is refused with the reason.
#[tokio::test]
async fn the_registry_refuses_files_outside_the_verified_snapshot() {
    let fx = Fixture::new(&[model(ModelId::Entity, 10_000, true)]);
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    let verified = manager.verified_model(ModelId::Entity).unwrap();
    assert_eq!(verified.files, vec![verified.weights.clone()]);
    assert_eq!(
        verified.weights.parent(),
        Some(verified.snapshot_dir.as_path())
    );

    let elsewhere = fx.dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, "{}").unwrap();
    let mut foreign = verified.clone();
    foreign.files.push(elsewhere.clone());
    let escaping = verified.snapshot_dir.join("../../blobs/x.json");
    let mut dotdot = verified.clone();
    dotdot.files.push(escaping);
    let mut not_a_cache = verified.clone();
    not_a_cache.snapshot_dir = fx.dir.path().to_path_buf();
    let mut weights_not_listed = verified.clone();
    weights_not_listed.files.clear();
    for (bad, needle) in [
        (foreign, "not inside the model's snapshot folder"),
        (dotdot, "not inside the model's snapshot folder"),
        (not_a_cache, "not a snapshot folder of a Hugging Face cache"),
        (weights_not_listed, "not among the model's verified files"),
    ] {
        let error = ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![bad])
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(
                error,
                EmbeddingError::InvalidModelFile {
                    model_id: ModelId::Entity,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            text.contains(needle) && text.contains("verified_models()"),
            "{text}"
        );
    }
    let registry =
        ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![verified])
            .await
            .unwrap();
    assert_eq!(registry.len(), 1);
}

/// Companion files handed with a model: every `.json` parses and `tokenizer.json` loads as a
/// tokenizer; a broken one is refused naming the file.
#[tokio::test]
async fn json_files_parse_and_the_tokenizer_loads() {
    let fx = Fixture::new(&[model(ModelId::Entity, 10_000, true)]);
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    let mut verified = manager.verified_model(ModelId::Entity).unwrap();
    // Until file sets fetch them, put the companions beside the weights by hand.
    for (name, bytes) in hub_emulator::synth::companion_files("test-org/entity") {
        if name == "tokenizer.json" || name == "1_Pooling/config.json" || name == "vocab.txt" {
            let path = verified.snapshot_dir.join(&name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            verified.files.push(path);
        }
    }
    let registry =
        ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![verified.clone()])
            .await
            .unwrap();
    match registry.get(ModelId::Entity) {
        Some(RegisteredModel::Weights {
            json_files,
            tokenizer: Some(tokenizer),
            ..
        }) => {
            assert_eq!(json_files.len(), 2, "{json_files:?}");
            assert_eq!(tokenizer.path, verified.snapshot_dir.join("tokenizer.json"));
            assert!(tokenizer.vocab_size > 10, "{tokenizer:?}");
        }
        other => panic!("{other:?}"),
    }

    let pooling = verified.snapshot_dir.join("1_Pooling/config.json");
    std::fs::write(&pooling, "{\"pooling_mode_mean_tokens\": tru").unwrap();
    let error =
        ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![verified.clone()])
            .await
            .unwrap_err();
    assert!(
        matches!(&error, EmbeddingError::InvalidModelFile { path, .. } if path == &pooling),
        "{error:?}"
    );
    assert!(error.to_string().contains("not valid JSON"), "{error}");
    std::fs::write(&pooling, "{}").unwrap();

    let tokenizer = verified.snapshot_dir.join("tokenizer.json");
    std::fs::write(&tokenizer, r#"{"model": {"type": "NoSuchModel"}}"#).unwrap();
    let error =
        ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![verified.clone()])
            .await
            .unwrap_err();
    assert!(
        matches!(&error, EmbeddingError::InvalidModelFile { path, .. } if path == &tokenizer),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not a loadable tokenizer"),
        "{error}"
    );

    // With the checks off, only the weights are opened.
    let config = ModelRegistryConfig {
        check_files: false,
        ..ModelRegistryConfig::default()
    };
    assert!(ModelRegistry::from_verified(config, &[], vec![verified])
        .await
        .is_ok());
}
