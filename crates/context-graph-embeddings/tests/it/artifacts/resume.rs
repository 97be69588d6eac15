//! Resume across attempts and across processes.

use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::{ModelArtifactManager, Outcome, ProgressKind};
use context_graph_embeddings::ModelId;
use hub_emulator::{Fault, FaultRule, FaultTarget};

use crate::support::{drain, model, partials, Fixture};

const CHILD_ENV: &str = "CG_TEST_CHILD_DOWNLOAD";

/// Not a test of its own: the body of the child process that the kill test starts (it runs
/// only when the parent sets the environment variable).
#[test]
fn child_download_for_kill_test() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let manager =
            ModelArtifactManager::new(context_graph_embeddings::artifacts::ArtifactManagerConfig {
                cache_dir: config["cache_dir"].as_str().unwrap().into(),
                endpoint: config["endpoint"].as_str().unwrap().to_owned(),
                manifest_path: Some(config["manifest"].as_str().unwrap().into()),
                implicit_token: false,
                ..context_graph_embeddings::artifacts::ArtifactManagerConfig::from_env()
            })
            .unwrap();
        let _ = manager.download(ModelId::Multimodal).await;
    });
}

#[tokio::test]
async fn a_killed_process_leaves_a_partial_that_the_next_run_completes() {
    let fx = Fixture::new(&[model(ModelId::Multimodal, 8_000_000, true)]);
    let served = fx.file(ModelId::Multimodal).clone();
    // Slow enough that the child is surely mid-file when it is killed.
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&served.sha256),
            Fault::BandwidthCap {
                bytes_per_sec: 2_000_000,
            },
        )
        .times(1),
    );
    let mut child = fx.spawn_child("artifacts::resume::child_download_for_kill_test", CHILD_ENV);
    let blobs = fx.blobs_dir(ModelId::Multimodal);
    let deadline = Instant::now() + Duration::from_secs(30);
    let partial_len = loop {
        let len = partials(&blobs)
            .first()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        if len >= 2_000_000 {
            break len;
        }
        assert!(Instant::now() < deadline, "child made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(partial_len < 8_000_000);
    assert!(
        !fx.blob_path(ModelId::Multimodal).exists(),
        "no unverified bytes at the final path"
    );
    assert!(!fx.snapshot_path(ModelId::Multimodal).exists());

    fx.hub.clear_requests();
    let manager = fx.manager();
    let mut events = manager.subscribe_progress();
    manager.download(ModelId::Multimodal).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    assert_eq!(gets.len(), 1, "{gets:?}");
    let range = gets[0].range().expect("a ranged request").to_owned();
    let start: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(
        start > 0 && start <= partial_len + 1_000_000,
        "resumed from {start}"
    );
    assert_eq!(gets[0].status, 206);
    assert_eq!(
        gets[0].body_bytes_sent,
        8_000_000 - start,
        "only the remainder crossed the wire"
    );
    let events = drain(&mut events);
    assert!(events.iter().any(
        |e| matches!(e.kind, ProgressKind::Started { resumed_from } if resumed_from == start)
    ));
    assert!(events.iter().any(|e| matches!(
        e.kind,
        ProgressKind::Completed {
            outcome: Outcome::Resumed,
            ..
        }
    )));
    assert!(partials(&blobs).is_empty(), "no temp files left");
}

#[tokio::test]
async fn a_server_answering_200_to_a_range_restarts_from_zero() {
    let fx = Fixture::new(&[model(ModelId::Entity, 1_000_000, false)]);
    let served = fx.file(ModelId::Entity).clone();
    std::fs::create_dir_all(fx.blobs_dir(ModelId::Entity)).unwrap();
    std::fs::write(
        fx.blobs_dir(ModelId::Entity)
            .join(format!("{}.0badc0de.incomplete", served.sha256)),
        &served.content[..400_000],
    )
    .unwrap();
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::get(&served.sha256),
        Fault::IgnoreRange,
    ));
    let manager = fx.manager();
    let mut events = manager.subscribe_progress();
    manager.download(ModelId::Entity).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Entity)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range(), Some("bytes=400000-"));
    assert_eq!(gets[0].status, 200);
    let starts: Vec<u64> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e.kind {
            ProgressKind::Started { resumed_from } => Some(resumed_from),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [400_000, 0], "the restart from zero is announced");
}

#[tokio::test]
async fn a_corrupt_partial_is_never_trusted() {
    let fx = Fixture::new(&[model(ModelId::Entity, 1_000_000, true)]);
    let served = fx.file(ModelId::Entity).clone();
    std::fs::create_dir_all(fx.blobs_dir(ModelId::Entity)).unwrap();
    let mut bad_prefix = served.content[..500_000].to_vec();
    bad_prefix[1000] ^= 0xff;
    std::fs::write(
        fx.blobs_dir(ModelId::Entity)
            .join(format!("{}.00000001.incomplete", served.sha256)),
        &bad_prefix,
    )
    .unwrap();
    let manager = fx.manager();
    manager.download(ModelId::Entity).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Entity)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    assert_eq!(
        gets.len(),
        2,
        "resume, hash mismatch at the end, full refetch: {gets:?}"
    );
    assert_eq!(gets[1].range(), None);
}

#[tokio::test]
async fn a_complete_partial_needs_no_request_and_416_is_handled() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 200_000, true),
        model(ModelId::Graph, 200_000, true),
    ]);
    let entity = fx.file(ModelId::Entity).clone();
    std::fs::create_dir_all(fx.blobs_dir(ModelId::Entity)).unwrap();
    std::fs::write(
        fx.blobs_dir(ModelId::Entity)
            .join(format!("{}.incomplete", entity.sha256)),
        &entity.content,
    )
    .unwrap();
    let manager = fx.manager();
    manager.download(ModelId::Entity).await.unwrap();
    assert!(
        fx.gets(&entity.sha256).is_empty(),
        "the killed run had everything already"
    );

    // Unpinned size: a partial as long as the file gets a 416 from the server; the partial is
    // discarded and the file fetched in full, correctly.
    let graph = fx.file(ModelId::Graph).clone();
    fx.write_manifest(|id, entry| {
        if id == ModelId::Graph {
            entry["size_bytes"] = serde_json::Value::Null;
            entry["sha256"] = serde_json::Value::Null;
        }
    });
    std::fs::create_dir_all(fx.blobs_dir(ModelId::Graph)).unwrap();
    let mut longer = graph.content.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(
        fx.blobs_dir(ModelId::Graph)
            .join(format!("{}.11111111.incomplete", graph.sha256)),
        &longer,
    )
    .unwrap();
    fx.manager().download(ModelId::Graph).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Graph)).unwrap(),
        graph.content
    );
}
