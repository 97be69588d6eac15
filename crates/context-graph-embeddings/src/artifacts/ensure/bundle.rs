//! Verified bundles for sites without network or object storage: `export` writes the
//! verified files of some models into one tar archive with the locked manifest inside;
//! `import` streams each member through SHA-256 into a private temporary file in the cache's
//! `blobs/`, renames it into place only when it matches the locked hash and size, and places
//! the snapshot entries, refs and stamps only once every member of the bundle is verified.
//!
//! Layout of a bundle (a plain ustar archive, members in this order):
//! `manifest.json` (the manifest, with the exported entries locked to commit, digests and
//! sizes, a file set with its `files`), `index.json` (one record per file: model, repo,
//! revision, commit, path, SHA-256, git blob id for regular files, size, blob name), then
//! `blobs/<sha256>` once per distinct content. Every member is checked by SHA-256 as it
//! streams, and a regular file (`config.json`, the tokenizer) also by the git blob id its set
//! pins.
//!
//! An interrupted import keeps the blobs it verified (content-addressed, so harmless); a rerun
//! skips them after re-hashing and continues.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::context::CacheView;
use super::context::Context;
use super::plan::{plan_locally, record_set, signature_path};
use super::signed::check_signature;
use crate::artifacts::blocking::run_blocking_checked;
use crate::artifacts::fileset::PinnedFile;
use crate::artifacts::hash::{hash_file_as, DigestKind};
use crate::artifacts::ids::{is_commit_hash, validate_sha256};
use crate::artifacts::manifest::{validate_filename, validate_repo_id, Manifest, ManifestEntry};
use crate::artifacts::model_files::{files_of, ModelFile};
use crate::artifacts::store::fs::{create_dir_all, remove_stale_temporaries, temporary_path};
use crate::artifacts::store::layout::{entry_stays_inside, snapshot_link_blob_name, CacheLayout};
use crate::artifacts::store::stamp::VerificationStamp;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// `format` of a bundle's index.
const INDEX_FORMAT: &str = "cg-models-bundle";
/// The index version this code writes and reads.
const INDEX_VERSION: u32 = 1;
/// Largest `manifest.json` or `index.json` read from a bundle.
const MAX_METADATA_BYTES: u64 = 16 << 20;
/// `source` of the stamps of imported files.
const BUNDLE_SOURCE: &str = "bundle";

