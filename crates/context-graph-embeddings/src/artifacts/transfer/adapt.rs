//! How many connections a run uses: every file starts with one stream; range connections are
//! added (to one file and across files) only while the run's total throughput still grows,
//! taken back when it stops growing or the server refuses (429, 403, 503), and what was learned
//! holds for the rest of the run.
//!
//! The decision is [`next_step`], a pure function over one measured [`Sample`]: no clock, no
//! network, so it is unit-tested as data. The [`ConnectionGovernor`] around it is the run's
//! shared state: it counts body bytes and open connections, measures a sample once a level has
//! been held for [`ParallelSettings::sample_interval`], and asks `next_step` for the next limit.
//!
//! Which connections: [`lagging`] says, as a pure function of measured rates, when a
//! connection is so far below its fastest peer ([`LAG_POLICY`]) that it should be replaced by a
//! new one (a CDN draws each new connection's edge anew).
//!
//! Why it matters: on an uncapped link (loopback, a fast LAN mirror) one stream per file
//! already fills the link and every extra range costs a request, a connection and, when a
//! range is cut short, bytes sent twice; on a CDN that caps each connection, the file only
//! comes fast over many connections. Measuring tells the two apart.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How files are split and fetched over several connections. The number of connections is
/// not fixed: each file starts with one stream and range connections are added (to a file and
/// across files) only while the total throughput still grows (see `transfer/adapt.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelSettings {
    /// Most connections open at once across all downloads of a manager (1 turns parallel
    /// download off).
    pub connections: usize,
    /// Connections the run starts with before measuring (each file always has its own first
    /// stream); equal to `connections`, the count is fixed.
    pub initial_connections: usize,
    /// How long a number of connections is held (once all of them stream) before its
    /// throughput is judged.
    pub sample_interval: Duration,
    /// A raise pays when throughput grew by at least this percentage of the proportional
    /// gain (8 to 16 connections, +100 % proportional: at least +50 % at 50).
    pub gain_percent: u32,
    /// Smallest file fetched in parallel (16 MiB by default: on a CDN that caps each
    /// connection or hands out slow edges, a 20-30 MB file on one slow connection was the
    /// tail of a run; see `docs/network.md`).
    pub min_file_bytes: u64,
    /// Smallest chunk (the unit of a range and of the resume record); larger files get larger
    /// chunks (at most 1024 chunks per file).
    pub chunk_bytes: u64,
}

impl Default for ParallelSettings {
    fn default() -> Self {
        ParallelSettings {
            connections: 32,
            initial_connections: 1,
            sample_interval: Duration::from_millis(100),
            gain_percent: 50,
            min_file_bytes: 16 * 1024 * 1024,
            chunk_bytes: 8 * 1024 * 1024,
        }
    }
}

impl ParallelSettings {
    /// Whether a file of `size` bytes is fetched in parallel.
    pub fn applies_to(&self, size: Option<u64>) -> bool {
        self.connections > 1
            && size.is_some_and(|s| s >= self.min_file_bytes && s > self.chunk_bytes)
    }

    /// The chunk size for a file of `size` bytes.
    pub fn chunk_for(&self, size: u64) -> u64 {
        self.chunk_bytes.max(size.div_ceil(1024)).max(1)
    }

    /// Most connections open at once (at least 1).
    pub fn max_connections(&self) -> usize {
        self.connections.max(1)
    }
}

/// One measurement: the run's throughput while `connections` were open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Body bytes per second over the measured interval, all connections of the run.
    pub(crate) bytes_per_sec: f64,
    /// Connections open during it.
    pub(crate) connections: usize,
}

/// Where the search for the right number of connections stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// Not measured yet at the current limit.
    Starting,
    /// The limit was raised from the level of `base`; the next sample says whether it paid.
    Probing {
        /// The sample before the raise.
        base: Sample,
    },
    /// Found (or backed off to): the limit holds for the rest of the run.
    Settled,
}

/// The governor's decision state: the limit on open connections and the phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// Most connections open at once across the run (each file may always open its first).
    pub(crate) limit: usize,
    /// Where the search stands.
    pub(crate) phase: Phase,
    /// Whether a raise has paid in this run: the link is capped per connection, so a
    /// connection that finishes its stretch takes over part of another's rather than close.
    pub(crate) grew: bool,
}

impl Plan {
    /// The plan a run starts with.
    pub(crate) fn start(settings: &ParallelSettings) -> Self {
        Plan {
            limit: settings
                .initial_connections
                .clamp(1, settings.max_connections()),
            phase: Phase::Starting,
            grew: false,
        }
    }
}

