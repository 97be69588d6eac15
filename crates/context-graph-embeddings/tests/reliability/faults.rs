//! Lying and failing servers: every fault the emulator can inject, each against a pinned and
//! an unpinned manifest entry. The promise checked after each: the model is a verified file
//! equal to the served bytes, or it failed with a clear error and nothing is at its final
//! paths; and the whole cache passes the independent checker.

use std::time::{Duration, Instant};

use context_graph_embeddings::artifacts::{
    ArtifactManagerConfig, ModelArtifactManager, ProgressKind,
};
use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{Fault, FaultRule, FaultTarget, Host};

use crate::support::{
    assert_model_state, check_cache, describe_model, evidence, model_error, pinned, seed, unpinned,
    within, Fixture, Options, Rng,
};

const AREA: &str = "Lying and failing servers";
const PINNED: ModelId = ModelId::Entity;
const UNPINNED: ModelId = ModelId::Graph;

/// The pinned and the unpinned model of every fault test, `size` bytes each.
fn both(size: u64) -> Fixture {
    Fixture::new(&[pinned(PINNED, size), unpinned(UNPINNED, size)])
}

/// What a fault must lead to.
enum Expect {
    /// Both models end verified.
    Recovers,
    /// Both models fail, with an error this predicate accepts.
    ClearError(fn(&EmbeddingError) -> bool),
}

