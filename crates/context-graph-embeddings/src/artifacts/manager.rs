//! The artifact manager: the spec's API (M03-S13) over the `ensure` steps. It builds the
//! shared context (token, Hub client, mirror, manifest) and delegates; what a download does is
//! in `ensure/`, how bytes move in `transfer/`, what files are called in `store/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::broadcast;

use super::config::ArtifactManagerConfig;
use super::ensure::bundle::{self, BundleExport, BundleImport};
use super::ensure::context::Context;
use super::ensure::publish::{self, PushOptions, PushReport};
use super::ensure::readiness::{ReadinessReport, ReadinessState, VerifiedModel, VerifyOutcome};
use super::ensure::{batch, maintain, one, readiness};
use super::environment::{self, ProcessEnv, TokenSource};
use super::manifest::{Manifest, ManifestEntry};
use super::metrics::MetricsRecorder;
use super::outdated::{self, ModelDrift};
use super::pinning::{self, PinOutcome};
use super::progress::ProgressEvent;
use super::remote::client::{HubClient, HubClientOptions, Secret};
use super::remote::mirror::Mirror;
use super::remote::oci::mirror::OciMirror;
use super::remote::oci::reference::OciReference;
use super::remote::tls::TrustRoots;
use super::status::DownloadStatus;
use super::store::budget::EvictionReport;
use super::store::stamp::UnrecordedStamps;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// The model artifact manager.
pub struct ModelArtifactManager {
    context: Context,
    token_source: Option<TokenSource>,
}

