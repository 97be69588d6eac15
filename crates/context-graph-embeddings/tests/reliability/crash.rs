//! Crash safety: a child process running `ensure_all_models` kills itself with SIGKILL at a
//! crash point (`CG_MODELS_CRASH_AT=<point>:<n>`), mid-body and between every two steps of
//! placing a file. Checked: while it ran and right after the kill, no final path held
//! unverified bytes; a fresh run completes without hanging, resumes what was kept, leaves no
//! stale temporary file, and every file verifies.

use std::time::Duration;

use context_graph_embeddings::artifacts::test_support::CRASH_AT_ENV;
use context_graph_embeddings::ModelId;
use hub_emulator::{Fault, FaultRule, FaultTarget};

use crate::support::{
    check_cache, evidence, killed_by_sigkill, partials_in, pinned, unpinned, ChildProcess, Fixture,
};

const AREA: &str = "Crash (SIGKILL) at every step";
const SIZE: u64 = 2_000_000;
const PINNED: ModelId = ModelId::Entity;
const UNPINNED: ModelId = ModelId::Graph;

/// A pinned model at a commit and an unpinned one on branch `main` (so the ref is written),
/// both paced at 6 MB/s so that a download takes many chunks.
fn crash_fixture() -> Fixture {
    let fx = Fixture::new(&[pinned(PINNED, SIZE), unpinned(UNPINNED, SIZE).on_branch()]);
    for id in [PINNED, UNPINNED] {
        fx.hub.add_fault(FaultRule::new(
            FaultTarget::get(&fx.file(id).sha256),
            Fault::BandwidthCap {
                bytes_per_sec: 6_000_000,
            },
        ));
    }
    fx
}

/// What one kill showed.
struct Kill {
    /// Partial bytes per model right after the kill.
    partials: Vec<(ModelId, u64)>,
    summary_at_kill: String,
    blobs_at_kill: usize,
}

/// Chunk size of the parallel ranged download cases (files of 2 MB in 8 ranges).
const RANGE_CHUNK: u64 = 256 * 1024;

/// Runs one crash case end to end; panics on any broken promise.
fn crash_case(fx: &Fixture, point: &str, nth: u32, test: &str) -> Kill {
    crash_case_with(fx, point, nth, false, test)
}

