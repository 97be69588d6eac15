//! Parallel means separate TCP connections, on the network users really have: a CDN over TLS
//! that offers HTTP/2 by ALPN and paces each TCP connection (the emulator's `cdn_tls` and
//! `edge_mix`, whose request log names each request's connection).

use std::collections::BTreeSet;
use std::time::Duration;

use context_graph_embeddings::artifacts::{ModelArtifactManager, ParallelSettings};
use context_graph_embeddings::ModelId;
use hub_emulator::{CdnTls, EdgeMix, Host, HttpVersion, RequestRecord};

use crate::support::{model, Fixture};

const CHUNK: u64 = 256 * 1024;
const TOKEN: &str = "hf_connections_test_token";

/// A fixture whose CDN speaks TLS (HTTP/2 offered) and paces each connection at `edges`.
fn tls_fixture(size: u64, edges: EdgeMix) -> (Fixture, std::path::PathBuf) {
    let tls = CdnTls::generate().unwrap();
    let ca_pem = tls.ca_pem().to_owned();
    let fx = Fixture::with_builder(&[model(ModelId::Multimodal, size, true)], move |b| {
        b.cdn_tls(tls.clone()).edge_mix(edges.clone())
    });
    let ca = fx.dir.path().join("cdn-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    (fx, ca)
}

/// Downloads Multimodal trusting `ca`, checks the bytes, and returns the CDN's body `GET`s.
async fn download(
    fx: &Fixture,
    ca: &std::path::Path,
    parallel: ParallelSettings,
) -> Vec<RequestRecord> {
    let mut config = fx.config();
    config.ca_bundle = Some(ca.to_path_buf());
    config.parallel = parallel;
    config.hf_token = Some(TOKEN.to_owned());
    ModelArtifactManager::new(config)
        .unwrap()
        .download(ModelId::Multimodal)
        .await
        .unwrap();
    let served = fx.file(ModelId::Multimodal);
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
        served.content
    );
    fx.gets(&served.sha256)
        .into_iter()
        .filter(|r| r.host == Host::Cdn)
        .collect()
}

fn connections(gets: &[RequestRecord]) -> BTreeSet<u64> {
    gets.iter().map(|r| r.connection).collect()
}

#[tokio::test]
async fn over_tls_with_http2_offered_ranges_arrive_on_separate_connections() {
    let size = 4_000_000;
    let (fx, ca) = tls_fixture(size, EdgeMix::uniform(50_000_000));
    let gets = download(
        &fx,
        &ca,
        ParallelSettings {
            connections: 4,
            initial_connections: 4,
            min_file_bytes: 1024 * 1024,
            chunk_bytes: CHUNK,
            sample_interval: Duration::from_secs(30),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(gets.len(), 4, "{gets:?}");
    assert!(gets.iter().all(|r| r.status == 206));
    assert_eq!(
        connections(&gets).len(),
        4,
        "four stretches, four TCP connections: {gets:?}"
    );
    assert!(
        gets.iter().all(|r| r.http_version == HttpVersion::Http1),
        "bulk bodies do not share an HTTP/2 connection: {gets:?}"
    );
    // The token went to the Hub and never to the CDN, whichever client carried the request.
    assert!(gets.iter().all(|r| r.header("authorization").is_none()));
    let hub_requests: Vec<RequestRecord> = fx
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.host == Host::Hub)
        .collect();
    assert!(!hub_requests.is_empty());
    assert!(hub_requests
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {TOKEN}"))));
}
