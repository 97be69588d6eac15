//! One blob for a fleet: nodes sharing a writable mirror that all miss the same object agree
//! through the store (`remote/fleet/`) on one node fetching it from the Hub. The leader
//! downloads as usual, with its bytes teed into part objects while they arrive, renews its
//! lease, then uploads the final object and removes the in-flight ones. A follower downloads
//! from the parts with the same downloader (resume, hashing, verification, atomic placement);
//! when the leader's lease goes stale it claims the next epoch and continues from the Hub
//! where its own bytes end, which is where the uploaded parts end. Whatever goes wrong with
//! the store, the node fetches from the Hub on its own, as without a fleet: a fleet costs at
//! worst a duplicate Hub fetch, never a wrong file, and no node waits longer than the lease
//! TTL plus the progress timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::adapt::ParallelSettings;
use super::blob::fetch_blob;
use super::request::{FetchRequest, FetchSettings, FetchedBlob};
use crate::artifacts::progress::ProgressKind;
use crate::artifacts::remote::fleet::{
    start, FleetStore, FollowEnd, InflightSource, PartSink, Renewal, Start, TeeSource,
};
use crate::artifacts::remote::mirror::Mirror;
use crate::artifacts::remote::source::ByteSource;
use crate::artifacts::status::ModelEvents;
use crate::error::EmbeddingResult;

/// Rounds of claim/follow before a node stops coordinating and fetches alone (each round
/// ends with a stale lease taken over, or a lost race to lead).
const MAX_ROUNDS: u32 = 6;

/// A blob fetched with (or without) the fleet.
pub(crate) struct FleetFetched {
    /// The verified blob.
    pub blob: FetchedBlob,
    /// Where its bytes came from (`hub`, or the in-flight upload).
    pub source: String,
    /// Whether the mirror has (or gets from another node) the final object, so the caller
    /// uploads nothing.
    pub uploaded: bool,
}

/// Fetches one blob that the mirror lacks, coordinating with the other nodes of the fleet;
/// `hub` is the Hub's source of the blob.
pub(crate) async fn fetch_for_fleet(
    mirror: &Mirror,
    hub: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
) -> EmbeddingResult<FleetFetched> {
    let total = request.expected_size.unwrap_or(0);
    let fleet = match request.expected_size {
        Some(size) => mirror.fleet_store(request.expected.hex(), size).await,
        None => None,
    };
    let Some(fleet) = fleet else {
        return alone(hub, request, settings, events).await;
    };
    let lease = format!("{:016x}", rand::random::<u64>());
    let mut take_over: Option<u32> = None;
    for _ in 0..MAX_ROUNDS {
        let step = match take_over {
            Some(epoch) => Start::Claim(epoch),
            None => match fleet.latest().await {
                Ok(latest) => start(latest),
                Err(error) => {
                    events.warning(format!(
                        "cannot coordinate with the fleet ({error}); fetching from the Hub alone"
                    ));
                    break;
                }
            },
        };
        let follow = match step {
            Start::Follow(epoch) => epoch,
            Start::Claim(epoch) => {
                // The final object may have landed since this node missed it.
                if fleet.final_ready().await.unwrap_or(false) {
                    epoch
                } else {
                    match fleet.claim(epoch, &lease).await {
                        Ok(false) => epoch,
                        Ok(true) => {
                            if take_over.is_some() {
                                events.fleet(
                                    0,
                                    total,
                                    ProgressKind::TakingOver {
                                        upload: fleet.name().to_owned(),
                                        epoch,
                                    },
                                );
                            }
                            match lead(
                                mirror, &fleet, epoch, &lease, hub, request, settings, events,
                            )
                            .await?
                            {
                                Some(blob) => {
                                    return Ok(FleetFetched {
                                        blob,
                                        source: "hub".to_owned(),
                                        uploaded: true,
                                    })
                                }
                                None => {
                                    take_over = None;
                                    continue;
                                }
                            }
                        }
                        Err(error) => {
                            events.warning(format!(
                                "cannot coordinate with the fleet ({error}); fetching from the Hub alone"
                            ));
                            break;
                        }
                    }
                }
            }
        };
        let source = InflightSource::new(fleet.clone(), follow);
        match follow_peer(&source, &fleet, request, settings, events).await {
            Ok(blob) => {
                return Ok(FleetFetched {
                    blob,
                    source: source.name(),
                    uploaded: true,
                })
            }
            Err(error) => match source.ended() {
                Some(FollowEnd::TakeOver(epoch)) => take_over = Some(epoch),
                _ => {
                    events.falling_back(total, source.name(), error.to_string());
                    break;
                }
            },
        }
    }
    alone(hub, request, settings, events).await
}

