//! Routing: turns a request into the [`Response`] the Hub (resolve URLs, JSON API) or the CDN
//! (`/lfs/<sha256>`) would give, before any fault. Pure: no I/O, no locks held by callers
//! beyond the store they pass in; the clock comes in through [`RouteContext::now`].

use serde_json::{json, Value};

use crate::api;
use crate::http::{
    form_pairs, parse_range, percent_decode, query_flag, RangeRequest, Request, Response,
};
use crate::log::Host;
use crate::quirks::MirrorQuirks;
use crate::repo::{Commit, GateRefusal, Repo, Store};
use crate::signing;

use std::sync::Arc;

/// What routing needs besides the request.
pub(crate) struct RouteContext<'a> {
    pub(crate) store: &'a Store,
    pub(crate) cdn_redirect: bool,
    pub(crate) cdn_origin: &'a str,
    /// How long the signed CDN URLs handed out stay valid.
    pub(crate) cdn_url_ttl: std::time::Duration,
    pub(crate) quirks: MirrorQuirks,
    /// Seconds since the Unix epoch, for signing and checking CDN URLs.
    pub(crate) now: f64,
}

/// The answer to `request` on `host`; `ignore_range` answers 200 even if `Range` is asked.
pub(crate) fn route(
    ctx: &RouteContext<'_>,
    host: Host,
    request: &Request,
    ignore_range: bool,
) -> Response {
    if let Some(refusal) = ctx.quirks.refuse_query(host, request) {
        return refusal;
    }
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let mut response = match host {
        Host::Cdn => cdn(ctx, request, &segments, ignore_range),
        Host::Hub => match segments.as_slice() {
            ["api", kind, rest @ ..] => api(ctx, request, kind, rest),
            _ => resolve(ctx, request, &segments, ignore_range),
        },
    };
    ctx.quirks.strip_headers(host, &mut response);
    response
}

/// Paths a fault target's `path_contains` is matched against (see `fault.rs`).
pub(crate) fn fault_paths(store: &Store, host: Host, request: &Request) -> Vec<String> {
    let mut paths = vec![request.path.clone()];
    let decoded = percent_decode(&request.path, false);
    if decoded != request.path {
        paths.push(decoded);
    }
    if host == Host::Cdn {
        if let Some(sha) = lfs_object_id(&request.path) {
            if let Some(files) = store.blob_paths.get(sha) {
                paths.extend(files.iter().cloned());
            }
        }
    }
    paths
}

/// The SHA-256 in a CDN path `/lfs/<sha256>[/...]`.
fn lfs_object_id(path: &str) -> Option<&str> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    (segments.next() == Some("lfs"))
        .then(|| segments.next())
        .flatten()
}

// ---------------------------------------------------------------- errors

/// An error the way the Hub sends it: `X-Error-Code`, `X-Error-Message`, `{"error": msg}`.
fn hub_error(status: u16, code: Option<&str>, message: &str) -> Response {
    let mut response = Response::new(status);
    if let Some(code) = code {
        response = response.header("X-Error-Code", code);
    }
    response
        .header("X-Error-Message", message)
        .json(&json!({ "error": message }))
}

fn not_found() -> Response {
    Response::new(404).json(&json!({ "error": "Not Found" }))
}

fn method_not_allowed(allow: &str) -> Response {
    Response::new(405)
        .header("Allow", allow)
        .json(&json!({ "error": "Method Not Allowed" }))
}

fn repo_not_found() -> Response {
    hub_error(
        401,
        Some("RepoNotFound"),
        "Repository not found. If the repo is private, make sure you are authenticated.",
    )
}

fn revision_not_found(revision: &str) -> Response {
    hub_error(
        404,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {revision}"),
    )
}

fn entry_not_found(commit: &Commit, path: &str) -> Response {
    hub_error(
        404,
        Some("EntryNotFound"),
        &format!("Entry not found: {path}"),
    )
    .header("X-Repo-Commit", commit.sha.clone())
}

/// The repo if it exists and the request passes its gate, else the error to answer.
fn open_repo<'s>(store: &'s Store, repo_id: &str, request: &Request) -> Result<&'s Repo, Response> {
    let repo = store.repos.get(repo_id).ok_or_else(repo_not_found)?;
    match repo.check_gate(request.bearer_token()) {
        Ok(()) => Ok(repo),
        Err(GateRefusal::NoToken) => Err(hub_error(
            401,
            Some("GatedRepo"),
            &format!(
                "Access to model {repo_id} is restricted. You must have access to it and be \
                 authenticated to access it. Please log in."
            ),
        )),
        Err(GateRefusal::WrongToken) => Err(hub_error(
            403,
            Some("GatedRepo"),
            &format!(
                "Access to model {repo_id} is restricted and you are not in the authorized list. \
                 Visit https://huggingface.co/{repo_id} to ask for access."
            ),
        )),
    }
}

