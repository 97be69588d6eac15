//! Models into an OCI registry (`cg-models push`, and `--mirror-write` to an OCI mirror):
//! the verified set of each model as a ModelPack artifact, or the whole selection as an image
//! whose file system is a ready Hugging Face cache.
//!
//! What goes out is what `export` would bundle (`bundle::locked_model_files`: the plan the
//! cache alone gives, regular files checked against their git blob id, the entry locked), so
//! a push and a bundle of one cache hold the same bytes under the same names. Blobs the
//! registry has are never sent again (`HEAD` first, then a cross-repository mount from the
//! configured OCI mirror where it is another repository of the same registry), and the
//! registry checks every uploaded digest. Image layers are hashed as they are framed, and a
//! file whose bytes no longer match its SHA-256 stops the push.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bundle::{locked_model_files, BundleFile};
use super::context::{CacheView, Context};
use super::plan::FileRole;
use crate::artifacts::blocking::run_blocking_checked;
use crate::artifacts::environment::ProcessEnv;
use crate::artifacts::manifest::{Manifest, ManifestEntry, ModelArtifact};
use crate::artifacts::remote::oci::auth::{RegistryCredentials, WithAuthFile};
use crate::artifacts::remote::oci::client::{bytes_body, file_body, BlobPush, RegistryClient};
use crate::artifacts::remote::oci::image::{
    blob_layer_frame, image_manifest, metadata_layer, ImageEntry, LAYER_MEDIA_TYPE,
};
use crate::artifacts::remote::oci::mirror::{registry_client, OciMirror};
use crate::artifacts::remote::oci::modelpack::{
    digest_of, model_artifact, ArtifactFile, ArtifactModel, Descriptor, LayerKind,
    MANIFEST_MEDIA_TYPE, REPO_ANNOTATION, REVISION_ANNOTATION,
};
use crate::artifacts::remote::oci::reference::{mirror_tag, OciReference};
use crate::artifacts::store::layout::{snapshot_link_target, CacheLayout, METADATA_DIR};
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// Annotation of a cache image: the locked manifest of every model in it (ours).
const IMAGE_MANIFEST_ANNOTATION: &str = "io.github.context-graph.manifest";

/// How to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// One image whose file system is a Hugging Face cache holding every selected model,
    /// instead of one ModelPack artifact per model.
    pub image: bool,
    /// Credentials to use instead of those the environment and the usual files give.
    pub credentials: Option<RegistryCredentials>,
}

