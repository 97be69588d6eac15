//! Streaming one blob from the Hub into the cache: resume, retries, hashing on the fly,
//! verification and the atomic rename that is the only way bytes reach a final path.
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::cache::{new_partial_path, partial_files};
use super::progress::{ProgressEmitter, ProgressKind, ProgressMeter};
use super::ranged::{
    fetch_ranged, sidecar_path, sidecar_temp_path, ParallelSettings, RangeProgress, RangedEnd,
};
use super::retry::RetryPolicy;
use super::source::{ByteSource, Opened};
use super::verification::hash_reader_into;
use crate::error::{is_disk_full_io, EmbeddingError, EmbeddingResult, FileLocation};
use crate::model_id::ModelId;

/// Chunks buffered between the network reader and the writer thread. Bounded, so a slow
/// disk slows the reader (back-pressure) instead of filling memory.
const WRITE_QUEUE_CHUNKS: usize = 32;

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The file, for messages and events.
    pub location: FileLocation,
    /// The repo's `blobs/` folder.
    pub blobs_dir: PathBuf,
    /// The blob name.
    pub etag: String,
    /// The SHA-256 the bytes must have.
    pub expected_sha256: String,
    /// The size the bytes must have, when known.
    pub expected_size: Option<u64>,
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Retries per stretch without progress.
    pub retry_attempts: u32,
    /// Backoff schedule.
    pub retry_policy: RetryPolicy,
    /// Smallest interval between progress events.
    pub progress_interval: std::time::Duration,
    /// Parallel ranged download of large files.
    pub parallel: ParallelSettings,
    /// Range connections shared by all parallel downloads of one manager, so several large
    /// files at once do not multiply connections, buffers and CPU contention.
    pub range_slots: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A fetched, verified blob.
#[derive(Debug, Clone)]
pub struct FetchedBlob {
    /// Where it is now.
    pub blob_path: PathBuf,
    /// Bytes received over the network.
    pub transferred: u64,
    /// Bytes reused from an earlier partial download.
    pub resumed_from: u64,
}

/// A partial download owned by this writer.
struct Partial {
    path: PathBuf,
    len: u64,
    hasher: Sha256,
}

enum AttemptEnd {
    /// All bytes are on disk.
    Complete,
}

