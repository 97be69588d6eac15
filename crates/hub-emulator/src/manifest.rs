//! Serving a model manifest: turns the artifact manager's manifest JSON (read as a plain
//! [`serde_json::Value`], so this crate does not depend on that one) into repos of synthetic
//! files, and writes the matching manifest back for the synthetic contents.
//!
//! Each repo looks like a real sentence-transformers repo: the weights and `config.json` the
//! manifest has always served (same bytes, same commit ids), plus the companion files of
//! [`synth::companion_files`] (tokenizer, module configs, and a README, `.gitattributes` and
//! ONNX export a loader must not fetch), and beside a `model.safetensors` a small decoy
//! `pytorch_model.bin`. Companions never replace a file a manifest entry names.
//!
//! Manifest format: a JSON array whose entries are either `{"model_id": "X", "builtin": true}`
//! (skipped) or `{"model_id", "repo_id", "filename", "sha256"|null, "size_bytes"|null,
//! "revision"|null}`; a 40-hex `revision` becomes the repo's commit id, another string a ref.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{is_commit_sha, synth, HubBuilder, HubEmulator, RepoSpec};

/// The manifest compiled into the binary: `context-graph-embeddings/src/artifacts/manifests.json`
/// when it existed at build time, else `[]`.
pub const DEFAULT_MANIFEST: &str = include_str!(concat!(env!("OUT_DIR"), "/default-manifest.json"));

/// Whether [`DEFAULT_MANIFEST`] is the real file (false: the placeholder `[]`).
pub const DEFAULT_MANIFEST_FOUND: bool =
    option_env!("HUB_EMULATOR_DEFAULT_MANIFEST_FOUND").is_some();

/// Smallest synthetic file, so every file holds a few real tensors.
const MIN_SYNTHETIC_LEN: u64 = 1024;

/// Size used for an entry whose `size_bytes` is null.
///
/// APPROXIMATIONS, not published values: rough sizes of these models' weight files, only so
/// that unpinned synthetic files have a realistic scale.
pub fn approximate_size(model_id: &str) -> u64 {
    match model_id {
        // allenai/longformer-base-4096 pytorch_model.bin
        "Causal" => 597_257_159,
        "Sparse" | "Code" | "LateInteraction" => 438_000_000,
        "Graph" => 90_900_000,
        _ => 100_000_000,
    }
}

/// How to synthesise files for a manifest.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    /// Synthetic size = real (or approximate) size × `scale` (at least 1 KiB).
    pub scale: f64,
    /// Gate every repo, accepting only this token.
    pub gate_token: Option<String>,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            scale: 1.0,
            gate_token: None,
        }
    }
}

/// One manifest entry as served.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The entry's `model_id`.
    pub model_id: String,
    /// Repo serving it.
    pub repo_id: String,
    /// Path of the weights file in the repo.
    pub filename: String,
    /// Revision to ask for: the entry's `revision`, or `"main"`.
    pub revision: String,
    /// Size of the synthetic file.
    pub size: u64,
}

/// Repos for a manifest, ready to start.
#[derive(Debug)]
pub struct ManifestHub {
    /// Builder holding one repo per distinct `repo_id` (weights, a `config.json` and the
    /// companion files described in the module docs).
    pub builder: HubBuilder,
    /// The non-builtin entries, in manifest order.
    pub models: Vec<ServedModel>,
    /// Things worth telling the user (conflicting revisions, ...).
    pub notes: Vec<String>,
}

