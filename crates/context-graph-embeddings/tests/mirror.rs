//! The pull-through mirror against a real S3-compatible object store: Garage nodes started on
//! loopback as child processes, the Hub emulated by `hub-emulator`.
//!
//! Garage comes from `scripts/install-garage`; the binary is `CG_TEST_GARAGE`, else `garage`
//! on `PATH`. Without it these tests fail, unless `CG_SKIP_GARAGE_TESTS=1` (then they say
//! why and pass).

// Tests read their own switches (CG_TEST_*, CG_SKIP_*) and start children with a real
// environment; the ban on the process environment is for the library.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::print_stderr)]

#[path = "it/support.rs"]
mod support;

#[path = "common/relay.rs"]
mod relay;

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, Mirror, MirrorConfig, ModelArtifactManager, Outcome, ProgressEvent,
    ProgressKind, ReadinessState,
};
use context_graph_embeddings::artifacts::{ByteSource, Opened};
use context_graph_embeddings::{EmbeddingError, ModelId};
use futures_util::TryStreamExt;
use hub_emulator::{synth, Host, RequestRecord};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tokio::sync::broadcast;

use relay::slow_link;
use support::{drain, model, Fixture};

const BUCKET: &str = "cg-models";
const PREFIX: &str = "pipeline/sha256";
const REGION: &str = "garage";
const KEY_NAME: &str = "cg-test";
/// How long any one step of bringing a cluster up may take.
const BOOT_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Garage harness
// ---------------------------------------------------------------------------------------

/// The Garage binary, or `None` when the tests are to be skipped (`CG_SKIP_GARAGE_TESTS=1`).
/// Panics when it is missing otherwise: CI must not pass by testing nothing.
fn garage_binary() -> Option<PathBuf> {
    let skip = std::env::var("CG_SKIP_GARAGE_TESTS").is_ok_and(|v| v == "1" || v == "true");
    let configured = std::env::var_os("CG_TEST_GARAGE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let found = configured.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("garage"))
                .find(|candidate| candidate.is_file())
        })
    });
    let works = found.filter(|path| {
        Command::new(path)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    match works {
        Some(path) => Some(path),
        None if skip => {
            eprintln!(
                "skipped: CG_SKIP_GARAGE_TESTS=1 and no Garage binary (CG_TEST_GARAGE or `garage` on PATH)"
            );
            None
        }
        None => panic!(
            "Garage is not installed: run scripts/install-garage (or point CG_TEST_GARAGE at a \
             garage binary); set CG_SKIP_GARAGE_TESTS=1 to skip the mirror tests"
        ),
    }
}

/// The Garage binary, or returns from the test (skipped on purpose).
macro_rules! garage_or_skip {
    () => {
        match garage_binary() {
            Some(binary) => binary,
            None => return,
        }
    };
}

/// Loopback ports free right now (held together, so they are distinct).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<StdListener> = (0..count)
        .map(|_| StdListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct GarageNode {
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    child: Mutex<Option<Child>>,
}

/// A Garage cluster on loopback: one bucket, one key with read and write on it. Every node
/// is killed when this is dropped.
struct Garage {
    binary: PathBuf,
    _dir: tempfile::TempDir,
    nodes: Vec<GarageNode>,
    key_id: String,
    secret: String,
}

impl Garage {
    /// Starts `count` nodes with replication factor `count` and waits until the cluster is
    /// healthy and the bucket writable. A node that dies while booting (a port taken
    /// meanwhile) makes it start over, at most three times.
    fn start(binary: &Path, count: usize) -> Garage {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(binary, count) {
                Ok(garage) => return garage,
                Err(error) => {
                    eprintln!("garage cluster did not come up, retrying: {error}");
                    last = error;
                }
            }
        }
        panic!("garage cluster did not come up: {last}");
    }

    fn try_start(binary: &Path, count: usize) -> Result<Garage, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let rpc_secret = synth::sha256_hex(format!("{:?}", dir.path()).as_bytes());
        let ports = free_ports(count * 2);
        let mut nodes = Vec::new();
        for index in 0..count {
            let (s3_port, rpc_port) = (ports[index * 2], ports[index * 2 + 1]);
            let home = dir.path().join(format!("node{index}"));
            std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
            let config = home.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{home}/meta"
data_dir = "{home}/data"
db_engine = "lmdb"
replication_factor = {count}
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"
bootstrap_peers = []

[s3_api]
api_bind_addr = "127.0.0.1:{s3_port}"
s3_region = "{REGION}"
"#,
                    home = home.display(),
                ),
            )
            .map_err(|e| e.to_string())?;
            let log = home.join("garage.log");
            let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(binary)
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env("RUST_LOG", "garage=info")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
            nodes.push(GarageNode {
                config,
                log,
                s3_port,
                rpc_port,
                child: Mutex::new(Some(child)),
            });
        }
        let mut garage = Garage {
            binary: binary.to_path_buf(),
            _dir: dir,
            nodes,
            key_id: String::new(),
            secret: String::new(),
        };
        for index in 0..count {
            garage.wait_for(index, "answers", |g| g.run(index, &["status"]).map(|_| ()))?;
        }
        let ids: Vec<String> = (0..count)
            .map(|index| {
                let id = garage.run(index, &["node", "id", "-q"])?;
                Ok(id.trim().split('@').next().unwrap_or_default().to_owned())
            })
            .collect::<Result<_, String>>()?;
        for (index, id) in ids.iter().enumerate().skip(1) {
            let address = format!("{id}@127.0.0.1:{}", garage.nodes[index].rpc_port);
            garage.run(0, &["node", "connect", &address])?;
        }
        let mut assign = vec!["layout", "assign", "-z", "dc1", "-c", "1G"];
        assign.extend(ids.iter().map(String::as_str));
        garage.run(0, &assign)?;
        garage.run(0, &["layout", "apply", "--version", "1"])?;
        for index in 0..count {
            garage.wait_for(index, "is healthy", |g| match g.health(index) {
                Ok(health) if health["status"] == "healthy" => Ok(()),
                Ok(health) => Err(format!("health: {health}")),
                Err(e) => Err(e),
            })?;
        }
        let key: serde_json::Value = serde_json::from_str(&garage.run(
            0,
            &[
                "json-api",
                "CreateKey",
                &format!(r#"{{"name":"{KEY_NAME}"}}"#),
            ],
        )?)
        .map_err(|e| format!("CreateKey answered no JSON: {e}"))?;
        garage.key_id = key["accessKeyId"].as_str().unwrap_or_default().to_owned();
        garage.secret = key["secretAccessKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        garage.run(0, &["bucket", "create", BUCKET])?;
        garage.run(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME,
            ],
        )?;
        // The S3 API of every node accepts the key (layout and key tables are replicated).
        for index in 0..count {
            garage.wait_for(index, "serves S3", |g| g.s3_probe(index))?;
        }
        Ok(garage)
    }

    /// Retries `check` until it passes, at most [`BOOT_LIMIT`]; fails at once when the node
    /// process has exited.
    fn wait_for(
        &self,
        index: usize,
        what: &str,
        check: impl Fn(&Garage) -> Result<(), String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            let result = check(self);
            let Err(error) = result else {
                return Ok(());
            };
            if !self.is_running(index) {
                return Err(format!(
                    "garage node {index} exited while waiting until it {what}: {error}\n{}",
                    self.log_tail(index)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "garage node {index} never {what} within {BOOT_LIMIT:?}: {error}\n{}",
                    self.log_tail(index)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the garage CLI against node `index`; its standard output, or what went wrong.
    fn run(&self, index: usize, args: &[&str]) -> Result<String, String> {
        let output = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.nodes[index].config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run garage: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "`garage {}` on node {index}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// The cluster health as node `index` sees it (`GetClusterHealth` of the admin API).
    fn health(&self, index: usize) -> Result<serde_json::Value, String> {
        let text = self.run(index, &["json-api", "GetClusterHealth"])?;
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}: {text}"))
    }

    fn s3_probe(&self, index: usize) -> Result<(), String> {
        let store = self.store(index);
        let probe = ObjectPath::from(format!("probe/{index}"));
        block_on(async move {
            store
                .put(&probe, PutPayload::from_static(b"probe"))
                .await
                .map_err(|e| e.to_string())?;
            store.delete(&probe).await.map_err(|e| e.to_string())
        })
    }

    fn is_running(&self, index: usize) -> bool {
        let mut child = self.nodes[index].child.lock().unwrap();
        match child.as_mut() {
            Some(process) => matches!(process.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills node `index` (SIGKILL) and reaps it.
    fn kill(&self, index: usize) {
        if let Some(mut process) = self.nodes[index].child.lock().unwrap().take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn log_tail(&self, index: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[index].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The S3 endpoint of node `index`.
    fn endpoint(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[index].s3_port)
    }

    fn s3_port(&self, index: usize) -> u16 {
        self.nodes[index].s3_port
    }

    /// The mirror on this cluster's bucket, through `endpoint`.
    fn mirror_config(&self, endpoint: &str, write: bool) -> MirrorConfig {
        MirrorConfig {
            endpoint: Some(endpoint.to_owned()),
            region: Some(REGION.to_owned()),
            access_key_id: Some(self.key_id.clone()),
            secret_access_key: Some(self.secret.clone()),
            write,
            retry_timeout: Duration::from_secs(2),
            ..MirrorConfig::new(format!("s3://{BUCKET}/{PREFIX}"))
        }
    }

    /// A plain S3 client of the bucket through node `index`, for the tests' own checks.
    fn store(&self, index: usize) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint(index))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
                ..RetryConfig::default()
            })
            .build()
            .expect("S3 client")
    }

    /// Every object under the mirror's prefix: sha256 → size.
    async fn objects(&self, index: usize) -> BTreeMap<String, u64> {
        let listed: Vec<object_store::ObjectMeta> = self
            .store(index)
            .list(Some(&ObjectPath::from(PREFIX)))
            .try_collect()
            .await
            .expect("list the bucket");
        listed
            .into_iter()
            .map(|meta| {
                let name = meta.location.filename().unwrap_or_default().to_owned();
                (name, meta.size)
            })
            .collect()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

/// Runs a future to completion from synchronous harness code (its own small runtime, so it
/// works inside and outside the tests' runtime).
fn block_on<T: Send + 'static>(future: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    })
    .join()
    .expect("harness thread")
}

// ---------------------------------------------------------------------------------------
// Helpers over the fixture
// ---------------------------------------------------------------------------------------

fn object_url(sha256: &str) -> String {
    format!("s3://{BUCKET}/{PREFIX}/{sha256}")
}

fn object_path(sha256: &str) -> ObjectPath {
    ObjectPath::from(format!("{PREFIX}/{sha256}"))
}

/// A configuration of another node: the fixture's, with its own cache and a mirror.
fn node_config(fx: &Fixture, cache: &Path, mirror: MirrorConfig) -> ArtifactManagerConfig {
    ArtifactManagerConfig {
        cache_dir: cache.to_path_buf(),
        mirror: Some(mirror),
        ..fx.config()
    }
}

/// Every request the emulator logged that concerns this file (its repo, or its blob).
fn hub_requests_for(fx: &Fixture, id: ModelId) -> Vec<RequestRecord> {
    let file = fx.file(id);
    fx.hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&file.repo_id) || r.path.contains(&file.sha256))
        .collect()
}

/// Where each model's `Completed` event says its bytes came from.
fn sources(events: &[ProgressEvent]) -> BTreeMap<ModelId, Option<String>> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            ProgressKind::Completed { source, .. } => Some((e.model_id, source.clone())),
            _ => None,
        })
        .collect()
}

