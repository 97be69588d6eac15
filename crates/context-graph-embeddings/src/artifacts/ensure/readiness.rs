//! The readiness report (from metadata and stamps only: no hashing, no network), the
//! verified models handed to the registry, and the one verification by hashing: any planned
//! file against its digest ([`verify_file`]), shared by `status`, `verify`, `ensure` and the
//! reuse of files others placed; for several models, every file on all cores, largest first.
//! A model that is not ready always says which file and why (missing, a link out of the cache,
//! a digest, a set nothing local describes).
//!
//! On a cache where stamps cannot be written (a read-only mount), a file that hashes right is
//! still verified: the verdict is kept in memory for the process and one notice
//! ([`UnrecordedStamps`]) says what that costs.

use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::context::Context;
use super::local::SignatureState;
use super::local::{
    expected_hash, inspect, inspect_async, Entry, FileState, HashSource, LocalState,
};
use super::plan::{FileRole, SetOrigin};
use super::signed::check_signature;
use crate::artifacts::blocking::{run_blocking, run_blocking_checked};
use crate::artifacts::hash::{hash_file_as, hash_file_dual, DigestKind};
use crate::artifacts::manifest::{ManifestEntry, ModelArtifact, WeightFormat};
use crate::artifacts::store::fs::remove_entry;
use crate::artifacts::store::stamp::{UnrecordedStamps, VerificationStamp};
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// The readiness of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessState {
    /// Computed in-process; always ready.
    Builtin,
    /// On disk and verified.
    Ready,
    /// On disk, but not (or no longer) verified: `verify` or `ensure` hashes it.
    Unverified,
    /// Not on disk (maybe partly downloaded).
    Missing,
    /// The last attempt in this process failed.
    Failed,
}

/// Readiness details of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelReadiness {
    /// The model.
    pub model_id: ModelId,
    /// Its state.
    pub state: ReadinessState,
    /// Hub repo (none for built-ins).
    pub repo_id: Option<String>,
    /// File in the repo.
    pub filename: Option<String>,
    /// Revision asked for.
    pub revision: Option<String>,
    /// Commit of the cached snapshot, when known.
    pub commit: Option<String>,
    /// Snapshot path, when on disk.
    pub path: Option<PathBuf>,
    /// Size in bytes (pinned, or of the verified file).
    pub size_bytes: Option<u64>,
    /// Expected SHA-256, when known.
    pub expected_sha256: Option<String>,
    /// Where the expected hash comes from.
    pub hash_source: HashSource,
    /// Weight format (the safetensors check applies only to safetensors).
    pub format: Option<WeightFormat>,
    /// Bytes of an unfinished download on disk.
    pub partial_bytes: u64,
    /// The error of a failed model.
    pub error: Option<String>,
    /// Where the verified file came from (`hub`, the mirror object, `cache`), when recorded.
    pub source: Option<String>,
    /// The snapshot folder a loader opens (the commit's folder), when the commit is known.
    pub snapshot_dir: Option<PathBuf>,
    /// Every file of the model's set, the weight file first; empty for built-ins. When the
    /// set was never resolved at the cached commit, only the weight file is listed and
    /// `files_known` is false.
    pub files: Vec<FileReadiness>,
    /// Whether the whole set is known locally (listed in the manifest, a single file, or
    /// resolved and recorded earlier).
    pub files_known: bool,
    /// Where the list of files came from, when it is known.
    pub set_origin: Option<SetOrigin>,
    /// The refs of the repo that name the model's commit (`main`, the commit itself, …): how
    /// other consumers of the cache find it by name.
    pub refs: Vec<String>,
    /// Why the model is not ready, naming the file (missing, a link out of the cache, not
    /// verified yet, no digest known, a set nothing local describes, a signature not
    /// verified); `None` when ready.
    pub problem: Option<String>,
    /// Who signed the model, when its signature policy's verdict holds (`P-256 key
    /// sha256:…`, a certificate's names); `None` without a policy or a verdict.
    pub signer: Option<String>,
}

/// Readiness of one file of a model's set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReadiness {
    /// Path in the repo (and in the snapshot folder).
    pub path: String,
    /// `ready`, `unverified` or `missing`.
    pub state: ReadinessState,
    /// Expected size, when known.
    pub size_bytes: Option<u64>,
    /// The expected digest, when known.
    pub expected_digest: Option<String>,
    /// Its kind: `sha256` (LFS files) or `git_blob_sha1` (regular files).
    pub digest_kind: Option<DigestKind>,
    /// The snapshot entry, when on disk.
    pub local_path: Option<PathBuf>,
    /// What the file is to the model.
    pub role: FileRole,
    /// Why it is not ready, when it is not.
    pub problem: Option<String>,
}

