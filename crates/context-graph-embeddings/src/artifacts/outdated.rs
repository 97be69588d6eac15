//! Whether pins are stale: for each model, the head of the branch it follows against the
//! commit it pins, and for each of its files whether the hash or size changed between them.
//! One revision call and one paths-info call per repo and branch (a second paths-info call at
//! the pinned commit only when the manifest does not pin a file's hash or size). Reads only;
//! it never moves a pin (that is [`super::pinning::upgrade`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::fileset::{PinnedFile, RepoFile};
use super::hash::DigestKind;
use super::manifest::{Manifest, ModelArtifact};
use super::model_files::{files_of, tracked_branch};
use super::remote::client::HubClient;
use super::remote::tree::check_signature_at;
use super::signature::SignatureVerifier;
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};
use crate::model_id::ModelId;

/// How a model's pin compares with the head of its branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// The pinned commit is the branch head.
    UpToDate,
    /// The branch moved, but every file of the model is the same at the head.
    Behind,
    /// A file's hash or size differs at the head, or the file is gone.
    Changed,
    /// The entry follows a branch (no commit pinned) and its files match their pins at the
    /// head, or pin nothing.
    Following,
}

/// How one file compares between the pinned commit and the branch head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// Same hash and size.
    Unchanged,
    /// Hash or size differ.
    Changed,
    /// Not at the branch head any more.
    Removed,
    /// Nothing to compare with (not pinned and not known at the pinned commit).
    Unknown,
}

/// One file of a model, pinned against head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDrift {
    /// Path inside the repo.
    pub path: String,
    /// What the digests are: SHA-256 (the weight file, LFS files) or git blob SHA-1 (regular
    /// files such as `config.json`).
    pub digest_kind: DigestKind,
    /// The digest at the pin (the manifest's, else the Hub's at the pinned commit).
    pub pinned_digest: Option<String>,
    /// The digest at the branch head.
    pub head_digest: Option<String>,
    /// The size at the pin.
    pub pinned_size: Option<u64>,
    /// The size at the branch head.
    pub head_size: Option<u64>,
    /// The verdict.
    pub change: FileChange,
}

/// One model's pin against the head of its branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelDrift {
    /// The model.
    pub model_id: ModelId,
    /// Its repo.
    pub repo_id: String,
    /// The branch compared with (the entry's revision when it is a branch, else `main`).
    pub branch: String,
    /// The pinned commit (`None` when the entry names a branch).
    pub pinned_commit: Option<String>,
    /// Where the branch points now.
    pub head_commit: String,
    /// The verdict.
    pub state: DriftState,
    /// Every file of the model.
    pub files: Vec<FileDrift>,
    /// Why the head's files do not verify under the model's signature policy, when it has
    /// one and the head is not the pin: `lock --upgrade` refuses to move the pin there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_signature_refused: Option<String>,
}

impl ModelDrift {
    /// Whether the pin is stale (the branch moved, or a pinned file changed).
    pub fn is_outdated(&self) -> bool {
        matches!(self.state, DriftState::Behind | DriftState::Changed)
    }
}

/// Compares every selected model (all artifacts when `models` is empty) with its branch
/// head. Fails in offline mode; one error lists every model that could not be checked.
pub(crate) async fn check(
    hub: &HubClient,
    manifest: &Manifest,
    models: &[ModelId],
    offline: bool,
) -> EmbeddingResult<Vec<ModelDrift>> {
    let selected: Vec<&ModelArtifact> = manifest
        .artifacts()
        .filter(|a| models.is_empty() || models.contains(&a.model_id))
        .collect();
    // Models of one repo and branch share their calls.
    let mut groups: Vec<(String, String, Vec<&ModelArtifact>)> = Vec::new();
    for artifact in selected {
        let branch = tracked_branch(artifact);
        match groups
            .iter_mut()
            .find(|(repo, b, _)| *repo == artifact.repo_id && *b == branch)
        {
            Some((_, _, members)) => members.push(artifact),
            None => groups.push((artifact.repo_id.clone(), branch, vec![artifact])),
        }
    }
    let mut drifts = Vec::new();
    let mut failures = Vec::new();
    let mut verifiers = BTreeMap::new();
    for (_, _, members) in &groups {
        for artifact in members {
            if manifest.signatures.for_model(artifact.model_id).is_none() {
                continue;
            }
            let policies = manifest.signatures.clone();
            let model_id = artifact.model_id;
            let loaded = tokio::task::spawn_blocking(move || policies.verifier_for(model_id))
                .await
                .unwrap_or_else(|e| Err(EmbeddingError::Config(format!("signature policy: {e}"))));
            match loaded {
                Ok(Some(verifier)) => {
                    verifiers.insert(model_id, verifier);
                }
                Ok(None) => {}
                Err(error) => failures.push((model_id, error)),
            }
        }
    }
    for (_, branch, members) in groups {
        if offline {
            for artifact in &members {
                failures.push((
                    artifact.model_id,
                    EmbeddingError::OfflineMissing {
                        location: artifact.location(),
                    },
                ));
            }
            continue;
        }
        match check_group(hub, &branch, &members, &verifiers).await {
            Ok(mut found) => drifts.append(&mut found),
            // The repo's calls failed: named by its first model (the error names the repo).
            Err(error) => failures.push((members[0].model_id, error)),
        }
    }
    if !failures.is_empty() {
        return Err(EmbeddingError::DownloadsFailed(failures));
    }
    // Manifest order.
    drifts.sort_by_key(|d| {
        manifest
            .entries
            .iter()
            .position(|e| e.model_id() == d.model_id)
    });
    Ok(drifts)
}

