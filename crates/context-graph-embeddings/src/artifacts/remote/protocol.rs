//! The Hub protocol's pure parts: what a `HEAD` answer means (`X-Repo-Commit`,
//! `X-Linked-Etag`, `X-Linked-Size`), etags, `Content-Range`, URL encoding and redaction, and
//! one-line error chains. No I/O here, so every rule is unit-tested on plain headers.

use reqwest::header::{self, HeaderMap};

use crate::artifacts::fileset::RepoFile;
use crate::artifacts::ids::{is_commit_hash, validate_sha256};
use crate::artifacts::manifest::validate_filename;
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};

/// What the Hub says about one file at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteFile {
    /// The commit the revision resolved to (`X-Repo-Commit`).
    pub commit: String,
    /// The normalised etag: the blob name in the cache (SHA-256 for LFS files).
    pub etag: String,
    /// The SHA-256 the Hub advertises (`X-Linked-Etag`), when it is one.
    pub sha256: Option<String>,
    /// The size the Hub advertises (`X-Linked-Size`, or `Content-Length` of a final 200).
    pub size: Option<u64>,
    /// Where the bytes are (the resolve URL or the CDN location it redirects to).
    pub download_url: String,
    /// A validator for `If-Range` when the bytes come from the resolve URL itself.
    pub validator: Option<String>,
    /// Whether the Hub said this (false: built from a fully pinned manifest entry without
    /// asking, for a mirror-first download that need not reach the Hub at all).
    pub from_hub: bool,
    /// The answer had no `X-Repo-Commit` (a mirror such as Artifactory's) and `commit` is the
    /// commit that was asked for. Usable only when the expected hash is known.
    pub commit_assumed: bool,
}

impl RemoteFile {
    /// What a fully pinned entry at a commit says, without asking the Hub.
    pub(crate) fn from_pins(commit: &str, sha256: &str, size: Option<u64>) -> Self {
        RemoteFile {
            commit: commit.to_owned(),
            etag: sha256.to_owned(),
            sha256: Some(sha256.to_owned()),
            size,
            download_url: String::new(),
            validator: None,
            from_hub: false,
            commit_assumed: false,
        }
    }
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Strips `W/` and quotes from an etag, as `huggingface_hub._normalize_etag` does.
pub(crate) fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

pub(crate) fn strong_etag(headers: &HeaderMap) -> Option<String> {
    let raw = header_str(headers, "etag")?;
    (!raw.starts_with("W/") && raw.len() > 2).then(|| raw.to_owned())
}

pub(crate) fn metadata_from(
    headers: &HeaderMap,
    download_url: &str,
    is_redirect: bool,
    location: &FileLocation,
) -> EmbeddingResult<RemoteFile> {
    let protocol = |reason: String| EmbeddingError::Protocol {
        location: location.clone(),
        reason,
    };
    let sent_commit = header_str(headers, "x-repo-commit")
        .map(str::to_ascii_lowercase)
        .filter(|c| is_commit_hash(c));
    let asked_commit = Some(location.revision.to_ascii_lowercase()).filter(|r| is_commit_hash(r));
    let commit_assumed = sent_commit.is_none();
    let commit = sent_commit.or(asked_commit).ok_or_else(|| {
        protocol(format!(
            "the server's answer has no X-Repo-Commit header, so the commit of revision `{}` is unknown (is the endpoint a Hugging Face Hub? a mirror that omits it works only with revisions pinned to a commit; see docs/network.md)",
            location.revision
        ))
    })?;
    let etag = header_str(headers, "x-linked-etag")
        .or_else(|| header_str(headers, "etag"))
        .map(normalize_etag)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            protocol("the Hub's answer has no X-Linked-Etag or ETag header".to_owned())
        })?;
    if etag.contains(['/', '\\', '\0']) || etag.starts_with('.') || etag.len() > 128 {
        return Err(protocol(format!(
            "the Hub sent an unusable etag `{}`",
            etag.chars().take(80).collect::<String>()
        )));
    }
    let sha256 = validate_sha256(&etag).ok();
    let size = header_str(headers, "x-linked-size")
        .and_then(|s| s.parse::<u64>().ok())
        .or_else(|| {
            if is_redirect {
                None
            } else {
                header_str(headers, "content-length").and_then(|s| s.parse::<u64>().ok())
            }
        });
    Ok(RemoteFile {
        commit,
        etag,
        sha256,
        size,
        download_url: download_url.to_owned(),
        validator: None,
        from_hub: true,
        commit_assumed,
    })
}

/// Whether a signed URL is past its expiry at `now` (Unix seconds): CloudFront's `Expires=`
/// (Unix seconds), or S3's `X-Amz-Date=YYYYMMDDTHHMMSSZ` plus `X-Amz-Expires=` seconds. A URL
/// without either never counts as expired here (the server says so if it is).
pub(crate) fn signed_url_expired(url: &str, now: u64) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or(query);
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.eq_ignore_ascii_case(name).then_some(value)
        })
    };
    if let Some(expires) = param("Expires").and_then(|v| v.parse::<u64>().ok()) {
        return now >= expires;
    }
    let date = param("X-Amz-Date").and_then(parse_amz_date);
    let ttl = param("X-Amz-Expires").and_then(|v| v.parse::<u64>().ok());
    match (date, ttl) {
        (Some(date), Some(ttl)) => now >= date.saturating_add(ttl),
        _ => false,
    }
}

