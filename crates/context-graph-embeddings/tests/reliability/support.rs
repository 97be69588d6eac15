//! Fixtures of the reliability suite (its own copy, independent of `tests/it`): a Hub
//! emulator serving synthetic models, a 12-entry manifest pointing at them, manager
//! configurations with private caches and fast retries, an independent checker of the cache
//! on disk, child processes, and the evidence lines that `scripts/reliability-report` collects.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::test_support::VerificationStamp;
use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ModelArtifactManager, RetryPolicy,
};
use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{HubBuilder, HubEmulator, RepoSpec, RequestRecord};

/// The environment variable that turns the test binary into a child process (see `child.rs`).
pub(crate) const CHILD_ENV: &str = "CG_RELIABILITY_CHILD";

/// The full name of the child entry point, for `--exact`.
pub(crate) const CHILD_TEST: &str = "child::child_process";

#[path = "../common/served.rs"]
mod served;

use served::{serve, Served, Serving};
pub(crate) use served::{Model, ServedFile};

impl ServedFile {
    /// `pinned` or `unpinned`, for evidence lines.
    pub(crate) fn kind(&self) -> &'static str {
        if self.pinned {
            "pinned"
        } else {
            "unpinned"
        }
    }
}

/// A model whose manifest entry pins hash and size.
pub(crate) fn pinned(id: ModelId, size: u64) -> Model {
    Model {
        id,
        size,
        pinned: true,
        on_branch: false,
    }
}

/// A model whose manifest entry has no hash and no size (the Hub's advertised hash is used).
pub(crate) fn unpinned(id: ModelId, size: u64) -> Model {
    Model {
        id,
        size,
        pinned: false,
        on_branch: false,
    }
}

impl Model {
    /// The manifest asks for the branch `main` rather than the commit.
    pub(crate) fn on_branch(mut self) -> Self {
        self.on_branch = true;
        self
    }
}

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// LFS files redirect to the CDN host (default), or are served by the resolve URL itself.
    pub cdn_redirect: bool,
    /// Gate every repo behind these tokens.
    pub gated: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cdn_redirect: true,
            gated: None,
        }
    }
}

/// A running emulator plus a manifest and a working folder for one test.
pub(crate) struct Fixture(Served);

impl std::ops::Deref for Fixture {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.0
    }
}

impl Fixture {
    /// Serves each model from its own repo `test-org/<name>`, LFS through the CDN.
    pub(crate) fn new(models: &[Model]) -> Fixture {
        Self::with_options(models, Options::default())
    }

    /// Like [`new`](Self::new) with emulator options.
    pub(crate) fn with_options(models: &[Model], options: Options) -> Fixture {
        let gate = |spec: RepoSpec, _| match &options.gated {
            Some(tokens) => {
                let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
                spec.gated(&tokens)
            }
            None => spec,
        };
        let served = serve(
            models,
            Serving {
                seed_base: 7000,
                weights_name: |_| "model.safetensors",
                adjust: &gate,
                builder: HubBuilder::new().cdn_redirect(options.cdn_redirect),
            },
        );
        Fixture(served)
    }

    /// Writes the manifest, letting `edit` change each artifact entry.
    pub(crate) fn write_manifest(&self, edit: impl Fn(ModelId, &mut serde_json::Value)) {
        served::write_manifest(&self.manifest_path, &self.files, edit);
    }

    /// The default cache of this fixture.
    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    /// A fresh, empty cache folder path inside the fixture folder.
    pub(crate) fn fresh_cache(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("hub")
    }

    /// A configuration against the emulator: the default cache, no implicit token, fast retries.
    pub(crate) fn config(&self) -> ArtifactManagerConfig {
        self.config_at(&self.cache_dir())
    }

