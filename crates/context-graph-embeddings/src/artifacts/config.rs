//! Configuration of the artifact manager, with defaults resolved like `huggingface_hub`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::environment::{self, EnvLookup, ProcessEnv};
use super::remote::mirror::MirrorConfig;
use super::remote::retry::RetryPolicy;
use super::transfer::adapt::ParallelSettings;

/// Configuration for the artifact manager.
///
/// Build it with [`from_env`](Self::from_env) (defaults resolved from `HF_*` variables like
/// `huggingface_hub`), [`from_lookup`](Self::from_lookup) (the same from any lookup) or
/// [`with_cache_dir`](Self::with_cache_dir), then set fields. There is deliberately no
/// `Default`: it would read the process environment without saying so.
///
/// Fields beyond the spec's (`endpoint` and below) are additions that real deployments need;
/// each defaults to what the Hugging Face ecosystem does. `download_timeout` is an **idle**
/// timeout (no byte for that long), never a total deadline: a 1.7 GB file on a slow link may
/// take as long as it takes while bytes keep arriving.
#[derive(Clone)]
pub struct ArtifactManagerConfig {
    /// The Hugging Face hub cache (`HF_HUB_CACHE`, default `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Whether the pipeline downloads missing models at start (else it fails with `MissingModels`).
    pub auto_download: bool,
    /// Whether present files without a valid verification stamp are re-hashed before being
    /// reported ready. Downloads are always hashed while streaming, whatever this says.
    pub verify_checksums: bool,
    /// How many files download at once.
    pub max_concurrent_downloads: usize,
    /// Idle timeout: the longest wait for the next byte (`HF_HUB_DOWNLOAD_TIMEOUT`).
    pub download_timeout: Duration,
    /// How many times a transient failure is retried (per stretch without progress).
    pub retry_attempts: u32,
    /// The Hub token. `None` falls back to `HF_TOKEN`, then the token file. Never printed:
    /// this type's `Debug` redacts it.
    pub hf_token: Option<String>,
    /// Whether `HF_TOKEN` and the token file are consulted when `hf_token` is `None`
    /// (off with `HF_HUB_DISABLE_IMPLICIT_TOKEN`).
    pub implicit_token: bool,
    /// The Hub's base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
    /// Timeout for a whole metadata request (HEAD, API) (`HF_HUB_ETAG_TIMEOUT`).
    pub metadata_timeout: Duration,
    /// Upper bound for the whole cache in bytes; `None` for no limit.
    pub max_cache_bytes: Option<u64>,
    /// A manifest file replacing the embedded one.
    pub manifest_path: Option<PathBuf>,
    /// No network at all: answer from the cache (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Snapshot entries as relative symlinks (default) or as copies (`HF_HUB_DISABLE_SYMLINKS`).
    pub use_symlinks: bool,
    /// Whether to refuse a batch that does not fit in the free disk space.
    pub check_disk_space: bool,
    /// Backoff schedule of retries.
    pub retry_policy: RetryPolicy,
    /// Smallest interval between two progress events of one download.
    pub progress_interval: Duration,
    /// Parallel ranged download of large files (connections per file, thresholds).
    pub parallel: ParallelSettings,
    /// A content-addressed mirror tried before the Hub (`CG_MODELS_MIRROR`).
    pub mirror: Option<MirrorConfig>,
    /// A PEM file of CA certificates trusted for the Hub, its CDN and the mirror, besides the
    /// operating system's store (`CG_MODELS_CA_BUNDLE`, `--ca-bundle`).
    pub ca_bundle: Option<PathBuf>,
    /// `SSL_CERT_FILE`: a PEM file of CA certificates, trusted the same way.
    pub ssl_cert_file: Option<PathBuf>,
    /// `SSL_CERT_DIR`: folders of PEM CA certificates, trusted the same way.
    pub ssl_cert_dirs: Vec<PathBuf>,
    /// Places on this machine where a model's files may already be (`CG_MODELS_ADOPT`, a
    /// `:`-separated list; `--adopt DIR`): another cache root (also one made with
    /// `HF_HUB_DISABLE_SYMLINKS`), or an `hf download --local-dir` folder. A file found there
    /// is copied in (a reflink where the file system offers one) and hashed against its
    /// planned digest before it is used; never trusted by name or size.
    pub adopt_from: Vec<PathBuf>,
    /// A registry auth file (`auths` as in `~/.docker/config.json`) read before the usual
    /// places (`REGISTRY_AUTH_FILE`, `~/.docker/config.json`) for OCI registries
    /// (`--registry-auth-file`).
    pub registry_auth_file: Option<PathBuf>,
}

