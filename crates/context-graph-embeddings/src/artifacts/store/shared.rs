//! The cache-wide shared blob store of `huggingface_hub` 2.4 (`utils/_shared_blobs.py`), read
//! and cleaned up by its own rules:
//!
//! ```text
//! <cache>/blobs/.huggingface-shared-blobs          marker, content "1\n": the store is Python's
//! <cache>/blobs/<2 hex>/<xet hash>                 one regular file per content (mode 0444-ish)
//! <cache>/blobs/<2 hex>/<xet hash>.refs            manifest: one `models--…/blobs/<etag>` per line
//! <cache>/blobs/<2 hex>/<xet hash>.lock            flock taken for publication and collection
//! <cache>/models--org--name/blobs/<sha256>         relative link ../../blobs/<2 hex>/<xet hash>
//! ```
//!
//! A repo blob that is such a link, into a marked store, to a regular file, reached without any
//! other link, is a valid blob (its bytes are hashed like any other). Any other link stays
//! refused. Removing a repo blob that is a shared link removes the link only; the store entry
//! is then *swept* as Python sweeps it: under its lock, the manifest's references are checked
//! against the file system, survivors are written back, and the payload goes only when no
//! valid reference is left. A missing or unreadable manifest leaks the payload rather than risk
//! deleting content another repo's link needs.
//!
//! We never publish into the store: it is keyed by the Xet hash, which only the Xet protocol
//! delivers and verifies, and Python itself publishes only Xet-verified downloads, never its
//! plain-HTTP fallback (ours is plain HTTP, verified by SHA-256).

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::fs::{link_above, write_atomic};
use super::lock::BlobLock;
use crate::error::EmbeddingResult;

/// The store's folder name, directly under the cache root.
pub(crate) const STORE_DIR: &str = "blobs";
/// The marker that says the folder is a store of the supported layout.
pub(crate) const MARKER: &str = ".huggingface-shared-blobs";
const MARKER_CONTENT: &str = "1\n";
const MANIFEST_SUFFIX: &str = ".refs";
const LOCK_SUFFIX: &str = ".lock";

fn is_xet_hash(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_real_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}

fn is_real_file(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_file())
}

/// Whether `<root>/blobs` is a marked store (`is_shared_blobs_dir`).
pub(crate) fn is_store(root: &Path) -> bool {
    let store = root.join(STORE_DIR);
    let marker = store.join(MARKER);
    is_real_dir(&store)
        && is_real_file(&marker)
        && fs::read_to_string(&marker).is_ok_and(|text| text == MARKER_CONTENT)
}

/// `<cache>` and the repo folder name for a repo blob path `<cache>/models--…/blobs/<name>`.
fn repo_blob_parts(blob: &Path) -> Option<(&Path, String)> {
    let blobs = blob.parent()?;
    let repo = blobs.parent()?;
    let folder = repo.file_name()?.to_string_lossy().into_owned();
    let ok = blobs.file_name().is_some_and(|n| n == "blobs")
        && folder.starts_with("models--")
        && blob.file_name().is_some();
    ok.then_some((repo.parent()?, folder))
}

/// `path` with `.` and `..` removed lexically (no link is followed).
fn lexical(path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir => {}
            other => resolved.push(other),
        }
    }
    resolved
}

/// The store entry a repo blob links to, when it is a valid shared link: the blob is a
/// relative link, its folders up to the repo folder are not links, the target is
/// `<cache>/blobs/<2 hex>/<xet hash>` of a marked store whose folders are not links, and the
/// target is a regular file. `None` for anything else (a regular blob included).
pub(crate) fn shared_target(blob: &Path) -> Option<PathBuf> {
    let (root, _) = repo_blob_parts(blob)?;
    if link_above(blob).is_some() || !blob.symlink_metadata().ok()?.file_type().is_symlink() {
        return None;
    }
    let target = fs::read_link(blob).ok()?;
    if target.is_absolute() {
        return None;
    }
    let resolved = lexical(&blob.parent()?.join(target));
    let relative = resolved.strip_prefix(lexical(&root.join(STORE_DIR))).ok()?;
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let [prefix, name] = parts.as_slice() else {
        return None;
    };
    let shaped = is_xet_hash(name) && name.get(..2) == Some(prefix.as_str());
    let prefix_dir = root.join(STORE_DIR).join(prefix);
    if !shaped || !is_store(root) || !is_real_dir(&prefix_dir) {
        return None;
    }
    let entry = prefix_dir.join(name);
    is_real_file(&entry).then_some(entry)
}

fn sibling(entry: &Path, suffix: &str) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The manifest's references that still are valid shared links to `entry`, as lines
/// (`models--…/blobs/<name>`); `None` when the manifest is missing or unreadable (then nothing
/// may be deleted).
fn valid_references(root: &Path, entry: &Path) -> Option<Vec<String>> {
    let manifest = sibling(entry, MANIFEST_SUFFIX);
    if !is_real_file(&manifest) {
        return None;
    }
    let text = fs::read_to_string(&manifest).ok()?;
    let mut references: Vec<String> = text
        .lines()
        .filter(|line| {
            let relative = Path::new(line);
            let plain = !relative.is_absolute()
                && relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
            plain
                && relative.components().count() == 3
                && shared_target(&root.join(relative)).as_deref() == Some(entry)
        })
        .map(str::to_owned)
        .collect();
    references.sort();
    references.dedup();
    Some(references)
}

