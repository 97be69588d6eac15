//! Coordinating a fleet through the mirror itself: for each blob one node fetches from the Hub
//! (the leader) and uploads it as numbered parts while it downloads; the others (followers)
//! stream those parts in order and switch to the final object once it exists. This module owns
//! the store protocol: the key names, the pure decisions (who leads, is a lease stale, what a
//! follower does next) and the object-store calls. Nothing here is trusted: every byte a
//! follower reads goes through the downloader's SHA-256 check like bytes from the Hub.
//!
//! Keys, under the mirror's prefix, `.inflight/<sha256>/` then:
//! - `claims/claim-<epoch>` (store with conditional create) or `claims/claim-<epoch>-<lease>`
//!   (without): a node's claim to fetch the blob in lease epoch `<epoch>`.
//! - `beats/beat-<epoch>-<lease>`: the leader's heartbeat counter, rewritten every renew
//!   interval.
//! - `parts/part-<k>`: bytes `k·P..(k+1)·P` of the blob (P = part size), shared by every
//!   leader of every epoch (the bytes are the same), so a node taking over resumes where the
//!   parts end instead of fetching them again from the Hub.
//! - The final object `<sha256>`, as without a fleet. The leader uploads it, then deletes
//!   `.inflight/<sha256>/`.
//!
//! Guarantees relied on:
//! - Where the store honours `If-None-Match: *` (`PutMode::Create`; AWS S3, MinIO and R2
//!   document it, moto's S3 server is the one tested), the claim of an epoch is one key
//!   created by exactly one node. Whether it does is probed once per process
//!   ([`probe_conditional_create`]), never assumed from the store's name.
//! - Where it does not (Garage 2.x answers 200 and overwrites), each claimant writes its own
//!   key, waits `claim_settle`, and lists the epoch's claims: the claim the store wrote first
//!   (its `Last-Modified`; ties by lease id) wins, a pure function of the listing. Garage
//!   lists with a read quorum that intersects every write quorum (`consistency_mode =
//!   "consistent"`, the default), so a listing after a completed write holds it: a late
//!   claimant always sees the earlier claim and follows. Two nodes both lead only when their
//!   claim writes overlap beyond the settle time; each leader lists again at every renewal
//!   and yields when an earlier claim appears. The cost is a duplicate Hub fetch of at most
//!   one renew interval, never a wrong file.
//! - Staleness is judged on the follower's own monotonic clock (a heartbeat that has not
//!   changed for the lease TTL), so clock skew between nodes does not matter; the store's
//!   timestamps are only compared with each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use tokio::sync::mpsc;

use super::protocol::error_chain;
use super::source::{Body, BoxFuture, ByteSource, Opened};
use crate::error::{EmbeddingError, EmbeddingResult};

/// How a fleet coordinates: plain data, used by the pure decisions below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPolicy {
    /// A leader whose heartbeat has not changed for this long (on the follower's clock) is
    /// taken over.
    pub lease_ttl: Duration,
    /// How often a leader rewrites its heartbeat and checks that it still leads.
    pub renew_interval: Duration,
    /// On a store without conditional create: how long a claimant waits after writing its
    /// claim before listing the claims to see whether its claim was the first.
    pub claim_settle: Duration,
    /// How often a follower looks for the next part.
    pub poll_interval: Duration,
    /// A follower whose leader is alive but has uploaded no new part for this long fetches
    /// from the Hub itself.
    pub progress_timeout: Duration,
    /// Size of the in-flight part objects.
    pub part_bytes: u64,
}

