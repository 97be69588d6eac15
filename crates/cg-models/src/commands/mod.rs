//! The commands: each module turns one subcommand into calls of the library's
//! [`ModelArtifactManager`] and shows the result. This module builds the manager and owns
//! what every command shares: the final JSON report and model selection.

mod bundle;
mod clear;
mod ensure;
mod gc;
mod lock;
mod outdated;
mod push;
mod status;
mod verify;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use context_graph_embeddings::artifacts::TokenSource;
use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ManifestEntry, ModelArtifactManager, ReadinessReport,
};
use context_graph_embeddings::ModelId;
use serde::Serialize;

use crate::cli::{Cli, Command};
use crate::config::artifact_config;
use crate::failure::CliError;
use crate::metrics::MetricsFile;
use crate::output::Output;

/// Runs the command of `cli`; returns its exit code, or the error that ended it.
pub(crate) async fn run(cli: &Cli, output: &Output) -> Result<u8, CliError> {
    let config = artifact_config(&cli.global)?;
    let manager = ModelArtifactManager::new(config)?;
    describe(&manager, output);
    let metrics = MetricsFile::start(&manager, &cli.global, &cli.command)?;
    let recorder = metrics.as_ref().map(MetricsFile::recorder);
    let work: Pin<Box<dyn Future<Output = Result<u8, CliError>> + '_>> = match &cli.command {
        Command::Ensure(args) => Box::pin(ensure::run(&manager, output, args)),
        Command::Status(args) => Box::pin(status::run(&manager, output, args.files)),
        Command::Verify(args) => Box::pin(verify::run(&manager, output, args, recorder)),
        Command::Gc(args) => Box::pin(gc::run(&manager, output, args, cli.global.max_cache_size)),
        Command::Clear(args) => Box::pin(clear::run(&manager, output, args)),
        Command::Lock(args) => Box::pin(lock::run(&manager, output, args)),
        Command::Outdated(args) => Box::pin(outdated::run(&manager, output, args)),
        Command::Export(args) => Box::pin(bundle::export(&manager, output, args)),
        Command::Import(args) => Box::pin(bundle::import(&manager, output, args)),
        Command::Push(args) => Box::pin(push::run(&manager, output, args)),
    };
    match &metrics {
        Some(metrics) => metrics.run_while(&manager, output, work).await,
        None => work.await,
    }
}

/// With `-v`: where models come from and go to (never the token itself).
fn describe(manager: &ModelArtifactManager, output: &Output) {
    let config: &ArtifactManagerConfig = manager.config();
    let token = match manager.token_source() {
        Some(TokenSource::Explicit) => "given (--token or --token-file)",
        Some(TokenSource::Environment) => "from HF_TOKEN",
        Some(TokenSource::File) => "from the token file",
        None => "none",
    };
    output.detail(1, format!("manifest: {}", manager.manifest().origin));
    output.detail(1, format!("cache:    {}", config.cache_dir.display()));
    output.detail(
        1,
        format!(
            "endpoint: {}{}",
            config.endpoint,
            if config.offline {
                " (offline: not used)"
            } else {
                ""
            }
        ),
    );
    output.detail(1, format!("token:    {token}"));
    output.detail(
        2,
        format!(
            "downloads: {} at once, idle timeout {:?}, {} retries, cache limit {}",
            config.max_concurrent_downloads,
            config.download_timeout,
            config.retry_attempts,
            config
                .max_cache_bytes
                .map_or_else(|| "none".to_owned(), crate::size::format_size)
        ),
    );
}

/// The requested models, in manifest order without duplicates (all when none is named),
/// split into downloadable ones and built-ins.
fn select_models(
    manager: &ModelArtifactManager,
    named: &[ModelId],
) -> (Vec<ModelId>, Vec<ModelId>) {
    let mut artifacts = Vec::new();
    let mut builtins = Vec::new();
    for entry in &manager.manifest().entries {
        let model = entry.model_id();
        if !named.is_empty() && !named.contains(&model) {
            continue;
        }
        match entry {
            ManifestEntry::Artifact(_) => artifacts.push(model),
            ManifestEntry::Builtin(_) => builtins.push(model),
        }
    }
    (artifacts, builtins)
}

/// The final JSON object of every command: the readiness report and how the command ended.
#[derive(Serialize)]
struct JsonReport<'a> {
    command: &'a str,
    ok: bool,
    exit_code: u8,
    cache_dir: &'a Path,
    manifest: &'a str,
    #[serde(flatten)]
    readiness: &'a ReadinessReport,
}

/// Emits the final `report` object (JSON mode only).
/// The one notice that verification stamps could not be written (a read-only cache), for
/// commands that do not draw progress events (where it arrives as a `Warning` event).
fn warn_unrecorded_stamps(manager: &ModelArtifactManager, output: &Output) {
    if let Some(notice) = manager.unrecorded_stamps() {
        output.warn(notice.message());
    }
}

fn emit_report(manager: &ModelArtifactManager, output: &Output, command: &str, exit_code: u8) {
    let readiness = manager.readiness_report();
    output.json(
        "report",
        &JsonReport {
            command,
            ok: exit_code == 0,
            exit_code,
            cache_dir: &manager.config().cache_dir,
            manifest: &manager.manifest().origin,
            readiness: &readiness,
        },
    );
}
