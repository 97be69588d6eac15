//! A full disk, on a small file system the test makes itself: an 8 MiB tmpfs mounted as root
//! (unmounted by a drop guard). Where that is impossible (not root, no mount permission) the
//! tests say why and return, except in CI (`CI=true`), where they must run and fail instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use context_graph_embeddings::{EmbeddingError, ModelId};
use hub_emulator::{Fault, FaultRule, FaultTarget};

use crate::support::{
    assert_model_state, check_cache, describe_model, evidence, model_error, partials_in, pinned,
    unpinned, within, Fixture,
};

const AREA: &str = "Full disk";
const PINNED: ModelId = ModelId::Entity;
const UNPINNED: ModelId = ModelId::Graph;
const DISK_BYTES: u64 = 8 * 1024 * 1024;

/// A mounted tmpfs, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run `mount`: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`mount -t tmpfs` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallDisk {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Mounts the small disk, or explains why not and returns `None` (panics in CI).
#[allow(clippy::print_stdout)]
fn small_disk(fx: &Fixture, test: &str) -> Option<SmallDisk> {
    match SmallDisk::mount(&fx.dir.path().join("disk")) {
        Ok(disk) => Some(disk),
        Err(why) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !in_ci,
                "{test}: CI=true, so the full-disk test must run, but: {why} (run as root with permission to mount tmpfs)"
            );
            println!("RELIABILITY-NOT-RUN|{test}|cannot make a small file system: {why}");
            None
        }
    }
}

#[tokio::test]
async fn the_pre_check_refuses_a_batch_that_cannot_fit() {
    let test = test_name!();
    let fx = Fixture::new(&[pinned(PINNED, 5_000_000), unpinned(UNPINNED, 5_000_000)]);
    let Some(disk) = small_disk(&fx, &test) else {
        return;
    };
    let cache = disk.path.join("hub");
    let manager = fx.manager_at(&cache);
    let error = within(
        Duration::from_secs(30),
        "ensure on a small disk",
        manager.ensure_all_models(),
    )
    .await
    .unwrap_err();
    let EmbeddingError::InsufficientDisk {
        needed, available, ..
    } = &error
    else {
        panic!("expected InsufficientDisk, got {error:?}");
    };
    assert_eq!(
        *needed, 10_000_000,
        "both files, the unpinned one sized by the Hub"
    );
    assert!(
        *available <= DISK_BYTES && *available > 7_000_000,
        "{available}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&needed.to_string()) && text.contains(&available.to_string()),
        "{text}"
    );
    assert!(fx.byte_gets(PINNED).is_empty() && fx.byte_gets(UNPINNED).is_empty());
    let check = check_cache(&cache, &fx.known_hashes());
    check.assert_sound("pre-check");
    assert!(
        check.blobs.is_empty() && check.partials.is_empty(),
        "{check:?}"
    );
    evidence(
        AREA,
        "batch larger than the free space (10 MB on an 8 MiB file system; pinned + unpinned)",
        &format!("error before any download: {}", fx.redact(&text)),
        "nothing downloaded: no blob, no partial",
        &test,
    );
}

#[tokio::test]
async fn a_disk_filling_up_mid_download_fails_clearly_and_resumes_after() {
    let test = test_name!();
    const SIZE: u64 = 3_000_000;
    let fx = Fixture::new(&[pinned(PINNED, SIZE), unpinned(UNPINNED, SIZE)]);
    let Some(disk) = small_disk(&fx, &test) else {
        return;
    };
    for id in [PINNED, UNPINNED] {
        fx.hub.add_fault(FaultRule::new(
            FaultTarget::get(&fx.file(id).sha256),
            Fault::BandwidthCap {
                bytes_per_sec: 3_000_000,
            },
        ));
    }
    let cache = disk.path.join("hub");
    let filler_path = disk.path.join("other-program-data");
    // Another program fills the disk once both downloads are under way.
    let filler = {
        let blobs: Vec<PathBuf> = [PINNED, UNPINNED]
            .into_iter()
            .map(|id| fx.blobs_dir_in(&cache, id))
            .collect();
        let filler_path = filler_path.clone();
        std::thread::spawn(move || {
            let started = crate::support::wait_until(Duration::from_secs(20), || {
                blobs
                    .iter()
                    .all(|b| partials_in(b).iter().any(|(_, len)| *len >= 500_000))
            });
            assert!(started, "downloads never started");
            let mut file = std::fs::File::create(&filler_path).unwrap();
            let block = vec![0xa5u8; 64 * 1024];
            let mut written = 0u64;
            loop {
                match file.write(&block) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(e) => panic!("filler: {e}"),
                }
            }
            let _ = file.sync_all();
            written
        })
    };
    let manager = fx.manager_at(&cache);
    let result = within(
        Duration::from_secs(60),
        "ensure while the disk fills",
        manager.ensure_all_models(),
    )
    .await;
    let filled = filler.join().unwrap();
    assert!(filled > 0);
    let check = check_cache(&cache, &fx.known_hashes());
    check.assert_sound("disk full mid-download");
    let mut failed = 0;
    let mut kept = Vec::new();
    for id in [PINNED, UNPINNED] {
        let error = model_error(&result, id);
        assert_model_state(&fx, &cache, id, error.is_none(), "disk full");
        if let Some(error) = error {
            failed += 1;
            assert!(
                error.is_disk_full(),
                "{id}: a full disk must be reported as such: {error:?}"
            );
            assert!(
                !fx.blob_path_in(&cache, id).exists()
                    && fx.snapshot_path_in(&cache, id).symlink_metadata().is_err(),
                "{id}: nothing at a final path after a failure"
            );
            evidence(
                AREA,
                &format!(
                    "disk fills up mid-download (another program writes {filled} B; {})",
                    fx.file(id).kind()
                ),
                &format!("error: {}", fx.redact(&error.to_string())),
                &describe_model(&fx, &cache, id),
                &test,
            );
        }
        let partial = partials_in(&fx.blobs_dir_in(&cache, id))
            .iter()
            .map(|p| p.1)
            .max()
            .unwrap_or(0);
        kept.push((id, partial));
    }
    assert!(
        failed >= 1,
        "the disk filled up, yet nothing failed: {result:?}"
    );

    // Space is freed: the cache works again and resumes what it had.
    std::fs::remove_file(&filler_path).unwrap();
    fx.hub.clear_requests();
    let manager = fx.manager_at(&cache);
    within(
        Duration::from_secs(60),
        "ensure after freeing space",
        manager.ensure_all_models(),
    )
    .await
    .unwrap();
    let check = check_cache(&cache, &fx.known_hashes());
    check.assert_sound("after freeing space");
    assert!(
        check.partials.is_empty() && check.temps.is_empty(),
        "{check:?}"
    );
    let mut resumed = Vec::new();
    for (id, partial) in kept {
        assert_model_state(&fx, &cache, id, true, "after freeing space");
        if partial > 0 && partial < SIZE {
            let first = fx
                .byte_gets(id)
                .first()
                .and_then(|g| g.range().map(str::to_owned));
            assert_eq!(
                first.as_deref(),
                Some(format!("bytes={partial}-").as_str()),
                "{id} resumes from the {partial} bytes it kept"
            );
            resumed.push(format!("{id} resumed from {partial} B"));
        }
    }
    assert!(!resumed.is_empty(), "at least one download resumed");
    evidence(
        AREA,
        "space freed after the disk was full",
        &format!("the next run completes ({})", resumed.join(", ")),
        &check.summary(),
        &test,
    );
}