fn fallbacks(events: &[ProgressEvent]) -> Vec<(ModelId, String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            ProgressKind::FallingBack { from, reason } => {
                Some((e.model_id, from.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The snapshot file of `id` in `manager`'s cache hashes to the served file.
fn assert_verified(fx: &Fixture, manager: &ModelArtifactManager, id: ModelId) {
    let path = manager
        .get_path(id)
        .unwrap_or_else(|| panic!("{id} is not available"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        synth::sha256_hex(&bytes),
        fx.file(id).sha256,
        "{id}: {path:?} holds the wrong bytes"
    );
}

/// The readiness report names this source for `id`.
fn assert_ready_from(manager: &ModelArtifactManager, id: ModelId, source: &str) {
    let report = manager.readiness_report();
    let entry = report.models.iter().find(|m| m.model_id == id).unwrap();
    assert_eq!(entry.state, ReadinessState::Ready, "{entry:?}");
    assert_eq!(entry.source.as_deref(), Some(source), "{entry:?}");
}

/// Waits for the first bytes of a download, then runs `act` once.
fn on_first_bytes(
    mut events: broadcast::Receiver<ProgressEvent>,
    act: impl FnOnce(u64) + Send + 'static,
) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event)
                    if matches!(event.kind, ProgressKind::Progress)
                        && event.bytes_downloaded > 0 =>
                {
                    act(event.bytes_downloaded);
                    return Some(event.bytes_downloaded);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Node A fills the mirror from the Hub; node B, with an empty cache, reads every byte from
/// the mirror and asks the Hub only for the hash of the unpinned file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_through_fills_the_store_and_the_next_node_reads_only_from_it() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let fx = Fixture::new(&[
        model(ModelId::Semantic, 1_500_000, true),
        model(ModelId::Code, 1_000_000, true),
        model(ModelId::Graph, 600_000, false),
    ]);
    let served = [ModelId::Semantic, ModelId::Code, ModelId::Graph];

    // Node A: everything from the Hub, uploaded once verified.
    let mirror = garage.mirror_config(&garage.endpoint(0), true);
    let node_a = ModelArtifactManager::new(node_config(&fx, &fx.cache_dir(), mirror.clone()))
        .expect("manager A");
    let mut events_a = node_a.subscribe_progress();
    node_a.ensure_all_models().await.expect("node A ensures");
    let events_a = drain(&mut events_a);
    for id in served {
        assert_eq!(
            sources(&events_a)[&id].as_deref(),
            Some("hub"),
            "{id} on node A"
        );
        assert_ready_from(&node_a, id, "hub");
        assert_verified(&fx, &node_a, id);
    }
    assert!(
        fx.gets("/lfs/").len() >= served.len(),
        "node A fetched the blobs from the Hub: {:?}",
        fx.hub.requests()
    );
    let expected: BTreeMap<String, u64> = served
        .iter()
        .map(|id| {
            (
                fx.file(*id).sha256.clone(),
                fx.file(*id).content.len() as u64,
            )
        })
        .collect();
    let objects = garage.objects(0).await;
    assert_eq!(
        objects, expected,
        "the store holds <prefix>/<sha256> of each file, with its size"
    );
    let uploaded_at: BTreeMap<String, _> = {
        let store = garage.store(0);
        let mut times = BTreeMap::new();
        for sha in expected.keys() {
            times.insert(
                sha.clone(),
                store.head(&object_path(sha)).await.unwrap().last_modified,
            );
        }
        times
    };

    // Node B: fresh cache, same mirror.
    fx.hub.clear_requests();
    let cache_b = fx.dir.path().join("node-b");
    let node_b = ModelArtifactManager::new(node_config(&fx, &cache_b, mirror)).expect("manager B");
    let mut events_b = node_b.subscribe_progress();
    node_b.ensure_all_models().await.expect("node B ensures");
    let events_b = drain(&mut events_b);
    assert!(
        fallbacks(&events_b).is_empty(),
        "{:?}",
        fallbacks(&events_b)
    );
    for id in served {
        let sha = &fx.file(id).sha256;
        assert_eq!(
            sources(&events_b)[&id].as_deref(),
            Some(object_url(sha).as_str()),
            "{id} on node B"
        );
        assert_ready_from(&node_b, id, &object_url(sha));
        assert_verified(&fx, &node_b, id);
        assert!(
            node_b.get_path(id).unwrap().starts_with(&cache_b),
            "node B's own cache"
        );
    }
    // The Hub: no byte of any blob; nothing at all for pinned files; a HEAD (for the hash)
    // for the unpinned one.
    let requests = fx.hub.requests();
    assert!(
        requests.iter().all(|r| r.method != "GET"),
        "node B sent no GET to the Hub: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.host == Host::Hub),
        "nothing reached the CDN: {requests:?}"
    );
    for id in [ModelId::Semantic, ModelId::Code] {
        assert!(
            hub_requests_for(&fx, id).is_empty(),
            "pinned {id}: no Hub request: {:?}",
            hub_requests_for(&fx, id)
        );
    }
    let graph = hub_requests_for(&fx, ModelId::Graph);
    assert!(
        !graph.is_empty() && graph.iter().all(|r| r.method == "HEAD"),
        "unpinned: HEAD only: {graph:?}"
    );
    // The store: the same objects, none uploaded again.
    assert_eq!(garage.objects(0).await, expected);
    let store = garage.store(0);
    for (sha, when) in &uploaded_at {
        let now = store.head(&object_path(sha)).await.unwrap().last_modified;
        assert_eq!(&now, when, "{sha} was not rewritten by node B");
    }
}

/// A fully pinned manifest and a Hub nobody can reach: everything comes from the store (a
/// partial download resumed by a range read), and a file the store lacks fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_air_gapped_node_gets_everything_from_the_store() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let fx = Fixture::new(&[
        model(ModelId::Semantic, 1_200_000, true),
        model(ModelId::Sparse, 800_000, true),
        model(ModelId::Entity, 300_000, true),
    ]);
    // Seed the store through the library's own upload, as a connected node would.
    let mirror = Mirror::connect(&garage.mirror_config(&garage.endpoint(0), true)).unwrap();
    for id in [ModelId::Semantic, ModelId::Sparse] {
        let file = fx.file(id);
        let path = fx.dir.path().join(format!("seed-{}", file.sha256));
        std::fs::write(&path, &file.content).unwrap();
        let uploaded = mirror
            .upload(&path, &file.sha256, file.content.len() as u64)
            .await
            .expect("seed upload");
        assert!(uploaded, "{id} was not in the store yet");
    }
    assert_eq!(garage.objects(0).await.len(), 2);

    // A partial download of one of them from an earlier run: resumed by a ranged read.
    let sparse = fx.file(ModelId::Sparse);
    let kept = 300_000usize;
    std::fs::create_dir_all(fx.blobs_dir(ModelId::Sparse)).unwrap();
    std::fs::write(
        fx.blobs_dir(ModelId::Sparse)
            .join(format!("{}.0000aaaa.incomplete", sparse.sha256)),
        &sparse.content[..kept],
    )
    .unwrap();

    let closed = free_ports(1)[0];
    let config = ArtifactManagerConfig {
        endpoint: format!("http://127.0.0.1:{closed}"),
        ..node_config(
            &fx,
            &fx.cache_dir(),
            garage.mirror_config(&garage.endpoint(0), false),
        )
    };
    let manager = ModelArtifactManager::new(config).unwrap();
    let mut events = manager.subscribe_progress();
    let error = manager
        .ensure_models(&[ModelId::Semantic, ModelId::Sparse])
        .await;
    let events = drain(&mut events);
    error.expect("both files come from the store");
    assert!(fallbacks(&events).is_empty(), "{:?}", fallbacks(&events));
    let resumed = events.iter().find_map(|e| match &e.kind {
        ProgressKind::Completed {
            outcome,
            bytes_transferred,
            ..
        } if e.model_id == ModelId::Sparse => Some((*outcome, *bytes_transferred)),
        _ => None,
    });
    assert_eq!(
        resumed,
        Some((Outcome::Resumed, (sparse.content.len() - kept) as u64)),
        "the partial was continued with a range read of the object"
    );
    for id in [ModelId::Semantic, ModelId::Sparse] {
        let url = object_url(&fx.file(id).sha256);
        assert_eq!(sources(&events)[&id].as_deref(), Some(url.as_str()));
        assert_ready_from(&manager, id, &url);
        assert_verified(&fx, &manager, id);
    }
    assert!(
        fx.hub.requests().is_empty(),
        "the emulator was never asked: {:?}",
        fx.hub.requests()
    );

    // Not in the store and no Hub: that file fails, clearly, and alone.
    let error = manager.ensure_all_models().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains(ModelId::Entity.as_str()), "{text}");
    assert!(
        !text.contains(ModelId::Semantic.as_str()) && !text.contains(ModelId::Sparse.as_str()),
        "{text}"
    );
    assert!(manager.get_path(ModelId::Entity).is_none());
    assert!(manager
        .readiness_report()
        .ready_models
        .contains(&ModelId::Sparse));
}

