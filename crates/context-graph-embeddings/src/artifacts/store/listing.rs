//! What the cache itself says a commit holds, for resolving a model's file set without the
//! network: `huggingface_hub`'s tree listing (`<repo>/trees/<commit>.json`, written by
//! `snapshot_download` since 1.22: the Hub's `/tree` answer, verbatim) and, failing that, the
//! snapshot folder, whose links name their blobs (`blobs/<etag>`: the SHA-256 of an LFS file,
//! the git blob SHA-1 of a regular one).
//!
//! Both are someone else's files: every path is checked like a manifest's (relative, no `..`),
//! digests must look like digests, and a listing that breaks any rule is ignored whole, as
//! Python ignores a corrupted one. The folder walk never follows a link: a folder that is a
//! link is reported as such (planted, its content never listed), never descended into. We read
//! listings and never write one: Python takes a listing as the promise that every file of the
//! commit is present, which a model's subset never is.

use std::fs;
use std::path::PathBuf;

use serde::Deserialize;

use super::layout::{entry_stays_inside, snapshot_link_blob_name, CacheLayout};
use crate::artifacts::fileset::RepoFile;
use crate::artifacts::hash::DigestKind;
use crate::artifacts::json::{from_utf8_json, Object};
use crate::artifacts::manifest::validate_filename;

/// The only listing format `huggingface_hub` writes (`TREE_CACHE_FORMAT_VERSION`).
const FORMAT_VERSION: u64 = 1;
/// Largest listing read (a repo of tens of thousands of files stays far below).
const MAX_LISTING_BYTES: u64 = 64 << 20;
/// Most entries a snapshot folder walk collects (a model repo has far fewer).
const MAX_SNAPSHOT_ENTRIES: usize = 100_000;

#[derive(Deserialize)]
struct Listing {
    format_version: u64,
    files: std::collections::BTreeMap<String, Object<ListedFile>>,
}

#[derive(Deserialize)]
struct ListedFile {
    size: u64,
    blob_id: String,
    #[serde(default)]
    lfs_sha256: Option<String>,
    #[serde(default)]
    lfs_size: Option<u64>,
    #[serde(default)]
    xet_hash: Option<String>,
}

/// Parses a tree listing; `Err` says why it is not usable (nothing of it is then used). What
/// huggingface_hub's reader ignores as corrupted is refused here too: text that is not UTF-8,
/// arrays where it reads objects (`super::json`), and a `xet_hash` that is not 64 hex digits
/// (`is_valid_tree_entries`), though we do not use it.
pub(crate) fn parse_tree_listing(bytes: &[u8]) -> Result<Vec<RepoFile>, String> {
    let Object(listing): Object<Listing> =
        from_utf8_json(bytes).map_err(|e| format!("not a tree listing: {e}"))?;
    if listing.format_version != FORMAT_VERSION {
        return Err(format!(
            "format_version {} (only {FORMAT_VERSION} is known)",
            listing.format_version
        ));
    }
    let mut files = Vec::with_capacity(listing.files.len());
    for (path, Object(entry)) in listing.files {
        validate_filename(&path).map_err(|e| format!("path {e}"))?;
        if DigestKind::of_hex(&entry.blob_id) != Some(DigestKind::GitBlobSha1)
            || entry.blob_id.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(format!("`{path}` has no git blob id"));
        }
        if let Some(sha) = &entry.lfs_sha256 {
            if DigestKind::of_hex(sha) != Some(DigestKind::Sha256)
                || sha.bytes().any(|b| b.is_ascii_uppercase())
            {
                return Err(format!("`{path}` has an lfs_sha256 that is not a SHA-256"));
            }
        }
        if let Some(xet) = &entry.xet_hash {
            if xet.len() != 64 || !xet.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("`{path}` has a xet_hash that is not 64 hex digits"));
            }
        }
        let size = match (entry.lfs_sha256.is_some(), entry.lfs_size) {
            (true, Some(lfs_size)) => lfs_size,
            _ => entry.size,
        };
        files.push(RepoFile {
            path,
            size,
            oid: entry.blob_id,
            lfs_sha256: entry.lfs_sha256,
        });
    }
    Ok(files)
}

/// The tree listing `huggingface_hub` kept for `commit`: `None` when there is none, `Some(Err)`
/// when there is one that cannot be used. Blocking.
pub(crate) fn read_tree_listing(
    layout: &CacheLayout,
    repo_id: &str,
    commit: &str,
) -> Option<Result<Vec<RepoFile>, String>> {
    let path = layout.tree_listing_path(repo_id, commit);
    let meta = path.symlink_metadata().ok()?;
    if !meta.is_file() {
        return Some(Err(format!("{} is not a regular file", path.display())));
    }
    if meta.len() > MAX_LISTING_BYTES {
        return Some(Err(format!("{} is larger than 64 MiB", path.display())));
    }
    Some(
        fs::read(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| parse_tree_listing(&bytes)),
    )
}