/// One file in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// The model the file belongs to.
    pub model_id: ModelId,
    /// Its repo.
    pub repo_id: String,
    /// The revision the manifest names (a branch or the commit).
    pub revision: String,
    /// The commit the file is from.
    pub commit: String,
    /// Path inside the repo.
    pub path: String,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// The git blob id a regular file of a set is pinned by (`None` for the weight file and
    /// LFS files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha1: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// The cache's blob name (the Hub's etag: the SHA-256 for LFS files).
    pub blob: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct BundleIndex {
    format: String,
    version: u32,
    files: Vec<BundleFile>,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleExport {
    /// The bundle.
    pub path: PathBuf,
    /// The files in it.
    pub files: Vec<BundleFile>,
    /// Bytes of file content written (each distinct content once).
    pub content_bytes: u64,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleImport {
    /// The bundle.
    pub path: PathBuf,
    /// The files now in the cache, verified.
    pub files: Vec<BundleFile>,
    /// Blobs written from the bundle.
    pub imported_blobs: usize,
    /// Blobs already in the cache and verified (an earlier, interrupted import), skipped.
    pub skipped_blobs: usize,
    /// Bytes written into the cache.
    pub bytes_written: u64,
}

/// Writes the verified files of `models` (every artifact when empty) into a bundle at `path`
/// (atomically: a temporary file beside it, renamed when complete).
pub(crate) async fn export(
    ctx: &Context,
    path: &Path,
    models: &[ModelId],
) -> EmbeddingResult<BundleExport> {
    let view = ctx.view();
    let manifest = ctx.manifest.clone();
    let models = models.to_vec();
    let target = path.to_path_buf();
    run_blocking_checked("cannot write", path, move || {
        export_blocking(&view, &manifest, &models, &target)
    })
    .await
}

/// Verifies every member of the bundle at `path` against its locked hashes and the active
/// manifest, then places the files in the cache and checks the signature of each model whose
/// policy asks for one (a refusal is the import's error; the model is not ready).
pub(crate) async fn import(ctx: &Context, path: &Path) -> EmbeddingResult<BundleImport> {
    let layout = ctx.layout.clone();
    let manifest = ctx.manifest.clone();
    let use_symlinks = ctx.config.use_symlinks;
    let source = path.to_path_buf();
    let imported = run_blocking_checked("cannot read", path, move || {
        import_blocking(&layout, &manifest, use_symlinks, &source)
    })
    .await?;
    // Checked like a download: the signature of each imported model with a policy, against
    // the SHA-256s its members streamed through.
    let mut checked = std::collections::BTreeSet::new();
    for file in &imported.files {
        if !checked.insert((file.model_id, file.commit.clone())) {
            continue;
        }
        if let Some(artifact) = ctx
            .manifest
            .artifacts()
            .find(|a| a.model_id == file.model_id)
        {
            check_signature(ctx, artifact, &file.commit).await?;
        }
    }
    Ok(imported)
}

fn bundle_error(path: &Path, reason: impl Into<String>) -> EmbeddingError {
    EmbeddingError::Bundle {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn export_blocking(
    view: &CacheView,
    manifest: &Manifest,
    models: &[ModelId],
    path: &Path,
) -> EmbeddingResult<BundleExport> {
    let mut locked = manifest.clone();
    let mut files = Vec::new();
    let mut sources = Vec::new();
    for entry in &mut locked.entries {
        let ManifestEntry::Artifact(artifact) = entry else {
            continue;
        };
        if !models.is_empty() && !models.contains(&artifact.model_id) {
            continue;
        }
        let (model_files, model_sources) =
            locked_model_files(view, manifest, artifact, &|reason| {
                bundle_error(path, reason)
            })?;
        files.extend(model_files);
        sources.extend(model_sources);
    }
    if files.is_empty() {
        return Err(bundle_error(
            path,
            "no model with files was selected; nothing was written",
        ));
    }
    let index = BundleIndex {
        format: INDEX_FORMAT.to_owned(),
        version: INDEX_VERSION,
        files: files.clone(),
    };
    let index_text = serde_json::to_string_pretty(&index)
        .map_err(|e| bundle_error(path, format!("cannot serialise its index: {e}")))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    remove_stale_temporaries(&parent);
    let temporary = temporary_path(&parent);
    let written = write_archive(
        &temporary,
        &locked.to_json_pretty(),
        &index_text,
        &files,
        &sources,
    )
    .and_then(|bytes| {
        fs::rename(&temporary, path)
            .map_err(|e| EmbeddingError::io("cannot move the finished bundle to", path, e))?;
        if let Ok(dir) = File::open(&parent) {
            let _ = dir.sync_all();
        }
        Ok(bytes)
    });
    match written {
        Ok(content_bytes) => Ok(BundleExport {
            path: path.to_path_buf(),
            files,
            content_bytes,
        }),
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            Err(error)
        }
    }
}

/// The verified files of one model as the cache alone knows them (the plan `status` shows):
/// each with its SHA-256 (the pin or blob name for LFS files; hashed for regular files, which
/// are also checked against their git blob id), size and blob name, and the snapshot entry to
/// read. Locks `artifact` to the commit, the weight file's digest and size, and (for a set)
/// every file. `fail` makes the error of the caller's kind (bundle, registry). Blocking.
pub(crate) fn locked_model_files(
    view: &CacheView,
    manifest: &Manifest,
    artifact: &mut crate::artifacts::manifest::ModelArtifact,
    fail: &dyn Fn(String) -> EmbeddingError,
) -> EmbeddingResult<(Vec<BundleFile>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut sources = Vec::new();
    let model = artifact.model_id;
    let not_ready = |what: &str| {
        fail(format!(
            "{model} {what}; run `cg-models ensure {model}` first, nothing was written"
        ))
    };
    // The model's plan as the cache alone makes it: the same list `status` shows.
    let layout = &view.layout;
    let (commit, plan) = plan_locally(view, artifact);
    let commit = commit.ok_or_else(|| not_ready("is not in the cache"))?;
    let plan = plan.ok_or_else(|| {
        not_ready("has a file set nothing in this cache describes (no recorded set, no tree listing, no snapshot folder)")
    })?;
    let set_files: Vec<ModelFile> = plan
        .files
        .iter()
        .map(|f| ModelFile {
            path: f.path.clone(),
            kind: f.digest.as_ref().map_or(DigestKind::Sha256, |d| d.kind()),
            digest: f.digest.as_ref().map(|d| d.hex().to_owned()),
            size: f.size,
        })
        .collect();
    let mut locked_rows = Vec::new();
    for file in set_files {
        let snapshot = layout.snapshot_path(&artifact.repo_id, &commit, &file.path);
        let size = match fs::metadata(&snapshot) {
            Ok(meta) if meta.is_file() && entry_stays_inside(&snapshot) => meta.len(),
            _ => {
                return Err(not_ready(&format!(
                    "has no file {} in the cache",
                    file.path
                )))
            }
        };
        let blob_name = snapshot_link_blob_name(&snapshot);
        if file.size.is_some_and(|pinned| pinned != size) {
            return Err(not_ready(&format!(
                "has {} with {size} bytes, the manifest pins {}; run `cg-models verify --repair {model}`",
                file.path,
                file.size.unwrap_or_default()
            )));
        }
        let (sha256, git_sha1) = match file.kind {
            DigestKind::Sha256 => {
                let stamp = VerificationStamp::read(&layout.stamp_path(
                    &artifact.repo_id,
                    &commit,
                    &file.path,
                ));
                let sha256 = file
                    .digest
                    .clone()
                    .or_else(|| blob_name.as_deref().and_then(|n| validate_sha256(n).ok()))
                    .or_else(|| stamp.map(|s| s.sha256))
                    .ok_or_else(|| {
                        fail(
                            format!("no SHA-256 is known for {model} {}; pin it with `cg-models lock` first", file.path),
                        )
                    })?;
                (sha256, None)
            }
            DigestKind::GitBlobSha1 => {
                let pinned = file.digest.clone().unwrap_or_default();
                let (git, _) = hash_file_as(&snapshot, DigestKind::GitBlobSha1)
                    .map_err(|e| EmbeddingError::io("cannot read", &snapshot, e))?;
                if git != pinned {
                    return Err(not_ready(&format!(
                        "has {} with git blob id {git}, its set pins {pinned}; run `cg-models verify --repair {model}`",
                        file.path
                    )));
                }
                let (sha256, _) = hash_file_as(&snapshot, DigestKind::Sha256)
                    .map_err(|e| EmbeddingError::io("cannot read", &snapshot, e))?;
                (sha256, Some(pinned))
            }
        };
        locked_rows.push(PinnedFile {
            path: file.path.clone(),
            size_bytes: size,
            kind: file.kind,
            digest: git_sha1.clone().unwrap_or_else(|| sha256.clone()),
        });
        if file.path == artifact.filename {
            artifact.revision = Some(commit.clone());
            artifact.sha256 = Some(sha256.clone());
            artifact.size_bytes = Some(size);
        }
        files.push(BundleFile {
            model_id: model,
            repo_id: artifact.repo_id.clone(),
            revision: manifest
                .entry(model)
                .and_then(|e| match e {
                    ManifestEntry::Artifact(a) => Some(a.revision_or_default().to_owned()),
                    ManifestEntry::Builtin(_) => None,
                })
                .unwrap_or_else(|| commit.clone()),
            commit: commit.clone(),
            path: file.path,
            blob: blob_name
                .filter(|n| is_blob_name(n))
                .unwrap_or_else(|| git_sha1.clone().unwrap_or_else(|| sha256.clone())),
            sha256,
            git_sha1,
            size,
        });
        sources.push(snapshot);
    }
    if !artifact.selection.is_single_file() {
        // The locked entry names the whole set, so it works without the tree API.
        artifact.selection.files = Some(locked_rows);
    }
    Ok((files, sources))
}

fn write_archive(
    temporary: &Path,
    manifest_text: &str,
    index_text: &str,
    files: &[BundleFile],
    sources: &[PathBuf],
) -> EmbeddingResult<u64> {
    let cannot = |e: io::Error| EmbeddingError::io("cannot write bundle", temporary, e);
    let out = File::create(temporary).map_err(cannot)?;
    let mut builder = tar::Builder::new(BufWriter::new(out));
    append_bytes(&mut builder, "manifest.json", manifest_text.as_bytes()).map_err(cannot)?;
    append_bytes(&mut builder, "index.json", index_text.as_bytes()).map_err(cannot)?;
    let mut seen = HashSet::new();
    let mut content_bytes = 0;
    for (file, source) in files.iter().zip(sources) {
        if !seen.insert(file.sha256.clone()) {
            continue;
        }
        let opened =
            File::open(source).map_err(|e| EmbeddingError::io("cannot read", source, e))?;
        let mut reader = HashingReader::new(opened.take(file.size));
        let mut header = blob_header(file.size);
        builder
            .append_data(&mut header, format!("blobs/{}", file.sha256), &mut reader)
            .map_err(cannot)?;
        let (actual, length) = reader.finish();
        if actual != file.sha256 || length != file.size {
            return Err(EmbeddingError::HashMismatch {
                location: crate::error::FileLocation {
                    model_id: file.model_id,
                    repo_id: file.repo_id.clone(),
                    revision: file.commit.clone(),
                    filename: file.path.clone(),
                },
                path: source.clone(),
                expected: file.sha256.clone(),
                actual: format!("{actual} ({length} bytes); run `cg-models verify --repair` and export again, nothing was written"),
            });
        }
        content_bytes += file.size;
    }
    let writer = builder.into_inner().map_err(cannot)?;
    let file = writer.into_inner().map_err(|e| cannot(e.into_error()))?;
    file.sync_all().map_err(cannot)?;
    Ok(content_bytes)
}

fn blob_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes(
    builder: &mut tar::Builder<BufWriter<File>>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut header = blob_header(bytes.len() as u64);
    builder.append_data(&mut header, name, bytes)
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    length: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            length: 0,
        }
    }

    fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.length)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.length += read as u64;
        Ok(read)
    }
}