/// Runs `ensure_all_models` against the fixture's faults and checks the promise for each
/// model; prints one evidence line per model. Returns the batch result.
async fn run_and_judge(
    fx: &Fixture,
    config: ArtifactManagerConfig,
    fault: &str,
    expect: Expect,
    test: &str,
) -> Result<(), EmbeddingError> {
    let cache = config.cache_dir.clone();
    let manager = ModelArtifactManager::new(config).unwrap();
    let mut events = manager.subscribe_progress();
    let result = within(
        Duration::from_secs(60),
        "ensure_all_models",
        manager.ensure_all_models(),
    )
    .await;
    let mut retries: Vec<(ModelId, String)> = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ProgressKind::Retrying { reason, .. } = event.kind {
            retries.push((event.model_id, reason));
        }
    }
    let check = check_cache(&cache, &fx.known_hashes());
    check.assert_sound(fault);
    for id in [PINNED, UNPINNED] {
        let served = fx.file(id);
        let error = model_error(&result, id);
        assert_model_state(fx, &cache, id, error.is_none(), fault);
        match (&expect, error) {
            (Expect::Recovers, None) => {}
            (Expect::Recovers, Some(error)) => {
                panic!(
                    "{fault} ({}): expected recovery, got: {error}",
                    served.kind()
                )
            }
            (Expect::ClearError(_), None) => {
                panic!(
                    "{fault} ({}): expected a clear error, but it completed",
                    served.kind()
                )
            }
            (Expect::ClearError(accept), Some(error)) => {
                assert!(
                    accept(error),
                    "{fault} ({}): unexpected error {error:?}",
                    served.kind()
                );
                assert!(
                    !fx.blob_path_in(&cache, id).exists()
                        && fx.snapshot_path_in(&cache, id).symlink_metadata().is_err(),
                    "{fault} ({}): failed, yet something is at a final path",
                    served.kind()
                );
            }
        }
        let model_retries: Vec<&String> = retries
            .iter()
            .filter(|(m, _)| *m == id)
            .map(|(_, r)| r)
            .collect();
        let sees = match error {
            None => {
                let first = model_retries
                    .first()
                    .map(|r| {
                        format!(
                            "retried {}× (first: \"{}\"), then ",
                            model_retries.len(),
                            fx.redact(r)
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{first}completes, SHA-256 verified (the emulator sent {} B in {} GET(s) for a {} B file)",
                    fx.bytes_sent(id),
                    fx.byte_gets(id).len(),
                    served.content.len()
                )
            }
            Some(error) => format!("error: {}", fx.redact(&error.to_string())),
        };
        evidence(
            AREA,
            &format!("{fault} ({})", served.kind()),
            &sees,
            &describe_model(fx, &cache, id),
            test,
        );
    }
    result
}

fn add_to_both(fx: &Fixture, rule: impl Fn(&str) -> FaultRule) {
    for id in [PINNED, UNPINNED] {
        fx.hub.add_fault(rule(&fx.file(id).sha256));
    }
}

fn range_start(record: &hub_emulator::RequestRecord) -> u64 {
    record
        .range()
        .and_then(|r| {
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Property: whatever the offsets at which connections are cut (1 to 3 cuts per download),
/// the download completes, each resume asks for exactly the bytes not yet kept, the bytes
/// sent add up to the file size, and the file is the served one. 60 seeded cases per run
/// (`RELIABILITY_SEED=<n>` replays one); the seed is in every failure message.
#[tokio::test]
async fn connections_cut_at_random_offsets_resume_exactly() {
    let test = test_name!();
    const SIZE: u64 = 300_000;
    const CASES: u64 = 60;
    let fx = both(SIZE);
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut total_cuts = [0u32; 2];
    for case in 0..CASES {
        let context = format!("seed {seed} (RELIABILITY_SEED={seed}), case {case}");
        fx.hub.clear_faults();
        fx.hub.clear_requests();
        let mut plans = Vec::new();
        for (slot, id) in [PINNED, UNPINNED].into_iter().enumerate() {
            let cuts = 1 + rng.below(3);
            let mut kept = 0u64;
            let mut starts = vec![0u64];
            for j in 0..cuts {
                let cut = rng.below(SIZE - kept);
                fx.hub.add_fault(
                    FaultRule::new(
                        FaultTarget::get(&fx.file(id).sha256),
                        Fault::CutAfter { bytes: cut },
                    )
                    .skip(j as u32)
                    .times(1),
                );
                kept += cut;
                starts.push(kept);
            }
            total_cuts[slot] += cuts as u32;
            plans.push((id, starts));
        }
        let cache = fx.fresh_cache(&format!("cut-{case}"));
        let manager = fx.manager_at(&cache);
        let result = within(
            Duration::from_secs(30),
            &format!("ensure under cuts ({context})"),
            manager.ensure_all_models(),
        )
        .await;
        assert!(result.is_ok(), "{context}: {:?}", result.err());
        check_cache(&cache, &fx.known_hashes()).assert_sound(&context);
        for (id, starts) in plans {
            assert_model_state(&fx, &cache, id, true, &context);
            let gets = fx.byte_gets(id);
            let asked: Vec<u64> = gets.iter().map(range_start).collect();
            assert_eq!(
                asked, starts,
                "{context}: {id} must resume from exactly the bytes it kept"
            );
            assert_eq!(
                fx.bytes_sent(id),
                SIZE,
                "{context}: {id}: no byte is fetched twice"
            );
        }
        let check = check_cache(&cache, &fx.known_hashes());
        assert!(
            check.partials.is_empty() && check.temps.is_empty(),
            "{context}: {check:?}"
        );
    }
    for (slot, id) in [PINNED, UNPINNED].into_iter().enumerate() {
        evidence(
            AREA,
            &format!(
                "connection cut at random offsets, 1–3 cuts per download ({CASES} seeded cases, {} cuts; {})",
                total_cuts[slot],
                fx.file(id).kind()
            ),
            "every download completes; each resume asks `Range: bytes=<bytes kept>-` exactly, the bytes sent add up to the file size (nothing fetched twice)",
            "blob = served bytes (SHA-256 verified); snapshot entry → that blob; no partial, no temp file",
            &test,
        );
    }
}

#[tokio::test]
async fn stalls_longer_than_the_idle_timeout() {
    let test = test_name!();
    let fx = both(400_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(
            FaultTarget::get(sha),
            Fault::StallAfter {
                bytes: 150_000,
                stall: Duration::from_secs(2),
            },
        )
        .times(1)
    });
    let mut config = fx.config();
    config.download_timeout = Duration::from_millis(400);
    run_and_judge(
        &fx,
        config,
        "stall of 2 s after 150 kB, idle timeout 400 ms",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();
    for id in [PINNED, UNPINNED] {
        let gets = fx.byte_gets(id);
        assert_eq!(gets.len(), 2, "{gets:?}");
        assert!(range_start(&gets[1]) >= 150_000, "resumed, not restarted");
    }
}

/// A server that sends headers and then nothing: once the retries run out, the documented
/// idle-timeout error (which tells the user how to raise the limit), not a generic one.
#[tokio::test]
async fn a_server_that_never_sends_a_byte_gives_the_idle_timeout_error() {
    let test = test_name!();
    let fx = both(100_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(
            FaultTarget::get(sha),
            Fault::StallAfter {
                bytes: 0,
                stall: Duration::from_secs(3),
            },
        )
    });
    let mut config = fx.config();
    config.download_timeout = Duration::from_millis(300);
    config.retry_attempts = 2;
    run_and_judge(
        &fx,
        config,
        "server sends headers, then never a byte",
        Expect::ClearError(|e| {
            matches!(e, EmbeddingError::RetriesExhausted { last, .. }
                if matches!(**last, EmbeddingError::IdleTimeout { .. }))
                && e.to_string().contains("HF_HUB_DOWNLOAD_TIMEOUT")
        }),
        &test,
    )
    .await
    .unwrap_err();
}

#[tokio::test]
async fn bursts_of_500_502_503() {
    let test = test_name!();
    let fx = both(200_000);
    for code in [500, 502, 503] {
        add_to_both(&fx, |sha| {
            FaultRule::new(FaultTarget::get(sha), Fault::status(code)).times(1)
        });
    }
    run_and_judge(
        &fx,
        fx.config(),
        "burst of 500, 502, 503 on the file GET",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();

    let fx = both(200_000);
    for id in [PINNED, UNPINNED] {
        for code in [503, 502, 500] {
            fx.hub.add_fault(
                FaultRule::new(
                    FaultTarget::head(&fx.file(id).repo_id).on_host(Host::Hub),
                    Fault::status(code),
                )
                .times(1),
            );
        }
    }
    run_and_judge(
        &fx,
        fx.config(),
        "burst of 503, 502, 500 on the metadata HEAD",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();

    let fx = both(200_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::status(503))
    });
    run_and_judge(
        &fx,
        fx.config(),
        "503 on every attempt (longer than the retry budget)",
        Expect::ClearError(|e| {
            matches!(e, EmbeddingError::RetriesExhausted { last, .. }
                if matches!(**last, EmbeddingError::TransientStatus { .. }))
        }),
        &test,
    )
    .await
    .unwrap_err();
}

#[tokio::test]
async fn rate_limits_429_are_honoured_and_capped() {
    let test = test_name!();
    let cases: [(&str, Fault, Duration, Duration); 3] = [
        (
            "429 with Retry-After: 1",
            Fault::Status {
                code: 429,
                retry_after_secs: Some(1),
                ratelimit_reset_secs: None,
            },
            Duration::from_millis(1000),
            Duration::from_secs(10),
        ),
        (
            "429 with RateLimit: \"api\";r=0;t=0",
            Fault::Status {
                code: 429,
                retry_after_secs: None,
                ratelimit_reset_secs: Some(0),
            },
            Duration::from_millis(1000),
            Duration::from_secs(10),
        ),
        (
            "429 with Retry-After: 86400 (hostile; cap 1.5 s)",
            Fault::Status {
                code: 429,
                retry_after_secs: Some(86_400),
                ratelimit_reset_secs: None,
            },
            Duration::from_millis(1500),
            Duration::from_secs(10),
        ),
    ];
    for (name, fault, at_least, at_most) in cases {
        let fx = both(100_000);
        add_to_both(&fx, |sha| {
            FaultRule::new(FaultTarget::get(sha), fault.clone()).times(1)
        });
        let mut config = fx.config();
        config.retry_policy.max_server_delay = Duration::from_millis(1500);
        let started = Instant::now();
        run_and_judge(&fx, config, name, Expect::Recovers, &test)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(
            took >= at_least && took <= at_most,
            "{name}: took {took:?}, expected between {at_least:?} and {at_most:?}"
        );
        evidence(
            AREA,
            name,
            &format!(
                "waits as asked (capped at max_server_delay), then completes; took {:.1} s",
                took.as_secs_f64()
            ),
            "both files verified",
            &test,
        );
    }
}

#[tokio::test]
async fn a_200_instead_of_206_restarts_from_zero() {
    let test = test_name!();
    let fx = both(300_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::CutAfter { bytes: 120_000 }).times(1)
    });
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::IgnoreRange).times(1)
    });
    run_and_judge(
        &fx,
        fx.config(),
        "200 with the whole file instead of 206 to a resume",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();
    for id in [PINNED, UNPINNED] {
        let gets = fx.byte_gets(id);
        assert_eq!(gets.len(), 2, "{gets:?}");
        assert_eq!(gets[1].range(), Some("bytes=120000-"));
        assert_eq!(gets[1].status, 200);
    }
}

