//! Partial downloads owned by one writer: adopting what an earlier attempt, run or client left
//! (the largest partial of a blob, re-hashed as a prefix, or a ranged download with its
//! progress record), opening it for append, resetting it. The names of these files come from
//! `store::layout`.

// Public for `artifacts::test_support` (the `failpoints` feature), crate-private otherwise.
#![cfg_attr(not(feature = "failpoints"), allow(unreachable_pub))]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::artifacts::blocking::run_blocking;
use crate::artifacts::hash::{hash_reader_into, ContentHasher};
use crate::artifacts::store::layout::{
    new_partial_path, partial_files, partial_in_use, sidecar_path, sidecar_temp_path,
};
use crate::error::{EmbeddingError, EmbeddingResult};
use serde::{Deserialize, Serialize};

/// A partial download owned by this writer.
pub(crate) struct Partial {
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
    pub(crate) hasher: ContentHasher,
    /// A fresh hasher of the same kind, for a reset.
    pub(crate) fresh: ContentHasher,
}

/// A partial download taken over by this writer.
pub(crate) enum Adopted {
    /// Bytes from the start without gaps (single-stream downloads, other clients' partials).
    Contiguous { path: PathBuf, len: u64 },
    /// A parallel download's file with its per-chunk progress.
    Ranged {
        path: PathBuf,
        progress: RangeProgress,
    },
}

impl Adopted {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Adopted::Contiguous { path, .. } | Adopted::Ranged { path, .. } => path,
        }
    }

    pub(crate) fn bytes_on_disk(&self) -> u64 {
        match self {
            Adopted::Contiguous { len, .. } => *len,
            Adopted::Ranged { progress, .. } => progress.total(),
        }
    }

    /// The gap-free prefix, hashed with `fresh` (a new hasher of the request's kind): what a
    /// single stream can continue from.
    pub(crate) fn into_contiguous(self, fresh: ContentHasher) -> io::Result<Partial> {
        let (path, len) = match self {
            Adopted::Contiguous { path, len } => (path, len),
            Adopted::Ranged { path, progress } => {
                let prefix = progress.contiguous_prefix();
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(prefix)?;
                let _ = fs::remove_file(sidecar_path(&path));
                (path, prefix)
            }
        };
        let mut file = File::open(&path)?;
        let mut hasher = fresh.clone();
        let hashed = hash_reader_into(&mut file, &mut hasher, len)?;
        Ok(Partial {
            path,
            len: hashed,
            hasher,
            fresh,
        })
    }
}

/// Takes over the largest partial download of `etag` left by anyone (renamed to a fresh
/// private name; the others are removed), or starts an empty one.
pub(crate) fn adopt_partial(
    blobs_dir: &Path,
    etag: &str,
    expected_size: Option<u64>,
) -> io::Result<Adopted> {
    fs::create_dir_all(blobs_dir)?;
    let ours = new_partial_path(blobs_dir, etag);
    let mut adopted: Option<PathBuf> = None;
    for (candidate, _) in partial_files(blobs_dir, etag) {
        if partial_in_use(&candidate) {
            // Another running writer's file (locks that do nothing): not ours to take.
            continue;
        }
        let sidecar = sidecar_path(&candidate);
        // A progress record being written when its writer was killed.
        let _ = fs::remove_file(sidecar_temp_path(&sidecar));
        if adopted.is_none() && fs::rename(&candidate, &ours).is_ok() {
            let _ = fs::rename(&sidecar, sidecar_path(&ours));
            adopted = Some(candidate);
        } else if adopted.is_some() {
            // Stale leftovers of killed runs; the blob lock is ours, so nobody writes them.
            let _ = fs::remove_file(&candidate);
            let _ = fs::remove_file(&sidecar);
        }
        // Else: taken by another writer between listing and renaming; try the next.
    }
    if adopted.is_none() {
        File::create(&ours)?;
        return Ok(Adopted::Contiguous { path: ours, len: 0 });
    }
    let length = fs::metadata(&ours)?.len();
    if let Some(progress) = RangeProgress::read(&sidecar_path(&ours)) {
        if Some(progress.size) == expected_size && length == progress.size {
            return Ok(Adopted::Ranged {
                path: ours,
                progress,
            });
        }
        let _ = fs::remove_file(sidecar_path(&ours));
        OpenOptions::new().write(true).open(&ours)?.set_len(0)?;
        return Ok(Adopted::Contiguous { path: ours, len: 0 });
    }
    if expected_size.is_some_and(|s| length > s) {
        OpenOptions::new().write(true).open(&ours)?.set_len(0)?;
        return Ok(Adopted::Contiguous { path: ours, len: 0 });
    }
    Ok(Adopted::Contiguous {
        path: ours,
        len: length,
    })
}

