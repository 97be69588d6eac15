//! `hub-emulator serve`: a local Hugging Face Hub serving synthetic weights for every model of
//! a manifest, so the CLI can be tried, tested and benchmarked without internet.

// A command-line program: stdout carries the "listening" line, stderr the notes.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hub_emulator::manifest::{self, ManifestOptions};
use hub_emulator::{
    Alpn, CdnTls, EdgeMix, Fault, FaultRule, FaultTarget, HubBuilder, MirrorQuirks, RepoSpec,
};

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
    /// `config.json` and the companion files of a sentence-transformers repo. Files are generated
    /// in memory at start-up. With `--repo-dir DIR --repo-id ID`, a folder of real files is
    /// served as repo ID (alone, or beside the repos of `--manifest` when that is given, in place
    /// of a manifest repo with the same id). Point clients at it with
    /// `HF_ENDPOINT=http://localhost:PORT`.
    #[command(after_long_help = "Examples:\n  \
        hub-emulator serve --write-manifest /tmp/synthetic-manifest.json\n  \
        hub-emulator serve --scale 1 --port 9000 --manifest my-models.json\n  \
        hub-emulator serve --repo-dir target/real-model/all-MiniLM-L6-v2 \
        --repo-id sentence-transformers/all-MiniLM-L6-v2 \
        --revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41\n  \
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

    /// Serve the files under this folder as a repo (needs --repo-id); symbolic links are
    /// skipped, LFS or regular by extension like the Hub's default `.gitattributes`.
    #[arg(long, value_name = "DIR", requires = "repo_id")]
    repo_dir: Option<PathBuf>,

    /// Repo id (`org/name`) the --repo-dir folder is served as.
    #[arg(long, value_name = "ID", requires = "repo_dir")]
    repo_id: Option<String>,

    /// Commit sha (40 hex digits) of the --repo-dir repo [default: derived from its files].
    #[arg(long, value_name = "COMMIT", requires = "repo_dir")]
    revision: Option<String>,

    /// Signed CDN URLs expire this many seconds after the redirect (the CDN then answers 403
    /// "Request has expired") [default: 3600, like the Hub].
    #[arg(long, value_name = "SECS")]
    cdn_url_ttl: Option<u64>,

    /// Behave like JFrog Artifactory's Hugging Face remote: no `X-Repo-Commit` header.
    #[arg(long)]
    omit_repo_commit: bool,

    /// Leave `X-Linked-Etag` out of LFS resolve answers, like some mirrors.
    #[arg(long)]
    omit_linked_etag: bool,

    /// Answer 400 to requests with query parameters the emulator does not use, like some mirrors.
    #[arg(long)]
    reject_unknown_query: bool,

    /// Serve the CDN over TLS (HTTPS, HTTP/2 offered by ALPN beside HTTP/1.1) with a
    /// certificate for 127.0.0.1 signed by a CA made at start-up, and write that CA (PEM) to
    /// this file for clients to trust (e.g. `SSL_CERT_FILE` or `--ca-bundle`).
    #[arg(long, value_name = "CA_OUT")]
    cdn_tls_ca: Option<PathBuf>,

    /// With --cdn-tls-ca: offer only HTTP/1.1 by ALPN.
    #[arg(long, requires = "cdn_tls_ca")]
    cdn_http1_only: bool,

    /// Pace each CDN TCP connection (all its responses and HTTP/2 streams together) at a rate
    /// drawn, per new connection, from this mix of edges: `RATE[:WEIGHT],…`, e.g.
    /// `20MB/s` (every connection capped at 20 MB/s) or `4MB/s:2,38MB/s:1` (two thirds slow).
    #[arg(long, value_name = "MIX", value_parser = parse_edge_mix)]
    edge_mix: Option<EdgeMix>,

    /// Seed of the --edge-mix draws (the same seed gives the same edges to the same
    /// connection numbers).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "edge_mix")]
    edge_seed: u64,
}

