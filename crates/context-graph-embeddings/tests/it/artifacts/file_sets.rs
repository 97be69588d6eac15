//! A model is a set of files: weights, config, tokenizer and modules, every one verified,
//! all from one commit.

use context_graph_embeddings::artifacts::{
    ModelArtifactManager, ReadinessState, VerifiedModel, WeightFormat,
};
use context_graph_embeddings::registry::{ModelRegistry, RegisteredModel};
use context_graph_embeddings::{EmbeddingError, ModelId, ModelRegistryConfig};
use hub_emulator::{synth, Fault, FaultRule, FaultTarget, RepoSpec};

use crate::support::{model, Fixture};

/// A repo like a real sentence-transformers one: weights, config, companions and decoys.
fn with_companions(spec: RepoSpec, _: ModelId) -> RepoSpec {
    let repo = spec.repo_id().to_owned();
    let spec = synth::companion_files(&repo)
        .into_iter()
        .fold(spec, |spec, (path, bytes)| spec.file(&path, bytes));
    spec.lfs_file("pytorch_model.bin", synth::decoy_pytorch_bin(&repo))
}

fn preset_fixture() -> Fixture {
    let fx = Fixture::with(&[model(ModelId::Entity, 200_000, true)], with_companions);
    fx.write_manifest(|_, entry| entry["preset"] = "sentence-transformers".into());
    fx
}

/// The files a loader needs, which the preset must fetch (and nothing else).
const EXPECTED: [&str; 10] = [
    "1_Pooling/config.json",
    "config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
];

fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_preset_fetches_what_a_loader_needs_each_verified_and_no_decoy() {
    let fx = preset_fixture();
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    let verified = manager.verified_model(ModelId::Entity).unwrap();
    assert_eq!(snapshot_files(&verified.snapshot_dir), EXPECTED);
    assert_eq!(verified.files.len(), EXPECTED.len());
    assert_eq!(verified.weights, fx.snapshot_path(ModelId::Entity));
    assert_eq!(
        manager.get_path(ModelId::Entity).unwrap(),
        verified.weights,
        "get_path is still the weight file"
    );
    let report = manager.readiness_report();
    let entity = report
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Entity)
        .unwrap();
    assert_eq!(entity.state, ReadinessState::Ready);
    assert_eq!(entity.files.len(), EXPECTED.len());
    assert!(entity
        .files
        .iter()
        .all(|f| f.state == ReadinessState::Ready));
    let tokenizer = entity
        .files
        .iter()
        .find(|f| f.path == "tokenizer.json")
        .unwrap();
    let info = fx
        .hub
        .file_info(&fx.file(ModelId::Entity).repo_id, "main", "tokenizer.json")
        .unwrap();
    assert_eq!(
        tokenizer.expected_digest.as_deref(),
        Some(info.git_blob_id.as_str())
    );
    // Regular files are named by their git blob id, as huggingface_hub names them.
    let blob = fx.blobs_dir(ModelId::Entity).join(&info.git_blob_id);
    assert!(blob.is_file(), "{blob:?}");
    for decoy in [
        "README.md",
        ".gitattributes",
        "onnx/model.onnx",
        "pytorch_model.bin",
    ] {
        assert!(fx.gets(decoy).is_empty(), "{decoy} must not be fetched");
    }
    // A second manager finds everything ready without a request.
    fx.hub.clear_requests();
    let again = fx.manager();
    again.ensure_all_models().await.unwrap();
    assert!(fx.hub.requests().is_empty(), "{:?}", fx.hub.requests());
}

