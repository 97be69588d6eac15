//! Where a blob's bytes come from. The downloader's resume, verification and parallel ranges
//! work the same over any [`ByteSource`]: the Hub (resolve URL or the CDN it redirects to)
//! or a content-addressed mirror. A source only opens byte ranges; it never decides what is
//! trusted: every byte from every source is hashed and checked the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use reqwest::StatusCode;

use super::client::HubClient;
use super::protocol::error_chain;
use super::protocol::{is_html, parse_content_range, signed_url_expired, strip_query, RemoteFile};
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
///
/// A CDN location is a signed URL that expires (`Expires=`, `X-Amz-Expires=`; an hour on the
/// Hub). Before a request to a URL already past its expiry, and after a CDN answers 403 or 400
/// to it, the file is resolved on the Hub again for a fresh URL and the request goes to that
/// one, from the same byte: neither a long download nor a resume the next day starts over.
/// Only the Hub's own refusal (or a second refusal of a fresh URL) ends the download.
#[derive(Debug)]
pub(crate) struct HubSource {
    client: HubClient,
    target: Mutex<Target>,
    etag: String,
    location: FileLocation,
}

#[derive(Debug, Clone)]
struct Target {
    url: String,
    validator: Option<String>,
}

impl HubSource {
    /// The bytes of `remote`, as the Hub described them.
    pub(crate) fn new(client: HubClient, remote: &RemoteFile, location: FileLocation) -> Self {
        HubSource {
            client,
            target: Mutex::new(Target {
                url: remote.download_url.clone(),
                validator: remote.validator.clone(),
            }),
            etag: remote.etag.clone(),
            location,
        }
    }

    fn current(&self) -> Target {
        match self.target.lock() {
            Ok(target) => target.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks the Hub for a fresh location of the file, unless another connection already
    /// replaced `stale`. A Hub refusal is returned as it is (fatal).
    async fn refresh(&self, stale: &str, why: &str) -> EmbeddingResult<Target> {
        let current = self.current();
        if current.url != stale {
            return Ok(current);
        }
        tracing::info!(file = %self.location, url = %strip_query(stale), %why, "signed CDN URL no longer valid; asking the Hub for a fresh one");
        let remote = self.client.head_file(&self.location).await?;
        if remote.etag != self.etag {
            return Err(EmbeddingError::Protocol {
                location: self.location.clone(),
                reason: format!(
                    "the file changed on the Hub during the download (was {}, now {}); run again to fetch the new version",
                    self.etag, remote.etag
                ),
            });
        }
        let fresh = Target {
            url: remote.download_url,
            validator: remote.validator,
        };
        if let Ok(mut target) = self.target.lock() {
            *target = fresh.clone();
        }
        Ok(fresh)
    }

    async fn get(
        &self,
        target: &Target,
        start: u64,
        end: Option<u64>,
    ) -> EmbeddingResult<reqwest::Response> {
        self.client
            .get_range(
                &target.url,
                start,
                end,
                target.validator.as_deref(),
                &self.location,
            )
            .await
    }
}

/// Whether an error is a CDN's refusal of a signed URL (expired, or its signature no longer
/// accepted): S3 and CloudFront answer 403, some stores 400.
fn is_signed_url_refusal(error: &EmbeddingError) -> bool {
    matches!(error, EmbeddingError::HubRefused { refusal, .. } if matches!(refusal.status, 400 | 403))
}

impl ByteSource for HubSource {
    fn open(&self, start: u64, end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            let mut target = self.current();
            let off_hub = !self.client.is_hub_url(&target.url);
            if off_hub && signed_url_expired(&target.url, unix_now()) {
                target = self.refresh(&target.url, "past its expiry").await?;
            }
            let response = match self.get(&target, start, end).await {
                Err(error) if off_hub && is_signed_url_refusal(&error) => {
                    target = self.refresh(&target.url, &error.to_string()).await?;
                    self.get(&target, start, end).await?
                }
                other => other?,
            };
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
        strip_query(&self.current().url)
    }

    fn idle_timeout(&self) -> Duration {
        self.client.idle_timeout()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
