//! Entry points for the fuzz targets of `fuzz/` (issue 28), only with the `fuzzing` feature:
//! each takes the raw bytes a fuzzer made, feeds them to one parser of untrusted input the
//! way the crate does, and **panics when a promise is broken**, not only when the parser
//! panics: paths that leave their root, a parse → serialize → parse that changes the value, a
//! blob or snapshot entry that does not hold verified bytes, a deletion the rules forbid.
//! Allocations sized by an unchecked field are caught by the fuzzer's `-malloc_limit_mb`
//! (`scripts/fuzz`). The crate's own tests replay the committed corpora and regressions
//! through the same functions (`tests/it/fuzz_corpus.rs`).
//!
//! This is harness code: a setup failure (no temporary folder) panics too, with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::config::ArtifactManagerConfig;
use super::fileset::{module_folders, select, shard_names, FileSelection, Preset};
use super::hash::sha256_hex;
use super::manager::ModelArtifactManager;
use super::manifest::{validate_filename, Manifest, ManifestEntry};
use super::remote::protocol::{
    metadata_from, next_link, parse_content_range, signed_url_expired, strip_query, tree_files,
};
use super::signature::{verify_model_signature, SignatureVerifier, VerifiedSignature};
use super::store::layout::CacheLayout;
use super::store::listing::parse_tree_listing;
use super::store::shared;
use crate::error::FileLocation;
use crate::safetensors::{check_file, check_sharded, parse_header, MAX_HEADER_BYTES};

/// A private folder for this process's scratch files, removed when the process ends normally.
/// In memory (`/dev/shm`) where there is one: the fsyncs of an import cost nothing there, so
/// the fuzzer spends its time on the parser rather than waiting for a disk.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let builder = {
            let mut b = tempfile::Builder::new();
            b.prefix("cg-fuzz-");
            b
        };
        let shm = Path::new("/dev/shm");
        shm.is_dir()
            .then(|| builder.tempdir_in(shm).ok())
            .flatten()
            .map_or_else(|| builder.tempdir(), Ok)
            .expect("fuzz harness: a temporary folder")
    })
    .path()
}

/// A fresh, empty folder under [`scratch`] (removed by the caller).
fn fresh_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = scratch().join(format!("{label}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    fs::create_dir_all(&dir).expect("fuzz harness: a scratch folder");
    dir
}

/// Whether `path`, with `..` and `.` resolved lexically, is still below `root`.
fn stays_below(root: &Path, path: &Path) -> bool {
    let mut depth: usize = 0;
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    for component in rest.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    depth > 0
}

/// `path` with `.` and `..` resolved lexically (no link followed).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every regular file and link under `dir` (links not followed), relative.
fn tree_of(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                walk(base, &path, out);
            } else if let Ok(relative) = path.strip_prefix(base) {
                out.insert(relative.to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Reads `u64`s from the front of the fuzzer's bytes.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((first, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        *first
    }

    fn u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        let n = self.0.len().min(8);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(buf)
    }
}

// ------------------------------------------------------------------ manifest

/// `Manifest::parse` on any text. A manifest that parses has every file path inside its
/// snapshot folder, every repo folder inside the cache, and writes itself out
/// (`to_json_pretty`) as text that parses to the same value.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = Manifest::parse(text, "fuzz") else {
        return;
    };
    let root = Path::new("/cache");
    let layout = CacheLayout::new(root);
    for artifact in parsed.artifacts() {
        let repo = layout.repo_dir(&artifact.repo_id);
        assert!(
            stays_below(root, &repo) && repo.parent() == Some(root),
            "fuzz invariant: repo id {:?} puts its folder at {repo:?}, not directly in the cache",
            artifact.repo_id
        );
        let snapshot = layout.snapshot_dir(
            &artifact.repo_id,
            "0123456789abcdef0123456789abcdef01234567",
        );
        let mut paths = vec![artifact.filename.as_str()];
        if let Some(files) = &artifact.selection.files {
            paths.extend(files.iter().map(|f| f.path.as_str()));
        }
        for path in paths {
            let entry = layout.snapshot_path(
                &artifact.repo_id,
                "0123456789abcdef0123456789abcdef01234567",
                path,
            );
            assert!(
                stays_below(&snapshot, &entry),
                "fuzz invariant: manifest path {path:?} leaves its snapshot folder ({entry:?})"
            );
        }
        if let Some(sha) = &artifact.sha256 {
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "fuzz invariant: accepted sha256 {sha:?}"
            );
        }
    }
    let written = parsed.to_json_pretty();
    let again = Manifest::parse(&written, "fuzz").unwrap_or_else(|e| {
        panic!("fuzz invariant: a parsed manifest writes text that does not parse: {e}\n{written}")
    });
    assert_eq!(
        again, parsed,
        "fuzz invariant: parse → to_json_pretty → parse changed the manifest"
    );
    assert_eq!(
        again.to_json_pretty(),
        written,
        "fuzz invariant: writing is not stable"
    );
    assert_eq!(
        parsed.entries.len(),
        parsed
            .entries
            .iter()
            .map(ManifestEntry::model_id)
            .collect::<BTreeSet<_>>()
            .len()
    );
}

// ------------------------------------------------------------------ safetensors

