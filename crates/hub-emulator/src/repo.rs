//! Repositories: the [`RepoSpec`] builder users describe a repo with, and the in-memory store
//! of hashed files, commits and refs the server answers from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::synth;

/// File extensions stored with git-lfs by [`RepoSpec::file`] (like the Hub's default
/// `.gitattributes`).
pub const LFS_EXTENSIONS: &[&str] = &[
    "safetensors",
    "bin",
    "pt",
    "pth",
    "onnx",
    "gguf",
    "h5",
    "msgpack",
];

/// One model repository with one commit on branch `main`.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    pub(crate) repo_id: String,
    pub(crate) files: Vec<SpecFile>,
    pub(crate) commit_sha: Option<String>,
    pub(crate) extra_refs: Vec<String>,
    pub(crate) accepted_tokens: Option<Vec<String>>,
    /// Paths the derived commit id is computed from (`None` = all files); lets the manifest
    /// add companion files without changing the commit ids it served before.
    pub(crate) commit_paths: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone)]
pub(crate) struct SpecFile {
    pub(crate) path: String,
    pub(crate) content: Bytes,
    pub(crate) lfs: bool,
}

impl RepoSpec {
    /// A repo named `"name"` or `"org/name"`, with no files yet.
    pub fn new(repo_id: &str) -> Self {
        Self {
            repo_id: repo_id.trim_matches('/').to_owned(),
            files: Vec::new(),
            commit_sha: None,
            extra_refs: Vec::new(),
            accepted_tokens: None,
            commit_paths: None,
        }
    }

    /// A repo holding every file under `dir`, at its path relative to `dir` (with `/`), stored
    /// with LFS or as a regular file by the rule of [`RepoSpec::file`]. Symbolic links are not
    /// followed (they are left out), nor is a `.git` folder read. Files are read into memory.
    ///
    /// # Errors
    ///
    /// If `dir` or anything under it cannot be read, or a path is not valid UTF-8.
    pub fn from_dir(repo_id: &str, dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        let mut found = Vec::new();
        collect_files(dir, "", &mut found)?;
        found.sort();
        let mut spec = Self::new(repo_id);
        for rel in found {
            let content = std::fs::read(dir.join(&rel))?;
            spec = spec.file(&rel, content);
        }
        Ok(spec)
    }

    /// Adds a file, stored with LFS when its extension is in [`LFS_EXTENSIONS`], as a regular
    /// git file otherwise. A later file with the same path replaces an earlier one.
    pub fn file(self, path: &str, content: impl Into<Bytes>) -> Self {
        let lfs = is_lfs_path(path);
        self.push(path, content.into(), lfs)
    }

    /// Adds a file stored with LFS (served through the CDN, `X-Linked-Etag` = SHA-256).
    pub fn lfs_file(self, path: &str, content: impl Into<Bytes>) -> Self {
        self.push(path, content.into(), true)
    }

    /// Adds a regular git file (`ETag` = git blob SHA-1, served by the Hub host itself).
    pub fn regular_file(self, path: &str, content: impl Into<Bytes>) -> Self {
        self.push(path, content.into(), false)
    }

    /// Uses this 40-hex commit id instead of one derived from the contents.
    ///
    /// # Panics
    ///
    /// If `sha` is not 40 hex digits.
    pub fn commit_sha(mut self, sha: &str) -> Self {
        assert!(
            is_commit_sha(sha),
            "commit sha must be 40 hex digits, got {sha:?}"
        );
        self.commit_sha = Some(sha.to_ascii_lowercase());
        self
    }

    /// Adds a ref (`"refs/pr/1"`, a tag like `"v1.0"`, another branch) pointing at the commit.
    pub fn extra_ref(mut self, name: &str) -> Self {
        self.extra_refs.push(name.to_owned());
        self
    }

    /// Makes the repo gated: the Hub host answers `401 GatedRepo` without a token and
    /// `403 GatedRepo` with a token not in `accepted_tokens`. The CDN stays open.
    pub fn gated(mut self, accepted_tokens: &[&str]) -> Self {
        self.accepted_tokens = Some(accepted_tokens.iter().map(|t| (*t).to_owned()).collect());
        self
    }

