//! Servers that lie or refuse, and secrets.

use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{Fault, FaultRule, FaultTarget, Host};

use crate::support::{model, partials, Fixture};

#[tokio::test]
async fn a_pin_that_disagrees_with_the_hub_fails_before_any_byte_is_written() {
    let fx = Fixture::new(&[model(ModelId::Semantic, 300_000, true)]);
    let wrong = "ab".repeat(32);
    fx.write_manifest(|_, entry| entry["sha256"] = wrong.clone().into());
    let error = fx.manager().download(ModelId::Semantic).await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error,
            EmbeddingError::PinMismatch {
                field: "sha256",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        text.contains(&wrong) && text.contains(&fx.file(ModelId::Semantic).sha256),
        "{text}"
    );
    assert!(fx.gets("").is_empty(), "no GET");
    assert!(
        !fx.blobs_dir(ModelId::Semantic).exists()
            || partials(&fx.blobs_dir(ModelId::Semantic)).is_empty()
    );

    fx.write_manifest(|_, entry| entry["size_bytes"] = 12345.into());
    let error = fx.manager().ensure_all_models().await.unwrap_err();
    assert!(error.to_string().contains("pins size 12345"), "{error}");
}

#[tokio::test]
async fn the_token_goes_to_the_hub_and_never_to_the_cdn() {
    let token = "hf_test_secret_token_42";
    let fx = Fixture::with(&[model(ModelId::Entity, 300_000, true)], |spec, _| {
        spec.gated(&[token])
    });
    let mut config = fx.config();
    // Without a token: a clear gated-repo error naming the ways to give one.
    let error = fx.manager().download(ModelId::Entity).await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error,
            EmbeddingError::GatedRepo {
                token_sent: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        text.contains("HF_TOKEN") && text.contains("--token"),
        "{text}"
    );

    config.hf_token = Some(token.to_owned());
    let manager = context_graph_embeddings::artifacts::ModelArtifactManager::new(config).unwrap();
    fx.hub.clear_requests();
    manager.download(ModelId::Entity).await.unwrap();
    let requests = fx.hub.requests();
    assert!(
        requests.iter().any(|r| r.host == Host::Cdn),
        "bytes came from the CDN"
    );
    for request in &requests {
        let auth = request.header("authorization");
        match request.host {
            Host::Hub => assert_eq!(auth, Some(format!("Bearer {token}").as_str())),
            Host::Cdn => assert_eq!(auth, None, "token leaked to the CDN: {request:?}"),
        }
    }
    assert!(!format!("{manager:?}").contains(token));
}

#[tokio::test]
async fn a_wrong_token_is_a_gated_error_and_no_secret_is_shown() {
    let fx = Fixture::with(&[model(ModelId::Entity, 10_000, true)], |spec, _| {
        spec.gated(&["right"])
    });
    let mut config = fx.config();
    config.hf_token = Some("hf_wrong_secret_value".to_owned());
    let manager = context_graph_embeddings::artifacts::ModelArtifactManager::new(config).unwrap();
    let error = manager.download(ModelId::Entity).await.unwrap_err();
    assert!(
        matches!(
            error,
            EmbeddingError::GatedRepo {
                token_sent: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.to_string().contains("hf_wrong_secret_value"));
    assert!(!format!("{error:?}").contains("hf_wrong_secret_value"));
}

#[tokio::test]
async fn flipped_bytes_are_fetched_again_then_fail_clearly_if_they_repeat() {
    let fx = Fixture::new(&[
        model(ModelId::Entity, 500_000, true),
        model(ModelId::Graph, 500_000, false),
    ]);
    let entity = fx.file(ModelId::Entity).clone();
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&entity.sha256),
            Fault::FlipByte { offset: 4242 },
        )
        .times(1),
    );
    fx.manager().download(ModelId::Entity).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Entity)).unwrap(),
        entity.content
    );
    assert_eq!(fx.gets(&entity.sha256).len(), 2);

    let graph = fx.file(ModelId::Graph).clone();
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::get(&graph.sha256),
        Fault::FlipByte { offset: 99 },
    ));
    let error = fx.manager().download(ModelId::Graph).await.unwrap_err();
    assert!(
        matches!(error, EmbeddingError::HashMismatch { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&graph.sha256), "{error}");
    assert!(!fx.blob_path(ModelId::Graph).exists());
    assert!(!fx.snapshot_path(ModelId::Graph).exists());
    assert!(
        partials(&fx.blobs_dir(ModelId::Graph)).is_empty(),
        "the corrupt bytes are not kept"
    );
}

#[tokio::test]
async fn lying_servers_never_put_a_wrong_file_in_place() {
    let faults = [
        Fault::HtmlErrorPage200,
        Fault::ContentLengthDelta { delta: 1000 },
        Fault::ContentLengthDelta { delta: -1000 },
        Fault::ResetBeforeResponse,
        Fault::status(429),
    ];
    for fault in faults {
        let fx = Fixture::new(&[model(ModelId::Entity, 300_000, false)]);
        let entity = fx.file(ModelId::Entity).clone();
        fx.hub
            .add_fault(FaultRule::new(FaultTarget::get(&entity.sha256), fault.clone()).times(2));
        let path = fx.manager().download(ModelId::Entity).await;
        let path = path.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(std::fs::read(path).unwrap(), entity.content, "{fault:?}");
    }
    // A redirect loop is a clear, fatal error.
    let fx = Fixture::new(&[model(ModelId::Entity, 1000, true)]);
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::head("resolve").on_host(Host::Hub),
        Fault::RedirectLoop,
    ));
    let error = fx.manager().download(ModelId::Entity).await.unwrap_err();
    assert!(error.to_string().contains("redirect loop"), "{error}");
}

#[tokio::test]
async fn a_stall_longer_than_the_idle_timeout_is_retried_and_resumed() {
    let fx = Fixture::new(&[model(ModelId::Entity, 600_000, true)]);
    let entity = fx.file(ModelId::Entity).clone();
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&entity.sha256),
            Fault::StallAfter {
                bytes: 250_000,
                stall: std::time::Duration::from_secs(3),
            },
        )
        .times(1),
    );
    let mut config = fx.config();
    config.download_timeout = std::time::Duration::from_millis(500);
    let manager = context_graph_embeddings::artifacts::ModelArtifactManager::new(config).unwrap();
    manager.download(ModelId::Entity).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Entity)).unwrap(),
        entity.content
    );
    let gets = fx.gets(&entity.sha256);
    assert_eq!(gets.len(), 2);
    let resumed_at: u64 = gets[1]
        .range()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(resumed_at > 0, "resumed, not restarted");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fx = Fixture::new(&[model(ModelId::Entity, 10_000, true)]);
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::head("resolve"),
            Fault::Status {
                code: 429,
                retry_after_secs: Some(1),
                ratelimit_reset_secs: None,
            },
        )
        .times(1),
    );
    let mut config = fx.config();
    config.retry_policy.max_server_delay = std::time::Duration::from_secs(5);
    let manager = context_graph_embeddings::artifacts::ModelArtifactManager::new(config).unwrap();
    let started = std::time::Instant::now();
    manager.download(ModelId::Entity).await.unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "waited as the server asked"
    );
}