/// Overall readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// Models ready to load (verified files and built-ins).
    pub ready_models: Vec<ModelId>,
    /// Models not ready: absent, partial, or present but unverified.
    pub missing_models: Vec<ModelId>,
    /// Models whose last attempt failed, with the error.
    pub failed_models: Vec<(ModelId, String)>,
    /// Sum of the known sizes of all artifacts.
    pub total_size_bytes: u64,
    /// Bytes on disk for them (verified files and partial downloads).
    pub downloaded_bytes: u64,
    /// Per-model details, in manifest order.
    pub models: Vec<ModelReadiness>,
    /// Set when this process verified files whose stamps it could not write (a read-only
    /// cache): they count as ready for this process only.
    pub unrecorded_stamps: Option<UnrecordedStamps>,
}

impl ReadinessReport {
    /// Whether every model is ready.
    pub fn all_ready(&self) -> bool {
        self.missing_models.is_empty() && self.failed_models.is_empty()
    }
}

/// One model as the artifact manager verified it: the files the registry opens, in the
/// snapshot folder of the manager's cache. The registry opens exactly these, so what the
/// manager verified and what the pipeline loads can never disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedModel {
    /// The model.
    pub model_id: ModelId,
    /// The snapshot folder of the model's repo at the verified commit
    /// (`<cache>/models--org--name/snapshots/<commit>`).
    pub snapshot_dir: PathBuf,
    /// The weights file (inside `snapshot_dir`), verified by SHA-256.
    pub weights: PathBuf,
    /// The format of the weights file.
    pub format: WeightFormat,
    /// Every verified file of the model's set, `weights` first (then `config.json`, the
    /// tokenizer, module configs, shards: whatever the set holds), as paths in `snapshot_dir`.
    pub files: Vec<PathBuf>,
}

/// The verified model for an artifact, when it is ready by the one readiness rule. Blocking
/// (a few `stat`s and small reads), like `inspect`.
pub(crate) fn verified_model(ctx: &Context, model_id: ModelId) -> Option<VerifiedModel> {
    let artifact = ctx.artifact(model_id).ok()?;
    let state = inspect(&ctx.view(), artifact);
    verified_from(ctx, artifact, state)
}

/// The verified model of every artifact of the manifest, in manifest order; `MissingModels`
/// naming every artifact that is not ready. Off the async threads.
pub(crate) async fn verified_models(ctx: &Context) -> EmbeddingResult<Vec<VerifiedModel>> {
    let mut verified = Vec::new();
    let mut missing = Vec::new();
    for artifact in ctx.manifest.artifacts() {
        let state = inspect_async(ctx, artifact).await;
        match verified_from(ctx, artifact, state) {
            Some(model) => verified.push(model),
            None => missing.push(artifact.model_id),
        }
    }
    if missing.is_empty() {
        Ok(verified)
    } else {
        Err(EmbeddingError::MissingModels(missing))
    }
}

fn verified_from(
    ctx: &Context,
    artifact: &ModelArtifact,
    state: LocalState,
) -> Option<VerifiedModel> {
    if !state.is_ready(ctx.config.verify_checksums) {
        return None;
    }
    let commit = state.commit.clone()?;
    let files: Vec<PathBuf> = state
        .files
        .iter()
        .filter_map(|f| f.path().map(Path::to_path_buf))
        .collect();
    Some(VerifiedModel {
        model_id: artifact.model_id,
        snapshot_dir: ctx.layout.snapshot_dir(&artifact.repo_id, &commit),
        format: artifact.format(),
        weights: files.first()?.clone(),
        files,
    })
}

/// The result of verifying one model's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyOutcome {
    /// The model.
    pub model_id: ModelId,
    /// The weight file, if present.
    pub path: Option<PathBuf>,
    /// `Some(true)` every file of the set verified, `Some(false)` a file does not have its
    /// digest or size (corrupt), `None` not checkable: a file missing, a link out of the
    /// cache, no digest known, or a set nothing local describes.
    pub verified: Option<bool>,
    /// Why it is not verified, naming the file (expected and actual digest for a corrupt one).
    pub detail: Option<String>,
}

