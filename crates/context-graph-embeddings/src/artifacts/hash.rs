//! SHA-256 and git blob SHA-1 of bytes, files and readers: the one hashing implementation every
//! check uses (the transfer's running hash, stamps, the mirror's object check, `verify`). LFS
//! files are named and checked by the SHA-256 of their content; regular files (configs,
//! tokenizers) by their git blob id, SHA-1 over `blob <len>\0` and the bytes, which is what
//! the Hub sends as their `ETag` and lists as their `oid` in the tree API. Blocking: callers
//! run it on a blocking thread.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Read size of file hashing (large reads keep syscalls off the profile).
pub(super) const HASH_BUFFER_BYTES: usize = 1 << 20;

/// SHA-256 of bytes in lower-case hex.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Which digest checks a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestKind {
    /// SHA-256 of the content (LFS files; the Hub's `X-Linked-Etag`).
    Sha256,
    /// Git blob id: SHA-1 over `blob <len>\0` and the content (regular files; their `ETag`).
    GitBlobSha1,
}

impl DigestKind {
    /// Hex digits of a digest of this kind.
    pub fn hex_len(self) -> usize {
        match self {
            DigestKind::Sha256 => 64,
            DigestKind::GitBlobSha1 => 40,
        }
    }

    /// The kind a lower-case hex digest of this length has, if any.
    pub(crate) fn of_hex(digest: &str) -> Option<Self> {
        let hex = digest.bytes().all(|b| b.is_ascii_hexdigit());
        match digest.len() {
            64 if hex => Some(DigestKind::Sha256),
            40 if hex => Some(DigestKind::GitBlobSha1),
            _ => None,
        }
    }

    /// Name in messages and JSON (`sha256`, `git_sha1`).
    pub fn label(self) -> &'static str {
        match self {
            DigestKind::Sha256 => "sha256",
            DigestKind::GitBlobSha1 => "git_sha1",
        }
    }
}

/// A running hash of one of the [`DigestKind`]s. The git blob id needs the length up front
/// (it is in the header), so a git hasher is made for one size.
#[derive(Clone)]
pub(crate) enum ContentHasher {
    Sha256(Sha256),
    GitBlobSha1(Sha1),
}

impl ContentHasher {
    /// A fresh hasher. `size` is required for [`DigestKind::GitBlobSha1`] (0 is used when it
    /// is unknown, so a mismatch is reported rather than a panic).
    pub(crate) fn new(kind: DigestKind, size: Option<u64>) -> Self {
        match kind {
            DigestKind::Sha256 => ContentHasher::Sha256(Sha256::new()),
            DigestKind::GitBlobSha1 => {
                let mut sha1 = Sha1::new();
                sha1.update(format!("blob {}\0", size.unwrap_or(0)).as_bytes());
                ContentHasher::GitBlobSha1(sha1)
            }
        }
    }

    /// Feeds bytes.
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Sha256(h) => h.update(data),
            ContentHasher::GitBlobSha1(h) => h.update(data),
        }
    }

    /// The lower-case hex digest of what was fed so far (the hasher is left as it was).
    pub(crate) fn hex(&self) -> String {
        match self {
            ContentHasher::Sha256(h) => hex::encode(h.clone().finalize()),
            ContentHasher::GitBlobSha1(h) => hex::encode(h.clone().finalize()),
        }
    }
}

/// SHA-256 and git blob id of the same bytes in one pass: a regular file is checked by its git
/// blob id, and a signature (`signature/`) lists the SHA-256 of every file, small ones
/// included, so both are computed from one read.
#[derive(Clone)]
pub(crate) struct DualHasher {
    sha256: Sha256,
    git: Sha1,
}

impl DualHasher {
    /// A fresh hasher for content of `size` bytes (the git header needs the length).
    pub(crate) fn new(size: u64) -> Self {
        let mut git = Sha1::new();
        git.update(format!("blob {size}\0").as_bytes());
        DualHasher {
            sha256: Sha256::new(),
            git,
        }
    }

    /// Feeds bytes to both.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.git.update(data);
    }

    /// `(sha256, git blob sha1)` in lower-case hex.
    pub(crate) fn hex(&self) -> (String, String) {
        (
            hex::encode(self.sha256.clone().finalize()),
            hex::encode(self.git.clone().finalize()),
        )
    }
}

/// Hashes a file once for both digests; returns `(sha256, git blob sha1, length)`. Blocking.
pub(crate) fn hash_file_dual(path: &Path) -> io::Result<(String, String, u64)> {
    let mut file = fs::File::open(path)?;
    counted::file_hashed(path);
    let size = file.metadata()?.len();
    let mut hasher = DualHasher::new(size);
    let buffer_len = usize::try_from(size)
        .unwrap_or(HASH_BUFFER_BYTES)
        .clamp(4096, HASH_BUFFER_BYTES);
    let mut buffer = vec![0u8; buffer_len];
    let mut length = 0u64;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
    if length != size {
        // The file changed while it was read: hash what is there now.
        return hash_file_dual(path);
    }
    let (sha256, git) = hasher.hex();
    Ok((sha256, git, length))
}

