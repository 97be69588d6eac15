//! The cache's size budget: what a plan still needs, whether it fits the limit and the disk,
//! which blobs may go, in which order, and removing them safely.
//!
//! Only blobs that no entry of the active manifest needs are candidates, least recently used
//! first (the later of access and modification time, so file systems mounted `noatime` still
//! order by age). A blob goes together with the snapshot links that point at it and our
//! stamps of them, under the blob's lock, so no other process is mid-download of it.
//! Partial downloads of blobs nobody needs are candidates too.
//!
//! A repo blob that is a link into `huggingface_hub`'s shared store (`shared.rs`) is a
//! candidate like any other: evicting it removes the link, and the store entry is then swept by
//! the store's own rules, so its payload goes only when no other repo's link needs it. Such a
//! candidate counts the bytes its removal frees (the payload when it is the only reference,
//! else nothing).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::fs::{create_dir_all, link_at_or_above, remove_empty_parents, remove_entry};
use super::layout::{partial_blob_name, partial_files, snapshot_link_blob_name, CacheLayout};
use super::lock::BlobLock;
use super::shared::{freed_by_removing, shared_target, sweep};
use crate::artifacts::blocking::{available_space, run_blocking, run_blocking_checked};
use crate::error::{EmbeddingError, EmbeddingResult};

/// A blob (or partial download) that eviction may remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvictionCandidate {
    /// The repo folder, e.g. `models--org--name`.
    pub repo_folder: String,
    /// The file name in `blobs/`.
    pub blob_name: String,
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Last use, seconds since the epoch.
    pub last_used: u64,
    /// Whether it is an unfinished download.
    pub partial: bool,
}

/// What an eviction did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvictionReport {
    /// Removed (or to be removed) files, in removal order.
    pub removed: Vec<EvictionCandidate>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Cache size before.
    pub size_before: u64,
    /// Cache size after (estimated on a dry run).
    pub size_after: u64,
    /// Whether nothing was removed because it was a dry run.
    pub dry_run: bool,
}

/// Blobs of the cache that are not in `protected` (pairs of repo folder and blob name),
/// least recently used first.
pub(crate) fn candidates(
    layout: &CacheLayout,
    protected: &HashSet<(String, String)>,
) -> Vec<EvictionCandidate> {
    let mut found = Vec::new();
    for repo_dir in layout.repo_dirs() {
        let repo_folder = repo_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A linked repo or blobs folder points somewhere else: nothing there is ours to evict.
        let blobs = repo_dir.join("blobs");
        if link_at_or_above(&blobs).is_some() {
            continue;
        }
        let Ok(entries) = fs::read_dir(&blobs) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(mut meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let mut bytes = meta.len();
            if !meta.is_file() {
                let Some(payload) = shared_target(&entry.path()) else {
                    continue;
                };
                let Ok(payload_meta) = payload.symlink_metadata() else {
                    continue;
                };
                meta = payload_meta;
                bytes = freed_by_removing(&entry.path());
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // A parallel download's progress record (`<partial>.ranges`) belongs to its
            // partial: protected, evicted and reported like it.
            let partial = partial_blob_name(&name);
            let blob_name = partial.unwrap_or(&name).to_owned();
            let partial = partial.is_some();
            if protected.contains(&(repo_folder.clone(), blob_name)) {
                continue;
            }
            let last_used = [meta.accessed().ok(), meta.modified().ok()]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH)
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            found.push(EvictionCandidate {
                repo_folder: repo_folder.clone(),
                blob_name: name,
                path: entry.path(),
                bytes,
                last_used,
                partial,
            });
        }
    }
    found.sort_by(|a, b| {
        a.last_used
            .cmp(&b.last_used)
            .then_with(|| a.path.cmp(&b.path))
    });
    found
}

