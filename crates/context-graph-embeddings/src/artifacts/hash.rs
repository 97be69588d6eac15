//! SHA-256 of bytes, files and readers: the one hashing implementation every check uses (the
//! transfer's running hash, stamps, the mirror's object check, `verify`). Blocking: callers
//! run it on a blocking thread.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Read size of file hashing (large reads keep syscalls off the profile).
pub(super) const HASH_BUFFER_BYTES: usize = 1 << 20;

/// SHA-256 of bytes in lower-case hex.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hashes a file; returns its lower-case hex SHA-256 and its length. Blocking: call from a
/// blocking thread (`spawn_blocking`) in async code.
pub(super) fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let length = hash_reader_into(&mut file, &mut hasher, u64::MAX)?;
    Ok((hex::encode(hasher.finalize()), length))
}

/// Feeds at most `limit` bytes of `reader` into `hasher`; returns how many were read.
pub(super) fn hash_reader_into(
    reader: &mut impl Read,
    hasher: &mut Sha256,
    limit: u64,
) -> io::Result<u64> {
    hash_reader_with(reader, hasher, limit, &mut vec![0u8; HASH_BUFFER_BYTES])
}

/// [`hash_reader_into`] with the caller's read buffer, for callers that hash many stretches
/// (a fresh megabyte per call is an allocation, page faults and a free each time).
pub(super) fn hash_reader_with(
    reader: &mut impl Read,
    hasher: &mut Sha256,
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
}
