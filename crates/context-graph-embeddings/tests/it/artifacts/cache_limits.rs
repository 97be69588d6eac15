//! Cache limits, eviction, clearing, offline mode, sharing one download.

use context_graph_embeddings::artifacts::ModelArtifactManager;
use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{Fault, FaultRule, FaultTarget};

use crate::support::{model, Fixture};

fn foreign_blob(fx: &Fixture, name: &str, size: usize) -> std::path::PathBuf {
    let blobs = fx.cache_dir().join("models--someone--else").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let path = blobs.join(name);
    std::fs::write(&path, vec![7u8; size]).unwrap();
    path
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_with_the_numbers() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 400_000, true),
        model(ModelId::Graph, 300_000, false),
    ]);
    let mut config = fx.config();
    config.max_cache_bytes = Some(500_000);
    let manager = ModelArtifactManager::new(config).unwrap();
    let error = manager.ensure_all_models().await.unwrap_err();
    match &error {
        EmbeddingError::CacheLimitExceeded { needed, limit, .. } => {
            assert_eq!(*needed, 700_000);
            assert_eq!(*limit, 500_000);
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("700000") && error.to_string().contains("--max-cache-size"));
    assert!(fx.gets("lfs").is_empty(), "nothing downloaded");
}

#[tokio::test]
async fn eviction_frees_least_recently_used_foreign_blobs_only() {
    let fx = Fixture::new(&[model(ModelId::Entity, 400_000, true)]);
    let old = foreign_blob(&fx, &"1".repeat(64), 300_000);
    let new = foreign_blob(&fx, &"2".repeat(64), 300_000);
    let long_ago = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_accessed(long_ago)
                .set_modified(long_ago),
        )
        .unwrap();
    let mut config = fx.config();
    config.max_cache_bytes = Some(750_000);
    let manager = ModelArtifactManager::new(config).unwrap();
    manager.ensure_all_models().await.unwrap();
    assert!(!old.exists(), "the oldest foreign blob made room");
    assert!(new.exists(), "no more than needed was evicted");
    assert!(manager.cache_size() <= 750_000, "{}", manager.cache_size());

    // gc never evicts what the manifest needs unless asked.
    let report = manager.collect_garbage(0, false, true).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.removed.len(), 1);
    assert!(new.exists(), "dry run removes nothing");
    let report = manager.collect_garbage(0, false, false).await.unwrap();
    assert_eq!(report.freed_bytes, 300_000);
    assert!(!new.exists());
    assert!(manager.is_available(ModelId::Entity));
    let report = manager.collect_garbage(0, true, false).await.unwrap();
    // The blob, and `refs/<commit>` (40 bytes), which may not outlive its snapshot.
    assert_eq!(report.freed_bytes, 400_000 + 40);
    assert!(!manager.is_available(ModelId::Entity));
}

#[tokio::test]
async fn clear_cache_removes_only_what_the_manifest_owns() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 100_000, true),
        model(ModelId::Graph, 100_000, false),
    ]);
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    let foreign = foreign_blob(&fx, "abc", 1000);
    // A link planted in a snapshot folder pointing outside the cache must not be followed.
    let outside = fx.dir.path().join("outside.txt");
    std::fs::write(&outside, b"keep me").unwrap();
    let planted = fx
        .snapshot_path(ModelId::Graph)
        .with_file_name("planted.bin");
    std::os::unix::fs::symlink(&outside, &planted).unwrap();
    manager.clear_cache().await.unwrap();
    assert!(!fx.blob_path(ModelId::Entity).exists());
    assert!(!fx.blob_path(ModelId::Graph).exists());
    assert!(fx
        .snapshot_path(ModelId::Entity)
        .symlink_metadata()
        .is_err());
    assert!(foreign.exists());
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert!(!manager.is_available(ModelId::Entity));
    assert_eq!(manager.readiness_report().missing_models.len(), 2);
}

#[tokio::test]
async fn offline_mode_makes_no_request_and_answers_from_the_cache() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 100_000, true),
        model(ModelId::Graph, 100_000, false),
    ]);
    fx.manager().download(ModelId::Entity).await.unwrap();
    fx.hub.clear_requests();
    let mut config = fx.config();
    config.offline = true;
    let manager = ModelArtifactManager::new(config).unwrap();
    assert_eq!(
        manager.download(ModelId::Entity).await.unwrap(),
        fx.snapshot_path(ModelId::Entity)
    );
    let error = manager.ensure_all_models().await.unwrap_err();
    assert!(error.to_string().contains("offline"), "{error}");
    assert!(error.to_string().contains("Graph"), "{error}");
    assert!(fx.hub.requests().is_empty(), "{:?}", fx.hub.requests());
}

#[tokio::test]
async fn two_calls_for_one_model_share_one_download() {
    let fx = Fixture::new(&[model(ModelId::Entity, 2_000_000, true)]);
    let entity = fx.file(ModelId::Entity).clone();
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::get(&entity.sha256),
        Fault::BandwidthCap {
            bytes_per_sec: 10_000_000,
        },
    ));
    let manager = fx.manager();
    let (a, b) = tokio::join!(
        manager.download(ModelId::Entity),
        manager.download(ModelId::Entity)
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(fx.gets(&entity.sha256).len(), 1);
}

#[tokio::test]
async fn one_failing_model_does_not_stop_the_others() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 100_000, true),
        model(ModelId::Graph, 100_000, false),
        model(ModelId::Code, 100_000, false),
    ]);
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::head(&fx.file(ModelId::Graph).repo_id),
        Fault::status(403),
    ));
    let manager = fx.manager();
    let error = manager.ensure_all_models().await.unwrap_err();
    match &error {
        EmbeddingError::DownloadsFailed(failures) => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].0, ModelId::Graph);
        }
        other => panic!("{other:?}"),
    }
    assert!(manager.is_available(ModelId::Entity));
    assert!(manager.is_available(ModelId::Code));
    let report = manager.readiness_report();
    assert_eq!(report.failed_models.len(), 1);
    assert!(
        report.failed_models[0].1.contains("403"),
        "{:?}",
        report.failed_models
    );
}

#[tokio::test]
async fn a_corrupted_cached_file_is_detected_and_fetched_again() {
    let fx = Fixture::new(&[model(ModelId::Entity, 100_000, true)]);
    fx.manager().ensure_all_models().await.unwrap();
    // Rewrite the blob in place with other bytes of the same size: the stamp no longer matches.
    let path = fx.blob_path(ModelId::Entity);
    std::fs::write(&path, vec![0u8; 100_000]).unwrap();
    let manager = fx.manager();
    assert!(!manager.is_available(ModelId::Entity));
    manager.ensure_all_models().await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Entity)).unwrap(),
        fx.file(ModelId::Entity).content
    );
}
