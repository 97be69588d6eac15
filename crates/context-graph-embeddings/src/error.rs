//! The crate's one error type. Each variant names what failed and carries what a user needs
//! to act on it: model, repo, revision, file, expected and actual values, and what to do next.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::model_id::ModelId;

/// Result alias used throughout the crate.
pub type EmbeddingResult<T> = Result<T, EmbeddingError>;

/// Where in the Hub a file lives; shown in errors so users can find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLocation {
    /// The model slot.
    pub model_id: ModelId,
    /// `org/name` on the Hub.
    pub repo_id: String,
    /// Branch, tag or commit asked for.
    pub revision: String,
    /// Path of the file inside the repo.
    pub filename: String,
}

impl fmt::Display for FileLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}@{}/{})",
            self.model_id, self.repo_id, self.revision, self.filename
        )
    }
}

/// What the Hub said when it refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRefusal {
    /// HTTP status code.
    pub status: u16,
    /// The Hub's `X-Error-Code`, e.g. `GatedRepo`, `RepoNotFound`.
    pub error_code: Option<String>,
    /// The Hub's `X-Error-Message` or JSON `error`.
    pub message: Option<String>,
    /// The URL, with any query string removed (signed CDN URLs carry credentials there).
    pub url: String,
}

impl fmt::Display for HubRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.error_code {
            write!(f, " {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        write!(f, " (from {})", self.url)
    }
}

