//! Ensuring one model, as named steps: reuse what is present, resolve what the bytes must be,
//! take the blob lock, reuse a blob already in the cache, fetch from the sources in order (the
//! mirror, then the Hub), and place the snapshot entry, ref and stamp. Every failure is
//! reported once, by [`ensure_one`].

use std::path::PathBuf;

use super::context::Context;
use super::local::inspect_off_thread;
use super::readiness::verify_checksum;
use crate::artifacts::blocking::{run_blocking, run_blocking_checked};
use crate::artifacts::hash::hash_file;
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::progress::Outcome;
use crate::artifacts::remote::protocol::RemoteFile;
use crate::artifacts::remote::retry::{RetryDecision, RetryState};
use crate::artifacts::remote::source::{ByteSource, HubSource};
use crate::artifacts::status::ModelEvents;
use crate::artifacts::store::fs::remove_entry;
use crate::artifacts::store::layout::blob_stays_inside;
use crate::artifacts::store::lock::BlobLock;
use crate::artifacts::store::stamp::VerificationStamp;
use crate::artifacts::testing;
use crate::artifacts::transfer::blob::fetch_blob;
use crate::artifacts::transfer::fleet::fetch_for_fleet;
use crate::artifacts::transfer::request::FetchRequest;
use crate::error::{EmbeddingError, EmbeddingResult, FileLocation};

/// How a blob came to be in place.
#[derive(Debug, Clone)]
struct Fetched {
    outcome: Outcome,
    /// Bytes received over the network.
    transferred: u64,
    /// `hub`, the mirror object, or `cache`.
    source: String,
    /// The bytes are the snapshot entry itself (a verified copy), not a blob to link to.
    in_place: bool,
}

impl Fetched {
    fn from_cache(outcome: Outcome, in_place: bool) -> Self {
        Fetched {
            outcome,
            transferred: 0,
            source: "cache".to_owned(),
            in_place,
        }
    }

    fn from_source(resumed_from: u64, transferred: u64, source: String) -> Self {
        Fetched {
            outcome: if resumed_from > 0 {
                Outcome::Resumed
            } else {
                Outcome::Downloaded
            },
            transferred,
            source,
            in_place: false,
        }
    }
}

/// Makes one model ready and returns its snapshot path; a failure is recorded and announced
/// (`Failed`) before it is returned. `remote` is what a batch already resolved on the Hub.
pub(crate) async fn ensure_one(
    ctx: &Context,
    artifact: &ModelArtifact,
    remote: Option<RemoteFile>,
) -> EmbeddingResult<PathBuf> {
    let events = ctx.events(artifact.model_id);
    let result = ensure_steps(ctx, artifact, remote, &events)
        .await
        .map_err(EmbeddingError::read_only_named);
    if let Err(error) = &result {
        events.failed(error, artifact.size_bytes.unwrap_or(0));
    }
    result
}

async fn ensure_steps(
    ctx: &Context,
    artifact: &ModelArtifact,
    remote: Option<RemoteFile>,
    events: &ModelEvents,
) -> EmbeddingResult<PathBuf> {
    let gate = ctx.in_flight_gate(artifact.model_id);
    let _gate = gate.lock().await;
    if let Some(path) = reuse_present(ctx, artifact, events).await {
        return Ok(path);
    }
    let location = artifact.location();
    if ctx.config.offline {
        return Err(EmbeddingError::OfflineMissing { location });
    }
    let _slot = ctx
        .download_slots
        .acquire()
        .await
        .map_err(|_| EmbeddingError::Config("download slots closed".to_owned()))?;
    events.queued(artifact.size_bytes.unwrap_or(0));
    let remote = match remote {
        Some(remote) => remote,
        None => resolve_expected(ctx, artifact, events).await?,
    };
    let (expected_sha256, expected_size) = expectations(artifact, &remote, &location)?;
    let request = FetchRequest {
        location,
        blobs_dir: ctx.layout.blobs_dir(&artifact.repo_id),
        etag: remote.etag.clone(),
        expected_sha256,
        expected_size,
    };
    let _lock = lock_blob(ctx, &request, events).await?;
    let fetched = match reuse_cached_blob(ctx, artifact, &remote, &request, events).await? {
        Some(fetched) => fetched,
        None => fetch_from_sources(ctx, artifact, &remote, &request, events).await?,
    };
    let snapshot = place(ctx, artifact, &remote, &request, &fetched).await?;
    report_ready(
        events,
        &snapshot,
        fetched.outcome,
        fetched.transferred,
        Some(fetched.source),
    )
    .await;
    Ok(snapshot)
}

