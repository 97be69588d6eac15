//! The `hub-emulator serve` binary: start-up line, served manifest, `--write-manifest`, gate
//! token, bandwidth cap, and a clean exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, head, send};
use hub_emulator::synth;

const BIN: &str = env!("CARGO_BIN_EXE_hub-emulator");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/manifest.json");

/// A running `hub-emulator serve`, killed on drop if still running.
struct Server {
    child: Child,
    endpoint: String,
    cdn: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "hub-emulator listening on http://localhost:PORT (CDN http://127.0.0.1:PORT2)"
    let rest = line
        .trim()
        .strip_prefix("hub-emulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (endpoint, cdn) = rest.split_once(" (CDN ").unwrap();
    Server {
        child,
        endpoint: endpoint.to_owned(),
        cdn: cdn.trim_end_matches(')').to_owned(),
    }
}

fn terminate(server: &mut Server) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_a_manifest_and_writes_the_synthetic_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synthetic.json");
    let mut server = serve(&[
        "--manifest",
        FIXTURE,
        "--scale",
        "0.001",
        "--write-manifest",
        out.to_str().unwrap(),
    ]);
    assert!(server.endpoint.starts_with("http://localhost:"));
    assert!(server.cdn.starts_with("http://127.0.0.1:"));
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        written.as_array().unwrap().len(),
        input.as_array().unwrap().len()
    );

    // Pinned entry: served at its commit, manifest rewritten to the synthetic hash and size.
    let semantic = &written[0];
    let reply = head(
        &server.endpoint,
        "/intfloat/e5-large-v2/resolve/f169b11e22de13617baa190a028a32f3493550b6/model.safetensors",
    );
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("x-linked-etag").unwrap(),
        format!("\"{}\"", semantic["sha256"].as_str().unwrap())
    );
    assert_eq!(reply.header("x-linked-size").unwrap(), "1340617");
    assert_eq!(semantic["size_bytes"], 1_340_617);
    let location = reply.header("location").unwrap().to_owned();
    assert!(location.starts_with(&server.cdn));
    let body = get(&server.cdn, &common::path_of(&location)).body;
    assert_eq!(
        synth::sha256_hex(&body),
        semantic["sha256"].as_str().unwrap()
    );
    let header_len = u64::from_le_bytes(body[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&body[8..8 + header_len]).unwrap();
    assert!(
        header.as_object().unwrap().len() >= 2,
        "a real safetensors header"
    );
    // Unpinned entries keep nulls; the approximation table sets their size.
    assert!(written[2]["sha256"].is_null() && written[2]["size_bytes"].is_null());
    assert_eq!(written[1], input[1]);
    let reply = head(
        &server.endpoint,
        "/allenai/longformer-base-4096/resolve/301e6a42cb0d9976a6d6a26a079fef81c18aa895/pytorch_model.bin",
    );
    assert_eq!(reply.header("x-linked-size").unwrap(), "597257");
    let reply = get(
        &server.endpoint,
        "/sentence-transformers/paraphrase-MiniLM-L6-v2/resolve/main/config.json",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["_name_or_path"],
        "sentence-transformers/paraphrase-MiniLM-L6-v2"
    );
    assert!(terminate(&mut server).success());
}

#[test]
fn gate_token_and_bandwidth_cap() {
    let mut server = serve(&[
        "--manifest",
        FIXTURE,
        "--scale",
        "0.0001",
        "--gate-token",
        "hf_demo",
        "--bandwidth-cap",
        "100000",
    ]);
    let path = "/intfloat/e5-large-v2/resolve/main/config.json";
    assert_eq!(get(&server.endpoint, path).status, 401);
    let reply = send(
        &server.endpoint,
        "GET",
        path,
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(reply.status, 403);
    let reply = send(
        &server.endpoint,
        "HEAD",
        "/intfloat/e5-large-v2/resolve/main/model.safetensors",
        &[("Authorization", "Bearer hf_demo")],
    );
    assert_eq!(reply.status, 302);
    let started = Instant::now();
    let body = get(
        &server.cdn,
        &common::path_of(reply.header("location").unwrap()),
    )
    .body;
    assert_eq!(body.len(), 134_062);
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert!(terminate(&mut server).success());
}

#[test]
fn help_reads_well() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for option in [
        "--scale <FACTOR>",
        "--port <PORT>",
        "--cdn-port <PORT>",
        "--manifest <PATH>",
        "--write-manifest <OUT>",
        "--bandwidth-cap <BYTES_PER_SEC>",
        "--gate-token <TOKEN>",
        "[default: 0.01]",
        "[default: 8765]",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8(output.stdout).unwrap().contains("serve"));
}

