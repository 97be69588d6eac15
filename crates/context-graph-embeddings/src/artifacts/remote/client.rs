//! The Hub's HTTP protocol, client side: resolve URLs, metadata from `HEAD` (`X-Repo-Commit`,
//! `X-Linked-Etag`, `X-Linked-Size`), redirects, ranged `GET`s, the JSON API used to pin
//! manifests, and the mapping of the Hub's answers (`X-Error-Code`) to errors.
//!
//! Redirects are followed by hand so that the token goes to the Hub's own origin (scheme,
//! host and port of the endpoint) and never to a CDN or any other host.
//!
//! Two connection pools, built alike (same trust, proxies, timeouts, no redirects): the Hub's
//! API, `HEAD`s and small files share one client, which may speak HTTP/2 where the server
//! offers it by ALPN; file bodies ([`HubClient::get_range`]) go through an HTTP/1.1-only client,
//! so that every body being received at once has a TCP connection of its own. Over HTTP/2 the
//! parallel ranges of a file would all be streams of one connection, and a CDN edge or WAN path
//! that limits each TCP connection would hold them all to one connection's rate (issue 25,
//! measured in `docs/network.md`).
//!
//! The body client resolves host names with [`SpreadResolver`]: the system's resolver, with the
//! list of addresses rotated on every new connection, so the connections of a run (and a
//! laggard's replacement) spread over the several edges a CDN name resolves to instead of all
//! going to the first address.
//!
//! Proxies come from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` and
//! their lower-case forms), read by reqwest when the client is built. Every request asks the
//! shared [`HostBreaker`] first, so a host that cannot be reached at all is given up once for
//! every model of the run.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header;
use reqwest::{Response, StatusCode, Url};

use super::protocol::{
    error_chain, header_str, is_html, metadata_from, next_link, percent_encode, strip_query,
    strong_etag, tree_files, RemoteFile,
};
use super::retry::{
    classify_status, parse_ratelimit, parse_retry_after, Admission, HostBreaker, StatusClass,
};
use super::tls::{untrusted_certificate, TrustRoots};
use crate::artifacts::fileset::RepoFile;
use crate::artifacts::ids::is_commit_hash;
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation, HubRefusal};

/// Most pages of one tree listing (1000 entries each on the Hub).
const MAX_TREE_PAGES: usize = 1000;

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Longest error body read to extract the Hub's message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A secret that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The client side of the Hub protocol.
#[derive(Debug, Clone)]
pub(crate) struct HubClient {
    client: reqwest::Client,
    /// HTTP/1.1 only: one TCP connection per body being received.
    bulk: reqwest::Client,
    endpoint: String,
    endpoint_url: Url,
    token: Option<Secret>,
    metadata_timeout: Duration,
    idle_timeout: Duration,
    breaker: Arc<Mutex<HostBreaker>>,
}

/// How to build a [`HubClient`].
#[derive(Debug, Clone)]
pub(crate) struct HubClientOptions {
    /// The Hub, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Sent to the endpoint's own origin only.
    pub token: Option<Secret>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a metadata answer (`HEAD`, API calls).
    pub metadata_timeout: Duration,
    /// Longest wait for the next byte of a body.
    pub idle_timeout: Duration,
    /// CA certificates trusted besides the operating system's store.
    pub trust: TrustRoots,
}

