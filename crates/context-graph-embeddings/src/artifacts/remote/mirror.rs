//! A content-addressed pull-through mirror on S3-compatible object storage (AWS S3, GCS in
//! S3 mode, Ceph, Garage, MinIO): objects `<prefix>/<sha256>` hold verified blobs, and
//! `<prefix>/git-sha1/<oid>` the small regular files of a set (`config.json`, the tokenizer)
//! by their git blob id, the digest the Hub gives for them.
//!
//! A node reads a file from the mirror only when the expected SHA-256 is known (pinned, or
//! advertised by the Hub), and every byte is verified exactly as bytes from the Hub are: a
//! mirror can never poison a cache. With writing enabled, a blob fetched from the Hub is
//! uploaded once verified, so the next node reads it from the mirror. Two nodes uploading the
//! same object race harmlessly: the content is the same, and an object put is atomic.
//!
//! Credentials come from the usual places: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`/`AWS_REGION`, `AWS_ENDPOINT_URL`, else the
//! `[default]` (or `AWS_PROFILE`) section of `~/.aws/credentials`. They never appear in logs
//! or errors.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart,
};

use super::protocol::error_chain;
use super::source::{Body, BoxFuture, ByteSource, Opened};
use super::tls::TrustRoots;
use crate::artifacts::blocking::run_blocking;
use crate::artifacts::environment::{self, EnvLookup, ProcessEnv};
use crate::artifacts::hash::{ContentHasher, DigestKind};
use crate::error::{EmbeddingError, EmbeddingResult};

/// Folder of the objects named by a git blob id.
const GIT_SHA1_FOLDER: &str = "git-sha1/";

/// The name of a blob's object under the mirror's prefix: its SHA-256, or `git-sha1/<oid>`
/// for a regular file known by its git blob id.
pub(crate) fn object_name(kind: DigestKind, digest: &str) -> String {
    match kind {
        DigestKind::Sha256 => digest.to_owned(),
        DigestKind::GitBlobSha1 => format!("{GIT_SHA1_FOLDER}{digest}"),
    }
}

/// Part size of multipart uploads.
const UPLOAD_PART_BYTES: usize = 16 * 1024 * 1024;

/// Where the mirror is and how to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// Endpoint of an S3-compatible store (`AWS_ENDPOINT_URL`), e.g. `http://127.0.0.1:3900`.
    pub endpoint: Option<String>,
    /// Region (`AWS_REGION` / `AWS_DEFAULT_REGION`; Garage's default is `garage`).
    pub region: Option<String>,
    /// Access key id; `None`: from the environment or the credentials file.
    pub access_key_id: Option<String>,
    /// Secret key; `None`: from the environment or the credentials file. Never printed.
    pub secret_access_key: Option<String>,
    /// Upload blobs fetched from the Hub, once verified (pull-through).
    pub write: bool,
    /// How long the store's client keeps retrying one request before the mirror counts as
    /// failed and the next source is tried.
    pub retry_timeout: Duration,
}

impl fmt::Debug for MirrorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("write", &self.write)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

impl MirrorConfig {
    /// A mirror at `url` with everything else from the environment.
    pub fn new(url: impl Into<String>) -> Self {
        MirrorConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            write: false,
            retry_timeout: Duration::from_secs(20),
        }
    }

    /// The mirror named by `CG_MODELS_MIRROR` (`s3://bucket/prefix`), writable when
    /// `CG_MODELS_MIRROR_WRITE` is true.
    pub fn from_env(env: &dyn EnvLookup) -> Option<Self> {
        let url = env.var("CG_MODELS_MIRROR")?;
        Some(MirrorConfig {
            write: environment::is_true(env, "CG_MODELS_MIRROR_WRITE"),
            ..MirrorConfig::new(url)
        })
    }
}

/// A connected mirror.
#[derive(Clone)]
pub struct Mirror {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    write: bool,
}

