//! A hostile Hub, replayed (issue 28): many seeded runs of `ensure` through a
//! [`ChaosProxy`] that spoils requests at random (truncation, wrong lengths, flipped bytes,
//! wrong digests, lying `X-Linked-Size`, redirect loops, `206` with the wrong range, stalls,
//! resets, 5xx, header garbage), against a cache whose downloading process is killed
//! (SIGKILL, from outside after a random delay or by itself at a random crash point of the
//! `failpoints` feature) and started again.
//!
//! After every phase of every run the harness checks the cache itself ([`check_cache`]: every
//! blob hashes to its name, every snapshot entry resolves to a verified blob of a content the
//! emulator serves) and that no process panicked; at the end of a run a clean `ensure` (no
//! chaos) must complete from what the hostile phases left, and the snapshot entries must hold
//! exactly the served bytes. A failing run names its seed: `CG_HOSTILE_SEED=<seed>` replays it
//! (the fault schedule is a function of the seed and each request; kill times too).
//!
//! `CG_HOSTILE_RUNS=N` runs N seeds (default 20 in the normal suite), starting at
//! `CG_HOSTILE_FIRST_SEED` (default 1).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::test_support::CRASH_AT_ENV;
use context_graph_embeddings::ModelId;
use hub_emulator::{ChaosConfig, ChaosFault, ChaosProxy, Fault, FaultRule, FaultTarget};

use crate::support::{
    check_cache, evidence, killed_by_sigkill, pinned, sha256_file, unpinned, ChildProcess, Fixture,
    Rng,
};

/// Crash points of the library (`failpoints` feature) a phase may kill itself at, with the
/// largest `n` drawn for `<point>:<n>`.
const CRASH_POINTS: [(&str, u64); 8] = [
    ("download.chunk", 30),
    ("download.before_rename", 2),
    ("download.after_rename", 2),
    ("snapshot.before_link", 2),
    ("snapshot.after_link", 2),
    ("ref.before_write", 1),
    ("stamp.before_write", 2),
    ("stamp.after_write", 2),
];

/// Runs in the normal suite.
const DEFAULT_RUNS: u64 = 20;
/// Hostile phases per run (each a child process, killed or not) before the clean one.
const MAX_HOSTILE_PHASES: u64 = 3;

