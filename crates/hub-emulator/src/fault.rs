//! Fault injection: which requests a rule targets ([`FaultTarget`]), what goes wrong ([`Fault`]),
//! and the bookkeeping of how many requests each [`FaultRule`] has seen and spoiled.
//!
//! A rule only counts (for `skip` and `times`) the requests it can affect:
//! - [`Fault::Status`], [`Fault::RedirectLoop`], [`Fault::HtmlErrorPage200`] and
//!   [`Fault::ResetBeforeResponse`] replace the whole answer, so they see every matching request;
//!   when several are active, the first added wins and the later ones do not see the request.
//! - The body faults ([`Fault::CutAfter`], [`Fault::StallAfter`], [`Fault::FlipByte`],
//!   [`Fault::ContentLengthDelta`], [`Fault::BandwidthCap`], [`Fault::IgnoreRange`]) only see
//!   requests answered with file bytes (a `GET` answered 200 or 206 with content, not a 302 to
//!   the CDN, not a `HEAD`); `IgnoreRange` only those answered 206, `FlipByte` only those whose
//!   served span contains its offset. Several body faults can act on one response.
//!
//! `path_contains` is matched against the raw path and its percent-decoded form; on the CDN host
//! also against `"{repo_id}/{path}"` of every repo file whose content the `/lfs/<sha256>` object
//! is, so a rule written for `"model.safetensors"` follows the redirect to the CDN.

use std::time::Duration;

use crate::log::Host;

/// Which requests a [`FaultRule`] applies to; every `Some` field must match.
#[derive(Debug, Clone, Default)]
pub struct FaultTarget {
    /// Request method (case-insensitive), `None` = any.
    pub method: Option<String>,
    /// Listener, `None` = both.
    pub host: Option<Host>,
    /// Substring of the path (see the module docs for what "path" covers), `None` = any.
    pub path_contains: Option<String>,
    /// First byte a `Range: bytes=N-…` request asks for, `None` = any request, with or
    /// without `Range`: lets a rule spoil the requests of one stretch of a parallel download
    /// whatever order the connections' requests arrive in.
    pub range_from: Option<u64>,
}

impl FaultTarget {
    /// Every request on both hosts.
    pub fn any() -> Self {
        Self::default()
    }

    /// `GET` requests on any host whose path contains `path_contains`.
    pub fn get(path_contains: &str) -> Self {
        Self::method("GET", path_contains)
    }

    /// `HEAD` requests on any host whose path contains `path_contains`.
    pub fn head(path_contains: &str) -> Self {
        Self::method("HEAD", path_contains)
    }

    /// `POST` requests on any host whose path contains `path_contains`.
    pub fn post(path_contains: &str) -> Self {
        Self::method("POST", path_contains)
    }

    /// Requests with this method on any host whose path contains `path_contains`.
    pub fn method(method: &str, path_contains: &str) -> Self {
        Self {
            method: Some(method.to_owned()),
            host: None,
            path_contains: Some(path_contains.to_owned()),
            range_from: None,
        }
    }

    /// Restricts the target to one listener.
    pub fn on_host(mut self, host: Host) -> Self {
        self.host = Some(host);
        self
    }

    /// Restricts the target to requests whose `Range` starts at byte `start`.
    pub fn range_from(mut self, start: u64) -> Self {
        self.range_from = Some(start);
        self
    }

    /// Whether a request matches (see the module docs for `paths`).
    pub(crate) fn matches(&self, subject: &FaultSubject<'_>) -> bool {
        let FaultSubject {
            host,
            method,
            paths,
            range_from,
        } = subject;
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.host.is_none_or(|h| h == *host)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|needle| paths.iter().any(|p| p.contains(needle)))
            && self
                .range_from
                .is_none_or(|start| *range_from == Some(start))
    }
}

/// What goes wrong with a targeted response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status instead (any method) with a JSON `{"error": ...}` body.
    Status {
        /// Status code to answer.
        code: u16,
        /// Adds `Retry-After: N`.
        retry_after_secs: Option<u64>,
        /// Adds `RateLimit: "api";r=0;t=N` and a `RateLimit-Policy`.
        ratelimit_reset_secs: Option<u64>,
    },
    /// Send the headers (full `Content-Length`) and `bytes` body bytes, then close the socket.
    CutAfter {
        /// Body bytes sent before closing.
        bytes: u64,
    },
    /// Send `bytes` body bytes, send nothing for `stall`, then continue normally.
    StallAfter {
        /// Body bytes sent before the pause.
        bytes: u64,
        /// Length of the pause.
        stall: Duration,
    },
    /// Answer 200 with the full body even when `Range` is asked.
    IgnoreRange,
    /// Flip every bit of the byte at this absolute file offset, when it is in the served span.
    FlipByte {
        /// Offset in the file (not in the response body).
        offset: u64,
    },
    /// Announce `Content-Length` = real + `delta`, send the real body, then close: negative =
    /// more bytes than announced, positive = the body ends short.
    ContentLengthDelta {
        /// Added to the real length in the `Content-Length` header.
        delta: i64,
    },
    /// `200 text/html` error page instead of the content, with the page's `Content-Length`.
    HtmlErrorPage200,
    /// `302` whose `Location` is the requested URL itself.
    RedirectLoop,
    /// Pace the body to at most this many bytes per second.
    BandwidthCap {
        /// Body bytes per second.
        bytes_per_sec: u64,
    },
    /// Read the request, then close the connection without answering.
    ResetBeforeResponse,
}