/// One model pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedModel {
    /// The model.
    pub model_id: ModelId,
    /// Its repo.
    pub repo_id: String,
    /// The commit pushed.
    pub commit: String,
    /// Files in its set.
    pub files: usize,
    /// Bytes of its files.
    pub bytes: u64,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushReport {
    /// Every reference written (`oci://host/repo:tag`), with the manifest's digest.
    pub tags: Vec<(String, String)>,
    /// The models in it.
    pub models: Vec<PushedModel>,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Blobs mounted from another repository of the registry (nothing sent).
    pub blobs_mounted: usize,
    /// Blobs the repository had already (nothing sent).
    pub blobs_present: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

impl PushReport {
    fn count(&mut self, push: BlobPush, size: u64) {
        match push {
            BlobPush::Present => self.blobs_present += 1,
            BlobPush::Mounted => self.blobs_mounted += 1,
            BlobPush::Uploaded => {
                self.blobs_uploaded += 1;
                self.bytes_uploaded += size;
            }
        }
    }
}

/// One model's files as the cache gives them, with its locked manifest entry.
#[derive(Clone)]
struct Collected {
    artifact: ModelArtifact,
    commit: String,
    files: Vec<(BundleFile, PathBuf)>,
    /// A manifest holding only the locked entry (JSON): a user can use it as is.
    entry_json: String,
}

fn registry_error(reference: &str, message: impl Into<String>) -> EmbeddingError {
    EmbeddingError::Registry {
        reference: reference.to_owned(),
        message: message.into(),
    }
}

/// A manifest holding only the `locked` entries (with `base`'s signature policies), as compact
/// JSON for an annotation: a user can save it and use it as is.
fn manifest_of(base: &Manifest, locked: &[ModelArtifact]) -> String {
    let mut manifest = base.clone();
    manifest.entries = locked
        .iter()
        .cloned()
        .map(ManifestEntry::Artifact)
        .collect();
    serde_json::from_str::<serde_json::Value>(&manifest.to_json_pretty())
        .map(|value| value.to_string())
        .unwrap_or_default()
}

/// The locked files of `models` (every artifact when empty). Blocking.
fn collect(
    view: &CacheView,
    manifest: &Manifest,
    models: &[ModelId],
    reference: &str,
) -> EmbeddingResult<Vec<Collected>> {
    let mut collected = Vec::new();
    for artifact in manifest.artifacts() {
        if !models.is_empty() && !models.contains(&artifact.model_id) {
            continue;
        }
        let mut locked = artifact.clone();
        let (files, sources) = locked_model_files(view, manifest, &mut locked, &|reason| {
            registry_error(reference, format!("{reason}; nothing was pushed"))
        })?;
        let commit = files.first().map(|f| f.commit.clone()).unwrap_or_default();
        let entry_json = manifest_of(manifest, std::slice::from_ref(&locked));
        collected.push(Collected {
            artifact: locked,
            commit,
            files: files.into_iter().zip(sources).collect(),
            entry_json,
        });
    }
    if collected.is_empty() {
        return Err(registry_error(
            reference,
            "no model with files was selected; nothing was pushed",
        ));
    }
    Ok(collected)
}

/// ModelPack's media type for a file of the model.
fn layer_kind(path: &str, weights: &str) -> LayerKind {
    match FileRole::of(path, weights) {
        FileRole::Weights | FileRole::Shard => LayerKind::Weight,
        FileRole::Index | FileRole::Config | FileRole::Tokenizer | FileRole::Module => {
            LayerKind::WeightConfig
        }
        FileRole::Code => LayerKind::Code,
        FileRole::Other | FileRole::Signature => LayerKind::Doc,
    }
}

/// The repository to mount blobs from: the configured OCI mirror, when it is another
/// repository of the same registry.
fn mount_source(ctx: &Context, target: &OciReference) -> Option<String> {
    let mirror = ctx.oci_mirror.as_ref()?;
    (mirror.reference.registry == target.registry
        && mirror.reference.repository != target.repository)
        .then(|| mirror.reference.repository.clone())
}

/// Pushes `models` (every artifact of the manifest when empty) to `target`.
pub(crate) async fn push(
    ctx: &Context,
    target: &OciReference,
    models: &[ModelId],
    options: PushOptions,
) -> EmbeddingResult<PushReport> {
    let shown = target.to_string();
    if options.image && target.tag.is_none() {
        return Err(EmbeddingError::Config(format!(
            "`{shown}` names no tag; an image needs one (oci://HOST/REPO:TAG)"
        )));
    }
    let view = ctx.view();
    let manifest = ctx.manifest.clone();
    let wanted = models.to_vec();
    let reference = shown.clone();
    let collected = run_blocking_checked("cannot read", &ctx.config.cache_dir, move || {
        collect(&view, &manifest, &wanted, &reference)
    })
    .await?;
    if !options.image && target.tag.is_some() && collected.len() > 1 {
        return Err(EmbeddingError::Config(format!(
            "`{shown}` names one tag for {} models; push them without a tag (each gets its own, as a mirror reads them), one at a time, or as one --image",
            collected.len()
        )));
    }
    let client = registry_client(
        target,
        options.credentials,
        &WithAuthFile {
            env: &ProcessEnv,
            file: ctx.config.registry_auth_file.as_deref(),
        },
        &ctx.trust,
        ctx.config.connect_timeout,
        ctx.config.download_timeout,
    )?;
    let mount_from = mount_source(ctx, target);
    let mut report = PushReport::default();
    if options.image {
        push_image(
            ctx,
            &client,
            target,
            &collected,
            mount_from.as_deref(),
            &mut report,
        )
        .await?;
    } else {
        for model in &collected {
            let mut tags = vec![mirror_tag(&model.artifact.repo_id, &model.commit)];
            tags.extend(target.tag.clone());
            push_artifact(
                &client,
                target,
                model,
                &ctx.config.endpoint,
                &tags,
                mount_from.as_deref(),
                &mut report,
            )
            .await?;
        }
    }
    report.models = collected
        .iter()
        .map(|m| PushedModel {
            model_id: m.artifact.model_id,
            repo_id: m.artifact.repo_id.clone(),
            commit: m.commit.clone(),
            files: m.files.len(),
            bytes: m.files.iter().map(|(f, _)| f.size).sum(),
        })
        .collect();
    Ok(report)
}

/// One model as a ModelPack artifact, under every tag of `tags`.
async fn push_artifact(
    client: &RegistryClient,
    target: &OciReference,
    model: &Collected,
    hub: &str,
    tags: &[String],
    mount_from: Option<&str>,
    report: &mut PushReport,
) -> EmbeddingResult<()> {
    let repository = &target.repository;
    let mut layers = Vec::new();
    for (file, source) in &model.files {
        layers.push(ArtifactFile {
            path: file.path.clone(),
            sha256: file.sha256.clone(),
            size: file.size,
            git_sha1: file.git_sha1.clone(),
            kind: layer_kind(&file.path, &model.artifact.filename),
        });
        let body = file_body(source, Bytes::new(), Bytes::new())
            .await
            .map_err(|e| EmbeddingError::io("cannot read", source, e))?;
        let pushed = client
            .push_blob(
                repository,
                &format!("sha256:{}", file.sha256),
                file.size,
                mount_from,
                move || body,
            )
            .await?;
        report.count(pushed, file.size);
    }
    let built = model_artifact(
        &ArtifactModel {
            repo_id: model.artifact.repo_id.clone(),
            commit: model.commit.clone(),
            entry_json: model.entry_json.clone(),
            hub: hub.to_owned(),
        },
        &layers,
    );
    let config = Bytes::from(built.config.clone());
    let size = config.len() as u64;
    let pushed = client
        .push_blob(
            repository,
            &built.config_digest,
            size,
            mount_from,
            move || bytes_body(config),
        )
        .await?;
    report.count(pushed, size);
    for tag in tags {
        client
            .put_manifest(repository, tag, MANIFEST_MEDIA_TYPE, &built.manifest)
            .await?;
        report
            .tags
            .push((target.with_tag(tag).to_string(), built.digest.clone()));
    }
    Ok(())
}

/// A blob layer of the image, framed and hashed.
struct BlobLayer {
    head: Vec<u8>,
    tail: Vec<u8>,
    source: PathBuf,
    digest: String,
    size: u64,
}

/// Frames `source` (the file `path` in the image, expected to hash to `sha256`) as a layer
/// and hashes the layer, checking the file's own SHA-256 in the same read. Blocking.
fn frame_blob(path: &str, source: &Path, sha256: &str, size: u64) -> EmbeddingResult<BlobLayer> {
    let (head, tail) = blob_layer_frame(path, size)
        .map_err(|reason| registry_error(path, format!("cannot frame the layer: {reason}")))?;
    let mut layer = Sha256::new();
    let mut content = Sha256::new();
    layer.update(&head);
    let mut file =
        std::fs::File::open(source).map_err(|e| EmbeddingError::io("cannot read", source, e))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut read_total = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| EmbeddingError::io("cannot read", source, e))?;
        if read == 0 {
            break;
        }
        read_total += read as u64;
        layer.update(&buffer[..read]);
        content.update(&buffer[..read]);
    }
    layer.update(&tail);
    let actual = hex::encode(content.finalize());
    if actual != sha256 || read_total != size {
        return Err(registry_error(
            path,
            format!(
                "{} has SHA-256 {actual} ({read_total} bytes), its set pins {sha256} ({size} bytes); run `cg-models verify --repair`; nothing was tagged",
                source.display()
            ),
        ));
    }
    Ok(BlobLayer {
        digest: format!("sha256:{}", hex::encode(layer.finalize())),
        size: head.len() as u64 + size + tail.len() as u64,
        head,
        tail,
        source: source.to_path_buf(),
    })
}

