//! End-to-end tests of the `cg-models` binary against the loopback Hub emulator: every
//! command, JSON output, exit codes, offline mode, pinning, eviction, clearing, repair,
//! token hygiene, Ctrl-C, and the progress bars on a real 80-column terminal (tmux).
//!
//! Every run gets a cleared environment (only PATH, HOME and HF_HOME pointing into a temp
//! dir), so no real token, cache or endpoint of the machine leaks in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hub_emulator::{synth, Fault, FaultRule, FaultTarget, HubBuilder, HubEmulator, RepoSpec};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cg-models");
const SEMANTIC_COMMIT: &str = "1111111111111111111111111111111111111111";
const GRAPH_COMMIT: &str = "2222222222222222222222222222222222222222";
const TOKEN: &str = "hf_secretTOKENvalue0123456789";

/// One served weights file.
struct Served {
    model: &'static str,
    repo: &'static str,
    bytes: Vec<u8>,
}

/// A hub, a cache, and a manifest naming three models (the rest built in).
struct World {
    dir: tempfile::TempDir,
    hub: HubEmulator,
    served: Vec<Served>,
}

/// How each served model appears in the manifest.
#[derive(Clone, Copy)]
enum Pin {
    /// Commit, SHA-256 and size pinned (from the served file).
    Full,
    /// Nothing pinned: revision `main`, hash and size from the Hub.
    Nothing,
    /// Pinned commit and a SHA-256 that differs from the served file.
    WrongSha,
}

impl World {
    /// Semantic (fully pinned, 1 MB), Entity (unpinned, 300 KB), Graph (pinned, 200 KB).
    fn new() -> World {
        Self::build(
            &[
                ("Semantic", "org/semantic", 1_000_000, Some(SEMANTIC_COMMIT)),
                ("Entity", "org/entity", 300_000, None),
                ("Graph", "org/graph", 200_000, Some(GRAPH_COMMIT)),
            ],
            None,
        )
    }

    fn build(
        models: &[(&'static str, &'static str, u64, Option<&str>)],
        gate: Option<&str>,
    ) -> World {
        let mut builder = HubBuilder::new();
        let mut served = Vec::new();
        for (i, (model, repo, len, commit)) in models.iter().enumerate() {
            let bytes = synth::safetensors(*len, 100 + i as u64);
            let mut spec = RepoSpec::new(repo).file("model.safetensors", bytes.clone());
            if let Some(commit) = commit {
                spec = spec.commit_sha(commit);
            }
            if let Some(token) = gate {
                spec = spec.gated(&[token]);
            }
            builder = builder.repo(spec);
            served.push(Served { model, repo, bytes });
        }
        let world = World {
            dir: tempfile::tempdir().expect("temp dir"),
            hub: builder.start().expect("emulator starts"),
            served,
        };
        world.write_manifest(&world.manifest(), &[]);
        world
    }

    fn manifest(&self) -> PathBuf {
        self.dir.path().join("models.json")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn served(&self, model: &str) -> &Served {
        self.served
            .iter()
            .find(|s| s.model == model)
            .expect("served model")
    }

    /// Writes a manifest: served models pinned as `pins` says (default: `Full` for those
    /// with a commit, `Nothing` for the others), every other model built in.
    fn write_manifest(&self, path: &Path, pins: &[(&str, Pin)]) {
        let all = [
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
        let entries: Vec<Value> = all
            .iter()
            .map(|model| {
                let Some(served) = self.served.iter().find(|s| s.model == *model) else {
                    return json!({ "model_id": model, "builtin": true });
                };
                let commit = self.hub.commit_of(served.repo, "main").expect("commit");
                let default = if commit == SEMANTIC_COMMIT || commit == GRAPH_COMMIT {
                    Pin::Full
                } else {
                    Pin::Nothing
                };
                let pin = pins
                    .iter()
                    .find(|(m, _)| m == model)
                    .map_or(default, |(_, p)| *p);
                let sha = synth::sha256_hex(&served.bytes);
                let (revision, sha, size) = match pin {
                    Pin::Full => (json!(commit), json!(sha), json!(served.bytes.len())),
                    Pin::Nothing => (Value::Null, Value::Null, Value::Null),
                    Pin::WrongSha => (json!(commit), json!("ab".repeat(32)), Value::Null),
                };
                json!({
                    "model_id": model, "repo_id": served.repo, "filename": "model.safetensors",
                    "sha256": sha, "size_bytes": size, "revision": revision,
                })
            })
            .collect();
        fs::write(path, serde_json::to_string_pretty(&entries).expect("json"))
            .expect("write manifest");
    }

    /// A command with a clean environment and this world's hub, cache and manifest.
    fn command(&self, args: &[&str]) -> Command {
        self.command_at(&self.hub.endpoint(), args)
    }

    /// Like `command`, against another endpoint.
    fn command_at(&self, endpoint: &str, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("HF_HOME", home.join("hf"))
            .arg("--manifest")
            .arg(self.manifest())
            .arg("--cache-dir")
            .arg(self.cache())
            .arg("--endpoint")
            .arg(endpoint)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        for (name, value) in vars {
            command.env(name, value);
        }
        Run::from(command.output().expect("cg-models runs"))
    }

    /// The snapshot file of a model in the cache.
    fn snapshot(&self, model: &str) -> PathBuf {
        let served = self.served(model);
        let commit = self.hub.commit_of(served.repo, "main").expect("commit");
        self.cache()
            .join(format!("models--{}", served.repo.replace('/', "--")))
            .join("snapshots")
            .join(commit)
            .join("model.safetensors")
    }
}

/// A finished run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code, expected,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Every stdout line as JSON; each must be an object with a `type`.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                let value: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(value["type"].is_string(), "no type: {line}");
                value
            })
            .collect()
    }

    fn report(&self) -> Value {
        let lines = self.json_lines();
        let last = lines.last().expect("some JSON").clone();
        assert_eq!(last["type"], "report", "last line is the report: {last}");
        last
    }
}

fn cache_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.path().symlink_metadata() {
            Ok(meta) if meta.is_dir() => cache_size(&entry.path()),
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}

