//! The readiness report (from metadata and stamps only: no hashing, no network), the
//! verified models handed to the registry, and verification by hashing: one model, or several
//! on all cores, largest first.
//!
//! On a cache where stamps cannot be written (a read-only mount), a file that hashes right is
//! still verified: the verdict is kept in memory for the process and one notice
//! ([`UnrecordedStamps`]) says what that costs.

use std::path::PathBuf;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::context::Context;
use super::local::{
    expected_hash, inspect_in, inspect_in_off_thread, inspect_off_thread, is_ready, weights_ready,
    CompanionState, HashSource, LocalState,
};
use crate::artifacts::blocking::{run_blocking, run_blocking_checked};
use crate::artifacts::hash::{hash_file_as, DigestKind};
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
/// (a few `stat`s and one small read), like `inspect`.
pub(crate) fn verified_model(ctx: &Context, model_id: ModelId) -> Option<VerifiedModel> {
    let artifact = ctx.artifact(model_id).ok()?;
    let state = inspect_in(ctx, artifact);
    verified_from(ctx, artifact, state)
}

/// The verified model of every artifact of the manifest, in manifest order; `MissingModels`
/// naming every artifact that is not ready. Off the async threads.
pub(crate) async fn verified_models(ctx: &Context) -> EmbeddingResult<Vec<VerifiedModel>> {
    let mut verified = Vec::new();
    let mut missing = Vec::new();
    for artifact in ctx.manifest.artifacts() {
        let state = inspect_in_off_thread(ctx, artifact).await;
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
    state: super::local::LocalState,
) -> Option<VerifiedModel> {
    if !is_ready(artifact, &state, ctx.config.verify_checksums) {
        return None;
    }
    let weights = state.snapshot?;
    let commit = state.commit?;
    let mut files = vec![weights.clone()];
    files.extend(
        state
            .companions
            .into_iter()
            .flatten()
            .filter_map(|c| c.snapshot),
    );
    Some(VerifiedModel {
        model_id: artifact.model_id,
        snapshot_dir: ctx.layout.snapshot_dir(&artifact.repo_id, &commit),
        format: artifact.format(),
        files,
        weights,
    })
}

/// The result of verifying one present file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyOutcome {
    /// The model.
    pub model_id: ModelId,
    /// The file checked, if present.
    pub path: Option<PathBuf>,
    /// `Some(true)` verified, `Some(false)` corrupt, `None` not present.
    pub verified: Option<bool>,
    /// Expected and actual hash, for a corrupt file; or what prevented the check.
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
    for entry in &ctx.manifest.entries {
        match entry {
            ManifestEntry::Builtin(model_id) => {
                report.ready_models.push(*model_id);
                report.models.push(ModelReadiness::builtin(*model_id));
            }
            ManifestEntry::Artifact(artifact) => {
                let row = model_readiness(ctx, artifact);
                match row.state {
                    ReadinessState::Ready => {
                        report.ready_models.push(artifact.model_id);
                        report.downloaded_bytes += row.size_on_disk;
                    }
                    ReadinessState::Failed => {
                        report.failed_models.push((
                            artifact.model_id,
                            row.readiness.error.clone().unwrap_or_default(),
                        ));
                        report.downloaded_bytes += row.readiness.partial_bytes;
                    }
                    _ => {
                        report.missing_models.push(artifact.model_id);
                        report.downloaded_bytes += row.readiness.partial_bytes;
                    }
                }
                report.total_size_bytes += row.known_size.unwrap_or(0);
                report.models.push(row.readiness);
            }
        }
    }
    report
}

/// One artifact's row of the report, with the sizes the totals need.
struct Row {
    state: ReadinessState,
    readiness: ModelReadiness,
    known_size: Option<u64>,
    size_on_disk: u64,
}

/// The per-file rows: the weight file, then the rest of the set.
fn file_rows(
    artifact: &ModelArtifact,
    state: &LocalState,
    expected: Option<String>,
    verify_checksums: bool,
) -> Vec<FileReadiness> {
    let weights_state = if weights_ready(artifact, state, verify_checksums) {
        ReadinessState::Ready
    } else if state.snapshot.is_some() {
        ReadinessState::Unverified
    } else {
        ReadinessState::Missing
    };
    let kind = expected.as_deref().and_then(DigestKind::of_hex);
    let mut rows = vec![FileReadiness {
        path: artifact.filename.clone(),
        state: weights_state,
        size_bytes: artifact
            .size_bytes
            .or(state.stamp.as_ref().map(|s| s.fingerprint.size)),
        expected_digest: expected,
        digest_kind: kind,
        local_path: state.snapshot.clone(),
    }];
    for companion in state.companions.iter().flatten() {
        rows.push(companion_row(companion, verify_checksums));
    }
    rows
}

