//! Ensuring one model, as named steps: reuse what is present (verified, or hashed right now),
//! resolve what the weight file must be and the commit, make the model's plan at that commit
//! (`ensure::set`), then take every planned file through one pipeline ([`ensure_file`]): the
//! stamp, the blob lock, a link out of the cache removed, a blob already in the cache reused,
//! the sources in order (the mirror, then the Hub), the snapshot entry and stamp placed; the
//! other files first and several at once, the weights last, then the ref. Every failure is
//! reported once, by [`ensure_one`].

use std::path::PathBuf;

use futures_util::stream::{self, TryStreamExt};

use super::context::{Context, SMALL_FILES_AT_ONCE};
use super::local::{entry_at, inspect_async, inspect_file, Entry};
use super::plan::{FileRole, ModelPlan, PlannedFile};
use super::publish::publish_to_mirror;
use super::readiness::{location_of, not_ready_error, verify_model, FileVerdict};
use super::set::resolve_plan;
use super::signed::check_signature;
use crate::artifacts::blocking::{run_blocking, run_blocking_checked};
use crate::artifacts::hash::{hash_file_as, hash_file_dual, DigestKind};
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::progress::Outcome;
use crate::artifacts::remote::mirror::object_name;
use crate::artifacts::remote::protocol::RemoteFile;
use crate::artifacts::remote::source::{ByteSource, HubSource};
use crate::artifacts::status::ModelEvents;
use crate::artifacts::store::adopt::{adopt_as_blob, candidates};
use crate::artifacts::store::fs::remove_entry;
use crate::artifacts::store::layout::blob_stays_inside;
use crate::artifacts::store::lock::BlobLock;
use crate::artifacts::store::stamp::VerificationStamp;
use crate::artifacts::testing;
use crate::artifacts::transfer::blob::fetch_blob;
use crate::artifacts::transfer::fleet::fetch_for_fleet;
use crate::artifacts::transfer::request::{ExpectedDigest, FetchRequest};
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

/// Makes one model ready and returns the weight file's snapshot path; a failure is recorded
/// and announced (`Failed`) before it is returned. `remote` is what a batch already resolved
/// on the Hub.
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
    let why_not = match reuse_present(ctx, artifact, events).await? {
        Ok(path) => return Ok(path),
        Err(why_not) => why_not,
    };
    if ctx.config.offline {
        return Err(offline_error(why_not));
    }
    let location = artifact.location();
    let _slot = ctx
        .download_slots
        .acquire()
        .await
        .map_err(|_| EmbeddingError::Config("download slots closed".to_owned()))?;
    events.queued(artifact.size_bytes.unwrap_or(0));
    let mut remote = match remote {
        Some(remote) => remote,
        None => resolve_expected(ctx, artifact, events).await?,
    };
    // A set is fetched by the commit the revision resolved to, so a branch that moves during
    // the run cannot mix two commits in one snapshot. (A single file keeps the URL the Hub
    // named: a change under it is caught by its hash, as before.)
    let at_revision =
        ctx.client
            .resolve_url(&artifact.repo_id, &location.revision, &artifact.filename);
    if !artifact.selection.is_single_file() && remote.from_hub && remote.download_url == at_revision
    {
        remote.download_url =
            ctx.client
                .resolve_url(&artifact.repo_id, &remote.commit, &artifact.filename);
    }
    let (expected, expected_size) = expectations(artifact, &remote, &location)?;
    let plan = resolve_plan(
        ctx,
        artifact,
        &remote.commit,
        (Some(expected), expected_size),
        events,
    )
    .await?;
    events.files_resolved(plan.files.len(), plan.known_bytes());
    // Every file but the weights, several at once (slots shared across the run), then the
    // weights: a model never looks complete while a small file is still missing.
    stream::iter(plan.files.iter().skip(1).map(Ok))
        .try_for_each_concurrent(SMALL_FILES_AT_ONCE, |file| {
            let plan = &plan;
            async move {
                let _slot =
                    ctx.small_file_slots.acquire().await.map_err(|_| {
                        EmbeddingError::Config("small-file slots closed".to_owned())
                    })?;
                ensure_file(ctx, artifact, plan, file, None, events)
                    .await
                    .map(|_| ())
            }
        })
        .await?;
    let weights = ensure_file(ctx, artifact, &plan, plan.weights(), Some(&remote), events).await?;
    // Every file is verified; the signature under the model's policy decides before any ref
    // names the commit.
    check_signature(ctx, artifact, &plan.commit).await?;
    write_refs(ctx, artifact, &plan.commit).await?;
    if let Some(registry) = ctx.oci_mirror.as_ref().filter(|m| m.is_writable()) {
        match publish_to_mirror(ctx, registry, artifact.model_id).await {
            Ok(pushed) => tracing::info!(
                model = %artifact.model_id,
                uploaded = pushed.blobs_uploaded,
                present = pushed.blobs_present,
                "pushed to the OCI mirror"
            ),
            Err(error) => events.warning(format!(
                "push to the OCI mirror failed ({error}); the download itself is fine"
            )),
        }
    }
    report_ready(
        events,
        &weights.path,
        weights.outcome,
        weights.transferred,
        weights.source,
    )
    .await;
    Ok(weights.path)
}

