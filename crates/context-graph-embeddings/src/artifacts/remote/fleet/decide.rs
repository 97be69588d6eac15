//! The fleet's pure decisions: who leads after a claim, whether a leader keeps its lease, what
//! a follower does next, which byte ranges are covered. No clock, no store: the callers pass
//! what they observed.

use std::time::Instant;

use super::keys::*;
use super::FleetPolicy;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::remote::fleet::FleetPolicy;
    use std::time::{Duration, Instant};

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
    fn coverage_merges_intervals() {
        let mut c = Coverage::default();
        c.add(50, 100);
        assert!(!c.covers(100));
        c.add(0, 20);
        c.add(20, 50);
        assert!(c.covers(100));
    }
}