impl HubClient {
    /// A client for the options' endpoint, with a connect timeout, an idle (read) timeout and
    /// no automatic redirects.
    pub(crate) fn new(options: HubClientOptions) -> EmbeddingResult<Self> {
        let HubClientOptions {
            endpoint,
            token,
            connect_timeout,
            metadata_timeout,
            idle_timeout,
            trust,
        } = options;
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let endpoint_url = Url::parse(&endpoint).map_err(|e| {
            EmbeddingError::Config(format!("endpoint `{endpoint}` is not a URL: {e}"))
        })?;
        if !matches!(endpoint_url.scheme(), "http" | "https") {
            return Err(EmbeddingError::Config(format!(
                "endpoint `{endpoint}` must start with http:// or https://"
            )));
        }
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(connect_timeout)
                .read_timeout(idle_timeout)
                .user_agent(concat!(
                    "cg-models/",
                    env!("CARGO_PKG_VERSION"),
                    "; hf_hub_compatible"
                ))
                .tls_certs_merge(trust.for_reqwest())
        };
        let client = builder()
            .build()
            .map_err(|e| EmbeddingError::Client(error_chain(&e)))?;
        let bulk = builder()
            .http1_only()
            .dns_resolver(SpreadResolver::default())
            .build()
            .map_err(|e| EmbeddingError::Client(error_chain(&e)))?;
        Ok(HubClient {
            client,
            bulk,
            endpoint,
            endpoint_url,
            token,
            metadata_timeout,
            idle_timeout,
            breaker: Arc::new(Mutex::new(HostBreaker::default())),
        })
    }

    /// The Hub's base URL.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether `url` is on the Hub's own origin (not the CDN).
    pub(crate) fn is_hub_url(&self, url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| u.origin() == self.endpoint_url.origin())
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, HostBreaker> {
        match self.breaker.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Refuses a request to a host given up in this run.
    fn admit(&self, url: &Url) -> EmbeddingResult<()> {
        let host = url.origin().ascii_serialization();
        match self.breaker().admit(&host) {
            Admission::Go => Ok(()),
            Admission::Refused { failures, reason } => Err(EmbeddingError::HostUnreachable {
                host,
                attempts: failures,
                reason,
            }),
        }
    }

    /// Notes that `url`'s host answered.
    fn answered(&self, url: &Url) {
        self.breaker().answered(&url.origin().ascii_serialization());
    }

    /// Maps a failed send, counting connection failures against the host.
    fn send_failed(&self, url: &Url, error: &reqwest::Error, idle: Duration) -> EmbeddingError {
        let mapped = network_error(url, error, idle);
        if !error.is_connect() || matches!(mapped, EmbeddingError::UntrustedCertificate { .. }) {
            return mapped;
        }
        let reason = match &mapped {
            EmbeddingError::Network { message, .. } => connect_reason(message),
            other => other.to_string(),
        };
        let host = url.origin().ascii_serialization();
        let attempts = {
            let mut breaker = self.breaker();
            if !breaker.connect_failed(&host, &reason) {
                return mapped;
            }
            match breaker.admit(&host) {
                Admission::Refused { failures, .. } => failures,
                Admission::Go => return mapped,
            }
        };
        EmbeddingError::HostUnreachable {
            host,
            attempts,
            reason,
        }
    }

    /// Whether a token is configured.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The idle timeout of body reads.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{filename}`, encoded like `huggingface_hub`
    /// (revision fully escaped, so `refs/pr/1` is one segment; file path segments escaped).
    pub(crate) fn resolve_url(&self, repo_id: &str, revision: &str, filename: &str) -> String {
        let path: Vec<String> = filename.split('/').map(percent_encode).collect();
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo_id,
            percent_encode(revision),
            path.join("/")
        )
    }

    fn authorize(&self, request: reqwest::RequestBuilder, url: &Url) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) if url.origin() == self.endpoint_url.origin() => {
                request.bearer_auth(token.expose())
            }
            _ => request,
        }
    }

    /// `HEAD` of the resolve URL: follows redirects within the Hub's origin, stops at a
    /// redirect elsewhere (the CDN), and reads the file's metadata from the last answer.
    pub(crate) async fn head_file(&self, location: &FileLocation) -> EmbeddingResult<RemoteFile> {
        let start = self.resolve_url(&location.repo_id, &location.revision, &location.filename);
        let mut url = parse_url(&start, location)?;
        for _ in 0..=MAX_REDIRECTS {
            let request = self
                .authorize(self.client.head(url.clone()), &url)
                .header(header::ACCEPT_ENCODING, "identity")
                .timeout(self.metadata_timeout);
            self.admit(&url)?;
            let response = request
                .send()
                .await
                .map_err(|e| self.send_failed(&url, &e, self.metadata_timeout))?;
            self.answered(&url);
            let status = response.status();
            if status.is_redirection() {
                let next = redirect_target(&response, &url, location)?;
                if next.origin() == self.endpoint_url.origin() {
                    url = next;
                    continue;
                }
                return metadata_from(response.headers(), next.as_str(), true, location);
            }
            if status.is_success() {
                let validator = strong_etag(response.headers());
                let mut remote = metadata_from(response.headers(), url.as_str(), false, location)?;
                remote.validator = validator;
                return Ok(remote);
            }
            return Err(error_from_response(response, &url, location, self.has_token()).await);
        }
        Err(EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!(
                "more than {MAX_REDIRECTS} redirects (redirect loop) starting at {}",
                strip_query(&start)
            ),
        })
    }

    /// `GET` of bytes `start..=end` (`end` `None`: to the end of the file; no `Range` at all
    /// for the whole file), with `If-Range` when a validator is given, following redirects;
    /// the token is sent only to the Hub's origin. Returns 200, 206, or 416 for the caller to
    /// judge; other statuses become errors. Goes over a TCP connection of its own (HTTP/1.1),
    /// not shared with any other body being received.
    pub(crate) async fn get_range(
        &self,
        url: &str,
        start: u64,
        end: Option<u64>,
        if_range: Option<&str>,
        location: &FileLocation,
    ) -> EmbeddingResult<Response> {
        self.get_range_with(&self.bulk, url, start, end, if_range, location)
            .await
    }

    /// [`get_range`](Self::get_range) through `client`.
    async fn get_range_with(
        &self,
        client: &reqwest::Client,
        url: &str,
        start: u64,
        end: Option<u64>,
        if_range: Option<&str>,
        location: &FileLocation,
    ) -> EmbeddingResult<Response> {
        let mut current = parse_url(url, location)?;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .authorize(client.get(current.clone()), &current)
                .header(header::ACCEPT_ENCODING, "identity");
            if start > 0 || end.is_some() {
                let end = end.map(|e| e.to_string()).unwrap_or_default();
                request = request.header(header::RANGE, format!("bytes={start}-{end}"));
                if let Some(validator) = if_range {
                    request = request.header(header::IF_RANGE, validator);
                }
            }
            self.admit(&current)?;
            let response = tokio::time::timeout(self.idle_timeout, request.send())
                .await
                .map_err(|_| EmbeddingError::IdleTimeout {
                    url: strip_query(current.as_str()),
                    idle: self.idle_timeout,
                })?
                .map_err(|e| self.send_failed(&current, &e, self.idle_timeout))?;
            self.answered(&current);
            let status = response.status();
            if status.is_redirection() {
                current = redirect_target(&response, &current, location)?;
                continue;
            }
            if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Ok(response);
            }
            return Err(error_from_response(response, &current, location, self.has_token()).await);
        }
        Err(EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!(
                "more than {MAX_REDIRECTS} redirects (redirect loop) starting at {}",
                strip_query(url)
            ),
        })
    }

    /// The commit a revision points to, from `GET /api/models/{repo}/revision/{rev}`.
    pub(crate) async fn resolve_revision(
        &self,
        location: &FileLocation,
    ) -> EmbeddingResult<String> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            location.repo_id,
            percent_encode(&location.revision)
        );
        let (value, _) = self.get_json(&url, None, location).await?;
        value
            .get("sha")
            .and_then(|s| s.as_str())
            .filter(|s| is_commit_hash(s))
            .map(str::to_owned)
            .ok_or_else(|| EmbeddingError::Protocol {
                location: location.clone(),
                reason: "the revision API answer has no 40-hex `sha`".to_owned(),
            })
    }

    /// The SHA-256 and size of an LFS file at a commit, from
    /// `POST /api/models/{repo}/paths-info/{commit}`.
    pub(crate) async fn lfs_info(
        &self,
        location: &FileLocation,
        commit: &str,
    ) -> EmbeddingResult<(String, u64)> {
        let listed = self
            .paths_info(location, commit, std::slice::from_ref(&location.filename))
            .await?;
        let file = listed
            .into_iter()
            .find(|f| f.path == location.filename)
            .ok_or_else(|| EmbeddingError::EntryNotFound {
                location: location.clone(),
                refusal: HubRefusal {
                    status: 200,
                    error_code: None,
                    message: Some("paths-info did not list the file".to_owned()),
                    url: format!(
                        "{}/api/models/{}/paths-info/{commit}",
                        self.endpoint, location.repo_id
                    ),
                },
            })?;
        match file.lfs_sha256 {
            Some(sha) => Ok((sha, file.size)),
            None => Err(EmbeddingError::Protocol {
                location: location.clone(),
                reason: "the file is not stored with LFS, so the Hub gives no SHA-256 for it"
                    .to_owned(),
            }),
        }
    }

    /// Size, git blob id and (for LFS files) SHA-256 of several paths at one revision, in one
    /// `POST /api/models/{repo}/paths-info/{revision}` call (the entries have the tree API's
    /// shape). Paths the revision lacks are simply absent from the answer. `location` names
    /// the repo in errors.
    pub(crate) async fn paths_info(
        &self,
        location: &FileLocation,
        revision: &str,
        paths: &[String],
    ) -> EmbeddingResult<Vec<RepoFile>> {
        let url = format!(
            "{}/api/models/{}/paths-info/{}",
            self.endpoint,
            location.repo_id,
            percent_encode(revision)
        );
        let body = serde_json::json!({ "paths": paths });
        let (value, _) = self.get_json(&url, Some(body), location).await?;
        tree_files(&value, location)
    }

    /// Every file of a repo at a commit, from
    /// `GET /api/models/{repo}/tree/{commit}?recursive=true&expand=false` (what
    /// `snapshot_download` asks), following `Link: rel="next"` pages.
    pub(crate) async fn list_tree(
        &self,
        location: &FileLocation,
        commit: &str,
    ) -> EmbeddingResult<Vec<RepoFile>> {
        let mut url = format!(
            "{}/api/models/{}/tree/{}?recursive=true&expand=false",
            self.endpoint,
            location.repo_id,
            percent_encode(commit)
        );
        let mut files = Vec::new();
        for _ in 0..MAX_TREE_PAGES {
            let (value, next) = self.get_json(&url, None, location).await?;
            files.extend(tree_files(&value, location)?);
            match next {
                Some(next) => url = next,
                None => return Ok(files),
            }
        }
        Err(EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!("the tree listing has more than {MAX_TREE_PAGES} pages"),
        })
    }

    /// The whole body of a small file (a `modules.json`, a safetensors index) at `url`, over
    /// the API's connection.
    pub(crate) async fn get_small(
        &self,
        url: &str,
        limit: u64,
        location: &FileLocation,
    ) -> EmbeddingResult<Vec<u8>> {
        let response = self
            .get_range_with(&self.client, url, 0, None, None, location)
            .await?;
        let shown = strip_query(url);
        if !response.status().is_success() || response.status().as_u16() == 206 {
            return Err(EmbeddingError::BadResponse {
                url: shown,
                reason: format!("status {} for a whole small file", response.status()),
            });
        }
        if response.content_length().is_some_and(|l| l > limit) {
            return Err(EmbeddingError::BadResponse {
                url: shown,
                reason: format!("the file is larger than {limit} bytes"),
            });
        }
        let bytes = tokio::time::timeout(self.metadata_timeout, response.bytes())
            .await
            .map_err(|_| EmbeddingError::IdleTimeout {
                url: shown.clone(),
                idle: self.metadata_timeout,
            })?
            .map_err(|e| EmbeddingError::BadResponse {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > limit {
            return Err(EmbeddingError::BadResponse {
                url: shown,
                reason: format!("the file is larger than {limit} bytes"),
            });
        }
        Ok(bytes.to_vec())
    }

    /// A JSON `GET` (or `POST` of `post_body`) and the `rel="next"` link of its answer, when
    /// it points back to the Hub.
    async fn get_json(
        &self,
        url: &str,
        post_body: Option<serde_json::Value>,
        location: &FileLocation,
    ) -> EmbeddingResult<(serde_json::Value, Option<String>)> {
        let parsed = parse_url(url, location)?;
        let request = match &post_body {
            Some(body) => self
                .client
                .post(parsed.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
            None => self.client.get(parsed.clone()),
        };
        self.admit(&parsed)?;
        let response = self
            .authorize(request, &parsed)
            .timeout(self.metadata_timeout)
            .send()
            .await
            .map_err(|e| self.send_failed(&parsed, &e, self.metadata_timeout))?;
        self.answered(&parsed);
        if !response.status().is_success() {
            return Err(error_from_response(response, &parsed, location, self.has_token()).await);
        }
        let next = response
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            .and_then(|next| parsed.join(&next).ok())
            .filter(|next| next.origin() == self.endpoint_url.origin())
            .map(|next| next.to_string());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| network_error(&parsed, &e, self.metadata_timeout))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!("the API answer of {} is not JSON: {e}", strip_query(url)),
        })?;
        Ok((value, next))
    }
}