fn state_of(report: &Value, model: &str) -> String {
    report["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["model_id"] == model)
        .map(|m| m["state"].as_str().unwrap_or_default().to_owned())
        .expect("model in report")
}

#[test]
fn ensure_downloads_everything_then_status_reports_ready() {
    let world = World::new();
    let run = world.run(&["ensure"]).ok();
    assert!(run.stderr.contains("downloaded"), "{}", run.stderr);
    assert!(
        run.stderr.contains("all 12 models are ready"),
        "{}",
        run.stderr
    );
    for model in ["Semantic", "Entity", "Graph"] {
        let on_disk = fs::read(world.snapshot(model)).expect("snapshot exists");
        assert_eq!(on_disk, world.served(model).bytes, "{model}");
    }

    let status = world.run(&["status"]).ok();
    let row = |model: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{model} ")))
            .unwrap_or_else(|| panic!("no row for {model}:\n{}", status.stdout))
            .to_owned()
    };
    assert!(row("Semantic").contains("ready") && row("Semantic").contains("pinned"));
    assert!(
        row("Entity").contains("ready") && row("Entity").contains(" hub "),
        "{}",
        row("Entity")
    );
    assert!(row("Hdc").contains("builtin"));
    assert!(row("Graph").contains(&world.snapshot("Graph").display().to_string()));

    let again = world.run(&["pull"]).ok();
    assert!(
        again.stderr.contains("nothing to download"),
        "{}",
        again.stderr
    );
}

#[test]
fn ensure_named_models_only_and_status_exits_1_while_some_are_missing() {
    let world = World::new();
    let status = world.run(&["status"]).code(1);
    assert!(
        status.stderr.contains("cg-models ensure"),
        "{}",
        status.stderr
    );
    world.run(&["download", "entity", "E1"]).ok();
    assert!(world.snapshot("Entity").exists() && world.snapshot("Semantic").exists());
    assert!(!world.snapshot("Graph").exists());
    let report = world.run(&["status", "--json"]).code(1).report();
    assert_eq!(report["ok"], false);
    assert_eq!(report["exit_code"], 1);
    assert_eq!(report["missing_models"], json!(["Graph"]));
    assert_eq!(state_of(&report, "Entity"), "ready");
    assert_eq!(state_of(&report, "Graph"), "missing");
}

