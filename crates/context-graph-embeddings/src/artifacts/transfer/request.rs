//! What a transfer is asked to do and what it returns: the blob, the bytes it must have, the
//! settings of one fetch. Shared by the single-stream and the ranged paths, so neither imports
//! the other.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::artifacts::config::ParallelSettings;
use crate::artifacts::remote::retry::RetryPolicy;
use crate::error::FileLocation;

/// What to fetch.
#[derive(Debug, Clone)]
pub(crate) struct FetchRequest {
    /// The file, for messages and events.
    pub location: FileLocation,
    /// The repo's `blobs/` folder.
    pub blobs_dir: PathBuf,
    /// The blob name.
    pub etag: String,
    /// The SHA-256 the bytes must have.
    pub expected_sha256: String,
    /// The size the bytes must have, when known.
    pub expected_size: Option<u64>,
}

/// How to fetch.
#[derive(Debug, Clone)]
pub(crate) struct FetchSettings {
    /// Retries per stretch without progress.
    pub retry_attempts: u32,
    /// Backoff schedule.
    pub retry_policy: RetryPolicy,
    /// Smallest interval between progress events.
    pub progress_interval: Duration,
    /// Parallel ranged download of large files.
    pub parallel: ParallelSettings,
    /// Range connections shared by all parallel downloads of one manager, so several large
    /// files at once do not multiply connections, buffers and CPU contention.
    pub range_slots: Arc<Semaphore>,
}

/// A fetched, verified blob.
#[derive(Debug, Clone)]
pub(crate) struct FetchedBlob {
    /// Where it is now.
    pub blob_path: PathBuf,
    /// Bytes received over the network.
    pub transferred: u64,
    /// Bytes reused from an earlier partial download.
    pub resumed_from: u64,
}
