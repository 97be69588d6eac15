//! Ensuring a batch of models, as cargo's `Downloads` does for packages: classify what is
//! already there, hash what is present but unverified (on all cores, no network when it is
//! right), refuse in offline mode, resolve the rest on the Hub (pin disagreements reported
//! before anything is written), check the size budget and the free disk, then fetch, largest
//! first, at most `max_concurrent_downloads` at once. One error lists every model that failed;
//! the others still complete.

use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};

use super::context::Context;
use super::local::{inspect_async, LocalState};
use super::one::{
    ensure_one, expectations, head_with_retries, keep_commit_ref, pinned_for_mirror, report_ready,
};
use super::readiness::{not_ready_error, verify_model, FileVerdict};
use crate::artifacts::blocking::{read_only_mount, run_blocking, write_denied};
use crate::artifacts::manifest::{ManifestEntry, ModelArtifact};
use crate::artifacts::progress::Outcome;
use crate::artifacts::remote::protocol::RemoteFile;
use crate::artifacts::store::budget::{self, PlannedBlob};
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// The failures of a batch so far.
#[derive(Default)]
struct Failures(Vec<(ModelId, EmbeddingError)>);

impl Failures {
    /// Records a failure, reporting it (status and event) first.
    fn report(&mut self, ctx: &Context, model_id: ModelId, error: EmbeddingError) {
        ctx.events(model_id).failed(&error, 0);
        self.0.push((model_id, error));
    }

    fn into_result(mut self) -> EmbeddingResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        self.0.sort_by_key(|(m, _)| m.index());
        Err(EmbeddingError::DownloadsFailed(self.0))
    }
}

/// Ensures `models` (see the module note).
pub(crate) async fn ensure_models(ctx: &Context, models: &[ModelId]) -> EmbeddingResult<()> {
    let mut failures = Failures::default();
    let todo = classify(ctx, models, &mut failures).await;
    if todo.is_empty() {
        return failures.into_result();
    }
    if ctx.config.offline {
        // Each model says why it is not ready: the file missing, wrong, or unknown.
        for (artifact, why_not) in todo {
            let error = match why_not {
                EmbeddingError::FileMissing { location } => {
                    EmbeddingError::OfflineMissing { location }
                }
                other => other,
            };
            failures.report(ctx, artifact.model_id, error);
        }
        return failures.into_result();
    }
    let todo: Vec<&ModelArtifact> = todo.into_iter().map(|(artifact, _)| artifact).collect();
    let root = ctx.layout.root().to_path_buf();
    let unwritable = run_blocking(move || {
        Ok(read_only_mount(&root)
            .map(|path| EmbeddingError::ReadOnlyCache { path })
            .or_else(|| write_denied(&root).map(|path| EmbeddingError::CacheNotWritable { path })))
    })
    .await
    .ok()
    .flatten();
    if let Some(error) = unwritable {
        // One sentence for the whole batch: nothing missing can be fetched into this cache.
        for artifact in &todo {
            ctx.events(artifact.model_id).failed(&error, 0);
        }
        return Err(error);
    }
    let mut plan = resolve(ctx, todo, &mut failures).await;
    make_room(ctx, &plan).await?;
    plan.sort_by_key(|(artifact, remote)| {
        std::cmp::Reverse(artifact.size_bytes.or(remote.size).unwrap_or(0))
    });
    let results: Vec<(ModelId, EmbeddingResult<PathBuf>)> = stream::iter(plan)
        .map(|(artifact, remote)| async move {
            (
                artifact.model_id,
                ensure_one(ctx, artifact, Some(remote)).await,
            )
        })
        .buffer_unordered(ctx.config.max_concurrent_downloads)
        .collect()
        .await;
    for (model_id, result) in results {
        if let Err(error) = result {
            failures.0.push((model_id, error));
        }
    }
    failures.into_result()
}

