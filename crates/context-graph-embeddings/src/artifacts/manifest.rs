//! The model manifest: which file of which Hub repo at which revision backs each model, and
//! what its bytes must hash to. Owns parsing, strict validation and serialisation.
//!
//! Unlike the spec's sketch, `sha256` and `size_bytes` are optional: the real manifest has
//! entries whose hash nobody here could read, and an invented value would be worse than none.
//! An unpinned entry is verified against the hash the Hub advertises at the pinned commit
//! (`X-Linked-Etag`), and `cg-models lock` fills the gaps. Built-in models (computed in-process)
//! are entries of their own kind with no file at all.
//!
//! An entry may name more than its weight file: `files` (the resolved set, each file with its
//! size and SHA-256 or git blob SHA-1), `include` (glob patterns) and `preset` (a named
//! selection, see `fileset`). Without them an entry means its weight file alone, exactly as
//! in the original format.
//!
//! Who must have signed a model's files (an OpenSSF model signature, see `signature/`) is a
//! policy per entry (`signature`) with a manifest-wide default: the manifest is then an object
//! `{"signature": {...}, "models": [...]}` instead of the bare array. A manifest without
//! policies is written as the bare array, exactly as before.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fileset::{FileSelection, PinnedFile, Preset};
use super::hash::DigestKind;
use super::ids::{is_commit_hash, validate_sha256};
use super::signature::{
    SignatureMode, SignaturePolicy, SignatureVerifier, SignerPolicy, DEFAULT_SIGNATURE_FILE,
};
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};
use crate::model_id::ModelId;

/// The manifest compiled into the binary (`manifests.json` beside this file).
pub(super) const EMBEDDED_MANIFEST: &str = include_str!("manifests.json");

/// The revision used when an entry names none.
pub(super) const DEFAULT_REVISION: &str = "main";

/// Largest file size a manifest may pin (1 TiB); anything above is a typo or hostile.
pub(super) const MAX_PINNED_SIZE: u64 = 1 << 40;

/// Model artifact metadata: one weight file on the Hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelArtifact {
    /// The model slot this file backs.
    pub model_id: ModelId,
    /// `org/name` (or `name`) on the Hub, e.g. `intfloat/e5-large-v2`.
    pub repo_id: String,
    /// Path of the file inside the repo, e.g. `model.safetensors`.
    pub filename: String,
    /// Expected SHA-256 (64 lower-case hex digits), or `None` when not pinned: then the Hub's
    /// advertised hash at the revision is used. (The spec has `String`; an unknown hash is not one.)
    pub sha256: Option<String>,
    /// Expected size in bytes, or `None` when not pinned. (The spec has `u64`.)
    pub size_bytes: Option<u64>,
    /// Git revision: a 40-hex commit (recommended: content never changes), a branch or a tag.
    /// `None` means `main`.
    pub revision: Option<String>,
    /// The branch a pinned commit tracks (`main`, say): `ensure` writes `refs/<branch>` for
    /// consumers that name the branch (Python, hf-hub, candle) only once the Hub confirms the
    /// branch's head is the pin; `lock` and `lock --upgrade` fill it. Not part of the spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The files besides `filename` that belong to the model (config, tokenizer, modules,
    /// shards); empty means the weight file alone. Not part of the spec's struct.
    #[serde(skip)]
    pub selection: FileSelection,
    /// The SHA-256 of the public key that signed the pinned content, as `lock` recorded it
    /// when the model's signature policy verified it (`signed_by` in the manifest).
    pub signed_by: Option<String>,
}

impl ModelArtifact {
    /// The file this entry names, for errors and events.
    pub fn location(&self) -> FileLocation {
        FileLocation {
            model_id: self.model_id,
            repo_id: self.repo_id.clone(),
            revision: self.revision_or_default().to_owned(),
            filename: self.filename.clone(),
        }
    }

    /// The revision to ask for: the entry's, or `main`.
    pub fn revision_or_default(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }

    /// Whether the revision is a full commit id, so the snapshot can be found without a ref.
    pub fn revision_is_commit(&self) -> bool {
        is_commit_hash(self.revision_or_default())
    }

    /// Whether both hash and size are pinned.
    pub fn is_fully_pinned(&self) -> bool {
        self.sha256.is_some() && self.size_bytes.is_some()
    }

    /// The locked file of the set at `path`, when the manifest lists the files.
    pub fn pinned_file(&self, path: &str) -> Option<&PinnedFile> {
        self.selection
            .files
            .as_ref()?
            .iter()
            .find(|f| f.path == path)
    }

    /// The file format, from the file name: it decides which structural checks apply.
    pub fn format(&self) -> WeightFormat {
        WeightFormat::from_filename(&self.filename)
    }
}

/// The format of a weight file, as far as the artifact manager cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// `.safetensors`: header and tensor ranges are checked before use.
    Safetensors,
    /// `*.safetensors.index.json`: the index of a sharded model; every shard it names is part
    /// of the set and checked like a `.safetensors` file, and the index against them.
    ShardedSafetensors,
    /// PyTorch pickle (`.bin`, `.pt`, `.pth`): can run code when loaded by PyTorch; only the
    /// checksum applies.
    PytorchPickle,
    /// Anything else: only the checksum applies.
    Other,
}

impl WeightFormat {
    /// Guesses the format from a file name's extension.
    pub fn from_filename(filename: &str) -> Self {
        let lower = filename.to_ascii_lowercase();
        if lower.ends_with(".safetensors.index.json") {
            WeightFormat::ShardedSafetensors
        } else if lower.ends_with(".safetensors") {
            WeightFormat::Safetensors
        } else if lower.ends_with(".bin") || lower.ends_with(".pt") || lower.ends_with(".pth") {
            WeightFormat::PytorchPickle
        } else {
            WeightFormat::Other
        }
    }
}