/// The safetensors checks on a whole file: the fuzzer's bytes are the file (8-byte length,
/// header, data). `check_file` reads it from disk; `parse_header` sees the same header. What
/// passes has tensors that exactly tile the data area, each as long as its dtype and shape
/// say, and the header length stayed under the limit and inside the file.
pub fn safetensors_file(data: &[u8]) {
    let dir = fresh_dir("st");
    let path = dir.join("model.safetensors");
    fs::write(&path, data).expect("fuzz harness: write the file");
    let checked = check_file(&path);
    let _ = fs::remove_dir_all(&dir);
    let Ok(summary) = checked else {
        return;
    };
    let header_len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    assert!(header_len <= MAX_HEADER_BYTES && header_len + 8 <= data.len() as u64);
    assert_eq!(summary.header_bytes, header_len);
    assert_eq!(summary.data_bytes, data.len() as u64 - 8 - header_len);
    let header = &data[8..8 + header_len as usize];
    assert_eq!(
        parse_header(header, summary.data_bytes).as_ref(),
        Ok(&summary),
        "fuzz invariant: check_file and parse_header disagree"
    );
    let mut spans: Vec<(u64, u64)> = summary.tensors.values().map(|t| t.data_offsets).collect();
    spans.sort_unstable();
    let mut cursor = 0;
    for (begin, end) in spans {
        assert_eq!(
            begin, cursor,
            "fuzz invariant: tensors do not tile the data area"
        );
        cursor = end;
    }
    assert_eq!(
        cursor, summary.data_bytes,
        "fuzz invariant: data area not covered"
    );
}

/// `parse_header` on any header text against a data area whose size the first 8 bytes give.
/// What passes describes tensors whose spans tile exactly that area.
pub fn safetensors_header(data: &[u8]) {
    let mut input = Bytes(data);
    let data_bytes = input.u64() % (1 << 40);
    let Ok(summary) = parse_header(input.0, data_bytes) else {
        return;
    };
    let mut total: u64 = 0;
    for (name, tensor) in &summary.tensors {
        let (begin, end) = tensor.data_offsets;
        assert!(
            begin <= end && end <= data_bytes,
            "fuzz invariant: `{name}` outside the data"
        );
        total += end - begin;
    }
    assert_eq!(
        total, data_bytes,
        "fuzz invariant: spans do not add up to the data area"
    );
}

// ------------------------------------------------------------------ shard index

