//! One test per verification step of spec M03-S13.

use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ModelArtifactManager, Outcome, ProgressKind, ReadinessState,
};
use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::Host;

use crate::support::{drain, model, Fixture};

#[test]
fn all_twelve_manifests_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = ArtifactManagerConfig {
        implicit_token: false,
        offline: true,
        ..ArtifactManagerConfig::with_cache_dir(dir.path())
    };
    let manager = ModelArtifactManager::new(config).unwrap();
    assert_eq!(manager.manifest().entries.len(), 12);
    let report = manager.readiness_report();
    assert_eq!(report.models.len(), 12);
    let builtins: Vec<_> = report
        .models
        .iter()
        .filter(|m| m.state == ReadinessState::Builtin)
        .map(|m| m.model_id)
        .collect();
    assert_eq!(
        builtins,
        [
            ModelId::TemporalRecent,
            ModelId::TemporalPeriodic,
            ModelId::TemporalPositional,
            ModelId::Hdc
        ]
    );
    assert_eq!(report.missing_models.len(), 8);
    let semantic = report
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Semantic)
        .unwrap();
    assert_eq!(semantic.repo_id.as_deref(), Some("intfloat/e5-large-v2"));
    assert_eq!(semantic.size_bytes, Some(1_340_616_616));
}

#[tokio::test]
async fn is_available_is_true_for_existing_files_only() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 300_000, true),
        model(ModelId::Graph, 200_000, false),
    ]);
    let manager = fx.manager();
    assert!(
        manager.is_available(ModelId::Hdc),
        "built-ins are always available"
    );
    assert!(!manager.is_available(ModelId::Entity));
    assert_eq!(manager.get_path(ModelId::Entity), None);
    manager.download(ModelId::Entity).await.unwrap();
    assert!(manager.is_available(ModelId::Entity));
    assert!(!manager.is_available(ModelId::Graph));
    assert_eq!(
        manager.get_path(ModelId::Entity),
        Some(fx.snapshot_path(ModelId::Entity))
    );
    // A fresh manager (a new process) sees the file from the stamp alone.
    assert!(fx.manager().is_available(ModelId::Entity));
    // Deleting the blob makes it unavailable again.
    std::fs::remove_file(fx.blob_path(ModelId::Entity)).unwrap();
    assert!(!fx.manager().is_available(ModelId::Entity));
}

#[tokio::test]
async fn verify_checksum_detects_one_flipped_byte() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 500_000, true),
        model(ModelId::Graph, 400_000, false),
    ]);
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    assert!(manager.verify_checksum(ModelId::Entity).await.unwrap());
    assert!(manager.verify_checksum(ModelId::Graph).await.unwrap());
    for id in [ModelId::Entity, ModelId::Graph] {
        let path = fx.blob_path(id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[123_456] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        assert!(!manager.verify_checksum(id).await.unwrap(), "{id}");
        assert!(
            !manager.is_available(id),
            "{id}: a corrupt file is not available"
        );
        let report = manager.readiness_report();
        let entry = report.models.iter().find(|m| m.model_id == id).unwrap();
        assert_eq!(entry.state, ReadinessState::Failed);
        assert!(
            entry.error.as_deref().unwrap().contains("SHA-256 mismatch"),
            "{:?}",
            entry.error
        );
    }
}

#[tokio::test]
async fn download_fetches_from_the_right_repo_revision_and_file() {
    let fx = Fixture::new(&[model(ModelId::Semantic, 1_000_000, true)]);
    let manager = fx.manager();
    let path = manager.download(ModelId::Semantic).await.unwrap();
    let served = fx.file(ModelId::Semantic);
    assert_eq!(path, fx.snapshot_path(ModelId::Semantic));
    assert_eq!(std::fs::read(&path).unwrap(), served.content);
    let requests = fx.hub.requests();
    let head = requests
        .iter()
        .find(|r| r.method == "HEAD")
        .expect("a HEAD");
    assert_eq!(head.host, Host::Hub);
    assert_eq!(
        head.path,
        format!(
            "/{}/resolve/{}/{}",
            served.repo_id, served.commit, served.filename
        )
    );
    let get = requests.iter().find(|r| r.method == "GET").expect("a GET");
    assert_eq!(get.host, Host::Cdn, "LFS bytes come from the CDN");
    assert!(get.path.contains(&served.sha256), "{}", get.path);
    assert_eq!(get.body_bytes_sent, served.content.len() as u64);
    // The cache looks like huggingface_hub's.
    let link = std::fs::read_link(&path).unwrap();
    assert_eq!(
        link,
        std::path::Path::new("../../blobs").join(&served.sha256)
    );
}