/// Totals over the runs, for the evidence line.
#[derive(Default)]
struct Totals {
    runs: u64,
    phases: u64,
    kills: u64,
    requests: u64,
    faults: BTreeMap<ChaosFault, u64>,
    wrong_files: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
// Prints the figures line scripts/fuzz --hostile records, and progress on long runs.
#[allow(clippy::print_stdout)]
fn a_hostile_hub_replayed_leaves_no_wrong_byte() {
    let fx = Fixture::new(&[
        pinned(ModelId::Entity, 300_000),
        unpinned(ModelId::Graph, 200_000).on_branch(),
    ]);
    // Paced downloads (2 MB/s from the emulator), so that a kill after a delay finds work
    // under way.
    for id in [ModelId::Entity, ModelId::Graph] {
        fx.hub.add_fault(FaultRule::new(
            FaultTarget::get(&fx.file(id).sha256),
            Fault::BandwidthCap {
                bytes_per_sec: 2_000_000,
            },
        ));
    }
    let seeds: Vec<u64> = match env_u64("CG_HOSTILE_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("CG_HOSTILE_FIRST_SEED").unwrap_or(1);
            let runs = env_u64("CG_HOSTILE_RUNS").unwrap_or(DEFAULT_RUNS);
            (first..first + runs).collect()
        }
    };
    let started = Instant::now();
    let mut totals = Totals::default();
    for seed in &seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_run(&fx, *seed, &mut totals)
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("hostile replay failed; replay with CG_HOSTILE_SEED={seed}: {message}");
        }
        if seeds.len() > 50 && totals.runs % 100 == 0 {
            println!(
                "HOSTILE-PROGRESS|{} runs|{} requests|{} faults|{:.0} s",
                totals.runs,
                totals.requests,
                totals.faults.values().sum::<u64>(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let faults: u64 = totals.faults.values().sum();
    let by_kind = totals
        .faults
        .iter()
        .map(|(k, n)| format!("{k:?} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(totals.wrong_files, 0);
    // The machinery really was hostile: faults were injected, of several kinds, and kills
    // happened (the draws are fixed by the seeds; how many requests a killed phase makes
    // depends on timing, hence the margins).
    assert!(faults > 0, "no fault was injected");
    if seeds.len() >= DEFAULT_RUNS as usize {
        assert!(
            totals.faults.len() >= 6,
            "too few kinds of faults: {by_kind}"
        );
        assert!(totals.kills > 0, "no run was killed");
    }
    let seeds_text = match seeds.as_slice() {
        [one] => format!("seed {one}"),
        [first, .., last] => format!("seeds {first}–{last}"),
        [] => "no seed".to_owned(),
    };
    println!(
        "HOSTILE-FIGURES|seeds={seeds_text}|runs={}|phases={}|kills={}|requests={}|faults={}|wrong_files={}|seconds={:.0}|{by_kind}",
        totals.runs,
        totals.phases,
        totals.kills,
        totals.requests,
        faults,
        totals.wrong_files,
        started.elapsed().as_secs_f64()
    );
    evidence(
        "Hostile Hub, replayed",
        &format!(
            "{} seeded runs ({seeds_text}) of ensure (pinned + unpinned on a branch) through a proxy spoiling 25% of requests at random, 1–3 hostile phases per run, each ending on its own, by SIGKILL 20–270 ms after start, or by SIGKILL at a random crash point, then resumed",
            totals.runs
        ),
        &format!(
            "{} requests, {faults} faults injected ({by_kind}); {} hostile phases, {} killed; every run then completed cleanly, no panic",
            totals.requests, totals.phases, totals.kills
        ),
        &format!(
            "after every phase: every blob hashes to its name, every snapshot entry resolves to a verified blob; at the end both files = served bytes; wrong files: {}",
            totals.wrong_files
        ),
        &test_name!(),
    );
}

/// One seeded run: hostile phases (each a child `ensure`, killed at a random moment or left
/// to end), the cache checked after each, then a clean `ensure` and the final check.
fn one_run(fx: &Fixture, seed: u64, totals: &mut Totals) {
    let mut rng = Rng::new(seed);
    let cache = fx.fresh_cache(&format!("hostile-{seed}"));
    let known = fx.known_hashes();
    let work = cache.parent().expect("cache parent").to_path_buf();
    let proxy = ChaosProxy::start(
        &fx.hub,
        ChaosConfig {
            seed,
            fault_percent: 25,
            stall: Duration::from_millis(400),
        },
    )
    .expect("chaos proxy starts");
    let phases = 1 + rng.below(MAX_HOSTILE_PHASES);
    for phase in 0..phases {
        let mut spec = fx.child_spec(&cache, "ensure");
        spec["endpoint"] = serde_json::json!(proxy.endpoint());
        spec["download_timeout_ms"] = serde_json::json!(300);
        spec["retry_attempts"] = serde_json::json!(3);
        if rng.below(2) == 0 {
            spec["parallel_chunk_bytes"] = serde_json::json!(65_536);
        }
        // How this phase ends: on its own, SIGKILL from here after a random delay, or SIGKILL
        // by the process itself at a random crash point (`failpoints`).
        let mut env = Vec::new();
        let mut kill_after = None;
        match rng.below(3) {
            0 => {}
            1 => kill_after = Some(Duration::from_millis(20 + rng.below(250))),
            _ => {
                let (point, most) = CRASH_POINTS[rng.below(CRASH_POINTS.len() as u64) as usize];
                env.push((CRASH_AT_ENV, format!("{point}:{}", 1 + rng.below(most))));
            }
        }
        let mut child = ChildProcess::spawn(spec, &env, &work, &format!("phase-{phase}"));
        let status = match kill_after {
            Some(delay) => {
                let deadline = Instant::now() + delay;
                while Instant::now() < deadline && child.try_wait().is_none() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                match child.try_wait() {
                    Some(status) => status,
                    None => {
                        child.kill();
                        child.try_wait().expect("killed child has a status")
                    }
                }
            }
            None => child.wait(Duration::from_secs(60)),
        };
        totals.phases += 1;
        if killed_by_sigkill(&status) {
            totals.kills += 1;
        }
        assert!(
            status.success() || killed_by_sigkill(&status),
            "seed {seed} phase {phase}: the child ended with {status:?} (a panic?); its output:\n{}",
            child.log_text()
        );
        if status.success() {
            assert!(
                child.result().is_some(),
                "seed {seed} phase {phase}: the child exited without a result:\n{}",
                child.log_text()
            );
        }
        let check = check_cache(&cache, &known);
        if !check.violations.is_empty() {
            totals.wrong_files += check.violations.len() as u64;
        }
        if !check.violations.is_empty() {
            let mut listing = String::new();
            crate::support::walk(&cache, &mut |p, m| {
                let link = std::fs::read_link(p)
                    .map(|t| format!(" -> {}", t.display()))
                    .unwrap_or_default();
                listing.push_str(&format!("\n  {} ({} B){link}", p.display(), m.len()));
            });
            check.assert_sound(&format!(
                "seed {seed} after hostile phase {phase} (ended by {}: {status:?}; crash point {env:?}; result {:?}); cache:{listing}\nchild output:\n{}",
                if kill_after.is_some() { "a kill after a delay, or itself" } else { "itself" },
                child.result(),
                child.log_text()
            ));
        }
    }
    let stats = proxy.stats();
    drop(proxy);
    totals.requests += stats.requests;
    for (fault, n) in stats.faults {
        *totals.faults.entry(fault).or_insert(0) += n;
    }

    // The clean phase: straight to the emulator, must complete from what was left.
    let spec = fx.child_spec(&cache, "ensure");
    let mut child = ChildProcess::spawn(spec, &[], &work, "clean");
    let status = child.wait(Duration::from_secs(60));
    let result = child.result();
    assert!(
        status.success() && result.as_ref().is_some_and(|r| r["ok"] == true),
        "seed {seed}: the clean ensure after the hostile phases failed ({status:?}, {result:?}):\n{}",
        child.log_text()
    );
    let check = check_cache(&cache, &known);
    totals.wrong_files += check.violations.len() as u64;
    check.assert_sound(&format!("seed {seed} after the clean phase"));
    for id in [ModelId::Entity, ModelId::Graph] {
        let entry = fx.snapshot_path_in(&cache, id);
        let actual = sha256_file(&entry).unwrap_or_default();
        if actual != fx.file(id).sha256 {
            totals.wrong_files += 1;
        }
        assert_eq!(
            actual,
            fx.file(id).sha256,
            "seed {seed}: {id} snapshot entry {} holds other bytes",
            entry.display()
        );
    }
    totals.runs += 1;
    remove_quietly(&work);
}

fn remove_quietly(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
