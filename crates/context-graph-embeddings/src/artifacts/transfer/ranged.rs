//! Parallel ranged download of one large file: several connections each fetch chunks
//! (`Range: bytes=a-b`) and a single writer thread puts the bytes at their offsets while the
//! SHA-256 still runs over the file in order.
//!
//! The hash follows the contiguous prefix: a piece that continues it is hashed from memory as
//! it is written; pieces that arrive ahead of it are written to disk and hashed later by
//! reading them back from the page cache when the prefix reaches them. Memory stays bounded
//! by the write queue, whatever the order of arrival.
//!
//! Progress survives restarts: a sidecar `<partial>.ranges` records, per chunk, how many bytes
//! are on disk (written after the bytes, so it never claims more than is there). A server
//! that ignores ranges (answers 200), or refuses parallel ranges (403, 429, 416), drops the
//! download to one stream: the file is cut back to its hashed contiguous prefix and the
//! ordinary resume path continues from there.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::partial::{chunk_len, RangeProgress};
use super::request::{FetchRequest, FetchSettings};
use crate::artifacts::blocking::run_blocking;
use crate::artifacts::hash::{hash_reader_into, ContentHasher};
use crate::artifacts::progress::ProgressMeter;
use crate::artifacts::remote::retry::{RetryDecision, RetryState};
use crate::artifacts::remote::source::{ByteSource, Opened};
use crate::artifacts::status::ModelEvents;
use crate::artifacts::store::layout::sidecar_path;
use crate::artifacts::testing;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Pieces queued between the connections and the writer thread. A piece can keep a whole
/// network read buffer alive, so the queue is short: memory, not throughput, is bounded here.
const WRITE_QUEUE_PIECES: usize = 32;

/// Bytes written between two updates of the progress record, so a kill loses at most about
/// this much per connection besides what was in flight.
const RECORD_EVERY_BYTES: u64 = 4 * 1024 * 1024;

/// Read size when hashing bytes back from disk.
const READ_BACK_BYTES: usize = 1 << 20;

/// How a parallel download ended.
pub(crate) enum RangedEnd {
    /// Every byte is on disk and hashed in order.
    Complete {
        /// The running hash over the whole file.
        hasher: ContentHasher,
    },
    /// The server does not do parallel ranges: the file was cut back to its hashed
    /// contiguous prefix; continue with one stream from `len`.
    SingleStream {
        /// Bytes kept.
        len: u64,
        /// Their hash.
        hasher: ContentHasher,
    },
}

struct Piece {
    chunk: usize,
    offset: u64,
    bytes: Bytes,
}

enum PieceError {
    RangesUnsupported(String),
    Failed(EmbeddingError),
}

/// What the connections of one ranged download share.
struct RangedTransfer<'a> {
    request: &'a FetchRequest,
    settings: &'a FetchSettings,
    source: &'a dyn ByteSource,
    events: &'a ModelEvents,
    size: u64,
    chunk: u64,
    queue: Mutex<VecDeque<usize>>,
    /// Per chunk, bytes handed to the writer: where a retry of the chunk continues.
    sent: Mutex<Vec<u64>>,
    on_disk: AtomicU64,
    transferred: AtomicU64,
    stop: AtomicBool,
    unsupported: Mutex<Option<String>>,
    meter: Mutex<ProgressMeter>,
}

