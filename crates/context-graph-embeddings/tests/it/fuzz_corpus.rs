//! The fuzz targets' inputs as plain tests (issue 28): every committed seed
//! (`fuzz/corpus/<target>/seed-*`) and every minimized input a fuzzer found
//! (`fuzz/regressions/<target>/*`) goes through the same entry point as in `cargo fuzz`,
//! which panics when a promise breaks. A crash found by a fuzzer is committed to
//! `fuzz/regressions/` before it is fixed, so it stays fixed.

use std::fs;
use std::path::{Path, PathBuf};

use context_graph_embeddings::artifacts::Manifest;
use context_graph_embeddings::fuzzing::{self, ServerRange, SignatureChecker};
use hub_emulator::RangeRequest;

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

/// The seed and regression inputs of one target, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for folder in ["corpus", "regressions"] {
        let dir = Path::new(FUZZ).join(folder).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if folder == "regressions" || name.starts_with("seed-") {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`; fails naming the input that broke a promise.
fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no seed committed for fuzz target {target}"
    );
    for file in &files {
        let data = fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)))
        {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{} breaks a promise: {message}", file.display());
        }
    }
    files.len()
}

#[test]
fn fuzz_inputs_of_every_target_keep_their_promises() {
    replay("manifest", fuzzing::manifest);
    replay("safetensors_file", fuzzing::safetensors_file);
    replay("safetensors_header", fuzzing::safetensors_header);
    replay("shard_index", fuzzing::shard_index);
    replay("hub_metadata", fuzzing::hub_metadata);
    replay("content_range", fuzzing::content_range);
    replay("tree_json", fuzzing::tree_json);
    replay("shared_refs", fuzzing::shared_refs);
    replay("oci_manifest", fuzzing::oci_manifest);
    replay("registry_challenge", fuzzing::registry_challenge);
    replay("tree_listing", |data| {
        fuzzing::tree_listing(data);
    });
    let signatures = signature_checker();
    replay("signature_bundle", |data| {
        signatures.check(data);
    });
    replay("range_round_trip", |data| {
        fuzzing::range_round_trip(data, emulator_range);
    });
    let manifest = fs::read_to_string(Path::new(FUZZ).join("seeds/bundle-manifest.json")).unwrap();
    let importer = fuzzing::BundleImporter::new(&manifest);
    replay("bundle_import", |data| {
        importer.import(data);
    });
}

const OMS_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oms-vectors");

/// The checker of the `signature_bundle` target, built as the target builds it: the OMS
/// vectors' key, root and identity, their key and certificate signatures as valid seeds.
fn signature_checker() -> SignatureChecker {
    let read = |path: &str| fs::read(Path::new(OMS_VECTORS).join(path)).unwrap();
    let seeds: Vec<Vec<u8>> = ["certificate", "elliptic-key"]
        .iter()
        .flat_map(|kind| {
            ["v1.0.0", "v1.0.1", "v1.1.0"].map(|v| read(&format!("{v}-{kind}/model.sig")))
        })
        .collect();
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    SignatureChecker::new(
        &read("keys/signing-key-pub.pem"),
        &read("keys/ca-cert.pem"),
        "CN=intermediate-ca",
        &seeds,
    )
}

/// The Hub emulator's own `Range` parser, as the `range_round_trip` target calls it.
fn emulator_range(header: &str, total: u64) -> ServerRange {
    match hub_emulator::parse_range(header, total) {
        RangeRequest::Full => ServerRange::Full,
        RangeRequest::Span(start, end) => ServerRange::Span(start, end),
        RangeRequest::Unsatisfiable => ServerRange::Unsatisfiable,
    }
}

/// The seeds are the valid shapes the fuzzer mutates from: they must pass, or the fuzzer
/// starts from rejections only.
#[test]
fn fuzz_seeds_are_accepted_inputs() {
    for file in inputs("manifest").iter().filter(|f| is_seed(f)) {
        let text = fs::read_to_string(file).unwrap();
        Manifest::parse(&text, "seed").unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    let manifest = fs::read_to_string(Path::new(FUZZ).join("seeds/bundle-manifest.json")).unwrap();
    let importer = fuzzing::BundleImporter::new(&manifest);
    for file in inputs("bundle_import").iter().filter(|f| is_seed(f)) {
        assert!(
            importer.import(&fs::read(file).unwrap()),
            "{} does not import",
            file.display()
        );
    }
    // Listings as huggingface_hub writes them are read; the hostile seeds (one broken rule
    // each) are refused whole.
    for file in inputs("tree_listing").iter().filter(|f| is_seed(f)) {
        let hostile = file.to_string_lossy().contains("seed-hostile-");
        assert_eq!(
            fuzzing::tree_listing(&fs::read(file).unwrap()).is_none(),
            hostile,
            "{}",
            file.display()
        );
    }
    // Key and certificate bundles verify under one of the two signers; keyless ones (which
    // need Sigstore's online trust root) under none.
    let signatures = signature_checker();
    for file in inputs("signature_bundle").iter().filter(|f| is_seed(f)) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let verified = signatures.check(&fs::read(file).unwrap());
        let keyless = name.contains("sigstore");
        assert!(
            (verified == 0) == keyless,
            "{name}: verified by {verified} signer(s)"
        );
    }
    for file in inputs("safetensors_file").iter().filter(|f| is_seed(f)) {
        context_graph_embeddings::safetensors::check_file(file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

fn is_seed(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
}
