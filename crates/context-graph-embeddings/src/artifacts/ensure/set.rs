//! The plan of one model at one commit, online: the manifest's explicit list, a set recorded
//! in the cache, or its patterns and preset resolved on the Hub at that commit (the tree listing
//! retried like a download; `remote/tree.rs` reads the documents and applies the rules), and
//! the result recorded in the cache so readiness needs no network later.

use std::collections::BTreeMap;

use super::context::Context;
use super::plan::{known_set, record_set, set_record, signature_path, ModelPlan, SetOrigin};
use crate::artifacts::blocking::{run_blocking, run_blocking_checked};
use crate::artifacts::fileset::{add_signature, documents_needed, PinnedFile, RepoFile};
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::remote::client::HubClient;
use crate::artifacts::remote::tree::resolve_from_tree;
use crate::artifacts::status::ModelEvents;
use crate::artifacts::store::adopt::candidates;
use crate::artifacts::store::layout::entry_stays_inside;
use crate::artifacts::transfer::request::ExpectedDigest;
use crate::error::{EmbeddingResult, FileLocation};

/// The model's plan at `commit`: the weight file as the Hub's answer and the pins make it
/// (`weights`), and the rest of the set known locally (the manifest's list, a single-file
/// entry, a set recorded earlier) or resolved on the Hub now and recorded.
pub(crate) async fn resolve_plan(
    ctx: &Context,
    artifact: &ModelArtifact,
    commit: &str,
    weights: (Option<ExpectedDigest>, Option<u64>),
    events: &ModelEvents,
) -> EmbeddingResult<ModelPlan> {
    let known = {
        let view = ctx.view();
        let artifact = artifact.clone();
        let commit = commit.to_owned();
        run_blocking(move || Ok(known_set(&view, &artifact, &commit)))
            .await
            .ok()
            .flatten()
    };
    let signature = signature_path(&ctx.signatures, artifact);
    if let Some((set, origin)) = known {
        return Ok(ModelPlan::new(artifact, commit, weights, &set, origin)
            .mark_signature(signature.as_deref()));
    }
    let files = resolve_on_hub(&ctx.client, ctx, artifact, commit, events).await?;
    let layout = ctx.layout.clone();
    let recorded = artifact.clone();
    let commit_owned = commit.to_owned();
    let to_record = files.clone();
    let signature_owned = signature.clone();
    let shown = ctx.layout.repo_dir(&artifact.repo_id);
    let written = run_blocking_checked("cannot record the file set in", &shown, move || {
        record_set(
            &layout,
            &recorded,
            &commit_owned,
            signature_owned.as_deref(),
            &to_record,
        )
    })
    .await;
    if let Err(error) = written {
        // A read-only cache, or a full disk: the set is known for this process; a later one
        // lists the tree again (or, offline, resolves it from the snapshot folder).
        events.warning(format!(
            "{error}; this process keeps the file set in memory, a later run lists the tree again"
        ));
        ctx.memory.remember_set(
            &set_record(&ctx.layout, artifact, commit, signature.as_deref()),
            files.clone(),
        );
    }
    Ok(
        ModelPlan::new(artifact, commit, weights, &files, SetOrigin::Hub)
            .mark_signature(signature.as_deref()),
    )
}

/// The whole set (the weight file included) resolved against the tree at `commit`, with the
/// model's signature file when it has a policy and the tree lists it.
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
    let local = local_documents(ctx, artifact, commit, &tree).await;
    let mut set = resolve_from_tree(client, artifact, commit, &tree, &location, &local).await?;
    add_signature(
        &mut set,
        &tree,
        signature_path(&ctx.signatures, artifact).as_deref(),
    );
    Ok(set)
}

/// The documents the rules read, as far as the snapshot at `commit` (or a folder named in
/// `adopt_from`) already holds them (read off the async threads; `resolve_from_tree` uses each
/// only if its digest is the tree's).
async fn local_documents(
    ctx: &Context,
    artifact: &ModelArtifact,
    commit: &str,
    tree: &[RepoFile],
) -> BTreeMap<String, Vec<u8>> {
    let wanted = documents_needed(tree, &artifact.selection, &artifact.filename);
    let places: Vec<(String, Vec<std::path::PathBuf>)> = wanted
        .into_iter()
        .map(|p| {
            let mut places = vec![ctx.layout.snapshot_path(&artifact.repo_id, commit, &p)];
            let blob = tree
                .iter()
                .find(|f| f.path == p)
                .map(|f| f.pinned().digest)
                .unwrap_or_default();
            for root in &ctx.config.adopt_from {
                places.extend(candidates(root, &artifact.repo_id, commit, &p, &blob));
            }
            (p, places)
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        places
            .into_iter()
            .filter_map(|(p, places)| {
                let (ours, adopted) = places.split_first()?;
                let bytes = entry_stays_inside(ours)
                    .then(|| std::fs::read(ours).ok())
                    .flatten()
                    .or_else(|| adopted.iter().find_map(|a| std::fs::read(a).ok()))?;
                Some((p, bytes))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// The tree listing with the same retry policy as downloads.
async fn list_tree_with_retries(
    client: &HubClient,
    ctx: &Context,
    location: &FileLocation,
    commit: &str,
    events: &ModelEvents,
) -> EmbeddingResult<Vec<RepoFile>> {
    ctx.with_retries(location, events, || client.list_tree(location, commit))
        .await
}
