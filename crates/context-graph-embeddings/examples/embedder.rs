//! What an embedding service does at start-up, written the obvious way: configure the
//! artifact manager (cache folder, manifest, endpoint), subscribe to its progress and print
//! it, ensure every model, read the readiness report, start the pipeline on the same
//! configuration, and open one model's files from the registry.
//!
//! ```sh
//! cargo run -p context-graph-embeddings --example embedder -- \
//!     [--cache-dir DIR] [--manifest FILE] [--endpoint URL]
//! ```
//!
//! Without options everything comes from the environment, like `huggingface_hub`
//! (`HF_HUB_CACHE`/`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`) and the built-in
//! manifest. CI runs [`run`] against the Hub emulator (`tests/it/artifacts/example.rs`), so this
//! file cannot rot.

// A program: it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ModelArtifactManager, ProgressKind, ReadinessState,
};
use context_graph_embeddings::pipeline::EmbeddingPipeline;
use context_graph_embeddings::registry::RegisteredModel;
use context_graph_embeddings::{EmbeddingConfig, EmbeddingResult, ModelId};
use tokio::sync::broadcast::error::RecvError;

/// Where the program's lines go (stdout in `main`; a buffer in the test).
pub type Say = Arc<dyn Fn(String) + Send + Sync>;

/// Start-up: ensure, report, start the pipeline, open one model. Returns the pipeline and the
/// model whose files were opened.
pub async fn run(
    config: ArtifactManagerConfig,
    say: Say,
) -> EmbeddingResult<(EmbeddingPipeline, Option<ModelId>)> {
    // 1. The artifact manager, and its progress printed as it comes.
    let manager = ModelArtifactManager::new(config.clone())?;
    let mut progress = manager.subscribe_progress();
    let printer = {
        let say = say.clone();
        tokio::spawn(async move {
            loop {
                match progress.recv().await {
                    Ok(event) => match event.kind {
                        ProgressKind::Started { resumed_from } => say(format!(
                            "{}: downloading {} bytes (resuming at {resumed_from})",
                            event.model_id, event.total_bytes
                        )),
                        ProgressKind::Retrying {
                            attempt, reason, ..
                        } => say(format!("{}: retry {attempt}: {reason}", event.model_id)),
                        ProgressKind::Completed { path, outcome, .. } => say(format!(
                            "{}: {outcome:?} {}",
                            event.model_id,
                            path.display()
                        )),
                        ProgressKind::Failed { error } => {
                            say(format!("{}: failed: {error}", event.model_id))
                        }
                        ProgressKind::Warning { message } => {
                            say(format!("{}: warning: {message}", event.model_id))
                        }
                        // Byte counts: a service would feed a gauge; print none of them here.
                        _ => {}
                    },
                    // A slow subscriber loses the oldest events; downloads never wait for it.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                }
            }
        })
    };

    // 2. Step 0 of the pipeline, done here so its progress shows: download what is missing,
    //    hash what is unverified. One error lists every model that failed.
    let ensured = manager.ensure_all_models().await;

    // 3. The readiness report: metadata only, no hashing, no network.
    let report = manager.readiness_report();
    say(format!(
        "{} of {} models ready ({} bytes on disk)",
        report.ready_models.len(),
        report.models.len(),
        report.downloaded_bytes
    ));
    for model in &report.models {
        if model.state != ReadinessState::Ready && model.state != ReadinessState::Builtin {
            say(format!(
                "  {} is {:?}: {}",
                model.model_id,
                model.state,
                model.error.as_deref().unwrap_or("-")
            ));
        }
    }
    ensured?;

    // 4. The pipeline on the same configuration. Its step 0 finds every model verified
    //    (no download, no network), and its registry opens exactly what the artifact manager
    //    verified in that one cache. (`EmbeddingPipeline::with_manager(config, &manager)`
    //    reuses this manager instead, e.g. to keep its progress subscription.)
    drop(manager);
    let _ = printer.await;
    let pipeline = EmbeddingPipeline::new(EmbeddingConfig::new(config)).await?;
    say(format!(
        "pipeline started: {} models registered",
        pipeline.registry().len()
    ));

    // 5. One model's files, as a loader would take them.
    let mut opened = None;
    if let Some((
        model_id,
        RegisteredModel::Weights {
            path,
            format,
            tensor_count,
            files,
            tokenizer,
            ..
        },
    )) = pipeline
        .registry()
        .iter()
        .find(|(_, m)| matches!(m, RegisteredModel::Weights { .. }))
    {
        say(format!(
            "{model_id}: {format:?} weights {} ({} tensors)",
            path.display(),
            tensor_count.map_or_else(|| "unchecked".to_owned(), |n| n.to_string())
        ));
        for file in files {
            say(format!("{model_id}:   file {}", file.display()));
        }
        if let Some(tokenizer) = tokenizer {
            say(format!(
                "{model_id}:   tokenizer of {} tokens",
                tokenizer.vocab_size
            ));
        }
        opened = Some(model_id);
    }
    Ok((pipeline, opened))
}

fn main() -> ExitCode {
    let mut config = ArtifactManagerConfig::from_env();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let parsed = match arg.as_str() {
            "--cache-dir" => value().map(|v| config.cache_dir = PathBuf::from(v)),
            "--manifest" => value().map(|v| config.manifest_path = Some(PathBuf::from(v))),
            "--endpoint" => value().map(|v| config.endpoint = v.trim_end_matches('/').to_owned()),
            other => Err(format!(
                "unknown argument {other}; usage: embedder [--cache-dir DIR] [--manifest FILE] [--endpoint URL]"
            )),
        };
        if let Err(message) = parsed {
            eprintln!("embedder: {message}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("embedder: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let say: Say = Arc::new(|line| println!("{line}"));
    match runtime.block_on(run(config, say)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            // Every error says what failed and what to do (see the crate docs, "Errors").
            eprintln!("embedder: {error}");
            ExitCode::FAILURE
        }
    }
}