/// Picks candidates, oldest first, until at least `bytes_to_free` would be freed.
pub(crate) fn select(
    candidates: Vec<EvictionCandidate>,
    bytes_to_free: u64,
) -> Vec<EvictionCandidate> {
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for candidate in candidates {
        if freed >= bytes_to_free {
            break;
        }
        freed += candidate.bytes;
        chosen.push(candidate);
    }
    chosen
}

/// Removes one candidate: the blob, the snapshot links of its repo that point to it (and our
/// stamps, which become invalid by themselves). Links are removed, never followed; a shared
/// store entry the blob linked to is then swept by the store's rules. Returns the bytes freed.
pub(crate) fn remove_candidate(
    layout: &CacheLayout,
    candidate: &EvictionCandidate,
) -> EmbeddingResult<u64> {
    let repo_dir = layout.root().join(&candidate.repo_folder);
    let shared = shared_target(&candidate.path);
    let mut own_bytes = match candidate.path.symlink_metadata() {
        Ok(meta) if meta.is_file() => meta.len(),
        _ => 0,
    };
    remove_entry(&candidate.path)?;
    if !candidate.partial {
        for link in snapshot_links_to(&repo_dir, &candidate.blob_name) {
            remove_entry(&link)?;
            remove_empty_parents(&link, &repo_dir.join("snapshots"));
        }
        own_bytes += remove_refs_to_missing_snapshots(&repo_dir)?;
    }
    match shared {
        Some(payload) => Ok(own_bytes + sweep(layout.root(), &payload)?),
        None => Ok(own_bytes),
    }
}

/// Removes the refs of a repo whose commit has no snapshot folder left (its last entry was
/// evicted or cleared), so `huggingface_hub`'s `scan_cache_dir` finds no ref to a missing commit.
/// Returns the bytes of the refs removed.
pub(crate) fn remove_refs_to_missing_snapshots(repo_dir: &Path) -> EmbeddingResult<u64> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match path.symlink_metadata() {
                Ok(meta) if meta.is_dir() => walk(&path, out),
                Ok(meta) if meta.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    let refs = repo_dir.join("refs");
    if link_at_or_above(&refs).is_some() {
        return Ok(0);
    }
    let mut files = Vec::new();
    walk(&refs, &mut files);
    let mut freed = 0;
    for reference in files {
        let Ok(text) = fs::read_to_string(&reference) else {
            continue;
        };
        let commit = text.trim();
        let shaped = commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit());
        if shaped && !repo_dir.join("snapshots").join(commit).exists() {
            remove_entry(&reference)?;
            remove_empty_parents(&reference, &refs);
            freed += text.len() as u64;
        }
    }
    Ok(freed)
}

/// Snapshot entries of a repo that are links to `blob_name`.
pub(crate) fn snapshot_links_to(repo_dir: &Path, blob_name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, blob_name: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if snapshot_link_blob_name(&path).as_deref() == Some(blob_name) {
                    out.push(path);
                }
            } else if meta.is_dir() {
                walk(&path, blob_name, out);
            }
        }
    }
    let mut out = Vec::new();
    let snapshots = repo_dir.join("snapshots");
    if link_at_or_above(&snapshots).is_none() {
        walk(&snapshots, blob_name, &mut out);
    }
    out
}

/// Blobs that must not be evicted: pairs of repo folder and blob name.
pub(crate) type Protected = HashSet<(String, String)>;

/// One blob a plan is about to fetch.
#[derive(Debug, Clone)]
pub(crate) struct PlannedBlob {
    /// The repo.
    pub(crate) repo_id: String,
    /// The blob name.
    pub(crate) etag: String,
    /// Its size (0 when unknown).
    pub(crate) size: u64,
}

/// Bytes still to fetch for a plan: sizes minus blobs already there and partial downloads
/// already on disk. Blocking (a few `stat`s).
pub(crate) fn bytes_needed(layout: &CacheLayout, plan: &[PlannedBlob]) -> u64 {
    plan.iter()
        .map(|blob| {
            if layout.blob_path(&blob.repo_id, &blob.etag).exists() {
                return 0;
            }
            let partial = partial_files(&layout.blobs_dir(&blob.repo_id), &blob.etag)
                .first()
                .map_or(0, |p| p.1);
            blob.size.saturating_sub(partial)
        })
        .sum()
}

