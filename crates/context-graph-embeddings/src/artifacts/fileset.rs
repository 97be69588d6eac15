//! Which files of a repo make up one model: the selection a manifest entry gives (an explicit
//! list, glob patterns, a named preset) and the pure rules that resolve it against a repo's
//! file list (the Hub's tree API). No I/O here: the caller lists the tree and reads the few
//! documents the rules need (`modules.json`, a safetensors index), so every rule is
//! unit-tested on plain data.
//!
//! Patterns follow Python's `fnmatch` as `huggingface_hub`'s `allow_patterns` does (`*`
//! matches across `/`; a pattern ending in `/` means everything below), so
//! `snapshot_download(allow_patterns=...)` with the same patterns selects the same files.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::hash::DigestKind;

/// A named selection of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// What a sentence-transformers loader (and text-embeddings-inference) opens: the
    /// weights, `config.json`, the tokenizer files, `modules.json` and the module folders it
    /// lists (e.g. `1_Pooling/config.json`), `sentence_bert_config.json` and
    /// `config_sentence_transformers.json`, each when present.
    SentenceTransformers,
    /// What a `transformers` model and processor open: the weights, `config.json`, the
    /// tokenizer files and `preprocessor_config.json`, each when present.
    Transformers,
}

impl Preset {
    /// Its name in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::SentenceTransformers => "sentence-transformers",
            Preset::Transformers => "transformers",
        }
    }

    /// Parses a manifest name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sentence-transformers" => Some(Preset::SentenceTransformers),
            "transformers" => Some(Preset::Transformers),
            _ => None,
        }
    }
}

/// Tokenizer files a preset takes when the repo has them.
pub(crate) const TOKENIZER_FILES: [&str; 9] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
];

/// The sentence-transformers module list a preset reads.
pub(crate) const MODULES_JSON: &str = "modules.json";

/// One file of a set with what its bytes must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedFile {
    /// Path inside the repo.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// How the bytes are checked.
    pub kind: DigestKind,
    /// The expected digest (lower-case hex): SHA-256 for LFS files, the git blob SHA-1 for
    /// regular files.
    pub digest: String,
}

/// Which files besides the weight file belong to a model. Empty (the default) means the
/// weight file alone, as in the original single-file manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSelection {
    /// The resolved set, every file with its size and digest (written by `cg-models lock`,
    /// or by hand). When present it is used as is: no tree listing is needed.
    pub files: Option<Vec<PinnedFile>>,
    /// Glob patterns (Python `fnmatch`, as `allow_patterns`) resolved against the repo's tree.
    pub include: Vec<String>,
    /// A named selection resolved against the repo's tree.
    pub preset: Option<Preset>,
}

impl FileSelection {
    /// Whether this is the weight file alone.
    pub fn is_single_file(&self) -> bool {
        self.files.is_none() && self.include.is_empty() && self.preset.is_none()
    }

    /// Whether resolving it needs the repo's tree.
    pub fn needs_tree(&self) -> bool {
        self.files.is_none() && !self.is_single_file()
    }
}

/// Adds the signature file to a resolved set when the tree lists it and the set lacks it.
pub(crate) fn add_signature(set: &mut Vec<PinnedFile>, tree: &[RepoFile], signature: Option<&str>) {
    let Some(signature) = signature else { return };
    if set.iter().any(|f| f.path == signature) {
        return;
    }
    if let Some(listed) = tree.iter().find(|f| f.path == signature) {
        set.push(listed.pinned());
    }
}

/// One file of a repo as the tree API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoFile {
    /// Path inside the repo.
    pub(crate) path: String,
    /// Size in bytes (of the content, also for LFS files).
    pub(crate) size: u64,
    /// The git blob id (of the LFS pointer, for LFS files).
    pub(crate) oid: String,
    /// The SHA-256 of the content, for LFS files.
    pub(crate) lfs_sha256: Option<String>,
}

impl RepoFile {
    /// What the file's bytes must be: the LFS SHA-256, else the git blob id (which is then
    /// the blob's name in the cache, as the Hub's `ETag`).
    pub(crate) fn pinned(&self) -> PinnedFile {
        match &self.lfs_sha256 {
            Some(sha) => PinnedFile {
                path: self.path.clone(),
                size_bytes: self.size,
                kind: DigestKind::Sha256,
                digest: sha.clone(),
            },
            None => PinnedFile {
                path: self.path.clone(),
                size_bytes: self.size,
                kind: DigestKind::GitBlobSha1,
                digest: self.oid.clone(),
            },
        }
    }
}

