//! `examples/embedder.rs`, the program an embedder copies, run against the Hub emulator: the
//! same file, included here, so CI runs exactly what the example does and it cannot rot.

use std::sync::{Arc, Mutex};

use context_graph_embeddings::registry::RegisteredModel;
use context_graph_embeddings::ModelId;

use crate::support::{model, Fixture};

#[allow(dead_code)]
// The example is a program; included here its `pub` items are only reachable from this test.
#[allow(unreachable_pub)]
#[path = "../../../examples/embedder.rs"]
mod embedder;

#[tokio::test]
async fn the_embedder_example_ensures_reports_starts_and_opens_a_model() {
    let fx = Fixture::new(&[
        model(ModelId::Semantic, 40_000, true),
        model(ModelId::Entity, 30_000, false),
    ]);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let say: embedder::Say = {
        let lines = lines.clone();
        Arc::new(move |line| lines.lock().unwrap().push(line))
    };
    let (pipeline, opened) = embedder::run(fx.config(), say).await.unwrap();
    let lines = lines.lock().unwrap().clone();
    let text = lines.join("\n");
    // Progress of both downloads, the report, the start, the opened model.
    for id in ["Semantic", "Entity"] {
        assert!(text.contains(&format!("{id}: downloading")), "{text}");
        assert!(text.contains(&format!("{id}: Downloaded ")), "{text}");
    }
    assert!(text.contains("12 of 12 models ready"), "{text}");
    assert!(
        text.contains("pipeline started: 12 models registered"),
        "{text}"
    );
    assert_eq!(opened, Some(ModelId::Semantic));
    let weights = fx.snapshot_path(ModelId::Semantic);
    assert!(
        text.contains(&format!(
            "Semantic: Safetensors weights {} (",
            weights.display()
        )),
        "{text}"
    );
    assert!(matches!(
        pipeline.registry().get(ModelId::Semantic),
        Some(RegisteredModel::Weights { path, .. }) if path == &weights
    ));
    // The second start (the pipeline's step 0) downloaded nothing: one GET of each file.
    let gets = fx
        .hub
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/lfs/"))
        .count();
    assert_eq!(gets, 2, "{:?}", fx.hub.requests());
}

#[tokio::test]
async fn the_embedder_example_reports_what_failed() {
    let fx = Fixture::new(&[model(ModelId::Entity, 30_000, true)]);
    fx.write_manifest(|_, entry| entry["sha256"] = "ab".repeat(32).into());
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let say: embedder::Say = {
        let lines = lines.clone();
        Arc::new(move |line| lines.lock().unwrap().push(line))
    };
    let error = embedder::run(fx.config(), say).await.unwrap_err();
    let text = lines.lock().unwrap().join("\n");
    assert!(text.contains("11 of 12 models ready"), "{text}");
    assert!(text.contains("Entity is Failed"), "{text}");
    assert!(error.to_string().contains("Entity"), "{error}");
}
