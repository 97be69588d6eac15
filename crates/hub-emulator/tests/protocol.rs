//! The emulator's wire protocol, checked with a raw HTTP client: resolve HEAD/GET headers,
//! the CDN redirect, ranges, revisions and encodings, errors and the gate, the JSON API,
//! `set_file`, the request log, keep-alive, and start/stop from any runtime.

mod common;

use common::*;
use hub_emulator::{synth, Host, HubBuilder, RepoSpec};

#[test]
fn head_of_a_regular_file() {
    let hub = standard_hub(true);
    let reply = head(&hub.endpoint(), "/org/model/resolve/main/config.json");
    assert_eq!(reply.status, 200);
    let commit = reply.header("x-repo-commit").unwrap();
    assert!(is_commit(commit), "{commit}");
    assert_eq!(Some(commit.to_owned()), hub.commit_of("org/model", "main"));
    assert_eq!(
        reply.header("etag").unwrap(),
        format!("\"{}\"", synth::git_blob_sha1_hex(CONFIG.as_bytes()))
    );
    assert_eq!(reply.content_length(), Some(CONFIG.len() as u64));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert!(reply.header("x-linked-etag").is_none());
    for (name, _) in &reply.headers {
        assert!(!name.to_ascii_lowercase().starts_with("x-xet"), "{name}");
        assert!(!name.eq_ignore_ascii_case("link"), "{name}");
    }
    let reply = get(&hub.endpoint(), "/org/model/resolve/main/config.json");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, CONFIG.as_bytes());
    assert_eq!(reply.header("content-encoding"), None);
}

#[test]
fn lfs_files_redirect_to_the_cdn() {
    let hub = standard_hub(true);
    let weights = weights();
    let sha = synth::sha256_hex(&weights);
    for method in ["HEAD", "GET"] {
        let reply = send(
            &hub.endpoint(),
            method,
            "/org/model/resolve/main/model.safetensors",
            &[],
        );
        assert_eq!(reply.status, 302, "{method}");
        assert_eq!(reply.header("x-linked-etag").unwrap(), format!("\"{sha}\""));
        assert_eq!(reply.header("etag").unwrap(), format!("\"{sha}\""));
        assert_eq!(
            reply.header("x-linked-size").unwrap(),
            WEIGHTS_LEN.to_string()
        );
        assert!(is_commit(reply.header("x-repo-commit").unwrap()));
        let location = reply.header("location").unwrap();
        assert!(
            location.starts_with(&format!("{}/lfs/{sha}", hub.cdn_origin())),
            "{location}"
        );
        assert_ne!(origin_of(location), hub.endpoint());
    }
    let location = head(&hub.endpoint(), "/org/model/resolve/main/model.safetensors")
        .header("location")
        .unwrap()
        .to_owned();
    let reply = get(&hub.cdn_origin(), &path_of(&location));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, weights);
    assert_eq!(reply.header("etag").unwrap(), format!("\"{sha}\""));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    let reply = head(&hub.cdn_origin(), &format!("/lfs/{sha}"));
    assert_eq!(
        (reply.status, reply.content_length()),
        (200, Some(WEIGHTS_LEN))
    );
    assert_eq!(
        get(&hub.cdn_origin(), &format!("/lfs/{}", "0".repeat(64))).status,
        404
    );
    // The CDN does not serve the Hub's routes.
    assert_eq!(
        get(&hub.cdn_origin(), "/org/model/resolve/main/config.json").status,
        404
    );
}

#[test]
fn lfs_files_served_directly_without_cdn_redirect() {
    let hub = standard_hub(false);
    let weights = weights();
    let sha = synth::sha256_hex(&weights);
    let reply = head(&hub.endpoint(), "/org/model/resolve/main/model.safetensors");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-linked-etag").unwrap(), format!("\"{sha}\""));
    assert_eq!(
        reply.header("x-linked-size").unwrap(),
        WEIGHTS_LEN.to_string()
    );
    assert_eq!(reply.content_length(), Some(WEIGHTS_LEN));
    assert!(reply.header("location").is_none());
    let reply = get(&hub.endpoint(), "/org/model/resolve/main/model.safetensors");
    assert_eq!(reply.body, weights);
    assert!(is_commit(reply.header("x-repo-commit").unwrap()));
}