    /// [`config`](Self::config) with another cache folder.
    pub(crate) fn config_at(&self, cache_dir: &Path) -> ArtifactManagerConfig {
        ArtifactManagerConfig {
            cache_dir: cache_dir.to_path_buf(),
            endpoint: self.hub.endpoint(),
            manifest_path: Some(self.manifest_path.clone()),
            hf_token: None,
            implicit_token: false,
            offline: false,
            use_symlinks: true,
            verify_checksums: true,
            check_disk_space: true,
            max_cache_bytes: None,
            max_concurrent_downloads: 4,
            retry_attempts: 4,
            download_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            metadata_timeout: Duration::from_secs(5),
            retry_policy: RetryPolicy {
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                max_server_delay: Duration::from_millis(50),
            },
            progress_interval: Duration::from_millis(1),
            ..ArtifactManagerConfig::from_env()
        }
    }

    pub(crate) fn manager(&self) -> ModelArtifactManager {
        ModelArtifactManager::new(self.config()).expect("manager")
    }

    pub(crate) fn manager_at(&self, cache_dir: &Path) -> ModelArtifactManager {
        ModelArtifactManager::new(self.config_at(cache_dir)).expect("manager")
    }

    pub(crate) fn file(&self, id: ModelId) -> &ServedFile {
        &self.files[&id]
    }

    pub(crate) fn repo_dir_in(&self, cache: &Path, id: ModelId) -> PathBuf {
        cache.join(format!(
            "models--{}",
            self.file(id).repo_id.replace('/', "--")
        ))
    }

    pub(crate) fn blobs_dir_in(&self, cache: &Path, id: ModelId) -> PathBuf {
        self.repo_dir_in(cache, id).join("blobs")
    }

    pub(crate) fn blob_path_in(&self, cache: &Path, id: ModelId) -> PathBuf {
        self.blobs_dir_in(cache, id).join(&self.file(id).sha256)
    }

    /// The snapshot entry at the commit the fixture started with.
    pub(crate) fn snapshot_path_in(&self, cache: &Path, id: ModelId) -> PathBuf {
        let f = self.file(id);
        self.repo_dir_in(cache, id)
            .join("snapshots")
            .join(&f.commit)
            .join(&f.filename)
    }

    /// GETs of a blob's bytes (by SHA-256 on the CDN, or by file name on the Hub) that were
    /// answered with file bytes (200 or 206).
    pub(crate) fn byte_gets(&self, id: ModelId) -> Vec<RequestRecord> {
        let f = self.file(id);
        let repo_path = format!("/{}/resolve/", f.repo_id);
        self.hub
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && (r.status == 200 || r.status == 206))
            .filter(|r| {
                r.path.contains(&f.sha256)
                    || (r.path.starts_with(&repo_path) && r.path.ends_with(&f.filename))
            })
            .collect()
    }

    /// Sum of file bytes the emulator sent for a model (200/206 GETs).
    pub(crate) fn bytes_sent(&self, id: ModelId) -> u64 {
        self.byte_gets(id).iter().map(|r| r.body_bytes_sent).sum()
    }

    /// The SHA-256 of every content this fixture serves (for the cache checker).
    pub(crate) fn known_hashes(&self) -> HashSet<String> {
        self.files.values().map(|f| f.sha256.clone()).collect()
    }

    /// A child process specification (see `child.rs`) for a cache folder.
    pub(crate) fn child_spec(&self, cache: &Path, op: &str) -> serde_json::Value {
        serde_json::json!({
            "op": op,
            "cache_dir": cache,
            "endpoint": self.hub.endpoint(),
            "manifest": self.manifest_path,
        })
    }

    /// Replaces this run's temporary paths and ports in a text, so evidence reads the same
    /// on every run.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact_with(text, self.dir.path(), &self.hub)
    }
}

