//! What a snapshot folder holds, for comparing ours with the one `huggingface_hub` lays out:
//! every file below it with its link target and the SHA-256 of its bytes. Included by the test
//! binaries that compare caches (`python_compat.rs`, `real_model.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file below `root` (a `snapshots/<commit>` folder): its path relative to `root` →
/// (link target, empty for a copy; SHA-256 of the bytes).
pub(crate) fn snapshot_tree(root: &Path) -> BTreeMap<String, (PathBuf, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(root)
                .expect("below the root")
                .to_string_lossy()
                .into_owned();
            let target = std::fs::read_link(&path).unwrap_or_default();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.insert(name, (target, hub_emulator::synth::sha256_hex(&bytes)));
        }
    }
    out
}
