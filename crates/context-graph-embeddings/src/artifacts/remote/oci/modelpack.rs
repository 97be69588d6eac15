//! A model as an OCI artifact in the CNCF ModelPack layout (`docs/spec.md` of
//! modelpack/model-spec): one uncompressed ("raw") layer per file, so a layer's digest is the
//! file's SHA-256 (what we verify and key mirrors by already); the file's path in
//! `org.cncf.model.filepath` and, for generic clients such as `oras`, in
//! `org.opencontainers.image.title`; the model's config (`modelfs.diffIds`); and our locked
//! entry (repo, commit, every file's digests) in the manifest's annotations.
//!
//! Everything here is pure: the same files give byte-identical JSON (no clock, sorted maps),
//! so a push of an unchanged model finds its manifest already there by digest. The parser is
//! for manifests others wrote: it bounds what it accepts and yields only safe paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifacts::manifest::validate_filename;

/// An OCI image manifest.
pub(crate) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// ModelPack's artifact type.
pub(crate) const MODEL_ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack's config.
pub(crate) const MODEL_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
/// A layer's path in the model.
pub(crate) const FILEPATH_ANNOTATION: &str = "org.cncf.model.filepath";
/// A layer's file name for generic clients (`oras pull` names the file by it).
pub(crate) const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// ModelPack's per-file metadata (name, mode, uid, gid, size, mtime, typeflag).
pub(crate) const FILE_METADATA_ANNOTATION: &str = "org.cncf.model.file.metadata+json";
/// The git blob id a regular file of the set is pinned by (ours).
pub(crate) const GIT_BLOB_ANNOTATION: &str = "io.github.context-graph.git-blob-sha1";
/// The model's locked manifest entry, as JSON (ours).
pub(crate) const ENTRY_ANNOTATION: &str = "io.github.context-graph.model.entry";
/// The Hugging Face repo (ours).
pub(crate) const REPO_ANNOTATION: &str = "io.github.context-graph.model.repo";
/// The commit (OCI's own key).
pub(crate) const REVISION_ANNOTATION: &str = "org.opencontainers.image.revision";
/// Where the model comes from (OCI's own key).
pub(crate) const SOURCE_ANNOTATION: &str = "org.opencontainers.image.source";

/// Most layers accepted in a manifest someone else wrote.
pub(crate) const MAX_LAYERS: usize = 10_000;
/// Most annotation bytes accepted per descriptor.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// What a file is, in ModelPack's media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    /// Weights (`weight.v1.raw`).
    Weight,
    /// Configuration of the weights: config, tokenizer, index, modules (`weight.config.v1.raw`).
    WeightConfig,
    /// Code (`code.v1.raw`).
    Code,
    /// Anything else: documents, signatures (`doc.v1.raw`).
    Doc,
}

impl LayerKind {
    /// The raw layer media type.
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            LayerKind::Weight => "application/vnd.cncf.model.weight.v1.raw",
            LayerKind::WeightConfig => "application/vnd.cncf.model.weight.config.v1.raw",
            LayerKind::Code => "application/vnd.cncf.model.code.v1.raw",
            LayerKind::Doc => "application/vnd.cncf.model.doc.v1.raw",
        }
    }
}

/// One file of a model, as it goes into a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArtifactFile {
    /// Path in the repo.
    pub(crate) path: String,
    /// SHA-256 of the bytes (hex).
    pub(crate) sha256: String,
    /// Size in bytes.
    pub(crate) size: u64,
    /// The git blob id a regular file is pinned by.
    pub(crate) git_sha1: Option<String>,
    /// What it is.
    pub(crate) kind: LayerKind,
}

/// The model an artifact holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArtifactModel {
    /// `org/name`.
    pub(crate) repo_id: String,
    /// The commit.
    pub(crate) commit: String,
    /// The locked manifest entry, JSON.
    pub(crate) entry_json: String,
    /// The Hub the model comes from, for `org.opencontainers.image.source`.
    pub(crate) hub: String,
}

/// An OCI descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    /// Media type.
    pub(crate) media_type: String,
    /// `sha256:<hex>`.
    pub(crate) digest: String,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) annotations: Option<BTreeMap<String, String>>,
}