/// Parses `manifest` and generates the synthetic repos (contents are generated here; hashing
/// happens in [`HubBuilder::start`]).
pub fn hub_from_manifest(
    manifest: &Value,
    options: &ManifestOptions,
) -> Result<ManifestHub, String> {
    // A manifest with a signature policy is an object holding the entries under `models`.
    let entries = manifest
        .as_array()
        .or_else(|| manifest.get("models").and_then(Value::as_array))
        .ok_or("the manifest must be a JSON array of entries (or an object with `models`)")?;
    let mut repos: BTreeMap<String, (RepoSpec, Option<String>)> = BTreeMap::new();
    let mut models = Vec::new();
    let mut notes = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if entry["builtin"].as_bool() == Some(true) {
            continue;
        }
        let field = |name: &str| entry[name].as_str().map(str::to_owned);
        let model_id = field("model_id").unwrap_or_else(|| format!("entry{index}"));
        let (Some(repo_id), Some(filename)) = (field("repo_id"), field("filename")) else {
            return Err(format!(
                "manifest entry {index} ({model_id}) needs `repo_id` and `filename`"
            ));
        };
        let real_size = entry["size_bytes"]
            .as_u64()
            .unwrap_or_else(|| approximate_size(&model_id));
        let size = ((real_size as f64 * options.scale).round() as u64).max(MIN_SYNTHETIC_LEN);
        let seed = seed_for(&model_id, &repo_id, &filename);
        let revision = field("revision");
        let (spec, commit) = repos.remove(&repo_id).unwrap_or_else(|| {
            let mut spec = RepoSpec::new(&repo_id);
            if let Some(token) = &options.gate_token {
                spec = spec.gated(&[token.as_str()]);
            }
            (spec, None)
        });
        let mut spec = spec.lfs_file(&filename, synth::safetensors(size, seed));
        if !spec.files.iter().any(|f| f.path == "config.json") {
            spec = spec.regular_file("config.json", config_json(&repo_id));
        }
        let mut commit = commit;
        match revision.as_deref() {
            Some(rev) if is_commit_sha(rev) => match &commit {
                Some(existing) if !existing.eq_ignore_ascii_case(rev) => notes.push(format!(
                    "{model_id}: {repo_id} is already served at commit {existing}; revision {rev} will not resolve"
                )),
                Some(_) => {}
                None => {
                    spec = spec.commit_sha(rev);
                    commit = Some(rev.to_ascii_lowercase());
                }
            },
            Some(rev) if rev != "main" => spec = spec.extra_ref(rev),
            _ => {}
        }
        repos.insert(repo_id.clone(), (spec, commit));
        models.push(ServedModel {
            model_id,
            repo_id,
            filename,
            revision: revision.unwrap_or_else(|| "main".to_owned()),
            size,
        });
    }
    let builder = repos
        .into_values()
        .fold(HubBuilder::new(), |builder, (spec, _)| {
            builder.repo(with_companions(spec))
        });
    Ok(ManifestHub {
        builder,
        models,
        notes,
    })
}

/// The manifest describing the synthetic files `hub` serves: `manifest` with `sha256` and
/// `size_bytes` replaced by the synthetic values where the input pinned them, left null where
/// the input had null (so clients still exercise both the pinned and the Hub-advertised path).
pub fn synthetic_manifest(manifest: &Value, hub: &HubEmulator) -> Value {
    let mut manifest = manifest.clone();
    let entries = if manifest.is_array() {
        manifest.as_array_mut()
    } else {
        manifest.get_mut("models").and_then(Value::as_array_mut)
    };
    for entry in entries.into_iter().flatten() {
        if entry["builtin"].as_bool() == Some(true) {
            continue;
        }
        let (Some(repo_id), Some(filename)) =
            (entry["repo_id"].as_str(), entry["filename"].as_str())
        else {
            continue;
        };
        let revision = entry["revision"].as_str().unwrap_or("main");
        let Some(info) = hub.file_info(repo_id, revision, filename) else {
            continue;
        };
        let (repo_id, revision) = (repo_id.to_owned(), revision.to_owned());
        if !entry["sha256"].is_null() {
            entry["sha256"] = Value::String(info.sha256);
        }
        if !entry["size_bytes"].is_null() {
            entry["size_bytes"] = Value::from(info.size);
        }
        // A locked file set: every listed file gets the served size and digest (SHA-256
        // for LFS files, git blob SHA-1 for regular ones); files not served are dropped.
        if let Some(files) = entry.get_mut("files").and_then(Value::as_array_mut) {
            files.retain_mut(|file| {
                let Some(path) = file["path"].as_str().map(str::to_owned) else {
                    return false;
                };
                let Some(info) = hub.file_info(&repo_id, &revision, &path) else {
                    return false;
                };
                let mut served = serde_json::Map::new();
                served.insert("path".to_owned(), Value::String(path));
                served.insert("size_bytes".to_owned(), Value::from(info.size));
                if info.lfs {
                    served.insert("sha256".to_owned(), Value::String(info.sha256));
                } else {
                    served.insert("git_sha1".to_owned(), Value::String(info.git_blob_id));
                }
                *file = Value::Object(served);
                true
            });
        }
    }
    manifest
}

