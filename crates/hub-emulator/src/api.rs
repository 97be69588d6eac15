//! JSON shapes of the Hub API: model info (`/api/models/{repo}[/revision/{rev}]`), tree and
//! paths-info entries, and refs. Shapes follow section 4 of the protocol note.

use serde_json::{json, Value};

use crate::repo::{Commit, FileEntry, Repo, TreeEntry};

/// `lastModified` / `createdAt` of every emulated repo: a fixed instant keeps answers stable.
const TIMESTAMP: &str = "2024-01-01T00:00:00.000Z";

/// `GET /api/models/{repo}[/revision/{rev}]`; `blobs` adds `blobId`, `size` and `lfs`.
pub(crate) fn model_info(repo: &Repo, commit: &Commit, blobs: bool) -> Value {
    let siblings: Vec<Value> = commit
        .files
        .values()
        .map(|file| {
            if blobs {
                let mut sibling = json!({
                    "rfilename": file.path,
                    "blobId": file.git_oid,
                    "size": file.size(),
                });
                if let Some(lfs) = &file.lfs {
                    sibling["lfs"] = json!({
                        "sha256": lfs.sha256,
                        "size": file.size(),
                        "pointerSize": lfs.pointer_size,
                    });
                }
                sibling
            } else {
                json!({ "rfilename": file.path })
            }
        })
        .collect();
    let author = repo
        .id
        .split_once('/')
        .map_or(repo.id.as_str(), |(org, _)| org);
    let object_id = &crate::synth::git_blob_sha1_hex(repo.id.as_bytes())[..24];
    let used_storage: u64 = commit.files.values().map(|f| f.size()).sum();
    json!({
        "_id": object_id,
        "id": repo.id,
        "modelId": repo.id,
        "author": author,
        "sha": commit.sha,
        "lastModified": TIMESTAMP,
        "createdAt": TIMESTAMP,
        "private": false,
        "gated": if repo.accepted_tokens.is_some() { json!("manual") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "usedStorage": used_storage,
        "siblings": siblings,
    })
}

/// One `/tree` or `/paths-info` entry.
pub(crate) fn tree_entry(entry: &TreeEntry<'_>) -> Value {
    match entry {
        TreeEntry::File(file) => file_entry(file),
        TreeEntry::Directory { path, oid } => {
            json!({ "type": "directory", "oid": oid, "size": 0, "path": path })
        }
    }
}

fn file_entry(file: &FileEntry) -> Value {
    let mut value = json!({
        "type": "file",
        "oid": file.git_oid,
        "size": file.size(),
        "path": file.path,
    });
    if let Some(lfs) = &file.lfs {
        value["lfs"] = json!({
            "oid": lfs.sha256,
            "size": file.size(),
            "pointerSize": lfs.pointer_size,
        });
    }
    value
}

/// `GET /api/models/{repo}/refs`: `main` and other refs that look like branches are
/// branches, `refs/pr/N` are pull requests (only with `include_prs`), the rest tags.
pub(crate) fn refs(repo: &Repo, include_prs: bool) -> Value {
    let mut names: Vec<(&String, &String)> = repo.refs.iter().collect();
    names.sort();
    let (mut branches, mut tags, mut pulls) = (Vec::new(), Vec::new(), Vec::new());
    for (name, sha) in names {
        if name.starts_with("refs/pr/") {
            pulls.push(json!({ "name": name, "ref": name, "targetCommit": sha }));
        } else if name == "main" || name.starts_with("refs/heads/") {
            let short = name.trim_start_matches("refs/heads/");
            branches.push(
                json!({ "name": short, "ref": format!("refs/heads/{short}"), "targetCommit": sha }),
            );
        } else {
            let short = name.trim_start_matches("refs/tags/");
            tags.push(
                json!({ "name": short, "ref": format!("refs/tags/{short}"), "targetCommit": sha }),
            );
        }
    }
    let mut value = json!({ "branches": branches, "tags": tags, "converts": [] });
    if include_prs {
        value["pullRequests"] = Value::Array(pulls);
    }
    value
}
