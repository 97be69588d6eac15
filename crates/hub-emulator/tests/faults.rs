//! Every [`Fault`], seen from a raw HTTP client, plus the `skip`/`times`/target semantics.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hub_emulator::{synth, Fault, FaultRule, FaultTarget, Host};

const RESOLVE_CONFIG: &str = "/org/model/resolve/main/config.json";

fn cdn_path() -> String {
    format!("/lfs/{}", synth::sha256_hex(&weights()))
}

#[test]
fn status_with_retry_after_then_success() {
    let hub = standard_hub(true);
    hub.add_fault(
        FaultRule::new(
            FaultTarget::head("config.json"),
            Fault::Status {
                code: 503,
                retry_after_secs: Some(3),
                ratelimit_reset_secs: None,
            },
        )
        .times(2),
    );
    for _ in 0..2 {
        let reply = head(&hub.endpoint(), RESOLVE_CONFIG);
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("3"));
        assert!(reply.header("x-repo-commit").is_none());
    }
    // GET is not targeted, and after two HEADs the rule is spent.
    assert_eq!(get(&hub.endpoint(), RESOLVE_CONFIG).status, 200);
    assert_eq!(head(&hub.endpoint(), RESOLVE_CONFIG).status, 200);
    let statuses: Vec<u16> = hub.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200, 200]);
}

#[test]
fn status_429_with_rate_limit_headers() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(
        FaultTarget::get("model.safetensors"),
        Fault::Status {
            code: 429,
            retry_after_secs: None,
            ratelimit_reset_secs: Some(7),
        },
    ));
    let reply = get(&hub.endpoint(), "/org/model/resolve/main/model.safetensors");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("ratelimit"), Some("\"api\";r=0;t=7"));
    assert!(reply
        .header("ratelimit-policy")
        .unwrap()
        .contains("\"api\""));
    assert!(reply.json()["error"].is_string());
    // The rule follows the file to the CDN (the blob belongs to org/model/model.safetensors).
    assert_eq!(get(&hub.cdn_origin(), &cdn_path()).status, 429);
    hub.clear_faults();
    assert_eq!(get(&hub.cdn_origin(), &cdn_path()).status, 200);
}

#[test]
fn skip_lets_requests_through_first() {
    let hub = standard_hub(true);
    hub.add_fault(
        FaultRule::new(FaultTarget::any(), Fault::status(500))
            .skip(2)
            .times(1),
    );
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&hub.endpoint(), RESOLVE_CONFIG).status)
        .collect();
    assert_eq!(statuses, [200, 200, 500, 200]);
}

#[test]
fn host_filter() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(
        FaultTarget::any().on_host(Host::Cdn),
        Fault::status(502),
    ));
    assert_eq!(get(&hub.endpoint(), RESOLVE_CONFIG).status, 200);
    assert_eq!(
        head(&hub.endpoint(), "/org/model/resolve/main/model.safetensors").status,
        302
    );
    assert_eq!(get(&hub.cdn_origin(), &cdn_path()).status, 502);
}

#[test]
fn cut_after_closes_mid_body() {
    let hub = standard_hub(true);
    hub.add_fault(
        FaultRule::new(
            FaultTarget::get("model.safetensors"),
            Fault::CutAfter { bytes: 1000 },
        )
        .times(1),
    );
    // The hub's 302 carries no file bytes, so the rule waits for the CDN body.
    let redirect = get(&hub.endpoint(), "/org/model/resolve/main/model.safetensors");
    assert_eq!(redirect.status, 302);
    let mut conn = Conn::open(&hub.cdn_origin());
    let reply = conn.send("GET", &cdn_path(), &[], b"");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_length(), Some(WEIGHTS_LEN));
    assert!(reply.short);
    assert_eq!(reply.body, &weights()[..1000]);
    assert!(conn.is_closed());
    let log = hub.requests();
    assert_eq!(log.last().unwrap().body_bytes_sent, 1000);
    // Spent: the next download is whole, and a resumed range works.
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &cdn_path(),
        &[("Range", "bytes=1000-")],
    );
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (206, &weights()[1000..])
    );
}