/// Adds the companion files whose paths the manifest did not already fill, keeping the commit
/// id derived from the manifest's own files only (so it is what it was before companions).
fn with_companions(spec: RepoSpec) -> RepoSpec {
    let present: std::collections::BTreeSet<String> =
        spec.files.iter().map(|f| f.path.clone()).collect();
    let repo_id = spec.repo_id.clone();
    let mut extra = synth::companion_files(&repo_id);
    if present.contains("model.safetensors") {
        extra.push((
            "pytorch_model.bin".to_owned(),
            synth::decoy_pytorch_bin(&repo_id),
        ));
    }
    let mut spec = extra
        .into_iter()
        .filter(|(path, _)| !present.contains(path))
        .fold(spec, |spec, (path, bytes)| spec.file(&path, bytes));
    spec.commit_paths = Some(present);
    spec
}

/// A stable seed per file, so reruns serve identical bytes.
fn seed_for(model_id: &str, repo_id: &str, filename: &str) -> u64 {
    let digest = Sha256::digest(format!("{model_id}\0{repo_id}\0{filename}"));
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn config_json(repo_id: &str) -> String {
    serde_json::json!({
        "_name_or_path": repo_id,
        "model_type": "synthetic",
        "note": "served by hub-emulator: weights are synthetic",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip() {
        let manifest: Value = serde_json::json!([
            {"model_id": "TemporalRecent", "builtin": true},
            {"model_id": "Semantic", "repo_id": "intfloat/e5-large-v2", "filename": "model.safetensors",
             "sha256": "d741c1a688a6169af0ecb5a047c44645cd992c31e1bf431269f98bba9ae2911a",
             "size_bytes": 1_340_616_616u64, "revision": "f169b11e22de13617baa190a028a32f3493550b6"},
            {"model_id": "Causal", "repo_id": "allenai/longformer-base-4096", "filename": "pytorch_model.bin",
             "sha256": null, "size_bytes": null, "revision": null},
        ]);
        let served = hub_from_manifest(
            &manifest,
            &ManifestOptions {
                scale: 0.0001,
                gate_token: None,
            },
        )
        .unwrap();
        assert_eq!(served.models.len(), 2);
        assert_eq!(served.models[0].size, 134_062);
        assert_eq!(served.models[1].size, 59_726);
        let hub = served.builder.start().unwrap();
        assert_eq!(
            hub.commit_of("intfloat/e5-large-v2", "main").as_deref(),
            Some("f169b11e22de13617baa190a028a32f3493550b6")
        );
        assert!(hub
            .file_info("allenai/longformer-base-4096", "main", "config.json")
            .is_some());
        let out = synthetic_manifest(&manifest, &hub);
        let info = hub
            .file_info("intfloat/e5-large-v2", "main", "model.safetensors")
            .unwrap();
        assert_eq!(out[1]["sha256"], Value::String(info.sha256.clone()));
        assert_eq!(out[1]["size_bytes"], 134_062);
        assert!(out[2]["sha256"].is_null() && out[2]["size_bytes"].is_null());
        assert_eq!(out[0], manifest[0]);

        // The same entries under `models`, beside a signature policy, serve the same repos.
        let with_policy = serde_json::json!({
            "signature": {"public_key": "publisher.pub.pem"},
            "models": manifest,
        });
        let served = hub_from_manifest(
            &with_policy,
            &ManifestOptions {
                scale: 0.0001,
                gate_token: None,
            },
        )
        .unwrap();
        assert_eq!(served.models.len(), 2);
        let out = synthetic_manifest(&with_policy, &hub);
        assert_eq!(out["signature"], with_policy["signature"]);
        assert_eq!(out["models"][1]["sha256"], Value::String(info.sha256));
    }

    #[test]
    fn companions_do_not_change_weights_or_derived_commits() {
        let manifest: Value = serde_json::json!([
            {"model_id": "Graph", "repo_id": "org/unpinned", "filename": "model.safetensors",
             "sha256": null, "size_bytes": 4096, "revision": null},
            {"model_id": "Causal", "repo_id": "org/bin", "filename": "pytorch_model.bin",
             "sha256": null, "size_bytes": 4096, "revision": null},
        ]);
        let served = hub_from_manifest(&manifest, &ManifestOptions::default()).unwrap();
        let hub = served.builder.start().unwrap();
        // The repos as the manifest served them before companion files existed.
        let legacy = HubBuilder::new()
            .repo(
                RepoSpec::new("org/unpinned")
                    .lfs_file(
                        "model.safetensors",
                        synth::safetensors(
                            4096,
                            seed_for("Graph", "org/unpinned", "model.safetensors"),
                        ),
                    )
                    .regular_file("config.json", config_json("org/unpinned")),
            )
            .repo(
                RepoSpec::new("org/bin")
                    .lfs_file(
                        "pytorch_model.bin",
                        synth::safetensors(
                            4096,
                            seed_for("Causal", "org/bin", "pytorch_model.bin"),
                        ),
                    )
                    .regular_file("config.json", config_json("org/bin")),
            )
            .start()
            .unwrap();
        for (repo, weights) in [
            ("org/unpinned", "model.safetensors"),
            ("org/bin", "pytorch_model.bin"),
        ] {
            assert_eq!(
                hub.commit_of(repo, "main"),
                legacy.commit_of(repo, "main"),
                "{repo}"
            );
            for path in [weights, "config.json"] {
                let ours = hub.file_info(repo, "main", path).unwrap();
                let theirs = legacy.file_info(repo, "main", path).unwrap();
                assert_eq!(
                    (ours.sha256, ours.size, ours.lfs),
                    (theirs.sha256, theirs.size, theirs.lfs)
                );
            }
            for path in [
                "tokenizer.json",
                "modules.json",
                "1_Pooling/config.json",
                "onnx/model.onnx",
            ] {
                assert!(hub.file_info(repo, "main", path).is_some(), "{repo} {path}");
            }
        }
        // The decoy .bin only sits beside safetensors weights, never over a real .bin.
        let decoy = hub
            .file_info("org/unpinned", "main", "pytorch_model.bin")
            .unwrap();
        assert!(decoy.lfs && decoy.size < 8192);
        assert_eq!(
            hub.file_info("org/bin", "main", "pytorch_model.bin")
                .unwrap()
                .size,
            4096
        );
    }

    #[test]
    fn default_manifest_is_servable() {
        let manifest: Value = serde_json::from_str(DEFAULT_MANIFEST).expect("valid JSON");
        let options = ManifestOptions {
            scale: 1e-6,
            gate_token: None,
        };
        let served = hub_from_manifest(&manifest, &options).expect("servable");
        if DEFAULT_MANIFEST_FOUND {
            assert!(!served.models.is_empty());
            assert!(served.notes.is_empty(), "{:?}", served.notes);
        }
    }

    #[test]
    fn rejects_bad_manifests() {
        let options = ManifestOptions::default();
        assert!(hub_from_manifest(&serde_json::json!({}), &options).is_err());
        assert!(hub_from_manifest(&serde_json::json!([{"model_id": "X"}]), &options).is_err());
    }
}
