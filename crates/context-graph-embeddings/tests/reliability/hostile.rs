//! Hostile input: manifests (property tests of `Manifest::parse`, path traversal, absurd
//! sizes), safetensors headers, links planted in the cache that point outside it, and secrets
//! (the token in `Debug`, error text, logs at every level, progress events and CDN requests).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::test_support::CacheLayout;
use context_graph_embeddings::artifacts::{ArtifactManagerConfig, Manifest, ModelArtifactManager};
use context_graph_embeddings::safetensors::{check_file, parse_header, MAX_HEADER_BYTES};
use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{Fault, FaultRule, FaultTarget, Host};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::{
    evidence, normalize, pinned, unpinned, within, ChildProcess, Fixture, Options,
};

const AREA_MANIFEST: &str = "Hostile manifests";
const AREA_SAFETENSORS: &str = "Hostile safetensors headers";
const AREA_LINKS: &str = "Links planted in the cache";
const AREA_SECRETS: &str = "Secrets";

const FIELDS: [&str; 7] = [
    "model_id",
    "repo_id",
    "filename",
    "sha256",
    "size_bytes",
    "revision",
    "builtin",
];

// ------------------------------------------------------------------ manifests

/// A valid artifact entry for Entity.
fn good_entry() -> Value {
    json!({
        "model_id": "Entity",
        "repo_id": "org/name",
        "filename": "model.safetensors",
        "sha256": "ab".repeat(32),
        "size_bytes": 1000,
        "revision": "main",
    })
}

/// A manifest text whose first entry is `entry` and whose other 11 models are built-ins.
fn manifest_with(entry: Value) -> String {
    let mut entries = vec![entry];
    entries.extend(
        ModelId::ALL
            .iter()
            .filter(|m| **m != ModelId::Entity)
            .map(|m| json!({ "model_id": m.as_str(), "builtin": true })),
    );
    Value::Array(entries).to_string()
}

/// Every path the cache derives from an accepted entry stays where it belongs.
fn assert_paths_contained(manifest: &Manifest) -> Result<(), String> {
    let root = Path::new("/cache");
    let layout = CacheLayout::new(root);
    for artifact in manifest.artifacts() {
        let repo_dir = layout.repo_dir(&artifact.repo_id);
        let contained = |path: &Path, inside: &Path| {
            normalize(path) == path && path.starts_with(inside) && path != inside
        };
        if !(contained(&repo_dir, root) && repo_dir.parent() == Some(root)) {
            return Err(format!("repo folder {} escapes", repo_dir.display()));
        }
        let commit = "c".repeat(40);
        let snapshots = repo_dir.join("snapshots").join(&commit);
        let snapshot = layout.snapshot_path(&artifact.repo_id, &commit, &artifact.filename);
        if !contained(&snapshot, &snapshots) {
            return Err(format!("snapshot path {} escapes", snapshot.display()));
        }
        let reference = layout.ref_path(&artifact.repo_id, artifact.revision_or_default());
        if !contained(&reference, &repo_dir.join("refs")) {
            return Err(format!("ref path {} escapes", reference.display()));
        }
        if let Some(sha) = &artifact.sha256 {
            let lock = layout.lock_path(&artifact.repo_id, sha);
            let blob = layout.blob_path(&artifact.repo_id, sha);
            if !contained(&lock, &root.join(".locks")) || !contained(&blob, &repo_dir.join("blobs"))
            {
                return Err(format!(
                    "lock {} or blob {} escapes",
                    lock.display(),
                    blob.display()
                ));
            }
        }
    }
    Ok(())
}

