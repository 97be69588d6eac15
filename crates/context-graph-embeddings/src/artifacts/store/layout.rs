//! The Hugging Face cache layout, shared with `huggingface_hub` and `hf-hub`:
//!
//! ```text
//! <cache>/CACHEDIR.TAG
//! <cache>/.locks/models--org--name/<etag>.lock
//! <cache>/models--org--name/blobs/<etag>                      (sha256 for LFS files)
//! <cache>/models--org--name/blobs/<etag>.<8hex>.incomplete    (a download in progress)
//! <cache>/models--org--name/snapshots/<commit>/<path>         (relative symlink to the blob)
//! <cache>/models--org--name/refs/<revision>                   (the commit, no newline)
//! <cache>/models--org--name/trees/<commit>.json              (huggingface_hub's tree listing, read only)
//! <cache>/models--org--name/.cg-models-v1/verified/…          (our verification stamps)
//! <cache>/models--org--name/.cg-models-v1/signatures/…        (our signature verdicts)
//! <cache>/blobs/<2 hex>/<xet hash>                            (huggingface_hub 2.4's shared store, see `shared.rs`)
//! ```
//!
//! Owns path construction, refs, snapshot links (symlink or copy), size accounting and the
//! safe removal of files (never following a link out of the cache).

// Public for `artifacts::test_support` (the `failpoints` feature), crate-private otherwise.
#![cfg_attr(not(feature = "failpoints"), allow(unreachable_pub))]

use std::fs;
use std::path::{Path, PathBuf};

use super::fs::{
    create_dir_all, link_above, link_at_or_above, process_runs, random_suffix,
    remove_stale_temporaries, symlink, temporary_owner, temporary_path, write_atomic,
};
use super::shared::shared_target;
use crate::artifacts::hash::sha256_hex;
use crate::artifacts::ids::is_commit_hash;
use crate::artifacts::testing;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Content of `CACHEDIR.TAG`, as `huggingface_hub` writes it (the standard signature first).
pub(crate) const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by huggingface_hub.\n# For information about cache directory tags, see:\n#\thttps://bford.info/cachedir/\n";

/// Our own metadata folder inside a repo folder; versioned so a future format can coexist.
pub(crate) const METADATA_DIR: &str = ".cg-models-v1";

/// Suffix of files being downloaded.
pub(crate) const INCOMPLETE_SUFFIX: &str = ".incomplete";

/// Suffix of a parallel download's progress record, beside its partial file
/// (`<etag>.<pid>-<8 hex>.incomplete.ranges`).
pub(crate) const SIDECAR_SUFFIX: &str = ".ranges";

/// Paths of one Hugging Face hub cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLayout {
    root: PathBuf,
}

impl CacheLayout {
    /// A layout rooted at `root` (the hub cache folder itself, e.g. `~/.cache/huggingface/hub`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CacheLayout { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--org--name`, as `huggingface_hub.repo_folder_name` builds it.
    pub fn repo_folder_name(repo_id: &str) -> String {
        format!("models--{}", repo_id.replace('/', "--"))
    }

    /// The folder of one repo.
    pub fn repo_dir(&self, repo_id: &str) -> PathBuf {
        self.root.join(Self::repo_folder_name(repo_id))
    }

    /// The blobs folder of one repo.
    pub fn blobs_dir(&self, repo_id: &str) -> PathBuf {
        self.repo_dir(repo_id).join("blobs")
    }

    /// A blob, named by its etag.
    pub fn blob_path(&self, repo_id: &str, etag: &str) -> PathBuf {
        self.blobs_dir(repo_id).join(etag)
    }

    /// A file of a snapshot.
    pub fn snapshot_path(&self, repo_id: &str, commit: &str, filename: &str) -> PathBuf {
        let mut path = self.repo_dir(repo_id).join("snapshots").join(commit);
        for segment in filename.split('/') {
            path.push(segment);
        }
        path
    }