/// Resolves host names with the system resolver (`getaddrinfo` on a blocking thread, as
/// reqwest's default does) and rotates the answer by one place per call and name. hyper's
/// connector tries the addresses in the order given, so each new body connection to a CDN name
/// with several addresses starts at a different one. Proxies are unaffected (a proxy's name is
/// resolved the same way), and so are TLS (the certificate is checked against the name) and
/// the token rule (decided on the URL's origin).
#[derive(Debug, Default)]
pub(crate) struct SpreadResolver {
    /// Connections opened so far per host name: the rotation of the next answer.
    turns: Mutex<HashMap<String, usize>>,
}

impl SpreadResolver {
    /// The rotation for the next connection to `host`, counting this one.
    fn next_turn(&self, host: &str) -> usize {
        let mut turns = match self.turns.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let turn = turns.entry(host.to_owned()).or_insert(0);
        let this = *turn;
        *turn = turn.wrapping_add(1);
        this
    }
}

impl reqwest::dns::Resolve for SpreadResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let turn = self.next_turn(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> = match pinned_resolution(&host) {
                Some(addrs) => addrs,
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let addrs: reqwest::dns::Addrs = Box::new(spread(found, turn).into_iter());
            Ok(addrs)
        })
    }
}

/// The order in which a new connection tries `addrs` (as the system resolver sorted them), on
/// its `turn`-th connection to the name: the family of the first address stays first (the
/// system's preference between IPv6 and IPv4, and hyper's "happy eyeballs" split), and within
/// each family the list is rotated by `turn`, so consecutive connections start at consecutive
/// addresses. A pure function of its inputs.
pub(crate) fn spread(addrs: Vec<SocketAddr>, turn: usize) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_v6 = first.is_ipv6();
    let (mut preferred, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    for family in [&mut preferred, &mut other] {
        if !family.is_empty() {
            let shift = turn % family.len();
            family.rotate_left(shift);
        }
    }
    preferred.extend(other);
    preferred
}

