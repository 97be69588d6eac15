//! The one signature check of a model (issue 26): once every file of the set is verified, the
//! signature its policy names is checked against the path and SHA-256 of every file of the
//! set. The SHA-256s come from the stamps (an LFS file's digest is its SHA-256; a regular
//! file's stamp keeps the SHA-256 computed beside its git blob id), so no weight file is read
//! again. The verdict is recorded (`store/stamp.rs` `SignatureStamp`, under
//! `.cg-models-v1/signatures/`) and holds only while every file's stamp does, so readiness
//! stays a `stat` per file; on a read-only cache it is kept in memory like file verdicts. A
//! refusal removes any verdict, so the model is never ready and never reaches the registry.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::context::{CacheView, Context};
use super::local::{inspect_at, policy_key};
use super::plan::{signature_record, FileRole};
use crate::artifacts::blocking::run_blocking_checked;
use crate::artifacts::hash::{hash_file_as, DigestKind};
use crate::artifacts::manifest::ModelArtifact;
use crate::artifacts::signature::{SignaturePolicy, MAX_SIGNATURE_BYTES};
use crate::artifacts::store::fs::remove_entry;
use crate::artifacts::store::stamp::{SignatureStamp, UnrecordedStamps};
use crate::error::{EmbeddingError, EmbeddingResult};

/// What one check found.
struct Checked {
    /// The signer in words; `None`: unsigned and accepted (`if-present`).
    signer: Option<String>,
    /// The record that could not be written (a read-only cache), with its verdict and why.
    unwritten: Option<(PathBuf, SignatureStamp, String)>,
}

/// Checks the model's signature under its policy, once every file of its set is verified.
/// `Ok(None)`: no policy, or unsigned and accepted under `if-present`; `Ok(Some(signer))`:
/// verified and recorded. A refusal is the verifier's error, naming the file or the signer.
pub(crate) async fn check_signature(
    ctx: &Context,
    artifact: &ModelArtifact,
    commit: &str,
) -> EmbeddingResult<Option<String>> {
    let Some(policy) = ctx.signatures.for_model(artifact.model_id).cloned() else {
        return Ok(None);
    };
    let view = ctx.view();
    let owned = artifact.clone();
    let commit = commit.to_owned();
    let shown = ctx.layout.repo_dir(&artifact.repo_id);
    let checked = run_blocking_checked("cannot check the signature in", &shown, move || {
        check_blocking(&view, &owned, &commit, &policy)
    })
    .await?;
    if let Some((record, verdict, reason)) = checked.unwritten {
        ctx.memory.remember_signature(&record, verdict);
        ctx.stamps_unrecorded(
            artifact.model_id,
            UnrecordedStamps {
                path: record,
                reason,
            },
        );
    }
    Ok(checked.signer)
}

fn check_blocking(
    view: &CacheView,
    artifact: &ModelArtifact,
    commit: &str,
    policy: &SignaturePolicy,
) -> EmbeddingResult<Checked> {
    let state = inspect_at(view, artifact, commit);
    if !state.files_verified() {
        // Called once the files are verified; a file changed meanwhile is found next time.
        return Err(EmbeddingError::MissingModels(vec![artifact.model_id]));
    }
    let base_dir = view.signatures.base_dir.as_deref();
    let key = policy_key(policy, base_dir);
    let record = signature_record(&view.layout, artifact, commit, &key);
    let verifier = policy.verifier(base_dir)?;
    let mut bundle = None;
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(state.files.len());
    let mut digests = std::collections::BTreeMap::new();
    for file in &state.files {
        let (Some(path), Some(stamp)) = (file.path(), &file.stamp) else {
            return Err(EmbeddingError::MissingModels(vec![artifact.model_id]));
        };
        digests.insert(file.file.path.clone(), stamp.sha256.clone());
        if file.file.role == FileRole::Signature {
            bundle = Some(read_signature(path)?);
            continue;
        }
        let sha256 = match stamp.content_sha256() {
            Some(sha256) => sha256.to_owned(),
            // A stamp written before the SHA-256 was kept: a regular file, so small.
            None => {
                hash_file_as(path, DigestKind::Sha256)
                    .map_err(|e| EmbeddingError::io("cannot read", path, e))?
                    .0
            }
        };
        pairs.push((file.file.path.clone(), sha256));
    }
    let files: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_str()))
        .collect();
    let verified = match verifier.verify_if_present(bundle.as_deref(), &files) {
        Ok(verified) => verified,
        Err(error) => {
            view.memory.forget_signature(&record);
            let _ = remove_entry(&record);
            return Err(error);
        }
    };
    let Some(verified) = verified else {
        return Ok(Checked {
            signer: None,
            unwritten: None,
        });
    };
    let verdict = SignatureStamp {
        policy: key,
        signer: verified.signer.clone(),
        signer_key_sha256: verified.signer_key_sha256,
        files: digests,
        verified_at: SignatureStamp::now_secs(),
    };
    let same = SignatureStamp::read(&record).is_some_and(|r| {
        r.policy == verdict.policy && r.signer == verdict.signer && r.files == verdict.files
    });
    let unwritten = if same {
        // Already recorded: a read-only cache with our records needs no write.
        None
    } else {
        verdict.write(&record).err().map(|error| {
            let reason = match &error {
                EmbeddingError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            (record.clone(), verdict, reason)
        })
    };
    Ok(Checked {
        signer: Some(verified.signer),
        unwritten,
    })
}

/// The signature file's bytes, at most one byte more than a signature may have (the verifier
/// refuses a larger one, naming its size).
fn read_signature(path: &Path) -> EmbeddingResult<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| EmbeddingError::io("cannot read", path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_SIGNATURE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| EmbeddingError::io("cannot read", path, e))?;
    Ok(bytes)
}