#[test]
fn byte_ranges_on_both_hosts() {
    let hub = standard_hub(true);
    let weights = weights();
    let total = weights.len() as u64;
    let sha = synth::sha256_hex(&weights);
    let cases: [(&str, u64, u64); 5] = [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=99990-", 99_990, total - 1),
        ("bytes=-25", total - 25, total - 1),
        // hf-hub 0.x asks one byte past the end: clamped.
        ("bytes=99000-100000", 99_000, total - 1),
    ];
    for (origin, path) in [
        (hub.cdn_origin(), format!("/lfs/{sha}")),
        (
            hub.endpoint(),
            "/org/model/resolve/main/config.json".to_owned(),
        ),
    ] {
        let data: &[u8] = if origin == hub.endpoint() {
            CONFIG.as_bytes()
        } else {
            &weights
        };
        let total = data.len() as u64;
        for (range, start, end) in cases {
            let (start, end) = if total < 1000 {
                // The config is small: use ranges inside it.
                match range {
                    "bytes=0-0" => (0, 0),
                    "bytes=-25" => (total - 25, total - 1),
                    _ => continue,
                }
            } else {
                (start, end)
            };
            let reply = send(&origin, "GET", &path, &[("Range", range)]);
            assert_eq!(reply.status, 206, "{origin} {range}");
            assert_eq!(
                reply.header("content-range").unwrap(),
                format!("bytes {start}-{end}/{total}")
            );
            assert_eq!(reply.content_length(), Some(end - start + 1));
            assert_eq!(reply.body, &data[start as usize..=end as usize]);
        }
        let reply = send(
            &origin,
            "GET",
            &path,
            &[("Range", &format!("bytes={total}-"))],
        );
        assert_eq!(reply.status, 416);
        assert_eq!(
            reply.header("content-range").unwrap(),
            format!("bytes */{total}")
        );
        let reply = send(&origin, "HEAD", &path, &[("Range", "bytes=1-2")]);
        assert_eq!((reply.status, reply.content_length()), (206, Some(2)));
    }
    // If-Range: a stale validator gets the full body, the current one the range.
    let path = format!("/lfs/{sha}");
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &path,
        &[("Range", "bytes=5-9"), ("If-Range", "\"0000\"")],
    );
    assert_eq!((reply.status, reply.body.len() as u64), (200, total));
    let current = format!("\"{sha}\"");
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &path,
        &[("Range", "bytes=5-9"), ("If-Range", &current)],
    );
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (206, &weights[5..10])
    );
    // Compression is never applied, even when asked for.
    let reply = send(
        &hub.cdn_origin(),
        "GET",
        &path,
        &[("Accept-Encoding", "gzip, deflate"), ("Range", "bytes=0-0")],
    );
    assert_eq!(
        (reply.status, reply.header("content-encoding")),
        (206, None)
    );
}

#[test]
fn revisions_paths_and_repo_id_forms() {
    let hub = standard_hub(true);
    let main = hub.commit_of("org/model", "main").unwrap();
    for revision in [
        "main",
        "refs%2Fpr%2F1",
        "refs/pr/1",
        "v1.0",
        &main,
        &main.to_uppercase(),
    ] {
        let reply = head(
            &hub.endpoint(),
            &format!("/org/model/resolve/{revision}/config.json"),
        );
        assert_eq!(reply.status, 200, "{revision}");
        assert_eq!(reply.header("x-repo-commit"), Some(main.as_str()));
    }
    let reply = get(
        &hub.endpoint(),
        "/org/model/resolve/main/sub/dir/notes%20v2.txt",
    );
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"nested"[..]));
    let reply = get(
        &hub.endpoint(),
        "/org/model/resolve/refs%2Fpr%2F1/sub/vocab.txt",
    );
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"a\nb\n"[..]));
    let reply = get(&hub.endpoint(), "/solo/resolve/main/README.md");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"# solo\n"[..])
    );
    assert_eq!(
        hub.resolve_url("org/model", "refs/pr/1", "sub/dir/notes v2.txt"),
        format!(
            "{}/org/model/resolve/refs%2Fpr%2F1/sub/dir/notes%20v2.txt",
            hub.endpoint()
        )
    );
    // Tolerated request headers.
    let reply = send(
        &hub.endpoint(),
        "HEAD",
        "/org/model/resolve/main/config.json",
        &[
            ("X-Amzn-Trace-Id", "3c8bd9a2-0ad6-4b8e-8d3c-1b2b0f8b3c11"),
            ("X-HF-Download-Counter", "1"),
            ("If-None-Match", "\"not-the-etag\""),
            ("User-Agent", "unknown/None; hf_hub/2.4.0; python/3.11.7"),
            ("Accept-Encoding", "identity"),
        ],
    );
    assert_eq!(reply.status, 200);
    // A matching If-None-Match is a 304 with the same metadata.
    let etag = reply.header("etag").unwrap().to_owned();
    let reply = send(
        &hub.endpoint(),
        "GET",
        "/org/model/resolve/main/config.json",
        &[("If-None-Match", &etag)],
    );
    assert_eq!(reply.status, 304);
    assert_eq!(reply.header("x-repo-commit"), Some(main.as_str()));
    assert!(reply.body.is_empty());
}