fn companion_row(companion: &CompanionState, verify_checksums: bool) -> FileReadiness {
    let state = if companion.is_ready(verify_checksums) {
        ReadinessState::Ready
    } else if companion.snapshot.is_some() {
        ReadinessState::Unverified
    } else {
        ReadinessState::Missing
    };
    FileReadiness {
        path: companion.file.path.clone(),
        state,
        size_bytes: Some(companion.file.size_bytes),
        expected_digest: Some(companion.file.digest.clone()),
        digest_kind: Some(companion.file.kind),
        local_path: companion.snapshot.clone(),
    }
}

fn model_readiness(ctx: &Context, artifact: &ModelArtifact) -> Row {
    let state = inspect_in(ctx, artifact);
    let (expected, hash_source) = expected_hash(artifact, &state);
    let known_size = artifact
        .size_bytes
        .or(state.stamp.as_ref().map(|s| s.fingerprint.size));
    let ready = is_ready(artifact, &state, ctx.config.verify_checksums);
    let failure = ctx.board.failure(artifact.model_id);
    let readiness_state = if ready {
        ReadinessState::Ready
    } else if failure.is_some() {
        ReadinessState::Failed
    } else if state.snapshot.is_some() {
        ReadinessState::Unverified
    } else {
        ReadinessState::Missing
    };
    let files = file_rows(
        artifact,
        &state,
        expected.clone(),
        ctx.config.verify_checksums,
    );
    let companion_bytes: u64 = state
        .companions
        .iter()
        .flatten()
        .map(|c| c.file.size_bytes)
        .sum();
    let companion_on_disk: u64 = state
        .companions
        .iter()
        .flatten()
        .filter_map(|c| c.size)
        .sum();
    Row {
        state: readiness_state,
        known_size: known_size.map(|s| s + companion_bytes),
        size_on_disk: state.size.unwrap_or(0) + companion_on_disk,
        readiness: ModelReadiness {
            model_id: artifact.model_id,
            state: readiness_state,
            repo_id: Some(artifact.repo_id.clone()),
            filename: Some(artifact.filename.clone()),
            revision: Some(artifact.revision_or_default().to_owned()),
            commit: state.commit.clone(),
            path: state.snapshot.clone(),
            size_bytes: known_size.or(state.size),
            expected_sha256: expected,
            hash_source,
            format: Some(artifact.format()),
            partial_bytes: state.partial_bytes,
            error: if ready { None } else { failure },
            source: state.stamp.as_ref().and_then(|s| s.source.clone()),
            snapshot_dir: state
                .commit
                .as_deref()
                .map(|c| ctx.layout.snapshot_dir(&artifact.repo_id, c)),
            files,
            files_known: state.companions.is_some(),
        },
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
        }
    }
}