/// Addresses a test pinned for `host` ([`pin_resolution`]); `None` in builds without the
/// `failpoints` feature.
#[cfg(feature = "failpoints")]
fn pinned_resolution(host: &str) -> Option<Vec<SocketAddr>> {
    pinned()
        .lock()
        .ok()
        .and_then(|table| table.get(&host.to_ascii_lowercase()).cloned())
}

/// Addresses a test pinned for a host: never, in builds without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
fn pinned_resolution(_host: &str) -> Option<Vec<SocketAddr>> {
    None
}

#[cfg(feature = "failpoints")]
fn pinned() -> &'static Mutex<HashMap<String, Vec<SocketAddr>>> {
    static PINNED: std::sync::OnceLock<Mutex<HashMap<String, Vec<SocketAddr>>>> =
        std::sync::OnceLock::new();
    PINNED.get_or_init(Mutex::default)
}

/// Test seam (`failpoints` feature only): from now on, in this process, body connections
/// resolve `host` to `addrs` (in this order, before rotation) instead of asking the system,
/// like a CDN name with several A records. Tests use a name of their own, so tests running
/// beside each other are unaffected.
#[cfg(feature = "failpoints")]
pub fn pin_resolution(host: &str, addrs: &[SocketAddr]) {
    let mut table = match pinned().lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    table.insert(host.to_ascii_lowercase(), addrs.to_vec());
}