#[test]
fn errors_carry_hub_error_codes() {
    let hub = standard_hub(true);
    let main = hub.commit_of("org/model", "main").unwrap();
    let check = |path: &str, status: u16, code: &str| {
        for method in ["HEAD", "GET"] {
            let reply = send(&hub.endpoint(), method, path, &[]);
            assert_eq!(reply.status, status, "{method} {path}");
            assert_eq!(reply.header("x-error-code"), Some(code), "{method} {path}");
            let message = reply.header("x-error-message").unwrap().to_owned();
            if method == "GET" {
                assert_eq!(reply.json()["error"], message.as_str());
            }
        }
        send(&hub.endpoint(), "HEAD", path, &[])
    };
    check("/org/nope/resolve/main/config.json", 401, "RepoNotFound");
    check("/nope/resolve/main/config.json", 401, "RepoNotFound");
    check(
        "/org/model/resolve/nope/config.json",
        404,
        "RevisionNotFound",
    );
    check(
        &format!("/org/model/resolve/{}/config.json", "a".repeat(40)),
        404,
        "RevisionNotFound",
    );
    let reply = check("/org/model/resolve/main/nope.json", 404, "EntryNotFound");
    assert_eq!(reply.header("x-repo-commit"), Some(main.as_str()));
    check("/api/models/org/nope", 401, "RepoNotFound");
    check(
        "/api/models/org/model/revision/nope",
        404,
        "RevisionNotFound",
    );
    assert_eq!(get(&hub.endpoint(), "/").status, 404);
    assert_eq!(
        send(
            &hub.endpoint(),
            "DELETE",
            "/org/model/resolve/main/config.json",
            &[]
        )
        .status,
        405
    );
}

#[test]
fn gated_repo() {
    let hub = standard_hub(true);
    let path = "/org/gated/resolve/main/model.safetensors";
    for method in ["HEAD", "GET"] {
        let reply = send(&hub.endpoint(), method, path, &[]);
        assert_eq!(
            (reply.status, reply.header("x-error-code")),
            (401, Some("GatedRepo"))
        );
        assert_eq!(
            reply.header("x-error-message").unwrap(),
            "Access to model org/gated is restricted. You must have access to it and be \
             authenticated to access it. Please log in."
        );
        let reply = send(
            &hub.endpoint(),
            method,
            path,
            &[("Authorization", "Bearer bad")],
        );
        assert_eq!(
            (reply.status, reply.header("x-error-code")),
            (403, Some("GatedRepo"))
        );
        assert_eq!(
            reply.header("x-error-message").unwrap(),
            "Access to model org/gated is restricted and you are not in the authorized list. \
             Visit https://huggingface.co/org/gated to ask for access."
        );
        let reply = send(
            &hub.endpoint(),
            method,
            path,
            &[("Authorization", "Bearer good")],
        );
        assert_eq!(reply.status, 302);
    }
    for api in ["/api/models/org/gated", "/api/models/org/gated/tree/main"] {
        assert_eq!(get(&hub.endpoint(), api).status, 401);
        let reply = send(
            &hub.endpoint(),
            "GET",
            api,
            &[("Authorization", "Bearer good")],
        );
        assert_eq!(reply.status, 200);
    }
    let info = send(
        &hub.endpoint(),
        "GET",
        "/api/models/org/gated",
        &[("Authorization", "Bearer good")],
    )
    .json();
    assert_eq!(info["gated"], "manual");
    // The CDN is not gated (signed-URL semantics).
    let location = send(
        &hub.endpoint(),
        "HEAD",
        path,
        &[("Authorization", "Bearer good")],
    )
    .header("location")
    .unwrap()
    .to_owned();
    let reply = get(&hub.cdn_origin(), &path_of(&location));
    assert_eq!((reply.status, reply.body.len()), (200, 2048));
}

