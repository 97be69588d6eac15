//! Turning the global options into the library's [`ArtifactManagerConfig`]: the environment
//! (through the library's own resolution) first, then whatever the command line overrides.

use std::time::Duration;

use context_graph_embeddings::artifacts::read_token_file;
use context_graph_embeddings::artifacts::{ArtifactManagerConfig, MirrorConfig};

use crate::cli::GlobalArgs;
use crate::failure::CliError;

/// The library configuration for these options. A token file that cannot be read, or an
/// empty token, is a usage error.
pub(crate) fn artifact_config(args: &GlobalArgs) -> Result<ArtifactManagerConfig, CliError> {
    let mut config = ArtifactManagerConfig::from_env();
    if let Some(dir) = &args.cache_dir {
        config.cache_dir = dir.clone();
    }
    if let Some(path) = &args.manifest {
        config.manifest_path = Some(path.clone());
    }
    if let Some(endpoint) = &args.endpoint {
        config.endpoint = endpoint.trim_end_matches('/').to_owned();
    }
    if let Some(token) = &args.token {
        if token.trim().is_empty() {
            return Err(CliError::usage(
                "--token is empty; give a Hub token (hf_...) or leave the option out",
            ));
        }
        config.hf_token = Some(token.trim().to_owned());
    }
    if let Some(path) = &args.token_file {
        let token = read_token_file(path).ok_or_else(|| {
            CliError::usage(format!(
                "cannot read a token from {} (missing, unreadable or empty); check the path given to --token-file",
                path.display()
            ))
        })?;
        config.hf_token = Some(token);
    }
    if let Some(url) = &args.mirror {
        let mut mirror = config
            .mirror
            .take()
            .unwrap_or_else(|| MirrorConfig::new(url.clone()));
        mirror.url = url.clone();
        mirror.write |= args.mirror_write;
        config.mirror = Some(mirror);
    }
    if args.no_mirror_fleet {
        if let Some(mirror) = config.mirror.as_mut() {
            mirror.fleet = None;
        }
    }
    if let Some(path) = &args.ca_bundle {
        config.ca_bundle = Some(path.clone());
    }
    if let Some(file) = &args.registry_auth_file {
        config.registry_auth_file = Some(file.clone());
    }
    if !args.adopt.is_empty() {
        config.adopt_from = args.adopt.clone();
    }
    config.offline |= args.offline;
    if let Some(n) = args.concurrency {
        config.max_concurrent_downloads = usize::from(n);
    }
    if let Some(bytes) = args.max_cache_size {
        config.max_cache_bytes = Some(bytes);
    }
    if let Some(secs) = args.timeout {
        config.download_timeout = Duration::from_secs_f64(secs);
    }
    if let Some(retries) = args.retries {
        config.retry_attempts = retries;
    }
    Ok(config)
}
