//! The Hugging Face cache layout, shared with `huggingface_hub` and `hf-hub`:
//!
//! ```text
//! <cache>/CACHEDIR.TAG
//! <cache>/.locks/models--org--name/<etag>.lock
//! <cache>/models--org--name/blobs/<etag>                      (sha256 for LFS files)
//! <cache>/models--org--name/blobs/<etag>.<8hex>.incomplete    (a download in progress)
//! <cache>/models--org--name/snapshots/<commit>/<path>         (relative symlink to the blob)
//! <cache>/models--org--name/refs/<revision>                   (the commit, no newline)
//! <cache>/models--org--name/.cg-models-v1/verified/…          (our verification stamps)
//! ```
//!
//! Owns path construction, refs, snapshot links (symlink or copy), size accounting and the
//! safe removal of files (never following a link out of the cache).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{EmbeddingError, EmbeddingResult};

/// Content of `CACHEDIR.TAG`, as `huggingface_hub` writes it (the standard signature first).
pub const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by huggingface_hub.\n# For information about cache directory tags, see:\n#\thttps://bford.info/cachedir/\n";

/// Our own metadata folder inside a repo folder; versioned so a future format can coexist.
pub const METADATA_DIR: &str = ".cg-models-v1";

/// Suffix of files being downloaded.
pub const INCOMPLETE_SUFFIX: &str = ".incomplete";

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
        self.root
            .join(".locks")
            .join(Self::repo_folder_name(repo_id))
            .join(format!("{etag}.lock"))
    }

    /// Where the verification stamp of a snapshot file lives.
    pub fn stamp_path(&self, repo_id: &str, commit: &str, filename: &str) -> PathBuf {
        let name = format!(
            "{commit}-{}.json",
            &super::verification::sha256_hex(filename.as_bytes())[..16]
        );
        self.repo_dir(repo_id)
            .join(METADATA_DIR)
            .join("verified")
            .join(name)
    }

    /// The commit a revision points to: the revision itself when it is a commit id, else the
    /// content of its ref file (trimmed; only a 40-hex value counts).
    pub fn resolve_commit(&self, repo_id: &str, revision: &str) -> Option<String> {
        if super::manifest::is_commit_hash(revision) {
            return Some(revision.to_owned());
        }
        let text = fs::read_to_string(self.ref_path(repo_id, revision)).ok()?;
        let commit = text.trim();
        super::manifest::is_commit_hash(commit).then(|| commit.to_owned())
    }

    /// Writes `refs/<revision>` = commit (no newline, atomically, only if it changed), as
    /// `huggingface_hub` does. Nothing is written when the revision is the commit itself.
    pub fn write_ref(&self, repo_id: &str, revision: &str, commit: &str) -> EmbeddingResult<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(repo_id, revision);
        if fs::read_to_string(&path).ok().as_deref() == Some(commit) {
            return Ok(());
        }
        super::failpoint::hit("ref.before_write");
        write_atomic(&path, commit.as_bytes())
    }

    /// Writes `CACHEDIR.TAG` if it is missing, so backup tools skip the cache.
    pub fn ensure_cachedir_tag(&self) -> EmbeddingResult<()> {
        let path = self.root.join("CACHEDIR.TAG");
        if path.exists() {
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
        create_dir_all(&parent)?;
        remove_stale_temporaries(&parent);
        let temporary = temporary_path(&parent);
        let blob = self.blob_path(repo_id, etag);
        if use_symlinks {
            let depth = filename.split('/').count();
            let mut relative = PathBuf::new();
            for _ in 0..depth + 1 {
                relative.push("..");
            }
            relative.push("blobs");
            relative.push(etag);
            symlink(&relative, &temporary)
                .map_err(|e| EmbeddingError::io("cannot create symlink", &temporary, e))?;
        } else if fs::hard_link(&blob, &temporary).is_err() {
            fs::copy(&blob, &temporary)
                .map_err(|e| EmbeddingError::io("cannot copy blob to", &temporary, e))?;
        }
        super::failpoint::hit("snapshot.before_link");
        fs::rename(&temporary, &target).map_err(|e| {
            let _ = fs::remove_file(&temporary);
            EmbeddingError::io("cannot place snapshot entry", &target, e)
        })?;
        super::failpoint::hit("snapshot.after_link");
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

/// Partial downloads of one blob: `<etag>.incomplete` (older clients) and
/// `<etag>.<anything>.incomplete`, largest first.
pub fn partial_files(blobs_dir: &Path, etag: &str) -> Vec<(PathBuf, u64)> {
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
pub fn new_partial_path(blobs_dir: &Path, etag: &str) -> PathBuf {
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
pub fn partial_in_use(partial: &Path) -> bool {
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

/// Eight random hex digits.
pub fn random_suffix() -> String {
    format!("{:08x}", rand::rng().random::<u32>())
}

/// A fresh name for a temporary file in `dir`: `.<pid>-<8 hex>.tmp`. The process id lets a
/// later run tell the leftovers of a killed process from the files of a live writer.
pub fn temporary_path(dir: &Path) -> PathBuf {
    dir.join(format!(".{}-{}.tmp", std::process::id(), random_suffix()))
}

/// The process that made a temporary file named by [`temporary_path`], if the name has that
/// shape.
fn temporary_owner(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (pid, random) = inner.split_once('-')?;
    let random_ok = random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit());
    random_ok.then(|| pid.parse().ok()).flatten()
}

/// Whether a process with this id runs (on this machine, in this pid namespace). Unsure
/// answers count as running, so nothing of a live writer is ever removed.
fn process_runs(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Removes the temporary files in `dir` that processes no longer running left behind (killed
/// between creating and renaming them). Called before a new temporary file is made in the same
/// folder, so whatever a killed run left is cleaned up by the run that redoes its work.
/// Files of running processes, this one included, and names of any other shape are kept.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = temporary_owner(&name.to_string_lossy()) else {
            continue;
        };
        if !process_runs(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `fs::create_dir_all` with the path in the error.
pub fn create_dir_all(path: &Path) -> EmbeddingResult<()> {
    fs::create_dir_all(path).map_err(|e| EmbeddingError::io("cannot create folder", path, e))
}

/// Writes a small file atomically: temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, content: &[u8]) -> EmbeddingResult<()> {
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    create_dir_all(parent)?;
    remove_stale_temporaries(parent);
    let temporary = temporary_path(parent);
    let result = (|| -> io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&temporary);
        EmbeddingError::io("cannot write", path, e)
    })
}

/// The outermost repo folder (`models--…`) among `path` and its ancestors, as an index into
/// `path.ancestors()`.
fn repo_folder_index(ancestors: &[&Path]) -> Option<usize> {
    ancestors.iter().rposition(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("models--"))
    })
}

/// The link, if any, that `path` itself or one of its folders up to its repo folder
/// (`models--…`, included) is. Everything a repo folder holds is reached without links except
/// snapshot entries themselves; a link anywhere else was planted and may point anywhere, so
/// nothing is removed, listed or read through it. `None` for paths outside any repo folder.
pub fn link_at_or_above(path: &Path) -> Option<PathBuf> {
    let ancestors: Vec<&Path> = path.ancestors().collect();
    let top = repo_folder_index(&ancestors)?;
    ancestors[..=top]
        .iter()
        .find(|p| {
            p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        })
        .map(|p| p.to_path_buf())
}

/// [`link_at_or_above`] for the folders holding `path` (a link at `path` itself is fine: it
/// is removed as a link).
fn link_above(path: &Path) -> Option<PathBuf> {
    path.parent().and_then(link_at_or_above)
}

/// Whether a snapshot entry's bytes stay inside the cache: no link among its folders, and the
/// entry is either a regular file (a copy) or a link of the cache's own shape
/// (`../…/blobs/<name>`) to a regular blob file in a `blobs/` folder that is not a link.
/// Operations that read or hash entries (verification) should skip any entry for which this is
/// false: its bytes are somewhere else, possibly someone else's.
pub fn entry_stays_inside(snapshot_entry: &Path) -> bool {
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
    link_at_or_above(&resolved).is_none()
        && resolved
            .parent()
            .is_some_and(|d| d.file_name().is_some_and(|n| n == "blobs"))
        && resolved.symlink_metadata().is_ok_and(|m| m.is_file())
}

/// Removes a file or link without following links; a missing file is fine. A path reached
/// through a link inside its repo folder is left alone (with a warning): whatever is behind
/// that link is not the cache's to remove.
pub fn remove_entry(path: &Path) -> EmbeddingResult<bool> {
    if let Some(link) = link_above(path) {
        tracing::warn!(
            path = %path.display(),
            link = %link.display(),
            "not removing a path reached through a link inside the cache; what the link points to is not the cache's"
        );
        return Ok(false);
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path)
            .map(|()| true)
            .map_err(|e| EmbeddingError::io("cannot remove", path, e)),
        Ok(_) => fs::remove_file(path)
            .map(|()| true)
            .map_err(|e| EmbeddingError::io("cannot remove", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(EmbeddingError::io("cannot inspect", path, e)),
    }
}

/// Removes empty folders from `path` up to (not including) `stop`.
pub fn remove_empty_parents(path: &Path, stop: &Path) {
    if link_above(path).is_some() {
        return;
    }
    let mut current = path.parent();
    while let Some(dir) = current {
        if dir == stop || !dir.starts_with(stop) || fs::remove_dir(dir).is_err() {
            break;
        }
        current = dir.parent();
    }
}

/// The blob name a snapshot symlink points to, if it is a link of the cache's own shape
/// (`../…/blobs/<name>` with a plain name). Links pointing anywhere else are ignored, so no
/// operation ever follows them out of the cache.
pub fn snapshot_link_blob_name(snapshot_entry: &Path) -> Option<String> {
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

#[cfg(unix)]
fn symlink(original: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}

#[cfg(not(unix))]
fn symlink(_original: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlinks are not supported here; set HF_HUB_DISABLE_SYMLINKS=1",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
