//! The fixture core every test binary of this crate shares: synthetic models served by the Hub
//! emulator, one repo `test-org/<name>` per model at a fixed commit, and the 12-entry manifest
//! that points at them (built-ins for the rest). Included by `it/support.rs` and
//! `reliability/support.rs`, which add what their suites need on top.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use context_graph_embeddings::ModelId;
use hub_emulator::{synth, HubBuilder, HubEmulator, RepoSpec};

/// One served model file.
#[derive(Debug, Clone)]
pub(crate) struct ServedFile {
    pub repo_id: String,
    pub filename: String,
    /// The commit the file was served at when the fixture started.
    pub commit: String,
    /// The revision the manifest asks for: the commit, or `main`.
    pub revision: String,
    pub content: Vec<u8>,
    pub sha256: String,
    pub pinned: bool,
}

/// What to serve for one model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Model {
    pub id: ModelId,
    pub size: u64,
    pub pinned: bool,
    /// The manifest asks for branch `main` instead of the commit.
    pub on_branch: bool,
}

/// The fixed commit a model's repo starts at.
pub(crate) fn commit_for(id: ModelId) -> String {
    synth::sha256_hex(id.as_str().as_bytes())[..40].to_owned()
}

/// How the models are served.
pub(crate) struct Serving<'a> {
    /// Seed of the first model's synthetic weights (each suite has its own bytes).
    pub seed_base: u64,
    /// The weight file's name for a model.
    pub weights_name: fn(ModelId) -> &'static str,
    /// Adjusts each repo (gating, more files).
    pub adjust: &'a dyn Fn(RepoSpec, ModelId) -> RepoSpec,
    /// Adjusts the emulator.
    pub builder: HubBuilder,
}

/// A running emulator, the folder of one test, and the manifest written into it.
pub(crate) struct Served {
    pub hub: HubEmulator,
    pub dir: tempfile::TempDir,
    pub manifest_path: PathBuf,
    pub files: BTreeMap<ModelId, ServedFile>,
}

/// Serves `models` and writes the manifest for them.
pub(crate) fn serve(models: &[Model], serving: Serving<'_>) -> Served {
    let mut builder = serving.builder;
    let mut files = BTreeMap::new();
    for (i, m) in models.iter().enumerate() {
        let repo_id = format!("test-org/{}", m.id.as_str().to_ascii_lowercase());
        let filename = (serving.weights_name)(m.id);
        let content = synth::safetensors(m.size, serving.seed_base + i as u64);
        let commit = commit_for(m.id);
        let spec = RepoSpec::new(&repo_id)
            .lfs_file(filename, content.clone())
            .regular_file("config.json", format!("{{\"model\":\"{}\"}}", m.id))
            .commit_sha(&commit);
        builder = builder.repo((serving.adjust)(spec, m.id));
        files.insert(
            m.id,
            ServedFile {
                repo_id,
                filename: filename.to_owned(),
                revision: if m.on_branch {
                    "main".to_owned()
                } else {
                    commit.clone()
                },
                commit,
                sha256: synth::sha256_hex(&content),
                content,
                pinned: m.pinned,
            },
        );
    }
    let hub = builder.start().expect("emulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest_path = dir.path().join("manifest.json");
    write_manifest(&manifest_path, &files, |_, _| {});
    Served {
        hub,
        dir,
        manifest_path,
        files,
    }
}

/// Writes the manifest for `files`, letting `edit` change each artifact entry.
pub(crate) fn write_manifest(
    manifest_path: &Path,
    files: &BTreeMap<ModelId, ServedFile>,
    edit: impl Fn(ModelId, &mut serde_json::Value),
) {
    let entries: Vec<serde_json::Value> = ModelId::ALL
        .iter()
        .map(|id| match files.get(id) {
            Some(f) => {
                let mut entry = serde_json::json!({
                    "model_id": id.as_str(),
                    "repo_id": f.repo_id,
                    "filename": f.filename,
                    "sha256": if f.pinned { Some(f.sha256.clone()) } else { None },
                    "size_bytes": if f.pinned { Some(f.content.len() as u64) } else { None },
                    "revision": f.revision,
                });
                edit(*id, &mut entry);
                entry
            }
            None => serde_json::json!({ "model_id": id.as_str(), "builtin": true }),
        })
        .collect();
    std::fs::write(
        manifest_path,
        serde_json::to_string_pretty(&entries).unwrap(),
    )
    .unwrap();
}