/// The next plan after measuring `sample` under `plan`.
///
/// - First sample at a level: raise the limit by half (a probe: on a link that is already full
///   it costs a few short ranges), or double it when the level was itself a raise that paid.
/// - A raise pays when throughput grew by at least `gain_percent` % of the proportional gain
///   (`connections` from 4 to 8 must give at least +50 % at the default 50): a link capped
///   per connection gives about the proportional gain, a full link about none.
/// - A raise that did not pay goes back to the connections of the base sample and settles.
/// - At the maximum, settles.
pub(crate) fn next_step(settings: &ParallelSettings, plan: Plan, sample: Sample) -> Plan {
    let max = settings.max_connections();
    match plan.phase {
        Phase::Settled => plan,
        Phase::Starting => raise(plan.limit.max(sample.connections), sample, max, plan.grew),
        Phase::Probing { base } => {
            if paid(settings, base, sample) {
                raise(sample.connections, sample, max, true)
            } else {
                Plan {
                    limit: base.connections.clamp(1, max),
                    phase: Phase::Settled,
                    grew: plan.grew,
                }
            }
        }
    }
}

/// The plan after the server refused a request (429, 403 on a range, 503): half the
/// connections that were open, at least one, settled for the rest of the run.
pub(crate) fn after_refusal(plan: Plan, open: usize) -> Plan {
    Plan {
        limit: (open.min(plan.limit) / 2).max(1),
        phase: Phase::Settled,
        grew: plan.grew,
    }
}

/// A raise from `from` connections: by half (at least one) for a first probe, doubled after
/// one that paid (`grew`); settles at the maximum. Half, not one: the gain a probe must show
/// is then large enough (+25 % at the default) to stand out of the noise of a shared machine.
fn raise(from: usize, base: Sample, max: usize, grew: bool) -> Plan {
    let limit = if grew {
        from * 2
    } else {
        from + (from / 2).max(1)
    }
    .min(max);
    if limit <= from {
        return Plan {
            limit: from.min(max),
            phase: Phase::Settled,
            grew,
        };
    }
    Plan {
        limit,
        phase: Phase::Probing { base },
        grew,
    }
}

fn paid(settings: &ParallelSettings, base: Sample, now: Sample) -> bool {
    if now.connections <= base.connections || base.bytes_per_sec <= 0.0 {
        // Nothing was added after all (files finished meanwhile): no evidence that more
        // connections pay; keep what the base had.
        return false;
    }
    let proportional = now.connections as f64 / base.connections as f64 - 1.0;
    let gained = now.bytes_per_sec / base.bytes_per_sec - 1.0;
    gained >= proportional * f64::from(settings.gain_percent) / 100.0
}

/// When a connection is so far below its peers that it is closed and replaced (a new TCP
/// connection lands on another CDN edge or path more often than not).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LagPolicy {
    /// A connection is lagging below this percentage of its fastest peer's rate.
    pub(crate) percent_of_best: u32,
    /// Time a connection receives before it is judged (a new connection's slow start, and
    /// the noise of one short interval, must not condemn it).
    pub(crate) judged_after: Duration,
    /// Time a connection receives before its rate counts as a reference for its peers (a
    /// fast connection may finish its stretch long before `judged_after`).
    pub(crate) measured_after: Duration,
}

/// The policy a run uses: below a quarter of the fastest peer, judged after half a second.
///
/// The reference is the fastest peer, not the median: where two thirds of a CDN's edges are
/// slow (xet-core #821: 65-75 % near 8.7 MB/s, the rest near 68 MB/s), the median peer is
/// itself slow and a median rule would keep the slow majority.
pub(crate) const LAG_POLICY: LagPolicy = LagPolicy {
    percent_of_best: 25,
    judged_after: Duration::from_millis(500),
    measured_after: Duration::from_millis(50),
};

/// Whether a connection that has received at `own` bytes per second for `elapsed` is lagging
/// behind peers of the same file receiving at `peers` bytes per second: it should close and
/// hand its stretch to a new connection. Never without a peer measured (nothing to compare
/// with: a single slow connection is the link).
pub(crate) fn lagging(policy: &LagPolicy, own: f64, elapsed: Duration, peers: &[f64]) -> bool {
    if elapsed < policy.judged_after {
        return false;
    }
    let best = peers.iter().copied().fold(0.0_f64, f64::max);
    best > 0.0 && own * 100.0 < best * f64::from(policy.percent_of_best)
}

/// How long a rate a connection reported stands as the run's reference for other files'
/// connections ([`run_reference`]).
pub(crate) const RUN_REFERENCE_WINDOW: Duration = Duration::from_secs(1);

