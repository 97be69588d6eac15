//! The request log: one [`RequestRecord`] per request either listener received.

use std::sync::Mutex;

/// Which listener received a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// The Hub host, [`crate::HubEmulator::endpoint`]: resolve URLs and the JSON API.
    Hub,
    /// The CDN host, [`crate::HubEmulator::cdn_origin`]: content-addressed LFS objects.
    Cdn,
}

/// One request as the emulator saw and answered it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Which listener got it.
    pub host: Host,
    /// Request method as sent: `"HEAD"`, `"GET"`, `"POST"`, ...
    pub method: String,
    /// Raw path as received, still percent-encoded, without the query.
    pub path: String,
    /// Raw query string after `?`, if any.
    pub query: Option<String>,
    /// Request headers, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Status code answered; `0` when the connection was closed without an answer
    /// ([`crate::Fault::ResetBeforeResponse`]).
    pub status: u16,
    /// Body bytes actually written (after faults; `0` for HEAD).
    pub body_bytes_sent: u64,
    /// The TCP connection it came on: a number given to each accepted connection, from 1,
    /// across both listeners. Requests with the same number shared one connection (HTTP/2
    /// streams, or HTTP/1.1 keep-alive).
    pub connection: u64,
    /// The protocol the connection spoke.
    pub http_version: HttpVersion,
    /// The pace the connection drew, bytes per second ([`crate::HubBuilder::edge_mix`]);
    /// `None` when it was not paced.
    pub connection_pace: Option<u64>,
    /// The address the client connected to: which listener accepted the connection (see
    /// [`crate::HubBuilder::cdn_addresses`]); `None` if the socket could not tell.
    pub local_addr: Option<std::net::SocketAddr>,
}

/// The HTTP version a connection spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.1 (or 1.0), over TCP or TLS.
    Http1,
    /// HTTP/2, chosen by ALPN over TLS.
    Http2,
}

impl RequestRecord {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `Range` header, if the request had one.
    pub fn range(&self) -> Option<&str> {
        self.header("range")
    }

    /// The first byte a `Range: bytes=N-…` asked for (what [`crate::FaultTarget::range_from`]
    /// matches); `None` without a `Range`, or for a suffix range or a list.
    pub fn range_start(&self) -> Option<u64> {
        self.range().and_then(crate::http::range_start)
    }
}

/// Append-only log shared by all connections. Entries get a sequence number so a connection
/// can correct its own entry (bytes sent) after the client went away.
#[derive(Default)]
pub(crate) struct RequestLog {
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    last_seq: u64,
    entries: Vec<(u64, RequestRecord)>,
}

impl RequestLog {
    /// Appends `record` and returns its sequence number.
    pub(crate) fn push(&self, record: RequestRecord) -> u64 {
        let mut inner = lock(&self.inner);
        inner.last_seq += 1;
        let seq = inner.last_seq;
        inner.entries.push((seq, record));
        seq
    }

    /// Sets the bytes-sent count of entry `seq`, if it is still in the log.
    pub(crate) fn set_body_bytes_sent(&self, seq: u64, sent: u64) {
        let mut inner = lock(&self.inner);
        if let Some((_, record)) = inner.entries.iter_mut().rev().find(|(s, _)| *s == seq) {
            record.body_bytes_sent = sent;
        }
    }

    /// A copy of every entry, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        lock(&self.inner)
            .entries
            .iter()
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        lock(&self.inner).entries.clear();
    }
}

/// Locks a mutex, ignoring poisoning: the emulator's state stays usable after a panicking test.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