fn parse_edge_mix(text: &str) -> Result<EdgeMix, String> {
    text.parse()
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
    let dir_repo = match (&args.repo_dir, &args.repo_id) {
        (Some(dir), Some(id)) => Some(dir_repo(dir, id, args.revision.as_deref())?),
        _ => None,
    };
    // With --repo-dir and no --manifest, only the folder is served.
    let loaded = if dir_repo.is_some() && args.manifest.is_none() {
        None
    } else {
        Some(load_manifest(&args)?)
    };
    let mut builder = HubBuilder::new();
    let mut models = Vec::new();
    if let Some((manifest, source)) = &loaded {
        let options = ManifestOptions {
            scale: args.scale,
            gate_token: args.gate_token.clone(),
        };
        let served = manifest::hub_from_manifest(manifest, &options)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in {source}"))?;
        for note in &served.notes {
            eprintln!("note: {note}");
        }
        builder = served.builder;
        models = served.models;
    }
    let dir_repo_id = dir_repo.as_ref().map(|spec| spec.repo_id().to_owned());
    if let Some(mut spec) = dir_repo {
        if let Some(token) = &args.gate_token {
            spec = spec.gated(&[token.as_str()]);
        }
        builder = builder.repo(spec);
    }
    let mut builder = builder
        .port(args.port)
        .cdn_port(args.cdn_port.unwrap_or(0))
        .cdn_redirect(!args.no_cdn_redirect)
        .mirror_quirks(MirrorQuirks {
            omit_repo_commit: args.omit_repo_commit,
            omit_linked_etag: args.omit_linked_etag,
            reject_unknown_query: args.reject_unknown_query,
        });
    if let Some(secs) = args.cdn_url_ttl {
        builder = builder.cdn_url_ttl(std::time::Duration::from_secs(secs));
    }
    if let Some(edges) = &args.edge_mix {
        builder = builder.edge_mix(edges.clone().seed(args.edge_seed));
        eprintln!(
            "CDN connections paced from the edge mix {edges} (seed {})",
            args.edge_seed
        );
    }
    if let Some(ca_out) = &args.cdn_tls_ca {
        let alpn = if args.cdn_http1_only {
            Alpn::Http1Only
        } else {
            Alpn::Http2AndHttp1
        };
        let tls = CdnTls::generate()
            .context("making the CDN's TLS certificate")?
            .alpn(alpn);
        std::fs::write(ca_out, tls.ca_pem())
            .with_context(|| format!("writing the CA to {}", ca_out.display()))?;
        eprintln!("CDN over TLS ({alpn:?}); its CA is in {}", ca_out.display());
        builder = builder.cdn_tls(tls);
    }
    let hub = builder
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
        let Some((manifest, _)) = &loaded else {
            bail!("--write-manifest needs a manifest: pass --manifest PATH with --repo-dir");
        };
        let synthetic = manifest::synthetic_manifest(manifest, &hub);
        let text = serde_json::to_string_pretty(&synthetic)? + "\n";
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote synthetic manifest to {}", out.display());
    }
    for model in &models {
        let commit = hub
            .commit_of(&model.repo_id, &model.revision)
            .unwrap_or_default();
        eprintln!(
            "serving {:<20} {}/{} ({} bytes) at {commit}",
            model.model_id, model.repo_id, model.filename, model.size
        );
    }
    if let Some(id) = &dir_repo_id {
        let commit = hub.commit_of(id, "main").unwrap_or_default();
        eprintln!(
            "serving {id} from {} at {commit}",
            args.repo_dir
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
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

/// The manifest to serve and where it came from.
fn load_manifest(args: &ServeArgs) -> Result<(serde_json::Value, String)> {
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
             pass --manifest PATH, or serve a folder with --repo-dir DIR --repo-id ID"
        ),
    };
    let manifest = serde_json::from_str(&text).with_context(|| format!("parsing {source}"))?;
    Ok((manifest, source))
}

/// The repo for `--repo-dir`.
fn dir_repo(dir: &std::path::Path, repo_id: &str, revision: Option<&str>) -> Result<RepoSpec> {
    if repo_id.trim_matches('/').is_empty() {
        bail!("--repo-id must name a repo, like org/name");
    }
    let mut spec = RepoSpec::from_dir(repo_id, dir)
        .with_context(|| format!("reading --repo-dir {}", dir.display()))?;
    if let Some(revision) = revision {
        if !hub_emulator::is_commit_sha(revision) {
            bail!("--revision must be a 40-hex commit sha, got {revision:?}");
        }
        spec = spec.commit_sha(revision);
    }
    Ok(spec)
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