#[test]
fn stall_after_pauses_then_finishes() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(
        FaultTarget::get("config.json"),
        Fault::StallAfter {
            bytes: 5,
            stall: Duration::from_millis(600),
        },
    ));
    let started = Instant::now();
    let reply = get(&hub.endpoint(), RESOLVE_CONFIG);
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.body, CONFIG.as_bytes());
    assert!(!reply.short);
}

#[test]
fn stall_is_observable_between_bytes() {
    use std::io::Read;
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(
        FaultTarget::get("lfs"),
        Fault::StallAfter {
            bytes: 100,
            stall: Duration::from_millis(800),
        },
    ));
    let mut stream =
        std::net::TcpStream::connect(hub.cdn_origin().trim_start_matches("http://")).unwrap();
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", cdn_path());
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 65536];
    let body_len = |received: &[u8]| {
        received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| received.len() - (i + 4))
    };
    while body_len(&received).is_none_or(|n| n < 100) {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early");
        received.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        body_len(&received),
        Some(100),
        "exactly 100 body bytes before the stall"
    );
    // Nothing more arrives for a while...
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        stream.read(&mut chunk).is_err(),
        "data arrived during the stall"
    );
    // ...then the rest of the body.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while body_len(&received) < Some(WEIGHTS_LEN as usize) {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early");
        received.extend_from_slice(&chunk[..n]);
    }
    let head_len = received.len() - WEIGHTS_LEN as usize;
    assert_eq!(&received[head_len..], weights());
}

#[test]
fn ignore_range_answers_200_with_everything() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(FaultTarget::get("lfs"), Fault::IgnoreRange).times(1));
    // Requests without Range do not use up the rule.
    assert_eq!(get(&hub.cdn_origin(), &cdn_path()).status, 200);
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &cdn_path(),
        &[("Range", "bytes=500-")],
    );
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-range").is_none());
    assert_eq!(reply.body, weights());
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &cdn_path(),
        &[("Range", "bytes=500-")],
    );
    assert_eq!(reply.status, 206);
}

#[test]
fn flip_byte_at_an_absolute_offset() {
    let hub = standard_hub(true);
    let weights = weights();
    hub.add_fault(
        FaultRule::new(FaultTarget::get("lfs"), Fault::FlipByte { offset: 5000 }).times(2),
    );
    // A span without the offset is untouched and does not count.
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &cdn_path(),
        &[("Range", "bytes=0-99")],
    );
    assert_eq!(reply.body, &weights[..100]);
    let reply = get(&hub.cdn_origin(), &cdn_path());
    assert_eq!(reply.body.len(), weights.len());
    let differing: Vec<usize> = (0..weights.len())
        .filter(|&i| reply.body[i] != weights[i])
        .collect();
    assert_eq!(differing, [5000]);
    assert_eq!(reply.body[5000], !weights[5000]);
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &cdn_path(),
        &[("Range", "bytes=4990-5009")],
    );
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body[10], !weights[5000]);
    assert_eq!(&reply.body[..10], &weights[4990..5000]);
    assert_eq!(&reply.body[11..], &weights[5001..5010]);
    // Spent.
    assert_eq!(get(&hub.cdn_origin(), &cdn_path()).body, weights);
}

#[test]
fn content_length_lies() {
    let hub = standard_hub(true);
    hub.add_fault(
        FaultRule::new(
            FaultTarget::get("config.json"),
            Fault::ContentLengthDelta { delta: -10 },
        )
        .times(1),
    );
    hub.add_fault(
        FaultRule::new(
            FaultTarget::get("config.json"),
            Fault::ContentLengthDelta { delta: 10 },
        )
        .skip(1)
        .times(1),
    );
    let len = CONFIG.len() as u64;
    // Announces less than it sends: the extra bytes follow, then the connection closes.
    let mut conn = Conn::open(&hub.endpoint());
    let reply = conn.send("GET", RESOLVE_CONFIG, &[], b"");
    assert_eq!(reply.content_length(), Some(len - 10));
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(
        [reply.body.clone(), reply.extra.clone()].concat(),
        CONFIG.as_bytes()
    );
    assert!(conn.is_closed());
    // Announces more than it sends: the body ends short.
    let mut conn = Conn::open(&hub.endpoint());
    let reply = conn.send("GET", RESOLVE_CONFIG, &[], b"");
    assert_eq!(reply.content_length(), Some(len + 10));
    assert!(reply.short);
    assert_eq!(reply.body, CONFIG.as_bytes());
    assert_eq!(hub.requests()[1].body_bytes_sent, len);
    // HEAD is never affected by body faults.
    hub.add_fault(FaultRule::new(
        FaultTarget::any(),
        Fault::ContentLengthDelta { delta: 1 },
    ));
    assert_eq!(
        head(&hub.endpoint(), RESOLVE_CONFIG).content_length(),
        Some(len)
    );
}

