//! The artifact manager: knows the manifest, inspects the cache, downloads what is missing
//! (bounded, largest first, one download per blob across tasks and processes), verifies,
//! reports readiness, enforces the cache limit and clears what it owns.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::{broadcast, Semaphore};

use super::cache::{self, partial_files, snapshot_link_blob_name, CacheLayout};
use super::config::ArtifactManagerConfig;
use super::downloader::{blocking, fetch_blob, FetchRequest, FetchSettings};
use super::environment::{self, ProcessEnv, TokenSource};
use super::eviction::{self, EvictionReport};
use super::hub::{HubClient, RemoteFile, Secret};
use super::lock::BlobLock;
use super::manifest::{Manifest, ManifestEntry, ModelArtifact, WeightFormat};
use super::mirror::Mirror;
use super::progress::{Outcome, ProgressEmitter, ProgressEvent, ProgressKind};
use super::source::{ByteSource, HubSource};
use super::verification::{hash_file, VerificationStamp};
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};
use crate::model_id::ModelId;

/// Download status for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadStatus {
    /// Nothing happened in this process yet.
    NotStarted,
    /// Bytes are arriving.
    InProgress {
        /// Bytes on disk (including resumed ones).
        bytes_downloaded: u64,
        /// Size of the file (0 if not known yet).
        total_bytes: u64,
    },
    /// The file is in place.
    Completed {
        /// The snapshot path.
        path: PathBuf,
        /// Whether its SHA-256 was checked (always true for files this manager placed).
        verified: bool,
    },
    /// The last attempt failed.
    Failed {
        /// The error as shown to users.
        error: String,
        /// Retries made before giving up.
        retries: u32,
    },
}

/// Where the expected hash of a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashSource {
    /// Pinned in the manifest.
    Pinned,
    /// Advertised by the Hub (`X-Linked-Etag`) at the revision and recorded at download.
    HubAdvertised,
    /// Not known yet (unpinned and never downloaded).
    Unknown,
}

/// The readiness of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessState {
    /// Computed in-process; always ready.
    Builtin,
    /// On disk and verified.
    Ready,
    /// On disk, but not (or no longer) verified: `verify` or `ensure` hashes it.
    Unverified,
    /// Not on disk (maybe partly downloaded).
    Missing,
    /// The last attempt in this process failed.
    Failed,
}

/// Readiness details of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelReadiness {
    /// The model.
    pub model_id: ModelId,
    /// Its state.
    pub state: ReadinessState,
    /// Hub repo (none for built-ins).
    pub repo_id: Option<String>,
    /// File in the repo.
    pub filename: Option<String>,
    /// Revision asked for.
    pub revision: Option<String>,
    /// Commit of the cached snapshot, when known.
    pub commit: Option<String>,
    /// Snapshot path, when on disk.
    pub path: Option<PathBuf>,
    /// Size in bytes (pinned, or of the verified file).
    pub size_bytes: Option<u64>,
    /// Expected SHA-256, when known.
    pub expected_sha256: Option<String>,
    /// Where the expected hash comes from.
    pub hash_source: HashSource,
    /// Weight format (the safetensors check applies only to safetensors).
    pub format: Option<WeightFormat>,
    /// Bytes of an unfinished download on disk.
    pub partial_bytes: u64,
    /// The error of a failed model.
    pub error: Option<String>,
    /// Where the verified file came from (`hub`, the mirror object, `cache`), when recorded.
    pub source: Option<String>,
}

/// Overall readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// Models ready to load (verified files and built-ins).
    pub ready_models: Vec<ModelId>,
    /// Models not ready: absent, partial, or present but unverified.
    pub missing_models: Vec<ModelId>,
    /// Models whose last attempt failed, with the error.
    pub failed_models: Vec<(ModelId, String)>,
    /// Sum of the known sizes of all artifacts.
    pub total_size_bytes: u64,
    /// Bytes on disk for them (verified files and partial downloads).
    pub downloaded_bytes: u64,
    /// Per-model details, in manifest order.
    pub models: Vec<ModelReadiness>,
}

impl ReadinessReport {
    /// Whether every model is ready.
    pub fn all_ready(&self) -> bool {
        self.missing_models.is_empty() && self.failed_models.is_empty()
    }
}

/// The result of verifying one present file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyOutcome {
    /// The model.
    pub model_id: ModelId,
    /// The file checked, if present.
    pub path: Option<PathBuf>,
    /// `Some(true)` verified, `Some(false)` corrupt, `None` not present.
    pub verified: Option<bool>,
    /// Expected and actual hash, for a corrupt file; or what prevented the check.
    pub detail: Option<String>,
}

/// What the cache holds for one artifact, from metadata only.
#[derive(Debug, Clone)]
struct LocalState {
    commit: Option<String>,
    snapshot: Option<PathBuf>,
    blob_name: Option<String>,
    stamp: Option<VerificationStamp>,
    stamp_valid: bool,
    size: Option<u64>,
    partial_bytes: u64,
}

/// The model artifact manager.
pub struct ModelArtifactManager {
    config: ArtifactManagerConfig,
    manifests: HashMap<ModelId, ModelArtifact>,
    manifest: Manifest,
    status: RwLock<HashMap<ModelId, DownloadStatus>>,
    client: HubClient,
    token_source: Option<TokenSource>,
    layout: CacheLayout,
    emitter: ProgressEmitter,
    download_slots: Arc<Semaphore>,
    range_slots: Arc<Semaphore>,
    mirror: Option<Mirror>,
    in_flight: Mutex<HashMap<ModelId, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ModelArtifactManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelArtifactManager")
            .field("config", &self.config)
            .field("manifest", &self.manifest.origin)
            .field("token_source", &self.token_source)
            .finish_non_exhaustive()
    }
}