/// [`Fixture::redact`] for any folder and emulator.
pub(crate) fn redact_with(text: &str, dir: &Path, hub: &HubEmulator) -> String {
    let mut out = text.replace(&dir.display().to_string(), "$TMP");
    out = out.replace(&hub.endpoint(), "http://hub");
    out = out.replace(&hub.cdn_origin(), "http://cdn");
    out = out.replace(&format!(":{}", hub.hub_port()), ":HUBPORT");
    out = out.replace(&format!(":{}", hub.cdn_port()), ":CDNPORT");
    // Random parts of partial file names (`<etag>.<pid>-<8 hex>.incomplete`).
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(pos) = rest.find(".incomplete") {
        let (before, after) = rest.split_at(pos);
        let start = before
            .rfind('.')
            .filter(|dot| {
                let middle = &before[dot + 1..];
                let hex = middle.rsplit('-').next().unwrap_or_default();
                !middle.is_empty()
                    && hex.len() == 8
                    && middle.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            })
            .unwrap_or(before.len());
        result.push_str(&before[..start]);
        if start < before.len() {
            result.push_str(".XXXXXXXX");
        }
        result.push_str(".incomplete");
        rest = &after[".incomplete".len()..];
    }
    result.push_str(rest);
    result
}

/// SHA-256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the cache holds, read independently of the library, and every broken promise found.
#[derive(Debug, Default)]
pub(crate) struct CacheCheck {
    /// Complete blobs (path, size).
    pub blobs: Vec<(PathBuf, u64)>,
    /// Unfinished downloads (path, size).
    pub partials: Vec<(PathBuf, u64)>,
    /// Temporary files (`*.tmp`) anywhere in the cache.
    pub temps: Vec<PathBuf>,
    /// Snapshot entries.
    pub snapshots: Vec<PathBuf>,
    /// Progress records of parallel downloads (`<partial>.ranges`).
    pub sidecars: Vec<PathBuf>,
    /// Verification stamps.
    pub stamps: usize,
    /// Lock files.
    pub locks: usize,
    /// Every place where a final path holds bytes that are not verified.
    pub violations: Vec<String>,
}

impl CacheCheck {
    pub(crate) fn partial_bytes(&self) -> u64 {
        self.partials.iter().map(|p| p.1).sum()
    }

    /// Panics with every violation, naming the situation.
    pub(crate) fn assert_sound(&self, situation: &str) {
        assert!(
            self.violations.is_empty(),
            "{situation}: a final path holds unverified or wrong bytes:\n  {}",
            self.violations.join("\n  ")
        );
    }

    /// Short description of what is on disk, for evidence lines.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} blob(s) all hashing to their names, {} snapshot entr{} all resolving to verified blobs, {} partial(s) ({} B), {} temp file(s)",
            self.blobs.len(),
            self.snapshots.len(),
            if self.snapshots.len() == 1 { "y" } else { "ies" },
            self.partials.len(),
            self.partial_bytes(),
            self.temps.len()
        )
    }
}

