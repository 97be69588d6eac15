//! The file set of one model at one commit: the manifest's explicit list, or its patterns and
//! preset resolved against the Hub's tree at that commit (with retries), the few documents
//! the rules read (`modules.json`, a safetensors index) fetched by commit and checked by
//! their digest, and the result recorded in the cache so readiness needs no network later.

use std::collections::BTreeMap;

use super::context::Context;
use super::local::{known_companions, record_companions};
use crate::artifacts::blocking::run_blocking_checked;
use crate::artifacts::fileset::{documents_needed, select, PinnedFile, RepoFile};
use crate::artifacts::hash::{git_blob_sha1_hex, sha256_hex, DigestKind};
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::remote::client::HubClient;
use crate::artifacts::remote::retry::{RetryDecision, RetryState};
use crate::artifacts::status::ModelEvents;
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};

/// Largest document read to resolve a set (a `modules.json`, a safetensors index).
const MAX_DOCUMENT_BYTES: u64 = 16 << 20;

/// The files of the model's set besides the weight file, at `commit`: known locally (the
/// manifest's list, a single-file entry, a set recorded earlier) or resolved on the Hub now.
pub(crate) async fn resolve_companions(
    ctx: &Context,
    artifact: &ModelArtifact,
    commit: &str,
    events: &ModelEvents,
) -> EmbeddingResult<Vec<PinnedFile>> {
    let known = {
        let layout = ctx.layout.clone();
        let artifact = artifact.clone();
        let commit = commit.to_owned();
        tokio::task::spawn_blocking(move || known_companions(&layout, &artifact, &commit))
            .await
            .ok()
            .flatten()
    };
    if let Some(files) = known {
        return Ok(files);
    }
    let files = resolve_on_hub(&ctx.client, ctx, artifact, commit, events).await?;
    let layout = ctx.layout.clone();
    let recorded = artifact.clone();
    let commit_owned = commit.to_owned();
    let to_record = files.clone();
    let shown = ctx.layout.repo_dir(&artifact.repo_id);
    run_blocking_checked("cannot record the file set in", &shown, move || {
        record_companions(&layout, &recorded, &commit_owned, &to_record)
    })
    .await?;
    Ok(files
        .into_iter()
        .filter(|f| f.path != artifact.filename)
        .collect())
}

/// The whole set (the weight file included) resolved against the tree at `commit`.
pub(crate) async fn resolve_on_hub(
    client: &HubClient,
    ctx: &Context,
    artifact: &ModelArtifact,
    commit: &str,
    events: &ModelEvents,
) -> EmbeddingResult<Vec<PinnedFile>> {
    let location = FileLocation {
        model_id: artifact.model_id,
        repo_id: artifact.repo_id.clone(),
        revision: commit.to_owned(),
        filename: artifact.filename.clone(),
    };
    let tree = list_tree_with_retries(client, ctx, &location, commit, events).await?;
    resolve_from_tree(client, artifact, commit, &tree, &location).await
}

/// Applies the selection to a listed tree, reading the documents it needs by commit.
pub(crate) async fn resolve_from_tree(
    client: &HubClient,
    artifact: &ModelArtifact,
    commit: &str,
    tree: &[RepoFile],
    location: &FileLocation,
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
        let url = client.resolve_url(&artifact.repo_id, commit, &path);
        let bytes = client
            .get_small(&url, MAX_DOCUMENT_BYTES, &doc_location)
            .await?;
        let pinned = file.pinned();
        let actual = match pinned.kind {
            DigestKind::Sha256 => sha256_hex(&bytes),
            DigestKind::GitBlobSha1 => git_blob_sha1_hex(&bytes),
        };
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

/// The tree listing with the same retry policy as downloads.
async fn list_tree_with_retries(
    client: &HubClient,
    ctx: &Context,
    location: &FileLocation,
    commit: &str,
    events: &ModelEvents,
) -> EmbeddingResult<Vec<RepoFile>> {
    let mut retry = RetryState::new(
        &ctx.config.retry_policy,
        ctx.config.retry_attempts,
        location,
    );
    loop {
        retry.attempt_started();
        match client.list_tree(location, commit).await {
            Ok(tree) => return Ok(tree),
            Err(error) => match retry.after_failure(error, false, rand::random()) {
                RetryDecision::GiveUp(error) => return Err(error),
                RetryDecision::Retry(backoff) => {
                    events.retrying(0, 0, &backoff);
                    tokio::time::sleep(backoff.delay).await;
                }
            },
        }
    }
}
