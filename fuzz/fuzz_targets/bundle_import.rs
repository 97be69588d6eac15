//! Fuzz target: whole tar archives imported as bundles into a fresh cache, through the public
//! `import_bundle` (see `context_graph_embeddings::fuzzing::BundleImporter`).
#![no_main]

use std::sync::OnceLock;

use context_graph_embeddings::fuzzing::BundleImporter;

/// The manifest the seed bundles were made for (`fuzz/make-seeds`).
const MANIFEST: &str = include_str!("../seeds/bundle-manifest.json");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static IMPORTER: OnceLock<BundleImporter> = OnceLock::new();
    let _ = IMPORTER
        .get_or_init(|| BundleImporter::new(MANIFEST))
        .import(data);
});
