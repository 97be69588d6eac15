//! What the cache holds for one model, from metadata only (a `stat`, the ref, the stamps, the
//! recorded file set), and the one readiness rule every caller uses: the weight file and every
//! other file of the model's set with a valid stamp (on disk, or kept in memory by this process
//! where the cache is read-only), or, with checksum verification off, the right size.

use std::path::PathBuf;

use serde::Serialize;

use super::context::Context;
use crate::artifacts::fileset::{FileSelection, PinnedFile};
use crate::artifacts::hash::DigestKind;
use crate::artifacts::ids::validate_sha256;
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::store::budget::Protected;
use crate::artifacts::store::layout::{
    entry_stays_inside, partial_files, snapshot_link_blob_name, CacheLayout,
};
use crate::artifacts::store::stamp::VerificationStamp;

/// Where the expected hash of a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashSource {
    /// Pinned in the manifest.
    Pinned,
    /// Advertised by the Hub (`X-Linked-Etag`) at the revision and recorded at download.
    HubAdvertised,
    /// Not known yet (unpinned and never downloaded).
    Unknown,
}

/// What the cache holds for one artifact, from metadata only.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalState {
    /// The commit the revision resolves to locally (the revision itself, or its ref).
    pub(crate) commit: Option<String>,
    /// The snapshot entry, when it is a file whose bytes stay inside the cache.
    pub(crate) snapshot: Option<PathBuf>,
    /// The blob the snapshot entry links to, when it is a link of the cache's shape.
    pub(crate) blob_name: Option<String>,
    /// Our verification stamp of the entry.
    pub(crate) stamp: Option<VerificationStamp>,
    /// Whether that stamp still vouches for the file (and for the pinned hash).
    pub(crate) stamp_valid: bool,
    /// Whether the valid stamp is this process's verdict kept in memory (it could not be
    /// written: a read-only cache), not a file.
    pub(crate) verified_in_memory: bool,
    /// The entry's size.
    pub(crate) size: Option<u64>,
    /// Bytes of the largest partial download of the pinned blob.
    pub(crate) partial_bytes: u64,
    /// The other files of the model's set (not the weight file), when the set is known
    /// locally: `Some(vec![])` for a single-file entry, `None` when the set was never
    /// resolved at this commit.
    pub(crate) companions: Option<Vec<CompanionState>>,
}

/// What the cache holds for one file of a set besides the weight file.
#[derive(Debug, Clone)]
pub(crate) struct CompanionState {
    /// The file and what it must be.
    pub(crate) file: PinnedFile,
    /// The snapshot entry, when present (and inside the cache).
    pub(crate) snapshot: Option<PathBuf>,
    /// Its size on disk.
    pub(crate) size: Option<u64>,
    /// Whether a stamp vouches for it with the expected digest.
    pub(crate) stamp_valid: bool,
    /// Where the verified bytes came from, when recorded.
    pub(crate) source: Option<String>,
}

impl CompanionState {
    /// Verified, or (checks off) of the right size.
    pub(crate) fn is_ready(&self, verify_checksums: bool) -> bool {
        self.snapshot.is_some()
            && (self.stamp_valid || (!verify_checksums && self.size == Some(self.file.size_bytes)))
    }
}

/// The key a resolved set is recorded under: the weight file and the selection.
fn selection_key(artifact: &ModelArtifact) -> String {
    let FileSelection {
        include, preset, ..
    } = &artifact.selection;
    format!(
        "{}\0{}\0{}",
        artifact.filename,
        preset.map_or("", |p| p.as_str()),
        include.join("\0")
    )
}

/// Where the model's resolved set at `commit` is recorded in the cache.
pub(crate) fn set_record(layout: &CacheLayout, artifact: &ModelArtifact, commit: &str) -> PathBuf {
    layout.set_record_path(&artifact.repo_id, commit, &selection_key(artifact))
}

/// The files of the model's set besides the weight file, as far as the cache knows without
/// the network: the manifest's list, nothing for a single-file entry, else the set recorded
/// when it was resolved at `commit`.
pub(crate) fn known_companions(
    layout: &CacheLayout,
    artifact: &ModelArtifact,
    commit: &str,
) -> Option<Vec<PinnedFile>> {
    let without_weights = |files: Vec<PinnedFile>| -> Vec<PinnedFile> {
        files
            .into_iter()
            .filter(|f| f.path != artifact.filename)
            .collect()
    };
    if let Some(files) = &artifact.selection.files {
        return Some(without_weights(files.clone()));
    }
    if artifact.selection.is_single_file() {
        return Some(Vec::new());
    }
    let record = set_record(layout, artifact, commit);
    let files: Vec<PinnedFile> = serde_json::from_slice(&std::fs::read(record).ok()?).ok()?;
    Some(without_weights(files))
}

