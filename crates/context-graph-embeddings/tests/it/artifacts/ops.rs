//! Fleet operations through the library API: stale pins against a moved branch, the metrics
//! recorder fed by real downloads (with a 503 retry), and a bundle round trip between two
//! managers, one of which never reaches the Hub.

use context_graph_embeddings::artifacts::{DriftState, FileChange, ModelArtifactManager};
use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{synth, Fault, FaultRule, FaultTarget};

use crate::support::{model, Fixture};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outdated_reports_a_moved_branch_and_upgrade_moves_only_the_named_pin() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 50_000, true),
        model(ModelId::Graph, 40_000, true),
    ]);
    let manager = fx.manager();
    let drifts = manager.check_outdated(&[]).await.expect("outdated");
    assert!(
        drifts.iter().all(|d| d.state == DriftState::UpToDate),
        "{drifts:?}"
    );

    let repo = fx.file(ModelId::Entity).repo_id.clone();
    let same = fx.file(ModelId::Entity).content.clone();
    // A commit that changes nothing of the model's file: behind, not changed.
    let moved = fx.hub.set_file(&repo, "README.md", b"new readme".to_vec());
    let drifts = manager
        .check_outdated(&[ModelId::Entity])
        .await
        .expect("outdated");
    assert_eq!(drifts.len(), 1);
    assert_eq!(drifts[0].state, DriftState::Behind);
    assert_eq!(drifts[0].head_commit, moved);
    assert_eq!(drifts[0].files[0].change, FileChange::Unchanged);
    assert!(drifts[0].is_outdated());

    let replaced = synth::safetensors(50_500, 77);
    let head = fx
        .hub
        .set_file(&repo, &fx.file(ModelId::Entity).filename, replaced.clone());
    let drifts = manager.check_outdated(&[]).await.expect("outdated");
    let entity = drifts
        .iter()
        .find(|d| d.model_id == ModelId::Entity)
        .unwrap();
    assert_eq!(entity.state, DriftState::Changed);
    assert_eq!(
        entity.files[0].pinned_digest.as_deref(),
        Some(synth::sha256_hex(&same).as_str())
    );
    assert_eq!(entity.files[0].head_size, Some(50_500));
    let graph = drifts
        .iter()
        .find(|d| d.model_id == ModelId::Graph)
        .unwrap();
    assert_eq!(graph.state, DriftState::UpToDate);

    let outcome = manager
        .upgrade_pins(&[ModelId::Entity])
        .await
        .expect("upgrade");
    let fields: Vec<_> = outcome
        .changed
        .iter()
        .map(|c| (c.model_id, c.field))
        .collect();
    assert_eq!(
        fields,
        [
            (ModelId::Entity, "revision"),
            (ModelId::Entity, "sha256"),
            (ModelId::Entity, "size_bytes")
        ]
    );
    let upgraded = outcome
        .manifest
        .artifacts()
        .find(|a| a.model_id == ModelId::Entity)
        .unwrap();
    assert_eq!(upgraded.revision.as_deref(), Some(head.as_str()));
    assert_eq!(upgraded.sha256, Some(synth::sha256_hex(&replaced)));
    let graph_pin = outcome
        .manifest
        .artifacts()
        .find(|a| a.model_id == ModelId::Graph)
        .unwrap();
    assert_eq!(
        graph_pin.revision.as_deref(),
        Some(fx.file(ModelId::Graph).commit.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_counts_real_downloads_retries_and_reuse() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 300_000, true),
        model(ModelId::Graph, 100_000, true),
    ]);
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&fx.file(ModelId::Graph).sha256),
            Fault::Status {
                code: 503,
                retry_after_secs: None,
                ratelimit_reset_secs: None,
            },
        )
        .times(1),
    );
    let manager = fx.manager();
    let recorder = manager.metrics_recorder().expect("recorder");
    manager.ensure_all_models().await.expect("ensure");
    // The recorder task reads the last events.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    manager.update_metrics(&recorder);
    let text = recorder.render();
    assert_eq!(
        sample(&text, "cg_models_downloaded_bytes_total{model=\"Entity\"}"),
        Some(300_000.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cg_models_downloaded_bytes_total{model=\"Graph\"}"),
        Some(100_000.0)
    );
    assert_eq!(
        sample(&text, "cg_models_files_total{outcome=\"downloaded\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "cg_models_retries_total{reason=\"server_error\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cg_models_models{state=\"ready\"}"),
        Some(2.0)
    );
    assert!(sample(&text, "cg_models_cache_size_bytes").unwrap_or(0.0) >= 400_000.0);

    // A second manager finds both present: reused bytes, nothing downloaded.
    let again = fx.manager();
    let recorder = again.metrics_recorder().expect("recorder");
    again.ensure_all_models().await.expect("ensure");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let text = recorder.render();
    assert_eq!(
        sample(&text, "cg_models_downloaded_bytes_total{model=\"Entity\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "cg_models_reused_bytes_total{model=\"Entity\"}"),
        Some(300_000.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "cg_models_files_total{outcome=\"already_present\"}"),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_round_trips_between_caches_and_an_altered_one_places_nothing() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 120_000, true),
        model(ModelId::Graph, 80_000, true),
    ]);
    let source = fx.manager();
    source.ensure_all_models().await.expect("ensure");
    let bundle = fx.dir.path().join("b.tar");
    let export = source.export_bundle(&bundle, &[]).await.expect("export");
    assert_eq!(export.files.len(), 2);
    assert_eq!(export.content_bytes, 200_000);

    // The site: another cache, offline, an endpoint nobody listens on.
    let mut config = fx.config();
    config.cache_dir = fx.dir.path().join("site");
    config.offline = true;
    config.endpoint = "http://127.0.0.1:9".to_owned();
    let site = ModelArtifactManager::new(config.clone()).expect("manager");
    let imported = site.import_bundle(&bundle).await.expect("import");
    assert_eq!(imported.imported_blobs, 2);
    assert!(site.readiness_report().all_ready());
    let path = site.get_path(ModelId::Entity).expect("ready");
    assert_eq!(
        std::fs::read(path).unwrap(),
        fx.file(ModelId::Entity).content
    );

    // An altered bundle into a third cache: refused, no snapshot.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 2048;
    bytes[last] ^= 1;
    let altered = fx.dir.path().join("altered.tar");
    std::fs::write(&altered, &bytes).unwrap();
    config.cache_dir = fx.dir.path().join("third");
    let third = ModelArtifactManager::new(config).expect("manager");
    let error = third.import_bundle(&altered).await.unwrap_err();
    assert!(matches!(error, EmbeddingError::Bundle { .. }), "{error}");
    assert!(error.to_string().contains("altered.tar"), "{error}");
    assert!(!third
        .readiness_report()
        .models
        .iter()
        .any(|m| m.path.is_some()));
}