impl FleetPolicy {
    /// Ten-second leases renewed every second, 200 ms for concurrent claims to land, half-second polls, 8 MiB parts, a minute
    /// without a new part before a follower gives up on its leader.
    pub fn standard() -> Self {
        FleetPolicy {
            lease_ttl: Duration::from_secs(10),
            renew_interval: Duration::from_secs(1),
            claim_settle: Duration::from_millis(200),
            poll_interval: Duration::from_millis(500),
            progress_timeout: Duration::from_secs(60),
            part_bytes: 8 * 1024 * 1024,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pure decisions
// ---------------------------------------------------------------------------------------

/// A leader's heartbeat, as a follower reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The holder's lease id.
    pub lease: String,
    /// Heartbeat counter, rewritten every renew interval (0 before the first).
    pub beat: u64,
}

/// One claim object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimEntry {
    /// The epoch claimed.
    pub epoch: u32,
    /// The claimant, from the key (`claim-<epoch>-<lease>`); `None` for the single key of a
    /// store with conditional create (`claim-<epoch>`, the lease is its content).
    pub lease: Option<String>,
    /// When the store wrote it (its own clock, milliseconds).
    pub written_ms: i64,
}

/// The name of a claim object: one per epoch where conditional create is honoured, one per
/// claimant otherwise.
pub(crate) fn claim_name(epoch: u32, lease: Option<&str>) -> String {
    match lease {
        Some(lease) => format!("claim-{epoch:06}-{lease}"),
        None => format!("claim-{epoch:06}"),
    }
}

/// Epoch and claimant of a claim object's name.
pub(crate) fn parse_claim_name(name: &str) -> Option<(u32, Option<String>)> {
    let rest = name.strip_prefix("claim-")?;
    let (epoch, lease) = match rest.split_once('-') {
        Some((epoch, lease)) if !lease.is_empty() => (epoch, Some(lease.to_owned())),
        Some(_) => return None,
        None => (rest, None),
    };
    Some((epoch.parse().ok()?, lease))
}

/// The name of a heartbeat object.
pub(crate) fn beat_name(epoch: u32, lease: &str) -> String {
    format!("beat-{epoch:06}-{lease}")
}

/// The heartbeat's text, and back.
pub(crate) fn beat_text(beat: u64) -> String {
    format!("beat={beat}\n")
}

/// The counter of a heartbeat's text.
pub(crate) fn parse_beat(text: &str) -> Option<u64> {
    text.trim().strip_prefix("beat=")?.parse().ok()
}

/// The lease text of a single-key claim, and back.
pub(crate) fn lease_text(lease: &str) -> String {
    format!("lease={lease}\n")
}

/// The lease of a single-key claim's text.
pub(crate) fn parse_lease(text: &str) -> Option<String> {
    let lease = text.trim().strip_prefix("lease=")?;
    (!lease.is_empty()).then(|| lease.to_owned())
}

/// The highest epoch listed.
pub(crate) fn latest_epoch(claims: &[ClaimEntry]) -> Option<u32> {
    claims.iter().map(|c| c.epoch).max()
}

/// The winner of `epoch` among per-claimant claims: the one the store wrote first (ties:
/// the smaller lease id). Every node whose listing holds the first claim agrees.
pub(crate) fn earliest_claim(claims: &[ClaimEntry], epoch: u32) -> Option<&str> {
    claims
        .iter()
        .filter(|c| c.epoch == epoch)
        .filter_map(|c| c.lease.as_deref().map(|l| (c.written_ms, l)))
        .min()
        .map(|(_, lease)| lease)
}

/// The name of part `k`.
pub(crate) fn part_name(k: u64) -> String {
    format!("part-{k:06}")
}

/// The part holding byte `pos`, and the offset of `pos` in it.
pub(crate) fn part_of(pos: u64, part: u64) -> (u64, u64) {
    (pos / part, pos % part)
}

/// Bytes `start..end` of part `k` of a blob of `size` bytes.
pub(crate) fn part_span(k: u64, part: u64, size: u64) -> (u64, u64) {
    let start = k.saturating_mul(part).min(size);
    (start, start.saturating_add(part).min(size))
}

/// What a node that found no final object does first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// Nobody claimed this blob (or the latest claim has no holder): claim this epoch.
    Claim(u32),
    /// Someone holds the latest epoch: follow it.
    Follow(u32),
}

/// The first step, given the latest epoch listed and its holder (`None`: none readable).
pub(crate) fn start(latest: Option<(u32, Option<String>)>) -> Start {
    match latest {
        None => Start::Claim(0),
        Some((epoch, Some(_))) => Start::Follow(epoch),
        Some((epoch, None)) => Start::Claim(epoch.saturating_add(1)),
    }
}

/// Whether a claimant leads after writing its claim: with conditional create the write itself
/// decided (`created`); without, the earliest claim of the epoch must be its own.
pub(crate) fn won_claim(own: &str, created: bool, honoured: bool, winner: Option<&str>) -> bool {
    if honoured {
        created
    } else {
        winner == Some(own)
    }
}

/// A leader's check at each renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Still the leader: rewrite the heartbeat.
    Keep,
    /// Another node leads now (a later epoch, or an earlier claim of this one): stop.
    Yield,
}

/// Whether `own` still leads, given the epoch's winner as listed now and whether a later
/// epoch exists.
pub(crate) fn renewal(own: &str, winner: Option<&str>, later_epoch: bool) -> Renewal {
    if later_epoch || winner.is_some_and(|w| w != own) {
        Renewal::Yield
    } else {
        Renewal::Keep
    }
}

/// What a follower saw of its leader's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observed {
    /// The claim, as read.
    Claim(Claim),
    /// The claim is gone and nothing replaced it (the leader gave up or cleaned up).
    Gone,
    /// A later epoch exists.
    Later(u32),
}

/// A follower's memory of its leader, on its own clock.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// The epoch followed.
    pub epoch: u32,
    /// The last heartbeat seen.
    pub beat: Option<(String, u64)>,
    /// When the heartbeat last changed (or following began).
    pub beat_changed: Instant,
    /// When a part last arrived (or following began).
    pub part_arrived: Instant,
}

impl Watch {
    /// Following `epoch` from `now`.
    pub(crate) fn new(epoch: u32, now: Instant) -> Self {
        Watch {
            epoch,
            beat: None,
            beat_changed: now,
            part_arrived: now,
        }
    }
}