#[tokio::test]
async fn a_416_discards_the_partial() {
    let test = test_name!();
    let fx = both(300_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::CutAfter { bytes: 100_000 }).times(1)
    });
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::status(416))
            .skip(1)
            .times(1)
    });
    run_and_judge(
        &fx,
        fx.config(),
        "416 Range Not Satisfiable to a resume",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();
    for id in [PINNED, UNPINNED] {
        let all: Vec<_> = fx
            .hub
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains(&fx.file(id).sha256))
            .collect();
        let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 416, 200], "{all:?}");
        assert_eq!(
            all[2].range(),
            None,
            "after a 416 the file is fetched from zero"
        );
    }
}

#[tokio::test]
async fn bodies_shorter_or_longer_than_content_length() {
    let test = test_name!();
    for (name, delta) in [
        (
            "body shorter than Content-Length (announced +1000 B)",
            1000i64,
        ),
        (
            "body longer than Content-Length (announced -1000 B)",
            -1000i64,
        ),
    ] {
        let fx = both(300_000);
        add_to_both(&fx, |sha| {
            FaultRule::new(FaultTarget::get(sha), Fault::ContentLengthDelta { delta }).times(2)
        });
        run_and_judge(
            &fx,
            fx.config(),
            &format!("{name}, twice"),
            Expect::Recovers,
            &test,
        )
        .await
        .unwrap();

        let fx = both(300_000);
        add_to_both(&fx, |sha| {
            FaultRule::new(FaultTarget::get(sha), Fault::ContentLengthDelta { delta })
        });
        run_and_judge(
            &fx,
            fx.config(),
            &format!("{name}, on every attempt"),
            Expect::ClearError(|e| matches!(e, EmbeddingError::RetriesExhausted { .. })),
            &test,
        )
        .await
        .unwrap_err();
    }
}