/// Python `fnmatch.fnmatch` on a POSIX system (case-sensitive): `*` any run of characters
/// (including `/`), `?` one character, `[seq]`/`[!seq]` a set with ranges.
pub(crate) fn fnmatch(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches_from(&pattern, &name)
}

fn matches_from(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class(&pattern[p..], name[n]) {
                        if matched {
                            p += next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == '[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// A `[...]` class at the start of `pattern`: whether `c` is in it and the class's length;
/// `None` when the bracket is not closed (then it is a literal `[`, as in Python).
fn class(pattern: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(pattern.get(i), Some('!'));
    if negated {
        i += 1;
    }
    let start = i;
    let mut matched = false;
    while i < pattern.len() {
        if pattern[i] == ']' && i > start {
            return Some((matched != negated, i + 1));
        }
        if i + 2 < pattern.len() && pattern[i + 1] == '-' && pattern[i + 2] != ']' {
            if pattern[i] <= c && c <= pattern[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if pattern[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Whether `path` matches any of `patterns` as `huggingface_hub.utils.filter_repo_objects`
/// decides for `allow_patterns` (a pattern ending in `/` gets a `*`): the rule a manifest's
/// `include` follows. Public so that tools comparing with `snapshot_download` (the benchmark)
/// select with the same rule.
pub fn matches_any(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| {
        if p.ends_with('/') {
            fnmatch(&format!("{p}*"), path)
        } else {
            fnmatch(p, path)
        }
    })
}

/// Whether a weight file name names a safetensors index (`*.safetensors.index.json`).
pub(crate) fn is_safetensors_index(path: &str) -> bool {
    path.ends_with(".safetensors.index.json")
}

/// The documents of the repo the rules need to read before [`select`] can finish: the
/// safetensors index among the first selection, and `modules.json` for the
/// sentence-transformers preset. Only those the tree holds.
pub(crate) fn documents_needed(
    tree: &[RepoFile],
    selection: &FileSelection,
    primary: &str,
) -> Vec<String> {
    let paths: BTreeSet<&str> = tree.iter().map(|f| f.path.as_str()).collect();
    let sentence_transformers = selection.preset == Some(Preset::SentenceTransformers);
    let mut first = first_selection(&paths, selection, primary);
    if sentence_transformers && paths.contains(MODULES_JSON) {
        first.insert(MODULES_JSON.to_owned());
    }
    // `modules.json` taken by a pattern is just a file: only the preset reads its folders.
    first
        .into_iter()
        .filter(|p| is_safetensors_index(p) || (sentence_transformers && p == MODULES_JSON))
        .collect()
}

/// The paths of the set (sorted, always including `primary`): `documents` holds the content
/// of the paths [`documents_needed`] named. Shards named by a selected safetensors index and
/// the folders of `modules.json` are added; decoys (ONNX exports, `pytorch_model.bin` beside
/// safetensors, `README.md`, `.gitattributes`) are never taken by a preset.
pub(crate) fn select(
    tree: &[RepoFile],
    selection: &FileSelection,
    primary: &str,
    documents: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<String>, String> {
    let paths: BTreeSet<&str> = tree.iter().map(|f| f.path.as_str()).collect();
    let mut chosen = first_selection(&paths, selection, primary);
    if selection.preset == Some(Preset::SentenceTransformers) {
        if let Some(modules) = documents.get(MODULES_JSON) {
            for folder in module_folders(modules)? {
                let prefix = format!("{folder}/");
                let in_folder: Vec<&str> = paths
                    .iter()
                    .copied()
                    .filter(|p| p.starts_with(&prefix))
                    .collect();
                let has_safetensors = in_folder.iter().any(|p| p.ends_with(".safetensors"));
                for path in in_folder {
                    let rest = &path[prefix.len()..];
                    let decoy = is_decoy(rest)
                        || (has_safetensors && rest.ends_with(".bin"))
                        || rest.contains('/');
                    if !decoy {
                        chosen.insert(path.to_owned());
                    }
                }
            }
        }
    }
    let indexes: Vec<String> = chosen
        .iter()
        .filter(|p| is_safetensors_index(p))
        .cloned()
        .collect();
    for index in indexes {
        let Some(bytes) = documents.get(&index) else {
            continue;
        };
        let folder = index.rsplit_once('/').map(|(f, _)| format!("{f}/"));
        for shard in shard_names(bytes).map_err(|e| format!("{index}: {e}"))? {
            let path = format!("{}{shard}", folder.as_deref().unwrap_or(""));
            if !paths.contains(path.as_str()) {
                return Err(format!(
                    "{index} names the shard `{path}`, which the repo does not have"
                ));
            }
            chosen.insert(path);
        }
    }
    Ok(chosen.into_iter().collect())
}

/// The patterns and preset applied to the tree, before documents are read.
fn first_selection(
    paths: &BTreeSet<&str>,
    selection: &FileSelection,
    primary: &str,
) -> BTreeSet<String> {
    let mut chosen = BTreeSet::new();
    chosen.insert(primary.to_owned());
    for path in paths {
        if matches_any(&selection.include, path) {
            chosen.insert((*path).to_owned());
        }
    }
    if let Some(preset) = selection.preset {
        let mut names: Vec<&str> = vec!["config.json"];
        names.extend(TOKENIZER_FILES);
        match preset {
            Preset::SentenceTransformers => names.extend([
                MODULES_JSON,
                "sentence_bert_config.json",
                "config_sentence_transformers.json",
            ]),
            Preset::Transformers => names.push("preprocessor_config.json"),
        }
        for name in names {
            if paths.contains(name) {
                chosen.insert(name.to_owned());
            }
        }
    }
    chosen
}

/// Files a preset never takes inside a module folder.
fn is_decoy(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "readme.md" || lower == ".gitattributes" || lower.ends_with(".onnx")
}

/// The non-root folders of a sentence-transformers `modules.json`.
pub(crate) fn module_folders(modules_json: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_slice(modules_json)
        .map_err(|e| format!("modules.json is not JSON: {e}"))?;
    let items = value
        .as_array()
        .ok_or("modules.json is not a JSON array of modules")?;
    let mut folders = Vec::new();
    for item in items {
        let path = item
            .get("path")
            .and_then(|p| p.as_str())
            .ok_or("a module in modules.json has no `path` string")?;
        let path = path.trim_matches('/');
        if path.is_empty() {
            continue;
        }
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.len() > 255)
            || path.contains('\\')
            || path.chars().any(char::is_control)
        {
            return Err(format!(
                "modules.json names the unsafe folder `{}`",
                path.escape_debug()
            ));
        }
        folders.push(path.to_owned());
    }
    Ok(folders)
}

/// The distinct shard file names of a safetensors index (`weight_map` values), sorted.
pub(crate) fn shard_names(index_json: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(index_json).map_err(|e| format!("not JSON: {e}"))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no `weight_map` object")?;
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| format!("tensor `{tensor}` maps to a non-string"))?;
        if file.is_empty()
            || file.contains(['/', '\\'])
            || file.starts_with('.')
            || file.len() > 255
            || file.chars().any(char::is_control)
        {
            return Err(format!(
                "tensor `{}` maps to the unsafe file `{}`",
                tensor.escape_debug(),
                file.escape_debug()
            ));
        }
        shards.insert(file.to_owned());
    }
    Ok(shards.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> RepoFile {
        RepoFile {
            path: path.to_owned(),
            size: 1,
            oid: "0".repeat(40),
            lfs_sha256: None,
        }
    }

    fn repo() -> Vec<RepoFile> {
        [
            ".gitattributes",
            "README.md",
            "1_Pooling/config.json",
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
            "2_Dense/pytorch_model.bin",
            "config.json",
            "config_sentence_transformers.json",
            "model.safetensors",
            "modules.json",
            "onnx/model.onnx",
            "pytorch_model.bin",
            "sentence_bert_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
        .into_iter()
        .map(file)
        .collect()
    }

    const MODULES: &str = r#"[{"idx":0,"name":"0","path":"","type":"T"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"P"},
        {"idx":2,"name":"2","path":"2_Dense","type":"D"}]"#;

    #[test]
    fn fnmatch_behaves_like_python() {
        assert!(fnmatch("*.json", "1_Pooling/config.json"), "* crosses /");
        assert!(fnmatch("config.json", "config.json"));
        assert!(!fnmatch("config.json", "1_Pooling/config.json"));
        assert!(fnmatch("tokenizer*", "tokenizer_config.json"));
        assert!(fnmatch("vocab.???", "vocab.txt"));
        assert!(fnmatch("[mp]*.bin", "pytorch_model.bin"));
        assert!(!fnmatch("[!p]*.bin", "pytorch_model.bin"));
        assert!(fnmatch("a[0-9]", "a5"));
        assert!(fnmatch("[x", "[x"), "an unclosed bracket is literal");
        assert!(matches_any(
            &["1_Pooling/".to_owned()],
            "1_Pooling/config.json"
        ));
        assert!(!fnmatch("*.json", "model.safetensors"));
    }

    #[test]
    fn the_sentence_transformers_preset_takes_what_a_loader_opens_and_no_decoy() {
        let selection = FileSelection {
            preset: Some(Preset::SentenceTransformers),
            ..FileSelection::default()
        };
        let tree = repo();
        assert_eq!(
            documents_needed(&tree, &selection, "model.safetensors"),
            ["modules.json"]
        );
        let mut docs = BTreeMap::new();
        docs.insert("modules.json".to_owned(), MODULES.as_bytes().to_vec());
        let chosen = select(&tree, &selection, "model.safetensors", &docs).unwrap();
        assert_eq!(
            chosen,
            [
                "1_Pooling/config.json",
                "2_Dense/config.json",
                "2_Dense/model.safetensors",
                "config.json",
                "config_sentence_transformers.json",
                "model.safetensors",
                "modules.json",
                "sentence_bert_config.json",
                "special_tokens_map.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "vocab.txt",
            ]
        );
    }

    #[test]
    fn the_transformers_preset_and_patterns() {
        let mut tree = repo();
        tree.push(file("preprocessor_config.json"));
        let selection = FileSelection {
            preset: Some(Preset::Transformers),
            include: vec!["*.md".to_owned()],
            ..FileSelection::default()
        };
        let chosen = select(&tree, &selection, "model.safetensors", &BTreeMap::new()).unwrap();
        assert!(chosen.contains(&"preprocessor_config.json".to_owned()));
        assert!(
            chosen.contains(&"README.md".to_owned()),
            "asked for by pattern"
        );
        assert!(!chosen.contains(&"modules.json".to_owned()));
        assert!(!chosen.contains(&"pytorch_model.bin".to_owned()));
    }

    #[test]
    fn a_safetensors_index_brings_its_shards() {
        let mut tree = vec![file("config.json"), file("model.safetensors.index.json")];
        tree.push(file("model-00001-of-00002.safetensors"));
        tree.push(file("model-00002-of-00002.safetensors"));
        let index = br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors",
            "b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
        let primary = "model.safetensors.index.json";
        let selection = FileSelection {
            preset: Some(Preset::Transformers),
            ..FileSelection::default()
        };
        assert_eq!(documents_needed(&tree, &selection, primary), [primary]);
        let mut docs = BTreeMap::new();
        docs.insert(primary.to_owned(), index.to_vec());
        let chosen = select(&tree, &selection, primary, &docs).unwrap();
        assert_eq!(chosen.len(), 4, "{chosen:?}");
        docs.insert(
            primary.to_owned(),
            br#"{"weight_map":{"a":"missing.safetensors"}}"#.to_vec(),
        );
        let err = select(&tree, &selection, primary, &docs).unwrap_err();
        assert!(err.contains("missing.safetensors"), "{err}");
        docs.insert(
            primary.to_owned(),
            br#"{"weight_map":{"a":"../x.safetensors"}}"#.to_vec(),
        );
        assert!(select(&tree, &selection, primary, &docs).is_err());
    }

    #[test]
    fn hostile_module_folders_are_refused() {
        assert!(module_folders(br#"[{"path":"../etc"}]"#).is_err());
        assert!(module_folders(b"{}").is_err());
        assert_eq!(
            module_folders(MODULES.as_bytes()).unwrap(),
            ["1_Pooling", "2_Dense"]
        );
    }
}
