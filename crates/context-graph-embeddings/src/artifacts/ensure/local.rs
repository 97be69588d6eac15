//! What the cache holds for one model, from metadata only: its plan as the cache alone can
//! make it (`plan.rs`), then for every planned file its snapshot entry (a `stat`), its stamp
//! and any verdict this process kept in memory; and the one readiness rule every caller uses:
//! the set is known and every file of it is verified (a valid stamp, on disk or kept in
//! memory where the cache is read-only), or, with checksum verification off, of the right size.
//! The weight file is the first row, nothing more.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::context::{CacheView, Context};
use super::plan::{
    pinned_weights, plan_at, plan_locally, signature_record, FileRole, PlannedFile, SetOrigin,
};
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::signature::{SignatureMode, SignaturePolicy};
use crate::artifacts::store::budget::Protected;
use crate::artifacts::store::fs::link_at_or_above;
use crate::artifacts::store::layout::{
    entry_stays_inside, partial_files, snapshot_link_blob_name, CacheLayout,
};
use crate::artifacts::store::stamp::{SignatureStamp, VerificationStamp};

/// Where the expected hash of a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashSource {
    /// Pinned in the manifest.
    Pinned,
    /// Advertised by the Hub (`X-Linked-Etag`, the tree listing) at the revision, as the
    /// cache recorded it (the blob name, a listing, our stamp).
    HubAdvertised,
    /// Not known yet (unpinned and never downloaded).
    Unknown,
}

/// A snapshot entry as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Nothing at the path.
    Absent,
    /// Something whose bytes are not the cache's: a link that leaves the cache (the entry or
    /// a folder above it, up to the repo folder; this is the link), or not a regular file.
    Foreign(PathBuf),
    /// A file (or a link of the cache's shape to a blob) whose bytes stay inside the cache.
    Present {
        /// The entry.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The blob its link names, when it is a link.
        blob_name: Option<String>,
    },
}

/// What the cache holds for one planned file.
#[derive(Debug, Clone)]
pub(crate) struct FileState {
    /// The file and what it must be.
    pub(crate) file: PlannedFile,
    /// Its snapshot entry.
    pub(crate) entry: Entry,
    /// The stamp (or the verdict kept in memory) that vouches for it, if any.
    pub(crate) stamp: Option<VerificationStamp>,
    /// Whether that stamp still vouches for the entry (and for the planned digest).
    pub(crate) stamp_valid: bool,
    /// Whether the valid stamp is this process's verdict kept in memory.
    pub(crate) verified_in_memory: bool,
}

impl FileState {
    /// The entry's path, when its bytes stay inside the cache.
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.entry {
            Entry::Present { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The entry's size, when present.
    pub(crate) fn size(&self) -> Option<u64> {
        match &self.entry {
            Entry::Present { size, .. } => Some(*size),
            _ => None,
        }
    }

    /// Verified, or (checks off) present with the planned size.
    pub(crate) fn is_ready(&self, verify_checksums: bool) -> bool {
        match &self.entry {
            Entry::Present { size, .. } => {
                self.stamp_valid || (!verify_checksums && self.file.size.is_none_or(|s| s == *size))
            }
            _ => false,
        }
    }
}

/// Where a model stands with its signature policy, from the cache's records alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureState {
    /// No policy applies to the model.
    NotRequired,
    /// `if-present`, and the set has no signature file: accepted unsigned.
    Unsigned,
    /// A verdict (on disk, or kept in memory where the cache is read-only) holds for every
    /// file of the set as its stamps vouch for it now.
    Verified {
        /// The signer in words.
        signer: String,
    },
    /// A policy applies and no verdict holds: not checked yet, checked against other files,
    /// or (under `required`) the set has no signature file.
    Unchecked {
        /// The signature file the policy names.
        file: String,
        /// Whether the set has it.
        in_set: bool,
    },
}

impl SignatureState {
    /// Whether the signature lets the model be ready.
    pub(crate) fn accepts(&self) -> bool {
        !matches!(self, SignatureState::Unchecked { .. })
    }