/// Present and verified (a valid stamp), or present and found right by hashing it now.
async fn reuse_present(
    ctx: &Context,
    artifact: &ModelArtifact,
    events: &ModelEvents,
) -> Option<PathBuf> {
    let state = inspect_off_thread(&ctx.layout, artifact).await;
    let path = state.snapshot?;
    if state.stamp_valid {
        report_ready(events, &path, Outcome::AlreadyPresent, 0, None).await;
        return Some(path);
    }
    if verify_checksum(ctx, artifact.model_id)
        .await
        .unwrap_or(false)
    {
        report_ready(events, &path, Outcome::Verified, 0, None).await;
        return Some(path);
    }
    None
}

/// What the bytes must be. With a mirror and a fully pinned entry at a commit, that is known
/// without asking the Hub (air-gapped nodes never reach it); otherwise the Hub is asked.
async fn resolve_expected(
    ctx: &Context,
    artifact: &ModelArtifact,
    events: &ModelEvents,
) -> EmbeddingResult<RemoteFile> {
    if let Some(pinned) = pinned_for_mirror(ctx, artifact) {
        return Ok(pinned);
    }
    head_with_retries(ctx, &artifact.location(), events).await
}

/// The mirror shortcut: a mirror is configured and the entry's hash is pinned at a commit, so
/// the Hub is asked only if the mirror fails.
pub(crate) fn pinned_for_mirror(ctx: &Context, artifact: &ModelArtifact) -> Option<RemoteFile> {
    let sha = artifact.sha256.as_deref()?;
    (ctx.mirror.is_some() && artifact.revision_is_commit())
        .then(|| RemoteFile::from_pins(artifact.revision_or_default(), sha, artifact.size_bytes))
}

/// Takes the blob's lock (announcing a wait, warning where the file system has no locks) and
/// writes `CACHEDIR.TAG`.
async fn lock_blob(
    ctx: &Context,
    request: &FetchRequest,
    events: &ModelEvents,
) -> EmbeddingResult<BlobLock> {
    let lock_path = ctx
        .layout
        .lock_path(&request.location.repo_id, &request.etag);
    let waiting = events.clone();
    let total = request.expected_size.unwrap_or(0);
    let shown = lock_path.clone();
    let lock =
        BlobLock::acquire(&lock_path, move || waiting.waiting_for_lock(total, &shown)).await?;
    if !lock.is_effective() {
        events.warning(format!(
            "this file system does not support locks ({}); downloading without one (still safe: private temporary files, verified before they are put in place)",
            lock_path.display()
        ));
    }
    let layout = ctx.layout.clone();
    let _ = run_blocking(move || layout.ensure_cachedir_tag().map_err(std::io::Error::other)).await;
    Ok(lock)
}