/// A safetensors index (and `modules.json`, read the same way): every shard name it yields is
/// a plain file name beside the index, every module folder stays inside the repo, and
/// `check_sharded` never opens a file that is not among the model's verified files.
pub fn shard_index(data: &[u8]) {
    if let Ok(names) = shard_names(data) {
        let folder = Path::new("/snap");
        for name in &names {
            assert!(
                validate_filename(name).is_ok() && !name.contains('/'),
                "fuzz invariant: shard name {name:?} is not a plain file name"
            );
            assert!(stays_below(folder, &folder.join(name)));
        }
    }
    if let Ok(folders) = module_folders(data) {
        for folder in &folders {
            assert!(
                validate_filename(folder).is_ok(),
                "fuzz invariant: module folder {folder:?} is not a safe path"
            );
        }
    }
    // The sharded check on disk: two real shards are the only verified files.
    let dir = fresh_dir("idx");
    let shard = |name: &str, tensor: &str| {
        let header =
            format!(r#"{{"{tensor}":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        let path = dir.join(name);
        fs::write(&path, bytes).expect("fuzz harness: write a shard");
        path
    };
    let files = vec![
        shard("model-00001-of-00002.safetensors", "a"),
        shard("model-00002-of-00002.safetensors", "b"),
    ];
    let index = dir.join("model.safetensors.index.json");
    fs::write(&index, data).expect("fuzz harness: write the index");
    let outside = dir.parent().map(|p| p.join("outside.safetensors"));
    let result = check_sharded(&index, &files);
    let _ = fs::remove_dir_all(&dir);
    if let Ok(summary) = result {
        let names: BTreeSet<&str> = summary.tensors.keys().map(String::as_str).collect();
        assert!(
            names.iter().all(|n| *n == "a" || *n == "b"),
            "fuzz invariant: tensors from a file that is not a verified shard: {names:?} ({outside:?})"
        );
    }
}

// ------------------------------------------------------------------ Hub metadata

/// What `metadata_from` made of the headers, for [`hub_metadata`]'s checks.
fn headers_of(text: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// The Hub's answer to a `HEAD` as one function from headers to our view of the file. Input:
/// one flag byte (bit 0: the answer was a redirect; bit 1: the revision asked is a commit),
/// then `name: value` lines. What is accepted names a blob that stays in `blobs/`, a commit of
/// 40 lowercase hex digits (the one sent, or the one asked when none was), a SHA-256 only
/// when the etag is one, and the size the headers say; redirect targets and signed URLs never
/// crash, and a URL shown without its query has none.
pub fn hub_metadata(data: &[u8]) {
    let mut input = Bytes(data);
    let flags = input.u8();
    let headers = headers_of(input.0);
    let asked = "0123456789abcdef0123456789abcdef01234567";
    let location = FileLocation {
        model_id: crate::ModelId::Entity,
        repo_id: "org/model".to_owned(),
        revision: if flags & 2 != 0 { asked } else { "main" }.to_owned(),
        filename: "model.safetensors".to_owned(),
    };
    let redirect = flags & 1 != 0;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(link) = header("link") {
        let _ = next_link(link);
    }
    if let Some(url) = header("location") {
        let shown = strip_query(url);
        assert!(
            !shown.contains(['?', '#']),
            "fuzz invariant: {shown:?} keeps a query"
        );
        let _ = signed_url_expired(url, u64::from(flags) << 24);
    }
    let _ = parse_content_range(&headers);
    let Ok(file) = metadata_from(&headers, "http://hub/x", redirect, &location) else {
        return;
    };
    let layout = CacheLayout::new("/cache");
    let blobs = layout.blobs_dir("org/model");
    let blob = layout.blob_path("org/model", &file.etag);
    assert!(
        blob.parent() == Some(blobs.as_path()) && stays_below(&blobs, &blob),
        "fuzz invariant: etag {:?} puts the blob at {blob:?}",
        file.etag
    );
    assert!(
        file.commit.len() == 40
            && file
                .commit
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "fuzz invariant: commit {:?}",
        file.commit
    );
    let sent = header("x-repo-commit").map(str::to_ascii_lowercase);
    match sent.filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(sent) => assert!(sent == file.commit && !file.commit_assumed),
        None => assert!(file.commit == asked && file.commit_assumed && flags & 2 != 0),
    }
    if let Some(sha) = &file.sha256 {
        assert!(
            sha.eq_ignore_ascii_case(&file.etag) && sha.len() == 64,
            "fuzz invariant: sha256 {sha:?} for etag {:?}",
            file.etag
        );
    }
    if let Some(size) = header("x-linked-size").and_then(|s| s.parse::<u64>().ok()) {
        assert_eq!(
            file.size,
            Some(size),
            "fuzz invariant: X-Linked-Size ignored"
        );
    }
}

// ------------------------------------------------------------------ Content-Range

/// `Content-Range` parsing: any header value that parses writes back (`bytes a-b/t`) to one
/// that parses to the same triple; and a triple drawn from the first bytes, written as our
/// server would, parses back to itself (the round trip of a `Range: bytes=a-b` request).
pub fn content_range(data: &[u8]) {
    let parse = |text: &str| -> Option<(u64, u64, Option<u64>)> {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_RANGE,
            HeaderValue::from_str(text).ok()?,
        );
        parse_content_range(&headers)
    };
    let write = |(start, end, total): (u64, u64, Option<u64>)| match total {
        Some(total) => format!("bytes {start}-{end}/{total}"),
        None => format!("bytes {start}-{end}/*"),
    };
    let mut input = Bytes(data);
    let (start, length, total, star) = (input.u64(), input.u64(), input.u64(), input.u8());
    let end = start.saturating_add(length % (1 << 32));
    let triple = (start, end, (star & 1 == 0).then_some(total));
    assert_eq!(
        parse(&write(triple)),
        Some(triple),
        "fuzz invariant: our own Content-Range does not parse back"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(parsed) = parse(text) {
            assert_eq!(
                parse(&write(parsed)),
                Some(parsed),
                "fuzz invariant: {text:?} parses, its rewrite does not parse the same"
            );
        }
    }
}

// ------------------------------------------------------------------ tree JSON

/// A tree (or `paths-info`) answer: `tree_files` then the selection rules of a model with a
/// preset and a catch-all pattern. Every path the set would place under
/// `snapshots/<commit>/` is a safe repo path that stays inside that folder.
pub fn tree_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let location = FileLocation {
        model_id: crate::ModelId::Entity,
        repo_id: "org/model".to_owned(),
        revision: "main".to_owned(),
        filename: "model.safetensors".to_owned(),
    };
    let Ok(tree) = tree_files(&value, &location) else {
        return;
    };
    for file in &tree {
        assert!(file.oid.len() == 40, "fuzz invariant: oid {:?}", file.oid);
    }
    let selection = FileSelection {
        files: None,
        include: vec!["*".to_owned()],
        preset: Some(Preset::SentenceTransformers),
    };
    let documents = BTreeMap::new();
    let Ok(paths) = select(&tree, &selection, "model.safetensors", &documents) else {
        return;
    };
    let layout = CacheLayout::new("/cache");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = layout.snapshot_dir("org/model", commit);
    for path in paths {
        if path == "model.safetensors" {
            continue;
        }
        let entry = layout.snapshot_path("org/model", commit, &path);
        assert!(
            validate_filename(&path).is_ok() && stays_below(&snapshot, &entry),
            "fuzz invariant: the Hub's tree put {path:?} into the set; its entry would be {entry:?}"
        );
    }
}

// ------------------------------------------------------------------ tree listing (trees/<commit>.json)

