//! Parallel ranged download of one large file: connections each fetch a stretch of whole
//! chunks with one request (`Range: bytes=a-b`) and a single writer thread puts the bytes at
//! their offsets while the SHA-256 still runs over the file in order.
//!
//! How many connections: the run's [`ConnectionGovernor`](super::adapt::ConnectionGovernor)
//! decides from measured throughput. A file starts with the connections it grants (one at the
//! start of a run: one request for the whole file); every sample interval the file may add
//! connections while the governor has room, each taking over the back half of the stretch
//! with the most chunks left (its connection stops at the new end, at a chunk boundary). A
//! connection that finishes its stretch takes the next one the same way, or closes when the
//! plan now allows fewer connections (never the file's last).
//!
//! The hash follows the contiguous prefix: a piece that continues it is hashed from memory as
//! it is written; pieces that arrive ahead of it are written to disk and hashed later by
//! reading them back from the page cache when the prefix reaches them. Memory stays bounded
//! by the write queue, whatever the order of arrival.
//!
//! Each connection here is a TCP connection of its own: the byte source's bodies go over an
//! HTTP/1.1-only client (`remote/client.rs`), never as streams multiplexed on one HTTP/2
//! connection, because CDN edges and WAN paths limit each TCP connection (`docs/network.md`,
//! "Parallel ranges and HTTP/2").
//!
//! Work goes to fast connections: each connection's rate is measured on its response, and one
//! far below the fastest its file has seen ([`lagging`](super::adapt::lagging)) drops its
//! response and goes on over a new TCP connection from the bytes already handed to the writer;
//! a connection that finishes while a peer lags takes over the back half of the slowest
//! peer's stretch.
//!
//! Progress survives restarts: a sidecar `<partial>.ranges` records, per chunk, how many bytes
//! are on disk (written after the bytes, so it never claims more than is there).
//!
//! A server that refuses a range request (429, or 403 even to a fresh URL) is asking for fewer
//! connections: the governor backs off for the rest of the run, and the refused connection
//! closes and hands the rest of its stretch to the file's other connections, so no byte
//! already on disk is fetched again. A server that ignores ranges (answers 200) or cannot
//! serve one (416), or refuses a connection while no other of the file is open (a refused
//! connection whose others have finished meanwhile asks once more, alone), drops the
//! download to one stream: the file is cut back to its hashed contiguous prefix and the
//! ordinary resume path continues from there.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::adapt::{lagging, Connection, ParallelSettings, Phase, Queued, LAG_POLICY};
use super::partial::{chunk_len, RangeProgress};
use super::request::{FetchRequest, FetchSettings};
use super::write_behind::WriteBehind;
use crate::artifacts::blocking::run_blocking;
use crate::artifacts::hash::{hash_reader_with, ContentHasher, HASH_BUFFER_BYTES};
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

/// Chunks a connection added as a probe takes before the run knows more connections pay.
const PROBE_CHUNKS: usize = 2;

/// Bytes written between two updates of the progress record, so a kill loses at most about
/// this much besides what was in flight (8 MiB: 2 % of a 400 MB file).
const RECORD_EVERY_BYTES: u64 = 8 * 1024 * 1024;

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
    _queued: Queued,
}

enum PieceError {
    /// The server does not do ranges here (200, 416): one stream for the whole file.
    RangesUnsupported(String),
    /// The server refused this connection's request (429, 403) while other connections of the
    /// file were open: one connection fewer.
    Refused(EmbeddingError),
    /// The connection receives far below its fastest peer (`adapt::lagging`): its response
    /// is dropped (closing its TCP connection) and the stretch goes on over a new one, from
    /// the bytes already handed to the writer.
    Lagging {
        /// Its rate, bytes per second.
        rate: f64,
        /// The fastest peer's.
        best: f64,
    },
    Failed(EmbeddingError),
}

/// A stretch of whole chunks one connection is fetching with one request: `current` is the
/// chunk it is in, `end` the first chunk it must not touch (lowered when another connection
/// takes over the back of the stretch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    current: usize,
    end: usize,
}