/// Ready models are reported; models whose every file is present but some unverified are
/// hashed on all cores at once (no network when they are right); returns what still needs
/// fetching, each with why it is not ready (the first file missing, wrong or unknown).
async fn classify<'a>(
    ctx: &'a Context,
    models: &[ModelId],
    failures: &mut Failures,
) -> Vec<(&'a ModelArtifact, EmbeddingError)> {
    let mut todo = Vec::new();
    let mut unverified = Vec::new();
    for model_id in models {
        match ctx.manifest.entry(*model_id) {
            Some(ManifestEntry::Builtin(_)) => {}
            Some(ManifestEntry::Artifact(artifact)) => {
                let state: LocalState = inspect_async(ctx, artifact).await;
                match state.weights().path() {
                    Some(path) if state.is_ready(true) => {
                        // A run killed before its refs (or mid-write of one) left the files
                        // ready and `refs/<commit>` missing or a temporary file beside it.
                        keep_commit_ref(ctx, artifact, state.commit.as_deref()).await;
                        let events = ctx.events(artifact.model_id);
                        report_ready(&events, path, Outcome::AlreadyPresent, 0, None).await;
                    }
                    _ if state.all_present() => unverified.push((artifact, state)),
                    _ => {
                        let why_not = not_ready_error(artifact, &state, false);
                        todo.push((artifact, why_not));
                    }
                }
            }
            None => failures
                .0
                .push((*model_id, EmbeddingError::NotAnArtifact(*model_id))),
        }
    }
    unverified.sort_by_key(|(_, state)| {
        std::cmp::Reverse(state.files.iter().filter_map(|f| f.size()).sum::<u64>())
    });
    let checked: Vec<_> = stream::iter(unverified)
        .map(|(artifact, state)| async move {
            let verdict = verify_model(ctx, artifact, &state, false).await;
            (artifact, state, verdict)
        })
        .buffer_unordered(ctx.hashing_parallelism().max(1))
        .collect()
        .await;
    for (artifact, state, verdict) in checked {
        match verdict {
            Ok(None) => {
                keep_commit_ref(ctx, artifact, state.commit.as_deref()).await;
                let events = ctx.events(artifact.model_id);
                let path = state
                    .weights()
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                report_ready(&events, &path, Outcome::Verified, 0, None).await;
            }
            Ok(Some(FileVerdict::Corrupt(error) | FileVerdict::Unavailable(error)))
            | Err(error) => {
                todo.push((artifact, error));
            }
            Ok(Some(FileVerdict::Verified)) => {
                todo.push((artifact, not_ready_error(artifact, &state, false)));
            }
        }
    }
    todo
}

/// Resolves every missing file first: sizes for the space checks, and pin disagreements
/// reported before anything is written. With a mirror and everything pinned, the Hub is not
/// asked (air-gapped nodes never reach it).
async fn resolve<'a>(
    ctx: &'a Context,
    todo: Vec<&'a ModelArtifact>,
    failures: &mut Failures,
) -> Vec<(&'a ModelArtifact, RemoteFile)> {
    let resolved: Vec<(&ModelArtifact, EmbeddingResult<RemoteFile>)> = stream::iter(todo)
        .map(|artifact| async move {
            if let Some(pinned) = pinned_for_mirror(ctx, artifact).filter(|r| r.size.is_some()) {
                return (artifact, Ok(pinned));
            }
            let location = artifact.location();
            let events = ctx.events(artifact.model_id);
            let remote = head_with_retries(ctx, &location, &events)
                .await
                .and_then(|remote| expectations(artifact, &remote, &location).map(|_| remote));
            (artifact, remote)
        })
        .buffer_unordered(ctx.config.max_concurrent_downloads.max(4))
        .collect()
        .await;
    let mut plan = Vec::new();
    for (artifact, remote) in resolved {
        match remote {
            Ok(remote) => plan.push((artifact, remote)),
            Err(error) => failures.report(ctx, artifact.model_id, error),
        }
    }
    plan
}

/// The size budget and the free disk for a plan (see `store::budget`).
async fn make_room(ctx: &Context, plan: &[(&ModelArtifact, RemoteFile)]) -> EmbeddingResult<()> {
    let planned: Vec<PlannedBlob> = plan
        .iter()
        .map(|(artifact, remote)| PlannedBlob {
            repo_id: artifact.repo_id.clone(),
            etag: remote.etag.clone(),
            size: artifact.size_bytes.or(remote.size).unwrap_or(0),
        })
        .collect();
    let protected = super::local::protected_blobs(ctx).await;
    budget::make_room(
        &ctx.layout,
        &planned,
        ctx.config.max_cache_bytes,
        ctx.config.check_disk_space,
        protected,
    )
    .await
}