#[test]
fn json_ensure_streams_every_event_then_a_final_report() {
    let world = World::new();
    let run = world.run(&["--json", "ensure"]).ok();
    let lines = run.json_lines();
    let events: Vec<&Value> = lines.iter().filter(|l| l["type"] == "progress").collect();
    for model in ["Semantic", "Entity", "Graph"] {
        let of: Vec<&&Value> = events.iter().filter(|e| e["model_id"] == model).collect();
        // The file set first (here the weight file alone), then the transfer.
        assert_eq!(
            of.first().map(|e| (e["event"].clone(), e["files"].clone())),
            Some((json!("files_resolved"), json!(1))),
            "{model}"
        );
        assert_eq!(
            of.get(1).map(|e| e["event"].clone()),
            Some(json!("started")),
            "{model}"
        );
        assert_eq!(
            of.get(of.len() - 2)
                .map(|e| (e["event"].clone(), e["file"].clone())),
            Some((json!("file_ready"), json!("model.safetensors"))),
            "{model}"
        );
        let last = of.last().expect("events");
        assert_eq!(last["event"], "completed", "{model}");
        assert_eq!(last["outcome"], "downloaded");
        assert_eq!(last["bytes_transferred"], world.served(model).bytes.len());
        assert!(last["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("model.safetensors")));
        assert!(last["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20));
    }
    let report = run.report();
    assert_eq!(report["command"], "ensure");
    assert_eq!(report["ok"], true);
    assert_eq!(report["ready_models"].as_array().map(Vec::len), Some(12));
    assert_eq!(report["cache_dir"], json!(world.cache()));
    assert!(
        run.stderr.is_empty(),
        "JSON mode keeps stderr quiet: {}",
        run.stderr
    );

    // Again: nothing to fetch, each model reports already_present.
    let run = world.run(&["--json", "ensure"]).ok();
    let outcomes: Vec<Value> = run
        .json_lines()
        .iter()
        .filter(|l| l["event"] == "completed")
        .map(|l| l["outcome"].clone())
        .collect();
    assert_eq!(outcomes, vec![json!("already_present"); 3]);
}

#[test]
fn plain_output_is_timestamped_without_escape_codes() {
    let world = World::new();
    let run = world.run(&["ensure"]).ok();
    assert!(
        !run.all().contains('\u{1b}'),
        "escape codes in a pipe:\n{}",
        run.all()
    );
    for line in run.stderr.lines().filter(|l| !l.starts_with(' ')) {
        let stamp = line.split(' ').next().unwrap_or_default();
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "no timestamp: {line}"
        );
    }
    assert!(
        run.stderr.contains("Semantic: downloaded"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_and_configuration_errors_exit_2_with_one_clear_sentence() {
    let world = World::new();
    let bad_size = world.run(&["gc", "--max-size", "12XB"]).code(2);
    assert!(
        bad_size.stderr.contains("unknown unit"),
        "{}",
        bad_size.stderr
    );
    let bad_model = world.run(&["ensure", "Semantics"]).code(2);
    assert!(
        bad_model.stderr.contains("known models"),
        "{}",
        bad_model.stderr
    );
    let no_target = world.run(&["gc"]).code(2);
    assert!(
        no_target.stderr.contains("--max-size"),
        "{}",
        no_target.stderr
    );
    let missing_token_file = world
        .run(&["--token-file", "/nonexistent/token", "status"])
        .code(2);
    assert!(
        missing_token_file.stderr.contains("--token-file"),
        "{}",
        missing_token_file.stderr
    );

    let missing_manifest = Run::from(
        Command::new(BIN)
            .env_clear()
            .env("HF_HOME", world.dir.path().join("hf"))
            .args(["--manifest", "/nonexistent/models.json", "status"])
            .output()
            .expect("runs"),
    )
    .code(2);
    assert!(
        missing_manifest.stderr.contains("cannot read manifest"),
        "{}",
        missing_manifest.stderr
    );
    assert!(
        !missing_manifest.stderr.contains("panicked") && !missing_manifest.stderr.contains("Os {")
    );

    let help = world.run(&["--help"]).ok();
    assert!(help.stdout.contains("Examples:") && help.stdout.contains("Exit codes"));
    let help = world.run(&["lock", "--help"]).ok();
    assert!(help.stdout.contains("--force") && help.stdout.contains("Examples:"));
}

#[test]
fn gated_repo_without_token_says_how_to_give_one_and_tokens_never_show() {
    let world = World::build(&[("Entity", "org/gated", 100_000, None)], Some(TOKEN));
    let run = world.run(&["ensure"]).code(1);
    assert!(
        run.stderr.contains("HF_TOKEN") && run.stderr.contains("--token"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Entity"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));

    let wrong = format!("{TOKEN}-wrong");
    let run = world.run(&["-vv", "ensure", "--token", &wrong]).code(1);
    assert!(!run.all().contains(TOKEN), "token leaked:\n{}", run.all());

    for args in [
        vec!["ensure", "--token", TOKEN, "-vv"],
        vec!["--json", "status", "--token", TOKEN],
        vec!["verify", "--token", TOKEN, "-vv"],
    ] {
        let run = world.run(&args).ok();
        assert!(
            !run.all().contains(TOKEN),
            "token leaked by {args:?}:\n{}",
            run.all()
        );
    }
    assert!(world.snapshot("Entity").exists());

    let token_file = world.dir.path().join("token");
    fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    world.run(&["clear", "--yes"]).ok();
    let run = world
        .run(&[
            "ensure",
            "--token-file",
            token_file.to_str().expect("utf-8"),
            "-v",
        ])
        .ok();
    assert!(run.stderr.contains("token:    given"), "{}", run.stderr);
    assert!(!run.all().contains(TOKEN));
}

#[test]
fn offline_mode_makes_no_request_and_answers_from_the_cache() {
    let world = World::new();
    world.run(&["ensure", "Semantic", "Entity"]).ok();
    world.hub.clear_requests();

    let run = world
        .run(&["--offline", "ensure", "Semantic", "Entity"])
        .ok();
    assert!(run.stderr.contains("nothing to download"), "{}", run.stderr);
    world
        .run_with(&["status"], &[("HF_HUB_OFFLINE", "1")])
        .code(1);
    world.run(&["verify", "--offline"]).ok();
    let missing = world.run(&["ensure", "--offline"]).code(1);
    assert!(missing.stderr.contains("offline"), "{}", missing.stderr);
    assert!(missing.stderr.contains("Graph"), "{}", missing.stderr);
    let lock = world.run(&["lock", "--offline"]).code(2);
    assert!(lock.stderr.contains("offline"), "{}", lock.stderr);

    let requests = world.hub.requests();
    assert!(
        requests.is_empty(),
        "offline made requests: {:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

#[test]
fn lock_fills_unknown_pins_and_refuses_changed_ones_without_force() {
    let world = World::new();
    world.write_manifest(
        &world.manifest(),
        &[("Entity", Pin::Nothing), ("Graph", Pin::WrongSha)],
    );
    let out = world.dir.path().join("pinned.json");
    let out_arg = out.to_str().expect("utf-8");
    let refused = world.run(&["lock", "--output", out_arg]).code(1);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("changed") && refused.stderr.contains("Graph"),
        "{}",
        refused.stderr
    );
    assert!(!out.exists(), "nothing is written when refusing");

    let run = world.run(&["lock", "--force", "--output", out_arg]).ok();
    assert!(run.stderr.contains("filled"), "{}", run.stderr);
    let pinned: Value =
        serde_json::from_str(&fs::read_to_string(&out).expect("written")).expect("json");
    let entry = |model: &str| {
        pinned
            .as_array()
            .expect("array")
            .iter()
            .find(|e| e["model_id"] == model)
            .expect("entry")
            .clone()
    };
    for model in ["Entity", "Graph", "Semantic"] {
        let served = world.served(model);
        let e = entry(model);
        assert_eq!(e["sha256"], synth::sha256_hex(&served.bytes), "{model}");
        assert_eq!(e["size_bytes"], served.bytes.len(), "{model}");
        assert_eq!(
            e["revision"],
            json!(world.hub.commit_of(served.repo, "main")),
            "{model}"
        );
    }
    assert_eq!(entry("Hdc"), json!({"model_id": "Hdc", "builtin": true}));

    // JSON mode: a lock object with the diff, then the report; the pinned file is usable.
    fs::copy(&out, world.manifest()).expect("use the pinned manifest");
    let run = world.run(&["--json", "lock"]).ok();
    let lock = run
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "lock")
        .expect("lock object");
    assert_eq!(lock["filled"], json!([]));
    assert_eq!(lock["changed"], json!([]));
    assert_eq!(
        lock["written_to"],
        Value::Null,
        "nothing new, nothing written"
    );
    world.run(&["ensure"]).ok();

    // In place: the --manifest file itself is rewritten.
    world.write_manifest(&world.manifest(), &[("Semantic", Pin::Nothing)]);
    world.run(&["lock"]).ok();
    let rewritten: Value =
        serde_json::from_str(&fs::read_to_string(world.manifest()).expect("manifest"))
            .expect("json");
    assert!(rewritten
        .as_array()
        .expect("array")
        .iter()
        .all(|e| e["builtin"] == true || e["sha256"].is_string()));
}

#[test]
fn gc_frees_exactly_what_it_reports() {
    let world = World::new();
    world.run(&["ensure"]).ok();
    let before = cache_size(&world.cache());

    // Everything is needed by the manifest: nothing goes without --include-manifest.
    let kept = world.run(&["gc", "--max-size", "0"]).ok();
    assert!(
        kept.stderr.contains("--include-manifest"),
        "{}",
        kept.stderr
    );
    assert_eq!(cache_size(&world.cache()), before);

    let dry = world
        .run(&[
            "--json",
            "gc",
            "--max-size",
            "0",
            "--include-manifest",
            "--dry-run",
        ])
        .ok();
    let gc = dry
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "gc")
        .expect("gc object");
    assert_eq!(gc["dry_run"], true);
    assert_eq!(gc["removed"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        cache_size(&world.cache()),
        before,
        "a dry run removes nothing"
    );

    // Evict down to about one file: the oldest go first and the numbers add up.
    let limit = (before - 600_000).to_string();
    let run = world
        .run(&["--json", "gc", "--max-size", &limit, "--include-manifest"])
        .ok();
    let lines = run.json_lines();
    let gc = lines.iter().find(|l| l["type"] == "gc").expect("gc object");
    let freed = gc["freed_bytes"].as_u64().expect("freed");
    assert!(freed >= 600_000, "{gc}");
    assert_eq!(gc["size_before"].as_u64(), Some(before));
    assert_eq!(cache_size(&world.cache()), before - freed);
    assert_eq!(gc["size_after"].as_u64(), Some(before - freed));

    let text = world.run(&["gc", "--max-size", "1G"]).ok();
    assert!(text.stdout.contains("Nothing to evict"), "{}", text.stdout);
}

#[test]
fn clear_asks_for_yes_without_a_terminal_and_then_removes_files() {
    let world = World::new();
    world.run(&["ensure"]).ok();
    let refused = world.run(&["clear", "Semantic"]).code(2);
    assert!(
        refused.stderr.contains("--yes") && refused.stderr.contains("not a terminal"),
        "{}",
        refused.stderr
    );
    assert!(world.snapshot("Semantic").exists());

    let before = cache_size(&world.cache());
    let run = world.run(&["clear", "--yes", "Semantic"]).ok();
    assert!(run.stdout.contains("freed"), "{}", run.stdout);
    assert!(!world.snapshot("Semantic").exists());
    assert!(world.snapshot("Entity").exists());
    assert!(before - cache_size(&world.cache()) >= 1_000_000);
    let report = world.run(&["--json", "status"]).code(1).report();
    assert_eq!(state_of(&report, "Semantic"), "missing");

    world.run(&["clear", "-y"]).ok();
    assert!(!world.snapshot("Entity").exists() && !world.snapshot("Graph").exists());
    let nothing = world.run(&["clear", "--yes"]).ok();
    assert!(
        nothing.stdout.contains("Nothing to clear"),
        "{}",
        nothing.stdout
    );
}

#[test]
fn verify_detects_a_flipped_byte_and_repair_fetches_it_again() {
    let world = World::new();
    world.run(&["ensure"]).ok();
    let blob = fs::canonicalize(world.snapshot("Semantic")).expect("blob");
    let mut bytes = fs::read(&blob).expect("read blob");
    bytes[500_000] ^= 0xff;
    fs::write(&blob, &bytes).expect("write blob");

    let run = world.run(&["verify"]).code(1);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("Semantic"))
        .expect("Semantic line");
    assert!(line.contains("CORRUPT"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("Entity") && l.contains("ok")),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("--repair"), "{}", run.stderr);
    world.run(&["status"]).code(1);

    // Only the models named are re-hashed: Entity alone is intact.
    let run = world.run(&["verify", "Entity"]).ok();
    assert!(run.stdout.contains("Entity"), "{}", run.stdout);
    assert!(!run.stdout.contains("Semantic"), "{}", run.stdout);

    let run = world.run(&["verify", "--repair"]).ok();
    assert!(run.stderr.contains("Repaired Semantic"), "{}", run.stderr);
    let repaired = fs::read(world.snapshot("Semantic")).expect("read");
    assert_eq!(
        synth::sha256_hex(&repaired),
        synth::sha256_hex(&world.served("Semantic").bytes)
    );
    world.run(&["verify"]).ok();
    world.run(&["status"]).ok();
}

#[test]
fn status_verifies_files_another_tool_downloaded_without_network() {
    let world = World::new();
    // Lay the files out the way huggingface_hub does: blob named by SHA-256, relative
    // snapshot link, refs/main. No stamp of ours.
    for model in ["Semantic", "Entity", "Graph"] {
        let served = world.served(model);
        let sha = synth::sha256_hex(&served.bytes);
        let repo_dir = world
            .cache()
            .join(format!("models--{}", served.repo.replace('/', "--")));
        let commit = world.hub.commit_of(served.repo, "main").expect("commit");
        fs::create_dir_all(repo_dir.join("blobs")).expect("blobs");
        fs::create_dir_all(repo_dir.join("refs")).expect("refs");
        fs::write(repo_dir.join("blobs").join(&sha), &served.bytes).expect("blob");
        fs::write(repo_dir.join("refs/main"), &commit).expect("ref");
        let snapshot = world.snapshot(model);
        fs::create_dir_all(snapshot.parent().expect("parent")).expect("snapshot dir");
        std::os::unix::fs::symlink(format!("../../blobs/{sha}"), &snapshot).expect("link");
    }
    world.hub.clear_requests();
    let report = world.run(&["--json", "status"]).ok().report();
    for model in ["Semantic", "Entity", "Graph"] {
        assert_eq!(state_of(&report, model), "ready", "{model}");
    }
    assert!(world.hub.requests().is_empty());
}

/// The next download of a weight file is answered 503 once.
fn fail_next_weight_download_once(world: &World) {
    world.hub.add_fault(
        FaultRule::new(FaultTarget::get("model.safetensors"), Fault::status(503)).times(1),
    );
}

#[test]
fn transient_failures_show_a_retry_notice_and_a_retrying_event() {
    let world = World::new();
    let flaky = || fail_next_weight_download_once(&world);
    flaky();
    let run = world.run(&["ensure", "Entity"]).ok();
    assert!(run.stderr.contains("Entity: retry 1 in"), "{}", run.stderr);
    assert!(run.stderr.contains("503"), "{}", run.stderr);

    world.run(&["clear", "--yes"]).ok();
    flaky();
    let run = world.run(&["--json", "ensure", "Entity"]).ok();
    let retrying = run
        .json_lines()
        .into_iter()
        .find(|l| l["event"] == "retrying")
        .expect("a retrying event");
    assert_eq!(retrying["model_id"], "Entity");
    assert_eq!(retrying["attempt"], 1);
    assert!(
        retrying["delay_ms"].is_u64() && retrying["reason"].is_string(),
        "{retrying}"
    );
}

#[test]
fn double_verbose_adds_the_librarys_own_diagnostics_and_single_verbose_does_not() {
    let world = World::new();
    let flaky = || fail_next_weight_download_once(&world);
    flaky();
    let run = world.run(&["-v", "ensure", "Entity"]).ok();
    assert!(run.stderr.contains("Entity: retry 1 in"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("context_graph_embeddings"),
        "{}",
        run.stderr
    );

    world.run(&["clear", "--yes"]).ok();
    flaky();
    let run = world.run(&["-vv", "ensure", "Entity"]).ok();
    let diagnostic = run
        .stderr
        .lines()
        .find(|l| l.contains("context_graph_embeddings") && l.contains("retrying download"))
        .unwrap_or_else(|| panic!("no library diagnostic for the retry in:\n{}", run.stderr));
    assert!(
        diagnostic.contains("INFO")
            && diagnostic.contains("model=Entity")
            && diagnostic.contains("503"),
        "{diagnostic}"
    );
}

#[test]
fn ctrl_c_exits_130_keeps_the_partial_download_and_the_next_run_resumes() {
    let world = World::build(
        &[("Semantic", "org/slow", 2_000_000, Some(SEMANTIC_COMMIT))],
        None,
    );
    world.hub.add_fault(FaultRule::new(
        FaultTarget::get("model.safetensors"),
        Fault::BandwidthCap {
            bytes_per_sec: 400_000,
        },
    ));
    let child = world
        .command(&["ensure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let blobs = world.cache().join("models--org--slow/blobs");
    let partial_size = || -> u64 {
        fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while partial_size() < 200_000 {
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let run = Run::from(child.wait_with_output().expect("wait")).code(130);
    assert!(
        run.stderr.contains("Interrupted") && run.stderr.contains("kept"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));
    assert!(partial_size() > 0, "the partial download is kept");

    world.hub.clear_faults();
    let run = world.run(&["--json", "ensure"]).ok();
    let completed = run
        .json_lines()
        .into_iter()
        .find(|l| l["event"] == "completed")
        .expect("completed");
    assert_eq!(completed["outcome"], "resumed", "{completed}");
    assert!(completed["bytes_transferred"].as_u64().expect("bytes") < 2_000_000);
}

/// A command running on a real 80×24 pseudo-terminal: a tmux server of its own.
struct Tmux {
    socket: String,
}

impl Tmux {
    const PATH: &'static str = "/usr/bin/tmux";

    /// Starts `cg-models ARGS` of `world` in a detached 80×24 session; `None` without tmux.
    /// The shell prints `__EXIT:<code>` when the command ends.
    fn start(world: &World, name: &str, env: &str, args: &str) -> Option<Tmux> {
        if !Path::new(Self::PATH).exists() {
            return None;
        }
        let home = world.dir.path().join("home");
        // `trap : INT`: Ctrl-C reaches cg-models; the shell survives it to print the code.
        let script = format!(
            "trap : INT; env -i PATH=\"$PATH\" TERM=\"$TERM\" HOME='{home}' HF_HOME='{home}/hf' {env} '{BIN}' \
             --manifest '{manifest}' --endpoint '{endpoint}' {args}; echo \"__EXIT:$?\"; sleep 60",
            home = home.display(),
            manifest = world.manifest().display(),
            endpoint = world.hub.endpoint(),
        );
        let tmux = Tmux {
            socket: format!("cg-models-test-{}-{name}", std::process::id()),
        };
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "sh",
            "-c",
            &script,
        ]);
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(Self::PATH)
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs")
    }

    /// The screen, wrapped lines joined (`-J`), so a line wider than 80 columns shows.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-J"]).stdout).into_owned()
    }

    /// Polls the screen until `done` holds or 30 s pass; `seen` sees every capture.
    fn watch(&self, mut seen: impl FnMut(&str), done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            seen(&screen);
            if done(&screen) || Instant::now() > deadline {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn has_bars(screen: &str) -> bool {
    screen
        .lines()
        .any(|l| l.starts_with("total ") && l.contains("MiB"))
}

/// No line wider than the terminal, no bar left behind, no escape garbage.
fn assert_clean(screen: &str) {
    for line in screen.lines() {
        assert!(
            line.chars().count() <= 80,
            "line wider than the terminal: {line:?}\n{screen}"
        );
        assert!(
            !line.contains('━') && !line.starts_with("total "),
            "bar left behind: {line:?}\n{screen}"
        );
        assert!(
            !line.contains('\u{1b}') && !line.contains("[2K"),
            "escape garbage: {line:?}"
        );
        assert!(
            !line.contains("^C"),
            "echoed ^C left behind: {line:?}\n{screen}"
        );
    }
}

/// Runs `ensure` on a real 80×24 pseudo-terminal (tmux) with slow downloads, watches the bars,
/// and checks the final screen: the summary is there, no bar is left behind, no line is wider
/// than the terminal.
#[test]
#[allow(clippy::print_stderr)] // says why the test is skipped where tmux is missing
fn terminal_shows_bars_that_fit_80_columns_and_leaves_a_clean_summary() {
    let world = World::build(
        &[
            ("Semantic", "org/semantic", 1_500_000, Some(SEMANTIC_COMMIT)),
            (
                "LateInteraction",
                "org/late-interaction-with-a-long-name",
                900_000,
                None,
            ),
            ("Graph", "org/graph", 600_000, Some(GRAPH_COMMIT)),
        ],
        None,
    );
    world.hub.add_fault(FaultRule::new(
        FaultTarget::any(),
        Fault::BandwidthCap {
            bytes_per_sec: 1_000_000,
        },
    ));
    let cache = world.cache();
    let args = format!("--cache-dir '{}' ensure", cache.display());
    let Some(tmux) = Tmux::start(&world, "bars", "", &args) else {
        eprintln!("skipped: no /usr/bin/tmux");
        return;
    };
    let mut saw_bar = false;
    let screen = tmux.watch(|s| saw_bar |= has_bars(s), |s| s.contains("__EXIT:"));
    assert!(
        screen.contains("__EXIT:0"),
        "did not finish in time or failed:\n{screen}"
    );
    assert!(saw_bar, "the progress bars never showed:\n{screen}");
    assert!(
        screen.contains("Finished in") && screen.contains("all 12 models are ready"),
        "{screen}"
    );
    assert!(
        screen.contains("downloaded") && screen.contains("LateInteraction"),
        "{screen}"
    );
    assert_clean(&screen);
}

/// Ctrl-C typed on the terminal (the terminal echoes `^C` where the cursor is): exit 130, the
/// bars and the echo are gone, one line says the partial downloads are kept. With `NO_COLOR`
/// the screen holds no colour at all.
#[test]
#[allow(clippy::print_stderr)] // says why the test is skipped where tmux is missing
fn ctrl_c_on_a_terminal_leaves_a_clean_screen() {
    let world = World::build(
        &[
            ("Semantic", "org/semantic", 1_500_000, Some(SEMANTIC_COMMIT)),
            ("Graph", "org/graph", 1_000_000, Some(GRAPH_COMMIT)),
        ],
        None,
    );
    world.hub.add_fault(FaultRule::new(
        FaultTarget::any(),
        Fault::BandwidthCap {
            bytes_per_sec: 150_000,
        },
    ));
    let args = format!("--cache-dir '{}' ensure", world.cache().display());
    let Some(tmux) = Tmux::start(&world, "ctrl-c", "NO_COLOR=1", &args) else {
        eprintln!("skipped: no /usr/bin/tmux");
        return;
    };
    let screen = tmux.watch(|_| {}, |s| has_bars(s) || s.contains("__EXIT:"));
    assert!(has_bars(&screen), "no bars to interrupt:\n{screen}");
    std::thread::sleep(Duration::from_millis(300));
    tmux.run(&["send-keys", "C-c"]);
    let screen = tmux.watch(|_| {}, |s| s.contains("__EXIT:"));
    assert!(screen.contains("__EXIT:130"), "{screen}");
    assert!(
        screen.contains("Interrupted; partial downloads are kept"),
        "{screen}"
    );
    assert_clean(&screen);
}

/// The real E11 Entity files (`scripts/fetch-real-model`, `CG_REAL_MODEL_DIR`) served at the
/// real commit: `cg-models ensure Entity` with the **built-in** manifest (no `--manifest`;
/// only `--endpoint` points at the emulator) downloads and verifies them against the shipped
/// pin, and `verify Entity` hashes them again. Fails without `CG_REAL_MODEL_DIR` unless
/// `CG_SKIP_REAL_MODEL_TESTS=1`.
#[test]
fn ensure_entity_with_the_built_in_manifest_verifies_the_real_weights() {
    const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
    const COMMIT: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";
    const SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
    let Some(real) = std::env::var_os("CG_REAL_MODEL_DIR").filter(|d| !d.is_empty()) else {
        assert!(
            std::env::var("CG_SKIP_REAL_MODEL_TESTS").is_ok_and(|v| v == "1"),
            "CG_REAL_MODEL_DIR is not set: run scripts/fetch-real-model and set it to the \
             folder it prints, or set CG_SKIP_REAL_MODEL_TESTS=1 to skip this test"
        );
        return;
    };
    let real = PathBuf::from(real);
    let hub = HubBuilder::new()
        .repo(
            RepoSpec::from_dir(REPO, &real)
                .expect("read CG_REAL_MODEL_DIR")
                .commit_sha(COMMIT),
        )
        .start()
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| {
        let home = dir.path().join("home");
        let output = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("HF_HOME", home.join("hf"))
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--endpoint")
            .arg(hub.endpoint())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cg-models runs");
        Run::from(output)
    };
    let ensured = run(&["ensure", "Entity"]).ok();
    assert!(ensured.stderr.contains("Entity"), "{}", ensured.all());
    let snapshot = cache
        .join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(
        fs::read_link(&snapshot).expect("snapshot link"),
        PathBuf::from(format!("../../blobs/{SHA256}"))
    );
    assert!(
        fs::read(&snapshot).expect("snapshot")
            == fs::read(real.join("model.safetensors")).expect("real"),
        "the cached bytes differ from the real file"
    );
    let verified = run(&["--json", "verify", "Entity"]).ok();
    assert!(
        verified.stdout.contains(SHA256) || verified.stdout.contains("\"verified\":true"),
        "{}",
        verified.all()
    );
}

// A read-only bind mount of a folder onto itself (a volume mounted `readOnly: true`), shared
// with the library's tests.
#[path = "../../context-graph-embeddings/tests/common/mount.rs"]
#[allow(dead_code)]
mod mount;
use mount::ReadOnlyMount;

const NO_STAMPS_NOTICE: &str = "cannot record verification stamps";

fn remove_stamps(world: &World) {
    for served in &world.served {
        let repo_dir = world
            .cache()
            .join(format!("models--{}", served.repo.replace('/', "--")));
        fs::remove_dir_all(repo_dir.join(".cg-models-v1")).expect("stamps");
    }
}

#[test]
fn verify_status_and_ensure_on_a_read_only_cache_ensure_filled_exit_0_silently() {
    let world = World::new();
    world.run(&["ensure"]).ok();
    world.hub.clear_requests();
    let _mount = ReadOnlyMount::new(&world.cache());

    let verify = world.run(&["verify"]).ok();
    assert!(
        verify.stdout.lines().filter(|l| l.contains(" ok ")).count() == 3,
        "{}",
        verify.stdout
    );
    assert!(verify.stderr.contains("All 3 file(s) on disk are intact."));
    let status = world.run(&["status"]).ok();
    assert!(
        status.stderr.contains("All 12 models are ready ("),
        "{}",
        status.all()
    );
    let ensure = world.run(&["ensure"]).ok();
    assert!(
        ensure.stderr.contains("nothing to download"),
        "{}",
        ensure.stderr
    );
    for run in [&verify, &status, &ensure] {
        assert!(!run.all().contains(NO_STAMPS_NOTICE), "{}", run.all());
        assert!(!run.all().contains("Read-only"), "{}", run.all());
    }
    assert!(world.hub.requests().is_empty());
}

#[test]
fn a_read_only_cache_without_stamps_is_hashed_ready_and_says_so_once() {
    let world = World::new();
    world.run(&["ensure"]).ok();
    remove_stamps(&world);
    world.hub.clear_requests();
    let _mount = ReadOnlyMount::new(&world.cache());

    for args in [&["status"][..], &["verify"], &["ensure"]] {
        let run = world.run(args).ok();
        assert_eq!(
            run.stderr.matches(NO_STAMPS_NOTICE).count(),
            1,
            "{args:?}: one notice\n{}",
            run.stderr
        );
        assert!(run.stderr.contains("every start hashes them again"));
        assert!(!run.all().contains("CORRUPT") && !run.all().contains("not ready"));
    }
    let report = world.run(&["--json", "status"]).ok().report();
    assert_eq!(report["ok"], true);
    assert!(
        report["unrecorded_stamps"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Read-only")),
        "{report}"
    );
    for model in ["Semantic", "Entity", "Graph"] {
        assert_eq!(state_of(&report, model), "ready");
    }
    assert!(world.hub.requests().is_empty());
}

#[test]
fn a_corrupt_file_on_a_read_only_cache_exits_1_and_ensure_names_the_read_only_path() {
    let world = World::new();
    world.run(&["ensure"]).ok();
    let blob = fs::canonicalize(world.snapshot("Graph")).expect("blob");
    let mut bytes = fs::read(&blob).expect("read blob");
    bytes[100_000] ^= 0xff;
    fs::write(&blob, &bytes).expect("write blob");
    world.hub.clear_requests();
    let _mount = ReadOnlyMount::new(&world.cache());

    let verify = world.run(&["verify"]).code(1);
    let line = |model: &str| {
        verify
            .stdout
            .lines()
            .find(|l| l.contains(model))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("Graph").contains("CORRUPT"), "{}", verify.stdout);
    assert!(line("Semantic").contains("ok") && line("Entity").contains("ok"));
    world.run(&["status"]).code(1);
    let ensure = world.run(&["ensure"]).code(1);
    let cache = world.cache().display().to_string();
    assert_eq!(
        ensure.stderr.matches("the cache is read-only").count(),
        1,
        "one sentence\n{}",
        ensure.stderr
    );
    assert!(
        ensure
            .stderr
            .contains(&format!("({cache} is on a read-only file system)")),
        "{}",
        ensure.stderr
    );
    assert!(
        !world.hub.requests().iter().any(|r| r.method == "GET"),
        "nothing fetched"
    );
}
/// A real forward proxy (Debian's `tinyproxy`) on loopback, logging every request it relays.
/// Missing, it fails the test (CI installs it in `.ci/run`) unless `CG_SKIP_PROXY_TESTS=1`.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Option<Tinyproxy> {
        if std::env::var("CG_SKIP_PROXY_TESTS").as_deref() == Ok("1") {
            return None;
        }
        let binary = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("tinyproxy is installed (apt-get install tinyproxy; .ci/run does it), or set CG_SKIP_PROXY_TESTS=1");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\nMaxClients 50\nDisableViaHeader Yes\n",
                log.display()
            ),
        )
        .expect("config");
        let child = Command::new(binary)
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Tinyproxy {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines the proxy relayed (`GET http://…`, `CONNECT host:port`).
    fn requests(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").map(|(_, r)| r.to_owned()))
            .filter(|r| {
                r.starts_with("GET ") || r.starts_with("HEAD ") || r.starts_with("CONNECT ")
            })
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn http_proxy_carries_hub_and_cdn_and_a_resumed_download_with_the_token_only_to_the_hub() {
    let Some(proxy) = Tinyproxy::start() else {
        return;
    };
    let world = World::build(
        &[("Semantic", "org/semantic", 1_000_000, Some(SEMANTIC_COMMIT))],
        Some(TOKEN),
    );
    // The first CDN body breaks: the retry resumes through the proxy.
    world.hub.add_fault(
        FaultRule::new(
            FaultTarget::get("model.safetensors").on_host(hub_emulator::Host::Cdn),
            Fault::CutAfter { bytes: 400_000 },
        )
        .times(1),
    );
    world
        .run_with(
            &["ensure", "Semantic", "--retries", "3"],
            &[("HTTP_PROXY", &proxy.url()), ("HF_TOKEN", TOKEN)],
        )
        .ok();
    let relayed = proxy.requests();
    let hub = format!("http://localhost:{}/", world.hub.hub_port());
    let cdn = world.hub.cdn_origin();
    assert!(
        relayed
            .iter()
            .any(|r| r.starts_with(&format!("HEAD {hub}"))),
        "{relayed:?}"
    );
    let cdn_gets = relayed
        .iter()
        .filter(|r| r.starts_with(&format!("GET {cdn}")))
        .count();
    assert_eq!(cdn_gets, 2, "first try and the resume: {relayed:?}");
    let requests = world.hub.requests();
    let resumed = requests
        .iter()
        .filter(|r| r.host == hub_emulator::Host::Cdn && r.method == "GET")
        .filter_map(|r| r.headers.iter().find(|(n, _)| n == "range"))
        .any(|(_, v)| v.starts_with("bytes=") && v != "bytes=0-");
    assert!(
        resumed,
        "the second CDN request continues from the bytes on disk"
    );
    // The token goes to the Hub (through the proxy, which for plain HTTP sees it) and never
    // to the CDN.
    for request in &requests {
        let has_token = request
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v.contains(TOKEN));
        assert_eq!(
            has_token,
            request.host == hub_emulator::Host::Hub,
            "{request:?}"
        );
    }
}

#[test]
fn lower_case_http_proxy_with_no_proxy_sends_the_cdn_direct() {
    let Some(proxy) = Tinyproxy::start() else {
        return;
    };
    let world = World::build(
        &[("Semantic", "org/semantic", 300_000, Some(SEMANTIC_COMMIT))],
        None,
    );
    world
        .run_with(
            &["ensure", "Semantic"],
            &[("http_proxy", &proxy.url()), ("no_proxy", "127.0.0.1")],
        )
        .ok();
    let relayed = proxy.requests();
    assert!(
        relayed
            .iter()
            .any(|r| r.contains(&format!("localhost:{}", world.hub.hub_port()))),
        "{relayed:?}"
    );
    assert!(
        !relayed.iter().any(|r| r.contains("127.0.0.1")),
        "the CDN (127.0.0.1) is in NO_PROXY: {relayed:?}"
    );
}

#[test]
fn https_proxy_sees_only_a_connect_for_tls() {
    let Some(proxy) = Tinyproxy::start() else {
        return;
    };
    let world = World::new();
    // An https endpoint: the client asks the proxy for a tunnel (CONNECT host:port) and speaks
    // TLS inside it. The emulator speaks plain HTTP, so the handshake fails, but what the
    // proxy saw is the point: the host and port, never a path or the token.
    let endpoint = format!("https://localhost:{}", world.hub.hub_port());
    let run = Run::from(
        world
            .command_at(&endpoint, &["--retries", "0", "ensure", "Semantic"])
            .env("HTTPS_PROXY", proxy.url())
            .env("HF_TOKEN", TOKEN)
            .output()
            .expect("cg-models runs"),
    );
    assert_ne!(run.code, 0);
    let relayed = proxy.requests();
    assert!(
        relayed
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT localhost:{}", world.hub.hub_port()))),
        "{relayed:?}"
    );
    assert!(
        relayed.iter().all(|r| r.starts_with("CONNECT ")),
        "{relayed:?}"
    );
    let log = fs::read_to_string(&proxy.log).unwrap_or_default();
    assert!(!log.contains(TOKEN));
}

/// A cache another user filled (mode 0755, owned by root here) used by an unprivileged user,
/// as in a pod whose fsGroup does not match the volume: reading works (files are hashed, the
/// stamps that cannot be written are announced once), and a fetch fails with one sentence that
/// names the folder and says what to do, before any byte is requested.
#[test]
fn a_cache_this_user_may_not_write_is_read_and_a_fetch_says_whose_it_is() {
    const NOBODY: &str = "65534";
    let world = World::new();
    world.run(&["ensure"]).ok();
    // The unprivileged user reaches the binary, the manifest and the cache, but owns none.
    let mut dir = Some(world.dir.path());
    while let Some(d) = dir {
        if d == Path::new("/") {
            break;
        }
        let mode = fs::metadata(d).expect("stat").permissions().mode();
        fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o755)).expect("chmod");
        dir = d.parent();
    }
    let status = Command::new("chmod")
        .args(["-R", "a+rX,go-w"])
        .arg(world.dir.path())
        .status()
        .expect("chmod");
    assert!(status.success());
    fs::remove_file(world.snapshot("Graph")).expect("one file gone");
    world.hub.clear_requests();
    let as_nobody = |args: &[&str]| {
        let inner = world.command(args);
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_clear()
            .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null());
        Run::from(command.output().expect("setpriv runs"))
    };
    let probe = as_nobody(&["--version"]);
    assert_eq!(
        probe.code,
        0,
        "the binary must run as uid {NOBODY}: {}",
        probe.all()
    );

    let status = as_nobody(&["status"]);
    assert_eq!(status.code, 1, "{}", status.all());
    assert!(status.stdout.contains("Semantic") && status.stdout.contains("ready"));
    let ensure = as_nobody(&["ensure"]);
    assert_eq!(ensure.code, 1, "{}", ensure.all());
    assert_eq!(
        ensure
            .stderr
            .matches("this user may not write to the cache")
            .count(),
        1,
        "one sentence\n{}",
        ensure.stderr
    );
    assert!(
        ensure
            .stderr
            .contains(&format!("({}: permission denied)", world.cache().display())),
        "{}",
        ensure.stderr
    );
    assert!(
        !world.hub.requests().iter().any(|r| r.method == "GET"),
        "nothing fetched: {:?}",
        world.hub.requests()
    );
    // As the owner, the same command repairs it.
    world.run(&["ensure"]).ok();
}

// A real registry on loopback (Debian's docker-registry behind TLS with htpasswd), shared with
// the library's OCI tests.
#[path = "../../context-graph-embeddings/tests/common/registry.rs"]
#[allow(unused_macros)]
mod registry;

#[test]
fn push_then_a_node_that_cannot_reach_the_hub_fills_its_cache_from_the_registry() {
    registry::require_tools!(registry::Tool::Registry, registry::Tool::Htpasswd);
    let reg = registry::Registry::start();
    let world = World::new();
    // Pins every commit and digest in place: a node without the Hub needs nothing else.
    world.run(&["lock"]).ok();
    let ca = reg.ca_pem.to_str().unwrap().to_owned();
    let auth = reg.docker_config_dir.join("config.json");
    let auth = auth.to_str().unwrap().to_owned();
    let target = format!("oci://{}/models", reg.host);
    let trust = ["--ca-bundle", &ca, "--registry-auth-file", &auth];
    world.run(&["ensure"]).ok();
    let push: Vec<&str> = trust.iter().copied().chain(["push", &target]).collect();
    let pushed = world.run(&push).ok();
    assert!(
        pushed.stderr.contains("Pushed 3 model(s)")
            && pushed.stdout.matches("✓ oci://").count() == 3,
        "{}",
        pushed.all()
    );
    let again = world.run(&push).ok();
    assert!(
        again.stderr.contains("0 blob(s) uploaded"),
        "{}",
        again.all()
    );

    // Another cache, the Hub unreachable: everything from the registry, then ready offline.
    let node = world.dir.path().join("node");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let on_node = |args: &[&str]| {
        let output = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", world.dir.path().join("home"))
            .arg("--manifest")
            .arg(world.manifest())
            .arg("--cache-dir")
            .arg(&node)
            .arg("--endpoint")
            .arg(format!("http://127.0.0.1:{closed}"))
            .args(trust)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run::from(output)
    };
    let filled = on_node(&["--mirror", &target, "ensure"]).ok();
    assert!(
        filled.stderr.contains("all 12 models are ready"),
        "{}",
        filled.all()
    );
    let status = on_node(&["--offline", "status"]).ok();
    assert!(
        status.stderr.contains("All 12 models are ready"),
        "{}",
        status.all()
    );
    for model in ["Semantic", "Entity", "Graph"] {
        let served = world.served(model);
        let commit = world.hub.commit_of(served.repo, "main").unwrap();
        let file = node
            .join(format!("models--{}", served.repo.replace('/', "--")))
            .join("snapshots")
            .join(commit)
            .join("model.safetensors");
        assert_eq!(fs::read(file).unwrap(), served.bytes, "{model}");
    }
    let log = fs::read_to_string(&reg.access_log).unwrap();
    assert!(
        log.contains("GET /v2/models/blobs/sha256:"),
        "the bytes came from the registry"
    );
}