/// Overall readiness, from file metadata and stamps only (no hashing, no network).
pub(crate) fn readiness_report(ctx: &Context) -> ReadinessReport {
    let mut report = ReadinessReport {
        ready_models: Vec::new(),
        missing_models: Vec::new(),
        failed_models: Vec::new(),
        total_size_bytes: 0,
        downloaded_bytes: 0,
        models: Vec::new(),
        unrecorded_stamps: ctx.unrecorded_stamps(),
    };
    let view = ctx.view();
    for entry in &ctx.manifest.entries {
        match entry {
            ManifestEntry::Builtin(model_id) => {
                report.ready_models.push(*model_id);
                report.models.push(ModelReadiness::builtin(*model_id));
            }
            ManifestEntry::Artifact(artifact) => {
                let state = inspect(&view, artifact);
                let row = model_readiness(ctx, artifact, &state);
                let on_disk: u64 = state.files.iter().filter_map(FileState::size).sum();
                match row.state {
                    ReadinessState::Ready => {
                        report.ready_models.push(artifact.model_id);
                        report.downloaded_bytes += on_disk;
                    }
                    ReadinessState::Failed => {
                        report
                            .failed_models
                            .push((artifact.model_id, row.error.clone().unwrap_or_default()));
                        report.downloaded_bytes += row.partial_bytes;
                    }
                    _ => {
                        report.missing_models.push(artifact.model_id);
                        report.downloaded_bytes += row.partial_bytes;
                    }
                }
                report.total_size_bytes += state
                    .files
                    .iter()
                    .map(|f| f.file.size.or(f.size()).unwrap_or(0))
                    .sum::<u64>();
                report.models.push(row);
            }
        }
    }
    report
}

/// A file's state in the report: ready, present but not verified, or missing (a link out of
/// the cache counts as missing: its bytes are not the cache's).
fn file_state_label(file: &FileState, verify_checksums: bool) -> ReadinessState {
    if file.is_ready(verify_checksums) {
        ReadinessState::Ready
    } else if file.path().is_some() {
        ReadinessState::Unverified
    } else {
        ReadinessState::Missing
    }
}

/// Why one file is not ready, in words; `None` when it is.
fn file_problem(file: &FileState, verify_checksums: bool) -> Option<String> {
    if file.is_ready(verify_checksums) {
        return None;
    }
    Some(match &file.entry {
        Entry::Absent => format!("{} is missing", file.file.path),
        Entry::Foreign(link) => format!(
            "{}: {} is a link that leaves the cache (or not a regular file); not read",
            file.file.path,
            link.display()
        ),
        Entry::Present { .. } if file.file.digest.is_none() => format!(
            "{} has no known digest to be verified against (lock the manifest, or `ensure` online once)",
            file.file.path
        ),
        Entry::Present { size, .. } => match file.file.size {
            Some(expected) if !verify_checksums && expected != *size => format!(
                "{} has {size} bytes, expected {expected}",
                file.file.path
            ),
            _ => format!("{} is not verified yet", file.file.path),
        },
    })
}

/// Why a model is not ready, in words (the first file with a problem, or the unknown set).
fn model_problem(artifact: &ModelArtifact, state: &LocalState, verify: bool) -> Option<String> {
    if state.is_ready(verify) {
        return None;
    }
    if state.origin.is_none() {
        if let Some(commit) = &state.commit {
            return Some(format!(
                "which files make up {} at commit {commit} is not known without the Hub (no recorded set, no trees/{commit}.json, no snapshot folder)",
                artifact.repo_id
            ));
        }
    }
    state
        .files
        .iter()
        .find_map(|f| file_problem(f, verify))
        .or_else(|| signature_problem(state))
}

/// Why the signature keeps a model from being ready, in words; `None` when it does not.
fn signature_problem(state: &LocalState) -> Option<String> {
    match &state.signature {
        SignatureState::Unchecked {
            file,
            in_set: false,
        } => Some(
            EmbeddingError::SignatureMissing {
                signature: file.clone(),
            }
            .to_string(),
        ),
        SignatureState::Unchecked { file, in_set: true } => Some(format!(
            "signature {file} is not verified for these files under the signature policy (`cg-models verify` or `ensure` checks it)"
        )),
        _ => None,
    }
}