/// Who fetches what, under one lock: bytes handed to the writer per chunk, stretches nobody
/// fetches yet, and each connection's stretch.
#[derive(Debug)]
struct Work {
    /// Per chunk, bytes handed to the writer: where a retry of the chunk continues.
    sent: Vec<u64>,
    /// Stretches `[first, end)` nobody fetches yet; only a stretch's first chunk may hold
    /// bytes already.
    unassigned: VecDeque<(usize, usize)>,
    /// Per connection (by slot), its stretch.
    spans: Vec<Option<Span>>,
    /// Per connection (by slot), the rate of its current or last response, bytes per second,
    /// once it has received for `LAG_POLICY.measured_after`. Kept when the connection
    /// finishes: what a connection of this file reached is what its peers are judged by.
    rates: Vec<Option<f64>>,
}

impl Work {
    /// Whole chunks of `span` after the one it is in: what another connection could take.
    fn spare(span: &Span) -> usize {
        span.end.saturating_sub(span.current + 1)
    }

    /// The rates of the connections other than `slot` (receiving now, or finished).
    fn peer_rates(&self, slot: usize) -> Vec<f64> {
        self.rates
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != slot)
            .filter_map(|(_, rate)| *rate)
            .collect()
    }

    /// Sets (or clears) the rate of `slot`.
    fn set_rate(&mut self, slot: usize, rate: Option<f64>) {
        if self.rates.len() <= slot {
            self.rates.resize(slot + 1, None);
        }
        self.rates[slot] = rate;
    }

    /// Whether a connection that received at `own` bytes per second has a peer lagging far
    /// behind it, whose stretch it should take over part of.
    fn has_lagging_peer(&self, slot: usize, own: f64) -> bool {
        self.peer_rates(slot)
            .iter()
            .any(|rate| lagging(&LAG_POLICY, *rate, LAG_POLICY.judged_after, &[own]))
    }

    /// Whether a new connection would find work (taking over part of a stretch).
    fn has_work(&self) -> bool {
        !self.unassigned.is_empty() || self.spans.iter().flatten().any(|s| Work::spare(s) >= 2)
    }

    /// Puts the rest of the stretch of `slot` back for another connection to take (its first
    /// chunk may hold bytes already; the others cannot), in file order: the earliest stretch
    /// is taken first, so the hashed prefix keeps up.
    fn give_back(&mut self, slot: usize) {
        if let Some(span) = self.spans.get_mut(slot).and_then(Option::take) {
            if span.current < span.end {
                let at = self
                    .unassigned
                    .partition_point(|(first, _)| *first < span.current);
                self.unassigned.insert(at, (span.current, span.end));
            }
        }
    }

    /// Work for the connection in `slot`: a stretch nobody fetches, else (when `steal`) the
    /// back half of the stretch with the most chunks left (its connection stops at the new
    /// end). At most `most` chunks when given (a probe).
    fn take(&mut self, slot: usize, steal: bool, most: Option<usize>) -> Option<Span> {
        let most = most.unwrap_or(usize::MAX).max(1);
        let span = if let Some((first, end)) = self.unassigned.pop_front() {
            if end - first > most {
                self.unassigned.push_front((first + most, end));
            }
            Span {
                current: first,
                end: end.min(first.saturating_add(most)),
            }
        } else if !steal {
            return None;
        } else {
            // The slowest connection that has chunks to spare (a connection not measured yet
            // counts as fast), the one with the most of them among equals.
            let rates = &self.rates;
            let victim = self
                .spans
                .iter_mut()
                .enumerate()
                .filter_map(|(i, s)| s.as_mut().map(|s| (rates.get(i).copied().flatten(), s)))
                .filter(|(_, s)| Work::spare(s) >= 2)
                .min_by(|(a, sa), (b, sb)| {
                    let a = a.unwrap_or(f64::INFINITY);
                    let b = b.unwrap_or(f64::INFINITY);
                    a.total_cmp(&b).then(Work::spare(sb).cmp(&Work::spare(sa)))
                })
                .map(|(_, s)| s)?;
            let mid = victim.end - (Work::spare(victim) / 2).min(most);
            let taken = Span {
                current: mid,
                end: victim.end,
            };
            victim.end = mid;
            taken
        };
        if self.spans.len() <= slot {
            self.spans.resize(slot + 1, None);
        }
        self.spans[slot] = Some(span);
        Some(span)
    }
}