    /// The ref file of a revision (`refs/pr/1` lives at `refs/refs/pr/1`).
    pub fn ref_path(&self, repo_id: &str, revision: &str) -> PathBuf {
        let mut path = self.repo_dir(repo_id).join("refs");
        for segment in revision.split('/') {
            path.push(segment);
        }
        path
    }

    /// The lock of one blob, at the path `huggingface_hub` locks.
    pub fn lock_path(&self, repo_id: &str, etag: &str) -> PathBuf {
        self.lock_path_in(&Self::repo_folder_name(repo_id), etag)
    }

    /// The lock of a blob (or of the blob a partial download's name belongs to) in a repo
    /// folder (`models--org--name`).
    pub fn lock_path_in(&self, repo_folder: &str, blob_or_partial_name: &str) -> PathBuf {
        let etag = partial_blob_name(blob_or_partial_name).unwrap_or(blob_or_partial_name);
        self.root
            .join(".locks")
            .join(repo_folder)
            .join(format!("{etag}.lock"))
    }

    /// The snapshot folder of one commit.
    pub fn snapshot_dir(&self, repo_id: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo_id).join("snapshots").join(commit)
    }

    /// Where the verification stamp of a snapshot file lives.
    pub fn stamp_path(&self, repo_id: &str, commit: &str, filename: &str) -> PathBuf {
        let name = format!("{commit}-{}.json", &sha256_hex(filename.as_bytes())[..16]);
        self.repo_dir(repo_id)
            .join(METADATA_DIR)
            .join("verified")
            .join(name)
    }

    /// Where the resolved file set of a model at a commit is recorded (`key` names the
    /// selection), so readiness needs no tree listing after the first resolution.
    pub fn set_record_path(&self, repo_id: &str, commit: &str, key: &str) -> PathBuf {
        let name = format!("{commit}-{}.json", &sha256_hex(key.as_bytes())[..16]);
        self.repo_dir(repo_id)
            .join(METADATA_DIR)
            .join("sets")
            .join(name)
    }

    /// Where the verdict on a model's signature at a commit is recorded (`key` names the
    /// selection and the policy): `SignatureStamp`, valid only while every file's stamp is.
    pub fn signature_record_path(&self, repo_id: &str, commit: &str, key: &str) -> PathBuf {
        let name = format!("{commit}-{}.json", &sha256_hex(key.as_bytes())[..16]);
        self.repo_dir(repo_id)
            .join(METADATA_DIR)
            .join("signatures")
            .join(name)
    }

    /// Where `huggingface_hub` keeps the Hub's tree listing of a commit (read, never written:
    /// see `listing.rs`).
    pub fn tree_listing_path(&self, repo_id: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo_id)
            .join("trees")
            .join(format!("{commit}.json"))
    }

    /// The commit a revision points to: the revision itself when it is a commit id, else the
    /// content of its ref file (trimmed; only a 40-hex value counts).
    pub fn resolve_commit(&self, repo_id: &str, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_owned());
        }
        let text = fs::read_to_string(self.ref_path(repo_id, revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_owned())
    }

    /// Writes `refs/<revision>` = commit (no newline, atomically, only if it changed), as
    /// `huggingface_hub` does. Nothing is written when the revision is the commit itself.
    pub fn write_ref(&self, repo_id: &str, revision: &str, commit: &str) -> EmbeddingResult<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(repo_id, revision);
        if fs::read_to_string(&path).ok().as_deref() == Some(commit) {
            sweep_ref_folder(&path);
            return Ok(());
        }
        testing::hit("ref.before_write");
        write_atomic(&path, commit.as_bytes())
    }

    /// Writes `refs/<commit>` whose content is the commit itself: always true (a commit never
    /// changes), read by hf-hub 0.x (text-embeddings-inference, fastembed) even for a commit
    /// revision, and a reference that keeps `hf cache prune` from deleting the snapshot.
    /// `huggingface_hub` lists it as a ref and is otherwise unaffected.
    pub fn write_commit_ref(&self, repo_id: &str, commit: &str) -> EmbeddingResult<()> {
        if !is_commit_hash(commit) {
            return Ok(());
        }
        let path = self.ref_path(repo_id, commit);
        if fs::read_to_string(&path).ok().as_deref() == Some(commit) {
            sweep_ref_folder(&path);
            return Ok(());
        }
        write_atomic(&path, commit.as_bytes())
    }

    /// Every ref of a repo that names a commit, as (name, commit), sorted by name: the names
    /// consumers ask for (`main`, `refs/pr/1`, a commit id). Links are never followed.
    pub fn refs(&self, repo_id: &str) -> Vec<(String, String)> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                match entry.path().symlink_metadata() {
                    Ok(meta) if meta.is_dir() => walk(&entry.path(), &format!("{name}/"), out),
                    Ok(meta) if meta.is_file() && !name.ends_with(".tmp") => {
                        out.push((name, entry.path()))
                    }
                    _ => {}
                }
            }
        }
        let root = self.repo_dir(repo_id).join("refs");
        if link_at_or_above(&root).is_some() {
            return Vec::new();
        }
        let mut files = Vec::new();
        walk(&root, "", &mut files);
        let mut refs: Vec<(String, String)> = files
            .into_iter()
            .filter_map(|(name, path)| {
                let text = fs::read_to_string(path).ok()?;
                let commit = text.trim();
                is_commit_hash(commit).then(|| (name, commit.to_owned()))
            })
            .collect();
        refs.sort();
        refs
    }

    /// Writes `CACHEDIR.TAG` if it is missing, so backup tools skip the cache.
    pub fn ensure_cachedir_tag(&self) -> EmbeddingResult<()> {
        let path = self.root.join("CACHEDIR.TAG");
        if path.exists() {
            // Two writers can race for the tag; one killed mid-write leaves its temporary
            // here while the other's tag stands, so no later write would sweep it.
            remove_stale_temporaries(&self.root);
            return Ok(());
        }
        create_dir_all(&self.root)?;
        write_atomic(&path, CACHEDIR_TAG.as_bytes())
    }

    /// Puts a snapshot entry in place for `blob`: a relative symlink (`../../blobs/<etag>`,
    /// deeper for files in folders) or, without symlinks, a hard link or copy. Atomic: the
    /// entry is built under a temporary name and renamed over any old one.
    pub fn link_snapshot(
        &self,
        repo_id: &str,
        commit: &str,
        filename: &str,
        etag: &str,
        use_symlinks: bool,
    ) -> EmbeddingResult<PathBuf> {
        let target = self.snapshot_path(repo_id, commit, filename);
        let parent = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        if let Some(link) = link_at_or_above(&parent) {
            // Never write through a link: what it points to is not the cache's.
            return Err(EmbeddingError::io(
                "refusing to place a snapshot entry through the link",
                link,
                std::io::Error::other("a folder of the snapshot path is a link"),
            ));
        }
        create_dir_all(&parent)?;
        remove_stale_temporaries(&parent);
        let temporary = temporary_path(&parent);
        let blob = self.blob_path(repo_id, etag);
        if use_symlinks {
            let relative = snapshot_link_target(filename, etag);
            symlink(Path::new(&relative), &temporary)
                .map_err(|e| EmbeddingError::io("cannot create symlink", &temporary, e))?;
        } else {
            // A blob that is a link into the shared store: link or copy its payload, not the
            // link (a hard link to a relative link would point nowhere from `snapshots/`).
            let blob = shared_target(&blob).unwrap_or(blob);
            if fs::hard_link(&blob, &temporary).is_err() {
                fs::copy(&blob, &temporary)
                    .map_err(|e| EmbeddingError::io("cannot copy blob to", &temporary, e))?;
            }
        }
        testing::hit("snapshot.before_link");
        fs::rename(&temporary, &target).map_err(|e| {
            let _ = fs::remove_file(&temporary);
            EmbeddingError::io("cannot place snapshot entry", &target, e)
        })?;
        testing::hit("snapshot.after_link");
        Ok(target)
    }

    /// The true number of bytes of regular files in the cache (blobs, partial downloads,
    /// copies, metadata); links are not followed, so nothing is counted twice.
    pub fn total_size(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(dir) else {
                return 0;
            };
            let mut total = 0;
            for entry in entries.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    total += walk(&entry.path());
                } else if meta.is_file() {
                    total += meta.len();
                }
            }
            total
        }
        walk(&self.root)
    }

    /// Every `models--*` folder of the cache.
    pub fn repo_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("models--"))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs
    }
}