/// Records a resolved set (blocking; small atomic write).
pub(crate) fn record_companions(
    layout: &CacheLayout,
    artifact: &ModelArtifact,
    commit: &str,
    files: &[PinnedFile],
) -> crate::error::EmbeddingResult<()> {
    let record = set_record(layout, artifact, commit);
    let text = serde_json::to_vec_pretty(files).unwrap_or_default();
    crate::artifacts::store::fs::write_atomic(&record, &text)
}

/// Reads the state of one companion file at `commit`. Blocking.
pub(crate) fn inspect_companion(
    layout: &CacheLayout,
    repo: &str,
    commit: &str,
    file: &PinnedFile,
) -> CompanionState {
    let path = layout.snapshot_path(repo, commit, &file.path);
    let mut state = CompanionState {
        file: file.clone(),
        snapshot: None,
        size: None,
        stamp_valid: false,
        source: None,
    };
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.is_file() && entry_stays_inside(&path) {
            state.size = Some(meta.len());
            if let Some(stamp) =
                VerificationStamp::read(&layout.stamp_path(repo, commit, &file.path))
            {
                state.stamp_valid = stamp.is_valid_for(&path, Some(&file.digest));
                state.source = stamp.source;
            }
            state.snapshot = Some(path);
        }
    }
    state
}

/// Reads the local state of one artifact. Blocking (a few `stat`s and one small read): async
/// callers run it on a blocking thread.
pub(crate) fn inspect(layout: &CacheLayout, artifact: &ModelArtifact) -> LocalState {
    let repo = &artifact.repo_id;
    let commit = layout.resolve_commit(repo, artifact.revision_or_default());
    let mut state = LocalState {
        commit: commit.clone(),
        ..LocalState::default()
    };
    if let Some(commit) = &commit {
        state.companions = known_companions(layout, artifact, commit)
            .map(|files| inspect_companions(layout, repo, commit, &files));
        let path = layout.snapshot_path(repo, commit, &artifact.filename);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() && entry_stays_inside(&path) {
                state.size = Some(meta.len());
                state.blob_name = snapshot_link_blob_name(&path);
                let stamp =
                    VerificationStamp::read(&layout.stamp_path(repo, commit, &artifact.filename));
                if let Some(stamp) = stamp {
                    state.stamp_valid = stamp.is_valid_for(&path, pinned_digest(artifact));
                    state.stamp = Some(stamp);
                }
                state.snapshot = Some(path);
            }
        }
    }
    if state.snapshot.is_none() {
        if let Some(etag) = artifact.sha256.as_deref() {
            state.partial_bytes = partial_files(&layout.blobs_dir(repo), etag)
                .first()
                .map_or(0, |p| p.1);
        }
    }
    state
}

/// [`inspect`] on a blocking thread.
pub(crate) async fn inspect_off_thread(
    layout: &CacheLayout,
    artifact: &ModelArtifact,
) -> LocalState {
    let layout = layout.clone();
    let artifact = artifact.clone();
    tokio::task::spawn_blocking(move || inspect(&layout, &artifact))
        .await
        .unwrap_or_default()
}

/// [`inspect`], plus the verdicts this process kept in memory where a stamp could not be
/// written (a read-only cache), for the weight file and the rest of the set. Blocking, like
/// [`inspect`].
pub(crate) fn inspect_in(ctx: &Context, artifact: &ModelArtifact) -> LocalState {
    let mut state = inspect(&ctx.layout, artifact);
    if let (Some(files), Some(commit)) = (kept_set(ctx, artifact, &state), &state.commit) {
        state.companions = Some(inspect_companions(
            &ctx.layout,
            &artifact.repo_id,
            commit,
            &files,
        ));
    }
    let confirmed: Vec<KeptVerdict> = kept_verdicts(ctx, artifact, &state)
        .into_iter()
        .filter(KeptVerdict::still_holds)
        .collect();
    recall(&mut state, confirmed);
    state
}

