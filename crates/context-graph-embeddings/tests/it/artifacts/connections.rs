//! Parallel means separate TCP connections, on the network users really have: a CDN over TLS
//! that offers HTTP/2 by ALPN and paces each TCP connection (the emulator's `cdn_tls` and
//! `edge_mix`, whose request log names each request's connection).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::test_support::{sidecar_path, RangeProgress};
use context_graph_embeddings::artifacts::{ModelArtifactManager, ParallelSettings};
use context_graph_embeddings::ModelId;
use hub_emulator::{CdnTls, EdgeMix, Host, HttpVersion, HubBuilder, RequestRecord};

use crate::support::{model, Fixture};

const CHUNK: u64 = 256 * 1024;
const TOKEN: &str = "hf_connections_test_token";
const CHILD_ENV: &str = "CG_TEST_CHILD_MIXED_EDGES";

/// Four connections from the start and no throughput sample: what the tests count is the
/// work of the connections, not the governor's probes.
fn fixed_four() -> ParallelSettings {
    ParallelSettings {
        connections: 4,
        initial_connections: 4,
        min_file_bytes: 1024 * 1024,
        chunk_bytes: CHUNK,
        sample_interval: Duration::from_secs(30),
        ..Default::default()
    }
}

/// A fixture whose CDN speaks TLS (HTTP/2 offered) and paces each connection at `edges`.
fn tls_fixture(size: u64, edges: EdgeMix) -> (Fixture, std::path::PathBuf) {
    tls_fixture_with(size, edges, |b| b)
}