/// What the snapshot entry `filename` links to: `../../blobs/<etag>` from
/// `snapshots/<commit>/`, one `..` more per folder of `filename` (relative, as
/// `huggingface_hub` writes it, so a cache can be moved or mounted elsewhere).
pub(crate) fn snapshot_link_target(filename: &str, etag: &str) -> String {
    format!(
        "{}blobs/{etag}",
        "../".repeat(filename.split('/').count() + 1)
    )
}

/// A ref that is already right is not written again, but the folder is still swept: a
/// process killed while writing the same ref (two tasks of one model write it) leaves its
/// temporary file there, and nothing else would remove it.
fn sweep_ref_folder(ref_path: &Path) {
    if let Some(parent) = ref_path.parent() {
        remove_stale_temporaries(parent);
    }
}

/// Partial downloads of one blob: `<etag>.incomplete` (older clients) and
/// `<etag>.<anything>.incomplete`, largest first.
pub(crate) fn partial_files(blobs_dir: &Path, etag: &str) -> Vec<(PathBuf, u64)> {
    if link_at_or_above(blobs_dir).is_some() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(blobs_dir) else {
        return Vec::new();
    };
    let prefix = format!("{etag}.");
    let mut found: Vec<(PathBuf, u64)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_partial = name.starts_with(&prefix) && name.ends_with(INCOMPLETE_SUFFIX);
            let meta = entry.path().symlink_metadata().ok()?;
            (is_partial && meta.is_file()).then(|| (entry.path(), meta.len()))
        })
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    found
}