/// Offline, a file that is not there is "not in the cache and offline mode is on"; every other
/// reason (a digest, a link out of the cache, an unknown set) is said as it is.
fn offline_error(why_not: EmbeddingError) -> EmbeddingError {
    match why_not {
        EmbeddingError::FileMissing { location } => EmbeddingError::OfflineMissing { location },
        other => other,
    }
}

/// Where one file of a set goes.
struct Target<'a> {
    repo: &'a str,
    commit: &'a str,
    path: &'a str,
}

/// One file in place.
struct Placed {
    path: PathBuf,
    outcome: Outcome,
    transferred: u64,
    source: Option<String>,
}

/// Writes the refs once every file of the commit is in place: `refs/<revision>` for a branch
/// or tag revision (the Hub just resolved it to this commit), `refs/<commit>` always (see
/// `CacheLayout::write_commit_ref`), and `refs/<branch>` for a pinned entry whose `branch` the
/// Hub confirms points at the pin now. A ref that names another commit is moved only on that
/// confirmation; without it (the Hub unreachable, a mirror-only node, the branch moved on) it
/// is left as it is.
async fn write_refs(ctx: &Context, artifact: &ModelArtifact, commit: &str) -> EmbeddingResult<()> {
    let mut names = Vec::new();
    if !artifact.revision_is_commit() {
        names.push(artifact.revision_or_default().to_owned());
    }
    if let (Some(branch), true) = (&artifact.branch, artifact.revision_is_commit()) {
        let mut location = artifact.location();
        location.revision = branch.clone();
        match ctx.client.resolve_revision(&location).await {
            Ok(head) if head == commit => names.push(branch.clone()),
            Ok(head) => tracing::info!(
                model = %artifact.model_id, branch = %branch, head = %head, pin = %commit,
                "the branch has moved on from the pin; refs/{branch} is left as it is"
            ),
            // A mirror-only node never reaches the Hub: not worth a warning on every run.
            Err(error) => tracing::info!(
                model = %artifact.model_id, branch = %branch,
                "could not ask the Hub where the branch points ({error}); refs/{branch} is left as it is"
            ),
        }
    }
    let layout = ctx.layout.clone();
    let repo = artifact.repo_id.clone();
    let commit = commit.to_owned();
    let shown = ctx.layout.repo_dir(&artifact.repo_id);
    run_blocking_checked("cannot write the ref in", &shown, move || {
        for name in &names {
            layout.write_ref(&repo, name, &commit)?;
        }
        layout.write_commit_ref(&repo, &commit)
    })
    .await
}

