//! Signed CDN URLs: the `Location` the Hub redirects LFS downloads to carries an expiry
//! (`Expires=<unix seconds>`, like CloudFront, and `X-Amz-Expires=<ttl>`, like S3) and a
//! signature over the object and the expiry, and the CDN refuses a URL past its expiry with
//! S3's `403 AccessDenied` "Request has expired", so clients that cache redirect targets (and
//! resume with them much later) meet the failure the real CDN gives them.
//!
//! Kept apart from routing so the URL format and its check live in one place.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::{form_pairs, Response};

/// How long a signed URL is valid unless configured: the Hub's `X-Amz-Expires=3600`.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Query parameters a signed CDN URL carries; a mirror that rejects unknown parameters knows
/// these (plus the other usual S3 and CloudFront ones).
pub(crate) const CDN_QUERY_PARAMS: &[&str] = &[
    "Expires",
    "Signature",
    "Key-Pair-Id",
    "Policy",
    "X-Amz-Algorithm",
    "X-Amz-Content-Sha256",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
    "x-id",
    "response-content-disposition",
    "response-content-type",
];

/// Seconds since the Unix epoch, now.
pub(crate) fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The signature of object `sha256` valid until `expires` (not S3's algorithm; only this
/// emulator checks it).
fn signature(sha256: &str, expires: u64) -> String {
    let digest =
        crate::synth::sha256_hex(format!("hub-emulator-cdn\0{sha256}\0{expires}").as_bytes());
    digest[..32].to_owned()
}

/// The query of a fresh signed URL for object `sha256`, valid for `ttl` from `now`.
pub(crate) fn signed_query(sha256: &str, now: f64, ttl: Duration) -> String {
    let expires = (now + ttl.as_secs_f64()).ceil() as u64;
    format!(
        "X-Amz-Signature={}&X-Amz-Expires={}&Expires={expires}",
        signature(sha256, expires),
        ttl.as_secs()
    )
}

/// The refusal for a CDN request of object `sha256` with `query`, or `None` to serve it.
/// A URL without `Expires` (an unsigned `/lfs/<sha256>`) is served, as before signing existed.
pub(crate) fn check(sha256: &str, query: Option<&str>, now: f64) -> Option<Response> {
    let pairs = form_pairs(query.unwrap_or(""));
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v.as_str())
    };
    let expires = value("Expires")?;
    let Ok(expires) = expires.parse::<u64>() else {
        return Some(s3_error(
            "AuthorizationQueryParametersError",
            "Invalid date format of header Expires",
        ));
    };
    if value("X-Amz-Signature") != Some(signature(sha256, expires).as_str()) {
        return Some(s3_error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    if now.floor() as u64 > expires {
        return Some(s3_error("AccessDenied", "Request has expired"));
    }
    None
}

/// `403` with an S3-style XML error body.
fn s3_error(code: &str, message: &str) -> Response {
    let mut response = Response::new(403).header("Content-Type", "application/xml");
    response.body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    .into();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_urls_pass_and_expired_or_forged_ones_fail() {
        let sha = "ab".repeat(32);
        let query = signed_query(&sha, 1000.5, Duration::from_secs(10));
        assert!(query.contains("Expires=1011"), "{query}");
        assert!(check(&sha, Some(&query), 1001.0).is_none());
        assert!(check(&sha, Some(&query), 1011.9).is_none());
        let expired = check(&sha, Some(&query), 1012.0).expect("expired");
        assert_eq!(expired.status, 403);
        assert!(std::str::from_utf8(&expired.body)
            .unwrap()
            .contains("<Code>AccessDenied</Code><Message>Request has expired</Message>"));
        let forged = query.replace("Expires=1011", "Expires=9999");
        assert_eq!(check(&sha, Some(&forged), 1001.0).unwrap().status, 403);
        assert!(
            check(&sha, None, 1e12).is_none(),
            "unsigned URLs are served"
        );
    }
}
