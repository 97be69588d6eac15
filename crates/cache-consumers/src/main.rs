//! `cache-consumers`: a judge for the tests, not part of the product. It asks the Rust
//! readers of the Hugging Face cache that embedding programs use where a cached file is, the
//! way those programs ask, and never touches the network:
//!
//! - **hf-hub 0.5** (fastembed 7; text-embeddings-inference 1.7 is on 0.4, whose `Cache` is
//!   the same code): `Cache::new(dir).repo(Repo::with_revision(id, Model, rev)).get(file)`.
//!   It reads `refs/<rev>` for every revision, a commit id included.
//! - **hf-hub 1.0** (candle-examples 0.11, `hub::Repo::get`):
//!   `HFClientSync.model(owner, name).download_file().filename(file).revision(rev)
//!   .local_files_only(true).send()`. It reads `refs/<rev>` for a branch and goes straight to
//!   `snapshots/<rev>` for a commit id. The client's endpoint is set to a closed loopback port,
//!   so even a lookup that wanted the network could not leave the machine.
//!
//! Usage: `cache-consumers CACHE_DIR REPO_ID REVISION FILENAME`. Prints one JSON line:
//! `{"hf_hub_05": path-or-null, "hf_hub_1": path-or-null, "hf_hub_1_error": message-or-null}`
//! (`hf_hub_1_error` is what hf-hub 1.0 said when it found nothing). Exit code 0 when the
//! lookups ran (found or not), 2 on a usage error, 1 when a library failed in another way
//! than "not in the cache".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

/// An endpoint nothing listens on (port 9, "discard", on loopback): the hf-hub 1.0 client
/// needs one, and a lookup must never reach a real Hub.
const NO_HUB: &str = "http://127.0.0.1:9";

/// Why the program could not answer.
#[derive(Debug, thiserror::Error)]
enum ConsumerError {
    /// The command line is not `CACHE_DIR REPO_ID REVISION FILENAME`.
    #[error("usage: cache-consumers CACHE_DIR REPO_ID REVISION FILENAME ({0})")]
    Usage(String),
    /// hf-hub 1.0 could not build its client (it builds a runtime and an HTTP client).
    #[error("hf-hub 1.0 could not start its client: {0}")]
    Client(String),
    /// hf-hub 1.0 failed with something other than "not in the local cache".
    #[error("hf-hub 1.0 lookup of {file} at {revision} in {repo} failed: {message}")]
    Lookup {
        /// The repository asked.
        repo: String,
        /// The revision asked.
        revision: String,
        /// The file asked.
        file: String,
        /// The library's error.
        message: String,
    },
    /// Standard output could not be written.
    #[error("cannot write the answer to standard output: {0}")]
    Output(#[from] std::io::Error),
}

/// The command line, checked.
struct Request {
    cache: PathBuf,
    repo: String,
    revision: String,
    file: String,
}

impl Request {
    fn parse(args: Vec<String>) -> Result<Request, ConsumerError> {
        let [cache, repo, revision, file]: [String; 4] =
            args.try_into().map_err(|args: Vec<String>| {
                ConsumerError::Usage(format!("{} arguments", args.len()))
            })?;
        if !repo.contains('/') {
            return Err(ConsumerError::Usage(format!(
                "repository `{repo}` is not `owner/name`"
            )));
        }
        Ok(Request {
            cache: PathBuf::from(cache),
            repo,
            revision,
            file,
        })
    }
}

/// hf-hub 0.5's answer: `Some(path)` when its cache says the file is there.
fn hf_hub_05(request: &Request) -> Option<PathBuf> {
    use hf_hub_05::{Cache, Repo, RepoType};
    Cache::new(request.cache.clone())
        .repo(Repo::with_revision(
            request.repo.clone(),
            RepoType::Model,
            request.revision.clone(),
        ))
        .get(&request.file)
}

/// hf-hub 1.0's answer: `Ok(Ok(path))` found, `Ok(Err(message))` not in the local cache.
fn hf_hub_1(request: &Request) -> Result<Result<PathBuf, String>, ConsumerError> {
    use hf_hub_1::{HFClient, HFClientSync, HFError};
    let client = HFClient::builder()
        .endpoint(NO_HUB)
        .cache_dir(request.cache.clone())
        .build()
        .and_then(HFClientSync::from_inner)
        .map_err(|e| ConsumerError::Client(e.to_string()))?;
    let (owner, name) = hf_hub_1::split_id(&request.repo);
    let answer = client
        .model(owner, name)
        .download_file()
        .filename(request.file.clone())
        .revision(request.revision.clone())
        .local_files_only(true)
        .send();
    match answer {
        Ok(path) => Ok(Ok(path)),
        Err(e @ HFError::LocalEntryNotFound { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(ConsumerError::Lookup {
            repo: request.repo.clone(),
            revision: request.revision.clone(),
            file: request.file.clone(),
            message: e.to_string(),
        }),
    }
}

fn shown(path: Option<&Path>) -> serde_json::Value {
    path.map_or(serde_json::Value::Null, |p| json!(p.display().to_string()))
}

fn run() -> Result<(), ConsumerError> {
    let request = Request::parse(std::env::args().skip(1).collect())?;
    let old = hf_hub_05(&request);
    let new = hf_hub_1(&request)?;
    let line = json!({
        "hf_hub_05": shown(old.as_deref()),
        "hf_hub_1": shown(new.as_ref().ok().map(PathBuf::as_path)),
        "hf_hub_1_error": new.as_ref().err(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = match error {
                ConsumerError::Usage(_) => 2,
                _ => 1,
            };
            let _ = writeln!(std::io::stderr().lock(), "cache-consumers: {error}");
            ExitCode::from(code)
        }
    }
}