/// After the lock: another process (or Python) may have placed the blob meanwhile, or left a
/// copy in the snapshot folder and no blob (what `huggingface_hub` does with
/// `HF_HUB_DISABLE_SYMLINKS`); now that the expected hash is known, either is verified in
/// place instead of fetched again. A blob that is wrong is removed.
async fn reuse_cached_blob(
    ctx: &Context,
    artifact: &ModelArtifact,
    remote: &RemoteFile,
    request: &FetchRequest,
    events: &ModelEvents,
) -> EmbeddingResult<Option<Fetched>> {
    let blob_path = ctx.layout.blob_path(&artifact.repo_id, &request.etag);
    if tokio::fs::symlink_metadata(&blob_path).await.is_ok() {
        let checked = blob_path.clone();
        let inside = run_blocking(move || Ok(blob_stays_inside(&checked))).await;
        if inside.unwrap_or(false) && hashes_to(&blob_path, request).await {
            return Ok(Some(Fetched::from_cache(Outcome::Reused, false)));
        }
        events.warning(format!(
            "the cached blob {} does not match its expected SHA-256 (or is a link out of the cache); fetching it again",
            blob_path.display()
        ));
        let removed = blob_path.clone();
        run_blocking_checked("cannot remove", &blob_path, move || remove_entry(&removed)).await?;
    }
    let copy = ctx
        .layout
        .snapshot_path(&artifact.repo_id, &remote.commit, &artifact.filename);
    let is_copy = tokio::fs::symlink_metadata(&copy)
        .await
        .is_ok_and(|m| m.is_file());
    if is_copy && hashes_to(&copy, request).await {
        return Ok(Some(Fetched::from_cache(Outcome::Verified, true)));
    }
    Ok(None)
}

/// Whether the file at `path` has the bytes `request` expects (hashed off the async threads).
async fn hashes_to(path: &std::path::Path, request: &FetchRequest) -> bool {
    let checked = path.to_path_buf();
    match run_blocking(move || hash_file(&checked)).await {
        Ok((sha, length)) => {
            sha == request.expected_sha256 && request.expected_size.is_none_or(|s| s == length)
        }
        Err(_) => false,
    }
}

/// The sources in order: the mirror (content-addressed, so only by a known hash), then the
/// Hub. A failing mirror is not fatal; its partial bytes are resumed from the Hub. What came
/// from the Hub is uploaded to a writable mirror.
async fn fetch_from_sources(
    ctx: &Context,
    artifact: &ModelArtifact,
    remote: &RemoteFile,
    request: &FetchRequest,
    events: &ModelEvents,
) -> EmbeddingResult<Fetched> {
    let settings = ctx.fetch_settings();
    let total = request.expected_size.unwrap_or(0);
    let mut mirror_lacks_it = false;
    if let Some(mirror) = &ctx.mirror {
        let source = mirror.source(&request.expected_sha256, ctx.config.download_timeout);
        match fetch_blob(&source, request, &settings, events).await {
            Ok(blob) => {
                return Ok(Fetched::from_source(
                    blob.resumed_from,
                    blob.transferred,
                    source.name(),
                ))
            }
            Err(error) => {
                mirror_lacks_it = matches!(error, EmbeddingError::MirrorMissing { .. });
                // A fleet node missing the object says what it does next in fleet events.
                if !(mirror_lacks_it && mirror.coordinates_fleet()) {
                    events.falling_back(total, source.name(), error.to_string());
                }
            }
        }
    }
    let from_hub = if remote.from_hub {
        remote.clone()
    } else {
        let asked = head_with_retries(ctx, &request.location, events).await?;
        expectations(artifact, &asked, &request.location)?;
        if asked.etag != request.etag || asked.commit != remote.commit {
            return Err(EmbeddingError::Protocol {
                location: request.location.clone(),
                reason: format!(
                    "the Hub names the file {} at commit {}, the manifest pins {} at {}",
                    asked.etag, asked.commit, request.etag, remote.commit
                ),
            });
        }
        asked
    };
    let source = HubSource::new(ctx.client.clone(), &from_hub, request.location.clone());
    // A writable mirror that lacks the object: the fleet decides who fetches it (docs/mirror.md).
    let fleet = ctx
        .mirror
        .as_ref()
        .filter(|m| mirror_lacks_it && m.coordinates_fleet());
    let blob = match fleet {
        Some(mirror) => {
            let fetched = fetch_for_fleet(mirror, &source, request, &settings, events).await?;
            if fetched.uploaded {
                return Ok(Fetched::from_source(
                    fetched.blob.resumed_from,
                    fetched.blob.transferred,
                    fetched.source,
                ));
            }
            fetched.blob
        }
        None => fetch_blob(&source, request, &settings, events).await?,
    };
    if let Some(mirror) = ctx.mirror.as_ref().filter(|m| m.is_writable()) {
        let size = tokio::fs::metadata(&blob.blob_path)
            .await
            .map_or(0, |m| m.len());
        match mirror
            .upload(&blob.blob_path, &request.expected_sha256, size)
            .await
        {
            Ok(_) => {
                tracing::info!(model = %artifact.model_id, object = %mirror.object_url(&request.expected_sha256), "uploaded to the mirror")
            }
            Err(error) => events.warning(format!(
                "upload to the mirror failed ({error}); the download itself is fine"
            )),
        }
    }
    Ok(Fetched::from_source(
        blob.resumed_from,
        blob.transferred,
        "hub".to_owned(),
    ))
}