/// `data` read as Python's `json` reads it, for checks independent of the parser under test:
/// `Err` when Python refuses it (not UTF-8, not JSON), `Ok(None)` when it is JSON that
/// serde's `Value` cannot hold (a number beyond `f64`, which Python reads as infinity or as a
/// big integer: the independent checks are then skipped), else the value.
fn python_json(data: &[u8]) -> Result<Option<serde_json::Value>, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8: {e}"))?;
    match serde_json::from_str(text) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.to_string().starts_with("number out of range") => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `path` is a repo path by the rules the listing reader states (those of a
/// manifest's paths): 1 to 1024 bytes, relative, `/`-separated, no backslash, no control
/// character, no empty, `.` or `..` segment, no segment over 255 bytes. Written out here
/// rather than calling the reader's own check, so that a change there shows.
fn is_safe_repo_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && s.len() <= 255)
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// huggingface_hub's tree listing (`<repo>/trees/<commit>.json`, `parse_tree_listing`), the
/// file set of a commit we take without asking the Hub. What it accepts: one entry per key of
/// `files`, each path a safe repo path whose snapshot entry stays inside
/// `snapshots/<commit>/`, a git blob id of 40 lowercase hex digits, an `lfs_sha256` (when
/// given) of 64, the size as the listing gives it (`lfs_size` for an LFS file that has one,
/// else `size`: read from the JSON here, independently of the reader), and nothing
/// huggingface_hub's own reader ignores as corrupted (text that is not JSON in UTF-8, a
/// `xet_hash` that is not 64 hex digits): both read the same listings; and the reader's view
/// written back the way huggingface_hub writes it parses to the same view. Returns how many
/// files were accepted (`None`: the listing was refused).
pub fn tree_listing(data: &[u8]) -> Option<usize> {
    let files = parse_tree_listing(data).ok()?;
    let raw = python_json(data).unwrap_or_else(|e| {
        panic!("fuzz invariant: accepted a listing that is not JSON, which huggingface_hub ignores as corrupted: {e}")
    });
    let listed = raw.as_ref().map(|raw| {
        raw.get("files")
            .and_then(serde_json::Value::as_object)
            .unwrap_or_else(|| {
                panic!("fuzz invariant: accepted a listing that is not an object with a `files` object (huggingface_hub cannot read it)")
            })
    });
    if let Some(listed) = listed {
        assert_eq!(
            files.len(),
            listed.len(),
            "fuzz invariant: {} files read from a listing of {} entries",
            files.len(),
            listed.len()
        );
    }
    let layout = CacheLayout::new("/cache");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = layout.snapshot_dir("org/model", commit);
    let mut seen = BTreeSet::new();
    for file in &files {
        assert!(
            seen.insert(file.path.as_str()),
            "fuzz invariant: {:?} listed twice",
            file.path
        );
        let entry = layout.snapshot_path("org/model", commit, &file.path);
        assert!(
            is_safe_repo_path(&file.path) && stays_below(&snapshot, &entry),
            "fuzz invariant: listing path {:?} would be the snapshot entry {entry:?}",
            file.path
        );
        let Some(listed) = listed else {
            continue;
        };
        let given = listed
            .get(&file.path)
            .unwrap_or_else(|| panic!("fuzz invariant: {:?} is not in the listing", file.path));
        let field = |name: &str| given.get(name).filter(|v| !v.is_null());
        let lfs_sha256 = field("lfs_sha256").and_then(serde_json::Value::as_str);
        let size = match (lfs_sha256, field("lfs_size")) {
            (Some(_), Some(lfs_size)) => lfs_size.as_u64(),
            _ => field("size").and_then(serde_json::Value::as_u64),
        };
        assert_eq!(
            Some(file.size),
            size,
            "fuzz invariant: size of {:?} not as listed",
            file.path
        );
        assert_eq!(
            Some(file.oid.as_str()),
            field("blob_id").and_then(serde_json::Value::as_str)
        );
        assert!(
            is_lower_hex(&file.oid, 40),
            "fuzz invariant: blob id {:?}",
            file.oid
        );
        assert_eq!(file.lfs_sha256.as_deref(), lfs_sha256);
        if let Some(xet) = field("xet_hash") {
            assert!(
                xet.as_str()
                    .is_some_and(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit())),
                "fuzz invariant: accepted the xet_hash {xet} of {:?}; huggingface_hub ignores a listing with one that is not 64 hex digits",
                file.path
            );
        }
        if let Some(sha) = &file.lfs_sha256 {
            assert!(is_lower_hex(sha, 64), "fuzz invariant: lfs_sha256 {sha:?}");
        }
        let pinned = file.pinned();
        assert_eq!(
            (
                pinned.path.as_str(),
                pinned.size_bytes,
                pinned.digest.as_str()
            ),
            (
                file.path.as_str(),
                file.size,
                file.lfs_sha256.as_deref().unwrap_or(&file.oid)
            ),
            "fuzz invariant: the pinned file differs from the listing"
        );
    }
    // The reader's view, written as huggingface_hub's `write_tree_cache` writes it.
    let written = serde_json::json!({
        "format_version": 1,
        "files": files
            .iter()
            .map(|f| {
                let mut entry = serde_json::json!({"size": f.size, "blob_id": f.oid});
                if let Some(sha) = &f.lfs_sha256 {
                    entry["lfs_sha256"] = sha.as_str().into();
                    entry["lfs_size"] = f.size.into();
                }
                (f.path.clone(), entry)
            })
            .collect::<serde_json::Map<_, _>>(),
    });
    let text = serde_json::to_vec_pretty(&written).expect("fuzz harness: JSON");
    let again = parse_tree_listing(&text).unwrap_or_else(|e| {
        panic!("fuzz invariant: the reader's view, written back, does not parse: {e}")
    });
    assert_eq!(
        again, files,
        "fuzz invariant: parse → write → parse changed the listing"
    );
    Some(files.len())
}

