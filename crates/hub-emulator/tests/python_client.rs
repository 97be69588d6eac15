//! The official Python client (`huggingface_hub`) against the emulator, via `HF_ENDPOINT`.
//!
//! Needs a Python with `huggingface_hub`: `CG_TEST_PYTHON`, default `target/pyenv/bin/python`
//! (made by `scripts/setup-python`). Without it these tests fail, unless
//! `CG_SKIP_PYTHON_TESTS=1`.

#![allow(clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::weights;
use hub_emulator::{synth, Fault, FaultRule, FaultTarget, Host, HubBuilder, HubEmulator, RepoSpec};
use serde_json::Value;

const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The interpreter to use, or `None` when the tests are to be skipped.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("CG_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
    let usable = Command::new(&python)
        .args(["-c", "import huggingface_hub"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if usable {
        return Some(python);
    }
    let problem = format!(
        "no Python with huggingface_hub at {} (from CG_TEST_PYTHON, default target/pyenv/bin/python)",
        python.display()
    );
    if std::env::var("CG_SKIP_PYTHON_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping Python client test: {problem}; CG_SKIP_PYTHON_TESTS=1");
        return None;
    }
    panic!(
        "{problem}.\nInstall it with `scripts/setup-python` (creates target/pyenv with \
         huggingface_hub), or point CG_TEST_PYTHON at an interpreter that has it, \
         or set CG_SKIP_PYTHON_TESTS=1 to skip these tests."
    );
}

/// Output of one script run.
struct Run {
    /// The JSON object the script printed last.
    result: Value,
    home: tempfile::TempDir,
}

impl Run {
    fn hub_cache(&self) -> PathBuf {
        self.home.path().join("hub")
    }
}

/// Runs `body` (Python, with `json`, `hashlib`, `os` and `huggingface_hub` imported and a
/// `sha256(path)` helper) against `hub`; the script must print one JSON object as its last line.
fn run_python(python: &Path, hub: &HubEmulator, token: Option<&str>, body: &str) -> Run {
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("script.py");
    let prelude = "import hashlib, json, os\n\
                   import huggingface_hub\n\
                   from huggingface_hub import hf_hub_download, snapshot_download\n\
                   def sha256(path):\n    \
                       with open(path, 'rb') as f:\n        \
                           return hashlib.sha256(f.read()).hexdigest()\n";
    std::fs::write(&script, format!("{prelude}{body}")).unwrap();
    let mut command = Command::new(python);
    command
        .arg(&script)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "HF_HUB_DISABLE_XET",
        "HF_XET_HIGH_PERFORMANCE",
    ] {
        command.env_remove(var);
    }
    if let Some(token) = token {
        command.env("HF_TOKEN", token);
    }
    let mut child = command.spawn().expect("start python");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            panic!("python script ran longer than {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- requests\n{:#?}",
        output.status,
        hub.requests()
    );
    let last = stdout.lines().last().unwrap_or_default();
    let result = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {stdout}\n{stderr}"));
    Run { result, home }
}

fn model_hub() -> HubEmulator {
    HubBuilder::new()
        .repo(
            RepoSpec::new("org/model")
                .file("config.json", common::CONFIG)
                .file("model.safetensors", weights())
                .file("sub/dir/notes v2.txt", "nested")
                .extra_ref("refs/pr/1"),
        )
        .repo(
            RepoSpec::new("org/gated")
                .file("config.json", common::CONFIG)
                .file("model.safetensors", synth::safetensors(4096, 3))
                .gated(&["hf_good"]),
        )
        .start()
        .unwrap()
}