/// Everything that can go wrong in the embedding crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingError {
    /// The manifest file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    ManifestRead {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("manifest {origin} is not valid: {reason}")]
    ManifestSyntax {
        /// Path of the manifest or `built-in manifest`.
        origin: String,
        /// What the JSON parser said.
        reason: String,
    },
    /// One manifest entry has a bad field.
    #[error("manifest {origin}, entry {entry}: field `{field}` {reason}")]
    ManifestEntry {
        /// Path of the manifest or `built-in manifest`.
        origin: String,
        /// The entry, as `#index (model_id)`.
        entry: String,
        /// The offending field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Models required by the pipeline are not on disk (or not verified).
    #[error("models not ready: {}; run `cg-models ensure` (or enable auto_download) to fetch and verify them", join_models(.0))]
    MissingModels(Vec<ModelId>),
    /// A model was asked for that the manifest has no downloadable artifact for.
    #[error("model {0} has no downloadable artifact in the manifest (it is built-in or absent)")]
    NotAnArtifact(ModelId),
    /// Offline mode is on and the file is not in the cache.
    #[error("{location} is not in the cache and offline mode is on (HF_HUB_OFFLINE or --offline); go online once to fetch it")]
    OfflineMissing {
        /// The file.
        location: FileLocation,
    },
    /// A file of a model's set is not in the cache.
    #[error("{location} is not in the cache; run `cg-models ensure` to fetch it")]
    FileMissing {
        /// The file.
        location: FileLocation,
    },
    /// Nothing without the Hub says which files make up the model at its commit.
    #[error("{location}: which files make up the model at commit {commit} is not known without the Hub (no set locked in the manifest or recorded by cg-models, no trees/{commit}.json, no snapshot folder); run `cg-models ensure` online once, or lock the manifest (`cg-models lock`)")]
    SetUnknown {
        /// The model's weight file.
        location: FileLocation,
        /// The commit its revision resolves to in the cache.
        commit: String,
    },
    /// A snapshot entry (or a folder above it) is a link that leaves the cache, or not a
    /// regular file: its bytes are not the cache's and were not read.
    #[error("{location}: {path} is a link that leaves the cache (or not a regular file); it was not read. `cg-models ensure` replaces it with a verified entry where the cache is writable")]
    ForeignEntry {
        /// The file of the set.
        location: FileLocation,
        /// The link (or entry) found.
        path: PathBuf,
    },
    /// A present file cannot be checked: nothing says what its bytes must be.
    #[error("{location}: {path} cannot be verified without the Hub: no digest is known for it (no pin, no blob link, no tree listing); run `cg-models ensure` online once, or lock the manifest (`cg-models lock`)")]
    NoDigestKnown {
        /// The file.
        location: FileLocation,
        /// The snapshot entry.
        path: PathBuf,
    },
    /// The repository does not exist or is private.
    #[error("{location}: repository not found on the Hub ({refusal}); check the repo_id, or give a token if it is private (HF_TOKEN, --token)")]
    RepoNotFound {
        /// The file.
        location: FileLocation,
        /// The Hub's answer.
        refusal: HubRefusal,
    },
    /// The revision (branch, tag, commit) does not exist.
    #[error("{location}: revision `{}` not found on the Hub ({refusal})", .location.revision)]
    RevisionNotFound {
        /// The file.
        location: FileLocation,
        /// The Hub's answer.
        refusal: HubRefusal,
    },
    /// The file does not exist at that revision.
    #[error("{location}: file not found at that revision ({refusal})")]
    EntryNotFound {
        /// The file.
        location: FileLocation,
        /// The Hub's answer.
        refusal: HubRefusal,
    },
    /// The repository is gated and the token is missing or lacks access.
    #[error("{location}: gated repository ({refusal}); accept its terms on {repo_page}, then give a token with access via HF_TOKEN, the token file ($HF_HOME/token) or --token")]
    GatedRepo {
        /// The file.
        location: FileLocation,
        /// The Hub's answer.
        refusal: HubRefusal,
        /// Whether a token was sent.
        token_sent: bool,
        /// The repo's page on the Hub, where its terms are accepted.
        repo_page: String,
    },
    /// The Hub refused with a status that retrying cannot fix (401, 403, 4xx).
    #[error("{location}: the Hub refused the request ({refusal})")]
    HubRefused {
        /// The file.
        location: FileLocation,
        /// The Hub's answer.
        refusal: HubRefusal,
    },
    /// The server kept failing with transient errors until the retries ran out.
    #[error("{location}: gave up after {attempts} attempt(s); last error: {last}")]
    RetriesExhausted {
        /// The file.
        location: FileLocation,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<EmbeddingError>,
    },
    /// A transient HTTP status (408, 429, 5xx).
    #[error("server busy or failing: {refusal}")]
    TransientStatus {
        /// The answer.
        refusal: HubRefusal,
        /// What `Retry-After` or `RateLimit` asked for.
        retry_after: Option<Duration>,
    },
    /// The connection failed, was reset, or the body ended early.
    #[error("network error talking to {url}: {message} (check the connection and any proxy in HTTPS_PROXY; a Hub mirror goes in HF_ENDPOINT or --endpoint)")]
    Network {
        /// URL without query string.
        url: String,
        /// What failed.
        message: String,
    },
    /// A host that never answered in this run could not be connected to, several times in a
    /// row (name not resolved, connection refused or timed out): given up for every model.
    #[error("cannot reach {host}: {reason} (no connection to it succeeded in this run). Check the network connection and any proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY); to use a Hub mirror set HF_ENDPOINT or --endpoint; with --offline (HF_HUB_OFFLINE=1) the models already in the cache are used without the network")]
    HostUnreachable {
        /// `scheme://host[:port]` of the server.
        host: String,
        /// Failed connection attempts.
        attempts: u32,
        /// The last connection error.
        reason: String,
    },
    /// The TLS handshake failed because the server's certificate is not trusted.
    #[error("TLS certificate of {url} not trusted: {reason}: {message}. If a proxy or mirror of your organisation signs with its own CA, give that CA as a PEM file: SSL_CERT_FILE, SSL_CERT_DIR, CG_MODELS_CA_BUNDLE or --ca-bundle (verification is never turned off)")]
    UntrustedCertificate {
        /// URL without query string.
        url: String,
        /// What was wrong, in words.
        reason: &'static str,
        /// The TLS library's message.
        message: String,
    },
    /// The server's answer cannot be used for this attempt (a range that does not match, an
    /// HTML page instead of the file, a body shorter or longer than announced); retried.
    #[error("unusable answer from {url}: {reason}")]
    BadResponse {
        /// URL without query string.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The mirror does not hold the object.
    #[error("{url} is not in the mirror")]
    MirrorMissing {
        /// The object.
        url: String,
    },
    /// The mirror failed (unreachable, refusing, throttling beyond its retries).
    #[error("mirror {url} failed: {message}")]
    Mirror {
        /// The object.
        url: String,
        /// What failed.
        message: String,
    },
    /// An OCI registry refused or failed a request (push, pull, credentials), or sent
    /// something that is not a usable manifest.
    #[error("registry {reference}: {message}")]
    Registry {
        /// The repository (`oci://host/repo[:tag]`), or the object (`…@sha256:…`).
        reference: String,
        /// What failed and what to do.
        message: String,
    },
    /// No byte arrived for longer than the idle timeout.
    #[error("no data from {url} for {:.0?} (idle timeout; raise download_timeout or HF_HUB_DOWNLOAD_TIMEOUT on slow links)", .idle)]
    IdleTimeout {
        /// URL without query string.
        url: String,
        /// The idle time limit.
        idle: Duration,
    },
    /// The server's answer broke the protocol (missing header, bad range, redirect loop, HTML page).
    #[error("{location}: unexpected answer from the server: {reason}")]
    Protocol {
        /// The file.
        location: FileLocation,
        /// What was wrong.
        reason: String,
    },
    /// The manifest pins a value that disagrees with what the Hub advertises.
    #[error("{location}: the manifest pins {field} {pinned} but the Hub advertises {advertised}; nothing was downloaded. If the Hub is right, re-pin with `cg-models lock --force`")]
    PinMismatch {
        /// The file.
        location: FileLocation,
        /// `sha256` or `size`.
        field: &'static str,
        /// The manifest's value.
        pinned: String,
        /// The Hub's value.
        advertised: String,
    },
    /// Neither the manifest nor the Hub gives a SHA-256 for the file, so it cannot be verified.
    #[error("{location}: no SHA-256 is known (the manifest has none and the Hub sent no X-Linked-Etag); pin it in the manifest to download it")]
    NoExpectedHash {
        /// The file.
        location: FileLocation,
    },
    /// The downloaded or cached bytes do not have the expected digest (SHA-256, or the git
    /// blob SHA-1 of a regular file).
    #[error("{location}: {} mismatch in {path}: expected {expected}, got {actual}; the file was not used", digest_name(.expected))]
    HashMismatch {
        /// The file.
        location: FileLocation,
        /// The file checked.
        path: PathBuf,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// The downloaded or cached bytes do not have the expected size.
    #[error("{location}: size mismatch in {path}: expected {expected} bytes, got {actual}; the file was not used")]
    SizeMismatch {
        /// The file.
        location: FileLocation,
        /// The file checked.
        path: PathBuf,
        /// Expected size in bytes.
        expected: u64,
        /// Actual size in bytes.
        actual: u64,
    },
    /// The batch does not fit under the configured cache size limit.
    #[error("cache limit exceeded: the cache holds {current} bytes, the missing models need {needed} more, the limit is {limit} bytes and only {evictable} bytes could be evicted; raise max_cache_bytes (--max-cache-size) or clear other models")]
    CacheLimitExceeded {
        /// Bytes still to download.
        needed: u64,
        /// The limit.
        limit: u64,
        /// Bytes in the cache now.
        current: u64,
        /// Bytes that eviction could free.
        evictable: u64,
    },
    /// The disk has less free space than the batch needs.
    #[error("not enough disk space in {path}: need {needed} bytes, {available} bytes free; free some space or point the cache elsewhere (HF_HUB_CACHE, --cache-dir)")]
    InsufficientDisk {
        /// The cache directory.
        path: PathBuf,
        /// Bytes still to download.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The cache would have to be written to (a download, a snapshot link, a lock), but it is
    /// on a read-only file system.
    #[error("the cache is read-only ({path} is on a read-only file system) and a model is missing or must be fetched again; fill the cache where it is writable (a Job or init container running `cg-models ensure`) and mount it read-only afterwards, or point --cache-dir / HF_HUB_CACHE at a writable folder")]
    ReadOnlyCache {
        /// The read-only path that would have been written.
        path: PathBuf,
    },
    /// The cache would have to be written to, but this user may not write there (a cache
    /// filled by another user, a volume without the right group).
    #[error("this user may not write to the cache ({path}: permission denied) and a model is missing or must be fetched again; run `cg-models ensure` as the user that owns the cache, give this user write access (on Kubernetes: the pod's fsGroup), or point --cache-dir / HF_HUB_CACHE at a folder this user can write")]
    CacheNotWritable {
        /// The path this user may not write.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `cannot write`.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Some models of a batch failed; the others completed.
    #[error("{} of the requested models failed:{}", .0.len(), format_failures(.0))]
    DownloadsFailed(Vec<(ModelId, EmbeddingError)>),
    /// The safetensors file is malformed.
    #[error("{path}: invalid safetensors file: {reason}")]
    InvalidSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A verified model's file cannot be used: a `.json` file that does not parse, a
    /// `tokenizer.json` that does not load, or a file the registry was handed that is not in
    /// the model's snapshot folder of an artifact cache.
    #[error("{model_id}: cannot use {path}: {reason}")]
    InvalidModelFile {
        /// The model.
        model_id: ModelId,
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// A bundle cannot be exported or imported: unreadable, truncated, tampered with, or made
    /// for another manifest. Nothing of it is placed in the cache's snapshots.
    #[error("bundle {path}: {reason}")]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A model signature file is not a usable OpenSSF model signature.
    #[error("signature {signature} is not a valid OpenSSF model signature: {reason}")]
    SignatureFormat {
        /// Path of the signature in the repo (`model.sig`).
        signature: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A model signature made in a way we do not check (keyless Sigstore, shards, BLAKE2).
    #[error("signature {signature} cannot be checked: {reason}")]
    SignatureUnsupported {
        /// Path of the signature in the repo.
        signature: String,
        /// What it is and how to sign instead.
        reason: String,
    },
    /// The policy requires a signature and the repo has none at the revision.
    #[error("signature {signature} is required by the signature policy, but the repo has no such file at this revision; sign the model with the official tool (docs/signatures.md) or set the policy's mode to if-present")]
    SignatureMissing {
        /// Path of the signature in the repo.
        signature: String,
    },
    /// The policy's public key or root certificate cannot be used.
    #[error("signature policy: cannot use {source_name}: {reason}")]
    SignatureTrustMaterial {
        /// The key or root file.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signature was made by someone other than the signer the policy trusts.
    #[error("signature {signature} was not made by the trusted signer ({expected}): {reason}")]
    SignatureWrongSigner {
        /// Path of the signature in the repo.
        signature: String,
        /// The signer the policy trusts.
        expected: String,
        /// What the signature says instead.
        reason: String,
    },
    /// The DSSE signature does not verify under the trusted key or certificate.
    #[error("signature {signature} does not verify under {signer}: the signed statement was changed after signing, or another key signed it")]
    SignatureBadSignature {
        /// Path of the signature in the repo.
        signature: String,
        /// The key or certificate it was checked under.
        signer: String,
    },
    /// The signing certificate does not chain to the trusted root.
    #[error(
        "signature {signature}: its certificate is not trusted under the root in {root}: {reason}"
    )]
    SignatureUntrustedCertificate {
        /// Path of the signature in the repo.
        signature: String,
        /// The root file of the policy.
        root: String,
        /// Which certificate failed and why.
        reason: String,
    },
    /// The signing certificate chains to the root but names another identity.
    #[error("signature {signature}: the signing certificate names {}, not the identity `{expected}` the policy requires", join_names(.found))]
    SignatureIdentityMismatch {
        /// Path of the signature in the repo.
        signature: String,
        /// The identity the policy requires.
        expected: String,
        /// The names the certificate carries.
        found: Vec<String>,
    },
    /// A file of the set does not have the digest the signature lists for it.
    #[error("{path}: SHA-256 {actual}, but the signature by {signer} lists {signed}; the file is not the one that was signed")]
    SignatureDigestMismatch {
        /// Path of the file in the repo.
        path: String,
        /// The digest the signature lists.
        signed: String,
        /// The digest we computed.
        actual: String,
        /// Who signed.
        signer: String,
    },
    /// A file of the set is not in the signature.
    #[error("{path} is not listed in the signature by {signer}; a file the signer did not sign is not used")]
    SignatureUnlistedFile {
        /// Path of the file in the repo.
        path: String,
        /// Who signed.
        signer: String,
    },
}

impl EmbeddingError {
    /// Builds an [`EmbeddingError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EmbeddingError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A failed write into a download: "disk full while writing" when the disk is full (so the
    /// user knows what to free), else "cannot write".
    pub(crate) fn write_failed(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let action = if is_disk_full_io(&source) {
            "disk full while writing"
        } else {
            "cannot write"
        };
        EmbeddingError::io(action, path, source)
    }

    /// [`EmbeddingError::ReadOnlyCache`] for a write that failed because the file system is
    /// read-only, [`EmbeddingError::CacheNotWritable`] for one this user may not make
    /// (directly or as the last error of a retried attempt); any other error as is.
    pub(crate) fn read_only_named(self) -> Self {
        match self {
            EmbeddingError::Io { path, source, .. }
                if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
            {
                EmbeddingError::ReadOnlyCache { path }
            }
            EmbeddingError::Io { path, source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                EmbeddingError::CacheNotWritable { path }
            }
            EmbeddingError::RetriesExhausted { last, .. } if last.is_read_only() => {
                (*last).read_only_named()
            }
            other => other,
        }
    }

    fn is_read_only(&self) -> bool {
        match self {
            EmbeddingError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            ),
            EmbeddingError::RetriesExhausted { last, .. } => last.is_read_only(),
            _ => false,
        }
    }

    /// Whether retrying the same request could succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            EmbeddingError::TransientStatus { .. }
            | EmbeddingError::Network { .. }
            | EmbeddingError::BadResponse { .. }
            | EmbeddingError::IdleTimeout { .. } => true,
            EmbeddingError::RetriesExhausted { .. } => false,
            _ => false,
        }
    }

    /// Whether the error says the disk is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            EmbeddingError::InsufficientDisk { .. } => true,
            EmbeddingError::Io { source, .. } => is_disk_full_io(source),
            EmbeddingError::RetriesExhausted { last, .. } => last.is_disk_full(),
            _ => false,
        }
    }
}

