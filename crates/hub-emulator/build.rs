//! Embeds the artifact manager's model manifest as the binary's default, when it exists.
//!
//! The manifest belongs to `context-graph-embeddings`; this crate must not depend on that one,
//! and must still build (with an empty default) when the file is absent.

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let source = manifest_dir.join("../context-graph-embeddings/src/artifacts/manifests.json");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"))
        .join("default-manifest.json");
    println!("cargo:rerun-if-changed=build.rs");
    // Watch the file, or while it is missing the nearest existing directory above it, so that
    // creating it later triggers a rebuild (a missing path would rerun this script every build).
    println!(
        "cargo:rerun-if-changed={}",
        nearest_existing(&source).display()
    );
    match std::fs::read_to_string(&source) {
        Ok(text) => {
            std::fs::write(&out, text).expect("write OUT_DIR/default-manifest.json");
            println!("cargo:rustc-env=HUB_EMULATOR_DEFAULT_MANIFEST_FOUND=1");
        }
        Err(_) => std::fs::write(&out, "[]\n").expect("write OUT_DIR/default-manifest.json"),
    }
}

fn nearest_existing(path: &Path) -> &Path {
    path.ancestors().find(|p| p.exists()).unwrap_or(path)
}