/// A name fit for `blobs/`: a SHA-256 or a git blob id (hex only, so it cannot leave the folder).
fn is_blob_name(name: &str) -> bool {
    matches!(name.len(), 40 | 64) && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_metadata<R: Read>(
    path: &Path,
    entry: Option<io::Result<tar::Entry<'_, R>>>,
    expected: &str,
) -> EmbeddingResult<String> {
    let mut entry = match entry {
        Some(Ok(entry)) => entry,
        Some(Err(e)) => {
            return Err(bundle_error(
                path,
                format!("is not a readable bundle (reading {expected}: {e})"),
            ))
        }
        None => {
            return Err(bundle_error(
                path,
                format!("is empty or truncated: {expected} is missing"),
            ))
        }
    };
    let name = entry
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != expected {
        return Err(bundle_error(
            path,
            format!("is not a cg-models bundle: its first members must be manifest.json and index.json, found `{name}` where {expected} belongs"),
        ));
    }
    if entry.header().size().unwrap_or(u64::MAX) > MAX_METADATA_BYTES {
        return Err(bundle_error(path, format!("its {expected} is too large")));
    }
    let mut text = String::new();
    entry
        .read_to_string(&mut text)
        .map_err(|e| bundle_error(path, format!("cannot read its {expected}: {e}")))?;
    Ok(text)
}

fn import_blocking(
    layout: &CacheLayout,
    manifest: &Manifest,
    use_symlinks: bool,
    path: &Path,
) -> EmbeddingResult<BundleImport> {
    let file = File::open(path).map_err(|e| EmbeddingError::io("cannot open bundle", path, e))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut entries = archive
        .entries()
        .map_err(|e| bundle_error(path, format!("is not a tar archive: {e}")))?;
    let manifest_text = read_metadata(path, entries.next(), "manifest.json")?;
    let index_text = read_metadata(path, entries.next(), "index.json")?;
    let bundled = Manifest::parse(&manifest_text, &format!("{}:manifest.json", path.display()))
        .map_err(|e| bundle_error(path, format!("its manifest.json is not valid: {e}")))?;
    let index: BundleIndex = serde_json::from_str(&index_text)
        .map_err(|e| bundle_error(path, format!("its index.json is not valid: {e}")))?;
    check_index(path, &index)?;
    check_matches(path, manifest, &bundled, &index.files)?;

    let mut seen = HashSet::new();
    let mut imported_blobs = 0;
    let mut skipped_blobs = 0;
    let mut bytes_written = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            bundle_error(
                path,
                format!("is damaged or truncated after {} blob(s): {e}; the verified blobs were kept, rerun the import with a complete bundle", seen.len()),
            )
        })?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(sha256) = name
            .strip_prefix("blobs/")
            .and_then(|s| validate_sha256(s).ok())
            .filter(|s| index.files.iter().any(|f| f.sha256 == *s))
        else {
            return Err(bundle_error(
                path,
                format!("member `{name}` is not listed in its index (the bundle was altered); nothing of it was placed"),
            ));
        };
        if !seen.insert(sha256.clone()) {
            continue;
        }
        let targets: Vec<&BundleFile> = index.files.iter().filter(|f| f.sha256 == sha256).collect();
        let size = targets[0].size;
        let blob_paths: Vec<PathBuf> = targets
            .iter()
            .map(|f| layout.blob_path(&f.repo_id, &f.blob))
            .collect();
        let git_sha1 = targets.iter().find_map(|f| f.git_sha1.clone());
        let verified = |p: &PathBuf| {
            hash_file_as(p, DigestKind::Sha256).is_ok_and(|(s, l)| s == sha256 && l == size)
        };
        if blob_paths.iter().all(verified) {
            skipped_blobs += 1;
            continue;
        }
        let first = &blob_paths[0];
        let dir = first
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| layout.root().to_path_buf());
        create_dir_all(&dir)?;
        remove_stale_temporaries(&dir);
        let temporary = temporary_path(&dir);
        let streamed = stream_member(&mut entry, &temporary);
        let (actual, length) = match streamed {
            Ok(values) => values,
            Err(e) => {
                let _ = fs::remove_file(&temporary);
                return Err(EmbeddingError::io("cannot write", &temporary, e));
            }
        };
        if length != size || actual != sha256 {
            let _ = fs::remove_file(&temporary);
            let what = if length < size {
                format!("member {name} ends after {length} of {size} bytes (the bundle is truncated); the verified blobs were kept, rerun the import with a complete bundle")
            } else {
                format!("member {name} does not match its locked hash: expected SHA-256 {sha256} and {size} bytes, got {actual} and {length} bytes (the bundle was altered or damaged); nothing of it was placed")
            };
            return Err(bundle_error(path, what));
        }
        if let Some(git_sha1) = &git_sha1 {
            let actual = hash_file_as(&temporary, DigestKind::GitBlobSha1)
                .map_err(|e| EmbeddingError::io("cannot read", &temporary, e))?
                .0;
            if actual != *git_sha1 {
                let _ = fs::remove_file(&temporary);
                return Err(bundle_error(
                    path,
                    format!("member {name} does not match its locked git blob id: expected {git_sha1}, got {actual} (the bundle was altered or damaged); nothing of it was placed"),
                ));
            }
        }
        fs::rename(&temporary, first).map_err(|e| {
            let _ = fs::remove_file(&temporary);
            EmbeddingError::io("cannot move verified blob to", first, e)
        })?;
        if let Ok(dir) = File::open(&dir) {
            let _ = dir.sync_all();
        }
        for other in &blob_paths[1..] {
            if !verified(other) {
                copy_blob(first, other)?;
            }
        }
        imported_blobs += 1;
        bytes_written += size;
    }
    if let Some(missing) = index.files.iter().find(|f| !seen.contains(&f.sha256)) {
        return Err(bundle_error(
            path,
            format!(
                "ends before blobs/{} ({} {}): the bundle is truncated; the {} verified blob(s) were kept, rerun the import with a complete bundle",
                missing.sha256, missing.model_id, missing.path, seen.len()
            ),
        ));
    }
    for file in &index.files {
        let snapshot = layout.link_snapshot(
            &file.repo_id,
            &file.commit,
            &file.path,
            &file.blob,
            use_symlinks,
        )?;
        layout.write_ref(&file.repo_id, &file.revision, &file.commit)?;
        layout.write_commit_ref(&file.repo_id, &file.commit)?;
        let digest = file.git_sha1.as_deref().unwrap_or(&file.sha256);
        let mut stamp = VerificationStamp::now(&snapshot, digest)
            .map_err(|e| EmbeddingError::io("cannot read", &snapshot, e))?;
        stamp.source = Some(BUNDLE_SOURCE.to_owned());
        if file.git_sha1.is_some() {
            // The member streamed through SHA-256 on import: what a signature lists.
            stamp.content_sha256 = Some(file.sha256.clone());
        }
        stamp.write(&layout.stamp_path(&file.repo_id, &file.commit, &file.path))?;
    }
    record_imported_sets(layout, manifest, &index.files)?;
    layout.ensure_cachedir_tag()?;
    Ok(BundleImport {
        path: path.to_path_buf(),
        files: index.files,
        imported_blobs,
        skipped_blobs,
        bytes_written,
    })
}