/// Without coordination: from the Hub, uploaded by the caller.
async fn alone(
    hub: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
) -> EmbeddingResult<FleetFetched> {
    let blob = fetch_blob(hub, request, settings, events).await?;
    Ok(FleetFetched {
        blob,
        source: "hub".to_owned(),
        uploaded: false,
    })
}

/// Reads the peer's upload with the usual downloader (one stream: parts come in order).
async fn follow_peer(
    source: &InflightSource,
    fleet: &FleetStore,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
) -> EmbeddingResult<FetchedBlob> {
    let total = request.expected_size.unwrap_or(0);
    let upload = fleet.name().to_owned();
    events.fleet(
        0,
        total,
        ProgressKind::WaitingForPeer {
            upload: upload.clone(),
        },
    );
    let serial = FetchSettings {
        parallel: ParallelSettings {
            connections: 1,
            ..settings.parallel.clone()
        },
        ..settings.clone()
    };
    let reading = source.reading_flag();
    let fetch = fetch_blob(source, request, &serial, events);
    tokio::pin!(fetch);
    let mut announced = false;
    loop {
        tokio::select! {
            result = &mut fetch => return result,
            _ = tokio::time::sleep(fleet.policy.poll_interval), if !announced => {
                if reading.load(Ordering::Relaxed) {
                    announced = true;
                    events.fleet(0, total, ProgressKind::ReadingFromPeer { upload: upload.clone() });
                }
            }
        }
    }
}

/// Leads the fetch of epoch `epoch`: `Some(blob)` when done (the final object uploaded and
/// the in-flight objects removed), `None` when another node leads now (this node's bytes are
/// kept as a partial download for following it).
#[allow(clippy::too_many_arguments)]
async fn lead(
    mirror: &Mirror,
    fleet: &FleetStore,
    epoch: u32,
    lease: &str,
    hub: &dyn ByteSource,
    request: &FetchRequest,
    settings: &FetchSettings,
    events: &ModelEvents,
) -> EmbeddingResult<Option<FetchedBlob>> {
    let total = request.expected_size.unwrap_or(0);
    events.fleet(
        0,
        total,
        ProgressKind::FetchingForFleet {
            upload: fleet.name().to_owned(),
        },
    );
    let lost = Arc::new(AtomicBool::new(false));
    let (sink, uploader) = PartSink::start(fleet.clone());
    let heartbeat = tokio::spawn(renew_lease(
        fleet.clone(),
        epoch,
        lease.to_owned(),
        lost.clone(),
    ));
    let result = {
        let tee = TeeSource::new(hub, sink, lost.clone());
        fetch_blob(&tee, request, settings, events).await
    };
    match result {
        Ok(blob) => {
            // The queued parts go up first (followers may be reading them), then the object.
            let _ = uploader.await;
            match mirror
                .upload(&blob.blob_path, request.expected.hex(), fleet.size)
                .await
            {
                Ok(_) => {
                    tracing::info!(object = %mirror.object_url(request.expected.hex()), "uploaded to the mirror for the fleet")
                }
                Err(error) => events.warning(format!(
                    "upload to the mirror failed ({error}); the download itself is fine"
                )),
            }
            heartbeat.abort();
            let _ = heartbeat.await;
            fleet.clean_up().await;
            Ok(Some(blob))
        }
        Err(error) => {
            heartbeat.abort();
            uploader.abort();
            if lost.load(Ordering::Relaxed) {
                return Ok(None);
            }
            // Hand over at once rather than after the TTL: the next node may fare better.
            fleet.release(epoch, lease).await;
            Err(error)
        }
    }
}

/// Renews the lease every renew interval; sets `lost` when another node leads. A store that
/// fails leaves the lease to expire (followers then take over or fetch alone) while the
/// download goes on from the Hub.
async fn renew_lease(fleet: FleetStore, epoch: u32, lease: String, lost: Arc<AtomicBool>) {
    let mut beat = 1u64;
    let mut warned = false;
    loop {
        tokio::time::sleep(fleet.policy.renew_interval).await;
        match fleet.renew(epoch, &lease, beat).await {
            Ok(Renewal::Keep) => beat += 1,
            Ok(Renewal::Yield) => {
                tracing::info!(upload = %fleet.name(), "another node leads this fetch now");
                lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(error) if !warned => {
                warned = true;
                tracing::warn!(%error, "cannot renew the fleet lease; fetching on from the Hub");
            }
            Err(_) => {}
        }
    }
}