fn parse_url(url: &str, location: &FileLocation) -> EmbeddingResult<Url> {
    Url::parse(url).map_err(|e| EmbeddingError::Protocol {
        location: location.clone(),
        reason: format!("bad URL {}: {e}", strip_query(url)),
    })
}

fn redirect_target(
    response: &Response,
    current: &Url,
    location: &FileLocation,
) -> EmbeddingResult<Url> {
    let target = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!(
                "redirect {} without a Location header from {}",
                response.status().as_u16(),
                strip_query(current.as_str())
            ),
        })?;
    let next = current.join(target).map_err(|e| EmbeddingError::Protocol {
        location: location.clone(),
        reason: format!("redirect to a bad URL: {e}"),
    })?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!("redirect to a non-HTTP URL ({})", next.scheme()),
        });
    }
    Ok(next)
}

async fn error_from_response(
    response: Response,
    url: &Url,
    location: &FileLocation,
    token_sent: bool,
) -> EmbeddingError {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let error_code = header_str(&headers, "x-error-code").map(str::to_owned);
    let mut message = header_str(&headers, "x-error-message").map(str::to_owned);
    if message.is_none() {
        message = read_error_body(response).await;
    }
    let refusal = HubRefusal {
        status,
        error_code: error_code.clone(),
        message,
        url: strip_query(url.as_str()),
    };
    let location = location.clone();
    match error_code.as_deref() {
        Some("RevisionNotFound") => return EmbeddingError::RevisionNotFound { location, refusal },
        Some("EntryNotFound") => return EmbeddingError::EntryNotFound { location, refusal },
        Some("GatedRepo") => {
            let repo_page = format!(
                "{}/{}",
                url.origin().ascii_serialization(),
                location.repo_id
            );
            return EmbeddingError::GatedRepo {
                location,
                refusal,
                token_sent,
                repo_page,
            };
        }
        Some("RepoNotFound") => return EmbeddingError::RepoNotFound { location, refusal },
        _ => {}
    }
    match classify_status(status) {
        StatusClass::Transient => {
            let retry_after = header_str(&headers, "ratelimit")
                .and_then(parse_ratelimit)
                .or_else(|| header_str(&headers, "retry-after").and_then(parse_retry_after));
            EmbeddingError::TransientStatus {
                refusal,
                retry_after,
            }
        }
        StatusClass::Fatal => EmbeddingError::HubRefused { location, refusal },
    }
}

