//! Mirror quirks: ways a Hub mirror (JFrog Artifactory's Hugging Face remote, a caching proxy)
//! answers differently from the Hub itself, so clients can be tested against them: headers
//! left out, query parameters refused. [`MirrorQuirks`] is the switchboard; routing applies it.

use crate::http::{form_pairs, Request, Response};
use crate::log::Host;
use crate::signing::CDN_QUERY_PARAMS;

/// How the emulator departs from the Hub to behave like a mirror (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorQuirks {
    /// Leave `X-Repo-Commit` out of every Hub answer (Artifactory does), so clients must find
    /// the commit elsewhere (the revision API) or cope without it.
    pub omit_repo_commit: bool,
    /// Leave `X-Linked-Etag` out of resolve answers for LFS files (clients must fall back to
    /// `ETag`, which is then the only SHA-256 they get).
    pub omit_linked_etag: bool,
    /// Answer `400` to a request whose query has a parameter this emulator does not use.
    pub reject_unknown_query: bool,
}

/// Query parameters the Hub host's routes read.
const HUB_QUERY_PARAMS: &[&str] = &[
    "blobs",
    "recursive",
    "expand",
    "expand[]",
    "include_prs",
    "cursor",
    "limit",
];

impl MirrorQuirks {
    /// The `400` for a request with a query parameter unknown on `host`, when rejecting them.
    pub(crate) fn refuse_query(&self, host: Host, request: &Request) -> Option<Response> {
        if !self.reject_unknown_query {
            return None;
        }
        let known = match host {
            Host::Hub => HUB_QUERY_PARAMS,
            Host::Cdn => CDN_QUERY_PARAMS,
        };
        let pairs = form_pairs(request.query.as_deref().unwrap_or(""));
        let (unknown, _) = pairs
            .iter()
            .find(|(key, _)| !known.contains(&key.as_str()))?;
        let message = format!("Unknown query parameter: {unknown}");
        Some(
            Response::new(400)
                .header("X-Error-Message", message.clone())
                .json(&serde_json::json!({ "error": message })),
        )
    }

    /// Drops the headers this mirror does not send from a Hub answer.
    pub(crate) fn strip_headers(&self, host: Host, response: &mut Response) {
        if host != Host::Hub {
            return;
        }
        response.headers.retain(|(name, _)| {
            !(self.omit_repo_commit && name.eq_ignore_ascii_case("X-Repo-Commit")
                || self.omit_linked_etag && name.eq_ignore_ascii_case("X-Linked-Etag"))
        });
    }
}
