//! Models through OCI registries (issue 27): a real registry on loopback and the real clients
//! that judge it (`tests/common/registry.rs`).
//!
//! The tests in this file are the harness's own; `oci/models.rs` has ours. These use only the real tools (Debian's
//! `docker-registry`, `skopeo`, `umoci`, `htpasswd`; oras-py from `target/pyenv`), and prove
//! that what the harness reports is what the registry did, so the tests of our OCI client can
//! rest on it. The tools come from `scripts/install-registry` and `scripts/setup-python`;
//! without them these tests fail, unless `CG_SKIP_REGISTRY_TESTS=1` (then they say why and
//! return).

// Tests read their own switches (CG_TEST_*, CG_SKIP_*); the ban on the process environment is
// for the library.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::print_stderr)]

#[path = "common/registry.rs"]
mod registry;

#[path = "it/support.rs"]
mod support;

#[path = "common/relay.rs"]
mod relay;

#[path = "common/mount.rs"]
#[allow(dead_code)]
mod mount;

/// Our side: push, the OCI mirror and the cache image, judged by the tools above.
#[path = "oci/models.rs"]
mod models;

/// A token service for the registry's bearer-token mode.
#[path = "oci/token.rs"]
mod token;

use std::collections::BTreeMap;
use std::path::Path;

use registry::{
    oras_pull, oras_push, require_tools, skopeo_config, skopeo_copy_from_oci_layout,
    skopeo_copy_to_oci_layout, skopeo_inspect_raw, umoci, umoci_unpack, Registry, Tool,
};
use sha2::{Digest, Sha256};

/// The layer media type of the small folder the tests push (any type that is not the
/// tar+gzip one oras-py extracts on pull).
const RAW: &str = "application/vnd.cncf.model.weight.v1.raw";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A small folder like a model's: a nested path, a binary file of 1 MiB, an empty-ish text.
/// Returns (relative path, bytes) for each file.
fn model_folder(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let weights: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let files = vec![
        ("config.json", br#"{"hidden_size": 384}"#.to_vec()),
        ("model.safetensors", weights),
        (
            "1_Pooling/config.json",
            br#"{"pooling_mode_mean_tokens": true}"#.to_vec(),
        ),
    ];
    for (path, bytes) in &files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    files
}

fn push_folder(reg: &Registry, reference: &str, dir: &Path) -> String {
    oras_push(
        reg,
        reference,
        dir,
        &[
            ("config.json", RAW),
            ("model.safetensors", RAW),
            ("1_Pooling/config.json", RAW),
        ],
        &[("org.opencontainers.image.description", "harness self-test")],
    )
}

/// An HTTPS client that trusts only the test CA (no system roots).
fn client_trusting(ca_pem: Option<&Path>) -> reqwest::Client {
    let certs = ca_pem
        .map(|p| vec![reqwest::Certificate::from_pem(&std::fs::read(p).unwrap()).unwrap()])
        .unwrap_or_default();
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .build()
        .unwrap()
}

#[tokio::test]
async fn v2_answers_401_without_credentials_and_200_with_them_over_tls_trusted_only_through_the_ca()
{
    require_tools!(Tool::Registry, Tool::Htpasswd);
    let reg = tokio::task::spawn_blocking(Registry::start).await.unwrap();
    let url = format!("https://{}/v2/", reg.host);
    let trusted = client_trusting(Some(&reg.ca_pem));

    let anonymous = trusted.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Basic realm=\"cg-test-registry\""),
        "{challenge}"
    );

    let wrong = trusted
        .get(&url)
        .basic_auth(&reg.username, Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let user = trusted
        .get(&url)
        .basic_auth(&reg.username, Some(&reg.password))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 200);
    assert_eq!(
        user.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    // The name `localhost` is in the certificate too.
    let by_name = trusted
        .get(format!("https://localhost:{}/v2/", reg.port))
        .basic_auth(&reg.username, Some(&reg.password))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), 200);

    // Without the test CA the handshake fails: nothing else trusts this registry.
    let untrusting = client_trusting(None);
    let refused = untrusting.get(&url).send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");

    let requests = tokio::task::spawn_blocking(move || {
        let r = reg.requests();
        drop(reg);
        r
    })
    .await
    .unwrap();
    let seen: Vec<(&str, &str, u16)> = requests
        .iter()
        .map(|(m, p, s)| (m.as_str(), p.as_str(), *s))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/v2/", 401),
            ("GET", "/v2/", 401),
            ("GET", "/v2/", 200),
            ("GET", "/v2/", 200)
        ]
    );
}