/// What a follower does next when the next part is not there yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowStep {
    /// The leader is alive: poll again.
    Wait,
    /// The leader stopped renewing (or gave up): claim the next epoch, resuming from the
    /// parts already read.
    TakeOver(u32),
    /// Another node took over: follow that epoch.
    Follow(u32),
    /// The leader renews but uploads nothing: fetch from the Hub without coordination.
    FetchAlone,
}

/// The follower's decision (pure: no clock, no network).
pub(crate) fn follow_step(
    watch: &mut Watch,
    observed: &Observed,
    now: Instant,
    policy: &FleetPolicy,
) -> FollowStep {
    match observed {
        Observed::Gone => return FollowStep::TakeOver(watch.epoch.saturating_add(1)),
        Observed::Later(epoch) => {
            *watch = Watch {
                part_arrived: watch.part_arrived,
                ..Watch::new(*epoch, now)
            };
            return FollowStep::Follow(*epoch);
        }
        Observed::Claim(claim) => {
            let seen = Some((claim.lease.clone(), claim.beat));
            if watch.beat != seen {
                watch.beat = seen;
                watch.beat_changed = now;
            }
        }
    }
    if now.saturating_duration_since(watch.beat_changed) >= policy.lease_ttl {
        FollowStep::TakeOver(watch.epoch.saturating_add(1))
    } else if now.saturating_duration_since(watch.part_arrived) >= policy.progress_timeout {
        FollowStep::FetchAlone
    } else {
        FollowStep::Wait
    }
}

/// Byte intervals received of one part, merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Coverage(Vec<(u64, u64)>);

impl Coverage {
    /// Adds `start..end`.
    pub(crate) fn add(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        self.0.push((start, end));
        self.0.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.0.len());
        for &(a, b) in &self.0 {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.0 = merged;
    }

    /// Whether `0..len` is covered.
    pub(crate) fn covers(&self, len: u64) -> bool {
        matches!(self.0.first(), Some(&(0, end)) if end >= len)
    }
}

// ---------------------------------------------------------------------------------------
// The store side
// ---------------------------------------------------------------------------------------

/// Whether the store honours `If-None-Match: *` on a put: creates a probe object twice with
/// `PutMode::Create`; honoured when the second is refused. Any failure counts as not
/// honoured (the protocol is then the read-back one). The probe is removed.
pub(crate) async fn probe_conditional_create(
    store: &Arc<dyn ObjectStore>,
    dir: &ObjectPath,
) -> bool {
    let key = dir
        .clone()
        .join(format!("probe-{:016x}", rand::random::<u64>()));
    let create = || {
        store.put_opts(
            &key,
            PutPayload::from_static(b"probe"),
            PutOptions::from(PutMode::Create),
        )
    };
    let honoured = match create().await {
        Ok(_) => matches!(
            create().await,
            Err(object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. })
        ),
        Err(_) => false,
    };
    let _ = store.delete(&key).await;
    honoured
}

/// The fleet's objects of one blob.
#[derive(Clone)]
pub(crate) struct FleetStore {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/.inflight/<sha256>`.
    dir: ObjectPath,
    /// `<prefix>/<sha256>`.
    final_key: ObjectPath,
    /// `s3://bucket/<prefix>/.inflight/<sha256>`, for messages.
    name: String,
    /// The blob's size.
    pub size: u64,
    /// The policy.
    pub policy: FleetPolicy,
    /// Whether `PutMode::Create` is honoured.
    pub honoured: bool,
}

