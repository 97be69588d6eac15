//! The Python contender: a virtual environment with the latest `huggingface_hub` from PyPI,
//! installed by the harness on first use, and the small script that downloads with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::{capture, Job};

/// Downloads files with `hf_hub_download`, `workers` at a time, into a Hugging Face cache.
/// That is what `snapshot_download` does for each file of a repo (a thread pool of
/// `max_workers=8` calling `hf_hub_download`), restricted to the manifest's files.
///
/// Argument: one JSON object `{"cache_dir", "workers", "files": [{"repo_id", "revision",
/// "filename"}]}`. `HF_ENDPOINT` is read by `huggingface_hub` at import time.
pub(crate) const DOWNLOAD_SCRIPT: &str = r#"
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from huggingface_hub import hf_hub_download


def main():
    spec = json.loads(sys.argv[1])

    def one(f):
        return hf_hub_download(
            repo_id=f["repo_id"],
            filename=f["filename"],
            revision=f["revision"],
            cache_dir=spec["cache_dir"],
        )

    with ThreadPoolExecutor(max_workers=spec["workers"]) as pool:
        for path in pool.map(one, spec["files"]):
            print(path)


main()
"#;

/// The Python interpreter of the benchmark environment and the `huggingface_hub` version in it.
#[derive(Debug, Clone)]
pub(crate) struct PythonEnv {
    /// `<venv>/bin/python`.
    pub python: PathBuf,
    /// `huggingface_hub.__version__`.
    pub hub_version: String,
    /// `sys.version` (first word).
    pub python_version: String,
    /// The download script, written into the work directory.
    pub script: PathBuf,
}

impl PythonEnv {
    /// `python SCRIPT` against the emulator at `endpoint`, with `HF_HOME` at `home`, Xet,
    /// telemetry and progress bars off.
    pub(crate) fn job(&self, script: &Path, endpoint: &str, home: &Path) -> Job {
        Job::new(&self.python)
            .arg(script)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", home)
            .env("HF_HUB_DISABLE_XET", "1")
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    }
}

/// Makes sure `venv` holds `huggingface_hub` (creating the environment with `python3 -m venv`
/// and installing the latest release with pip when it does not), and writes the download
/// script into `work`. Progress goes to stderr; failures come back as text for the report.
pub(crate) fn ensure(venv: &Path, work: &Path) -> Result<PythonEnv, String> {
    let python = venv.join("bin").join("python");
    let version = |python: &Path| {
        capture(
            &python.to_string_lossy(),
            &["-c", "import huggingface_hub as h; print(h.__version__)"],
            true,
        )
    };
    let hub_version = match version(&python) {
        Some(v) => v,
        None => {
            if !python.exists() {
                eprintln!("cg-bench: creating {} (python3 -m venv)", venv.display());
                run_quiet(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
            }
            eprintln!("cg-bench: installing the latest huggingface_hub into it (pip)");
            run_quiet(
                Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(["--upgrade", "huggingface_hub"]),
            )?;
            version(&python).ok_or("huggingface_hub does not import after pip install")?
        }
    };
    let python_version = capture(
        &python.to_string_lossy(),
        &["-c", "import sys; print(sys.version.split()[0])"],
        true,
    )
    .unwrap_or_else(|| "?".to_owned());
    let script = work.join("hf_download.py");
    std::fs::write(&script, DOWNLOAD_SCRIPT).map_err(|e| format!("writing the script: {e}"))?;
    Ok(PythonEnv {
        python,
        hub_version,
        python_version,
        script,
    })
}

fn run_quiet(command: &mut Command) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        Err(format!("{command:?} failed ({}): {last}", out.status))
    }
}