/// Parses and checks the outcome: success with contained paths, or a `ManifestSyntax` /
/// `ManifestEntry` error naming a real field. Returns the field named, if any.
fn parse_outcome(text: &str) -> Result<Option<&'static str>, String> {
    match Manifest::parse(text, "prop") {
        Ok(manifest) => assert_paths_contained(&manifest).map(|()| None),
        Err(EmbeddingError::ManifestSyntax { origin, reason }) => {
            if origin == "prop" && !reason.is_empty() {
                Ok(None)
            } else {
                Err(format!("syntax error without origin or reason: {reason}"))
            }
        }
        Err(EmbeddingError::ManifestEntry { field, entry, .. }) => {
            if FIELDS.contains(&field) && (entry.starts_with('#') || entry.starts_with("for ")) {
                Ok(Some(field))
            } else {
                Err(format!("rejection names no real field: {field} / {entry}"))
            }
        }
        Err(other) => Err(format!("unexpected error kind: {other:?}")),
    }
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-zA-Z0-9._/\\\\ -]{0,24}",
        "[0-9a-fA-F]{64}",
        "[0-9a-f]{40}",
        proptest::sample::select(vec![
            "../../../etc/passwd",
            "/etc/passwd",
            "..",
            ".",
            "a/../b",
            "org/../x",
            "refs/../../x",
            "a\\b",
            "a//b",
            "models--x",
            "org--x/name",
            "x.lock",
            ".git",
            "main",
            "refs/pr/1",
            "a\u{0}b",
            "\u{202e}evil",
            "Entity",
            "Semantic",
        ])
        .prop_map(str::to_owned),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(hostile_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Runs a property over `cases` generated inputs; a failure names the smallest failing input.
fn check_property<S: Strategy>(
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(error) = runner.run(&strategy, property) {
        panic!("{error}");
    }
}

/// Any text: no panic; an accepted manifest keeps every cache path contained; a rejection is
/// a syntax error or names the entry and a real field.
#[test]
fn manifest_parse_never_panics_on_any_text() {
    check_property(400, ".{0,300}", |text: String| {
        parse_outcome(&text)
            .map(|_| ())
            .map_err(TestCaseError::fail)
    });
    evidence(
        AREA_MANIFEST,
        "any text as a manifest (property test, 400 cases)",
        "no panic; a syntax error, or a rejection naming the entry and a real field",
        "every accepted entry's blob, snapshot, ref and lock paths stay inside their cache folders",
        &test_name!(),
    );
}

/// Any JSON document, and any JSON value as a whole entry.
#[test]
fn manifest_parse_never_panics_on_any_json() {
    check_property(400, (arb_json(), any::<bool>()), |(value, as_entry)| {
        let text = if as_entry {
            manifest_with(value)
        } else {
            value.to_string()
        };
        parse_outcome(&text)
            .map(|_| ())
            .map_err(TestCaseError::fail)
    });
    evidence(
        AREA_MANIFEST,
        "any JSON document, any JSON value as an entry (property test, 400 cases)",
        "no panic; ManifestSyntax, or ManifestEntry naming the entry and a real field",
        "accepted entries' cache paths stay inside their folders",
        &test_name!(),
    );
}

/// One field of a valid entry set to any JSON value: accepted (paths contained) or rejected
/// naming exactly that field.
#[test]
fn a_hostile_field_value_is_rejected_naming_that_field() {
    check_property(
        400,
        (proptest::sample::select(FIELDS.to_vec()), arb_json()),
        |(field, value)| {
            let mut entry = good_entry();
            entry[field] = value.clone();
            match parse_outcome(&manifest_with(entry)).map_err(TestCaseError::fail)? {
                None => Ok(()),
                Some(named) => {
                    prop_assert_eq!(named, field, "value {}", value);
                    Ok(())
                }
            }
        },
    );
    evidence(
        AREA_MANIFEST,
        "any JSON value (hostile strings, `..`, absolute paths, NUL, huge and negative numbers, nested objects) in any field (property test, 400 cases)",
        "accepted only when valid; every rejection is ManifestEntry naming exactly the field that was changed",
        "accepted entries' cache paths stay inside their folders",
        &test_name!(),
    );
}

/// A field removed: fine when optional, else rejected naming it; an unknown field added:
/// rejected.
#[test]
fn missing_and_unknown_fields() {
    check_property(
        400,
        (
            proptest::sample::select(FIELDS.to_vec()),
            hostile_string(),
            arb_json(),
        ),
        |(field, key, value)| {
            let mut entry = good_entry();
            entry.as_object_mut().unwrap().remove(field);
            let named = parse_outcome(&manifest_with(entry)).map_err(TestCaseError::fail)?;
            let required = matches!(field, "model_id" | "repo_id" | "filename");
            prop_assert_eq!(named, required.then_some(field));

            let mut entry = good_entry();
            entry.as_object_mut().unwrap().insert(key.clone(), value);
            let outcome = Manifest::parse(&manifest_with(entry), "prop");
            if FIELDS.contains(&key.as_str()) {
                return Ok(());
            }
            match outcome {
                Err(EmbeddingError::ManifestEntry { reason, .. }) => {
                    prop_assert!(reason.contains("unknown field"), "{}", reason);
                }
                other => prop_assert!(false, "unknown key {:?} accepted: {:?}", key, other),
            }
            Ok(())
        },
    );
    evidence(
        AREA_MANIFEST,
        "a field removed, or an unknown field added (property test, 400 cases)",
        "missing required fields are rejected naming the field; optional ones default; unknown fields are rejected by name",
        "nothing read or written",
        &test_name!(),
    );
}

#[test]
fn path_traversal_through_manifest_fields_is_rejected() {
    let test = test_name!();
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "filename",
            vec![
                "../../../etc/passwd",
                "/etc/passwd",
                "a/../../b",
                "..",
                ".",
                "a/./b",
                "a//b",
                "a\\..\\b",
                "a/\u{0}b",
                "",
                "sub/",
            ],
        ),
        (
            "repo_id",
            vec![
                "../x",
                "org/../x",
                "org/..",
                "..",
                ".",
                "a/b/c",
                "/abs",
                "org//x",
                "org--x/name",
                "org/na me",
                "",
                "org/.x",
                ".org/x",
                "org/x\u{0}",
            ],
        ),
        (
            "revision",
            vec![
                "../main",
                "refs/../../x",
                "/main",
                "main/",
                "..",
                ".git",
                "refs/.x",
                "a//b",
                "a b",
                "x.lock",
                "",
                "a\u{0}",
            ],
        ),
    ];
    for (field, values) in cases {
        let mut first_error = None;
        for value in &values {
            let mut entry = good_entry();
            entry[field] = json!(value);
            match Manifest::parse(&manifest_with(entry), "hostile.json") {
                Err(error @ EmbeddingError::ManifestEntry { field: named, .. }) => {
                    assert_eq!(named, field, "{value:?}: {error}");
                    first_error.get_or_insert(error.to_string());
                }
                other => panic!("{field} = {value:?} must be rejected, got {other:?}"),
            }
        }
        let shown: Vec<String> = values.iter().take(4).map(|v| format!("`{v}`")).collect();
        evidence(
            AREA_MANIFEST,
            &format!(
                "path traversal through `{field}` ({} values, e.g. {})",
                values.len(),
                shown.join(", ")
            ),
            &format!("rejected, naming entry and field: {}", first_error.unwrap()),
            "nothing read or written (the manifest is refused before any cache path is built)",
            &test,
        );
    }
}