#[test]
fn model_info_shapes() {
    let hub = standard_hub(true);
    let main = hub.commit_of("org/model", "main").unwrap();
    let weights = weights();
    for path in [
        "/api/models/org/model",
        "/api/models/org/model/revision/main",
        "/api/models/org/model/revision/refs%2Fpr%2F1",
    ] {
        let info = get(&hub.endpoint(), path).json();
        assert_eq!(info["id"], "org/model", "{path}");
        assert_eq!(info["modelId"], "org/model");
        assert_eq!(info["sha"], main.as_str());
        assert_eq!(info["private"], false);
        assert_eq!(info["gated"], false);
        assert_eq!(info["disabled"], false);
        assert!(info["_id"].is_string() && info["lastModified"].is_string());
        let names: Vec<&str> = info["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["rfilename"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "config.json",
                "model.safetensors",
                "sub/dir/notes v2.txt",
                "sub/vocab.txt"
            ]
        );
        assert!(info["siblings"][0].get("blobId").is_none());
    }
    let info = get(
        &hub.endpoint(),
        "/api/models/org/model/revision/main?blobs=true",
    )
    .json();
    let config = &info["siblings"][0];
    assert_eq!(
        config["blobId"],
        synth::git_blob_sha1_hex(CONFIG.as_bytes())
    );
    assert_eq!(config["size"], CONFIG.len());
    assert!(config.get("lfs").is_none());
    let model = &info["siblings"][1];
    let sha = synth::sha256_hex(&weights);
    let pointer = synth::lfs_pointer(&sha, WEIGHTS_LEN);
    assert_eq!(
        model["blobId"],
        synth::git_blob_sha1_hex(pointer.as_bytes())
    );
    assert_eq!(model["size"], WEIGHTS_LEN);
    assert_eq!(model["lfs"]["sha256"], sha);
    assert_eq!(model["lfs"]["size"], WEIGHTS_LEN);
    assert_eq!(model["lfs"]["pointerSize"], pointer.len());
    let solo = get(&hub.endpoint(), "/api/models/solo").json();
    assert_eq!(solo["id"], "solo");
}

