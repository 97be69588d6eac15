//! A hostile Hub: a proxy in front of an emulator that spoils requests **at random, drawn per
//! request from a seed** (issue 28), where [`crate::fault`] spoils the requests a test names.
//!
//! [`ChaosProxy`] listens on two loopback ports, one for the Hub and one for the CDN, forwards
//! each request to the emulator behind it (one request per connection, `Connection: close`),
//! rewrites redirect targets so the client stays on the proxy, and then, with probability
//! [`ChaosConfig::fault_percent`], bends the answer with one [`ChaosFault`]: truncated bodies,
//! lying `Content-Length`, flipped bytes, a wrong digest in `X-Linked-Etag`, a lying
//! `X-Linked-Size`, redirect loops, a `206` whose `Content-Range` is not the range asked,
//! stalls, resets before the answer, 5xx, and header garbage.
//!
//! Which fault a request gets depends only on the seed and the request itself (method, host,
//! path without query, `Range`, and how many times the same request was seen before), not on
//! the order in which concurrent connections arrive: a seed replays the same schedule.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::log::Host;
use crate::server::HubEmulator;

/// What goes wrong with a spoiled answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChaosFault {
    /// The full `Content-Length`, then part of the body, then the socket closes.
    Truncate,
    /// `Content-Length` larger or smaller than the body sent.
    WrongLength,
    /// One byte of the body flipped (the bytes no longer match their digest).
    FlipByte,
    /// `X-Linked-Etag` (or `ETag`) names another SHA-256 than the content's.
    WrongDigest,
    /// `X-Linked-Size` says another size.
    LyingSize,
    /// `302` back to the same URL.
    RedirectLoop,
    /// `206` whose `Content-Range` is not the range asked (the body is the one asked).
    WrongRange,
    /// Part of the body, then a pause longer than a client's idle timeout, then a close.
    Stall,
    /// The request is read, then the connection closes without an answer.
    Reset,
    /// `500`, `502`, `503` or `504` (sometimes with `Retry-After: 0`).
    ServerError,
    /// Invalid or contradictory headers: a non-hex `X-Repo-Commit`, a `Content-Range` on a
    /// `200`, a control byte in a value, an 8 KiB header.
    HeaderGarbage,
}

impl ChaosFault {
    /// Every fault, in a fixed order (the draw indexes this list).
    pub const ALL: [ChaosFault; 11] = [
        ChaosFault::Truncate,
        ChaosFault::WrongLength,
        ChaosFault::FlipByte,
        ChaosFault::WrongDigest,
        ChaosFault::LyingSize,
        ChaosFault::RedirectLoop,
        ChaosFault::WrongRange,
        ChaosFault::Stall,
        ChaosFault::Reset,
        ChaosFault::ServerError,
        ChaosFault::HeaderGarbage,
    ];
}

/// How hostile the proxy is.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The seed every draw derives from.
    pub seed: u64,
    /// Chance in percent that a request is spoiled (0 to 100).
    pub fault_percent: u8,
    /// Length of a [`ChaosFault::Stall`] pause.
    pub stall: Duration,
}

/// What the proxy did, for the figures of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChaosStats {
    /// Requests received.
    pub requests: u64,
    /// Faults injected, by kind (a fault that did not apply to an answer is not counted).
    pub faults: HashMap<ChaosFault, u64>,
}