#[test]
fn oras_push_then_pull_gives_byte_identical_files_and_skopeo_sees_that_manifest() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Oras, Tool::Skopeo);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = model_folder(&src);
    let reference = format!("{}/models/minilm:v1", reg.host);
    let manifest_digest = push_folder(&reg, &reference, &src);

    let out = work.path().join("out");
    let pulled = oras_pull(&reg, &reference, &out);
    assert_eq!(pulled.len(), files.len(), "{pulled:?}");
    for (path, bytes) in &files {
        // oras-py names each file by the layer's title, under the output folder.
        let got = std::fs::read(out.join(path)).unwrap();
        assert_eq!(sha256(&got), sha256(bytes), "{path}");
        assert_eq!(&got, bytes, "{path}");
        assert!(pulled.contains(&out.join(path).canonicalize().unwrap()));
    }

    let manifest = skopeo_inspect_raw(&reg, &reference);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    let by_title: BTreeMap<&str, (&str, u64, &str)> = layers
        .iter()
        .map(|l| {
            (
                l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap(),
                (
                    l["digest"].as_str().unwrap(),
                    l["size"].as_u64().unwrap(),
                    l["mediaType"].as_str().unwrap(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<&str, (String, u64, &str)> = files
        .iter()
        .map(|(p, b)| (*p, (sha256(b), b.len() as u64, RAW)))
        .collect();
    assert_eq!(
        by_title
            .iter()
            .map(|(k, (d, s, m))| (*k, ((*d).to_owned(), *s, *m)))
            .collect::<BTreeMap<_, _>>(),
        expected
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.description"],
        "harness self-test"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.unknown.config.v1+json"
    );
    assert_eq!(skopeo_config(&reg, &reference), serde_json::json!({}));
    // The same manifest by digest.
    let by_digest = skopeo_inspect_raw(
        &reg,
        &format!("{}/models/minilm@{manifest_digest}", reg.host),
    );
    assert_eq!(by_digest, manifest);
}

#[test]
fn uploads_report_each_blob_once_when_the_same_folder_is_pushed_twice() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Oras);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let files = model_folder(work.path());
    let digests: Vec<String> = files.iter().map(|(_, b)| sha256(b)).collect();
    let empty_config = sha256(b"{}");

    push_folder(&reg, &format!("{}/models/minilm:v1", reg.host), work.path());
    let first = reg.uploads();
    let mut expected: Vec<String> = digests.clone();
    expected.push(empty_config.clone());
    let mut sorted = first.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "the first push uploads every blob once");
    // oras-py sends each request without credentials first: every blob's PUT was refused
    // (401) once before it was accepted, and only the accepted one counts as an upload.
    let puts = |status: u16| {
        reg.requests()
            .into_iter()
            .filter(|(m, p, s)| m == "PUT" && p.contains("digest=sha256") && *s == status)
            .count()
    };
    assert_eq!((puts(401), puts(201)), (first.len(), first.len()));

    // The same folder again, under another tag: oras-py asks HEAD first and uploads nothing.
    push_folder(&reg, &format!("{}/models/minilm:v2", reg.host), work.path());
    assert_eq!(
        reg.uploads(),
        first,
        "the second push uploaded a blob again"
    );
    let heads = reg
        .requests()
        .into_iter()
        .filter(|(m, p, s)| m == "HEAD" && p.contains("/blobs/sha256:") && *s == 200)
        .count();
    assert_eq!(
        heads,
        digests.len() + 1,
        "every blob was asked about and found"
    );

    // Another repository: oras-py does not offer a cross-repository mount, and the registry
    // answers HEAD 404 there (blobs are linked per repository), so it uploads every blob
    // again. The log says so.
    push_folder(&reg, &format!("{}/other/minilm:v1", reg.host), work.path());
    let third = reg.uploads();
    assert_eq!(third.len(), 2 * first.len());
    assert_eq!(&third[first.len()..], &first[..]);

    // A cross-repository mount is reported as such (POST ?mount=… answered 201).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        client_trusting(Some(&reg.ca_pem))
            .post(format!(
                "https://{}/v2/third/minilm/blobs/uploads/?mount={}&from=models/minilm",
                reg.host, digests[1]
            ))
            .basic_auth(&reg.username, Some(&reg.password))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 201);
    let after_mount = reg.uploads();
    assert_eq!(after_mount.len(), third.len() + 1);
    assert_eq!(after_mount.last(), Some(&digests[1]));
}

