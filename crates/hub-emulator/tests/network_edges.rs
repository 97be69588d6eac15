//! The CDN as users meet it: TLS with HTTP/2 offered by ALPN, a pace per TCP connection
//! shared by all its streams, and edges of mixed speed drawn per connection. The client is
//! reqwest (hyper's HTTP/1.1 and HTTP/2 over rustls), the stack the library uses.

use std::time::{Duration, Instant};

use hub_emulator::{
    synth, Alpn, CdnTls, EdgeMix, Fault, FaultRule, FaultTarget, Host, HttpVersion, HubBuilder,
    HubEmulator, RepoSpec,
};

const REPO: &str = "org/model";
const FILE: &str = "model.safetensors";

fn hub(size: u64, tls: Option<CdnTls>, edges: Option<EdgeMix>) -> (HubEmulator, Vec<u8>) {
    let content = synth::safetensors(size, 3);
    let mut builder = HubBuilder::new().repo(RepoSpec::new(REPO).file(FILE, content.clone()));
    if let Some(tls) = tls {
        builder = builder.cdn_tls(tls);
    }
    if let Some(edges) = edges {
        builder = builder.edge_mix(edges);
    }
    (builder.start().unwrap(), content)
}

fn lfs_url(hub: &HubEmulator) -> String {
    let info = hub.file_info(REPO, "main", FILE).unwrap();
    format!("{}/lfs/{}", hub.cdn_origin(), info.sha256)
}

fn client(tls: Option<&CdnTls>, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(tls) = tls {
        let ca = reqwest::Certificate::from_pem(tls.ca_pem().as_bytes()).unwrap();
        builder = builder.tls_certs_only([ca]);
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// GETs `ranges` of `url` at once and returns each body.
async fn get_ranges(client: &reqwest::Client, url: &str, ranges: &[(u64, u64)]) -> Vec<Vec<u8>> {
    let requests = ranges.iter().map(|(start, end)| {
        let request = client
            .get(url)
            .header("Range", format!("bytes={start}-{end}"));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 206);
            response.bytes().await.unwrap().to_vec()
        }
    });
    futures_util::future::join_all(requests).await
}

fn cdn_gets(hub: &HubEmulator) -> Vec<hub_emulator::RequestRecord> {
    hub.requests()
        .into_iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET")
        .collect()
}

fn quarters(len: u64) -> Vec<(u64, u64)> {
    (0..4)
        .map(|i| (i * len / 4, (i + 1) * len / 4 - 1))
        .collect()
}

#[tokio::test]
async fn tls_offers_http2_and_every_stream_shares_one_connection() {
    let tls = CdnTls::generate().unwrap();
    let (hub, content) = hub(1 << 20, Some(tls.clone()), None);
    assert!(hub.cdn_origin().starts_with("https://127.0.0.1:"));
    let url = lfs_url(&hub);
    let ranges = quarters(content.len() as u64);
    let bodies = get_ranges(&client(Some(&tls), false), &url, &ranges).await;
    for ((start, end), body) in ranges.iter().zip(&bodies) {
        assert_eq!(body.as_slice(), &content[*start as usize..=*end as usize]);
    }
    let gets = cdn_gets(&hub);
    assert_eq!(gets.len(), 4);
    assert!(
        gets.iter().all(|r| r.http_version == HttpVersion::Http2),
        "{gets:?}"
    );
    // HTTP/2: four ranges, one TCP connection.
    assert!(gets.iter().all(|r| r.connection == gets[0].connection));
    assert!(gets
        .iter()
        .all(|r| r.status == 206 && r.connection_pace.is_none()));
}

#[tokio::test]
async fn http1_over_tls_opens_a_connection_per_concurrent_request() {
    let tls = CdnTls::generate().unwrap();
    let (hub, content) = hub(1 << 20, Some(tls.clone()), None);
    let url = lfs_url(&hub);
    let ranges = quarters(content.len() as u64);
    // A client that offers only http/1.1 by ALPN.
    let bodies = get_ranges(&client(Some(&tls), true), &url, &ranges).await;
    assert_eq!(bodies.concat(), content);
    let gets = cdn_gets(&hub);
    assert!(gets.iter().all(|r| r.http_version == HttpVersion::Http1));
    let mut connections: Vec<u64> = gets.iter().map(|r| r.connection).collect();
    connections.sort_unstable();
    connections.dedup();
    assert_eq!(connections.len(), 4, "{gets:?}");
}

#[tokio::test]
async fn a_server_offering_only_http1_gets_http1_from_an_http2_client() {
    let tls = CdnTls::generate().unwrap().alpn(Alpn::Http1Only);
    let (hub, content) = hub(64 * 1024, Some(tls.clone()), None);
    let bodies = get_ranges(&client(Some(&tls), false), &lfs_url(&hub), &[(0, 999)]).await;
    assert_eq!(bodies[0], content[..1000]);
    assert_eq!(cdn_gets(&hub)[0].http_version, HttpVersion::Http1);
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let tls = CdnTls::generate().unwrap();
    let (hub, _) = hub(4096, Some(tls), None);
    let error = client(None, false)
        .get(lfs_url(&hub))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    assert!(cdn_gets(&hub).is_empty());
}

