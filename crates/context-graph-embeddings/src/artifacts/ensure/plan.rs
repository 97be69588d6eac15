//! One plan per model: the commit and every file of the model's set, each with its path, size,
//! the digest its bytes must have (SHA-256, git blob SHA-1, or "the one the Hub advertises"
//! for an unpinned weight file not asked about yet) and its role. Every step after it (lock,
//! reuse, fetch, verify, place, record; the readiness rule; the report) works per planned file,
//! so the weight file is no special case: it is the first row, and the spec's single-file
//! fields are read off it.
//!
//! A plan is made online (the Hub's answer for the weight file and the set resolved at that
//! commit, `set.rs`) or from the cache alone, in this order: the manifest's `files`, a single
//! weight file, the set we recorded at that commit, `huggingface_hub`'s tree listing of the
//! commit, the snapshot folder (`store/listing.rs`). Each plan says where its list came from
//! ([`SetOrigin`]), so `status --files` can say how much it is worth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use super::context::CacheView;
use crate::artifacts::fileset::{
    add_signature, documents_needed, is_safetensors_index, select, FileSelection, PinnedFile,
    RepoFile, MODULES_JSON, TOKENIZER_FILES,
};
use crate::artifacts::hash::{git_blob_sha1_hex, sha256_hex, DigestKind};
use crate::artifacts::manifest::{ModelArtifact, SignaturePolicies};
use crate::artifacts::store::layout::{entry_stays_inside, snapshot_link_blob_name, CacheLayout};
use crate::artifacts::store::listing::{read_tree_listing, snapshot_entries};
use crate::artifacts::store::stamp::VerificationStamp;
use crate::artifacts::transfer::request::ExpectedDigest;

/// What a file is to its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// The manifest's `filename`: the weights (or the safetensors index naming the shards).
    Weights,
    /// A weight shard named by a safetensors index, or another weight file of the set.
    Shard,
    /// A safetensors index that is not the manifest's `filename`.
    Index,
    /// A configuration document (`config.json`, `*_config.json`, …).
    Config,
    /// A tokenizer file.
    Tokenizer,
    /// `modules.json` or a file of a sentence-transformers module folder.
    Module,
    /// Python code shipped with the model.
    Code,
    /// Anything else the selection took.
    Other,
    /// The model's signature (`model.sig` by default), in the plan because the manifest gives
    /// the model a signature policy and the repo has it at the commit.
    Signature,
}

impl FileRole {
    /// The role of `path` in a model whose weight file is `weights` (a pure rule on names).
    pub(crate) fn of(path: &str, weights: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or(path);
        if path == weights {
            FileRole::Weights
        } else if is_safetensors_index(path) {
            FileRole::Index
        } else if [".safetensors", ".bin", ".onnx", ".gguf", ".pt", ".h5"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            FileRole::Shard
        } else if TOKENIZER_FILES.contains(&name) {
            FileRole::Tokenizer
        } else if path == MODULES_JSON || path.contains('/') {
            FileRole::Module
        } else if name.ends_with(".py") {
            FileRole::Code
        } else if name.ends_with(".json") && name.contains("config") {
            FileRole::Config
        } else {
            FileRole::Other
        }
    }
}

/// Where a model's list of files came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetOrigin {
    /// The entry names its weight file alone.
    SingleFile,
    /// The manifest's resolved `files` (a locked set).
    Manifest,
    /// Resolved on the Hub earlier and recorded in the cache (or kept in memory by this
    /// process where the cache is read-only).
    Recorded,
    /// Resolved on the Hub's tree listing in this run.
    Hub,
    /// Resolved from `huggingface_hub`'s copy of the Hub's tree listing
    /// (`trees/<commit>.json`): the Hub's own list, kept by Python.
    TreeListing,
    /// Resolved from the files the snapshot folder holds: a file the repo has but the folder
    /// lacks cannot be known offline.
    SnapshotFolder,
}

impl SetOrigin {
    /// Words for `status --files`.
    pub fn describe(self) -> &'static str {
        match self {
            SetOrigin::SingleFile => "the weight file alone",
            SetOrigin::Manifest => "locked in the manifest",
            SetOrigin::Recorded => "resolved on the Hub and recorded in the cache",
            SetOrigin::Hub => "the Hub's file list",
            SetOrigin::TreeListing => "the cache's tree listing (trees/<commit>.json)",
            SetOrigin::SnapshotFolder => {
                "the snapshot folder (files the repo has but the folder lacks cannot be known offline)"
            }
        }
    }
}

