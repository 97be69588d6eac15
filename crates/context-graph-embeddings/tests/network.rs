//! Networks as they are in the wild: a Hub behind TLS signed by a company CA (a real rustls
//! server on loopback, with a CA this test makes), a Hub that cannot be reached at all, CDN
//! URLs that expire in the middle of a download, and mirrors that omit Hub headers.

#[path = "it/support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ModelArtifactManager, ProgressKind,
};
use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{Fault, FaultRule, FaultTarget, Host, MirrorQuirks};
use support::{model, Fixture};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// A TLS terminator on `127.0.0.1` for the name `localhost`, forwarding each connection to a
/// plain backend port, with a certificate signed by a CA made for this test only.
struct TlsFront {
    port: u16,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl TlsFront {
    fn start(backend: u16) -> TlsFront {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cg-models test corporate CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // A refused handshake (the client does not trust the CA) ends here.
                        let Ok(mut tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        let addr = SocketAddr::from(([127, 0, 0, 1], backend));
                        let Ok(mut plain) = TcpStream::connect(addr).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        let dir = tempfile::tempdir().unwrap();
        TlsFront {
            port,
            ca_pem: ca_cert.pem(),
            dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The CA as a PEM file.
    fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("corporate-ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    /// A folder holding the CA, as `SSL_CERT_DIR` names them.
    fn ca_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("corporate.crt"), &self.ca_pem).unwrap();
        dir
    }
}

/// The fixture's configuration against the TLS front, trusting only what `trust` adds to the
/// system store (the process's own `SSL_CERT_FILE`/`SSL_CERT_DIR` are left out).
fn tls_config(fixture: &Fixture, front: &TlsFront) -> ArtifactManagerConfig {
    ArtifactManagerConfig {
        endpoint: front.endpoint(),
        ca_bundle: None,
        ssl_cert_file: None,
        ssl_cert_dirs: Vec::new(),
        ..fixture.config()
    }
}

async fn ensure_entity(config: ArtifactManagerConfig) -> Result<PathBuf, EmbeddingError> {
    let manager = ModelArtifactManager::new(config)?;
    manager.download(ModelId::Entity).await
}

#[tokio::test]
async fn tls_with_an_unknown_ca_is_refused_and_says_what_to_set() {
    let fixture = Fixture::new(&[model(ModelId::Entity, 4096, true)]);
    let front = TlsFront::start(fixture.hub.hub_port());
    let error = ensure_entity(tls_config(&fixture, &front))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(
        text.contains("SSL_CERT_FILE") && text.contains("--ca-bundle"),
        "{text}"
    );
    // Not retried as if it were a flaky link: the refusal is immediate and final, and no
    // request ever reached the Hub behind the front.
    assert!(fixture.hub.requests().is_empty());
    assert!(!fixture.snapshot_path(ModelId::Entity).exists());
}

#[tokio::test]
async fn tls_with_the_ca_given_as_a_bundle_file_dir_or_env_is_accepted() {
    let fixture = Fixture::new(&[model(ModelId::Entity, 4096, true)]);
    let front = TlsFront::start(fixture.hub.hub_port());
    let ca_file = front.ca_file();
    let ca_dir = front.ca_dir();

    // The configuration field (what --ca-bundle sets).
    let by_field = ArtifactManagerConfig {
        ca_bundle: Some(ca_file.clone()),
        ..tls_config(&fixture, &front)
    };
    let path = ensure_entity(by_field)
        .await
        .expect("trusted through ca_bundle");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        fixture.file(ModelId::Entity).content
    );

    // SSL_CERT_FILE, SSL_CERT_DIR and CG_MODELS_CA_BUNDLE, read through the same rules as the
    // process environment.
    let base = fixture.config();
    for (name, value) in [
        ("SSL_CERT_FILE", ca_file.clone()),
        ("SSL_CERT_DIR", ca_dir.clone()),
        ("CG_MODELS_CA_BUNDLE", ca_file.clone()),
    ] {
        std::fs::remove_dir_all(fixture.cache_dir()).unwrap();
        let value = value.to_string_lossy().into_owned();
        let env = |var: &str| (var == name).then(|| value.clone());
        let from_env = ArtifactManagerConfig::from_lookup(&env);
        let config = ArtifactManagerConfig {
            endpoint: front.endpoint(),
            ca_bundle: from_env.ca_bundle,
            ssl_cert_file: from_env.ssl_cert_file,
            ssl_cert_dirs: from_env.ssl_cert_dirs,
            ..base.clone()
        };
        ensure_entity(config)
            .await
            .unwrap_or_else(|e| panic!("trusted through {name}: {e}"));
    }
}

#[tokio::test]
async fn an_unreachable_hub_is_given_up_quickly_for_every_model_with_one_message() {
    // A port nothing listens on: every connection is refused, as for a Hub that cannot be
    // resolved. Default retry policy (500 ms doubling, 5 retries): without the breaker this
    // takes 15 s per model.
    let models = [
        model(ModelId::Entity, 4096, true),
        model(ModelId::Semantic, 4096, true),
        model(ModelId::Code, 4096, true),
        model(ModelId::Graph, 4096, true),
        model(ModelId::Sparse, 4096, true),
    ];
    let fixture = Fixture::new(&models);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let config = ArtifactManagerConfig {
        endpoint: endpoint.clone(),
        retry_attempts: 5,
        retry_policy: Default::default(),
        ..fixture.config()
    };
    let manager = ModelArtifactManager::new(config).unwrap();
    let mut events = manager.subscribe_progress();
    let started = Instant::now();
    let ids: Vec<ModelId> = models.iter().map(|m| m.id).collect();
    let error = manager.ensure_models(&ids).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let EmbeddingError::DownloadsFailed(failures) = &error else {
        panic!("{error}");
    };
    assert_eq!(failures.len(), models.len());
    assert!(failures
        .iter()
        .all(|(_, e)| matches!(e, EmbeddingError::HostUnreachable { .. })));
    let text = error.to_string();
    // One line for all models, naming the endpoint and what to check.
    assert_eq!(text.lines().count(), 2, "{text}");
    for needle in [endpoint.as_str(), "HTTPS_PROXY", "HF_ENDPOINT", "--offline"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let mut retries = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event.kind, ProgressKind::Retrying { .. }) {
            retries += 1;
        }
    }
    assert!(retries < 3, "{retries} retries announced");
}

#[tokio::test]
async fn a_503_still_gets_the_full_retries() {
    let fixture = Fixture::new(&[model(ModelId::Entity, 4096, true)]);
    fixture.hub.add_fault(
        FaultRule::new(FaultTarget::head("model.safetensors"), Fault::status(503)).times(4),
    );
    let path = ensure_entity(fixture.config())
        .await
        .expect("retried past four 503s");
    assert!(path.exists());
}

/// The bytes the CDN sent for `filename`.
fn cdn_bytes(fixture: &Fixture) -> u64 {
    fixture
        .hub
        .requests()
        .iter()
        .filter(|r| r.host == Host::Cdn && r.method == "GET" && matches!(r.status, 200 | 206))
        .map(|r| r.body_bytes_sent)
        .sum()
}

fn expiring_fixture(size: u64) -> Fixture {
    Fixture::with_builder(&[model(ModelId::Entity, size, true)], |b| {
        b.cdn_url_ttl(Duration::from_secs(1))
    })
}

#[tokio::test]
async fn an_expired_cdn_url_is_resolved_again_and_one_stream_resumes() {
    let size = 2 * 1024 * 1024;
    let fixture = expiring_fixture(size);
    // The first body breaks after 300 kB; the retry comes after the URL expired (the URL lives
    // at most 2 s: `Expires` is rounded up; the jittered wait is at least half of 4.2 s).
    fixture.hub.add_fault(
        FaultRule::new(
            FaultTarget::get("model.safetensors").on_host(Host::Cdn),
            Fault::CutAfter { bytes: 300_000 },
        )
        .times(1),
    );
    let config = ArtifactManagerConfig {
        retry_policy: context_graph_embeddings::artifacts::RetryPolicy {
            base_delay: Duration::from_millis(4200),
            max_delay: Duration::from_millis(4200),
            max_server_delay: Duration::from_millis(4200),
        },
        ..fixture.config()
    };
    let path = ensure_entity(config)
        .await
        .expect("resumed with a fresh URL");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        fixture.file(ModelId::Entity).content
    );
    let heads = fixture
        .hub
        .requests()
        .iter()
        .filter(|r| r.host == Host::Hub && r.method == "HEAD")
        .count();
    assert_eq!(heads, 2, "resolved again on the Hub for a fresh URL");
    // Continued from the bytes on disk: nothing fetched twice.
    assert_eq!(cdn_bytes(&fixture), size);
    assert!(
        fixture.hub.requests().iter().all(|r| r.status != 403),
        "no request went out with an expired URL"
    );
}