/// Whether an I/O error means "no space left on device" or "quota exceeded".
pub(crate) fn is_disk_full_io(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The name of a digest by its length, for messages.
fn digest_name(expected: &str) -> &'static str {
    if expected.len() == 40 {
        "git blob SHA-1"
    } else {
        "SHA-256"
    }
}

fn join_names(names: &[String]) -> String {
    if names.is_empty() {
        return "no name".to_owned();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_models(models: &[ModelId]) -> String {
    models
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_failures(failures: &[(ModelId, EmbeddingError)]) -> String {
    // Models that failed for the very same reason (an unreachable Hub) share one line.
    let mut groups: Vec<(Vec<ModelId>, String)> = Vec::new();
    for (model, error) in failures {
        let text = error.to_string();
        // Most errors name their model first already; do not say it twice.
        if text.starts_with(model.as_str()) {
            groups.push((Vec::new(), text));
            continue;
        }
        match groups
            .iter_mut()
            .find(|(models, t)| !models.is_empty() && *t == text)
        {
            Some((models, _)) => models.push(*model),
            None => groups.push((vec![*model], text)),
        }
    }
    groups
        .iter()
        .map(|(models, text)| {
            if models.is_empty() {
                format!("\n  - {text}")
            } else {
                format!("\n  - {}: {text}", join_models(models))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_refused_by_a_read_only_file_system_names_the_path_once() {
        let read_only = || {
            EmbeddingError::io(
                "cannot open lock",
                "/models/hub/.locks/x.lock",
                std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
            )
        };
        let named = read_only().read_only_named();
        assert!(
            matches!(&named, EmbeddingError::ReadOnlyCache { path } if path == std::path::Path::new("/models/hub/.locks/x.lock")),
            "{named:?}"
        );
        let text = named.to_string();
        assert!(text.contains("(/models/hub/.locks/x.lock is on a read-only file system)"));
        assert!(text.contains("cg-models ensure"));
        let retried = EmbeddingError::RetriesExhausted {
            location: FileLocation {
                model_id: ModelId::Entity,
                repo_id: "o/n".to_owned(),
                revision: "main".to_owned(),
                filename: "f".to_owned(),
            },
            attempts: 2,
            last: Box::new(read_only()),
        };
        assert!(matches!(
            retried.read_only_named(),
            EmbeddingError::ReadOnlyCache { .. }
        ));
        let denied = EmbeddingError::io(
            "cannot write",
            "/x",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        let named = denied.read_only_named();
        assert!(
            matches!(&named, EmbeddingError::CacheNotWritable { path } if path == std::path::Path::new("/x")),
            "{named:?}"
        );
        assert!(named.to_string().contains("(/x: permission denied)"));
        let other = EmbeddingError::io(
            "cannot write",
            "/x",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert!(matches!(other.read_only_named(), EmbeddingError::Io { .. }));
    }
}