/// `20240131T235959Z` as Unix seconds.
fn parse_amz_date(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    if date.len() != 8
        || time.len() != 6
        || !text.replace('T', "").bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (y, m, d) = (num(&date[..4])?, num(&date[4..6])?, num(&date[6..])?);
    let (hh, mm, ss) = (num(&time[..2])?, num(&time[2..4])?, num(&time[4..])?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The files of a tree API page (`{type, path, oid, size, lfs{oid, size}}` items; folders are
/// skipped). A file entry without the fields a check needs, or whose path is not a safe repo
/// path (the rule of manifest paths: no `..`, no control characters, segments of at most 255
/// bytes), is a protocol error: such a path would become `snapshots/<commit>/<path>`.
pub(crate) fn tree_files(
    value: &serde_json::Value,
    location: &FileLocation,
) -> EmbeddingResult<Vec<RepoFile>> {
    let protocol = |reason: String| EmbeddingError::Protocol {
        location: location.clone(),
        reason,
    };
    let items = value
        .as_array()
        .ok_or_else(|| protocol("the tree API answer is not a JSON array".to_owned()))?;
    let mut files = Vec::new();
    for item in items {
        if item.get("type").and_then(|t| t.as_str()) != Some("file") {
            continue;
        }
        let path = item
            .get("path")
            .and_then(|p| p.as_str())
            .ok_or_else(|| protocol("a tree entry has no `path`".to_owned()))?;
        validate_filename(path).map_err(|reason| {
            protocol(format!(
                "the tree lists the unsafe path `{}`: {reason}",
                path.chars().take(80).collect::<String>().escape_debug()
            ))
        })?;
        let field = |name: &str| protocol(format!("the tree entry `{path}` has no valid `{name}`"));
        let size = item
            .get("size")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| field("size"))?;
        let oid = item
            .get("oid")
            .and_then(|o| o.as_str())
            .map(str::to_ascii_lowercase)
            .filter(|o| o.len() == 40 && o.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| field("oid"))?;
        let lfs_sha256 = match item.get("lfs") {
            None | Some(serde_json::Value::Null) => None,
            Some(lfs) => Some(
                lfs.get("oid")
                    .or_else(|| lfs.get("sha256"))
                    .and_then(|o| o.as_str())
                    .and_then(|o| validate_sha256(o).ok())
                    .ok_or_else(|| field("lfs.oid"))?,
            ),
        };
        files.push(RepoFile {
            path: path.to_owned(),
            size,
            oid,
            lfs_sha256,
        });
    }
    Ok(files)
}

/// The target of `rel="next"` in a `Link` header.
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// A URL without its query string (signed CDN URLs carry credentials there).
pub(crate) fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Parses `Content-Range: bytes a-b/total`.
pub(crate) fn parse_content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let total = if total.trim() == "*" {
        None
    } else {
        Some(total.trim().parse().ok()?)
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

/// The error and its causes, one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Whether an answer is an HTML page (a login wall, a proxy's error page), which is never the
/// bytes of a model file nor a Hub error worth quoting.
pub(crate) fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn etags_are_normalised() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }

    #[test]
    fn content_range_parses() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 10-99/100"),
        );
        assert_eq!(parse_content_range(&headers), Some((10, 99, Some(100))));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes */100"),
        );
        assert_eq!(parse_content_range(&headers), None);
    }

    #[test]
    fn signed_urls_expire() {
        let cloudfront = "https://cdn/x?Expires=1000&Signature=abc";
        assert!(!signed_url_expired(cloudfront, 999));
        assert!(signed_url_expired(cloudfront, 1000));
        // 2024-01-01T00:00:00Z is 1704067200.
        let s3 = "https://s3/x?X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=s";
        assert!(!signed_url_expired(s3, 1_704_067_200 + 3599));
        assert!(signed_url_expired(s3, 1_704_067_200 + 3600));
        assert!(!signed_url_expired("https://cdn/x", u64::MAX));
        assert!(!signed_url_expired(
            "https://cdn/x?X-Amz-Expires=5",
            u64::MAX
        ));
        assert_eq!(parse_amz_date("19700101T000001Z"), Some(1));
        assert_eq!(parse_amz_date("2024-01-01"), None);
    }

    fn location(revision: &str) -> FileLocation {
        FileLocation {
            model_id: crate::ModelId::Entity,
            repo_id: "org/m".to_owned(),
            revision: revision.to_owned(),
            filename: "model.safetensors".to_owned(),
        }
    }

    #[test]
    fn a_missing_repo_commit_is_assumed_only_for_a_commit_revision() {
        let sha = "a".repeat(64);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-linked-etag",
            HeaderValue::from_str(&format!("\"{sha}\"")).unwrap(),
        );
        let commit = "c".repeat(40);
        let remote = metadata_from(&headers, "http://m/x", false, &location(&commit)).unwrap();
        assert!(remote.commit_assumed);
        assert_eq!(remote.commit, commit);
        let err = metadata_from(&headers, "http://m/x", false, &location("main")).unwrap_err();
        assert!(err.to_string().contains("no X-Repo-Commit"), "{err}");
        headers.insert(
            "x-repo-commit",
            HeaderValue::from_str(&"d".repeat(40)).unwrap(),
        );
        let remote = metadata_from(&headers, "http://m/x", false, &location("main")).unwrap();
        assert!(!remote.commit_assumed);
    }

    #[test]
    fn query_strings_are_stripped() {
        assert_eq!(
            strip_query("http://cdn/x?X-Amz-Signature=abc"),
            "http://cdn/x"
        );
    }
}