/// One manifest entry.
// A manifest holds twelve entries, parsed once: boxing the artifact would cost every match on
// the public enum more than the bytes it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestEntry {
    /// A model computed in-process: no file, always ready.
    Builtin(ModelId),
    /// A model backed by a file on the Hub.
    Artifact(ModelArtifact),
}

impl ManifestEntry {
    /// The model this entry is for.
    pub fn model_id(&self) -> ModelId {
        match self {
            ManifestEntry::Builtin(id) => *id,
            ManifestEntry::Artifact(artifact) => artifact.model_id,
        }
    }
}

/// A validated manifest: every model exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Where it came from: a path, or `built-in manifest`.
    pub origin: String,
    /// Entries in file order.
    pub entries: Vec<ManifestEntry>,
    /// Who must have signed each model (none by default).
    pub signatures: SignaturePolicies,
}

/// The manifest's signature policies: a default for every artifact and each entry's own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignaturePolicies {
    /// The top-level `signature`: applies to every artifact without a `signature` of its own.
    pub default: Option<SignaturePolicy>,
    /// An entry's `signature`: its own policy, or `None` for `"signature": false` (this model
    /// is not checked even when there is a default).
    pub per_model: BTreeMap<ModelId, Option<SignaturePolicy>>,
    /// The folder relative key and root paths are taken from (the manifest file's folder;
    /// `None` for the built-in manifest and parsed text: the working directory).
    pub base_dir: Option<PathBuf>,
}

impl SignaturePolicies {
    /// The policy that applies to a model, if any.
    pub fn for_model(&self, model_id: ModelId) -> Option<&SignaturePolicy> {
        match self.per_model.get(&model_id) {
            Some(own) => own.as_ref(),
            None => self.default.as_ref(),
        }
    }

    /// Whether any model must be signed.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.per_model.values().all(Option::is_none)
    }

    /// Loads the key or root of a model's policy (blocking: reads the PEM file), with
    /// relative paths taken from the manifest's folder. `Ok(None)`: the model has no policy.
    pub fn verifier_for(&self, model_id: ModelId) -> EmbeddingResult<Option<SignatureVerifier>> {
        self.for_model(model_id)
            .map(|policy| policy.verifier(self.base_dir.as_deref()))
            .transpose()
    }
}

impl Manifest {
    /// The manifest compiled into the binary.
    pub fn embedded() -> EmbeddingResult<Self> {
        Self::parse(EMBEDDED_MANIFEST, "built-in manifest")
    }