#[test]
fn absurd_sizes_are_rejected() {
    let test = test_name!();
    let values = [
        json!(-1),
        json!(0),
        json!(1u64 << 41),
        json!(u64::MAX),
        json!(1e30),
        json!(1.5),
        json!("1000"),
        json!(true),
        json!([1000]),
    ];
    let mut first = None;
    for value in &values {
        let mut entry = good_entry();
        entry["size_bytes"] = value.clone();
        match Manifest::parse(&manifest_with(entry), "hostile.json") {
            Err(
                error @ EmbeddingError::ManifestEntry {
                    field: "size_bytes",
                    ..
                },
            ) => {
                first.get_or_insert(error.to_string());
            }
            other => panic!("size_bytes = {value} must be rejected, got {other:?}"),
        }
    }
    evidence(
        AREA_MANIFEST,
        "absurd sizes (-1, 0, 2^41, u64::MAX, 1e30, 1.5, \"1000\", true, [1000])",
        &format!("rejected: {}", first.unwrap()),
        "nothing read or written",
        &test,
    );
}

// ------------------------------------------------------------------ safetensors

/// A file: 8-byte little-endian `declared` header length, then `header`, then `data` zero bytes.
fn safetensors_file(dir: &Path, name: &str, declared: u64, header: &[u8], data: usize) -> PathBuf {
    let mut bytes = declared.to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend(std::iter::repeat_n(0u8, data));
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

fn honest(dir: &Path, name: &str, header: &str, data: usize) -> PathBuf {
    safetensors_file(dir, name, header.len() as u64, header.as_bytes(), data)
}

#[test]
fn malformed_safetensors_headers_are_rejected_quickly() {
    let test = test_name!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "header length 2^63",
            safetensors_file(d, "a", 1 << 63, b"{}", 0),
            "header length",
        ),
        (
            "header length u64::MAX",
            safetensors_file(d, "b", u64::MAX, b"{}", 0),
            "header length",
        ),
        (
            "header length at the 100 MiB limit + 1, file of 1 KiB",
            safetensors_file(d, "c", MAX_HEADER_BYTES + 1, b"{}", 1024),
            "header length",
        ),
        (
            "header length one byte past the end of the file",
            safetensors_file(d, "d", 3, b"{}", 0),
            "header length",
        ),
        (
            "file shorter than the 8-byte length",
            {
                let p = d.join("e");
                fs::write(&p, b"abc").unwrap();
                p
            },
            "too short",
        ),
        (
            "tensor offsets outside the file",
            honest(
                d,
                "f",
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                8,
            ),
            "outside",
        ),
        (
            "tensor end offset 2^64-1",
            honest(
                d,
                "g",
                r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,18446744073709551615]}}"#,
                8,
            ),
            "outside",
        ),
        (
            "overlapping tensors",
            honest(
                d,
                "h",
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
            ),
            "overlaps",
        ),
        (
            "negative offset",
            honest(
                d,
                "i",
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}"#,
                8,
            ),
            "negative",
        ),
        (
            "reversed range (end before begin)",
            honest(
                d,
                "j",
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                8,
            ),
            "outside",
        ),
        (
            "dtype/shape not matching the span",
            honest(
                d,
                "k",
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
            ),
            "spans 8",
        ),
        (
            "shape whose size overflows u64",
            honest(
                d,
                "l",
                r#"{"a":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                8,
            ),
            "overflows",
        ),
        (
            "negative dimension",
            honest(
                d,
                "m",
                r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "negative",
        ),
        (
            "unknown dtype",
            honest(
                d,
                "n",
                r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
                8,
            ),
            "unknown dtype",
        ),
        (
            "gap between tensors",
            honest(
                d,
                "o",
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}"#,
                12,
            ),
            "gap",
        ),
        (
            "header that is not JSON (invalid UTF-8)",
            safetensors_file(d, "p", 4, &[0xff, 0xfe, 0x7b, 0x00], 0),
            "not JSON",
        ),
        (
            "header that is a JSON array",
            honest(d, "q", "[1,2]", 0),
            "not a JSON object",
        ),
    ];
    for (name, path, needle) in cases {
        let started = Instant::now();
        let outcome = check_file(&path);
        let took = started.elapsed();
        let error = match outcome {
            Err(error @ EmbeddingError::InvalidSafetensors { .. }) => error,
            other => panic!("{name}: must be rejected as invalid, got {other:?}"),
        };
        let text = error.to_string();
        assert!(text.contains(needle), "{name}: {text}");
        assert!(
            took < Duration::from_millis(500),
            "{name}: took {took:?} (allocating or reading more than the header?)"
        );
        let reason = text
            .split_once("invalid safetensors file: ")
            .map_or(text.as_str(), |(_, r)| r);
        evidence(
            AREA_SAFETENSORS,
            name,
            &format!("rejected in {} µs: {reason}", took.as_micros()),
            "file only read up to its header; nothing loaded",
            &test,
        );
    }
}