#[test]
fn bad_manifest_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"model_id": "X", "repo_id": "a/b"}]"#).unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--port", "0", "--manifest", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("filename"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn serves_a_folder_with_quirks_and_short_lived_cdn_urls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(dir.path().join("config.json"), common::CONFIG).unwrap();
    std::fs::write(dir.path().join("1_Pooling/config.json"), "{}").unwrap();
    let weights = common::weights();
    std::fs::write(dir.path().join("model.safetensors"), &weights).unwrap();
    let commit = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";
    let mut server = serve(&[
        "--repo-dir",
        dir.path().to_str().unwrap(),
        "--repo-id",
        "org/folder",
        "--revision",
        commit,
        "--cdn-url-ttl",
        "60",
        "--omit-repo-commit",
    ]);
    let reply = head(
        &server.endpoint,
        &format!("/org/folder/resolve/{commit}/config.json"),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("etag").unwrap(),
        format!(
            "\"{}\"",
            synth::git_blob_sha1_hex(common::CONFIG.as_bytes())
        )
    );
    assert!(
        reply.header("x-repo-commit").is_none(),
        "--omit-repo-commit"
    );
    let reply = head(
        &server.endpoint,
        "/org/folder/resolve/main/model.safetensors",
    );
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("x-linked-etag").unwrap(),
        format!("\"{}\"", synth::sha256_hex(&weights))
    );
    let location = reply.header("location").unwrap().to_owned();
    assert!(location.contains("X-Amz-Expires=60"), "{location}");
    assert_eq!(get(&server.cdn, &common::path_of(&location)).body, weights);
    let info = get(
        &server.endpoint,
        &format!("/api/models/org/folder/revision/{commit}"),
    )
    .json();
    assert_eq!(info["sha"], commit);
    // Only the folder is served without --manifest.
    assert_eq!(
        head(
            &server.endpoint,
            "/intfloat/e5-large-v2/resolve/main/config.json"
        )
        .status,
        401
    );
    assert!(terminate(&mut server).success());
}

#[test]
fn rejects_a_bad_folder_revision() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--port", "0", "--repo-dir"])
        .arg(dir.path())
        .args(["--repo-id", "org/x", "--revision", "main"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("40-hex"));
}

#[tokio::test]
async fn cdn_over_tls_with_an_edge_mix_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("cdn-ca.pem");
    let mut server = serve(&[
        "--manifest",
        FIXTURE,
        "--scale",
        "0.0001",
        "--cdn-tls-ca",
        ca.to_str().unwrap(),
        "--edge-mix",
        "4MB/s:2,38MB/s:1",
        "--edge-seed",
        "9",
    ]);
    assert!(
        server.cdn.starts_with("https://127.0.0.1:"),
        "{}",
        server.cdn
    );
    let reply = head(
        &server.endpoint,
        "/intfloat/e5-large-v2/resolve/main/model.safetensors",
    );
    assert_eq!(reply.status, 302);
    let location = reply.header("location").unwrap().to_owned();
    assert!(location.starts_with(&server.cdn), "{location}");
    // A client trusting the CA written out gets the file over HTTP/2.
    let pem = std::fs::read(&ca).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let response = client.get(&location).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.bytes().await.unwrap().len(), 134_062);
    assert!(terminate(&mut server).success());
}

#[test]
fn a_bad_edge_mix_is_a_clear_error() {
    let output = Command::new(BIN)
        .args(["serve", "--port", "0", "--edge-mix", "4MB/s:2,fast"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("fast") && stderr.contains("38MB/s"),
        "{stderr}"
    );
}