#[tokio::test]
async fn a_cdn_403_mid_download_gets_a_fresh_url_for_parallel_ranges() {
    let size = 3 * 1024 * 1024;
    let fixture = Fixture::new(&[model(ModelId::Entity, size, true)]);
    // Some ranges are refused as an expired URL would be, with S3's answer.
    fixture.hub.add_fault(
        FaultRule::new(
            FaultTarget::get("model.safetensors").on_host(Host::Cdn),
            Fault::status(403),
        )
        .skip(1)
        .times(2),
    );
    let config = ArtifactManagerConfig {
        parallel: context_graph_embeddings::artifacts::ParallelSettings {
            connections: 3,
            initial_connections: 3,
            min_file_bytes: 1024 * 1024,
            chunk_bytes: 512 * 1024,
            // No connection added on a timer to take over part of a stretch: its cut
            // request's bytes already on the wire would count as fetched twice.
            sample_interval: Duration::from_secs(30),
            ..Default::default()
        },
        ..fixture.config()
    };
    let path = ensure_entity(config)
        .await
        .expect("fresh URL after a CDN 403");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        fixture.file(ModelId::Entity).content
    );
    let heads = fixture
        .hub
        .requests()
        .iter()
        .filter(|r| r.host == Host::Hub && r.method == "HEAD")
        .count();
    assert!(heads >= 2, "resolved again: {heads} HEADs");
    assert_eq!(cdn_bytes(&fixture), size, "no byte fetched twice");
}

