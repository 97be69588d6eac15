//! File-system primitives of the cache that know no cache names: atomic small writes,
//! private temporary files that carry their writer's process id (so a later run can tell a
//! killed writer's leftovers from a live one's), and removal that never follows a link out of
//! a repo folder.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{EmbeddingError, EmbeddingResult};

/// Eight random hex digits.
pub(crate) fn random_suffix() -> String {
    format!("{:08x}", rand::rng().random::<u32>())
}

/// A fresh name for a temporary file in `dir`: `.<pid>-<8 hex>.tmp`. The process id lets a
/// later run tell the leftovers of a killed process from the files of a live writer.
pub(crate) fn temporary_path(dir: &Path) -> PathBuf {
    dir.join(format!(".{}-{}.tmp", std::process::id(), random_suffix()))
}

/// The process that made a temporary file named by [`temporary_path`], if the name has that
/// shape.
pub(crate) fn temporary_owner(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (pid, random) = inner.split_once('-')?;
    let random_ok = random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit());
    random_ok.then(|| pid.parse().ok()).flatten()
}

/// Whether a process with this id runs (on this machine, in this pid namespace). Unsure
/// answers count as running, so nothing of a live writer is ever removed.
pub(crate) fn process_runs(pid: u32) -> bool {
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
pub(crate) fn remove_stale_temporaries(dir: &Path) {
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
pub(crate) fn create_dir_all(path: &Path) -> EmbeddingResult<()> {
    fs::create_dir_all(path).map_err(|e| EmbeddingError::io("cannot create folder", path, e))
}

/// Writes a small file atomically: temporary file in the same folder, fsync, rename.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> EmbeddingResult<()> {
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
pub(crate) fn link_at_or_above(path: &Path) -> Option<PathBuf> {
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
pub(crate) fn link_above(path: &Path) -> Option<PathBuf> {
    path.parent().and_then(link_at_or_above)
}

/// Removes a file or link without following links; a missing file is fine. A path reached
/// through a link inside its repo folder is left alone (with a warning): whatever is behind
/// that link is not the cache's to remove.
pub(crate) fn remove_entry(path: &Path) -> EmbeddingResult<bool> {
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
pub(crate) fn remove_empty_parents(path: &Path, stop: &Path) {
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

#[cfg(unix)]
pub(crate) fn symlink(original: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}

#[cfg(not(unix))]
pub(crate) fn symlink(_original: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlinks are not supported here; set HF_HUB_DISABLE_SYMLINKS=1",
    ))
}