/// Fetches one blob with retries and resume; returns once it is verified and in place.
pub async fn fetch_blob(
    source: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    emitter: &ProgressEmitter,
    on_bytes: &(dyn Fn(u64, u64) + Send + Sync),
) -> EmbeddingResult<FetchedBlob> {
    let model = request.location.model_id;
    let total = request.expected_size.unwrap_or(0);
    let parallel = settings.parallel.applies_to(request.expected_size);
    let adopted = {
        let blobs_dir = request.blobs_dir.clone();
        let etag = request.etag.clone();
        let expected_size = request.expected_size;
        blocking(move || adopt_partial(&blobs_dir, &etag, expected_size))
            .await
            .map_err(|e| EmbeddingError::io("cannot prepare download in", &request.blobs_dir, e))?
    };
    let mut transferred = 0u64;
    let mut integrity_failures = 0u32;
    let mut resumed_from = adopted.bytes_on_disk();

    let mut partial = match (adopted, parallel, request.expected_size) {
        (adopted, true, Some(size)) => {
            let path = adopted.path().to_path_buf();
            let progress = match adopted {
                Adopted::Ranged { progress, .. } => progress,
                Adopted::Contiguous { len, .. } => {
                    RangeProgress::new(size, settings.parallel.chunk_for(size), len)
                }
            };
            emitter.send(
                model,
                progress.total(),
                total,
                ProgressKind::Started { resumed_from },
            );
            on_bytes(progress.total(), total);
            let (ended, received) = fetch_ranged(
                source, request, settings, emitter, on_bytes, &path, progress,
            )
            .await?;
            transferred += received;
            match ended {
                RangedEnd::Complete { hasher } => {
                    let mut complete = Partial {
                        path: path.clone(),
                        len: size,
                        hasher,
                    };
                    emitter.send(model, size, total, ProgressKind::Verifying);
                    // The progress record goes before the rename: a crash after the rename
                    // would leave it for ever beside a partial that no longer exists, while a
                    // complete partial without it is simply adopted whole next time.
                    let sidecar = sidecar_path(&path);
                    let _ = blocking(move || fs::remove_file(sidecar)).await;
                    let placed =
                        persist_or_reset(request, &mut complete, &mut integrity_failures, emitter)
                            .await?;
                    if let Some(blob_path) = placed {
                        return Ok(FetchedBlob {
                            blob_path,
                            transferred,
                            resumed_from,
                        });
                    }
                    complete
                }
                RangedEnd::SingleStream { len, hasher } => {
                    emitter.send(
                        model,
                        len,
                        total,
                        ProgressKind::Started { resumed_from: len },
                    );
                    Partial { path, len, hasher }
                }
            }
        }
        (adopted, _, _) => {
            let partial = blocking(move || adopted.into_contiguous())
                .await
                .map_err(|e| {
                    EmbeddingError::io("cannot read partial download in", &request.blobs_dir, e)
                })?;
            resumed_from = partial.len;
            emitter.send(
                model,
                partial.len,
                total,
                ProgressKind::Started { resumed_from },
            );
            on_bytes(partial.len, total);
            partial
        }
    };

    let mut retries = 0u32;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let before = partial.len;
        let result = attempt(
            source,
            request,
            settings,
            emitter,
            on_bytes,
            &mut partial,
            &mut transferred,
        )
        .await;
        match result {
            Ok(AttemptEnd::Complete) => {
                emitter.send(model, partial.len, total, ProgressKind::Verifying);
                let placed =
                    persist_or_reset(request, &mut partial, &mut integrity_failures, emitter)
                        .await?;
                if let Some(blob_path) = placed {
                    return Ok(FetchedBlob {
                        blob_path,
                        transferred,
                        resumed_from,
                    });
                }
            }
            Err(error) if error.is_transient() => {
                if partial.len > before {
                    retries = 0;
                }
                retries += 1;
                if retries > settings.retry_attempts {
                    return Err(EmbeddingError::RetriesExhausted {
                        location: request.location.clone(),
                        attempts,
                        last: Box::new(error),
                    });
                }
                let hint = match &error {
                    EmbeddingError::TransientStatus { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let jitter: f64 = rand::rng().random();
                let delay = settings.retry_policy.delay(retries, hint, jitter);
                emitter.send(
                    model,
                    partial.len,
                    total,
                    ProgressKind::Retrying {
                        attempt: retries,
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        reason: error.to_string(),
                    },
                );
                tracing::info!(model = %model, retry = retries, delay_ms = delay.as_millis() as u64, error = %error, "retrying download");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn attempt(
    source: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    emitter: &ProgressEmitter,
    on_bytes: &(dyn Fn(u64, u64) + Send + Sync),
    partial: &mut Partial,
    transferred: &mut u64,
) -> EmbeddingResult<AttemptEnd> {
    let model = request.location.model_id;
    if request.expected_size == Some(partial.len) {
        // Already complete (an earlier run stopped just before the rename): no request at
        // all, which also avoids the 416 a `Range` past the end would get.
        return Ok(AttemptEnd::Complete);
    }
    let url_shown = source.name();
    let opened = source.open(partial.len, None).await?;
    let (mut body, content_length) = match opened {
        Opened::Unsatisfiable => {
            let had = partial.len;
            blocking_reset(partial).await?;
            return Err(EmbeddingError::BadResponse {
                url: url_shown,
                reason: format!(
                    "416 Range Not Satisfiable for bytes={had}-; the partial file was discarded"
                ),
            });
        }
        Opened::Range {
            body,
            start,
            end,
            total,
        } => {
            let expected_end = request.expected_size.map(|s| s.saturating_sub(1));
            let matches = start == partial.len
                && expected_end.is_none_or(|e| e == end)
                && request
                    .expected_size
                    .is_none_or(|s| total.is_none_or(|t| t == s));
            if !matches {
                let had = partial.len;
                blocking_reset(partial).await?;
                return Err(EmbeddingError::BadResponse {
                    url: url_shown,
                    reason: format!(
                        "206 with Content-Range bytes {start}-{end}/{total:?} does not continue bytes={had}-; the partial file was discarded"
                    ),
                });
            }
            (body, Some(end + 1 - start))
        }
        Opened::Whole { body, length } => {
            // The whole file. Check it is plausibly the file before throwing away a partial.
            if let (Some(length), Some(size)) = (length, request.expected_size) {
                if length != size {
                    return Err(EmbeddingError::BadResponse {
                        url: url_shown,
                        reason: format!(
                            "200 with Content-Length {length}, but the file has {size} bytes"
                        ),
                    });
                }
            }
            if partial.len > 0 {
                tracing::info!(model = %model, had = partial.len, "server ignored Range; restarting from zero");
                blocking_reset(partial).await?;
                emitter.send(
                    model,
                    0,
                    request.expected_size.unwrap_or(0),
                    ProgressKind::Started { resumed_from: 0 },
                );
            }
            (body, length)
        }
    };

    let body_length = content_length;
    let total = request
        .expected_size
        .or_else(|| body_length.map(|l| l + partial.len))
        .unwrap_or(0);

    // The writer thread owns the file and the hasher while the body streams.
    let file = {
        let path = partial.path.clone();
        let offset = partial.len;
        blocking(move || open_for_append(&path, offset))
            .await
            .map_err(|e| EmbeddingError::io("cannot open", &partial.path, e))?
    };
    let hasher = std::mem::take(&mut partial.hasher);
    let (sender, receiver) = mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || write_and_hash(file, hasher, receiver));

    let mut meter = ProgressMeter::new(settings.progress_interval, partial.len);
    let start_len = partial.len;
    let mut received_this_body = 0u64;
    let limit = request.expected_size.map(|s| s - start_len);
    let idle = source.idle_timeout();
    let read_outcome: EmbeddingResult<()> = loop {
        let chunk = match body.next_chunk(idle, &url_shown).await {
            Err(error) => break Err(error),
            Ok(None) => break Ok(()),
            Ok(Some(chunk)) => chunk,
        };
        let mut chunk = chunk;
        if let Some(limit) = limit {
            let room = limit - received_this_body;
            if chunk.len() as u64 > room {
                chunk.truncate(usize::try_from(room).unwrap_or(usize::MAX));
            }
        }
        let length = chunk.len() as u64;
        if length > 0 && sender.send(chunk).await.is_err() {
            // The writer stopped: its error is reported below.
            break Ok(());
        }
        received_this_body += length;
        *transferred += length;
        let on_disk = start_len + received_this_body;
        if let Some(speed) = meter.due(Instant::now(), on_disk) {
            emitter.emit(super::progress::ProgressEvent {
                model_id: model,
                bytes_downloaded: on_disk,
                total_bytes: total,
                speed_bps: speed,
                kind: ProgressKind::Progress,
            });
            on_bytes(on_disk, total);
        }
        if limit.is_some_and(|l| received_this_body >= l) {
            // Everything expected is here; bytes beyond it are not part of the file.
            break Ok(());
        }
    };
    drop(sender);
    let (hasher, written, write_result) = writer.await.map_err(|e| {
        EmbeddingError::io(
            "writer thread failed for",
            &partial.path,
            io::Error::other(e),
        )
    })?;
    partial.hasher = hasher;
    partial.len = start_len + written;
    if let Err(error) = write_result {
        let full = is_disk_full_io(&error);
        let err = EmbeddingError::io(
            if full {
                "disk full while writing"
            } else {
                "cannot write"
            },
            &partial.path,
            error,
        );
        return Err(err);
    }
    read_outcome?;
    emitter.emit(super::progress::ProgressEvent {
        model_id: model,
        bytes_downloaded: partial.len,
        total_bytes: total,
        speed_bps: meter.speed(),
        kind: ProgressKind::Progress,
    });
    on_bytes(partial.len, total);

    if let Some(size) = request.expected_size {
        if partial.len < size {
            return Err(EmbeddingError::BadResponse {
                url: url_shown,
                reason: format!("the body ended after {} of {size} bytes", partial.len),
            });
        }
    } else if let Some(length) = body_length {
        if received_this_body < length {
            return Err(EmbeddingError::BadResponse {
                url: url_shown,
                reason: format!(
                    "the body ended after {received_this_body} of {length} announced bytes"
                ),
            });
        }
    }
    Ok(AttemptEnd::Complete)
}

/// Size and hash check, fsync, rename into place.
async fn check_and_persist(
    request: &FetchRequest,
    partial: &mut Partial,
) -> EmbeddingResult<PathBuf> {
    let actual = hex::encode(partial.hasher.clone().finalize());
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
    if !actual.eq_ignore_ascii_case(&request.expected_sha256) {
        return Err(EmbeddingError::HashMismatch {
            location: request.location.clone(),
            path: partial.path.clone(),
            expected: request.expected_sha256.clone(),
            actual,
        });
    }
    let from = partial.path.clone();
    let to = blob_path.clone();
    blocking(move || -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(&from)?;
        file.sync_all()?;
        drop(file);
        super::failpoint::hit("download.before_rename");
        fs::rename(&from, &to)?;
        super::failpoint::hit("download.after_rename");
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
async fn persist_or_reset(
    request: &FetchRequest,
    partial: &mut Partial,
    integrity_failures: &mut u32,
    emitter: &ProgressEmitter,
) -> EmbeddingResult<Option<PathBuf>> {
    match check_and_persist(request, partial).await {
        Ok(blob_path) => Ok(Some(blob_path)),
        Err(
            error @ (EmbeddingError::HashMismatch { .. } | EmbeddingError::SizeMismatch { .. }),
        ) => {
            *integrity_failures += 1;
            if *integrity_failures > 1 {
                let path = partial.path.clone();
                let _ = blocking(move || fs::remove_file(&path)).await;
                return Err(error);
            }
            blocking_reset(partial).await?;
            let total = request.expected_size.unwrap_or(0);
            announce_refetch(emitter, request.location.model_id, total, &error);
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// Tells subscribers that the bytes failed their check and the file is fetched again from
/// zero (the one refetch an integrity failure gets).
fn announce_refetch(emitter: &ProgressEmitter, model: ModelId, total: u64, error: &EmbeddingError) {
    emitter.send(
        model,
        0,
        total,
        ProgressKind::Retrying {
            attempt: 1,
            delay_ms: 0,
            reason: format!("{error}; fetching the file again"),
        },
    );
    emitter.send(model, 0, total, ProgressKind::Started { resumed_from: 0 });
}

/// A partial download taken over by this writer.
enum Adopted {
    /// Bytes from the start without gaps (single-stream downloads, other clients' partials).
    Contiguous { path: PathBuf, len: u64 },
    /// A parallel download's file with its per-chunk progress.
    Ranged {
        path: PathBuf,
        progress: RangeProgress,
    },
}

impl Adopted {
    fn path(&self) -> &Path {
        match self {
            Adopted::Contiguous { path, .. } | Adopted::Ranged { path, .. } => path,
        }
    }

    fn bytes_on_disk(&self) -> u64 {
        match self {
            Adopted::Contiguous { len, .. } => *len,
            Adopted::Ranged { progress, .. } => progress.total(),
        }
    }

    /// The gap-free prefix, hashed: what a single stream can continue from.
    fn into_contiguous(self) -> io::Result<Partial> {
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
        let mut hasher = Sha256::new();
        let hashed = hash_reader_into(&mut file, &mut hasher, len)?;
        Ok(Partial {
            path,
            len: hashed,
            hasher,
        })
    }
}

fn adopt_partial(blobs_dir: &Path, etag: &str, expected_size: Option<u64>) -> io::Result<Adopted> {
    fs::create_dir_all(blobs_dir)?;
    let ours = new_partial_path(blobs_dir, etag);
    let mut adopted: Option<PathBuf> = None;
    for (candidate, _) in partial_files(blobs_dir, etag) {
        if super::cache::partial_in_use(&candidate) {
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

fn open_for_append(path: &Path, offset: u64) -> io::Result<File> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    // Drop anything past what was hashed (a torn write of a killed run).
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}

fn write_and_hash(
    mut file: File,
    mut hasher: Sha256,
    mut receiver: mpsc::Receiver<Bytes>,
) -> (Sha256, u64, io::Result<()>) {
    let mut written = 0u64;
    while let Some(chunk) = receiver.blocking_recv() {
        if let Err(error) = file.write_all(&chunk) {
            // Whatever part of the chunk reached the file is cut off again by the next
            // `open_for_append`, which truncates to the hashed length.
            return (hasher, written, Err(error));
        }
        hasher.update(&chunk);
        written += chunk.len() as u64;
        super::failpoint::hit("download.chunk");
    }
    (hasher, written, file.flush())
}

async fn blocking_reset(partial: &mut Partial) -> EmbeddingResult<()> {
    let path = partial.path.clone();
    blocking(move || {
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(0)
    })
    .await
    .map_err(|e| EmbeddingError::io("cannot reset", &partial.path, e))?;
    partial.len = 0;
    partial.hasher = Sha256::new();
    Ok(())
}

/// Runs blocking file work off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adoption_takes_the_largest_partial_and_rehashes_it() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path();
        fs::write(blobs.join("e.aaaa0000.incomplete"), b"hello wor").unwrap();
        fs::write(blobs.join("e.bbbb0000.incomplete"), b"hel").unwrap();
        fs::write(blobs.join("other.cccc0000.incomplete"), b"x").unwrap();
        let partial = adopt_partial(blobs, "e", Some(11))
            .unwrap()
            .into_contiguous()
            .unwrap();
        assert_eq!(partial.len, 9);
        assert_eq!(
            hex::encode(partial.hasher.clone().finalize()),
            super::super::verification::sha256_hex(b"hello wor")
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
            .into_contiguous()
            .unwrap();
        assert_eq!(partial.len, 0);
        assert_eq!(fs::metadata(&partial.path).unwrap().len(), 0);
    }
}