/// Walks a cache (never following links) and checks the promises of the layout: every blob
/// hashes to its name, every snapshot entry resolves inside the cache to such a blob (or is a
/// copy of a known content), every stamp that describes a file vouches for that file's real
/// hash, and no final path is a link out of the cache.
pub(crate) fn check_cache(root: &Path, known: &HashSet<String>) -> CacheCheck {
    let mut check = CacheCheck::default();
    let Ok(entries) = fs::read_dir(root) else {
        return check;
    };
    let mut stamps: Vec<VerificationStamp> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if name == ".locks" {
            walk(&path, &mut |p, m| {
                if m.is_file() {
                    check.locks += 1;
                }
                if name_of(p).ends_with(".tmp") {
                    check.temps.push(p.to_path_buf());
                }
            });
            continue;
        }
        if name.ends_with(".tmp") {
            check.temps.push(path.clone());
        }
        if !name.starts_with("models--") || !meta.is_dir() {
            continue;
        }
        // blobs/
        let blobs = path.join("blobs");
        if let Ok(blob_entries) = fs::read_dir(&blobs) {
            for blob in blob_entries.flatten() {
                let blob_path = blob.path();
                let blob_name = blob.file_name().to_string_lossy().into_owned();
                let Ok(meta) = blob_path.symlink_metadata() else {
                    continue;
                };
                if blob_name.ends_with(".incomplete") {
                    check.partials.push((blob_path, meta.len()));
                    continue;
                }
                if blob_name.ends_with(".incomplete.ranges") {
                    // Per-chunk progress of a parallel download, beside its partial.
                    check.sidecars.push(blob_path);
                    continue;
                }
                if blob_name.ends_with(".tmp") {
                    check.temps.push(blob_path);
                    continue;
                }
                if !meta.is_file() {
                    check.violations.push(format!(
                        "blob {} is not a regular file",
                        blob_path.display()
                    ));
                    continue;
                }
                match sha256_file(&blob_path) {
                    Ok(actual) if is_hex(&blob_name, 64) && actual != blob_name => {
                        check.violations.push(format!(
                            "blob {} holds bytes hashing to {actual}",
                            blob_path.display()
                        ))
                    }
                    Ok(_) => check.blobs.push((blob_path, meta.len())),
                    Err(e) => check
                        .violations
                        .push(format!("blob {} unreadable: {e}", blob_path.display())),
                }
            }
        }
        // snapshots/
        let snapshots = path.join("snapshots");
        let mut entries_found: Vec<PathBuf> = Vec::new();
        walk(&snapshots, &mut |p, m| {
            if name_of(p).ends_with(".tmp") {
                check.temps.push(p.to_path_buf());
            } else if !m.is_dir() {
                entries_found.push(p.to_path_buf());
            }
        });
        for entry in entries_found {
            let meta = entry.symlink_metadata().unwrap();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&entry).unwrap();
                let resolved = entry.parent().unwrap().join(&target);
                let inside =
                    !target.is_absolute() && normalize(&resolved).starts_with(normalize(&blobs));
                if !inside {
                    check.violations.push(format!(
                        "snapshot entry {} links outside the cache's blobs: {}",
                        entry.display(),
                        target.display()
                    ));
                    continue;
                }
                let blob_name = name_of(&target);
                match sha256_file(&resolved) {
                    Ok(actual) if actual == blob_name || !is_hex(&blob_name, 64) => {}
                    Ok(actual) => check.violations.push(format!(
                        "snapshot entry {} resolves to bytes hashing to {actual}",
                        entry.display()
                    )),
                    Err(e) => check.violations.push(format!(
                        "snapshot entry {} does not resolve to a blob: {e}",
                        entry.display()
                    )),
                }
            } else if meta.is_file() {
                match sha256_file(&entry) {
                    Ok(actual) if known.contains(&actual) => {}
                    Ok(actual) => check.violations.push(format!(
                        "snapshot copy {} holds unknown bytes hashing to {actual}",
                        entry.display()
                    )),
                    Err(e) => check
                        .violations
                        .push(format!("snapshot copy {} unreadable: {e}", entry.display())),
                }
            }
            check.snapshots.push(entry);
        }
        // stamps
        let verified = path.join(".cg-models-v1").join("verified");
        walk(&verified, &mut |p, m| {
            if name_of(p).ends_with(".tmp") {
                check.temps.push(p.to_path_buf());
            } else if m.is_file() {
                if let Some(stamp) = VerificationStamp::read(p) {
                    stamps.push(stamp);
                }
            }
        });
        walk(&path.join("refs"), &mut |p, _| {
            if name_of(p).ends_with(".tmp") {
                check.temps.push(p.to_path_buf());
            }
        });
    }
    check.stamps = stamps.len();
    for stamp in &stamps {
        if !known.contains(&stamp.sha256) {
            check
                .violations
                .push(format!("a stamp vouches for unknown hash {}", stamp.sha256));
        }
        for entry in &check.snapshots {
            if stamp.is_valid_for(entry, None) {
                match sha256_file(entry) {
                    Ok(actual) if actual == stamp.sha256 => {}
                    other => check.violations.push(format!(
                        "stamp vouches for {} as {} but it is {other:?}",
                        entry.display(),
                        stamp.sha256
                    )),
                }
            }
        }
    }
    check
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Visits every entry below `dir`, never following links.
pub(crate) fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        visit(&path, &meta);
        if meta.is_dir() {
            walk(&path, visit);
        }
    }
}