/// The folders, snapshot links, refs and set records of the models in the image. Blocking.
fn image_entries(layout: &CacheLayout, models: &[Collected]) -> Vec<ImageEntry> {
    let mut entries = Vec::new();
    for model in models {
        let repo = &model.artifact.repo_id;
        let folder = CacheLayout::repo_folder_name(repo);
        // Folders come with what they hold (`metadata_layer`); `blobs/` with the blob layers.
        let snapshot = format!("{folder}/snapshots/{}", model.commit);
        for (file, _) in &model.files {
            entries.push(ImageEntry::Link(
                format!("{snapshot}/{}", file.path),
                snapshot_link_target(&file.path, &file.blob),
            ));
        }
        let mut refs: BTreeSet<String> = layout
            .refs(repo)
            .into_iter()
            .filter(|(_, commit)| *commit == model.commit)
            .map(|(name, _)| name)
            .collect();
        refs.insert(model.commit.clone());
        for name in refs {
            entries.push(ImageEntry::File(
                format!("{folder}/refs/{name}"),
                model.commit.as_bytes().to_vec(),
            ));
        }
        // The recorded sets of this commit: offline, a set is known without a tree listing.
        let sets = layout.repo_dir(repo).join(METADATA_DIR).join("sets");
        if let Ok(listing) = std::fs::read_dir(&sets) {
            for record in listing.flatten() {
                let name = record.file_name().to_string_lossy().into_owned();
                if !name.starts_with(&format!("{}-", model.commit)) || !name.ends_with(".json") {
                    continue;
                }
                if let Ok(bytes) = std::fs::read(record.path()) {
                    entries.push(ImageEntry::File(
                        format!("{folder}/{METADATA_DIR}/sets/{name}"),
                        bytes,
                    ));
                }
            }
        }
    }
    entries
}