#[test]
fn blob_data_is_the_stored_bytes_served_with_ranges_and_a_corrupted_blob_is_served_as_it_is() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Oras);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = model_folder(&src);
    let reference = format!("{}/models/minilm:v1", reg.host);
    push_folder(&reg, &reference, &src);
    for (path, bytes) in &files {
        let stored = reg.blob_data(&sha256(bytes));
        assert_eq!(&std::fs::read(&stored).unwrap(), bytes, "{path}");
    }

    // Blobs are served with ranges (what a resumed download asks for).
    let (_, weights) = &files[1];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, range, body) = runtime.block_on(async {
        let response = client_trusting(Some(&reg.ca_pem))
            .get(format!(
                "https://{}/v2/models/minilm/blobs/{}",
                reg.host,
                sha256(weights)
            ))
            .header("Range", "bytes=1000-1999")
            .basic_auth(&reg.username, Some(&reg.password))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let range = response.headers()["content-range"]
            .to_str()
            .unwrap()
            .to_owned();
        (status, range, response.bytes().await.unwrap())
    });
    assert_eq!(status, 206);
    assert_eq!(range, format!("bytes 1000-1999/{}", weights.len()));
    assert_eq!(&body[..], &weights[1000..2000]);

    // Flip one byte of the weights in storage: distribution does not check what it serves, so
    // a client that does not verify (oras-py) gets the altered bytes. A mirror must verify.
    let (path, bytes) = &files[1];
    let stored = reg.blob_data(&sha256(bytes));
    let mut altered = bytes.clone();
    altered[4096] ^= 0xff;
    std::fs::write(&stored, &altered).unwrap();
    let out = work.path().join("out");
    oras_pull(&reg, &reference, &out);
    let got = std::fs::read(out.join(path)).unwrap();
    assert_eq!(got, altered);
    assert_ne!(sha256(&got), sha256(bytes));
}

#[test]
fn a_stopped_registry_refuses_connections_and_a_restarted_one_serves_the_same_storage() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Oras);
    let mut reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = model_folder(&src);
    let reference = format!("{}/models/minilm:v1", reg.host);
    push_folder(&reg, &reference, &src);

    reg.stop();
    assert!(!reg.is_running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", reg.port)).is_err());

    let host = reg.host.clone();
    reg.restart();
    assert!(reg.is_running());
    assert_eq!(reg.host, host);
    let out = work.path().join("out");
    oras_pull(&reg, &reference, &out);
    for (path, bytes) in &files {
        assert_eq!(&std::fs::read(out.join(path)).unwrap(), bytes, "{path}");
    }
    // The log covers both runs: the push's uploads are still there.
    assert_eq!(reg.uploads().len(), files.len() + 1);
}

#[test]
fn skopeo_copies_an_oras_artifact_into_an_oci_layout_byte_for_byte() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Oras, Tool::Skopeo);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files = model_folder(&src);
    let reference = format!("{}/models/minilm:v1", reg.host);
    push_folder(&reg, &reference, &src);

    let layout = work.path().join("layout");
    skopeo_copy_to_oci_layout(&reg, &reference, &layout, "v1");
    for (path, bytes) in &files {
        let hex = sha256(bytes);
        let blob = layout
            .join("blobs/sha256")
            .join(hex.strip_prefix("sha256:").unwrap());
        assert_eq!(&std::fs::read(&blob).unwrap(), bytes, "{path}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
}

#[test]
fn a_tiny_image_made_with_umoci_goes_through_the_registry_and_unpacks() {
    require_tools!(Tool::Registry, Tool::Htpasswd, Tool::Skopeo, Tool::Umoci);
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let built = work.path().join("built");
    let image = format!("{}:base", built.display());
    umoci(&["init".as_ref(), "--layout".as_ref(), built.as_os_str()]);
    umoci(&["new".as_ref(), "--image".as_ref(), image.as_ref()]);
    let payload = work.path().join("hello.txt");
    std::fs::write(&payload, b"a file inside an image\n").unwrap();
    umoci(&[
        "insert".as_ref(),
        "--rootless".as_ref(),
        "--image".as_ref(),
        image.as_ref(),
        payload.as_os_str(),
        "/models/hello.txt".as_ref(),
    ]);
    let reference = format!("{}/images/tiny:1", reg.host);
    skopeo_copy_from_oci_layout(&reg, &built, "base", &reference);
    let manifest = skopeo_inspect_raw(&reg, &reference);
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        1,
        "{manifest}"
    );

    let fetched = work.path().join("fetched");
    skopeo_copy_to_oci_layout(&reg, &reference, &fetched, "t");
    let rootfs = umoci_unpack(&fetched, "t", &work.path().join("bundle"));
    assert_eq!(
        std::fs::read(rootfs.join("models/hello.txt")).unwrap(),
        b"a file inside an image\n"
    );
}