    /// Reads and validates a manifest file.
    pub fn from_path(path: &Path) -> EmbeddingResult<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| EmbeddingError::ManifestRead {
                path: path.to_path_buf(),
                source,
            })?;
        let mut manifest = Self::parse(&text, &path.display().to_string())?;
        manifest.signatures.base_dir = path.parent().map(Path::to_path_buf);
        Ok(manifest)
    }

    /// Parses and validates manifest JSON. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> EmbeddingResult<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| EmbeddingError::ManifestSyntax {
                origin: origin.to_owned(),
                reason: e.to_string(),
            })?;
        let syntax = |reason: String| EmbeddingError::ManifestSyntax {
            origin: origin.to_owned(),
            reason,
        };
        let mut signatures = SignaturePolicies::default();
        let items = match value {
            Value::Array(items) => items,
            Value::Object(mut top) => {
                if let Some(unknown) = top.keys().find(|k| *k != "models" && *k != "signature") {
                    return Err(syntax(format!(
                        "unknown top-level field `{}` (allowed: models, signature)",
                        truncate(unknown)
                    )));
                }
                if let Some(policy) = top.get("signature") {
                    signatures.default = match parse_signature_policy(policy) {
                        Ok(Some(policy)) => Some(policy),
                        Ok(None) => None,
                        Err(reason) => {
                            return Err(EmbeddingError::ManifestEntry {
                                origin: origin.to_owned(),
                                entry: "top level".to_owned(),
                                field: "signature",
                                reason,
                            })
                        }
                    };
                }
                match top.remove("models") {
                    Some(Value::Array(items)) => items,
                    _ => {
                        return Err(syntax(
                            "the top-level object needs `models`, the array of entries".to_owned(),
                        ))
                    }
                }
            }
            _ => {
                return Err(syntax(
                    "the top level must be a JSON array of entries, or an object with `models` and `signature`"
                        .to_owned(),
                ))
            }
        };
        let mut entries = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            let entry = parse_entry(item, index, origin)?;
            if let (ManifestEntry::Artifact(artifact), Some(policy)) =
                (&entry, item.get("signature"))
            {
                let policy = parse_signature_policy(policy).map_err(|reason| {
                    EmbeddingError::ManifestEntry {
                        origin: origin.to_owned(),
                        entry: format!("#{index} ({})", artifact.model_id),
                        field: "signature",
                        reason,
                    }
                })?;
                signatures.per_model.insert(artifact.model_id, policy);
            }
            if !seen.insert(entry.model_id()) {
                return Err(EmbeddingError::ManifestEntry {
                    origin: origin.to_owned(),
                    entry: format!("#{index} ({})", entry.model_id()),
                    field: "model_id",
                    reason: "appears twice; each model must have exactly one entry".to_owned(),
                });
            }
            entries.push(entry);
        }
        if let Some(missing) = ModelId::ALL.into_iter().find(|m| !seen.contains(m)) {
            return Err(EmbeddingError::ManifestEntry {
                origin: origin.to_owned(),
                entry: format!("for {missing}"),
                field: "model_id",
                reason: format!(
                    "has no entry; the manifest must list all 12 models (use {{\"model_id\": \"{missing}\", \"builtin\": true}} for one computed in-process)"
                ),
            });
        }
        Ok(Manifest {
            origin: origin.to_owned(),
            entries,
            signatures,
        })
    }

    /// The artifacts (downloadable entries), in manifest order.
    pub fn artifacts(&self) -> impl Iterator<Item = &ModelArtifact> {
        self.entries.iter().filter_map(|e| match e {
            ManifestEntry::Artifact(a) => Some(a),
            ManifestEntry::Builtin(_) => None,
        })
    }

    /// The built-in models, in manifest order.
    pub fn builtins(&self) -> impl Iterator<Item = ModelId> + '_ {
        self.entries.iter().filter_map(|e| match e {
            ManifestEntry::Builtin(id) => Some(*id),
            ManifestEntry::Artifact(_) => None,
        })
    }

    /// The entry for a model.
    pub fn entry(&self, model_id: ModelId) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.model_id() == model_id)
    }

    /// Serialises the manifest in the same format it is read from (pretty JSON, trailing newline).
    pub fn to_json_pretty(&self) -> String {
        /// Entries in the field order people write them (serde keeps struct order).
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Written<'a> {
            Builtin {
                model_id: &'a str,
                builtin: bool,
            },
            Artifact {
                model_id: &'a str,
                repo_id: &'a str,
                filename: &'a str,
                sha256: &'a Option<String>,
                size_bytes: Option<u64>,
                revision: &'a Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                branch: &'a Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                preset: Option<&'static str>,
                #[serde(skip_serializing_if = "<[String]>::is_empty")]
                include: &'a [String],
                #[serde(skip_serializing_if = "Option::is_none")]
                files: Option<Vec<WrittenFile<'a>>>,
                #[serde(skip_serializing_if = "Option::is_none")]
                signature: Option<Value>,
                #[serde(skip_serializing_if = "Option::is_none")]
                signed_by: &'a Option<String>,
            },
        }
        /// A file of a set as written (`sha256` for LFS files, `git_sha1` for regular ones).
        #[derive(Serialize)]
        struct WrittenFile<'a> {
            path: &'a str,
            size_bytes: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            sha256: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            git_sha1: Option<&'a str>,
        }
        let items: Vec<Written<'_>> = self
            .entries
            .iter()
            .map(|entry| match entry {
                ManifestEntry::Builtin(id) => Written::Builtin {
                    model_id: id.as_str(),
                    builtin: true,
                },
                ManifestEntry::Artifact(a) => Written::Artifact {
                    model_id: a.model_id.as_str(),
                    repo_id: &a.repo_id,
                    filename: &a.filename,
                    sha256: &a.sha256,
                    size_bytes: a.size_bytes,
                    revision: &a.revision,
                    branch: &a.branch,
                    preset: a.selection.preset.map(Preset::as_str),
                    include: &a.selection.include,
                    files: a.selection.files.as_ref().map(|files| {
                        files
                            .iter()
                            .map(|f| WrittenFile {
                                path: &f.path,
                                size_bytes: f.size_bytes,
                                sha256: (f.kind == DigestKind::Sha256).then_some(f.digest.as_str()),
                                git_sha1: (f.kind == DigestKind::GitBlobSha1)
                                    .then_some(f.digest.as_str()),
                            })
                            .collect()
                    }),
                    signature: self
                        .signatures
                        .per_model
                        .get(&a.model_id)
                        .map(|p| p.as_ref().map_or(Value::Bool(false), signature_policy_json)),
                    signed_by: &a.signed_by,
                },
            })
            .collect();
        let written = match &self.signatures.default {
            None => serde_json::to_string_pretty(&items),
            Some(default) => serde_json::to_string_pretty(&serde_json::json!({
                "signature": signature_policy_json(default),
                "models": items,
            })),
        };
        let mut text = written.unwrap_or_else(|_| "[]".to_owned());
        text.push('\n');
        text
    }
}

const ARTIFACT_FIELDS: [&str; 12] = [
    "model_id",
    "repo_id",
    "filename",
    "sha256",
    "size_bytes",
    "revision",
    "branch",
    "preset",
    "include",
    "files",
    "signature",
    "signed_by",
];