/// One file of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedFile {
    /// Path in the repo and in the snapshot folder.
    pub(crate) path: String,
    /// The size its bytes must have, when known.
    pub(crate) size: Option<u64>,
    /// The digest its bytes must have; `None`: the one the Hub advertises (an unpinned weight
    /// file not asked about yet), or, offline, none known.
    pub(crate) digest: Option<ExpectedDigest>,
    /// What it is to the model.
    pub(crate) role: FileRole,
}

impl PlannedFile {
    fn from_pinned(file: &PinnedFile, weights: &str) -> Self {
        PlannedFile {
            path: file.path.clone(),
            size: Some(file.size_bytes),
            digest: Some(ExpectedDigest::new(file.kind, file.digest.clone())),
            role: FileRole::of(&file.path, weights),
        }
    }
}

/// A model's commit and every file of its set, the weight file first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelPlan {
    /// The commit every file is taken from.
    pub(crate) commit: String,
    /// The files, the weight file first.
    pub(crate) files: Vec<PlannedFile>,
    /// Where the list came from.
    pub(crate) origin: SetOrigin,
}

impl ModelPlan {
    /// A plan from the weight file's expectations and the rest of the set (rows for the weight
    /// file in `set` are folded into the first row).
    pub(crate) fn new(
        artifact: &ModelArtifact,
        commit: &str,
        weights: (Option<ExpectedDigest>, Option<u64>),
        set: &[PinnedFile],
        origin: SetOrigin,
    ) -> Self {
        let listed = set.iter().find(|f| f.path == artifact.filename);
        let (digest, size) = weights;
        let mut files = vec![PlannedFile {
            path: artifact.filename.clone(),
            size: size.or(listed.map(|f| f.size_bytes)),
            digest: digest
                .or_else(|| listed.map(|f| ExpectedDigest::new(f.kind, f.digest.clone()))),
            role: FileRole::Weights,
        }];
        let mut seen = BTreeSet::from([artifact.filename.clone()]);
        for file in set {
            if seen.insert(file.path.clone()) {
                files.push(PlannedFile::from_pinned(file, &artifact.filename));
            }
        }
        ModelPlan {
            commit: commit.to_owned(),
            files,
            origin,
        }
    }

    /// Gives the signature file its role (the manifest's policy names it).
    pub(crate) fn mark_signature(mut self, signature: Option<&str>) -> Self {
        if let Some(signature) = signature {
            for file in &mut self.files {
                if file.path == signature && file.role != FileRole::Weights {
                    file.role = FileRole::Signature;
                }
            }
        }
        self
    }

    /// The weight file's row.
    pub(crate) fn weights(&self) -> &PlannedFile {
        &self.files[0]
    }

    /// The bytes of the whole set, as far as sizes are known.
    pub(crate) fn known_bytes(&self) -> u64 {
        self.files.iter().filter_map(|f| f.size).sum()
    }
}

/// What the manifest pins for the weight file: its `sha256`, else its row in the locked `files`.
pub(crate) fn pinned_weights(artifact: &ModelArtifact) -> Option<ExpectedDigest> {
    if let Some(sha) = &artifact.sha256 {
        return Some(ExpectedDigest::Sha256(sha.clone()));
    }
    artifact
        .pinned_file(&artifact.filename)
        .map(|f| ExpectedDigest::new(f.kind, f.digest.clone()))
}

/// The key a resolved set is recorded under: the weight file, the selection, and the
/// signature file a policy adds (a set recorded before the policy lacks it).
fn selection_key(artifact: &ModelArtifact, signature: Option<&str>) -> String {
    let FileSelection {
        include, preset, ..
    } = &artifact.selection;
    let key = format!(
        "{}\0{}\0{}",
        artifact.filename,
        preset.map_or("", |p| p.as_str()),
        include.join("\0")
    );
    match signature {
        Some(signature) => format!("{key}\0signature:{signature}"),
        None => key,
    }
}