/// Bytes that removing the repo blob `blob` (a shared link) would free: the payload's size
/// when `blob` is its only valid reference, else 0 (another repo's link needs it, or the
/// manifest is unreadable and the payload would be kept).
pub(crate) fn freed_by_removing(blob: &Path) -> u64 {
    let Some(entry) = shared_target(blob) else {
        return 0;
    };
    let Some((root, folder)) = repo_blob_parts(blob) else {
        return 0;
    };
    let own = format!(
        "{folder}/blobs/{}",
        blob.file_name().unwrap_or_default().to_string_lossy()
    );
    match valid_references(root, &entry) {
        Some(references) if references.iter().all(|r| *r == own) => {
            entry.symlink_metadata().map_or(0, |m| m.len())
        }
        _ => 0,
    }
}

/// Collects one store entry by the store's rules (`sweep_shared_blob`), under its lock:
/// surviving references are written back, and the payload and its manifest go only when no
/// valid reference is left. Returns the bytes freed. Blocking.
pub(crate) fn sweep(root: &Path, entry: &Path) -> EmbeddingResult<u64> {
    let lock_path = sibling(entry, LOCK_SUFFIX);
    let _lock = BlobLock::acquire_shared_store(&lock_path)?;
    let Some(references) = valid_references(root, entry) else {
        return Ok(0);
    };
    let manifest = sibling(entry, MANIFEST_SUFFIX);
    if !references.is_empty() {
        let content: String = references.iter().map(|r| format!("{r}\n")).collect();
        if fs::read_to_string(&manifest).ok().as_deref() != Some(content.as_str()) {
            write_atomic(&manifest, content.as_bytes())?;
        }
        return Ok(0);
    }
    if !is_real_file(entry) {
        return Ok(0);
    }
    let size = entry.symlink_metadata().map_or(0, |m| m.len());
    fs::remove_file(entry)
        .map_err(|e| crate::error::EmbeddingError::io("cannot remove", entry, e))?;
    let _ = fs::remove_file(&manifest);
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path, hash: &str, content: &[u8]) -> PathBuf {
        let prefix = root.join("blobs").join(&hash[..2]);
        fs::create_dir_all(&prefix).unwrap();
        fs::write(root.join("blobs").join(MARKER), MARKER_CONTENT).unwrap();
        let entry = prefix.join(hash);
        fs::write(&entry, content).unwrap();
        entry
    }

    fn link(root: &Path, repo: &str, name: &str, target: &str, manifest: &Path) -> PathBuf {
        let blobs = root.join(repo).join("blobs");
        fs::create_dir_all(&blobs).unwrap();
        let blob = blobs.join(name);
        std::os::unix::fs::symlink(target, &blob).unwrap();
        let mut text = fs::read_to_string(manifest).unwrap_or_default();
        text.push_str(&format!("{repo}/blobs/{name}\n"));
        fs::write(manifest, text).unwrap();
        blob
    }

    #[test]
    fn only_links_into_the_marked_store_count_and_sweeping_keeps_what_others_need() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let hash = "ab".repeat(32);
        let entry = store(&root, &hash, b"payload");
        let manifest = sibling(&entry, MANIFEST_SUFFIX);
        let target = format!("../../blobs/ab/{hash}");
        let a = link(&root, "models--o--a", "e1", &target, &manifest);
        let b = link(&root, "models--o--b", "e2", &target, &manifest);
        assert_eq!(shared_target(&a), Some(entry.clone()));
        assert_eq!(freed_by_removing(&a), 0, "b needs it too");

        // Absolute links, links elsewhere, an unmarked store are refused.
        let abs = root.join("models--o--a/blobs/abs");
        std::os::unix::fs::symlink(&entry, &abs).unwrap();
        assert_eq!(shared_target(&abs), None);
        let out = root.join("models--o--a/blobs/out");
        std::os::unix::fs::symlink("../../../elsewhere/ab/x", &out).unwrap();
        assert_eq!(shared_target(&out), None);

        fs::remove_file(&a).unwrap();
        assert_eq!(sweep(&root, &entry).unwrap(), 0);
        assert!(entry.exists(), "b's link still needs the payload");
        assert_eq!(
            fs::read_to_string(&manifest).unwrap(),
            "models--o--b/blobs/e2\n"
        );
        assert_eq!(freed_by_removing(&b), 7);
        fs::remove_file(&b).unwrap();
        assert_eq!(sweep(&root, &entry).unwrap(), 7);
        assert!(!entry.exists() && !manifest.exists());

        // Without a manifest the payload is leaked, never deleted.
        let entry = store(&root, &hash, b"payload");
        assert_eq!(sweep(&root, &entry).unwrap(), 0);
        assert!(entry.exists());
        fs::remove_file(root.join("blobs").join(MARKER)).unwrap();
        let c = root.join("models--o--c/blobs/e3");
        fs::create_dir_all(c.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &c).unwrap();
        assert_eq!(shared_target(&c), None, "unmarked store");
    }
}