/// Random headers and random files: an answer, never a panic, never a huge allocation.
#[test]
fn safetensors_checks_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    check_property(
        300,
        (
            proptest::collection::vec(any::<u8>(), 0..200),
            0u64..1 << 20,
            any::<u64>(),
            arb_json(),
        ),
        |(header, data, declared, json_header)| {
            let _ = parse_header(&header, data);
            let _ = parse_header(json_header.to_string().as_bytes(), data);
            let path = safetensors_file(dir.path(), "r", declared, &header, 16);
            let _ = check_file(&path);
            let path = honest(
                dir.path(),
                "s",
                &json!({ "t": json_header }).to_string(),
                16,
            );
            let _ = check_file(&path);
            Ok(())
        },
    );
    evidence(
        AREA_SAFETENSORS,
        "random bytes and random JSON as headers, random declared lengths (property test, 300 cases)",
        "an error or a summary, never a panic",
        "nothing written",
        &test_name!(),
    );
}

// ------------------------------------------------------------------ links in the cache

/// A file outside the cache that nothing may delete or read.
struct Foreign {
    path: PathBuf,
    content: Vec<u8>,
}

impl Foreign {
    fn new(path: PathBuf, content: &[u8]) -> Foreign {
        let foreign = Foreign {
            path,
            content: content.to_vec(),
        };
        foreign.restore();
        foreign
    }