impl fmt::Debug for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("write", &self.write)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Builds the store client (no request is made yet).
    pub fn connect(config: &MirrorConfig) -> EmbeddingResult<Mirror> {
        Self::connect_with(config, &ProcessEnv)
    }

    /// Like [`connect`](Self::connect), reading credentials from `env`.
    pub fn connect_with(config: &MirrorConfig, env: &dyn EnvLookup) -> EmbeddingResult<Mirror> {
        Self::connect_trusting(config, env, &TrustRoots::default())
    }

    /// Like [`connect_with`](Self::connect_with), trusting `trust`'s CA certificates besides
    /// the operating system's store (the manager passes the same ones as the Hub client's).
    pub(crate) fn connect_trusting(
        config: &MirrorConfig,
        env: &dyn EnvLookup,
        trust: &TrustRoots,
    ) -> EmbeddingResult<Mirror> {
        let rest = config.url.strip_prefix("s3://").ok_or_else(|| {
            EmbeddingError::Config(format!(
                "mirror `{}` must be an s3://bucket[/prefix] URL",
                config.url
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(EmbeddingError::Config(format!(
                "mirror `{}` names no bucket",
                config.url
            )));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        let file_credentials = credentials_file(env);
        let access_key = config
            .access_key_id
            .clone()
            .or_else(|| env.var("AWS_ACCESS_KEY_ID"))
            .or_else(|| file_credentials.as_ref().map(|c| c.0.clone()));
        let secret_key = config
            .secret_access_key
            .clone()
            .or_else(|| env.var("AWS_SECRET_ACCESS_KEY"))
            .or_else(|| file_credentials.as_ref().map(|c| c.1.clone()));
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| env.var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env.var("AWS_ENDPOINT_URL"))
            .or_else(|| env.var("AWS_ENDPOINT"));
        let region = config
            .region
            .clone()
            .or_else(|| env.var("AWS_REGION"))
            .or_else(|| env.var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        // The client's default 30 s limit covers a whole request, body included: a slow
        // link would cut every read and fail every 16 MB upload part. Reads have the
        // downloader's idle timeout; a whole request gets ten minutes.
        let mut client_options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(600));
        for certificate in trust.for_object_store() {
            client_options = client_options.with_root_certificate(certificate);
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_client_options(client_options)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: config.retry_timeout,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(key), Some(secret)) = (access_key, secret_key) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        if let Some(token) = env.var("AWS_SESSION_TOKEN") {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| EmbeddingError::Config(format!("mirror `{}`: {e}", config.url)))?;
        Ok(Mirror {
            store: Arc::new(store),
            bucket: bucket.to_owned(),
            prefix,
            write: config.write,
        })
    }

    /// Whether verified Hub downloads are uploaded.
    pub fn is_writable(&self) -> bool {
        self.write
    }

    fn key(&self, object: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(object)
        } else {
            ObjectPath::from(format!("{}/{object}", self.prefix))
        }
    }

    /// `s3://bucket/prefix/<object>` (`object`: the SHA-256 of an LFS blob, or
    /// `git-sha1/<oid>`).
    pub fn object_url(&self, object: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(object))
    }

    /// The object of a blob (named as in [`object_url`](Self::object_url)), as a byte source.
    pub fn source(&self, object: &str, idle_timeout: Duration) -> ObjectSource {
        ObjectSource {
            store: self.store.clone(),
            path: self.key(object),
            name: self.object_url(object),
            idle_timeout,
        }
    }

    /// Uploads a verified blob unless the object is already there with exactly these bytes.
    /// An object of the right size is read and hashed before it is kept: a corrupted one (the
    /// reason a node fell back to the Hub) is replaced, not left to fail every later node.
    pub async fn upload(&self, blob: &Path, object: &str, size: u64) -> EmbeddingResult<bool> {
        let key = self.key(object);
        let name = self.object_url(object);
        if let Ok(meta) = self.store.head(&key).await {
            if meta.size == size && self.holds(&key, object).await {
                return Ok(false);
            }
            tracing::warn!(object = %name, "the mirror's object is not the blob; replacing it");
        }
        let failed = |e: object_store::Error| EmbeddingError::Mirror {
            url: name.clone(),
            message: format!("upload failed: {}", error_chain(&e)),
        };
        let upload = self.store.put_multipart(&key).await.map_err(failed)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
        let mut file = {
            let to_open = blob.to_path_buf();
            run_blocking(move || std::fs::File::open(to_open))
                .await
                .map_err(|e| EmbeddingError::io("cannot open", blob, e))?
        };
        loop {
            let (returned, buffer) = run_blocking(move || {
                use std::io::Read;
                let mut buffer = vec![0u8; UPLOAD_PART_BYTES];
                let mut filled = 0;
                while filled < buffer.len() {
                    let read = file.read(&mut buffer[filled..])?;
                    if read == 0 {
                        break;
                    }
                    filled += read;
                }
                buffer.truncate(filled);
                Ok((file, buffer))
            })
            .await
            .map_err(|e| EmbeddingError::io("cannot read", blob, e))?;
            file = returned;
            if buffer.is_empty() {
                break;
            }
            writer.wait_for_capacity(2).await.map_err(failed)?;
            writer.write(&buffer);
        }
        writer.finish().await.map_err(failed)?;
        Ok(true)
    }

    /// Whether the object at `key` has the digest its `name` says (any failure to read it
    /// counts as no).
    async fn holds(&self, key: &ObjectPath, name: &str) -> bool {
        let (kind, digest) = match name.strip_prefix(GIT_SHA1_FOLDER) {
            Some(oid) => (DigestKind::GitBlobSha1, oid),
            None => (DigestKind::Sha256, name),
        };
        let Ok(result) = self.store.get(key).await else {
            return false;
        };
        let mut hasher = ContentHasher::new(kind, Some(result.meta.size));
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => hasher.update(&bytes),
                Err(_) => return false,
            }
        }
        hasher.hex().eq_ignore_ascii_case(digest)
    }
}

