//! A model's file set on the Hub at one commit: given the tree listing, read the few
//! documents the selection rules need (`modules.json`, a safetensors index) by commit (or take
//! the caller's copies from disk), check each by the digest the tree lists, and apply
//! `fileset::select`. Shared by `lock` (which
//! writes the result into the manifest) and by ensure (which records it in the cache), so it
//! lives below both and knows nothing of the cache. Also the signature of a set at a commit
//! checked before a pin moves there ([`check_signature_at`]: `lock`, `lock --upgrade`,
//! `outdated`).

use std::collections::BTreeMap;

use super::client::HubClient;
use crate::artifacts::fileset::{documents_needed, select, PinnedFile, RepoFile};
use crate::artifacts::hash::{git_blob_sha1_hex, sha256_hex, DigestKind};
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::signature::{SignatureVerifier, VerifiedSignature};
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};

/// Largest document read to resolve a set (a `modules.json`, a safetensors index).
const MAX_DOCUMENT_BYTES: u64 = 16 << 20;

/// Applies the selection to a listed tree, reading the documents it needs by commit.
pub(crate) async fn resolve_from_tree(
    client: &HubClient,
    artifact: &ModelArtifact,
    commit: &str,
    tree: &[RepoFile],
    location: &FileLocation,
    local: &BTreeMap<String, Vec<u8>>,
) -> EmbeddingResult<Vec<PinnedFile>> {
    let by_path: BTreeMap<&str, &RepoFile> = tree.iter().map(|f| (f.path.as_str(), f)).collect();
    if !by_path.contains_key(artifact.filename.as_str()) {
        return Err(EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!(
                "the repo has no `{}` at commit {commit} (its tree does not list it)",
                artifact.filename
            ),
        });
    }
    let mut documents = BTreeMap::new();
    for path in documents_needed(tree, &artifact.selection, &artifact.filename) {
        let Some(file) = by_path.get(path.as_str()) else {
            continue;
        };
        let mut doc_location = location.clone();
        doc_location.filename = path.clone();
        let pinned = file.pinned();
        let digest_of = |bytes: &[u8]| match pinned.kind {
            DigestKind::Sha256 => sha256_hex(bytes),
            DigestKind::GitBlobSha1 => git_blob_sha1_hex(bytes),
        };
        // A copy already on disk at this commit (ours or Python's) serves when its digest is
        // the tree's: adopting a set costs no download.
        if let Some(bytes) = local.get(&path).filter(|b| digest_of(b) == pinned.digest) {
            documents.insert(path, bytes.clone());
            continue;
        }
        let url = client.resolve_url(&artifact.repo_id, commit, &path);
        let bytes = client
            .get_small(&url, MAX_DOCUMENT_BYTES, &doc_location)
            .await?;
        let actual = digest_of(&bytes);
        if actual != pinned.digest {
            return Err(EmbeddingError::Protocol {
                location: doc_location,
                reason: format!(
                    "the bytes served for `{path}` have {} {actual}, the tree lists {}",
                    pinned.kind.label(),
                    pinned.digest
                ),
            });
        }
        documents.insert(path, bytes);
    }
    let paths =
        select(tree, &artifact.selection, &artifact.filename, &documents).map_err(|reason| {
            EmbeddingError::Protocol {
                location: location.clone(),
                reason,
            }
        })?;
    Ok(paths
        .iter()
        .filter_map(|p| by_path.get(p.as_str()).map(|f| f.pinned()))
        .collect())
}

/// Largest regular file fetched to learn its SHA-256 for a signature check at a head.
const MAX_SIGNED_SMALL_FILE: u64 = 16 << 20;

/// The signature at `at_commit` checked under the policy against the set the pin would take:
/// an LFS file's SHA-256 is the tree's; a regular file (small) and the signature are fetched
/// by commit, checked by their git blob id, and hashed. The refusal is the verifier's error;
/// `Ok(None)`: unsigned and accepted (`if-present`).
pub(crate) async fn check_signature_at(
    hub: &HubClient,
    artifact: &ModelArtifact,
    at_commit: &FileLocation,
    files: &[PinnedFile],
    verifier: &SignatureVerifier,
) -> EmbeddingResult<Option<VerifiedSignature>> {
    let mut bundle = None;
    let mut pairs = Vec::with_capacity(files.len());
    for file in files {
        let is_signature = file.path == verifier.signature_file();
        if file.kind == DigestKind::Sha256 && !is_signature {
            pairs.push((file.path.clone(), file.digest.clone()));
            continue;
        }
        let location = FileLocation {
            filename: file.path.clone(),
            ..at_commit.clone()
        };
        let url = hub.resolve_url(&artifact.repo_id, &at_commit.revision, &file.path);
        let bytes = hub
            .get_small(&url, MAX_SIGNED_SMALL_FILE, &location)
            .await?;
        let actual = match file.kind {
            DigestKind::Sha256 => sha256_hex(&bytes),
            DigestKind::GitBlobSha1 => git_blob_sha1_hex(&bytes),
        };
        if actual != file.digest {
            return Err(EmbeddingError::Protocol {
                location,
                reason: format!(
                    "the bytes served for `{}` have {} {actual}, the tree lists {}",
                    file.path,
                    file.kind.label(),
                    file.digest
                ),
            });
        }
        if is_signature {
            bundle = Some(bytes);
        } else {
            pairs.push((file.path.clone(), sha256_hex(&bytes)));
        }
    }
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_str()))
        .collect();
    verifier.verify_if_present(bundle.as_deref(), &pairs)
}