// ------------------------------------------------------------------ shared store .refs

/// huggingface_hub's shared-store manifest (`<store>/<2 hex>/<xet>.refs`): the fuzzer's bytes
/// are the manifest of a store entry two repos link to. Removing repo A's link, then
/// sweeping, may delete the payload only when the manifest names no valid link to it (repo
/// B's link stays valid), touches nothing outside that entry's files, and writes back only
/// lines the manifest had.
pub fn shared_refs(data: &[u8]) {
    let dir = fresh_dir("refs");
    let root = dir.join("hub");
    let xet = format!("ab{}", "0".repeat(62));
    let store = root.join(shared::STORE_DIR);
    let entry = store.join("ab").join(&xet);
    let refs = store.join("ab").join(format!("{xet}.refs"));
    let sha_a = "a".repeat(64);
    let sha_b = "b".repeat(64);
    let setup = || -> std::io::Result<()> {
        fs::create_dir_all(store.join("ab"))?;
        fs::write(store.join(shared::MARKER), "1\n")?;
        fs::write(&entry, b"payload")?;
        fs::write(&refs, data)?;
        fs::write(dir.join("outside"), b"keep")?;
        for (repo, sha) in [("models--o--a", &sha_a), ("models--o--b", &sha_b)] {
            let blobs = root.join(repo).join("blobs");
            fs::create_dir_all(&blobs)?;
            std::os::unix::fs::symlink(format!("../../blobs/ab/{xet}"), blobs.join(sha))?;
        }
        Ok(())
    };
    setup().expect("fuzz harness: build a shared store");
    let link_a = root.join("models--o--a").join("blobs").join(&sha_a);
    let own_b = format!("models--o--b/blobs/{sha_b}");
    // Whether a manifest line names B's link (by the store's rule: a plain relative path of
    // three normal components).
    let names_b = |line: &str| {
        let path = Path::new(line);
        !path.is_absolute()
            && path.components().all(|c| matches!(c, Component::Normal(_)))
            && path.components().count() == 3
            && root.join(path) == root.join(&own_b)
    };
    let text = std::str::from_utf8(data).ok();
    let b_named = text.is_some_and(|t| t.lines().any(names_b));
    let before = tree_of(&dir);
    assert_eq!(
        shared::shared_target(&link_a).as_deref(),
        Some(entry.as_path())
    );
    let freed = shared::freed_by_removing(&link_a);
    assert!(
        freed == 0 || !b_named,
        "fuzz invariant: removing A would free the payload though the manifest names B's valid link"
    );
    fs::remove_file(&link_a).expect("fuzz harness: remove A's link");
    let swept = shared::sweep(&root, &entry);
    let after = tree_of(&dir);
    let payload_gone = !entry.exists();
    let rewritten = fs::read_to_string(&refs).ok();
    let _ = fs::remove_dir_all(&dir);
    if payload_gone {
        assert!(
            !b_named,
            "fuzz invariant: swept a payload that B's valid link needs"
        );
        assert!(
            text.is_some(),
            "fuzz invariant: swept with an unreadable manifest"
        );
    }
    assert!(
        swept.is_ok() || !payload_gone,
        "fuzz invariant: a failed sweep deleted the payload"
    );
    let store_entry = |p: &PathBuf| p.starts_with(Path::new("hub/blobs/ab"));
    for path in before.difference(&after) {
        assert!(
            store_entry(path) || path.ends_with(&sha_a),
            "fuzz invariant: the sweep removed {path:?}"
        );
    }
    for path in after.difference(&before) {
        assert!(
            store_entry(path),
            "fuzz invariant: the sweep created {path:?}"
        );
    }
    if let (Some(new), Some(old)) = (rewritten, text) {
        if new != old {
            let old: BTreeSet<&str> = old.lines().collect();
            for line in new.lines() {
                assert!(
                    old.contains(line),
                    "fuzz invariant: the sweep wrote the reference {line:?} the manifest lacked"
                );
            }
        }
    }
}

// ------------------------------------------------------------------ bundle import

/// Bundle import through the public API: every input is a whole tar archive imported into a
/// fresh cache, against one manifest. Whatever the archive holds, afterwards every blob
/// hashes to its name, every snapshot entry resolves inside the cache to such a blob, nothing
/// appeared outside the cache, and a failed import placed no snapshot entry.
pub struct BundleImporter {
    runtime: tokio::runtime::Runtime,
    manager: ModelArtifactManager,
    dir: PathBuf,
}