    /// The signer, when verified.
    pub(crate) fn signer(&self) -> Option<&str> {
        match self {
            SignatureState::Verified { signer } => Some(signer),
            _ => None,
        }
    }
}

/// A policy as the key of its verdicts: its plain data and the folder its relative paths are
/// taken from (a verdict under another key or root does not hold).
pub(crate) fn policy_key(policy: &SignaturePolicy, base_dir: Option<&Path>) -> String {
    format!("{policy:?} in {base_dir:?}")
}

/// What the cache holds for one model.
#[derive(Debug, Clone)]
pub(crate) struct LocalState {
    /// The commit the revision resolves to locally (the revision itself, or its ref).
    pub(crate) commit: Option<String>,
    /// Where the list of files came from; `None` when nothing local says which files make up
    /// the set (then `files` holds the weight file alone).
    pub(crate) origin: Option<SetOrigin>,
    /// Every planned file, the weight file first (never empty).
    pub(crate) files: Vec<FileState>,
    /// Bytes of the largest partial download of the weight file's blob.
    pub(crate) partial_bytes: u64,
    /// The model's signature under its policy.
    pub(crate) signature: SignatureState,
}

impl LocalState {
    /// The weight file's row.
    pub(crate) fn weights(&self) -> &FileState {
        &self.files[0]
    }

    /// The one readiness rule (see the module note). A signature policy adds one check,
    /// whatever `verify_checksums` says: its verdict must hold.
    pub(crate) fn is_ready(&self, verify_checksums: bool) -> bool {
        self.origin.is_some()
            && self.files.iter().all(|f| f.is_ready(verify_checksums))
            && self.signature.accepts()
    }

    /// Whether every file is verified (stamps), whatever the signature says.
    pub(crate) fn files_verified(&self) -> bool {
        self.origin.is_some() && self.files.iter().all(|f| f.stamp_valid)
    }

