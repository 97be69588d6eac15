//! Model artifacts: the manifest of weight files, the Hugging Face cache they live in, and
//! the manager that downloads, verifies and reports them.
//!
//! | module | owns |
//! |---|---|
//! | [`manifest`] | the manifest format and its validation |
//! | [`manager`] | the public [`ModelArtifactManager`]: ensure, status, readiness, clear, limits |
//! | [`downloader`] | streaming one blob: resume, retries, hashing, atomic placement |
//! | [`ranged`] | parallel ranged download of one large file |
//! | [`source`] | where blob bytes are read from (the Hub, a mirror) |
//! | [`verification`] | SHA-256 of files and verification stamps |
//! | [`hub`] | the Hub's HTTP protocol and error codes |
//! | [`cache`] | the Hugging Face cache layout |
//! | [`lock`] | cross-process blob locks compatible with `huggingface_hub` |
//! | [`mirror`] | a content-addressed pull-through mirror on S3-compatible storage |
//! | [`pinning`] | filling a manifest's pins from the Hub |
//! | [`eviction`] | the cache size limit and LRU eviction |
//! | [`failpoint`] | crash points for crash-safety tests |
//! | [`retry`] | retry policy and failure classification |
//! | [`progress`] | typed progress events |
//! | [`environment`] | `HF_*` environment variables |
//! | [`config`] | [`ArtifactManagerConfig`] |

pub mod cache;
pub mod config;
pub mod downloader;
pub mod environment;
pub mod eviction;
pub mod failpoint;
pub mod hub;
pub mod lock;
pub mod manager;
pub mod manifest;
pub mod mirror;
pub mod pinning;
pub mod progress;
pub mod ranged;
pub mod retry;
pub mod source;
pub mod verification;

pub use config::ArtifactManagerConfig;
pub use eviction::{EvictionCandidate, EvictionReport};
pub use manager::{
    available_space, DownloadStatus, HashSource, ModelArtifactManager, ModelReadiness,
    ReadinessReport, ReadinessState, VerifyOutcome,
};
pub use manifest::{Manifest, ManifestEntry, ModelArtifact, WeightFormat};
pub use mirror::{Mirror, MirrorConfig};
pub use pinning::{PinChange, PinOutcome};
pub use progress::{Outcome, ProgressEvent, ProgressKind};
pub use ranged::ParallelSettings;
pub use retry::RetryPolicy;