#[test]
fn html_error_page_with_status_200() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(FaultTarget::any(), Fault::HtmlErrorPage200));
    for method in ["HEAD", "GET"] {
        let reply = send(&hub.endpoint(), method, RESOLVE_CONFIG, &[]);
        assert_eq!(reply.status, 200);
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(reply.header("x-repo-commit").is_none());
        if method == "GET" {
            let text = String::from_utf8(reply.body.clone()).unwrap();
            assert!(
                text.starts_with("<html>") && text.contains("error"),
                "{text}"
            );
            assert_eq!(reply.content_length(), Some(text.len() as u64));
        }
    }
}

#[test]
fn redirect_loop_points_at_itself() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(FaultTarget::any(), Fault::RedirectLoop));
    let reply = head(&hub.endpoint(), "/org/model/resolve/main/config.json?a=b");
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location").unwrap(),
        format!("{}/org/model/resolve/main/config.json?a=b", hub.endpoint())
    );
    let reply = get(&hub.cdn_origin(), &cdn_path());
    assert_eq!(
        reply.header("location").unwrap(),
        format!("{}{}", hub.cdn_origin(), cdn_path())
    );
}

#[test]
fn bandwidth_cap_paces_the_body() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(
        FaultTarget::any(),
        Fault::BandwidthCap {
            bytes_per_sec: 100_000,
        },
    ));
    let started = Instant::now();
    let reply = get(&hub.cdn_origin(), &cdn_path());
    let elapsed = started.elapsed();
    assert_eq!(reply.body, weights());
    // 100 kB at 100 kB/s: the last piece is due after about 0.95 s.
    assert!(elapsed >= Duration::from_millis(850), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn reset_before_response() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(FaultTarget::head("config"), Fault::ResetBeforeResponse).times(1));
    let mut conn = Conn::open(&hub.endpoint());
    conn.write_request("HEAD", RESOLVE_CONFIG, &[], b"");
    assert!(conn.try_read_reply(true).is_none());
    assert_eq!(head(&hub.endpoint(), RESOLVE_CONFIG).status, 200);
    let log = hub.requests();
    assert_eq!((log[0].status, log[0].body_bytes_sent), (0, 0));
    assert_eq!(log[1].status, 200);
}

#[test]
fn body_faults_combine() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(
        FaultTarget::get("lfs"),
        Fault::FlipByte { offset: 10 },
    ));
    hub.add_fault(FaultRule::new(
        FaultTarget::get("lfs"),
        Fault::CutAfter { bytes: 20 },
    ));
    let reply = get(&hub.cdn_origin(), &cdn_path());
    let weights = weights();
    assert!(reply.short);
    assert_eq!(reply.body.len(), 20);
    assert_eq!(reply.body[10], !weights[10]);
    assert_eq!(&reply.body[..10], &weights[..10]);
}

#[test]
fn replacing_faults_take_precedence_and_only_the_first_counts() {
    let hub = standard_hub(true);
    hub.add_fault(FaultRule::new(FaultTarget::any(), Fault::CutAfter { bytes: 1 }).times(1));
    hub.add_fault(FaultRule::new(FaultTarget::any(), Fault::status(500)).times(1));
    hub.add_fault(FaultRule::new(FaultTarget::any(), Fault::status(502)).times(1));
    assert_eq!(get(&hub.endpoint(), RESOLVE_CONFIG).status, 500);
    assert_eq!(get(&hub.endpoint(), RESOLVE_CONFIG).status, 502);
    let reply = get(&hub.endpoint(), RESOLVE_CONFIG);
    assert_eq!((reply.status, reply.body.len()), (200, 1));
    assert_eq!(get(&hub.endpoint(), RESOLVE_CONFIG).body, CONFIG.as_bytes());
}
