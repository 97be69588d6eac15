//! A follower: the in-flight parts of one blob read in order as the leader uploads them, then
//! the final object, as a `ByteSource` (every byte still checked by the downloader).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::sync::mpsc;

use super::decide::*;
use super::keys::*;
use super::store::*;
use crate::artifacts::remote::source::{Body, BoxFuture, ByteSource, Opened};
use crate::error::{EmbeddingError, EmbeddingResult};

/// Why a follower's stream ended before the blob did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowEnd {
    /// The leader's lease went stale (or it gave up): claim this epoch.
    TakeOver(u32),
    /// The leader is alive but makes no progress, or the store failed: go to the Hub.
    FetchAlone,
}

/// The in-flight parts of one blob, read in order as they appear, then the final object.
pub(crate) struct InflightSource {
    fleet: FleetStore,
    epoch: u32,
    end: Arc<Mutex<Option<FollowEnd>>>,
    reading: Arc<AtomicBool>,
}

impl InflightSource {
    /// Follows `epoch` of `fleet`.
    pub(crate) fn new(fleet: FleetStore, epoch: u32) -> Self {
        InflightSource {
            fleet,
            epoch,
            end: Arc::new(Mutex::new(None)),
            reading: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Why the stream stopped early, if it did.
    pub(crate) fn ended(&self) -> Option<FollowEnd> {
        self.end.lock().ok().and_then(|e| *e)
    }

    /// Whether a part (or the final object) has been read.
    pub(crate) fn reading_flag(&self) -> Arc<AtomicBool> {
        self.reading.clone()
    }
}

impl ByteSource for InflightSource {
    fn open(&self, start: u64, _end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            let size = self.fleet.size;
            if start >= size {
                return Ok(Opened::Unsatisfiable);
            }
            let (tx, rx) = mpsc::channel(4);
            let task = FollowTask {
                fleet: self.fleet.clone(),
                watch: Watch::new(self.epoch, Instant::now()),
                pos: start,
                end: self.end.clone(),
                reading: self.reading.clone(),
            };
            tokio::spawn(task.run(tx));
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok(Opened::Range {
                body: Body::Stream(Box::pin(stream)),
                start,
                end: size - 1,
                total: Some(size),
            })
        })
    }

    fn name(&self) -> String {
        format!("{}/parts", self.fleet.name)
    }

    fn idle_timeout(&self) -> Duration {
        // The follower task decides itself how long to wait (lease TTL, progress timeout).
        let p = &self.fleet.policy;
        p.lease_ttl + p.progress_timeout + p.renew_interval * 4
    }

    fn is_range_refusal(&self, _error: &EmbeddingError) -> bool {
        false
    }
}

struct FollowTask {
    fleet: FleetStore,
    watch: Watch,
    pos: u64,
    end: Arc<Mutex<Option<FollowEnd>>>,
    reading: Arc<AtomicBool>,
}

impl FollowTask {
    async fn run(mut self, tx: mpsc::Sender<EmbeddingResult<Bytes>>) {
        let outcome = self.follow(&tx).await;
        if let Err((end, error)) = outcome {
            if let Ok(mut slot) = self.end.lock() {
                *slot = Some(end);
            }
            let _ = tx.send(Err(error)).await;
        }
    }

    async fn follow(
        &mut self,
        tx: &mpsc::Sender<EmbeddingResult<Bytes>>,
    ) -> Result<(), (FollowEnd, EmbeddingError)> {
        let policy = self.fleet.policy.clone();
        let size = self.fleet.size;
        let store_failed = |e: EmbeddingError| (FollowEnd::FetchAlone, e);
        let mut last_look = None::<Instant>;
        while self.pos < size {
            if tx.is_closed() {
                // The downloader dropped this body (a retry opened another).
                return Ok(());
            }
            let (k, offset) = part_of(self.pos, policy.part_bytes);
            if let Some(bytes) = self.fleet.get_part(k).await.map_err(store_failed)? {
                self.reading.store(true, Ordering::Relaxed);
                let chunk = bytes.slice(offset as usize..);
                self.pos += chunk.len() as u64;
                self.watch.part_arrived = Instant::now();
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            // Between parts: the final object, and the leader's health, at most once per
            // renew interval (hundreds of followers poll the same store).
            let due = last_look.is_none_or(|at| at.elapsed() >= policy.renew_interval / 2);
            if due {
                last_look = Some(Instant::now());
                if self.fleet.final_ready().await.map_err(store_failed)? {
                    return self.stream_final(tx).await;
                }
                let observed = self
                    .fleet
                    .observe(self.watch.epoch)
                    .await
                    .map_err(store_failed)?;
                match follow_step(&mut self.watch, &observed, Instant::now(), &policy) {
                    FollowStep::Wait | FollowStep::Follow(_) => {}
                    FollowStep::TakeOver(epoch) => {
                        return Err((
                            FollowEnd::TakeOver(epoch),
                            EmbeddingError::Mirror {
                                url: self.fleet.name.clone(),
                                message: format!(
                                    "the node fetching this file stopped renewing its lease (epoch {}); taking over",
                                    self.watch.epoch
                                ),
                            },
                        ))
                    }
                    FollowStep::FetchAlone => {
                        return Err((
                            FollowEnd::FetchAlone,
                            EmbeddingError::Mirror {
                                url: self.fleet.name.clone(),
                                message: format!(
                                    "the node fetching this file uploaded nothing for {:?}; fetching it from the Hub",
                                    policy.progress_timeout
                                ),
                            },
                        ))
                    }
                }
            }
            tokio::time::sleep(policy.poll_interval).await;
        }
        Ok(())
    }

    async fn stream_final(
        &mut self,
        tx: &mpsc::Sender<EmbeddingResult<Bytes>>,
    ) -> Result<(), (FollowEnd, EmbeddingError)> {
        let failed = |e: object_store::Error| {
            (
                FollowEnd::FetchAlone,
                self.fleet.failed("cannot read the final object", &e),
            )
        };
        let options = GetOptions {
            range: Some(GetRange::Offset(self.pos)),
            ..GetOptions::default()
        };
        let result = self
            .fleet
            .store
            .get_opts(&self.fleet.final_key, options)
            .await
            .map_err(failed)?;
        self.reading.store(true, Ordering::Relaxed);
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}
