//! Where a blob's bytes come from. The downloader's resume, verification and parallel ranges
//! work the same over any [`ByteSource`]: the Hub (resolve URL or the CDN it redirects to)
//! or a content-addressed mirror. A source only opens byte ranges; it never decides what is
//! trusted: every byte from every source is hashed and checked the same way.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use reqwest::StatusCode;

use super::client::HubClient;
use super::protocol::error_chain;
use super::protocol::{is_html, parse_content_range, strip_query};
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};

/// A boxed future, as trait methods return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream of body chunks from a non-HTTP source.
pub type ChunkStream = Pin<Box<dyn Stream<Item = EmbeddingResult<Bytes>> + Send>>;

/// A body being received.
pub enum Body {
    /// An HTTP response body.
    Http(reqwest::Response),
    /// Any other stream of chunks.
    Stream(ChunkStream),
}

impl Body {
    /// The next chunk; `None` at the end. Fails with `IdleTimeout` when nothing arrives for
    /// `idle`, or with `Network` when the transfer breaks.
    pub async fn next_chunk(
        &mut self,
        idle: Duration,
        name: &str,
    ) -> EmbeddingResult<Option<Bytes>> {
        match self {
            Body::Http(response) => match tokio::time::timeout(idle, response.chunk()).await {
                Err(_) => Err(EmbeddingError::IdleTimeout {
                    url: name.to_owned(),
                    idle,
                }),
                Ok(Err(e)) if e.is_timeout() => Err(EmbeddingError::IdleTimeout {
                    url: name.to_owned(),
                    idle,
                }),
                Ok(Err(e)) => Err(EmbeddingError::Network {
                    url: name.to_owned(),
                    message: format!("body interrupted: {}", error_chain(&e)),
                }),
                Ok(Ok(chunk)) => Ok(chunk),
            },
            Body::Stream(stream) => match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => Err(EmbeddingError::IdleTimeout {
                    url: name.to_owned(),
                    idle,
                }),
                Ok(None) => Ok(None),
                Ok(Some(chunk)) => chunk.map(Some),
            },
        }
    }
}

/// What opening a byte range gave.
pub enum Opened {
    /// Bytes `start..=end` of an object of `total` bytes (HTTP 206).
    Range {
        /// The body.
        body: Body,
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
        /// Object size, when told.
        total: Option<u64>,
    },
    /// The whole object from byte 0, whatever was asked (HTTP 200).
    Whole {
        /// The body.
        body: Body,
        /// Its announced length.
        length: Option<u64>,
    },
    /// The start lies past the end of the object (HTTP 416).
    Unsatisfiable,
}

/// A place blob bytes can be read from, by range.
pub trait ByteSource: Send + Sync {
    /// Opens bytes `start..=end` (`end` `None`: to the end). A source that cannot do ranges
    /// may answer [`Opened::Whole`].
    fn open(&self, start: u64, end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>>;

    /// A name for messages (a URL without its query string, or `s3://bucket/key`).
    fn name(&self) -> String;

    /// The idle timeout of body reads.
    fn idle_timeout(&self) -> Duration;

    /// Whether a refusal of a ranged request (403, 429) means "not in parallel" rather
    /// than a failure of the download.
    fn is_range_refusal(&self, error: &EmbeddingError) -> bool {
        match error {
            EmbeddingError::TransientStatus { refusal, .. } => refusal.status == 429,
            EmbeddingError::HubRefused { refusal, .. } => refusal.status == 403,
            _ => false,
        }
    }
}

/// The Hub: the resolve URL, or the CDN location it redirected to.
#[derive(Debug, Clone)]
pub(crate) struct HubSource {
    /// The client (cheap to clone).
    pub client: HubClient,
    /// Where the bytes are.
    pub url: String,
    /// `If-Range` validator of `url`, if known.
    pub validator: Option<String>,
    /// The file, for errors.
    pub location: FileLocation,
}

impl ByteSource for HubSource {
    fn open(&self, start: u64, end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            let response = self
                .client
                .get_range(
                    &self.url,
                    start,
                    end,
                    self.validator.as_deref(),
                    &self.location,
                )
                .await?;
            let status = response.status();
            if status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Ok(Opened::Unsatisfiable);
            }
            let is_html = is_html(response.headers());
            if is_html && !self.location.filename.ends_with(".html") {
                return Err(EmbeddingError::BadResponse {
                    url: self.name(),
                    reason: format!(
                        "HTTP {} with an HTML page instead of the file",
                        status.as_u16()
                    ),
                });
            }
            if status == StatusCode::PARTIAL_CONTENT {
                let Some((start, end, total)) = parse_content_range(response.headers()) else {
                    return Err(EmbeddingError::BadResponse {
                        url: self.name(),
                        reason: "206 without a usable Content-Range".to_owned(),
                    });
                };
                return Ok(Opened::Range {
                    body: Body::Http(response),
                    start,
                    end,
                    total,
                });
            }
            let length = response.content_length();
            Ok(Opened::Whole {
                body: Body::Http(response),
                length,
            })
        })
    }

    fn name(&self) -> String {
        strip_query(&self.url)
    }

    fn idle_timeout(&self) -> Duration {
        self.client.idle_timeout()
    }
}
