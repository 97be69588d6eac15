//! What a transfer is asked to do and what it returns: the blob, the bytes it must have, the
//! settings of one fetch. Shared by the single-stream and the ranged paths, so neither imports
//! the other.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

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

/// How one file is split and fetched in parallel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelSettings {
    /// Connections for one file (1 turns parallel download off).
    pub connections: usize,
    /// Smallest file fetched in parallel.
    pub min_file_bytes: u64,
    /// Smallest chunk; larger files get larger chunks (at most 1024 chunks per file).
    pub chunk_bytes: u64,
}

impl Default for ParallelSettings {
    fn default() -> Self {
        ParallelSettings {
            connections: 8,
            min_file_bytes: 32 * 1024 * 1024,
            chunk_bytes: 8 * 1024 * 1024,
        }
    }
}

impl ParallelSettings {
    /// Whether a file of `size` bytes is fetched in parallel.
    pub fn applies_to(&self, size: Option<u64>) -> bool {
        self.connections > 1
            && size.is_some_and(|s| s >= self.min_file_bytes && s > self.chunk_bytes)
    }

    /// The chunk size for a file of `size` bytes.
    pub fn chunk_for(&self, size: u64) -> u64 {
        self.chunk_bytes.max(size.div_ceil(1024)).max(1)
    }
}