    /// Whether every file of a known set is present (verified or not).
    pub(crate) fn all_present(&self) -> bool {
        self.origin.is_some() && self.files.iter().all(|f| f.path().is_some())
    }
}

/// Reads the local state of one model. Blocking (a few `stat`s and small reads): async callers
/// use [`inspect_async`].
pub(crate) fn inspect(view: &CacheView, artifact: &ModelArtifact) -> LocalState {
    let (commit, plan) = plan_locally(view, artifact);
    state_of(view, artifact, commit, plan)
}

/// [`inspect`] at a given commit (one whose refs may not be written yet). Blocking.
pub(crate) fn inspect_at(view: &CacheView, artifact: &ModelArtifact, commit: &str) -> LocalState {
    let plan = plan_at(view, artifact, commit);
    state_of(view, artifact, Some(commit.to_owned()), plan)
}

fn state_of(
    view: &CacheView,
    artifact: &ModelArtifact,
    commit: Option<String>,
    plan: Option<super::plan::ModelPlan>,
) -> LocalState {
    let origin = plan.as_ref().map(|p| p.origin);
    let planned = match plan {
        Some(plan) => plan.files,
        None => vec![PlannedFile {
            path: artifact.filename.clone(),
            size: artifact.size_bytes,
            digest: pinned_weights(artifact),
            role: FileRole::Weights,
        }],
    };
    let files: Vec<FileState> = planned
        .into_iter()
        .map(|file| inspect_file(view, &artifact.repo_id, commit.as_deref(), file))
        .collect();
    let signature = signature_state(view, artifact, commit.as_deref(), origin, &files);
    let partial_bytes = match (&files[0].entry, &files[0].file.digest) {
        (Entry::Present { .. }, _) | (_, None) => 0,
        (_, Some(digest)) => partial_files(&view.layout.blobs_dir(&artifact.repo_id), digest.hex())
            .first()
            .map_or(0, |p| p.1),
    };
    LocalState {
        commit,
        origin,
        files,
        partial_bytes,
        signature,
    }
}

/// The model's signature state from its policy and the verdict recorded for the set (a read
/// of one small record, only when every file is stamped). Blocking.
fn signature_state(
    view: &CacheView,
    artifact: &ModelArtifact,
    commit: Option<&str>,
    origin: Option<SetOrigin>,
    files: &[FileState],
) -> SignatureState {
    let Some(policy) = view.signatures.for_model(artifact.model_id) else {
        return SignatureState::NotRequired;
    };
    let in_set = files.iter().any(|f| f.file.role == FileRole::Signature);
    let unchecked = SignatureState::Unchecked {
        file: policy.file.clone(),
        in_set,
    };
    if !in_set {
        return if policy.mode == SignatureMode::IfPresent && origin.is_some() {
            SignatureState::Unsigned
        } else {
            unchecked
        };
    }
    let Some(commit) = commit else {
        return unchecked;
    };
    let mut digests = Vec::with_capacity(files.len());
    for file in files {
        match (&file.stamp, file.stamp_valid) {
            (Some(stamp), true) => digests.push((file.file.path.as_str(), stamp.sha256.as_str())),
            _ => return unchecked,
        }
    }
    let key = policy_key(policy, view.signatures.base_dir.as_deref());
    let record = signature_record(&view.layout, artifact, commit, &key);
    SignatureStamp::read(&record)
        .filter(|r| r.holds_for(&key, digests.iter().copied()))
        .or_else(|| {
            view.memory
                .kept_signature(&record)
                .filter(|r| r.holds_for(&key, digests.iter().copied()))
        })
        .map_or(unchecked, |r| SignatureState::Verified { signer: r.signer })
}

/// [`inspect`] on a blocking thread.
pub(crate) async fn inspect_async(ctx: &Context, artifact: &ModelArtifact) -> LocalState {
    let view = ctx.view();
    let owned = artifact.clone();
    match tokio::task::spawn_blocking(move || inspect(&view, &owned)).await {
        Ok(state) => state,
        // The blocking pool is gone (the runtime shuts down): nothing is known.
        Err(_) => LocalState {
            commit: None,
            origin: None,
            files: vec![FileState {
                file: PlannedFile {
                    path: artifact.filename.clone(),
                    size: artifact.size_bytes,
                    digest: pinned_weights(artifact),
                    role: FileRole::Weights,
                },
                entry: Entry::Absent,
                stamp: None,
                stamp_valid: false,
                verified_in_memory: false,
            }],
            partial_bytes: 0,
            signature: SignatureState::NotRequired,
        },
    }
}

/// The state of one planned file at `commit`. Blocking.
pub(crate) fn inspect_file(
    view: &CacheView,
    repo: &str,
    commit: Option<&str>,
    file: PlannedFile,
) -> FileState {
    let mut state = FileState {
        file,
        entry: Entry::Absent,
        stamp: None,
        stamp_valid: false,
        verified_in_memory: false,
    };
    let Some(commit) = commit else {
        return state;
    };
    let path = view.layout.snapshot_path(repo, commit, &state.file.path);
    state.entry = entry_at(&path);
    let Entry::Present { .. } = state.entry else {
        return state;
    };
    let expected = state.file.digest.as_ref().map(|d| d.hex().to_owned());
    if let Some(stamp) =
        VerificationStamp::read(&view.layout.stamp_path(repo, commit, &state.file.path))
    {
        state.stamp_valid = stamp.is_valid_for(&path, expected.as_deref());
        state.stamp = Some(stamp);
    }
    if !state.stamp_valid {
        if let Some(kept) = view
            .memory
            .kept_verdict(&path)
            .filter(|v| v.is_valid_for(&path, expected.as_deref()))
        {
            state.stamp = Some(kept);
            state.stamp_valid = true;
            state.verified_in_memory = true;
        }
    }
    state
}

/// What is at a snapshot entry's path, never following a link out of the cache. Blocking.
pub(crate) fn entry_at(path: &Path) -> Entry {
    if entry_stays_inside(path) {
        return match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => Entry::Present {
                path: path.to_path_buf(),
                size: meta.len(),
                blob_name: snapshot_link_blob_name(path),
            },
            _ => Entry::Foreign(path.to_path_buf()),
        };
    }
    if let Some(link) = link_at_or_above(path) {
        return Entry::Foreign(link);
    }
    match path.symlink_metadata() {
        Ok(_) => Entry::Foreign(path.to_path_buf()),
        Err(_) => Entry::Absent,
    }
}

/// The weight file's expected digest and where it comes from: the pin, else what the cache
/// recorded from the Hub (the blob name, the tree listing, our stamp).
pub(crate) fn expected_hash(
    artifact: &ModelArtifact,
    state: &LocalState,
) -> (Option<String>, HashSource) {
    let digest = state
        .weights()
        .file
        .digest
        .as_ref()
        .map(|d| d.hex().to_owned());
    let source = if pinned_weights(artifact).is_some() {
        HashSource::Pinned
    } else if digest.is_some() {
        HashSource::HubAdvertised
    } else {
        HashSource::Unknown
    };
    (digest, source)
}