#[tokio::test]
async fn a_flipped_byte_in_tokenizer_json_is_caught_and_refetched() {
    let fx = preset_fixture();
    fx.hub.add_fault(
        FaultRule::new(
            FaultTarget::get("/tokenizer.json"),
            Fault::FlipByte { offset: 10 },
        )
        .times(1),
    );
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    assert_eq!(
        fx.gets("/tokenizer.json").len(),
        2,
        "fetched again after the wrong bytes"
    );
    let verified = manager.verified_model(ModelId::Entity).unwrap();
    let served = synth::companion_files(&fx.file(ModelId::Entity).repo_id)
        .into_iter()
        .find(|(p, _)| p == "tokenizer.json")
        .unwrap()
        .1;
    assert_eq!(
        std::fs::read(verified.snapshot_dir.join("tokenizer.json")).unwrap(),
        served
    );

    // Twice wrong: the model fails naming the file; nothing wrong reaches the snapshot.
    let fx = preset_fixture();
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::get("/tokenizer.json"),
        Fault::FlipByte { offset: 10 },
    ));
    let error = fx.manager().ensure_all_models().await.unwrap_err();
    assert!(error.to_string().contains("tokenizer.json"), "{error}");
    let snapshot = fx
        .snapshot_path(ModelId::Entity)
        .parent()
        .unwrap()
        .join("tokenizer.json");
    assert!(
        !snapshot.exists(),
        "a wrong file never reaches the snapshot"
    );
}

#[tokio::test]
async fn a_companion_missing_on_the_hub_fails_the_model_naming_the_file() {
    let fx = preset_fixture();
    // A locked set naming a file the Hub does not have.
    fx.write_manifest(|_, entry| {
        entry["preset"] = "sentence-transformers".into();
        entry["files"] = serde_json::json!([
            {"path": "model.safetensors", "size_bytes": entry["size_bytes"], "sha256": entry["sha256"]},
            {"path": "tokenizer_extra.json", "size_bytes": 10, "git_sha1": "0".repeat(40)},
        ]);
    });
    let error = fx.manager().ensure_all_models().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("tokenizer_extra.json"), "{text}");
    assert!(
        matches!(error, EmbeddingError::DownloadsFailed(_)),
        "{error:?}"
    );
    let manager = fx.manager();
    assert!(manager.get_path(ModelId::Entity).is_none(), "not ready");
}

#[tokio::test]
async fn a_tree_api_that_fails_transiently_is_retried() {
    let fx = preset_fixture();
    fx.hub
        .add_fault(FaultRule::new(FaultTarget::get("/tree/"), Fault::status(503)).times(2));
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    assert_eq!(fx.gets("/tree/").len(), 3, "two 503s, then the listing");
    assert!(manager.verified_model(ModelId::Entity).is_some());
}

