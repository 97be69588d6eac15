//! Pipeline start-up: step 0 then the registry.

use context_graph_embeddings::pipeline::EmbeddingPipeline;
use context_graph_embeddings::registry::RegisteredModel;
use context_graph_embeddings::{EmbeddingConfig, EmbeddingError, ModelId};

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
    // The pickle file gets no safetensors check, but is registered.
    assert!(matches!(
        registry.get(ModelId::Causal),
        Some(RegisteredModel::Weights {
            tensor_count: None,
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