/// A fresh private name for a partial download of `etag`.
/// `<etag>.<pid>-<8 hex>.incomplete`: the process id tells a later writer whether the file
/// is still being written (see [`partial_in_use`]).
pub(crate) fn new_partial_path(blobs_dir: &Path, etag: &str) -> PathBuf {
    blobs_dir.join(format!(
        "{etag}.{}-{}{INCOMPLETE_SUFFIX}",
        std::process::id(),
        random_suffix()
    ))
}

/// Whether a partial download named by [`new_partial_path`] belongs to another process that
/// still runs: that file is being written (file locks may silently do nothing, as on network
/// file systems), so it must be neither adopted nor removed. This process's own partials
/// (one writer per blob in a process) and partials of other shapes (`huggingface_hub`'s, or a
/// killed run's) are not in use.
pub(crate) fn partial_in_use(partial: &Path) -> bool {
    let name = partial
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((_, middle)) = name
        .strip_suffix(INCOMPLETE_SUFFIX)
        .and_then(|rest| rest.split_once('.'))
    else {
        return false;
    };
    temporary_owner(&format!(".{middle}.tmp"))
        .is_some_and(|pid| pid != std::process::id() && process_runs(pid))
}

/// Whether a snapshot entry's bytes stay inside the cache: no link among its folders, and the
/// entry is either a regular file (a copy) or a link of the cache's own shape
/// (`../…/blobs/<name>`) to a blob in a `blobs/` folder that is not a link, the blob being a
/// regular file or a valid link into the cache's own shared store (`shared.rs`).
/// Operations that read or hash entries (verification) should skip any entry for which this is
/// false: its bytes are somewhere else, possibly someone else's.
pub(crate) fn entry_stays_inside(snapshot_entry: &Path) -> bool {
    if link_above(snapshot_entry).is_some() {
        return false;
    }
    let Ok(meta) = snapshot_entry.symlink_metadata() else {
        return false;
    };
    if meta.is_file() {
        return true;
    }
    if !meta.file_type().is_symlink() || snapshot_link_blob_name(snapshot_entry).is_none() {
        return false;
    }
    let Ok(target) = fs::read_link(snapshot_entry) else {
        return false;
    };
    let Some(parent) = snapshot_entry.parent() else {
        return false;
    };
    let blob = parent.join(target);
    // The blob, lexically resolved (the link has only `..` before `blobs/<name>`).
    let mut resolved = PathBuf::new();
    for component in blob.components() {
        match component {
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            other => resolved.push(other),
        }
    }
    link_above(&resolved).is_none()
        && resolved
            .parent()
            .is_some_and(|d| d.file_name().is_some_and(|n| n == "blobs"))
        && (resolved.symlink_metadata().is_ok_and(|m| m.is_file())
            || shared_target(&resolved).is_some())
}

