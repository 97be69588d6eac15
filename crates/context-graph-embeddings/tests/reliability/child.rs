//! The body of child processes. Tests start this binary again with
//! `--exact child::child_process --ignored` and a JSON specification in `CG_RELIABILITY_CHILD`;
//! the child does one operation against a cache and writes what happened to `spec.result`.
//! It is `#[ignore]`d, so a normal run lists it as ignored: it is not a test of its own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::test_support::BlobLock;
use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ModelArtifactManager, ParallelSettings, ProgressKind, RetryPolicy,
};

use crate::support::CHILD_ENV;

#[test]
#[ignore = "not a test: the body of the child processes that reliability tests start"]
fn child_process() {
    let spec = std::env::var(CHILD_ENV)
        .expect("run only as a child process, with CG_RELIABILITY_CHILD set by a parent test");
    let spec: serde_json::Value = serde_json::from_str(&spec).expect("child spec is JSON");
    let result = match spec["op"].as_str().unwrap_or_default() {
        "ensure" => ensure(&spec),
        "lock_probe" => lock_probe(&spec),
        "secrets" => crate::hostile::secrets_child(&spec, &config_from_spec(&spec)),
        other => panic!("unknown child op {other}"),
    };
    let path = PathBuf::from(spec["result"].as_str().expect("result path"));
    std::fs::write(path, result.to_string()).expect("result written");
}

/// The configuration a parent describes (mirrors `Fixture::config_at`).
pub(crate) fn config_from_spec(spec: &serde_json::Value) -> ArtifactManagerConfig {
    let millis =
        |key: &str, default: u64| Duration::from_millis(spec[key].as_u64().unwrap_or(default));
    let parallel = match spec["parallel_chunk_bytes"].as_u64() {
        Some(chunk_bytes) => ParallelSettings {
            connections: 4,
            initial_connections: 4,
            min_file_bytes: chunk_bytes,
            chunk_bytes,
            ..Default::default()
        },
        None => ArtifactManagerConfig::from_env().parallel,
    };
    ArtifactManagerConfig {
        parallel,
        cache_dir: spec["cache_dir"].as_str().unwrap().into(),
        endpoint: spec["endpoint"].as_str().unwrap().to_owned(),
        manifest_path: Some(spec["manifest"].as_str().unwrap().into()),
        hf_token: spec["token"].as_str().map(str::to_owned),
        implicit_token: false,
        offline: false,
        use_symlinks: true,
        verify_checksums: true,
        check_disk_space: true,
        max_cache_bytes: None,
        max_concurrent_downloads: 4,
        retry_attempts: spec["retry_attempts"].as_u64().unwrap_or(4) as u32,
        download_timeout: millis("download_timeout_ms", 5000),
        connect_timeout: Duration::from_secs(5),
        metadata_timeout: Duration::from_secs(5),
        retry_policy: RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_server_delay: Duration::from_millis(50),
        },
        progress_interval: Duration::from_millis(1),
        ..ArtifactManagerConfig::from_env()
    }
}

/// `ensure_all_models`, optionally after waiting for a start signal (a file appearing), so
/// that several children start at the same moment.
fn ensure(spec: &serde_json::Value) -> serde_json::Value {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let manager = ModelArtifactManager::new(config_from_spec(spec)).unwrap();
        let mut events = manager.subscribe_progress();
        if let Some(ready) = spec["ready_file"].as_str() {
            std::fs::write(ready, b"").unwrap();
        }
        if let Some(go) = spec["go_file"].as_str() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !std::path::Path::new(go).exists() {
                assert!(Instant::now() < deadline, "no start signal");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let result = manager.ensure_all_models().await;
        let mut waited_for_lock = false;
        while let Ok(event) = events.try_recv() {
            waited_for_lock |= matches!(event.kind, ProgressKind::WaitingForLock { .. });
        }
        let report = manager.readiness_report();
        serde_json::json!({
            "ok": result.is_ok(),
            "error": result.as_ref().err().map(ToString::to_string),
            "all_ready": report.all_ready(),
            "waited_for_lock": waited_for_lock,
        })
    })
}

/// Takes one blob lock twice in this process. With working `flock` the second attempt waits
/// (flock conflicts between two open files even in one process); with locks switched off by
/// `CG_MODELS_TEST_NO_LOCKS=1` it is granted at once.
fn lock_probe(spec: &serde_json::Value) -> serde_json::Value {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let path = PathBuf::from(spec["lock_path"].as_str().unwrap());
        let first = BlobLock::acquire(&path, || {}).await.unwrap();
        let second =
            tokio::time::timeout(Duration::from_secs(2), BlobLock::acquire(&path, || {})).await;
        let granted = matches!(second, Ok(Ok(_)));
        drop(first);
        serde_json::json!({ "second_granted_at_once": granted })
    })
}