    fn restore(&self) {
        fs::create_dir_all(self.path.parent().unwrap()).unwrap();
        fs::write(&self.path, &self.content).unwrap();
    }

    fn intact(&self) -> bool {
        fs::read(&self.path).ok().as_deref() == Some(self.content.as_slice())
    }
}

/// A cache with both models downloaded, and a folder outside it.
async fn downloaded(fx: &Fixture, name: &str) -> (PathBuf, PathBuf, ModelArtifactManager) {
    let cache = fx.fresh_cache(name);
    let manager = fx.manager_at(&cache);
    within(
        Duration::from_secs(30),
        "ensure",
        manager.ensure_all_models(),
    )
    .await
    .unwrap();
    let outside = fx.dir.path().join(format!("{name}-outside"));
    fs::create_dir_all(&outside).unwrap();
    (cache, outside, manager)
}

fn replace_with_link(path: &Path, target: &Path) {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// Plants links in a downloaded cache; returns the files outside it that must stay untouched.
type Plant = fn(&Fixture, &Path, &Path) -> Vec<Foreign>;

/// Every way of planting links that the cache operations must not follow.
const PLANTS: [(&str, Plant); 5] = [
    (
        "snapshot entries → absolute links to files outside (one holding the right bytes)",
        |fx, cache, outside| {
            let foreign = vec![
                Foreign::new(
                    outside.join("right-bytes.safetensors"),
                    &fx.file(ModelId::Entity).content,
                ),
                Foreign::new(outside.join("precious.txt"), b"someone else's file"),
            ];
            replace_with_link(
                &fx.snapshot_path_in(cache, ModelId::Entity),
                &foreign[0].path,
            );
            replace_with_link(
                &fx.snapshot_path_in(cache, ModelId::Graph),
                &foreign[1].path,
            );
            foreign
        },
    ),
    ("blobs → links to files outside", |fx, cache, outside| {
        let foreign = vec![
            Foreign::new(outside.join("blob-a"), b"foreign a"),
            Foreign::new(outside.join("blob-b"), b"foreign b"),
        ];
        replace_with_link(&fx.blob_path_in(cache, ModelId::Entity), &foreign[0].path);
        replace_with_link(&fx.blob_path_in(cache, ModelId::Graph), &foreign[1].path);
        foreign
    }),
    (
        "`blobs/` folder → link to a folder outside",
        |fx, cache, outside| {
            let sha = &fx.file(ModelId::Entity).sha256;
            let store = outside.join("store");
            let foreign = vec![
                Foreign::new(store.join(sha), b"not the model"),
                Foreign::new(
                    store.join(format!("{sha}.0badc0de.incomplete")),
                    b"someone's partial",
                ),
                Foreign::new(store.join("notes.txt"), b"keep"),
            ];
            replace_with_link(&fx.blobs_dir_in(cache, ModelId::Entity), &store);
            foreign
        },
    ),
    (
        "`snapshots/` folder → link to a folder outside",
        |fx, cache, outside| {
            let graph = fx.file(ModelId::Graph);
            let snaps = outside.join("snaps");
            let foreign = vec![Foreign::new(
                snaps.join(&graph.commit).join(&graph.filename),
                b"not the model either",
            )];
            replace_with_link(
                &fx.repo_dir_in(cache, ModelId::Graph).join("snapshots"),
                &snaps,
            );
            foreign
        },
    ),
    (
        "repo folder `models--org--name` → link to a folder outside",
        |fx, cache, outside| {
            let entity = fx.file(ModelId::Entity);
            let repo = outside.join("repo");
            let foreign = vec![
                Foreign::new(repo.join("blobs").join(&entity.sha256), b"foreign blob"),
                Foreign::new(
                    repo.join("snapshots")
                        .join(&entity.commit)
                        .join(&entity.filename),
                    b"foreign snapshot file",
                ),
            ];
            replace_with_link(&fx.repo_dir_in(cache, ModelId::Entity), &repo);
            foreign
        },
    ),
];

#[derive(Debug, Clone, Copy)]
enum Operation {
    Verify,
    CollectGarbage,
    Clear,
}

/// Runs one operation against every planting; prints evidence; returns broken promises.
async fn probe(operation: Operation, test: &str) -> Vec<String> {
    let fx = Fixture::new(&[
        pinned(ModelId::Entity, 50_000),
        unpinned(ModelId::Graph, 50_000),
    ]);
    let mut broken = Vec::new();
    for (i, (scenario, plant)) in PLANTS.iter().enumerate() {
        let (cache, outside, manager) = downloaded(&fx, &format!("{operation:?}-{i}")).await;
        let foreign = plant(&fx, &cache, &outside);
        let root = fs::canonicalize(&cache).unwrap();
        let (name, shown, touched) = match operation {
            Operation::Verify => {
                let outcomes = manager.verify_present(2, false).await;
                let read: Vec<String> = outcomes
                    .iter()
                    .filter(|o| o.verified.is_some())
                    .filter_map(|o| {
                        let real = fs::canonicalize(o.path.as_ref()?).ok()?;
                        (!real.starts_with(&root)).then(|| {
                            format!(
                                "{} → {} (verified: {:?})",
                                o.model_id,
                                real.display(),
                                o.verified
                            )
                        })
                    })
                    .collect();
                let ready_outside: Vec<String> = [ModelId::Entity, ModelId::Graph]
                    .into_iter()
                    .filter_map(|id| {
                        let real = fs::canonicalize(manager.get_path(id)?).ok()?;
                        (!real.starts_with(&root)).then(|| format!("{id} → {}", real.display()))
                    })
                    .collect();
                if read.is_empty() && ready_outside.is_empty() {
                    (
                        "verify_present",
                        "no file outside the cache was read".to_owned(),
                        false,
                    )
                } else {
                    broken.push(format!("{scenario}: verify_present read {read:?}; ready outside the cache: {ready_outside:?}"));
                    (
                        "verify_present",
                        format!(
                            "READ (hashed) foreign file(s): {}{}",
                            read.join(", "),
                            if ready_outside.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    "; then reported READY from outside the cache: {}",
                                    ready_outside.join(", ")
                                )
                            }
                        ),
                        true,
                    )
                }
            }
            Operation::CollectGarbage | Operation::Clear => {
                let (name, result) = if let Operation::Clear = operation {
                    (
                        "clear_models / clear_cache",
                        manager
                            .clear_models(&[ModelId::Entity, ModelId::Graph])
                            .await
                            .map(|bytes| format!("freed {bytes} B of the cache")),
                    )
                } else {
                    (
                        "collect_garbage(0, include_manifest)",
                        manager
                            .collect_garbage(0, true, false)
                            .await
                            .map(|r| format!("removed {} cache file(s)", r.removed.len())),
                    )
                };
                let hurt: Vec<String> = foreign
                    .iter()
                    .filter(|f| !f.intact())
                    .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
                    .collect();
                let result = result.unwrap_or_else(|e| format!("error: {e}"));
                if hurt.is_empty() {
                    (name, format!("foreign files intact ({result})"), false)
                } else {
                    broken.push(format!("{scenario}: {name} deleted foreign files {hurt:?}"));
                    (
                        name,
                        format!("DELETED foreign file(s): {} ({result})", hurt.join(", ")),
                        true,
                    )
                }
            }
        };
        evidence(
            AREA_LINKS,
            &format!("{scenario}; {name}"),
            &fx.redact(&shown),
            if touched {
                "a file OUTSIDE the cache was touched"
            } else {
                "files outside the cache untouched (checked byte for byte)"
            },
            test,
        );
    }
    broken
}