/// The cache's size, walked on a blocking thread.
pub(crate) async fn cache_size_off_thread(layout: &CacheLayout) -> u64 {
    let layout = layout.clone();
    run_blocking(move || Ok(layout.total_size()))
        .await
        .unwrap_or(0)
}

/// Makes room for a plan: within `limit` (evicting least recently used blobs nobody
/// protects, the plan's own included among the protected), and on a disk with enough free
/// space when `check_disk` is set. Fails, before anything is written, when neither can be had.
pub(crate) async fn make_room(
    layout: &CacheLayout,
    plan: &[PlannedBlob],
    limit: Option<u64>,
    check_disk: bool,
    mut protected: Protected,
) -> EmbeddingResult<()> {
    let needed = {
        let layout = layout.clone();
        let plan = plan.to_vec();
        run_blocking(move || Ok(bytes_needed(&layout, &plan)))
            .await
            .unwrap_or(0)
    };
    if needed == 0 {
        return Ok(());
    }
    if let Some(limit) = limit {
        let current = cache_size_off_thread(layout).await;
        if current.saturating_add(needed) > limit {
            protected.extend(
                plan.iter()
                    .map(|b| (CacheLayout::repo_folder_name(&b.repo_id), b.etag.clone())),
            );
            let found = {
                let layout = layout.clone();
                run_blocking(move || Ok(candidates(&layout, &protected)))
                    .await
                    .unwrap_or_default()
            };
            let evictable: u64 = found.iter().map(|c| c.bytes).sum();
            let to_free = current.saturating_add(needed) - limit;
            if evictable < to_free {
                return Err(EmbeddingError::CacheLimitExceeded {
                    needed,
                    limit,
                    current,
                    evictable,
                });
            }
            for candidate in select(found, to_free) {
                remove_candidate_locked(layout, &candidate).await?;
            }
        }
    }
    if check_disk {
        let root = layout.root().to_path_buf();
        let checked = root.clone();
        let available = run_blocking_checked("cannot create folder", &root, move || {
            create_dir_all(&checked)?;
            Ok(available_space(&checked))
        })
        .await?;
        if let Some(available) = available {
            if needed > available {
                return Err(EmbeddingError::InsufficientDisk {
                    path: root,
                    needed,
                    available,
                });
            }
        }
    }
    Ok(())
}

/// Removes one candidate under its blob's lock, so no other process is mid-download of it.
pub(crate) async fn remove_candidate_locked(
    layout: &CacheLayout,
    candidate: &EvictionCandidate,
) -> EmbeddingResult<u64> {
    let lock_path = layout.lock_path_in(&candidate.repo_folder, &candidate.blob_name);
    let _lock = BlobLock::acquire(&lock_path, || {}).await?;
    let layout = layout.clone();
    let candidate = candidate.clone();
    let path = candidate.path.clone();
    run_blocking_checked("cannot remove", &path, move || {
        remove_candidate(&layout, &candidate)
    })
    .await
}