/// [`inspect_in`] on a blocking thread.
pub(crate) async fn inspect_in_off_thread(ctx: &Context, artifact: &ModelArtifact) -> LocalState {
    let mut state = inspect_off_thread(&ctx.layout, artifact).await;
    if let (Some(files), Some(commit)) = (kept_set(ctx, artifact, &state), state.commit.clone()) {
        let layout = ctx.layout.clone();
        let repo = artifact.repo_id.clone();
        state.companions = tokio::task::spawn_blocking(move || {
            inspect_companions(&layout, &repo, &commit, &files)
        })
        .await
        .ok();
    }
    let kept = kept_verdicts(ctx, artifact, &state);
    if kept.is_empty() {
        return state;
    }
    let confirmed = tokio::task::spawn_blocking(move || {
        kept.into_iter()
            .filter(KeptVerdict::still_holds)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    recall(&mut state, confirmed);
    state
}

/// The set this process resolved for the model's commit but could not record, when the cache
/// holds no record of it.
fn kept_set(
    ctx: &Context,
    artifact: &ModelArtifact,
    state: &LocalState,
) -> Option<Vec<PinnedFile>> {
    if state.companions.is_some() {
        return None;
    }
    let commit = state.commit.as_deref()?;
    let record = set_record(&ctx.layout, artifact, commit);
    let files = ctx.remembered_set(&record)?;
    Some(
        files
            .into_iter()
            .filter(|f| f.path != artifact.filename)
            .collect(),
    )
}

/// The state of each companion at the state's commit. Blocking.
fn inspect_companions(
    layout: &CacheLayout,
    repo: &str,
    commit: &str,
    files: &[PinnedFile],
) -> Vec<CompanionState> {
    files
        .iter()
        .map(|f| inspect_companion(layout, repo, commit, f))
        .collect()
}

/// A verdict kept in memory for one file of the set without a valid stamp on disk.
struct KeptVerdict {
    /// `None`: the weight file; `Some(i)`: the `i`-th companion.
    companion: Option<usize>,
    path: PathBuf,
    expected: Option<String>,
    verdict: VerificationStamp,
}

impl KeptVerdict {
    /// Whether the verdict still describes the file (a `stat`: blocking).
    fn still_holds(&self) -> bool {
        self.verdict
            .is_valid_for(&self.path, self.expected.as_deref())
    }
}

fn kept_verdicts(ctx: &Context, artifact: &ModelArtifact, state: &LocalState) -> Vec<KeptVerdict> {
    let mut kept = Vec::new();
    if let (false, Some(path)) = (state.stamp_valid, &state.snapshot) {
        if let Some(verdict) = ctx.kept_verdict(path) {
            kept.push(KeptVerdict {
                companion: None,
                path: path.clone(),
                expected: pinned_digest(artifact).map(str::to_owned),
                verdict,
            });
        }
    }
    for (index, companion) in state.companions.iter().flatten().enumerate() {
        if let (false, Some(path)) = (companion.stamp_valid, &companion.snapshot) {
            if let Some(verdict) = ctx.kept_verdict(path) {
                kept.push(KeptVerdict {
                    companion: Some(index),
                    path: path.clone(),
                    expected: Some(companion.file.digest.clone()),
                    verdict,
                });
            }
        }
    }
    kept
}

fn recall(state: &mut LocalState, confirmed: Vec<KeptVerdict>) {
    for kept in confirmed {
        match kept.companion {
            None => {
                state.stamp = Some(kept.verdict);
                state.stamp_valid = true;
                state.verified_in_memory = true;
            }
            Some(index) => {
                if let Some(companion) = state.companions.as_mut().and_then(|c| c.get_mut(index)) {
                    companion.stamp_valid = true;
                    companion.source = kept.verdict.source;
                }
            }
        }
    }
}

/// What the weight file's bytes must be, when the manifest pins them: its `sha256`, else its
/// row in the locked `files`.
pub(crate) fn pinned_digest(artifact: &ModelArtifact) -> Option<&str> {
    artifact.sha256.as_deref().or(artifact
        .pinned_file(&artifact.filename)
        .map(|f| f.digest.as_str()))
}

/// The one readiness rule: the weight file on disk and verified (a valid stamp, on disk or
/// kept in memory), or, with checksum verification off, on disk with the pinned size (when one
/// is pinned); and every other file of the set known and ready by the same rule.
pub(crate) fn is_ready(
    artifact: &ModelArtifact,
    state: &LocalState,
    verify_checksums: bool,
) -> bool {
    weights_ready(artifact, state, verify_checksums) && companions_ready(state, verify_checksums)
}

/// The weight file alone is ready.
pub(crate) fn weights_ready(
    artifact: &ModelArtifact,
    state: &LocalState,
    verify_checksums: bool,
) -> bool {
    if state.snapshot.is_none() {
        return false;
    }
    if state.stamp_valid {
        return true;
    }
    !verify_checksums && artifact.size_bytes.is_none_or(|s| state.size == Some(s))
}

/// The rest of the set is known and ready.
pub(crate) fn companions_ready(state: &LocalState, verify_checksums: bool) -> bool {
    state
        .companions
        .as_ref()
        .is_some_and(|files| files.iter().all(|f| f.is_ready(verify_checksums)))
}

/// The expected hash of a present file and where it comes from: the pin, else the blob name
/// (the Hub's `X-Linked-Etag`, as written by any client), else our stamp.
pub(crate) fn expected_hash(
    artifact: &ModelArtifact,
    state: &LocalState,
) -> (Option<String>, HashSource) {
    if let Some(sha) = &artifact.sha256 {
        return (Some(sha.clone()), HashSource::Pinned);
    }
    if let Some(file) = artifact.pinned_file(&artifact.filename) {
        return (Some(file.digest.clone()), HashSource::Pinned);
    }
    if let Some(name) = state.blob_name.as_deref().and_then(|n| {
        validate_sha256(n).ok().or_else(|| {
            (DigestKind::of_hex(n) == Some(DigestKind::GitBlobSha1)).then(|| n.to_owned())
        })
    }) {
        return (Some(name), HashSource::HubAdvertised);
    }
    if let Some(stamp) = &state.stamp {
        return (Some(stamp.sha256.clone()), HashSource::HubAdvertised);
    }
    (None, HashSource::Unknown)
}

/// Blobs the active manifest needs (pairs of repo folder and blob name): those its snapshot
/// entries point at, pinned hashes, and the hashes its stamps vouch for.
pub(crate) async fn protected_blobs(ctx: &Context) -> Protected {
    let mut protected = Protected::new();
    for artifact in ctx.manifest.artifacts() {
        let folder = CacheLayout::repo_folder_name(&artifact.repo_id);
        if let Some(sha) = &artifact.sha256 {
            protected.insert((folder.clone(), sha.clone()));
        }
        let state = inspect_off_thread(&ctx.layout, artifact).await;
        if let Some(name) = state.blob_name {
            protected.insert((folder.clone(), name));
        }
        if let Some(stamp) = state.stamp {
            protected.insert((folder.clone(), stamp.sha256));
        }
        for companion in state.companions.into_iter().flatten() {
            protected.insert((folder.clone(), companion.file.digest.clone()));
            if let Some(name) = companion
                .snapshot
                .as_deref()
                .and_then(snapshot_link_blob_name)
            {
                protected.insert((folder.clone(), name));
            }
        }
    }
    protected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_id::ModelId;

    fn artifact(sha256: Option<&str>, size: Option<u64>) -> ModelArtifact {
        ModelArtifact {
            model_id: ModelId::Entity,
            repo_id: "org/model".to_owned(),
            filename: "model.safetensors".to_owned(),
            sha256: sha256.map(str::to_owned),
            size_bytes: size,
            revision: None,
            selection: Default::default(),
        }
    }

    #[test]
    fn ready_needs_a_file_and_a_valid_stamp_unless_checks_are_off() {
        let pinned = artifact(None, Some(10));
        let absent = LocalState::default();
        assert!(!is_ready(&pinned, &absent, false));
        let present = LocalState {
            snapshot: Some(PathBuf::from("/c/x")),
            size: Some(10),
            companions: Some(Vec::new()),
            ..LocalState::default()
        };
        assert!(!is_ready(&pinned, &present, true), "unverified");
        assert!(is_ready(&pinned, &present, false), "checks off, right size");
        let wrong_size = LocalState {
            size: Some(9),
            ..present.clone()
        };
        assert!(!is_ready(&pinned, &wrong_size, false));
        let stamped = LocalState {
            stamp_valid: true,
            ..wrong_size
        };
        assert!(is_ready(&pinned, &stamped, true));
        let set_unknown = LocalState {
            companions: None,
            ..stamped.clone()
        };
        assert!(!is_ready(&pinned, &set_unknown, true), "set never resolved");
        let companion_missing = LocalState {
            companions: Some(vec![CompanionState {
                file: PinnedFile {
                    path: "tokenizer.json".to_owned(),
                    size_bytes: 5,
                    kind: DigestKind::GitBlobSha1,
                    digest: "0".repeat(40),
                },
                snapshot: None,
                size: None,
                stamp_valid: false,
                source: None,
            }]),
            ..stamped
        };
        assert!(
            !is_ready(&pinned, &companion_missing, true),
            "a file of the set is missing"
        );
    }

    #[test]
    fn the_pin_beats_the_blob_name_which_beats_the_stamp() {
        let sha = "a".repeat(64);
        let blob = "b".repeat(64);
        let state = LocalState {
            blob_name: Some(blob.clone()),
            ..LocalState::default()
        };
        assert_eq!(
            expected_hash(&artifact(Some(&sha), None), &state),
            (Some(sha), HashSource::Pinned)
        );
        assert_eq!(
            expected_hash(&artifact(None, None), &state),
            (Some(blob), HashSource::HubAdvertised)
        );
        let not_a_hash = LocalState {
            blob_name: Some("0123abcd".to_owned()),
            ..LocalState::default()
        };
        assert_eq!(
            expected_hash(&artifact(None, None), &not_a_hash),
            (None, HashSource::Unknown)
        );
    }
}