/// Records the file set of each imported model whose active entry gives patterns or a preset
/// without listing the files, so readiness knows the set without the tree API.
fn record_imported_sets(
    layout: &CacheLayout,
    manifest: &Manifest,
    files: &[BundleFile],
) -> EmbeddingResult<()> {
    for artifact in manifest.artifacts() {
        let signature = signature_path(&manifest.signatures, artifact);
        if !(artifact.selection.needs_tree() || signature.is_some())
            || artifact.selection.files.is_some()
        {
            continue;
        }
        let of_model: Vec<&BundleFile> = files
            .iter()
            .filter(|f| f.model_id == artifact.model_id)
            .collect();
        let Some(first) = of_model.first() else {
            continue;
        };
        let rows: Vec<PinnedFile> = of_model
            .iter()
            .map(|f| PinnedFile {
                path: f.path.clone(),
                size_bytes: f.size,
                kind: if f.git_sha1.is_some() {
                    DigestKind::GitBlobSha1
                } else {
                    DigestKind::Sha256
                },
                digest: f.git_sha1.clone().unwrap_or_else(|| f.sha256.clone()),
            })
            .collect();
        record_set(layout, artifact, &first.commit, signature.as_deref(), &rows)?;
    }
    Ok(())
}

/// Copies one member into `temporary`, hashing it; fsyncs. Returns the hash and length.
fn stream_member(entry: &mut impl Read, temporary: &Path) -> io::Result<(String, u64)> {
    let mut out = File::create(temporary)?;
    let mut reader = HashingReader::new(entry);
    io::copy(&mut reader, &mut out)?;
    out.flush()?;
    out.sync_all()?;
    Ok(reader.finish())
}