fn model_readiness(ctx: &Context, artifact: &ModelArtifact, state: &LocalState) -> ModelReadiness {
    let verify = ctx.config.verify_checksums;
    let (expected, hash_source) = expected_hash(artifact, state);
    let weights = state.weights();
    let ready = state.is_ready(verify);
    let failure = ctx.board.failure(artifact.model_id);
    let readiness_state = if ready {
        ReadinessState::Ready
    } else if failure.is_some() {
        ReadinessState::Failed
    } else if weights.path().is_some() {
        ReadinessState::Unverified
    } else {
        ReadinessState::Missing
    };
    let files = state
        .files
        .iter()
        .map(|f| FileReadiness {
            path: f.file.path.clone(),
            state: file_state_label(f, verify),
            size_bytes: f.file.size.or(f.stamp.as_ref().map(|s| s.fingerprint.size)),
            expected_digest: f.file.digest.as_ref().map(|d| d.hex().to_owned()),
            digest_kind: f.file.digest.as_ref().map(|d| d.kind()),
            local_path: f.path().map(Path::to_path_buf),
            role: f.file.role,
            problem: file_problem(f, verify),
        })
        .collect();
    ModelReadiness {
        model_id: artifact.model_id,
        state: readiness_state,
        repo_id: Some(artifact.repo_id.clone()),
        filename: Some(artifact.filename.clone()),
        revision: Some(artifact.revision_or_default().to_owned()),
        commit: state.commit.clone(),
        path: weights.path().map(Path::to_path_buf),
        size_bytes: weights
            .file
            .size
            .or(weights.stamp.as_ref().map(|s| s.fingerprint.size))
            .or(weights.size()),
        expected_sha256: expected,
        hash_source,
        format: Some(artifact.format()),
        partial_bytes: state.partial_bytes,
        error: if ready { None } else { failure },
        source: weights.stamp.as_ref().and_then(|s| s.source.clone()),
        snapshot_dir: state
            .commit
            .as_deref()
            .map(|c| ctx.layout.snapshot_dir(&artifact.repo_id, c)),
        files,
        files_known: state.origin.is_some(),
        set_origin: state.origin,
        refs: state
            .commit
            .as_deref()
            .map(|commit| {
                ctx.layout
                    .refs(&artifact.repo_id)
                    .into_iter()
                    .filter(|(_, c)| c == commit)
                    .map(|(name, _)| name)
                    .collect()
            })
            .unwrap_or_default(),
        problem: model_problem(artifact, state, verify),
        signer: state.signature.signer().map(str::to_owned),
    }
}

impl ModelReadiness {
    fn builtin(model_id: ModelId) -> Self {
        ModelReadiness {
            model_id,
            state: ReadinessState::Builtin,
            repo_id: None,
            filename: None,
            revision: None,
            commit: None,
            path: None,
            size_bytes: None,
            expected_sha256: None,
            hash_source: HashSource::Unknown,
            format: None,
            partial_bytes: 0,
            error: None,
            source: None,
            snapshot_dir: None,
            files: Vec::new(),
            files_known: true,
            set_origin: None,
            refs: Vec::new(),
            problem: None,
            signer: None,
        }
    }
}

/// Where one file of a model lives, for errors.
pub(crate) fn location_of(artifact: &ModelArtifact, path: &str) -> crate::error::FileLocation {
    let mut location = artifact.location();
    location.filename = path.to_owned();
    location
}

/// The typed reason a model is not ready (the first file with a problem, or the unknown set);
/// with `offline`, a missing file is `OfflineMissing`. For a model that is ready or only
/// unverified (hash it first), the unverified file's name.
pub(crate) fn not_ready_error(
    artifact: &ModelArtifact,
    state: &LocalState,
    offline: bool,
) -> EmbeddingError {
    if let (None, Some(commit)) = (state.origin, &state.commit) {
        return EmbeddingError::SetUnknown {
            location: artifact.location(),
            commit: commit.clone(),
        };
    }
    for file in &state.files {
        let location = location_of(artifact, &file.file.path);
        match &file.entry {
            Entry::Absent if offline => return EmbeddingError::OfflineMissing { location },
            Entry::Absent => return EmbeddingError::FileMissing { location },
            Entry::Foreign(path) => {
                return EmbeddingError::ForeignEntry {
                    location,
                    path: path.clone(),
                }
            }
            Entry::Present { path, .. } if file.file.digest.is_none() && !file.stamp_valid => {
                return EmbeddingError::NoDigestKnown {
                    location,
                    path: path.clone(),
                }
            }
            Entry::Present { .. } => {}
        }
    }
    EmbeddingError::MissingModels(vec![artifact.model_id])
}