impl ChaosStats {
    /// All faults injected.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

struct State {
    config: ChaosConfig,
    upstream_hub: u16,
    upstream_cdn: u16,
    hub_origin: String,
    cdn_origin: String,
    upstream_hub_origin: String,
    upstream_cdn_origin: String,
    seen: Mutex<HashMap<String, u64>>,
    stats: Mutex<ChaosStats>,
    stop: AtomicBool,
}

/// The running proxy; stops (and closes its ports) when dropped.
pub struct ChaosProxy {
    state: Arc<State>,
    hub_port: u16,
    cdn_port: u16,
    threads: Vec<JoinHandle<()>>,
}

impl ChaosProxy {
    /// Starts a proxy in front of `upstream` on two ephemeral loopback ports.
    pub fn start(upstream: &HubEmulator, config: ChaosConfig) -> io::Result<ChaosProxy> {
        let hub = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let cdn = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let hub_port = hub.local_addr()?.port();
        let cdn_port = cdn.local_addr()?.port();
        let state = Arc::new(State {
            config,
            upstream_hub: upstream.hub_port(),
            upstream_cdn: upstream.cdn_port(),
            hub_origin: format!("http://127.0.0.1:{hub_port}"),
            cdn_origin: format!("http://127.0.0.1:{cdn_port}"),
            upstream_hub_origin: upstream.endpoint(),
            upstream_cdn_origin: upstream.cdn_origin(),
            seen: Mutex::new(HashMap::new()),
            stats: Mutex::new(ChaosStats::default()),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (listener, host) in [(hub, Host::Hub), (cdn, Host::Cdn)] {
            listener.set_nonblocking(true)?;
            let state = Arc::clone(&state);
            threads.push(
                std::thread::Builder::new()
                    .name("chaos-accept".to_owned())
                    .spawn(move || accept_loop(&listener, host, &state))?,
            );
        }
        Ok(ChaosProxy {
            state,
            hub_port,
            cdn_port,
            threads,
        })
    }

    /// The Hub endpoint to give the client under test.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_port)
    }

    /// The CDN origin redirects point to.
    pub fn cdn_origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.cdn_port)
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ChaosStats {
        lock(&self.state.stats).clone()
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, host: Host, state: &Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = Arc::clone(state);
                let _ = std::thread::Builder::new()
                    .name("chaos-conn".to_owned())
                    .spawn(move || {
                        let _ = serve(stream, host, &state);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// SplitMix64 over a seed: the draws of one request.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// FNV-1a of a text, to key the draws by request.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A parsed request or response head.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value));
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    Ok(Head {
        first: first.trim_end().to_owned(),
        headers,
    })
}

/// The body after `head`: `Content-Length` bytes; without one, none for a request
/// (`until_close` false) and everything until the connection closes for a response.
fn read_body(
    reader: &mut impl Read,
    head: &Head,
    none: bool,
    until_close: bool,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if none {
        return Ok(body);
    }
    match head
        .get("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        Some(length) => {
            reader.take(length).read_to_end(&mut body)?;
        }
        None if until_close => {
            reader.read_to_end(&mut body)?;
        }
        None => {}
    }
    Ok(body)
}

/// One connection: one request forwarded, its answer bent or not.
fn serve(stream: TcpStream, host: Host, state: &State) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = read_head(&mut reader)?;
    let request_body = read_body(&mut reader, &request, false, false)?;
    let mut parts = request.first.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let range = request.get("range").map(str::to_owned);
    let key = format!(
        "{method} {host:?} {path} {}",
        range.as_deref().unwrap_or("-")
    );
    let occurrence = {
        let mut seen = lock(&state.seen);
        let n = seen.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let mut draw =
        Draw(state.config.seed ^ fnv(&key) ^ occurrence.wrapping_mul(0x2545_F491_4F6C_DD1D));
    lock(&state.stats).requests += 1;
    let fault = (draw.below(100) < u64::from(state.config.fault_percent))
        .then(|| ChaosFault::ALL[draw.below(ChaosFault::ALL.len() as u64) as usize]);

    let mut out = stream;
    if fault == Some(ChaosFault::Reset) {
        count(state, ChaosFault::Reset);
        let _ = out.shutdown(Shutdown::Both);
        return Ok(());
    }
    if fault == Some(ChaosFault::ServerError) {
        count(state, ChaosFault::ServerError);
        let code = [500, 502, 503, 504][draw.below(4) as usize];
        let body = format!("{{\"error\":\"chaos {code}\"}}");
        let retry = if draw.below(2) == 0 {
            "Retry-After: 0\r\n"
        } else {
            ""
        };
        let answer = format!(
            "HTTP/1.1 {code} Chaos\r\nContent-Type: application/json\r\n{retry}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        out.write_all(answer.as_bytes())?;
        return Ok(());
    }
    if fault == Some(ChaosFault::RedirectLoop) {
        count(state, ChaosFault::RedirectLoop);
        let origin = match host {
            Host::Hub => &state.hub_origin,
            Host::Cdn => &state.cdn_origin,
        };
        let answer = format!(
            "HTTP/1.1 302 Found\r\nLocation: {origin}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        out.write_all(answer.as_bytes())?;
        return Ok(());
    }

    // Forward.
    let port = match host {
        Host::Hub => state.upstream_hub,
        Host::Cdn => state.upstream_cdn,
    };
    let mut upstream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    upstream.set_read_timeout(Some(Duration::from_secs(30)))?;
    request.set("Connection", "close".to_owned());
    request.set(
        "Host",
        format!(
            "{}:{port}",
            if host == Host::Hub {
                "localhost"
            } else {
                "127.0.0.1"
            }
        ),
    );
    upstream.write_all(&request.bytes())?;
    upstream.write_all(&request_body)?;
    let mut upstream_reader = BufReader::new(upstream);
    let mut response = read_head(&mut upstream_reader)?;
    let status: u16 = response
        .first
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
    let mut body = read_body(&mut upstream_reader, &response, no_body, true)?;
    if let Some(location) = response.get("location").map(str::to_owned) {
        let rewritten = location
            .replace(&state.upstream_cdn_origin, &state.cdn_origin)
            .replace(&state.upstream_hub_origin, &state.hub_origin);
        response.set("Location", rewritten);
    }
    response.set("Connection", "close".to_owned());

    // Bend.
    let length = body.len() as u64;
    let mut announced = response.get("content-length").map(str::to_owned);
    let mut send = body.len();
    let mut stall = None;
    let applied = match fault {
        Some(ChaosFault::Truncate) if length > 1 => {
            send = draw.below(length) as usize;
            true
        }
        Some(ChaosFault::WrongLength) if length > 1 => {
            let delta = 1 + draw.below(length.min(4096));
            let lie = if draw.below(2) == 0 {
                length + delta
            } else {
                length - delta.min(length - 1)
            };
            announced = Some(lie.to_string());
            true
        }
        Some(ChaosFault::FlipByte) if length > 0 => {
            let at = draw.below(length) as usize;
            body[at] ^= 0xff;
            true
        }
        Some(ChaosFault::WrongDigest) => {
            let name = ["x-linked-etag", "etag"]
                .into_iter()
                .find(|n| response.get(n).is_some());
            match name {
                Some(name) => {
                    let fake: String = (0..64)
                        .map(|_| char::from(b"0123456789abcdef"[draw.below(16) as usize]))
                        .collect();
                    response.set(name, format!("\"{fake}\""));
                    true
                }
                None => false,
            }
        }
        Some(ChaosFault::LyingSize) => match response
            .get("x-linked-size")
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(size) => {
                let lie = match draw.below(3) {
                    0 => size + 1 + draw.below(1 << 20),
                    1 => size.saturating_sub(1 + draw.below(size.max(1))),
                    _ => u64::MAX - draw.below(10),
                };
                response.set("X-Linked-Size", lie.to_string());
                true
            }
            None => false,
        },
        Some(ChaosFault::WrongRange) if status == 206 || (status == 200 && length > 0) => {
            let total = response
                .get("content-range")
                .and_then(|r| r.rsplit('/').next())
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(length);
            let shift = 1 + draw.below(total.max(2) - 1);
            let start = match response
                .get("content-range")
                .and_then(|r| r.strip_prefix("bytes "))
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(start) if draw.below(2) == 0 => start.saturating_sub(shift),
                Some(start) => start + shift,
                None => shift,
            };
            let end = (start + length).saturating_sub(1);
            response.first = "HTTP/1.1 206 Partial Content".to_owned();
            response.set("Content-Range", format!("bytes {start}-{end}/{total}"));
            true
        }
        Some(ChaosFault::Stall) if length > 0 => {
            send = draw.below(length) as usize;
            stall = Some(state.config.stall);
            true
        }
        Some(ChaosFault::HeaderGarbage) => {
            match draw.below(4) {
                0 => response.set("X-Repo-Commit", "not-a-commit\u{7f}zz".to_owned()),
                1 => response.set("Content-Range", "bytes 99999999999999999999-0/x".to_owned()),
                2 => response.set("X-Linked-Etag", "\"../../../etc/passwd\"".to_owned()),
                _ => response.set("X-Chaos-Padding", "x".repeat(8192)),
            }
            true
        }
        _ => false,
    };
    if let Some(fault) = fault.filter(|_| applied) {
        count(state, fault);
    }
    match announced {
        Some(value) => response.set("Content-Length", value),
        None => response.remove("content-length"),
    }
    out.write_all(&response.bytes())?;
    out.write_all(&body[..send])?;
    out.flush()?;
    if let Some(pause) = stall {
        std::thread::sleep(pause);
    }
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

fn count(state: &State, fault: ChaosFault) {
    *lock(&state.stats).faults.entry(fault).or_insert(0) += 1;
}