#[test]
fn hf_hub_download_lfs_through_the_cdn_and_a_regular_file() {
    let Some(python) = python() else { return };
    let hub = model_hub();
    let run = run_python(
        &python,
        &hub,
        Some("hf_secret"),
        r#"
lfs = hf_hub_download("org/model", "model.safetensors")
regular = hf_hub_download("org/model", "config.json")
again = hf_hub_download("org/model", "model.safetensors")
print(json.dumps({"lfs": lfs, "lfs_sha": sha256(lfs), "regular": regular,
                  "regular_sha": sha256(regular), "again": again}))
"#,
    );
    let r = &run.result;
    let weights_sha = synth::sha256_hex(&weights());
    assert_eq!(r["lfs_sha"], weights_sha.as_str());
    assert_eq!(
        r["regular_sha"],
        synth::sha256_hex(common::CONFIG.as_bytes())
    );
    assert_eq!(r["again"], r["lfs"]);
    // Check the files from Rust too, and the cache layout the client built from our headers.
    let commit = hub.commit_of("org/model", "main").unwrap();
    let repo_dir = run.hub_cache().join("models--org--model");
    let lfs = PathBuf::from(r["lfs"].as_str().unwrap());
    assert_eq!(
        lfs,
        repo_dir
            .join("snapshots")
            .join(&commit)
            .join("model.safetensors")
    );
    assert_eq!(
        synth::sha256_hex(&std::fs::read(&lfs).unwrap()),
        weights_sha
    );
    assert_eq!(
        std::fs::read(repo_dir.join("blobs").join(&weights_sha)).unwrap(),
        weights()
    );
    let config_blob = synth::git_blob_sha1_hex(common::CONFIG.as_bytes());
    assert!(repo_dir.join("blobs").join(config_blob).is_file());
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        commit
    );

    let log = hub.requests();
    let summary: Vec<(Host, &str, &str)> = log
        .iter()
        .map(|r| (r.host, r.method.as_str(), r.path.as_str()))
        .collect();
    let cdn_path = format!("/lfs/{weights_sha}");
    assert_eq!(
        summary,
        [
            (
                Host::Hub,
                "HEAD",
                "/org/model/resolve/main/model.safetensors"
            ),
            (Host::Cdn, "GET", cdn_path.as_str()),
            (Host::Hub, "HEAD", "/org/model/resolve/main/config.json"),
            (Host::Hub, "GET", "/org/model/resolve/main/config.json"),
            // Second call: metadata only, the blob is cached.
            (
                Host::Hub,
                "HEAD",
                "/org/model/resolve/main/model.safetensors"
            ),
        ]
    );
    assert_eq!(log[0].header("authorization"), Some("Bearer hf_secret"));
    assert_eq!(
        log[1].header("authorization"),
        None,
        "token must not reach the CDN"
    );
    assert_eq!(log[1].body_bytes_sent, common::WEIGHTS_LEN);
    assert_eq!(log[3].header("authorization"), Some("Bearer hf_secret"));
}

#[test]
fn snapshot_download_of_a_repo() {
    let Some(python) = python() else { return };
    let hub = model_hub();
    let run = run_python(
        &python,
        &hub,
        None,
        r#"
folder = snapshot_download("org/model")
files = {}
for root, _, names in os.walk(folder):
    for name in names:
        path = os.path.join(root, name)
        files[os.path.relpath(path, folder)] = sha256(path)
print(json.dumps({"folder": folder, "files": files}))
"#,
    );
    let commit = hub.commit_of("org/model", "main").unwrap();
    assert!(run.result["folder"].as_str().unwrap().ends_with(&commit));
    let files = run.result["files"].as_object().unwrap();
    let mut names: Vec<&str> = files.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["config.json", "model.safetensors", "sub/dir/notes v2.txt"]
    );
    for (name, sha) in files {
        let info = hub.file_info("org/model", "main", name).unwrap();
        assert_eq!(sha, info.sha256.as_str(), "{name}");
    }
    let log = hub.requests();
    assert_eq!(log[0].path, "/api/models/org/model/revision/main");
    assert!(log[1]
        .path
        .starts_with(&format!("/api/models/org/model/tree/{commit}")));
    assert!(log
        .iter()
        .any(|r| r.path == format!("/org/model/resolve/{commit}/sub/dir/notes%20v2.txt")));
    assert!(log.iter().all(|r| r.status < 400), "{log:#?}");
    assert!(log
        .iter()
        .filter(|r| r.host == Host::Cdn)
        .all(|r| r.header("authorization").is_none()));
}