/// One entry of a snapshot folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    /// Path inside the repo (`/`-separated).
    pub(crate) path: String,
    /// The blob its link names (`blobs/<name>`), for a link of the cache's shape.
    pub(crate) blob_name: Option<String>,
    /// Its size, when its bytes stay inside the cache.
    pub(crate) size: Option<u64>,
}

/// The files of a snapshot folder whose bytes stay inside the cache, without following any
/// link; links out of the cache (files or folders) are skipped here, and found by the
/// per-file checks of the set. Blocking.
pub(crate) fn snapshot_entries(
    layout: &CacheLayout,
    repo_id: &str,
    commit: &str,
) -> Vec<SnapshotEntry> {
    let root = layout.snapshot_dir(repo_id, commit);
    let mut entries = Vec::new();
    if !root.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return entries;
    }
    let mut folders: Vec<(PathBuf, String)> = vec![(root, String::new())];
    while let Some((folder, prefix)) = folders.pop() {
        let Ok(listing) = fs::read_dir(&folder) else {
            continue;
        };
        for item in listing.flatten() {
            if entries.len() >= MAX_SNAPSHOT_ENTRIES {
                return entries;
            }
            let name = item.file_name().to_string_lossy().into_owned();
            let path = format!("{prefix}{name}");
            if validate_filename(&path).is_err() || name.ends_with(".tmp") {
                continue;
            }
            let Ok(meta) = item.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                folders.push((item.path(), format!("{path}/")));
            } else if entry_stays_inside(&item.path()) {
                entries.push(SnapshotEntry {
                    blob_name: snapshot_link_blob_name(&item.path()),
                    size: fs::metadata(item.path()).ok().map(|m| m.len()),
                    path,
                });
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_as_python_writes_it_parses_and_lfs_files_carry_their_sha256() {
        let sha = "a".repeat(64);
        let git = "b".repeat(40);
        // huggingface_hub writes only valid Xet hashes (64 hex digits), and ignores a listing
        // with any other.
        let xet = "c".repeat(64);
        let text = format!(
            r#"{{"format_version": 1, "files": {{
                "config.json": {{"size": 519, "blob_id": "{git}"}},
                "model.safetensors": {{"size": 1234, "blob_id": "{git}", "lfs_sha256": "{sha}", "lfs_size": 1234, "xet_hash": "{xet}"}}
            }}}}"#
        );
        let files = parse_tree_listing(text.as_bytes()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "config.json");
        assert_eq!(files[0].pinned().kind, DigestKind::GitBlobSha1);
        assert_eq!(files[1].pinned().digest, sha);
        assert_eq!(files[1].pinned().size_bytes, 1234);
    }

    #[test]
    fn hostile_listings_are_refused_whole() {
        let git = "b".repeat(40);
        for bad in [
            r#"{"format_version": 2, "files": {}}"#.to_owned(),
            format!(
                r#"{{"format_version": 1, "files": {{"../x": {{"size": 1, "blob_id": "{git}"}}}}}}"#
            ),
            format!(
                r#"{{"format_version": 1, "files": {{"/etc/passwd": {{"size": 1, "blob_id": "{git}"}}}}}}"#
            ),
            r#"{"format_version": 1, "files": {"a": {"size": 1, "blob_id": "../../x"}}}"#
                .to_owned(),
            format!(
                r#"{{"format_version": 1, "files": {{"a": {{"size": 1, "blob_id": "{git}", "lfs_sha256": "zz"}}}}}}"#
            ),
            format!(
                r#"{{"format_version": 1, "files": {{"a": {{"size": -1, "blob_id": "{git}"}}}}}}"#
            ),
            "[]".to_owned(),
            format!(
                r#"{{"format_version": 1, "files": {{"a": {{"size": 1, "blob_id": "{git}", "xet_hash": "x"}}}}}}"#
            ),
        ] {
            assert!(parse_tree_listing(bad.as_bytes()).is_err(), "{bad}");
        }
        // A byte that is not UTF-8 in a field we do not read: Python cannot decode the file.
        let mut not_utf8 = format!(
            r#"{{"format_version": 1, "files": {{"a": {{"size": 1, "blob_id": "{git}", "other": "?"}}}}}}"#
        )
        .into_bytes();
        let at = not_utf8.iter().position(|b| *b == b'?').unwrap();
        not_utf8[at] = 0x92;
        assert!(parse_tree_listing(&not_utf8).unwrap_err().contains("UTF-8"));
    }
}