/// Fetches `request` (whose size is known) in parallel into the partial file at `path`,
/// continuing from `progress`. Returns when every byte is on disk, or when the server turned
/// out not to support parallel ranges, with the bytes received. Errors keep the partial and
/// its sidecar for resume.
pub(crate) async fn fetch_ranged(
    source: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
    path: &Path,
    progress: RangeProgress,
) -> EmbeddingResult<(RangedEnd, u64)> {
    let size = progress.size;
    let chunk = progress.chunk;
    let sidecar = sidecar_path(path);
    {
        let target = path.to_path_buf();
        let sidecar = sidecar.clone();
        let progress = progress.clone();
        run_blocking(move || {
            let file = OpenOptions::new().write(true).open(&target)?;
            file.set_len(size)?;
            progress.write(&sidecar)
        })
        .await
        .map_err(|e| EmbeddingError::io("cannot prepare", path, e))?;
    }
    let pending: VecDeque<usize> = progress
        .written
        .iter()
        .enumerate()
        .filter(|(c, w)| **w < chunk_len(size, chunk, *c))
        .map(|(c, _)| c)
        .collect();
    let connections = settings.parallel.connections.min(pending.len()).max(1);
    let shared = RangedTransfer {
        request,
        settings,
        source,
        events,
        size,
        chunk,
        queue: Mutex::new(pending),
        sent: Mutex::new(progress.written.clone()),
        on_disk: AtomicU64::new(progress.total()),
        transferred: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        unsupported: Mutex::new(None),
        meter: Mutex::new(ProgressMeter::new(
            settings.progress_interval,
            progress.total(),
        )),
    };

    let (sender, receiver) = mpsc::channel::<Piece>(WRITE_QUEUE_PIECES);
    let writer = {
        let path = path.to_path_buf();
        let file = run_blocking({
            let path = path.clone();
            move || OpenOptions::new().read(true).write(true).open(&path)
        })
        .await
        .map_err(|e| EmbeddingError::io("cannot open", &path, e))?;
        let progress = progress.clone();
        let fresh = request.hasher();
        tokio::task::spawn_blocking(move || write_pieces(file, progress, &sidecar, receiver, fresh))
    };

    let workers = (0..connections).map(|_| worker(&shared, sender.clone()));
    let results = futures_util::future::join_all(workers).await;
    drop(sender);
    let (hasher, hashed, write_result) = writer
        .await
        .map_err(|e| EmbeddingError::io("writer thread failed for", path, io::Error::other(e)))?;
    let transferred = shared.transferred.load(Ordering::Relaxed);
    if let Err(error) = write_result {
        return Err(EmbeddingError::write_failed(path, error));
    }
    let unsupported = shared.unsupported.lock().ok().and_then(|u| u.clone());
    if let Some(reason) = unsupported {
        tracing::info!(file = %request.location, %reason, "parallel ranges refused; continuing with one stream");
        let path = path.to_path_buf();
        let sidecar = sidecar_path(&path);
        run_blocking(move || {
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(hashed)?;
            match fs::remove_file(&sidecar) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| EmbeddingError::io("cannot truncate", &request.blobs_dir, e))?;
        return Ok((
            RangedEnd::SingleStream {
                len: hashed,
                hasher,
            },
            transferred,
        ));
    }
    if let Some(error) = results.into_iter().find_map(Result::err) {
        return Err(error);
    }
    if hashed != size {
        return Err(EmbeddingError::BadResponse {
            url: source.name(),
            reason: format!("parallel download ended with {hashed} of {size} bytes in order"),
        });
    }
    let on_disk = shared.on_disk.load(Ordering::Relaxed);
    events.progress(on_disk, size, shared.meter.lock().map_or(0, |m| m.speed()));
    Ok((RangedEnd::Complete { hasher }, transferred))
}

async fn worker(shared: &RangedTransfer<'_>, sender: mpsc::Sender<Piece>) -> EmbeddingResult<()> {
    let mut retry = RetryState::new(
        &shared.settings.retry_policy,
        shared.settings.retry_attempts,
        &shared.request.location,
    );
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(chunk) = shared.queue.lock().ok().and_then(|mut q| q.pop_front()) else {
            return Ok(());
        };
        let already = shared.sent.lock().map_or(0, |sent| sent[chunk]);
        let chunk_start = chunk as u64 * shared.chunk;
        let end = chunk_start + chunk_len(shared.size, shared.chunk, chunk) - 1;
        let start = chunk_start + already;
        if start > end {
            continue;
        }
        retry.attempt_started();
        let before = shared.transferred.load(Ordering::Relaxed);
        let Ok(slot) = shared.settings.range_slots.acquire().await else {
            return Ok(());
        };
        let result = fetch_piece(shared, &sender, chunk, start, end).await;
        // Free the connection slot before any backoff sleep.
        drop(slot);
        match result {
            Ok(()) => retry.succeeded(),
            Err(PieceError::RangesUnsupported(reason)) => {
                if let Ok(mut unsupported) = shared.unsupported.lock() {
                    unsupported.get_or_insert(reason);
                }
                shared.stop.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err(PieceError::Failed(error)) => {
                if let Ok(mut queue) = shared.queue.lock() {
                    queue.push_front(chunk);
                }
                let progressed = shared.transferred.load(Ordering::Relaxed) > before;
                match retry.after_failure(error, progressed, rand::random()) {
                    RetryDecision::GiveUp(error) => {
                        shared.stop.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                    RetryDecision::Retry(backoff) => {
                        let on_disk = shared.on_disk.load(Ordering::Relaxed);
                        shared.events.retrying(on_disk, shared.size, &backoff);
                        tokio::time::sleep(backoff.delay).await;
                    }
                }
            }
        }
    }
}

async fn fetch_piece(
    shared: &RangedTransfer<'_>,
    sender: &mpsc::Sender<Piece>,
    chunk: usize,
    start: u64,
    end: u64,
) -> Result<(), PieceError> {
    let url = shared.source.name();
    let mut body = match shared.source.open(start, Some(end)).await {
        Ok(Opened::Range {
            body,
            start: got_start,
            end: got_end,
            total,
        }) => {
            if (got_start, got_end, total) != (start, end, Some(shared.size)) {
                return Err(PieceError::Failed(EmbeddingError::BadResponse {
                    url,
                    reason: format!(
                        "206 with Content-Range bytes {got_start}-{got_end}/{total:?} for bytes={start}-{end} of {}",
                        shared.size
                    ),
                }));
            }
            body
        }
        Ok(Opened::Whole { .. }) => {
            return Err(PieceError::RangesUnsupported(
                "the server answered 200 to a Range request".to_owned(),
            ))
        }
        Ok(Opened::Unsatisfiable) => {
            return Err(PieceError::RangesUnsupported(
                "the server answered 416 to a Range request".to_owned(),
            ))
        }
        Err(error) if shared.source.is_range_refusal(&error) => {
            return Err(PieceError::RangesUnsupported(format!(
                "parallel ranges refused: {error}"
            )))
        }
        Err(error) => return Err(PieceError::Failed(error)),
    };
    let idle = shared.source.idle_timeout();
    let mut offset = start;
    while offset <= end {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut bytes = match body.next_chunk(idle, &url).await {
            Err(error) => return Err(PieceError::Failed(error)),
            Ok(None) => {
                return Err(PieceError::Failed(EmbeddingError::BadResponse {
                    url,
                    reason: format!("range body ended at byte {offset} of {start}-{end}"),
                }))
            }
            Ok(Some(bytes)) => bytes,
        };
        let room = end + 1 - offset;
        if bytes.len() as u64 > room {
            bytes.truncate(usize::try_from(room).unwrap_or(usize::MAX));
        }
        let length = bytes.len() as u64;
        if length == 0 {
            continue;
        }
        if sender
            .send(Piece {
                chunk,
                offset,
                bytes,
            })
            .await
            .is_err()
        {
            // The writer stopped (disk error); it reports why.
            shared.stop.store(true, Ordering::Relaxed);
            return Ok(());
        }
        offset += length;
        if let Ok(mut sent) = shared.sent.lock() {
            sent[chunk] = offset - chunk as u64 * shared.chunk;
        }
        shared.transferred.fetch_add(length, Ordering::Relaxed);
        let on_disk = shared.on_disk.fetch_add(length, Ordering::Relaxed) + length;
        let due = shared
            .meter
            .lock()
            .ok()
            .and_then(|mut m| m.due(Instant::now(), on_disk));
        if let Some(speed) = due {
            shared.events.progress(on_disk, shared.size, speed);
        }
    }
    Ok(())
}

/// The writer thread: writes pieces at their offsets, keeps the in-order hash, records
/// progress in the sidecar whenever a chunk completes.
fn write_pieces(
    file: File,
    mut progress: RangeProgress,
    sidecar: &Path,
    mut receiver: mpsc::Receiver<Piece>,
    fresh: ContentHasher,
) -> (ContentHasher, u64, io::Result<()>) {
    let mut hasher = fresh;
    let mut hashed = 0u64;
    let mut unrecorded = 0u64;
    if let Err(error) = catch_up(&file, &progress, &mut hasher, &mut hashed) {
        return (hasher, hashed, Err(error));
    }
    while let Some(piece) = receiver.blocking_recv() {
        if let Err(error) = file.write_all_at(&piece.bytes, piece.offset) {
            return (hasher, hashed, Err(error));
        }
        testing::hit("download.chunk");
        let chunk_start = piece.chunk as u64 * progress.chunk;
        let end = piece.offset + piece.bytes.len() as u64 - chunk_start;
        let written = &mut progress.written[piece.chunk];
        if piece.offset <= chunk_start + *written {
            *written = (*written).max(end);
        }
        let complete = *written == chunk_len(progress.size, progress.chunk, piece.chunk);
        if piece.offset == hashed {
            hasher.update(&piece.bytes);
            hashed += piece.bytes.len() as u64;
        }
        if let Err(error) = catch_up(&file, &progress, &mut hasher, &mut hashed) {
            return (hasher, hashed, Err(error));
        }
        unrecorded += piece.bytes.len() as u64;
        if complete || unrecorded >= RECORD_EVERY_BYTES {
            unrecorded = 0;
            if let Err(error) = progress.write(sidecar) {
                return (hasher, hashed, Err(error));
            }
        }
    }
    let result = progress.write(sidecar);
    (hasher, hashed, result)
}

/// Hashes bytes on disk that continue the hashed prefix.
fn catch_up(
    file: &File,
    progress: &RangeProgress,
    hasher: &mut ContentHasher,
    hashed: &mut u64,
) -> io::Result<()> {
    while *hashed < progress.size {
        let chunk = usize::try_from(*hashed / progress.chunk).unwrap_or(usize::MAX);
        let available = chunk as u64 * progress.chunk + progress.written[chunk];
        if available <= *hashed {
            break;
        }
        let mut reader = ReadAt {
            file,
            offset: *hashed,
        };
        let want = available - *hashed;
        let got = hash_reader_into(&mut reader, hasher, want)?;
        *hashed += got;
        if got < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "partial file shorter than recorded",
            ));
        }
    }
    Ok(())
}