impl BundleImporter {
    /// An importer whose cache uses the manifest `manifest_json` (the one the seed bundles
    /// were exported with). One manager serves every input (building one costs more than an
    /// import); the cache is emptied after each.
    pub fn new(manifest_json: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fuzz harness: a runtime");
        let dir = fresh_dir("bundle");
        let manifest_path = dir.join("manifest.json");
        fs::write(&manifest_path, manifest_json).expect("fuzz harness: write the manifest");
        let config = ArtifactManagerConfig {
            cache_dir: dir.join("hub"),
            manifest_path: Some(manifest_path),
            endpoint: "http://127.0.0.1:9".to_owned(),
            offline: true,
            implicit_token: false,
            hf_token: None,
            check_disk_space: false,
            ..ArtifactManagerConfig::from_env()
        };
        let manager = ModelArtifactManager::new(config).expect("fuzz harness: a manager");
        BundleImporter {
            runtime,
            manager,
            dir,
        }
    }

    /// Imports `data` as a bundle into the (empty) cache and checks the cache; returns
    /// whether the import succeeded.
    pub fn import(&self, data: &[u8]) -> bool {
        let cache = self.dir.join("hub");
        let bundle = self.dir.join("bundle.tar");
        fs::write(&bundle, data).expect("fuzz harness: write the bundle");
        let result = self.runtime.block_on(self.manager.import_bundle(&bundle));
        let problems = check_cache(&cache);
        let outside: Vec<PathBuf> = tree_of(&self.dir)
            .into_iter()
            .filter(|p| {
                !p.starts_with("hub")
                    && p != Path::new("bundle.tar")
                    && p != Path::new("manifest.json")
            })
            .collect();
        let snapshots = tree_of(&cache)
            .into_iter()
            .filter(|p| {
                p.components()
                    .nth(1)
                    .is_some_and(|c| c.as_os_str() == "snapshots")
            })
            .count();
        let _ = fs::remove_dir_all(&cache);
        for path in &outside {
            let _ = fs::remove_file(self.dir.join(path));
        }
        assert!(
            problems.is_empty(),
            "fuzz invariant: {}",
            problems.join("; ")
        );
        assert!(
            outside.is_empty(),
            "fuzz invariant: import wrote outside the cache: {outside:?}"
        );
        if result.is_err() {
            assert_eq!(
                snapshots, 0,
                "fuzz invariant: a failed import placed snapshot entries"
            );
        }
        result.is_ok()
    }
}

/// Broken promises of a cache: a blob whose bytes do not hash to its (SHA-256) name, a
/// snapshot entry that is not a link to such a blob inside the cache or a verified copy.
fn check_cache(cache: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for relative in tree_of(cache) {
        let path = cache.join(&relative);
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match parts.get(1).map(String::as_str) {
            Some("blobs") if parts.len() == 3 => {
                let name = &parts[2];
                let final_name = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
                if !final_name {
                    continue;
                }
                match fs::read(&path) {
                    Ok(bytes) if sha256_hex(&bytes) == *name => {}
                    Ok(_) => problems.push(format!("blob {relative:?} does not hash to its name")),
                    Err(e) => problems.push(format!("blob {relative:?} unreadable: {e}")),
                }
            }
            Some("snapshots") => {
                let Ok(meta) = path.symlink_metadata() else {
                    continue;
                };
                if !meta.file_type().is_symlink() {
                    problems.push(format!("snapshot entry {relative:?} is not a link"));
                    continue;
                }
                let Ok(target) = fs::read_link(&path) else {
                    continue;
                };
                let parent = path.parent().unwrap_or(cache);
                let blobs = cache.join(&parts[0]).join("blobs");
                let resolved = lexical(&parent.join(&target));
                if target.is_absolute() || !stays_below(&blobs, &resolved) {
                    problems.push(format!("snapshot entry {relative:?} points to {target:?}"));
                    continue;
                }
                let name = resolved
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match fs::read(&resolved) {
                    Ok(bytes) if name.len() != 64 || sha256_hex(&bytes) == name => {}
                    Ok(_) => {
                        problems.push(format!("snapshot entry {relative:?} holds wrong bytes"))
                    }
                    Err(e) => problems.push(format!("snapshot entry {relative:?} dangles: {e}")),
                }
            }
            _ => {}
        }
    }
    problems
}

// ------------------------------------------------------------------ OCI manifests

/// A manifest a registry sent for a model's tag (`--mirror oci://`): `parse_manifest` bounds
/// it (schema 2, SHA-256 digests, at most `MAX_LAYERS` layers); what it accepts serializes and
/// parses back to the same value; every file `model_files` yields is a safe repo path whose
/// snapshot entry stays inside the snapshot folder, with a SHA-256 digest.
pub fn oci_manifest(data: &[u8]) {
    use super::remote::oci::modelpack::{
        is_sha256_digest, model_files, parse_manifest, MAX_LAYERS,
    };
    let Ok(manifest) = parse_manifest(data) else {
        return;
    };
    assert!(
        manifest.layers.len() <= MAX_LAYERS,
        "fuzz invariant: {} layers accepted",
        manifest.layers.len()
    );
    let again = serde_json::to_vec(&manifest).expect("fuzz harness: serialize a manifest");
    assert_eq!(
        parse_manifest(&again).as_ref(),
        Ok(&manifest),
        "fuzz invariant: an accepted manifest does not survive its own serialization"
    );
    let layout = CacheLayout::new("/cache");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = layout.snapshot_dir("org/model", commit);
    for file in model_files(&manifest) {
        let entry = layout.snapshot_path("org/model", commit, &file.path);
        assert!(
            validate_filename(&file.path).is_ok() && stays_below(&snapshot, &entry),
            "fuzz invariant: the registry's manifest names {:?}; its entry would be {entry:?}",
            file.path
        );
        assert!(
            is_sha256_digest(&file.digest),
            "fuzz invariant: digest {:?}",
            file.digest
        );
    }
}

