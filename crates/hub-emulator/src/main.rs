//! `hub-emulator serve`: a local Hugging Face Hub serving synthetic weights for every model of
//! a manifest, so the CLI can be tried, tested and benchmarked without internet.

// A command-line program: stdout carries the "listening" line, stderr the notes.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hub_emulator::manifest::{self, ManifestOptions};
use hub_emulator::{Fault, FaultRule, FaultTarget};

/// A local Hugging Face Hub for tests, benchmarks and offline demos.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve synthetic weights for every model of a manifest until Ctrl-C or SIGTERM.
    ///
    /// Each non-builtin manifest entry becomes a repo (its `repo_id`, at its pinned commit when
    /// `revision` is a 40-hex sha) holding a synthetic safetensors file at `filename` plus a small
    /// `config.json`. Files are generated in memory at start-up. Point clients at it with
    /// `HF_ENDPOINT=http://localhost:PORT`.
    #[command(after_long_help = "Examples:\n  \
        hub-emulator serve --write-manifest /tmp/synthetic-manifest.json\n  \
        hub-emulator serve --scale 1 --port 9000 --manifest my-models.json\n  \
        HF_ENDPOINT=http://localhost:8765 hf download intfloat/e5-large-v2")]
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Synthetic file size as a fraction of the real size (`size_bytes`, or an approximation
    /// when the manifest leaves it null); files are at least 1 KiB.
    #[arg(long, default_value_t = 0.01, value_name = "FACTOR")]
    scale: f64,

    /// Port of the Hub listener on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 8765)]
    port: u16,

    /// Port of the CDN listener that LFS downloads are redirected to [default: any free port].
    #[arg(long, value_name = "PORT")]
    cdn_port: Option<u16>,

    /// Model manifest to serve [default: the manifest compiled into this binary].
    #[arg(long, value_name = "PATH")]
    manifest: Option<PathBuf>,

    /// Write a manifest describing the synthetic files: `sha256`/`size_bytes` get the synthetic
    /// values where the input pinned them and stay null where it did not.
    #[arg(long, value_name = "OUT")]
    write_manifest: Option<PathBuf>,

    /// Pace every download body to this many bytes per second (per connection).
    #[arg(long, value_name = "BYTES_PER_SEC")]
    bandwidth_cap: Option<u64>,

    /// Gate every repo: 401 without a token, 403 with a token other than this one.
    #[arg(long, value_name = "TOKEN")]
    gate_token: Option<String>,

    /// Serve LFS files from the Hub host directly instead of redirecting to the CDN.
    #[arg(long)]
    no_cdn_redirect: bool,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    if !(args.scale.is_finite() && args.scale > 0.0) {
        bail!("--scale must be a positive number, got {}", args.scale);
    }
    let (text, source) = match &args.manifest {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("reading manifest {}", path.display()))?,
            path.display().to_string(),
        ),
        None if manifest::DEFAULT_MANIFEST_FOUND => (
            manifest::DEFAULT_MANIFEST.to_owned(),
            "built-in manifest".to_owned(),
        ),
        None => bail!(
            "no manifest was compiled into this binary \
             (crates/context-graph-embeddings/src/artifacts/manifests.json was missing at build time); \
             pass --manifest PATH"
        ),
    };
    let manifest: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {source}"))?;
    let options = ManifestOptions {
        scale: args.scale,
        gate_token: args.gate_token.clone(),
    };
    let served = manifest::hub_from_manifest(&manifest, &options)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("in {source}"))?;
    for note in &served.notes {
        eprintln!("note: {note}");
    }
    let hub = served
        .builder
        .port(args.port)
        .cdn_port(args.cdn_port.unwrap_or(0))
        .cdn_redirect(!args.no_cdn_redirect)
        .start()
        .with_context(|| format!("starting the emulator on port {}", args.port))?;
    if let Some(rate) = args.bandwidth_cap {
        hub.add_fault(FaultRule::new(
            FaultTarget::any(),
            Fault::BandwidthCap {
                bytes_per_sec: rate,
            },
        ));
    }
    if let Some(out) = &args.write_manifest {
        let synthetic = manifest::synthetic_manifest(&manifest, &hub);
        let text = serde_json::to_string_pretty(&synthetic)? + "\n";
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote synthetic manifest to {}", out.display());
    }
    for model in &served.models {
        let commit = hub
            .commit_of(&model.repo_id, &model.revision)
            .unwrap_or_default();
        eprintln!(
            "serving {:<20} {}/{} ({} bytes) at {commit}",
            model.model_id, model.repo_id, model.filename, model.size
        );
    }
    println!(
        "hub-emulator listening on {} (CDN {})",
        hub.endpoint(),
        hub.cdn_origin()
    );
    eprintln!("try: HF_ENDPOINT={} <client>", hub.endpoint());
    wait_for_shutdown_signal()?;
    eprintln!("shutting down");
    drop(hub);
    Ok(())
}

/// Blocks until Ctrl-C (SIGINT) or SIGTERM.
fn wait_for_shutdown_signal() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        #[cfg(unix)]
        {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result,
                _ = terminate.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    })?;
    Ok(())
}
