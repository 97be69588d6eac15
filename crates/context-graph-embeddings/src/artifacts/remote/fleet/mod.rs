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

mod decide;
mod follow;
mod keys;
mod lead;
mod store;

use std::time::Duration;

pub(crate) use decide::{start, Renewal, Start};
pub(crate) use follow::{FollowEnd, InflightSource};
pub(crate) use lead::{PartSink, TeeSource};
pub(crate) use store::{probe_conditional_create, FleetStore};

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
