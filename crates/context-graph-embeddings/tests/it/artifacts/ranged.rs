//! Parallel ranged download of one large file.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::test_support::pin_resolution;
use context_graph_embeddings::artifacts::{
    ModelArtifactManager, Outcome, ParallelSettings, ProgressKind,
};
use context_graph_embeddings::ModelId;
use hub_emulator::{Fault, FaultRule, FaultTarget, Host, RequestRecord};

use crate::support::{drain, model, partials, Fixture};

const CHUNK: u64 = 256 * 1024;
const CHILD_ENV: &str = "CG_TEST_CHILD_RANGED";

/// Four connections from the start, and no throughput sample during a test's download: no
/// connection is added on a timer to take over part of a stretch (the governor's probes are
/// tested with `adaptive()` below and in `transfer/adapt.rs`), so the tests can count bytes.
fn parallel() -> ParallelSettings {
    ParallelSettings {
        connections: 4,
        initial_connections: 4,
        min_file_bytes: 1024 * 1024,
        chunk_bytes: CHUNK,
        sample_interval: Duration::from_secs(30),
        ..Default::default()
    }
}

fn manager(fx: &Fixture) -> ModelArtifactManager {
    let mut config = fx.config();
    config.parallel = parallel();
    ModelArtifactManager::new(config).unwrap()
}

/// Downloads Multimodal with `settings`, checks that the snapshot holds the served bytes,
/// and returns the file's `GET`s.
async fn download_checked(fx: &Fixture, settings: ParallelSettings) -> Vec<RequestRecord> {
    let mut config = fx.config();
    config.parallel = settings;
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
}

fn body_bytes(requests: &[RequestRecord]) -> u64 {
    requests
        .iter()
        .filter(|r| r.status == 200 || r.status == 206)
        .map(|r| r.body_bytes_sent)
        .sum()
}

#[tokio::test]
async fn a_large_file_comes_in_parallel_ranges_and_verifies() {
    let size = 3_000_000;
    let fx = Fixture::new(&[model(ModelId::Multimodal, size, true)]);
    let served = fx.file(ModelId::Multimodal).clone();
    let manager = manager(&fx);
    let mut events = manager.subscribe_progress();
    manager.download(ModelId::Multimodal).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    let chunks = size.div_ceil(CHUNK);
    assert_eq!(gets.len(), 4, "one request per stretch of chunks: {gets:?}");
    assert!(gets
        .iter()
        .all(|r| r.status == 206 && r.range().is_some_and(|r| r.contains('-'))));
    let starts: Vec<u64> = gets.iter().map(|r| r.range_start().unwrap()).collect();
    assert!(starts.iter().all(|s| s % CHUNK == 0), "{starts:?}");
    for quarter in 0..4 {
        assert!(
            starts.contains(&(quarter * chunks.div_ceil(4) * CHUNK)),
            "four equal stretches to start with: {starts:?}"
        );
    }
    assert_eq!(body_bytes(&gets), size, "nothing sent twice");
    let events = drain(&mut events);
    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == ProgressKind::Progress)
        .map(|e| e.bytes_downloaded)
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&size));
    assert!(partials(&fx.blobs_dir(ModelId::Multimodal)).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(fx.blobs_dir(ModelId::Multimodal))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the blob, no sidecar: {leftovers:?}"
    );
}