/// Where the model's resolved set at `commit` is recorded in the cache.
pub(crate) fn set_record(
    layout: &CacheLayout,
    artifact: &ModelArtifact,
    commit: &str,
    signature: Option<&str>,
) -> PathBuf {
    layout.set_record_path(
        &artifact.repo_id,
        commit,
        &selection_key(artifact, signature),
    )
}

/// Where the verdict on the model's signature at `commit` under `policy` is recorded.
pub(crate) fn signature_record(
    layout: &CacheLayout,
    artifact: &ModelArtifact,
    commit: &str,
    policy: &str,
) -> PathBuf {
    let key = format!("{}\0policy:{policy}", selection_key(artifact, None));
    layout.signature_record_path(&artifact.repo_id, commit, &key)
}

/// Records a resolved set (blocking; small atomic write).
pub(crate) fn record_set(
    layout: &CacheLayout,
    artifact: &ModelArtifact,
    commit: &str,
    signature: Option<&str>,
    files: &[PinnedFile],
) -> crate::error::EmbeddingResult<()> {
    let record = set_record(layout, artifact, commit, signature);
    let text = serde_json::to_vec_pretty(files).unwrap_or_default();
    crate::artifacts::store::fs::write_atomic(&record, &text)
}

/// The repo path of the model's signature when the manifest gives it a policy: that file joins
/// the set whenever the repo has it at the commit.
pub(crate) fn signature_path(
    policies: &SignaturePolicies,
    artifact: &ModelArtifact,
) -> Option<String> {
    policies
        .for_model(artifact.model_id)
        .map(|policy| policy.file.clone())
}

/// The set of a model at `commit` as known without the Hub, with where it came from: the
/// manifest's list, the weight file alone, or a set recorded (on disk or in this process's
/// memory). Blocking (one small read).
pub(crate) fn known_set(
    view: &CacheView,
    artifact: &ModelArtifact,
    commit: &str,
) -> Option<(Vec<PinnedFile>, SetOrigin)> {
    if let Some(files) = &artifact.selection.files {
        return Some((files.clone(), SetOrigin::Manifest));
    }
    let signature = signature_path(&view.signatures, artifact);
    if artifact.selection.is_single_file() && signature.is_none() {
        // (With a signature policy, whether the repo has the signature is part of the set:
        // it is resolved on the tree and recorded like any set.)
        return Some((Vec::new(), SetOrigin::SingleFile));
    }
    let record = set_record(&view.layout, artifact, commit, signature.as_deref());
    let recorded = std::fs::read(&record)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<PinnedFile>>(&bytes).ok())
        .filter(|files| {
            files
                .iter()
                .all(|f| crate::artifacts::manifest::validate_filename(&f.path).is_ok())
        });
    recorded
        .or_else(|| view.memory.remembered_set(&record))
        .map(|files| (files, SetOrigin::Recorded))
}

/// The model's plan from the cache alone (see the module note), with the commit its revision
/// resolves to locally. `None` for the plan when the commit is unknown or nothing in the cache
/// says which files make up the set. Blocking.
pub(crate) fn plan_locally(
    view: &CacheView,
    artifact: &ModelArtifact,
) -> (Option<String>, Option<ModelPlan>) {
    let repo = &artifact.repo_id;
    let Some(commit) = view
        .layout
        .resolve_commit(repo, artifact.revision_or_default())
    else {
        return (None, None);
    };
    let plan = plan_at(view, artifact, &commit);
    (Some(commit), plan)
}

/// The model's plan at `commit` from the cache alone (see the module note). Blocking.
pub(crate) fn plan_at(
    view: &CacheView,
    artifact: &ModelArtifact,
    commit: &str,
) -> Option<ModelPlan> {
    let repo = &artifact.repo_id;
    let commit = commit.to_owned();
    let weights_entry = view.layout.snapshot_path(repo, &commit, &artifact.filename);
    let weights_digest = pinned_weights(artifact).or_else(|| {
        local_digest(&weights_entry).or_else(|| {
            VerificationStamp::read(&view.layout.stamp_path(repo, &commit, &artifact.filename))
                .and_then(|s| {
                    DigestKind::of_hex(&s.sha256).map(|k| ExpectedDigest::new(k, s.sha256))
                })
        })
    });
    let weights = (weights_digest, artifact.size_bytes);
    let signature = signature_path(&view.signatures, artifact);
    if let Some((set, origin)) = known_set(view, artifact, &commit) {
        return Some(
            ModelPlan::new(artifact, &commit, weights, &set, origin)
                .mark_signature(signature.as_deref()),
        );
    }
    let plan = match read_tree_listing(&view.layout, repo, &commit) {
        Some(Ok(tree)) => from_listing(view, artifact, &commit, &tree).map(|mut set| {
            add_signature(&mut set, &tree, signature.as_deref());
            ModelPlan::new(
                artifact,
                &commit,
                weights.clone(),
                &set,
                SetOrigin::TreeListing,
            )
        }),
        // A listing that cannot be used says nothing; the folder still may.
        Some(Err(_)) | None => None,
    }
    .or_else(|| from_snapshot_folder(view, artifact, &commit, weights, signature.as_deref()));
    plan.map(|p| p.mark_signature(signature.as_deref()))
}

