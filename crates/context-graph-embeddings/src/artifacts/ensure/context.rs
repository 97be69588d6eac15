//! What every step of ensuring a model needs, built once by the manager: the configuration,
//! the manifest, the cache layout, the Hub client and the mirror, the download and range
//! slots, the status board and the progress channel, and what this process verified but
//! could not record (a read-only cache): the verdicts and resolved file sets, kept in memory
//! ([`Memory`], read through a [`CacheView`] on blocking threads), and the one notice.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

use crate::artifacts::config::ArtifactManagerConfig;
use crate::artifacts::fileset::PinnedFile;
use crate::artifacts::manifest::SignaturePolicies;
use crate::artifacts::manifest::{Manifest, ModelArtifact};
use crate::artifacts::progress::ProgressEmitter;
use crate::artifacts::remote::client::HubClient;
use crate::artifacts::remote::mirror::Mirror;
use crate::artifacts::remote::oci::mirror::OciMirror;
use crate::artifacts::remote::retry::{RetryDecision, RetryState};
use crate::artifacts::remote::tls::TrustRoots;
use crate::artifacts::status::{ModelEvents, StatusBoard};
use crate::artifacts::store::layout::CacheLayout;
use crate::artifacts::store::stamp::{SignatureStamp, UnrecordedStamps, VerificationStamp};
use crate::artifacts::transfer::adapt::ConnectionGovernor;
use crate::artifacts::transfer::request::FetchSettings;
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};
use crate::model_id::ModelId;

/// Small files of sets fetched at once, across all models of a run (what
/// `snapshot_download`'s eight workers do for one repo).
pub(crate) const SMALL_FILES_AT_ONCE: usize = 8;

/// What this process verified or resolved but could not record in the cache (a read-only
/// mount): verdicts by snapshot path (each holds while the file keeps its fingerprint) and
/// resolved file sets by record path.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    verdicts: Mutex<HashMap<PathBuf, VerificationStamp>>,
    sets: Mutex<HashMap<PathBuf, Vec<PinnedFile>>>,
    signatures: Mutex<HashMap<PathBuf, SignatureStamp>>,
}

impl Memory {
    /// Keeps a verdict whose stamp could not be written, for the rest of the process.
    pub(crate) fn remember(&self, path: &Path, stamp: VerificationStamp) {
        guard(&self.verdicts).insert(path.to_path_buf(), stamp);
    }

    /// Drops a kept verdict (the file was found wrong).
    pub(crate) fn forget(&self, path: &Path) {
        guard(&self.verdicts).remove(path);
    }

    /// The kept verdict for `path`, if any (whether it still describes the file is for the
    /// caller to check, off the async threads: [`VerificationStamp::is_valid_for`]).
    pub(crate) fn kept_verdict(&self, path: &Path) -> Option<VerificationStamp> {
        guard(&self.verdicts).get(path).cloned()
    }

    /// Keeps a resolved file set whose record could not be written.
    pub(crate) fn remember_set(&self, record: &Path, files: Vec<PinnedFile>) {
        guard(&self.sets).insert(record.to_path_buf(), files);
    }

    /// Keeps a signature verdict whose record could not be written.
    pub(crate) fn remember_signature(&self, record: &Path, verdict: SignatureStamp) {
        guard(&self.signatures).insert(record.to_path_buf(), verdict);
    }

    /// Drops a kept signature verdict (the signature was refused).
    pub(crate) fn forget_signature(&self, record: &Path) {
        guard(&self.signatures).remove(record);
    }

    /// The signature verdict kept for `record`, if any (whether it still holds is for the
    /// caller to check: [`SignatureStamp::holds_for`]).
    pub(crate) fn kept_signature(&self, record: &Path) -> Option<SignatureStamp> {
        guard(&self.signatures).get(record).cloned()
    }

    /// The file set kept for `record`, if any.
    pub(crate) fn remembered_set(&self, record: &Path) -> Option<Vec<PinnedFile>> {
        guard(&self.sets).get(record).cloned()
    }
}

/// The cache as one reader sees it: its layout and what this process keeps in memory.
/// Cheap to clone, so blocking reads take it onto their thread.
#[derive(Debug, Clone)]
pub(crate) struct CacheView {
    /// The cache's paths.
    pub(crate) layout: CacheLayout,
    /// Verdicts and sets this process could not record.
    pub(crate) memory: Arc<Memory>,
    /// The manifest's signature policies: a policy puts the signature file in a model's plan
    /// and makes its verdict part of readiness.
    pub(crate) signatures: Arc<SignaturePolicies>,
}