#[tokio::test]
async fn flipped_bytes_are_discarded_refetched_then_fatal() {
    let test = test_name!();
    let fx = both(300_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::FlipByte { offset: 123_456 }).times(1)
    });
    run_and_judge(
        &fx,
        fx.config(),
        "one flipped byte, once",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();
    for id in [PINNED, UNPINNED] {
        let gets = fx.byte_gets(id);
        assert_eq!(
            gets.len(),
            2,
            "detected at the end, fetched once more: {gets:?}"
        );
        assert_eq!(
            gets[1].range(),
            None,
            "the corrupt bytes are not resumed from"
        );
    }

    // In a resumed span: the corrupt byte arrives after a cut.
    let fx = both(300_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::CutAfter { bytes: 50_000 }).times(1)
    });
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::FlipByte { offset: 200_000 }).times(1)
    });
    run_and_judge(
        &fx,
        fx.config(),
        "one flipped byte in a resumed span",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();

    let fx = both(300_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::FlipByte { offset: 99 })
    });
    let cache = fx.cache_dir();
    run_and_judge(
        &fx,
        fx.config(),
        "a flipped byte on every attempt",
        Expect::ClearError(|e| matches!(e, EmbeddingError::HashMismatch { .. })),
        &test,
    )
    .await
    .unwrap_err();
    for id in [PINNED, UNPINNED] {
        assert_eq!(fx.byte_gets(id).len(), 2, "fetched again once, then fatal");
        let check = check_cache(&cache, &fx.known_hashes());
        assert!(
            check.partials.is_empty(),
            "corrupt bytes are not kept: {check:?}"
        );
    }
}

#[tokio::test]
async fn html_error_pages_served_with_200() {
    let test = test_name!();
    let fx = both(200_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::HtmlErrorPage200).times(2)
    });
    run_and_judge(
        &fx,
        fx.config(),
        "HTML error page with 200, twice",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();

    let fx = both(200_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::HtmlErrorPage200)
    });
    run_and_judge(
        &fx,
        fx.config(),
        "HTML error page with 200, on every attempt",
        Expect::ClearError(|e| {
            matches!(e, EmbeddingError::RetriesExhausted { .. }) && e.to_string().contains("HTML")
        }),
        &test,
    )
    .await
    .unwrap_err();
}