/// The verdict of checking one planned file.
#[derive(Debug)]
pub(crate) enum FileVerdict {
    /// Its bytes are the planned ones (a stamp vouches, or it was hashed now and stamped).
    Verified,
    /// It cannot be checked: absent, a link out of the cache, or no digest known (the error
    /// says which).
    Unavailable(EmbeddingError),
    /// It was hashed and is wrong (`HashMismatch` or `SizeMismatch`, naming the file); its
    /// stamp was removed.
    Corrupt(EmbeddingError),
}

/// The one verification of a present file: its stamp (unless `rehash`), else its bytes hashed
/// against the planned digest and size, off the async threads. A right file is stamped (or,
/// where the cache is read-only, its verdict kept in memory and the one notice given); a wrong
/// one loses its stamp and any kept verdict.
pub(crate) async fn verify_file(
    ctx: &Context,
    artifact: &ModelArtifact,
    commit: &str,
    file: &FileState,
    rehash: bool,
) -> EmbeddingResult<FileVerdict> {
    let location = location_of(artifact, &file.file.path);
    let path = match &file.entry {
        Entry::Present { path, .. } => path.clone(),
        Entry::Absent => {
            return Ok(FileVerdict::Unavailable(EmbeddingError::FileMissing {
                location,
            }))
        }
        Entry::Foreign(link) => {
            return Ok(FileVerdict::Unavailable(EmbeddingError::ForeignEntry {
                location,
                path: link.clone(),
            }))
        }
    };
    if file.stamp_valid && !rehash {
        return Ok(FileVerdict::Verified);
    }
    let Some(expected) = file.file.digest.clone() else {
        return Ok(FileVerdict::Unavailable(EmbeddingError::NoDigestKnown {
            location,
            path,
        }));
    };
    let hashed = path.clone();
    let kind = expected.kind();
    // A regular file is hashed once for its git blob id and the SHA-256 a signature lists.
    let (actual, length, content_sha256) = run_blocking(move || match kind {
        DigestKind::GitBlobSha1 => {
            hash_file_dual(&hashed).map(|(sha256, git, length)| (git, length, Some(sha256)))
        }
        DigestKind::Sha256 => hash_file_as(&hashed, kind).map(|(sha, length)| (sha, length, None)),
    })
    .await
    .map_err(|e| EmbeddingError::io("cannot read", &path, e))?;
    let stamp_path = ctx
        .layout
        .stamp_path(&artifact.repo_id, commit, &file.file.path);
    let size_ok = file.file.size.is_none_or(|s| s == length);
    if actual != expected.hex() || !size_ok {
        ctx.memory.forget(&path);
        let removed = stamp_path.clone();
        let _ = run_blocking_checked("cannot remove", &path, move || remove_entry(&removed)).await;
        return Ok(FileVerdict::Corrupt(if size_ok {
            EmbeddingError::HashMismatch {
                location,
                path,
                expected: expected.hex().to_owned(),
                actual,
            }
        } else {
            EmbeddingError::SizeMismatch {
                location,
                path,
                expected: file.file.size.unwrap_or(0),
                actual: length,
            }
        }));
    }
    let stamped = path.clone();
    let written = stamp_path.clone();
    let (stamp, unwritten) = run_blocking_checked("cannot read", &path, move || {
        let mut stamp = VerificationStamp::now(&stamped, &actual)
            .map_err(|e| EmbeddingError::io("cannot read", &stamped, e))?;
        stamp.content_sha256 = content_sha256;
        // A stamp that already says this keeps its record (and its source); none is written,
        // so a read-only cache with our stamps needs no write at all.
        let current = VerificationStamp::read(&written)
            .filter(|s| s.sha256 == stamp.sha256 && s.fingerprint == stamp.fingerprint);
        if let Some(current) = current {
            if current.content_sha256() == stamp.content_sha256() {
                return Ok((current, None));
            }
            // A stamp from before the SHA-256 was kept: upgraded where the cache is
            // writable; where it is not, the old stamp still vouches for the file (a
            // signature check then hashes this small file again).
            let mut upgraded = current.clone();
            upgraded.content_sha256.clone_from(&stamp.content_sha256);
            return Ok(match upgraded.write(&written) {
                Ok(()) => (upgraded, None),
                Err(_) => (current, None),
            });
        }
        let unwritten = stamp.write(&written).err();
        Ok((stamp, unwritten))
    })
    .await?;
    if let Some(error) = unwritten {
        // The file is right; only the record of it cannot be kept on disk.
        ctx.memory.remember(&path, stamp);
        let reason = match &error {
            EmbeddingError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        ctx.stamps_unrecorded(
            artifact.model_id,
            UnrecordedStamps {
                path: stamp_path,
                reason,
            },
        );
    }
    Ok(FileVerdict::Verified)
}

/// Every file of a model's set checked by [`verify_file`] (hashing those without a valid
/// stamp, or all with `rehash`): `Ok(None)` when the whole set is verified, else the first
/// reason it is not, a corrupt file first (it marks the model failed).
pub(crate) async fn verify_model(
    ctx: &Context,
    artifact: &ModelArtifact,
    state: &LocalState,
    rehash: bool,
) -> EmbeddingResult<Option<FileVerdict>> {
    let (Some(commit), Some(_)) = (&state.commit, state.origin) else {
        return Ok(Some(FileVerdict::Unavailable(not_ready_error(
            artifact, state, false,
        ))));
    };
    let mut first_problem = None;
    for file in &state.files {
        match verify_file(ctx, artifact, commit, file, rehash).await? {
            FileVerdict::Verified => {}
            FileVerdict::Corrupt(error) => {
                ctx.events(artifact.model_id).marked_failed(&error);
                return Ok(Some(FileVerdict::Corrupt(error)));
            }
            unavailable => {
                first_problem.get_or_insert(unavailable);
            }
        }
    }
    if first_problem.is_none() {
        // Every file is verified: the signature under the model's policy, from the stamps.
        if let Err(error) = check_signature(ctx, artifact, commit).await {
            ctx.events(artifact.model_id).marked_failed(&error);
            return Ok(Some(FileVerdict::Corrupt(error)));
        }
        if let Some(path) = state.weights().path() {
            ctx.board.set(
                artifact.model_id,
                crate::artifacts::status::DownloadStatus::Completed {
                    path: path.to_path_buf(),
                    verified: true,
                },
            );
        }
    }
    Ok(first_problem)
}

/// Hashes every file of one model's set in full. `Ok(true)` when each matches (stamps are
/// written), `Ok(false)` when one does not, or one is missing or cannot be checked (a wrong
/// one marks the model failed), `MissingModels` when the weight file is not there.
pub(crate) async fn verify_checksum(ctx: &Context, model_id: ModelId) -> EmbeddingResult<bool> {
    let artifact = ctx.artifact(model_id)?;
    let state = inspect_async(ctx, artifact).await;
    if state.weights().path().is_none() {
        return Err(EmbeddingError::MissingModels(vec![model_id]));
    }
    Ok(verify_model(ctx, artifact, &state, true).await?.is_none())
}

/// Checks the files of some models, `parallelism` models at once (each file hashed on a
/// blocking thread), largest first so the cores finish together, and reports each result. With
/// `only_unverified`, files with a valid stamp are not hashed again.
pub(crate) async fn verify_models(
    ctx: &Context,
    models: &[ModelId],
    parallelism: usize,
    only_unverified: bool,
) -> Vec<VerifyOutcome> {
    let mut artifacts: Vec<(&ModelArtifact, LocalState)> = Vec::new();
    for artifact in ctx
        .manifest
        .artifacts()
        .filter(|a| models.contains(&a.model_id))
    {
        artifacts.push((artifact, inspect_async(ctx, artifact).await));
    }
    artifacts.sort_by_key(|(_, state)| {
        std::cmp::Reverse(
            state
                .files
                .iter()
                .map(|f| f.file.size.or(f.size()).unwrap_or(0))
                .sum::<u64>(),
        )
    });
    let mut results = stream::iter(artifacts)
        .map(|(artifact, state)| async move {
            let model_id = artifact.model_id;
            let path = state.weights().path().map(Path::to_path_buf);
            let (verified, detail) =
                match verify_model(ctx, artifact, &state, !only_unverified).await {
                    Ok(None) => (Some(true), None),
                    Ok(Some(FileVerdict::Corrupt(error))) => (Some(false), Some(error.to_string())),
                    Ok(Some(FileVerdict::Unavailable(error))) => (None, Some(error.to_string())),
                    Ok(Some(FileVerdict::Verified)) => (Some(true), None),
                    Err(error) => (None, Some(error.to_string())),
                };
            VerifyOutcome {
                model_id,
                path,
                verified,
                detail,
            }
        })
        .buffer_unordered(parallelism.max(1))
        .collect::<Vec<_>>()
        .await;
    results.sort_by_key(|r| r.model_id.index());
    results
}