/// Whether a repo blob's bytes are the cache's own: a regular file, or a valid link into the
/// cache's shared store (`shared.rs`), with no link among its folders. A blob that is any other
/// link is not to be read, reused or trusted.
pub(crate) fn blob_stays_inside(blob: &Path) -> bool {
    link_above(blob).is_none()
        && (blob.symlink_metadata().is_ok_and(|m| m.is_file()) || shared_target(blob).is_some())
}

/// The blob name a snapshot symlink points to, if it is a link of the cache's own shape
/// (`../…/blobs/<name>` with a plain name). Links pointing anywhere else are ignored, so no
/// operation ever follows them out of the cache.
pub(crate) fn snapshot_link_blob_name(snapshot_entry: &Path) -> Option<String> {
    let target = fs::read_link(snapshot_entry).ok()?;
    let mut components: Vec<String> = target
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let name = components.pop()?;
    let blobs = components.pop()?;
    let only_parents = components.iter().all(|c| c == "..");
    let plain = !name.is_empty() && !name.contains(['/', '\\']) && name != ".." && name != ".";
    (blobs == "blobs" && only_parents && plain && !target.is_absolute()).then_some(name)
}

/// Where a sidecar is written before it is renamed into place; a kill between the two
/// leaves it behind, and the next writer adopting the partial removes it.
pub(crate) fn sidecar_temp_path(sidecar: &Path) -> PathBuf {
    sidecar.with_extension("ranges.tmp")
}