struct ReadAt<'a> {
    file: &'a File,
    offset: u64,
}

impl io::Read for ReadAt<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let limit = buffer.len().min(READ_BACK_BYTES);
        let read = self.file.read_at(&mut buffer[..limit], self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_tracks_prefixes_and_gaps() {
        let progress = RangeProgress::new(1000, 300, 450);
        assert_eq!(progress.written, [300, 150, 0, 0]);
        assert_eq!(progress.contiguous_prefix(), 450);
        let mut gap = progress.clone();
        gap.written[2] = 300;
        assert_eq!(gap.contiguous_prefix(), 450);
        assert_eq!(gap.total(), 750);
        let full = RangeProgress::new(1000, 300, 1000);
        assert_eq!(full.written, [300, 300, 300, 100]);
        assert_eq!(full.contiguous_prefix(), 1000);
    }

    #[test]
    fn sidecars_round_trip_and_reject_nonsense() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ranges");
        let progress = RangeProgress::new(1000, 300, 450);
        progress.write(&path).unwrap();
        assert_eq!(RangeProgress::read(&path), Some(progress));
        fs::write(&path, br#"{"size":1000,"chunk":300,"written":[301,0,0,0]}"#).unwrap();
        assert_eq!(RangeProgress::read(&path), None);
        fs::write(&path, br#"{"size":1000,"chunk":0,"written":[]}"#).unwrap();
        assert_eq!(RangeProgress::read(&path), None);
    }

    #[test]
    fn hashing_catches_up_over_out_of_order_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut progress = RangeProgress::new(1000, 300, 0);
        progress.written = vec![300, 0, 300, 100];
        let mut hasher = ContentHasher::new(crate::artifacts::hash::DigestKind::Sha256, None);
        let mut hashed = 0;
        catch_up(&file, &progress, &mut hasher, &mut hashed).unwrap();
        assert_eq!(hashed, 300, "stops at the gap");
        progress.written[1] = 300;
        catch_up(&file, &progress, &mut hasher, &mut hashed).unwrap();
        assert_eq!(hashed, 1000);
        assert_eq!(hasher.hex(), crate::artifacts::hash::sha256_hex(&data));
    }
}