/// An object whose bytes are not the blob (same size, other content) is caught by the hash
/// check, never placed in the cache; the Hub supplies the file, and the pull-through upload
/// replaces the bad object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_object_is_detected_and_the_hub_supplies_the_file() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let fx = Fixture::new(&[model(ModelId::Code, 1_000_000, true)]);
    let file = fx.file(ModelId::Code).clone();
    let mut corrupt = file.content.clone();
    for byte in corrupt.iter_mut().skip(4096).step_by(997) {
        *byte ^= 0x5a;
    }
    assert_eq!(corrupt.len(), file.content.len());
    let store = garage.store(0);
    store
        .put(
            &object_path(&file.sha256),
            PutPayload::from(corrupt.clone()),
        )
        .await
        .unwrap();

    let manager = ModelArtifactManager::new(node_config(
        &fx,
        &fx.cache_dir(),
        garage.mirror_config(&garage.endpoint(0), true),
    ))
    .unwrap();
    let mut events = manager.subscribe_progress();
    manager
        .ensure_all_models()
        .await
        .expect("the Hub supplies the file");
    let events = drain(&mut events);

    let falls = fallbacks(&events);
    assert_eq!(falls.len(), 1, "{falls:?}");
    assert_eq!(falls[0].1, object_url(&file.sha256));
    assert!(
        falls[0].2.contains(&file.sha256),
        "the reason names the expected hash: {}",
        falls[0].2
    );
    assert_eq!(
        sources(&events)[&ModelId::Code].as_deref(),
        Some("hub"),
        "{events:?}"
    );
    assert_ready_from(&manager, ModelId::Code, "hub");
    assert_verified(&fx, &manager, ModelId::Code);
    let blob = std::fs::read(fx.blob_path(ModelId::Code)).unwrap();
    assert_eq!(
        synth::sha256_hex(&blob),
        file.sha256,
        "the blob is the real one"
    );
    assert!(
        support::partials(&fx.blobs_dir(ModelId::Code)).is_empty(),
        "no leftover of the corrupt bytes"
    );
    // The Hub sent the whole file.
    let cdn: Vec<_> = fx
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&file.sha256))
        .collect();
    assert!(
        cdn.iter()
            .any(|r| r.body_bytes_sent == file.content.len() as u64),
        "a full download from the Hub: {cdn:?}"
    );
    // The store now holds the verified bytes.
    let stored = store
        .get(&object_path(&file.sha256))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        synth::sha256_hex(&stored),
        file.sha256,
        "the pull-through upload replaced the corrupted object"
    );
}

