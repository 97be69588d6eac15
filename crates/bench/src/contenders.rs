//! The downloaders compared, how each is invoked to fetch a set of files into a fresh
//! directory, and where each leaves the files.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::emulator::{snapshot_path, FileSpec, Served};
use crate::process::Job;
use crate::python::PythonEnv;

/// Files downloaded at once by the clients that take a worker count (`huggingface_hub`'s
/// `snapshot_download` default and hf-hub's `max_workers` default).
pub(crate) const WORKERS: usize = 8;

/// A downloader under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Contender {
    /// `cg-models ensure` (this project), release build.
    Ours,
    /// Python `huggingface_hub`, `hf_hub_download` from 8 threads.
    HuggingfaceHub,
    /// The `hf-hub` crate's async API, 8 files at once.
    HfHub,
    /// `curl`, the files one after another in one process: one stream, no hashing.
    Curl,
    /// The same `curl`, then `sync` of the files it wrote: the bytes durable on disk, as ours
    /// leaves them (it fsyncs every blob before it is renamed into place).
    CurlSynced,
    /// `aria2c -x8 -s8 -j8`: 8 connections per file, no hashing.
    Aria2,
}

impl Contender {
    /// Every contender, in table order.
    pub(crate) const ALL: [Contender; 6] = [
        Contender::Ours,
        Contender::HuggingfaceHub,
        Contender::HfHub,
        Contender::Curl,
        Contender::CurlSynced,
        Contender::Aria2,
    ];

    /// Every contender but the durable curl, for the capped runs: they compare what gets
    /// through a per-connection cap, and a second single stream would add minutes, not
    /// information.
    pub(crate) const NETWORK: [Contender; 5] = [
        Contender::Ours,
        Contender::HuggingfaceHub,
        Contender::HfHub,
        Contender::Curl,
        Contender::Aria2,
    ];

    /// Name in tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Ours => "ours (cg-models ensure)",
            Contender::HuggingfaceHub => "huggingface_hub (Python)",
            Contender::HfHub => "hf-hub (Rust crate)",
            Contender::Curl => "curl (sequential)",
            Contender::CurlSynced => "curl, then sync (durable)",
            Contender::Aria2 => "aria2c -x8",
        }
    }
}

/// The programs the contenders need; `Err` says why one is unavailable.
#[derive(Debug, Clone)]
pub(crate) struct Toolbox {
    /// `target/release/cg-models`.
    pub cg_models: Result<PathBuf, String>,
    /// `target/release/hf_hub_fetch`.
    pub hf_hub_fetch: Result<PathBuf, String>,
    /// The Python environment with `huggingface_hub`.
    pub python: Result<PythonEnv, String>,
    /// `curl` on `PATH`.
    pub curl: Result<PathBuf, String>,
    /// `aria2c` on `PATH`.
    pub aria2c: Result<PathBuf, String>,
}

impl Toolbox {
    /// Why `contender` cannot run, if it cannot.
    pub(crate) fn unavailable(&self, contender: Contender) -> Option<String> {
        let missing = match contender {
            Contender::Ours => self.cg_models.as_ref().err(),
            Contender::HuggingfaceHub => self.python.as_ref().err(),
            Contender::HfHub => self.hf_hub_fetch.as_ref().err(),
            Contender::Curl | Contender::CurlSynced => self.curl.as_ref().err(),
            Contender::Aria2 => self.aria2c.as_ref().err(),
        };
        missing.cloned()
    }

    /// The `cg-models` global options for a cache in `dir`: endpoint, cache, manifest.
    pub(crate) fn cg_models(&self, served: &Served, cache: &Path) -> Option<Job> {
        self.cg_models_with(served, cache, &served.manifest_path)
    }

    /// [`cg_models`](Self::cg_models) with another manifest.
    pub(crate) fn cg_models_with(
        &self,
        served: &Served,
        cache: &Path,
        manifest: &Path,
    ) -> Option<Job> {
        let program = self.cg_models.as_ref().ok()?;
        Some(
            Job::new(program)
                .arg("--endpoint")
                .arg(served.hub.endpoint())
                .arg("--cache-dir")
                .arg(cache)
                .arg("--manifest")
                .arg(manifest)
                .env("HF_HOME", cache.with_file_name("hf-home")),
        )
    }