/// Puts the snapshot entry (link or copy), the ref and the stamp in place, off the async
/// threads (they fsync small files).
async fn place(
    ctx: &Context,
    artifact: &ModelArtifact,
    remote: &RemoteFile,
    request: &FetchRequest,
    fetched: &Fetched,
) -> EmbeddingResult<PathBuf> {
    let layout = ctx.layout.clone();
    let repo = artifact.repo_id.clone();
    let commit = remote.commit.clone();
    let filename = artifact.filename.clone();
    let revision = artifact.revision_or_default().to_owned();
    let etag = request.etag.clone();
    let use_symlinks = ctx.config.use_symlinks;
    let sha = request.expected_sha256.clone();
    let source = fetched.source.clone();
    let in_place = fetched.in_place;
    let blob_path = ctx.layout.blob_path(&artifact.repo_id, &request.etag);
    run_blocking_checked("cannot place", &blob_path, move || {
        let snapshot = if in_place {
            layout.snapshot_path(&repo, &commit, &filename)
        } else {
            layout.link_snapshot(&repo, &commit, &filename, &etag, use_symlinks)?
        };
        layout.write_ref(&repo, &revision, &commit)?;
        let mut stamp = VerificationStamp::now(&snapshot, &sha)
            .map_err(|e| EmbeddingError::io("cannot read", &snapshot, e))?;
        stamp.source = Some(source);
        testing::hit("stamp.before_write");
        stamp.write(&layout.stamp_path(&repo, &commit, &filename))?;
        testing::hit("stamp.after_write");
        Ok(snapshot)
    })
    .await
}

/// Reports a model ready at `path`.
pub(crate) async fn report_ready(
    events: &ModelEvents,
    path: &std::path::Path,
    outcome: Outcome,
    transferred: u64,
    source: Option<String>,
) {
    let size = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
    events.completed(path, size, outcome, transferred, source);
}

/// The hash and size the bytes must have: the manifest's pins, checked against what the Hub
/// advertises (a disagreement is an error before any byte is written).
pub(crate) fn expectations(
    artifact: &ModelArtifact,
    remote: &RemoteFile,
    location: &FileLocation,
) -> EmbeddingResult<(String, Option<u64>)> {
    if artifact.revision_is_commit() && remote.commit != artifact.revision_or_default() {
        return Err(EmbeddingError::Protocol {
            location: location.clone(),
            reason: format!(
                "asked for commit {} but the Hub answered for commit {}",
                artifact.revision_or_default(),
                remote.commit
            ),
        });
    }
    if let (Some(pinned), Some(advertised)) = (&artifact.sha256, &remote.sha256) {
        if pinned != advertised {
            return Err(EmbeddingError::PinMismatch {
                location: location.clone(),
                field: "sha256",
                pinned: pinned.clone(),
                advertised: advertised.clone(),
            });
        }
    }
    if let (Some(pinned), Some(advertised)) = (artifact.size_bytes, remote.size) {
        if pinned != advertised {
            return Err(EmbeddingError::PinMismatch {
                location: location.clone(),
                field: "size",
                pinned: pinned.to_string(),
                advertised: advertised.to_string(),
            });
        }
    }
    let sha = artifact.sha256.clone().or_else(|| remote.sha256.clone());
    let sha = match sha {
        Some(sha) => sha,
        None if remote.commit_assumed => {
            return Err(EmbeddingError::Protocol {
                location: location.clone(),
                reason: "the server sent neither X-Repo-Commit nor X-Linked-Etag and the manifest pins no sha256, so the file cannot be verified; pin the file's sha256 (`cg-models lock`), or use a mirror that sends these headers (see docs/network.md)".to_owned(),
            })
        }
        None => {
            return Err(EmbeddingError::NoExpectedHash {
                location: location.clone(),
            })
        }
    };
    Ok((sha, artifact.size_bytes.or(remote.size)))
}

