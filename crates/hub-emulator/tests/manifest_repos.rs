//! Manifest-served repos look like real sentence-transformers repos over HTTP: companion files
//! (a loadable tokenizer, module configs), files a loader must skip (README, .gitattributes,
//! ONNX, a decoy `pytorch_model.bin`), while the weight files and commits stay what the manifest
//! has always served; and sharded safetensors with a consistent index.

#![allow(clippy::print_stderr)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use hub_emulator::manifest::{hub_from_manifest, synthetic_manifest, ManifestOptions};
use hub_emulator::{synth, HubBuilder, RepoSpec};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/manifest.json");
const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");

const COMPANIONS: &[&str] = &[
    ".gitattributes",
    "1_Pooling/config.json",
    "README.md",
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "onnx/model.onnx",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
];

fn options() -> ManifestOptions {
    ManifestOptions {
        scale: 1e-5,
        gate_token: None,
    }
}

fn siblings(endpoint: &str, repo: &str, revision: &str) -> Vec<String> {
    let info = get(endpoint, &format!("/api/models/{repo}/revision/{revision}")).json();
    info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn manifest_repos_hold_the_files_of_a_real_repo() {
    let manifest: Value = serde_json::from_str(FIXTURE).unwrap();
    let served = hub_from_manifest(&manifest, &options()).unwrap();
    let hub = served.builder.start().unwrap();
    let endpoint = hub.endpoint();

    // Semantic: safetensors weights at the pinned commit, plus companions and a decoy .bin.
    let commit = "f169b11e22de13617baa190a028a32f3493550b6";
    let mut expected: Vec<String> = COMPANIONS.iter().map(|s| (*s).to_owned()).collect();
    expected.extend([
        "model.safetensors".to_owned(),
        "pytorch_model.bin".to_owned(),
    ]);
    expected.sort();
    assert_eq!(
        siblings(&endpoint, "intfloat/e5-large-v2", commit),
        expected
    );

    // Causal: a .bin weight file; no second .bin appears, the weights are the manifest's.
    let mut expected: Vec<String> = COMPANIONS.iter().map(|s| (*s).to_owned()).collect();
    expected.push("pytorch_model.bin".to_owned());
    expected.sort();
    assert_eq!(
        siblings(&endpoint, "allenai/longformer-base-4096", "main"),
        expected
    );
    let written = synthetic_manifest(&manifest, &hub);
    let reply = head(
        &endpoint,
        "/allenai/longformer-base-4096/resolve/main/pytorch_model.bin",
    );
    assert_eq!(reply.header("x-linked-size"), Some("5973"));
    assert!(written[2]["sha256"].is_null());

    // Regular companions come from the Hub host with blob ETags, LFS ones via the CDN.
    let repo = "sentence-transformers/paraphrase-MiniLM-L6-v2";
    for path in [
        "modules.json",
        "tokenizer.json",
        "vocab.txt",
        "README.md",
        ".gitattributes",
    ] {
        let reply = get(&endpoint, &format!("/{repo}/resolve/main/{path}"));
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header("etag").unwrap(),
            format!("\"{}\"", synth::git_blob_sha1_hex(&reply.body)),
            "{path}"
        );
    }
    for path in ["onnx/model.onnx", "pytorch_model.bin", "model.safetensors"] {
        let reply = head(&endpoint, &format!("/{repo}/resolve/main/{path}"));
        assert_eq!(reply.status, 302, "{path}");
        assert!(reply.header("x-linked-etag").is_some(), "{path}");
    }
    let modules = get(&endpoint, &format!("/{repo}/resolve/main/modules.json")).json();
    assert_eq!(modules[0]["path"], "");
    assert_eq!(
        modules[0]["type"],
        "sentence_transformers.models.Transformer"
    );
    assert_eq!(modules[1]["path"], "1_Pooling");
    let pooling = get(
        &endpoint,
        &format!("/{repo}/resolve/main/1_Pooling/config.json"),
    )
    .json();
    assert!(pooling["word_embedding_dimension"].as_u64().unwrap() > 0);

    // Deterministic: a second start serves the same bytes.
    let again = hub_from_manifest(&manifest, &options())
        .unwrap()
        .builder
        .start()
        .unwrap();
    for path in COMPANIONS {
        assert_eq!(
            hub.file_info(repo, "main", path),
            again.file_info(repo, "main", path),
            "{path}"
        );
    }
}