fn parse_entry(item: &Value, index: usize, origin: &str) -> EmbeddingResult<ManifestEntry> {
    let mut label = format!("#{index}");
    let fail = |label: &str, field: &'static str, reason: String| EmbeddingError::ManifestEntry {
        origin: origin.to_owned(),
        entry: label.to_owned(),
        field,
        reason,
    };
    let Value::Object(object) = item else {
        return Err(fail(
            &label,
            "model_id",
            "entry is not a JSON object".to_owned(),
        ));
    };
    let model_id = match object.get("model_id") {
        Some(Value::String(name)) => name
            .parse::<ModelId>()
            .ok()
            .filter(|m| m.as_str() == name)
            .ok_or_else(|| {
                fail(
                    &label,
                    "model_id",
                    format!(
                        "`{}` is not a known model (expected one of {})",
                        truncate(name),
                        ModelId::ALL.map(|m| m.as_str()).join(", ")
                    ),
                )
            })?,
        Some(_) => return Err(fail(&label, "model_id", "must be a string".to_owned())),
        None => return Err(fail(&label, "model_id", "is missing".to_owned())),
    };
    label = format!("#{index} ({model_id})");

    match object.get("builtin") {
        Some(Value::Bool(true)) => {
            if let Some(extra) = object.keys().find(|k| *k != "model_id" && *k != "builtin") {
                return Err(fail(
                    &label,
                    "builtin",
                    format!(
                        "a built-in entry takes no other fields, found `{}`",
                        truncate(extra)
                    ),
                ));
            }
            return Ok(ManifestEntry::Builtin(model_id));
        }
        Some(Value::Bool(false)) | None => {}
        Some(_) => return Err(fail(&label, "builtin", "must be true or false".to_owned())),
    }

    if let Some(unknown) = object
        .keys()
        .find(|k| !ARTIFACT_FIELDS.contains(&k.as_str()) && *k != "builtin")
    {
        return Err(fail(
            &label,
            "model_id",
            format!(
                "entry has unknown field `{}` (allowed: {})",
                truncate(unknown),
                ARTIFACT_FIELDS.join(", ")
            ),
        ));
    }

    let repo_id = required_string(object, "repo_id").map_err(|r| fail(&label, "repo_id", r))?;
    validate_repo_id(&repo_id).map_err(|r| fail(&label, "repo_id", r))?;
    let filename = required_string(object, "filename").map_err(|r| fail(&label, "filename", r))?;
    validate_filename(&filename).map_err(|r| fail(&label, "filename", r))?;
    let sha256 = optional_string(object, "sha256")
        .map_err(|r| fail(&label, "sha256", r))?
        .map(|s| validate_sha256(&s).map_err(|r| fail(&label, "sha256", r)))
        .transpose()?;
    let size_bytes = match object.get("size_bytes") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let size = n.as_u64().ok_or_else(|| {
                fail(
                    &label,
                    "size_bytes",
                    format!("`{n}` is not a whole number of bytes"),
                )
            })?;
            if size == 0 || size > MAX_PINNED_SIZE {
                return Err(fail(
                    &label,
                    "size_bytes",
                    format!("{size} is outside 1..={MAX_PINNED_SIZE}"),
                ));
            }
            Some(size)
        }
        Some(_) => {
            return Err(fail(
                &label,
                "size_bytes",
                "must be a number or null".to_owned(),
            ))
        }
    };
    let revision = optional_string(object, "revision")
        .map_err(|r| fail(&label, "revision", r))?
        .map(|r| validate_revision(&r).map(|()| r))
        .transpose()
        .map_err(|r| fail(&label, "revision", r))?;
    let revision = revision.map(|r| {
        if is_commit_hash(&r.to_ascii_lowercase()) {
            r.to_ascii_lowercase()
        } else {
            r
        }
    });

    let branch = optional_string(object, "branch")
        .map_err(|r| fail(&label, "branch", r))?
        .map(|b| {
            validate_revision(&b)?;
            if is_commit_hash(&b.to_ascii_lowercase()) {
                return Err(format!(
                    "`{b}` is a commit id; `branch` names the branch the pinned `revision` tracks, such as `main`"
                ));
            }
            Ok(b)
        })
        .transpose()
        .map_err(|r| fail(&label, "branch", r))?;

    let selection = parse_selection(object, &filename, sha256.as_deref(), size_bytes)
        .map_err(|(field, reason)| fail(&label, field, reason))?;

    let signed_by = optional_string(object, "signed_by")
        .map_err(|r| fail(&label, "signed_by", r))?
        .map(|k| {
            let k = k.to_ascii_lowercase();
            if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(k)
            } else {
                Err(
                    "must be the SHA-256 (64 hex digits) of the signing key, as `lock` writes it"
                        .to_owned(),
                )
            }
        })
        .transpose()
        .map_err(|r| fail(&label, "signed_by", r))?;

    Ok(ManifestEntry::Artifact(ModelArtifact {
        model_id,
        repo_id,
        filename,
        sha256,
        size_bytes,
        revision,
        branch,
        selection,
        signed_by,
    }))
}

/// `preset`, `include` and `files` of an entry; the weight file must be in `files` and agree
/// with the entry's own pins.
fn parse_selection(
    object: &Map<String, Value>,
    filename: &str,
    sha256: Option<&str>,
    size_bytes: Option<u64>,
) -> Result<FileSelection, (&'static str, String)> {
    let preset = match object.get("preset") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(Preset::parse(name).ok_or_else(|| {
            (
                "preset",
                format!(
                    "`{}` is not a preset (known: sentence-transformers, transformers)",
                    truncate(name)
                ),
            )
        })?),
        Some(_) => return Err(("preset", "must be a string or null".to_owned())),
    };
    let include = match object.get("include") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(p) if !p.is_empty() && p.len() <= 1024 => Ok(p.clone()),
                _ => Err((
                    "include",
                    "must be an array of non-empty glob patterns".to_owned(),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(("include", "must be an array of glob patterns".to_owned())),
    };
    let files = match object.get("files") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut files = Vec::with_capacity(items.len());
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let file = parse_pinned_file(item).map_err(|r| ("files", format!("#{i}: {r}")))?;
                if !seen.insert(file.path.clone()) {
                    return Err(("files", format!("`{}` is listed twice", file.path)));
                }
                files.push(file);
            }
            let Some(weights) = files.iter().find(|f| f.path == filename) else {
                return Err((
                    "files",
                    format!("must list the weight file `{filename}` too"),
                ));
            };
            if let Some(sha) = sha256 {
                if weights.kind != DigestKind::Sha256 || weights.digest != sha {
                    return Err((
                        "files",
                        format!("the entry for `{filename}` disagrees with the entry's sha256"),
                    ));
                }
            }
            if size_bytes.is_some_and(|s| s != weights.size_bytes) {
                return Err((
                    "files",
                    format!("the entry for `{filename}` disagrees with the entry's size_bytes"),
                ));
            }
            Some(files)
        }
        Some(_) => return Err(("files", "must be an array of files".to_owned())),
    };
    Ok(FileSelection {
        files,
        include,
        preset,
    })
}