/// The run's reference after a range connection reported `rate` at `now`: the fastest rate a
/// connection of the run reported within the last `window` (`stored`, while it is that fresh
/// and not beaten), else this one. A connection is judged against it besides its own file's
/// peers ([`lagging`]), so a file whose only connection drew a slow CDN edge draws another
/// while other files' connections run fast. Only recent reports count: on a link that one
/// stream fills, rates fall as files are added, and what a connection had alone a while ago
/// says nothing about one that shares the link now.
pub(crate) fn run_reference(
    stored: Option<(f64, Instant)>,
    rate: f64,
    now: Instant,
    window: Duration,
) -> (f64, Instant) {
    match stored {
        Some((best, when)) if best > rate && now.saturating_duration_since(when) <= window => {
            (best, when)
        }
        _ => (rate, now),
    }
}

/// Body bytes waiting for the writer threads, all downloads of a run together. With the
/// network read buffer of each open connection (hyper's, at most about 400 KiB), this is the
/// memory a run holds for bytes in flight, whatever the size and number of files.
pub(crate) const QUEUE_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// The run's shared connection state: the plan, open connections, bytes received, and the
/// budget of bytes queued for the writers.
#[derive(Debug)]
pub(crate) struct ConnectionGovernor {
    settings: ParallelSettings,
    open: AtomicUsize,
    /// Open connections that have not received a byte yet: a level is measured only once
    /// every connection of it streams (a new connection's request, handshake and slow start
    /// would otherwise count against it).
    waiting: AtomicUsize,
    bytes: AtomicU64,
    inner: Mutex<Inner>,
    /// [`QUEUE_BUDGET_BYTES`] in KiB permits.
    queue: Arc<Semaphore>,
    /// The run's reference rate and when it was reported ([`run_reference`]).
    best_rate: Mutex<Option<(f64, Instant)>>,
}

/// Room for one queued piece in the run's queue budget; freed when the writer is done with it.
#[derive(Debug)]
pub(crate) struct Queued(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

#[derive(Debug)]
struct Inner {
    plan: Plan,
    /// When and at which byte count the current level was reached: the start of the sample.
    measuring_since: Option<(Instant, u64)>,
}

/// One open connection; closing it (drop) frees its place.
#[derive(Debug)]
pub(crate) struct Connection<'a> {
    governor: &'a ConnectionGovernor,
    waiting: bool,
}