/// Stretches of chunks still to fetch, cut into at most about `parts` pieces of similar size:
/// runs of incomplete chunks, a new run at every chunk that already holds some bytes (only a
/// stretch's first chunk may).
fn pending_stretches(progress: &RangeProgress, parts: usize) -> VecDeque<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (c, w) in progress.written.iter().enumerate() {
        if *w >= chunk_len(progress.size, progress.chunk, c) {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if *end == c && *w == 0 => *end = c + 1,
            _ => runs.push((c, c + 1)),
        }
    }
    let total: usize = runs.iter().map(|(a, b)| b - a).sum();
    let most = total.div_ceil(parts.max(1)).max(1);
    let mut out = VecDeque::new();
    for (mut first, end) in runs {
        while end - first > most {
            out.push_back((first, first + most));
            first += most;
        }
        out.push_back((first, end));
    }
    out
}

/// Stretches a ranged download starts with at the least: two (halves) for a file of at least
/// twice [`ParallelSettings::min_file_bytes`], else one.
fn first_stretches(size: u64, parallel: &ParallelSettings) -> usize {
    if size >= parallel.min_file_bytes.saturating_mul(2) {
        2
    } else {
        1
    }
}

/// What the connections of one ranged download share.
struct RangedTransfer<'a> {
    request: &'a FetchRequest,
    settings: &'a FetchSettings,
    source: &'a dyn ByteSource,
    events: &'a ModelEvents,
    size: u64,
    chunk: u64,
    work: Mutex<Work>,
    /// Connections of this file still running.
    alive: AtomicUsize,
    on_disk: AtomicU64,
    transferred: AtomicU64,
    stop: AtomicBool,
    unsupported: Mutex<Option<String>>,
    meter: Mutex<ProgressMeter>,
}

impl RangedTransfer<'_> {
    fn work(&self) -> std::sync::MutexGuard<'_, Work> {
        match self.work.lock() {
            Ok(work) => work,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts a connection that is about to start, before its first request: a request is
    /// sent knowing whether other connections of the file are open.
    fn enlist(&self) -> Alive<'_> {
        self.alive.fetch_add(1, Ordering::AcqRel);
        Alive(&self.alive)
    }

    fn chunk_start(&self, chunk: usize) -> u64 {
        chunk as u64 * self.chunk
    }

    fn chunk_end(&self, chunk: usize) -> u64 {
        self.chunk_start(chunk) + chunk_len(self.size, self.chunk, chunk)
    }
}

