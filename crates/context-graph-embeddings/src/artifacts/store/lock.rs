//! Cross-process blob locks, at the path and of the kind `huggingface_hub` uses
//! (`<cache>/.locks/models--org--name/<etag>.lock`, `flock`), so our downloads and Python's
//! exclude each other.
//!
//! Locks are an optimisation, not the safety net: on network file systems `flock` may
//! silently do nothing. Correctness never depends on them: every writer streams into a
//! private temporary file and only a verified file is renamed into place. A lock that the
//! file system refuses (`Unsupported`) is therefore skipped with a warning. Locks die with
//! their process, so a killed download never leaves a lock that blocks the next run.
//!
//! Builds with the `failpoints` feature can simulate that case (`LockKind::Simulated`, see
//! `testing.rs`), for the tests that prove correctness without locks.

// Public for `artifacts::test_support` (the `failpoints` feature), crate-private otherwise.
#![cfg_attr(not(feature = "failpoints"), allow(unreachable_pub))]

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{EmbeddingError, EmbeddingResult};

/// What a [`BlobLock`] really holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// An `flock` the file system granted.
    Held,
    /// The file system refuses locks; the download goes on without one.
    Unsupported,
    /// A no-op that claims success, as `flock` does on some network file systems (only in
    /// builds with the `failpoints` feature, for the tests that prove correctness without
    /// locks).
    Simulated,
}

/// A held blob lock; released on drop.
#[derive(Debug)]
pub struct BlobLock {
    file: Option<File>,
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    path: PathBuf,
    kind: LockKind,
}

impl BlobLock {
    /// Takes the lock at `path`, creating it. Calls `on_wait` once if another process holds
    /// it, then waits (on a blocking thread, so the async runtime keeps running).
    pub async fn acquire(path: &Path, on_wait: impl FnOnce()) -> EmbeddingResult<BlobLock> {
        let path = path.to_path_buf();
        let opened = {
            let to_open = path.clone();
            tokio::task::spawn_blocking(move || open_lock_file(&to_open))
                .await
                .map_err(|e| EmbeddingError::io("cannot open lock", &path, io::Error::other(e)))?
        };
        let file = opened.map_err(|e| EmbeddingError::io("cannot open lock", &path, e))?;
        if crate::artifacts::testing::locks_simulated() {
            return Ok(BlobLock {
                file: None,
                path,
                kind: LockKind::Simulated,
            });
        }
        match file.try_lock() {
            Ok(()) => Ok(BlobLock {
                file: Some(file),
                path,
                kind: LockKind::Held,
            }),
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                let waited_path = path.clone();
                let result = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                    .await
                    .map_err(|e| {
                        EmbeddingError::io("cannot take lock", &waited_path, io::Error::other(e))
                    })?;
                match result {
                    Ok(file) => Ok(BlobLock {
                        file: Some(file),
                        path,
                        kind: LockKind::Held,
                    }),
                    Err(e) => Self::unsupported_or_error(path, e),
                }
            }
            Err(std::fs::TryLockError::Error(e)) => Self::unsupported_or_error(path, e),
        }
    }

    /// Takes the lock of a shared store entry (`<xet hash>.lock`, as `huggingface_hub` 2.4
    /// makes it: not through a link, readable and writable by every user of the cache),
    /// waiting on this thread. For blocking callers only.
    pub(crate) fn acquire_shared_store(path: &Path) -> EmbeddingResult<BlobLock> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options
                .mode(0o666)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        }
        let file = options
            .open(path)
            .map_err(|e| EmbeddingError::io("cannot open lock", path, e))?;
        if crate::artifacts::testing::locks_simulated() {
            return Ok(BlobLock {
                file: None,
                path: path.to_path_buf(),
                kind: LockKind::Simulated,
            });
        }
        match file.lock() {
            Ok(()) => Ok(BlobLock {
                file: Some(file),
                path: path.to_path_buf(),
                kind: LockKind::Held,
            }),
            Err(e) => Self::unsupported_or_error(path.to_path_buf(), e),
        }
    }

    fn unsupported_or_error(path: PathBuf, error: io::Error) -> EmbeddingResult<BlobLock> {
        if error.kind() == io::ErrorKind::Unsupported {
            tracing::debug!(
                lock = %path.display(),
                "file locks are not supported on this file system; continuing without (downloads stay safe: private temporary files, verified before they are renamed into place)"
            );
            Ok(BlobLock {
                file: None,
                path,
                kind: LockKind::Unsupported,
            })
        } else {
            Err(EmbeddingError::io("cannot take lock", path, error))
        }
    }

    /// Whether a lock is held as far as the file system says (false where it refuses locks;
    /// true for simulated locks, which claim success as some network file systems do).
    pub fn is_effective(&self) -> bool {
        self.kind != LockKind::Unsupported
    }

    /// The lock file.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = file.unlock();
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o664);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn second_taker_waits_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".locks/models--o--n/e.lock");
        let first = BlobLock::acquire(&path, || {}).await.unwrap();
        assert!(first.is_effective());
        let waited = Arc::new(AtomicBool::new(false));
        let waited2 = waited.clone();
        let path2 = path.clone();
        let second = tokio::spawn(async move {
            BlobLock::acquire(&path2, move || waited2.store(true, Ordering::SeqCst)).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished());
        assert!(waited.load(Ordering::SeqCst));
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(second.is_effective());
    }
}