impl Connection<'_> {
    /// Body bytes arrived on this connection (cheap after the first call).
    pub(crate) fn receiving(&mut self) {
        if self.waiting {
            self.waiting = false;
            let waiting = self.governor.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
            self.governor
                .level_check(self.governor.open.load(Ordering::Acquire), waiting);
        }
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.governor.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        self.governor.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionGovernor {
    /// A governor for one run (one manager).
    pub(crate) fn new(settings: &ParallelSettings) -> Self {
        ConnectionGovernor {
            settings: settings.clone(),
            open: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                plan: Plan::start(settings),
                measuring_since: None,
            }),
            queue: Arc::new(Semaphore::new(QUEUE_BUDGET_BYTES / 1024)),
            best_rate: Mutex::new(None),
        }
    }

    /// Notes that a range connection received at `rate` bytes per second, and returns the
    /// run's reference rate ([`run_reference`]) its connections are also judged against.
    pub(crate) fn note_rate(&self, rate: f64) -> Option<f64> {
        let mut stored = match self.best_rate.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = run_reference(*stored, rate, Instant::now(), RUN_REFERENCE_WINDOW);
        *stored = Some(now);
        (now.0 > 0.0).then_some(now.0)
    }

    /// Waits for room for `bytes` in the run's queue budget (back-pressure: a connection
    /// whose bytes cannot be queued stops reading, and TCP slows the sender).
    pub(crate) async fn queue(&self, bytes: usize) -> Queued {
        let most = u32::try_from(QUEUE_BUDGET_BYTES / 1024).unwrap_or(u32::MAX);
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, most);
        Queued(self.queue.clone().acquire_many_owned(kib).await.ok())
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The plan now.
    pub(crate) fn plan(&self) -> Plan {
        self.inner().plan
    }

    /// Counts body bytes received by any connection of the run.
    pub(crate) fn received(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A file's own first stream: always granted, whatever the limit.
    pub(crate) fn open_first(&self) -> Connection<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.open.fetch_add(1, Ordering::AcqRel);
        Connection {
            governor: self,
            waiting: true,
        }
    }

    /// One more range connection, if the limit has room.
    pub(crate) fn try_open(&self) -> Option<Connection<'_>> {
        let limit = self.plan().limit;
        let mut open = self.open.load(Ordering::Acquire);
        self.waiting.fetch_add(1, Ordering::AcqRel);
        loop {
            if open >= limit {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            match self
                .open
                .compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        Some(Connection {
            governor: self,
            waiting: true,
        })
    }

    /// Whether more connections are open than the plan allows (a connection between two
    /// ranges then closes instead of taking more work, unless it is its file's last).
    pub(crate) fn over_limit(&self) -> bool {
        self.open.load(Ordering::Acquire) > self.plan().limit
    }

    /// The server refused a request: back off for the rest of the run.
    pub(crate) fn refused(&self) {
        let open = self.open.load(Ordering::Acquire);
        let mut inner = self.inner();
        let before = inner.plan;
        inner.plan = after_refusal(before, open);
        inner.measuring_since = None;
        if inner.plan != before {
            tracing::info!(
                limit = inner.plan.limit,
                "server refused a request; fewer connections for the rest of the run"
            );
        }
    }

    /// Measures, once the current level has been held for a sample interval, and plans the
    /// next step. Returns the limit.
    pub(crate) fn tick(&self, now: Instant) -> usize {
        let mut inner = self.inner();
        if inner.plan.phase == Phase::Settled {
            return inner.plan.limit;
        }
        let Some((since, from_bytes)) = inner.measuring_since else {
            return inner.plan.limit;
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < self.settings.sample_interval {
            return inner.plan.limit;
        }
        let bytes = self.bytes.load(Ordering::Relaxed);
        let sample = Sample {
            bytes_per_sec: (bytes - from_bytes) as f64 / elapsed.as_secs_f64(),
            connections: self.open.load(Ordering::Acquire),
        };
        let next = next_step(&self.settings, inner.plan, sample);
        tracing::debug!(?sample, ?next, "connection plan");
        inner.plan = next;
        // A new level is measured from when it is reached; a settled one is not measured.
        inner.measuring_since = None;
        let open = sample.connections;
        drop(inner);
        self.level_check(open, self.waiting.load(Ordering::Acquire));
        next.limit
    }

    /// Starts measuring when the open connections reach the limit of a level being searched
    /// and all of them stream.
    fn level_check(&self, open: usize, waiting: usize) {
        if waiting > 0 {
            return;
        }
        let mut inner = self.inner();
        if inner.measuring_since.is_none()
            && inner.plan.phase != Phase::Settled
            && open >= inner.plan.limit
        {
            inner.measuring_since = Some((Instant::now(), self.bytes.load(Ordering::Relaxed)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_s_reference_is_the_fastest_recent_report() {
        let mb = 1e6;
        let window = RUN_REFERENCE_WINDOW;
        let t0 = Instant::now();
        // Another file's connection on a 38 MB/s edge reported a moment ago: a file's lone
        // connection on a 4 MB/s edge is judged against it, and lags.
        let fast = run_reference(None, 38.0 * mb, t0, window);
        let now = t0 + Duration::from_millis(300);
        let reference = run_reference(Some(fast), 4.0 * mb, now, window);
        assert_eq!(reference, fast);
        assert!(lagging(
            &LAG_POLICY,
            4.0 * mb,
            Duration::from_secs(1),
            &[reference.0]
        ));
        // A faster report replaces it at once.
        let faster = t0 + Duration::from_millis(400);
        assert_eq!(
            run_reference(Some(fast), 40.0 * mb, faster, window),
            (40.0 * mb, faster)
        );
        // A report older than the window no longer counts: 600 MB/s one file had alone at the
        // start says nothing about 60 MB/s shared by eight connections later.
        let alone = run_reference(None, 600.0 * mb, t0, window);
        let later = t0 + window + Duration::from_millis(1);
        assert_eq!(
            run_reference(Some(alone), 60.0 * mb, later, window),
            (60.0 * mb, later)
        );
    }

    #[test]
    fn a_connection_far_below_its_fastest_peer_is_lagging() {
        let policy = LAG_POLICY;
        let mb = 1e6;
        let judged = Duration::from_secs(1);
        // Slow and fast CDN edges: 4 against 38 MB/s is lagging, even when most peers are slow.
        assert!(lagging(&policy, 4.0 * mb, judged, &[38.0 * mb]));
        assert!(lagging(
            &policy,
            4.0 * mb,
            judged,
            &[4.0 * mb, 4.1 * mb, 38.0 * mb]
        ));
        // Peers alike, or within a factor of four: not lagging.
        assert!(!lagging(
            &policy,
            20.0 * mb,
            judged,
            &[20.0 * mb, 21.0 * mb]
        ));
        assert!(!lagging(&policy, 10.0 * mb, judged, &[39.0 * mb]));
        // Too early to judge, or nobody to compare with.
        assert!(!lagging(
            &policy,
            4.0 * mb,
            Duration::from_millis(200),
            &[38.0 * mb]
        ));
        assert!(!lagging(&policy, 4.0 * mb, judged, &[]));
        assert!(!lagging(&policy, 0.0, judged, &[0.0]));
        // A stalled connection beside a streaming one is lagging.
        assert!(lagging(&policy, 0.0, judged, &[1.0 * mb]));
    }

    fn settings() -> ParallelSettings {
        ParallelSettings::default()
    }

    fn sample(mb_per_sec: f64, connections: usize) -> Sample {
        Sample {
            bytes_per_sec: mb_per_sec * 1e6,
            connections,
        }
    }

    /// Runs the decision against a link model: throughput for n connections.
    fn settle(link: impl Fn(usize) -> f64, files: usize) -> (usize, usize) {
        let s = settings();
        let mut plan = Plan::start(&s);
        let mut steps = 0;
        while plan.phase != Phase::Settled && steps < 100 {
            let open = plan.limit.max(files);
            plan = next_step(&s, plan, sample(link(open), open));
            steps += 1;
        }
        (plan.limit, steps)
    }

    #[test]
    fn a_full_link_keeps_one_stream_per_file_after_one_probe() {
        // 4 files on loopback: 1000 MB/s whatever the connections.
        let (limit, steps) = settle(|_| 1000.0, 4);
        assert_eq!(limit, 4);
        // The probe: 4 -> 6.
        let s = settings();
        let probe = next_step(&s, Plan::start(&s), sample(1000.0, 4));
        assert_eq!(probe.limit, 6);
        assert!(!Plan::start(&settings()).grew);
        assert_eq!(steps, 2, "one probe");
        // One file alone, same.
        assert_eq!(settle(|_| 1000.0, 1).0, 1);
    }

    #[test]
    fn a_per_connection_cap_grows_to_what_the_link_gives() {
        // 40 MB/s per connection, 1000 MB/s in all.
        let link = |n: usize| (40.0 * n as f64).min(1000.0);
        let (limit, _) = settle(link, 1);
        assert!(limit >= 16, "{limit}");
        assert!(limit <= settings().max_connections());
        // Four files at once get there too.
        assert!(settle(link, 4).0 >= 16);
        // A cap with room for everything goes to the maximum.
        let (limit, _) = settle(|n| 10.0 * n as f64, 1);
        assert_eq!(limit, settings().max_connections());
    }

    #[test]
    fn a_raise_that_does_not_pay_goes_back_and_stays() {
        let s = settings();
        let plan = Plan {
            limit: 16,
            phase: Phase::Probing {
                base: sample(640.0, 8),
            },
            grew: true,
        };
        // 8 -> 16 connections gave +10 %: less than half the proportional +100 %.
        let next = next_step(&s, plan, sample(704.0, 16));
        assert_eq!(
            next,
            Plan {
                limit: 8,
                phase: Phase::Settled,
                grew: true
            }
        );
        // Settled is final.
        assert_eq!(next_step(&s, next, sample(5000.0, 8)), next);
        // +60 % pays and doubles.
        let next = next_step(&s, plan, sample(1024.0, 16));
        assert_eq!(next.limit, 32);
    }

    #[test]
    fn refusals_halve_and_settle() {
        let plan = Plan {
            limit: 32,
            phase: Phase::Probing {
                base: sample(1.0, 16),
            },
            grew: true,
        };
        assert_eq!(
            after_refusal(plan, 20),
            Plan {
                limit: 10,
                phase: Phase::Settled,
                grew: true
            }
        );
        assert_eq!(after_refusal(plan, 1).limit, 1);
    }

    #[test]
    fn the_governor_grants_first_streams_and_limits_the_rest() {
        let governor = ConnectionGovernor::new(&settings());
        let mut first = governor.open_first();
        first.receiving();
        assert!(
            governor.inner().measuring_since.is_some(),
            "measured once it streams"
        );
        assert!(governor.try_open().is_none(), "limit 1 at the start");
        let second = governor.open_first();
        assert!(governor.over_limit());
        drop(second);
        drop(first);
        assert!(!governor.over_limit());
        let fixed = ParallelSettings {
            initial_connections: 3,
            connections: 3,
            ..settings()
        };
        let governor = ConnectionGovernor::new(&fixed);
        let _a = governor.open_first();
        let _b = governor.try_open().expect("room");
        let _c = governor.try_open().expect("room");
        assert!(governor.try_open().is_none());
    }
}
