//! The OCI distribution protocol, client side: the registry's challenge and tokens, blobs
//! (`HEAD` first, cross-repository mount, one streamed `PUT`; ranged `GET`s as a
//! [`ByteSource`]) and manifests. Nothing here knows a model or the cache: `ensure/publish.rs`
//! decides what to push and the downloader verifies what is pulled.
//!
//! Credentials go to the registry's own origin and to the token realm it names (over TLS when
//! the registry is); redirects to blob storage carry none (reqwest drops `Authorization` when
//! a redirect leaves the origin). The trust settings are the Hub client's (`TrustRoots`), and
//! proxies come from the same environment variables.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use reqwest::{header, Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::auth::{parse_challenge, Challenge, RegistryCredentials};
use super::reference::OciReference;
use crate::artifacts::remote::client::{network_error, Secret};
use crate::artifacts::remote::protocol::{error_chain, parse_content_range};
use crate::artifacts::remote::source::{Body, BoxFuture, ByteSource, Opened};
use crate::artifacts::remote::tls::TrustRoots;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Largest manifest read (the distribution spec's suggested limit is 4 MiB).
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest error or token body read.
const MAX_SMALL_BODY: usize = 64 * 1024;
/// Chunk size of streamed uploads.
const UPLOAD_CHUNK: usize = 1 << 20;

/// What a blob push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlobPush {
    /// The repository had it (`HEAD`): nothing sent.
    Present,
    /// Mounted from another repository of the registry: nothing sent.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// How to build a [`RegistryClient`].
#[derive(Debug, Clone)]
pub(crate) struct RegistryOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) trust: TrustRoots,
    pub(crate) credentials: Option<RegistryCredentials>,
}

/// A client for one registry (`host[:port]`).
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    registry: String,
    credentials: Option<RegistryCredentials>,
    auth: Mutex<AuthState>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.registry)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// What the registry asked for, learned from its first `401`, and the tokens it gave.
#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, Secret>,
}

fn lock(state: &Mutex<AuthState>) -> std::sync::MutexGuard<'_, AuthState> {
    match state.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The scopes a request needs: `repository:<repo>:pull` or `…:pull,push`.
fn scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