/// One `{"path", "size_bytes", "sha256" | "git_sha1"}` item of `files`.
fn parse_pinned_file(item: &Value) -> Result<PinnedFile, String> {
    let Value::Object(object) = item else {
        return Err("is not a JSON object".to_owned());
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !["path", "size_bytes", "sha256", "git_sha1"].contains(&k.as_str()))
    {
        return Err(format!(
            "has unknown field `{}` (allowed: path, size_bytes, sha256, git_sha1)",
            truncate(unknown)
        ));
    }
    let path = required_string(object, "path").map_err(|r| format!("path {r}"))?;
    validate_filename(&path).map_err(|r| format!("path {r}"))?;
    let size_bytes = object
        .get("size_bytes")
        .and_then(Value::as_u64)
        .filter(|s| *s <= MAX_PINNED_SIZE)
        .ok_or_else(|| format!("`{path}` needs a whole size_bytes up to {MAX_PINNED_SIZE}"))?;
    let sha256 = optional_string(object, "sha256").map_err(|r| format!("sha256 {r}"))?;
    let git_sha1 = optional_string(object, "git_sha1").map_err(|r| format!("git_sha1 {r}"))?;
    let (kind, digest) = match (sha256, git_sha1) {
        (Some(sha), None) => (DigestKind::Sha256, validate_sha256(&sha)?),
        (None, Some(sha1)) => {
            let lower = sha1.to_ascii_lowercase();
            if DigestKind::of_hex(&lower) != Some(DigestKind::GitBlobSha1) {
                return Err(format!("`{path}`: git_sha1 must be 40 hex digits"));
            }
            (DigestKind::GitBlobSha1, lower)
        }
        _ => {
            return Err(format!(
                "`{path}` needs exactly one of sha256 (LFS files) or git_sha1 (regular files)"
            ))
        }
    };
    Ok(PinnedFile {
        path,
        size_bytes,
        kind,
        digest,
    })
}

const SIGNATURE_FIELDS: [&str; 5] = ["file", "public_key", "certificate_root", "identity", "mode"];

/// A `signature` policy: an object, or `false` (no signature check for this entry).
fn parse_signature_policy(value: &Value) -> Result<Option<SignaturePolicy>, String> {
    let object = match value {
        Value::Bool(false) => return Ok(None),
        Value::Object(object) => object,
        _ => return Err(
            "must be an object (file, public_key or certificate_root and identity, mode) or false"
                .to_owned(),
        ),
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !SIGNATURE_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "has unknown field `{}` (allowed: {})",
            truncate(unknown),
            SIGNATURE_FIELDS.join(", ")
        ));
    }
    let file = optional_string(object, "file")
        .map_err(|r| format!("file {r}"))?
        .unwrap_or_else(|| DEFAULT_SIGNATURE_FILE.to_owned());
    validate_filename(&file).map_err(|r| format!("file {r}"))?;
    let local_path = |field: &str| -> Result<Option<PathBuf>, String> {
        let Some(path) = optional_string(object, field).map_err(|r| format!("{field} {r}"))? else {
            return Ok(None);
        };
        if path.is_empty() || path.len() > 4096 || path.chars().any(char::is_control) {
            return Err(format!(
                "{field} must be the path of a PEM file (1 to 4096 characters, no control characters)"
            ));
        }
        Ok(Some(PathBuf::from(path)))
    };
    let public_key = local_path("public_key")?;
    let certificate_root = local_path("certificate_root")?;
    let identity = optional_string(object, "identity").map_err(|r| format!("identity {r}"))?;
    let signer = match (public_key, certificate_root, identity) {
        (Some(path), None, None) => SignerPolicy::PublicKey { path },
        (None, Some(root), Some(identity)) => {
            if identity.trim().is_empty() || identity.len() > 1024 || identity.chars().any(char::is_control) {
                return Err("identity must be 1 to 1024 characters without control characters".to_owned());
            }
            SignerPolicy::Certificate { root, identity }
        }
        (None, Some(_), None) => {
            return Err("certificate_root needs identity: the e-mail, URI or subject the signing certificate must name".to_owned())
        }
        (Some(_), _, Some(_)) | (None, None, Some(_)) => {
            return Err("identity goes with certificate_root, not with public_key".to_owned())
        }
        (Some(_), Some(_), None) => {
            return Err("give public_key or certificate_root, not both".to_owned())
        }
        (None, None, None) => {
            return Err("must name who may sign: public_key (a PEM public key) or certificate_root and identity".to_owned())
        }
    };
    let mode = match optional_string(object, "mode").map_err(|r| format!("mode {r}"))? {
        None => SignatureMode::Required,
        Some(text) => SignatureMode::parse(&text).ok_or_else(|| {
            format!(
                "mode `{}` is not one of required, if-present",
                truncate(&text)
            )
        })?,
    };
    Ok(Some(SignaturePolicy { file, signer, mode }))
}

/// A policy as the manifest writes it (every field explicit).
fn signature_policy_json(policy: &SignaturePolicy) -> Value {
    let mut object = Map::new();
    object.insert("file".to_owned(), Value::String(policy.file.clone()));
    match &policy.signer {
        SignerPolicy::PublicKey { path } => {
            object.insert(
                "public_key".to_owned(),
                Value::String(path.display().to_string()),
            );
        }
        SignerPolicy::Certificate { root, identity } => {
            object.insert(
                "certificate_root".to_owned(),
                Value::String(root.display().to_string()),
            );
            object.insert("identity".to_owned(), Value::String(identity.clone()));
        }
    }
    object.insert(
        "mode".to_owned(),
        Value::String(policy.mode.as_str().to_owned()),
    );
    Value::Object(object)
}

fn required_string(object: &Map<String, Value>, field: &str) -> Result<String, String> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Err("is missing".to_owned()),
        Some(_) => Err("must be a string".to_owned()),
    }
}

fn optional_string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err("must be a string or null".to_owned()),
    }
}