/// The shared state of one manager.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: ArtifactManagerConfig,
    pub(crate) manifest: Manifest,
    pub(crate) layout: CacheLayout,
    pub(crate) client: HubClient,
    pub(crate) mirror: Option<Mirror>,
    /// An OCI registry as the mirror (`--mirror oci://…`), instead of S3.
    pub(crate) oci_mirror: Option<Arc<OciMirror>>,
    /// The CA certificates trusted besides the system's (Hub, mirror and registries alike).
    pub(crate) trust: TrustRoots,
    pub(crate) emitter: ProgressEmitter,
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) download_slots: Arc<Semaphore>,
    /// Small files of sets fetched at once across the run (not per model: four models each
    /// fetching eight at once held a blocking thread, a connection and its buffers per file).
    pub(crate) small_file_slots: Arc<Semaphore>,
    pub(crate) connections: Arc<ConnectionGovernor>,
    in_flight: Mutex<HashMap<ModelId, Arc<tokio::sync::Mutex<()>>>>,
    /// What this process verified or resolved but could not record (a read-only cache).
    pub(crate) memory: Arc<Memory>,
    /// The manifest's signature policies, shared with every [`CacheView`].
    pub(crate) signatures: Arc<SignaturePolicies>,
    /// The first stamp that could not be written, for the one notice.
    unrecorded: Mutex<Option<UnrecordedStamps>>,
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Context {
    /// Builds the shared state.
    pub(crate) fn new(
        config: ArtifactManagerConfig,
        manifest: Manifest,
        client: HubClient,
        mirror: Option<Mirror>,
    ) -> Self {
        Context {
            layout: CacheLayout::new(&config.cache_dir),
            download_slots: Arc::new(Semaphore::new(config.max_concurrent_downloads)),
            small_file_slots: Arc::new(Semaphore::new(SMALL_FILES_AT_ONCE)),
            connections: Arc::new(ConnectionGovernor::new(&config.parallel)),
            signatures: Arc::new(manifest.signatures.clone()),
            config,
            manifest,
            client,
            mirror,
            oci_mirror: None,
            trust: TrustRoots::default(),
            emitter: ProgressEmitter::new(),
            board: Arc::new(StatusBoard::default()),
            in_flight: Mutex::new(HashMap::new()),
            memory: Arc::new(Memory::default()),
            unrecorded: Mutex::new(None),
        }
    }

    /// What reading the cache needs, to take onto a blocking thread.
    pub(crate) fn view(&self) -> CacheView {
        CacheView {
            layout: self.layout.clone(),
            memory: self.memory.clone(),
            signatures: self.signatures.clone(),
        }
    }

    /// Records that a stamp could not be written; the first time, announces it once (a
    /// `Warning` event) and keeps it for [`unrecorded_stamps`](Self::unrecorded_stamps).
    pub(crate) fn stamps_unrecorded(&self, model_id: ModelId, notice: UnrecordedStamps) {
        let mut unrecorded = guard(&self.unrecorded);
        if unrecorded.is_none() {
            self.events(model_id).warning(notice.message());
            *unrecorded = Some(notice);
        }
    }

    /// The notice, when some stamp could not be written in this process.
    pub(crate) fn unrecorded_stamps(&self) -> Option<UnrecordedStamps> {
        guard(&self.unrecorded).clone()
    }

    /// The manifest entry of a downloadable model.
    pub(crate) fn artifact(&self, model_id: ModelId) -> EmbeddingResult<&ModelArtifact> {
        self.manifest
            .artifacts()
            .find(|a| a.model_id == model_id)
            .ok_or(EmbeddingError::NotAnArtifact(model_id))
    }

    /// The event handle of one model.
    pub(crate) fn events(&self, model_id: ModelId) -> ModelEvents {
        ModelEvents::new(model_id, &self.emitter, &self.board)
    }

    /// Runs one metadata request (a `HEAD`, a tree listing: no file bytes) until it succeeds or
    /// the retry policy gives up, reporting each wait as `Retrying`.
    pub(crate) async fn with_retries<T, Fut>(
        &self,
        location: &FileLocation,
        events: &ModelEvents,
        mut request: impl FnMut() -> Fut,
    ) -> EmbeddingResult<T>
    where
        Fut: Future<Output = EmbeddingResult<T>>,
    {
        let mut retry = RetryState::new(
            &self.config.retry_policy,
            self.config.retry_attempts,
            location,
        );
        loop {
            retry.attempt_started();
            match request().await {
                Ok(answer) => return Ok(answer),
                Err(error) => match retry.after_failure(error, false, rand::random()) {
                    RetryDecision::GiveUp(error) => return Err(error),
                    RetryDecision::Retry(backoff) => {
                        events.retrying(0, 0, &backoff);
                        tokio::time::sleep(backoff.delay).await;
                    }
                },
            }
        }
    }

    /// How to fetch, from the configuration.
    pub(crate) fn fetch_settings(&self) -> FetchSettings {
        FetchSettings {
            retry_attempts: self.config.retry_attempts,
            retry_policy: self.config.retry_policy.clone(),
            progress_interval: self.config.progress_interval,
            parallel: self.config.parallel.clone(),
            connections: self.connections.clone(),
        }
    }

    /// One download per model in this process: a second caller waits on this gate, then
    /// finds the file in place.
    pub(crate) fn in_flight_gate(&self, model_id: ModelId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.in_flight.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(model_id).or_default().clone()
    }

    /// Files hashed at once when verifying several (one per core).
    pub(crate) fn hashing_parallelism(&self) -> usize {
        self.config.hashing_parallelism()
    }
}