/// One object of the mirror, read by range.
pub struct ObjectSource {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    name: String,
    idle_timeout: Duration,
}

impl ByteSource for ObjectSource {
    fn open(&self, start: u64, end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            let range = match end {
                Some(end) => Some(GetRange::Bounded(start..end + 1)),
                None if start > 0 => Some(GetRange::Offset(start)),
                None => None,
            };
            let options = GetOptions {
                range: range.clone(),
                ..GetOptions::default()
            };
            let result = match self.store.get_opts(&self.path, options).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(EmbeddingError::MirrorMissing {
                        url: self.name.clone(),
                    })
                }
                Err(error) if is_range_error(&error) => return Ok(Opened::Unsatisfiable),
                Err(error) => {
                    return Err(EmbeddingError::Mirror {
                        url: self.name.clone(),
                        message: error_chain(&error),
                    })
                }
            };
            let size = result.meta.size;
            let got = result.range.clone();
            let name = self.name.clone();
            let stream = result.into_stream().map(move |chunk| {
                chunk.map_err(|e| EmbeddingError::Network {
                    url: name.clone(),
                    message: error_chain(&e),
                })
            });
            let body = Body::Stream(Box::pin(stream));
            if range.is_none() {
                return Ok(Opened::Whole {
                    body,
                    length: Some(size),
                });
            }
            if got.end <= got.start {
                return Ok(Opened::Unsatisfiable);
            }
            Ok(Opened::Range {
                body,
                start: got.start,
                end: got.end - 1,
                total: Some(size),
            })
        })
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    fn is_range_refusal(&self, _error: &EmbeddingError) -> bool {
        false
    }
}

fn is_range_error(error: &object_store::Error) -> bool {
    let text = error.to_string();
    text.contains("416")
        || text.contains("InvalidRange")
        || text.contains("Range") && text.contains("not satisf")
}

/// Access key and secret from `~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`), in the
/// section `AWS_PROFILE` or `default`.
fn credentials_file(env: &dyn EnvLookup) -> Option<(String, String)> {
    let path = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            env.var("HOME")
                .map(|h| Path::new(&h).join(".aws/credentials"))
        })?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = env
        .var("AWS_PROFILE")
        .unwrap_or_else(|| "default".to_owned());
    let mut in_section = false;
    let (mut key, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line.trim_matches(['[', ']']).trim() == profile;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            match name.trim() {
                "aws_access_key_id" => key = Some(value.trim().to_owned()),
                "aws_secret_access_key" => secret = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    Some((key?, secret?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_profile_section() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n[ci]\naws_access_key_id=AKCI\naws_secret_access_key=s2\n",
        )
        .unwrap();
        let path = file.to_str().unwrap().to_owned();
        let env = |name: &str| match name {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(path.clone()),
            "AWS_PROFILE" => Some("ci".to_owned()),
            _ => None,
        };
        assert_eq!(
            credentials_file(&env),
            Some(("AKCI".to_owned(), "s2".to_owned()))
        );
    }

    #[test]
    fn urls_are_checked_and_secrets_never_printed() {
        let config = MirrorConfig {
            secret_access_key: Some("very-secret".to_owned()),
            access_key_id: Some("AKIDSHOWN".to_owned()),
            endpoint: Some("http://127.0.0.1:1".to_owned()),
            ..MirrorConfig::new("s3://models/cache")
        };
        assert!(!format!("{config:?}").contains("very-secret"));
        let mirror = Mirror::connect_with(&config, &|_: &str| None).unwrap();
        assert_eq!(
            mirror.object_url(&"a".repeat(64)),
            format!("s3://models/cache/{}", "a".repeat(64))
        );
        assert!(!format!("{mirror:?}").contains("very-secret"));
        let bad =
            Mirror::connect_with(&MirrorConfig::new("http://x"), &|_: &str| None).unwrap_err();
        assert!(bad.to_string().contains("s3://"), "{bad}");
    }
}