/// A registry's `WWW-Authenticate` (the fuzzer's bytes as the header value): a bearer
/// challenge names an `http(s)` realm, never another scheme where credentials would go.
pub fn registry_challenge(data: &[u8]) {
    use super::remote::oci::auth::{parse_challenge, Challenge};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(text) {
        assert!(
            realm.starts_with("https://") || realm.starts_with("http://"),
            "fuzz invariant: realm {realm:?}"
        );
    }
}

// ------------------------------------------------------------------ signature bundles

/// The payload of a bundle's DSSE envelope, decoded, read here independently of the
/// signature module (serde's generic JSON and the base64 spellings protobuf JSON allows).
fn envelope_payload(bundle_json: &[u8]) -> Option<Vec<u8>> {
    use data_encoding::{BASE64, BASE64URL, BASE64URL_NOPAD, BASE64_NOPAD};
    #[derive(serde::Deserialize)]
    struct Payload {
        payload: String,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "dsseEnvelope")]
        dsse_envelope: Payload,
    }
    let value = python_json(bundle_json).ok()?;
    let text = match &value {
        Some(value) => value
            .get("dsseEnvelope")?
            .get("payload")?
            .as_str()?
            .to_owned(),
        // A number `Value` cannot hold: the payload read with the harness's own struct.
        None if bundle_json.trim_ascii_start().starts_with(b"{") => {
            serde_json::from_slice::<Envelope>(bundle_json)
                .ok()?
                .dsse_envelope
                .payload
        }
        None => return None,
    };
    let text = text.trim();
    [BASE64, BASE64_NOPAD, BASE64URL, BASE64URL_NOPAD]
        .iter()
        .find_map(|encoding| encoding.decode(text.as_bytes()).ok())
}

/// A file digest no signature lists (all zeros).
const UNSIGNED_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// OpenSSF model signature bundles through [`verify_model_signature`], the whole decision
/// (bundle shape, signer, DSSE signature, statement), under two trusted signers: a bare EC
/// key and a certificate root with an identity. The fuzzer mutates valid bundles (the OMS
/// test vectors); the promise is that nothing the signature covers can change and still
/// verify: whenever a verifier says "verified", the input's signed statement is
/// byte-identical to that of a seed that verified under the same verifier, the verdict
/// (signer, model name, files) is that seed's, and the statement still binds its files (a
/// listed file with another digest, or a file it does not list, is refused).
pub struct SignatureChecker {
    verifiers: Vec<(&'static str, SignatureVerifier)>,
    /// For each verifier (by index): the statements of the seeds it verified, and its verdict.
    valid: Vec<Vec<(Vec<u8>, VerifiedSignature)>>,
}

impl SignatureChecker {
    /// The checker for bundles signed by the key in `public_key_pem` or under the root in
    /// `root_pem` for `identity`. `seeds` are valid bundles: each that verifies (with an
    /// empty file set, so that only the signer and the statement decide) is recorded as a
    /// statement the verifier may accept. Panics when a verifier verifies no seed (the
    /// check would then hold vacuously).
    pub fn new(public_key_pem: &[u8], root_pem: &[u8], identity: &str, seeds: &[&[u8]]) -> Self {
        let verifiers = vec![
            (
                "public key",
                SignatureVerifier::public_key_pem(public_key_pem, "fuzz-key.pem")
                    .expect("fuzz harness: the public key"),
            ),
            (
                "certificate root",
                SignatureVerifier::certificate_root_pem(root_pem, "fuzz-root.pem", identity)
                    .expect("fuzz harness: the root certificate"),
            ),
        ];
        let valid: Vec<Vec<(Vec<u8>, VerifiedSignature)>> = verifiers
            .iter()
            .map(|(_, verifier)| {
                seeds
                    .iter()
                    .filter_map(|seed| {
                        let verdict = verify_model_signature(seed, verifier, &[]).ok()?;
                        let payload =
                            envelope_payload(seed).expect("fuzz harness: a seed's payload");
                        Some((payload, verdict))
                    })
                    .collect()
            })
            .collect();
        for ((label, _), accepted) in verifiers.iter().zip(&valid) {
            assert!(
                !accepted.is_empty(),
                "fuzz harness: no seed verifies under the {label}"
            );
        }
        SignatureChecker { verifiers, valid }
    }