/// A registry's `{"errors":[{"code":…,"message":…}]}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl RegistryClient {
    /// A client for `reference`'s registry (no request is made yet).
    pub(crate) fn new(
        reference: &OciReference,
        options: RegistryOptions,
    ) -> EmbeddingResult<RegistryClient> {
        let base = Url::parse(&reference.base_url()).map_err(|e| {
            EmbeddingError::Config(format!("registry `{}`: {e}", reference.registry))
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.idle_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            // Each body being received gets a TCP connection of its own, as from the Hub
            // (`remote/client.rs`): parallel ranges must not share one HTTP/2 connection.
            .http1_only()
            .user_agent(concat!("cg-models/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(options.trust.for_reqwest())
            .build()
            .map_err(|e| EmbeddingError::Client(error_chain(&e)))?;
        Ok(RegistryClient {
            http,
            base,
            registry: reference.registry.clone(),
            credentials: options.credentials,
            auth: Mutex::new(AuthState::default()),
            idle_timeout: options.idle_timeout,
        })
    }

    fn url(&self, path: &str) -> EmbeddingResult<Url> {
        self.base
            .join(path)
            .map_err(|e| EmbeddingError::Config(format!("registry `{}`: {e}", self.registry)))
    }

    fn failure(&self, what: &str, message: impl Into<String>) -> EmbeddingError {
        EmbeddingError::Registry {
            reference: format!("{}{what}", self.registry),
            message: message.into(),
        }
    }

    /// The `Authorization` this request carries, from what the registry asked for so far.
    fn authorization(&self, scopes: &[String]) -> Option<String> {
        let state = lock(&self.auth);
        match state.challenge.as_ref()? {
            Challenge::Basic => self.credentials.as_ref().map(|c| c.basic_header()),
            Challenge::Bearer { .. } => state
                .tokens
                .get(&scopes.join(" "))
                .map(|token| format!("Bearer {}", token.expose())),
        }
    }

    /// Sends the request `make` builds, answering one `401` challenge (basic credentials, or
    /// a token for `scopes`) and sending it again. `make` is called once per attempt.
    async fn send(
        &self,
        scopes: &[String],
        what: &str,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> EmbeddingResult<Response> {
        let mut challenged = false;
        loop {
            let mut request = make(&self.http);
            if let Some(value) = self.authorization(scopes) {
                request = request.header(header::AUTHORIZATION, value);
            }
            let request = request
                .build()
                .map_err(|e| EmbeddingError::Client(error_chain(&e)))?;
            let url = request.url().clone();
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|e| network_error(&url, &e, self.idle_timeout))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let offered = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if challenged {
                let hint = match &self.credentials {
                    Some(c) => format!(
                        "the registry refused the credentials of `{}` from {}",
                        c.username, c.origin
                    ),
                    None => "the registry wants credentials and none were found".to_owned(),
                };
                return Err(self.failure(
                    what,
                    format!("401 Unauthorized: {hint}; log in (`docker login`, `podman login`, REGISTRY_AUTH_FILE) or set CG_MODELS_REGISTRY_USERNAME and CG_MODELS_REGISTRY_PASSWORD"),
                ));
            }
            challenged = true;
            let challenge = offered
                .as_deref()
                .and_then(parse_challenge)
                .ok_or_else(|| {
                    self.failure(
                        what,
                        "401 Unauthorized with no challenge cg-models speaks (Basic or Bearer)",
                    )
                })?;
            self.answer(challenge, scopes, what).await?;
        }
    }

    /// Learns the challenge; for a token, asks the realm for one covering `scopes`.
    async fn answer(
        &self,
        challenge: Challenge,
        scopes: &[String],
        what: &str,
    ) -> EmbeddingResult<()> {
        match &challenge {
            Challenge::Basic => {
                if self.credentials.is_none() {
                    return Err(self.failure(
                        what,
                        "401 Unauthorized: the registry wants a user name and password and none were found; log in (`docker login`, `podman login`, REGISTRY_AUTH_FILE) or set CG_MODELS_REGISTRY_USERNAME and CG_MODELS_REGISTRY_PASSWORD",
                    ));
                }
            }
            Challenge::Bearer { realm, service, .. } => {
                let realm_url = Url::parse(realm)
                    .map_err(|e| self.failure(what, format!("token realm `{realm}`: {e}")))?;
                if self.base.scheme() == "https" && realm_url.scheme() != "https" {
                    return Err(self.failure(
                        what,
                        format!("the registry names a token realm without TLS ({realm}); credentials are not sent there"),
                    ));
                }
                let mut token_url = realm_url.clone();
                {
                    let mut query = token_url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    for scope in scopes {
                        query.append_pair("scope", scope);
                    }
                }
                let mut request = self.http.get(token_url);
                if let Some(credentials) = &self.credentials {
                    request = request.header(header::AUTHORIZATION, credentials.basic_header());
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| network_error(&realm_url, &e, self.idle_timeout))?;
                let status = response.status();
                let body = read_small(response).await;
                if !status.is_success() {
                    return Err(self.failure(
                        what,
                        format!(
                            "the token service {} answered {status}; check the credentials",
                            realm_url.origin().ascii_serialization()
                        ),
                    ));
                }
                #[derive(Deserialize)]
                struct TokenAnswer {
                    #[serde(default)]
                    token: Option<String>,
                    #[serde(default)]
                    access_token: Option<String>,
                }
                let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
                    self.failure(
                        what,
                        "the token service answered something that is not a token",
                    )
                })?;
                let token = answer
                    .token
                    .or(answer.access_token)
                    .ok_or_else(|| self.failure(what, "the token service answered no token"))?;
                lock(&self.auth)
                    .tokens
                    .insert(scopes.join(" "), Secret::new(token));
            }
        }
        lock(&self.auth).challenge = Some(challenge);
        Ok(())
    }

    /// The registry's own message for a failed answer: `STATUS CODE: message`.
    async fn refusal(&self, response: Response, what: &str) -> EmbeddingError {
        let status = response.status();
        let body = read_small(response).await;
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| {
                b.errors
                    .first()
                    .map(|e| format!("{}: {}", e.code, e.message))
            })
            .unwrap_or_default();
        let message = if detail.is_empty() {
            format!("{status}")
        } else {
            format!("{status} ({detail})")
        };
        self.failure(what, message)
    }

    /// The size of blob `digest` in `repository`, or `None` when the repository lacks it.
    pub(crate) async fn blob_size(
        &self,
        repository: &str,
        digest: &str,
    ) -> EmbeddingResult<Option<u64>> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"))?;
        let what = format!("/{repository}@{digest}");
        let response = self
            .send(&[scope(repository, false)], &what, |http| {
                http.head(url.clone())
            })
            .await?;
        match response.status() {
            StatusCode::OK => Ok(response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refusal(response, &what).await),
        }
    }

    /// Puts blob `digest` of `size` bytes into `repository` unless it is there: `HEAD` first,
    /// then a mount from `mount_from` (another repository of this registry) where offered,
    /// else one streamed upload of what `body` gives. The registry checks the digest.
    pub(crate) async fn push_blob<S>(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        mount_from: Option<&str>,
        body: impl FnOnce() -> S,
    ) -> EmbeddingResult<BlobPush>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        if self.blob_size(repository, digest).await? == Some(size) {
            return Ok(BlobPush::Present);
        }
        let what = format!("/{repository}@{digest}");
        let mut scopes = vec![scope(repository, true)];
        let start = match mount_from.filter(|from| *from != repository) {
            Some(from) => {
                scopes.push(scope(from, false));
                self.url(&format!(
                    "/v2/{repository}/blobs/uploads/?mount={digest}&from={from}"
                ))?
            }
            None => self.url(&format!("/v2/{repository}/blobs/uploads/"))?,
        };
        let response = self
            .send(&scopes, &what, |http| {
                http.post(start.clone()).header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        let location = match response.status() {
            StatusCode::CREATED if mount_from.is_some() => return Ok(BlobPush::Mounted),
            StatusCode::ACCEPTED | StatusCode::CREATED => response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| self.failure(&what, "the upload was started without a Location"))?,
            _ => return Err(self.refusal(response, &what).await),
        };
        let mut upload = self
            .base
            .join(&location)
            .map_err(|e| self.failure(&what, format!("upload location `{location}`: {e}")))?;
        upload.query_pairs_mut().append_pair("digest", digest);
        // One attempt: a streamed body cannot be sent twice. The POST above already answered
        // any challenge, so the PUT carries what the registry wants.
        let mut request = self
            .http
            .request(Method::PUT, upload.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size.to_string())
            .body(reqwest::Body::wrap_stream(body()));
        // Credentials go to the registry's own origin only, wherever it says to upload.
        if let Some(value) = self
            .authorization(&scopes)
            .filter(|_| upload.origin() == self.base.origin())
        {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| network_error(&upload, &e, self.idle_timeout))?;
        if response.status() == StatusCode::CREATED {
            Ok(BlobPush::Uploaded)
        } else {
            Err(self.refusal(response, &what).await)
        }
    }

    /// The manifest `reference` (a tag or digest) of `repository` and its digest, or `None`
    /// when there is none.
    pub(crate) async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> EmbeddingResult<Option<(Vec<u8>, Option<String>)>> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"))?;
        let what = format!("/{repository}:{reference}");
        let response = self
            .send(&[scope(repository, false)], &what, |http| {
                http.get(url.clone())
                    .header(header::ACCEPT, "application/vnd.oci.image.manifest.v1+json")
            })
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.refusal(response, &what).await),
        }
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| network_error(&url, &e, self.idle_timeout))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST_BYTES {
                return Err(self.failure(
                    &what,
                    format!("the manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
                ));
            }
        }
        Ok(Some((body, digest)))
    }

    /// Puts `manifest` (of `media_type`) as `reference` (a tag) of `repository`.
    pub(crate) async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> EmbeddingResult<()> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"))?;
        let what = format!("/{repository}:{reference}");
        let body = Bytes::copy_from_slice(manifest);
        let response = self
            .send(&[scope(repository, true)], &what, |http| {
                http.put(url.clone())
                    .header(header::CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if response.status() == StatusCode::CREATED || response.status() == StatusCode::OK {
            Ok(())
        } else {
            Err(self.refusal(response, &what).await)
        }
    }

    /// Bytes `start..=end` of blob `digest` of `repository` (`end` `None`: to the end).
    async fn open_blob(
        &self,
        repository: &str,
        digest: &str,
        start: u64,
        end: Option<u64>,
    ) -> EmbeddingResult<Response> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"))?;
        let what = format!("/{repository}@{digest}");
        let range = match end {
            Some(end) => Some(format!("bytes={start}-{end}")),
            None if start > 0 => Some(format!("bytes={start}-")),
            None => None,
        };
        self.send(&[scope(repository, false)], &what, |http| {
            let request = http.get(url.clone());
            match &range {
                Some(range) => request.header(header::RANGE, range.as_str()),
                None => request,
            }
        })
        .await
    }
}

