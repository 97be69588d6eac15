//! Models through a real registry: Hub → our cache → registry → a fresh node's cache with
//! every byte verified; what `oras push` puts there read by our mirror; a layer altered in the
//! registry's storage refused; a registry dying mid-pull survived; a cache image unpacked by
//! `umoci` and read, read-only and offline, by us and by `huggingface_hub`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use context_graph_embeddings::artifacts::{
    mirror_tag, ArtifactManagerConfig, MirrorConfig, ModelArtifactManager, ProgressEvent,
    ProgressKind, PushOptions, ReadinessState, RegistryCredentials,
};
use context_graph_embeddings::ModelId;
use hub_emulator::synth;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::mount::ReadOnlyMount;
use super::registry::{
    base64, oras_pull, oras_push, require_tools, skopeo_copy_to_oci_layout, skopeo_inspect_raw,
    umoci_unpack, Registry, RegistryAuth, Tool,
};
use super::relay::slow_link;
use super::support::{drain, model, Fixture};
use super::token::TokenService;

const REPOSITORY: &str = "models/pipeline";

/// The Entity model as a sentence-transformers set (weights, config, tokenizer, modules).
fn set_fixture(size: u64) -> Fixture {
    let fx = Fixture::with(&[model(ModelId::Entity, size, true)], |spec, _| {
        let repo = spec.repo_id().to_owned();
        synth::companion_files(&repo)
            .into_iter()
            .fold(spec, |spec, (path, bytes)| spec.file(&path, bytes))
    });
    fx.write_manifest(|_, entry| entry["preset"] = "sentence-transformers".into());
    fx
}

/// A node against the fixture's Hub that trusts the registry's CA and reads its credentials
/// from the registry's Docker config.
fn node(
    fx: &Fixture,
    reg: &Registry,
    cache: &Path,
    mirror: Option<(String, bool)>,
) -> ArtifactManagerConfig {
    ArtifactManagerConfig {
        cache_dir: cache.to_path_buf(),
        ca_bundle: Some(reg.ca_pem.clone()),
        registry_auth_file: Some(reg.docker_config_dir.join("config.json")),
        mirror: mirror.map(|(url, write)| MirrorConfig {
            write,
            ..MirrorConfig::new(url)
        }),
        ..fx.config()
    }
}

/// A loopback port nothing listens on (a Hub that cannot be reached).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn target(reg: &Registry) -> String {
    format!("oci://{}/{REPOSITORY}", reg.host)
}