async fn read_error_body(mut response: Response) -> Option<String> {
    let is_html = is_html(response.headers());
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            break;
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(text) = value.get("error").and_then(|e| e.as_str()) {
            return Some(text.to_owned());
        }
    }
    if is_html || body.is_empty() {
        return None;
    }
    let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// A network error (connect, reset, timeout) with a message that walks the cause chain.
pub(crate) fn network_error(url: &Url, error: &reqwest::Error, idle: Duration) -> EmbeddingError {
    if let Some(reason) = untrusted_certificate(&error_chain(error)) {
        return EmbeddingError::UntrustedCertificate {
            url: strip_query(url.as_str()),
            reason,
            message: connect_reason(&error_chain(error)),
        };
    }
    if error.is_timeout() {
        return EmbeddingError::IdleTimeout {
            url: strip_query(url.as_str()),
            idle,
        };
    }
    let mut message = error_chain(error);
    // reqwest repeats the URL the error already names.
    message = message.replace(&format!(" for url ({url})"), "");
    // reqwest names the URL in its message; the query of a signed URL must not leak.
    if let Some(query) = url.query() {
        message = message.replace(query, "…");
    }
    EmbeddingError::Network {
        url: strip_query(url.as_str()),
        message,
    }
}

/// The part of a connection error's chain that says what failed, without reqwest's generic
/// prefix ("error sending request: client error (Connect): ").
fn connect_reason(message: &str) -> String {
    let tail = message
        .rsplit_once("(Connect): ")
        .map_or(message, |(_, tail)| tail);
    tail.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(endpoint: &str, token: Option<Secret>) -> HubClientOptions {
        HubClientOptions {
            endpoint: endpoint.to_owned(),
            token,
            connect_timeout: Duration::from_secs(1),
            metadata_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            trust: TrustRoots::default(),
        }
    }

    #[test]
    fn urls_are_encoded_like_huggingface_hub() {
        let client = HubClient::new(options("http://localhost:1/", None)).unwrap();
        assert_eq!(
            client.resolve_url("org/name", "refs/pr/1", "sub dir/model.safetensors"),
            "http://localhost:1/org/name/resolve/refs%2Fpr%2F1/sub%20dir/model.safetensors"
        );
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn consecutive_connections_start_at_consecutive_addresses() {
        let addrs = vec![addr("10.0.0.1:0"), addr("10.0.0.2:0"), addr("10.0.0.3:0")];
        let firsts: Vec<SocketAddr> = (0..4).map(|turn| spread(addrs.clone(), turn)[0]).collect();
        assert_eq!(
            firsts,
            [addrs[0], addrs[1], addrs[2], addrs[0]],
            "each turn starts one further"
        );
        // Every address is still there, so a connection that fails on one tries the others.
        let mut all = spread(addrs.clone(), 1);
        assert_eq!(all, [addrs[1], addrs[2], addrs[0]]);
        all.sort();
        assert_eq!(all, addrs);
    }

    #[test]
    fn the_preferred_family_stays_first_and_each_family_rotates() {
        let addrs = vec![
            addr("[2001:db8::1]:0"),
            addr("[2001:db8::2]:0"),
            addr("192.0.2.1:0"),
            addr("192.0.2.2:0"),
            addr("192.0.2.3:0"),
        ];
        assert_eq!(
            spread(addrs.clone(), 1),
            [
                addr("[2001:db8::2]:0"),
                addr("[2001:db8::1]:0"),
                addr("192.0.2.2:0"),
                addr("192.0.2.3:0"),
                addr("192.0.2.1:0"),
            ]
        );
        assert_eq!(spread(Vec::new(), 3), Vec::<SocketAddr>::new());
        assert_eq!(spread(vec![addrs[2]], 7), [addrs[2]]);
    }

    #[test]
    fn each_name_counts_its_own_connections() {
        let resolver = SpreadResolver::default();
        assert_eq!(resolver.next_turn("cdn.example"), 0);
        assert_eq!(resolver.next_turn("cdn.example"), 1);
        assert_eq!(resolver.next_turn("hub.example"), 0);
        assert_eq!(resolver.next_turn("cdn.example"), 2);
    }

    #[test]
    fn secrets_do_not_debug() {
        let secret = Secret::new("hf_abc".to_owned());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let client = HubClient::new(options("http://localhost:1", Some(secret))).unwrap();
        assert!(!format!("{client:?}").contains("hf_abc"));
    }
}