impl ArtifactManagerConfig {
    /// Files hashed at once when several are verified: one per core of this machine.
    pub fn hashing_parallelism(&self) -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Defaults resolved from the process environment (`HF_HUB_CACHE`, `HF_HOME`,
    /// `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_SYMLINKS`, `HF_HUB_DOWNLOAD_TIMEOUT`,
    /// `HF_HUB_ETAG_TIMEOUT`). The token is resolved later, when the manager is built.
    pub fn from_env() -> Self {
        Self::from_lookup(&ProcessEnv)
    }

    /// Defaults resolved from any variable lookup.
    pub fn from_lookup(env: &dyn EnvLookup) -> Self {
        ArtifactManagerConfig {
            cache_dir: environment::hub_cache_dir(env),
            auto_download: true,
            verify_checksums: true,
            max_concurrent_downloads: 4,
            download_timeout: environment::seconds(env, "HF_HUB_DOWNLOAD_TIMEOUT")
                .unwrap_or(Duration::from_secs(30)),
            retry_attempts: 5,
            hf_token: None,
            implicit_token: !environment::is_true(env, "HF_HUB_DISABLE_IMPLICIT_TOKEN"),
            endpoint: environment::endpoint(env),
            connect_timeout: Duration::from_secs(10),
            metadata_timeout: environment::seconds(env, "HF_HUB_ETAG_TIMEOUT")
                .unwrap_or(Duration::from_secs(10)),
            max_cache_bytes: None,
            manifest_path: None,
            offline: environment::offline(env),
            use_symlinks: !environment::is_true(env, "HF_HUB_DISABLE_SYMLINKS"),
            check_disk_space: true,
            retry_policy: RetryPolicy::default(),
            progress_interval: Duration::from_millis(100),
            parallel: ParallelSettings::default(),
            mirror: MirrorConfig::from_env(env),
            ca_bundle: env.var(environment::CA_BUNDLE_ENV).map(PathBuf::from),
            ssl_cert_file: env.var(environment::SSL_CERT_FILE_ENV).map(PathBuf::from),
            ssl_cert_dirs: environment::path_list(env, environment::SSL_CERT_DIR_ENV),
            adopt_from: environment::path_list(env, environment::ADOPT_ENV),
            registry_auth_file: None,
        }
    }

    /// Environment defaults with another cache directory.
    pub fn with_cache_dir(cache_dir: impl Into<PathBuf>) -> Self {
        ArtifactManagerConfig {
            cache_dir: cache_dir.into(),
            ..Self::from_env()
        }
    }
}

impl fmt::Debug for ArtifactManagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactManagerConfig")
            .field("cache_dir", &self.cache_dir)
            .field("auto_download", &self.auto_download)
            .field("verify_checksums", &self.verify_checksums)
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("download_timeout", &self.download_timeout)
            .field("retry_attempts", &self.retry_attempts)
            .field("hf_token", &self.hf_token.as_ref().map(|_| "<redacted>"))
            .field("implicit_token", &self.implicit_token)
            .field("endpoint", &self.endpoint)
            .field("connect_timeout", &self.connect_timeout)
            .field("metadata_timeout", &self.metadata_timeout)
            .field("max_cache_bytes", &self.max_cache_bytes)
            .field("manifest_path", &self.manifest_path)
            .field("offline", &self.offline)
            .field("use_symlinks", &self.use_symlinks)
            .field("check_disk_space", &self.check_disk_space)
            .field("retry_policy", &self.retry_policy)
            .field("progress_interval", &self.progress_interval)
            .field("parallel", &self.parallel)
            .field("mirror", &self.mirror)
            .field("ca_bundle", &self.ca_bundle)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("ssl_cert_dirs", &self.ssl_cert_dirs)
            .field("adopt_from", &self.adopt_from)
            .field("registry_auth_file", &self.registry_auth_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let config = ArtifactManagerConfig {
            hf_token: Some("hf_secret_value_123".to_owned()),
            ..ArtifactManagerConfig::with_cache_dir("/tmp/x")
        };
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("hf_secret_value_123"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn environment_sets_defaults() {
        let env = |name: &str| match name {
            "HF_HOME" => Some("/hf".to_owned()),
            "HF_HUB_OFFLINE" => Some("1".to_owned()),
            "HF_HUB_DISABLE_SYMLINKS" => Some("true".to_owned()),
            "HF_HUB_DOWNLOAD_TIMEOUT" => Some("3".to_owned()),
            "HF_HUB_ETAG_TIMEOUT" => Some("4".to_owned()),
            "HF_ENDPOINT" => Some("http://mirror.local/".to_owned()),
            _ => None,
        };
        let config = ArtifactManagerConfig::from_lookup(&env);
        assert_eq!(config.cache_dir, PathBuf::from("/hf/hub"));
        assert!(config.offline);
        assert!(!config.use_symlinks);
        assert_eq!(config.download_timeout, Duration::from_secs(3));
        assert_eq!(config.metadata_timeout, Duration::from_secs(4));
        assert_eq!(config.endpoint, "http://mirror.local");
    }
}