#[tokio::test]
async fn new_connections_spread_over_the_addresses_a_cdn_name_resolves_to() {
    // One CDN name with three addresses, as a CDN name resolves to several edges: the
    // emulator listens on two of them, nothing on the third. Each new body connection starts
    // at the next address, so a file's ranges arrive on both live ones; a connection whose
    // first address refuses goes on to the next, so the dead one costs nothing.
    const CDN_HOST: &str = "cdn-spread.emulator.test";
    let live = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
    let dead = Ipv4Addr::new(127, 0, 0, 3);
    let size = 4_000_000;
    let fx = Fixture::with_builder(&[model(ModelId::Multimodal, size, true)], |b| {
        b.cdn_addresses(&live).cdn_host(CDN_HOST)
    });
    let resolved: Vec<SocketAddr> = [live[0], dead, live[1]]
        .iter()
        .map(|ip| SocketAddr::from((*ip, 0)))
        .collect();
    pin_resolution(CDN_HOST, &resolved);
    let gets: Vec<RequestRecord> = download_checked(&fx, parallel())
        .await
        .into_iter()
        .filter(|r| r.host == Host::Cdn)
        .collect();
    assert_eq!(gets.len(), 4, "four stretches: {gets:?}");
    assert!(gets.iter().all(|r| r.status == 206), "{gets:?}");
    assert!(
        gets.iter()
            .all(|r| r.header("host").is_some_and(|h| h.starts_with(CDN_HOST))),
        "every range asked the CDN by its name: {gets:?}"
    );
    let on = |ip: Ipv4Addr| -> u64 {
        gets.iter()
            .filter(|r| r.local_addr.map(|a| a.ip()) == Some(ip.into()))
            .map(|r| r.body_bytes_sent)
            .sum()
    };
    let connections: BTreeSet<u64> = gets.iter().map(|r| r.connection).collect();
    assert_eq!(connections.len(), 4, "{gets:?}");
    for ip in live {
        assert!(
            on(ip) >= size / 4 - CHUNK,
            "{ip} served at least one stretch: {} of {size} bytes; {gets:?}",
            on(ip)
        );
    }
    assert_eq!(on(live[0]) + on(live[1]), size, "no byte sent twice");
}

/// The default settings, for files of test size: a run starts with one stream per file.
fn adaptive() -> ParallelSettings {
    ParallelSettings {
        min_file_bytes: 1024 * 1024,
        chunk_bytes: CHUNK,
        ..ParallelSettings::default()
    }
}

#[tokio::test]
async fn a_run_starts_with_the_two_halves_of_a_large_file_and_one_request_for_a_smaller_one() {
    // No sample is taken before the files are done (a long sample interval), so this is what
    // a file costs before anything is learned. A file of at least twice the parallel threshold
    // is asked for in two halves (the second for the first probe's connection, so that it
    // cuts no request short); a file between the threshold and twice it in one request. No
    // byte is sent twice. Whether a
    // probe pays is `transfer/adapt.rs`'s decision, unit-tested there on link models.
    let size = 24_000_000;
    let small = 1_500_000;
    let fx = Fixture::new(&[
        model(ModelId::Multimodal, size, true),
        model(ModelId::Entity, small, true),
    ]);
    let settings = ParallelSettings {
        sample_interval: Duration::from_secs(30),
        ..adaptive()
    };
    let gets = download_checked(&fx, settings.clone()).await;
    let mut ranges: Vec<_> = gets.iter().map(|r| r.range().unwrap_or("none")).collect();
    ranges.sort_by_key(|r| r.len());
    let half = size.div_ceil(CHUNK).div_ceil(2) * CHUNK;
    let mut expected = [
        format!("bytes=0-{}", half - 1),
        format!("bytes={half}-{}", size - 1),
    ];
    expected.sort_by_key(|r| r.len());
    assert_eq!(ranges, expected);
    assert_eq!(body_bytes(&gets), size, "no byte sent twice");
    assert!(small >= settings.min_file_bytes && small < 2 * settings.min_file_bytes);
    let mut config = fx.config();
    config.parallel = settings;
    ModelArtifactManager::new(config)
        .unwrap()
        .download(ModelId::Entity)
        .await
        .unwrap();
    let served = fx.file(ModelId::Entity);
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Entity)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    assert_eq!(gets.len(), 1, "one request for the smaller file: {gets:?}");
    assert_eq!(body_bytes(&gets), small);
}