/// Every model in one image whose file system is a Hugging Face cache.
async fn push_image(
    ctx: &Context,
    client: &RegistryClient,
    target: &OciReference,
    models: &[Collected],
    mount_from: Option<&str>,
    report: &mut PushReport,
) -> EmbeddingResult<()> {
    let repository = &target.repository;
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    for model in models {
        let folder = CacheLayout::repo_folder_name(&model.artifact.repo_id);
        for (file, source) in &model.files {
            let path = format!("{folder}/blobs/{}", file.blob);
            if !seen.insert(path.clone()) {
                continue;
            }
            let (sha256, size, from) = (file.sha256.clone(), file.size, source.clone());
            let framed = run_blocking_checked("cannot read", source, {
                let path = path.clone();
                move || frame_blob(&path, &from, &sha256, size)
            })
            .await?;
            let BlobLayer {
                head,
                tail,
                source,
                digest,
                size,
            } = framed;
            let body = file_body(&source, Bytes::from(head), Bytes::from(tail))
                .await
                .map_err(|e| EmbeddingError::io("cannot read", &source, e))?;
            let pushed = client
                .push_blob(repository, &digest, size, mount_from, move || body)
                .await?;
            report.count(pushed, size);
            layers.push(Descriptor {
                media_type: LAYER_MEDIA_TYPE.to_owned(),
                digest,
                size,
                annotations: None,
            });
        }
    }
    let layout = ctx.layout.clone();
    let models_for_entries = models.to_vec();
    let entries = run_blocking_checked("cannot read", &ctx.config.cache_dir, move || {
        Ok(image_entries(&layout, &models_for_entries))
    })
    .await?;
    let metadata = metadata_layer(&entries).map_err(|reason| {
        registry_error(
            &target.to_string(),
            format!("cannot build the metadata layer: {reason}"),
        )
    })?;
    let metadata_digest = digest_of(&metadata);
    let metadata = Bytes::from(metadata);
    let size = metadata.len() as u64;
    let body = metadata.clone();
    let pushed = client
        .push_blob(repository, &metadata_digest, size, mount_from, move || {
            bytes_body(body)
        })
        .await?;
    report.count(pushed, size);
    layers.push(Descriptor {
        media_type: LAYER_MEDIA_TYPE.to_owned(),
        digest: metadata_digest,
        size,
        annotations: None,
    });
    let locked: Vec<ModelArtifact> = models.iter().map(|m| m.artifact.clone()).collect();
    let mut annotations = BTreeMap::from([(
        IMAGE_MANIFEST_ANNOTATION.to_owned(),
        manifest_of(&ctx.manifest, &locked),
    )]);
    if let [only] = models {
        annotations.insert(REPO_ANNOTATION.to_owned(), only.artifact.repo_id.clone());
        annotations.insert(REVISION_ANNOTATION.to_owned(), only.commit.clone());
    }
    let (config, manifest) = image_manifest(&layers, annotations);
    let config_digest = digest_of(&config);
    let config = Bytes::from(config);
    let size = config.len() as u64;
    let pushed = client
        .push_blob(repository, &config_digest, size, None, move || {
            bytes_body(config)
        })
        .await?;
    report.count(pushed, size);
    let tag = target.tag.clone().unwrap_or_default();
    client
        .put_manifest(repository, &tag, MANIFEST_MEDIA_TYPE, &manifest)
        .await?;
    report.tags.push((target.to_string(), digest_of(&manifest)));
    Ok(())
}

/// After a model was fetched on a node writing to an OCI mirror: pushes it there (its blobs
/// `HEAD` first, then its manifest under the mirror's tag). A failure is the caller's warning,
/// never the download's.
pub(crate) async fn publish_to_mirror(
    ctx: &Context,
    mirror: &Arc<OciMirror>,
    model: ModelId,
) -> EmbeddingResult<PushReport> {
    let view = ctx.view();
    let manifest = ctx.manifest.clone();
    let reference = mirror.name();
    let collected = run_blocking_checked("cannot read", &ctx.config.cache_dir, move || {
        collect(&view, &manifest, &[model], &reference)
    })
    .await?;
    let mut report = PushReport::default();
    for model in &collected {
        let tags = vec![mirror_tag(&model.artifact.repo_id, &model.commit)];
        push_artifact(
            &mirror.client,
            &mirror.reference,
            model,
            &ctx.config.endpoint,
            &tags,
            None,
            &mut report,
        )
        .await?;
    }
    Ok(report)
}
