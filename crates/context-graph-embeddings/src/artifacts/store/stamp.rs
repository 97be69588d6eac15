//! Verification stamps: the record that a file was verified, so that readiness at start-up costs a `stat`, not a re-hash of gigabytes.
//!
//! A stamp holds the file's size, modification time, inode and device next to the verified
//! hash. Any change to the file (rewrite, truncation, replacement) changes one of them, and the
//! file is then treated as unverified until hashed again.

// Public for `artifacts::test_support` (the `failpoints` feature), crate-private otherwise.
#![cfg_attr(not(feature = "failpoints"), allow(unreachable_pub))]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::fs::write_atomic;
use crate::error::EmbeddingResult;

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

/// The notice that verification stamps could not be written (typically a read-only cache):
/// the files were hashed and found right, the verdict holds for this process only, and every
/// new process hashes them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnrecordedStamps {
    /// The first stamp that could not be written.
    pub path: PathBuf,
    /// Why (the file system's answer, e.g. `Read-only file system (os error 30)`).
    pub reason: String,
}

impl UnrecordedStamps {
    /// The notice in one sentence: what happened and what it costs.
    pub fn message(&self) -> String {
        format!(
            "cannot record verification stamps in the cache ({}: {}); the files were hashed and count as verified for this process only, so every start hashes them again (a cache filled by `cg-models ensure` while writable carries its stamps)",
            self.path.display(),
            self.reason
        )
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
    /// The SHA-256 of the content of a file checked by another digest (a regular file, by its
    /// git blob id), computed in the same read: what a model signature lists. `None` in stamps
    /// written before it was kept, and for LFS files (their `sha256` is the content's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sha256: Option<String>,
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
            content_sha256: None,
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

    /// The SHA-256 of the file's content, when the stamp knows it: `sha256` for a file
    /// verified by SHA-256, `content_sha256` for one verified by its git blob id.
    pub fn content_sha256(&self) -> Option<&str> {
        if self.sha256.len() == 64 {
            Some(&self.sha256)
        } else {
            self.content_sha256.as_deref()
        }
    }
}

/// The record that a model's signature was verified: the signer, the policy it was checked
/// under, and the digest every file of the set (the signature file included) had then. It
/// holds only while each file still has a valid stamp for that digest, so readiness checks a
/// signature by the `stat`s it makes anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SignatureStamp {
    /// The policy the signature was verified under (its plain data, in words).
    pub(crate) policy: String,
    /// The signer in words (`P-256 key sha256:…`, a certificate's names).
    pub(crate) signer: String,
    /// SHA-256 of the signer's DER public key.
    pub(crate) signer_key_sha256: String,
    /// Every file of the set by path, with the digest its stamp vouched for.
    pub(crate) files: std::collections::BTreeMap<String, String>,
    /// Seconds since the epoch at verification.
    pub(crate) verified_at: u64,
}

impl SignatureStamp {
    /// Reads a record; a missing or unreadable one is `None` (the signature is then unchecked).
    pub(crate) fn read(path: &Path) -> Option<Self> {
        let text = fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes the record atomically.
    pub(crate) fn write(&self, path: &Path) -> EmbeddingResult<()> {
        let text = serde_json::to_vec(self).unwrap_or_default();
        write_atomic(path, &text)
    }

    /// Whether the record vouches for this set under this policy: the same policy, the same
    /// paths, each with the digest given (the caller passes only files whose stamps are valid).
    pub(crate) fn holds_for<'a>(
        &self,
        policy: &str,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> bool {
        if self.policy != policy {
            return false;
        }
        let mut count = 0;
        for (path, digest) in files {
            count += 1;
            if self
                .files
                .get(path)
                .is_none_or(|d| !d.eq_ignore_ascii_case(digest))
            {
                return false;
            }
        }
        count == self.files.len()
    }

    /// Seconds since the epoch, now.
    pub(crate) fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verdict_holds_only_for_the_same_policy_and_the_same_files() {
        let verdict = SignatureStamp {
            policy: "key a".to_owned(),
            signer: "P-256 key sha256:0123".to_owned(),
            signer_key_sha256: "0".repeat(64),
            files: [("config.json", "b1"), ("model.sig", "c1"), ("w", "a1")]
                .into_iter()
                .map(|(p, d)| (p.to_owned(), d.to_owned()))
                .collect(),
            verified_at: 0,
        };
        let same = [("w", "a1"), ("config.json", "B1"), ("model.sig", "c1")];
        assert!(verdict.holds_for("key a", same));
        assert!(!verdict.holds_for("key b", same), "another policy");
        let changed = [("w", "a1"), ("config.json", "b2"), ("model.sig", "c1")];
        assert!(!verdict.holds_for("key a", changed), "a file changed");
        let fewer = [("w", "a1"), ("model.sig", "c1")];
        assert!(!verdict.holds_for("key a", fewer), "a file left the set");
        let more = [
            ("w", "a1"),
            ("config.json", "b1"),
            ("model.sig", "c1"),
            ("extra", "d1"),
        ];
        assert!(!verdict.holds_for("key a", more), "a file joined the set");
        let text = br#"{"sha256":"ab","fingerprint":{"size":1,"mtime_ns":2,"inode":3,"device":4},"verified_at":5}"#;
        let old: VerificationStamp = serde_json::from_slice(text).unwrap();
        assert_eq!(old.content_sha256, None, "stamps written before still read");
        assert_eq!(old.content_sha256(), None);
    }
    use crate::artifacts::hash::sha256_hex;

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