/// Blobs the active manifest needs (pairs of repo folder and blob name): the planned digests,
/// the blobs its snapshot entries point at, and the hashes its stamps vouch for.
pub(crate) async fn protected_blobs(ctx: &Context) -> Protected {
    let mut protected = Protected::new();
    for artifact in ctx.manifest.artifacts() {
        let folder = CacheLayout::repo_folder_name(&artifact.repo_id);
        if let Some(digest) = pinned_weights(artifact) {
            protected.insert((folder.clone(), digest.hex().to_owned()));
        }
        let state = inspect_async(ctx, artifact).await;
        for file in state.files {
            if let Some(digest) = &file.file.digest {
                protected.insert((folder.clone(), digest.hex().to_owned()));
            }
            if let Entry::Present {
                blob_name: Some(name),
                ..
            } = file.entry
            {
                protected.insert((folder.clone(), name));
            }
            if let Some(stamp) = file.stamp {
                protected.insert((folder.clone(), stamp.sha256));
            }
        }
    }
    protected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::transfer::request::ExpectedDigest;

    fn file_state(entry: Entry, stamp_valid: bool) -> FileState {
        FileState {
            file: PlannedFile {
                path: "model.safetensors".to_owned(),
                size: Some(10),
                digest: Some(ExpectedDigest::Sha256("a".repeat(64))),
                role: FileRole::Weights,
            },
            entry,
            stamp: None,
            stamp_valid,
            verified_in_memory: false,
        }
    }

    fn present(size: u64) -> Entry {
        Entry::Present {
            path: PathBuf::from("/c/x"),
            size,
            blob_name: None,
        }
    }

    #[test]
    fn ready_needs_a_known_set_and_every_file_verified_unless_checks_are_off() {
        let state = |files: Vec<FileState>, origin: Option<SetOrigin>| LocalState {
            commit: Some("c".repeat(40)),
            origin,
            files,
            partial_bytes: 0,
            signature: SignatureState::NotRequired,
        };
        let one = Some(SetOrigin::SingleFile);
        assert!(!state(vec![file_state(Entry::Absent, false)], one).is_ready(false));
        let unverified = state(vec![file_state(present(10), false)], one);
        assert!(!unverified.is_ready(true), "unverified");
        assert!(unverified.is_ready(false), "checks off, right size");
        assert!(!state(vec![file_state(present(9), false)], one).is_ready(false));
        assert!(state(vec![file_state(present(9), true)], one).is_ready(true));
        assert!(
            !state(vec![file_state(present(10), true)], None).is_ready(true),
            "set never resolved"
        );
        let foreign = state(
            vec![
                file_state(present(10), true),
                file_state(Entry::Foreign(PathBuf::from("/c/1_Pooling")), true),
            ],
            one,
        );
        assert!(
            !foreign.is_ready(true),
            "a link out of the cache is never ready"
        );
        assert!(!foreign.all_present());
        let mut unsigned = state(vec![file_state(present(10), true)], one);
        unsigned.signature = SignatureState::Unchecked {
            file: "model.sig".to_owned(),
            in_set: true,
        };
        assert!(
            !unsigned.is_ready(true) && !unsigned.is_ready(false),
            "a signature no verdict vouches for is never ready, checks on or off"
        );
        unsigned.signature = SignatureState::Verified {
            signer: "P-256 key sha256:0123".to_owned(),
        };
        assert!(unsigned.is_ready(true));
    }

    #[test]
    fn a_planted_folder_link_is_foreign_and_names_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("config.json"), b"{}").unwrap();
        let snapshot = dir.path().join("models--o--m/snapshots/c");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::os::unix::fs::symlink(&outside, snapshot.join("1_Pooling")).unwrap();
        let entry = entry_at(&snapshot.join("1_Pooling/config.json"));
        assert_eq!(entry, Entry::Foreign(snapshot.join("1_Pooling")));
        assert_eq!(entry_at(&snapshot.join("absent.json")), Entry::Absent);
        std::fs::write(snapshot.join("copy.json"), b"{}").unwrap();
        assert!(matches!(
            entry_at(&snapshot.join("copy.json")),
            Entry::Present { size: 2, .. }
        ));
    }
}