/// The one pipeline every planned file goes through: verified already (a valid stamp), else
/// under the blob lock: a link out of the cache in its path is removed, a blob or copy another
/// process placed is reused if it hashes right, else the bytes are fetched from the sources in
/// order, each checked by its digest (SHA-256, or the git blob SHA-1 of a regular file) before
/// it reaches the snapshot; then the entry and its stamp are placed. `remote` is the Hub's
/// answer for the weight file; the other files are fetched by commit with the digest the set
/// gave. Their byte progress stays off the model's bar (`for_other_file`).
async fn ensure_file(
    ctx: &Context,
    artifact: &ModelArtifact,
    plan: &ModelPlan,
    file: &PlannedFile,
    remote: Option<&RemoteFile>,
    model_events: &ModelEvents,
) -> EmbeddingResult<Placed> {
    let events = if file.role == FileRole::Weights {
        model_events.clone()
    } else {
        model_events.for_other_file()
    };
    let location = location_of(artifact, &file.path);
    let state = {
        let view = ctx.view();
        let repo = artifact.repo_id.clone();
        let commit = plan.commit.clone();
        let planned = file.clone();
        let shown = ctx.layout.snapshot_dir(&artifact.repo_id, &plan.commit);
        run_blocking_checked("cannot inspect", &shown, move || {
            Ok(inspect_file(&view, &repo, Some(&commit), planned))
        })
        .await?
    };
    if let (true, Some(path)) = (state.stamp_valid, state.path()) {
        let size = state.size().unwrap_or(0);
        model_events.file_ready(&file.path, size, Outcome::AlreadyPresent, 0);
        return Ok(Placed {
            path: path.to_path_buf(),
            outcome: Outcome::AlreadyPresent,
            transferred: 0,
            source: None,
        });
    }
    let Some(expected) = file.digest.clone() else {
        return Err(EmbeddingError::NoExpectedHash { location });
    };
    let remote = match remote {
        Some(remote) => remote.clone(),
        None => RemoteFile {
            commit: plan.commit.clone(),
            etag: expected.hex().to_owned(),
            sha256: (expected.kind() == DigestKind::Sha256).then(|| expected.hex().to_owned()),
            size: file.size,
            download_url: ctx
                .client
                .resolve_url(&artifact.repo_id, &plan.commit, &file.path),
            validator: None,
            from_hub: true,
            commit_assumed: false,
        },
    };
    let request = FetchRequest {
        location,
        blobs_dir: ctx.layout.blobs_dir(&artifact.repo_id),
        etag: remote.etag.clone(),
        expected,
        expected_size: file.size,
    };
    let _lock = lock_blob(ctx, &request, &events).await?;
    if let Entry::Foreign(link) = &state.entry {
        remove_planted_link(link, &events).await?;
    }
    let target = Target {
        repo: &artifact.repo_id,
        commit: &plan.commit,
        path: &file.path,
    };
    let fetched = match reuse_cached_blob(ctx, &target, &request, &events).await? {
        Some(fetched) => fetched,
        None => match adopt(ctx, &target, &request, &events).await {
            Some(fetched) => fetched,
            None => fetch_from_sources(ctx, artifact, &remote, &request, &events).await?,
        },
    };
    let path = place(ctx, &target, &request, &fetched).await?;
    let size = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
    model_events.file_ready(&file.path, size, fetched.outcome, fetched.transferred);
    Ok(Placed {
        path,
        outcome: fetched.outcome,
        transferred: fetched.transferred,
        source: Some(fetched.source),
    })
}

/// A copy of the file in the folders the operator named (`adopt_from`), brought in as the
/// blob only if the copy hashes to the planned digest (`store/adopt.rs`); `None` when there is
/// none (a candidate that cannot be read or is wrong is skipped with a warning).
async fn adopt(
    ctx: &Context,
    target: &Target<'_>,
    request: &FetchRequest,
    events: &ModelEvents,
) -> Option<Fetched> {
    if ctx.config.adopt_from.is_empty() {
        return None;
    }
    let roots = ctx.config.adopt_from.clone();
    let (repo, commit, path) = (
        target.repo.to_owned(),
        target.commit.to_owned(),
        target.path.to_owned(),
    );
    let blob_path = ctx.layout.blob_path(target.repo, &request.etag);
    let etag = request.etag.clone();
    let kind = request.expected.kind();
    let digest = request.expected.hex().to_owned();
    let size = request.expected_size;
    let (adopted, refused) = run_blocking(move || {
        let mut refused = Vec::new();
        for root in &roots {
            for candidate in candidates(root, &repo, &commit, &path, &etag) {
                match adopt_as_blob(&candidate, &blob_path, kind, &digest, size) {
                    Ok(true) => return Ok((Some(candidate), refused)),
                    Ok(false) => refused.push(format!(
                        "{} does not have the expected {}",
                        candidate.display(),
                        kind.label()
                    )),
                    Err(error) => refused.push(format!("{}: {error}", candidate.display())),
                }
            }
        }
        Ok((None, refused))
    })
    .await
    .unwrap_or((None, Vec::new()));
    // A folder holding other models has files of the same names: not worth a warning each.
    for reason in refused {
        tracing::info!(model = ?events.model_id(), "not adopted: {reason}");
    }
    adopted.map(|from| Fetched {
        outcome: Outcome::Reused,
        transferred: 0,
        source: format!("adopted from {}", from.display()),
        in_place: false,
    })
}