#[tokio::test]
async fn the_branch_moving_mid_run_does_not_mix_commits() {
    let fx = preset_fixture();
    let repo = fx.file(ModelId::Entity).repo_id.clone();
    let first = fx.hub.commit_of(&repo, "main").unwrap();
    fx.write_manifest(|_, entry| {
        entry["preset"] = "sentence-transformers".into();
        entry["revision"] = "main".into();
        entry["sha256"] = serde_json::Value::Null;
        entry["size_bytes"] = serde_json::Value::Null;
    });
    // The branch moves once the set was resolved: every file must still come from `first`.
    let manager = fx.manager();
    let mut events = manager.subscribe_progress();
    let hub = &fx.hub;
    let moved = async {
        // Wait until the set is resolved, then move the branch.
        loop {
            match events.recv().await {
                Ok(event)
                    if matches!(
                        event.kind,
                        context_graph_embeddings::artifacts::ProgressKind::FilesResolved { .. }
                    ) =>
                {
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        hub.set_file(&repo, "tokenizer.json", b"{\"moved\": true}\n".to_vec())
    };
    let (result, second) = tokio::join!(manager.ensure_all_models(), moved);
    result.unwrap();
    assert_ne!(first, second);
    let verified = manager.verified_model(ModelId::Entity).unwrap();
    assert!(verified.snapshot_dir.ends_with(&first), "{verified:?}");
    let tokenizer =
        std::fs::read(verified.snapshot_dir.join("tokenizer.json")).unwrap_or_else(|e| {
            panic!(
                "{e}: {:?} {:?}",
                snapshot_files(&verified.snapshot_dir),
                fx.hub
                    .requests()
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect::<Vec<_>>()
            )
        });
    assert!(
        !tokenizer.starts_with(b"{\"moved\""),
        "the old commit's bytes"
    );
    for request in fx.hub.requests() {
        if request.method == "GET" && request.path.contains("/resolve/") {
            assert!(
                request.path.contains(&first),
                "fetched by commit: {}",
                request.path
            );
        }
    }
}

#[tokio::test]
async fn a_single_file_manifest_still_means_only_the_weight_file() {
    let fx = Fixture::with(&[model(ModelId::Entity, 200_000, true)], with_companions);
    let manager = fx.manager();
    let artifact = manager.manifest().artifacts().next().unwrap().clone();
    assert!(artifact.selection.is_single_file());
    manager.ensure_all_models().await.unwrap();
    let verified = manager.verified_model(ModelId::Entity).unwrap();
    assert_eq!(
        snapshot_files(&verified.snapshot_dir),
        ["model.safetensors"]
    );
    assert!(fx.gets("/tree/").is_empty(), "no tree listing for one file");
    assert!(fx.gets("config.json").is_empty());
    // Its serialisation is the original format: no new fields.
    let text = manager.manifest().to_json_pretty();
    for field in ["\"files\"", "\"preset\"", "\"include\""] {
        assert!(!text.contains(field), "{text}");
    }
}

#[tokio::test]
async fn offline_after_lock_makes_zero_requests() {
    let fx = preset_fixture();
    let outcome = fx.manager().pin_manifest().await.unwrap();
    let artifact = outcome.manifest.artifacts().next().unwrap();
    let files = artifact
        .selection
        .files
        .as_ref()
        .expect("lock writes the set");
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, EXPECTED);
    std::fs::write(&fx.manifest_path, outcome.manifest.to_json_pretty()).unwrap();

    // Ensure with the locked manifest: no tree listing any more.
    fx.hub.clear_requests();
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    assert!(fx.gets("/tree/").is_empty(), "{:?}", fx.hub.requests());
    assert!(fx.gets("modules.json").len() == 1);

    // Offline: ready from the cache with zero requests.
    fx.hub.clear_requests();
    let mut config = fx.config();
    config.offline = true;
    let offline = ModelArtifactManager::new(config).unwrap();
    offline.ensure_all_models().await.unwrap();
    assert!(offline.verified_model(ModelId::Entity).is_some());
    assert!(fx.hub.requests().is_empty(), "{:?}", fx.hub.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_carries_the_whole_set_and_an_altered_companion_places_nothing() {
    let fx = preset_fixture();
    let source = fx.manager();
    source.ensure_all_models().await.unwrap();
    let bundle = fx.dir.path().join("set.tar");
    let export = source.export_bundle(&bundle, &[]).await.expect("export");
    let mut exported: Vec<&str> = export.files.iter().map(|f| f.path.as_str()).collect();
    exported.sort();
    assert_eq!(exported, EXPECTED);
    let tokenizer = export
        .files
        .iter()
        .find(|f| f.path == "tokenizer.json")
        .unwrap();
    assert_eq!(
        tokenizer.git_sha1.as_deref(),
        Some(tokenizer.blob.as_str()),
        "a regular file keeps its git blob id"
    );

    // A site without network, the same (unlocked, preset) manifest: the whole set arrives.
    let mut config = fx.config();
    config.cache_dir = fx.dir.path().join("site");
    config.offline = true;
    config.endpoint = "http://127.0.0.1:9".to_owned();
    let site = ModelArtifactManager::new(config.clone()).unwrap();
    site.import_bundle(&bundle).await.expect("import");
    let verified = site
        .verified_model(ModelId::Entity)
        .expect("the set is ready");
    assert_eq!(snapshot_files(&verified.snapshot_dir), EXPECTED);
    for file in &verified.files {
        let name = file.strip_prefix(&verified.snapshot_dir).unwrap();
        let theirs = source
            .verified_model(ModelId::Entity)
            .unwrap()
            .snapshot_dir
            .join(name);
        assert_eq!(std::fs::read(file).unwrap(), std::fs::read(theirs).unwrap());
    }

    // The same bundle with one byte of tokenizer.json flipped (its SHA-256 in the index
    // rewritten to match, as an attacker would): the git blob id catches it.
    let original = std::fs::read(&bundle).unwrap();
    let content = std::fs::read(verified.snapshot_dir.join("tokenizer.json")).unwrap();
    let at = original
        .windows(content.len())
        .position(|w| w == content.as_slice())
        .expect("the member's bytes");
    let mut altered = original.clone();
    altered[at + 10] ^= 1;
    let mut changed = content.clone();
    changed[10] ^= 1;
    let old_sha = tokenizer.sha256.clone();
    let new_sha = hub_emulator::synth::sha256_hex(&changed);
    let mut text = altered;
    for window in 0..text.len() - old_sha.len() {
        if &text[window..window + old_sha.len()] == old_sha.as_bytes() {
            text[window..window + old_sha.len()].copy_from_slice(new_sha.as_bytes());
        }
    }
    let altered_path = fx.dir.path().join("altered.tar");
    std::fs::write(&altered_path, rewrite_tar_checksums(text)).unwrap();
    config.cache_dir = fx.dir.path().join("third");
    let third = ModelArtifactManager::new(config).unwrap();
    let error = third.import_bundle(&altered_path).await.unwrap_err();
    assert!(matches!(error, EmbeddingError::Bundle { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("does not match its locked git blob id"),
        "{error}"
    );
    assert!(third.verified_model(ModelId::Entity).is_none());
}

/// Recomputes the header checksum of every ustar header (so an edited archive still parses).
fn rewrite_tar_checksums(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut offset = 0;
    while offset + 512 <= bytes.len() {
        let header = &bytes[offset..offset + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let size_field = std::str::from_utf8(&header[124..136]).unwrap();
        let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
            .unwrap_or(0);
        let mut sum: u32 = 0;
        for (i, b) in bytes[offset..offset + 512].iter().enumerate() {
            sum += if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            };
        }
        let field = format!("{sum:06o}\0 ");
        bytes[offset + 148..offset + 156].copy_from_slice(field.as_bytes());
        offset += 512 + (size as usize).div_ceil(512) * 512;
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_model_brings_every_shard_and_the_registry_checks_them_against_the_index() {
    let fx = Fixture::with(&[model(ModelId::Entity, 100_000, true)], |spec, id| {
        with_companions(spec, id).sharded_safetensors(300_000, 3, 9)
    });
    fx.write_manifest(|_, entry| {
        entry["filename"] = "model.safetensors.index.json".into();
        entry["sha256"] = serde_json::Value::Null;
        entry["size_bytes"] = serde_json::Value::Null;
        entry["preset"] = "transformers".into();
    });
    let manager = fx.manager();
    manager.ensure_all_models().await.unwrap();
    let verified = manager.verified_model(ModelId::Entity).expect("ready");
    assert_eq!(verified.format, WeightFormat::ShardedSafetensors);
    let names = snapshot_files(&verified.snapshot_dir);
    for shard in 1..=3 {
        let shard = format!("model-{shard:05}-of-00003.safetensors");
        assert!(names.contains(&shard), "{shard} missing: {names:?}");
    }
    assert!(
        !names.contains(&"model.safetensors".to_owned()),
        "the single file beside the index is not part of the set: {names:?}"
    );

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&verified.weights).unwrap()).unwrap();
    let mapped = index["weight_map"].as_object().unwrap().len();
    let registry =
        ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![verified.clone()])
            .await
            .expect("every shard checks out");
    let Some(RegisteredModel::Weights { tensor_count, .. }) = registry.get(ModelId::Entity) else {
        panic!("{:?}", registry.get(ModelId::Entity));
    };
    assert_eq!(*tensor_count, Some(mapped));

    // The same files with an index that maps a tensor to a shard lacking it: refused, naming
    // the index. (A copy shaped like a snapshot folder: the cache itself stays intact.)
    let copy = fx
        .dir
        .path()
        .join("models--t--sharded/snapshots")
        .join("a".repeat(40));
    std::fs::create_dir_all(&copy).unwrap();
    let mut files = Vec::new();
    for file in &verified.files {
        let name = file.strip_prefix(&verified.snapshot_dir).unwrap();
        let target = copy.join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(file, &target).unwrap();
        files.push(target);
    }
    let mut broken = index.clone();
    broken["weight_map"]["model.layers.0.not_there"] = "model-00002-of-00003.safetensors".into();
    std::fs::write(
        copy.join("model.safetensors.index.json"),
        serde_json::to_vec(&broken).unwrap(),
    )
    .unwrap();
    let altered = VerifiedModel {
        snapshot_dir: copy.clone(),
        weights: copy.join("model.safetensors.index.json"),
        files,
        ..verified
    };
    let error = ModelRegistry::from_verified(ModelRegistryConfig::default(), &[], vec![altered])
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("model.layers.0.not_there") && text.contains("index.json"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outdated_and_upgrade_see_a_changed_companion_of_a_locked_set() {
    let fx = preset_fixture();
    let repo = fx.file(ModelId::Entity).repo_id.clone();
    fx.write_manifest(|_, entry| {
        entry["preset"] = "sentence-transformers".into();
        entry["revision"] = "main".into();
    });
    let locked = fx.manager().pin_manifest().await.expect("lock").manifest;
    std::fs::write(&fx.manifest_path, locked.to_json_pretty()).unwrap();
    let pinned_commit = fx.hub.commit_of(&repo, "main").unwrap();

    // Upstream changes only the tokenizer: the weights stay, the set moves.
    let moved = fx
        .hub
        .set_file(&repo, "tokenizer.json", b"{\"moved\": true}\n".to_vec());
    let manager = fx.manager();
    let drifts = manager.check_outdated(&[]).await.expect("outdated");
    let entity = drifts
        .iter()
        .find(|d| d.model_id == ModelId::Entity)
        .unwrap();
    assert_eq!(
        entity.pinned_commit.as_deref(),
        Some(pinned_commit.as_str())
    );
    assert_eq!(entity.head_commit, moved);
    assert_eq!(entity.files.len(), EXPECTED.len(), "{entity:?}");
    let tokenizer = entity
        .files
        .iter()
        .find(|f| f.path == "tokenizer.json")
        .unwrap();
    assert_eq!(
        tokenizer.digest_kind,
        context_graph_embeddings::artifacts::DigestKind::GitBlobSha1
    );
    assert_eq!(
        tokenizer.change,
        context_graph_embeddings::artifacts::FileChange::Changed
    );
    assert!(entity
        .files
        .iter()
        .filter(|f| f.path != "tokenizer.json")
        .all(|f| f.change == context_graph_embeddings::artifacts::FileChange::Unchanged));
    assert!(entity.is_outdated());

    let outcome = manager
        .upgrade_pins(&[ModelId::Entity])
        .await
        .expect("upgrade");
    let fields: Vec<&str> = outcome.changed.iter().map(|c| c.field).collect();
    assert_eq!(fields, ["revision", "files"], "{:?}", outcome.changed);
    let upgraded = outcome.manifest.artifacts().next().unwrap().clone();
    assert_eq!(upgraded.revision.as_deref(), Some(moved.as_str()));
    let row = upgraded.pinned_file("tokenizer.json").unwrap();
    let served = fx.hub.file_info(&repo, "main", "tokenizer.json").unwrap();
    assert_eq!(row.digest, served.git_blob_id);
    // The upgraded manifest is valid as written and fetches the new tokenizer.
    std::fs::write(&fx.manifest_path, outcome.manifest.to_json_pretty()).unwrap();
    let after = fx.manager();
    after
        .ensure_all_models()
        .await
        .expect("ensure at the new head");
    let verified = after.verified_model(ModelId::Entity).unwrap();
    assert_eq!(
        std::fs::read(verified.snapshot_dir.join("tokenizer.json")).unwrap(),
        b"{\"moved\": true}\n"
    );
}