/// An OCI image manifest (what we write and what we read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageManifest {
    /// Always 2.
    pub(crate) schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    /// [`MODEL_ARTIFACT_TYPE`] for a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) artifact_type: Option<String>,
    /// The config blob.
    pub(crate) config: Descriptor,
    /// The layers.
    pub(crate) layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) annotations: Option<BTreeMap<String, String>>,
}

/// A manifest with its config, ready to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuiltManifest {
    /// The manifest's bytes.
    pub(crate) manifest: Vec<u8>,
    /// Their digest.
    pub(crate) digest: String,
    /// The config's bytes (its descriptor is in the manifest).
    pub(crate) config: Vec<u8>,
    /// The config's digest.
    pub(crate) config_digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The weight format ModelPack's config names, from the weight file's extension.
fn format_of(files: &[ArtifactFile]) -> Option<&'static str> {
    files
        .iter()
        .filter(|f| f.kind == LayerKind::Weight)
        .find_map(|f| match f.path.rsplit('.').next() {
            Some("safetensors") => Some("safetensors"),
            Some("onnx") => Some("onnx"),
            Some("gguf") => Some("gguf"),
            Some("bin" | "pt" | "pth") => Some("pt"),
            _ => None,
        })
}

/// The ModelPack artifact of `model` made of `files` (in the order given).
pub(crate) fn model_artifact(model: &ArtifactModel, files: &[ArtifactFile]) -> BuiltManifest {
    let layers: Vec<Descriptor> = files
        .iter()
        .map(|file| {
            let mut annotations = BTreeMap::from([
                (FILEPATH_ANNOTATION.to_owned(), file.path.clone()),
                (TITLE_ANNOTATION.to_owned(), file.path.clone()),
                (
                    FILE_METADATA_ANNOTATION.to_owned(),
                    serde_json::json!({
                        "name": file.path,
                        "mode": 0o644,
                        "uid": 0,
                        "gid": 0,
                        "size": file.size,
                        "mtime": "1970-01-01T00:00:00Z",
                        "typeflag": 48,
                    })
                    .to_string(),
                ),
            ]);
            if let Some(git) = &file.git_sha1 {
                annotations.insert(GIT_BLOB_ANNOTATION.to_owned(), git.clone());
            }
            Descriptor {
                media_type: file.kind.media_type().to_owned(),
                digest: format!("sha256:{}", file.sha256),
                size: file.size,
                annotations: Some(annotations),
            }
        })
        .collect();
    let mut config_config = serde_json::Map::new();
    if let Some(format) = format_of(files) {
        config_config.insert("format".to_owned(), format.into());
    }
    let config = serde_json::json!({
        "descriptor": {
            "name": model.repo_id,
            "revision": model.commit,
            "sourceURL": format!("{}/{}", model.hub, model.repo_id),
        },
        "config": config_config,
        "modelfs": {
            "type": "layers",
            "diffIds": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = digest_of(&config);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        artifact_type: Some(MODEL_ARTIFACT_TYPE.to_owned()),
        config: Descriptor {
            media_type: MODEL_CONFIG_MEDIA_TYPE.to_owned(),
            digest: config_digest.clone(),
            size: config.len() as u64,
            annotations: None,
        },
        layers,
        annotations: Some(BTreeMap::from([
            (ENTRY_ANNOTATION.to_owned(), model.entry_json.clone()),
            (REPO_ANNOTATION.to_owned(), model.repo_id.clone()),
            (REVISION_ANNOTATION.to_owned(), model.commit.clone()),
            (
                SOURCE_ANNOTATION.to_owned(),
                format!("{}/{}", model.hub, model.repo_id),
            ),
            (TITLE_ANNOTATION.to_owned(), model.repo_id.clone()),
        ])),
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    BuiltManifest {
        digest: digest_of(&manifest),
        manifest,
        config,
        config_digest,
    }
}

/// Checks `sha256:<64 lower-case hex>`.
pub(crate) fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Parses and checks a manifest someone else wrote: schema 2, at most [`MAX_LAYERS`] layers,
/// SHA-256 digests only, bounded annotations.
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, String> {
    if bytes.len() > super::client::MAX_MANIFEST_BYTES {
        return Err("the manifest is too large".to_owned());
    }
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("not an OCI image manifest: {e}"))?;
    if manifest.schema_version != 2 {
        return Err(format!(
            "schemaVersion {} (only 2 is an OCI image manifest)",
            manifest.schema_version
        ));
    }
    if let Some(media_type) = &manifest.media_type {
        if media_type != MANIFEST_MEDIA_TYPE {
            return Err(format!(
                "media type `{media_type}` is not an OCI image manifest"
            ));
        }
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err(format!("more than {MAX_LAYERS} layers"));
    }
    for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if !is_sha256_digest(&descriptor.digest) {
            return Err(format!(
                "digest `{}` is not a SHA-256 digest",
                descriptor.digest.chars().take(80).collect::<String>()
            ));
        }
        let annotation_bytes: usize = descriptor
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if annotation_bytes > MAX_ANNOTATION_BYTES {
            return Err("a descriptor's annotations are too large".to_owned());
        }
    }
    Ok(manifest)
}

/// One file a model manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestFile {
    /// Path in the model (checked: relative, no `..`, no control characters).
    pub(crate) path: String,
    /// `sha256:<hex>` of the layer, which is the file's for a raw layer.
    pub(crate) digest: String,
    /// Size.
    pub(crate) size: u64,
}

