//! Progress events: typed, broadcast, never blocking.
//!
//! Contract: events of one model arrive in order (`FilesResolved` once its file set is known,
//! `Started`, `Progress`…, possibly `Retrying` and more `Progress`, `Verifying`, a
//! `FileReady` per file of the set, the weight file's last, then `Completed` or `Failed`;
//! the byte-level events are the weight file's: the small files of the set report only
//! retries, warnings and their `FileReady`), byte counts
//! never decrease except after a `Started` that restarts from zero, and nothing of that model
//! follows `Completed` or `Failed` for that download. Emitting never waits: a subscriber that
//! falls behind loses the oldest events (`RecvError::Lagged`) and never slows a download.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model_id::ModelId;

/// How many events a subscriber may fall behind before it loses the oldest.
pub(super) const PROGRESS_CHANNEL_CAPACITY: usize = 4096;

/// Progress event for download tracking. The spec's four fields are kept; `kind` says what
/// happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressEvent {
    /// The model.
    pub model_id: ModelId,
    /// Bytes of the file on disk so far (including resumed bytes).
    pub bytes_downloaded: u64,
    /// Size of the file (0 when not known yet).
    pub total_bytes: u64,
    /// Recent transfer speed, bytes per second.
    pub speed_bps: u64,
    /// What happened.
    pub kind: ProgressKind,
}

/// What a progress event reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProgressKind {
    /// A transfer begins; `resumed_from` bytes were already on disk and verified as a prefix.
    Started {
        /// Bytes kept from an earlier attempt.
        resumed_from: u64,
    },
    /// Bytes arrived.
    Progress,
    /// A transient failure; the next attempt follows after `delay_ms`.
    Retrying {
        /// The retry number (1 for the first retry).
        attempt: u32,
        /// The wait before it, milliseconds.
        delay_ms: u64,
        /// What failed.
        reason: String,
    },
    /// Another process is downloading the same file; waiting for its lock.
    WaitingForLock {
        /// The lock file.
        lock_path: PathBuf,
    },
    /// All bytes are in; the final checks run.
    Verifying,
    /// The model's file set is known (the weights and the files a loader needs beside them).
    FilesResolved {
        /// Files in the set, the weight file included.
        files: usize,
    },
    /// One file of the model's set is in place and verified (sent for every file, the
    /// weight file last, just before the model's `Completed`).
    FileReady {
        /// Path of the file in the repo.
        file: String,
        /// How it came to be there.
        outcome: Outcome,
        /// Bytes received over the network for it in this run.
        bytes_transferred: u64,
    },
    /// The file is in place and verified.
    Completed {
        /// The snapshot path.
        path: PathBuf,
        /// How the file came to be there.
        outcome: Outcome,
        /// Bytes received over the network for this file in this run.
        bytes_transferred: u64,
        /// Where the bytes came from (`hub`, the mirror object, `cache`); `None` when nothing
        /// was fetched.
        source: Option<String>,
    },
    /// Something the user should know that does not stop the download (a file system
    /// without locks, a corrupt cached blob fetched again, a failed mirror upload).
    Warning {
        /// The warning, one sentence.
        message: String,
    },
    /// A source failed; the next one (the Hub after a mirror) is tried.
    FallingBack {
        /// The source that failed.
        from: String,
        /// Why.
        reason: String,
    },
    /// The model could not be made ready.
    Failed {
        /// The error, as shown to users.
        error: String,
    },
}

/// How a model became ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Downloaded in full.
    Downloaded,
    /// Completed from a partial download of an earlier attempt or run.
    Resumed,
    /// The blob was already in the cache (another revision, another process, Python): only
    /// the snapshot entry was added.
    Reused,
    /// Already in place and verified; nothing was done.
    AlreadyPresent,
    /// Present, unverified, and now hashed and found right.
    Verified,
}

/// Sends events to the broadcast channel; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct ProgressEmitter {
    sender: broadcast::Sender<ProgressEvent>,
}

impl ProgressEmitter {
    /// A new channel.
    pub(super) fn new() -> Self {
        let (sender, _) = broadcast::channel(PROGRESS_CHANNEL_CAPACITY);
        ProgressEmitter { sender }
    }

    /// A new receiver of all events sent from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<ProgressEvent> {
        self.sender.subscribe()
    }

    /// Sends an event; never blocks, and having no subscriber is fine.
    pub(super) fn emit(&self, event: ProgressEvent) {
        let _ = self.sender.send(event);
    }
}

impl Default for ProgressEmitter {
    fn default() -> Self {
        Self::new()
    }
}

/// Throttles `Progress` events of one transfer and measures its speed.
#[derive(Debug)]
pub(super) struct ProgressMeter {
    interval: Duration,
    last_emit: Option<Instant>,
    last_bytes: u64,
    speed_bps: f64,
}

impl ProgressMeter {
    /// A meter emitting at most once per `interval`.
    pub(super) fn new(interval: Duration, start_bytes: u64) -> Self {
        ProgressMeter {
            interval,
            last_emit: None,
            last_bytes: start_bytes,
            speed_bps: 0.0,
        }
    }

    /// Returns the speed to report if an event is due at `now` with `bytes` on disk.
    pub(super) fn due(&mut self, now: Instant, bytes: u64) -> Option<u64> {
        let Some(last) = self.last_emit else {
            self.last_emit = Some(now);
            self.last_bytes = bytes;
            return None;
        };
        let elapsed = now.duration_since(last);
        if elapsed < self.interval {
            return None;
        }
        let instant_speed = bytes.saturating_sub(self.last_bytes) as f64 / elapsed.as_secs_f64();
        self.speed_bps = if self.speed_bps == 0.0 {
            instant_speed
        } else {
            0.7 * self.speed_bps + 0.3 * instant_speed
        };
        self.last_emit = Some(now);
        self.last_bytes = bytes;
        Some(self.speed_bps as u64)
    }

    /// The last measured speed.
    pub(super) fn speed(&self) -> u64 {
        self.speed_bps as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitting_without_subscribers_or_with_a_full_one_never_blocks() {
        let emitter = ProgressEmitter::new();
        let event = |bytes| ProgressEvent {
            model_id: ModelId::Entity,
            bytes_downloaded: bytes,
            total_bytes: 1,
            speed_bps: 0,
            kind: ProgressKind::Progress,
        };
        emitter.emit(event(0));
        let mut slow = emitter.subscribe();
        for i in 0..(PROGRESS_CHANNEL_CAPACITY as u64 * 3) {
            emitter.emit(event(i));
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }

    #[test]
    fn meter_throttles_and_measures() {
        let mut meter = ProgressMeter::new(Duration::from_millis(100), 0);
        let t0 = Instant::now();
        assert_eq!(meter.due(t0, 0), None);
        assert_eq!(meter.due(t0 + Duration::from_millis(50), 500), None);
        let speed = meter.due(t0 + Duration::from_millis(200), 2000).unwrap();
        assert_eq!(speed, 10_000);
    }

    #[test]
    fn events_serialise_with_a_tag() {
        let event = ProgressEvent {
            model_id: ModelId::Graph,
            bytes_downloaded: 5,
            total_bytes: 10,
            speed_bps: 1,
            kind: ProgressKind::Retrying {
                attempt: 1,
                delay_ms: 500,
                reason: "HTTP 503".to_owned(),
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"]["event"], "retrying");
        assert_eq!(json["model_id"], "Graph");
    }
}