/// Removes a link that leaves the cache from a snapshot path (the entry itself, or a folder
/// of it), if it is still a link: what it points to is never touched, and the correct entry is
/// placed after it. Another file of the same folder may have replaced it already.
async fn remove_planted_link(link: &std::path::Path, events: &ModelEvents) -> EmbeddingResult<()> {
    let removed = link.to_path_buf();
    let gone = run_blocking_checked("cannot remove", link, move || {
        let still_a_link = removed
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        if still_a_link {
            remove_entry(&removed)
        } else {
            Ok(false)
        }
    })
    .await?;
    if gone {
        events.warning(format!(
            "{} was a link that leaves the cache; removed (what it pointed to is untouched) and replaced by a verified entry",
            link.display()
        ));
    }
    Ok(())
}

/// A ready model's `refs/<commit>`, where the cache is writable (a cache filled before refs
/// were written gets it at the next `ensure`; a read-only one is left as it is).
pub(crate) async fn keep_commit_ref(ctx: &Context, artifact: &ModelArtifact, commit: Option<&str>) {
    let (Some(commit), false) = (commit, ctx.config.offline) else {
        return;
    };
    let layout = ctx.layout.clone();
    let repo = artifact.repo_id.clone();
    let commit = commit.to_owned();
    let _ = run_blocking(move || {
        layout
            .write_commit_ref(&repo, &commit)
            .map_err(std::io::Error::other)
    })
    .await;
}

/// Present and verified (valid stamps), or present and found right by hashing what is not
/// stamped yet: `Ok(Ok(weights))`. Otherwise `Ok(Err(why))`: the first file that is missing,
/// wrong, a link out of the cache, or the set nothing local describes.
async fn reuse_present(
    ctx: &Context,
    artifact: &ModelArtifact,
    events: &ModelEvents,
) -> EmbeddingResult<Result<PathBuf, EmbeddingError>> {
    let state = inspect_async(ctx, artifact).await;
    let weights = state.weights().path().map(std::path::Path::to_path_buf);
    if let (true, Some(path)) = (state.is_ready(true), &weights) {
        keep_commit_ref(ctx, artifact, state.commit.as_deref()).await;
        report_ready(events, path, Outcome::AlreadyPresent, 0, None).await;
        return Ok(Ok(path.clone()));
    }
    if !state.all_present() {
        return Ok(Err(not_ready_error(artifact, &state, false)));
    }
    match verify_model(ctx, artifact, &state, false).await? {
        None => {
            let path = weights.unwrap_or_default();
            keep_commit_ref(ctx, artifact, state.commit.as_deref()).await;
            report_ready(events, &path, Outcome::Verified, 0, None).await;
            Ok(Ok(path))
        }
        Some(FileVerdict::Corrupt(error) | FileVerdict::Unavailable(error)) => Ok(Err(error)),
        Some(FileVerdict::Verified) => Ok(Err(not_ready_error(artifact, &state, false))),
    }
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
    ((ctx.mirror.is_some() || ctx.oci_mirror.is_some()) && artifact.revision_is_commit())
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
    target: &Target<'_>,
    request: &FetchRequest,
    events: &ModelEvents,
) -> EmbeddingResult<Option<Fetched>> {
    let blob_path = ctx.layout.blob_path(target.repo, &request.etag);
    if tokio::fs::symlink_metadata(&blob_path).await.is_ok() {
        let checked = blob_path.clone();
        let inside = run_blocking(move || Ok(blob_stays_inside(&checked))).await;
        if inside.unwrap_or(false) && hashes_to(&blob_path, request).await {
            return Ok(Some(Fetched::from_cache(Outcome::Reused, false)));
        }
        events.warning(format!(
            "the cached blob {} does not match its expected {} (or is a link out of the cache); fetching it again",
            blob_path.display(),
            request.expected.kind().label()
        ));
        let removed = blob_path.clone();
        run_blocking_checked("cannot remove", &blob_path, move || remove_entry(&removed)).await?;
    }
    let copy = ctx
        .layout
        .snapshot_path(target.repo, target.commit, target.path);
    let checked = copy.clone();
    // A copy is a regular file reached without any link: never bytes behind a planted one.
    let is_copy = run_blocking(move || {
        Ok(matches!(
            entry_at(&checked),
            Entry::Present {
                blob_name: None,
                ..
            }
        ))
    })
    .await
    .unwrap_or(false);
    if is_copy && hashes_to(&copy, request).await {
        return Ok(Some(Fetched::from_cache(Outcome::Verified, true)));
    }
    Ok(None)
}