fn truncate(text: &str) -> String {
    let mut out: String = text.chars().take(80).filter(|c| !c.is_control()).collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Checks a repo id: `name` or `org/name`, each part of letters, digits, `-`, `_`, `.`, not
/// starting or ending with `-` or `.`, without `--` or `..` (which would break the cache
/// folder name `models--org--name` or escape it).
pub(super) fn validate_repo_id(repo_id: &str) -> Result<(), String> {
    let shown = truncate(repo_id);
    if repo_id.is_empty() || repo_id.len() > 96 {
        return Err(format!(
            "`{shown}` must be 1 to 96 characters, `name` or `org/name`"
        ));
    }
    let parts: Vec<&str> = repo_id.split('/').collect();
    if parts.len() > 2 {
        return Err(format!(
            "`{shown}` has more than one `/`; expected `name` or `org/name`"
        ));
    }
    for part in parts {
        let valid_chars = part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let bad_edge = part.starts_with(['-', '.']) || part.ends_with(['-', '.']);
        if part.is_empty() || !valid_chars || bad_edge || part.contains("--") || part.contains("..")
        {
            return Err(format!(
                "`{shown}` is not a valid repo id: each part uses letters, digits, `-`, `_`, `.`, without `--` or `..` and not starting or ending with `-` or `.`"
            ));
        }
    }
    Ok(())
}

/// Checks a file path inside a repo: relative, `/`-separated, no `..` or `.` segment, no
/// backslash, no empty segment, no control characters.
pub(super) fn validate_filename(filename: &str) -> Result<(), String> {
    let shown = truncate(filename);
    if filename.is_empty() || filename.len() > 1024 {
        return Err("must be 1 to 1024 characters".to_owned());
    }
    if filename.starts_with('/') || Path::new(filename).is_absolute() {
        return Err(format!(
            "`{shown}` is absolute; it must be a path inside the repo"
        ));
    }
    if filename.contains('\\') {
        return Err(format!(
            "`{shown}` contains a backslash; use `/` between folders"
        ));
    }
    if filename.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    for segment in filename.split('/') {
        match segment {
            "" => return Err(format!("`{shown}` has an empty path segment")),
            "." | ".." => {
                return Err(format!(
                    "`{shown}` contains `{segment}`; it must stay inside the repo"
                ))
            }
            _ if segment.len() > 255 => {
                return Err("has a path segment longer than 255 bytes".to_owned())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a revision: a commit id, or a branch/tag name such as `main`, `v1.0` or `refs/pr/1`.
pub(super) fn validate_revision(revision: &str) -> Result<(), String> {
    let shown = truncate(revision);
    let valid_chars = revision
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if revision.is_empty()
        || revision.len() > 255
        || !valid_chars
        || revision.starts_with(['/', '.', '-'])
        || revision.ends_with(['/', '.'])
        || revision.ends_with(".lock")
        || revision.contains("..")
        || revision.contains("//")
        || revision.split('/').any(|s| s.starts_with('.'))
    {
        return Err(format!(
            "`{shown}` is not a valid revision: use a 40-hex commit id, or a branch or tag name of letters, digits, `-`, `_`, `.`, `/`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(text: &str) -> (String, String) {
        match Manifest::parse(text, "test.json") {
            Err(EmbeddingError::ManifestEntry { entry, field, .. }) => (entry, field.to_owned()),
            other => panic!("expected an entry rejection, got {other:?}"),
        }
    }

    fn with_entry(entry: &str) -> String {
        let mut items: Vec<String> = ModelId::ALL[1..]
            .iter()
            .map(|m| format!("{{\"model_id\":\"{m}\",\"builtin\":true}}"))
            .collect();
        items.insert(0, entry.to_owned());
        format!("[{}]", items.join(","))
    }

    const GOOD: &str = r#"{"model_id":"Semantic","repo_id":"org/name","filename":"model.safetensors","sha256":null,"size_bytes":null,"revision":"main"}"#;

    #[test]
    fn signed_by_is_a_key_sha256_and_round_trips() {
        let key = "AB".repeat(32);
        let entry = GOOD.replace('}', &format!(r#","signed_by":"{key}"}}"#));
        let manifest = Manifest::parse(&with_entry(&entry), "test.json").unwrap();
        let semantic = manifest.artifacts().next().unwrap();
        assert_eq!(semantic.signed_by, Some(key.to_ascii_lowercase()));
        let again = Manifest::parse(&manifest.to_json_pretty(), "again").unwrap();
        assert_eq!(again.entries, manifest.entries);
        let bad = GOOD.replace('}', r#","signed_by":"release@example.com"}"#);
        assert_eq!(rejection(&with_entry(&bad)).1, "signed_by");
        let plain = Manifest::parse(&with_entry(GOOD), "test.json").unwrap();
        assert!(!plain.to_json_pretty().contains("signed_by"));
    }

    #[test]
    fn embedded_manifest_has_all_twelve_models_and_no_placeholders() {
        let manifest = Manifest::embedded().unwrap();
        assert_eq!(manifest.entries.len(), 12);
        assert_eq!(manifest.artifacts().count(), 8);
        assert_eq!(
            manifest.builtins().collect::<Vec<_>>(),
            [
                ModelId::TemporalRecent,
                ModelId::TemporalPeriodic,
                ModelId::TemporalPositional,
                ModelId::Hdc
            ]
        );
        let pinned: Vec<_> = manifest
            .artifacts()
            .filter(|a| a.is_fully_pinned())
            .map(|a| a.model_id)
            .collect();
        assert_eq!(
            pinned,
            [ModelId::Semantic, ModelId::Multimodal, ModelId::Entity]
        );
        for artifact in manifest.artifacts() {
            assert!(artifact.revision_is_commit(), "{artifact:?}");
            assert_eq!(artifact.sha256.is_some(), artifact.size_bytes.is_some());
        }
        let entity = manifest.entry(ModelId::Entity).unwrap();
        let ManifestEntry::Artifact(entity) = entity else {
            panic!("Entity must be an artifact")
        };
        assert_eq!(entity.repo_id, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(entity.size_bytes, Some(90_868_376));
    }

    #[test]
    fn round_trips_through_its_own_serialisation() {
        let manifest = Manifest::embedded().unwrap();
        let text = manifest.to_json_pretty();
        let again = Manifest::parse(&text, "built-in manifest").unwrap();
        assert_eq!(manifest, again);
        let first = text.lines().nth(2).unwrap().trim();
        assert!(
            first.starts_with("\"model_id\""),
            "fields keep their written order: {first}"
        );
    }

    fn policy_rejection(text: &str) -> (String, String) {
        match Manifest::parse(text, "test.json") {
            Err(EmbeddingError::ManifestEntry { entry, reason, .. }) => (entry, reason),
            other => panic!("expected a signature rejection, got {other:?}"),
        }
    }

    #[test]
    fn signature_policies_parse_per_model_and_as_a_default() {
        let entry = GOOD.replace(
            r#""revision":"main"}"#,
            r#""revision":"main","signature":{"certificate_root":"keys/ca.pem","identity":"release@example.com","mode":"if-present","file":"sig/model.sig"}}"#,
        );
        let text = format!(
            r#"{{"signature":{{"public_key":"/etc/cg/publisher.pem"}},"models":{}}}"#,
            with_entry(&entry)
        );
        let manifest = Manifest::parse(&text, "t").unwrap();
        let own = manifest.signatures.for_model(ModelId::Semantic).unwrap();
        assert_eq!(own.file, "sig/model.sig");
        assert_eq!(own.mode, SignatureMode::IfPresent);
        assert_eq!(
            own.signer,
            SignerPolicy::Certificate {
                root: PathBuf::from("keys/ca.pem"),
                identity: "release@example.com".to_owned()
            }
        );
        let default = manifest.signatures.default.as_ref().unwrap();
        assert_eq!(default.file, DEFAULT_SIGNATURE_FILE);
        assert_eq!(default.mode, SignatureMode::Required);
        assert_eq!(
            default.signer,
            SignerPolicy::PublicKey {
                path: PathBuf::from("/etc/cg/publisher.pem")
            }
        );
        // Every other artifact gets the default; `false` opts one out.
        let opted_out = GOOD.replace(
            r#""revision":"main"}"#,
            r#""revision":"main","signature":false}"#,
        );
        let text = format!(
            r#"{{"signature":{{"public_key":"k.pem"}},"models":{}}}"#,
            with_entry(&opted_out)
        );
        let manifest = Manifest::parse(&text, "t").unwrap();
        assert!(manifest.signatures.for_model(ModelId::Semantic).is_none());
        assert!(manifest.signatures.default.is_some());
        // A manifest without policies has none.
        let plain = Manifest::parse(&with_entry(GOOD), "t").unwrap();
        assert!(plain.signatures.is_empty());
        assert!(plain.signatures.for_model(ModelId::Semantic).is_none());
    }

    #[test]
    fn signature_policies_round_trip_and_plain_manifests_stay_arrays() {
        let entry = GOOD.replace(
            r#""revision":"main"}"#,
            r#""revision":"main","signature":{"certificate_root":"ca.pem","identity":"CN=release"}}"#,
        );
        let text = format!(
            r#"{{"signature":{{"public_key":"k.pem","mode":"if-present"}},"models":{}}}"#,
            with_entry(&entry)
        );
        let manifest = Manifest::parse(&text, "t").unwrap();
        let written = manifest.to_json_pretty();
        assert!(written.trim_start().starts_with('{'), "{written}");
        assert_eq!(Manifest::parse(&written, "t").unwrap(), manifest);
        let opted_out = GOOD.replace(
            r#""revision":"main"}"#,
            r#""revision":"main","signature":false}"#,
        );
        let manifest = Manifest::parse(&with_entry(&opted_out), "t").unwrap();
        let written = manifest.to_json_pretty();
        assert!(written.trim_start().starts_with('['), "{written}");
        assert!(written.contains("\"signature\": false"), "{written}");
        assert_eq!(Manifest::parse(&written, "t").unwrap(), manifest);
    }

    #[test]
    fn hostile_signature_policies_are_refused_with_the_reason() {
        let entry = |policy: &str| {
            with_entry(&GOOD.replace(
                r#""revision":"main"}"#,
                &format!(r#""revision":"main","signature":{policy}}}"#),
            ))
        };
        let cases = [
            (r#"{}"#, "must name who may sign"),
            (r#"true"#, "must be an object"),
            (
                r#"{"public_key":"k.pem","certificate_root":"ca.pem"}"#,
                "not both",
            ),
            (r#"{"certificate_root":"ca.pem"}"#, "needs identity"),
            (
                r#"{"public_key":"k.pem","identity":"x"}"#,
                "identity goes with certificate_root",
            ),
            (
                r#"{"public_key":"k.pem","mode":"sometimes"}"#,
                "not one of required, if-present",
            ),
            (
                r#"{"public_key":"k.pem","file":"../model.sig"}"#,
                "must stay inside the repo",
            ),
            (r#"{"public_key":"k.pem","file":"/model.sig"}"#, "absolute"),
            (r#"{"public_key":""}"#, "path of a PEM file"),
            (r#"{"public_key":"k\u0000.pem"}"#, "path of a PEM file"),
            (r#"{"public_key":7}"#, "must be a string"),
            (
                r#"{"public_key":"k.pem","trust":"all"}"#,
                "unknown field `trust`",
            ),
            (
                r#"{"certificate_root":"ca.pem","identity":"  "}"#,
                "identity must be",
            ),
        ];
        for (policy, expected) in cases {
            let (entry_label, reason) = policy_rejection(&entry(policy));
            assert_eq!(entry_label, "#0 (Semantic)", "{policy}");
            assert!(reason.contains(expected), "{policy}: {reason}");
        }
        let (label, reason) = policy_rejection(&format!(
            r#"{{"signature":{{}},"models":{}}}"#,
            with_entry(GOOD)
        ));
        assert_eq!(label, "top level");
        assert!(reason.contains("must name who may sign"), "{reason}");
        for (text, expected) in [
            (r#"{"models":{}}"#.to_owned(), "needs `models`"),
            (
                format!(r#"{{"models":{},"sign":1}}"#, with_entry(GOOD)),
                "unknown top-level field `sign`",
            ),
            (r#""manifest""#.to_owned(), "or an object with `models`"),
        ] {
            match Manifest::parse(&text, "t") {
                Err(EmbeddingError::ManifestSyntax { reason, .. }) => {
                    assert!(reason.contains(expected), "{text}: {reason}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // A built-in entry takes no signature.
        let builtin = with_entry(GOOD).replace(
            r#"{"model_id":"Sparse","builtin":true}"#,
            r#"{"model_id":"Sparse","builtin":true,"signature":false}"#,
        );
        assert!(Manifest::parse(&builtin, "t").is_err());
    }

    #[test]
    fn relative_key_paths_are_taken_from_the_manifest_folder() {
        let dir = tempfile::tempdir().unwrap();
        let entry = GOOD.replace(
            r#""revision":"main"}"#,
            r#""revision":"main","signature":{"public_key":"keys/pub.pem"}}"#,
        );
        let path = dir.path().join("models.json");
        std::fs::write(&path, with_entry(&entry)).unwrap();
        let manifest = Manifest::from_path(&path).unwrap();
        assert_eq!(manifest.signatures.base_dir.as_deref(), Some(dir.path()));
        let error = manifest
            .signatures
            .verifier_for(ModelId::Semantic)
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&dir.path().join("keys/pub.pem").display().to_string()),
            "{text}"
        );
        assert!(manifest
            .signatures
            .verifier_for(ModelId::Code)
            .unwrap()
            .is_none());
    }

    #[test]
    fn good_entry_parses() {
        let manifest = Manifest::parse(&with_entry(GOOD), "t").unwrap();
        assert_eq!(manifest.artifacts().count(), 1);
    }

    #[test]
    fn rejections_name_entry_and_field() {
        let cases: [(&str, &str); 16] = [
            (r#"{"model_id":"Nope","builtin":true}"#, "model_id"),
            (r#"{"model_id":"semantic","builtin":true}"#, "model_id"),
            (r#"{"builtin":true}"#, "model_id"),
            (
                &GOOD.replace("\"sha256\":null", "\"sha256\":\"abc123...\""),
                "sha256",
            ),
            (
                &GOOD.replace(
                    "\"sha256\":null",
                    &format!("\"sha256\":\"{}\"", "g".repeat(64)),
                ),
                "sha256",
            ),
            (
                &GOOD.replace("model.safetensors", "/etc/passwd"),
                "filename",
            ),
            (&GOOD.replace("model.safetensors", "../../x"), "filename"),
            (&GOOD.replace("model.safetensors", "a\\\\b"), "filename"),
            (&GOOD.replace("org/name", "org/../x"), "repo_id"),
            (&GOOD.replace("org/name", "a/b/c"), "repo_id"),
            (&GOOD.replace("org/name", "org--x/name"), "repo_id"),
            (&GOOD.replace("\"main\"", "\"../main\""), "revision"),
            (&GOOD.replace("\"main\"", "\"a b\""), "revision"),
            (
                &GOOD.replace("\"size_bytes\":null", "\"size_bytes\":-1"),
                "size_bytes",
            ),
            (
                &GOOD.replace("\"size_bytes\":null", "\"size_bytes\":99999999999999999"),
                "size_bytes",
            ),
            (&GOOD.replace("\"revision\"", "\"revison\""), "model_id"),
        ];
        for (entry, field) in cases {
            let (label, got_field) = rejection(&with_entry(entry));
            assert_eq!(got_field, field, "for {entry}");
            assert!(label.starts_with("#0"), "label {label} for {entry}");
        }
    }

    #[test]
    fn duplicate_and_missing_models_are_rejected() {
        let duplicate = with_entry(GOOD).replacen(
            "{\"model_id\":\"TemporalRecent\"",
            "{\"model_id\":\"Semantic\"",
            1,
        );
        let (label, field) = rejection(&duplicate);
        assert_eq!(field, "model_id");
        assert!(label.contains("Semantic"), "{label}");

        let missing = format!(
            "[{}]",
            ModelId::ALL[..11]
                .iter()
                .map(|m| format!("{{\"model_id\":\"{m}\",\"builtin\":true}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let err = Manifest::parse(&missing, "t").unwrap_err().to_string();
        assert!(err.contains("LateInteraction"), "{err}");
        assert!(err.contains("all 12 models"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported_not_panicked() {
        for text in ["", "{", "{}", "[1]", "null", "[[]]"] {
            assert!(Manifest::parse(text, "t").is_err(), "{text}");
        }
    }

    #[test]
    fn commit_revisions_are_normalised_to_lower_case() {
        let upper = GOOD.replace("\"main\"", &format!("\"{}\"", "ABCDEF0123".repeat(4)));
        let manifest = Manifest::parse(&with_entry(&upper), "t").unwrap();
        let artifact = manifest.artifacts().next().unwrap();
        assert!(artifact.revision_is_commit());
    }

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(
            WeightFormat::from_filename("a/model.safetensors"),
            WeightFormat::Safetensors
        );
        assert_eq!(
            WeightFormat::from_filename("pytorch_model.bin"),
            WeightFormat::PytorchPickle
        );
        assert_eq!(
            WeightFormat::from_filename("model.onnx"),
            WeightFormat::Other
        );
    }
}