/// `HEAD` with the same retry policy as downloads.
pub(crate) async fn head_with_retries(
    ctx: &Context,
    location: &FileLocation,
    events: &ModelEvents,
) -> EmbeddingResult<RemoteFile> {
    let mut retry = RetryState::new(
        &ctx.config.retry_policy,
        ctx.config.retry_attempts,
        location,
    );
    loop {
        retry.attempt_started();
        match ctx.client.head_file(location).await {
            Ok(remote) => {
                if remote.commit_assumed {
                    events.warning(format!(
                        "{} sent no X-Repo-Commit header for {location}; trusting the pinned commit and checking the file against its known SHA-256",
                        ctx.client.endpoint()
                    ));
                }
                return Ok(remote);
            }
            Err(error) => match retry.after_failure(error, false, rand::random()) {
                RetryDecision::GiveUp(error) => return Err(error),
                RetryDecision::Retry(backoff) => {
                    events.retrying(0, 0, &backoff);
                    tokio::time::sleep(backoff.delay).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_id::ModelId;

    fn artifact(sha: Option<&str>, size: Option<u64>, revision: &str) -> ModelArtifact {
        ModelArtifact {
            model_id: ModelId::Entity,
            repo_id: "org/model".to_owned(),
            filename: "model.safetensors".to_owned(),
            sha256: sha.map(str::to_owned),
            size_bytes: size,
            revision: Some(revision.to_owned()),
        }
    }

    fn remote(commit: &str, sha: Option<&str>, size: Option<u64>) -> RemoteFile {
        RemoteFile {
            commit: commit.to_owned(),
            etag: sha.unwrap_or("etag").to_owned(),
            sha256: sha.map(str::to_owned),
            size,
            download_url: String::new(),
            validator: None,
            from_hub: true,
            commit_assumed: false,
        }
    }

    #[test]
    fn pins_win_but_a_contradiction_is_an_error_before_any_byte() {
        let commit = "c".repeat(40);
        let sha = "a".repeat(64);
        let other = "b".repeat(64);
        let pinned = artifact(Some(&sha), Some(10), &commit);
        let location = pinned.location();
        assert_eq!(
            expectations(&pinned, &remote(&commit, Some(&sha), Some(10)), &location).unwrap(),
            (sha.clone(), Some(10))
        );
        assert!(matches!(
            expectations(&pinned, &remote(&commit, Some(&other), Some(10)), &location),
            Err(EmbeddingError::PinMismatch {
                field: "sha256",
                ..
            })
        ));
        assert!(matches!(
            expectations(&pinned, &remote(&commit, Some(&sha), Some(11)), &location),
            Err(EmbeddingError::PinMismatch { field: "size", .. })
        ));
        assert!(matches!(
            expectations(
                &pinned,
                &remote(&"d".repeat(40), Some(&sha), Some(10)),
                &location
            ),
            Err(EmbeddingError::Protocol { .. })
        ));
        // Unpinned: the Hub's advertised hash and size; neither known is an error.
        let unpinned = artifact(None, None, "main");
        assert_eq!(
            expectations(
                &unpinned,
                &remote(&commit, Some(&other), Some(5)),
                &location
            )
            .unwrap(),
            (other, Some(5))
        );
        assert!(matches!(
            expectations(&unpinned, &remote(&commit, None, None), &location),
            Err(EmbeddingError::NoExpectedHash { .. })
        ));
    }
}
