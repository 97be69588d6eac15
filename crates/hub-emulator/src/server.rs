//! The server: [`HubBuilder`] binds the two loopback listeners and starts a thread with its own
//! tokio runtime; [`HubEmulator`] is the handle tests hold. Each connection reads requests,
//! routes them, lets the fault rules bend the answer, logs it, and writes it.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::fault::{Fault, FaultBook, FaultRule, FaultSubject};
use crate::http::{self, range_start, read_request, reason_phrase, ReadOutcome, Request, Response};
use crate::log::{lock, Host, HttpVersion, RequestLog, RequestRecord};
use crate::pacing::{EdgeMix, PacedIo};
use crate::quirks::MirrorQuirks;
use crate::repo::{FileEntry, RepoSpec, Store};
use crate::routes::{self, RouteContext};
use crate::tls::CdnTls;

/// Responses up to this size are written with their head in a single `write`.
const SMALL_BODY: usize = 16 * 1024;
/// Pieces a paced body is written in, at most.
const PACED_CHUNK: u64 = 64 * 1024;

/// State shared by the handle and every connection.
pub(crate) struct Shared {
    store: RwLock<Store>,
    faults: Mutex<FaultBook>,
    pub(crate) log: RequestLog,
    cdn_redirect: bool,
    cdn_url_ttl: Duration,
    quirks: MirrorQuirks,
    hub_origin: String,
    cdn_origin: String,
    /// Connections being served now, on both listeners.
    open_connections: AtomicUsize,
    /// Connections accepted so far, on both listeners (the last connection id given).
    connections: AtomicU64,
    /// CDN connections accepted so far (what [`EdgeMix::draw`] is keyed by).
    cdn_connections: AtomicU64,
    /// The paces new CDN connections draw from.
    edges: Option<EdgeMix>,
    /// TLS of the CDN listener.
    cdn_tls: Option<tokio_rustls::TlsAcceptor>,
    /// Most CDN connections served at once; requests on the extra ones get 429.
    cdn_connection_limit: Option<usize>,
    /// CDN connections open now.
    cdn_open: AtomicUsize,
}

