//! The only way bytes reach a final path: size and digest (SHA-256 or git blob SHA-1) compared with the expectation,
//! fsync, rename to `blobs/<etag>`, fsync of the folder. A mismatch discards the partial and
//! allows one more fetch; a second mismatch is a fatal `HashMismatch`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;

use super::partial::{reset, Partial};
use super::request::FetchRequest;
use crate::artifacts::blocking::run_blocking;
use crate::artifacts::status::ModelEvents;
use crate::artifacts::testing;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Size and hash check, fsync, rename into place.
async fn check_and_persist(
    request: &FetchRequest,
    partial: &mut Partial,
) -> EmbeddingResult<PathBuf> {
    let actual = partial.hasher.hex();
    let blob_path = request.blobs_dir.join(&request.etag);
    if let Some(size) = request.expected_size {
        if partial.len != size {
            return Err(EmbeddingError::SizeMismatch {
                location: request.location.clone(),
                path: partial.path.clone(),
                expected: size,
                actual: partial.len,
            });
        }
    }
    if !actual.eq_ignore_ascii_case(request.expected.hex()) {
        return Err(EmbeddingError::HashMismatch {
            location: request.location.clone(),
            path: partial.path.clone(),
            expected: request.expected.hex().to_owned(),
            actual,
        });
    }
    let from = partial.path.clone();
    let to = blob_path.clone();
    run_blocking(move || -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(&from)?;
        file.sync_all()?;
        drop(file);
        testing::hit("download.before_rename");
        fs::rename(&from, &to)?;
        testing::hit("download.after_rename");
        if let Some(dir) = to.parent() {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| EmbeddingError::io("cannot move verified download to", &blob_path, e))?;
    Ok(blob_path)
}

/// Checks and places a complete partial. `Some(blob)` when it is in place; `None` when it
/// failed its check for the first time and was reset for one refetch from zero (announced);
/// a second failure is fatal and removes the partial.
pub(crate) async fn persist_or_reset(
    request: &FetchRequest,
    partial: &mut Partial,
    integrity_failures: &mut u32,
    events: &ModelEvents,
) -> EmbeddingResult<Option<PathBuf>> {
    match check_and_persist(request, partial).await {
        Ok(blob_path) => Ok(Some(blob_path)),
        Err(
            error @ (EmbeddingError::HashMismatch { .. } | EmbeddingError::SizeMismatch { .. }),
        ) => {
            *integrity_failures += 1;
            if *integrity_failures > 1 {
                let path = partial.path.clone();
                let _ = run_blocking(move || fs::remove_file(&path)).await;
                return Err(error);
            }
            reset(partial).await?;
            let total = request.expected_size.unwrap_or(0);
            announce_refetch(events, total, &error);
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// Tells subscribers that the bytes failed their check and the file is fetched again from
/// zero (the one refetch an integrity failure gets).
fn announce_refetch(events: &ModelEvents, total: u64, error: &EmbeddingError) {
    let backoff = crate::artifacts::status::Backoff {
        attempt: 1,
        delay: std::time::Duration::ZERO,
        reason: format!("{error}; fetching the file again"),
    };
    events.retrying(0, total, &backoff);
    events.started(0, total, 0);
}
