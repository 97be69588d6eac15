//! Pinning a manifest from the Hub: each entry's revision resolved to a commit, and the
//! file's SHA-256 and size read from the Hub's `paths-info` API at that commit. Gaps are
//! filled; a known pin that the Hub contradicts is reported as a change for the caller to
//! refuse or accept (a commit's content never changes, so a changed pin is a red flag).
//!
//! An entry with a preset or patterns is resolved against the tree at the commit and its
//! whole file set (path, size, SHA-256 for LFS files, git blob SHA-1 for regular ones) is
//! written as `files`, so the locked manifest needs no tree listing again: offline and
//! mirror-only nodes know every file's digest.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fileset::{add_signature, PinnedFile, RepoFile};
use super::hash::DigestKind;
use super::ids::is_commit_hash;
use super::manifest::{Manifest, ManifestEntry, ModelArtifact};
use super::model_files::tracked_branch;
use super::remote::client::HubClient;
use super::remote::tree::{check_signature_at, resolve_from_tree};
use super::signature::SignatureVerifier;
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};
use crate::model_id::ModelId;

/// One field of one entry that pinning fills or changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinChange {
    /// The model.
    pub model_id: ModelId,
    /// `revision`, `sha256`, `size_bytes`, `files` or `signed_by`.
    pub field: &'static str,
    /// The manifest's value (`None` when unknown).
    pub old: Option<String>,
    /// The Hub's value.
    pub new: String,
}

/// The result of pinning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinOutcome {
    /// The manifest with every value taken from the Hub.
    pub manifest: Manifest,
    /// Unknown values now known, and branches resolved to commits.
    pub filled: Vec<PinChange>,
    /// Known values the Hub contradicts.
    pub changed: Vec<PinChange>,
}

/// A file set in one line, for the report of what pinning changed.
fn describe_files(files: &[PinnedFile]) -> String {
    let bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
    let digests: Vec<String> = files
        .iter()
        .map(|f| format!("{}={}", f.path, &f.digest[..12.min(f.digest.len())]))
        .collect();
    format!(
        "{} files, {bytes} bytes: {}",
        files.len(),
        digests.join(" ")
    )
}

/// Asks the Hub for every artifact's commit, SHA-256 and size (and file set), and returns a
/// fully pinned manifest with the differences. Writes nothing. Fails in offline mode.
pub(crate) async fn pin(
    hub: &HubClient,
    manifest: &Manifest,
    offline: bool,
) -> EmbeddingResult<PinOutcome> {
    pin_each(
        hub,
        manifest,
        offline,
        |_| true,
        |a| a.revision_or_default().to_owned(),
        false,
    )
    .await
}

/// Moves the pins of the selected models (every artifact when `models` is empty) to the head
/// of the branch each follows (its revision when that is a branch, else `main`), with the
/// SHA-256, size and file set at that head. Every moved value is reported in `changed`
/// (`filled` when the manifest had none). Writes nothing. Fails in offline mode.
pub(crate) async fn upgrade(
    hub: &HubClient,
    manifest: &Manifest,
    models: &[ModelId],
    offline: bool,
) -> EmbeddingResult<PinOutcome> {
    pin_each(
        hub,
        manifest,
        offline,
        |a| models.is_empty() || models.contains(&a.model_id),
        tracked_branch,
        true,
    )
    .await
}