#[tokio::test]
async fn ensure_all_models_fetches_exactly_the_missing_ones() {
    let fx = Fixture::new(&[
        model(ModelId::Semantic, 700_000, true),
        model(ModelId::Causal, 600_000, false),
        model(ModelId::Entity, 300_000, true),
        model(ModelId::LateInteraction, 200_000, false),
    ]);
    let manager = fx.manager();
    manager.download(ModelId::Entity).await.unwrap();
    fx.hub.clear_requests();
    let fresh = fx.manager();
    fresh.ensure_all_models().await.unwrap();
    let fetched: Vec<String> = fx
        .hub
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(fetched.len(), 3, "{fetched:?}");
    assert!(!fetched
        .iter()
        .any(|p| p.contains(&fx.file(ModelId::Entity).sha256)));
    let report = fresh.readiness_report();
    assert!(report.all_ready(), "{report:?}");
    assert_eq!(report.ready_models.len(), 12);
    // A second run does nothing at all on the network.
    fx.hub.clear_requests();
    fx.manager().ensure_all_models().await.unwrap();
    assert!(fx.hub.requests().is_empty(), "{:?}", fx.hub.requests());
}

#[tokio::test]
async fn progress_events_arrive_in_order_with_monotone_bytes() {
    let fx = Fixture::new(&[model(ModelId::Multimodal, 3_000_000, true)]);
    fx.hub.add_fault(hub_emulator::FaultRule::new(
        hub_emulator::FaultTarget::get("/lfs/"),
        hub_emulator::Fault::BandwidthCap {
            bytes_per_sec: 20_000_000,
        },
    ));
    let manager = fx.manager();
    let mut events = manager.subscribe_progress();
    manager.download(ModelId::Multimodal).await.unwrap();
    let events = drain(&mut events);
    let kinds: Vec<&ProgressKind> = events.iter().map(|e| &e.kind).collect();
    // The file set is announced first (here the weight file alone), and each file's
    // `FileReady` comes before the model's `Completed`.
    assert!(
        matches!(
            kinds.first(),
            Some(ProgressKind::FilesResolved { files: 1 })
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            kinds.get(1),
            Some(ProgressKind::Started { resumed_from: 0 })
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            kinds.get(kinds.len() - 2),
            Some(ProgressKind::FileReady { file, .. }) if file == "model.safetensors"
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            kinds.last(),
            Some(ProgressKind::Completed {
                outcome: Outcome::Downloaded,
                ..
            })
        ),
        "{kinds:?}"
    );
    let verifying = kinds
        .iter()
        .position(|k| matches!(k, ProgressKind::Verifying))
        .expect("verifying");
    let progress: Vec<_> = events
        .iter()
        .filter(|e| e.kind == ProgressKind::Progress)
        .collect();
    assert!(
        progress.len() >= 3,
        "several progress events: {}",
        progress.len()
    );
    assert!(progress
        .windows(2)
        .all(|w| w[0].bytes_downloaded <= w[1].bytes_downloaded));
    assert_eq!(progress.last().unwrap().bytes_downloaded, 3_000_000);
    assert!(progress.iter().all(|e| e.total_bytes == 3_000_000));
    assert!(progress.iter().any(|e| e.speed_bps > 0));
    let last_progress = events
        .iter()
        .rposition(|e| e.kind == ProgressKind::Progress)
        .unwrap();
    assert!(last_progress < verifying);
    assert!(events.iter().all(|e| e.model_id == ModelId::Multimodal));
}