/// How many times each file was hashed whole ([`hash_file_as`], [`hash_file_dual`]), with the
/// `failpoints` feature only: the tests prove that checking a signature reads no weight file
/// again. Keyed by the path as given (a snapshot entry), so parallel tests do not mix.
#[cfg(feature = "failpoints")]
pub(crate) mod counted {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    fn counts() -> &'static Mutex<HashMap<PathBuf, u64>> {
        static COUNTS: OnceLock<Mutex<HashMap<PathBuf, u64>>> = OnceLock::new();
        COUNTS.get_or_init(Mutex::default)
    }

    pub(crate) fn file_hashed(path: &Path) {
        let mut counts = counts().lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(path.to_path_buf()).or_default() += 1;
    }

    /// How many times the file at `path` (as the hashing caller named it) was hashed whole.
    pub fn times_hashed(path: &Path) -> u64 {
        let counts = counts().lock().unwrap_or_else(|p| p.into_inner());
        counts.get(path).copied().unwrap_or(0)
    }
}

/// Without the `failpoints` feature, counting is a no-op.
#[cfg(not(feature = "failpoints"))]
mod counted {
    #[inline(always)]
    pub(crate) fn file_hashed(_path: &std::path::Path) {}
}

/// Git blob id of bytes in lower-case hex.
pub(crate) fn git_blob_sha1_hex(data: &[u8]) -> String {
    let mut hasher = ContentHasher::new(DigestKind::GitBlobSha1, Some(data.len() as u64));
    hasher.update(data);
    hasher.hex()
}

/// Hashes a file with the digest of `kind`; returns the lower-case hex digest and the length.
/// Blocking.
pub(crate) fn hash_file_as(path: &Path, kind: DigestKind) -> io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    counted::file_hashed(path);
    let size = file.metadata()?.len();
    let mut hasher = ContentHasher::new(kind, Some(size));
    // A small file gets a small buffer: a megabyte for each of a set's many small files,
    // allocated on whichever blocking thread hashes it, stays in that thread's malloc arena.
    let buffer_len = usize::try_from(size)
        .unwrap_or(HASH_BUFFER_BYTES)
        .clamp(4096, HASH_BUFFER_BYTES);
    let length = hash_reader_with(&mut file, &mut hasher, u64::MAX, &mut vec![0u8; buffer_len])?;
    if length != size {
        // The file changed while it was read: hash what is there now.
        return hash_file_as(path, kind);
    }
    Ok((hasher.hex(), length))
}

/// Hashes a file; returns its lower-case hex SHA-256 and its length (tests; the library uses
/// [`hash_file_as`]). Blocking: call from a
/// blocking thread (`spawn_blocking`) in async code.
#[cfg(test)]
pub(super) fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = ContentHasher::new(DigestKind::Sha256, None);
    let length = hash_reader_into(&mut file, &mut hasher, u64::MAX)?;
    Ok((hasher.hex(), length))
}

/// Feeds at most `limit` bytes of `reader` into `hasher`; returns how many were read.
pub(super) fn hash_reader_into(
    reader: &mut impl Read,
    hasher: &mut ContentHasher,
    limit: u64,
) -> io::Result<u64> {
    hash_reader_with(reader, hasher, limit, &mut vec![0u8; HASH_BUFFER_BYTES])
}

/// [`hash_reader_into`] with the caller's read buffer, for callers that hash many stretches
/// (a fresh megabyte per call is an allocation, page faults and a free each time).
pub(super) fn hash_reader_with(
    reader: &mut impl Read,
    hasher: &mut ContentHasher,
    limit: u64,
    buffer: &mut [u8],
) -> io::Result<u64> {
    let size = buffer.len().max(1);
    let mut total = 0u64;
    while total < limit {
        let want = usize::try_from((limit - total).min(size as u64)).unwrap_or(size);
        let read = match reader.read(&mut buffer[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_vectors() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        assert_eq!(hash_file(&path).unwrap(), (sha256_hex(&data), 3_000_000));
    }

    #[test]
    fn one_pass_gives_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(&path, &data).unwrap();
        assert_eq!(
            hash_file_dual(&path).unwrap(),
            (sha256_hex(&data), git_blob_sha1_hex(&data), 20_000)
        );
        fs::write(&path, b"hello\n").unwrap();
        let (_, git, _) = hash_file_dual(&path).unwrap();
        assert_eq!(git, "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn git_blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_sha1_hex(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // The empty blob every git knows.
        assert_eq!(
            git_blob_sha1_hex(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello\n").unwrap();
        assert_eq!(
            hash_file_as(&path, DigestKind::GitBlobSha1).unwrap(),
            ("ce013625030ba8dba906f756967f9e9ca394464a".to_owned(), 6)
        );
        assert_eq!(
            DigestKind::of_hex(&"a".repeat(40)),
            Some(DigestKind::GitBlobSha1)
        );
        assert_eq!(
            DigestKind::of_hex(&"a".repeat(64)),
            Some(DigestKind::Sha256)
        );
        assert_eq!(DigestKind::of_hex("xyz"), None);
    }
}