/// Fetches `request` (whose size is known) in parallel into the partial file at `path`,
/// continuing from `progress`. Starts with the connections the run's governor grants (one,
/// unless it learned more), adds more while they pay, and returns when every byte is on
/// disk, or when the server turned out not to support parallel ranges, with the bytes
/// received. Errors keep the partial and its sidecar for resume.
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
    let governor = &*settings.connections;
    let pending_chunks = pending_stretches(&progress, 1)
        .iter()
        .map(|(a, b)| b - a)
        .sum::<usize>();
    let mut connections = vec![governor.open_first()];
    while connections.len() < pending_chunks {
        match governor.try_open() {
            Some(connection) => connections.push(connection),
            None => break,
        }
    }
    let shared = RangedTransfer {
        request,
        settings,
        source,
        events,
        size,
        chunk,
        work: Mutex::new(Work {
            sent: progress.written.clone(),
            // At least two stretches for a file of twice the parallel threshold or more: a
            // connection added by the first probe takes the second without cutting the first
            // request short. A smaller one is asked for whole, so that on a link one stream
            // fills it costs one request; a connection added to it cuts that request at a
            // chunk boundary.
            unassigned: pending_stretches(
                &progress,
                connections
                    .len()
                    .max(first_stretches(size, &settings.parallel)),
            ),
            spans: Vec::new(),
            rates: Vec::new(),
        }),
        alive: AtomicUsize::new(0),
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

    let mut running = FuturesUnordered::new();
    // Each connection gets a slot of its own in `Work::spans`.
    let mut slots = 0usize;
    let mut start = |connection, probe| {
        slots += 1;
        worker(
            &shared,
            slots - 1,
            connection,
            shared.enlist(),
            sender.clone(),
            probe,
        )
    };
    for connection in connections {
        running.push(start(connection, false));
    }
    let mut ticker = tokio::time::interval(settings.parallel.sample_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut first_error = None;
    loop {
        tokio::select! {
            done = running.next() => match done {
                // A refused connection handed back its stretch after the others had taken
                // their last: the file gets its own first connection again for it.
                None if first_error.is_none()
                    && !shared.stop.load(Ordering::Relaxed)
                    && !shared.work().unassigned.is_empty() =>
                {
                    running.push(start(governor.open_first(), false));
                }
                None => break,
                Some(Err(error)) => { first_error.get_or_insert(error); }
                Some(Ok(())) => {}
            },
            _ = ticker.tick() => {
                governor.tick(Instant::now());
                // At most double this file's connections per tick, while there is work to
                // split and the governor has room; once settled, only on a link where more
                // connections paid (elsewhere a connection freed by a finished file is not
                // worth a cut request).
                let plan = governor.plan();
                let mut room = if plan.phase == Phase::Settled && !plan.grew {
                    0
                } else {
                    running.len().max(1)
                };
                while room > 0
                    && !shared.stop.load(Ordering::Relaxed)
                    && shared.work().has_work()
                {
                    let Some(connection) = governor.try_open() else { break };
                    running.push(start(connection, true));
                    room -= 1;
                }
            }
        }
    }
    drop(running);
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
    if let Some(error) = first_error {
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

/// Counts a running connection of one file; the count drops when it ends.
struct Alive<'a>(&'a AtomicUsize);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a server answer means "fewer connections, please" for the whole run.
fn asks_for_fewer(error: &EmbeddingError) -> bool {
    match error {
        EmbeddingError::TransientStatus { refusal, .. } => {
            matches!(refusal.status, 429 | 503)
        }
        _ => false,
    }
}

async fn worker(
    shared: &RangedTransfer<'_>,
    slot: usize,
    connection: Connection<'_>,
    alive: Alive<'_>,
    sender: mpsc::Sender<Piece>,
    mut probe: bool,
) -> EmbeddingResult<()> {
    let mut connection = connection;
    let governor = &*shared.settings.connections;
    let mut retry = RetryState::new(
        &shared.settings.retry_policy,
        shared.settings.retry_attempts,
        &shared.request.location,
    );
    let mut first = true;
    // This connection's rate on the stretch it finished last.
    let mut last_rate: Option<f64> = None;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A connection added to share the work takes over part of a stretch; one that
        // finished its own does so only on a link where more connections paid. Until then a
        // connection added as a probe takes a short stretch: its bytes arrive ahead of the
        // hashed prefix and are read back from disk to be hashed, which costs CPU on a link
        // where the probe will not pay.
        let grew = governor.plan().grew;
        // A connection far faster than one still holding work takes over part of it too.
        let outruns = last_rate.is_some_and(|own| shared.work().has_lagging_peer(slot, own));
        let steal = std::mem::take(&mut first) || grew || outruns;
        let most = (probe && !grew).then_some(PROBE_CHUNKS);
        probe = false;
        if shared.work().take(slot, steal, most).is_none() {
            return Ok(());
        }
        loop {
            retry.attempt_started();
            let before = shared.transferred.load(Ordering::Relaxed);
            let error = match fetch_span(shared, slot, &sender, &mut connection).await {
                Ok(()) => {
                    retry.succeeded();
                    break;
                }
                Err(PieceError::Lagging { rate, best }) => {
                    // Not a failure: the same stretch, from the bytes already handed to the
                    // writer, over a new TCP connection (the dropped response closed this one).
                    shared.work().set_rate(slot, None);
                    tracing::debug!(file = %shared.request.location, rate, best, "connection far below its fastest peer; replaced by a new one");
                    continue;
                }
                Err(PieceError::RangesUnsupported(reason)) => {
                    governor.refused();
                    if let Ok(mut unsupported) = shared.unsupported.lock() {
                        unsupported.get_or_insert(reason);
                    }
                    shared.stop.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Err(PieceError::Refused(error)) => {
                    governor.refused();
                    // Another connection of this file goes on: it takes this stretch, and
                    // every byte on disk stays where it is.
                    if shared
                        .alive
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n > 1).then(|| n - 1)
                        })
                        .is_ok()
                    {
                        std::mem::forget(alive);
                        shared.work().give_back(slot);
                        tracing::debug!(file = %shared.request.location, %error, "range refused; its connection closes and the others take its stretch");
                        return Ok(());
                    }
                    // The others have finished meanwhile: this one asks again, alone now; a
                    // refusal of that drops the file to one stream.
                    continue;
                }
                Err(PieceError::Failed(error)) => {
                    if asks_for_fewer(&error) {
                        governor.refused();
                    }
                    error
                }
            };
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
                    if shared.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                }
            }
        }
        {
            let mut work = shared.work();
            if let Some(span) = work.spans.get_mut(slot) {
                *span = None;
            }
            last_rate = work.rates.get(slot).copied().flatten();
        }
        // More connections open than the run's plan allows: close this one, unless it is the
        // file's last.
        if governor.over_limit()
            && shared
                .alive
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n > 1).then(|| n - 1)
                })
                .is_ok()
        {
            std::mem::forget(alive);
            return Ok(());
        }
    }
}