#[tokio::test]
async fn retries_recover_from_transient_faults_and_stop_on_fatal_ones() {
    use hub_emulator::{Fault, FaultRule, FaultTarget};
    let fx = Fixture::new(&[
        model(ModelId::Code, 2_000_000, false),
        model(ModelId::Sparse, 100_000, true),
    ]);
    let code = fx.file(ModelId::Code).clone();
    fx.hub
        .add_fault(FaultRule::new(FaultTarget::head(&code.repo_id), Fault::status(503)).times(2));
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&code.sha256),
            Fault::CutAfter { bytes: 700_000 },
        )
        .times(1),
    );
    fx.hub
        .add_fault(FaultRule::new(FaultTarget::get(&code.sha256), Fault::status(502)).times(1));
    let manager = fx.manager();
    let mut events = manager.subscribe_progress();
    manager.download(ModelId::Code).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Code)).unwrap(),
        code.content
    );
    let retries = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e.kind, ProgressKind::Retrying { .. }))
        .count();
    assert_eq!(retries, 4, "2 HEAD 503s, one cut, one 502");
    let gets = fx.gets(&code.sha256);
    let ranged: Vec<_> = gets
        .iter()
        .filter_map(|r| r.range().map(str::to_owned))
        .collect();
    assert_eq!(
        ranged.last().map(String::as_str),
        Some("bytes=700000-"),
        "{ranged:?}"
    );
    let transferred: u64 = gets
        .iter()
        .filter(|r| r.status == 200 || r.status == 206)
        .map(|r| r.body_bytes_sent)
        .sum();
    assert_eq!(transferred, 2_000_000, "no byte fetched twice");

    // Fatal: the file is not in the repo. One HEAD, no retry, the Hub's reason in the error.
    let sparse = fx.file(ModelId::Sparse).clone();
    fx.write_manifest(|id, entry| {
        if id == ModelId::Sparse {
            entry["filename"] = "missing.safetensors".into();
        }
    });
    fx.hub.clear_requests();
    let error = fx.manager().download(ModelId::Sparse).await.unwrap_err();
    assert!(
        matches!(error, EmbeddingError::EntryNotFound { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&sparse.repo_id), "{error}");
    assert_eq!(fx.hub.requests().len(), 1);

    // Transient forever: gives up after the configured retries with the last error.
    fx.write_manifest(|_, _| {});
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::head(&sparse.repo_id),
        Fault::status(500),
    ));
    fx.hub.clear_requests();
    let error = fx.manager().download(ModelId::Sparse).await.unwrap_err();
    assert!(
        matches!(error, EmbeddingError::RetriesExhausted { attempts: 5, .. }),
        "{error:?}"
    );
    assert_eq!(fx.hub.requests().len(), 5);
}

#[tokio::test]
async fn cache_size_is_the_exact_byte_count_on_disk() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 321_001, true),
        model(ModelId::Graph, 123_457, false),
    ]);
    let manager = fx.manager();
    assert_eq!(manager.cache_size(), 0);
    manager.ensure_all_models().await.unwrap();
    // Independent measure: GNU find over regular files, links not followed.
    let output = std::process::Command::new("find")
        .arg(fx.cache_dir())
        .args(["-type", "f", "-printf", "%s\n"])
        .output()
        .unwrap();
    let by_find: u64 = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum();
    assert_eq!(manager.cache_size(), by_find);
    assert!(by_find >= 321_001 + 123_457);
    assert!(
        by_find < 321_001 + 123_457 + 4096,
        "only small metadata besides blobs"
    );
    // A partial download counts too.
    std::fs::write(
        fx.blobs_dir(ModelId::Entity)
            .join("f00.12345678.incomplete"),
        vec![0u8; 777],
    )
    .unwrap();
    assert_eq!(manager.cache_size(), by_find + 777);
    manager.clear_cache().await.unwrap();
    assert!(manager.cache_size() < 4096, "{}", manager.cache_size());
}
