//! SHA-256 verification of files, and verification stamps: the record that a file was
//! verified, so that readiness at start-up costs a `stat`, not a re-hash of gigabytes.
//!
//! A stamp holds the file's size, modification time, inode and device next to the verified
//! hash. Any change to the file (rewrite, truncation, replacement) changes one of them, and the
//! file is then treated as unverified until hashed again.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache::write_atomic;
use crate::error::EmbeddingResult;

/// Read size of file hashing (large reads keep syscalls off the profile).
const HASH_BUFFER_BYTES: usize = 1 << 20;

/// SHA-256 of bytes in lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hashes a file; returns its lower-case hex SHA-256 and its length. Blocking: call from a
/// blocking thread (`spawn_blocking`) in async code.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let length = hash_reader_into(&mut file, &mut hasher, u64::MAX)?;
    Ok((hex::encode(hasher.finalize()), length))
}

/// Feeds at most `limit` bytes of `reader` into `hasher`; returns how many were read.
pub fn hash_reader_into(
    reader: &mut impl Read,
    hasher: &mut Sha256,
    limit: u64,
) -> io::Result<u64> {
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut total = 0u64;
    while total < limit {
        let want = usize::try_from((limit - total).min(HASH_BUFFER_BYTES as u64))
            .unwrap_or(HASH_BUFFER_BYTES);
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

/// Identity of a file's current content, as far as metadata tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
    /// Inode number (0 where unknown).
    pub inode: u64,
    /// Device number (0 where unknown).
    pub device: u64,
}

impl FileFingerprint {
    /// The fingerprint of the file at `path`, following links.
    pub fn of(path: &Path) -> io::Result<Self> {
        let meta = fs::metadata(path)?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        #[cfg(unix)]
        let (inode, device) = {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.dev())
        };
        #[cfg(not(unix))]
        let (inode, device) = (0, 0);
        Ok(FileFingerprint {
            size: meta.len(),
            mtime_ns,
            inode,
            device,
        })
    }
}

/// The record that a file was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationStamp {
    /// The verified SHA-256.
    pub sha256: String,
    /// The file as it was when verified.
    pub fingerprint: FileFingerprint,
    /// Seconds since the epoch at verification.
    pub verified_at: u64,
    /// Where the bytes came from (`hub`, a mirror object, `cache`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl VerificationStamp {
    /// A stamp for `path`, verified now to hash to `sha256`.
    pub fn now(path: &Path, sha256: &str) -> io::Result<Self> {
        Ok(VerificationStamp {
            sha256: sha256.to_owned(),
            fingerprint: FileFingerprint::of(path)?,
            verified_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            source: None,
        })
    }

    /// Reads a stamp; a missing or unreadable one is `None` (the file is then unverified).
    pub fn read(stamp_path: &Path) -> Option<Self> {
        let text = fs::read(stamp_path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the stamp atomically.
    pub fn write(&self, stamp_path: &Path) -> EmbeddingResult<()> {
        let text = serde_json::to_vec(self).unwrap_or_default();
        write_atomic(stamp_path, &text)
    }

    /// Whether the stamp still describes the file at `path` and, when an expected hash is
    /// given, vouches for that hash.
    pub fn is_valid_for(&self, path: &Path, expected_sha256: Option<&str>) -> bool {
        let hash_ok = expected_sha256.is_none_or(|e| e.eq_ignore_ascii_case(&self.sha256));
        hash_ok && FileFingerprint::of(path).is_ok_and(|f| f == self.fingerprint)
    }
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
    fn stamp_is_invalidated_by_any_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let sha = sha256_hex(b"hello");
        let stamp = VerificationStamp::now(&path, &sha).unwrap();
        let stamp_path = dir.path().join("s/stamp.json");
        stamp.write(&stamp_path).unwrap();
        let read = VerificationStamp::read(&stamp_path).unwrap();
        assert!(read.is_valid_for(&path, Some(&sha)));
        assert!(read.is_valid_for(&path, None));
        assert!(!read.is_valid_for(&path, Some(&"0".repeat(64))));
        // Same size, new content, new inode: replaced by another file.
        let other = dir.path().join("g");
        fs::write(&other, b"jello").unwrap();
        fs::rename(&other, &path).unwrap();
        assert!(!read.is_valid_for(&path, Some(&sha)));
        fs::write(&stamp_path, b"not json").unwrap();
        assert!(VerificationStamp::read(&stamp_path).is_none());
    }
}