/// [`crash_case`], optionally with the parallel ranged download (4 connections).
fn crash_case_with(fx: &Fixture, point: &str, nth: u32, ranged: bool, test: &str) -> Kill {
    let label = format!(
        "{}{}-{nth}",
        if ranged { "ranged-" } else { "" },
        point.replace('.', "-")
    );
    let cache = fx.fresh_cache(&label);
    let known = fx.known_hashes();
    let mut spec = fx.child_spec(&cache, "ensure");
    if ranged {
        spec["parallel_chunk_bytes"] = serde_json::json!(RANGE_CHUNK);
    }
    let mut child = ChildProcess::spawn(
        spec,
        &[(CRASH_AT_ENV, format!("{point}:{nth}"))],
        &fx.dir.path().join("children"),
        &label,
    );
    // Watch the cache while the child works: at no moment may a final path hold bad bytes.
    let mut looks = 0u32;
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        check_cache(&cache, &known).assert_sound(&format!("{point}:{nth}, while running"));
        looks += 1;
        std::thread::sleep(Duration::from_millis(3));
        assert!(
            looks < 10_000,
            "child `{label}` hangs:\n{}",
            child.log_text()
        );
    };
    assert!(
        killed_by_sigkill(&status),
        "crash point `{point}:{nth}` was never reached: the child ended with {status} instead of \
         being killed there (result: {:?}). Either the point is not wired into the library, or \
         the download has fewer steps than {nth}.\n{}",
        child.result(),
        child.log_text()
    );
    let at_kill = check_cache(&cache, &known);
    at_kill.assert_sound(&format!("{point}:{nth}, right after the kill"));
    let partials: Vec<(ModelId, u64)> = [PINNED, UNPINNED]
        .into_iter()
        .map(|id| {
            (
                id,
                partials_in(&fx.blobs_dir_in(&cache, id))
                    .iter()
                    .map(|p| p.1)
                    .max()
                    .unwrap_or(0),
            )
        })
        .collect();

    // The killed child's connections may still bring requests in (sent just before the kill,
    // read by the emulator after it); only once they are closed does the log hold nothing of
    // the child, so what the fresh run fetched is measured alone.
    let closing = std::time::Instant::now();
    while fx.hub.open_connections() > 0 {
        assert!(
            closing.elapsed() < Duration::from_secs(10),
            "{point}:{nth}: the emulator still serves {} connection(s) 10 s after the kill",
            fx.hub.open_connections()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // A fresh run: bounded in time (stale locks or temp files must not make it hang).
    fx.hub.clear_requests();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = fx.config_at(&cache);
    if ranged {
        config.parallel = context_graph_embeddings::artifacts::ParallelSettings {
            connections: 4,
            initial_connections: 4,
            min_file_bytes: RANGE_CHUNK,
            chunk_bytes: RANGE_CHUNK,
            ..Default::default()
        };
    }
    let manager = context_graph_embeddings::artifacts::ModelArtifactManager::new(config).unwrap();
    let result = runtime.block_on(crate::support::within(
        Duration::from_secs(30),
        "the fresh run after the kill",
        manager.ensure_all_models(),
    ));
    assert!(
        result.is_ok(),
        "{point}:{nth}: fresh run failed: {result:?}"
    );
    let after = check_cache(&cache, &known);
    after.assert_sound(&format!("{point}:{nth}, after the fresh run"));
    assert!(
        after.partials.is_empty() && after.temps.is_empty() && after.sidecars.is_empty(),
        "{point}:{nth}: stale temporary files left by the killed process were neither cleaned up nor reused: partials {:?}, temps {:?}, sidecars {:?}",
        after.partials,
        after.temps,
        after.sidecars
    );
    for id in [PINNED, UNPINNED] {
        let path = manager.get_path(id).expect("ready after the fresh run");
        // `refs/<commit>` (what hf-hub 0.x readers look up) is there, whatever the kill cut.
        let commit = &fx.file(id).commit;
        let commit_ref = fx.repo_dir_in(&cache, id).join("refs").join(commit);
        assert_eq!(
            std::fs::read_to_string(&commit_ref).ok().as_deref(),
            Some(commit.as_str()),
            "{point}:{nth}: {id} has no refs/{commit} after the fresh run"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            fx.file(id).content,
            "{point}:{nth}: {id}"
        );
    }
    let report = manager.readiness_report();
    assert!(report.all_ready(), "{point}:{nth}: {report:?}");
    let verified = runtime.block_on(manager.verify_present(2, false));
    assert!(
        verified.iter().all(|v| v.verified == Some(true)),
        "{point}:{nth}: {verified:?}"
    );
    // What was kept is resumed, not fetched again.
    let mut resumed_text = Vec::new();
    for (id, kept) in &partials {
        let sent = fx.bytes_sent(*id);
        if ranged {
            // Several ranges at once: what was kept is recorded per chunk, not as a prefix.
            // No byte is fetched twice, except what a range cut short (another connection
            // took over its back) already had in flight past its new end.
            let gets = fx.byte_gets(*id);
            let shown: Vec<_> = gets
                .iter()
                .map(|g| (g.range().map(str::to_owned), g.status, g.body_bytes_sent))
                .collect();
            let twice = bytes_fetched_twice(&gets);
            assert!(
                sent - twice.total <= SIZE && twice.only_in_flight_overshoot,
                "{point}:{nth}: {id} fetched {sent} B ({} B of them twice) for a {SIZE} B file; its requests: {shown:?}",
                twice.total
            );
            resumed_text.push(format!("{id} fetched {sent} B of {SIZE} B"));
        } else if *kept == SIZE {
            assert_eq!(sent, 0, "{point}:{nth}: {id} had every byte in its partial");
            resumed_text.push(format!("{id} completed from its full partial, 0 B fetched"));
        } else if *kept > 0 {
            let gets = fx.byte_gets(*id);
            let first = gets.first().and_then(|g| g.range()).unwrap_or("none");
            assert_eq!(
                first,
                format!("bytes={kept}-"),
                "{point}:{nth}: {id} must resume from the {kept} bytes kept"
            );
            assert_eq!(sent, SIZE - kept, "{point}:{nth}: {id}");
            resumed_text.push(format!("{id} resumed from {kept} B"));
        } else if at_kill
            .blobs
            .iter()
            .any(|(p, _)| p.starts_with(fx.blobs_dir_in(&cache, *id)))
        {
            assert_eq!(
                sent, 0,
                "{point}:{nth}: {id}'s blob was in place, no byte needed"
            );
            resumed_text.push(format!("{id} reused its blob, 0 B fetched"));
        } else {
            resumed_text.push(format!("{id} fetched {sent} B"));
        }
    }
    // And the cache stays manageable: clearing it removes everything the run placed.
    runtime
        .block_on(manager.clear_cache())
        .unwrap_or_else(|e| panic!("{point}:{nth}: clear_cache failed: {e}"));
    let cleared = check_cache(&cache, &known);
    assert!(
        cleared.blobs.is_empty() && cleared.snapshots.is_empty() && cleared.temps.is_empty(),
        "{point}:{nth}: clear_cache after the crash left {cleared:?}"
    );
    evidence(
        AREA,
        &format!(
            "SIGKILL at `{point}:{nth}`{}",
            if ranged {
                " (parallel ranged download, 4 connections)"
            } else {
                ""
            }
        ),
        &format!(
            "process dies; the next run completes without waiting on stale locks ({})",
            resumed_text.join(", ")
        ),
        &format!(
            "at the kill: {}; after the next run: both files verified, no partial, no temp file; clear_cache then empties it",
            at_kill.summary()
        ),
        test,
    );
    Kill {
        partials,
        summary_at_kill: at_kill.summary(),
        blobs_at_kill: at_kill.blobs.len(),
    }
}

#[test]
fn killed_mid_body_at_many_chunks() {
    let test = test_name!();
    let fx = crash_fixture();
    for nth in [1, 2, 3, 5, 8, 12, 17, 23, 30] {
        let kill = crash_case(&fx, "download.chunk", nth, &test);
        assert!(
            kill.partials
                .iter()
                .any(|(_, kept)| *kept > 0 && *kept < SIZE),
            "download.chunk:{nth} must stop a download mid-body: {}",
            kill.summary_at_kill
        );
        assert!(kill.blobs_at_kill < 2, "mid-body: {}", kill.summary_at_kill);
    }
}

#[test]
fn killed_around_the_blob_rename() {
    let test = test_name!();
    let fx = crash_fixture();
    for (point, nth) in [
        ("download.before_rename", 1),
        ("download.before_rename", 2),
        ("download.after_rename", 1),
        ("download.after_rename", 2),
    ] {
        // The other download may finish its own step in the instant SIGKILL takes to stop
        // every thread, so blob counts are lower bounds.
        let kill = crash_case(&fx, point, nth, &test);
        if point == "download.before_rename" {
            assert!(
                kill.blobs_at_kill + 1 >= nth as usize,
                "{}",
                kill.summary_at_kill
            );
            assert!(
                kill.partials.iter().any(|(_, kept)| *kept == SIZE),
                "a complete, verified partial waits for its rename: {}",
                kill.summary_at_kill
            );
        } else {
            assert!(
                kill.blobs_at_kill >= nth as usize,
                "{}",
                kill.summary_at_kill
            );
        }
    }
}

#[test]
fn killed_around_the_snapshot_link() {
    let test = test_name!();
    let fx = crash_fixture();
    for (point, nth) in [
        ("snapshot.before_link", 1),
        ("snapshot.before_link", 2),
        ("snapshot.after_link", 1),
        ("snapshot.after_link", 2),
    ] {
        crash_case(&fx, point, nth, &test);
    }
}

#[test]
fn killed_before_the_ref_write() {
    let test = test_name!();
    let fx = crash_fixture();
    crash_case(&fx, "ref.before_write", 1, &test);
}

/// `stamp.before_write` and `stamp.after_write` are documented crash points (failpoint.rs).
#[test]
fn killed_around_the_stamp_write() {
    let test = test_name!();
    let fx = crash_fixture();
    for (point, nth) in [
        ("stamp.before_write", 1),
        ("stamp.before_write", 2),
        ("stamp.after_write", 1),
        ("stamp.after_write", 2),
    ] {
        crash_case(&fx, point, nth, &test);
    }
}

/// The parallel ranged download (several connections writing at their offsets, progress in a
/// sidecar) killed mid-body and around its rename.
#[test]
fn killed_mid_parallel_ranged_download() {
    let test = test_name!();
    let fx = crash_fixture();
    for (point, nth) in [
        ("download.chunk", 2),
        ("download.chunk", 9),
        ("download.chunk", 20),
        ("download.chunk", 35),
        ("download.before_rename", 1),
        ("download.after_rename", 1),
    ] {
        let kill = crash_case_with(&fx, point, nth, true, &test);
        if point == "download.chunk" {
            assert!(kill.blobs_at_kill < 2, "mid-body: {}", kill.summary_at_kill);
        }
    }
}

/// What `operation` leaves of a parallel download killed just before its rename.
fn leftovers_after(operation: &str, test: &str) {
    let fx = crash_fixture();
    let known = fx.known_hashes();
    let cache = fx.fresh_cache("leftovers");
    let mut spec = fx.child_spec(&cache, "ensure");
    spec["parallel_chunk_bytes"] = serde_json::json!(RANGE_CHUNK);
    let mut child = ChildProcess::spawn(
        spec,
        &[(CRASH_AT_ENV, "download.before_rename:1".to_owned())],
        &fx.dir.path().join("children"),
        "leftovers",
    );
    let status = child.wait(Duration::from_secs(30));
    assert!(killed_by_sigkill(&status), "{}", child.log_text());
    let at_kill = check_cache(&cache, &known);
    at_kill.assert_sound("killed parallel download");
    assert!(
        !at_kill.partials.is_empty(),
        "the killed download left its partials: {at_kill:?}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let manager = fx.manager_at(&cache);
    let outcome = runtime.block_on(async {
        if operation == "clear_cache" {
            manager.clear_cache().await.map(|()| String::new())
        } else {
            manager
                .collect_garbage(0, true, false)
                .await
                .map(|r| format!(" (removed {} file(s))", r.removed.len()))
        }
    });
    let outcome = outcome.unwrap_or_else(|e| panic!("{operation}: {e}"));
    let after = check_cache(&cache, &known);
    evidence(
        AREA,
        &format!(
            "{operation} right after a parallel download (pinned + unpinned on a branch) was killed before its rename"
        ),
        &format!("completes{outcome}"),
        &format!(
            "{} partial(s), {} progress sidecar(s) left",
            after.partials.len(),
            after.sidecars.len()
        ),
        test,
    );
    assert!(
        after.partials.is_empty() && after.sidecars.is_empty(),
        "{operation} left files of the killed download behind: partials {:?}, sidecars {:?}",
        after.partials,
        after.sidecars
    );
}

/// `clear_cache` right after a killed parallel download removes its partials and their
/// progress sidecars (nothing of it is left for ever).
#[test]
fn clear_after_a_killed_parallel_download_leaves_nothing() {
    leftovers_after("clear_cache", &test_name!());
}

/// `collect_garbage` right after a killed parallel download removes its partials and their
/// progress sidecars.
#[test]
fn gc_after_a_killed_parallel_download_leaves_nothing() {
    leftovers_after("collect_garbage(0, include_manifest)", &test_name!());
}

/// Bytes that two responses of one file's ranged download both carried.
struct FetchedTwice {
    total: u64,
    /// Every overlap is the tail of a response that ended before its range did (cut short
    /// when another connection took over the back of its stretch), at most one network read
    /// long: bytes already in flight when the cut came.
    only_in_flight_overshoot: bool,
}

fn bytes_fetched_twice(gets: &[hub_emulator::RequestRecord]) -> FetchedTwice {
    // A network read of reqwest/hyper is at most about 400 KiB.
    const ONE_READ: u64 = 512 * 1024;
    let mut received: Vec<(u64, u64, bool)> = gets
        .iter()
        .map(|g| {
            let (start, asked_end) = g
                .range()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .map_or((0, SIZE), |(a, b)| {
                    let start = a.parse().unwrap_or(0);
                    (start, b.parse::<u64>().map_or(SIZE, |b| b + 1))
                });
            let end = start + g.body_bytes_sent;
            (start, end, end < asked_end)
        })
        .collect();
    received.sort_unstable();
    let mut twice = FetchedTwice {
        total: 0,
        only_in_flight_overshoot: true,
    };
    let mut covered: Option<(u64, bool)> = None;
    for (start, end, cut_short) in received {
        if let Some((covered_end, covering_was_cut)) = covered {
            if start < covered_end {
                let overlap = end.min(covered_end) - start;
                twice.total += overlap;
                twice.only_in_flight_overshoot &= covering_was_cut && overlap <= ONE_READ;
            }
            if end > covered_end {
                covered = Some((end, cut_short));
            }
        } else {
            covered = Some((end, cut_short));
        }
    }
    twice
}
