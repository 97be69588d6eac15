//! Signed CDN URLs that expire: the redirect `Location` carries `Expires=<unix seconds>`; past
//! it the CDN answers S3's `403 AccessDenied` "Request has expired", while a fresh resolve
//! through the Hub hands out a URL that works (ranges included).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use hub_emulator::{synth, HubBuilder, HubEmulator, RepoSpec};

const RESOLVE: &str = "/org/model/resolve/main/model.safetensors";

fn hub(ttl: Duration) -> HubEmulator {
    HubBuilder::new()
        .cdn_url_ttl(ttl)
        .repo(RepoSpec::new("org/model").file("model.safetensors", weights()))
        .start()
        .expect("start emulator")
}

/// The CDN URL a fresh `method` resolve hands out.
fn fresh_location(hub: &HubEmulator, method: &str) -> String {
    let reply = send(&hub.endpoint(), method, RESOLVE, &[]);
    assert_eq!(reply.status, 302, "{method}");
    reply.header("location").unwrap().to_owned()
}

fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sleeps until the whole second `expires` has passed.
fn wait_past(expires: u64) {
    let wait = (expires + 1) as f64 - unix_now() + 0.05;
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
}

#[test]
fn default_urls_carry_an_hour_long_expiry_and_a_signature() {
    let hub = hub(Duration::from_secs(3600));
    let location = fresh_location(&hub, "HEAD");
    let sha = synth::sha256_hex(&weights());
    assert!(location.starts_with(&format!("{}/lfs/{sha}?", hub.cdn_origin())));
    assert_eq!(
        query_value(&location, "X-Amz-Expires").as_deref(),
        Some("3600")
    );
    assert!(query_value(&location, "X-Amz-Signature").is_some_and(|s| !s.is_empty()));
    let expires: f64 = query_value(&location, "Expires").unwrap().parse().unwrap();
    let left = expires - unix_now();
    assert!((3590.0..=3601.0).contains(&left), "{left}");
    // The default builder signs too.
    let standard = standard_hub(true);
    let location = head(&standard.endpoint(), RESOLVE)
        .header("location")
        .unwrap()
        .to_owned();
    assert!(query_value(&location, "Expires").is_some(), "{location}");
    assert_eq!(get(&standard.cdn_origin(), &path_of(&location)).status, 200);
}

#[test]
fn urls_work_before_expiry_and_are_refused_after() {
    let hub = hub(Duration::from_secs(1));
    let weights = weights();
    let location = fresh_location(&hub, "GET");
    let reply = get(&hub.cdn_origin(), &path_of(&location));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, weights);

    let expires: u64 = query_value(&location, "Expires").unwrap().parse().unwrap();
    wait_past(expires);
    for method in ["GET", "HEAD"] {
        let reply = send(&hub.cdn_origin(), method, &path_of(&location), &[]);
        assert_eq!(reply.status, 403, "{method}");
        assert_eq!(reply.header("content-type"), Some("application/xml"));
        if method == "GET" {
            let body = String::from_utf8(reply.body).unwrap();
            assert!(
                body.contains("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"),
                "{body}"
            );
        }
    }

    // A fresh resolve (HEAD or GET) through the Hub hands out a URL that works, ranges too.
    for method in ["HEAD", "GET"] {
        let fresh = fresh_location(&hub, method);
        assert_ne!(fresh, location);
        let reply = get(&hub.cdn_origin(), &path_of(&fresh));
        assert_eq!(reply.status, 200, "{method}");
        assert_eq!(reply.body, weights);
        let reply = send(
            &hub.cdn_origin(),
            "GET",
            &path_of(&fresh),
            &[("Range", "bytes=100-1099")],
        );
        assert_eq!(reply.status, 206);
        assert_eq!(reply.body, &weights[100..1100]);
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes 100-1099/{}", weights.len()).as_str())
        );
    }
}

#[test]
fn a_range_on_an_expired_url_is_refused_too() {
    let hub = hub(Duration::ZERO);
    let location = fresh_location(&hub, "HEAD");
    let expires: u64 = query_value(&location, "Expires").unwrap().parse().unwrap();
    wait_past(expires);
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &path_of(&location),
        &[("Range", "bytes=0-9")],
    );
    assert_eq!(reply.status, 403);
}

#[test]
fn a_tampered_expiry_is_refused() {
    let hub = hub(Duration::from_secs(60));
    let location = fresh_location(&hub, "HEAD");
    let expires = query_value(&location, "Expires").unwrap();
    let later = (expires.parse::<u64>().unwrap() + 86_400).to_string();
    let forged = location.replace(&format!("Expires={expires}"), &format!("Expires={later}"));
    let reply = get(&hub.cdn_origin(), &path_of(&forged));
    assert_eq!(reply.status, 403);
    assert!(String::from_utf8(reply.body)
        .unwrap()
        .contains("<Code>SignatureDoesNotMatch</Code>"));
    // An unsigned content-addressed path still works, as it always has.
    let sha = synth::sha256_hex(&weights());
    assert_eq!(get(&hub.cdn_origin(), &format!("/lfs/{sha}")).status, 200);
}