#[tokio::test]
async fn redirect_loops_are_a_clear_error() {
    let test = test_name!();
    let fx = both(100_000);
    add_to_both(&fx, |sha| {
        FaultRule::new(
            FaultTarget::get(sha).on_host(Host::Cdn),
            Fault::RedirectLoop,
        )
    });
    run_and_judge(
        &fx,
        fx.config(),
        "redirect loop on the CDN",
        Expect::ClearError(|e| e.to_string().contains("redirect loop")),
        &test,
    )
    .await
    .unwrap_err();

    let fx = both(100_000);
    fx.hub.add_fault(FaultRule::new(
        FaultTarget::head("resolve").on_host(Host::Hub),
        Fault::RedirectLoop,
    ));
    run_and_judge(
        &fx,
        fx.config(),
        "redirect loop on the Hub's resolve URL",
        Expect::ClearError(|e| e.to_string().contains("redirect loop")),
        &test,
    )
    .await
    .unwrap_err();
}

/// The file changes on the server under the same name while it downloads (manifest on branch
/// `main`, bytes served by the resolve URL itself so the name, not the hash, addresses them).
/// A resume must never splice the old and the new version.
#[tokio::test]
async fn a_file_changed_on_the_server_mid_download_is_never_spliced() {
    let test = test_name!();
    const SIZE: u64 = 400_000;
    let fx = Fixture::with_options(
        &[
            pinned(PINNED, SIZE).on_branch(),
            unpinned(UNPINNED, SIZE).on_branch(),
        ],
        Options {
            cdn_redirect: false,
            gated: None,
        },
    );
    let new_versions: Vec<(ModelId, Vec<u8>)> = [PINNED, UNPINNED]
        .into_iter()
        .map(|id| {
            (
                id,
                hub_emulator::synth::safetensors(SIZE, 99_000 + id.index() as u64),
            )
        })
        .collect();
    for id in [PINNED, UNPINNED] {
        fx.hub.add_fault(
            FaultRule::new(
                FaultTarget::get(&format!("{}/resolve/", fx.file(id).repo_id)),
                Fault::StallAfter {
                    bytes: 150_000,
                    stall: Duration::from_secs(2),
                },
            )
            .times(1),
        );
    }
    let cache = fx.cache_dir();
    let mut config = fx.config();
    config.download_timeout = Duration::from_millis(500);
    let manager = ModelArtifactManager::new(config.clone()).unwrap();
    // While both downloads stall at 150 kB, the files change on the server.
    let changer = async {
        let mut pending: Vec<ModelId> = vec![PINNED, UNPINNED];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "downloads never reached the stall"
            );
            pending.retain(|id| {
                let partial = crate::support::partials_in(&fx.blobs_dir_in(&cache, *id))
                    .iter()
                    .any(|(_, len)| *len >= 150_000);
                if partial {
                    let (_, content) = new_versions.iter().find(|(m, _)| m == id).unwrap();
                    fx.hub
                        .set_file(&fx.file(*id).repo_id, "model.safetensors", content.clone());
                }
                !partial
            });
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (result, ()) = tokio::join!(
        within(
            Duration::from_secs(60),
            "ensure",
            manager.ensure_all_models()
        ),
        changer
    );
    let mut known = fx.known_hashes();
    known.extend(
        new_versions
            .iter()
            .map(|(_, c)| hub_emulator::synth::sha256_hex(c)),
    );
    check_cache(&cache, &known).assert_sound("file changed on the server");
    for (id, new) in &new_versions {
        let served = fx.file(*id);
        let error = model_error(&result, *id);
        // Whatever happened, no final path holds a mix of both versions.
        let mut final_paths: Vec<std::path::PathBuf> = Vec::new();
        crate::support::walk(
            &fx.repo_dir_in(&cache, *id).join("snapshots"),
            &mut |p, m| {
                if !m.is_dir() {
                    final_paths.push(p.to_path_buf());
                }
            },
        );
        for path in &final_paths {
            let bytes = std::fs::read(path).unwrap();
            assert!(
                bytes == served.content || bytes == *new,
                "{}: {} holds a splice of two versions",
                served.kind(),
                path.display()
            );
        }
        let sees = match error {
            None => "completes with one whole version (verified)".to_owned(),
            Some(e) => format!("error: {}", fx.redact(&e.to_string())),
        };
        let requests: Vec<String> = fx
            .hub
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains(&served.repo_id))
            .map(|r| format!("{} {}", r.range().unwrap_or("no Range"), r.status))
            .collect();
        evidence(
            AREA,
            &format!(
                "file changed on the server under the same name mid-download (branch main; {})",
                served.kind()
            ),
            &format!("{sees} [GETs: {}]", requests.join(", ")),
            &format!(
                "{} final path(s), each one whole version; {}",
                final_paths.len(),
                describe_model(&fx, &cache, *id)
            ),
            &test,
        );
        if served.pinned {
            assert!(error.is_some(), "the pinned bytes are no longer served");
        }
    }

    // The next run: the unpinned entry follows the branch to the new version; the pinned one
    // refuses clearly, before any byte.
    fx.hub.clear_requests();
    let manager = ModelArtifactManager::new(config).unwrap();
    let result = within(
        Duration::from_secs(30),
        "ensure",
        manager.ensure_all_models(),
    )
    .await;
    check_cache(&cache, &known).assert_sound("after the change");
    let pinned_error = model_error(&result, PINNED).expect("pinned refuses");
    assert!(
        matches!(pinned_error, EmbeddingError::PinMismatch { .. }),
        "{pinned_error:?}"
    );
    assert!(fx.byte_gets(PINNED).is_empty());
    assert!(model_error(&result, UNPINNED).is_none(), "{result:?}");
    let new_unpinned = &new_versions.iter().find(|(m, _)| *m == UNPINNED).unwrap().1;
    let path = manager.get_path(UNPINNED).expect("ready");
    assert_eq!(&std::fs::read(&path).unwrap(), new_unpinned);
    evidence(
        AREA,
        "next run after the file changed (pinned)",
        &format!("error: {}", fx.redact(&pinned_error.to_string())),
        "nothing downloaded for it; no final path",
        &test,
    );
    evidence(
        AREA,
        "next run after the file changed (unpinned)",
        "completes with the new version, verified against the hash the Hub now advertises",
        "new blob + snapshot entry at the new commit; old partials gone",
        &test,
    );
}