/// Every file of a ready model's snapshot: path in the repo → bytes.
fn snapshot_files(manager: &ModelArtifactManager, id: ModelId) -> BTreeMap<String, Vec<u8>> {
    let model = manager
        .verified_model(id)
        .unwrap_or_else(|| panic!("{id} is not ready"));
    model
        .files
        .iter()
        .map(|f| {
            (
                f.strip_prefix(&model.snapshot_dir)
                    .unwrap()
                    .display()
                    .to_string(),
                std::fs::read(f).unwrap(),
            )
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Locks the fixture's manifest against its Hub (commit, digests, the whole set) into a file.
async fn locked_manifest(fx: &Fixture, reg: &Registry) -> PathBuf {
    let pinning =
        ModelArtifactManager::new(node(fx, reg, &fx.dir.path().join("pin"), None)).unwrap();
    let locked = pinning.pin_manifest().await.expect("lock").manifest;
    let path = fx.dir.path().join("locked.json");
    std::fs::write(&path, locked.to_json_pretty()).unwrap();
    path
}

fn fallbacks(events: &[ProgressEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            ProgressKind::FallingBack { from, reason } => Some((from.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_goes_from_the_hub_through_a_registry_to_a_fresh_node_with_every_byte_verified() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Oras, Tool::Skopeo);
    let reg = Registry::start();
    let fx = set_fixture(300_000);
    let locked = locked_manifest(&fx, &reg).await;

    // Node A: from the Hub, then pushed.
    let a = ModelArtifactManager::new(ArtifactManagerConfig {
        manifest_path: Some(locked.clone()),
        ..node(&fx, &reg, &fx.dir.path().join("a"), None)
    })
    .unwrap();
    a.ensure_all_models().await.expect("from the Hub");
    let files = snapshot_files(&a, ModelId::Entity);
    assert!(files.len() >= 8, "a whole set: {:?}", files.keys());
    let pushed = a
        .push_to_registry(&target(&reg), &[], PushOptions::default())
        .await
        .expect("push");
    let commit = pushed.models[0].commit.clone();
    let tag = mirror_tag(&fx.file(ModelId::Entity).repo_id, &commit);
    assert_eq!(
        pushed
            .tags
            .iter()
            .map(|(t, _)| t.clone())
            .collect::<Vec<_>>(),
        vec![format!("{}:{tag}", target(&reg))]
    );
    let distinct: std::collections::BTreeSet<String> =
        files.values().map(|b| sha256_hex(b)).collect();
    assert_eq!(
        pushed.blobs_uploaded,
        distinct.len() + 1,
        "every file and the config"
    );
    let uploads = reg.uploads();
    assert_eq!(uploads.len(), distinct.len() + 1, "{uploads:?}");

    // A generic client gets exactly our files, named by their paths.
    let reference = format!("{}/{REPOSITORY}:{tag}", reg.host);
    let out = fx.dir.path().join("oras-out");
    oras_pull(&reg, &reference, &out);
    for (path, bytes) in &files {
        let pulled = std::fs::read(out.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(sha256_hex(&pulled), sha256_hex(bytes), "{path}");
    }
    // skopeo reads a ModelPack manifest: artifact type, raw layers with their paths, our entry.
    let manifest = skopeo_inspect_raw(&reg, &reference);
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), files.len());
    for layer in layers {
        let path = layer["annotations"]["org.cncf.model.filepath"]
            .as_str()
            .unwrap();
        assert_eq!(
            layer["digest"],
            format!("sha256:{}", sha256_hex(&files[path]))
        );
        assert!(
            layer["mediaType"].as_str().unwrap().ends_with(".raw"),
            "{layer}"
        );
    }
    let entry: serde_json::Value = serde_json::from_str(
        manifest["annotations"]["io.github.context-graph.model.entry"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(entry[0]["revision"], commit.as_str(), "{entry}");
    assert_eq!(
        entry[0]["files"].as_array().map(Vec::len),
        Some(files.len()),
        "{entry}"
    );

    // The same push again sends no blob.
    let again = a
        .push_to_registry(&target(&reg), &[], PushOptions::default())
        .await
        .expect("push again");
    assert_eq!(again.blobs_uploaded, 0, "{again:?}");
    assert_eq!(again.blobs_present, distinct.len() + 1);
    assert_eq!(reg.uploads(), uploads, "no blob uploaded twice");

    // Pushed to another repository of the registry by a node whose mirror is the first one:
    // every blob is mounted across repositories, nothing is sent.
    let mounting = ModelArtifactManager::new(ArtifactManagerConfig {
        manifest_path: Some(locked.clone()),
        ..node(
            &fx,
            &reg,
            &fx.dir.path().join("a"),
            Some((target(&reg), false)),
        )
    })
    .unwrap();
    let copied = mounting
        .push_to_registry(
            &format!("oci://{}/models/copy", reg.host),
            &[],
            PushOptions::default(),
        )
        .await
        .expect("push to another repository");
    assert_eq!(
        (copied.blobs_mounted, copied.blobs_uploaded),
        (distinct.len() + 1, 0),
        "{copied:?}"
    );
    let mounts: Vec<_> = reg
        .requests()
        .into_iter()
        .filter(|(method, path, status)| {
            method == "POST"
                && path.starts_with("/v2/models/copy/blobs/uploads/?mount=")
                && *status == 201
        })
        .collect();
    assert_eq!(mounts.len(), distinct.len() + 1, "{mounts:?}");
    oras_pull(
        &reg,
        &format!("{}/models/copy:{tag}", reg.host),
        &fx.dir.path().join("copy-out"),
    );
    for (path, bytes) in &files {
        let pulled = std::fs::read(fx.dir.path().join("copy-out").join(path)).unwrap();
        assert_eq!(sha256_hex(&pulled), sha256_hex(bytes), "{path}");
    }

    // Node B: a fresh cache, the Hub unreachable, the registry as its mirror.
    let closed = closed_port();
    fx.hub.clear_requests();
    let b = ModelArtifactManager::new(ArtifactManagerConfig {
        endpoint: format!("http://127.0.0.1:{closed}"),
        manifest_path: Some(locked),
        ..node(
            &fx,
            &reg,
            &fx.dir.path().join("b"),
            Some((target(&reg), false)),
        )
    })
    .unwrap();
    b.ensure_all_models()
        .await
        .expect("everything from the registry");
    assert_eq!(snapshot_files(&b, ModelId::Entity), files);
    assert!(fx.hub.requests().is_empty(), "{:?}", fx.hub.requests());
    let report = b.readiness_report();
    let entity = report
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Entity)
        .unwrap();
    assert_eq!(entity.state, ReadinessState::Ready, "{entity:?}");
    assert!(
        entity
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with(&format!("{}@sha256:", target(&reg)))),
        "{entity:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_oras_pushes_is_read_by_our_mirror_and_a_writable_mirror_is_filled_from_the_hub() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Oras);
    let reg = Registry::start();
    let fx = set_fixture(200_000);
    let locked = locked_manifest(&fx, &reg).await;
    let served = fx.file(ModelId::Entity).clone();

    // A snapshot folder downloaded elsewhere, pushed by oras under the tag our mirror reads.
    let elsewhere = ModelArtifactManager::new(ArtifactManagerConfig {
        manifest_path: Some(locked.clone()),
        ..node(&fx, &reg, &fx.dir.path().join("elsewhere"), None)
    })
    .unwrap();
    elsewhere.ensure_all_models().await.expect("from the Hub");
    let files = snapshot_files(&elsewhere, ModelId::Entity);
    let folder = fx.dir.path().join("folder");
    for (path, bytes) in &files {
        let at = folder.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, bytes).unwrap();
    }
    let tag = mirror_tag(&served.repo_id, &served.commit);
    let typed: Vec<(&str, &str)> = files
        .keys()
        .map(|p| (p.as_str(), "application/vnd.cncf.model.weight.v1.raw"))
        .collect();
    oras_push(
        &reg,
        &format!("{}/{REPOSITORY}:{tag}", reg.host),
        &folder,
        &typed,
        &[],
    );

    // A site that cannot reach the Hub reads the whole set from what oras pushed.
    let closed = closed_port();
    fx.hub.clear_requests();
    let site = ModelArtifactManager::new(ArtifactManagerConfig {
        endpoint: format!("http://127.0.0.1:{closed}"),
        manifest_path: Some(locked.clone()),
        ..node(
            &fx,
            &reg,
            &fx.dir.path().join("site"),
            Some((target(&reg), false)),
        )
    })
    .unwrap();
    let mut site_events = site.subscribe_progress();
    site.ensure_all_models()
        .await
        .expect("every file from what oras pushed");
    assert!(fallbacks(&drain(&mut site_events)).is_empty());
    assert_eq!(snapshot_files(&site, ModelId::Entity), files);
    assert!(fx.hub.requests().is_empty(), "{:?}", fx.hub.requests());

    // A writable mirror in another repository: the node fetches from the Hub and pushes.
    let other = format!("oci://{}/models/filled", reg.host);
    let writer = ModelArtifactManager::new(ArtifactManagerConfig {
        manifest_path: Some(locked),
        ..node(
            &fx,
            &reg,
            &fx.dir.path().join("writer"),
            Some((other.clone(), true)),
        )
    })
    .unwrap();
    writer.ensure_all_models().await.expect("from the Hub");
    let pulled = fx.dir.path().join("filled");
    oras_pull(&reg, &format!("{}/models/filled:{tag}", reg.host), &pulled);
    for (path, bytes) in &files {
        assert_eq!(&std::fs::read(pulled.join(path)).unwrap(), bytes, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_altered_in_the_registry_is_refused_and_the_hub_supplies_the_file() {
    require_tools!(Tool::Registry, Tool::Htpasswd);
    let reg = Registry::start();
    let fx = set_fixture(300_000);
    let locked = locked_manifest(&fx, &reg).await;
    let a = ModelArtifactManager::new(ArtifactManagerConfig {
        manifest_path: Some(locked.clone()),
        ..node(&fx, &reg, &fx.dir.path().join("a"), None)
    })
    .unwrap();
    a.ensure_all_models().await.expect("from the Hub");
    a.push_to_registry(&target(&reg), &[], PushOptions::default())
        .await
        .expect("push");
    let served = fx.file(ModelId::Entity).clone();
    let stored = reg.blob_data(&format!("sha256:{}", served.sha256));
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&stored, &bytes).unwrap();

    fx.hub.clear_requests();
    let b = ModelArtifactManager::new(ArtifactManagerConfig {
        manifest_path: Some(locked),
        ..node(
            &fx,
            &reg,
            &fx.dir.path().join("b"),
            Some((target(&reg), false)),
        )
    })
    .unwrap();
    let mut events = b.subscribe_progress();
    b.ensure_all_models()
        .await
        .expect("the Hub supplies the weights");
    let events = drain(&mut events);
    let falls = fallbacks(&events);
    assert_eq!(falls.len(), 1, "{falls:?}");
    assert!(falls[0].0.ends_with(&served.sha256), "{falls:?}");
    assert!(falls[0].1.contains("mismatch"), "{falls:?}");
    let weights = std::fs::read(b.get_path(ModelId::Entity).unwrap()).unwrap();
    assert_eq!(weights, served.content);
    let hub_bodies: Vec<_> = fx
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.body_bytes_sent > 0 && !r.path.starts_with("/api/"))
        .collect();
    assert!(
        !hub_bodies.is_empty()
            && hub_bodies
                .iter()
                .all(|r| r.path.contains(&served.sha256) || r.path.ends_with(&served.filename)),
        "the weights, and only they, came from the Hub: {hub_bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_dying_mid_pull_leaves_the_hub_to_resume_the_file() {
    require_tools!(Tool::Registry, Tool::Htpasswd);
    let reg = std::sync::Arc::new(std::sync::Mutex::new(Registry::start()));
    let fx = Fixture::new(&[model(ModelId::Semantic, 4_000_000, true)]);
    let served = fx.file(ModelId::Semantic).clone();
    let (host, port, ca, docker) = {
        let reg = reg.lock().unwrap();
        (
            reg.host.clone(),
            reg.port,
            reg.ca_pem.clone(),
            reg.docker_config_dir.clone(),
        )
    };
    let base = {
        let reg = reg.lock().unwrap();
        node(&fx, &reg, &fx.dir.path().join("a"), None)
    };
    let a = ModelArtifactManager::new(base.clone()).unwrap();
    a.ensure_all_models().await.expect("from the Hub");
    a.push_to_registry(
        &format!("oci://{host}/{REPOSITORY}"),
        &[],
        PushOptions::default(),
    )
    .await
    .expect("push");

    // The node reaches the registry through a 1 MB/s link, with credentials for that name.
    let link = slow_link(port, 1_000_000).await;
    let auth = fx.dir.path().join("link-auth.json");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker.join("config.json")).unwrap()).unwrap();
    let entry = config["auths"][host.as_str()].clone();
    std::fs::write(
        &auth,
        serde_json::json!({"auths": {format!("127.0.0.1:{link}"): entry}}).to_string(),
    )
    .unwrap();
    let b = ModelArtifactManager::new(ArtifactManagerConfig {
        cache_dir: fx.dir.path().join("b"),
        ca_bundle: Some(ca),
        registry_auth_file: Some(auth),
        progress_interval: Duration::from_millis(20),
        mirror: Some(MirrorConfig::new(format!(
            "oci://127.0.0.1:{link}/{REPOSITORY}"
        ))),
        ..base
    })
    .unwrap();
    let mut events = b.subscribe_progress();
    let killed = {
        let reg = reg.clone();
        let mut first = b.subscribe_progress();
        tokio::spawn(async move {
            loop {
                match first.recv().await {
                    Ok(e) if matches!(e.kind, ProgressKind::Progress) && e.bytes_downloaded > 0 => {
                        reg.lock().unwrap().stop();
                        return Some(e.bytes_downloaded);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    };
    fx.hub.clear_requests();
    b.ensure_all_models()
        .await
        .expect("the Hub completes the file");
    let events = drain(&mut events);
    let killed_at = killed
        .await
        .unwrap()
        .expect("bytes arrived from the registry");
    assert!(killed_at < served.content.len() as u64);
    assert_eq!(
        std::fs::read(b.get_path(ModelId::Semantic).unwrap()).unwrap(),
        served.content
    );
    assert_eq!(fallbacks(&events).len(), 1, "{:?}", fallbacks(&events));
    let resumed = fx
        .hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&served.sha256))
        .find(|r| {
            r.range()
                .is_some_and(|range| !range.starts_with("bytes=0-"))
        })
        .unwrap_or_else(|| panic!("a ranged GET resuming: {:?}", fx.hub.requests()));
    assert!(
        (resumed.body_bytes_sent as usize) < served.content.len(),
        "{resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_image_unpacks_into_a_read_only_cache_ready_for_us_and_for_python_offline() {
    require_tools!(
        Tool::Registry,
        Tool::Htpasswd,
        Tool::Skopeo,
        Tool::Umoci,
        Tool::Oras
    );
    let reg = Registry::start();
    let fx = set_fixture(300_000);
    let locked = locked_manifest(&fx, &reg).await;
    let a = ModelArtifactManager::new(ArtifactManagerConfig {
        manifest_path: Some(locked.clone()),
        ..node(&fx, &reg, &fx.dir.path().join("a"), None)
    })
    .unwrap();
    a.ensure_all_models().await.expect("from the Hub");
    let files = snapshot_files(&a, ModelId::Entity);
    let image = format!("oci://{}/cache:v1", reg.host);
    let pushed = a
        .push_to_registry(
            &image,
            &[],
            PushOptions {
                image: true,
                ..PushOptions::default()
            },
        )
        .await
        .expect("push the image");
    assert_eq!(pushed.tags.len(), 1, "{pushed:?}");
    let again = a
        .push_to_registry(
            &image,
            &[],
            PushOptions {
                image: true,
                ..PushOptions::default()
            },
        )
        .await
        .expect("push the image again");
    assert_eq!(again.blobs_uploaded, 0, "the same layers: {again:?}");

    let layout = fx.dir.path().join("layout");
    skopeo_copy_to_oci_layout(&reg, &format!("{}/cache:v1", reg.host), &layout, "v1");
    let rootfs = umoci_unpack(&layout, "v1", &fx.dir.path().join("bundle"));
    let _read_only = ReadOnlyMount::new(&rootfs);

    // Our offline status on the read-only cache: every file found, hashed once, ready.
    let ours = ModelArtifactManager::new(ArtifactManagerConfig {
        cache_dir: rootfs.clone(),
        offline: true,
        manifest_path: Some(locked),
        ..fx.config()
    })
    .unwrap();
    let outcomes = ours.verify_present(2, true).await;
    assert!(
        outcomes.iter().all(|o| o.verified == Some(true)),
        "{outcomes:?}"
    );
    let report = ours.readiness_report();
    assert!(report.all_ready(), "{report:?}");
    assert_eq!(snapshot_files(&ours, ModelId::Entity), files);

    // huggingface_hub, offline, finds the snapshot by commit and reads the same bytes.
    let python = Tool::Oras.locate().unwrap();
    let served = fx.file(ModelId::Entity);
    let output = Command::new(python)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .arg("-c")
        .arg("import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3], local_files_only=True))")
        .arg(&served.repo_id)
        .arg(&served.commit)
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let snapshot = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    for (path, bytes) in &files {
        assert_eq!(
            &std::fs::read(snapshot.join(path)).unwrap(),
            bytes,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_named_without_the_secret() {
    require_tools!(Tool::Registry, Tool::Htpasswd);
    let reg = Registry::start();
    let fx = Fixture::new(&[model(ModelId::Semantic, 10_000, true)]);
    let a = ModelArtifactManager::new(node(&fx, &reg, &fx.dir.path().join("a"), None)).unwrap();
    a.ensure_all_models().await.expect("from the Hub");
    let error = a
        .push_to_registry(
            &target(&reg),
            &[],
            PushOptions {
                credentials: Some(RegistryCredentials::new(
                    reg.username.clone(),
                    "wrong-secret-123",
                    "a test",
                )),
                ..PushOptions::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("401") && error.contains("refused the credentials"),
        "{error}"
    );
    assert!(
        !error.contains("wrong-secret-123") && !error.contains(&reg.password),
        "{error}"
    );
    assert!(reg.uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_hands_out_tokens_is_pushed_to_and_read_from() {
    require_tools!(Tool::Registry, Tool::Htpasswd);
    let (user, password) = ("cg-token-user", "token-pass-4f7a");
    let tokens = TokenService::start(user, password);
    let reg = Registry::start_with(RegistryAuth::Token {
        realm: tokens.realm.clone(),
        service: tokens.service.clone(),
        issuer: tokens.issuer.clone(),
        root_certificates: tokens.signing_certificate.clone(),
    });
    let fx = set_fixture(200_000);
    let locked = locked_manifest(&fx, &reg).await;
    // Both CAs (the registry's, the token service's), and credentials for the registry.
    let cas = fx.dir.path().join("cas.pem");
    let registry_ca = std::fs::read_to_string(&reg.ca_pem).unwrap();
    std::fs::write(&cas, format!("{registry_ca}{}", tokens.ca_pem)).unwrap();
    let auth = fx.dir.path().join("token-auth.json");
    std::fs::write(
        &auth,
        serde_json::json!({"auths": {reg.host.clone(): {"auth": base64(format!("{user}:{password}").as_bytes())}}}).to_string(),
    )
    .unwrap();
    let with_tokens = |cache: &str, mirror: Option<(String, bool)>| ArtifactManagerConfig {
        ca_bundle: Some(cas.clone()),
        registry_auth_file: Some(auth.clone()),
        manifest_path: Some(locked.clone()),
        ..node(&fx, &reg, &fx.dir.path().join(cache), mirror)
    };

    let a = ModelArtifactManager::new(with_tokens("a", None)).unwrap();
    a.ensure_all_models().await.expect("from the Hub");
    let files = snapshot_files(&a, ModelId::Entity);
    let pushed = a
        .push_to_registry(&target(&reg), &[], PushOptions::default())
        .await
        .expect("push with a token");
    assert!(pushed.blobs_uploaded >= files.len(), "{pushed:?}");
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(
        asked.iter().all(|r| r.authenticated && r.status == 200),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|r| r.scopes == [format!("repository:{REPOSITORY}:pull,push")]),
        "{asked:?}"
    );

    let closed = closed_port();
    fx.hub.clear_requests();
    let b = ModelArtifactManager::new(ArtifactManagerConfig {
        endpoint: format!("http://127.0.0.1:{closed}"),
        ..with_tokens("b", Some((target(&reg), false)))
    })
    .unwrap();
    b.ensure_all_models()
        .await
        .expect("everything from the registry, with a token");
    assert_eq!(snapshot_files(&b, ModelId::Entity), files);
    assert!(fx.hub.requests().is_empty());

    // Credentials the token service refuses: named, not shown.
    let refused = a
        .push_to_registry(
            &target(&reg),
            &[],
            PushOptions {
                credentials: Some(RegistryCredentials::new(user, "wrong-9c2e", "a test")),
                ..PushOptions::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("token service") && refused.contains("401"),
        "{refused}"
    );
    assert!(!refused.contains("wrong-9c2e"), "{refused}");
}