/// The digest a snapshot link names (`blobs/<etag>`), for an entry whose bytes stay inside.
fn local_digest(entry: &std::path::Path) -> Option<ExpectedDigest> {
    if !entry_stays_inside(entry) {
        return None;
    }
    let name = snapshot_link_blob_name(entry)?;
    let kind = DigestKind::of_hex(&name)?;
    (!name.bytes().any(|b| b.is_ascii_uppercase())).then(|| ExpectedDigest::new(kind, name))
}

/// The selection applied to a tree listing, reading the documents the rules need from the
/// snapshot folder (each used only if it has the digest the listing gives).
fn from_listing(
    view: &CacheView,
    artifact: &ModelArtifact,
    commit: &str,
    tree: &[RepoFile],
) -> Option<Vec<PinnedFile>> {
    let by_path: BTreeMap<&str, &RepoFile> = tree.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut documents = BTreeMap::new();
    for path in documents_needed(tree, &artifact.selection, &artifact.filename) {
        let Some(listed) = by_path.get(path.as_str()) else {
            continue;
        };
        let pinned = listed.pinned();
        if let Some(bytes) = read_document(&view.layout, artifact, commit, &path) {
            let digest = match pinned.kind {
                DigestKind::Sha256 => sha256_hex(&bytes),
                DigestKind::GitBlobSha1 => git_blob_sha1_hex(&bytes),
            };
            if digest == pinned.digest {
                documents.insert(path, bytes);
            }
        }
    }
    let paths = select(tree, &artifact.selection, &artifact.filename, &documents).ok()?;
    let mut set: Vec<PinnedFile> = paths
        .iter()
        .filter_map(|p| by_path.get(p.as_str()).map(|f| f.pinned()))
        .collect();
    if !by_path.contains_key(artifact.filename.as_str()) {
        // The listing lacks the weight file: it is still planned (first row), found missing.
        set.retain(|f| f.path != artifact.filename);
    }
    Some(set)
}

/// The selection applied to what the snapshot folder holds: each file's digest is the blob its
/// link names; a copy (no link) has none known.
fn from_snapshot_folder(
    view: &CacheView,
    artifact: &ModelArtifact,
    commit: &str,
    weights: (Option<ExpectedDigest>, Option<u64>),
    signature: Option<&str>,
) -> Option<ModelPlan> {
    let entries = snapshot_entries(&view.layout, &artifact.repo_id, commit);
    if entries.is_empty() {
        return None;
    }
    let digest_of = |name: &Option<String>| {
        name.as_deref()
            .and_then(|n| DigestKind::of_hex(n).map(|k| ExpectedDigest::new(k, n.to_owned())))
    };
    let tree: Vec<RepoFile> = entries
        .iter()
        .map(|e| {
            let digest = digest_of(&e.blob_name);
            RepoFile {
                path: e.path.clone(),
                size: e.size.unwrap_or(0),
                oid: match &digest {
                    Some(ExpectedDigest::GitBlobSha1(h)) => h.clone(),
                    _ => String::new(),
                },
                lfs_sha256: match &digest {
                    Some(ExpectedDigest::Sha256(h)) => Some(h.clone()),
                    _ => None,
                },
            }
        })
        .collect();
    let mut documents = BTreeMap::new();
    for path in documents_needed(&tree, &artifact.selection, &artifact.filename) {
        let expected = entries
            .iter()
            .find(|e| e.path == path)
            .and_then(|e| digest_of(&e.blob_name));
        let Some(bytes) = read_document(&view.layout, artifact, commit, &path) else {
            continue;
        };
        let right = match &expected {
            Some(ExpectedDigest::Sha256(h)) => sha256_hex(&bytes) == *h,
            Some(ExpectedDigest::GitBlobSha1(h)) => git_blob_sha1_hex(&bytes) == *h,
            // A copy: its content is all there is to go by; the file itself stays unverified.
            None => true,
        };
        if right {
            documents.insert(path, bytes);
        }
    }
    let mut paths = select(&tree, &artifact.selection, &artifact.filename, &documents).ok()?;
    if let Some(signature) = signature {
        if !paths.iter().any(|p| p == signature) && entries.iter().any(|e| e.path == signature) {
            paths.push(signature.to_owned());
        }
    }
    let mut plan = ModelPlan::new(artifact, commit, weights, &[], SetOrigin::SnapshotFolder);
    for path in paths.into_iter().filter(|p| *p != artifact.filename) {
        let entry = entries.iter().find(|e| e.path == path);
        plan.files.push(PlannedFile {
            role: FileRole::of(&path, &artifact.filename),
            size: entry.and_then(|e| e.size),
            digest: entry.and_then(|e| digest_of(&e.blob_name)),
            path,
        });
    }
    if plan.files[0].size.is_none() {
        plan.files[0].size = entries
            .iter()
            .find(|e| e.path == artifact.filename)
            .and_then(|e| e.size);
    }
    Some(plan)
}

