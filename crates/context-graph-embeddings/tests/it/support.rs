//! Test fixtures: a Hub emulator serving small synthetic models, a 12-entry manifest that
//! points at them, and a manager configuration with a private cache and fast retries.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use context_graph_embeddings::artifacts::test_support::{sidecar_path, RangeProgress};
use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ModelArtifactManager, ParallelSettings, ProgressEvent, RetryPolicy,
};
use context_graph_embeddings::ModelId;
use hub_emulator::{HubBuilder, RepoSpec};

#[path = "../common/served.rs"]
mod served;

use served::{serve, Served, Serving};
pub(crate) use served::{Model, ServedFile};

/// A running emulator plus a manifest and cache for one test.
pub(crate) struct Fixture(Served);

impl std::ops::Deref for Fixture {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.0
    }
}

pub(crate) fn model(id: ModelId, size: u64, pinned: bool) -> Model {
    Model {
        id,
        size,
        pinned,
        on_branch: false,
    }
}

impl Fixture {
    /// Serves each model from its own repo `test-org/<name>` at a fixed commit.
    pub(crate) fn new(models: &[Model]) -> Fixture {
        Self::with(models, |b, _| b)
    }

    /// Like `new`, with a hook to adjust each repo (e.g. gating) and the builder.
    pub(crate) fn with(
        models: &[Model],
        adjust: impl Fn(RepoSpec, ModelId) -> RepoSpec,
    ) -> Fixture {
        Self::build(models, adjust, |b| b)
    }

    /// Like `new`, with a hook on the emulator's builder (CDN URL lifetime, mirror quirks).
    pub(crate) fn with_builder(
        models: &[Model],
        hub: impl Fn(HubBuilder) -> HubBuilder,
    ) -> Fixture {
        Self::build(models, |spec, _| spec, hub)
    }

    fn build(
        models: &[Model],
        adjust: impl Fn(RepoSpec, ModelId) -> RepoSpec,
        hub: impl Fn(HubBuilder) -> HubBuilder,
    ) -> Fixture {
        let served = serve(
            models,
            Serving {
                seed_base: 1000,
                weights_name: |id| {
                    if id == ModelId::Causal {
                        "pytorch_model.bin"
                    } else {
                        "model.safetensors"
                    }
                },
                adjust: &adjust,
                builder: hub(HubBuilder::new()),
            },
        );
        Fixture(served)
    }

    /// Writes the manifest, letting `edit` change each artifact entry.
    pub(crate) fn write_manifest(&self, edit: impl Fn(ModelId, &mut serde_json::Value)) {
        served::write_manifest(&self.manifest_path, &self.files, edit);
    }

    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    /// A configuration against the emulator: private cache, no implicit token, fast retries.
    pub(crate) fn config(&self) -> ArtifactManagerConfig {
        ArtifactManagerConfig {
            cache_dir: self.cache_dir(),
            endpoint: self.hub.endpoint(),
            manifest_path: Some(self.manifest_path.clone()),
            hf_token: None,
            implicit_token: false,
            offline: false,
            use_symlinks: true,
            max_concurrent_downloads: 4,
            retry_attempts: 4,
            download_timeout: Duration::from_secs(5),
            retry_policy: RetryPolicy {
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                max_server_delay: Duration::from_millis(50),
            },
            progress_interval: Duration::from_millis(1),
            ..ArtifactManagerConfig::from_env()
        }
    }

    pub(crate) fn manager(&self) -> ModelArtifactManager {
        ModelArtifactManager::new(self.config()).expect("manager")
    }

    pub(crate) fn file(&self, id: ModelId) -> &ServedFile {
        &self.files[&id]
    }

    pub(crate) fn blob_path(&self, id: ModelId) -> PathBuf {
        let f = self.file(id);
        self.cache_dir()
            .join(format!("models--{}", f.repo_id.replace('/', "--")))
            .join("blobs")
            .join(&f.sha256)
    }

    pub(crate) fn blobs_dir(&self, id: ModelId) -> PathBuf {
        self.blob_path(id).parent().unwrap().to_path_buf()
    }

