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

use super::fileset::PinnedFile;
use super::hash::DigestKind;
use super::ids::is_commit_hash;
use super::manifest::{Manifest, ManifestEntry};
use super::model_files::tracked_branch;
use super::remote::client::HubClient;
use super::remote::tree::resolve_from_tree;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// One field of one entry that pinning fills or changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinChange {
    /// The model.
    pub model_id: ModelId,
    /// `revision`, `sha256`, `size_bytes` or `files`.
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

/// Asks the Hub for every artifact's commit, SHA-256 and size, and returns a fully pinned
/// manifest with the differences. Writes nothing. Fails in offline mode.
pub(crate) async fn pin(
    hub: &HubClient,
    manifest: &Manifest,
    offline: bool,
) -> EmbeddingResult<PinOutcome> {
    let mut manifest = manifest.clone();
    let mut filled = Vec::new();
    let mut changed = Vec::new();
    let mut failures = Vec::new();
    for entry in &mut manifest.entries {
        let ManifestEntry::Artifact(artifact) = entry else {
            continue;
        };
        let location = artifact.location();
        if offline {
            failures.push((
                artifact.model_id,
                EmbeddingError::OfflineMissing { location },
            ));
            continue;
        }
        let result = async {
            let commit = if is_commit_hash(&location.revision) {
                location.revision.clone()
            } else {
                hub.resolve_revision(&location).await?
            };
            if artifact.selection.is_single_file() {
                let (sha256, size) = hub.lfs_info(&location, &commit).await?;
                return Ok::<_, EmbeddingError>((commit, Some(sha256), size, None));
            }
            let mut at_commit = location.clone();
            at_commit.revision = commit.clone();
            let tree = hub.list_tree(&at_commit, &commit).await?;
            let files =
                resolve_from_tree(hub, artifact, &commit, &tree, &at_commit, &BTreeMap::new())
                    .await?;
            let weights = files
                .iter()
                .find(|f| f.path == artifact.filename)
                .cloned()
                .ok_or_else(|| EmbeddingError::Protocol {
                    location: at_commit.clone(),
                    reason: "the resolved set lacks the weight file".to_owned(),
                })?;
            let sha256 = (weights.kind == DigestKind::Sha256).then(|| weights.digest.clone());
            Ok((commit, sha256, weights.size_bytes, Some(files)))
        }
        .await;
        let (commit, sha256, size, files) = match result {
            Ok(values) => values,
            Err(error) => {
                failures.push((artifact.model_id, error));
                continue;
            }
        };
        let model_id = artifact.model_id;
        if artifact.revision.as_deref() != Some(commit.as_str()) {
            filled.push(PinChange {
                model_id,
                field: "revision",
                old: artifact.revision.clone(),
                new: commit.clone(),
            });
            artifact.revision = Some(commit);
        }
        let mut record = |field: &'static str, old: Option<String>, new: String| match old {
            None => filled.push(PinChange {
                model_id,
                field,
                old: None,
                new,
            }),
            Some(old) if old != new => changed.push(PinChange {
                model_id,
                field,
                old: Some(old),
                new,
            }),
            Some(_) => {}
        };
        if let Some(sha256) = &sha256 {
            record("sha256", artifact.sha256.clone(), sha256.clone());
        }
        record(
            "size_bytes",
            artifact.size_bytes.map(|s| s.to_string()),
            size.to_string(),
        );
        if let Some(files) = files {
            record(
                "files",
                artifact.selection.files.as_deref().map(describe_files),
                describe_files(&files),
            );
            artifact.selection.files = Some(files);
        }
        if sha256.is_some() {
            artifact.sha256 = sha256;
        }
        artifact.size_bytes = Some(size);
    }
    if !failures.is_empty() {
        return Err(EmbeddingError::DownloadsFailed(failures));
    }
    Ok(PinOutcome {
        manifest,
        filled,
        changed,
    })
}

/// Moves the pins of the selected models (every artifact when `models` is empty) to the head
/// of the branch each follows (its revision when that is a branch, else `main`), with the
/// SHA-256 and size at that head. Every moved value is reported in `changed` (`filled` when
/// the manifest had none). Writes nothing. Fails in offline mode.
pub(crate) async fn upgrade(
    hub: &HubClient,
    manifest: &Manifest,
    models: &[ModelId],
    offline: bool,
) -> EmbeddingResult<PinOutcome> {
    let mut manifest = manifest.clone();
    let mut filled = Vec::new();
    let mut changed = Vec::new();
    let mut failures = Vec::new();
    for entry in &mut manifest.entries {
        let ManifestEntry::Artifact(artifact) = entry else {
            continue;
        };
        if !models.is_empty() && !models.contains(&artifact.model_id) {
            continue;
        }
        let location = crate::error::FileLocation {
            revision: tracked_branch(artifact),
            ..artifact.location()
        };
        if offline {
            failures.push((
                artifact.model_id,
                EmbeddingError::OfflineMissing { location },
            ));
            continue;
        }
        let result = async {
            let head = hub.resolve_revision(&location).await?;
            let (sha256, size) = hub.lfs_info(&location, &head).await?;
            Ok::<_, EmbeddingError>((head, sha256, size))
        }
        .await;
        let (head, sha256, size) = match result {
            Ok(values) => values,
            Err(error) => {
                failures.push((artifact.model_id, error));
                continue;
            }
        };
        let model_id = artifact.model_id;
        let mut record = |field: &'static str, old: Option<String>, new: String| match old {
            None => filled.push(PinChange {
                model_id,
                field,
                old: None,
                new,
            }),
            Some(old) if old != new => changed.push(PinChange {
                model_id,
                field,
                old: Some(old),
                new,
            }),
            Some(_) => {}
        };
        record("revision", artifact.revision.clone(), head.clone());
        record("sha256", artifact.sha256.clone(), sha256.clone());
        record(
            "size_bytes",
            artifact.size_bytes.map(|s| s.to_string()),
            size.to_string(),
        );
        artifact.revision = Some(head);
        artifact.sha256 = Some(sha256);
        artifact.size_bytes = Some(size);
    }
    if !failures.is_empty() {
        return Err(EmbeddingError::DownloadsFailed(failures));
    }
    Ok(PinOutcome {
        manifest,
        filled,
        changed,
    })
}