impl FleetStore {
    /// The objects under `dir` of a blob of `size` bytes whose final object is `final_key`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        dir: ObjectPath,
        final_key: ObjectPath,
        name: String,
        size: u64,
        policy: FleetPolicy,
        honoured: bool,
    ) -> Self {
        FleetStore {
            store,
            dir,
            final_key,
            name,
            size,
            policy,
            honoured,
        }
    }

    /// `s3://…/.inflight/<sha256>`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn failed(&self, what: &str, error: &object_store::Error) -> EmbeddingError {
        EmbeddingError::Mirror {
            url: self.name.clone(),
            message: format!("{what}: {}", error_chain(error)),
        }
    }

    fn claims_dir(&self) -> ObjectPath {
        self.dir.clone().join("claims")
    }

    fn claim_key(&self, epoch: u32, lease: Option<&str>) -> ObjectPath {
        self.claims_dir().join(claim_name(epoch, lease))
    }

    fn beat_key(&self, epoch: u32, lease: &str) -> ObjectPath {
        self.dir.clone().join("beats").join(beat_name(epoch, lease))
    }

    fn part_key(&self, k: u64) -> ObjectPath {
        self.dir.clone().join("parts").join(part_name(k))
    }

    /// Every claim object (one listing; strongly consistent on the stores supported).
    async fn claims(&self) -> EmbeddingResult<Vec<ClaimEntry>> {
        let prefix = self.claims_dir();
        let mut listed = self.store.list(Some(&prefix));
        let mut claims = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| self.failed("cannot list claims", &e))?;
            if let Some((epoch, lease)) = meta.location.filename().and_then(parse_claim_name) {
                claims.push(ClaimEntry {
                    epoch,
                    lease,
                    written_ms: meta.last_modified.timestamp_millis(),
                });
            }
        }
        Ok(claims)
    }

    /// The holder of `epoch` given a listing: the single key's content, or the earliest.
    async fn holder(&self, claims: &[ClaimEntry], epoch: u32) -> EmbeddingResult<Option<String>> {
        if self.honoured {
            if !claims.iter().any(|c| c.epoch == epoch && c.lease.is_none()) {
                return Ok(None);
            }
            return Ok(self
                .read_text(&self.claim_key(epoch, None))
                .await?
                .as_deref()
                .and_then(parse_lease));
        }
        Ok(earliest_claim(claims, epoch).map(str::to_owned))
    }

    async fn read_text(&self, key: &ObjectPath) -> EmbeddingResult<Option<String>> {
        match self.store.get(key).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| self.failed("cannot read a lease", &e))?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("cannot read a lease", &e)),
        }
    }

    /// The latest epoch claimed, with its holder (`None` inside: none readable).
    pub(crate) async fn latest(&self) -> EmbeddingResult<Option<(u32, Option<String>)>> {
        let claims = self.claims().await?;
        match latest_epoch(&claims) {
            None => Ok(None),
            Some(epoch) => Ok(Some((epoch, self.holder(&claims, epoch).await?))),
        }
    }

    /// Claims `epoch` for `lease`; whether this node leads.
    pub(crate) async fn claim(&self, epoch: u32, lease: &str) -> EmbeddingResult<bool> {
        let (key, mode) = if self.honoured {
            (self.claim_key(epoch, None), PutMode::Create)
        } else {
            (self.claim_key(epoch, Some(lease)), PutMode::Overwrite)
        };
        let created = match self
            .store
            .put_opts(
                &key,
                PutPayload::from(lease_text(lease)),
                PutOptions::from(mode),
            )
            .await
        {
            Ok(_) => true,
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => false,
            Err(e) => return Err(self.failed("cannot write a claim", &e)),
        };
        if !self.honoured {
            // Claims written at the same moment all land before the decision.
            tokio::time::sleep(self.policy.claim_settle).await;
        }
        let claims = self.claims().await?;
        let later = latest_epoch(&claims).is_some_and(|e| e > epoch);
        let winner = if self.honoured {
            None
        } else {
            earliest_claim(&claims, epoch).map(str::to_owned)
        };
        let won = won_claim(lease, created, self.honoured, winner.as_deref()) && !later;
        // A losing claim stays listed: it is not the earliest, so it never wins, and it goes
        // with the rest when the leader cleans up.
        if won {
            self.put_beat(epoch, lease, 0).await?;
        }
        Ok(won)
    }

    async fn put_beat(&self, epoch: u32, lease: &str, beat: u64) -> EmbeddingResult<()> {
        self.store
            .put(
                &self.beat_key(epoch, lease),
                PutPayload::from(beat_text(beat)),
            )
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot renew a lease", &e))
    }

    /// One renewal of `lease` at `epoch`: checks, then rewrites the heartbeat.
    pub(crate) async fn renew(
        &self,
        epoch: u32,
        lease: &str,
        beat: u64,
    ) -> EmbeddingResult<Renewal> {
        let claims = self.claims().await?;
        let later = latest_epoch(&claims).is_some_and(|e| e > epoch);
        let winner = self.holder(&claims, epoch).await?;
        let decision = renewal(lease, winner.as_deref(), later);
        if decision == Renewal::Keep {
            self.put_beat(epoch, lease, beat).await?;
        }
        Ok(decision)
    }

    /// What a follower of `epoch` sees of it.
    pub(crate) async fn observe(&self, epoch: u32) -> EmbeddingResult<Observed> {
        let claims = self.claims().await?;
        if let Some(later) = latest_epoch(&claims).filter(|e| *e > epoch) {
            return Ok(Observed::Later(later));
        }
        let Some(lease) = self.holder(&claims, epoch).await? else {
            return Ok(Observed::Gone);
        };
        let beat = self
            .read_text(&self.beat_key(epoch, &lease))
            .await?
            .as_deref()
            .and_then(parse_beat)
            .unwrap_or(0);
        Ok(Observed::Claim(Claim { lease, beat }))
    }

    /// Removes `lease`'s claim of `epoch` (a leader giving up), so followers take over at once.
    pub(crate) async fn release(&self, epoch: u32, lease: &str) {
        let key = if self.honoured {
            self.claim_key(epoch, None)
        } else {
            self.claim_key(epoch, Some(lease))
        };
        let _ = self.store.delete(&key).await;
        let _ = self.store.delete(&self.beat_key(epoch, lease)).await;
    }

    /// Uploads part `k`.
    pub(crate) async fn put_part(&self, k: u64, bytes: Bytes) -> EmbeddingResult<()> {
        self.store
            .put(&self.part_key(k), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot upload a part", &e))
    }

    /// Part `k` when it is there with its full length.
    pub(crate) async fn get_part(&self, k: u64) -> EmbeddingResult<Option<Bytes>> {
        let (start, end) = part_span(k, self.policy.part_bytes, self.size);
        match self.store.get(&self.part_key(k)).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| self.failed("cannot read a part", &e))?;
                Ok((bytes.len() as u64 == end - start).then_some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("cannot read a part", &e)),
        }
    }

    /// Whether the final object exists with the blob's size.
    pub(crate) async fn final_ready(&self) -> EmbeddingResult<bool> {
        match self.store.head(&self.final_key).await {
            Ok(meta) => Ok(meta.size == self.size),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed("cannot check the final object", &e)),
        }
    }

    /// Deletes every in-flight object of this blob (after the final object is up).
    pub(crate) async fn clean_up(&self) {
        let listed: Vec<ObjectPath> = self
            .store
            .list(Some(&self.dir))
            .filter_map(|m| async move { m.ok().map(|m| m.location) })
            .collect()
            .await;
        for key in listed {
            let _ = self.store.delete(&key).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Follower: the in-flight parts as a byte source
// ---------------------------------------------------------------------------------------

/// Why a follower's stream ended before the blob did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowEnd {
    /// The leader's lease went stale (or it gave up): claim this epoch.
    TakeOver(u32),
    /// The leader is alive but makes no progress, or the store failed: go to the Hub.
    FetchAlone,
}

/// The in-flight parts of one blob, read in order as they appear, then the final object.
pub(crate) struct InflightSource {
    fleet: FleetStore,
    epoch: u32,
    end: Arc<Mutex<Option<FollowEnd>>>,
    reading: Arc<AtomicBool>,
}

impl InflightSource {
    /// Follows `epoch` of `fleet`.
    pub(crate) fn new(fleet: FleetStore, epoch: u32) -> Self {
        InflightSource {
            fleet,
            epoch,
            end: Arc::new(Mutex::new(None)),
            reading: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Why the stream stopped early, if it did.
    pub(crate) fn ended(&self) -> Option<FollowEnd> {
        self.end.lock().ok().and_then(|e| *e)
    }

    /// Whether a part (or the final object) has been read.
    pub(crate) fn reading_flag(&self) -> Arc<AtomicBool> {
        self.reading.clone()
    }
}

impl ByteSource for InflightSource {
    fn open(&self, start: u64, _end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            let size = self.fleet.size;
            if start >= size {
                return Ok(Opened::Unsatisfiable);
            }
            let (tx, rx) = mpsc::channel(4);
            let task = FollowTask {
                fleet: self.fleet.clone(),
                watch: Watch::new(self.epoch, Instant::now()),
                pos: start,
                end: self.end.clone(),
                reading: self.reading.clone(),
            };
            tokio::spawn(task.run(tx));
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok(Opened::Range {
                body: Body::Stream(Box::pin(stream)),
                start,
                end: size - 1,
                total: Some(size),
            })
        })
    }

    fn name(&self) -> String {
        format!("{}/parts", self.fleet.name)
    }

    fn idle_timeout(&self) -> Duration {
        // The follower task decides itself how long to wait (lease TTL, progress timeout).
        let p = &self.fleet.policy;
        p.lease_ttl + p.progress_timeout + p.renew_interval * 4
    }

    fn is_range_refusal(&self, _error: &EmbeddingError) -> bool {
        false
    }
}

struct FollowTask {
    fleet: FleetStore,
    watch: Watch,
    pos: u64,
    end: Arc<Mutex<Option<FollowEnd>>>,
    reading: Arc<AtomicBool>,
}

impl FollowTask {
    async fn run(mut self, tx: mpsc::Sender<EmbeddingResult<Bytes>>) {
        let outcome = self.follow(&tx).await;
        if let Err((end, error)) = outcome {
            if let Ok(mut slot) = self.end.lock() {
                *slot = Some(end);
            }
            let _ = tx.send(Err(error)).await;
        }
    }

    async fn follow(
        &mut self,
        tx: &mpsc::Sender<EmbeddingResult<Bytes>>,
    ) -> Result<(), (FollowEnd, EmbeddingError)> {
        let policy = self.fleet.policy.clone();
        let size = self.fleet.size;
        let store_failed = |e: EmbeddingError| (FollowEnd::FetchAlone, e);
        let mut last_look = None::<Instant>;
        while self.pos < size {
            if tx.is_closed() {
                // The downloader dropped this body (a retry opened another).
                return Ok(());
            }
            let (k, offset) = part_of(self.pos, policy.part_bytes);
            if let Some(bytes) = self.fleet.get_part(k).await.map_err(store_failed)? {
                self.reading.store(true, Ordering::Relaxed);
                let chunk = bytes.slice(offset as usize..);
                self.pos += chunk.len() as u64;
                self.watch.part_arrived = Instant::now();
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            // Between parts: the final object, and the leader's health, at most once per
            // renew interval (hundreds of followers poll the same store).
            let due = last_look.is_none_or(|at| at.elapsed() >= policy.renew_interval / 2);
            if due {
                last_look = Some(Instant::now());
                if self.fleet.final_ready().await.map_err(store_failed)? {
                    return self.stream_final(tx).await;
                }
                let observed = self
                    .fleet
                    .observe(self.watch.epoch)
                    .await
                    .map_err(store_failed)?;
                match follow_step(&mut self.watch, &observed, Instant::now(), &policy) {
                    FollowStep::Wait | FollowStep::Follow(_) => {}
                    FollowStep::TakeOver(epoch) => {
                        return Err((
                            FollowEnd::TakeOver(epoch),
                            EmbeddingError::Mirror {
                                url: self.fleet.name.clone(),
                                message: format!(
                                    "the node fetching this file stopped renewing its lease (epoch {}); taking over",
                                    self.watch.epoch
                                ),
                            },
                        ))
                    }
                    FollowStep::FetchAlone => {
                        return Err((
                            FollowEnd::FetchAlone,
                            EmbeddingError::Mirror {
                                url: self.fleet.name.clone(),
                                message: format!(
                                    "the node fetching this file uploaded nothing for {:?}; fetching it from the Hub",
                                    policy.progress_timeout
                                ),
                            },
                        ))
                    }
                }
            }
            tokio::time::sleep(policy.poll_interval).await;
        }
        Ok(())
    }

    async fn stream_final(
        &mut self,
        tx: &mpsc::Sender<EmbeddingResult<Bytes>>,
    ) -> Result<(), (FollowEnd, EmbeddingError)> {
        let failed = |e: object_store::Error| {
            (
                FollowEnd::FetchAlone,
                self.fleet.failed("cannot read the final object", &e),
            )
        };
        let options = GetOptions {
            range: Some(GetRange::Offset(self.pos)),
            ..GetOptions::default()
        };
        let result = self
            .fleet
            .store
            .get_opts(&self.fleet.final_key, options)
            .await
            .map_err(failed)?;
        self.reading.store(true, Ordering::Relaxed);
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Leader: a byte source that uploads what passes through it as parts
// ---------------------------------------------------------------------------------------

/// Part windows being filled by the leader's download, in any order (ranged downloads).
struct Windows {
    part: u64,
    size: u64,
    filling: std::collections::BTreeMap<u64, (Vec<u8>, Coverage)>,
    done: std::collections::BTreeSet<u64>,
}

impl Windows {
    /// Takes in `chunk` at `pos`; returns the parts it completed.
    fn offer(&mut self, pos: u64, chunk: &[u8]) -> Vec<(u64, Bytes)> {
        let mut complete = Vec::new();
        let end = pos + chunk.len() as u64;
        let mut at = pos;
        while at < end {
            let (k, _) = part_of(at, self.part);
            let (start, stop) = part_span(k, self.part, self.size);
            let upto = stop.min(end);
            if stop <= start {
                break;
            }
            if !self.done.contains(&k) {
                let (buffer, coverage) = self
                    .filling
                    .entry(k)
                    .or_insert_with(|| (vec![0u8; (stop - start) as usize], Coverage::default()));
                let from = (at - pos) as usize;
                let to = (upto - pos) as usize;
                buffer[(at - start) as usize..(upto - start) as usize]
                    .copy_from_slice(&chunk[from..to]);
                coverage.add(at - start, upto - start);
                if coverage.covers(stop - start) {
                    if let Some((buffer, _)) = self.filling.remove(&k) {
                        self.done.insert(k);
                        complete.push((k, Bytes::from(buffer)));
                    }
                }
            }
            at = upto;
        }
        complete
    }
}

/// Where the leader's completed parts go: an uploader task that stops at the first store
/// failure (the download itself goes on from the Hub, unhindered).
#[derive(Clone)]
pub(crate) struct PartSink {
    windows: Arc<Mutex<Windows>>,
    tx: mpsc::Sender<(u64, Bytes)>,
}

impl PartSink {
    /// Starts the uploader of `fleet`'s parts (its task returns how many went up).
    pub(crate) fn start(fleet: FleetStore) -> (PartSink, tokio::task::JoinHandle<u64>) {
        let (fleet_part, fleet_size) = (fleet.policy.part_bytes, fleet.size);
        let (tx, mut rx) = mpsc::channel::<(u64, Bytes)>(4);
        let uploader = tokio::spawn(async move {
            let mut uploaded = 0u64;
            while let Some((k, bytes)) = rx.recv().await {
                let put = tokio::time::timeout(fleet.policy.lease_ttl, fleet.put_part(k, bytes));
                match put.await {
                    Ok(Ok(())) => uploaded += 1,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "the fleet's part upload failed; no more parts from this node");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(
                            "the fleet's part upload timed out; no more parts from this node"
                        );
                        break;
                    }
                }
            }
            uploaded
        });
        let windows = Windows {
            part: fleet_part.max(1),
            size: fleet_size,
            filling: Default::default(),
            done: Default::default(),
        };
        (
            PartSink {
                windows: Arc::new(Mutex::new(windows)),
                tx,
            },
            uploader,
        )
    }

    async fn offer(&self, pos: u64, chunk: &[u8]) {
        let complete = match self.windows.lock() {
            Ok(mut w) => w.offer(pos, chunk),
            Err(_) => Vec::new(),
        };
        for part in complete {
            // A stopped uploader (the store failed) drops the part: the download goes on.
            let _ = self.tx.send(part).await;
        }
    }
}

/// A byte source that passes another's bytes through, offering them as parts; fails every
/// read once `lost` is set (another node leads now).
pub(crate) struct TeeSource<'a> {
    inner: &'a dyn ByteSource,
    sink: PartSink,
    lost: Arc<AtomicBool>,
}

impl<'a> TeeSource<'a> {
    /// Tees `inner` into `sink` until `lost`.
    pub(crate) fn new(inner: &'a dyn ByteSource, sink: PartSink, lost: Arc<AtomicBool>) -> Self {
        TeeSource { inner, sink, lost }
    }
}

impl ByteSource for TeeSource<'_> {
    fn open(&self, start: u64, end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            Ok(match self.inner.open(start, end).await? {
                Opened::Unsatisfiable => Opened::Unsatisfiable,
                Opened::Whole { body, length } => Opened::Whole {
                    body: self.tee(body, 0),
                    length,
                },
                Opened::Range {
                    body,
                    start,
                    end,
                    total,
                } => Opened::Range {
                    body: self.tee(body, start),
                    start,
                    end,
                    total,
                },
            })
        })
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn idle_timeout(&self) -> Duration {
        self.inner.idle_timeout()
    }

    fn is_range_refusal(&self, error: &EmbeddingError) -> bool {
        self.inner.is_range_refusal(error)
    }
}