#[test]
fn tree_and_paths_info() {
    let hub = standard_hub(true);
    let weights = weights();
    let sha = synth::sha256_hex(&weights);
    let paths = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["type"].as_str().unwrap(),
                    e["path"].as_str().unwrap()
                )
            })
            .collect()
    };
    let main = hub.commit_of("org/model", "main").unwrap();
    for query in [
        "?recursive=true&expand=false",
        "?recursive=True&expand=False",
    ] {
        let tree = get(
            &hub.endpoint(),
            &format!("/api/models/org/model/tree/{main}{query}"),
        )
        .json();
        assert_eq!(
            paths(&tree),
            [
                "file:config.json",
                "file:model.safetensors",
                "directory:sub",
                "directory:sub/dir",
                "file:sub/dir/notes v2.txt",
                "file:sub/vocab.txt"
            ]
        );
        let model = tree
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "model.safetensors")
            .unwrap();
        let pointer = synth::lfs_pointer(&sha, WEIGHTS_LEN);
        assert_eq!(model["oid"], synth::git_blob_sha1_hex(pointer.as_bytes()));
        assert_eq!(model["size"], WEIGHTS_LEN);
        assert_eq!(model["lfs"]["oid"], sha);
        assert_eq!(model["lfs"]["size"], WEIGHTS_LEN);
        assert_eq!(model["lfs"]["pointerSize"], pointer.len());
        assert!(model.get("xetHash").is_none());
        let config = tree
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "config.json")
            .unwrap();
        assert_eq!(config["oid"], synth::git_blob_sha1_hex(CONFIG.as_bytes()));
        assert!(config.get("lfs").is_none());
        let dir = tree
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "sub")
            .unwrap();
        assert_eq!(dir["size"], 0);
        assert!(dir["oid"].is_string());
    }
    let tree = get(&hub.endpoint(), "/api/models/org/model/tree/main").json();
    assert_eq!(
        paths(&tree),
        [
            "file:config.json",
            "file:model.safetensors",
            "directory:sub"
        ]
    );
    let tree = get(&hub.endpoint(), "/api/models/org/model/tree/main/sub").json();
    assert_eq!(paths(&tree), ["directory:sub/dir", "file:sub/vocab.txt"]);
    let tree = get(
        &hub.endpoint(),
        "/api/models/org/model/tree/main/sub%2Fdir?recursive=true",
    )
    .json();
    assert_eq!(paths(&tree), ["file:sub/dir/notes v2.txt"]);
    let reply = get(&hub.endpoint(), "/api/models/org/model/tree/main/nope");
    assert_eq!(
        (reply.status, reply.header("x-error-code")),
        (404, Some("EntryNotFound"))
    );

    let url = "/api/models/org/model/paths-info/main";
    let mut conn = Conn::open(&hub.endpoint());
    let form = conn.send(
        "POST",
        url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"paths=config.json&paths=sub&paths=nope&paths=sub%2Fdir%2Fnotes+v2.txt&expand=false",
    );
    assert_eq!(form.status, 200);
    assert_eq!(
        paths(&form.json()),
        [
            "file:config.json",
            "directory:sub",
            "file:sub/dir/notes v2.txt"
        ]
    );
    let json = conn.send(
        "POST",
        url,
        &[("Content-Type", "application/json")],
        br#"{"paths": ["model.safetensors", "missing"]}"#,
    );
    assert_eq!(paths(&json.json()), ["file:model.safetensors"]);
    assert_eq!(json.json()[0]["lfs"]["oid"], sha);
    assert_eq!(conn.send("GET", url, &[], b"").status, 405);

    let refs = get(&hub.endpoint(), "/api/models/org/model/refs?include_prs=1").json();
    assert_eq!(refs["branches"][0]["name"], "main");
    assert_eq!(refs["tags"][0]["name"], "v1.0");
    assert_eq!(refs["pullRequests"][0]["ref"], "refs/pr/1");
}