    /// Adds a model sharded like `transformers` saves big ones: `shards` files
    /// `model-0000i-of-0000N.safetensors` of `total_size` bytes together, stored with LFS, and
    /// the regular file `model.safetensors.index.json` mapping each tensor to its shard (see
    /// [`synth::sharded_safetensors`]).
    ///
    /// # Panics
    ///
    /// As [`synth::sharded_safetensors`] does.
    pub fn sharded_safetensors(self, total_size: u64, shards: usize, seed: u64) -> Self {
        let (index, files) = synth::sharded_safetensors(total_size, shards, seed);
        let spec = self.regular_file("model.safetensors.index.json", index);
        files
            .into_iter()
            .fold(spec, |spec, (name, bytes)| spec.lfs_file(&name, bytes))
    }

    /// The repo id this spec describes.
    pub fn repo_id(&self) -> &str {
        &self.repo_id
    }

    fn push(mut self, path: &str, content: Bytes, lfs: bool) -> Self {
        let path = path.trim_matches('/').to_owned();
        self.files.retain(|f| f.path != path);
        self.files.push(SpecFile { path, content, lfs });
        self
    }
}

/// Appends to `out` the paths (relative, `/`-separated) of the regular files under `dir`.
fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().into_string().map_err(|name| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file name is not UTF-8: {name:?} in {}", dir.display()),
            )
        })?;
        let rel = format!("{prefix}{name}");
        // `file_type` does not follow symbolic links.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if name != ".git" {
                collect_files(&entry.path(), &format!("{rel}/"), out)?;
            }
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Whether [`RepoSpec::file`] stores `path` with LFS.
pub fn is_lfs_path(path: &str) -> bool {
    path.rsplit_once('.')
        .is_some_and(|(_, ext)| LFS_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Whether `s` is a full commit id (40 hex digits, either case).
pub fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// LFS metadata of a file.
#[derive(Debug)]
pub(crate) struct LfsInfo {
    pub(crate) sha256: String,
    pub(crate) pointer_size: u64,
}

/// A file at some commit, with every hash the protocol needs computed once.
#[derive(Debug)]
pub(crate) struct FileEntry {
    pub(crate) path: String,
    pub(crate) content: Bytes,
    /// Git blob id of what git stores: the content, or the LFS pointer text.
    pub(crate) git_oid: String,
    pub(crate) lfs: Option<LfsInfo>,
}

impl FileEntry {
    /// Hashes `content`; costs one pass over it.
    pub(crate) fn new(path: String, content: Bytes, lfs: bool) -> Self {
        if lfs {
            let sha256 = synth::sha256_hex(&content);
            let pointer = synth::lfs_pointer(&sha256, content.len() as u64);
            Self {
                path,
                git_oid: synth::git_blob_sha1_hex(pointer.as_bytes()),
                lfs: Some(LfsInfo {
                    sha256,
                    pointer_size: pointer.len() as u64,
                }),
                content,
            }
        } else {
            Self {
                path,
                git_oid: synth::git_blob_sha1_hex(&content),
                lfs: None,
                content,
            }
        }
    }

    /// The etag clients store the blob under: SHA-256 for LFS, git blob SHA-1 otherwise.
    pub(crate) fn etag(&self) -> &str {
        self.lfs.as_ref().map_or(&self.git_oid, |l| &l.sha256)
    }

    pub(crate) fn size(&self) -> u64 {
        self.content.len() as u64
    }
}

/// One commit: a full snapshot of the repo's files.
#[derive(Debug)]
pub(crate) struct Commit {
    pub(crate) sha: String,
    pub(crate) files: BTreeMap<String, Arc<FileEntry>>,
}

/// An entry of a tree listing.
pub(crate) enum TreeEntry<'a> {
    File(&'a FileEntry),
    Directory { path: String, oid: String },
}

impl Commit {
    /// Derives a commit id from the parent and the files, like git would (but not git's format).
    fn derive_sha(
        repo_id: &str,
        parent: Option<&str>,
        files: &BTreeMap<String, Arc<FileEntry>>,
    ) -> String {
        let mut hasher = Sha1::new();
        hasher.update(b"hub-emulator commit\0");
        hasher.update(repo_id.as_bytes());
        hasher.update(b"\0");
        hasher.update(parent.unwrap_or("root").as_bytes());
        for (path, entry) in files {
            hasher.update(b"\0");
            hasher.update(path.as_bytes());
            hasher.update(b"\0");
            hasher.update(entry.etag().as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// Whether `dir` ("" = root) is a directory of this commit.
    pub(crate) fn is_dir(&self, dir: &str) -> bool {
        dir.is_empty() || {
            let prefix = format!("{dir}/");
            self.files
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(p, _)| p.starts_with(&prefix))
        }
    }

    /// Entries under `dir` ("" = root): direct children, or every descendant (directories
    /// included) when `recursive`. `None` when `dir` is not a directory.
    pub(crate) fn tree(&self, dir: &str, recursive: bool) -> Option<Vec<TreeEntry<'_>>> {
        let dir = dir.trim_matches('/');
        if !self.is_dir(dir) {
            return None;
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut dirs = BTreeSet::new();
        let mut files = Vec::new();
        for (path, entry) in self.files.range(prefix.clone()..) {
            let Some(rel) = path.strip_prefix(&prefix) else {
                break;
            };
            let mut ancestors = rel
                .match_indices('/')
                .map(|(i, _)| &path[..prefix.len() + i]);
            if recursive {
                dirs.extend(ancestors);
                files.push(entry.as_ref());
            } else if let Some(first) = ancestors.next() {
                dirs.insert(first);
            } else {
                files.push(entry.as_ref());
            }
        }
        let mut entries: Vec<TreeEntry<'_>> = dirs
            .into_iter()
            .map(|d| TreeEntry::Directory {
                path: d.to_owned(),
                oid: self.dir_oid(d),
            })
            .collect();
        entries.extend(files.into_iter().map(TreeEntry::File));
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        Some(entries)
    }

    /// The entry for one path, file or directory.
    pub(crate) fn entry(&self, path: &str) -> Option<TreeEntry<'_>> {
        let path = path.trim_matches('/');
        if let Some(file) = self.files.get(path) {
            return Some(TreeEntry::File(file));
        }
        (!path.is_empty() && self.is_dir(path)).then(|| TreeEntry::Directory {
            path: path.to_owned(),
            oid: self.dir_oid(path),
        })
    }

    /// A stable id for a directory (a hash of its contents; not git's tree format).
    fn dir_oid(&self, dir: &str) -> String {
        let prefix = format!("{dir}/");
        let mut hasher = Sha1::new();
        for (path, entry) in self.files.range(prefix.clone()..) {
            if !path.starts_with(&prefix) {
                break;
            }
            hasher.update(path.as_bytes());
            hasher.update(entry.git_oid.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

impl TreeEntry<'_> {
    pub(crate) fn path(&self) -> &str {
        match self {
            TreeEntry::File(f) => &f.path,
            TreeEntry::Directory { path, .. } => path,
        }
    }
}

/// A repository: commits by sha, refs by name, and the gate.
#[derive(Debug)]
pub(crate) struct Repo {
    pub(crate) id: String,
    pub(crate) accepted_tokens: Option<Vec<String>>,
    /// Branches and tags, including `main`.
    pub(crate) refs: HashMap<String, String>,
    pub(crate) commits: HashMap<String, Arc<Commit>>,
}

impl Repo {
    /// The commit a revision names: a ref, `refs/heads/<branch>`, or a full commit sha.
    pub(crate) fn resolve(&self, revision: &str) -> Option<&Arc<Commit>> {
        let name = revision.strip_prefix("refs/heads/").unwrap_or(revision);
        if let Some(sha) = self.refs.get(name).or_else(|| self.refs.get(revision)) {
            return self.commits.get(sha);
        }
        if is_commit_sha(revision) {
            return self.commits.get(&revision.to_ascii_lowercase());
        }
        None
    }

    pub(crate) fn main(&self) -> &Arc<Commit> {
        self.resolve("main").expect("every repo has a main branch")
    }
}

/// Why the gate refused a request.
pub(crate) enum GateRefusal {
    /// No token sent: 401.
    NoToken,
    /// A token not on the list: 403.
    WrongToken,
}

impl Repo {
    /// Checks the gate (if any) against the bearer token of the request.
    pub(crate) fn check_gate(&self, token: Option<&str>) -> Result<(), GateRefusal> {
        match (&self.accepted_tokens, token) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(GateRefusal::NoToken),
            (Some(accepted), Some(t)) if accepted.iter().any(|a| a == t) => Ok(()),
            (Some(_), Some(_)) => Err(GateRefusal::WrongToken),
        }
    }
}

/// Everything the server answers from.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) repos: HashMap<String, Repo>,
    /// LFS contents by SHA-256, for the CDN.
    pub(crate) blobs: HashMap<String, Bytes>,
    /// `"{repo_id}/{path}"` of every file with that LFS SHA-256 (for fault targeting).
    pub(crate) blob_paths: HashMap<String, Vec<String>>,
}

impl Store {
    /// Builds the store from specs, hashing all files on all cores.
    pub(crate) fn from_specs(specs: Vec<RepoSpec>) -> Self {
        let jobs: Vec<&SpecFile> = specs.iter().flat_map(|s| &s.files).collect();
        let hashed = hash_parallel(&jobs);
        let mut hashed = hashed.into_iter();
        let mut store = Store::default();
        for spec in &specs {
            let files: BTreeMap<String, Arc<FileEntry>> = spec
                .files
                .iter()
                .map(|_| {
                    let entry = hashed.next().expect("one hashed entry per file");
                    (entry.path.clone(), Arc::new(entry))
                })
                .collect();
            let sha = spec
                .commit_sha
                .clone()
                .unwrap_or_else(|| match &spec.commit_paths {
                    Some(paths) => {
                        let basis: BTreeMap<String, Arc<FileEntry>> = files
                            .iter()
                            .filter(|(path, _)| paths.contains(*path))
                            .map(|(path, entry)| (path.clone(), Arc::clone(entry)))
                            .collect();
                        Commit::derive_sha(&spec.repo_id, None, &basis)
                    }
                    None => Commit::derive_sha(&spec.repo_id, None, &files),
                });
            let mut refs = HashMap::from([("main".to_owned(), sha.clone())]);
            refs.extend(spec.extra_refs.iter().map(|r| (r.clone(), sha.clone())));
            let commit = Arc::new(Commit {
                sha: sha.clone(),
                files,
            });
            store.index_blobs(&spec.repo_id, &commit);
            store.repos.insert(
                spec.repo_id.clone(),
                Repo {
                    id: spec.repo_id.clone(),
                    accepted_tokens: spec.accepted_tokens.clone(),
                    refs,
                    commits: HashMap::from([(sha, commit)]),
                },
            );
        }
        store
    }

    /// Whether `path` in `repo_id` is stored with LFS: as it is on `main` if it exists there,
    /// else by [`is_lfs_path`]. `None` if there is no such repo.
    pub(crate) fn stores_with_lfs(&self, repo_id: &str, path: &str) -> Option<bool> {
        let main = self.repos.get(repo_id)?.main();
        Some(
            main.files
                .get(path)
                .map_or_else(|| is_lfs_path(path), |f| f.lfs.is_some()),
        )
    }

    /// Makes a new commit on `main` of `repo_id` with `entry` replacing or adding its path;
    /// returns the new sha. `None` if there is no such repo.
    pub(crate) fn commit_file(&mut self, repo_id: &str, entry: FileEntry) -> Option<String> {
        let repo = self.repos.get(repo_id)?;
        let parent = repo.main();
        let mut files = parent.files.clone();
        files.insert(entry.path.clone(), Arc::new(entry));
        let mut sha = Commit::derive_sha(repo_id, Some(&parent.sha), &files);
        // Setting identical content twice must still yield a new commit id.
        while repo.commits.contains_key(&sha) {
            sha = hex::encode(Sha1::digest(sha.as_bytes()));
        }
        let commit = Arc::new(Commit {
            sha: sha.clone(),
            files,
        });
        self.index_blobs(repo_id, &commit);
        let repo = self.repos.get_mut(repo_id)?;
        repo.refs.insert("main".to_owned(), sha.clone());
        repo.commits.insert(sha.clone(), commit);
        Some(sha)
    }

    fn index_blobs(&mut self, repo_id: &str, commit: &Commit) {
        for entry in commit.files.values() {
            if let Some(lfs) = &entry.lfs {
                self.blobs
                    .entry(lfs.sha256.clone())
                    .or_insert_with(|| entry.content.clone());
                let paths = self.blob_paths.entry(lfs.sha256.clone()).or_default();
                let full = format!("{repo_id}/{}", entry.path);
                if !paths.contains(&full) {
                    paths.push(full);
                }
            }
        }
    }
}

/// Hashes files on all cores; the result is in input order.
fn hash_parallel(files: &[&SpecFile]) -> Vec<FileEntry> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut hashed: Vec<(usize, FileEntry)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(file) = files.get(i) else { break done };
                        let entry =
                            FileEntry::new(file.path.clone(), file.content.clone(), file.lfs);
                        done.push((i, entry));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("hashing thread panicked"))
            .collect()
    });
    hashed.sort_unstable_by_key(|(i, _)| *i);
    hashed.into_iter().map(|(_, entry)| entry).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::from_specs(vec![RepoSpec::new("org/m")
            .file("config.json", "{}")
            .file("model.safetensors", vec![1u8; 100])
            .file("sub/dir/a.txt", "a")
            .file("sub/b.txt", "b")
            .extra_ref("refs/pr/1")])
    }

    #[test]
    fn lfs_by_extension() {
        assert!(is_lfs_path("x/model.SafeTensors"));
        assert!(is_lfs_path("pytorch_model.bin"));
        assert!(!is_lfs_path("config.json"));
        assert!(!is_lfs_path("bin"));
    }

    #[test]
    fn tree_listing() {
        let store = store();
        let main = store.repos["org/m"].main().clone();
        let paths = |entries: Vec<TreeEntry<'_>>| -> Vec<String> {
            entries.iter().map(|e| e.path().to_owned()).collect()
        };
        assert_eq!(
            paths(main.tree("", false).unwrap()),
            ["config.json", "model.safetensors", "sub"]
        );
        assert_eq!(
            paths(main.tree("", true).unwrap()),
            [
                "config.json",
                "model.safetensors",
                "sub",
                "sub/b.txt",
                "sub/dir",
                "sub/dir/a.txt"
            ]
        );
        assert_eq!(
            paths(main.tree("sub", false).unwrap()),
            ["sub/b.txt", "sub/dir"]
        );
        assert!(main.tree("config.json", false).is_none());
        assert!(main.tree("nope", false).is_none());
        assert!(matches!(
            main.entry("sub/dir"),
            Some(TreeEntry::Directory { .. })
        ));
        assert!(main.entry("su").is_none());
    }

    fn set_file(store: &mut Store, repo_id: &str, path: &str, content: Bytes) -> Option<String> {
        let lfs = store.stores_with_lfs(repo_id, path)?;
        store.commit_file(repo_id, FileEntry::new(path.to_owned(), content, lfs))
    }

    #[test]
    fn set_file_makes_new_commits() {
        let mut store = store();
        let first = store.repos["org/m"].main().sha.clone();
        let second = set_file(&mut store, "org/m", "config.json", Bytes::from("{}")).unwrap();
        let third = set_file(&mut store, "org/m", "config.json", Bytes::from("{}")).unwrap();
        assert_ne!(first, second);
        assert_ne!(second, third);
        let repo = &store.repos["org/m"];
        assert_eq!(repo.resolve("main").unwrap().sha, third);
        assert_eq!(repo.resolve("refs/pr/1").unwrap().sha, first);
        assert_eq!(repo.resolve(&first.to_uppercase()).unwrap().sha, first);
        assert!(set_file(&mut store, "nope", "a", Bytes::new()).is_none());
        assert_eq!(
            store.stores_with_lfs("org/m", "model.safetensors"),
            Some(true)
        );
        assert_eq!(store.stores_with_lfs("org/m", "new.bin"), Some(true));
        assert_eq!(store.stores_with_lfs("org/m", "config.json"), Some(false));
    }
}
