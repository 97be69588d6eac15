//! End-to-end tests of the fleet operations against the loopback Hub emulator: `outdated`
//! after the emulator moves `main`, `lock --upgrade`, `--metrics-file` parsed by the real
//! Prometheus parser (`prometheus_client` in the test venv), and bundles carried to a fresh
//! cache with the emulator stopped, read there by the real `huggingface_hub`; with the bad
//! inputs: a truncated or tampered bundle, a bundle for another manifest, a metrics path in a
//! read-only folder (a real read-only tmpfs mount).

#![allow(clippy::print_stdout)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hub_emulator::{synth, HubBuilder, HubEmulator, RepoSpec};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cg-models");
const COMMIT: &str = "3333333333333333333333333333333333333333";
const ALL: [&str; 12] = [
    "Semantic",
    "TemporalRecent",
    "TemporalPeriodic",
    "TemporalPositional",
    "Causal",
    "Sparse",
    "Code",
    "Graph",
    "Hdc",
    "Multimodal",
    "Entity",
    "LateInteraction",
];

/// A hub with Entity (`org/entity`, 400 KB at a fixed commit) and Graph (`org/graph`,
/// 200 KB), a temp folder, and a fully pinned manifest of both.
struct World {
    dir: tempfile::TempDir,
    hub: Option<HubEmulator>,
    endpoint: String,
    entity: Vec<u8>,
    graph: Vec<u8>,
}

impl World {
    fn new() -> World {
        let entity = synth::safetensors(400_000, 7);
        let graph = synth::safetensors(200_000, 8);
        let hub = HubBuilder::new()
            .repo(
                RepoSpec::new("org/entity")
                    .file("model.safetensors", entity.clone())
                    .commit_sha(COMMIT),
            )
            .repo(RepoSpec::new("org/graph").file("model.safetensors", graph.clone()))
            .start()
            .expect("emulator starts");
        let world = World {
            dir: tempfile::tempdir().expect("temp dir"),
            endpoint: hub.endpoint(),
            hub: Some(hub),
            entity,
            graph,
        };
        let graph_commit = world.hub().commit_of("org/graph", "main").expect("commit");
        world.write_manifest(
            &world.manifest(),
            &[
                ("Entity", "org/entity", COMMIT, &world.entity),
                ("Graph", "org/graph", &graph_commit, &world.graph),
            ],
        );
        world
    }

    fn hub(&self) -> &HubEmulator {
        self.hub.as_ref().expect("the emulator runs")
    }

    fn manifest(&self) -> PathBuf {
        self.dir.path().join("models.json")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_manifest(&self, path: &Path, models: &[(&str, &str, &str, &[u8])]) {
        let entries: Vec<Value> = ALL
            .iter()
            .map(|model| match models.iter().find(|m| m.0 == *model) {
                Some((_, repo, commit, bytes)) => json!({
                    "model_id": model, "repo_id": repo, "filename": "model.safetensors",
                    "sha256": synth::sha256_hex(bytes), "size_bytes": bytes.len(),
                    "revision": commit,
                }),
                None => json!({ "model_id": model, "builtin": true }),
            })
            .collect();
        fs::write(path, serde_json::to_string_pretty(&entries).expect("json")).expect("write");
    }

    /// `cg-models` with a clean environment, this world's manifest and endpoint, and `cache`.
    fn run(&self, cache: &str, args: &[&str]) -> Run {
        self.run_manifest(&self.manifest(), cache, args)
    }

    fn run_manifest(&self, manifest: &Path, cache: &str, args: &[&str]) -> Run {
        let home = self.dir.path().join("home");
        let output = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("HF_HOME", home.join("hf"))
            .arg("--manifest")
            .arg(manifest)
            .arg("--cache-dir")
            .arg(self.path(cache))
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cg-models runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn snapshots(&self, cache: &str, repo: &str) -> PathBuf {
        self.path(cache)
            .join(format!("models--{}", repo.replace('/', "--")))
            .join("snapshots")
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code, expected,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self, kind: &str) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|v| v["type"] == kind)
            .collect()
    }
}

/// The venv's Python (`CG_TEST_PYTHON`, default `target/pyenv/bin/python`) if it imports
/// `module`; else `None` with `CG_SKIP_PYTHON_TESTS=1`, a panic otherwise.
fn python(module: &str) -> Option<PathBuf> {
    let exe = std::env::var_os("CG_TEST_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python"),
        PathBuf::from,
    );
    let usable = Command::new(&exe)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if usable {
        return Some(exe);
    }
    if std::env::var("CG_SKIP_PYTHON_TESTS").is_ok_and(|v| v == "1") {
        println!("skipping: no Python with {module}; CG_SKIP_PYTHON_TESTS=1");
        return None;
    }
    panic!(
        "no Python with {module} at {} (run scripts/setup-python, set CG_TEST_PYTHON, or CG_SKIP_PYTHON_TESTS=1)",
        exe.display()
    );
}