#[tokio::test]
async fn a_per_connection_cap_gets_many_connections() {
    // 4 MB/s per connection: one stream would need 4 s for 16 MB. Connections are added
    // while they pay, so the file comes much faster, over many ranges.
    let size = 16_000_000;
    let fx = Fixture::new(&[model(ModelId::Multimodal, size, true)]);
    let served = fx.file(ModelId::Multimodal).clone();
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::get(&served.sha256),
        Fault::BandwidthCap {
            bytes_per_sec: 4_000_000,
        },
    ));
    let mut config = fx.config();
    config.parallel = adaptive();
    let started = Instant::now();
    ModelArtifactManager::new(config)
        .unwrap()
        .download(ModelId::Multimodal)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    assert!(gets.len() >= 8, "connections were added: {}", gets.len());
    assert!(
        took < Duration::from_millis(2000),
        "{took:?}: faster than one stream's 4 s by far"
    );
}

fn fell_back_to_one_stream(gets: &[RequestRecord]) -> bool {
    gets.iter()
        .any(|r| r.range().is_none_or(|range| range.ends_with('-')))
}

#[tokio::test]
async fn a_server_that_ignores_ranges_drops_the_download_to_one_stream() {
    let size = 2_000_000;
    let fx = Fixture::new(&[model(ModelId::Multimodal, size, false)]);
    let served = fx.file(ModelId::Multimodal).clone();
    // Let two ranges through, then answer 200 with the whole file.
    fx.hub.add_fault(
        FaultRule::new(FaultTarget::get(&served.sha256), Fault::IgnoreRange)
            .skip(2)
            .times(2),
    );
    let gets = download_checked(&fx, parallel()).await;
    assert!(fell_back_to_one_stream(&gets), "{gets:?}");
}

#[tokio::test]
async fn a_refused_range_hands_its_stretch_to_the_other_connections() {
    let size: u64 = 2_000_000;
    let second_stretch = size.div_ceil(CHUNK).div_ceil(4) * CHUNK;
    // A 429, and a 403 that a fresh URL gets again (on the CDN, so it is resolved anew first).
    for (fault, lfs, times) in [
        (Fault::status(429), false, 1),
        (Fault::status(403), true, 2),
    ] {
        let fx = Fixture::new(&[model(ModelId::Multimodal, size, lfs)]);
        let served = fx.file(ModelId::Multimodal).clone();
        // Only the connection that starts the second stretch is refused, whatever the order
        // in which the four first requests arrive.
        fx.hub.add_fault(
            FaultRule::new(
                FaultTarget::get(&served.sha256).range_from(second_stretch),
                fault.clone(),
            )
            .times(times),
        );
        manager(&fx)
            .download(ModelId::Multimodal)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(
            std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
            served.content,
            "{fault:?}"
        );
        let gets = fx.gets(&served.sha256);
        let refused = gets.iter().filter(|r| r.status >= 400).count();
        assert_eq!(refused, times as usize, "{fault:?}: {gets:?}");
        assert!(
            gets.iter()
                .any(|r| r.status == 206 && r.range_start() == Some(second_stretch)),
            "{fault:?}: another connection fetched the refused stretch: {gets:?}"
        );
        assert!(
            !fell_back_to_one_stream(&gets),
            "{fault:?}: the other connections went on in ranges: {gets:?}"
        );
        assert_eq!(body_bytes(&gets), size, "{fault:?}: nothing fetched twice");
    }
}

#[tokio::test]
async fn when_the_last_connection_is_refused_the_file_goes_on_as_one_stream() {
    let size: u64 = 2_000_000;
    let fx = Fixture::new(&[model(ModelId::Multimodal, size, false)]);
    let served = fx.file(ModelId::Multimodal).clone();
    // Two connections, two stretches. The second stretch is refused twice: to its own
    // connection, and to the one it is handed to (or, when the first connection had already
    // finished, to the one stream that follows).
    let half = size.div_ceil(CHUNK).div_ceil(2) * CHUNK;
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&served.sha256).range_from(half),
            Fault::status(429),
        )
        .times(2),
    );
    let gets = download_checked(
        &fx,
        ParallelSettings {
            connections: 2,
            initial_connections: 2,
            ..parallel()
        },
    )
    .await;
    assert!(fell_back_to_one_stream(&gets), "{gets:?}");
    assert_eq!(body_bytes(&gets), size, "nothing fetched twice");
}