/// Takes the revision off the front of `segments`: one (percent-decoded) segment, or, for
/// clients that send `refs/pr/1` unencoded, the shortest run of segments naming a ref.
/// On failure returns the revision as given for the error message.
fn take_revision<'r, 'p>(
    repo: &'r Repo,
    segments: &'p [&'p str],
) -> Result<(&'r Arc<Commit>, &'p [&'p str]), String> {
    let first = segments
        .first()
        .map(|s| percent_decode(s, false))
        .unwrap_or_default();
    if let Some(commit) = repo.resolve(&first) {
        return Ok((commit, &segments[1.min(segments.len())..]));
    }
    for end in 2..=segments.len() {
        let joined: Vec<String> = segments[..end]
            .iter()
            .map(|s| percent_decode(s, false))
            .collect();
        if let Some(commit) = repo.resolve(&joined.join("/")) {
            return Ok((commit, &segments[end..]));
        }
    }
    Err(first)
}

fn decode_path(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| percent_decode(s, false))
        .collect::<Vec<_>>()
        .join("/")
}

fn is_get_or_head(request: &Request) -> bool {
    request.method.eq_ignore_ascii_case("GET") || request.is_head()
}

// ---------------------------------------------------------------- content

/// Normalises an etag for comparison: no `W/` prefix, no quotes.
fn normalize_etag(tag: &str) -> &str {
    let tag = tag.trim();
    tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"')
}

/// Whether `If-None-Match` lists `etag` (or `*`).
fn not_modified(request: &Request, etag: &str) -> bool {
    request.header("if-none-match").is_some_and(|value| {
        value
            .split(',')
            .any(|tag| tag.trim() == "*" || normalize_etag(tag) == etag)
    })
}

/// Answers with `data` (whole, a 206 span, or 416), adding the content headers to `response`.
fn serve_content(
    request: &Request,
    data: &bytes::Bytes,
    etag: &str,
    response: Response,
    ignore_range: bool,
) -> Response {
    let mut response = response
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", "application/octet-stream");
    let total = data.len() as u64;
    let if_range_ok = request
        .header("if-range")
        .is_none_or(|tag| normalize_etag(tag) == etag);
    let range = match request.header("range") {
        Some(header) if !ignore_range && if_range_ok => parse_range(header, total),
        _ => RangeRequest::Full,
    };
    match range {
        RangeRequest::Full => {
            response.status = 200;
            response.body = data.clone();
            response.file_offset = Some(0);
            response
        }
        RangeRequest::Span(start, end) => {
            response.status = 206;
            response.body = data.slice(start as usize..=end as usize);
            response.file_offset = Some(start);
            response.header("Content-Range", format!("bytes {start}-{end}/{total}"))
        }
        RangeRequest::Unsatisfiable => {
            response.status = 416;
            response.header("Content-Range", format!("bytes */{total}"))
        }
    }
}

// ---------------------------------------------------------------- resolve

