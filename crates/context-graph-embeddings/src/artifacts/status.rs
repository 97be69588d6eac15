//! What this process knows of each model's download, and the one way to report it: a
//! [`ModelEvents`] handle per model that updates the status board and emits the progress
//! event in one call, so the two can never disagree and the transfer never calls back into the
//! manager.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::progress::{Outcome, ProgressEmitter, ProgressEvent, ProgressKind};
use crate::error::EmbeddingError;
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

/// One wait before a retry, as the `Retrying` event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The retry number since the last progress (1 for the first retry).
    pub(crate) attempt: u32,
    /// How long to wait.
    pub(crate) delay: Duration,
    /// What failed, as shown to users.
    pub(crate) reason: String,
}

/// The download status of every model in this process.
#[derive(Debug, Default)]
pub(crate) struct StatusBoard {
    map: RwLock<HashMap<ModelId, DownloadStatus>>,
}

impl StatusBoard {
    /// The status of one model (`NotStarted` when nothing happened yet).
    pub(crate) fn get(&self, model_id: ModelId) -> DownloadStatus {
        self.map
            .read()
            .ok()
            .and_then(|map| map.get(&model_id).cloned())
            .unwrap_or(DownloadStatus::NotStarted)
    }

    /// Records a model's status.
    pub(crate) fn set(&self, model_id: ModelId, status: DownloadStatus) {
        if let Ok(mut map) = self.map.write() {
            map.insert(model_id, status);
        }
    }

    /// Forgets every status (after the manifest was reloaded).
    pub(crate) fn clear(&self) {
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }

    /// The error of a model whose last attempt failed.
    pub(crate) fn failure(&self, model_id: ModelId) -> Option<String> {
        match self.get(model_id) {
            DownloadStatus::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Where a model's events go: the status board and the progress channel, updated together.
/// Cheap to clone; the transfer gets one instead of a callback.
#[derive(Debug, Clone)]
pub(crate) struct ModelEvents {
    model_id: ModelId,
    emitter: ProgressEmitter,
    board: Arc<StatusBoard>,
    /// A file of the model's set other than the weights: its byte counts neither reach
    /// the board nor the channel (they would make the model's progress jump), only retries,
    /// warnings and its `FileReady`.
    quiet: bool,
}

impl ModelEvents {
    /// The handle of one model.
    pub(crate) fn new(
        model_id: ModelId,
        emitter: &ProgressEmitter,
        board: &Arc<StatusBoard>,
    ) -> Self {
        ModelEvents {
            model_id,
            emitter: emitter.clone(),
            board: board.clone(),
            quiet: false,
        }
    }

    /// The model these events are about.
    pub(crate) fn model_id(&self) -> ModelId {
        self.model_id
    }

    /// The handle for a file of the model's set other than the weights (see `quiet`).
    pub(crate) fn for_other_file(&self) -> Self {
        ModelEvents {
            quiet: true,
            ..self.clone()
        }
    }

    /// The model's file set is known: `files` files (the weights included).
    pub(crate) fn files_resolved(&self, files: usize, total_bytes: u64) {
        self.emit(0, total_bytes, 0, ProgressKind::FilesResolved { files });
    }

    /// One file of the set is in place and verified.
    pub(crate) fn file_ready(&self, file: &str, size: u64, outcome: Outcome, transferred: u64) {
        self.emit(
            size,
            size,
            0,
            ProgressKind::FileReady {
                file: file.to_owned(),
                outcome,
                bytes_transferred: transferred,
            },
        );
    }

    fn emit(&self, bytes: u64, total: u64, speed_bps: u64, kind: ProgressKind) {
        let byte_level = matches!(
            kind,
            ProgressKind::Started { .. } | ProgressKind::Progress | ProgressKind::Verifying
        );
        if self.quiet && byte_level {
            return;
        }
        let (bytes, total) = if self.quiet && !matches!(kind, ProgressKind::FileReady { .. }) {
            (0, 0)
        } else {
            (bytes, total)
        };
        self.emitter.emit(ProgressEvent {
            model_id: self.model_id,
            bytes_downloaded: bytes,
            total_bytes: total,
            speed_bps,
            kind,
        });
    }

    fn in_progress(&self, bytes: u64, total: u64) {
        if self.quiet {
            return;
        }
        self.board.set(
            self.model_id,
            DownloadStatus::InProgress {
                bytes_downloaded: bytes,
                total_bytes: total,
            },
        );
    }

    /// A download slot was taken; nothing is on disk yet as far as this process knows.
    pub(crate) fn queued(&self, total: u64) {
        self.in_progress(0, total);
    }

    /// A transfer begins with `bytes` on disk, `resumed_from` of them kept from before.
    pub(crate) fn started(&self, bytes: u64, total: u64, resumed_from: u64) {
        self.in_progress(bytes, total);
        self.emit(bytes, total, 0, ProgressKind::Started { resumed_from });
    }

    /// Bytes arrived.
    pub(crate) fn progress(&self, bytes: u64, total: u64, speed_bps: u64) {
        self.in_progress(bytes, total);
        self.emit(bytes, total, speed_bps, ProgressKind::Progress);
    }

    /// A transient failure; the retry follows after the backoff.
    pub(crate) fn retrying(&self, bytes: u64, total: u64, backoff: &Backoff) {
        tracing::info!(model = %self.model_id, retry = backoff.attempt, delay_ms = backoff.delay.as_millis() as u64, reason = %backoff.reason, "retrying download");
        self.emit(
            bytes,
            total,
            0,
            ProgressKind::Retrying {
                attempt: backoff.attempt,
                delay_ms: u64::try_from(backoff.delay.as_millis()).unwrap_or(u64::MAX),
                reason: backoff.reason.clone(),
            },
        );
    }

    /// All bytes are in; the final checks run.
    pub(crate) fn verifying(&self, bytes: u64, total: u64) {
        self.emit(bytes, total, 0, ProgressKind::Verifying);
    }

    /// Another process holds the blob's lock.
    pub(crate) fn waiting_for_lock(&self, total: u64, lock_path: &Path) {
        self.emit(
            0,
            total,
            0,
            ProgressKind::WaitingForLock {
                lock_path: lock_path.to_path_buf(),
            },
        );
    }

    /// Something the user should know that does not stop the download: a log line and an
    /// event.
    pub(crate) fn warning(&self, message: String) {
        tracing::warn!(model = %self.model_id, "{message}");
        self.emit(0, 0, 0, ProgressKind::Warning { message });
    }

    /// A source failed; the next one is tried.
    pub(crate) fn falling_back(&self, total: u64, from: String, reason: String) {
        tracing::warn!(model = %self.model_id, %from, %reason, "source failed; trying the next one");
        self.emit(0, total, 0, ProgressKind::FallingBack { from, reason });
    }

    /// A fleet step (see [`ProgressKind::FetchingForFleet`] and the three after it).
    pub(crate) fn fleet(&self, done: u64, total: u64, kind: ProgressKind) {
        tracing::info!(model = %self.model_id, event = ?kind, "fleet");
        self.emit(done, total, 0, kind);
    }

    /// The file is in place and verified (`size` bytes).
    pub(crate) fn completed(
        &self,
        path: &Path,
        size: u64,
        outcome: Outcome,
        bytes_transferred: u64,
        source: Option<String>,
    ) {
        self.board.set(
            self.model_id,
            DownloadStatus::Completed {
                path: path.to_path_buf(),
                verified: true,
            },
        );
        self.emit(
            size,
            size,
            0,
            ProgressKind::Completed {
                path: path.to_path_buf(),
                outcome,
                bytes_transferred,
                source,
            },
        );
    }

    /// The model could not be made ready: the status says so first, then the event.
    pub(crate) fn failed(&self, error: &EmbeddingError, total: u64) {
        self.marked_failed(error);
        self.emit(
            0,
            total,
            0,
            ProgressKind::Failed {
                error: error.to_string(),
            },
        );
    }

    /// Records a failure without an event (a check that found a file wrong; what happens next
    /// is reported by whoever acts on it).
    pub(crate) fn marked_failed(&self, error: &EmbeddingError) {
        let retries = match error {
            EmbeddingError::RetriesExhausted { attempts, .. } => attempts.saturating_sub(1),
            _ => 0,
        };
        self.board.set(
            self.model_id,
            DownloadStatus::Failed {
                error: error.to_string(),
                retries,
            },
        );
    }

    /// Forgets what happened (after the model's files were removed).
    pub(crate) fn reset(&self) {
        self.board.set(self.model_id, DownloadStatus::NotStarted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_report_updates_the_board_and_the_channel_together() {
        let emitter = ProgressEmitter::new();
        let mut events = emitter.subscribe();
        let board = Arc::new(StatusBoard::default());
        let model = ModelEvents::new(ModelId::Entity, &emitter, &board);
        model.started(10, 100, 10);
        assert_eq!(
            board.get(ModelId::Entity),
            DownloadStatus::InProgress {
                bytes_downloaded: 10,
                total_bytes: 100
            }
        );
        model.progress(50, 100, 7);
        let error = EmbeddingError::Config("boom".to_owned());
        model.failed(&error, 100);
        assert_eq!(
            board.failure(ModelId::Entity).as_deref(),
            Some(error.to_string().as_str())
        );
        let kinds: Vec<ProgressKind> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                ProgressKind::Started { resumed_from: 10 },
                ProgressKind::Progress,
                ProgressKind::Failed {
                    error: error.to_string()
                }
            ]
        );
        model.completed(Path::new("/c/x"), 100, Outcome::Downloaded, 90, None);
        assert!(matches!(
            board.get(ModelId::Entity),
            DownloadStatus::Completed { verified: true, .. }
        ));
    }
}
