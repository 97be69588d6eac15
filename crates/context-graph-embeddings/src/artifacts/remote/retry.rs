//! Retry policy as plain data, and the classifier that says what is worth retrying.
//!
//! No I/O and no sleeping here: every retry loop (the `HEAD` of a file, one stream, each range
//! worker) keeps one [`RetryState`], asks it after each failure whether and how long to wait,
//! and sleeps itself, so the schedule and the give-up rule are testable without a network or
//! a clock, and written once.
//!
//! Transient (retried): connection failures, resets, idle timeouts, bodies that end early,
//! 408, 429 and 5xx. Fatal (not retried): every other 4xx, which carries the Hub's reason
//! (missing repo, gated repo, bad token), and local errors such as a full disk.
//!
//! One exception to "connection failures are retried": a host that has not answered once in
//! this run and could not be connected to [`UNREACHABLE_TRIP`] times (name not resolved,
//! connection refused or timed out) is given up for the rest of the run by the
//! [`HostBreaker`], for every model at once, so a machine without network learns it in
//! seconds, with one message. A host that has answered before keeps the full retry
//! behaviour: an outage mid-run, a reset mid-body or a 503 is what retries are for.

use std::collections::HashMap;
use std::time::Duration;

use crate::artifacts::status::Backoff;
use crate::error::{EmbeddingError, FileLocation};

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

/// What to do after a failed attempt.
#[derive(Debug)]
pub(crate) enum RetryDecision {
    /// Wait, then try again.
    Retry(Backoff),
    /// Stop: the error is fatal, or the retries ran out (then `RetriesExhausted`).
    GiveUp(EmbeddingError),
}

/// The state of one retry loop: retries since the last progress (a loop that makes progress
/// starts counting again, so a long download over a flaky link is not given up), attempts in
/// all (for the final error), and the policy.
#[derive(Debug)]
pub(crate) struct RetryState {
    policy: RetryPolicy,
    max_retries: u32,
    location: FileLocation,
    retries: u32,
    attempts: u32,
}

impl RetryState {
    /// A loop for `location` allowing `max_retries` retries in a row without progress.
    pub(crate) fn new(policy: &RetryPolicy, max_retries: u32, location: &FileLocation) -> Self {
        RetryState {
            policy: policy.clone(),
            max_retries,
            location: location.clone(),
            retries: 0,
            attempts: 0,
        }
    }

    /// Counts an attempt; call before each try.
    pub(crate) fn attempt_started(&mut self) {
        self.attempts += 1;
    }

    /// An attempt succeeded: the next failure counts from one again.
    pub(crate) fn succeeded(&mut self) {
        self.retries = 0;
    }

    /// Decides after a failure: fatal errors give up at once; transient ones are retried,
    /// `max_retries` times in a row without progress, after the policy's delay (or the delay
    /// the server asked for). `jitter` in `[0, 1)` spreads clients apart.
    pub(crate) fn after_failure(
        &mut self,
        error: EmbeddingError,
        made_progress: bool,
        jitter: f64,
    ) -> RetryDecision {
        if !error.is_transient() {
            return RetryDecision::GiveUp(error);
        }
        if made_progress {
            self.retries = 0;
        }
        self.retries += 1;
        if self.retries > self.max_retries {
            return RetryDecision::GiveUp(EmbeddingError::RetriesExhausted {
                location: self.location.clone(),
                attempts: self.attempts.max(1),
                last: Box::new(error),
            });
        }
        let server_delay = match &error {
            EmbeddingError::TransientStatus { retry_after, .. } => *retry_after,
            _ => None,
        };
        RetryDecision::Retry(Backoff {
            attempt: self.retries,
            delay: self.policy.delay(self.retries, server_delay, jitter),
            reason: error.to_string(),
        })
    }
}

/// Connection failures to a host that never answered after which the whole run gives the
/// host up. Three, so that one lost DNS packet or a refused first connection is retried.
pub(crate) const UNREACHABLE_TRIP: u32 = 3;

/// Per host (`scheme://host:port`), whether it answered in this run and how many connection
/// attempts to it failed since: plain data, shared by every model of a manager through the
/// client, decided on by pure methods (no clock, no network).
#[derive(Debug, Default)]
pub(crate) struct HostBreaker {
    hosts: HashMap<String, HostRecord>,
}

#[derive(Debug, Default)]
struct HostRecord {
    answered: bool,
    failures: u32,
    last: String,
}

/// Whether a request to a host may go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it.
    Go,
    /// The host is given up for this run.
    Refused {
        /// Failed connection attempts.
        failures: u32,
        /// The last connection error.
        reason: String,
    },
}

impl HostBreaker {
    /// Whether a request to `host` may go out.
    pub(crate) fn admit(&self, host: &str) -> Admission {
        match self.hosts.get(host) {
            Some(record) if !record.answered && record.failures >= UNREACHABLE_TRIP => {
                Admission::Refused {
                    failures: record.failures,
                    reason: record.last.clone(),
                }
            }
            _ => Admission::Go,
        }
    }

    /// `host` sent an answer (any HTTP status): it is reachable for the rest of the run.
    pub(crate) fn answered(&mut self, host: &str) {
        let record = self.hosts.entry(host.to_owned()).or_default();
        record.answered = true;
        record.failures = 0;
    }