/// Pins each selected artifact at the commit `revision_of` resolves to. `revision_moves`: a
/// new revision is a change (upgrade), not a branch resolved to its commit (pin).
async fn pin_each(
    hub: &HubClient,
    manifest: &Manifest,
    offline: bool,
    selected: impl Fn(&ModelArtifact) -> bool,
    revision_of: impl Fn(&ModelArtifact) -> String,
    revision_moves: bool,
) -> EmbeddingResult<PinOutcome> {
    let mut outcome = PinOutcome {
        manifest: manifest.clone(),
        filled: Vec::new(),
        changed: Vec::new(),
    };
    let mut failures = Vec::new();
    for entry in &mut outcome.manifest.entries {
        let ManifestEntry::Artifact(artifact) = entry else {
            continue;
        };
        if !selected(artifact) {
            continue;
        }
        let location = FileLocation {
            revision: revision_of(artifact),
            ..artifact.location()
        };
        if offline {
            failures.push((
                artifact.model_id,
                EmbeddingError::OfflineMissing { location },
            ));
            continue;
        }
        let verifier = match load_verifier(manifest, artifact).await {
            Ok(verifier) => verifier,
            Err(error) => {
                failures.push((artifact.model_id, error));
                continue;
            }
        };
        match resolve_at(hub, artifact, &location, verifier.as_ref()).await {
            Ok(resolved) => apply(
                artifact,
                resolved,
                revision_moves,
                &mut outcome.filled,
                &mut outcome.changed,
            ),
            Err(error) => failures.push((artifact.model_id, error)),
        }
    }
    if !failures.is_empty() {
        return Err(EmbeddingError::DownloadsFailed(failures));
    }
    Ok(outcome)
}

/// What the Hub says an artifact is at the commit its `location`'s revision names.
struct Resolved {
    commit: String,
    /// The weight file's SHA-256 (`None` for a regular file, e.g. a safetensors index).
    sha256: Option<String>,
    size: u64,
    /// The whole set, for an entry that is more than its weight file.
    files: Option<Vec<PinnedFile>>,
    /// The SHA-256 of the signing key, when the model's policy verified a signature there.
    signed_by: Option<String>,
}

/// The model's signature policy loaded (its key or root read off the async threads).
pub(crate) async fn load_verifier(
    manifest: &Manifest,
    artifact: &ModelArtifact,
) -> EmbeddingResult<Option<SignatureVerifier>> {
    if manifest.signatures.for_model(artifact.model_id).is_none() {
        return Ok(None);
    }
    let policies = manifest.signatures.clone();
    let model_id = artifact.model_id;
    tokio::task::spawn_blocking(move || policies.verifier_for(model_id))
        .await
        .unwrap_or_else(|e| Err(EmbeddingError::Config(format!("signature policy: {e}"))))
}

/// With a signature policy (`verifier`), the set is always resolved on the tree and takes the
/// signature file when the repo has it, so the lock pins it like the rest; and the pin moves
/// only to signed content: the signature at the commit must verify under the same policy
/// against the SHA-256 of every file of the set.
async fn resolve_at(
    hub: &HubClient,
    artifact: &ModelArtifact,
    location: &FileLocation,
    verifier: Option<&SignatureVerifier>,
) -> EmbeddingResult<Resolved> {
    let signature = verifier.map(SignatureVerifier::signature_file);
    let commit = if is_commit_hash(&location.revision) {
        location.revision.clone()
    } else {
        hub.resolve_revision(location).await?
    };
    if artifact.selection.is_single_file() && signature.is_none() {
        let (sha256, size) = hub.lfs_info(location, &commit).await?;
        return Ok(Resolved {
            commit,
            sha256: Some(sha256),
            size,
            files: None,
            signed_by: None,
        });
    }
    let at_commit = FileLocation {
        revision: commit.clone(),
        ..location.clone()
    };
    let tree = hub.list_tree(&at_commit, &commit).await?;
    let selection = &artifact.selection;
    let mut files = if selection.preset.is_some() || !selection.include.is_empty() {
        // Patterns and presets define the set; a `files` list is their last resolution.
        resolve_from_tree(hub, artifact, &commit, &tree, &at_commit, &BTreeMap::new()).await?
    } else {
        listed_at(artifact, &tree, &at_commit)?
    };
    add_signature(&mut files, &tree, signature);
    let signed_by = match verifier {
        Some(verifier) => check_signature_at(hub, artifact, &at_commit, &files, verifier)
            .await?
            .map(|v| v.signer_key_sha256),
        None => None,
    };
    let weights = files
        .iter()
        .find(|f| f.path == artifact.filename)
        .ok_or_else(|| EmbeddingError::Protocol {
            location: at_commit.clone(),
            reason: "the resolved set lacks the weight file".to_owned(),
        })?;
    Ok(Resolved {
        sha256: (weights.kind == DigestKind::Sha256).then(|| weights.digest.clone()),
        size: weights.size_bytes,
        commit,
        files: Some(files),
        signed_by,
    })
}