/// `collect_garbage` and `clear_models` never delete through links planted in the cache.
#[tokio::test]
async fn links_in_the_cache_never_make_gc_or_clear_delete_foreign_files() {
    let test = test_name!();
    let mut broken = probe(Operation::CollectGarbage, &test).await;
    broken.extend(probe(Operation::Clear, &test).await);
    assert!(
        broken.is_empty(),
        "links out of the cache were followed:\n  {}",
        broken.join("\n  ")
    );
}

/// `verify_present` never reads (hashes) a file outside the cache through a planted link,
/// and so never vouches for one.
#[tokio::test]
async fn links_in_the_cache_never_make_verify_read_foreign_files() {
    let test = test_name!();
    let broken = probe(Operation::Verify, &test).await;
    assert!(
        broken.is_empty(),
        "links out of the cache were followed:\n  {}",
        broken.join("\n  ")
    );
}

// ------------------------------------------------------------------ secrets

/// Body of the `secrets` child: logs captured at TRACE into a file (including `log` records
/// of dependencies), three managers (explicit token, wrong token, token from `HF_TOKEN`) and a
/// failing endpoint; every text a user or log could see is returned for the parent to search.
pub(crate) fn secrets_child(spec: &Value, config: &ArtifactManagerConfig) -> Value {
    let log = fs::File::create(spec["log_file"].as_str().unwrap()).unwrap();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::sync::Mutex::new(log))
        .try_init()
        .unwrap();
    tracing::info!("capture started");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut texts: Vec<String> = Vec::new();
        let mut outcomes = Vec::new();
        let root = PathBuf::from(spec["cache_dir"].as_str().unwrap());
        let runs: [(&str, Option<String>, bool, String); 4] = [
            ("explicit token", spec["token"].as_str().map(str::to_owned), false, config.endpoint.clone()),
            ("wrong token", spec["wrong_token"].as_str().map(str::to_owned), false, config.endpoint.clone()),
            ("token from HF_TOKEN", None, true, config.endpoint.clone()),
            ("explicit token, Hub unreachable", spec["token"].as_str().map(str::to_owned), false, "http://127.0.0.1:9".to_owned()),
        ];
        for (i, (name, token, implicit, endpoint)) in runs.into_iter().enumerate() {
            let run_config = ArtifactManagerConfig {
                cache_dir: root.join(format!("run-{i}")),
                hf_token: token,
                implicit_token: implicit,
                endpoint,
                ..config.clone()
            };
            texts.push(format!("{run_config:?}"));
            texts.push(format!("{run_config:#?}"));
            let manager = ModelArtifactManager::new(run_config).unwrap();
            texts.push(format!("{manager:?}"));
            texts.push(format!("{manager:#?}"));
            let mut events = manager.subscribe_progress();
            let result = manager.ensure_all_models().await;
            while let Ok(event) = events.try_recv() {
                texts.push(format!("{event:?}"));
                texts.push(serde_json::to_string(&event).unwrap());
            }
            if let Err(error) = &result {
                texts.push(error.to_string());
                texts.push(format!("{error:?}"));
                texts.push(format!("{error:#?}"));
            }
            for id in [ModelId::Entity, ModelId::Graph] {
                texts.push(format!("{:?}", manager.status(id)));
            }
            texts.push(serde_json::to_string(&manager.readiness_report()).unwrap());
            texts.push(format!("{:?}", manager.verify_present(2, false).await));
            outcomes.push(json!({ "run": name, "ok": result.is_ok(), "error": result.err().map(|e| e.to_string()) }));
        }
        json!({ "texts": texts, "outcomes": outcomes })
    })
}

