//! Structural check of `.safetensors` files: header length, JSON header, dtypes, shapes and
//! tensor byte ranges, reading only the header (never the tensor data).
//!
//! A file passes when its header is well-formed, every tensor's byte span equals
//! `dtype size × product(shape)`, spans lie inside the data area, do not overlap, and cover
//! it completely, as the reference `safetensors` implementation requires. A sharded model
//! (`model.safetensors.index.json`) passes when every shard its `weight_map` names passes, and
//! the map and the shards agree tensor for tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{EmbeddingError, EmbeddingResult};

/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type, e.g. `F32`.
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Byte range inside the data area, `[begin, end)`.
    pub data_offsets: (u64, u64),
}

/// What a checked safetensors file contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsSummary {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Header length in bytes.
    pub header_bytes: u64,
    /// Size of the data area.
    pub data_bytes: u64,
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// Checks the file at `path`; reads at most the header.
pub fn check_file(path: &Path) -> EmbeddingResult<SafetensorsSummary> {
    let invalid = |reason: String| EmbeddingError::InvalidSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| EmbeddingError::io("cannot open", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| EmbeddingError::io("cannot read", path, e))?
        .len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|_| {
        invalid(format!(
            "file of {file_len} bytes is too short for a header"
        ))
    })?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
        return Err(invalid(format!(
            "header length {header_len} is larger than the file ({file_len} bytes) or the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    let mut header =
        vec![0u8; usize::try_from(header_len).map_err(|_| invalid("header too large".to_owned()))?];
    file.read_exact(&mut header)
        .map_err(|e| EmbeddingError::io("cannot read", path, e))?;
    parse_header(&header, file_len - 8 - header_len).map_err(invalid)
}

/// Largest safetensors index read.
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// Checks a sharded model: the index at `index` (a `*.safetensors.index.json`), every shard
/// its `weight_map` names (each must be among `files`, the verified files of the model, beside
/// the index), and that each tensor of the map is in the shard the map names and every
/// tensor of a shard is in the map. Returns all tensors as one summary. Reads only headers.
pub fn check_sharded(index: &Path, files: &[PathBuf]) -> EmbeddingResult<SafetensorsSummary> {
    let invalid = |path: &Path, reason: String| EmbeddingError::InvalidSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(index)
        .map_err(|e| EmbeddingError::io("cannot open", index, e))?
        .len();
    if len > MAX_INDEX_BYTES {
        return Err(invalid(index, format!("index of {len} bytes is too large")));
    }
    let text = std::fs::read(index).map_err(|e| EmbeddingError::io("cannot read", index, e))?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| invalid(index, format!("index is not JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(index, "index has no `weight_map` object".to_owned()))?;
    let mut by_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            invalid(
                index,
                format!("`weight_map` names no file for tensor `{tensor}`"),
            )
        })?;
        by_shard.entry(shard).or_default().push(tensor);
    }
    if by_shard.is_empty() {
        return Err(invalid(index, "`weight_map` is empty".to_owned()));
    }
    let folder = index.parent().unwrap_or_else(|| Path::new(""));
    let mut all = SafetensorsSummary {
        tensors: BTreeMap::new(),
        header_bytes: 0,
        data_bytes: 0,
    };
    for (shard, tensors) in by_shard {
        let path = folder.join(shard);
        if shard.contains("..") || !files.contains(&path) {
            return Err(invalid(
                index,
                format!("names the shard `{shard}`, which is not among the model's verified files"),
            ));
        }
        let summary = check_file(&path)?;
        for tensor in &tensors {
            if !summary.tensors.contains_key(*tensor) {
                return Err(invalid(
                    index,
                    format!("maps tensor `{tensor}` to `{shard}`, whose header has no such tensor"),
                ));
            }
        }
        if let Some(extra) = summary
            .tensors
            .keys()
            .find(|name| !tensors.contains(&name.as_str()))
        {
            return Err(invalid(
                &path,
                format!("holds tensor `{extra}`, which the index does not map to this shard"),
            ));
        }
        all.header_bytes += summary.header_bytes;
        all.data_bytes += summary.data_bytes;
        all.tensors.extend(summary.tensors);
    }
    Ok(all)
}

/// Checks a header's JSON against a data area of `data_bytes`.
pub fn parse_header(header: &[u8], data_bytes: u64) -> Result<SafetensorsSummary, String> {
    let value: Value =
        serde_json::from_slice(header).map_err(|e| format!("header is not JSON: {e}"))?;
    let Value::Object(entries) = value else {
        return Err("header is not a JSON object".to_owned());
    };
    let mut tensors = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            if !entry.is_object() {
                return Err("__metadata__ is not an object".to_owned());
            }
            continue;
        }
        let dtype = entry
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("tensor `{name}` has no dtype"))?;
        let element = dtype_size(dtype)
            .ok_or_else(|| format!("tensor `{name}` has unknown dtype {dtype}"))?;
        let shape: Vec<u64> = entry
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("tensor `{name}` has no shape"))?
            .iter()
            .map(|d| {
                d.as_u64().ok_or_else(|| {
                    format!("tensor `{name}` has a negative or non-integer dimension")
                })
            })
            .collect::<Result<_, _>>()?;
        let offsets = entry
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|o| o.len() == 2)
            .ok_or_else(|| format!("tensor `{name}` has no [begin, end] data_offsets"))?;
        let begin = offsets[0]
            .as_u64()
            .ok_or_else(|| format!("tensor `{name}` has a negative offset"))?;
        let end = offsets[1]
            .as_u64()
            .ok_or_else(|| format!("tensor `{name}` has a negative offset"))?;
        if end < begin || end > data_bytes {
            return Err(format!(
                "tensor `{name}` spans [{begin}, {end}), outside the data area of {data_bytes} bytes"
            ));
        }
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| format!("tensor `{name}` has a shape whose size overflows"))?;
        let expected = elements
            .checked_mul(element)
            .ok_or_else(|| format!("tensor `{name}` has a shape whose size overflows"))?;
        if expected != end - begin {
            return Err(format!(
                "tensor `{name}` is {dtype} {shape:?} ({expected} bytes) but spans {} bytes",
                end - begin
            ));
        }
        tensors.insert(
            name,
            TensorInfo {
                dtype: dtype.to_owned(),
                shape,
                data_offsets: (begin, end),
            },
        );
    }
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .map(|(n, t)| (t.data_offsets.0, t.data_offsets.1, n.as_str()))
        .collect();
    spans.sort_unstable();
    let mut cursor = 0u64;
    for (begin, end, name) in spans {
        if begin < cursor {
            return Err(format!("tensor `{name}` overlaps the previous tensor"));
        }
        if begin > cursor {
            return Err(format!(
                "gap in the data area before tensor `{name}` (bytes {cursor}..{begin})"
            ));
        }
        cursor = end;
    }
    if cursor != data_bytes {
        return Err(format!(
            "tensors cover {cursor} bytes but the data area has {data_bytes}"
        ));
    }
    Ok(SafetensorsSummary {
        tensors,
        header_bytes: header.len() as u64,
        data_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(header: &str, data: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn a_valid_file_passes() {
        let (_d, path) = file_with(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}}"#,
            19,
        );
        let summary = check_file(&path).unwrap();
        assert_eq!(summary.tensors.len(), 2);
        assert_eq!(summary.data_bytes, 19);
    }

    #[test]
    fn malformed_headers_are_rejected_with_reasons() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#,
                16,
                "spans 16",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                8,
                "outside",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                8,
                "outside",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
                8,
                "negative",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
                "overlaps",
            ),
            (
                r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
                8,
                "unknown dtype",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                9,
                "cover",
            ),
            (r#"[1,2]"#, 0, "not a JSON object"),
            (
                r#"{"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
                "overflows",
            ),
        ];
        for (header, data, needle) in cases {
            let (_d, path) = file_with(header, data);
            let err = check_file(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{header}: {err}");
        }
    }

    #[test]
    fn absurd_header_length_is_rejected_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut bytes = (1u64 << 63).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, bytes).unwrap();
        let err = check_file(&path).unwrap_err().to_string();
        assert!(err.contains("header length"), "{err}");
        std::fs::write(&path, b"abc").unwrap();
        assert!(check_file(&path).is_err());
    }
}