/// A Python with `tokenizers`, if there is one (`scripts/setup-python` does not install it).
fn python_with_tokenizers() -> Option<PathBuf> {
    let python = std::env::var_os("CG_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
    Command::new(&python)
        .args(["-c", "import tokenizers"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then_some(python)
}

#[test]
fn the_synthetic_tokenizer_is_a_valid_wordpiece_tokenizer() {
    let manifest: Value = serde_json::from_str(FIXTURE).unwrap();
    let hub = hub_from_manifest(&manifest, &options())
        .unwrap()
        .builder
        .start()
        .unwrap();
    let repo = "sentence-transformers/paraphrase-MiniLM-L6-v2";
    let body = get(
        &hub.endpoint(),
        &format!("/{repo}/resolve/main/tokenizer.json"),
    )
    .body;
    let tokenizer: Value = serde_json::from_slice(&body).unwrap();
    for key in [
        "version",
        "truncation",
        "padding",
        "added_tokens",
        "normalizer",
        "pre_tokenizer",
        "post_processor",
        "decoder",
        "model",
    ] {
        assert!(tokenizer.get(key).is_some(), "{key}");
    }
    assert_eq!(tokenizer["model"]["type"], "WordPiece");
    assert_eq!(tokenizer["model"]["unk_token"], "[UNK]");
    let vocab = tokenizer["model"]["vocab"].as_object().unwrap();
    for added in tokenizer["added_tokens"].as_array().unwrap() {
        assert_eq!(vocab[added["content"].as_str().unwrap()], added["id"]);
    }
    let vocab_txt = get(&hub.endpoint(), &format!("/{repo}/resolve/main/vocab.txt")).body;
    assert_eq!(
        String::from_utf8(vocab_txt).unwrap().lines().count(),
        vocab.len()
    );

    let Some(python) = python_with_tokenizers() else {
        eprintln!("no Python with `tokenizers`: checked tokenizer.json by structure only");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, &body).unwrap();
    let script = "import json, sys\nfrom tokenizers import Tokenizer\n\
                  t = Tokenizer.from_file(sys.argv[1])\n\
                  e = t.encode('Hello world, the model!')\n\
                  print(json.dumps({'tokens': e.tokens, 'ids': e.ids}))\n";
    let output = Command::new(python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result["tokens"],
        serde_json::json!(["[CLS]", "hello", "world", ",", "the", "model", "!", "[SEP]"])
    );
    assert_eq!(result["ids"][0], vocab["[CLS]"]);
}

#[test]
fn sharded_safetensors_are_served_with_a_consistent_index() {
    let hub = HubBuilder::new()
        .repo(RepoSpec::new("org/big").sharded_safetensors(60_000, 3, 9))
        .start()
        .unwrap();
    let endpoint = hub.endpoint();
    let reply = get(
        &endpoint,
        "/org/big/resolve/main/model.safetensors.index.json",
    );
    assert_eq!(reply.status, 200);
    assert!(
        reply.header("x-linked-etag").is_none(),
        "the index is a regular file"
    );
    let index = reply.json();
    let weight_map = index["weight_map"].as_object().unwrap();
    let mut shards: Vec<&str> = weight_map.values().map(|v| v.as_str().unwrap()).collect();
    shards.sort_unstable();
    shards.dedup();
    assert_eq!(
        shards,
        [
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors"
        ]
    );
    let mut data_bytes = 0;
    let mut tensors = 0;
    for shard in shards {
        let reply = get(&endpoint, &format!("/org/big/resolve/main/{shard}"));
        assert_eq!(reply.status, 302);
        let body = get(
            &hub.cdn_origin(),
            &path_of(reply.header("location").unwrap()),
        )
        .body;
        assert_eq!(body.len(), 20_000);
        let header_len = u64::from_le_bytes(body[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&body[8..8 + header_len]).unwrap();
        for (name, tensor) in header.as_object().unwrap() {
            if name == "__metadata__" {
                continue;
            }
            assert_eq!(weight_map[name], shard, "{name}");
            let offsets = tensor["data_offsets"].as_array().unwrap();
            data_bytes += offsets[1].as_u64().unwrap() - offsets[0].as_u64().unwrap();
            tensors += 1;
        }
    }
    assert_eq!(tensors, weight_map.len());
    assert_eq!(index["metadata"]["total_size"], data_bytes);
}