impl Shared {
    fn store(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Configures and starts a [`HubEmulator`].
#[derive(Debug, Clone)]
pub struct HubBuilder {
    repos: Vec<RepoSpec>,
    cdn_redirect: bool,
    cdn_url_ttl: Duration,
    quirks: MirrorQuirks,
    hub_port: u16,
    cdn_port: u16,
    edges: Option<EdgeMix>,
    cdn_tls: Option<CdnTls>,
    cdn_connection_limit: Option<usize>,
    cdn_addresses: Vec<Ipv4Addr>,
    cdn_host: Option<String>,
}

impl Default for HubBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HubBuilder {
    /// No repos, LFS files redirected to the CDN with URLs valid for an hour, no mirror
    /// quirks, ephemeral ports.
    pub fn new() -> Self {
        Self {
            repos: Vec::new(),
            cdn_redirect: true,
            cdn_url_ttl: crate::signing::DEFAULT_TTL,
            quirks: MirrorQuirks::default(),
            hub_port: 0,
            cdn_port: 0,
            edges: None,
            cdn_tls: None,
            cdn_connection_limit: None,
            cdn_addresses: vec![Ipv4Addr::LOCALHOST],
            cdn_host: None,
        }
    }

    /// Serves the CDN on the same port on each of `addresses` (default `127.0.0.1` alone),
    /// like a CDN name that resolves to several edges; every loopback address `127.x.y.z`
    /// works on Linux. The request log names the address each connection reached
    /// ([`RequestRecord::local_addr`]). Empty: `127.0.0.1`.
    pub fn cdn_addresses(mut self, addresses: &[Ipv4Addr]) -> Self {
        self.cdn_addresses = if addresses.is_empty() {
            vec![Ipv4Addr::LOCALHOST]
        } else {
            addresses.to_vec()
        };
        self
    }

    /// Names the CDN `host` in the redirects' URLs instead of its first address, e.g. a name
    /// the client under test resolves to all of [`cdn_addresses`](Self::cdn_addresses).
    pub fn cdn_host(mut self, host: &str) -> Self {
        self.cdn_host = Some(host.to_owned());
        self
    }

    /// Serves at most `limit` CDN connections at once, like nginx's `limit_conn`: every
    /// request on a connection opened while `limit` others were open is answered `429` with
    /// `Retry-After: 1` (over HTTP/1.1 the connection is then closed).
    pub fn cdn_connection_limit(mut self, limit: usize) -> Self {
        self.cdn_connection_limit = Some(limit);
        self
    }

    /// Paces every CDN connection as a CDN edge or WAN path does: each new connection draws a
    /// rate from `edges` and every byte it sends, over all its responses and HTTP/2 streams,
    /// shares that rate (see [`crate::pacing`]). The request log names each request's
    /// connection and its pace ([`RequestRecord::connection`]).
    pub fn edge_mix(mut self, edges: EdgeMix) -> Self {
        self.edges = Some(edges);
        self
    }

    /// Serves the CDN over TLS with `tls`'s certificate (HTTP/2 offered by ALPN unless
    /// [`crate::Alpn::Http1Only`]); the CDN origin becomes `https://127.0.0.1:<port>`.
    pub fn cdn_tls(mut self, tls: CdnTls) -> Self {
        self.cdn_tls = Some(tls);
        self
    }

    /// Adds a repo (a later spec with the same id replaces an earlier one).
    pub fn repo(mut self, spec: RepoSpec) -> Self {
        self.repos.retain(|r| r.repo_id != spec.repo_id);
        self.repos.push(spec);
        self
    }

    /// Whether resolve requests for LFS files answer `302` to the CDN listener (default `true`)
    /// or serve the bytes directly.
    pub fn cdn_redirect(mut self, on: bool) -> Self {
        self.cdn_redirect = on;
        self
    }

    /// How long the signed CDN URLs of LFS redirects stay valid (default one hour, like the
    /// Hub's `X-Amz-Expires=3600`). The URL carries `Expires=<unix seconds>`, rounded up to a
    /// whole second; once that second has passed the CDN answers `403` with S3's
    /// `<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`, while a
    /// new resolve through the Hub hands out a fresh URL.
    pub fn cdn_url_ttl(mut self, ttl: Duration) -> Self {
        self.cdn_url_ttl = ttl;
        self
    }

    /// Behave like a mirror rather than the Hub (see [`MirrorQuirks`]).
    pub fn mirror_quirks(mut self, quirks: MirrorQuirks) -> Self {
        self.quirks = quirks;
        self
    }

    /// Fixed port for the Hub listener (default: ephemeral).
    pub fn port(mut self, hub_port: u16) -> Self {
        self.hub_port = hub_port;
        self
    }

    /// Fixed port for the CDN listener (default: ephemeral).
    pub fn cdn_port(mut self, port: u16) -> Self {
        self.cdn_port = port;
        self
    }

    /// Hashes the files (on all cores), binds `127.0.0.1` (and `[::1]` on the Hub port when
    /// possible, since the endpoint says `localhost`), and serves on a thread of its own with its
    /// own tokio runtime: usable from `#[test]`, `#[tokio::test]` of any flavor, or `main`.
    pub fn start(self) -> io::Result<HubEmulator> {
        let (hub_v4, hub_v6) = bind_hub(self.hub_port)?;
        let cdn = bind_cdn(&self.cdn_addresses, self.cdn_port)?;
        let hub_port = hub_v4.local_addr()?.port();
        let cdn_port = cdn[0].local_addr()?.port();
        let cdn_host = match &self.cdn_host {
            Some(host) => host.clone(),
            None => self.cdn_addresses[0].to_string(),
        };
        let cdn_tls = self.cdn_tls.as_ref().map(CdnTls::acceptor).transpose()?;
        let cdn_scheme = if cdn_tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            store: RwLock::new(Store::from_specs(self.repos)),
            faults: Mutex::new(FaultBook::default()),
            log: RequestLog::default(),
            cdn_redirect: self.cdn_redirect,
            cdn_url_ttl: self.cdn_url_ttl,
            quirks: self.quirks,
            hub_origin: format!("http://localhost:{hub_port}"),
            cdn_origin: format!("{cdn_scheme}://{cdn_host}:{cdn_port}"),
            open_connections: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            cdn_connections: AtomicU64::new(0),
            edges: self.edges,
            cdn_tls,
            cdn_connection_limit: self.cdn_connection_limit,
            cdn_open: AtomicUsize::new(0),
        });
        let mut listeners = vec![(hub_v4, Host::Hub)];
        listeners.extend(cdn.into_iter().map(|l| (l, Host::Cdn)));
        listeners.extend(hub_v6.map(|l| (l, Host::Hub)));
        for (listener, _) in &listeners {
            listener.set_nonblocking(true)?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hub-emulator")
            .enable_all()
            .build()?;
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("hub-emulator".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    for (listener, host) in listeners {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                tokio::spawn(accept_loop(
                                    listener,
                                    host,
                                    Arc::clone(&thread_shared),
                                ));
                            }
                            Err(_) => return,
                        }
                    }
                    // Resolves on `send` or when the handle is dropped.
                    let _ = shutdown_rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(HubEmulator {
            shared,
            hub_port,
            cdn_port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

/// Binds the Hub port on `127.0.0.1`, and the same port on `[::1]` when the host has IPv6, so
/// that `localhost` reaches this emulator whichever address a client tries first. With an
/// ephemeral port, retries until the port is free on both.
fn bind_hub(port: u16) -> io::Result<(StdListener, Option<StdListener>)> {
    let mut attempts = 0;
    loop {
        let v4 = StdListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let bound = v4.local_addr()?.port();
        match StdListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, bound))) {
            Ok(v6) => return Ok((v4, Some(v6))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && port == 0 && attempts < 20 => {
                attempts += 1;
            }
            // No IPv6, or a fixed port someone else holds on `[::1]`: IPv4 only.
            Err(_) => return Ok((v4, None)),
        }
    }
}

/// Binds the CDN port on every address of `addresses` (the first given; with an ephemeral
/// port, the one the first address got), retrying until a port is free on all of them.
fn bind_cdn(addresses: &[Ipv4Addr], port: u16) -> io::Result<Vec<StdListener>> {
    let mut attempts = 0;
    'retry: loop {
        let first = StdListener::bind((addresses[0], port))?;
        let bound = first.local_addr()?.port();
        let mut listeners = vec![first];
        for address in &addresses[1..] {
            match StdListener::bind((*address, bound)) {
                Ok(listener) => listeners.push(listener),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && port == 0 && attempts < 20 => {
                    attempts += 1;
                    continue 'retry;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(listeners);
    }
}

/// What the emulator serves for one file at one revision ([`HubEmulator::file_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Commit the revision resolved to (`X-Repo-Commit`).
    pub commit: String,
    /// Content length in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: String,
    /// Git blob id of what git stores: the content, or the LFS pointer for LFS files
    /// (the tree API's `oid`).
    pub git_blob_id: String,
    /// The etag clients name the cached blob after: `sha256` for LFS files, the git blob id of
    /// the content for regular files.
    pub etag: String,
    /// Whether the file is stored with LFS (redirected to the CDN).
    pub lfs: bool,
}

/// A running emulator. Dropping it stops the server and joins its thread.
pub struct HubEmulator {
    shared: Arc<Shared>,
    hub_port: u16,
    cdn_port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HubEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubEmulator")
            .field("endpoint", &self.shared.hub_origin)
            .field("cdn_origin", &self.shared.cdn_origin)
            .finish_non_exhaustive()
    }
}

impl HubEmulator {
    /// `"http://localhost:<hub_port>"`: the Hub host, what `HF_ENDPOINT` should be.
    pub fn endpoint(&self) -> String {
        self.shared.hub_origin.clone()
    }

    /// `"http://127.0.0.1:<cdn_port>"` (`https://` with [`HubBuilder::cdn_tls`]): the CDN
    /// host (a different host name than the Hub, like the real CDN, so clients drop the token
    /// on the redirect).
    pub fn cdn_origin(&self) -> String {
        self.shared.cdn_origin.clone()
    }

    /// Port of the Hub listener.
    pub fn hub_port(&self) -> u16 {
        self.hub_port
    }

    /// Port of the CDN listener.
    pub fn cdn_port(&self) -> u16 {
        self.cdn_port
    }

    /// The resolve URL of a file, encoded like the official client does
    /// (`{endpoint}/{repo_id}/resolve/{quote(rev, safe="")}/{quote(path)}`).
    pub fn resolve_url(&self, repo_id: &str, revision: &str, path: &str) -> String {
        let path: Vec<String> = path.split('/').map(http::encode_component).collect();
        format!(
            "{}/{repo_id}/resolve/{}/{}",
            self.shared.hub_origin,
            http::encode_component(revision),
            path.join("/")
        )
    }

    /// Every request received so far (since the last [`clear_requests`](Self::clear_requests)),
    /// oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    /// Connections being served now (both listeners). A client that was killed may still
    /// have requests on its way in; once this reaches zero, nothing more of it can reach the
    /// request log.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Acquire)
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// Installs a fault rule; rules act in the order added (see [`crate::fault`]).
    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.shared.faults).add(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// The commit `revision` (branch, ref, or full sha) of `repo_id` points at.
    pub fn commit_of(&self, repo_id: &str, revision: &str) -> Option<String> {
        let store = self.shared.store();
        let repo = store.repos.get(repo_id)?;
        repo.resolve(revision).map(|c| c.sha.clone())
    }

    /// What is served for `path` at `revision` of `repo_id` (hashes of regular files' contents
    /// are computed on the call).
    pub fn file_info(&self, repo_id: &str, revision: &str, path: &str) -> Option<FileInfo> {
        let store = self.shared.store();
        let commit = store.repos.get(repo_id)?.resolve(revision)?;
        let file = commit.files.get(path.trim_matches('/'))?;
        Some(FileInfo {
            commit: commit.sha.clone(),
            size: file.size(),
            sha256: file.lfs.as_ref().map_or_else(
                || crate::synth::sha256_hex(&file.content),
                |l| l.sha256.clone(),
            ),
            git_blob_id: file.git_oid.clone(),
            etag: file.etag().to_owned(),
            lfs: file.lfs.is_some(),
        })
    }

    /// Every file path of `repo_id` at `revision`, sorted (what the recursive tree lists).
    pub fn paths(&self, repo_id: &str, revision: &str) -> Option<Vec<String>> {
        let store = self.shared.store();
        let commit = store.repos.get(repo_id)?.resolve(revision)?;
        Some(commit.files.keys().cloned().collect())
    }

    /// Makes a new commit on `main` with `path` replaced or added and returns its sha; older
    /// commits stay resolvable by sha, other refs stay where they were.
    ///
    /// # Panics
    ///
    /// If `repo_id` is not a repo of this emulator.
    pub fn set_file(&self, repo_id: &str, path: &str, content: impl Into<Bytes>) -> String {
        let no_repo = format!("set_file: no repo {repo_id:?} in the emulator");
        let path = path.trim_matches('/');
        let lfs = self
            .shared
            .store()
            .stores_with_lfs(repo_id, path)
            .expect(&no_repo);
        // Hashed outside the lock: requests keep being served meanwhile.
        let entry = FileEntry::new(path.to_owned(), content.into(), lfs);
        self.shared
            .store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .commit_file(repo_id, entry)
            .expect(&no_repo)
    }
}

impl Drop for HubEmulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, host: Host, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, host, Arc::clone(&shared)));
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Counts a connection as open while it lives.
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One accepted connection, as the request log names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionInfo {
    pub(crate) id: u64,
    pub(crate) host: Host,
    pub(crate) version: HttpVersion,
    pub(crate) pace: Option<u64>,
    /// The address the client connected to (which listener accepted it).
    pub(crate) local_addr: Option<SocketAddr>,
    /// Opened beyond [`HubBuilder::cdn_connection_limit`]: every request gets 429.
    pub(crate) over_limit: bool,
}