/// Hashes one model's file in full. `Ok(true)` when it matches (a stamp is written),
/// `Ok(false)` when it does not (the model is marked failed), `MissingModels` when the file is
/// not there.
pub(crate) async fn verify_checksum(ctx: &Context, model_id: ModelId) -> EmbeddingResult<bool> {
    let artifact = ctx.artifact(model_id)?;
    let state = inspect_off_thread(&ctx.layout, artifact).await;
    let Some(path) = state.snapshot.clone() else {
        return Err(EmbeddingError::MissingModels(vec![model_id]));
    };
    let (expected, _) = expected_hash(artifact, &state);
    let Some(expected) = expected else {
        return Err(EmbeddingError::NoExpectedHash {
            location: artifact.location(),
        });
    };
    let commit = state.commit.clone().unwrap_or_default();
    if !verify_companions(ctx, artifact, &state, &commit).await? {
        return Ok(false);
    }
    let hashed_path = path.clone();
    let kind = DigestKind::of_hex(&expected).unwrap_or(DigestKind::Sha256);
    let (actual, length) = run_blocking(move || hash_file_as(&hashed_path, kind))
        .await
        .map_err(|e| EmbeddingError::io("cannot read", &path, e))?;
    let stamp_path = ctx
        .layout
        .stamp_path(&artifact.repo_id, &commit, &artifact.filename);
    let size_ok = artifact.size_bytes.is_none_or(|s| s == length);
    let events = ctx.events(model_id);
    if actual == expected && size_ok {
        let stamped = path.clone();
        let written = stamp_path.clone();
        let (stamp, unwritten) = run_blocking_checked("cannot read", &path, move || {
            let stamp = VerificationStamp::now(&stamped, &actual)
                .map_err(|e| EmbeddingError::io("cannot read", &stamped, e))?;
            // A stamp that already says this keeps its record (and its source); none is
            // written, so a read-only cache with our stamps needs no write at all.
            let current = VerificationStamp::read(&written)
                .filter(|s| s.sha256 == stamp.sha256 && s.fingerprint == stamp.fingerprint);
            if let Some(current) = current {
                return Ok((current, None));
            }
            let unwritten = stamp.write(&written).err();
            Ok((stamp, unwritten))
        })
        .await?;
        if let Some(error) = unwritten {
            // The file is right; only the record of it cannot be kept on disk.
            ctx.remember(&path, stamp);
            let reason = match &error {
                EmbeddingError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            ctx.stamps_unrecorded(
                model_id,
                UnrecordedStamps {
                    path: stamp_path,
                    reason,
                },
            );
        }
        ctx.board.set(
            model_id,
            crate::artifacts::status::DownloadStatus::Completed {
                path,
                verified: true,
            },
        );
        Ok(true)
    } else {
        ctx.forget(&path);
        let _ =
            run_blocking_checked("cannot remove", &path, move || remove_entry(&stamp_path)).await;
        let error = if size_ok {
            EmbeddingError::HashMismatch {
                location: artifact.location(),
                path: path.clone(),
                expected,
                actual,
            }
        } else {
            EmbeddingError::SizeMismatch {
                location: artifact.location(),
                path: path.clone(),
                expected: artifact.size_bytes.unwrap_or(0),
                actual: length,
            }
        };
        events.marked_failed(&error);
        Ok(false)
    }
}

/// Hashes the present companions of a model (stamping the right ones). `Ok(true)` when the
/// set is known and every companion is present and right; a wrong one marks the model failed
/// with an error naming the file, its stamp removed.
async fn verify_companions(
    ctx: &Context,
    artifact: &ModelArtifact,
    state: &LocalState,
    commit: &str,
) -> EmbeddingResult<bool> {
    let Some(companions) = &state.companions else {
        return Ok(false);
    };
    let mut complete = true;
    for companion in companions {
        let Some(path) = companion.snapshot.clone() else {
            complete = false;
            continue;
        };
        if companion.stamp_valid {
            continue;
        }
        let kind = companion.file.kind;
        let hashed = path.clone();
        let (actual, length) = run_blocking(move || hash_file_as(&hashed, kind))
            .await
            .map_err(|e| EmbeddingError::io("cannot read", &path, e))?;
        let stamp_path = ctx
            .layout
            .stamp_path(&artifact.repo_id, commit, &companion.file.path);
        if actual == companion.file.digest && length == companion.file.size_bytes {
            let stamped = path.clone();
            run_blocking_checked("cannot read", &path, move || {
                let stamp = VerificationStamp::now(&stamped, &actual)
                    .map_err(|e| EmbeddingError::io("cannot read", &stamped, e))?;
                stamp.write(&stamp_path)
            })
            .await?;
        } else {
            let _ = run_blocking_checked("cannot remove", &path, move || remove_entry(&stamp_path))
                .await;
            let mut location = artifact.location();
            location.filename = companion.file.path.clone();
            let error = EmbeddingError::HashMismatch {
                location,
                path: path.clone(),
                expected: companion.file.digest.clone(),
                actual,
            };
            ctx.events(artifact.model_id).marked_failed(&error);
            return Ok(false);
        }
    }
    Ok(complete)
}

/// Re-hashes the files of some models, `parallelism` at once (each on its own blocking
/// thread), largest first so the cores finish together, and reports each result. With
/// `only_unverified`, files with a valid stamp are skipped.
pub(crate) async fn verify_models(
    ctx: &Context,
    models: &[ModelId],
    parallelism: usize,
    only_unverified: bool,
) -> Vec<VerifyOutcome> {
    let mut artifacts: Vec<(&ModelArtifact, super::local::LocalState)> = Vec::new();
    for artifact in ctx
        .manifest
        .artifacts()
        .filter(|a| models.contains(&a.model_id))
    {
        artifacts.push((artifact, inspect_in_off_thread(ctx, artifact).await));
    }
    artifacts.sort_by_key(|(artifact, state)| {
        std::cmp::Reverse(
            artifact
                .size_bytes
                .unwrap_or_else(|| state.size.unwrap_or(0)),
        )
    });
    let mut results = stream::iter(artifacts)
        .map(|(artifact, state)| async move {
            let model_id = artifact.model_id;
            let Some(path) = state.snapshot.clone() else {
                return VerifyOutcome {
                    model_id,
                    path: None,
                    verified: None,
                    detail: None,
                };
            };
            if only_unverified && state.stamp_valid {
                return VerifyOutcome {
                    model_id,
                    path: Some(path),
                    verified: Some(true),
                    detail: None,
                };
            }
            match verify_checksum(ctx, model_id).await {
                Ok(verified) => VerifyOutcome {
                    model_id,
                    path: Some(path),
                    verified: Some(verified),
                    detail: (!verified).then(|| ctx.board.failure(model_id)).flatten(),
                },
                Err(error) => VerifyOutcome {
                    model_id,
                    path: Some(path),
                    verified: None,
                    detail: Some(error.to_string()),
                },
            }
        })
        .buffer_unordered(parallelism.max(1))
        .collect::<Vec<_>>()
        .await;
    results.sort_by_key(|r| r.model_id.index());
    results
}