/// Evicts least recently used blobs not in `protected` until the cache is at most
/// `max_bytes`. With `dry_run`, only reports.
pub(crate) async fn collect_garbage(
    layout: &CacheLayout,
    max_bytes: u64,
    protected: Protected,
    dry_run: bool,
) -> EmbeddingResult<EvictionReport> {
    let size_before = cache_size_off_thread(layout).await;
    let mut report = EvictionReport {
        size_before,
        size_after: size_before,
        dry_run,
        ..EvictionReport::default()
    };
    if size_before <= max_bytes {
        return Ok(report);
    }
    let found = {
        let layout = layout.clone();
        run_blocking(move || Ok(candidates(&layout, &protected)))
            .await
            .unwrap_or_default()
    };
    for mut candidate in select(found, size_before - max_bytes) {
        if !dry_run {
            // What was really freed: a shared payload another link needed at selection time
            // may be freed with its last link.
            candidate.bytes = remove_candidate_locked(layout, &candidate).await?;
        }
        report.freed_bytes += candidate.bytes;
        report.removed.push(candidate);
    }
    report.size_after = if dry_run {
        size_before.saturating_sub(report.freed_bytes)
    } else {
        cache_size_off_thread(layout).await
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set_times(path: &Path, secs: u64) {
        let time = UNIX_EPOCH + Duration::from_secs(secs);
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_times(fs::FileTimes::new().set_accessed(time).set_modified(time))
            .unwrap();
    }

    #[test]
    fn progress_records_go_with_their_partials() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path());
        let blobs = layout.blobs_dir("a/x");
        fs::create_dir_all(&blobs).unwrap();
        for name in [
            "kept.1-00000001.incomplete",
            "kept.1-00000001.incomplete.ranges",
            "gone.1-00000002.incomplete",
            "gone.1-00000002.incomplete.ranges",
        ] {
            fs::write(blobs.join(name), b"x").unwrap();
        }
        let protected: HashSet<_> = [("models--a--x".to_owned(), "kept".to_owned())].into();
        let mut found: Vec<(String, bool)> = candidates(&layout, &protected)
            .into_iter()
            .map(|c| (c.blob_name, c.partial))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("gone.1-00000002.incomplete".to_owned(), true),
                ("gone.1-00000002.incomplete.ranges".to_owned(), true)
            ]
        );
    }

    #[test]
    fn linked_folders_are_never_evicted_through() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path().join("cache"));
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("snapshots/c")).unwrap();
        fs::write(outside.join("b1"), vec![1u8; 10]).unwrap();
        std::os::unix::fs::symlink("../../blobs/b1", outside.join("snapshots/c/f")).unwrap();
        fs::create_dir_all(layout.repo_dir("a/x")).unwrap();
        std::os::unix::fs::symlink(&outside, layout.blobs_dir("a/x")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("snapshots"),
            layout.repo_dir("a/x").join("snapshots"),
        )
        .unwrap();
        assert!(candidates(&layout, &HashSet::new()).is_empty());
        assert!(snapshot_links_to(&layout.repo_dir("a/x"), "b1").is_empty());
        assert!(outside.join("b1").exists());
    }

    #[test]
    fn oldest_unprotected_blobs_go_first_with_their_links() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path());
        let commit = "d".repeat(40);
        for (repo, blob, age) in [("a/x", "b1", 100), ("a/x", "b2", 300), ("b/y", "b3", 200)] {
            fs::create_dir_all(layout.blobs_dir(repo)).unwrap();
            fs::write(layout.blob_path(repo, blob), vec![1u8; 10]).unwrap();
            set_times(&layout.blob_path(repo, blob), age);
            layout
                .link_snapshot(repo, &commit, &format!("{blob}.bin"), blob, true)
                .unwrap();
        }
        let protected: HashSet<_> = [("models--a--x".to_owned(), "b2".to_owned())].into();
        let order: Vec<_> = candidates(&layout, &protected)
            .into_iter()
            .map(|c| c.blob_name)
            .collect();
        assert_eq!(order, ["b1", "b3"]);
        let chosen = select(candidates(&layout, &protected), 5);
        assert_eq!(chosen.len(), 1);
        remove_candidate(&layout, &chosen[0]).unwrap();
        assert!(!layout.blob_path("a/x", "b1").exists());
        assert!(layout
            .snapshot_path("a/x", &commit, "b1.bin")
            .symlink_metadata()
            .is_err());
        assert!(layout.snapshot_path("a/x", &commit, "b2.bin").exists());
    }
}