/// Counts a CDN connection as open while it lives.
struct OpenCdnConnection(Arc<Shared>);

impl Drop for OpenCdnConnection {
    fn drop(&mut self) {
        self.0.cdn_open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Numbers, paces and (on a TLS CDN) handshakes one accepted connection, then serves it with
/// HTTP/1.1 or, when ALPN chose it, HTTP/2.
async fn connection(stream: TcpStream, host: Host, shared: Arc<Shared>) {
    shared.open_connections.fetch_add(1, Ordering::AcqRel);
    let _open = OpenConnection(Arc::clone(&shared));
    let _ = stream.set_nodelay(true);
    let id = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
    let pace = match (host, &shared.edges) {
        (Host::Cdn, Some(edges)) => {
            Some(edges.draw(shared.cdn_connections.fetch_add(1, Ordering::AcqRel) + 1))
        }
        _ => None,
    };
    let mut over_limit = false;
    let _cdn_open = (host == Host::Cdn).then(|| {
        let others = shared.cdn_open.fetch_add(1, Ordering::AcqRel);
        over_limit = shared
            .cdn_connection_limit
            .is_some_and(|limit| others >= limit);
        OpenCdnConnection(Arc::clone(&shared))
    });
    let mut info = ConnectionInfo {
        id,
        host,
        version: HttpVersion::Http1,
        pace,
        local_addr: stream.local_addr().ok(),
        over_limit,
    };
    let stream = PacedIo::new(stream, pace);
    match (host, &shared.cdn_tls) {
        (Host::Cdn, Some(acceptor)) => {
            // A client that does not trust the CA ends here.
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                info.version = HttpVersion::Http2;
                crate::http2::serve(tls, info, shared).await;
            } else {
                serve_connection(tls, info, shared).await;
            }
        }
        _ => serve_connection(stream, info, shared).await,
    }
}

/// Serves HTTP/1.1 requests on one connection until either side closes it.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    info: ConnectionInfo,
    shared: Arc<Shared>,
) {
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    loop {
        let request = match read_request(&mut stream, &mut buffer).await {
            Ok(ReadOutcome::Request(request)) => request,
            Ok(ReadOutcome::Closed) | Err(_) => return,
            Ok(ReadOutcome::Reject(status, message)) => {
                let response = Response::new(status).json(&serde_json::json!({ "error": message }));
                let _ = write_plain(&mut stream, &response, false, false).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        let exchange = prepare(&shared, info, &request);
        let keep_open = match exchange.send(&mut stream, &shared, info, request).await {
            Ok(keep_open) => keep_open,
            Err(_) => return,
        };
        if !keep_open {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// A routed response with the faults that act on it.
pub(crate) struct Exchange {
    pub(crate) response: Response,
    /// `ResetBeforeResponse`: close without answering.
    pub(crate) reset: bool,
    pub(crate) body_faults: Vec<Fault>,
}

/// Routes `request` and consults the fault rules.
pub(crate) fn prepare(shared: &Shared, info: ConnectionInfo, request: &Request) -> Exchange {
    let host = info.host;
    if info.over_limit {
        let message = "Too many connections";
        return Exchange {
            response: Response::new(429)
                .header("Retry-After", "1")
                .header("X-Error-Message", message)
                .json(&serde_json::json!({ "error": message })),
            reset: false,
            body_faults: Vec::new(),
        };
    }
    let store = shared.store();
    let ctx = RouteContext {
        store: &store,
        cdn_redirect: shared.cdn_redirect,
        cdn_origin: &shared.cdn_origin,
        cdn_url_ttl: shared.cdn_url_ttl,
        quirks: shared.quirks,
        now: crate::signing::now_unix(),
    };
    let mut response = routes::route(&ctx, host, request, false);
    let mut faults = lock(&shared.faults);
    if faults.is_empty() {
        return Exchange {
            response,
            reset: false,
            body_faults: Vec::new(),
        };
    }
    let paths = routes::fault_paths(&store, host, request);
    let subject = FaultSubject {
        host,
        method: &request.method,
        paths: paths.iter().map(String::as_str).collect(),
        range_from: request.header("range").and_then(range_start),
    };
    if let Some(fault) = faults.take(&subject, Fault::replaces_response, true).pop() {
        let origin = match host {
            Host::Hub => &shared.hub_origin,
            Host::Cdn => &shared.cdn_origin,
        };
        return Exchange {
            reset: fault == Fault::ResetBeforeResponse,
            response: replacement(&fault, request, origin),
            body_faults: Vec::new(),
        };
    }
    let mut body_faults = Vec::new();
    if !request.is_head() && response.file_offset.is_some() && !response.body.is_empty() {
        let partial = response.status == 206;
        if !faults
            .take(&subject, |f| partial && *f == Fault::IgnoreRange, false)
            .is_empty()
        {
            response = routes::route(&ctx, host, request, true);
        }
        let start = response.file_offset.unwrap_or(0);
        let end = start + response.body.len() as u64;
        body_faults = faults.take(
            &subject,
            |f| match f {
                Fault::FlipByte { offset } => (start..end).contains(offset),
                Fault::IgnoreRange => false,
                other => !other.replaces_response(),
            },
            false,
        );
    }
    Exchange {
        response,
        reset: false,
        body_faults,
    }
}

/// The answer a response-replacing fault gives instead of the real one.
fn replacement(fault: &Fault, request: &Request, origin: &str) -> Response {
    match fault {
        Fault::Status {
            code,
            retry_after_secs,
            ratelimit_reset_secs,
        } => {
            let message = format!("Emulated fault: HTTP {code}");
            let mut response = Response::new(*code).header("X-Error-Message", message.clone());
            if let Some(secs) = retry_after_secs {
                response = response.header("Retry-After", secs.to_string());
            }
            if let Some(secs) = ratelimit_reset_secs {
                response = response
                    .header("RateLimit", format!("\"api\";r=0;t={secs}"))
                    .header("RateLimit-Policy", "\"fixed window\";\"api\";q=500;w=300");
            }
            response.json(&serde_json::json!({ "error": message }))
        }
        Fault::RedirectLoop => {
            let query = request
                .query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            Response::new(302).header("Location", format!("{origin}{}{query}", request.path))
        }
        Fault::HtmlErrorPage200 => {
            let mut response =
                Response::new(200).header("Content-Type", "text/html; charset=utf-8");
            response.body = Bytes::from_static(
                b"<html><head><title>Error</title></head><body><h1>An error occurred</h1>\
                  <p>The upstream server returned an error. Please try again later.</p></body></html>",
            );
            response
        }
        _ => Response::new(0),
    }
}

impl Exchange {
    /// Logs and writes the exchange; returns whether the connection may serve another request.
    async fn send<S: AsyncWrite + Unpin>(
        self,
        stream: &mut S,
        shared: &Shared,
        info: ConnectionInfo,
        request: Request,
    ) -> io::Result<bool> {
        let head_only = request.is_head() || self.response.status == 304;
        let keep_alive = request.keep_alive();
        let plan = BodyPlan::new(&self.body_faults, self.response.body.len() as u64);
        let planned = if head_only || self.reset {
            0
        } else {
            plan.limit
        };
        let record = info.record(
            request,
            if self.reset { 0 } else { self.response.status },
            planned,
        );
        // Logged before writing, so a client that has the answer also finds it in the log.
        let seq = shared.log.push(record);
        if self.reset {
            return Ok(false);
        }
        let keep_open = keep_alive && !plan.closes && !info.over_limit;
        if head_only || (self.body_faults.is_empty() && self.response.body.len() <= SMALL_BODY) {
            write_plain(stream, &self.response, head_only, keep_open).await?;
            return Ok(keep_open);
        }
        let head = render_head(&self.response, plan.announced_length, keep_open);
        stream.write_all(&head).await?;
        let mut sent = 0;
        let result = plan.write_body(stream, &self.response, &mut sent).await;
        if result.is_err() || sent != planned {
            shared.log.set_body_bytes_sent(seq, sent);
        }
        result?;
        Ok(keep_open)
    }
}

/// Writes a response without body faults whose body is small (or left out): head and body in
/// one `write`.
async fn write_plain<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
    head_only: bool,
    keep_open: bool,
) -> io::Result<()> {
    let mut out = render_head(response, response.body.len() as u64, keep_open);
    if !head_only {
        debug_assert!(response.body.len() <= SMALL_BODY);
        out.extend_from_slice(&response.body);
    }
    stream.write_all(&out).await
}

/// Status line and headers, with `Content-Length` = `content_length` (left out on 304).
fn render_head(response: &Response, content_length: u64, keep_open: bool) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(512);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nServer: hub-emulator\r\n",
        response.status,
        reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        // Header values can echo request paths: keep them on one line.
        let value: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if response.status != 304 {
        let _ = write!(head, "Content-Length: {content_length}\r\n");
    }
    let connection = if keep_open { "keep-alive" } else { "close" };
    let _ = write!(head, "Connection: {connection}\r\n\r\n");
    head.into_bytes()
}

/// How body faults shape the bytes of one response.
pub(crate) struct BodyPlan {
    /// Body bytes sent before the connection is closed or the body ends.
    pub(crate) limit: u64,
    /// Value of the `Content-Length` header.
    pub(crate) announced_length: u64,
    /// Close the connection after this response.
    pub(crate) closes: bool,
    /// Pause after this many body bytes.
    stall: Option<(u64, Duration)>,
    /// Body offsets (relative to the response body) whose byte is inverted.
    flips: Vec<u64>,
    bytes_per_sec: Option<u64>,
}

impl BodyPlan {
    pub(crate) fn new(faults: &[Fault], body_len: u64) -> Self {
        let mut plan = BodyPlan {
            limit: body_len,
            announced_length: body_len,
            closes: false,
            stall: None,
            flips: Vec::new(),
            bytes_per_sec: None,
        };
        for fault in faults {
            match fault {
                Fault::CutAfter { bytes } => {
                    plan.limit = plan.limit.min(*bytes);
                    plan.closes = true;
                }
                Fault::StallAfter { bytes, stall } => plan.stall = Some((*bytes, *stall)),
                Fault::FlipByte { offset } => plan.flips.push(*offset),
                Fault::ContentLengthDelta { delta } => {
                    plan.announced_length = body_len.saturating_add_signed(*delta);
                    plan.closes = true;
                }
                Fault::BandwidthCap { bytes_per_sec } => {
                    plan.bytes_per_sec = Some((*bytes_per_sec).max(1));
                }
                _ => {}
            }
        }
        plan
    }

    /// Writes the body of `response` under this plan; `sent` counts bytes written.
    pub(crate) async fn write_body<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        response: &Response,
        sent: &mut u64,
    ) -> io::Result<()> {
        let body = &response.body;
        let base = response.file_offset.unwrap_or(0);
        // Events in body order: a stall at N happens before the byte at N is sent.
        let mut events: Vec<(u64, Option<Duration>)> = self
            .flips
            .iter()
            .map(|offset| (offset - base, None))
            .chain(self.stall.map(|(at, pause)| (at, Some(pause))))
            .filter(|(at, _)| *at < self.limit)
            .collect();
        events.sort_by_key(|(at, pause)| (*at, pause.is_none()));
        events.dedup();
        let mut pacer = Pacer::new(self.bytes_per_sec);
        let mut position = 0u64;
        for (at, pause) in events {
            pacer
                .write(stream, &body[position as usize..at as usize], sent)
                .await?;
            position = at;
            match pause {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    let flipped = [!body[at as usize]];
                    pacer.write(stream, &flipped, sent).await?;
                    position = at + 1;
                }
            }
        }
        pacer
            .write(stream, &body[position as usize..self.limit as usize], sent)
            .await?;
        stream.flush().await
    }
}

/// Writes body pieces, optionally no faster than a rate.
struct Pacer {
    bytes_per_sec: Option<u64>,
    start: Instant,
    paced: u64,
}

impl Pacer {
    fn new(bytes_per_sec: Option<u64>) -> Self {
        Self {
            bytes_per_sec,
            start: Instant::now(),
            paced: 0,
        }
    }

    async fn write<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        mut data: &[u8],
        sent: &mut u64,
    ) -> io::Result<()> {
        let Some(rate) = self.bytes_per_sec else {
            while !data.is_empty() {
                let n = stream.write(data).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                *sent += n as u64;
                data = &data[n..];
            }
            return Ok(());
        };
        // Pieces of about 1/20 s, so pacing is smooth even at low rates.
        let piece = (rate / 20).clamp(1, PACED_CHUNK) as usize;
        while !data.is_empty() {
            let due = self.start + Duration::from_secs_f64(self.paced as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let chunk = &data[..piece.min(data.len())];
            stream.write_all(chunk).await?;
            *sent += chunk.len() as u64;
            self.paced += chunk.len() as u64;
            data = &data[chunk.len()..];
        }
        Ok(())
    }
}

impl ConnectionInfo {
    /// The log entry of `request` answered with `status` and `body_bytes_sent` body bytes.
    pub(crate) fn record(
        &self,
        request: Request,
        status: u16,
        body_bytes_sent: u64,
    ) -> RequestRecord {
        RequestRecord {
            host: self.host,
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            status,
            body_bytes_sent,
            connection: self.id,
            http_version: self.version,
            connection_pace: self.pace,
            local_addr: self.local_addr,
        }
    }
}