/// Fetches the rest of the stretch of `slot` with one request, chunk by chunk; stops at a
/// chunk boundary when another connection took over the rest (the response is dropped).
async fn fetch_span(
    shared: &RangedTransfer<'_>,
    slot: usize,
    sender: &mpsc::Sender<Piece>,
    connection: &mut Connection<'_>,
) -> Result<(), PieceError> {
    let url = shared.source.name();
    let (mut chunk, start, last) = {
        let mut work = shared.work();
        let Some(mut span) = work.spans.get(slot).copied().flatten() else {
            return Ok(());
        };
        while span.current < span.end
            && work.sent[span.current] >= chunk_len(shared.size, shared.chunk, span.current)
        {
            span.current += 1;
        }
        work.spans[slot] = Some(span);
        if span.current >= span.end {
            return Ok(());
        }
        (
            span.current,
            shared.chunk_start(span.current) + work.sent[span.current],
            shared.chunk_end(span.end - 1) - 1,
        )
    };
    let crowded = shared.alive.load(Ordering::Acquire) > 1;
    let mut body = match shared.source.open(start, Some(last)).await {
        Ok(Opened::Range {
            body,
            start: got_start,
            end: got_end,
            total,
        }) => {
            if (got_start, got_end, total) != (start, last, Some(shared.size)) {
                return Err(PieceError::Failed(EmbeddingError::BadResponse {
                    url,
                    reason: format!(
                        "206 with Content-Range bytes {got_start}-{got_end}/{total:?} for bytes={start}-{last} of {}",
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
        // Refused while other connections of the file were open: too many at once. Refused
        // alone: the server does not serve this file in ranges.
        Err(error) if shared.source.is_range_refusal(&error) => {
            return Err(if crowded {
                PieceError::Refused(error)
            } else {
                PieceError::RangesUnsupported(format!("ranges refused: {error}"))
            });
        }
        Err(error) => return Err(PieceError::Failed(error)),
    };
    let governor = &*shared.settings.connections;
    let idle = shared.source.idle_timeout();
    let mut offset = start;
    let mut chunk_end = shared.chunk_end(chunk);
    let mut leftover: Option<Bytes> = None;
    // When the first body bytes came, and the bytes since: this response's rate.
    let mut measured: Option<(Instant, u64)> = None;
    loop {
        if offset == chunk_end {
            // A chunk boundary: go on unless the stretch ends here (or was cut here).
            chunk += 1;
            let mut work = shared.work();
            match work.spans.get_mut(slot).and_then(Option::as_mut) {
                Some(span) if chunk < span.end => span.current = chunk,
                _ => return Ok(()),
            }
            drop(work);
            chunk_end = shared.chunk_end(chunk);
        }
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut bytes = match leftover.take() {
            Some(bytes) => bytes,
            None => match body.next_chunk(idle, &url).await {
                Err(error) => return Err(PieceError::Failed(error)),
                Ok(None) => {
                    return Err(PieceError::Failed(EmbeddingError::BadResponse {
                        url,
                        reason: format!("range body ended at byte {offset} of {start}-{last}"),
                    }))
                }
                Ok(Some(bytes)) => bytes,
            },
        };
        let room = chunk_end - offset;
        if bytes.len() as u64 > room {
            let rest = bytes.split_off(usize::try_from(room).unwrap_or(usize::MAX));
            if chunk_end <= last {
                leftover = Some(rest);
            }
        }
        let length = bytes.len() as u64;
        if length == 0 {
            continue;
        }
        let queue_wait = Instant::now();
        let queued = governor.queue(bytes.len()).await;
        if sender
            .send(Piece {
                chunk,
                offset,
                bytes,
                _queued: queued,
            })
            .await
            .is_err()
        {
            // The writer stopped (disk error); it reports why.
            shared.stop.store(true, Ordering::Relaxed);
            return Ok(());
        }
        offset += length;
        let now = Instant::now();
        // The first piece starts the clock; the bytes after it are timed. Time spent waiting
        // for room in the write queue is the disk's, not the connection's: it moves the
        // start of the clock forward, so a connection is judged by what the network gives.
        let (since, counted) = match measured {
            None => (now, 0),
            Some((since, counted)) => (since + now.duration_since(queue_wait), counted + length),
        };
        measured = Some((since, counted));
        let elapsed = now.saturating_duration_since(since);
        let lag = {
            let mut work = shared.work();
            work.sent[chunk] = offset - shared.chunk_start(chunk);
            if elapsed >= LAG_POLICY.measured_after {
                let rate = counted as f64 / elapsed.as_secs_f64();
                work.set_rate(slot, Some(rate));
                let mut peers = work.peer_rates(slot);
                peers.extend(governor.note_rate(rate));
                lagging(&LAG_POLICY, rate, elapsed, &peers).then(|| PieceError::Lagging {
                    rate,
                    best: peers.iter().copied().fold(0.0, f64::max),
                })
            } else {
                None
            }
        };
        connection.receiving();
        governor.received(length);
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
        if let Some(lag) = lag {
            return Err(lag);
        }
    }
}

/// The writer thread: writes pieces at their offsets, keeps the in-order hash, records
/// progress in the sidecar every `RECORD_EVERY_BYTES` and at the end.
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
    let mut behind = WriteBehind::new(&file);
    // One read buffer for every catch-up of this file, allocated when first needed.
    let mut buffer = Vec::new();
    if let Err(error) = catch_up(&file, &progress, &mut hasher, &mut hashed, &mut buffer) {
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
        if piece.offset == hashed {
            hasher.update(&piece.bytes);
            hashed += piece.bytes.len() as u64;
        }
        if let Err(error) = catch_up(&file, &progress, &mut hasher, &mut hashed, &mut buffer) {
            return (hasher, hashed, Err(error));
        }
        unrecorded += piece.bytes.len() as u64;
        if let Err(error) = behind.wrote(piece.bytes.len() as u64) {
            return (hasher, hashed, Err(error));
        }
        // Each record is a small file written and renamed over the last (a journal commit),
        // so it is kept to one per `RECORD_EVERY_BYTES` (or four chunks, when smaller).
        if unrecorded >= RECORD_EVERY_BYTES.min(4 * progress.chunk) {
            unrecorded = 0;
            if let Err(error) = progress.write(sidecar) {
                return (hasher, hashed, Err(error));
            }
        }
    }
    let result = behind.finish().and_then(|()| progress.write(sidecar));
    (hasher, hashed, result)
}

/// Hashes bytes on disk that continue the hashed prefix.
fn catch_up(
    file: &File,
    progress: &RangeProgress,
    hasher: &mut ContentHasher,
    hashed: &mut u64,
    buffer: &mut Vec<u8>,
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
        if buffer.is_empty() {
            buffer.resize(HASH_BUFFER_BYTES, 0);
        }
        let got = hash_reader_with(&mut reader, hasher, want, buffer)?;
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
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_of_twice_the_threshold_start_in_halves() {
        let parallel = ParallelSettings {
            min_file_bytes: 16,
            ..ParallelSettings::default()
        };
        assert_eq!(first_stretches(16, &parallel), 1);
        assert_eq!(first_stretches(31, &parallel), 1);
        assert_eq!(first_stretches(32, &parallel), 2);
        assert_eq!(first_stretches(u64::MAX, &parallel), 2);
    }

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
        catch_up(&file, &progress, &mut hasher, &mut hashed, &mut Vec::new()).unwrap();
        assert_eq!(hashed, 300, "stops at the gap");
        progress.written[1] = 300;
        catch_up(&file, &progress, &mut hasher, &mut hashed, &mut Vec::new()).unwrap();
        assert_eq!(hashed, 1000);
        assert_eq!(hasher.hex(), crate::artifacts::hash::sha256_hex(&data));
    }
}
