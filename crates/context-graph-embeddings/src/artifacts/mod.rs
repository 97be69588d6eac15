//! Model artifacts: the manifest of model files, the Hugging Face cache they live in, and the
//! manager that downloads, verifies and reports them.
//!
//! The folders follow the data path, and the dependency rule points one way
//! (`docs/architecture.md`; checked by `tests/architecture.rs`):
//!
//! | part | owns |
//! |---|---|
//! | `manager` | the public [`ModelArtifactManager`]: the spec's API as thin delegations |
//! | `ensure/` | deciding what to do: local state and the readiness rule, the report, one model's steps, a batch |
//! | `transfer/` | one blob from a byte source into `blobs/<etag>`, verified: resume, one stream, parallel ranges, persist |
//! | `remote/` | talking to servers: the Hub protocol and client, byte sources, the S3 mirror, retry |
//! | `store/` | every file name in the cache: layout, snapshots and refs, stamps, locks, budget, clearing |
//! | leaves | `manifest`, `signature/` (OpenSSF model signatures: parse, verify, policy), `fileset`, `model_files`, `config`, `environment`, `progress`, `status`, `hash`, `ids`, `blocking`, `pinning`, `outdated`, `metrics`, `testing` |
//!
//! Modules are private; this list is the public surface.

mod blocking;
mod config;
mod ensure;
mod environment;
mod fileset;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod hash;
mod ids;
mod json;
mod manager;
mod manifest;
mod metrics;
mod model_files;
mod outdated;
mod pinning;
mod progress;
mod remote;
mod signature;
mod status;
mod store;
mod testing;
mod transfer;

pub use blocking::available_space;
pub use config::ArtifactManagerConfig;
pub use ensure::bundle::{BundleExport, BundleFile, BundleImport};
pub use ensure::local::HashSource;
pub use ensure::plan::{FileRole, SetOrigin};
pub use ensure::publish::{PushOptions, PushReport, PushedModel};
pub use ensure::readiness::{
    FileReadiness, ModelReadiness, ReadinessReport, ReadinessState, VerifiedModel, VerifyOutcome,
};
pub use environment::{implicit_token, read_token_file, EnvLookup, TokenSource};
pub use fileset::{matches_any, FileSelection, PinnedFile, Preset};
pub use hash::DigestKind;
pub use manager::ModelArtifactManager;
pub use manifest::{Manifest, ManifestEntry, ModelArtifact, SignaturePolicies, WeightFormat};
pub use metrics::{write_metrics_file, MetricsRecorder};
pub use outdated::{DriftState, FileChange, FileDrift, ModelDrift};
pub use pinning::{PinChange, PinOutcome};
pub use progress::{Outcome, ProgressEvent, ProgressKind};
pub use remote::fleet::FleetPolicy;
pub use remote::mirror::{Mirror, MirrorConfig};
pub use remote::oci::auth::RegistryCredentials;
pub use remote::oci::mirror::OciMirror;
pub use remote::oci::reference::{mirror_tag, OciReference};
pub use remote::retry::RetryPolicy;
pub use remote::source::{Body, BoxFuture, ByteSource, ChunkStream, Opened};
pub use signature::{
    verify_model_signature, SignatureMode, SignaturePolicy, SignatureVerifier, SignerPolicy,
    VerifiedSignature, DEFAULT_SIGNATURE_FILE, MAX_SIGNATURE_BYTES,
};
pub use status::DownloadStatus;
pub use store::budget::{EvictionCandidate, EvictionReport};
pub use store::stamp::UnrecordedStamps;
pub use transfer::adapt::ParallelSettings;

/// Internals the reliability and integration tests reach into (crash-safety checks of the
/// on-disk records); only in builds with the `failpoints` feature.
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub mod test_support {
    pub use super::environment::{CRASH_AT_ENV, NO_LOCKS_ENV};
    pub use super::hash::counted::times_hashed;
    pub use super::remote::client::pin_resolution;
    pub use super::store::layout::{sidecar_path, CacheLayout};
    pub use super::store::lock::{BlobLock, LockKind};
    pub use super::store::stamp::VerificationStamp;
    pub use super::transfer::partial::RangeProgress;
}
