//! Other copies of a file already on this machine, in the folders the operator named
//! (`adopt_from`): where a file of a repo at a commit may be there (another cache root, one
//! made with `HF_HUB_DISABLE_SYMLINKS`, an `hf download --local-dir` folder), and bringing a
//! candidate in as a blob. Nothing is trusted by name or size: the candidate is first copied
//! into a private temporary beside the blobs (a reflink where the file system offers one, so a
//! gigabyte costs no second write), the copy is hashed, and only a copy with the expected
//! digest and size is fsynced and renamed into place. Hashing the copy, not the original,
//! means a file the user edits meanwhile can never slip in unverified; and a copy (never a
//! hard link) means a later edit of the user's file cannot change our verified blob.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::fs::temporary_path;
use super::layout::CacheLayout;
use crate::artifacts::hash::{hash_file_as, DigestKind};

/// Where `path` of `repo_id` at `commit` (with blob name `blob`) may be in the adopt folder
/// `root`: a cache root's snapshot entry and blob, and a local-dir folder's file. Only paths
/// that exist are returned.
pub(crate) fn candidates(
    root: &Path,
    repo_id: &str,
    commit: &str,
    path: &str,
    blob: &str,
) -> Vec<PathBuf> {
    let other = CacheLayout::new(root);
    let mut found = vec![
        other.snapshot_path(repo_id, commit, path),
        other.blob_path(repo_id, blob),
    ];
    let mut in_folder = root.to_path_buf();
    for segment in path.split('/') {
        in_folder.push(segment);
    }
    found.push(in_folder);
    found.retain(|p| fs::metadata(p).is_ok_and(|m| m.is_file()));
    found
}

/// Copies `source` to a private temporary in `blobs_dir` (a reflink where offered), hashes
/// the copy, and when it has `digest` (of `kind`) and `size`, fsyncs it and renames it to
/// `blob_path`. `Ok(false)` when the copy is not the expected bytes (it is removed). Blocking.
pub(crate) fn adopt_as_blob(
    source: &Path,
    blob_path: &Path,
    kind: DigestKind,
    digest: &str,
    size: Option<u64>,
) -> io::Result<bool> {
    let blobs_dir = blob_path
        .parent()
        .ok_or_else(|| io::Error::other("a blob path has a folder"))?;
    fs::create_dir_all(blobs_dir)?;
    let temporary = temporary_path(blobs_dir);
    let result = copy_then_check(source, &temporary, blob_path, kind, digest, size);
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn copy_then_check(
    source: &Path,
    temporary: &Path,
    blob_path: &Path,
    kind: DigestKind,
    digest: &str,
    size: Option<u64>,
) -> io::Result<bool> {
    {
        let from = File::open(source)?;
        let mut to = File::create_new(temporary)?;
        if !reflink(&from, &to) {
            let mut from = from;
            io::copy(&mut from, &mut to)?;
        }
        to.sync_all()?;
    }
    let (actual, length) = hash_file_as(temporary, kind)?;
    if actual != digest || size.is_some_and(|s| s != length) {
        return Ok(false);
    }
    fs::rename(temporary, blob_path)?;
    if let Some(folder) = blob_path.parent() {
        if let Ok(dir) = File::open(folder) {
            let _ = dir.sync_all();
        }
    }
    Ok(true)
}

/// A copy-on-write clone of `from` into the empty `to` (btrfs, XFS with reflink, bcachefs);
/// `false` where the file system offers none.
#[cfg(target_os = "linux")]
fn reflink(from: &File, to: &File) -> bool {
    rustix::fs::ioctl_ficlone(to, from).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn reflink(_from: &File, _to: &File) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::hash::sha256_hex;

    #[test]
    fn only_a_copy_with_the_expected_digest_becomes_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("model.safetensors");
        fs::write(&source, b"weights").unwrap();
        let blob = dir.path().join("cache/blobs/x");
        let sha = sha256_hex(b"weights");
        assert!(!adopt_as_blob(&source, &blob, DigestKind::Sha256, &"0".repeat(64), None).unwrap());
        assert!(!blob.exists());
        assert_eq!(
            fs::read_dir(blob.parent().unwrap()).unwrap().count(),
            0,
            "no temporary left"
        );
        assert!(!adopt_as_blob(&source, &blob, DigestKind::Sha256, &sha, Some(3)).unwrap());
        assert!(adopt_as_blob(&source, &blob, DigestKind::Sha256, &sha, Some(7)).unwrap());
        assert_eq!(fs::read(&blob).unwrap(), b"weights");
        // A copy, not a link: editing the original leaves the blob as verified.
        fs::write(&source, b"changed").unwrap();
        assert_eq!(fs::read(&blob).unwrap(), b"weights");
    }

    #[test]
    fn candidates_are_a_cache_roots_entries_and_a_local_dirs_file() {
        let dir = tempfile::tempdir().unwrap();
        let commit = "c".repeat(40);
        let other = CacheLayout::new(dir.path());
        let entry = other.snapshot_path("org/m", &commit, "1_Pooling/config.json");
        fs::create_dir_all(entry.parent().unwrap()).unwrap();
        fs::write(&entry, b"{}").unwrap();
        fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
        fs::write(dir.path().join("1_Pooling/config.json"), b"{}").unwrap();
        let found = candidates(dir.path(), "org/m", &commit, "1_Pooling/config.json", "b");
        assert_eq!(found.len(), 2);
        assert!(candidates(dir.path(), "org/m", &commit, "absent.json", "b").is_empty());
    }
}