/// An explicit list (`files` without patterns) as the tree has it at the commit: the same
/// paths, the tree's sizes and digests.
fn listed_at(
    artifact: &ModelArtifact,
    tree: &[RepoFile],
    at_commit: &FileLocation,
) -> EmbeddingResult<Vec<PinnedFile>> {
    let mut paths: Vec<&str> = artifact
        .selection
        .files
        .iter()
        .flatten()
        .map(|f| f.path.as_str())
        .collect();
    if !paths.contains(&artifact.filename.as_str()) {
        paths.insert(0, &artifact.filename);
    }
    paths
        .into_iter()
        .map(|path| {
            tree.iter()
                .find(|f| f.path == path)
                .map(RepoFile::pinned)
                .ok_or_else(|| EmbeddingError::Protocol {
                    location: at_commit.clone(),
                    reason: format!(
                        "the manifest lists `{path}`, which the repo does not have at commit {}",
                        at_commit.revision
                    ),
                })
        })
        .collect()
}

/// Writes `resolved` into the entry, reporting each value: `filled` where the entry had none,
/// `changed` where it had another.
fn apply(
    artifact: &mut ModelArtifact,
    resolved: Resolved,
    revision_moves: bool,
    filled: &mut Vec<PinChange>,
    changed: &mut Vec<PinChange>,
) {
    let model_id = artifact.model_id;
    let mut record = |field: &'static str, old: Option<String>, new: String| match old {
        None => filled.push(PinChange {
            model_id,
            field,
            old: None,
            new,
        }),
        Some(old) if old != new => {
            // Pinning a branch to its commit fills the pin; moving a commit changes it.
            let to = if field == "revision" && !revision_moves {
                &mut *filled
            } else {
                &mut *changed
            };
            to.push(PinChange {
                model_id,
                field,
                old: Some(old),
                new,
            });
        }
        Some(_) => {}
    };
    // The branch the pin tracks (the revision it came from, else `main`), so `ensure` can
    // write `refs/<branch>` for consumers that name the branch once the Hub confirms it.
    if artifact.branch.is_none() {
        let branch = tracked_branch(artifact);
        record("branch", None, branch.clone());
        artifact.branch = Some(branch);
    }
    record(
        "revision",
        artifact.revision.clone(),
        resolved.commit.clone(),
    );
    if let Some(sha256) = &resolved.sha256 {
        record("sha256", artifact.sha256.clone(), sha256.clone());
    }
    record(
        "size_bytes",
        artifact.size_bytes.map(|s| s.to_string()),
        resolved.size.to_string(),
    );
    if let Some(files) = &resolved.files {
        record(
            "files",
            artifact.selection.files.as_deref().map(describe_files),
            describe_files(files),
        );
    }
    if let Some(signer) = &resolved.signed_by {
        // A new signing key for the same policy (a certificate policy trusts a root and an
        // identity, not one key) is a change to review like any other.
        record("signed_by", artifact.signed_by.clone(), signer.clone());
    }
    artifact.signed_by = resolved.signed_by;
    artifact.revision = Some(resolved.commit);
    artifact.sha256 = resolved.sha256;
    artifact.size_bytes = Some(resolved.size);
    if let Some(files) = resolved.files {
        artifact.selection.files = Some(files);
    }
}
