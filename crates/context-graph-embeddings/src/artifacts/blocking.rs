//! Running blocking file work off the async runtime's threads, and the one blocking question
//! the planner asks the operating system (free space). A leaf: the store, the transfer, the
//! mirror and the planner all need it, and none of them should import another for it.

use std::io;
use std::path::Path;

use crate::error::{EmbeddingError, EmbeddingResult};

/// Runs blocking file work (hashing, fsync, directory walks) on tokio's blocking pool.
pub(super) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Free bytes for an unprivileged user on the file system holding `path`.
pub fn available_space(path: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The folder among `path` and its ancestors that exists, when it is on a file system mounted
/// read-only (a `statvfs` flag: nothing is written to find out).
pub(crate) fn read_only_mount(path: &Path) -> Option<std::path::PathBuf> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stats = rustix::fs::statvfs(existing).ok()?;
    stats
        .f_flag
        .contains(rustix::fs::StatVfsMountFlags::RDONLY)
        .then(|| existing.to_path_buf())
}

/// The folder where this user may not create the cache's files (the cache folder, or the
/// nearest existing folder above it when it does not exist yet), if any. Asks the kernel
/// (`access(W_OK)`); writes nothing. Blocking.
pub(crate) fn write_denied(path: &Path) -> Option<std::path::PathBuf> {
    let existing = path.ancestors().find(|p| p.exists())?;
    match rustix::fs::access(existing, rustix::fs::Access::WRITE_OK) {
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => {
            Some(existing.to_path_buf())
        }
        _ => None,
    }
}

/// Runs blocking work that reports its own errors on tokio's blocking pool; a panic or a
/// cancelled task becomes an I/O error about `path` ("cannot <action>").
pub(crate) async fn run_blocking_checked<T: Send + 'static>(
    action: &'static str,
    path: &Path,
    work: impl FnOnce() -> EmbeddingResult<T> + Send + 'static,
) -> EmbeddingResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EmbeddingError::io(action, path, io::Error::other(e)))?
}