/// Lexical normalisation (`a/b/../c` → `a/c`), without touching the file system.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is on disk for one model, checked, in words.
pub(crate) fn describe_model(fx: &Fixture, cache: &Path, id: ModelId) -> String {
    let f = fx.file(id);
    let blob = fx.blob_path_in(cache, id);
    let snapshot = fx.snapshot_path_in(cache, id);
    let blob_text = match fs::read(&blob) {
        Ok(bytes) if bytes == f.content => "blob = served bytes (SHA-256 verified)".to_owned(),
        Ok(_) => "blob holds OTHER bytes".to_owned(),
        Err(_) => "no blob".to_owned(),
    };
    let snapshot_text = match (snapshot.symlink_metadata(), fs::read(&snapshot)) {
        (Ok(_), Ok(bytes)) if bytes == f.content => "snapshot entry → that blob".to_owned(),
        (Ok(_), Ok(_)) => "snapshot entry with OTHER bytes".to_owned(),
        (Ok(_), Err(_)) => "dangling snapshot entry".to_owned(),
        (Err(_), _) => "no snapshot entry".to_owned(),
    };
    let partials: Vec<u64> = fs::read_dir(fx.blobs_dir_in(cache, id))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .collect()
        })
        .unwrap_or_default();
    let partial_text = match partials.as_slice() {
        [] => "no partial".to_owned(),
        [one] => format!("partial of {one} B kept for resume"),
        many => format!("{} partials", many.len()),
    };
    format!("{blob_text}; {snapshot_text}; {partial_text}")
}

/// Asserts the promise for one model after any run: a verified file equal to the served bytes,
/// or nothing at its final paths.
pub(crate) fn assert_model_state(
    fx: &Fixture,
    cache: &Path,
    id: ModelId,
    ok: bool,
    situation: &str,
) {
    let f = fx.file(id);
    let blob = fx.blob_path_in(cache, id);
    let snapshot = fx.snapshot_path_in(cache, id);
    if ok {
        assert_eq!(
            fs::read(&snapshot).ok().as_deref(),
            Some(f.content.as_slice()),
            "{situation}: {id} reported ready but the snapshot does not hold the served bytes"
        );
    }
    if let Ok(bytes) = fs::read(&blob) {
        assert!(
            bytes == f.content,
            "{situation}: blob of {id} holds other bytes"
        );
    }
    if let Ok(bytes) = fs::read(&snapshot) {
        assert!(
            bytes == f.content,
            "{situation}: snapshot of {id} holds other bytes"
        );
    }
}

/// The per-model outcome of a batch.
pub(crate) fn per_model(result: &Result<(), EmbeddingError>, id: ModelId) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(EmbeddingError::DownloadsFailed(failures)) => {
            match failures.iter().find(|(m, _)| *m == id) {
                Some((_, error)) => Err(error.to_string()),
                None => Ok(()),
            }
        }
        Err(other) => Err(other.to_string()),
    }
}

/// The error of one model in a batch result, if it failed.
pub(crate) fn model_error(
    result: &Result<(), EmbeddingError>,
    id: ModelId,
) -> Option<&EmbeddingError> {
    match result {
        Ok(()) => None,
        Err(EmbeddingError::DownloadsFailed(failures)) => {
            failures.iter().find(|(m, _)| *m == id).map(|(_, e)| e)
        }
        Err(other) => Some(other),
    }
}