impl ModelArtifactManager {
    /// Creates a manager: resolves the token (configuration, else `HF_TOKEN`, else the token
    /// file), builds the HTTP client and loads the manifest (the file in
    /// `config.manifest_path`, else the embedded one).
    pub fn new(config: ArtifactManagerConfig) -> EmbeddingResult<Self> {
        if config.max_concurrent_downloads == 0 {
            return Err(EmbeddingError::Config(
                "max_concurrent_downloads must be at least 1".to_owned(),
            ));
        }
        let (token, token_source) = match &config.hf_token {
            Some(token) if !token.trim().is_empty() => {
                (Some(token.trim().to_owned()), Some(TokenSource::Explicit))
            }
            _ if !config.implicit_token => (None, None),
            _ => match environment::implicit_token(&ProcessEnv) {
                Some((token, source)) => (Some(token), Some(source)),
                None => (None, None),
            },
        };
        let client = HubClient::new(
            &config.endpoint,
            token.map(Secret::new),
            config.connect_timeout,
            config.metadata_timeout,
            config.download_timeout,
        )?;
        let mirror = config.mirror.as_ref().map(Mirror::connect).transpose()?;
        let mut manager = ModelArtifactManager {
            mirror,
            layout: CacheLayout::new(&config.cache_dir),
            download_slots: Arc::new(Semaphore::new(config.max_concurrent_downloads)),
            range_slots: Arc::new(Semaphore::new(config.parallel.connections.max(1))),
            config,
            manifests: HashMap::new(),
            manifest: Manifest::embedded()?,
            status: RwLock::new(HashMap::new()),
            client,
            token_source,
            emitter: ProgressEmitter::new(),
            in_flight: Mutex::new(HashMap::new()),
        };
        manager.load_manifests()?;
        Ok(manager)
    }

    /// Loads artifact manifests from the configured file, or the embedded data. Called by
    /// [`new`](Self::new); call again after changing the file.
    pub fn load_manifests(&mut self) -> EmbeddingResult<()> {
        let manifest = match &self.config.manifest_path {
            Some(path) => Manifest::from_path(path)?,
            None => Manifest::embedded()?,
        };
        self.manifests = manifest
            .artifacts()
            .map(|a| (a.model_id, a.clone()))
            .collect();
        self.manifest = manifest;
        if let Ok(mut status) = self.status.write() {
            status.clear();
        }
        Ok(())
    }

    /// The loaded manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The configuration.
    pub fn config(&self) -> &ArtifactManagerConfig {
        &self.config
    }

    /// The cache layout.
    pub fn layout(&self) -> &CacheLayout {
        &self.layout
    }

    /// Where the token came from, if there is one (never the token itself).
    pub fn token_source(&self) -> Option<TokenSource> {
        self.token_source
    }

    /// The Hub client (for pinning manifests).
    pub fn hub(&self) -> &HubClient {
        &self.client
    }

    /// Whether the model is ready to load: built-in, or on disk and verified (with
    /// `verify_checksums` off, on disk with the right size is enough).
    pub fn is_available(&self, model_id: ModelId) -> bool {
        match self.manifest.entry(model_id) {
            Some(ManifestEntry::Builtin(_)) => true,
            Some(ManifestEntry::Artifact(artifact)) => self.ready_path(artifact).is_some(),
            None => false,
        }
    }

    /// Local path of the model's file (the snapshot path), `None` unless it is available.
    pub fn get_path(&self, model_id: ModelId) -> Option<PathBuf> {
        self.manifests
            .get(&model_id)
            .and_then(|a| self.ready_path(a))
    }

    fn ready_path(&self, artifact: &ModelArtifact) -> Option<PathBuf> {
        let state = self.inspect(artifact);
        let path = state.snapshot?;
        if state.stamp_valid {
            return Some(path);
        }
        let size_ok = artifact.size_bytes.is_none_or(|s| state.size == Some(s));
        (!self.config.verify_checksums && size_ok).then_some(path)
    }

    fn location(artifact: &ModelArtifact) -> FileLocation {
        FileLocation {
            model_id: artifact.model_id,
            repo_id: artifact.repo_id.clone(),
            revision: artifact.revision_or_default().to_owned(),
            filename: artifact.filename.clone(),
        }
    }