/// Runs a Python script with a clean environment and returns its stdout's last line as JSON.
fn run_python(exe: &Path, home: &Path, script: &str) -> Value {
    let output = Command::new(exe)
        .env_clear()
        .env("HOME", home)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .args(["-c", script])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).expect("python prints JSON")
}

#[test]
fn outdated_sees_a_moved_branch_and_lock_upgrade_moves_the_pin() {
    let world = World::new();
    let run = world.run("cache", &["outdated"]).code(0);
    assert!(run.stdout.contains("current"), "{}", run.stdout);

    // The Hub moves main of org/entity: a new file and a new commit.
    let replaced = synth::safetensors(400_100, 9);
    let head = world
        .hub()
        .set_file("org/entity", "model.safetensors", replaced.clone());
    let run = world.run("cache", &["outdated", "--json"]).code(3);
    let drifts = run.json("outdated");
    let entity = drifts
        .iter()
        .find(|d| d["model_id"] == "Entity")
        .expect("Entity");
    assert_eq!(entity["state"], "changed");
    assert_eq!(entity["pinned_commit"], COMMIT);
    assert_eq!(entity["head_commit"], head.as_str());
    assert_eq!(entity["files"][0]["change"], "changed");
    assert_eq!(
        entity["files"][0]["head_digest"],
        synth::sha256_hex(&replaced)
    );
    assert_eq!(entity["files"][0]["head_size"], 400_100);
    let graph = drifts
        .iter()
        .find(|d| d["model_id"] == "Graph")
        .expect("Graph");
    assert_eq!(graph["state"], "up_to_date");
    let table = world.run("cache", &["outdated"]).code(3);
    assert!(table.stdout.contains("changed"), "{}", table.stdout);
    assert!(
        table.stderr.contains("lock --upgrade Entity"),
        "{}",
        table.stderr
    );
    // It never moves a pin.
    let before = fs::read_to_string(world.manifest()).expect("manifest");
    assert!(before.contains(COMMIT));

    // Dry run shows the change and writes nothing; the upgrade writes it.
    let dry = world
        .run("cache", &["lock", "--upgrade", "--dry-run", "Entity"])
        .code(0);
    assert!(dry.stderr.contains("upgrade"), "{}", dry.stderr);
    assert_eq!(
        fs::read_to_string(world.manifest()).expect("manifest"),
        before
    );
    let upgraded = world.run("cache", &["lock", "--upgrade", "Entity"]).code(0);
    assert!(upgraded.stderr.contains(&head[..12]), "{}", upgraded.stderr);
    let after: Value =
        serde_json::from_str(&fs::read_to_string(world.manifest()).expect("manifest"))
            .expect("json");
    let entry = after
        .as_array()
        .and_then(|a| a.iter().find(|e| e["model_id"] == "Entity"))
        .expect("Entity entry")
        .clone();
    assert_eq!(entry["revision"], head.as_str());
    assert_eq!(entry["sha256"], synth::sha256_hex(&replaced));
    assert_eq!(entry["size_bytes"], 400_100);
    world.run("cache", &["outdated"]).code(0);
    // The new pin downloads.
    world.run("cache", &["ensure", "Entity"]).code(0);
}

