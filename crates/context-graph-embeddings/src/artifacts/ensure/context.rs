//! What every step of ensuring a model needs, built once by the manager: the configuration,
//! the manifest, the cache layout, the Hub client and the mirror, the download and range
//! slots, the status board and the progress channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::artifacts::config::ArtifactManagerConfig;
use crate::artifacts::manifest::{Manifest, ModelArtifact};
use crate::artifacts::progress::ProgressEmitter;
use crate::artifacts::remote::client::HubClient;
use crate::artifacts::remote::mirror::Mirror;
use crate::artifacts::status::{ModelEvents, StatusBoard};
use crate::artifacts::store::layout::CacheLayout;
use crate::artifacts::transfer::request::FetchSettings;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// The shared state of one manager.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: ArtifactManagerConfig,
    pub(crate) manifest: Manifest,
    pub(crate) layout: CacheLayout,
    pub(crate) client: HubClient,
    pub(crate) mirror: Option<Mirror>,
    pub(crate) emitter: ProgressEmitter,
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) download_slots: Arc<Semaphore>,
    pub(crate) range_slots: Arc<Semaphore>,
    in_flight: Mutex<HashMap<ModelId, Arc<tokio::sync::Mutex<()>>>>,
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
            range_slots: Arc::new(Semaphore::new(config.parallel.connections.max(1))),
            config,
            manifest,
            client,
            mirror,
            emitter: ProgressEmitter::new(),
            board: Arc::new(StatusBoard::default()),
            in_flight: Mutex::new(HashMap::new()),
        }
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

    /// How to fetch, from the configuration.
    pub(crate) fn fetch_settings(&self) -> FetchSettings {
        FetchSettings {
            retry_attempts: self.config.retry_attempts,
            retry_policy: self.config.retry_policy.clone(),
            progress_interval: self.config.progress_interval,
            parallel: self.config.parallel.clone(),
            range_slots: self.range_slots.clone(),
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
