//! Synthetic model files and the hash functions the Hub protocol is built on.
//!
//! [`safetensors`] makes a structurally valid safetensors file of an exact length filled with
//! deterministic pseudo-random tensor data, so tests and benchmarks can serve realistic model
//! files without shipping any. [`sha256_hex`] is the LFS object id (the Hub's `X-Linked-Etag`),
//! [`git_blob_sha1_hex`] the git blob id (the `ETag` of regular files and the tree `oid`).

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Smallest length [`safetensors`] accepts: the 8-byte header length plus the header `{}`.
pub const MIN_SAFETENSORS_LEN: u64 = 10;

/// Bytes of tensor data filled from one independent generator state; lets large files be
/// filled by several threads while the output stays a function of `(total_len, seed)` only.
const FILL_BLOCK: usize = 1 << 20;

/// A valid safetensors file of exactly `total_len` bytes.
///
/// The header JSON describes an `F32`, an `F16` and a `U8` tensor whose data spans exactly cover
/// the rest of the file (a single `U8` tensor, or none, when `total_len` is too small for three);
/// it is padded with spaces to a multiple of 8 so the data starts 8-byte aligned (a file too
/// small for any tensor is all header). The tensor
/// bytes are pseudo-random, a pure function of `seed`. Filling runs at memory speed on all cores,
/// so multi-gigabyte files take about a second.
///
/// # Panics
///
/// If `total_len` is below [`MIN_SAFETENSORS_LEN`] or does not fit in memory.
pub fn safetensors(total_len: u64, seed: u64) -> Vec<u8> {
    assert!(
        total_len >= MIN_SAFETENSORS_LEN,
        "a safetensors file needs at least {MIN_SAFETENSORS_LEN} bytes, asked for {total_len}"
    );
    let total = usize::try_from(total_len).expect("safetensors length fits in memory");
    let header = [Layout::ThreeTensors, Layout::OneTensor, Layout::Empty]
        .into_iter()
        .find_map(|layout| layout.header(total_len))
        .expect("the empty layout fits every length >= MIN_SAFETENSORS_LEN");
    let mut out = vec![0u8; total];
    out[..8].copy_from_slice(&(header.len() as u64).to_le_bytes());
    out[8..8 + header.len()].copy_from_slice(header.as_bytes());
    fill_pseudo_random(&mut out[8 + header.len()..], seed);
    out
}

/// Which tensors a synthetic file holds; richer layouts need a longer header.
#[derive(Clone, Copy)]
enum Layout {
    ThreeTensors,
    OneTensor,
    Empty,
}

impl Layout {
    /// The padded header for a file of `total_len` bytes, or `None` when it does not fit.
    fn header(self, total_len: u64) -> Option<String> {
        if let Layout::Empty = self {
            // No data at all: the header fills the whole file.
            let mut json = "{}".to_owned();
            json.extend(std::iter::repeat_n(' ', (total_len - 8) as usize - 2));
            return Some(json);
        }
        // Offsets can only get shorter than `total_len`, so a header rendered with
        // `total_len` as data length bounds the real one.
        let bound = self.render(total_len).len() as u64;
        let padded = bound.div_ceil(8) * 8;
        let data_len = total_len.checked_sub(8 + padded)?;
        let mut json = self.render(data_len);
        if matches!(self, Layout::ThreeTensors) && data_len < 64 {
            return None;
        }
        json.extend(std::iter::repeat_n(' ', padded as usize - json.len()));
        Some(json)
    }

    /// The header JSON for `data_len` bytes of tensor data, unpadded.
    fn render(self, data_len: u64) -> String {
        match self {
            Layout::Empty => "{}".to_owned(),
            Layout::OneTensor => format!(
                r#"{{"weight":{{"dtype":"U8","shape":[{data_len}],"data_offsets":[0,{data_len}]}}}}"#
            ),
            Layout::ThreeTensors => {
                // About 60 % F32 (rows of 64), 30 % F16, the rest U8.
                let f32_rows = data_len * 6 / 10 / 256;
                let f32_end = f32_rows * 256;
                let f16_count = (data_len - f32_end) * 3 / 4 / 2;
                let f16_end = f32_end + f16_count * 2;
                let u8_count = data_len - f16_end;
                format!(
                    concat!(
                        r#"{{"__metadata__":{{"format":"pt"}},"#,
                        r#""encoder.weight":{{"dtype":"F32","shape":[{},64],"data_offsets":[0,{}]}},"#,
                        r#""encoder.bias":{{"dtype":"F16","shape":[{}],"data_offsets":[{},{}]}},"#,
                        r#""vocab.mask":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}}}}"#
                    ),
                    f32_rows, f32_end, f16_count, f32_end, f16_end, u8_count, f16_end, data_len
                )
            }
        }
    }
}