#[test]
fn metrics_file_parses_with_the_prometheus_parser() {
    let world = World::new();
    let metrics = world.path("cg_models.prom");
    let metrics_arg = metrics.to_string_lossy().into_owned();
    world
        .run(
            "cache",
            &[
                "ensure",
                "--metrics-file",
                &metrics_arg,
                "--metrics-interval",
                "0.2",
            ],
        )
        .code(0);
    // A second run finds everything present.
    world
        .run("cache", &["verify", "--metrics-file", &metrics_arg])
        .code(0);
    let text = fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        text.contains("# TYPE cg_models_downloaded_bytes_total counter"),
        "{text}"
    );
    let Some(python) = python("prometheus_client") else {
        return;
    };
    let script = format!(
        "import json\nfrom prometheus_client.parser import text_string_to_metric_families\n\
         text = open({:?}).read()\nout = {{}}\n\
         for family in text_string_to_metric_families(text):\n    \
             for s in family.samples:\n        \
                 out[s.name + json.dumps(s.labels, sort_keys=True)] = [family.type, s.value]\n\
         print(json.dumps(out))",
        metrics.to_string_lossy()
    );
    let parsed = run_python(&python, world.dir.path(), &script);
    let sample = |key: &str| parsed[key].clone();
    assert_eq!(sample("cg_models_cache_size_bytes{}")[0], "gauge");
    assert!(
        sample("cg_models_cache_size_bytes{}")[1]
            .as_f64()
            .unwrap_or(0.0)
            >= 600_000.0
    );
    assert_eq!(
        sample("cg_models_models{\"state\": \"ready\"}")[1].as_f64(),
        Some(2.0)
    );
    assert_eq!(
        sample("cg_models_verification_failures_total{}"),
        Value::Null,
        "no failures, no series"
    );
    assert_eq!(
        typed(&sample(
            "cg_models_retries_total{\"reason\": \"server_error\"}"
        )),
        ("counter".to_owned(), 0.0)
    );
    // The verify run's recorder started at zero; the ensure run's counters were in the file
    // before: check them with a fresh ensure of a cleared cache.
    let metrics2 = world.path("second.prom");
    let second_arg = metrics2.to_string_lossy().into_owned();
    world
        .run("cache2", &["ensure", "--metrics-file", &second_arg])
        .code(0);
    let script2 = script.replace(&metrics.to_string_lossy().into_owned(), &second_arg);
    let parsed = run_python(&python, world.dir.path(), &script2);
    let total = world.entity.len() + world.graph.len();
    assert_eq!(
        typed(&parsed["cg_models_files_total{\"outcome\": \"downloaded\"}"]),
        ("counter".to_owned(), 2.0)
    );
    let downloaded = parsed["cg_models_downloaded_bytes_total{\"model\": \"Entity\"}"][1]
        .as_f64()
        .unwrap_or(0.0)
        + parsed["cg_models_downloaded_bytes_total{\"model\": \"Graph\"}"][1]
            .as_f64()
            .unwrap_or(0.0);
    assert_eq!(downloaded, total as f64);
    assert_eq!(
        typed(&parsed["cg_models_downloads_in_progress{}"]),
        ("gauge".to_owned(), 0.0)
    );
}

#[test]
fn a_metrics_path_in_a_read_only_or_missing_folder_fails_before_any_download() {
    let world = World::new();
    let missing = world.path("no-such-folder/m.prom");
    let run = world
        .run(
            "cache",
            &["ensure", "--metrics-file", &missing.to_string_lossy()],
        )
        .code(2);
    assert!(run.stderr.contains("folder is missing"), "{}", run.stderr);
    assert!(run.stderr.contains("no-such-folder"), "{}", run.stderr);

    let ro = world.path("ro");
    fs::create_dir_all(&ro).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&ro)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !in_ci,
            "CI=true, but a read-only tmpfs cannot be mounted here"
        );
        println!("skipping the read-only mount half: cannot mount tmpfs (not root?)");
        return;
    }
    let path = ro.join("m.prom");
    let run = world.run(
        "cache",
        &["ensure", "--metrics-file", &path.to_string_lossy()],
    );
    let _ = Command::new("umount").arg(&ro).status();
    let run = run.code(2);
    assert!(
        run.stderr.contains("cannot write the metrics file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Read-only file system"),
        "{}",
        run.stderr
    );
    assert!(
        !world.snapshots("cache", "org/entity").exists(),
        "nothing was downloaded"
    );
    assert!(
        world
            .hub()
            .requests()
            .iter()
            .all(|r| !r.path.contains("/resolve/")),
        "no download request was made"
    );
}