/// Opens a partial for appending at `offset`, dropping anything past it.
pub(crate) fn open_for_append(path: &Path, offset: u64) -> io::Result<File> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    // Drop anything past what was hashed (a torn write of a killed run).
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}

/// Empties a partial (off the async threads) and restarts its hash.
pub(crate) async fn reset(partial: &mut Partial) -> EmbeddingResult<()> {
    let path = partial.path.clone();
    run_blocking(move || {
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(0)
    })
    .await
    .map_err(|e| EmbeddingError::io("cannot reset", &partial.path, e))?;
    partial.len = 0;
    partial.hasher = partial.fresh.clone();
    Ok(())
}

/// The sidecar recording per-chunk progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeProgress {
    /// File size.
    pub size: u64,
    /// Chunk size.
    pub chunk: u64,
    /// Bytes on disk from the start of each chunk.
    pub written: Vec<u64>,
}

impl RangeProgress {
    /// Fresh progress for a file; `prefix` bytes from the start are already on disk.
    pub fn new(size: u64, chunk: u64, prefix: u64) -> Self {
        let count = usize::try_from(size.div_ceil(chunk)).unwrap_or(usize::MAX);
        let written = (0..count)
            .map(|c| {
                let start = c as u64 * chunk;
                prefix.saturating_sub(start).min(chunk_len(size, chunk, c))
            })
            .collect();
        RangeProgress {
            size,
            chunk,
            written,
        }
    }

    /// Reads a sidecar; `None` when missing, unreadable or inconsistent.
    pub fn read(path: &Path) -> Option<Self> {
        let progress: RangeProgress = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let count = progress.size.div_ceil(progress.chunk.max(1));
        let consistent = progress.chunk > 0
            && progress.written.len() as u64 == count
            && progress
                .written
                .iter()
                .enumerate()
                .all(|(c, w)| *w <= chunk_len(progress.size, progress.chunk, c));
        consistent.then_some(progress)
    }

    pub(crate) fn write(&self, path: &Path) -> io::Result<()> {
        let temporary = sidecar_temp_path(path);
        fs::write(&temporary, serde_json::to_vec(self).unwrap_or_default())?;
        fs::rename(&temporary, path)
    }

    /// Bytes on disk in all.
    pub fn total(&self) -> u64 {
        self.written.iter().sum()
    }

    /// Bytes from the start that are on disk without a gap.
    pub fn contiguous_prefix(&self) -> u64 {
        let mut prefix = 0;
        for (c, w) in self.written.iter().enumerate() {
            prefix += w;
            if *w < chunk_len(self.size, self.chunk, c) {
                break;
            }
        }
        prefix
    }
}

pub(crate) fn chunk_len(size: u64, chunk: u64, index: usize) -> u64 {
    let start = index as u64 * chunk;
    chunk.min(size.saturating_sub(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::hash::DigestKind;

    fn sha256() -> ContentHasher {
        ContentHasher::new(DigestKind::Sha256, None)
    }

    #[test]
    fn adoption_takes_the_largest_partial_and_rehashes_it() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path();
        fs::write(blobs.join("e.aaaa0000.incomplete"), b"hello wor").unwrap();
        fs::write(blobs.join("e.bbbb0000.incomplete"), b"hel").unwrap();
        fs::write(blobs.join("other.cccc0000.incomplete"), b"x").unwrap();
        let partial = adopt_partial(blobs, "e", Some(11))
            .unwrap()
            .into_contiguous(sha256())
            .unwrap();
        assert_eq!(partial.len, 9);
        assert_eq!(
            partial.hasher.hex(),
            crate::artifacts::hash::sha256_hex(b"hello wor")
        );
        let left: Vec<_> = partial_files(blobs, "e");
        assert_eq!(left.len(), 1, "stale partials are removed: {left:?}");
        assert!(blobs.join("other.cccc0000.incomplete").exists());
    }

    #[test]
    fn a_partial_longer_than_the_file_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("e.aaaa0000.incomplete"), b"0123456789").unwrap();
        let partial = adopt_partial(dir.path(), "e", Some(4))
            .unwrap()
            .into_contiguous(sha256())
            .unwrap();
        assert_eq!(partial.len, 0);
        assert_eq!(fs::metadata(&partial.path).unwrap().len(), 0);
    }
}