    /// A connection to `host` failed; returns whether the host is now given up.
    pub(crate) fn connect_failed(&mut self, host: &str, reason: &str) -> bool {
        let record = self.hosts.entry(host.to_owned()).or_default();
        record.failures += 1;
        record.last = reason.to_owned();
        !record.answered && record.failures >= UNREACHABLE_TRIP
    }
}

/// What kind of failure an HTTP status is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// Worth retrying: 408, 429, 5xx.
    Transient,
    /// Retrying cannot help: other 4xx (and anything else unexpected).
    Fatal,
}

/// Classifies an error status.
pub(crate) fn classify_status(status: u16) -> StatusClass {
    match status {
        408 | 429 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Fatal,
    }
}

/// Parses `Retry-After` in its seconds form (the HTTP-date form is ignored, as in
/// `huggingface_hub`).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Parses the IETF `RateLimit` header as the Hub sends it (`"api";r=0;t=55`): when no requests
/// remain (`r=0`), the wait is `t` seconds plus one.
pub(crate) fn parse_ratelimit(value: &str) -> Option<Duration> {
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
    fn a_host_that_never_answered_is_given_up_after_three_connect_failures() {
        let mut breaker = HostBreaker::default();
        let hub = "https://huggingface.co";
        assert_eq!(breaker.admit(hub), Admission::Go);
        assert!(!breaker.connect_failed(hub, "dns error"));
        assert!(!breaker.connect_failed(hub, "dns error"));
        assert_eq!(breaker.admit(hub), Admission::Go);
        assert!(breaker.connect_failed(hub, "dns error: no such host"));
        assert_eq!(
            breaker.admit(hub),
            Admission::Refused {
                failures: 3,
                reason: "dns error: no such host".to_owned()
            }
        );
        // Other hosts are judged on their own.
        assert_eq!(breaker.admit("https://cdn.example"), Admission::Go);
    }

    #[test]
    fn a_host_that_answered_once_keeps_full_retries() {
        let mut breaker = HostBreaker::default();
        let hub = "http://localhost:1";
        breaker.answered(hub);
        for _ in 0..10 {
            assert!(!breaker.connect_failed(hub, "connection refused"));
        }
        assert_eq!(breaker.admit(hub), Admission::Go);
        // And an answer after failures resets the count.
        let other = "http://localhost:2";
        breaker.connect_failed(other, "refused");
        breaker.connect_failed(other, "refused");
        breaker.answered(other);
        assert!(!breaker.connect_failed(other, "refused"));
        assert_eq!(breaker.admit(other), Admission::Go);
    }

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

    fn location() -> FileLocation {
        FileLocation {
            model_id: crate::ModelId::Entity,
            repo_id: "org/model".to_owned(),
            revision: "main".to_owned(),
            filename: "model.safetensors".to_owned(),
        }
    }

    fn transient() -> EmbeddingError {
        EmbeddingError::TransientStatus {
            refusal: crate::error::HubRefusal {
                status: 503,
                error_code: None,
                message: None,
                url: "http://hub/x".to_owned(),
            },
            retry_after: Some(Duration::from_millis(7)),
        }
    }

    #[test]
    fn retry_state_gives_up_after_max_retries_in_a_row_and_counts_attempts() {
        let mut state = RetryState::new(&RetryPolicy::default(), 2, &location());
        let mut delays = Vec::new();
        loop {
            state.attempt_started();
            match state.after_failure(transient(), false, 0.5) {
                RetryDecision::Retry(backoff) => delays.push((backoff.attempt, backoff.delay)),
                RetryDecision::GiveUp(EmbeddingError::RetriesExhausted { attempts, .. }) => {
                    assert_eq!(attempts, 3);
                    break;
                }
                RetryDecision::GiveUp(other) => panic!("unexpected {other}"),
            }
        }
        // The server's delay is honoured (capped by the policy, never below it).
        let policy = RetryPolicy::default();
        assert_eq!(
            delays,
            vec![
                (1, policy.delay(1, Some(Duration::from_millis(7)), 0.5)),
                (2, policy.delay(2, Some(Duration::from_millis(7)), 0.5))
            ]
        );
    }

    #[test]
    fn progress_resets_the_count_and_fatal_errors_stop_at_once() {
        let mut state = RetryState::new(&RetryPolicy::immediate(), 1, &location());
        for _ in 0..5 {
            state.attempt_started();
            assert!(matches!(
                state.after_failure(transient(), true, 0.0),
                RetryDecision::Retry(Backoff { attempt: 1, .. })
            ));
        }
        state.attempt_started();
        assert!(matches!(
            state.after_failure(transient(), false, 0.0),
            RetryDecision::GiveUp(EmbeddingError::RetriesExhausted { attempts: 6, .. })
        ));
        let mut fresh = RetryState::new(&RetryPolicy::immediate(), 9, &location());
        fresh.attempt_started();
        let fatal = EmbeddingError::Config("bad".to_owned());
        assert!(matches!(
            fresh.after_failure(fatal, false, 0.0),
            RetryDecision::GiveUp(EmbeddingError::Config(_))
        ));
    }
}