/// [`tls_fixture`] with a further hook on the emulator's builder.
fn tls_fixture_with(
    size: u64,
    edges: EdgeMix,
    more: impl Fn(HubBuilder) -> HubBuilder,
) -> (Fixture, std::path::PathBuf) {
    let tls = CdnTls::generate().unwrap();
    let ca_pem = tls.ca_pem().to_owned();
    let fx = Fixture::with_builder(&[model(ModelId::Multimodal, size, true)], move |b| {
        more(b.cdn_tls(tls.clone()).edge_mix(edges.clone()))
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
    let gets = download(&fx, &ca, fixed_four()).await;
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

/// Bytes the emulator sent for `gets`, split by the pace of their connection: `(slow, all)`.
fn bytes_by_pace(gets: &[RequestRecord], slow: u64) -> (u64, u64) {
    let sent = |r: &RequestRecord| r.body_bytes_sent;
    let all = gets.iter().map(sent).sum();
    let on_slow = gets
        .iter()
        .filter(|r| r.connection_pace == Some(slow))
        .map(sent)
        .sum();
    (on_slow, all)
}

#[tokio::test]
async fn with_mixed_edges_slow_connections_hold_a_bounded_share() {
    // Twenty times slower than 2 MB/s had a slow edge carry ~1 MB before it was judged
    // (0.5 s) and more on a loaded machine; at 1 MB/s the bound holds with room under load,
    // while holding on to the first stretches would still carry three quarters of the file.
    const SLOW: u64 = 1_000_000;
    const FAST: u64 = 40_000_000;
    let size: u64 = 12_000_000;
    // A seed whose first four CDN connections include at least three slow edges: holding on
    // to their first stretches, they would carry three quarters of the file.
    let mix: EdgeMix = format!("{SLOW}:2,{FAST}:1").parse().unwrap();
    let seed = (0..)
        .find(|seed| {
            let mix = mix.clone().seed(*seed);
            (1..=4).filter(|n| mix.draw(*n) == SLOW).count() >= 3
        })
        .unwrap();
    let (fx, ca) = tls_fixture(size, mix.seed(seed));
    let gets = download(&fx, &ca, fixed_four()).await;
    let (on_slow, all) = bytes_by_pace(&gets, SLOW);
    assert!(
        on_slow * 2 <= size,
        "slow edges carried {on_slow} of {size} bytes: {gets:#?}"
    );
    // Slow connections were closed and their stretches went on over new connections, each
    // from where the bytes handed to the writer ended: what the emulator sent twice is at most
    // what was in flight when a response was dropped.
    let replaced = gets.len().saturating_sub(4) as u64;
    assert!(replaced > 0, "{gets:#?}");
    assert!(
        all <= size + replaced * 256 * 1024,
        "{all} bytes sent for {size} with {replaced} replacements"
    );
    let mut starts: Vec<u64> = gets.iter().filter_map(RequestRecord::range_start).collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(
        starts.len(),
        gets.len(),
        "no range asked for twice from the same byte"
    );
}

#[tokio::test]
async fn a_server_that_refuses_extra_connections_gets_no_more_than_it_allows() {
    // Two connections at once, 429 to the others (nginx's `limit_conn`).
    let size: u64 = 4_000_000;
    let (fx, ca) = tls_fixture_with(size, EdgeMix::uniform(20_000_000), |b| {
        b.cdn_connection_limit(2)
    });
    let gets = download(
        &fx,
        &ca,
        ParallelSettings {
            connections: 8,
            initial_connections: 4,
            min_file_bytes: 1024 * 1024,
            chunk_bytes: CHUNK,
            sample_interval: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await;
    let refused = gets.iter().filter(|r| r.status == 429).count();
    // The two connections of the first four beyond the limit are refused; the run then
    // backs off for good instead of probing the server again.
    assert!((1..=2).contains(&refused), "{gets:#?}");
    let served: u64 = gets
        .iter()
        .filter(|r| r.status == 206)
        .map(|r| r.body_bytes_sent)
        .sum();
    assert_eq!(served, size, "every byte once: {gets:#?}");
    let refused_at = gets.iter().rposition(|r| r.status == 429).unwrap();
    let later: BTreeSet<u64> = gets[refused_at + 1..]
        .iter()
        .map(|r| r.connection)
        .collect();
    assert!(later.len() <= 2, "{gets:#?}");
}

/// Body of the child process of the mixed-edges kill test (does nothing unless the parent set
/// the variable).
#[test]
fn child_mixed_edges_download_for_kill_test() {
    crate::support::child_download(CHILD_ENV, fixed_four());
}

#[tokio::test]
async fn a_run_killed_on_mixed_edges_resumes_without_fetching_recorded_bytes() {
    let size = 32 * CHUNK;
    // Slow edges of 1 MB/s beside fast ones of 20 MB/s: connections are replaced while the
    // child runs and while the resumed run does.
    let mix: EdgeMix = "1MB/s:2,20MB/s:1".parse().unwrap();
    let fx = Fixture::with_builder(&[model(ModelId::Multimodal, size, true)], move |b| {
        b.edge_mix(mix.clone().seed(3))
    });
    let served = fx.file(ModelId::Multimodal).clone();
    let child = fx.spawn_child(
        "artifacts::connections::child_mixed_edges_download_for_kill_test",
        CHILD_ENV,
    );
    let blobs = fx.blobs_dir(ModelId::Multimodal);
    let partial = crate::support::kill_after_chunks(child, &blobs, 4, CHUNK).await;
    let recorded = RangeProgress::read(&sidecar_path(&partial)).unwrap();
    assert!(recorded.total() >= 4 * CHUNK && recorded.total() < size);
    // Let the emulator see the killed child's connections close before the log is cleared.
    let quiet = Instant::now() + Duration::from_secs(5);
    while fx.hub.open_connections() > 0 && Instant::now() < quiet {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fx.hub.clear_requests();
    let mut config = fx.config();
    config.parallel = fixed_four();
    ModelArtifactManager::new(config)
        .unwrap()
        .download(ModelId::Multimodal)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    let spans = crate::support::assert_recorded_bytes_not_resent(&gets, &recorded, CHUNK);
    let sent: u64 = gets.iter().map(|r| r.body_bytes_sent).sum();
    let replaced = gets.len().saturating_sub(4) as u64;
    assert!(
        sent >= size - recorded.total() && sent <= size - recorded.total() + replaced * 256 * 1024,
        "{sent} bytes sent for {} missing, {replaced} replacements: {spans:?}",
        size - recorded.total()
    );
}