/// Fills `data` with xorshift64* output, block by block, on all available cores.
fn fill_pseudo_random(data: &mut [u8], seed: u64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let blocks_per_thread = data.len().div_ceil(FILL_BLOCK).div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (group_index, group) in data.chunks_mut(blocks_per_thread * FILL_BLOCK).enumerate() {
            scope.spawn(move || {
                for (offset, block) in group.chunks_mut(FILL_BLOCK).enumerate() {
                    let block_index = (group_index * blocks_per_thread + offset) as u64;
                    fill_block(block, seed, block_index);
                }
            });
        }
    });
}

/// Fills one block from a generator seeded by `(seed, block_index)`.
fn fill_block(block: &mut [u8], seed: u64, block_index: u64) {
    let mut state = splitmix64(seed ^ splitmix64(block_index.wrapping_add(0x5EED)));
    if state == 0 {
        state = 0x9E37_79B9_7F4A_7C15;
    }
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut words = block.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&next().to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = next().to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// One step of SplitMix64, used to decorrelate seeds.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// SHA-256 of `data`, 64 lowercase hex digits: the LFS object id of a file.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Git blob id of `data` (`sha1("blob <len>\0" + data)`), 40 lowercase hex digits.
pub fn git_blob_sha1_hex(data: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", data.len()).as_bytes());
    hasher.update(data);
    hex::encode(hasher.finalize())
}

/// The git-lfs pointer text stored in git in place of an LFS file's content.
pub fn lfs_pointer(sha256_hex: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex}\nsize {size}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the header back and checks that the tensors exactly cover the data section.
    fn check_layout(file: &[u8]) -> usize {
        let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value =
            serde_json::from_slice(&file[8..8 + header_len]).expect("header is JSON");
        let data_len = (file.len() - 8 - header_len) as u64;
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for (name, tensor) in header.as_object().unwrap() {
            if name == "__metadata__" {
                continue;
            }
            let offsets = tensor["data_offsets"].as_array().unwrap();
            let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
            let width = match tensor["dtype"].as_str().unwrap() {
                "F32" => 4,
                "F16" => 2,
                "U8" => 1,
                other => panic!("unexpected dtype {other}"),
            };
            let elements: u64 = tensor["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product();
            assert_eq!(end - start, elements * width, "{name}: span matches shape");
            spans.push((start, end));
        }
        spans.sort_unstable();
        let mut cursor = 0;
        for (start, end) in &spans {
            assert_eq!(*start, cursor, "spans are contiguous");
            cursor = *end;
        }
        assert_eq!(cursor, data_len, "spans cover the data section");
        if !spans.is_empty() {
            assert_eq!((8 + header_len) % 8, 0, "data section is 8-byte aligned");
        }
        spans.len()
    }

    #[test]
    fn exact_lengths_and_valid_layouts() {
        for len in [
            10,
            11,
            17,
            64,
            100,
            199,
            200,
            201,
            255,
            256,
            257,
            1000,
            4099,
            1 << 20,
        ] {
            let file = safetensors(len, 7);
            assert_eq!(file.len() as u64, len);
            let tensors = check_layout(&file);
            if len >= 400 {
                assert_eq!(tensors, 3, "len {len}");
            }
        }
        assert!(check_layout(&safetensors(200, 1)) >= 1);
    }

    #[test]
    fn large_file_spans_several_fill_blocks() {
        let len = 3 * FILL_BLOCK as u64 + 12345;
        let file = safetensors(len, 99);
        assert_eq!(file.len() as u64, len);
        assert_eq!(check_layout(&file), 3);
        assert_eq!(file, safetensors(len, 99), "deterministic");
        assert_ne!(file, safetensors(len, 100), "seed matters");
        let tail = &file[file.len() - 4096..];
        assert!(tail.iter().any(|&b| b != 0), "tail is filled");
    }

    #[test]
    #[should_panic(expected = "at least")]
    fn too_small_panics() {
        safetensors(9, 0);
    }

    #[test]
    fn known_hashes() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_sha1_hex(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
