//! Keeping the cache in shape for the manifest: clearing some models' files and evicting
//! blobs the manifest does not need. What the files are called is `store`'s business; which
//! files belong to which model is decided here.

use super::context::Context;
use super::local::{inspect_async, protected_blobs, Entry};
use crate::artifacts::store::budget::{self, cache_size_off_thread, EvictionReport, Protected};
use crate::artifacts::store::clear::{remove_model_files, ModelFiles};
use crate::error::EmbeddingResult;
use crate::model_id::ModelId;

/// Removes the cached files of some models (see `store::clear`); returns the bytes freed.
pub(crate) async fn clear_models(ctx: &Context, models: &[ModelId]) -> EmbeddingResult<u64> {
    let before = cache_size_off_thread(&ctx.layout).await;
    for model_id in models {
        let Ok(artifact) = ctx.artifact(*model_id) else {
            continue;
        };
        let state = inspect_async(ctx, artifact).await;
        let mut blob_names: Vec<String> = Vec::new();
        blob_names.extend(artifact.sha256.clone());
        for file in &state.files {
            blob_names.extend(file.file.digest.as_ref().map(|d| d.hex().to_owned()));
            if let Entry::Present {
                blob_name: Some(name),
                ..
            } = &file.entry
            {
                blob_names.push(name.clone());
            }
            blob_names.extend(file.stamp.as_ref().map(|s| s.sha256.clone()));
        }
        let sole_user_of_repo = ctx
            .manifest
            .artifacts()
            .filter(|a| a.repo_id == artifact.repo_id)
            .count()
            == 1;
        let files = ModelFiles {
            repo_id: artifact.repo_id.clone(),
            filenames: state.files.iter().map(|f| f.file.path.clone()).collect(),
            commit: state.commit.clone(),
            blob_names,
            owns_all_partials: artifact.sha256.is_none() && sole_user_of_repo,
        };
        remove_model_files(&ctx.layout, files).await?;
        ctx.events(*model_id).reset();
    }
    Ok(before.saturating_sub(cache_size_off_thread(&ctx.layout).await))
}

/// Evicts least recently used blobs until the cache is at most `max_bytes`; blobs the
/// manifest needs are kept unless `include_manifest` is set.
pub(crate) async fn collect_garbage(
    ctx: &Context,
    max_bytes: u64,
    include_manifest: bool,
    dry_run: bool,
) -> EmbeddingResult<EvictionReport> {
    let protected = if include_manifest {
        Protected::new()
    } else {
        protected_blobs(ctx).await
    };
    budget::collect_garbage(&ctx.layout, max_bytes, protected, dry_run).await
}