/// Whether the file at `path` has the bytes `request` expects (hashed off the async threads).
/// The digest decides: it covers the content, so its length too. A size claim that disagrees
/// with bytes of the expected digest is the lie (a server's `X-Linked-Size`, found by the
/// hostile replay, seed 1818), and a verified blob is never deleted for it.
async fn hashes_to(path: &std::path::Path, request: &FetchRequest) -> bool {
    let checked = path.to_path_buf();
    let kind = request.expected.kind();
    match run_blocking(move || hash_file_as(&checked, kind)).await {
        Ok((digest, length)) => {
            if digest == request.expected.hex() {
                if let Some(claimed) = request.expected_size.filter(|s| *s != length) {
                    tracing::warn!(
                        path = %path.display(), claimed, length,
                        "the expected size disagrees with bytes that have the expected digest; the digest wins"
                    );
                }
                true
            } else {
                false
            }
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
    let object = object_name(request.expected.kind(), request.expected.hex());
    let mut mirror_lacks_it = false;
    if let Some(registry) = &ctx.oci_mirror {
        // The registry's copy is verified exactly as the Hub's; anything wrong falls back.
        let opened = registry
            .source(
                request.expected.kind(),
                request.expected.hex(),
                &request.location.repo_id,
                &remote.commit,
                &request.location.filename,
            )
            .await;
        match opened {
            Ok(source) => match fetch_blob(&source, request, &settings, events).await {
                Ok(blob) => {
                    return Ok(Fetched::from_source(
                        blob.resumed_from,
                        blob.transferred,
                        source.name(),
                    ))
                }
                Err(error) => events.falling_back(total, source.name(), error.to_string()),
            },
            Err(error) => events.falling_back(total, registry.name(), error.to_string()),
        }
    }
    if let Some(mirror) = &ctx.mirror {
        let source = mirror.source(&object, ctx.config.download_timeout);
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
    // Only blobs named by SHA-256: the small regular files of a set are not worth a lease.
    let fleet = ctx.mirror.as_ref().filter(|m| {
        mirror_lacks_it && m.coordinates_fleet() && request.expected.kind() == DigestKind::Sha256
    });
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
        match mirror.upload(&blob.blob_path, &object, size).await {
            Ok(_) => {
                tracing::info!(model = %artifact.model_id, object = %mirror.object_url(&object), "uploaded to the mirror")
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

/// Puts the snapshot entry (link or copy) and the stamp in place, off the async threads
/// (they fsync small files). The ref is written once the whole set is in place.
async fn place(
    ctx: &Context,
    target: &Target<'_>,
    request: &FetchRequest,
    fetched: &Fetched,
) -> EmbeddingResult<PathBuf> {
    let layout = ctx.layout.clone();
    let repo = target.repo.to_owned();
    let commit = target.commit.to_owned();
    let filename = target.path.to_owned();
    let etag = request.etag.clone();
    let use_symlinks = ctx.config.use_symlinks;
    let digest = request.expected.hex().to_owned();
    let source = fetched.source.clone();
    let in_place = fetched.in_place;
    let git_blob = request.expected.kind() == DigestKind::GitBlobSha1;
    let blob_path = ctx.layout.blob_path(target.repo, &request.etag);
    run_blocking_checked("cannot place", &blob_path, move || {
        let snapshot = if in_place {
            layout.snapshot_path(&repo, &commit, &filename)
        } else {
            layout.link_snapshot(&repo, &commit, &filename, &etag, use_symlinks)?
        };
        let mut stamp = VerificationStamp::now(&snapshot, &digest)
            .map_err(|e| EmbeddingError::io("cannot read", &snapshot, e))?;
        stamp.source = Some(source);
        if git_blob {
            // A regular file (small: configs, tokenizers) was checked by its git blob id; the
            // SHA-256 a signature lists is computed here from the page cache, one extra read
            // of a small file, so the transfer code stays one hash per download.
            let (sha256, git, _) = hash_file_dual(&snapshot)
                .map_err(|e| EmbeddingError::io("cannot read", &snapshot, e))?;
            if git == digest {
                stamp.content_sha256 = Some(sha256);
            }
        }
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

/// The digest and size the bytes must have: the manifest's pins, checked against what the Hub
/// advertises (a disagreement is an error before any byte is written). A weight file that is
/// a regular file (a safetensors index) is checked by its git blob id, the Hub's `ETag`.
pub(crate) fn expectations(
    artifact: &ModelArtifact,
    remote: &RemoteFile,
    location: &FileLocation,
) -> EmbeddingResult<(ExpectedDigest, Option<u64>)> {
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
    let size = artifact.size_bytes.or(remote.size);
    if let Some(sha) = artifact.sha256.clone().or_else(|| remote.sha256.clone()) {
        return Ok((ExpectedDigest::Sha256(sha), size));
    }
    if let Some(file) = artifact.pinned_file(&artifact.filename) {
        let pinned = ExpectedDigest::new(file.kind, file.digest.clone());
        if remote.from_hub && remote.etag != file.digest {
            return Err(EmbeddingError::PinMismatch {
                location: location.clone(),
                field: file.kind.label(),
                pinned: file.digest.clone(),
                advertised: remote.etag.clone(),
            });
        }
        return Ok((pinned, Some(file.size_bytes)));
    }
    if remote.commit_assumed {
        return Err(EmbeddingError::Protocol {
            location: location.clone(),
            reason: "the server sent neither X-Repo-Commit nor X-Linked-Etag and the manifest pins no sha256, so the file cannot be verified; pin the file's sha256 (`cg-models lock`), or use a mirror that sends these headers (see docs/network.md)".to_owned(),
        });
    }
    let git_blob = DigestKind::of_hex(&remote.etag) == Some(DigestKind::GitBlobSha1);
    match size {
        Some(size) if git_blob => {
            Ok((ExpectedDigest::GitBlobSha1(remote.etag.clone()), Some(size)))
        }
        _ => Err(EmbeddingError::NoExpectedHash {
            location: location.clone(),
        }),
    }
}

/// `HEAD` with the same retry policy as downloads.
pub(crate) async fn head_with_retries(
    ctx: &Context,
    location: &FileLocation,
    events: &ModelEvents,
) -> EmbeddingResult<RemoteFile> {
    let remote = ctx
        .with_retries(location, events, || ctx.client.head_file(location))
        .await?;
    if remote.commit_assumed {
        events.warning(format!(
            "{} sent no X-Repo-Commit header for {location}; trusting the pinned commit and checking the file against its known SHA-256",
            ctx.client.endpoint()
        ));
    }
    Ok(remote)
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
            branch: None,
            selection: Default::default(),
            signed_by: None,
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
            (ExpectedDigest::Sha256(sha.clone()), Some(10))
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
            (ExpectedDigest::Sha256(other), Some(5))
        );
        assert!(matches!(
            expectations(&unpinned, &remote(&commit, None, None), &location),
            Err(EmbeddingError::NoExpectedHash { .. })
        ));
    }
}