/// The sidecar path of a partial file.
pub fn sidecar_path(partial: &Path) -> PathBuf {
    let mut name = partial.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// The blob a partial download or its progress record belongs to (the etag before the first
/// dot), `None` for names of any other shape.
pub(crate) fn partial_blob_name(file_name: &str) -> Option<&str> {
    let is_partial = file_name.ends_with(INCOMPLETE_SUFFIX)
        || file_name.ends_with(&format!("{INCOMPLETE_SUFFIX}{SIDECAR_SUFFIX}"));
    is_partial
        .then(|| file_name.split('.').next())
        .flatten()
        .filter(|etag| !etag.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::store::fs::remove_entry;

    #[test]
    fn paths_match_huggingface_hub() {
        let layout = CacheLayout::new("/c");
        assert_eq!(
            layout.blob_path("org/name", "abc"),
            PathBuf::from("/c/models--org--name/blobs/abc")
        );
        assert_eq!(
            layout.snapshot_path("gpt2", "c0ffee", "sub/dir/f.bin"),
            PathBuf::from("/c/models--gpt2/snapshots/c0ffee/sub/dir/f.bin")
        );
        assert_eq!(
            layout.ref_path("org/name", "refs/pr/1"),
            PathBuf::from("/c/models--org--name/refs/refs/pr/1")
        );
        assert_eq!(
            layout.lock_path("org/name", "abc"),
            PathBuf::from("/c/.locks/models--org--name/abc.lock")
        );
    }

    #[test]
    fn symlinks_are_relative_and_resolve_to_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path());
        let commit = "a".repeat(40);
        fs::create_dir_all(layout.blobs_dir("o/n")).unwrap();
        fs::write(layout.blob_path("o/n", "e1"), b"data").unwrap();
        let top = layout
            .link_snapshot("o/n", &commit, "f.bin", "e1", true)
            .unwrap();
        assert_eq!(
            fs::read_link(&top).unwrap(),
            PathBuf::from("../../blobs/e1")
        );
        assert_eq!(fs::read(&top).unwrap(), b"data");
        let deep = layout
            .link_snapshot("o/n", &commit, "a/b/f.bin", "e1", true)
            .unwrap();
        assert_eq!(
            fs::read_link(&deep).unwrap(),
            PathBuf::from("../../../../blobs/e1")
        );
        assert_eq!(snapshot_link_blob_name(&deep).as_deref(), Some("e1"));
        let copy = layout
            .link_snapshot("o/n", &commit, "c.bin", "e1", false)
            .unwrap();
        assert!(!copy.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&copy).unwrap(), b"data");
    }

    #[test]
    fn foreign_links_are_not_taken_for_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert_eq!(snapshot_link_blob_name(&link), None);
        let link2 = dir.path().join("l2");
        std::os::unix::fs::symlink("../../blobs/../../../etc", &link2).unwrap();
        assert_eq!(snapshot_link_blob_name(&link2), None);
    }

    #[test]
    fn refs_are_written_without_newline_and_only_for_branches() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path());
        let commit = "b".repeat(40);
        layout.write_ref("o/n", "main", &commit).unwrap();
        assert_eq!(
            fs::read_to_string(layout.ref_path("o/n", "main")).unwrap(),
            commit
        );
        layout.write_ref("o/n", &commit, &commit).unwrap();
        assert!(!layout.ref_path("o/n", &commit).exists());
        assert_eq!(layout.resolve_commit("o/n", "main"), Some(commit.clone()));
        assert_eq!(layout.resolve_commit("o/n", "dev"), None);
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ours = temporary_path(dir.path());
        fs::write(&ours, b"in flight").unwrap();
        // A process that surely ended: a child we waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".{dead}-0badc0de.tmp"));
        std::os::unix::fs::symlink("../../blobs/e", &stale).unwrap();
        let foreign_shape = dir.path().join(".0badc0de.tmp");
        fs::write(&foreign_shape, b"x").unwrap();
        let other = dir.path().join("model.safetensors");
        fs::write(&other, b"x").unwrap();
        remove_stale_temporaries(dir.path());
        assert!(
            stale.symlink_metadata().is_err(),
            "a dead process's temporary is removed"
        );
        assert!(ours.exists(), "our own temporary is kept");
        assert!(foreign_shape.exists() && other.exists());
        assert_eq!(temporary_owner(".12-0123abcd.tmp"), Some(12));
        assert_eq!(temporary_owner(".12-0123abcd.tmpx"), None);
        assert_eq!(temporary_owner("12-0123abcd.tmp"), None);
    }

    #[test]
    fn partials_of_other_running_processes_are_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let ours = new_partial_path(dir.path(), "e");
        assert!(!partial_in_use(&ours), "this process's own partial");
        let mut running = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let live = dir
            .path()
            .join(format!("e.{}-0123abcd.incomplete", running.id()));
        assert!(partial_in_use(&live));
        running.kill().unwrap();
        running.wait().unwrap();
        assert!(
            !partial_in_use(&live),
            "a killed writer's partial may be adopted"
        );
        assert!(!partial_in_use(&dir.path().join("e.incomplete")));
        assert!(!partial_in_use(&dir.path().join("e.0badc0de.incomplete")));
        let name = ours.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("e.") && name.ends_with(INCOMPLETE_SUFFIX),
            "{name}"
        );
    }

    #[test]
    fn link_and_write_clean_up_what_a_killed_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path());
        let commit = "e".repeat(40);
        fs::create_dir_all(layout.blobs_dir("o/n")).unwrap();
        fs::write(layout.blob_path("o/n", "e1"), b"data").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let snapshot_dir = layout.snapshot_path("o/n", &commit, "f.bin");
        let snapshot_dir = snapshot_dir.parent().unwrap();
        fs::create_dir_all(snapshot_dir).unwrap();
        let stale_link = snapshot_dir.join(format!(".{dead}-00000001.tmp"));
        std::os::unix::fs::symlink("../../blobs/e1", &stale_link).unwrap();
        layout
            .link_snapshot("o/n", &commit, "f.bin", "e1", true)
            .unwrap();
        assert!(stale_link.symlink_metadata().is_err());
        let refs = layout.ref_path("o/n", "main");
        fs::create_dir_all(refs.parent().unwrap()).unwrap();
        let stale_file = refs.parent().unwrap().join(format!(".{dead}-00000002.tmp"));
        fs::write(&stale_file, b"half").unwrap();
        layout.write_ref("o/n", "main", &commit).unwrap();
        assert!(!stale_file.exists());
    }

    #[test]
    fn nothing_is_removed_or_listed_through_a_linked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path().join("cache"));
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("e1"), b"not ours").unwrap();
        fs::write(outside.join("e1.00000000.incomplete"), b"not ours").unwrap();
        fs::create_dir_all(layout.repo_dir("o/n")).unwrap();
        std::os::unix::fs::symlink(&outside, layout.blobs_dir("o/n")).unwrap();
        assert!(link_at_or_above(&layout.blob_path("o/n", "e1")).is_some());
        assert!(!remove_entry(&layout.blob_path("o/n", "e1")).unwrap());
        assert!(partial_files(&layout.blobs_dir("o/n"), "e1").is_empty());
        assert!(outside.join("e1").exists());
        // A linked repo folder.
        std::os::unix::fs::symlink(&outside, layout.repo_dir("o/m")).unwrap();
        assert!(!remove_entry(&layout.repo_dir("o/m").join("e1")).unwrap());
        assert!(outside.join("e1").exists());
        // The link itself may go; plain paths are unaffected.
        assert!(remove_entry(&layout.blobs_dir("o/n")).unwrap());
        assert!(outside.join("e1").exists());
        assert_eq!(link_at_or_above(&dir.path().join("elsewhere/x")), None);
    }

    #[test]
    fn entries_whose_bytes_live_outside_the_cache_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path().join("cache"));
        let commit = "f".repeat(40);
        fs::create_dir_all(layout.blobs_dir("o/n")).unwrap();
        fs::write(layout.blob_path("o/n", "e1"), b"data").unwrap();
        let good = layout
            .link_snapshot("o/n", &commit, "a/f.bin", "e1", true)
            .unwrap();
        assert!(entry_stays_inside(&good));
        let copy = layout
            .link_snapshot("o/n", &commit, "c.bin", "e1", false)
            .unwrap();
        assert!(entry_stays_inside(&copy));
        let foreign = dir.path().join("foreign");
        fs::write(&foreign, b"data").unwrap();
        let absolute = good.with_file_name("abs.bin");
        std::os::unix::fs::symlink(&foreign, &absolute).unwrap();
        assert!(!entry_stays_inside(&absolute));
        // The blob itself a link out.
        fs::remove_file(layout.blob_path("o/n", "e1")).unwrap();
        std::os::unix::fs::symlink(&foreign, layout.blob_path("o/n", "e1")).unwrap();
        assert!(!entry_stays_inside(&good));
        // A linked blobs/ folder.
        fs::remove_file(layout.blob_path("o/n", "e1")).unwrap();
        fs::remove_dir(layout.blobs_dir("o/n")).unwrap();
        let store = dir.path().join("store");
        fs::create_dir_all(&store).unwrap();
        fs::write(store.join("e1"), b"data").unwrap();
        std::os::unix::fs::symlink(&store, layout.blobs_dir("o/n")).unwrap();
        assert!(!entry_stays_inside(&good));
    }

    #[test]
    fn total_size_counts_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(dir.path());
        let commit = "c".repeat(40);
        fs::create_dir_all(layout.blobs_dir("o/n")).unwrap();
        fs::write(layout.blob_path("o/n", "e"), vec![0u8; 1000]).unwrap();
        fs::write(
            layout.blobs_dir("o/n").join("x.1234.incomplete"),
            vec![0u8; 10],
        )
        .unwrap();
        layout
            .link_snapshot("o/n", &commit, "f", "e", true)
            .unwrap();
        assert_eq!(layout.total_size(), 1010);
    }
}
