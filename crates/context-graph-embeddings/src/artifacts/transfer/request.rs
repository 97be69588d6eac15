//! What a transfer is asked to do and what it returns: the blob, the bytes it must have, the
//! settings of one fetch. Shared by the single-stream and the ranged paths, so neither imports
//! the other.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::adapt::{ConnectionGovernor, ParallelSettings};
use crate::artifacts::hash::{ContentHasher, DigestKind};
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
    /// The digest the bytes must have.
    pub expected: ExpectedDigest,
    /// The size the bytes must have, when known (always known for a git blob id).
    pub expected_size: Option<u64>,
}

impl FetchRequest {
    /// A fresh running hash of the kind this request is checked with.
    pub(crate) fn hasher(&self) -> ContentHasher {
        ContentHasher::new(self.expected.kind(), self.expected_size)
    }
}

/// The digest a blob must have: LFS files by SHA-256, regular files by git blob SHA-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpectedDigest {
    /// SHA-256 of the content, lower-case hex.
    Sha256(String),
    /// Git blob id (SHA-1 over `blob <len>\0` and the content), lower-case hex.
    GitBlobSha1(String),
}

impl ExpectedDigest {
    /// The kind of digest.
    pub(crate) fn kind(&self) -> DigestKind {
        match self {
            ExpectedDigest::Sha256(_) => DigestKind::Sha256,
            ExpectedDigest::GitBlobSha1(_) => DigestKind::GitBlobSha1,
        }
    }

    /// The hex digest.
    pub(crate) fn hex(&self) -> &str {
        match self {
            ExpectedDigest::Sha256(h) | ExpectedDigest::GitBlobSha1(h) => h,
        }
    }

    /// Builds one from a kind and hex digest.
    pub(crate) fn new(kind: DigestKind, hex: String) -> Self {
        match kind {
            DigestKind::Sha256 => ExpectedDigest::Sha256(hex),
            DigestKind::GitBlobSha1 => ExpectedDigest::GitBlobSha1(hex),
        }
    }
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
    /// The connections of all downloads of one manager: how many may be open, learned from
    /// the throughput they give, so several large files at once do not multiply connections,
    /// buffers and CPU contention, and a link one stream fills gets no ranges it does not need.
    pub connections: Arc<ConnectionGovernor>,
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
