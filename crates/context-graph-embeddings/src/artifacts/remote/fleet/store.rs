//! The fleet's object-store calls: the probe for conditional create, claims, heartbeats,
//! parts and the final object, each one call on the store with its errors named.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::decide::*;
use super::keys::*;
use super::FleetPolicy;
use crate::artifacts::remote::protocol::error_chain;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Whether the store honours `If-None-Match: *` on a put: creates a probe object twice with
/// `PutMode::Create`; honoured when the second is refused. Any failure counts as not
/// honoured (the protocol is then the read-back one). The probe is removed.
pub(crate) async fn probe_conditional_create(
    store: &Arc<dyn ObjectStore>,
    dir: &ObjectPath,
) -> bool {
    let key = dir
        .clone()
        .join(format!("probe-{:016x}", rand::random::<u64>()));
    let create = || {
        store.put_opts(
            &key,
            PutPayload::from_static(b"probe"),
            PutOptions::from(PutMode::Create),
        )
    };
    let honoured = match create().await {
        Ok(_) => matches!(
            create().await,
            Err(object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. })
        ),
        Err(_) => false,
    };
    let _ = store.delete(&key).await;
    honoured
}

/// The fleet's objects of one blob.
#[derive(Clone)]
pub(crate) struct FleetStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `<prefix>/.inflight/<sha256>`.
    pub(crate) dir: ObjectPath,
    /// `<prefix>/<sha256>`.
    pub(crate) final_key: ObjectPath,
    /// `s3://bucket/<prefix>/.inflight/<sha256>`, for messages.
    pub(crate) name: String,
    /// The blob's size.
    pub size: u64,
    /// The policy.
    pub policy: FleetPolicy,
    /// Whether `PutMode::Create` is honoured.
    pub honoured: bool,
}