#[test]
fn pull_request_revision() {
    let Some(python) = python() else { return };
    let hub = model_hub();
    let pr_commit = hub.commit_of("org/model", "refs/pr/1").unwrap();
    // Move main on, so the PR ref names an older commit.
    let main = hub.set_file("org/model", "config.json", r#"{"hidden_size": 32}"#);
    let run = run_python(
        &python,
        &hub,
        None,
        r#"
pr = hf_hub_download("org/model", "config.json", revision="refs/pr/1")
main = hf_hub_download("org/model", "config.json")
print(json.dumps({"pr": pr, "pr_text": open(pr).read(), "main": main, "main_text": open(main).read()}))
"#,
    );
    let r = &run.result;
    assert!(r["pr"].as_str().unwrap().contains(&pr_commit));
    assert_eq!(r["pr_text"], common::CONFIG);
    assert!(r["main"].as_str().unwrap().contains(&main));
    assert_eq!(r["main_text"], r#"{"hidden_size": 32}"#);
    let ref_file = run.hub_cache().join("models--org--model/refs/refs/pr/1");
    assert_eq!(std::fs::read_to_string(ref_file).unwrap(), pr_commit);
    assert_eq!(
        hub.requests()[0].path,
        "/org/model/resolve/refs%2Fpr%2F1/config.json"
    );
}

#[test]
fn gated_repo_without_and_with_a_token() {
    let Some(python) = python() else { return };
    let hub = model_hub();
    let gated_check = r#"
from huggingface_hub.errors import GatedRepoError
outcome = {}
for name in ("config.json", "model.safetensors"):
    try:
        path = hf_hub_download("org/gated", name)
        outcome[name] = sha256(path)
    except GatedRepoError as e:
        outcome[name] = "GatedRepoError: " + str(e).splitlines()[0]
try:
    snapshot_download("org/gated")
    outcome["snapshot"] = "ok"
except GatedRepoError:
    outcome["snapshot"] = "GatedRepoError"
print(json.dumps(outcome))
"#;
    let denied = run_python(&python, &hub, None, gated_check).result;
    for key in ["config.json", "model.safetensors"] {
        assert!(
            denied[key].as_str().unwrap().starts_with("GatedRepoError"),
            "{denied}"
        );
    }
    assert_eq!(denied["snapshot"], "GatedRepoError");
    let wrong = run_python(&python, &hub, Some("hf_wrong"), gated_check).result;
    assert_eq!(wrong["snapshot"], "GatedRepoError", "{wrong}");
    assert!(hub.requests().iter().any(|r| r.status == 403));

    hub.clear_requests();
    let allowed = run_python(&python, &hub, Some("hf_good"), gated_check).result;
    let info = hub
        .file_info("org/gated", "main", "model.safetensors")
        .unwrap();
    assert_eq!(
        allowed["model.safetensors"],
        info.sha256.as_str(),
        "{allowed}"
    );
    assert_eq!(allowed["snapshot"], "ok");
    let log = hub.requests();
    let cdn: Vec<_> = log.iter().filter(|r| r.host == Host::Cdn).collect();
    assert!(!cdn.is_empty());
    assert!(cdn.iter().all(|r| r.header("authorization").is_none()));
    assert!(log
        .iter()
        .filter(|r| r.host == Host::Hub)
        .all(|r| r.header("authorization") == Some("Bearer hf_good")));
}

#[test]
fn client_recovers_from_injected_faults() {
    let Some(python) = python() else { return };
    // 25 MB, cut at 15 MB: the client resumes at its 10 MiB write boundary with a Range GET.
    let big = synth::safetensors(25_000_000, 11);
    let big_sha = synth::sha256_hex(&big);
    let hub = HubBuilder::new()
        .repo(
            RepoSpec::new("org/big")
                .file("model.safetensors", big)
                .file("config.json", "{}"),
        )
        .start()
        .unwrap();
    hub.add_fault(
        FaultRule::new(
            FaultTarget::get("model.safetensors"),
            Fault::CutAfter { bytes: 15_000_000 },
        )
        .times(1),
    );
    hub.add_fault(FaultRule::new(FaultTarget::head("config.json"), Fault::status(503)).times(1));
    let run = run_python(
        &python,
        &hub,
        None,
        r#"
big = hf_hub_download("org/big", "model.safetensors")
config = hf_hub_download("org/big", "config.json")
print(json.dumps({"big": sha256(big), "config": open(config).read()}))
"#,
    );
    assert_eq!(run.result["big"], big_sha.as_str());
    assert_eq!(run.result["config"], "{}");
    let log = hub.requests();
    let cdn: Vec<_> = log.iter().filter(|r| r.host == Host::Cdn).collect();
    assert_eq!(cdn.len(), 2, "{log:#?}");
    assert_eq!((cdn[0].status, cdn[0].body_bytes_sent), (200, 15_000_000));
    // The client resumes from what it had written (2.4.0: a 10 MiB multiple, 10485760).
    let resumed_from: u64 = cdn[1]
        .range()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("resumed with Range `bytes=N-`: {:?}", cdn[1]));
    assert!((1..=15_000_000).contains(&resumed_from), "{resumed_from}");
    assert_eq!(cdn[1].status, 206);
    assert_eq!(cdn[1].body_bytes_sent, 25_000_000 - resumed_from);
    let config_heads: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.ends_with("config.json"))
        .map(|r| r.status)
        .collect();
    assert_eq!(config_heads, [503, 200]);
}
