//! What clearing one model removes: its snapshot entries and stamps (every file of its set), every ref to its commit
//! once the commit has no entries left, its blobs when no other snapshot entry links to them, and their partial
//! downloads with their progress records. Links are removed, never followed; nothing outside
//! the model's repo folder is touched, except that a blob that was a link into
//! `huggingface_hub`'s shared store has its store entry swept by the store's own rules (the
//! payload goes only when no other repo's link needs it; see `shared.rs`).

use std::path::Path;

use super::budget::{remove_refs_to_missing_snapshots, snapshot_links_to};
use super::fs::{remove_empty_parents, remove_entry};
use super::layout::{partial_blob_name, partial_files, sidecar_path, CacheLayout};
use super::lock::BlobLock;
use super::shared::{shared_target, sweep};
use crate::artifacts::blocking::run_blocking_checked;
use crate::error::EmbeddingResult;

/// The files of one model, as far as the caller knows them.
#[derive(Debug, Clone)]
pub(crate) struct ModelFiles {
    /// The repo.
    pub(crate) repo_id: String,
    /// The files of the model's set in the repo (the weight file first).
    pub(crate) filenames: Vec<String>,
    /// The commit the revision resolves to locally, when known.
    pub(crate) commit: Option<String>,
    /// Blob names that may be this model's (the link target, the pin, the stamp's hash).
    pub(crate) blob_names: Vec<String>,
    /// Whether every partial download in the repo is this model's (an unpinned entry that is
    /// the repo's only user: its unfinished download has no known name).
    pub(crate) owns_all_partials: bool,
}

/// Removes one model's files (see the module note).
pub(crate) async fn remove_model_files(
    layout: &CacheLayout,
    files: ModelFiles,
) -> EmbeddingResult<()> {
    let repo_dir = layout.repo_dir(&files.repo_id);
    let mut blob_names = files.blob_names.clone();
    if files.owns_all_partials {
        let blobs = layout.blobs_dir(&files.repo_id);
        let found = run_blocking_checked("cannot list", &blobs.clone(), move || {
            Ok(partial_etags(&blobs))
        })
        .await?;
        blob_names.extend(found);
    }
    blob_names.sort();
    blob_names.dedup();
    if let Some(commit) = files.commit.clone() {
        let layout = layout.clone();
        let files = files.clone();
        let dir = repo_dir.clone();
        run_blocking_checked("cannot remove", &repo_dir.clone(), move || {
            remove_snapshot_entry(&layout, &files, &commit, &dir)
        })
        .await?;
    }
    for name in blob_names {
        let lock = BlobLock::acquire(&layout.lock_path(&files.repo_id, &name), || {}).await?;
        let layout = layout.clone();
        let repo_id = files.repo_id.clone();
        let dir = repo_dir.clone();
        run_blocking_checked("cannot remove", &repo_dir.clone(), move || {
            if snapshot_links_to(&dir, &name).is_empty() {
                let blob = layout.blob_path(&repo_id, &name);
                let shared = shared_target(&blob);
                remove_entry(&blob)?;
                if let Some(payload) = shared {
                    sweep(layout.root(), &payload)?;
                }
            }
            for (partial, _) in partial_files(&layout.blobs_dir(&repo_id), &name) {
                remove_entry(&partial)?;
                remove_entry(&sidecar_path(&partial))?;
            }
            Ok(())
        })
        .await?;
        drop(lock);
    }
    Ok(())
}

fn remove_snapshot_entry(
    layout: &CacheLayout,
    files: &ModelFiles,
    commit: &str,
    repo_dir: &Path,
) -> EmbeddingResult<()> {
    for filename in &files.filenames {
        let snapshot = layout.snapshot_path(&files.repo_id, commit, filename);
        remove_entry(&snapshot)?;
        remove_empty_parents(&snapshot, &repo_dir.join("snapshots"));
        remove_entry(&layout.stamp_path(&files.repo_id, commit, filename))?;
    }
    // No ref may name a commit whose snapshot is gone (Python's scan then drops the whole
    // repo): the revision's, `refs/<commit>`, and any other name for it.
    remove_refs_to_missing_snapshots(repo_dir)?;
    Ok(())
}

/// The blobs that partial downloads in `blobs_dir` belong to.
fn partial_etags(blobs_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(blobs_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            partial_blob_name(&name).map(str::to_owned)
        })
        .collect()
}
