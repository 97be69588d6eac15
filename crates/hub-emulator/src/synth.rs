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
    safetensors_named(total_len, seed, "")
}

/// [`safetensors`] with every tensor name prefixed by `prefix` (shards need distinct names).
fn safetensors_named(total_len: u64, seed: u64, prefix: &str) -> Vec<u8> {
    assert!(
        total_len >= MIN_SAFETENSORS_LEN,
        "a safetensors file needs at least {MIN_SAFETENSORS_LEN} bytes, asked for {total_len}"
    );
    let total = usize::try_from(total_len).expect("safetensors length fits in memory");
    let header = [Layout::ThreeTensors, Layout::OneTensor, Layout::Empty]
        .into_iter()
        .find_map(|layout| layout.header(total_len, prefix))
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
    fn header(self, total_len: u64, prefix: &str) -> Option<String> {
        if let Layout::Empty = self {
            // No data at all: the header fills the whole file.
            let mut json = "{}".to_owned();
            json.extend(std::iter::repeat_n(' ', (total_len - 8) as usize - 2));
            return Some(json);
        }
        // Offsets can only get shorter than `total_len`, so a header rendered with
        // `total_len` as data length bounds the real one.
        let bound = self.render(total_len, prefix).len() as u64;
        let padded = bound.div_ceil(8) * 8;
        let data_len = total_len.checked_sub(8 + padded)?;
        let mut json = self.render(data_len, prefix);
        if matches!(self, Layout::ThreeTensors) && data_len < 64 {
            return None;
        }
        json.extend(std::iter::repeat_n(' ', padded as usize - json.len()));
        Some(json)
    }

    /// The header JSON for `data_len` bytes of tensor data, unpadded.
    fn render(self, data_len: u64, prefix: &str) -> String {
        match self {
            Layout::Empty => "{}".to_owned(),
            Layout::OneTensor => format!(
                r#"{{"{prefix}weight":{{"dtype":"U8","shape":[{data_len}],"data_offsets":[0,{data_len}]}}}}"#
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
                        r#""{p}encoder.weight":{{"dtype":"F32","shape":[{},64],"data_offsets":[0,{}]}},"#,
                        r#""{p}encoder.bias":{{"dtype":"F16","shape":[{}],"data_offsets":[{},{}]}},"#,
                        r#""{p}vocab.mask":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}}}}"#
                    ),
                    f32_rows,
                    f32_end,
                    f16_count,
                    f32_end,
                    f16_end,
                    u8_count,
                    f16_end,
                    data_len,
                    p = prefix
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

/// A model split into `shards` safetensors files of `total_size` bytes together (each shard
/// within one byte of the others), named like `transformers` names them
/// (`model-00001-of-00003.safetensors`), and the `model.safetensors.index.json` whose
/// `weight_map` maps every tensor of every shard to its file and whose `metadata.total_size`
/// is the sum of the tensors' data bytes. Tensor names are distinct across shards
/// (`model.layers.<i>.encoder.weight`, ...). Deterministic in `(total_size, shards, seed)`.
///
/// Returns `(index_json, [(file name, bytes)])`, shards in order.
///
/// # Panics
///
/// If `shards` is 0 or a shard would be smaller than [`MIN_SAFETENSORS_LEN`].
pub fn sharded_safetensors(
    total_size: u64,
    shards: usize,
    seed: u64,
) -> (String, Vec<(String, Vec<u8>)>) {
    assert!(shards > 0, "a sharded model needs at least one shard");
    let count = shards as u64;
    let mut files = Vec::with_capacity(shards);
    let mut weight_map = serde_json::Map::new();
    let mut data_bytes = 0u64;
    for i in 0..count {
        let len = total_size / count + u64::from(i < total_size % count);
        let name = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        let bytes = safetensors_named(
            len,
            splitmix64(seed ^ splitmix64(i)),
            &format!("model.layers.{i}."),
        );
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let header: serde_json::Value =
            serde_json::from_slice(&bytes[8..8 + header_len as usize]).expect("own header");
        for (tensor, info) in header.as_object().into_iter().flatten() {
            if tensor == "__metadata__" {
                continue;
            }
            let offsets = &info["data_offsets"];
            data_bytes += offsets[1].as_u64().unwrap_or(0) - offsets[0].as_u64().unwrap_or(0);
            weight_map.insert(tensor.clone(), serde_json::Value::String(name.clone()));
        }
        files.push((name, bytes));
    }
    let index = serde_json::json!({
        "metadata": { "total_size": data_bytes },
        "weight_map": weight_map,
    });
    let text = serde_json::to_string_pretty(&index).expect("JSON value") + "\n";
    (text, files)
}

/// Special tokens of the synthetic BERT vocabulary, ids 0 to 4.
const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Words every synthetic vocabulary holds (so simple sentences tokenize to known ids).
const BASE_WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "this",
    "be",
    "from",
    "or",
    "an",
    "are",
    "not",
    "hello",
    "world",
    "model",
    "graph",
    "context",
    "embedding",
    "text",
    "file",
    "test",
    "data",
    "token",
    ".",
    ",",
    "!",
    "?",
    "'",
    "-",
    "##s",
    "##ed",
    "##ing",
    "##er",
    "##ly",
];

/// The vocabulary (index = id) of a synthetic repo: specials, base words, then 40 seeded
/// word pieces.
fn vocabulary(seed: u64) -> Vec<String> {
    let mut vocab: Vec<String> = SPECIAL_TOKENS
        .iter()
        .chain(BASE_WORDS)
        .map(|t| (*t).to_owned())
        .collect();
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut state = splitmix64(seed);
    while vocab.len() < SPECIAL_TOKENS.len() + BASE_WORDS.len() + 40 {
        state = splitmix64(state);
        let len = 2 + (state % 4) as usize;
        let word: String = (0..len)
            .map(|k| letters[((state >> (8 * k + 8)) % 26) as usize] as char)
            .collect();
        let token = if state & 1 == 0 {
            word
        } else {
            format!("##{word}")
        };
        if !vocab.contains(&token) {
            vocab.push(token);
        }
    }
    vocab
}

/// A WordPiece `tokenizer.json` (the Hugging Face `tokenizers` format, BERT-style normalizer,
/// pre-tokenizer, `[CLS] A [SEP]` post-processor and decoder) for `vocab`.
fn tokenizer_json(vocab: &[String]) -> serde_json::Value {
    use serde_json::json;
    let id = |token: &str| vocab.iter().position(|t| t == token).unwrap_or(0);
    let added: Vec<serde_json::Value> = SPECIAL_TOKENS
        .iter()
        .map(|t| {
            json!({"id": id(t), "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let sequence = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0),
                     sequence("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab_map},
    })
}

/// `len` pseudo-random bytes, a pure function of `(len, seed)`.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_pseudo_random(&mut out, seed);
    out
}

/// The small files a sentence-transformers repo holds beside its weights, deterministic in
/// `repo_id`: `tokenizer.json` (a loadable WordPiece tokenizer), `tokenizer_config.json`,
/// `special_tokens_map.json`, `vocab.txt`, `modules.json` (`Transformer` at path `""`,
/// `Pooling` at `1_Pooling`), `1_Pooling/config.json`, `sentence_bert_config.json`,
/// `config_sentence_transformers.json`; and files a loader should not fetch: `README.md`,
/// `.gitattributes` and a small `onnx/model.onnx` (stored with LFS by its extension; its bytes
/// are not a real ONNX graph). A few KiB in all; `config.json` and weights are not included.
pub fn companion_files(repo_id: &str) -> Vec<(String, Vec<u8>)> {
    use serde_json::json;
    let seed = u64::from_le_bytes(
        Sha256::digest(format!("companions\0{repo_id}"))[..8]
            .try_into()
            .expect("8 bytes"),
    );
    let vocab = vocabulary(seed);
    let dimension = [384u64, 768, 1024][(seed % 3) as usize];
    let pretty = |v: serde_json::Value| {
        (serde_json::to_string_pretty(&v).expect("JSON value") + "\n").into_bytes()
    };
    let mut vocab_txt = vocab.join("\n");
    vocab_txt.push('\n');
    let gitattributes: String = [
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.ftz",
        "*.gguf",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.lfs.*",
        "*.mlmodel",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.rar",
        "*.safetensors",
        "*.tar.*",
        "*.tflite",
        "*.tgz",
        "*.wasm",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    ]
    .iter()
    .map(|pattern| format!("{pattern} filter=lfs diff=lfs merge=lfs -text\n"))
    .collect();
    vec![
        (".gitattributes".to_owned(), gitattributes.into_bytes()),
        (
            "1_Pooling/config.json".to_owned(),
            pretty(json!({
                "word_embedding_dimension": dimension,
                "pooling_mode_cls_token": false,
                "pooling_mode_mean_tokens": true,
                "pooling_mode_max_tokens": false,
                "pooling_mode_mean_sqrt_len_tokens": false,
            })),
        ),
        (
            "README.md".to_owned(),
            format!(
                "---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n\
                 tags:\n- sentence-transformers\n- feature-extraction\n---\n\n# {repo_id}\n\n\
                 Served by hub-emulator: the weights and tokenizer are synthetic.\n"
            )
            .into_bytes(),
        ),
        (
            "config_sentence_transformers.json".to_owned(),
            pretty(json!({"__version__": {"sentence_transformers": "2.0.0",
                                          "transformers": "4.6.1", "pytorch": "1.8.1"}})),
        ),
        (
            "modules.json".to_owned(),
            pretty(json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ])),
        ),
        (
            "onnx/model.onnx".to_owned(),
            pseudo_random_bytes(2048, splitmix64(seed ^ 0x0AAA)),
        ),
        (
            "sentence_bert_config.json".to_owned(),
            pretty(json!({"max_seq_length": 256, "do_lower_case": false})),
        ),
        (
            "special_tokens_map.json".to_owned(),
            pretty(
                json!({"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
                          "sep_token": "[SEP]", "unk_token": "[UNK]"}),
            ),
        ),
        ("tokenizer.json".to_owned(), pretty(tokenizer_json(&vocab))),
        (
            "tokenizer_config.json".to_owned(),
            pretty(json!({
                "clean_up_tokenization_spaces": true, "cls_token": "[CLS]",
                "do_basic_tokenize": true, "do_lower_case": true, "mask_token": "[MASK]",
                "model_max_length": 512, "never_split": null, "pad_token": "[PAD]",
                "sep_token": "[SEP]", "strip_accents": null, "tokenize_chinese_chars": true,
                "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
            })),
        ),
        ("vocab.txt".to_owned(), vocab_txt.into_bytes()),
    ]
}

/// A small stand-in `pytorch_model.bin` (pseudo-random bytes, not a real pickle) for a repo
/// that also has `model.safetensors`: the file a loader preferring safetensors must skip.
pub fn decoy_pytorch_bin(repo_id: &str) -> Vec<u8> {
    let seed = u64::from_le_bytes(
        Sha256::digest(format!("pytorch_model.bin\0{repo_id}"))[..8]
            .try_into()
            .expect("8 bytes"),
    );
    pseudo_random_bytes(3072, seed)
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
    fn shards_and_their_index_agree() {
        let (index, shards) = sharded_safetensors(30_001, 3, 5);
        let names: Vec<&str> = shards.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "model-00001-of-00003.safetensors",
                "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors"
            ]
        );
        let lens: Vec<usize> = shards.iter().map(|(_, b)| b.len()).collect();
        assert_eq!(lens, [10_001, 10_000, 10_000]);
        let index: serde_json::Value = serde_json::from_str(&index).unwrap();
        let map = index["weight_map"].as_object().unwrap();
        let mut data = 0;
        for (name, bytes) in &shards {
            assert_eq!(check_layout(bytes), 3);
            let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let header: serde_json::Value =
                serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
            for tensor in header.as_object().unwrap().keys() {
                if tensor != "__metadata__" {
                    assert_eq!(map[tensor], name.as_str(), "{tensor}");
                }
            }
            data += bytes.len() - 8 - header_len;
        }
        assert_eq!(map.len(), 9);
        assert_eq!(index["metadata"]["total_size"], data);
        assert_eq!(sharded_safetensors(30_001, 3, 5).1, shards, "deterministic");
    }

    #[test]
    fn companions_are_deterministic_and_small() {
        let files = companion_files("org/m");
        assert_eq!(files, companion_files("org/m"));
        assert_ne!(files, companion_files("org/other"));
        let total: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(total < 64 * 1024, "{total}");
        let tokenizer = &files.iter().find(|(p, _)| p == "tokenizer.json").unwrap().1;
        let tokenizer: serde_json::Value = serde_json::from_slice(tokenizer).unwrap();
        let vocab = tokenizer["model"]["vocab"].as_object().unwrap();
        assert_eq!(vocab["[UNK]"], 1);
        let vocab_txt = &files.iter().find(|(p, _)| p == "vocab.txt").unwrap().1;
        let lines: Vec<&str> = std::str::from_utf8(vocab_txt).unwrap().lines().collect();
        assert_eq!(lines.len(), vocab.len());
        for (id, token) in lines.iter().enumerate() {
            assert_eq!(vocab[*token], id, "{token}");
        }
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