async fn check_group(
    hub: &HubClient,
    branch: &str,
    members: &[&ModelArtifact],
    verifiers: &BTreeMap<ModelId, SignatureVerifier>,
) -> EmbeddingResult<Vec<ModelDrift>> {
    let location = FileLocation {
        revision: branch.to_owned(),
        ..members[0].location()
    };
    let head = hub.resolve_revision(&location).await?;
    let mut paths: Vec<String> = members
        .iter()
        .flat_map(|a| files_of(a).into_iter().map(|f| f.path))
        .collect();
    // A signature file the pins do not name yet is asked about too.
    for verifier in members.iter().filter_map(|a| verifiers.get(&a.model_id)) {
        let file = verifier.signature_file().to_owned();
        if !paths.contains(&file) {
            paths.push(file);
        }
    }
    let at_head = hub.paths_info(&location, &head, &paths).await?;
    let mut drifts = Vec::new();
    for artifact in members {
        let pinned_commit = artifact
            .revision_is_commit()
            .then(|| artifact.revision_or_default().to_owned());
        let files = files_of(artifact);
        let needs_old = pinned_commit.as_deref().is_some_and(|c| c != head)
            && files.iter().any(|f| f.digest.is_none() || f.size.is_none());
        let at_pin = match (&pinned_commit, needs_old) {
            (Some(commit), true) => hub.paths_info(&artifact.location(), commit, &paths).await?,
            _ => Vec::new(),
        };
        let files: Vec<FileDrift> = files
            .into_iter()
            .map(|file| {
                let kind = file.kind;
                let old = find(&at_pin, &file.path);
                let new = find(&at_head, &file.path);
                let pinned_digest = file.digest.or_else(|| old.and_then(|o| digest_of(o, kind)));
                let pinned_size = file.size.or_else(|| old.map(|o| o.size));
                let head_digest = new.and_then(|n| digest_of(n, kind));
                let head_size = new.map(|n| n.size);
                // A pin at the head itself is what the head has, pinned or not.
                let at_head_commit = pinned_commit.as_deref() == Some(head.as_str());
                let (pinned_digest, pinned_size) = if at_head_commit {
                    (
                        pinned_digest.or_else(|| head_digest.clone()),
                        pinned_size.or(head_size),
                    )
                } else {
                    (pinned_digest, pinned_size)
                };
                let change = file_change(
                    new.is_some(),
                    (pinned_digest.as_deref(), head_digest.as_deref()),
                    (pinned_size, head_size),
                );
                FileDrift {
                    path: file.path,
                    digest_kind: kind,
                    pinned_digest,
                    head_digest,
                    pinned_size,
                    head_size,
                    change,
                }
            })
            .collect();
        let state = model_state(pinned_commit.as_deref(), &head, &files);
        // The head's versions of the pinned files (and the signature) must verify under the
        // same policy before a pin may move there.
        let head_signature_refused = match verifiers.get(&artifact.model_id) {
            Some(verifier) if pinned_commit.as_deref() != Some(head.as_str()) => {
                let mut at_head_set: Vec<PinnedFile> = files
                    .iter()
                    .filter_map(|f| find(&at_head, &f.path).map(RepoFile::pinned))
                    .collect();
                if !at_head_set
                    .iter()
                    .any(|f| f.path == verifier.signature_file())
                {
                    if let Some(sig) = find(&at_head, verifier.signature_file()) {
                        at_head_set.push(sig.pinned());
                    }
                }
                let head_location = FileLocation {
                    revision: head.clone(),
                    ..artifact.location()
                };
                check_signature_at(hub, artifact, &head_location, &at_head_set, verifier)
                    .await
                    .err()
                    .map(|e| e.to_string())
            }
            _ => None,
        };
        drifts.push(ModelDrift {
            model_id: artifact.model_id,
            repo_id: artifact.repo_id.clone(),
            branch: branch.to_owned(),
            pinned_commit,
            head_commit: head.clone(),
            state,
            files,
            head_signature_refused,
        });
    }
    Ok(drifts)
}

