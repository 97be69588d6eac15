//! `hf_hub_fetch`: the hf-hub contender of `cg-bench`. Downloads files into a Hugging Face
//! cache with the `hf-hub` crate's async API (`HFRepository::download_file`), `--workers`
//! files at once, the way its `snapshot_download` does (`buffer_unordered(max_workers)`).
//!
//! ```text
//! hf_hub_fetch --endpoint http://localhost:8765 --cache-dir /tmp/cache --workers 8 \
//!   '[{"repo_id": "org/name", "revision": "<commit>", "filename": "model.safetensors"}]'
//! ```
//!
//! Prints each cached path; exits 1 on the first failure.

// A command-line program: stdout carries the paths, stderr the error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use hf_hub::{split_id, HFClient};

/// Download files with the hf-hub crate (benchmark helper).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Hub base URL.
    #[arg(long)]
    endpoint: String,
    /// Hugging Face hub cache to download into.
    #[arg(long)]
    cache_dir: PathBuf,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// JSON array of `{"repo_id", "revision", "filename"}`.
    files: String,
}

/// One file to fetch.
#[derive(serde::Deserialize)]
struct FileArg {
    repo_id: String,
    revision: String,
    filename: String,
}

#[tokio::main]
async fn main() {
    if let Err(error) = run(Args::parse()).await {
        eprintln!("hf_hub_fetch: {error:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let files: Vec<FileArg> = serde_json::from_str(&args.files).context("parsing the file list")?;
    let client = HFClient::builder()
        .endpoint(&args.endpoint)
        .cache_dir(&args.cache_dir)
        .build()
        .context("building the hf-hub client")?;
    let paths: Vec<PathBuf> = stream::iter(files)
        .map(|file| {
            let client = client.clone();
            async move {
                let (owner, name) = split_id(&file.repo_id);
                client
                    .model(owner, name)
                    .download_file()
                    .filename(&file.filename)
                    .revision(&file.revision)
                    .send()
                    .await
                    .with_context(|| format!("{}/{}", file.repo_id, file.filename))
            }
        })
        .buffer_unordered(args.workers.max(1))
        .try_collect()
        .await?;
    for path in paths {
        println!("{}", path.display());
    }
    Ok(())
}