/// The store dies while a body streams (a slow link in front of it, the node killed at the
/// first bytes): the mirror is given up after its retry timeout and the Hub resumes the
/// partial download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_dying_mid_download_falls_back_to_the_hub() {
    let binary = garage_or_skip!();
    let garage = Arc::new(Garage::start(&binary, 1));
    let fx = Fixture::new(&[model(ModelId::Semantic, 4_000_000, true)]);
    let file = fx.file(ModelId::Semantic).clone();
    let size = file.content.len() as u64;
    garage
        .store(0)
        .put(
            &object_path(&file.sha256),
            PutPayload::from(file.content.clone()),
        )
        .await
        .unwrap();

    let link = slow_link(garage.s3_port(0), 1_000_000).await;
    let mut mirror = garage.mirror_config(&format!("http://127.0.0.1:{link}"), false);
    mirror.retry_timeout = Duration::from_secs(1);
    let manager = ModelArtifactManager::new(ArtifactManagerConfig {
        progress_interval: Duration::from_millis(20),
        ..node_config(&fx, &fx.cache_dir(), mirror)
    })
    .unwrap();
    let mut events = manager.subscribe_progress();
    let killed = {
        let garage = garage.clone();
        on_first_bytes(manager.subscribe_progress(), move |_| garage.kill(0))
    };
    let started = Instant::now();
    manager
        .ensure_all_models()
        .await
        .expect("the Hub completes the file");
    let elapsed = started.elapsed();
    let events = drain(&mut events);
    let killed_at = killed.await.unwrap().expect("bytes arrived from the store");
    assert!(killed_at < size, "killed at {killed_at} of {size}");
    assert!(!garage.is_running(0), "the node is dead");

    let falls = fallbacks(&events);
    assert_eq!(falls.len(), 1, "{falls:?}");
    assert_eq!(falls[0].1, object_url(&file.sha256));
    assert_eq!(sources(&events)[&ModelId::Semantic].as_deref(), Some("hub"));
    assert_ready_from(&manager, ModelId::Semantic, "hub");
    assert_verified(&fx, &manager, ModelId::Semantic);
    // The Hub resumed what the store had delivered, and sent only the rest.
    let hub_gets: Vec<_> = fx
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&file.sha256))
        .collect();
    let resumed = hub_gets.iter().find(|r| {
        r.range()
            .is_some_and(|range| !range.starts_with("bytes=0-"))
    });
    let resumed = resumed.unwrap_or_else(|| panic!("a ranged GET resuming: {hub_gets:?}"));
    assert!(
        resumed.body_bytes_sent < size,
        "only the rest came from the Hub: {resumed:?}"
    );
    let from_store = events
        .iter()
        .filter(|e| matches!(e.kind, ProgressKind::Started { .. }))
        .filter_map(|e| match e.kind {
            ProgressKind::Started { resumed_from } => Some(resumed_from),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(
        from_store > 0,
        "the Hub download started from the store's bytes"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "given up in bounded time: {elapsed:?}"
    );
}

/// Three nodes, replication factor 3: a node stopping while a body streams from another
/// does not disturb the download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_survives_losing_a_node_during_a_download() {
    let binary = garage_or_skip!();
    let garage = Arc::new(Garage::start(&binary, 3));
    let fx = Fixture::new(&[
        model(ModelId::Causal, 3_000_000, true),
        model(ModelId::Hdc, 500_000, false),
    ]);
    let served = [ModelId::Causal, ModelId::Hdc];

    // Node A fills the store through the first Garage node.
    let node_a = ModelArtifactManager::new(node_config(
        &fx,
        &fx.cache_dir(),
        garage.mirror_config(&garage.endpoint(0), true),
    ))
    .unwrap();
    node_a.ensure_all_models().await.expect("node A ensures");
    // Every Garage node lists both objects (each holds a replica).
    for index in 0..3 {
        let objects = garage.objects(index).await;
        for id in served {
            assert_eq!(
                objects.get(&fx.file(id).sha256),
                Some(&(fx.file(id).content.len() as u64)),
                "node {index}: {objects:?}"
            );
        }
    }

    // Node B reads through the second Garage node over a slow link; the third Garage node
    // is stopped as the first bytes arrive.
    fx.hub.clear_requests();
    let link = slow_link(garage.s3_port(1), 2_000_000).await;
    let cache_b = fx.dir.path().join("node-b");
    let node_b = ModelArtifactManager::new(ArtifactManagerConfig {
        progress_interval: Duration::from_millis(20),
        max_concurrent_downloads: 1,
        ..node_config(
            &fx,
            &cache_b,
            garage.mirror_config(&format!("http://127.0.0.1:{link}"), false),
        )
    })
    .unwrap();
    let mut events = node_b.subscribe_progress();
    let stopped = {
        let garage = garage.clone();
        on_first_bytes(node_b.subscribe_progress(), move |_| garage.kill(2))
    };
    node_b.ensure_all_models().await.expect("node B ensures");
    let events = drain(&mut events);
    let stopped_at = stopped.await.unwrap().expect("bytes arrived");
    assert!(!garage.is_running(2), "the third node is down");
    assert!(
        stopped_at < fx.file(ModelId::Causal).content.len() as u64,
        "stopped mid-download, at {stopped_at}"
    );

    assert!(fallbacks(&events).is_empty(), "{:?}", fallbacks(&events));
    for id in served {
        let url = object_url(&fx.file(id).sha256);
        assert_eq!(sources(&events)[&id].as_deref(), Some(url.as_str()), "{id}");
        assert_ready_from(&node_b, id, &url);
        assert_verified(&fx, &node_b, id);
    }
    let requests = fx.hub.requests();
    assert!(
        requests.iter().all(|r| r.method != "GET"),
        "no byte from the Hub: {requests:?}"
    );
    // Garage's side: the cluster knows it lost a node and still serves every object.
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let health = garage.health(0).expect("health");
        if health["storageNodesUp"] == 2 || Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health["storageNodesUp"], 2, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(garage.objects(1).await.len(), served.len());
}