fn find<'a>(listed: &'a [RepoFile], path: &str) -> Option<&'a RepoFile> {
    listed.iter().find(|p| p.path == path)
}

/// A listed file's digest of `kind`: the LFS SHA-256, or the git blob id. A file that stopped
/// or started being stored with LFS has no digest of the other kind, so it compares changed.
fn digest_of(file: &RepoFile, kind: DigestKind) -> Option<String> {
    match kind {
        DigestKind::Sha256 => file.lfs_sha256.clone(),
        DigestKind::GitBlobSha1 => (file.lfs_sha256.is_none()).then(|| file.oid.clone()),
    }
}

/// One file's verdict: gone at the head, a known value that differs, nothing known to compare,
/// or the same.
fn file_change(
    at_head: bool,
    sha: (Option<&str>, Option<&str>),
    size: (Option<u64>, Option<u64>),
) -> FileChange {
    if !at_head {
        return FileChange::Removed;
    }
    let sha_differs = matches!(sha, (Some(a), Some(b)) if a != b);
    let size_differs = matches!(size, (Some(a), Some(b)) if a != b);
    if sha_differs || size_differs {
        return FileChange::Changed;
    }
    let comparable = matches!(sha, (Some(_), Some(_))) || matches!(size, (Some(_), Some(_)));
    if comparable {
        FileChange::Unchanged
    } else {
        FileChange::Unknown
    }
}

/// A model's verdict from its pinned commit, the head and its files.
fn model_state(pinned_commit: Option<&str>, head: &str, files: &[FileDrift]) -> DriftState {
    let changed = files
        .iter()
        .any(|f| matches!(f.change, FileChange::Changed | FileChange::Removed));
    match pinned_commit {
        _ if changed => DriftState::Changed,
        None => DriftState::Following,
        Some(commit) if commit == head => DriftState::UpToDate,
        Some(_) => DriftState::Behind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(change: FileChange) -> FileDrift {
        FileDrift {
            path: "model.safetensors".to_owned(),
            digest_kind: DigestKind::Sha256,
            pinned_digest: None,
            head_digest: None,
            pinned_size: None,
            head_size: None,
            change,
        }
    }

    #[test]
    fn files_compare_by_hash_and_size() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(
            file_change(false, (Some(&a), Some(&a)), (None, None)),
            FileChange::Removed
        );
        assert_eq!(
            file_change(true, (Some(&a), Some(&b)), (Some(1), Some(1))),
            FileChange::Changed
        );
        assert_eq!(
            file_change(true, (Some(&a), Some(&a)), (Some(1), Some(2))),
            FileChange::Changed
        );
        assert_eq!(
            file_change(true, (Some(&a), Some(&a)), (Some(1), Some(1))),
            FileChange::Unchanged
        );
        assert_eq!(
            file_change(true, (None, Some(&a)), (None, Some(1))),
            FileChange::Unknown
        );
    }

    #[test]
    fn a_moved_branch_is_behind_unless_a_file_changed() {
        let (pin, head) = ("1".repeat(40), "2".repeat(40));
        let same = [file(FileChange::Unchanged)];
        let changed = [file(FileChange::Changed)];
        assert_eq!(model_state(Some(&head), &head, &same), DriftState::UpToDate);
        assert_eq!(model_state(Some(&pin), &head, &same), DriftState::Behind);
        assert_eq!(
            model_state(Some(&pin), &head, &changed),
            DriftState::Changed
        );
        assert_eq!(model_state(None, &head, &same), DriftState::Following);
        assert_eq!(
            model_state(None, &head, &[file(FileChange::Removed)]),
            DriftState::Changed
        );
    }
}