/// The token goes to the Hub and never to the CDN, also on resumed and retried requests.
#[tokio::test]
async fn the_cdn_never_sees_the_token() {
    let test = test_name!();
    let token = "hf_reliability_cdn_secret_7777";
    let fx = Fixture::with_options(
        &[pinned(PINNED, 300_000), unpinned(UNPINNED, 300_000)],
        Options {
            cdn_redirect: true,
            gated: Some(vec![token.to_owned()]),
        },
    );
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::CutAfter { bytes: 100_000 }).times(1)
    });
    add_to_both(&fx, |sha| {
        FaultRule::new(FaultTarget::get(sha), Fault::status(503))
            .skip(1)
            .times(1)
    });
    let mut config = fx.config();
    config.hf_token = Some(token.to_owned());
    run_and_judge(
        &fx,
        config,
        "gated repo with a token; CDN cut and 503 on the way",
        Expect::Recovers,
        &test,
    )
    .await
    .unwrap();
    let requests = fx.hub.requests();
    let cdn: Vec<_> = requests.iter().filter(|r| r.host == Host::Cdn).collect();
    assert!(
        cdn.len() >= 6,
        "every file went through the CDN, resumed: {cdn:?}"
    );
    for request in &cdn {
        let text = format!("{} {:?} {:?}", request.path, request.query, request.headers);
        assert!(
            !text.contains(token) && request.header("authorization").is_none(),
            "token sent to the CDN: {request:?}"
        );
    }
    for request in requests.iter().filter(|r| r.host == Host::Hub) {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "the Hub gets the token: {request:?}"
        );
    }
    evidence(
        AREA,
        "CDN host and the token (gated repo, resumed and retried CDN requests)",
        &format!(
            "{} CDN requests, none with an Authorization header or the token anywhere; every Hub request had it",
            cdn.len()
        ),
        "both files verified",
        &test,
    );
}