    pub(crate) fn snapshot_path(&self, id: ModelId) -> PathBuf {
        let f = self.file(id);
        self.cache_dir()
            .join(format!("models--{}", f.repo_id.replace('/', "--")))
            .join("snapshots")
            .join(&f.commit)
            .join(&f.filename)
    }

    /// Starts this test binary again as a child process running only `test` (a child body
    /// that does nothing unless `env` is set), with this fixture's cache, Hub and manifest
    /// passed in `env` as JSON. The caller kills it.
    pub(crate) fn spawn_child(&self, test: &str, env: &str) -> std::process::Child {
        let spec = serde_json::json!({
            "cache_dir": self.cache_dir(),
            "endpoint": self.hub.endpoint(),
            "manifest": self.manifest_path,
        });
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture"])
            .env(env, spec.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// GET requests whose path contains `needle`.
    pub(crate) fn gets(&self, needle: &str) -> Vec<hub_emulator::RequestRecord> {
        self.hub
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains(needle))
            .collect()
    }
}

/// Collects every event already sent.
pub(crate) fn drain(
    receiver: &mut tokio::sync::broadcast::Receiver<ProgressEvent>,
) -> Vec<ProgressEvent> {
    let mut events = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        events.push(event);
    }
    events
}

/// Names of the partial downloads in a folder.
pub(crate) fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
                .collect()
        })
        .unwrap_or_default()
}

/// The body of a kill test's child process: downloads Multimodal with `parallel` into the cache
/// the parent named in `child_env` (does nothing unless the parent set it).
// A test reads the switch its parent set; the ban on the process environment is for the library.
#[allow(clippy::disallowed_methods)]
pub(crate) fn child_download(child_env: &str, parallel: ParallelSettings) {
    let Ok(spec) = std::env::var(child_env) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let manager = ModelArtifactManager::new(ArtifactManagerConfig {
            cache_dir: spec["cache_dir"].as_str().unwrap().into(),
            endpoint: spec["endpoint"].as_str().unwrap().to_owned(),
            manifest_path: Some(spec["manifest"].as_str().unwrap().into()),
            implicit_token: false,
            parallel,
            ..ArtifactManagerConfig::from_env()
        })
        .unwrap();
        let _ = manager.download(ModelId::Multimodal).await;
    });
}

/// Waits until the child's progress record of `blobs` holds `chunks` complete chunks of
/// `chunk` bytes, then kills it; returns the partial file it left.
pub(crate) async fn kill_after_chunks(
    mut child: std::process::Child,
    blobs: &Path,
    chunks: usize,
    chunk: u64,
) -> PathBuf {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = partials(blobs)
            .first()
            .and_then(|p| RangeProgress::read(&sidecar_path(p)))
            .map_or(0, |p| p.written.iter().filter(|w| **w == chunk).count());
        if done >= chunks {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "child made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    partials(blobs).pop().unwrap()
}

/// Asserts that no byte a killed run's progress record kept (`written[c]` bytes of chunk `c`,
/// chunks of `chunk` bytes) was sent again by the responses `gets` of the resumed run;
/// returns the spans `(start, end)` those responses sent, for further checks' messages.
pub(crate) fn assert_recorded_bytes_not_resent(
    gets: &[hub_emulator::RequestRecord],
    recorded: &RangeProgress,
    chunk: u64,
) -> Vec<(u64, u64)> {
    let spans: Vec<(u64, u64)> = gets
        .iter()
        .map(|r| {
            let start = r.range_start().unwrap_or(0);
            (start, start + r.body_bytes_sent)
        })
        .collect();
    for (c, written) in recorded.written.iter().enumerate() {
        if *written == 0 {
            continue;
        }
        let kept = (c as u64 * chunk, c as u64 * chunk + written);
        assert!(
            spans
                .iter()
                .all(|(start, end)| *end <= kept.0 || *start >= kept.1),
            "chunk {c}'s recorded bytes {kept:?} were sent again: {spans:?}"
        );
    }
    spans
}