#[tokio::test]
async fn the_pace_is_per_connection_and_shared_by_its_streams() {
    // 4 × 128 KiB at 1 MB/s on one HTTP/2 connection cannot take less than about half a
    // second; paced per response it would take an eighth of that.
    let tls = CdnTls::generate().unwrap();
    let (hub, content) = hub(
        512 * 1024,
        Some(tls.clone()),
        Some(EdgeMix::uniform(1_000_000)),
    );
    let url = lfs_url(&hub);
    let client = client(Some(&tls), false);
    // Warm the connection up (handshake outside the measured part).
    get_ranges(&client, &url, &[(0, 0)]).await;
    let started = Instant::now();
    let bodies = get_ranges(&client, &url, &quarters(content.len() as u64)).await;
    let elapsed = started.elapsed();
    assert_eq!(bodies.concat(), content);
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    let gets = cdn_gets(&hub);
    assert!(gets.iter().all(|r| r.connection == gets[0].connection));
    assert!(gets.iter().all(|r| r.connection_pace == Some(1_000_000)));
}

#[tokio::test]
async fn each_new_connection_draws_its_edge_from_the_mix() {
    let mix: EdgeMix = "4MB/s:2,38MB/s:1".parse().unwrap();
    let mix = mix.seed(11);
    let (hub, content) = hub(64 * 1024, None, Some(mix.clone()));
    let url = lfs_url(&hub);
    for _ in 0..6 {
        // A new client each time: a new TCP connection.
        let bodies = get_ranges(&client(None, true), &url, &[(0, 4095)]).await;
        assert_eq!(bodies[0], content[..4096]);
    }
    let gets = cdn_gets(&hub);
    assert_eq!(gets.len(), 6);
    let mut drawn = Vec::new();
    for (n, record) in gets.iter().enumerate() {
        // Only CDN connections were opened, so connection ids count CDN connections.
        assert_eq!(record.connection, n as u64 + 1);
        assert_eq!(record.connection_pace, Some(mix.draw(record.connection)));
        drawn.push(record.connection_pace.unwrap());
    }
    assert!(drawn.iter().all(|r| *r == 4_000_000 || *r == 38_000_000));
}

#[tokio::test]
async fn a_cut_on_an_http2_stream_resets_only_that_stream() {
    let tls = CdnTls::generate().unwrap();
    let (hub, content) = hub(256 * 1024, Some(tls.clone()), None);
    hub.add_fault(
        FaultRule::new(
            FaultTarget::get(FILE).range_from(0),
            Fault::CutAfter { bytes: 1000 },
        )
        .times(1),
    );
    let url = lfs_url(&hub);
    let client = client(Some(&tls), false);
    let cut = client
        .get(&url)
        .header("Range", "bytes=0-99999")
        .send()
        .await
        .unwrap();
    assert!(cut.bytes().await.is_err());
    // The connection lives on: the next stream gets its bytes.
    let whole = get_ranges(&client, &url, &[(100_000, 199_999)]).await;
    assert_eq!(whole[0], content[100_000..200_000]);
    let gets = cdn_gets(&hub);
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[0].body_bytes_sent, 1000);
    assert_eq!(gets[0].connection, gets[1].connection);
}

#[tokio::test]
async fn connections_beyond_the_limit_get_429() {
    let (hub, content) = {
        let content = synth::safetensors(1 << 20, 5);
        let hub = HubBuilder::new()
            .repo(RepoSpec::new(REPO).file(FILE, content.clone()))
            .edge_mix(EdgeMix::uniform(1_000_000))
            .cdn_connection_limit(2)
            .start()
            .unwrap();
        (hub, content)
    };
    let url = lfs_url(&hub);
    // Three connections at once, each busy for about 0.2 s: one is beyond the limit.
    let requests = (0..3u64).map(|i| {
        let url = url.clone();
        async move {
            let response = client(None, true)
                .get(&url)
                .header(
                    "Range",
                    format!("bytes={}-{}", i * 200_000, i * 200_000 + 199_999),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.bytes().await.unwrap();
            (status, retry_after, body)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(
        refused.len(),
        1,
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert_eq!(refused[0].1.as_deref(), Some("1"));
    for (i, (status, _, body)) in answers.iter().enumerate() {
        if *status == 206 {
            assert_eq!(body.as_ref(), &content[i * 200_000..i * 200_000 + 200_000]);
        }
    }
    // Once they are closed, a new connection is served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bodies = get_ranges(&client(None, true), &url, &[(0, 999)]).await;
    assert_eq!(bodies[0], content[..1000]);
}
