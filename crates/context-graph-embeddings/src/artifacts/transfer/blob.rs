//! Fetching one blob from a byte source into the cache: resume, retries, hashing on the fly,
//! verification and the atomic rename that is the only way bytes reach a final path. The only
//! module that knows both the single-stream and the ranged path.
//!
//! Resume protocol:
//! 1. Under the blob lock, the largest leftover partial of this blob (`<etag>.*.incomplete`,
//!    ours or `huggingface_hub`'s) is adopted by renaming it to a fresh private name; the
//!    others are removed. Its bytes are hashed first, seeding the running SHA-256.
//! 2. The request asks `Range: bytes=N-` (with `If-Range` when a validator of the URL is known).
//!    Only a `206` whose `Content-Range` starts at `N` and ends at the expected size is
//!    appended. A `200` restarts from zero; a `416` discards the partial.
//! 3. Bytes are written and hashed on a blocking thread fed through a bounded channel, so
//!    the network read, the write and the hash overlap and memory stays bounded.
//! 4. At the end: size and SHA-256 are compared with the expectation, the file is fsynced
//!    and renamed to `blobs/<etag>`. A mismatch discards the partial and fetches once more;
//!    a second mismatch is a fatal `HashMismatch`.
//!
//! A failure mid-body keeps the partial (fsynced bytes are not needed: they are re-hashed at
//! the next resume), so neither a retry nor the next run pays for the same bytes twice.

use std::fs;
use std::path::PathBuf;

use super::partial::{adopt_partial, Adopted, Partial, RangeProgress};
use super::persist::persist_or_reset;
use super::ranged::{fetch_ranged, RangedEnd};
use super::request::{FetchRequest, FetchSettings, FetchedBlob};
use super::serial::attempt;
use crate::artifacts::blocking::run_blocking;
use crate::artifacts::remote::retry::{RetryDecision, RetryState};
use crate::artifacts::remote::source::ByteSource;
use crate::artifacts::status::ModelEvents;
use crate::artifacts::store::layout::sidecar_path;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Counts of one fetch, across the ranged and the single-stream phase.
struct Tally {
    transferred: u64,
    resumed_from: u64,
    integrity_failures: u32,
}

impl Tally {
    fn placed(&self, blob_path: PathBuf) -> FetchedBlob {
        FetchedBlob {
            blob_path,
            transferred: self.transferred,
            resumed_from: self.resumed_from,
        }
    }
}

/// Fetches one blob with retries and resume; returns once it is verified and in place.
pub(crate) async fn fetch_blob(
    source: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
) -> EmbeddingResult<FetchedBlob> {
    let total = request.expected_size.unwrap_or(0);
    let adopted = {
        let blobs_dir = request.blobs_dir.clone();
        let etag = request.etag.clone();
        let expected_size = request.expected_size;
        run_blocking(move || adopt_partial(&blobs_dir, &etag, expected_size))
            .await
            .map_err(|e| EmbeddingError::io("cannot prepare download in", &request.blobs_dir, e))?
    };
    let mut tally = Tally {
        transferred: 0,
        resumed_from: adopted.bytes_on_disk(),
        integrity_failures: 0,
    };
    let parallel = settings.parallel.applies_to(request.expected_size);
    let mut partial = match (parallel, request.expected_size) {
        (true, Some(size)) => {
            match fetch_in_ranges(source, request, settings, events, adopted, size, &mut tally)
                .await?
            {
                Ok(blob) => return Ok(blob),
                Err(partial) => partial,
            }
        }
        _ => {
            let fresh = request.hasher();
            let partial = run_blocking(move || adopted.into_contiguous(fresh))
                .await
                .map_err(|e| {
                    EmbeddingError::io("cannot read partial download in", &request.blobs_dir, e)
                })?;
            tally.resumed_from = partial.len;
            events.started(partial.len, total, partial.len);
            partial
        }
    };

    let mut retry = RetryState::new(
        &settings.retry_policy,
        settings.retry_attempts,
        &request.location,
    );
    loop {
        retry.attempt_started();
        let before = partial.len;
        let result = attempt(
            source,
            request,
            settings,
            events,
            &mut partial,
            &mut tally.transferred,
        )
        .await;
        match result {
            Ok(()) => {
                events.verifying(partial.len, total);
                let placed =
                    persist_or_reset(request, &mut partial, &mut tally.integrity_failures, events)
                        .await?;
                if let Some(blob_path) = placed {
                    return Ok(tally.placed(blob_path));
                }
            }
            Err(error) => match retry.after_failure(error, partial.len > before, rand::random()) {
                RetryDecision::GiveUp(error) => return Err(error),
                RetryDecision::Retry(backoff) => {
                    events.retrying(partial.len, total, &backoff);
                    tokio::time::sleep(backoff.delay).await;
                }
            },
        }
    }
}

/// The parallel phase: `Ok(Ok(blob))` when the file is in place, `Ok(Err(partial))` when it
/// goes on as one stream (the server refused ranges, or the bytes failed their check once and
/// were reset for a refetch).
async fn fetch_in_ranges(
    source: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
    adopted: Adopted,
    size: u64,
    tally: &mut Tally,
) -> EmbeddingResult<Result<FetchedBlob, Partial>> {
    let total = request.expected_size.unwrap_or(0);
    let path = adopted.path().to_path_buf();
    let progress = match adopted {
        Adopted::Ranged { progress, .. } => progress,
        Adopted::Contiguous { len, .. } => {
            RangeProgress::new(size, settings.parallel.chunk_for(size), len)
        }
    };
    events.started(progress.total(), total, tally.resumed_from);
    let (ended, received) =
        fetch_ranged(source, request, settings, events, &path, progress).await?;
    tally.transferred += received;
    match ended {
        RangedEnd::Complete { hasher } => {
            let mut complete = Partial {
                path: path.clone(),
                len: size,
                hasher,
                fresh: request.hasher(),
            };
            events.verifying(size, total);
            // The progress record goes before the rename: a crash after the rename would leave
            // it for ever beside a partial that no longer exists, while a complete partial
            // without it is simply adopted whole next time.
            let sidecar = sidecar_path(&path);
            let _ = run_blocking(move || fs::remove_file(sidecar)).await;
            let placed = persist_or_reset(
                request,
                &mut complete,
                &mut tally.integrity_failures,
                events,
            )
            .await?;
            Ok(match placed {
                Some(blob_path) => Ok(tally.placed(blob_path)),
                None => Err(complete),
            })
        }
        RangedEnd::SingleStream { len, hasher } => {
            events.started(len, total, len);
            Ok(Err(Partial {
                path,
                len,
                hasher,
                fresh: request.hasher(),
            }))
        }
    }
}
