//! Issue 12: a cache on a real read-only mount (`mount --bind` + `remount,bind,ro`, as a
//! Kubernetes volume mounted `readOnly: true`), with our stamps, without them, and with a
//! corrupt file. The library tells the truth on it and writes nothing.

use context_graph_embeddings::artifacts::{ProgressKind, ReadinessState};
use context_graph_embeddings::{EmbeddingError, ModelId};

use crate::support::{drain, model, Fixture};

#[path = "../../common/mount.rs"]
mod mount;
pub(crate) use mount::{tree, ReadOnlyMount};

const MODELS: [ModelId; 3] = [ModelId::Semantic, ModelId::Entity, ModelId::Code];

fn filled() -> Fixture {
    Fixture::new(&[
        model(ModelId::Semantic, 300_000, true),
        model(ModelId::Entity, 200_000, false),
        model(ModelId::Code, 100_000, true),
    ])
}

async fn ensure_then_forget_stamps(fixture: &Fixture, forget_stamps: bool) {
    fixture.manager().ensure_all_models().await.expect("ensure");
    if forget_stamps {
        for id in MODELS {
            let repo_dir = fixture.blobs_dir(id).parent().unwrap().to_path_buf();
            std::fs::remove_dir_all(repo_dir.join(".cg-models-v1")).unwrap();
        }
    }
    fixture.hub.clear_requests();
}

fn warnings(events: &[context_graph_embeddings::artifacts::ProgressEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            ProgressKind::Warning { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_ensure_filled_is_ready_and_verified_on_a_read_only_mount_without_a_write() {
    let fixture = filled();
    ensure_then_forget_stamps(&fixture, false).await;
    let before = tree(&fixture.cache_dir());
    let _mount = ReadOnlyMount::new(&fixture.cache_dir());

    let manager = fixture.manager();
    let mut events = manager.subscribe_progress();
    let report = manager.readiness_report();
    assert!(report.all_ready(), "{report:#?}");
    for outcome in manager.verify_present(2, false).await {
        assert_eq!(outcome.verified, Some(true), "{outcome:?}");
    }
    manager.ensure_all_models().await.expect("nothing to fetch");
    assert!(manager.readiness_report().all_ready());
    assert_eq!(manager.unrecorded_stamps(), None, "our stamps are there");
    assert_eq!(warnings(&drain(&mut events)), Vec::<String>::new());
    assert!(fixture.hub.requests().is_empty(), "no network");
    assert_eq!(tree(&fixture.cache_dir()), before, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stamps_files_are_hashed_verified_for_the_process_with_one_notice() {
    let fixture = filled();
    ensure_then_forget_stamps(&fixture, true).await;
    let _mount = ReadOnlyMount::new(&fixture.cache_dir());

    let manager = fixture.manager();
    let mut events = manager.subscribe_progress();
    let report = manager.readiness_report();
    for id in MODELS {
        let row = report.models.iter().find(|m| m.model_id == id).unwrap();
        assert_eq!(row.state, ReadinessState::Unverified, "{row:?}");
    }
    assert_eq!(manager.get_path(ModelId::Semantic), None);

    for outcome in manager.verify_present(2, true).await {
        assert_eq!(outcome.verified, Some(true), "{outcome:?}");
    }
    let report = manager.readiness_report();
    assert!(report.all_ready(), "{report:#?}");
    assert_eq!(
        manager.get_path(ModelId::Semantic),
        Some(fixture.snapshot_path(ModelId::Semantic))
    );
    let notice = manager.unrecorded_stamps().expect("the notice");
    assert_eq!(report.unrecorded_stamps.as_ref(), Some(&notice));
    assert!(notice.path.starts_with(fixture.cache_dir()), "{notice:?}");
    assert!(notice.reason.contains("Read-only"), "{notice:?}");
    assert!(notice.message().contains("every start hashes them again"));

    // Hashed once: ensure, verify of the unverified and the report use the kept verdict.
    manager.ensure_all_models().await.expect("nothing missing");
    let outcomes = manager.verify_present(2, true).await;
    assert!(outcomes.iter().all(|o| o.verified == Some(true)));
    let warned = warnings(&drain(&mut events));
    assert_eq!(warned, [notice.message()], "one notice");
    assert!(fixture.hub.requests().is_empty(), "no network");

    // A new process knows nothing of it: the truth is "unverified" until it hashes.
    let fresh = fixture.manager();
    assert!(!fresh.readiness_report().all_ready());
    assert_eq!(fresh.unrecorded_stamps(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_corrupt_and_ensure_says_the_cache_is_read_only() {
    let fixture = filled();
    ensure_then_forget_stamps(&fixture, false).await;
    let blob = fixture.blob_path(ModelId::Entity);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let _mount = ReadOnlyMount::new(&fixture.cache_dir());

    let manager = fixture.manager();
    let outcomes = manager.verify_present(2, false).await;
    for outcome in &outcomes {
        let expected = outcome.model_id != ModelId::Entity;
        assert_eq!(outcome.verified, Some(expected), "{outcome:?}");
    }
    let report = manager.readiness_report();
    assert_eq!(report.ready_models.len(), 11, "{report:#?}");
    assert_eq!(report.failed_models.len(), 1);
    assert_eq!(report.failed_models[0].0, ModelId::Entity);

    let error = manager
        .ensure_all_models()
        .await
        .expect_err("cannot repair");
    let EmbeddingError::ReadOnlyCache { path } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(path, &fixture.cache_dir());
    let text = error.to_string();
    assert!(
        text.contains(&fixture.cache_dir().display().to_string()),
        "{text}"
    );
    assert!(text.contains("cg-models ensure"), "{text}");
    assert!(
        fixture.gets("model.safetensors").is_empty(),
        "nothing fetched into a read-only cache"
    );
}