/// Up to [`MAX_SMALL_BODY`] bytes of a body (errors, tokens); what cannot be read is left out.
async fn read_small(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_SMALL_BODY {
            break;
        }
    }
    body
}

/// One blob of a repository, read by range: the downloader resumes, verifies and fetches in
/// parallel over it as over the Hub.
pub(crate) struct RegistryBlob {
    pub(crate) client: Arc<RegistryClient>,
    pub(crate) repository: String,
    pub(crate) digest: String,
    pub(crate) name: String,
}

impl ByteSource for RegistryBlob {
    fn open(&self, start: u64, end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            let response = self
                .client
                .open_blob(&self.repository, &self.digest, start, end)
                .await
                .map_err(|error| match error {
                    EmbeddingError::Registry { message, .. } => EmbeddingError::Mirror {
                        url: self.name.clone(),
                        message,
                    },
                    other => other,
                })?;
            match response.status() {
                StatusCode::OK => {
                    let length = response.content_length();
                    Ok(Opened::Whole {
                        body: Body::Http(response),
                        length,
                    })
                }
                StatusCode::PARTIAL_CONTENT => {
                    let (first, last, total) =
                        parse_content_range(response.headers()).ok_or_else(|| {
                            EmbeddingError::BadResponse {
                                url: self.name.clone(),
                                reason: "206 without a usable Content-Range".to_owned(),
                            }
                        })?;
                    Ok(Opened::Range {
                        body: Body::Http(response),
                        start: first,
                        end: last,
                        total,
                    })
                }
                StatusCode::RANGE_NOT_SATISFIABLE => Ok(Opened::Unsatisfiable),
                StatusCode::NOT_FOUND => Err(EmbeddingError::MirrorMissing {
                    url: self.name.clone(),
                }),
                status => Err(EmbeddingError::Mirror {
                    url: self.name.clone(),
                    message: format!("{status}"),
                }),
            }
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn idle_timeout(&self) -> Duration {
        self.client.idle_timeout
    }

    fn is_range_refusal(&self, _error: &EmbeddingError) -> bool {
        false
    }
}

/// The bytes of `prefix`, then the file at `path` read in chunks (tokio's file I/O, on its
/// blocking pool), then `suffix`: one blob's upload body (a raw layer has neither; a tar layer
/// has its header and its padding and end blocks).
pub(crate) async fn file_body(
    path: &Path,
    prefix: Bytes,
    suffix: Bytes,
) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static> {
    let file = tokio::fs::File::open(path).await?;
    let chunks = stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(Bytes::from(buffer)), Some(file)))
            }
            Err(error) => Some((Err(error), None)),
        }
    });
    let head = stream::iter((!prefix.is_empty()).then_some(Ok(prefix)));
    let tail = stream::iter((!suffix.is_empty()).then_some(Ok(suffix)));
    Ok(head.chain(chunks).chain(tail))
}

/// A body of bytes in memory (configs, manifests' blobs, the metadata layer).
pub(crate) fn bytes_body(
    bytes: Bytes,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    stream::iter(std::iter::once(Ok(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_the_repository_and_actions() {
        assert_eq!(scope("models/e5", false), "repository:models/e5:pull");
        assert_eq!(scope("models/e5", true), "repository:models/e5:pull,push");
    }

    #[test]
    fn credentials_do_not_debug() {
        let reference = OciReference::parse("oci://127.0.0.1:1/m").unwrap();
        let client = RegistryClient::new(
            &reference,
            RegistryOptions {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                trust: TrustRoots::default(),
                credentials: Some(RegistryCredentials::new("u", "hunter2", "test")),
            },
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
