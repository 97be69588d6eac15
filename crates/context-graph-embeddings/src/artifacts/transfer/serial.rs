//! One stream: a `GET` (ranged from the bytes already on disk) whose body is written and
//! hashed on a blocking thread fed through a bounded queue, so the network read, the write
//! and the hash overlap and memory stays bounded. Checks that a `206` continues exactly where
//! the partial ends; a `200` restarts from zero; a `416` discards the partial.

use std::fs::File;
use std::io::{self, Write};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::adapt::Queued;
use super::partial::{open_for_append, reset, Partial};
use super::request::{FetchRequest, FetchSettings};
use super::write_behind::WriteBehind;
use crate::artifacts::blocking::run_blocking;
use crate::artifacts::hash::ContentHasher;
use crate::artifacts::progress::ProgressMeter;
use crate::artifacts::remote::source::{ByteSource, Opened};
use crate::artifacts::status::ModelEvents;
use crate::artifacts::testing;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Chunks buffered between the network reader and the writer thread. Bounded, so a slow
/// disk slows the reader (back-pressure) instead of filling memory; the bytes they hold count
/// against the run's queue budget too (`adapt::QUEUE_BUDGET_BYTES`).
const WRITE_QUEUE_CHUNKS: usize = 32;

/// One request for the rest of `partial`: returns once every expected byte is on disk (not
/// yet verified), adding what arrived to `transferred`.
pub(crate) async fn attempt(
    source: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
    partial: &mut Partial,
    transferred: &mut u64,
) -> EmbeddingResult<()> {
    let model = request.location.model_id;
    if request.expected_size == Some(partial.len) {
        // Already complete (an earlier run stopped just before the rename): no request at
        // all, which also avoids the 416 a `Range` past the end would get.
        return Ok(());
    }
    let url_shown = source.name();
    // Counted with the run's connections, so the throughput the governor measures is the
    // whole run's and the limit covers every stream.
    let governor = &*settings.connections;
    let mut connection = governor.open_first();
    let opened = source.open(partial.len, None).await?;
    let (mut body, content_length) = match opened {
        Opened::Unsatisfiable => {
            let had = partial.len;
            reset(partial).await?;
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
                reset(partial).await?;
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
                reset(partial).await?;
                events.started(0, request.expected_size.unwrap_or(0), 0);
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
        run_blocking(move || open_for_append(&path, offset))
            .await
            .map_err(|e| EmbeddingError::io("cannot open", &partial.path, e))?
    };
    let hasher = std::mem::replace(&mut partial.hasher, partial.fresh.clone());
    let (sender, receiver) = mpsc::channel::<(Bytes, Queued)>(WRITE_QUEUE_CHUNKS);
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
        if length > 0 {
            let queued = governor.queue(chunk.len()).await;
            if sender.send((chunk, queued)).await.is_err() {
                // The writer stopped: its error is reported below.
                break Ok(());
            }
        }
        received_this_body += length;
        *transferred += length;
        connection.receiving();
        governor.received(length);
        let on_disk = start_len + received_this_body;
        if let Some(speed) = meter.due(Instant::now(), on_disk) {
            events.progress(on_disk, total, speed);
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
        return Err(EmbeddingError::write_failed(&partial.path, error));
    }
    read_outcome?;
    events.progress(partial.len, total, meter.speed());

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
    Ok(())
}

fn write_and_hash(
    mut file: File,
    mut hasher: ContentHasher,
    mut receiver: mpsc::Receiver<(Bytes, Queued)>,
) -> (ContentHasher, u64, io::Result<()>) {
    let mut written = 0u64;
    let mut behind = WriteBehind::new(&file);
    while let Some((chunk, _queued)) = receiver.blocking_recv() {
        if let Err(error) = file.write_all(&chunk) {
            // Whatever part of the chunk reached the file is cut off again by the next
            // `open_for_append`, which truncates to the hashed length.
            return (hasher, written, Err(error));
        }
        hasher.update(&chunk);
        written += chunk.len() as u64;
        testing::hit("download.chunk");
        if let Err(error) = behind.wrote(chunk.len() as u64) {
            return (hasher, written, Err(error));
        }
    }
    let result = file.flush().and_then(|()| behind.finish());
    (hasher, written, result)
}