    /// Verifies `data` as a bundle under each trusted signer and checks the promise above;
    /// returns how many verifiers said "verified".
    pub fn check(&self, data: &[u8]) -> usize {
        let mut verified = 0;
        for ((label, verifier), accepted) in self.verifiers.iter().zip(&self.valid) {
            let Ok(verdict) = verify_model_signature(data, verifier, &[]) else {
                continue;
            };
            verified += 1;
            let payload = envelope_payload(data).unwrap_or_else(|| {
                panic!("fuzz invariant: verified under the {label} a bundle that is not a JSON object in UTF-8 (the official tool refuses it) or has no readable payload")
            });
            let Some((_, expected)) = accepted.iter().find(|(p, _)| *p == payload) else {
                panic!(
                    "fuzz invariant: verified under the {label} a statement no valid seed signed: {}",
                    String::from_utf8_lossy(&payload)
                );
            };
            assert_eq!(
                &verdict, expected,
                "fuzz invariant: the same statement gives another verdict under the {label}"
            );
            for name in &verdict.unused_signed_files {
                assert!(
                    verify_model_signature(data, verifier, &[(name, UNSIGNED_DIGEST)]).is_err(),
                    "fuzz invariant: {name:?} with a digest the statement does not give verified"
                );
            }
            assert!(
                verify_model_signature(data, verifier, &[("fuzz-unsigned.bin", UNSIGNED_DIGEST)])
                    .is_err(),
                "fuzz invariant: a file the statement does not list verified"
            );
        }
        verified
    }
}

// ------------------------------------------------------------------ Range round trip

/// What a server makes of a `Range` request header for a representation of `total` bytes
/// (the Hub emulator's `RangeRequest`, seen from here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRange {
    /// No usable range: 200 with the whole file.
    Full,
    /// 206 with this inclusive byte span.
    Span(u64, u64),
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

/// The `Range` header our client sends for bytes `start..` (through `end`, inclusive, when
/// given), as `remote/client.rs` (`get_range_with`) writes it: none for the whole file.
fn client_range_header(start: u64, end: Option<u64>) -> Option<String> {
    (start > 0 || end.is_some()).then(|| {
        let end = end.map(|e| e.to_string()).unwrap_or_default();
        format!("bytes={start}-{end}")
    })
}

/// The `Content-Range` the Hub emulator sends with its answer (`routes.rs`, file answers):
/// `bytes a-b/total` with a 206, `bytes */total` with a 416, none with a 200.
fn emulator_content_range(answer: ServerRange, total: u64) -> Option<String> {
    match answer {
        ServerRange::Full => None,
        ServerRange::Span(start, end) => Some(format!("bytes {start}-{end}/{total}")),
        ServerRange::Unsatisfiable => Some(format!("bytes */{total}")),
    }
}

/// Our `Content-Range` parser on one header value.
fn our_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let mut headers = HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_RANGE,
        HeaderValue::from_str(value).ok()?,
    );
    parse_content_range(&headers)
}

/// Checks that our `Content-Range` parser reads, from what the emulator sends for `answer`,
/// exactly its span (a 206), and no span from a 416's `bytes */total`.
fn content_range_agrees(answer: ServerRange, total: u64) {
    let sent = emulator_content_range(answer, total);
    let read = sent.as_deref().and_then(our_content_range);
    match answer {
        ServerRange::Full => {}
        ServerRange::Span(start, end) => assert_eq!(
            read,
            Some((start, end, Some(total))),
            "fuzz invariant: the emulator sends {sent:?}, we read {read:?}"
        ),
        ServerRange::Unsatisfiable => assert_eq!(
            read, None,
            "fuzz invariant: we read a span from the 416's {sent:?}"
        ),
    }
}

/// The `Range` round trip between our client and a server's parser (`server`: the Hub
/// emulator's `parse_range` in the fuzz target and the tests). Input: a flag byte (bit 0: an
/// end is asked; bit 1: small numbers), then `start`, the span's length and the file's size
/// as little-endian `u64`s, then any text. The header our client writes for that request
/// must mean to the server exactly the span the client wants (the whole file without a
/// header; from `start` through `min(end, size - 1)`; 416 when `start` is past the end), and
/// our `Content-Range` parser must read back from the emulator's answer that same span. The
/// remaining text, as a `Range` header of a client we do not control, must give the server a
/// span inside the file that we read back the same way.
pub fn range_round_trip(data: &[u8], server: impl Fn(&str, u64) -> ServerRange) {
    let mut input = Bytes(data);
    let flags = input.u8();
    let (mut start, mut length, mut total) = (input.u64(), input.u64(), input.u64());
    if flags & 2 != 0 {
        start %= 1 << 20;
        length %= 1 << 20;
        total %= 1 << 20;
    }
    let end = (flags & 1 != 0).then(|| start.saturating_add(length));
    let header = client_range_header(start, end);
    let answer = header
        .as_deref()
        .map_or(ServerRange::Full, |h| server(h, total));
    let expected = match header {
        None => ServerRange::Full,
        Some(_) if start >= total => ServerRange::Unsatisfiable,
        Some(_) => ServerRange::Span(start, end.unwrap_or(u64::MAX).min(total - 1)),
    };
    assert_eq!(
        answer, expected,
        "fuzz invariant: the server reads our {header:?} for a file of {total} bytes as {answer:?}"
    );
    content_range_agrees(answer, total);
    if let Ok(text) = std::str::from_utf8(input.0) {
        let answer = server(text, total);
        if let ServerRange::Span(first, last) = answer {
            assert!(
                first <= last && last < total,
                "fuzz invariant: {text:?} gives the span {first}-{last} of a file of {total} bytes"
            );
        }
        content_range_agrees(answer, total);
    }
}