/// The files of a model manifest, by each layer's `org.cncf.model.filepath` (else its title,
/// as `oras push` writes it). Layers that lack a path or name an unsafe one are left out. The
/// media type is not trusted either way: what a layer holds is decided by hashing it against
/// the digest the plan expects (a tar-wrapped layer simply does not match).
pub(crate) fn model_files(manifest: &ImageManifest) -> Vec<ManifestFile> {
    manifest
        .layers
        .iter()
        .filter_map(|layer| {
            let annotations = layer.annotations.as_ref()?;
            let path = annotations
                .get(FILEPATH_ANNOTATION)
                .or_else(|| annotations.get(TITLE_ANNOTATION))?;
            validate_filename(path).ok()?;
            Some(ManifestFile {
                path: path.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<ArtifactFile> {
        vec![
            ArtifactFile {
                path: "model.safetensors".to_owned(),
                sha256: "a".repeat(64),
                size: 10,
                git_sha1: None,
                kind: LayerKind::Weight,
            },
            ArtifactFile {
                path: "1_Pooling/config.json".to_owned(),
                sha256: "b".repeat(64),
                size: 3,
                git_sha1: Some("c".repeat(40)),
                kind: LayerKind::WeightConfig,
            },
        ]
    }

    fn model() -> ArtifactModel {
        ArtifactModel {
            repo_id: "org/name".to_owned(),
            commit: "d".repeat(40),
            entry_json: "{}".to_owned(),
            hub: "https://huggingface.co".to_owned(),
        }
    }

    #[test]
    fn artifacts_are_modelpack_and_deterministic() {
        let built = model_artifact(&model(), &files());
        assert_eq!(built, model_artifact(&model(), &files()));
        assert_eq!(built.digest, digest_of(&built.manifest));
        let parsed = parse_manifest(&built.manifest).unwrap();
        assert_eq!(parsed.artifact_type.as_deref(), Some(MODEL_ARTIFACT_TYPE));
        assert_eq!(parsed.config.media_type, MODEL_CONFIG_MEDIA_TYPE);
        assert_eq!(parsed.config.digest, built.config_digest);
        assert_eq!(
            parsed.layers[0].media_type,
            "application/vnd.cncf.model.weight.v1.raw"
        );
        let config: serde_json::Value = serde_json::from_slice(&built.config).unwrap();
        assert_eq!(
            config["modelfs"]["diffIds"][1],
            format!("sha256:{}", "b".repeat(64))
        );
        assert_eq!(config["config"]["format"], "safetensors");
        let listed = model_files(&parsed);
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].path, "1_Pooling/config.json");
        assert_eq!(listed[1].size, 3);
    }

    #[test]
    fn hostile_manifests_are_refused_or_their_bad_paths_dropped() {
        assert!(parse_manifest(b"{}").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":1,"config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#).is_err());
        let bad_digest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"md5:{0}","size":1}},"layers":[]}}"#,
            "a".repeat(32)
        );
        assert!(parse_manifest(bad_digest.as_bytes()).is_err());
        let mut built = parse_manifest(&model_artifact(&model(), &files()).manifest).unwrap();
        for (layer, path) in built.layers.iter_mut().zip(["../../etc/passwd", "/abs"]) {
            let annotations = layer.annotations.as_mut().unwrap();
            annotations.insert(FILEPATH_ANNOTATION.to_owned(), path.to_owned());
        }
        assert!(model_files(&built).is_empty());
    }
}