/// Prints one evidence line for `scripts/reliability-report`:
/// `RELIABILITY|<area>|<fault>|<what the user sees>|<what is on disk>|<test>`.
#[allow(clippy::print_stdout)]
pub(crate) fn evidence(area: &str, fault: &str, sees: &str, disk: &str, test: &str) {
    fn clean(text: &str) -> String {
        let one_line: String = text
            .replace('|', "¦")
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ⏎ ");
        if one_line.chars().count() > 600 {
            let cut: String = one_line.chars().take(600).collect();
            format!("{cut}…")
        } else {
            one_line
        }
    }
    println!(
        "RELIABILITY|{}|{}|{}|{}|{}",
        clean(area),
        clean(fault),
        clean(sees),
        clean(disk),
        clean(test)
    );
}

/// Turns `type_name` of a function defined inside a test into the test's name.
pub(crate) fn clean_test_name(type_name: &str) -> String {
    let trimmed = type_name.strip_suffix("::here").unwrap_or(type_name);
    let parts: Vec<&str> = trimmed
        .split("::")
        .filter(|p| *p != "{{closure}}")
        .collect();
    let parts = match parts.first() {
        Some(&"reliability") => &parts[1..],
        _ => &parts[..],
    };
    parts.join("::")
}

/// A child process: this test binary re-run with [`CHILD_ENV`] set (see `child.rs`).
pub(crate) struct ChildProcess {
    child: std::process::Child,
    pub label: String,
    pub log: PathBuf,
    pub result: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts a child with `spec` (a JSON object; `result` is added) and extra environment.
    pub(crate) fn spawn(
        mut spec: serde_json::Value,
        env: &[(&str, String)],
        dir: &Path,
        label: &str,
    ) -> ChildProcess {
        fs::create_dir_all(dir).unwrap();
        let log = dir.join(format!("{label}.log"));
        let result = dir.join(format!("{label}.result.json"));
        let _ = fs::remove_file(&result);
        spec["result"] = serde_json::json!(result);
        let log_file = fs::File::create(&log).unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                CHILD_TEST,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, spec.to_string())
            .env_remove(context_graph_embeddings::artifacts::test_support::CRASH_AT_ENV)
            .env_remove(context_graph_embeddings::artifacts::test_support::NO_LOCKS_ENV)
            .env_remove("HF_TOKEN")
            .env_remove("HUGGING_FACE_HUB_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("child process starts");
        ChildProcess {
            child,
            label: label.to_owned(),
            log,
            result,
            status: None,
        }
    }

    /// The exit status, if the child has ended.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits at most `timeout`; a child still running then is killed and the test fails.
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "child `{}` still running after {timeout:?} (hang); its output:\n{}",
                    self.label,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the child now (SIGKILL).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }

    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The JSON the child wrote as its result, if any.
    pub(crate) fn result(&self) -> Option<serde_json::Value> {
        let text = fs::read_to_string(&self.result).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The child's output.
    pub(crate) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a status is a death by SIGKILL.
pub(crate) fn killed_by_sigkill(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

/// Polls `condition` every few milliseconds for at most `timeout`.
pub(crate) fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs a future with a deadline; a hang fails the test instead of blocking CI.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?} (hang)"),
    }
}

/// A small deterministic generator for seeded loops (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// The seed of a seeded loop: `RELIABILITY_SEED` if set, else fresh from the clock.
pub(crate) fn seed() -> u64 {
    if let Some(seed) = std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return seed;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42)
}

/// Partial downloads (`*.incomplete`) in a blobs folder, with their sizes.
pub(crate) fn partials_in(blobs_dir: &Path) -> Vec<(PathBuf, u64)> {
    fs::read_dir(blobs_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
                .filter_map(|e| e.metadata().ok().map(|m| (e.path(), m.len())))
                .collect()
        })
        .unwrap_or_default()
}