/// `CG_MODELS_MIRROR`, `CG_MODELS_MIRROR_WRITE` and the usual AWS variables (or a credentials
/// file and profile) are all a node needs to write to and read from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_alone_configures_the_mirror() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let dir = tempfile::tempdir().unwrap();
    let content = synth::safetensors(200_000, 7);
    let sha = synth::sha256_hex(&content);
    let size = content.len() as u64;
    let blob = dir.path().join("blob");
    std::fs::write(&blob, &content).unwrap();
    let url = format!("s3://{BUCKET}/{PREFIX}");

    // A writer: keys, region and endpoint in AWS_* variables.
    let writer_vars: BTreeMap<&str, String> = BTreeMap::from([
        ("CG_MODELS_MIRROR", url.clone()),
        ("CG_MODELS_MIRROR_WRITE", "1".to_owned()),
        ("AWS_ACCESS_KEY_ID", garage.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", garage.secret.clone()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ENDPOINT_URL", garage.endpoint(0)),
    ]);
    let writer_env = |name: &str| writer_vars.get(name).cloned();
    let config = ArtifactManagerConfig::from_lookup(&writer_env)
        .mirror
        .expect("CG_MODELS_MIRROR names a mirror");
    assert!(config.write && config.endpoint.is_none() && config.access_key_id.is_none());
    let writer = Mirror::connect_with(&config, &writer_env).unwrap();
    assert!(writer.is_writable());
    assert!(writer.upload(&blob, &sha, size).await.expect("upload"));
    assert_eq!(garage.objects(0).await.get(&sha), Some(&size));

    // A reader: keys from a profile of a credentials file, the S3-specific endpoint variable.
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = GKnotthisone\naws_secret_access_key = wrong\n\n\
             [mirror]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            garage.key_id, garage.secret
        ),
    )
    .unwrap();
    let reader_vars: BTreeMap<&str, String> = BTreeMap::from([
        ("CG_MODELS_MIRROR", url),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            credentials.display().to_string(),
        ),
        ("AWS_PROFILE", "mirror".to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("AWS_ENDPOINT_URL_S3", garage.endpoint(0)),
    ]);
    let reader_env = |name: &str| reader_vars.get(name).cloned();
    let config = MirrorConfig::from_env(&reader_env).unwrap();
    assert!(!config.write);
    let reader = Mirror::connect_with(&config, &reader_env).unwrap();
    assert_eq!(read_object(&reader, &sha).await.unwrap(), content);

    // The region is part of the signature: Garage refuses any other than its `s3_region`.
    let mut wrong_vars = reader_vars.clone();
    wrong_vars.remove("AWS_DEFAULT_REGION");
    let wrong_env = |name: &str| wrong_vars.get(name).cloned();
    let wrong = Mirror::connect_with(&config, &wrong_env).unwrap();
    let error = read_object(&wrong, &sha).await.unwrap_err();
    assert!(
        matches!(error, EmbeddingError::Mirror { .. }),
        "a plain mirror failure (the Hub is tried next): {error:?}"
    );
}

/// Reads a whole object through the mirror's byte source.
async fn read_object(mirror: &Mirror, sha256: &str) -> Result<Vec<u8>, EmbeddingError> {
    let source = mirror.source(sha256, Duration::from_secs(5));
    let Opened::Whole { mut body, length } = source.open(0, None).await? else {
        panic!("a read from 0 to the end gives the whole object");
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = body
        .next_chunk(Duration::from_secs(5), &source.name())
        .await?
    {
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(length, Some(bytes.len() as u64));
    Ok(bytes)
}

/// A model's whole file set through the store: a connected node with writing on uploads
/// every file (the weights by SHA-256, the small regular files under `git-sha1/<oid>`), and an
/// air-gapped node with the locked manifest gets all of them from the store, each verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_file_set_comes_whole_from_the_store_to_an_air_gapped_node() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let fx = Fixture::with(&[model(ModelId::Entity, 200_000, true)], |spec, _| {
        let repo = spec.repo_id().to_owned();
        synth::companion_files(&repo)
            .into_iter()
            .fold(spec, |spec, (path, bytes)| spec.file(&path, bytes))
    });
    fx.write_manifest(|_, entry| entry["preset"] = "sentence-transformers".into());

    let connected = ModelArtifactManager::new(node_config(
        &fx,
        &fx.dir.path().join("connected"),
        garage.mirror_config(&garage.endpoint(0), true),
    ))
    .unwrap();
    let locked = connected.pin_manifest().await.expect("lock").manifest;
    let locked_path = fx.dir.path().join("locked.json");
    std::fs::write(&locked_path, locked.to_json_pretty()).unwrap();
    connected.ensure_all_models().await.expect("from the Hub");
    let set = connected.verified_model(ModelId::Entity).expect("the set");
    assert!(set.files.len() >= 8, "{:?}", set.files);
    let objects = garage.objects(0).await;
    assert_eq!(
        objects.len(),
        set.files.len(),
        "one object per file: {objects:?}"
    );

    let closed = free_ports(1)[0];
    let config = ArtifactManagerConfig {
        endpoint: format!("http://127.0.0.1:{closed}"),
        manifest_path: Some(locked_path),
        ..node_config(
            &fx,
            &fx.dir.path().join("site"),
            garage.mirror_config(&garage.endpoint(0), false),
        )
    };
    fx.hub.clear_requests();
    let site = ModelArtifactManager::new(config).unwrap();
    site.ensure_all_models()
        .await
        .expect("every file of the set from the store");
    let got = site.verified_model(ModelId::Entity).expect("ready");
    assert_eq!(got.files.len(), set.files.len());
    for (theirs, ours) in set.files.iter().zip(&got.files) {
        assert_eq!(
            theirs.strip_prefix(&set.snapshot_dir).unwrap(),
            ours.strip_prefix(&got.snapshot_dir).unwrap()
        );
        assert_eq!(std::fs::read(theirs).unwrap(), std::fs::read(ours).unwrap());
    }
    assert!(
        fx.hub.requests().is_empty(),
        "the Hub was asked: {:?}",
        fx.hub.requests()
    );
}
// ---------------------------------------------------------------------------------------
// Fleets: several processes at once against one store
// ---------------------------------------------------------------------------------------

/// Timings of the fleet nodes in these tests: short leases so a killed leader is replaced
/// within seconds, small parts so files of a few MB are uploaded in many.
struct NodeTimings {
    lease_ttl_ms: u64,
    renew_ms: u64,
    poll_ms: u64,
    part_bytes: u64,
}

const FAST: NodeTimings = NodeTimings {
    lease_ttl_ms: 2_000,
    renew_ms: 250,
    poll_ms: 50,
    part_bytes: 256 * 1024,
};

/// One node of a fleet: this test binary run again as a child process, in `fleet_node`.
struct FleetNode {
    name: String,
    child: Child,
    out: PathBuf,
    log: PathBuf,
}

/// What a node reported.
#[derive(Debug)]
struct NodeReport {
    name: String,
    ok: bool,
    error: String,
    /// model → where its bytes came from.
    sources: BTreeMap<String, String>,
    /// model → SHA-256 of the file the node has in place.
    hashes: BTreeMap<String, String>,
    /// The fleet events, in order (`fetching_for_fleet`, `waiting_for_peer`, …).
    fleet: Vec<String>,
}