/// The same content for another repo: hard link, else copy (temporary name, then rename).
fn copy_blob(from: &Path, to: &Path) -> EmbeddingResult<()> {
    let dir = to.parent().unwrap_or_else(|| Path::new("."));
    create_dir_all(dir)?;
    let temporary = temporary_path(dir);
    if fs::hard_link(from, &temporary).is_err() {
        fs::copy(from, &temporary)
            .map_err(|e| EmbeddingError::io("cannot copy blob to", &temporary, e))?;
    }
    fs::rename(&temporary, to).map_err(|e| {
        let _ = fs::remove_file(&temporary);
        EmbeddingError::io("cannot place blob", to, e)
    })
}

/// The index is well formed: its own format, safe names, real hashes and commits.
fn check_index(path: &Path, index: &BundleIndex) -> EmbeddingResult<()> {
    if index.format != INDEX_FORMAT || index.version != INDEX_VERSION {
        return Err(bundle_error(
            path,
            format!(
                "its index is format `{}` version {}, this cg-models reads `{INDEX_FORMAT}` version {INDEX_VERSION}",
                index.format, index.version
            ),
        ));
    }
    if index.files.is_empty() {
        return Err(bundle_error(path, "its index lists no files"));
    }
    for file in &index.files {
        let valid = validate_repo_id(&file.repo_id).is_ok()
            && validate_filename(&file.path).is_ok()
            && is_commit_hash(&file.commit)
            && validate_sha256(&file.sha256).is_ok_and(|s| s == file.sha256)
            && is_blob_name(&file.blob)
            && match &file.git_sha1 {
                Some(git) => file.blob == *git && is_blob_name(git) && git.len() == 40,
                None => file.blob.len() == 40 || file.blob == file.sha256,
            };
        if !valid {
            return Err(bundle_error(
                path,
                format!(
                    "its index has an invalid record for {} ({}); the bundle was altered",
                    file.model_id, file.path
                ),
            ));
        }
    }
    Ok(())
}