impl FleetStore {
    /// The objects under `dir` of a blob of `size` bytes whose final object is `final_key`.
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        dir: ObjectPath,
        final_key: ObjectPath,
        name: String,
        size: u64,
        policy: FleetPolicy,
        honoured: bool,
    ) -> Self {
        FleetStore {
            store,
            dir,
            final_key,
            name,
            size,
            policy,
            honoured,
        }
    }

    /// `s3://…/.inflight/<sha256>`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn failed(&self, what: &str, error: &object_store::Error) -> EmbeddingError {
        EmbeddingError::Mirror {
            url: self.name.clone(),
            message: format!("{what}: {}", error_chain(error)),
        }
    }

    pub(crate) fn claims_dir(&self) -> ObjectPath {
        self.dir.clone().join("claims")
    }

    pub(crate) fn claim_key(&self, epoch: u32, lease: Option<&str>) -> ObjectPath {
        self.claims_dir().join(claim_name(epoch, lease))
    }

    pub(crate) fn beat_key(&self, epoch: u32, lease: &str) -> ObjectPath {
        self.dir.clone().join("beats").join(beat_name(epoch, lease))
    }

    pub(crate) fn part_key(&self, k: u64) -> ObjectPath {
        self.dir.clone().join("parts").join(part_name(k))
    }

    /// Every claim object (one listing; strongly consistent on the stores supported).
    pub(crate) async fn claims(&self) -> EmbeddingResult<Vec<ClaimEntry>> {
        let prefix = self.claims_dir();
        let mut listed = self.store.list(Some(&prefix));
        let mut claims = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| self.failed("cannot list claims", &e))?;
            if let Some((epoch, lease)) = meta.location.filename().and_then(parse_claim_name) {
                claims.push(ClaimEntry {
                    epoch,
                    lease,
                    written_ms: meta.last_modified.timestamp_millis(),
                });
            }
        }
        Ok(claims)
    }

    /// The holder of `epoch` given a listing: the single key's content, or the earliest.
    pub(crate) async fn holder(
        &self,
        claims: &[ClaimEntry],
        epoch: u32,
    ) -> EmbeddingResult<Option<String>> {
        if self.honoured {
            if !claims.iter().any(|c| c.epoch == epoch && c.lease.is_none()) {
                return Ok(None);
            }
            return Ok(self
                .read_text(&self.claim_key(epoch, None))
                .await?
                .as_deref()
                .and_then(parse_lease));
        }
        Ok(earliest_claim(claims, epoch).map(str::to_owned))
    }

    pub(crate) async fn read_text(&self, key: &ObjectPath) -> EmbeddingResult<Option<String>> {
        match self.store.get(key).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| self.failed("cannot read a lease", &e))?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("cannot read a lease", &e)),
        }
    }

    /// The latest epoch claimed, with its holder (`None` inside: none readable).
    pub(crate) async fn latest(&self) -> EmbeddingResult<Option<(u32, Option<String>)>> {
        let claims = self.claims().await?;
        match latest_epoch(&claims) {
            None => Ok(None),
            Some(epoch) => Ok(Some((epoch, self.holder(&claims, epoch).await?))),
        }
    }

    /// Claims `epoch` for `lease`; whether this node leads.
    pub(crate) async fn claim(&self, epoch: u32, lease: &str) -> EmbeddingResult<bool> {
        let (key, mode) = if self.honoured {
            (self.claim_key(epoch, None), PutMode::Create)
        } else {
            (self.claim_key(epoch, Some(lease)), PutMode::Overwrite)
        };
        let created = match self
            .store
            .put_opts(
                &key,
                PutPayload::from(lease_text(lease)),
                PutOptions::from(mode),
            )
            .await
        {
            Ok(_) => true,
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => false,
            Err(e) => return Err(self.failed("cannot write a claim", &e)),
        };
        if !self.honoured {
            // Claims written at the same moment all land before the decision.
            tokio::time::sleep(self.policy.claim_settle).await;
        }
        let claims = self.claims().await?;
        let later = latest_epoch(&claims).is_some_and(|e| e > epoch);
        let winner = if self.honoured {
            None
        } else {
            earliest_claim(&claims, epoch).map(str::to_owned)
        };
        let won = won_claim(lease, created, self.honoured, winner.as_deref()) && !later;
        // A losing claim stays listed: it is not the earliest, so it never wins, and it goes
        // with the rest when the leader cleans up.
        if won {
            self.put_beat(epoch, lease, 0).await?;
        }
        Ok(won)
    }

    pub(crate) async fn put_beat(&self, epoch: u32, lease: &str, beat: u64) -> EmbeddingResult<()> {
        self.store
            .put(
                &self.beat_key(epoch, lease),
                PutPayload::from(beat_text(beat)),
            )
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot renew a lease", &e))
    }

    /// One renewal of `lease` at `epoch`: checks, then rewrites the heartbeat.
    pub(crate) async fn renew(
        &self,
        epoch: u32,
        lease: &str,
        beat: u64,
    ) -> EmbeddingResult<Renewal> {
        let claims = self.claims().await?;
        let later = latest_epoch(&claims).is_some_and(|e| e > epoch);
        let winner = self.holder(&claims, epoch).await?;
        let decision = renewal(lease, winner.as_deref(), later);
        if decision == Renewal::Keep {
            self.put_beat(epoch, lease, beat).await?;
        }
        Ok(decision)
    }

    /// What a follower of `epoch` sees of it.
    pub(crate) async fn observe(&self, epoch: u32) -> EmbeddingResult<Observed> {
        let claims = self.claims().await?;
        if let Some(later) = latest_epoch(&claims).filter(|e| *e > epoch) {
            return Ok(Observed::Later(later));
        }
        let Some(lease) = self.holder(&claims, epoch).await? else {
            return Ok(Observed::Gone);
        };
        let beat = self
            .read_text(&self.beat_key(epoch, &lease))
            .await?
            .as_deref()
            .and_then(parse_beat)
            .unwrap_or(0);
        Ok(Observed::Claim(Claim { lease, beat }))
    }

    /// Removes `lease`'s claim of `epoch` (a leader giving up), so followers take over at once.
    pub(crate) async fn release(&self, epoch: u32, lease: &str) {
        let key = if self.honoured {
            self.claim_key(epoch, None)
        } else {
            self.claim_key(epoch, Some(lease))
        };
        let _ = self.store.delete(&key).await;
        let _ = self.store.delete(&self.beat_key(epoch, lease)).await;
    }

    /// Uploads part `k`.
    pub(crate) async fn put_part(&self, k: u64, bytes: Bytes) -> EmbeddingResult<()> {
        self.store
            .put(&self.part_key(k), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.failed("cannot upload a part", &e))
    }

    /// Part `k` when it is there with its full length.
    pub(crate) async fn get_part(&self, k: u64) -> EmbeddingResult<Option<Bytes>> {
        let (start, end) = part_span(k, self.policy.part_bytes, self.size);
        match self.store.get(&self.part_key(k)).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| self.failed("cannot read a part", &e))?;
                Ok((bytes.len() as u64 == end - start).then_some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("cannot read a part", &e)),
        }
    }

    /// Whether the final object exists with the blob's size.
    pub(crate) async fn final_ready(&self) -> EmbeddingResult<bool> {
        match self.store.head(&self.final_key).await {
            Ok(meta) => Ok(meta.size == self.size),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed("cannot check the final object", &e)),
        }
    }

    /// Deletes every in-flight object of this blob (after the final object is up).
    pub(crate) async fn clean_up(&self) {
        let listed: Vec<ObjectPath> = self
            .store
            .list(Some(&self.dir))
            .filter_map(|m| async move { m.ok().map(|m| m.location) })
            .collect()
            .await;
        for key in listed {
            let _ = self.store.delete(&key).await;
        }
    }
}
