//! Retry policy as plain data, and the classifier that says what is worth retrying.
//!
//! No I/O and no sleeping here: the download loop asks [`RetryPolicy::delay`] how long to wait
//! and sleeps itself, so the schedule is testable without a network or a clock.
//!
//! Transient (retried): connection failures, resets, idle timeouts, bodies that end early,
//! 408, 429 and 5xx. Fatal (not retried): every other 4xx, which carries the Hub's reason
//! (missing repo, gated repo, bad token), and local errors such as a full disk.

use std::time::Duration;

/// How retries are spaced.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of the computed delay.
    pub max_delay: Duration,
    /// Upper bound of a server's `Retry-After` / `RateLimit` request, so a hostile or confused
    /// server cannot park the download for hours.
    pub max_server_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_server_delay: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy without waiting, for tests.
    pub fn immediate() -> Self {
        RetryPolicy {
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_server_delay: Duration::ZERO,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    ///
    /// Capped exponential backoff with jitter: `base · 2^(retry-1)`, capped at `max_delay`,
    /// then scaled into `[50%, 100%]` by `jitter` (a number in `[0, 1)`), so that clients that
    /// failed together do not retry together. A server hint (`Retry-After`) is honoured up to
    /// `max_server_delay`, and never shortened by jitter.
    pub fn delay(&self, retry: u32, server_hint: Option<Duration>, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let computed = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let jitter = jitter.clamp(0.0, 1.0);
        let jittered = computed.mul_f64(0.5 + 0.5 * jitter);
        match server_hint {
            Some(hint) => hint.min(self.max_server_delay).max(jittered),
            None => jittered,
        }
    }
}

/// What kind of failure an HTTP status is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// Worth retrying: 408, 429, 5xx.
    Transient,
    /// Retrying cannot help: other 4xx (and anything else unexpected).
    Fatal,
}

/// Classifies an error status.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        408 | 429 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Fatal,
    }
}

/// Parses `Retry-After` in its seconds form (the HTTP-date form is ignored, as in
/// `huggingface_hub`).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Parses the IETF `RateLimit` header as the Hub sends it (`"api";r=0;t=55`): when no requests
/// remain (`r=0`), the wait is `t` seconds plus one.
pub fn parse_ratelimit(value: &str) -> Option<Duration> {
    let mut remaining = None;
    let mut reset = None;
    for part in value.split(';') {
        let part = part.trim();
        if let Some(r) = part.strip_prefix("r=") {
            remaining = r.trim().parse::<u64>().ok();
        } else if let Some(t) = part.strip_prefix("t=") {
            reset = t.trim().parse::<u64>().ok();
        }
    }
    match (remaining, reset) {
        (Some(0), Some(t)) => Some(Duration::from_secs(t + 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_retried_status_is_listed() {
        let transient: Vec<u16> = (100..600)
            .filter(|s| classify_status(*s) == StatusClass::Transient)
            .filter(|s| *s < 500)
            .collect();
        assert_eq!(transient, [408, 429]);
        for status in [500, 502, 503, 504, 599] {
            assert_eq!(classify_status(status), StatusClass::Transient);
        }
        for status in [400, 401, 403, 404, 410, 416] {
            assert_eq!(classify_status(status), StatusClass::Fatal);
        }
    }

    #[test]
    fn delays_double_are_capped_and_jittered_within_half() {
        let policy = RetryPolicy {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_server_delay: Duration::from_secs(60),
        };
        let full: Vec<u64> = (1..=6)
            .map(|r| policy.delay(r, None, 1.0).as_secs())
            .collect();
        assert_eq!(full, [1, 2, 4, 8, 8, 8]);
        let low = policy.delay(3, None, 0.0);
        assert_eq!(low, Duration::from_secs(2));
        for jitter in [0.0, 0.3, 0.99] {
            let d = policy.delay(4, None, jitter);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    #[test]
    fn total_delay_is_bounded() {
        let policy = RetryPolicy::default();
        let total: Duration = (1..=100).map(|r| policy.delay(r, None, 1.0)).sum();
        assert!(total <= policy.max_delay * 100);
        assert_eq!(policy.delay(u32::MAX, None, 1.0), policy.max_delay);
    }

    #[test]
    fn server_hints_are_honoured_but_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(100_000)), 0.0),
            policy.max_server_delay
        );
        assert_eq!(
            RetryPolicy::immediate().delay(5, Some(Duration::from_secs(9)), 0.5),
            Duration::ZERO
        );
    }

    #[test]
    fn parses_retry_after_and_ratelimit() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            parse_ratelimit("\"api\";r=0;t=55"),
            Some(Duration::from_secs(56))
        );
        assert_eq!(parse_ratelimit("\"api\";r=3;t=55"), None);
        assert_eq!(parse_ratelimit("garbage"), None);
    }
}
