//! Mirror quirks: a Hub mirror that leaves out `X-Repo-Commit` (JFrog Artifactory's Hugging Face
//! remote) or `X-Linked-Etag`, or refuses query parameters it does not know.

mod common;

use common::*;
use hub_emulator::{synth, HubBuilder, HubEmulator, MirrorQuirks};

fn hub(quirks: MirrorQuirks) -> HubEmulator {
    let standard = HubBuilder::new()
        .repo(
            hub_emulator::RepoSpec::new("org/model")
                .file("config.json", CONFIG)
                .file("model.safetensors", weights()),
        )
        .mirror_quirks(quirks);
    standard.start().expect("start emulator")
}

#[test]
fn omit_repo_commit_drops_the_header_everywhere_on_the_hub() {
    let hub = hub(MirrorQuirks {
        omit_repo_commit: true,
        ..MirrorQuirks::default()
    });
    let sha = synth::sha256_hex(&weights());
    for (method, path) in [
        ("HEAD", "/org/model/resolve/main/config.json"),
        ("GET", "/org/model/resolve/main/config.json"),
        ("HEAD", "/org/model/resolve/main/model.safetensors"),
        ("GET", "/org/model/resolve/main/model.safetensors"),
        ("HEAD", "/org/model/resolve/main/missing.txt"),
    ] {
        let reply = send(&hub.endpoint(), method, path, &[]);
        assert!(reply.header("x-repo-commit").is_none(), "{method} {path}");
        assert!(reply.header("x-error-code").is_some() || reply.header("etag").is_some());
    }
    let reply = head(&hub.endpoint(), "/org/model/resolve/main/model.safetensors");
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("x-linked-etag"),
        Some(format!("\"{sha}\"").as_str())
    );
    // The commit is still found through the API, as a client without the header must do.
    let info = get(&hub.endpoint(), "/api/models/org/model/revision/main").json();
    assert_eq!(
        info["sha"].as_str(),
        hub.commit_of("org/model", "main").as_deref()
    );
}

#[test]
fn omit_linked_etag_keeps_etag_and_size() {
    let hub = hub(MirrorQuirks {
        omit_linked_etag: true,
        ..MirrorQuirks::default()
    });
    let sha = synth::sha256_hex(&weights());
    let reply = head(&hub.endpoint(), "/org/model/resolve/main/model.safetensors");
    assert_eq!(reply.status, 302);
    assert!(reply.header("x-linked-etag").is_none());
    assert_eq!(reply.header("etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(
        reply.header("x-linked-size"),
        Some(WEIGHTS_LEN.to_string().as_str())
    );
    assert!(reply.header("x-repo-commit").is_some());
    let location = reply.header("location").unwrap();
    assert_eq!(get(&hub.cdn_origin(), &path_of(location)).body, weights());
}

#[test]
fn reject_unknown_query_refuses_what_it_does_not_know() {
    let hub = hub(MirrorQuirks {
        reject_unknown_query: true,
        ..MirrorQuirks::default()
    });
    let reply = get(
        &hub.endpoint(),
        "/org/model/resolve/main/config.json?download=true",
    );
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"].as_str().unwrap().contains("download"));
    assert_eq!(
        get(&hub.endpoint(), "/org/model/resolve/main/config.json").status,
        200
    );
    // Parameters the routes use are accepted, on the Hub and on the signed CDN URL.
    assert_eq!(
        get(
            &hub.endpoint(),
            "/api/models/org/model/tree/main?recursive=true"
        )
        .status,
        200
    );
    assert_eq!(
        get(&hub.endpoint(), "/api/models/org/model?blobs=true").status,
        200
    );
    let location = head(&hub.endpoint(), "/org/model/resolve/main/model.safetensors")
        .header("location")
        .unwrap()
        .to_owned();
    assert_eq!(get(&hub.cdn_origin(), &path_of(&location)).status, 200);
    let extra = format!("{}&cache_buster=1", path_of(&location));
    assert_eq!(get(&hub.cdn_origin(), &extra).status, 400);
}

#[test]
fn no_quirks_by_default() {
    let hub = hub(MirrorQuirks::default());
    let reply = get(
        &hub.endpoint(),
        "/org/model/resolve/main/config.json?download=true",
    );
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-repo-commit").is_some());
}