/// Every file of the bundle is what the active manifest asks for (same repo and file, and the
/// same commit, hash and size where it pins them), and what the bundle's own manifest locks.
fn check_matches(
    path: &Path,
    active: &Manifest,
    bundled: &Manifest,
    files: &[BundleFile],
) -> EmbeddingResult<()> {
    for file in files {
        let model = file.model_id;
        let inner = match bundled.entry(model) {
            Some(ManifestEntry::Artifact(a)) => {
                files_of(a).into_iter().find(|f| f.path == file.path)
            }
            _ => None,
        };
        let consistent = inner.is_some_and(|f| {
            f.digest.as_deref() == Some(bundle_digest(file)) && f.size == Some(file.size)
        });
        if !consistent {
            return Err(bundle_error(
                path,
                format!("its index and its manifest.json disagree about {model} {} (the bundle was altered)", file.path),
            ));
        }
        let other = |why: String| {
            bundle_error(
                path,
                format!("was made for another manifest: {why}; nothing was placed. Import it with the manifest it carries (extract manifest.json, pass --manifest) or export a bundle from this manifest"),
            )
        };
        let Some(ManifestEntry::Artifact(artifact)) = active.entry(model) else {
            return Err(other(format!(
                "{model} has no downloadable file in {}",
                active.origin
            )));
        };
        if artifact.repo_id != file.repo_id {
            return Err(other(format!(
                "{model} is {} in the bundle, {} in {}",
                file.repo_id, artifact.repo_id, active.origin
            )));
        }
        let pinned = files_of(artifact).into_iter().find(|f| f.path == file.path);
        let same_selection = match bundled.entry(model) {
            Some(ManifestEntry::Artifact(a)) => {
                a.selection.preset == artifact.selection.preset
                    && a.selection.include == artifact.selection.include
            }
            _ => false,
        };
        // A set the active manifest gives by patterns or a preset: the bundle's locked list
        // of the same selection is that set.
        let unlisted_member = pinned.is_none()
            && artifact.selection.needs_tree()
            && artifact.selection.files.is_none()
            && same_selection;
        if pinned.is_none() && !unlisted_member {
            return Err(other(format!(
                "{model} has no file {} in {}",
                file.path, active.origin
            )));
        }
        if artifact.revision_is_commit() && artifact.revision_or_default() != file.commit {
            return Err(other(format!(
                "{model} is at commit {} in the bundle, {} pins {}",
                file.commit,
                active.origin,
                artifact.revision_or_default()
            )));
        }
        let Some(pinned) = pinned else {
            continue;
        };
        if pinned
            .digest
            .as_deref()
            .is_some_and(|d| d != bundle_digest(file))
            || pinned.size.is_some_and(|s| s != file.size)
        {
            return Err(other(format!(
                "{model} {} has {} {} ({} bytes) in the bundle, {} pins {} ({} bytes)",
                file.path,
                pinned.kind.label(),
                bundle_digest(file),
                file.size,
                active.origin,
                pinned.digest.as_deref().unwrap_or("none"),
                pinned
                    .size
                    .map_or_else(|| "?".to_owned(), |s| s.to_string())
            )));
        }
    }
    Ok(())
}

/// The digest a bundle record is pinned by: the git blob id of a regular file, else SHA-256.
fn bundle_digest(file: &BundleFile) -> &str {
    file.git_sha1.as_deref().unwrap_or(&file.sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_are_hex_ids_only() {
        assert!(is_blob_name(&"a".repeat(64)));
        assert!(is_blob_name(&"0".repeat(40)));
        assert!(!is_blob_name("../../etc/passwd"));
        assert!(!is_blob_name(&"g".repeat(64)));
    }

    #[test]
    fn hashing_reader_hashes_what_passes() {
        let mut reader = HashingReader::new(&b"abc"[..]);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        let (sha, len) = reader.finish();
        assert_eq!(len, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