impl std::fmt::Debug for ModelArtifactManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelArtifactManager")
            .field("config", &self.context.config)
            .field("manifest", &self.context.manifest.origin)
            .field("token_source", &self.token_source)
            .field("client", &self.context.client)
            .field("mirror", &self.context.mirror)
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
        let trust = TrustRoots::load(
            config.ca_bundle.as_deref(),
            config.ssl_cert_file.as_deref(),
            &config.ssl_cert_dirs,
        )?;
        let client = HubClient::new(HubClientOptions {
            endpoint: config.endpoint.clone(),
            token: token.map(Secret::new),
            connect_timeout: config.connect_timeout,
            metadata_timeout: config.metadata_timeout,
            idle_timeout: config.download_timeout,
            trust: trust.clone(),
        })?;
        // `oci://` (or `oci+http://`) names a registry repository; anything else an S3 bucket.
        let oci_mirror = match config.mirror.as_ref() {
            Some(m) if m.url.starts_with("oci://") || m.url.starts_with("oci+http://") => {
                Some(Arc::new(OciMirror::connect(
                    OciReference::parse(&m.url)?,
                    m.write,
                    &ProcessEnv,
                    config.registry_auth_file.as_deref(),
                    &trust,
                    config.download_timeout,
                )?))
            }
            _ => None,
        };
        let mirror = config
            .mirror
            .as_ref()
            .filter(|_| oci_mirror.is_none())
            .map(|m| Mirror::connect_trusting(m, &ProcessEnv, &trust))
            .transpose()?;
        let manifest = Self::read_manifest(&config)?;
        let mut context = Context::new(config, manifest, client, mirror);
        context.oci_mirror = oci_mirror;
        context.trust = trust;
        Ok(ModelArtifactManager {
            context,
            token_source,
        })
    }

    fn read_manifest(config: &ArtifactManagerConfig) -> EmbeddingResult<Manifest> {
        match &config.manifest_path {
            Some(path) => Manifest::from_path(path),
            None => Manifest::embedded(),
        }
    }

    /// Loads artifact manifests from the configured file, or the embedded data. Called by
    /// [`new`](Self::new); call again after changing the file (statuses are forgotten).
    pub fn load_manifests(&mut self) -> EmbeddingResult<()> {
        self.context.manifest = Self::read_manifest(&self.context.config)?;
        self.context.board.clear();
        Ok(())
    }

    /// The loaded manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.context.manifest
    }

    /// The configuration.
    pub fn config(&self) -> &ArtifactManagerConfig {
        &self.context.config
    }

    /// Where the token came from, if there is one (never the token itself).
    pub fn token_source(&self) -> Option<TokenSource> {
        self.token_source
    }

    /// Whether the model is ready to load: built-in, or on disk and verified (with
    /// `verify_checksums` off, on disk with the right size is enough).
    pub fn is_available(&self, model_id: ModelId) -> bool {
        match self.context.manifest.entry(model_id) {
            Some(ManifestEntry::Builtin(_)) => true,
            Some(ManifestEntry::Artifact(_)) => self.get_path(model_id).is_some(),
            None => false,
        }
    }

    /// The snapshot folder (`snapshots/<commit>`) a loader opens, holding every file of the
    /// model's set; `None` unless the model is available.
    pub fn snapshot_dir(&self, model_id: ModelId) -> Option<PathBuf> {
        self.verified_model(model_id).map(|m| m.snapshot_dir)
    }

    /// Local path of the model's weight file (the snapshot path), `None` unless it is
    /// available (every file of its set verified).
    pub fn get_path(&self, model_id: ModelId) -> Option<PathBuf> {
        self.verified_model(model_id).map(|m| m.weights)
    }

    /// What the manager verified for a model: its snapshot folder, weights file, format and
    /// files, `None` unless the model is available (built-ins have no files). This is what
    /// the registry opens. Blocking (a few `stat`s), like [`get_path`](Self::get_path).
    pub fn verified_model(&self, model_id: ModelId) -> Option<VerifiedModel> {
        readiness::verified_model(&self.context, model_id)
    }

    /// [`verified_model`](Self::verified_model) for every artifact of the manifest, in
    /// manifest order, read off the async threads. Fails with `MissingModels` naming every
    /// artifact that is not available (run [`ensure_all_models`](Self::ensure_all_models)
    /// first).
    pub async fn verified_models(&self) -> EmbeddingResult<Vec<VerifiedModel>> {
        readiness::verified_models(&self.context).await
    }

    /// Verifies the checksum of the local model file by hashing it in full. `Ok(true)` when it
    /// matches (a stamp is written), `Ok(false)` when it does not (the model is marked
    /// failed), `MissingModels` when the file is not there.
    pub async fn verify_checksum(&self, model_id: ModelId) -> EmbeddingResult<bool> {
        readiness::verify_checksum(&self.context, model_id).await
    }

    /// Re-hashes every present artifact file, `parallelism` files at once (each on its own
    /// blocking thread), and reports each result. With `only_unverified`, files with a valid
    /// stamp are skipped (start-up path: no re-hash of known-good files).
    pub async fn verify_present(
        &self,
        parallelism: usize,
        only_unverified: bool,
    ) -> Vec<VerifyOutcome> {
        let all = self.artifact_ids();
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
        readiness::verify_models(&self.context, models, parallelism, only_unverified).await
    }

    /// Downloads the model from the Hugging Face Hub (if it is not already there and
    /// verified) and returns its snapshot path.
    pub async fn download(&self, model_id: ModelId) -> EmbeddingResult<PathBuf> {
        let artifact = self.context.artifact(model_id)?;
        one::ensure_one(&self.context, artifact, None).await
    }

    /// Downloads all missing models: present but unverified files are hashed first (no
    /// network when they are right); the rest is resolved on the Hub, checked against the
    /// cache limit and the free disk space, then fetched, largest first, at most
    /// `max_concurrent_downloads` at once. Returns one error listing every model that failed;
    /// the others still complete.
    pub async fn ensure_all_models(&self) -> EmbeddingResult<()> {
        let all = self.artifact_ids();
        self.ensure_models(&all).await
    }

    /// Like [`ensure_all_models`](Self::ensure_all_models), for some models only.
    pub async fn ensure_models(&self, models: &[ModelId]) -> EmbeddingResult<()> {
        batch::ensure_models(&self.context, models).await
    }

    /// Evicts least recently used blobs until the cache is at most `max_bytes`. Blobs the
    /// manifest needs are kept unless `include_manifest` is set. With `dry_run`, only reports.
    pub async fn collect_garbage(
        &self,
        max_bytes: u64,
        include_manifest: bool,
        dry_run: bool,
    ) -> EmbeddingResult<EvictionReport> {
        maintain::collect_garbage(&self.context, max_bytes, include_manifest, dry_run).await
    }

    /// The download status of a model in this process.
    pub fn status(&self, model_id: ModelId) -> DownloadStatus {
        self.context.board.get(model_id)
    }

    /// Overall readiness, from file metadata and stamps only (no hashing, no network).
    pub fn readiness_report(&self) -> ReadinessReport {
        readiness::readiness_report(&self.context)
    }

    /// Set when this process verified files whose verification stamps it could not write
    /// (a read-only cache): they count as verified for this process only, and the next
    /// process hashes them again. Announced once as a `Warning` event too.
    pub fn unrecorded_stamps(&self) -> Option<UnrecordedStamps> {
        self.context.unrecorded_stamps()
    }

    /// Subscribe to download progress updates (see [`ProgressKind`](super::ProgressKind) for
    /// the contract).
    pub fn subscribe_progress(&self) -> broadcast::Receiver<ProgressEvent> {
        self.context.emitter.subscribe()
    }

    /// Removes the cached files of every model of this manifest, and nothing else.
    pub async fn clear_cache(&self) -> EmbeddingResult<()> {
        let all = self.artifact_ids();
        self.clear_models(&all).await.map(|_| ())
    }

    /// Removes the cached files of some models: their snapshot entries, their blobs when no
    /// other snapshot entry uses them, their partial downloads and stamps. Returns the bytes
    /// freed. Links are removed, never followed; nothing outside these repos is touched.
    pub async fn clear_models(&self, models: &[ModelId]) -> EmbeddingResult<u64> {
        maintain::clear_models(&self.context, models).await
    }

    /// The total size of the cache on disk in bytes (every regular file: blobs, partial
    /// downloads, copies, metadata), read fresh from the file system. Blocking: it walks the
    /// whole cache.
    pub fn cache_size(&self) -> u64 {
        self.context.layout.total_size()
    }

    /// Asks the Hub for every artifact's commit, SHA-256 and size, and returns a fully pinned
    /// manifest with the differences. Writes nothing. Fails in offline mode.
    pub async fn pin_manifest(&self) -> EmbeddingResult<PinOutcome> {
        pinning::pin(
            &self.context.client,
            &self.context.manifest,
            self.context.config.offline,
        )
        .await
    }

    /// Compares the pins of some models (every artifact when `models` is empty) with the head
    /// of the branch each follows (its revision when that is a branch, else `main`): the
    /// commit, and each file's SHA-256 and size. Reads only; never moves a pin. Fails in
    /// offline mode.
    pub async fn check_outdated(&self, models: &[ModelId]) -> EmbeddingResult<Vec<ModelDrift>> {
        outdated::check(
            &self.context.client,
            &self.context.manifest,
            models,
            self.context.config.offline,
        )
        .await
    }

    /// Moves the pins of some models (every artifact when `models` is empty) to the head of the
    /// branch each follows, with the SHA-256 and size there, and returns the manifest with the
    /// differences. Writes nothing. Fails in offline mode.
    pub async fn upgrade_pins(&self, models: &[ModelId]) -> EmbeddingResult<PinOutcome> {
        pinning::upgrade(
            &self.context.client,
            &self.context.manifest,
            models,
            self.context.config.offline,
        )
        .await
    }

    /// A metrics recorder fed by this manager's progress events from now on (a task on the
    /// current tokio runtime reads them; it ends when the manager is dropped). Render it with
    /// [`MetricsRecorder::render`] after [`update_metrics`](Self::update_metrics). Fails
    /// outside a tokio runtime.
    pub fn metrics_recorder(&self) -> EmbeddingResult<MetricsRecorder> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            EmbeddingError::Config("metrics_recorder needs a tokio runtime".to_owned())
        })?;
        let recorder = MetricsRecorder::new();
        let mut events = self.subscribe_progress();
        let fed = recorder.clone();
        runtime.spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => fed.observe(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => fed.lost_events(n),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(recorder)
    }

    /// Sets the recorder's gauges that come from the cache rather than from events: models by
    /// readiness state and the cache size. Blocking: it walks the cache (call it from a
    /// blocking thread in async code).
    pub fn update_metrics(&self, recorder: &MetricsRecorder) {
        let report = self.readiness_report();
        recorder.set_model_states(report.models.iter().map(|m| match m.state {
            ReadinessState::Builtin => "builtin",
            ReadinessState::Ready => "ready",
            ReadinessState::Unverified => "unverified",
            ReadinessState::Missing => "missing",
            ReadinessState::Failed => "failed",
        }));
        recorder.set_cache_size(self.cache_size());
    }

    /// Writes the verified files of some models (every artifact when `models` is empty) into
    /// one bundle at `path` (a tar archive with the locked manifest inside; see
    /// `docs/bundles.md`). Every byte is hashed again on the way in; nothing is written unless
    /// all match.
    pub async fn export_bundle(
        &self,
        path: &Path,
        models: &[ModelId],
    ) -> EmbeddingResult<BundleExport> {
        bundle::export(&self.context, path, models).await
    }

    /// Imports a bundle into the cache: each member is verified against the locked SHA-256
    /// and size before it is renamed into `blobs/`, the bundle must match this manifest, and
    /// snapshot entries are placed only once every member is verified. An interrupted import
    /// is resumed by running it again. No network is used.
    pub async fn import_bundle(&self, path: &Path) -> EmbeddingResult<BundleImport> {
        bundle::import(&self.context, path).await
    }

    /// Pushes the verified files of some models (every artifact when `models` is empty) to
    /// the registry repository `target` (`oci://HOST/REPO[:TAG]`): each model as a ModelPack
    /// artifact tagged for OCI mirrors (and `TAG` when one model is named), or with
    /// `options.image` all of them as one image whose file system is a ready Hugging Face
    /// cache, tagged `TAG`. Blobs the registry has are not sent again (see `docs/oci.md`).
    pub async fn push_to_registry(
        &self,
        target: &str,
        models: &[ModelId],
        options: PushOptions,
    ) -> EmbeddingResult<PushReport> {
        let target = OciReference::parse(target)?;
        publish::push(&self.context, &target, models, options).await
    }

    fn artifact_ids(&self) -> Vec<ModelId> {
        self.context
            .manifest
            .artifacts()
            .map(|a| a.model_id)
            .collect()
    }
}
