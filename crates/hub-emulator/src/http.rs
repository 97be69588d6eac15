//! The HTTP/1.1 wire layer: reading request heads and `Content-Length` bodies off a socket,
//! the [`Response`] value routes produce, byte ranges, and percent-decoding.
//!
//! Writing responses lives in `server.rs`, next to the faults that bend it.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted (request line plus headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body accepted; the API bodies are a few path names.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Raw path, still percent-encoded, without the query.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// Whether the request line said `HTTP/1.0`.
    pub(crate) http10: bool,
    /// Names lower-cased, in arrival order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Request {
    /// First value of header `name` (given lower-case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the client wants the connection kept open after this exchange.
    pub(crate) fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        let has = |token: &str| connection.split(',').any(|t| t.trim() == token);
        if self.http10 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// The bearer token of the `Authorization` header, if any.
    pub(crate) fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
            .filter(|t| !t.is_empty())
    }

    pub(crate) fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }
}

/// What reading a request produced.
pub(crate) enum ReadOutcome {
    Request(Request),
    /// The client closed the connection between requests.
    Closed,
    /// Unparseable or unsupported request: answer this status with this message and close.
    Reject(u16, &'static str),
}

/// Reads one request from `stream`; `buffer` carries bytes read past the previous request.
pub(crate) async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> io::Result<ReadOutcome> {
    let head_len = loop {
        // Tolerate stray CRLFs between requests (RFC 9112 section 2.2).
        while buffer.starts_with(b"\r\n") {
            buffer.advance(2);
        }
        if let Some(end) = find_head_end(buffer) {
            break end;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Ok(ReadOutcome::Reject(431, "request head too large"));
        }
        if stream.read_buf(buffer).await? == 0 {
            return Ok(if buffer.is_empty() {
                ReadOutcome::Closed
            } else {
                ReadOutcome::Reject(400, "connection closed inside the request head")
            });
        }
    };
    let head = buffer.split_to(head_len);
    let Some(mut request) = parse_head(&head) else {
        return Ok(ReadOutcome::Reject(400, "malformed request head"));
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|te| !te.eq_ignore_ascii_case("identity"))
    {
        return Ok(ReadOutcome::Reject(
            501,
            "chunked request bodies are not supported",
        ));
    }
    let body_len = match request.header("content-length") {
        None => 0,
        Some(value) => match value.trim().parse::<usize>() {
            Ok(n) if n <= MAX_BODY_BYTES => n,
            Ok(_) => return Ok(ReadOutcome::Reject(413, "request body too large")),
            Err(_) => return Ok(ReadOutcome::Reject(400, "bad Content-Length")),
        },
    };
    if body_len > 0
        && buffer.len() < body_len
        && request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    while buffer.len() < body_len {
        if stream.read_buf(buffer).await? == 0 {
            return Ok(ReadOutcome::Reject(
                400,
                "connection closed inside the request body",
            ));
        }
    }
    request.body = buffer.split_to(body_len).freeze();
    Ok(ReadOutcome::Request(request))
}

/// Length of the head including the blank line, if the buffer holds a whole head.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Parses the request line and headers (lines end in CRLF or bare LF).
fn parse_head(head: &[u8]) -> Option<Request> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split_ascii_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    // Absolute-form targets (`http://host/path`, as sent to proxies) keep only the path.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        http10: version == "HTTP/1.0",
        headers,
        body: Bytes::new(),
    })
}

/// An answer, before faults and before it is written. For `HEAD` the same value is produced
/// and the writer leaves the body out, so the headers (`Content-Length` included) match `GET`.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Headers other than `Content-Length`, `Connection` and `Server`, which the writer adds.
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Bytes,
    /// Where `body` starts in the file it is a span of; `None` when it is not file content.
    pub(crate) file_offset: Option<u64>,
}

impl Response {
    pub(crate) fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            file_offset: None,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn json(mut self, value: &serde_json::Value) -> Self {
        self.headers
            .push(("Content-Type", "application/json; charset=utf-8".to_owned()));
        self.body = Bytes::from(value.to_string());
        self
    }
}

/// Standard reason phrase of a status code.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A `Range` header evaluated against a representation of `total` bytes. Public (with
/// [`parse_range`]) for the `Range` round-trip fuzz target of `fuzz/`, which checks that the
/// artifact manager's requests mean to this parser what the manager wants.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (absent, malformed, several ranges): answer 200 with everything.
    Full,
    /// Inclusive byte span to answer with 206.
    Span(u64, u64),
    /// Answer 416.
    Unsatisfiable,
}

/// The first byte a `bytes=N-…` header asks for; `None` for a suffix range (`-n`), a list or
/// anything unparsable.
pub(crate) fn range_start(header: &str) -> Option<u64> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    spec.split_once('-')?.0.trim().parse().ok()
}

/// Evaluates a single-range `bytes=` header: `a-`, `a-b` (b clamped to the end), `-n`.
pub fn parse_range(header: &str, total: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match parse(last) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if total == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Span(total.saturating_sub(n), total - 1),
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match parse(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeRequest::Full,
                }
            };
            if start >= total {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Span(start, end.min(total - 1))
            }
        }
    }
}

/// Percent-decodes `s` (lossy for invalid UTF-8); `plus_is_space` for form bodies and queries.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but `A-Za-z0-9-._~` (Python's `quote(s, safe="")`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decoded `key=value` pairs of a query string or form body, in order.
pub(crate) fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

/// Whether query parameter `name` is set to a true value (`true`, `True`, `1`).
pub(crate) fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| {
        form_pairs(q)
            .iter()
            .any(|(k, v)| k == name && matches!(v.as_str(), "true" | "True" | "1"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(range_start("bytes=1024-2047"), Some(1024));
        assert_eq!(range_start("bytes=7-"), Some(7));
        assert_eq!(range_start("bytes=-3"), None);
        assert_eq!(range_start("bytes=0-1,3-4"), None);
        assert_eq!(parse_range("bytes=0-0", 10), Span(0, 0));
        assert_eq!(parse_range("bytes=2-", 10), Span(2, 9));
        assert_eq!(parse_range("bytes=2-100", 10), Span(2, 9));
        assert_eq!(parse_range("bytes=-3", 10), Span(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), Span(0, 9));
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 10), Full);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Full);
        assert_eq!(parse_range("items=0-1", 10), Full);
        assert_eq!(parse_range("bytes=x-", 10), Full);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("refs%2Fpr%2F1", false), "refs/pr/1");
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%4", false), "%4");
        assert_eq!(percent_decode("%zz", false), "%zz");
        assert_eq!(encode_component("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(
            form_pairs("paths=a%2Fb&paths=c+d&expand=false"),
            [
                ("paths".to_owned(), "a/b".to_owned()),
                ("paths".to_owned(), "c d".to_owned()),
                ("expand".to_owned(), "false".to_owned())
            ]
        );
        assert!(query_flag(Some("recursive=True&expand=false"), "recursive"));
        assert!(!query_flag(Some("recursive=false"), "recursive"));
        assert!(!query_flag(None, "recursive"));
    }

    #[test]
    fn heads() {
        let r =
            parse_head(b"GET http://h:1/a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-Amzn-Trace-Id: t\r\n\r\n")
                .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/a/b"));
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.header("x-amzn-trace-id"), Some("t"));
        assert!(r.keep_alive());
        let r = parse_head(b"HEAD / HTTP/1.0\n\n").unwrap();
        assert!(r.http10 && !r.keep_alive());
        assert!(parse_head(b"GARBAGE\r\n\r\n").is_none());
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
    }
}