#[test]
fn a_bundle_carries_verified_files_to_a_fresh_cache_without_network() {
    let mut world = World::new();
    let Some(python) = python("huggingface_hub") else {
        return;
    };
    // Python fills the cache cg-models exports from (a cache both share).
    let shared = world.path("shared");
    let script = format!(
        "import json, huggingface_hub\n\
         p = huggingface_hub.hf_hub_download('org/entity', 'model.safetensors', revision={COMMIT:?}, cache_dir={:?})\n\
         print(json.dumps(p))",
        shared.to_string_lossy()
    );
    let home = world.path("pyhome");
    let output = Command::new(&python)
        .env_clear()
        .env("HOME", &home)
        .env("HF_ENDPOINT", &world.endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    world.run("shared", &["ensure", "Graph"]).code(0);
    let bundle = world.path("models.tar");
    let bundle_arg = bundle.to_string_lossy().into_owned();
    let run = world
        .run("shared", &["export", &bundle_arg, "--json"])
        .code(0);
    let export = &run.json("export")[0];
    assert_eq!(export["files"].as_array().map(Vec::len), Some(2));

    // The emulator stops: the other machine has no network.
    world.hub = None;
    world.endpoint = "http://127.0.0.1:9".to_owned();
    let run = world
        .run("fresh", &["import", &bundle_arg, "--offline"])
        .code(0);
    assert!(run.stdout.contains("Entity"), "{}", run.stdout);
    world.run("fresh", &["status", "--offline"]).code(0);
    // Again: everything is verified and kept.
    let again = world
        .run("fresh", &["import", &bundle_arg, "--json"])
        .code(0);
    assert_eq!(again.json("import")[0]["skipped_blobs"], 2);
    assert_eq!(again.json("import")[0]["imported_blobs"], 0);

    // Python reads the imported cache with no network.
    let read = format!(
        "import json, huggingface_hub, hashlib\n\
         p = huggingface_hub.hf_hub_download('org/entity', 'model.safetensors', revision={COMMIT:?}, cache_dir={:?}, local_files_only=True)\n\
         print(json.dumps(hashlib.sha256(open(p, 'rb').read()).hexdigest()))",
        world.path("fresh").to_string_lossy()
    );
    let sha = run_python(&python, &home, &read);
    assert_eq!(sha, synth::sha256_hex(&world.entity));
}

#[test]
fn bad_bundles_are_refused_and_nothing_is_placed() {
    let world = World::new();
    world.run("src", &["ensure"]).code(0);
    let bundle = world.path("models.tar");
    let bundle_arg = bundle.to_string_lossy().into_owned();
    world.run("src", &["export", &bundle_arg]).code(0);
    let bytes = fs::read(&bundle).expect("bundle");

    // Truncated in the middle of the last member.
    let truncated = world.path("truncated.tar");
    fs::write(&truncated, &bytes[..bytes.len() - 150_000]).expect("write");
    let run = world
        .run("t", &["import", &truncated.to_string_lossy(), "--offline"])
        .code(1);
    assert!(run.stderr.contains("truncated.tar"), "{}", run.stderr);
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    assert!(!world.snapshots("t", "org/entity").exists());
    assert!(!world.snapshots("t", "org/graph").exists());
    // The complete bundle resumes: the first blob was verified and is kept.
    let resumed = world
        .run("t", &["import", &bundle_arg, "--offline", "--json"])
        .code(0);
    assert_eq!(
        resumed.json("import")[0]["skipped_blobs"],
        1,
        "{}",
        resumed.stdout
    );

    // One byte of a member flipped.
    let position = find(&bytes, &world.graph[1000..1064]).expect("graph bytes in the bundle");
    let mut tampered = bytes.clone();
    tampered[position + 10] ^= 0xff;
    let tampered_path = world.path("tampered.tar");
    fs::write(&tampered_path, &tampered).expect("write");
    let run = world
        .run("x", &["import", &tampered_path.to_string_lossy()])
        .code(1);
    assert!(run.stderr.contains("tampered.tar"), "{}", run.stderr);
    assert!(
        run.stderr.contains("does not match its locked hash"),
        "{}",
        run.stderr
    );
    assert!(!world.snapshots("x", "org/graph").exists());
    assert!(!world.snapshots("x", "org/entity").exists());
    let graph_blobs = world.path("x/models--org--graph/blobs");
    let leftovers: Vec<_> = fs::read_dir(&graph_blobs)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "no temporary or wrong blob left: {leftovers:?}"
    );

    // A bundle for another manifest: Entity pinned at another commit.
    let other = world.path("other.json");
    let other_commit = "4".repeat(40);
    world.write_manifest(
        &other,
        &[("Entity", "org/entity", &other_commit, &world.entity)],
    );
    let run = world
        .run_manifest(&other, "y", &["import", &bundle_arg])
        .code(1);
    assert!(run.stderr.contains("models.tar"), "{}", run.stderr);
    assert!(run.stderr.contains("another manifest"), "{}", run.stderr);
    assert!(!world
        .path("y")
        .join("models--org--entity/snapshots")
        .exists());

    // Not a bundle at all.
    let junk = world.path("junk.tar");
    fs::write(&junk, b"not a tar file at all").expect("write");
    world.run("z", &["import", &junk.to_string_lossy()]).code(1);
}

/// A parsed sample as (family type, value).
fn typed(sample: &Value) -> (String, f64) {
    (
        sample[0].as_str().unwrap_or_default().to_owned(),
        sample[1].as_f64().unwrap_or(f64::NAN),
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