impl Fault {
    /// `Status` with just a code (no `Retry-After`, no rate-limit headers).
    pub fn status(code: u16) -> Self {
        Fault::Status {
            code,
            retry_after_secs: None,
            ratelimit_reset_secs: None,
        }
    }

    /// Whether the fault replaces the whole answer rather than altering a file body.
    pub(crate) fn replaces_response(&self) -> bool {
        matches!(
            self,
            Fault::Status { .. }
                | Fault::RedirectLoop
                | Fault::HtmlErrorPage200
                | Fault::ResetBeforeResponse
        )
    }
}

/// A [`Fault`] applied to requests matching a [`FaultTarget`].
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Which requests.
    pub target: FaultTarget,
    /// What goes wrong.
    pub fault: Fault,
    /// Let the first `skip` matching requests through untouched.
    pub skip: u32,
    /// Apply to this many matching requests after the skipped ones; `None` = all of them.
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule applying `fault` to every request matching `target`.
    pub fn new(target: FaultTarget, fault: Fault) -> Self {
        Self {
            target,
            fault,
            skip: 0,
            times: None,
        }
    }

    /// Lets the first `n` matching requests through untouched.
    pub fn skip(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// Applies to `n` matching requests only (after the skipped ones).
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

/// A request as fault targets see it.
pub(crate) struct FaultSubject<'a> {
    pub(crate) host: Host,
    pub(crate) method: &'a str,
    pub(crate) paths: Vec<&'a str>,
    /// Where the request's `Range: bytes=N-…` starts, if it has one.
    pub(crate) range_from: Option<u64>,
}

/// The installed rules with their counters.
#[derive(Default)]
pub(crate) struct FaultBook {
    rules: Vec<ActiveRule>,
}

struct ActiveRule {
    rule: FaultRule,
    seen: u32,
    applied: u32,
}

impl FaultBook {
    pub(crate) fn add(&mut self, rule: FaultRule) {
        self.rules.push(ActiveRule {
            rule,
            seen: 0,
            applied: 0,
        });
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Offers the request to every rule whose target matches and whose fault `can_affect` it,
    /// in the order the rules were added; returns the faults that take effect. With
    /// `first_only`, stops at the first one (later rules do not see the request).
    pub(crate) fn take(
        &mut self,
        subject: &FaultSubject<'_>,
        can_affect: impl Fn(&Fault) -> bool,
        first_only: bool,
    ) -> Vec<Fault> {
        let mut taken = Vec::new();
        for active in &mut self.rules {
            if !can_affect(&active.rule.fault) || !active.rule.target.matches(subject) {
                continue;
            }
            active.seen = active.seen.saturating_add(1);
            let past_skip = active.seen > active.rule.skip;
            let within_times = active.rule.times.is_none_or(|t| active.applied < t);
            if past_skip && within_times {
                active.applied += 1;
                taken.push(active.rule.fault.clone());
                if first_only {
                    break;
                }
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(method: &'static str, path: &'static str) -> FaultSubject<'static> {
        FaultSubject {
            host: Host::Hub,
            method,
            paths: vec![path],
            range_from: None,
        }
    }

    #[test]
    fn a_range_target_spoils_only_requests_from_that_byte() {
        let mut book = FaultBook::default();
        book.add(FaultRule::new(
            FaultTarget::get("a.bin").range_from(1024),
            Fault::status(403),
        ));
        let from = |range_from| FaultSubject {
            range_from,
            ..subject("GET", "/a.bin")
        };
        assert!(book.take(&from(None), |_| true, true).is_empty());
        assert!(book.take(&from(Some(0)), |_| true, true).is_empty());
        assert_eq!(
            book.take(&from(Some(1024)), |_| true, true),
            [Fault::status(403)]
        );
    }

    #[test]
    fn skip_then_times() {
        let mut book = FaultBook::default();
        book.add(
            FaultRule::new(FaultTarget::get("a.bin"), Fault::status(503))
                .skip(1)
                .times(2),
        );
        let outcomes: Vec<usize> = (0..5)
            .map(|_| {
                book.take(&subject("GET", "/r/resolve/main/a.bin"), |_| true, true)
                    .len()
            })
            .collect();
        assert_eq!(outcomes, [0, 1, 1, 0, 0]);
        assert!(book
            .take(&subject("HEAD", "/a.bin"), |_| true, true)
            .is_empty());
    }

    #[test]
    fn first_only_stops_later_rules_from_counting() {
        let mut book = FaultBook::default();
        book.add(FaultRule::new(FaultTarget::any(), Fault::status(500)).times(1));
        book.add(FaultRule::new(FaultTarget::any(), Fault::status(502)).times(1));
        let s = subject("GET", "/x");
        assert_eq!(book.take(&s, |_| true, true), [Fault::status(500)]);
        assert_eq!(book.take(&s, |_| true, true), [Fault::status(502)]);
        assert!(book.take(&s, |_| true, true).is_empty());
    }

    #[test]
    fn target_matching() {
        let on = |host, method, paths: &[&'static str]| FaultSubject {
            host,
            method,
            paths: paths.to_vec(),
            range_from: None,
        };
        let t = FaultTarget::head("cfg").on_host(Host::Cdn);
        assert!(t.matches(&on(Host::Cdn, "head", &["/x/cfg"])));
        assert!(!t.matches(&on(Host::Hub, "HEAD", &["/x/cfg"])));
        assert!(!t.matches(&on(Host::Cdn, "GET", &["/x/cfg"])));
        assert!(!t.matches(&on(Host::Cdn, "HEAD", &["/x/other"])));
        assert!(FaultTarget::any().matches(&on(Host::Hub, "POST", &[])));
    }
}
