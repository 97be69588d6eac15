//! What the cache holds for one model, from metadata only (a `stat`, the ref, the stamp), and
//! the one readiness rule every caller uses: a valid stamp (on disk, or kept in memory by this
//! process where the cache is read-only), or, with checksum verification off, the right size.

use std::path::PathBuf;

use serde::Serialize;

use super::context::Context;
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
        let path = layout.snapshot_path(repo, commit, &artifact.filename);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() && entry_stays_inside(&path) {
                state.size = Some(meta.len());
                state.blob_name = snapshot_link_blob_name(&path);
                let stamp =
                    VerificationStamp::read(&layout.stamp_path(repo, commit, &artifact.filename));
                if let Some(stamp) = stamp {
                    state.stamp_valid = stamp.is_valid_for(&path, artifact.sha256.as_deref());
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
/// written (a read-only cache). Blocking, like [`inspect`].
pub(crate) fn inspect_in(ctx: &Context, artifact: &ModelArtifact) -> LocalState {
    let mut state = inspect(&ctx.layout, artifact);
    if let (Some(kept), Some(path)) = (kept_verdict(ctx, &state), state.snapshot.clone()) {
        if kept.is_valid_for(&path, artifact.sha256.as_deref()) {
            recall(&mut state, kept);
        }
    }
    state
}

/// [`inspect_in`] on a blocking thread.
pub(crate) async fn inspect_in_off_thread(ctx: &Context, artifact: &ModelArtifact) -> LocalState {
    let mut state = inspect_off_thread(&ctx.layout, artifact).await;
    if let (Some(kept), Some(path)) = (kept_verdict(ctx, &state), state.snapshot.clone()) {
        let expected = artifact.sha256.clone();
        let checked = kept.clone();
        let valid =
            tokio::task::spawn_blocking(move || checked.is_valid_for(&path, expected.as_deref()))
                .await
                .unwrap_or(false);
        if valid {
            recall(&mut state, kept);
        }
    }
    state
}

fn kept_verdict(ctx: &Context, state: &LocalState) -> Option<VerificationStamp> {
    if state.stamp_valid {
        return None;
    }
    ctx.kept_verdict(state.snapshot.as_deref()?)
}

fn recall(state: &mut LocalState, kept: VerificationStamp) {
    state.stamp = Some(kept);
    state.stamp_valid = true;
    state.verified_in_memory = true;
}

/// The one readiness rule: on disk and verified (a valid stamp, on disk or kept in memory), or, with checksum
/// verification off, on disk with the pinned size (when one is pinned).
pub(crate) fn is_ready(
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

/// The expected hash of a present file and where it comes from: the pin, else the blob name
/// (the Hub's `X-Linked-Etag`, as written by any client), else our stamp.
pub(crate) fn expected_hash(
    artifact: &ModelArtifact,
    state: &LocalState,
) -> (Option<String>, HashSource) {
    if let Some(sha) = &artifact.sha256 {
        return (Some(sha.clone()), HashSource::Pinned);
    }
    if let Some(name) = state
        .blob_name
        .as_deref()
        .and_then(|n| validate_sha256(n).ok())
    {
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
            protected.insert((folder, stamp.sha256));
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