impl TeeSource<'_> {
    fn tee(&self, body: Body, start: u64) -> Body {
        let sink = self.sink.clone();
        let lost = self.lost.clone();
        let idle = self.inner.idle_timeout();
        let name = self.inner.name();
        let state = (body, start, false);
        let stream = futures_util::stream::unfold(state, move |(mut body, pos, stopped)| {
            let sink = sink.clone();
            let lost = lost.clone();
            let name = name.clone();
            async move {
                if stopped {
                    return None;
                }
                if lost.load(Ordering::Relaxed) {
                    let error = EmbeddingError::Mirror {
                        url: name.clone(),
                        message: "another node of the fleet leads this fetch now; following it"
                            .to_owned(),
                    };
                    return Some((Err(error), (body, pos, true)));
                }
                match body.next_chunk(idle, &name).await {
                    Ok(Some(chunk)) => {
                        sink.offer(pos, &chunk).await;
                        let next = pos + chunk.len() as u64;
                        Some((Ok(chunk), (body, next, false)))
                    }
                    Ok(None) => None,
                    Err(error) => Some((Err(error), (body, pos, true))),
                }
            }
        });
        Body::Stream(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FleetPolicy {
        FleetPolicy {
            lease_ttl: Duration::from_secs(10),
            renew_interval: Duration::from_secs(1),
            claim_settle: Duration::from_millis(200),
            poll_interval: Duration::from_millis(100),
            progress_timeout: Duration::from_secs(60),
            part_bytes: 100,
        }
    }

    fn claim(lease: &str, beat: u64) -> Claim {
        Claim {
            lease: lease.to_owned(),
            beat,
        }
    }

    fn entry(epoch: u32, lease: &str, written_ms: i64) -> ClaimEntry {
        ClaimEntry {
            epoch,
            lease: Some(lease.to_owned()),
            written_ms,
        }
    }

    #[test]
    fn names_and_texts_round_trip_and_junk_is_nothing() {
        assert_eq!(parse_claim_name(&claim_name(42, None)), Some((42, None)));
        assert_eq!(
            parse_claim_name(&claim_name(3, Some("00ab"))),
            Some((3, Some("00ab".to_owned())))
        );
        assert_eq!(parse_claim_name("part-000001"), None);
        assert_eq!(parse_claim_name("claim-x"), None);
        assert_eq!(parse_claim_name("claim-000001-"), None);
        assert_eq!(parse_beat(&beat_text(17)), Some(17));
        assert_eq!(parse_beat("probe"), None);
        assert_eq!(parse_lease(&lease_text("ab12")), Some("ab12".to_owned()));
        assert_eq!(parse_lease("lease=\n"), None);
    }

    #[test]
    fn the_first_node_claims_epoch_zero_and_later_ones_follow_the_latest() {
        assert_eq!(start(None), Start::Claim(0));
        assert_eq!(start(Some((3, Some("a".to_owned())))), Start::Follow(3));
        // A claim listed without a holder (its content unreadable): the next epoch.
        assert_eq!(start(Some((3, None))), Start::Claim(4));
    }

    #[test]
    fn without_conditional_create_the_claim_the_store_wrote_first_wins() {
        let claims = [
            entry(0, "cc", 1_000),
            entry(0, "aa", 1_005),
            entry(0, "bb", 1_000),
            entry(1, "zz", 900),
        ];
        // Earliest write; a tie goes to the smaller lease; other epochs do not count.
        assert_eq!(earliest_claim(&claims, 0), Some("bb"));
        assert_eq!(earliest_claim(&claims, 1), Some("zz"));
        assert_eq!(earliest_claim(&claims, 2), None);
        assert_eq!(latest_epoch(&claims), Some(1));
        // A late claimant that sees the earlier claim follows it, whatever its own id.
        let late = [entry(0, "bb", 1_000), entry(0, "00", 1_300)];
        assert_eq!(earliest_claim(&late, 0), Some("bb"));
    }

    #[test]
    fn who_leads_after_a_claim() {
        // Conditional create honoured: the write decided.
        assert!(won_claim("me", true, true, None));
        assert!(!won_claim("me", false, true, None));
        // Not honoured (Garage): the earliest claim names the winner.
        assert!(won_claim("me", true, false, Some("me")));
        assert!(!won_claim("me", true, false, Some("other")));
        assert!(!won_claim("me", true, false, None));
    }

    #[test]
    fn a_leader_yields_to_a_later_epoch_or_an_earlier_claim() {
        assert_eq!(renewal("me", Some("me"), false), Renewal::Keep);
        assert_eq!(renewal("me", None, false), Renewal::Keep);
        assert_eq!(renewal("me", Some("b"), false), Renewal::Yield);
        assert_eq!(renewal("me", Some("me"), true), Renewal::Yield);
    }

    #[test]
    fn a_lease_is_stale_after_its_ttl_without_a_new_heartbeat_on_the_followers_clock() {
        let p = policy();
        let t0 = Instant::now();
        let mut watch = Watch::new(2, t0);
        let beat = |n| Observed::Claim(claim("a", n));
        assert_eq!(follow_step(&mut watch, &beat(1), t0, &p), FollowStep::Wait);
        // Heartbeats keep changing: alive, however long it takes.
        for s in 1..9 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(
                follow_step(&mut watch, &beat(1 + s), now, &p),
                FollowStep::Wait
            );
            watch.part_arrived = now;
        }
        // The same heartbeat for the TTL: stale, whoever's clock it was written with.
        let last = t0 + Duration::from_secs(8);
        assert_eq!(
            follow_step(&mut watch, &beat(9), last + Duration::from_secs(9), &p),
            FollowStep::Wait
        );
        assert_eq!(
            follow_step(&mut watch, &beat(9), last + Duration::from_secs(10), &p),
            FollowStep::TakeOver(3)
        );
    }

    #[test]
    fn a_follower_takes_over_a_vanished_claim_follows_a_later_epoch_and_gives_up_on_no_progress() {
        let p = policy();
        let t0 = Instant::now();
        let mut watch = Watch::new(0, t0);
        assert_eq!(
            follow_step(&mut watch, &Observed::Gone, t0, &p),
            FollowStep::TakeOver(1)
        );
        assert_eq!(
            follow_step(&mut watch, &Observed::Later(4), t0, &p),
            FollowStep::Follow(4)
        );
        assert_eq!(watch.epoch, 4);
        // Alive (heartbeats change) but no part for the progress timeout.
        let mut beat = 0;
        let mut step = FollowStep::Wait;
        for s in 0..=60 {
            beat += 1;
            step = follow_step(
                &mut watch,
                &Observed::Claim(claim("x", beat)),
                t0 + Duration::from_secs(s),
                &p,
            );
            if step != FollowStep::Wait {
                break;
            }
        }
        assert_eq!(step, FollowStep::FetchAlone);
    }

    #[test]
    fn parts_cover_the_blob_exactly() {
        assert_eq!(part_of(250, 100), (2, 50));
        assert_eq!(part_span(0, 100, 250), (0, 100));
        assert_eq!(part_span(2, 100, 250), (200, 250));
        assert_eq!(part_span(3, 100, 250), (250, 250));
    }

    #[test]
    fn windows_complete_parts_from_any_order_and_overlap() {
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let mut w = Windows {
            part: 100,
            size: 250,
            filling: Default::default(),
            done: Default::default(),
        };
        // A ranged chunk from 150 to 250 completes the last part only.
        let got = w.offer(150, &data[150..]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 2);
        assert_eq!(&got[0].1[..], &data[200..250]);
        // A stream from 0 with a retry that resends 40..60.
        assert!(w.offer(0, &data[0..60]).is_empty());
        let got = w.offer(40, &data[40..150]);
        let ks: Vec<u64> = got.iter().map(|p| p.0).collect();
        assert_eq!(ks, [0, 1]);
        assert_eq!(&got[0].1[..], &data[0..100]);
        assert_eq!(&got[1].1[..], &data[100..200]);
        // Done parts are not offered again.
        assert!(w.offer(0, &data).is_empty());
        assert!(w.filling.is_empty());
    }

    #[test]
    fn coverage_merges_intervals() {
        let mut c = Coverage::default();
        c.add(50, 100);
        assert!(!c.covers(100));
        c.add(0, 20);
        c.add(20, 50);
        assert!(c.covers(100));
    }
}
