//! `RepoSpec::from_dir`: a folder of files served as a repo, LFS or regular by extension, with
//! the same hashes, CDN redirect and API listings as files added one by one.

mod common;

use common::*;
use hub_emulator::{synth, HubBuilder, RepoSpec};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A folder like a small sentence-transformers repo, plus things `from_dir` must skip.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("1_Pooling")).unwrap();
    std::fs::create_dir_all(root.join("onnx")).unwrap();
    std::fs::create_dir_all(root.join(".git/objects")).unwrap();
    std::fs::write(root.join("config.json"), CONFIG).unwrap();
    std::fs::write(
        root.join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    std::fs::write(root.join("model.safetensors"), weights()).unwrap();
    std::fs::write(root.join("onnx/model.onnx"), vec![7u8; 3000]).unwrap();
    std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("config.json"), root.join("link.json")).unwrap();
    dir
}

#[test]
fn a_folder_is_served_like_files_added_one_by_one() {
    let dir = folder();
    let spec = RepoSpec::from_dir("org/folder", dir.path())
        .unwrap()
        .commit_sha(COMMIT);
    assert_eq!(spec.repo_id(), "org/folder");
    let hub = HubBuilder::new().repo(spec).start().unwrap();
    let endpoint = hub.endpoint();

    // Regular file: git blob SHA-1 ETag, served by the Hub itself.
    let reply = head(
        &endpoint,
        &format!("/org/folder/resolve/{COMMIT}/config.json"),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-repo-commit"), Some(COMMIT));
    assert_eq!(
        reply.header("etag").unwrap(),
        format!("\"{}\"", synth::git_blob_sha1_hex(CONFIG.as_bytes()))
    );
    assert!(reply.header("x-linked-etag").is_none());
    let reply = get(&endpoint, "/org/folder/resolve/main/1_Pooling/config.json");
    assert_eq!(reply.body, br#"{"pooling_mode_mean_tokens": true}"#);

    // LFS files: SHA-256 X-Linked-Etag behind the CDN redirect.
    for (path, content) in [
        ("model.safetensors", weights()),
        ("onnx/model.onnx", vec![7u8; 3000]),
    ] {
        let reply = head(&endpoint, &format!("/org/folder/resolve/main/{path}"));
        assert_eq!(reply.status, 302, "{path}");
        let sha = synth::sha256_hex(&content);
        assert_eq!(reply.header("x-linked-etag").unwrap(), format!("\"{sha}\""));
        assert_eq!(
            reply.header("x-linked-size").unwrap(),
            content.len().to_string()
        );
        let location = reply.header("location").unwrap();
        assert_eq!(get(&hub.cdn_origin(), &path_of(location)).body, content);
    }

    // Tree and revision API list exactly the folder's files (no .git, no symlink).
    let tree = get(&endpoint, "/api/models/org/folder/tree/main?recursive=true").json();
    let listed: Vec<(&str, &str)> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("1_Pooling", "directory"),
            ("1_Pooling/config.json", "file"),
            ("config.json", "file"),
            ("model.safetensors", "file"),
            ("onnx", "directory"),
            ("onnx/model.onnx", "file"),
        ]
    );
    let weights_entry = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "model.safetensors")
        .unwrap();
    assert_eq!(
        weights_entry["lfs"]["oid"],
        synth::sha256_hex(&weights()).as_str()
    );
    let info = get(
        &endpoint,
        &format!("/api/models/org/folder/revision/{COMMIT}"),
    )
    .json();
    assert_eq!(info["sha"], COMMIT);
    let siblings: Vec<&str> = info["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    assert_eq!(
        siblings,
        [
            "1_Pooling/config.json",
            "config.json",
            "model.safetensors",
            "onnx/model.onnx"
        ]
    );
    let info = hub.file_info("org/folder", "main", "config.json").unwrap();
    assert!(!info.lfs);
}

#[test]
fn a_missing_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RepoSpec::from_dir("org/x", dir.path().join("nope")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