#[test]
fn set_file_makes_a_new_commit_on_main() {
    let hub = standard_hub(true);
    let old = hub.commit_of("org/model", "main").unwrap();
    let new = hub.set_file("org/model", "config.json", r#"{"hidden_size": 16}"#);
    assert!(is_commit(&new) && new != old);
    assert_eq!(hub.commit_of("org/model", "main"), Some(new.clone()));
    assert_eq!(hub.commit_of("org/model", "refs/pr/1"), Some(old.clone()));
    assert_eq!(hub.commit_of("org/model", &old), Some(old.clone()));
    let reply = get(&hub.endpoint(), "/org/model/resolve/main/config.json");
    assert_eq!(reply.header("x-repo-commit"), Some(new.as_str()));
    assert_eq!(reply.body, br#"{"hidden_size": 16}"#);
    let reply = get(
        &hub.endpoint(),
        &format!("/org/model/resolve/{old}/config.json"),
    );
    assert_eq!(reply.header("x-repo-commit"), Some(old.as_str()));
    assert_eq!(reply.body, CONFIG.as_bytes());
    // A new LFS file goes to the CDN; the old weights stay there too.
    let new_weights = synth::safetensors(5000, 9);
    let third = hub.set_file("org/model", "model.safetensors", new_weights.clone());
    let info = hub
        .file_info("org/model", "main", "model.safetensors")
        .unwrap();
    assert_eq!(
        (info.commit.as_str(), info.size, info.lfs),
        (third.as_str(), 5000, true)
    );
    assert_eq!(info.sha256, synth::sha256_hex(&new_weights));
    let reply = get(&hub.cdn_origin(), &format!("/lfs/{}", info.sha256));
    assert_eq!(reply.body, new_weights);
    let reply = get(
        &hub.cdn_origin(),
        &format!("/lfs/{}", synth::sha256_hex(&weights())),
    );
    assert_eq!(reply.status, 200);
    let info = get(
        &hub.endpoint(),
        &format!("/api/models/org/model/revision/{third}"),
    )
    .json();
    assert_eq!(info["sha"], third.as_str());
    // Adding a path.
    let fourth = hub.set_file("org/model", "extra/tokenizer.json", "{}");
    assert!(hub
        .file_info("org/model", &fourth, "extra/tokenizer.json")
        .is_some());
    assert!(hub
        .file_info("org/model", &third, "extra/tokenizer.json")
        .is_none());
    assert_eq!(hub.commit_of("org/model", "nope"), None);
    assert_eq!(hub.commit_of("nope", "main"), None);
}

#[test]
fn fixed_and_derived_commit_ids() {
    let fixed = "0123456789abcdef0123456789abcdef01234567";
    let hub = HubBuilder::new()
        .repo(
            RepoSpec::new("a/fixed")
                .file("f.txt", "x")
                .commit_sha(&fixed.to_uppercase()),
        )
        .repo(RepoSpec::new("a/one").file("f.txt", "x"))
        .repo(RepoSpec::new("a/two").file("f.txt", "x"))
        .start()
        .unwrap();
    assert_eq!(hub.commit_of("a/fixed", "main").as_deref(), Some(fixed));
    let one = hub.commit_of("a/one", "main").unwrap();
    let two = hub.commit_of("a/two", "main").unwrap();
    assert!(is_commit(&one) && one != two);
    let again = HubBuilder::new()
        .repo(RepoSpec::new("a/one").file("f.txt", "x"))
        .start()
        .unwrap();
    assert_eq!(again.commit_of("a/one", "main"), Some(one), "deterministic");
}

#[test]
fn lfs_by_extension_and_explicit_kinds() {
    let hub = HubBuilder::new()
        .repo(
            RepoSpec::new("k/m")
                .file("w.bin", vec![1u8; 10])
                .file("w.onnx", vec![1u8; 10])
                .file("tokenizer.json", "{}")
                .lfs_file("big.json", "{}")
                .regular_file("small.safetensors", vec![0u8; 10]),
        )
        .start()
        .unwrap();
    let lfs = |path: &str| hub.file_info("k/m", "main", path).unwrap().lfs;
    assert!(lfs("w.bin") && lfs("w.onnx") && lfs("big.json"));
    assert!(!lfs("tokenizer.json") && !lfs("small.safetensors"));
    assert_eq!(
        head(&hub.endpoint(), "/k/m/resolve/main/big.json").status,
        302
    );
    assert_eq!(
        head(&hub.endpoint(), "/k/m/resolve/main/small.safetensors").status,
        200
    );
}

#[test]
fn request_log_records_every_request() {
    let hub = standard_hub(true);
    let mut conn = Conn::open(&hub.endpoint());
    conn.send(
        "HEAD",
        "/org/model/resolve/refs%2Fpr%2F1/config.json?x=1",
        &[("Authorization", "Bearer t"), ("X-Amzn-Trace-Id", "abc")],
        b"",
    );
    conn.send("GET", "/org/model/resolve/main/config.json", &[], b"");
    get(&hub.endpoint(), "/org/model/resolve/main/missing");
    let sha = synth::sha256_hex(&weights());
    send(
        &hub.cdn_origin(),
        "GET",
        &format!("/lfs/{sha}"),
        &[("Range", "bytes=0-9")],
    );
    let log = hub.requests();
    assert_eq!(log.len(), 4);
    let first = &log[0];
    assert_eq!((first.host, first.method.as_str()), (Host::Hub, "HEAD"));
    assert_eq!(first.path, "/org/model/resolve/refs%2Fpr%2F1/config.json");
    assert_eq!(first.query.as_deref(), Some("x=1"));
    let names: Vec<&str> = first.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["host", "authorization", "x-amzn-trace-id"]);
    assert_eq!(first.header("Authorization"), Some("Bearer t"));
    assert_eq!((first.status, first.body_bytes_sent), (200, 0));
    assert_eq!(
        (log[1].status, log[1].body_bytes_sent),
        (200, CONFIG.len() as u64)
    );
    assert_eq!(log[1].query, None);
    assert_eq!(log[2].status, 404);
    assert_eq!(
        (log[3].host, log[3].status, log[3].body_bytes_sent),
        (Host::Cdn, 206, 10)
    );
    assert_eq!(log[3].range(), Some("bytes=0-9"));
    hub.clear_requests();
    assert!(hub.requests().is_empty());
    get(&hub.endpoint(), "/api/models/solo");
    assert_eq!(hub.requests().len(), 1);
}

#[test]
fn keep_alive_and_connection_close() {
    let hub = standard_hub(true);
    let mut conn = Conn::open(&hub.endpoint());
    for _ in 0..3 {
        let reply = conn.send("GET", "/org/model/resolve/main/config.json", &[], b"");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
    // Pipelined requests are answered in order.
    conn.write_request("HEAD", "/solo/resolve/main/README.md", &[], b"");
    conn.write_request("GET", "/solo/resolve/main/README.md", &[], b"");
    assert_eq!(conn.read_reply(true).status, 200);
    assert_eq!(conn.read_reply(false).body, b"# solo\n");
    let reply = conn.send(
        "GET",
        "/solo/resolve/main/README.md",
        &[("Connection", "close")],
        b"",
    );
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(conn.is_closed());
    // Expect: 100-continue gets its interim answer before the body is sent.
    let mut conn = Conn::open(&hub.endpoint());
    let body = br#"{"paths": ["config.json"]}"#;
    let length = body.len().to_string();
    conn.write_request(
        "POST",
        "/api/models/org/model/paths-info/main",
        &[("Expect", "100-continue"), ("Content-Length", &length)],
        b"",
    );
    assert_eq!(conn.read_reply(true).status, 100);
    conn.write_raw(body);
    let reply = conn.read_reply(false);
    assert_eq!(
        (reply.status, reply.json()[0]["path"].as_str()),
        (200, Some("config.json"))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn works_inside_a_current_thread_runtime() {
    let hub = standard_hub(true);
    let endpoint = hub.endpoint();
    let reply = tokio::task::spawn_blocking(move || get(&endpoint, "/solo/resolve/main/README.md"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_inside_a_multi_thread_runtime_and_drop_stops_it() {
    let hub = standard_hub(true);
    let (endpoint, cdn) = (hub.endpoint(), hub.cdn_origin());
    let reply = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || get(&endpoint, "/solo/resolve/main/README.md")
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    drop(hub);
    for origin in [endpoint, cdn] {
        let authority = origin
            .trim_start_matches("http://")
            .replace("localhost", "127.0.0.1");
        assert!(
            std::net::TcpStream::connect(authority).is_err(),
            "{origin} still listening"
        );
    }
}

#[test]
fn fixed_ports() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let hub = HubBuilder::new()
        .repo(RepoSpec::new("solo").file("a", "b"))
        .port(port)
        .start()
        .unwrap();
    assert_eq!(hub.endpoint(), format!("http://localhost:{port}"));
    assert_eq!(hub.hub_port(), port);
    assert!(hub.cdn_origin().starts_with("http://127.0.0.1:"));
    assert_eq!(get(&hub.endpoint(), "/solo/resolve/main/a").body, b"b");
    // The port is taken now: a second emulator on it fails to start.
    assert!(HubBuilder::new().port(port).start().is_err());
}

#[test]
fn large_bodies_stream_fast() {
    let data = vec![7u8; 64 << 20];
    let hub = HubBuilder::new()
        .repo(RepoSpec::new("big/m").lfs_file("w.bin", data))
        .start()
        .unwrap();
    let sha = hub.file_info("big/m", "main", "w.bin").unwrap().sha256;
    let started = std::time::Instant::now();
    let reply = get(&hub.cdn_origin(), &format!("/lfs/{sha}"));
    let elapsed = started.elapsed();
    assert_eq!(reply.body.len(), 64 << 20);
    assert!(elapsed.as_secs() < 10, "64 MiB took {elapsed:?}");
}