/// `/{repo_id}/resolve/{rev}/{path...}` on the Hub host.
fn resolve(
    ctx: &RouteContext<'_>,
    request: &Request,
    segments: &[&str],
    ignore_range: bool,
) -> Response {
    // `org/name/resolve/...` or `name/resolve/...`; prefer the reading that names a known repo.
    let candidates: Vec<(String, usize)> = [
        (segments.get(2) == Some(&"resolve")).then(|| (segments[..2].join("/"), 3)),
        (segments.get(1) == Some(&"resolve")).then(|| (segments[0].to_owned(), 2)),
    ]
    .into_iter()
    .flatten()
    .map(|(id, rest)| (percent_decode(&id, false), rest))
    .collect();
    let Some((repo_id, rest)) = candidates
        .iter()
        .find(|(id, _)| ctx.store.repos.contains_key(id))
        .or(candidates.first())
        .cloned()
    else {
        return not_found();
    };
    if !is_get_or_head(request) {
        return method_not_allowed("GET, HEAD");
    }
    let repo = match open_repo(ctx.store, &repo_id, request) {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let (commit, path_segments) = match take_revision(repo, &segments[rest..]) {
        Ok(found) => found,
        Err(revision) => return revision_not_found(&revision),
    };
    let path = decode_path(path_segments);
    let Some(file) = commit.files.get(&path) else {
        return entry_not_found(commit, &path);
    };
    let etag = file.etag();
    let mut response = Response::new(200)
        .header("X-Repo-Commit", commit.sha.clone())
        .header("ETag", format!("\"{etag}\""));
    if let Some(lfs) = &file.lfs {
        response = response
            .header("X-Linked-Etag", format!("\"{}\"", lfs.sha256))
            .header("X-Linked-Size", file.size().to_string());
    }
    if not_modified(request, etag) {
        response.status = 304;
        return response;
    }
    match &file.lfs {
        Some(lfs) if ctx.cdn_redirect => {
            response.status = 302;
            response.header(
                "Location",
                format!(
                    "{}/lfs/{}?{}",
                    ctx.cdn_origin,
                    lfs.sha256,
                    signing::signed_query(&lfs.sha256, ctx.now, ctx.cdn_url_ttl)
                ),
            )
        }
        _ => serve_content(request, &file.content, etag, response, ignore_range),
    }
}

// ---------------------------------------------------------------- CDN

/// `/lfs/<sha256>` on the CDN host: content-addressed, no token needed; a signed URL must not
/// have expired (see `signing.rs`).
fn cdn(
    ctx: &RouteContext<'_>,
    request: &Request,
    segments: &[&str],
    ignore_range: bool,
) -> Response {
    let ["lfs", sha, ..] = segments else {
        return not_found();
    };
    if !is_get_or_head(request) {
        return method_not_allowed("GET, HEAD");
    }
    let Some(data) = ctx.store.blobs.get(*sha) else {
        return not_found();
    };
    if let Some(refusal) = signing::check(sha, request.query.as_deref(), ctx.now) {
        return refusal;
    }
    let response = Response::new(200).header("ETag", format!("\"{sha}\""));
    if not_modified(request, sha) {
        let mut response = response;
        response.status = 304;
        return response;
    }
    serve_content(request, data, sha, response, ignore_range)
}

// ---------------------------------------------------------------- API

/// Words that follow a repo id in API paths (used to tell `name` from `org/name`).
const API_OPERATIONS: &[&str] = &["revision", "tree", "paths-info", "refs"];

/// `/api/{models|datasets|spaces}/{repo_id}[/...]` on the Hub host.
fn api(ctx: &RouteContext<'_>, request: &Request, kind: &str, rest: &[&str]) -> Response {
    if rest.is_empty() {
        return not_found();
    }
    if kind != "models" {
        // Only model repos are emulated.
        return repo_not_found();
    }
    let two = (rest.len() >= 2).then(|| percent_decode(&format!("{}/{}", rest[0], rest[1]), false));
    let one = percent_decode(rest[0], false);
    let (repo_id, operation) = match two {
        Some(id) if ctx.store.repos.contains_key(&id) => (id, &rest[2..]),
        _ if ctx.store.repos.contains_key(&one) => (one, &rest[1..]),
        Some(id) if !API_OPERATIONS.contains(&rest[1]) => (id, &rest[2..]),
        _ => (one, &rest[1..]),
    };
    let is_post = request.method.eq_ignore_ascii_case("POST");
    match operation.first().copied() {
        Some("paths-info") if !is_post => return method_not_allowed("POST"),
        Some("paths-info") => {}
        _ if !is_get_or_head(request) => return method_not_allowed("GET, HEAD"),
        _ => {}
    }
    let repo = match open_repo(ctx.store, &repo_id, request) {
        Ok(repo) => repo,
        Err(response) => return response,
    };
    let query = request.query.as_deref();
    let with_revision = |segments: &[&str], answer: &dyn Fn(&Arc<Commit>, &[&str]) -> Response| {
        match take_revision(repo, segments) {
            Ok((commit, rest)) => answer(commit, rest),
            Err(revision) => revision_not_found(&revision),
        }
    };
    match operation {
        [] => Response::new(200).json(&api::model_info(
            repo,
            repo.main(),
            query_flag(query, "blobs"),
        )),
        ["revision", revision @ ..] => with_revision(revision, &|commit, rest| {
            if rest.is_empty() {
                Response::new(200).json(&api::model_info(repo, commit, query_flag(query, "blobs")))
            } else {
                not_found()
            }
        }),
        ["tree", revision @ ..] => with_revision(revision, &|commit, rest| {
            let dir = decode_path(rest);
            match commit.tree(&dir, query_flag(query, "recursive")) {
                Some(entries) => {
                    let entries: Vec<Value> = entries.iter().map(api::tree_entry).collect();
                    Response::new(200).json(&Value::Array(entries))
                }
                None => entry_not_found(commit, &dir),
            }
        }),
        ["paths-info", revision @ ..] => with_revision(revision, &|commit, rest| {
            if !rest.is_empty() {
                return not_found();
            }
            let Some(paths) = requested_paths(request) else {
                return hub_error(400, None, "Expected `paths` as form fields or a JSON array");
            };
            let entries: Vec<Value> = paths
                .iter()
                .filter_map(|p| commit.entry(p))
                .map(|e| api::tree_entry(&e))
                .collect();
            Response::new(200).json(&Value::Array(entries))
        }),
        ["refs"] => Response::new(200).json(&api::refs(repo, query_flag(query, "include_prs"))),
        _ => not_found(),
    }
}

/// The `paths` of a paths-info body: form fields (`paths=a&paths=b`) or JSON `{"paths": [...]}`.
fn requested_paths(request: &Request) -> Option<Vec<String>> {
    let body = std::str::from_utf8(&request.body).ok()?;
    let is_json = request
        .header("content-type")
        .is_some_and(|t| t.contains("json"))
        || body.trim_start().starts_with('{');
    if is_json {
        let value: Value = serde_json::from_str(body).ok()?;
        match &value["paths"] {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::String(one) => Some(vec![one.clone()]),
            _ => None,
        }
    } else {
        Some(
            form_pairs(body)
                .into_iter()
                .filter(|(key, _)| key == "paths" || key == "paths[]")
                .map(|(_, value)| value)
                .collect(),
        )
    }
}