    /// The job that downloads `files` into the fresh directory `dir` (a Hugging Face cache at
    /// `dir/cache` for the Hub clients, plain files in `dir/files` for curl and aria2c).
    pub(crate) fn download_job(
        &self,
        contender: Contender,
        served: &Served,
        files: &[&FileSpec],
        dir: &Path,
    ) -> Option<Job> {
        let cache = dir.join("cache");
        let home = dir.join("hf-home");
        let endpoint = served.hub.endpoint();
        let spec = |f: &&FileSpec| serde_json::json!({"repo_id": f.repo_id, "revision": f.revision, "filename": f.filename});
        let list: Vec<serde_json::Value> = files.iter().map(spec).collect();
        match contender {
            Contender::Ours => {
                let mut job = self.cg_models(served, &cache)?.arg("--quiet").arg("ensure");
                if files.len() != served.files.len() {
                    job = job.args(files.iter().map(|f| f.model_id.as_str()));
                }
                Some(job)
            }
            Contender::HuggingfaceHub => {
                let python = self.python.as_ref().ok()?;
                let arg = serde_json::json!({
                    "cache_dir": cache, "workers": WORKERS, "files": list,
                });
                Some(
                    python
                        .job(&python.script, &endpoint, &home)
                        .arg(arg.to_string()),
                )
            }
            Contender::HfHub => Some(
                Job::new(self.hf_hub_fetch.as_ref().ok()?)
                    .arg("--endpoint")
                    .arg(&endpoint)
                    .arg("--cache-dir")
                    .arg(&cache)
                    .arg("--workers")
                    .arg(WORKERS.to_string())
                    .arg(serde_json::Value::Array(list).to_string())
                    .env("HF_HOME", &home),
            ),
            Contender::Curl | Contender::CurlSynced => {
                let curl = self.curl.as_ref().ok()?;
                let files_dir = dir.join("files");
                let mut job = if contender == Contender::CurlSynced {
                    // `sh -c SCRIPT $0 ARGS…`: curl with the arguments below, then `sync` of
                    // each file it wrote (coreutils `sync FILE` fsyncs the file).
                    Job::new("/bin/sh")
                        .arg("-c")
                        .arg(r#"curl=$1; shift; "$curl" "$@" && exec sync -- "$0"/*"#)
                        .arg(&files_dir)
                        .arg(curl)
                } else {
                    Job::new(curl)
                }
                .args([
                    "--silent",
                    "--show-error",
                    "--fail",
                    "--location",
                    "--create-dirs",
                ]);
                for file in files {
                    let out: OsString = files_dir.join(file.flat_name()).into();
                    job = job.arg("-o").arg(out).arg(&file.url);
                }
                Some(job)
            }
            Contender::Aria2 => {
                let mut input = String::new();
                for file in files {
                    let _ = writeln!(input, "{}\n  out={}", file.url, file.flat_name());
                }
                let input_path = dir.join("aria2-input.txt");
                std::fs::write(&input_path, input).ok()?;
                Some(
                    Job::new(self.aria2c.as_ref().ok()?)
                        .args(["-x8", "-s8", "-j8", "--quiet=true"])
                        .args(["--allow-overwrite=true", "--auto-file-renaming=false"])
                        .arg("--dir")
                        .arg(dir.join("files"))
                        .arg("--input-file")
                        .arg(input_path),
                )
            }
        }
    }
}

/// Where `contender` leaves `file` after downloading into `dir`.
pub(crate) fn output_path(contender: Contender, file: &FileSpec, dir: &Path) -> PathBuf {
    match contender {
        Contender::Curl | Contender::CurlSynced | Contender::Aria2 => {
            dir.join("files").join(file.flat_name())
        }
        _ => snapshot_path(&dir.join("cache"), file),
    }
}

/// `None` when every file is in place with the right size and SHA-256 (hashed here, after
/// the run, untimed), else what is wrong.
pub(crate) fn check_outputs(
    contender: Contender,
    files: &[&FileSpec],
    dir: &Path,
) -> Option<String> {
    for file in files {
        let path = output_path(contender, file, dir);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == file.size => match sha256_hex(&path) {
                Ok(sha) if sha == file.sha256 => {}
                Ok(sha) => {
                    return Some(format!(
                        "{} has SHA-256 {sha}, expected {}",
                        path.display(),
                        file.sha256
                    ))
                }
                Err(e) => return Some(format!("{}: {e}", path.display())),
            },
            Ok(meta) => {
                return Some(format!(
                    "{} has {} bytes, expected {}",
                    path.display(),
                    meta.len(),
                    file.size
                ))
            }
            Err(_) => return Some(format!("{} missing", path.display())),
        }
    }
    None
}

/// SHA-256 of a file, lower-case hex.
pub(crate) fn sha256_hex(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}