impl FleetNode {
    /// Starts a node with its own cache under `fx`'s folder, reading the store at `s3`,
    /// beginning at `start_at` (unix ms; several nodes start at the same moment).
    fn spawn(
        fx: &Fixture,
        keys: &dyn StoreKeys,
        s3: &str,
        name: &str,
        timings: &NodeTimings,
        start_at: u128,
    ) -> FleetNode {
        let home = fx.dir.path().join(format!("fleet-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        let out = home.join("report.json");
        let log = home.join("node.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "fleet_node",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CG_FLEET_NODE_OUT", &out)
            .env("CG_FLEET_CACHE", home.join("cache"))
            .env("CG_FLEET_HUB", fx.hub.endpoint())
            .env("CG_FLEET_MANIFEST", &fx.manifest_path)
            .env("CG_FLEET_S3", s3)
            .env("CG_FLEET_KEY", keys.key_id())
            .env("CG_FLEET_SECRET", keys.secret())
            .env("CG_FLEET_REGION", keys.region())
            .env("CG_FLEET_TTL_MS", timings.lease_ttl_ms.to_string())
            .env("CG_FLEET_RENEW_MS", timings.renew_ms.to_string())
            .env("CG_FLEET_POLL_MS", timings.poll_ms.to_string())
            .env("CG_FLEET_PART", timings.part_bytes.to_string())
            .env("CG_FLEET_START_AT", start_at.to_string())
            .env("RUST_LOG", "context_graph_embeddings=info")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start a fleet node");
        FleetNode {
            name: name.to_owned(),
            child,
            out,
            log,
        }
    }

    /// Waits for the node (at most `limit`) and reads its report.
    fn wait(mut self, limit: Duration) -> NodeReport {
        let deadline = Instant::now() + limit;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "node {} did not finish within {limit:?}:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&self.out).unwrap_or_else(|_| {
            panic!(
                "node {} wrote no report:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        });
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let map = |key: &str| -> BTreeMap<String, String> {
            json[key]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        };
        NodeReport {
            name: self.name.clone(),
            ok: json["ok"].as_bool().unwrap_or(false),
            error: json["error"].as_str().unwrap_or_default().to_owned(),
            sources: map("sources"),
            hashes: map("hashes"),
            fleet: json["fleet"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        }
    }

    /// SIGKILL, as a node lost without warning.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credentials a fleet node signs with.
trait StoreKeys {
    fn key_id(&self) -> String;
    fn secret(&self) -> String;
    fn region(&self) -> String;
}

impl StoreKeys for Garage {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }
    fn secret(&self) -> String {
        self.secret.clone()
    }
    fn region(&self) -> String {
        REGION.to_owned()
    }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The child side of the fleet tests, not a test of its own (ignored in a normal run; the
/// fleet tests start it with `--ignored`): one node that ensures every model of the manifest
/// through the mirror (fleet on) and writes what happened as JSON to `CG_FLEET_NODE_OUT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the fleet tests"]
async fn fleet_node() {
    let out = std::env::var_os("CG_FLEET_NODE_OUT").expect("started by a fleet test");
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}"));
    let ms = |name: &str| Duration::from_millis(var(name).parse().unwrap());
    let policy = context_graph_embeddings::artifacts::FleetPolicy {
        lease_ttl: ms("CG_FLEET_TTL_MS"),
        renew_interval: ms("CG_FLEET_RENEW_MS"),
        claim_settle: Duration::from_millis(200),
        poll_interval: ms("CG_FLEET_POLL_MS"),
        progress_timeout: Duration::from_secs(30),
        part_bytes: var("CG_FLEET_PART").parse().unwrap(),
    };
    let mirror = MirrorConfig {
        endpoint: Some(var("CG_FLEET_S3")),
        region: Some(var("CG_FLEET_REGION")),
        access_key_id: Some(var("CG_FLEET_KEY")),
        secret_access_key: Some(var("CG_FLEET_SECRET")),
        write: true,
        retry_timeout: Duration::from_secs(1),
        fleet: Some(policy),
        ..MirrorConfig::new(format!("s3://{BUCKET}/{PREFIX}"))
    };
    let config = ArtifactManagerConfig {
        cache_dir: PathBuf::from(var("CG_FLEET_CACHE")),
        endpoint: var("CG_FLEET_HUB"),
        manifest_path: Some(PathBuf::from(var("CG_FLEET_MANIFEST"))),
        hf_token: None,
        implicit_token: false,
        offline: false,
        progress_interval: Duration::from_millis(20),
        download_timeout: Duration::from_secs(5),
        retry_attempts: 4,
        mirror: Some(mirror),
        ..ArtifactManagerConfig::from_env()
    };
    let start_at: u128 = var("CG_FLEET_START_AT").parse().unwrap();
    let wait = start_at.saturating_sub(unix_ms());
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;

    let manager = ModelArtifactManager::new(config).expect("manager");
    let mut events = manager.subscribe_progress();
    let collected = Arc::new(Mutex::new(Vec::new()));
    let collector = {
        let collected = collected.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => collected.lock().unwrap().push(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    };
    let result = manager.ensure_all_models().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    collector.abort();
    let events = collected.lock().unwrap().clone();
    let fleet: Vec<String> = events
        .iter()
        .filter_map(|e| {
            let kind = serde_json::to_value(&e.kind).ok()?;
            let name = kind["event"].as_str()?.to_owned();
            matches!(
                name.as_str(),
                "fetching_for_fleet" | "waiting_for_peer" | "reading_from_peer" | "taking_over"
            )
            .then(|| format!("{}:{name}", e.model_id))
        })
        .collect();
    let sources: serde_json::Map<String, serde_json::Value> = sources(&events)
        .into_iter()
        .map(|(id, s)| (id.to_string(), s.unwrap_or_default().into()))
        .collect();
    let mut hashes = serde_json::Map::new();
    for id in ModelId::ALL.iter() {
        if let Some(path) = manager.get_path(*id) {
            let bytes = std::fs::read(&path).unwrap();
            hashes.insert(id.to_string(), synth::sha256_hex(&bytes).into());
        }
    }
    let report = serde_json::json!({
        "ok": result.is_ok(),
        "error": result.err().map(|e| e.to_string()).unwrap_or_default(),
        "sources": sources,
        "hashes": hashes,
        "fleet": fleet,
    });
    std::fs::write(out, report.to_string()).unwrap();
}

/// Every key under the mirror's prefix, in full.
async fn keys(garage: &Garage, index: usize) -> Vec<String> {
    let listed: Vec<object_store::ObjectMeta> = garage
        .store(index)
        .list(Some(&ObjectPath::from(PREFIX)))
        .try_collect()
        .await
        .expect("list the bucket");
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

/// Parts of `sha256` in flight in the store.
async fn parts_in_store(garage: &Garage, sha256: &str) -> usize {
    keys(garage, 0)
        .await
        .iter()
        .filter(|k| k.contains(&format!(".inflight/{sha256}/parts/")))
        .count()
}

/// Body bytes of the blob GETs the emulator's CDN answered.
fn hub_blob_bytes(fx: &Fixture) -> u64 {
    fx.hub
        .requests()
        .iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET" && matches!(r.status, 200 | 206))
        .map(|r| r.body_bytes_sent)
        .sum()
}

/// Each node has every model in place with the served bytes.
fn assert_all_verified(fx: &Fixture, reports: &[NodeReport], ids: &[ModelId]) {
    for report in reports {
        assert!(report.ok, "node {} failed: {}", report.name, report.error);
        for id in ids {
            assert_eq!(
                report.hashes.get(&id.to_string()),
                Some(&fx.file(*id).sha256),
                "node {}: {id} holds the wrong bytes or none: {report:?}",
                report.name
            );
        }
    }
}

/// `count` nodes (named `<name>0`, `<name>1`, …) started at the same moment in a second or
/// so against the store at `s3`; waits for all of them.
fn start_fleet(
    fx: &Fixture,
    keys: &dyn StoreKeys,
    s3: &str,
    name: &str,
    count: usize,
    lead_ms: u128,
) -> Vec<FleetNode> {
    let start_at = unix_ms() + lead_ms;
    (0..count)
        .map(|i| FleetNode::spawn(fx, keys, s3, &format!("{name}{i}"), &FAST, start_at))
        .collect()
}

/// Waits for every node; each must end with verified files, and the Hub must have served at
/// most 1.25 times the manifest. Returns the reports.
fn assert_fleet_fetched_once(
    fx: &Fixture,
    nodes: Vec<FleetNode>,
    ids: &[ModelId],
    label: &str,
) -> Vec<NodeReport> {
    let reports: Vec<NodeReport> = nodes
        .into_iter()
        .map(|n| n.wait(Duration::from_secs(120)))
        .collect();
    assert_all_verified(fx, &reports, ids);
    let manifest: u64 = ids.iter().map(|id| fx.file(*id).content.len() as u64).sum();
    let served = hub_blob_bytes(fx);
    eprintln!(
        "{label}: the Hub served {served} bytes of blobs = {:.2}× the manifest ({manifest} bytes)",
        served as f64 / manifest as f64
    );
    assert!(
        served as f64 <= 1.25 * manifest as f64,
        "the Hub served {served} bytes for a manifest of {manifest}: {reports:#?}"
    );
    reports
}

fn cap_cdn(fx: &Fixture, bytes_per_sec: u64) {
    fx.hub.add_fault(hub_emulator::FaultRule::new(
        hub_emulator::FaultTarget::get("/").on_host(Host::Cdn),
        hub_emulator::Fault::BandwidthCap { bytes_per_sec },
    ));
}

/// Six nodes with empty caches start at the same moment against an empty store: the Hub
/// serves each blob about once (at most 1.25 times the manifest), the other nodes read the
/// leader's in-flight parts, every node ends with verified files, and the store ends with
/// the final objects and nothing in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_starting_at_once_fetches_each_blob_from_the_hub_once() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let ids = [ModelId::Semantic, ModelId::Code, ModelId::Graph];
    let fx = Fixture::new(&[
        model(ModelId::Semantic, 3_000_000, true),
        model(ModelId::Code, 2_000_000, true),
        model(ModelId::Graph, 1_000_000, false),
    ]);
    // Measured, not assumed: Garage answers 200 to a second `If-None-Match: *` put, so the
    // fleet uses its listing protocol there.
    let probe = Mirror::connect(&garage.mirror_config(&garage.endpoint(0), true)).unwrap();
    assert!(
        !probe.honours_conditional_create().await,
        "this Garage honours conditional create: the docs' table is out of date"
    );
    // A Hub link of 4 MB/s per connection: a download lasts long enough for the followers
    // to read parts while they are uploaded.
    cap_cdn(&fx, 4_000_000);
    let nodes = start_fleet(&fx, &garage, &garage.endpoint(0), "n", 6, 1_500);
    let reports = assert_fleet_fetched_once(&fx, nodes, &ids, "6 nodes");
    let events: Vec<&String> = reports.iter().flat_map(|r| &r.fleet).collect();
    for id in ids {
        let led = events
            .iter()
            .filter(|e| **e == &format!("{id}:fetching_for_fleet"))
            .count();
        assert!(led >= 1, "someone fetched {id} for the fleet: {events:?}");
    }
    assert!(
        events.iter().any(|e| e.ends_with(":reading_from_peer")),
        "followers read in-flight uploads: {events:?}"
    );
    let from_peers = reports
        .iter()
        .flat_map(|r| r.sources.values())
        .filter(|s| s.contains("/.inflight/"))
        .count();
    assert!(
        from_peers >= 3 * ids.len(),
        "most files came from a peer's upload: {reports:#?}"
    );
    // The store: the three objects, nothing in flight.
    let keys = keys(&garage, 0).await;
    assert!(
        keys.iter().all(|k| !k.contains(".inflight")),
        "in-flight objects removed: {keys:?}"
    );
    let objects = garage.objects(0).await;
    for id in ids {
        assert_eq!(
            objects.get(&fx.file(id).sha256),
            Some(&(fx.file(id).content.len() as u64)),
            "{keys:?}"
        );
    }
}

/// The leader is SIGKILLed mid-upload: after its lease expires another node takes over and
/// resumes from the parts already in the store (a ranged Hub request from there, not from
/// zero); everyone finishes, and the Hub serves at most one extra copy of the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_the_next_resumes_from_its_parts() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let fx = Fixture::new(&[model(ModelId::Semantic, 6_000_000, true)]);
    let file = fx.file(ModelId::Semantic).clone();
    let size = file.content.len() as u64;
    cap_cdn(&fx, 1_000_000);

    let leader = FleetNode::spawn(&fx, &garage, &garage.endpoint(0), "a", &FAST, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while parts_in_store(&garage, &file.sha256).await < 2 {
        assert!(Instant::now() < deadline, "the leader uploaded no parts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followers: Vec<FleetNode> = ["b", "c"]
        .iter()
        .map(|n| FleetNode::spawn(&fx, &garage, &garage.endpoint(0), n, &FAST, 0))
        .collect();
    while parts_in_store(&garage, &file.sha256).await < 8 {
        assert!(Instant::now() < deadline, "the leader stopped uploading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parts_at_kill = parts_in_store(&garage, &file.sha256).await as u64;
    leader.kill();
    let reports: Vec<NodeReport> = followers
        .into_iter()
        .map(|n| n.wait(Duration::from_secs(120)))
        .collect();
    assert_all_verified(&fx, &reports, &[ModelId::Semantic]);

    let events: Vec<&String> = reports.iter().flat_map(|r| &r.fleet).collect();
    assert!(
        events.iter().any(|e| e.ends_with(":taking_over")),
        "a follower took over: {events:?}"
    );
    let served = hub_blob_bytes(&fx);
    eprintln!(
        "killed leader: the Hub served {served} bytes for a {size}-byte blob ({:.2} copies)",
        served as f64 / size as f64
    );
    assert!(
        served <= 2 * size,
        "at most one extra copy: {served} bytes for {size}"
    );
    // The new leader resumed from what the parts held, not from zero.
    let resumed: Vec<u64> = fx
        .hub
        .requests()
        .iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET")
        .filter_map(RequestRecord::range_start)
        .filter(|start| *start > 0)
        .collect();
    assert!(
        resumed
            .iter()
            .any(|start| *start >= parts_at_kill * FAST.part_bytes),
        "a ranged Hub request resumed after the uploaded parts ({parts_at_kill} at the kill): {resumed:?}"
    );
    let keys = keys(&garage, 0).await;
    assert!(
        keys.iter().all(|k| !k.contains(".inflight")),
        "in-flight objects removed by the new leader: {keys:?}"
    );
}

/// The store is stopped while the leader uploads parts: every node gives the store up and
/// finishes from the Hub, with verified files, in bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stopped_mid_run_leaves_every_node_fetching_from_the_hub() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let ids = [ModelId::Semantic, ModelId::Code];
    let fx = Fixture::new(&[
        model(ModelId::Semantic, 4_000_000, true),
        model(ModelId::Code, 2_000_000, true),
    ]);
    cap_cdn(&fx, 2_000_000);
    let started = Instant::now();
    let start_at = unix_ms() + 1_000;
    let nodes: Vec<FleetNode> = (0..3)
        .map(|i| {
            FleetNode::spawn(
                &fx,
                &garage,
                &garage.endpoint(0),
                &format!("s{i}"),
                &FAST,
                start_at,
            )
        })
        .collect();
    let semantic = fx.file(ModelId::Semantic).sha256.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while parts_in_store(&garage, &semantic).await < 1 {
        assert!(Instant::now() < deadline, "no part was uploaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    garage.kill(0);
    let reports: Vec<NodeReport> = nodes
        .into_iter()
        .map(|n| n.wait(Duration::from_secs(120)))
        .collect();
    let elapsed = started.elapsed();
    assert!(!garage.is_running(0));
    assert_all_verified(&fx, &reports, &ids);
    for report in &reports {
        assert_eq!(
            report
                .sources
                .get(&ModelId::Semantic.to_string())
                .map(String::as_str),
            Some("hub"),
            "{report:?}"
        );
    }
    assert!(
        elapsed < Duration::from_secs(60),
        "every node finished in bounded time: {elapsed:?}"
    );
}

/// A moto S3 server (Python's `moto_server`), which refuses a second `If-None-Match: *` put
/// with 412 as AWS S3 does: `CG_TEST_MOTO`, else `target/moto-env/bin/moto_server`
/// (`scripts/setup-moto`). Killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts it with bucket `BUCKET`. Without moto the test fails (how to get it is in the
    /// message), unless `CG_SKIP_MOTO_TESTS=1`: then `None`, and the test says it is skipped.
    fn start() -> Option<Moto> {
        let binary = std::env::var_os("CG_TEST_MOTO")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/moto-env/bin/moto_server")
            });
        if !binary.is_file() {
            let problem = format!(
                "no moto_server at {} (run scripts/setup-moto, or set CG_TEST_MOTO)",
                binary.display()
            );
            if std::env::var("CG_SKIP_MOTO_TESTS").is_ok_and(|v| v == "1") {
                eprintln!("skipped: {problem}; CG_SKIP_MOTO_TESTS=1");
                return None;
            }
            panic!("{problem}, or set CG_SKIP_MOTO_TESTS=1 to skip this test");
        }
        let port = free_ports(1)[0];
        let child = Command::new(&binary)
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + BOOT_LIMIT;
        loop {
            if moto.create_bucket() {
                return Some(moto);
            }
            assert!(Instant::now() < deadline, "moto_server did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `PUT /BUCKET` (moto accepts it unsigned); whether it answered 200.
    fn create_bucket(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let request = format!(
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn mirror_config(&self) -> MirrorConfig {
        MirrorConfig {
            endpoint: Some(self.endpoint()),
            region: Some(self.region()),
            access_key_id: Some(self.key_id()),
            secret_access_key: Some(self.secret()),
            write: true,
            retry_timeout: Duration::from_secs(2),
            ..MirrorConfig::new(format!("s3://{BUCKET}/{PREFIX}"))
        }
    }

    /// Every key under the mirror's prefix.
    async fn keys(&self) -> Vec<String> {
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(self.region())
            .with_bucket_name(BUCKET)
            .with_access_key_id(self.key_id())
            .with_secret_access_key(self.secret())
            .build()
            .expect("S3 client");
        let listed: Vec<object_store::ObjectMeta> = store
            .list(Some(&ObjectPath::from(PREFIX)))
            .try_collect()
            .await
            .expect("list the bucket");
        listed.into_iter().map(|m| m.location.to_string()).collect()
    }
}

impl StoreKeys for Moto {
    fn key_id(&self) -> String {
        "AKIDMOTOTEST".to_owned()
    }
    fn secret(&self) -> String {
        "moto-test-secret".to_owned()
    }
    fn region(&self) -> String {
        "us-east-1".to_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On a store that honours `If-None-Match: *` (moto, like AWS S3) the probe says so and the
/// fleet claims each epoch with one conditionally created key: four nodes started at once
/// still get each blob from the Hub about once, verified, and leave nothing in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_conditional_create_is_detected_and_its_fleet_fetches_once() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let probe = Mirror::connect(&moto.mirror_config()).unwrap();
    assert!(
        probe.honours_conditional_create().await,
        "moto refuses a second If-None-Match: * put"
    );
    let ids = [ModelId::Semantic, ModelId::Code];
    let fx = Fixture::new(&[
        model(ModelId::Semantic, 3_000_000, true),
        model(ModelId::Code, 1_000_000, true),
    ]);
    cap_cdn(&fx, 4_000_000);
    let nodes = start_fleet(&fx, &moto, &moto.endpoint(), "m", 4, 1_500);
    assert_fleet_fetched_once(&fx, nodes, &ids, "4 nodes on moto");
    let keys = moto.keys().await;
    assert!(
        keys.iter().all(|k| !k.contains(".inflight")),
        "in-flight objects removed: {keys:?}"
    );
    for id in ids {
        assert!(
            keys.contains(&format!("{PREFIX}/{}", fx.file(id).sha256)),
            "{id}'s object: {keys:?}"
        );
    }
}

/// Nodes uploading the same objects at once (pull-through without a fleet, or the small files
/// of a set, which no lease covers): every upload succeeds or finds the object right, and
/// the object holds the blob. On Garage, completing one multipart upload of a key drops the
/// others in flight; small objects go up in one `PUT`, and a lost race is checked, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_the_same_objects_at_once_all_succeed() {
    let binary = garage_or_skip!();
    let garage = Garage::start(&binary, 1);
    let dir = tempfile::tempdir().unwrap();
    let mirror =
        Arc::new(Mirror::connect(&garage.mirror_config(&garage.endpoint(0), true)).unwrap());
    for (size, seed) in [(4_096usize, 1u64), (40_000_000, 2)] {
        let content = synth::safetensors(size as u64, seed);
        let sha = synth::sha256_hex(&content);
        let path = dir.path().join(&sha);
        std::fs::write(&path, &content).unwrap();
        let uploads: Vec<_> = (0..4)
            .map(|_| {
                let mirror = mirror.clone();
                let path = path.clone();
                let sha = sha.clone();
                let len = content.len() as u64;
                tokio::spawn(async move { mirror.upload(&path, &sha, len).await })
            })
            .collect();
        for upload in uploads {
            upload
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{size} bytes: {e}"));
        }
        assert_eq!(
            read_object(&mirror, &sha).await.expect("the object"),
            content,
            "{size} bytes"
        );
    }
}