#[test]
fn the_token_never_leaks() {
    let test = test_name!();
    let token = "hf_reliability_top_secret_4242";
    let wrong = "hf_reliability_wrong_secret_5353";
    let env_token = "hf_reliability_env_secret_6464";
    let fx = Fixture::with_options(
        &[
            pinned(ModelId::Entity, 200_000),
            unpinned(ModelId::Graph, 200_000),
        ],
        Options {
            cdn_redirect: true,
            gated: Some(vec![token.to_owned(), env_token.to_owned()]),
        },
    );
    for id in [ModelId::Entity, ModelId::Graph] {
        let sha = fx.file(id).sha256.clone();
        fx.hub.add_fault(
            FaultRule::new(FaultTarget::get(&sha), Fault::CutAfter { bytes: 70_000 }).times(1),
        );
        fx.hub.add_fault(
            FaultRule::new(FaultTarget::get(&sha), Fault::status(503))
                .skip(1)
                .times(1),
        );
        fx.hub.add_fault(
            FaultRule::new(FaultTarget::head(&fx.file(id).repo_id), Fault::status(429)).times(1),
        );
    }
    let dir = fx.dir.path().join("secrets");
    let log_file = dir.join("trace.log");
    let mut spec = fx.child_spec(&dir.join("hub"), "secrets");
    spec["token"] = json!(token);
    spec["wrong_token"] = json!(wrong);
    spec["log_file"] = json!(log_file);
    let mut child =
        ChildProcess::spawn(spec, &[("HF_TOKEN", env_token.to_owned())], &dir, "secrets");
    let status = child.wait(Duration::from_secs(90));
    assert!(status.success(), "{}", child.log_text());
    let result = child.result().expect("child result");
    let outcomes = result["outcomes"].as_array().unwrap();
    let ok: Vec<bool> = outcomes.iter().map(|o| o["ok"] == true).collect();
    assert_eq!(
        ok,
        [true, false, true, false],
        "the runs did what they were meant to: {outcomes:?}"
    );
    assert!(
        outcomes[1]["error"].as_str().unwrap().contains("gated"),
        "{outcomes:?}"
    );
    let logs = fs::read_to_string(&log_file).unwrap();
    let texts: Vec<String> = result["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let log_lines = logs.lines().count();
    let levels: Vec<&str> = ["TRACE", "DEBUG", " INFO", " WARN"]
        .into_iter()
        .filter(|l| logs.contains(l))
        .collect();
    assert!(
        logs.contains("retrying download") && logs.contains("capture started"),
        "the capturing subscriber must have seen the library's logs: {logs}"
    );
    for secret in [token, wrong, env_token] {
        assert!(!logs.contains(secret), "secret in the logs:\n{logs}");
        for text in &texts {
            assert!(
                !text.contains(secret),
                "secret in a user-visible text: {text}"
            );
        }
    }
    let requests = fx.hub.requests();
    let cdn: Vec<_> = requests.iter().filter(|r| r.host == Host::Cdn).collect();
    assert!(!cdn.is_empty());
    for request in &cdn {
        let seen = format!("{} {:?} {:?}", request.path, request.query, request.headers);
        for secret in [token, wrong, env_token] {
            assert!(
                !seen.contains(secret),
                "secret sent to the CDN: {request:?}"
            );
        }
    }
    assert!(
        requests.iter().any(|r| r.host == Host::Hub
            && r.header("authorization") == Some(&format!("Bearer {env_token}"))),
        "the HF_TOKEN run really used its token"
    );
    evidence(
        AREA_SECRETS,
        "token given explicitly, wrongly, and through HF_TOKEN; retries, cuts, a gated refusal and an unreachable Hub on the way",
        &format!(
            "the token appears in none of {} texts (Debug of config and manager, Display and Debug of errors, {} progress events as Debug and JSON, readiness JSON) nor in {log_lines} log lines captured at every level (levels seen: {})",
            texts.len(),
            texts.iter().filter(|t| t.starts_with("ProgressEvent")).count(),
            levels.join(", ").replace(' ', "")
        ),
        &format!(
            "{} CDN requests carry no Authorization header and no token; the Hub got it",
            cdn.len()
        ),
        &test,
    );
}