#[tokio::test]
async fn cut_ranges_resume_where_they_stopped() {
    let size = 2_000_000;
    let fx = Fixture::new(&[model(ModelId::Multimodal, size, true)]);
    let served = fx.file(ModelId::Multimodal).clone();
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&served.sha256),
            Fault::CutAfter { bytes: 100_000 },
        )
        .times(3),
    );
    let gets = download_checked(&fx, parallel()).await;
    let continued = gets
        .iter()
        .filter_map(RequestRecord::range_start)
        .filter(|start| start % CHUNK != 0)
        .count();
    assert_eq!(continued, 3, "each cut range continues mid-chunk: {gets:?}");
    assert_eq!(body_bytes(&gets), size, "nothing fetched twice");
}

#[tokio::test]
async fn a_flipped_byte_in_one_range_is_caught_and_the_file_fetched_again() {
    let size = 2_000_000;
    let fx = Fixture::new(&[model(ModelId::Multimodal, size, true)]);
    let served = fx.file(ModelId::Multimodal).clone();
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get(&served.sha256),
            Fault::FlipByte { offset: 1_500_000 },
        )
        .times(1),
    );
    let manager = manager(&fx);
    let mut events = manager.subscribe_progress();
    manager.download(ModelId::Multimodal).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
        served.content
    );
    let events = drain(&mut events);
    assert!(events.iter().any(|e| matches!(&e.kind, ProgressKind::Retrying { reason, .. } if reason.contains("SHA-256 mismatch"))));
}

/// Body of the child process of the kill test (does nothing unless the parent set the variable).
#[test]
fn child_ranged_download_for_kill_test() {
    crate::support::child_download(CHILD_ENV, parallel());
}

#[tokio::test]
async fn completed_ranges_survive_a_killed_process() {
    let size = 8 * CHUNK * 4;
    let fx = Fixture::new(&[model(ModelId::Multimodal, size, true)]);
    let served = fx.file(ModelId::Multimodal).clone();
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::get(&served.sha256),
        Fault::BandwidthCap {
            bytes_per_sec: 1_000_000,
        },
    ));
    let child = fx.spawn_child(
        "artifacts::ranged::child_ranged_download_for_kill_test",
        CHILD_ENV,
    );
    let blobs = fx.blobs_dir(ModelId::Multimodal);
    let partial = crate::support::kill_after_chunks(child, &blobs, 4, CHUNK).await;
    let recorded_progress = context_graph_embeddings::artifacts::test_support::RangeProgress::read(
        &context_graph_embeddings::artifacts::test_support::sidecar_path(&partial),
    )
    .unwrap();
    let recorded = recorded_progress.total();
    assert!(recorded >= 4 * CHUNK && recorded < size);
    assert!(!fx.blob_path(ModelId::Multimodal).exists());

    fx.hub.clear_faults();
    // The emulator logs a request when its response ends: let it notice the killed child's
    // connections close before the log is cleared.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.hub.clear_requests();
    let manager = manager(&fx);
    let mut events = manager.subscribe_progress();
    manager.download(ModelId::Multimodal).await.unwrap();
    assert_eq!(
        std::fs::read(fx.snapshot_path(ModelId::Multimodal)).unwrap(),
        served.content
    );
    let gets = fx.gets(&served.sha256);
    // No byte the sidecar recorded is sent again.
    let served_spans =
        crate::support::assert_recorded_bytes_not_resent(&gets, &recorded_progress, CHUNK);
    // And every byte it did not record exactly once.
    assert_eq!(
        body_bytes(&gets),
        size - recorded,
        "{served_spans:?} {recorded_progress:?}"
    );
    let events = drain(&mut events);
    assert!(events.iter().any(
        |e| matches!(e.kind, ProgressKind::Started { resumed_from } if resumed_from == recorded)
    ));
    assert!(events.iter().any(|e| matches!(
        e.kind,
        ProgressKind::Completed {
            outcome: Outcome::Resumed,
            ..
        }
    )));
}
