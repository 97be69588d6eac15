//! A deliberately dumb HTTP/1.1 client over `std::net::TcpStream`, so tests see exactly the
//! bytes the emulator sends (short bodies, extra bytes, early closes), plus shared fixtures.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hub_emulator::{synth, HubBuilder, HubEmulator, RepoSpec};

/// A parsed answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body bytes received, up to `Content-Length` (or to EOF without one).
    pub body: Vec<u8>,
    /// Bytes received after `Content-Length` bytes, before the server closed (only read when
    /// the server announced `Connection: close`).
    pub extra: Vec<u8>,
    /// The server closed before sending `Content-Length` bytes.
    pub short: bool,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| v.parse().unwrap())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// One keep-alive connection.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects to `origin` (`http://host:port`).
    pub(crate) fn open(origin: &str) -> Conn {
        let authority = origin.trim_start_matches("http://");
        let stream = TcpStream::connect(authority).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a request and reads the answer. `path` may include a query.
    pub(crate) fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.write_request(method, path, headers, body);
        self.read_reply(method == "HEAD")
    }

    pub(crate) fn write_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
    }

    pub(crate) fn write_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one answer; `None` if the server closed without answering.
    pub(crate) fn try_read_reply(&mut self, head_only: bool) -> Option<Reply> {
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line).unwrap_or(0) == 0 {
            return None;
        }
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
            extra: Vec::new(),
            short: false,
        };
        if head_only || status == 304 {
            return Some(reply);
        }
        match reply.content_length() {
            Some(len) => {
                let mut limited = (&mut self.reader).take(len);
                limited.read_to_end(&mut reply.body).unwrap();
                reply.short = (reply.body.len() as u64) < len;
                if !reply.short && reply.header("connection") == Some("close") {
                    let _ = self.reader.read_to_end(&mut reply.extra);
                }
            }
            None => {
                self.reader.read_to_end(&mut reply.body).unwrap();
            }
        }
        Some(reply)
    }

    pub(crate) fn read_reply(&mut self, head_only: bool) -> Reply {
        self.try_read_reply(head_only)
            .expect("server closed the connection without answering")
    }

    /// Whether the server has closed the connection (reads EOF).
    pub(crate) fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// One request on a fresh connection.
pub(crate) fn send(origin: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    Conn::open(origin).send(method, path, headers, b"")
}

/// `GET` on a fresh connection.
pub(crate) fn get(origin: &str, path: &str) -> Reply {
    send(origin, "GET", path, &[])
}

/// `HEAD` on a fresh connection.
pub(crate) fn head(origin: &str, path: &str) -> Reply {
    send(origin, "HEAD", path, &[])
}

/// Path part of an absolute URL.
pub(crate) fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_owned()
}

/// Origin part of an absolute URL.
pub(crate) fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    format!(
        "{scheme}://{}",
        &rest[..rest.find('/').unwrap_or(rest.len())]
    )
}

pub(crate) const CONFIG: &str = r#"{"hidden_size": 8, "model_type": "bert"}"#;
pub(crate) const WEIGHTS_LEN: u64 = 100_000;

/// Weights of the standard test repo.
pub(crate) fn weights() -> Vec<u8> {
    synth::safetensors(WEIGHTS_LEN, 42)
}

/// `org/model` with a config, LFS weights, nested and space-named files, a PR ref and a tag;
/// `solo` (a one-segment repo id); `org/gated` accepting token `good`.
pub(crate) fn standard_hub(cdn_redirect: bool) -> HubEmulator {
    HubBuilder::new()
        .cdn_redirect(cdn_redirect)
        .repo(
            RepoSpec::new("org/model")
                .file("config.json", CONFIG)
                .file("model.safetensors", weights())
                .file("sub/dir/notes v2.txt", "nested")
                .file("sub/vocab.txt", "a\nb\n")
                .extra_ref("refs/pr/1")
                .extra_ref("v1.0"),
        )
        .repo(RepoSpec::new("solo").file("README.md", "# solo\n"))
        .repo(
            RepoSpec::new("org/gated")
                .file("config.json", CONFIG)
                .file("model.safetensors", synth::safetensors(2048, 7))
                .gated(&["good"]),
        )
        .start()
        .expect("start emulator")
}

pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