/// A small document of the snapshot (at most 16 MiB), when its bytes stay inside the cache.
fn read_document(
    layout: &CacheLayout,
    artifact: &ModelArtifact,
    commit: &str,
    path: &str,
) -> Option<Vec<u8>> {
    let entry = layout.snapshot_path(&artifact.repo_id, commit, path);
    if !entry_stays_inside(&entry) || std::fs::metadata(&entry).ok()?.len() > 16 << 20 {
        return None;
    }
    std::fs::read(entry).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_names() {
        let w = "model.safetensors";
        assert_eq!(FileRole::of(w, w), FileRole::Weights);
        assert_eq!(
            FileRole::of("model-00001-of-00002.safetensors", w),
            FileRole::Shard
        );
        assert_eq!(
            FileRole::of("model.safetensors.index.json", w),
            FileRole::Index
        );
        assert_eq!(FileRole::of("tokenizer.json", w), FileRole::Tokenizer);
        assert_eq!(FileRole::of("config.json", w), FileRole::Config);
        assert_eq!(
            FileRole::of("sentence_bert_config.json", w),
            FileRole::Config
        );
        assert_eq!(FileRole::of("modules.json", w), FileRole::Module);
        assert_eq!(FileRole::of("1_Pooling/config.json", w), FileRole::Module);
        assert_eq!(FileRole::of("modeling_custom.py", w), FileRole::Code);
        assert_eq!(FileRole::of("README.md", w), FileRole::Other);
    }

    #[test]
    fn a_plan_puts_the_weight_file_first_and_takes_its_row_from_the_set() {
        let artifact = ModelArtifact {
            model_id: crate::model_id::ModelId::Entity,
            repo_id: "org/model".to_owned(),
            filename: "model.safetensors".to_owned(),
            sha256: None,
            size_bytes: None,
            revision: None,
            branch: None,
            selection: FileSelection::default(),
            signed_by: None,
        };
        let set = vec![
            PinnedFile {
                path: "config.json".to_owned(),
                size_bytes: 3,
                kind: DigestKind::GitBlobSha1,
                digest: "b".repeat(40),
            },
            PinnedFile {
                path: "model.safetensors".to_owned(),
                size_bytes: 9,
                kind: DigestKind::Sha256,
                digest: "a".repeat(64),
            },
        ];
        let plan = ModelPlan::new(
            &artifact,
            &"c".repeat(40),
            (None, None),
            &set,
            SetOrigin::Hub,
        );
        assert_eq!(plan.files.len(), 2);
        assert_eq!(plan.weights().path, "model.safetensors");
        assert_eq!(plan.weights().size, Some(9));
        assert_eq!(
            plan.weights().digest,
            Some(ExpectedDigest::Sha256("a".repeat(64)))
        );
        assert_eq!(plan.files[1].role, FileRole::Config);
        assert_eq!(plan.known_bytes(), 12);
    }
}
