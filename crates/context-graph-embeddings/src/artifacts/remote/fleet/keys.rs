//! The fleet protocol's key names and texts under `.inflight/<sha256>/` (claims, beats,
//! parts) and the part arithmetic: pure, so every name round-trips in a unit test.

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