#[tokio::test]
async fn a_hub_refusal_while_refreshing_is_fatal() {
    let fixture = Fixture::new(&[model(ModelId::Entity, 1024 * 1024, true)]);
    fixture.hub.add_fault(
        FaultRule::new(
            FaultTarget::get("model.safetensors").on_host(Host::Cdn),
            Fault::status(403),
        )
        .times(1),
    );
    fixture.hub.add_fault(
        FaultRule::new(
            FaultTarget::head("model.safetensors").on_host(Host::Hub),
            Fault::status(401),
        )
        .skip(1),
    );
    let error = ensure_entity(fixture.config()).await.unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
}

fn quirky(quirks: MirrorQuirks, pinned: bool) -> Fixture {
    Fixture::with_builder(&[model(ModelId::Entity, 4096, pinned)], move |b| {
        b.mirror_quirks(quirks)
    })
}

#[tokio::test]
async fn a_mirror_without_x_repo_commit_works_for_a_pinned_commit_with_a_warning() {
    for pinned in [true, false] {
        let fixture = quirky(
            MirrorQuirks {
                omit_repo_commit: true,
                reject_unknown_query: true,
                ..MirrorQuirks::default()
            },
            pinned,
        );
        let manager = fixture.manager();
        let mut events = manager.subscribe_progress();
        let path = manager
            .download(ModelId::Entity)
            .await
            .unwrap_or_else(|e| panic!("pinned={pinned}: {e}"));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            fixture.file(ModelId::Entity).content
        );
        let mut warned = false;
        while let Ok(event) = events.try_recv() {
            if let ProgressKind::Warning { message } = &event.kind {
                warned |= message.contains("X-Repo-Commit");
            }
        }
        assert!(
            warned,
            "pinned={pinned}: a warning names the missing header"
        );
    }
}

#[tokio::test]
async fn a_mirror_without_x_repo_commit_is_refused_clearly_for_a_branch() {
    let fixture = quirky(
        MirrorQuirks {
            omit_repo_commit: true,
            ..MirrorQuirks::default()
        },
        true,
    );
    // A branch: which commit the bytes belong to is unknown without the header.
    fixture.write_manifest(|_, entry| entry["revision"] = "main".into());
    let error = ensure_entity(fixture.config()).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("X-Repo-Commit") && text.contains("docs/network.md"),
        "{text}"
    );
    assert!(!fixture.snapshot_path(ModelId::Entity).exists());
}