    fn inspect(&self, artifact: &ModelArtifact) -> LocalState {
        let repo = &artifact.repo_id;
        let commit = self
            .layout
            .resolve_commit(repo, artifact.revision_or_default());
        let mut state = LocalState {
            commit: commit.clone(),
            snapshot: None,
            blob_name: None,
            stamp: None,
            stamp_valid: false,
            size: None,
            partial_bytes: 0,
        };
        if let Some(commit) = &commit {
            let path = self.layout.snapshot_path(repo, commit, &artifact.filename);
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.is_file() && cache::entry_stays_inside(&path) {
                    state.size = Some(meta.len());
                    state.blob_name = snapshot_link_blob_name(&path);
                    let stamp = VerificationStamp::read(&self.layout.stamp_path(
                        repo,
                        commit,
                        &artifact.filename,
                    ));
                    if let Some(stamp) = stamp {
                        state.stamp_valid = stamp.is_valid_for(&path, artifact.sha256.as_deref());
                        state.stamp = Some(stamp);
                    }
                    state.snapshot = Some(path);
                }
            }
        }
        if state.snapshot.is_none() {
            if let Some(etag) = artifact.sha256.as_deref() {
                state.partial_bytes = partial_files(&self.layout.blobs_dir(repo), etag)
                    .first()
                    .map_or(0, |p| p.1);
            }
        }
        state
    }

    /// The expected hash of a present file and where it comes from: the pin, else the blob
    /// name (the Hub's `X-Linked-Etag`, as written by any client), else our stamp.
    fn expected_hash(artifact: &ModelArtifact, state: &LocalState) -> (Option<String>, HashSource) {
        if let Some(sha) = &artifact.sha256 {
            return (Some(sha.clone()), HashSource::Pinned);
        }
        if let Some(name) = state
            .blob_name
            .as_deref()
            .and_then(|n| super::manifest::validate_sha256(n).ok())
        {
            return (Some(name), HashSource::HubAdvertised);
        }
        if let Some(stamp) = &state.stamp {
            return (Some(stamp.sha256.clone()), HashSource::HubAdvertised);
        }
        (None, HashSource::Unknown)
    }

    /// Verifies the checksum of the local model file by hashing it in full. `Ok(true)` when it
    /// matches (a stamp is written), `Ok(false)` when it does not (the model is marked
    /// failed), `MissingModels` when the file is not there.
    pub async fn verify_checksum(&self, model_id: ModelId) -> EmbeddingResult<bool> {
        let artifact = self.artifact(model_id)?;
        let state = self.inspect(artifact);
        let Some(path) = state.snapshot.clone() else {
            return Err(EmbeddingError::MissingModels(vec![model_id]));
        };
        let (expected, _) = Self::expected_hash(artifact, &state);
        let Some(expected) = expected else {
            return Err(EmbeddingError::NoExpectedHash {
                location: Self::location(artifact),
            });
        };
        let commit = state.commit.clone().unwrap_or_default();
        let hashed_path = path.clone();
        let (actual, length) = blocking(move || hash_file(&hashed_path))
            .await
            .map_err(|e| EmbeddingError::io("cannot read", &path, e))?;
        let stamp_path = self
            .layout
            .stamp_path(&artifact.repo_id, &commit, &artifact.filename);
        let size_ok = artifact.size_bytes.is_none_or(|s| s == length);
        if actual == expected && size_ok {
            let stamp = VerificationStamp::now(&path, &actual)
                .map_err(|e| EmbeddingError::io("cannot read", &path, e))?;
            stamp.write(&stamp_path)?;
            self.set_status(
                model_id,
                DownloadStatus::Completed {
                    path,
                    verified: true,
                },
            );
            Ok(true)
        } else {
            let _ = cache::remove_entry(&stamp_path);
            let error = if size_ok {
                EmbeddingError::HashMismatch {
                    location: Self::location(artifact),
                    path: path.clone(),
                    expected,
                    actual,
                }
            } else {
                EmbeddingError::SizeMismatch {
                    location: Self::location(artifact),
                    path: path.clone(),
                    expected: artifact.size_bytes.unwrap_or(0),
                    actual: length,
                }
            };
            self.set_status(
                model_id,
                DownloadStatus::Failed {
                    error: error.to_string(),
                    retries: 0,
                },
            );
            Ok(false)
        }
    }

    /// Re-hashes every present artifact file, `parallelism` files at once (each on its own
    /// blocking thread), and reports each result. With `only_unverified`, files with a valid
    /// stamp are skipped (start-up path: no re-hash of known-good files).
    pub async fn verify_present(
        &self,
        parallelism: usize,
        only_unverified: bool,
    ) -> Vec<VerifyOutcome> {
        let all: Vec<ModelId> = self.manifest.artifacts().map(|a| a.model_id).collect();
        self.verify_models(&all, parallelism, only_unverified).await
    }

    /// Like [`verify_present`](Self::verify_present), for some models only (built-ins and
    /// models without an artifact are skipped).
    pub async fn verify_models(
        &self,
        models: &[ModelId],
        parallelism: usize,
        only_unverified: bool,
    ) -> Vec<VerifyOutcome> {
        let mut artifacts: Vec<&ModelArtifact> = self
            .manifest
            .artifacts()
            .filter(|a| models.contains(&a.model_id))
            .collect();
        // Largest first, so the cores finish together instead of one hashing the big file
        // alone at the end.
        let size_of = |artifact: &ModelArtifact| {
            artifact
                .size_bytes
                .unwrap_or_else(|| self.inspect(artifact).size.unwrap_or(0))
        };
        artifacts.sort_by_cached_key(|a| std::cmp::Reverse(size_of(a)));
        let results = stream::iter(artifacts)
            .map(|artifact| async move {
                let state = self.inspect(artifact);
                let model_id = artifact.model_id;
                let Some(path) = state.snapshot.clone() else {
                    return VerifyOutcome {
                        model_id,
                        path: None,
                        verified: None,
                        detail: None,
                    };
                };
                if only_unverified && state.stamp_valid {
                    return VerifyOutcome {
                        model_id,
                        path: Some(path),
                        verified: Some(true),
                        detail: None,
                    };
                }
                match self.verify_checksum(model_id).await {
                    Ok(verified) => {
                        let detail = (!verified).then(|| self.failure_text(model_id)).flatten();
                        VerifyOutcome {
                            model_id,
                            path: Some(path),
                            verified: Some(verified),
                            detail,
                        }
                    }
                    Err(error) => VerifyOutcome {
                        model_id,
                        path: Some(path),
                        verified: None,
                        detail: Some(error.to_string()),
                    },
                }
            })
            .buffer_unordered(parallelism.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut results = results;
        results.sort_by_key(|r| r.model_id.index());
        results
    }

    fn failure_text(&self, model_id: ModelId) -> Option<String> {
        match self.status(model_id) {
            DownloadStatus::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    fn artifact(&self, model_id: ModelId) -> EmbeddingResult<&ModelArtifact> {
        self.manifests
            .get(&model_id)
            .ok_or(EmbeddingError::NotAnArtifact(model_id))
    }

    fn set_status(&self, model_id: ModelId, status: DownloadStatus) {
        if let Ok(mut map) = self.status.write() {
            map.insert(model_id, status);
        }
    }

    /// Downloads the model from the Hugging Face Hub (if it is not already there and
    /// verified) and returns its snapshot path.
    pub async fn download(&self, model_id: ModelId) -> EmbeddingResult<PathBuf> {
        let artifact = self.artifact(model_id)?.clone();
        self.download_artifact(&artifact, None).await
    }

    async fn download_artifact(
        &self,
        artifact: &ModelArtifact,
        remote: Option<RemoteFile>,
    ) -> EmbeddingResult<PathBuf> {
        let model_id = artifact.model_id;
        let result = self.download_inner(artifact, remote).await;
        match &result {
            Ok(path) => self.set_status(
                model_id,
                DownloadStatus::Completed {
                    path: path.clone(),
                    verified: true,
                },
            ),
            Err(error) => {
                let retries = match error {
                    EmbeddingError::RetriesExhausted { attempts, .. } => attempts.saturating_sub(1),
                    _ => 0,
                };
                self.set_status(
                    model_id,
                    DownloadStatus::Failed {
                        error: error.to_string(),
                        retries,
                    },
                );
                self.emitter.send(
                    model_id,
                    0,
                    artifact.size_bytes.unwrap_or(0),
                    ProgressKind::Failed {
                        error: error.to_string(),
                    },
                );
            }
        }
        result
    }

    fn in_flight_gate(&self, model_id: ModelId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.in_flight.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(model_id).or_default().clone()
    }

    async fn download_inner(
        &self,
        artifact: &ModelArtifact,
        remote: Option<RemoteFile>,
    ) -> EmbeddingResult<PathBuf> {
        let model_id = artifact.model_id;
        // One download per model in this process: a second caller waits here, then finds
        // the file in place.
        let gate = self.in_flight_gate(model_id);
        let _gate = gate.lock().await;
        let state = self.inspect(artifact);
        if let Some(path) = state.snapshot.clone() {
            if state.stamp_valid {
                self.completed(artifact, &path, Outcome::AlreadyPresent, 0);
                return Ok(path);
            }
            if self.verify_checksum(model_id).await.unwrap_or(false) {
                self.completed(artifact, &path, Outcome::Verified, 0);
                return Ok(path);
            }
        }
        let location = Self::location(artifact);
        if self.config.offline {
            return Err(EmbeddingError::OfflineMissing { location });
        }
        let _slot = self
            .download_slots
            .acquire()
            .await
            .map_err(|_| EmbeddingError::Config("download slots closed".to_owned()))?;
        self.set_status(
            model_id,
            DownloadStatus::InProgress {
                bytes_downloaded: 0,
                total_bytes: artifact.size_bytes.unwrap_or(0),
            },
        );
        // What the bytes must be. With a mirror and a fully pinned entry at a commit, that is
        // known without asking the Hub (air-gapped nodes never reach it).
        let remote = match remote {
            Some(remote) => remote,
            None => match (&self.mirror, &artifact.sha256) {
                (Some(_), Some(sha)) if artifact.revision_is_commit() => {
                    RemoteFile::from_pins(artifact.revision_or_default(), sha, artifact.size_bytes)
                }
                _ => self.head_with_retries(&location).await?,
            },
        };
        let (expected_sha256, expected_size) = Self::expectations(artifact, &remote, &location)?;
        let repo = artifact.repo_id.as_str();
        let etag = remote.etag.clone();
        let blob_path = self.layout.blob_path(repo, &etag);
        let lock_path = self.layout.lock_path(repo, &etag);
        let emitter = self.emitter.clone();
        let lock_for_event = lock_path.clone();
        let lock = BlobLock::acquire(&lock_path, move || {
            emitter.send(
                model_id,
                0,
                expected_size.unwrap_or(0),
                ProgressKind::WaitingForLock {
                    lock_path: lock_for_event,
                },
            );
        })
        .await?;
        if !lock.is_effective() {
            self.warn(model_id, format!(
                "this file system does not support locks ({}); downloading without one (still safe: private temporary files, verified before they are put in place)",
                lock_path.display()
            ));
        }
        let _ = self.layout.ensure_cachedir_tag();

        // After the lock: another process (or Python) may have placed the blob meanwhile.
        let mut fetched: Option<(Outcome, u64, String)> = None;
        if tokio::fs::symlink_metadata(&blob_path).await.is_ok() {
            let checked = blob_path.clone();
            let hashed = blocking(move || hash_file(&checked)).await;
            match hashed {
                Ok((sha, length))
                    if sha == expected_sha256 && expected_size.is_none_or(|s| s == length) =>
                {
                    fetched = Some((Outcome::Reused, 0, "cache".to_owned()));
                }
                _ => {
                    self.warn(
                        model_id,
                        format!(
                        "the cached blob {} does not match its expected SHA-256; fetching it again",
                        blob_path.display()
                    ),
                    );
                    cache::remove_entry(&blob_path)?;
                }
            }
        }
        // A copy in the snapshot folder and no blob: what huggingface_hub leaves with
        // HF_HUB_DISABLE_SYMLINKS (it moves the blob). Now that the expected hash is known,
        // the copy is verified in place instead of fetched again.
        let snapshot_path = self
            .layout
            .snapshot_path(repo, &remote.commit, &artifact.filename);
        let mut verified_in_place = false;
        if fetched.is_none() {
            let copy = snapshot_path.clone();
            let is_copy = tokio::fs::symlink_metadata(&copy)
                .await
                .is_ok_and(|m| m.is_file());
            if is_copy {
                if let Ok((sha, length)) = blocking(move || hash_file(&copy)).await {
                    if sha == expected_sha256 && expected_size.is_none_or(|s| s == length) {
                        fetched = Some((Outcome::Verified, 0, "cache".to_owned()));
                        verified_in_place = true;
                    }
                }
            }
        }
        let request = FetchRequest {
            location: location.clone(),
            blobs_dir: self.layout.blobs_dir(repo),
            etag: etag.clone(),
            expected_sha256: expected_sha256.clone(),
            expected_size,
        };
        let settings = FetchSettings {
            retry_attempts: self.config.retry_attempts,
            retry_policy: self.config.retry_policy.clone(),
            progress_interval: self.config.progress_interval,
            parallel: self.config.parallel.clone(),
            range_slots: self.range_slots.clone(),
        };
        let on_bytes = |bytes: u64, total: u64| {
            self.set_status(
                model_id,
                DownloadStatus::InProgress {
                    bytes_downloaded: bytes,
                    total_bytes: total,
                },
            );
        };
        let outcome_of = |resumed_from: u64| {
            if resumed_from > 0 {
                Outcome::Resumed
            } else {
                Outcome::Downloaded
            }
        };

        // Sources in order: the mirror (content-addressed, so only by a known hash), then
        // the Hub. A failing mirror is not fatal; its partial bytes are resumed from the Hub.
        if let (None, Some(mirror)) = (&fetched, &self.mirror) {
            let source = mirror.source(&expected_sha256, self.config.download_timeout);
            match fetch_blob(&source, &request, &settings, &self.emitter, &on_bytes).await {
                Ok(blob) => {
                    fetched = Some((
                        outcome_of(blob.resumed_from),
                        blob.transferred,
                        source.name(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(model = %model_id, %error, "mirror failed; trying the Hub");
                    self.emitter.send(
                        model_id,
                        0,
                        expected_size.unwrap_or(0),
                        ProgressKind::FallingBack {
                            from: source.name(),
                            reason: error.to_string(),
                        },
                    );
                }
            }
        }
        if fetched.is_none() {
            let remote_from_hub = if remote.from_hub {
                remote.clone()
            } else {
                let asked = self.head_with_retries(&location).await?;
                Self::expectations(artifact, &asked, &location)?;
                if asked.etag != etag || asked.commit != remote.commit {
                    return Err(EmbeddingError::Protocol {
                        location,
                        reason: format!(
                            "the Hub names the file {} at commit {}, the manifest pins {etag} at {}",
                            asked.etag, asked.commit, remote.commit
                        ),
                    });
                }
                asked
            };
            let source = HubSource {
                client: self.client.clone(),
                url: remote_from_hub.download_url.clone(),
                validator: remote_from_hub.validator.clone(),
                location: location.clone(),
            };
            let blob = fetch_blob(&source, &request, &settings, &self.emitter, &on_bytes).await?;
            fetched = Some((
                outcome_of(blob.resumed_from),
                blob.transferred,
                "hub".to_owned(),
            ));
            if let Some(mirror) = self.mirror.as_ref().filter(|m| m.is_writable()) {
                let size = std::fs::metadata(&blob.blob_path).map_or(0, |m| m.len());
                match mirror.upload(&blob.blob_path, &expected_sha256, size).await {
                    Ok(_) => {
                        tracing::info!(model = %model_id, object = %mirror.object_url(&expected_sha256), "uploaded to the mirror")
                    }
                    Err(error) => self.warn(
                        model_id,
                        format!(
                            "upload to the mirror failed ({error}); the download itself is fine"
                        ),
                    ),
                }
            }
        }
        let (outcome, transferred, source) =
            fetched.unwrap_or((Outcome::Downloaded, 0, "hub".to_owned()));
        // Placing the entry fsyncs small files: off the async threads.
        let snapshot = {
            let layout = self.layout.clone();
            let repo = repo.to_owned();
            let commit = remote.commit.clone();
            let filename = artifact.filename.clone();
            let revision = artifact.revision_or_default().to_owned();
            let use_symlinks = self.config.use_symlinks;
            let sha = expected_sha256.clone();
            let source = source.clone();
            let in_place = verified_in_place.then_some(snapshot_path);
            tokio::task::spawn_blocking(move || -> EmbeddingResult<PathBuf> {
                let snapshot = match in_place {
                    Some(path) => path,
                    None => layout.link_snapshot(&repo, &commit, &filename, &etag, use_symlinks)?,
                };
                layout.write_ref(&repo, &revision, &commit)?;
                let mut stamp = VerificationStamp::now(&snapshot, &sha)
                    .map_err(|e| EmbeddingError::io("cannot read", &snapshot, e))?;
                stamp.source = Some(source);
                super::failpoint::hit("stamp.before_write");
                stamp.write(&layout.stamp_path(&repo, &commit, &filename))?;
                super::failpoint::hit("stamp.after_write");
                Ok(snapshot)
            })
            .await
            .map_err(|e| {
                EmbeddingError::io("cannot place", &blob_path, std::io::Error::other(e))
            })??
        };
        self.completed_from(artifact, &snapshot, outcome, transferred, Some(source));
        Ok(snapshot)
    }

    /// Tells the user something that does not stop the download: a log line and an event.
    fn warn(&self, model_id: ModelId, message: String) {
        tracing::warn!(model = %model_id, "{message}");
        self.emitter
            .send(model_id, 0, 0, ProgressKind::Warning { message });
    }

    fn completed(&self, artifact: &ModelArtifact, path: &Path, outcome: Outcome, transferred: u64) {
        self.completed_from(artifact, path, outcome, transferred, None);
    }

    fn completed_from(
        &self,
        artifact: &ModelArtifact,
        path: &Path,
        outcome: Outcome,
        transferred: u64,
        source: Option<String>,
    ) {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        self.set_status(
            artifact.model_id,
            DownloadStatus::Completed {
                path: path.to_path_buf(),
                verified: true,
            },
        );
        self.emitter.send(
            artifact.model_id,
            size,
            size,
            ProgressKind::Completed {
                path: path.to_path_buf(),
                outcome,
                bytes_transferred: transferred,
                source,
            },
        );
    }

    /// The hash and size the bytes must have: the manifest's pins, checked against what the
    /// Hub advertises (a disagreement is an error before any byte is written).
    fn expectations(
        artifact: &ModelArtifact,
        remote: &RemoteFile,
        location: &FileLocation,
    ) -> EmbeddingResult<(String, Option<u64>)> {
        if artifact.revision_is_commit() && remote.commit != artifact.revision_or_default() {
            return Err(EmbeddingError::Protocol {
                location: location.clone(),
                reason: format!(
                    "asked for commit {} but the Hub answered for commit {}",
                    artifact.revision_or_default(),
                    remote.commit
                ),
            });
        }
        if let (Some(pinned), Some(advertised)) = (&artifact.sha256, &remote.sha256) {
            if pinned != advertised {
                return Err(EmbeddingError::PinMismatch {
                    location: location.clone(),
                    field: "sha256",
                    pinned: pinned.clone(),
                    advertised: advertised.clone(),
                });
            }
        }
        if let (Some(pinned), Some(advertised)) = (artifact.size_bytes, remote.size) {
            if pinned != advertised {
                return Err(EmbeddingError::PinMismatch {
                    location: location.clone(),
                    field: "size",
                    pinned: pinned.to_string(),
                    advertised: advertised.to_string(),
                });
            }
        }
        let sha = artifact
            .sha256
            .clone()
            .or_else(|| remote.sha256.clone())
            .ok_or_else(|| EmbeddingError::NoExpectedHash {
                location: location.clone(),
            })?;
        Ok((sha, artifact.size_bytes.or(remote.size)))
    }

    /// `HEAD` with the same retry policy as downloads.
    async fn head_with_retries(&self, location: &FileLocation) -> EmbeddingResult<RemoteFile> {
        let mut retry = 0u32;
        loop {
            match self.client.head_file(location).await {
                Ok(remote) => return Ok(remote),
                Err(error) if error.is_transient() && retry < self.config.retry_attempts => {
                    retry += 1;
                    let hint = match &error {
                        EmbeddingError::TransientStatus { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let delay = self
                        .config
                        .retry_policy
                        .delay(retry, hint, rand::random::<f64>());
                    self.emitter.send(
                        location.model_id,
                        0,
                        0,
                        ProgressKind::Retrying {
                            attempt: retry,
                            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            reason: error.to_string(),
                        },
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(error) if error.is_transient() => {
                    return Err(EmbeddingError::RetriesExhausted {
                        location: location.clone(),
                        attempts: retry + 1,
                        last: Box::new(error),
                    })
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Downloads all missing models: present but unverified files are hashed first (no
    /// network when they are right); the rest is resolved on the Hub, checked against the
    /// cache limit and the free disk space, then fetched, largest first, at most
    /// `max_concurrent_downloads` at once. Returns one error listing every model that failed;
    /// the others still complete.
    pub async fn ensure_all_models(&self) -> EmbeddingResult<()> {
        let all: Vec<ModelId> = self.manifest.artifacts().map(|a| a.model_id).collect();
        self.ensure_models(&all).await
    }

    /// Like [`ensure_all_models`](Self::ensure_all_models), for some models only.
    pub async fn ensure_models(&self, models: &[ModelId]) -> EmbeddingResult<()> {
        let mut failures: Vec<(ModelId, EmbeddingError)> = Vec::new();
        let mut todo: Vec<&ModelArtifact> = Vec::new();
        let mut unverified: Vec<ModelId> = Vec::new();
        for model_id in models {
            match self.manifest.entry(*model_id) {
                Some(ManifestEntry::Builtin(_)) => {}
                Some(ManifestEntry::Artifact(artifact)) => {
                    let state = self.inspect(artifact);
                    match state.snapshot {
                        Some(path) if state.stamp_valid => {
                            self.completed(artifact, &path, Outcome::AlreadyPresent, 0)
                        }
                        Some(_) => unverified.push(artifact.model_id),
                        None => todo.push(artifact),
                    }
                }
                None => failures.push((*model_id, EmbeddingError::NotAnArtifact(*model_id))),
            }
        }
        // Files another tool placed (or whose stamp went stale): hashed on all cores at once,
        // and fetched only if they turn out wrong.
        if !unverified.is_empty() {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            for outcome in self.verify_models(&unverified, cores, false).await {
                let Some(artifact) = self.manifests.get(&outcome.model_id) else {
                    continue;
                };
                match (outcome.verified, outcome.path) {
                    (Some(true), Some(path)) => {
                        self.completed(artifact, &path, Outcome::Verified, 0)
                    }
                    _ => todo.push(artifact),
                }
            }
        }
        if todo.is_empty() {
            return Self::batch_result(failures);
        }
        if self.config.offline {
            for artifact in todo {
                let error = EmbeddingError::OfflineMissing {
                    location: Self::location(artifact),
                };
                self.emitter.send(
                    artifact.model_id,
                    0,
                    0,
                    ProgressKind::Failed {
                        error: error.to_string(),
                    },
                );
                self.set_status(
                    artifact.model_id,
                    DownloadStatus::Failed {
                        error: error.to_string(),
                        retries: 0,
                    },
                );
                failures.push((artifact.model_id, error));
            }
            return Self::batch_result(failures);
        }

        // Resolve every missing file on the Hub first: sizes for the space checks, and pin
        // disagreements reported before anything is written.
        let resolved: Vec<(&ModelArtifact, EmbeddingResult<RemoteFile>)> = stream::iter(todo)
            .map(|artifact| async move {
                let location = Self::location(artifact);
                if let (Some(_), Some(sha), Some(size)) =
                    (&self.mirror, &artifact.sha256, artifact.size_bytes)
                {
                    if artifact.revision_is_commit() {
                        // Mirror first and everything pinned: the Hub is asked only if the
                        // mirror fails (air-gapped nodes never reach it).
                        let pinned =
                            RemoteFile::from_pins(artifact.revision_or_default(), sha, Some(size));
                        return (artifact, Ok(pinned));
                    }
                }
                let remote = self.head_with_retries(&location).await.and_then(|remote| {
                    Self::expectations(artifact, &remote, &location).map(|_| remote)
                });
                (artifact, remote)
            })
            .buffer_unordered(self.config.max_concurrent_downloads.max(4))
            .collect()
            .await;
        let mut plan: Vec<(&ModelArtifact, RemoteFile)> = Vec::new();
        for (artifact, remote) in resolved {
            match remote {
                Ok(remote) => plan.push((artifact, remote)),
                Err(error) => {
                    self.set_status(
                        artifact.model_id,
                        DownloadStatus::Failed {
                            error: error.to_string(),
                            retries: 0,
                        },
                    );
                    self.emitter.send(
                        artifact.model_id,
                        0,
                        0,
                        ProgressKind::Failed {
                            error: error.to_string(),
                        },
                    );
                    failures.push((artifact.model_id, error));
                }
            }
        }
        self.check_space(&plan).await?;

        plan.sort_by_key(|(artifact, remote)| {
            std::cmp::Reverse(artifact.size_bytes.or(remote.size).unwrap_or(0))
        });
        let results: Vec<(ModelId, EmbeddingResult<PathBuf>)> = stream::iter(plan)
            .map(|(artifact, remote)| async move {
                (
                    artifact.model_id,
                    self.download_artifact(artifact, Some(remote)).await,
                )
            })
            .buffer_unordered(self.config.max_concurrent_downloads)
            .collect()
            .await;
        for (model_id, result) in results {
            if let Err(error) = result {
                failures.push((model_id, error));
            }
        }
        Self::batch_result(failures)
    }

    fn batch_result(mut failures: Vec<(ModelId, EmbeddingError)>) -> EmbeddingResult<()> {
        if failures.is_empty() {
            return Ok(());
        }
        failures.sort_by_key(|(m, _)| m.index());
        Err(EmbeddingError::DownloadsFailed(failures))
    }

    /// Bytes still to fetch for a plan (sizes minus partial downloads already on disk).
    fn bytes_needed(&self, plan: &[(&ModelArtifact, RemoteFile)]) -> u64 {
        plan.iter()
            .map(|(artifact, remote)| {
                let size = artifact.size_bytes.or(remote.size).unwrap_or(0);
                let blob_present = self
                    .layout
                    .blob_path(&artifact.repo_id, &remote.etag)
                    .exists();
                let partial =
                    partial_files(&self.layout.blobs_dir(&artifact.repo_id), &remote.etag)
                        .first()
                        .map_or(0, |p| p.1);
                if blob_present {
                    0
                } else {
                    size.saturating_sub(partial)
                }
            })
            .sum()
    }

    async fn check_space(&self, plan: &[(&ModelArtifact, RemoteFile)]) -> EmbeddingResult<()> {
        let needed = self.bytes_needed(plan);
        if needed == 0 {
            return Ok(());
        }
        let planned: HashSet<(String, String)> = plan
            .iter()
            .map(|(a, r)| (CacheLayout::repo_folder_name(&a.repo_id), r.etag.clone()))
            .collect();
        if let Some(limit) = self.config.max_cache_bytes {
            let current = self.cache_size_off_thread().await;
            if current.saturating_add(needed) > limit {
                let mut protected = self.protected_blobs();
                protected.extend(planned.iter().cloned());
                let candidates = eviction::candidates(&self.layout, &protected);
                let evictable: u64 = candidates.iter().map(|c| c.bytes).sum();
                let to_free = current.saturating_add(needed) - limit;
                if evictable < to_free {
                    return Err(EmbeddingError::CacheLimitExceeded {
                        needed,
                        limit,
                        current,
                        evictable,
                    });
                }
                for candidate in eviction::select(candidates, to_free) {
                    self.remove_candidate_locked(&candidate).await?;
                }
            }
        }
        if self.config.check_disk_space {
            let root = self.layout.root().to_path_buf();
            cache::create_dir_all(&root)?;
            if let Some(available) = available_space(&root) {
                if needed > available {
                    return Err(EmbeddingError::InsufficientDisk {
                        path: root,
                        needed,
                        available,
                    });
                }
            }
        }
        Ok(())
    }

    async fn remove_candidate_locked(
        &self,
        candidate: &eviction::EvictionCandidate,
    ) -> EmbeddingResult<()> {
        let etag = candidate.blob_name.split('.').next().unwrap_or_default();
        let lock_path = self
            .layout
            .root()
            .join(".locks")
            .join(&candidate.repo_folder)
            .join(format!("{etag}.lock"));
        let _lock = BlobLock::acquire(&lock_path, || {}).await?;
        eviction::remove_candidate(&self.layout, candidate)
    }

    /// Blobs the active manifest needs: those its snapshot entries point at, and pinned hashes.
    fn protected_blobs(&self) -> HashSet<(String, String)> {
        let mut protected = HashSet::new();
        for artifact in self.manifest.artifacts() {
            let folder = CacheLayout::repo_folder_name(&artifact.repo_id);
            if let Some(sha) = &artifact.sha256 {
                protected.insert((folder.clone(), sha.clone()));
            }
            let state = self.inspect(artifact);
            if let Some(name) = state.blob_name {
                protected.insert((folder.clone(), name));
            }
            if let Some(stamp) = state.stamp {
                protected.insert((folder, stamp.sha256));
            }
        }
        protected
    }

    /// Evicts least recently used blobs until the cache is at most `max_bytes`. Blobs the
    /// manifest needs are kept unless `include_manifest` is set. With `dry_run`, only reports.
    pub async fn collect_garbage(
        &self,
        max_bytes: u64,
        include_manifest: bool,
        dry_run: bool,
    ) -> EmbeddingResult<EvictionReport> {
        let size_before = self.cache_size_off_thread().await;
        let mut report = EvictionReport {
            size_before,
            size_after: size_before,
            dry_run,
            ..EvictionReport::default()
        };
        if size_before <= max_bytes {
            return Ok(report);
        }
        let protected = if include_manifest {
            HashSet::new()
        } else {
            self.protected_blobs()
        };
        let chosen = eviction::select(
            eviction::candidates(&self.layout, &protected),
            size_before - max_bytes,
        );
        for candidate in chosen {
            if !dry_run {
                self.remove_candidate_locked(&candidate).await?;
            }
            report.freed_bytes += candidate.bytes;
            report.removed.push(candidate);
        }
        report.size_after = if dry_run {
            size_before.saturating_sub(report.freed_bytes)
        } else {
            self.cache_size_off_thread().await
        };
        Ok(report)
    }

    /// Get download status for model.
    pub fn status(&self, model_id: ModelId) -> DownloadStatus {
        self.status
            .read()
            .ok()
            .and_then(|map| map.get(&model_id).cloned())
            .unwrap_or(DownloadStatus::NotStarted)
    }

    /// Overall readiness, from file metadata and stamps only (no hashing, no network).
    pub fn readiness_report(&self) -> ReadinessReport {
        let mut report = ReadinessReport {
            ready_models: Vec::new(),
            missing_models: Vec::new(),
            failed_models: Vec::new(),
            total_size_bytes: 0,
            downloaded_bytes: 0,
            models: Vec::new(),
        };
        for entry in &self.manifest.entries {
            let artifact = match entry {
                ManifestEntry::Builtin(model_id) => {
                    report.ready_models.push(*model_id);
                    report.models.push(ModelReadiness {
                        model_id: *model_id,
                        state: ReadinessState::Builtin,
                        repo_id: None,
                        filename: None,
                        revision: None,
                        commit: None,
                        path: None,
                        size_bytes: None,
                        expected_sha256: None,
                        hash_source: HashSource::Unknown,
                        format: None,
                        partial_bytes: 0,
                        error: None,
                        source: None,
                    });
                    continue;
                }
                ManifestEntry::Artifact(artifact) => artifact,
            };
            let state = self.inspect(artifact);
            let (expected, source) = Self::expected_hash(artifact, &state);
            let size = artifact
                .size_bytes
                .or(state.stamp.as_ref().map(|s| s.fingerprint.size));
            let ready = state.snapshot.is_some()
                && (state.stamp_valid
                    || (!self.config.verify_checksums
                        && artifact.size_bytes.is_none_or(|s| state.size == Some(s))));
            let failure = match self.status(artifact.model_id) {
                DownloadStatus::Failed { error, .. } => Some(error),
                _ => None,
            };
            let readiness_state = if ready {
                ReadinessState::Ready
            } else if failure.is_some() {
                ReadinessState::Failed
            } else if state.snapshot.is_some() {
                ReadinessState::Unverified
            } else {
                ReadinessState::Missing
            };
            match readiness_state {
                ReadinessState::Ready => {
                    report.ready_models.push(artifact.model_id);
                    report.downloaded_bytes += state.size.unwrap_or(0);
                }
                ReadinessState::Failed => {
                    report
                        .failed_models
                        .push((artifact.model_id, failure.clone().unwrap_or_default()));
                    report.downloaded_bytes += state.partial_bytes;
                }
                _ => {
                    report.missing_models.push(artifact.model_id);
                    report.downloaded_bytes += state.partial_bytes;
                }
            }
            report.total_size_bytes += size.unwrap_or(0);
            report.models.push(ModelReadiness {
                model_id: artifact.model_id,
                state: readiness_state,
                repo_id: Some(artifact.repo_id.clone()),
                filename: Some(artifact.filename.clone()),
                revision: Some(artifact.revision_or_default().to_owned()),
                commit: state.commit.clone(),
                path: state.snapshot.clone(),
                size_bytes: size.or(state.size),
                expected_sha256: expected,
                hash_source: source,
                format: Some(artifact.format()),
                partial_bytes: state.partial_bytes,
                error: if ready { None } else { failure },
                source: state.stamp.as_ref().and_then(|s| s.source.clone()),
            });
        }
        report
    }

    /// Subscribe to download progress updates (see [`ProgressKind`] for the contract).
    pub fn subscribe_progress(&self) -> broadcast::Receiver<ProgressEvent> {
        self.emitter.subscribe()
    }

    /// Removes the cached files of every model of this manifest, and nothing else.
    pub async fn clear_cache(&self) -> EmbeddingResult<()> {
        let all: Vec<ModelId> = self.manifest.artifacts().map(|a| a.model_id).collect();
        self.clear_models(&all).await.map(|_| ())
    }

    /// Removes the cached files of some models: their snapshot entries, their blobs when no
    /// other snapshot entry uses them, their partial downloads and stamps. Returns the bytes
    /// freed. Links are removed, never followed; nothing outside these repos is touched.
    pub async fn clear_models(&self, models: &[ModelId]) -> EmbeddingResult<u64> {
        let before = self.cache_size_off_thread().await;
        for model_id in models {
            let Ok(artifact) = self.artifact(*model_id) else {
                continue;
            };
            let state = self.inspect(artifact);
            let repo = artifact.repo_id.as_str();
            let repo_dir = self.layout.repo_dir(repo);
            let mut blob_names: Vec<String> = Vec::new();
            blob_names.extend(state.blob_name.clone());
            blob_names.extend(artifact.sha256.clone());
            blob_names.extend(state.stamp.as_ref().map(|s| s.sha256.clone()));
            if artifact.sha256.is_none()
                && self
                    .manifest
                    .artifacts()
                    .filter(|a| a.repo_id == artifact.repo_id)
                    .count()
                    == 1
            {
                // An unpinned download that never finished has no known etag: when no other
                // entry uses this repo, the partial downloads in it are this entry's.
                if let Ok(entries) = std::fs::read_dir(self.layout.blobs_dir(repo)) {
                    blob_names.extend(entries.flatten().filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.ends_with(cache::INCOMPLETE_SUFFIX)
                            .then(|| name.split('.').next().unwrap_or_default().to_owned())
                    }));
                }
            }
            blob_names.sort();
            blob_names.dedup();
            if let Some(commit) = &state.commit {
                let snapshot = self.layout.snapshot_path(repo, commit, &artifact.filename);
                cache::remove_entry(&snapshot)?;
                cache::remove_empty_parents(&snapshot, &repo_dir.join("snapshots"));
                let stamp = self.layout.stamp_path(repo, commit, &artifact.filename);
                cache::remove_entry(&stamp)?;
                if !self
                    .layout
                    .snapshot_path(repo, commit, "x")
                    .parent()
                    .is_some_and(Path::exists)
                {
                    let reference = self.layout.ref_path(repo, artifact.revision_or_default());
                    if std::fs::read_to_string(&reference).ok().as_deref() == Some(commit.as_str())
                    {
                        cache::remove_entry(&reference)?;
                        cache::remove_empty_parents(&reference, &repo_dir.join("refs"));
                    }
                }
            }
            for name in blob_names {
                let lock = BlobLock::acquire(&self.layout.lock_path(repo, &name), || {}).await?;
                if eviction::snapshot_links_to(&repo_dir, &name).is_empty() {
                    cache::remove_entry(&self.layout.blob_path(repo, &name))?;
                }
                for (partial, _) in partial_files(&self.layout.blobs_dir(repo), &name) {
                    cache::remove_entry(&partial)?;
                    cache::remove_entry(&super::ranged::sidecar_path(&partial))?;
                }
                drop(lock);
            }
            self.set_status(*model_id, DownloadStatus::NotStarted);
        }
        Ok(before.saturating_sub(self.cache_size_off_thread().await))
    }

    /// [`cache_size`](Self::cache_size) on a blocking thread: it walks the whole cache.
    async fn cache_size_off_thread(&self) -> u64 {
        let layout = self.layout.clone();
        blocking(move || Ok(layout.total_size())).await.unwrap_or(0)
    }

    /// The total size of the cache on disk in bytes (every regular file: blobs, partial
    /// downloads, copies, metadata), read fresh from the file system.
    pub fn cache_size(&self) -> u64 {
        self.layout.total_size()
    }
}

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn available_space(path: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}
