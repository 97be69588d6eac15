//! A leader: a byte source that passes the Hub's bytes through unchanged while uploading them
//! as numbered parts (in any order, for ranged downloads) for the followers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::decide::*;
use super::keys::*;
use super::store::*;
use crate::artifacts::remote::source::{Body, BoxFuture, ByteSource, Opened};
use crate::error::{EmbeddingError, EmbeddingResult};

/// Part windows being filled by the leader's download, in any order (ranged downloads).
struct Windows {
    part: u64,
    size: u64,
    filling: std::collections::BTreeMap<u64, (Vec<u8>, Coverage)>,
    done: std::collections::BTreeSet<u64>,
}

impl Windows {
    /// Takes in `chunk` at `pos`; returns the parts it completed.
    fn offer(&mut self, pos: u64, chunk: &[u8]) -> Vec<(u64, Bytes)> {
        let mut complete = Vec::new();
        let end = pos + chunk.len() as u64;
        let mut at = pos;
        while at < end {
            let (k, _) = part_of(at, self.part);
            let (start, stop) = part_span(k, self.part, self.size);
            let upto = stop.min(end);
            if stop <= start {
                break;
            }
            if !self.done.contains(&k) {
                let (buffer, coverage) = self
                    .filling
                    .entry(k)
                    .or_insert_with(|| (vec![0u8; (stop - start) as usize], Coverage::default()));
                let from = (at - pos) as usize;
                let to = (upto - pos) as usize;
                buffer[(at - start) as usize..(upto - start) as usize]
                    .copy_from_slice(&chunk[from..to]);
                coverage.add(at - start, upto - start);
                if coverage.covers(stop - start) {
                    if let Some((buffer, _)) = self.filling.remove(&k) {
                        self.done.insert(k);
                        complete.push((k, Bytes::from(buffer)));
                    }
                }
            }
            at = upto;
        }
        complete
    }
}

/// Where the leader's completed parts go: an uploader task that stops at the first store
/// failure (the download itself goes on from the Hub, unhindered).
#[derive(Clone)]
pub(crate) struct PartSink {
    windows: Arc<Mutex<Windows>>,
    tx: mpsc::Sender<(u64, Bytes)>,
}

impl PartSink {
    /// Starts the uploader of `fleet`'s parts (its task returns how many went up).
    pub(crate) fn start(fleet: FleetStore) -> (PartSink, tokio::task::JoinHandle<u64>) {
        let (fleet_part, fleet_size) = (fleet.policy.part_bytes, fleet.size);
        let (tx, mut rx) = mpsc::channel::<(u64, Bytes)>(4);
        let uploader = tokio::spawn(async move {
            let mut uploaded = 0u64;
            while let Some((k, bytes)) = rx.recv().await {
                let put = tokio::time::timeout(fleet.policy.lease_ttl, fleet.put_part(k, bytes));
                match put.await {
                    Ok(Ok(())) => uploaded += 1,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "the fleet's part upload failed; no more parts from this node");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(
                            "the fleet's part upload timed out; no more parts from this node"
                        );
                        break;
                    }
                }
            }
            uploaded
        });
        let windows = Windows {
            part: fleet_part.max(1),
            size: fleet_size,
            filling: Default::default(),
            done: Default::default(),
        };
        (
            PartSink {
                windows: Arc::new(Mutex::new(windows)),
                tx,
            },
            uploader,
        )
    }

    async fn offer(&self, pos: u64, chunk: &[u8]) {
        let complete = match self.windows.lock() {
            Ok(mut w) => w.offer(pos, chunk),
            Err(_) => Vec::new(),
        };
        for part in complete {
            // A stopped uploader (the store failed) drops the part: the download goes on.
            let _ = self.tx.send(part).await;
        }
    }
}

/// A byte source that passes another's bytes through, offering them as parts; fails every
/// read once `lost` is set (another node leads now).
pub(crate) struct TeeSource<'a> {
    inner: &'a dyn ByteSource,
    sink: PartSink,
    lost: Arc<AtomicBool>,
}

impl<'a> TeeSource<'a> {
    /// Tees `inner` into `sink` until `lost`.
    pub(crate) fn new(inner: &'a dyn ByteSource, sink: PartSink, lost: Arc<AtomicBool>) -> Self {
        TeeSource { inner, sink, lost }
    }
}

impl ByteSource for TeeSource<'_> {
    fn open(&self, start: u64, end: Option<u64>) -> BoxFuture<'_, EmbeddingResult<Opened>> {
        Box::pin(async move {
            Ok(match self.inner.open(start, end).await? {
                Opened::Unsatisfiable => Opened::Unsatisfiable,
                Opened::Whole { body, length } => Opened::Whole {
                    body: self.tee(body, 0),
                    length,
                },
                Opened::Range {
                    body,
                    start,
                    end,
                    total,
                } => Opened::Range {
                    body: self.tee(body, start),
                    start,
                    end,
                    total,
                },
            })
        })
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn idle_timeout(&self) -> Duration {
        self.inner.idle_timeout()
    }

    fn is_range_refusal(&self, error: &EmbeddingError) -> bool {
        self.inner.is_range_refusal(error)
    }
}

impl TeeSource<'_> {
    fn tee(&self, body: Body, start: u64) -> Body {
        let sink = self.sink.clone();
        let lost = self.lost.clone();
        let idle = self.inner.idle_timeout();
        let name = self.inner.name();
        let state = (body, start, false);
        let stream = futures_util::stream::unfold(state, move |(mut body, pos, stopped)| {
            let sink = sink.clone();
            let lost = lost.clone();
            let name = name.clone();
            async move {
                if stopped {
                    return None;
                }
                if lost.load(Ordering::Relaxed) {
                    let error = EmbeddingError::Mirror {
                        url: name.clone(),
                        message: "another node of the fleet leads this fetch now; following it"
                            .to_owned(),
                    };
                    return Some((Err(error), (body, pos, true)));
                }
                match body.next_chunk(idle, &name).await {
                    Ok(Some(chunk)) => {
                        sink.offer(pos, &chunk).await;
                        let next = pos + chunk.len() as u64;
                        Some((Ok(chunk), (body, next, false)))
                    }
                    Ok(None) => None,
                    Err(error) => Some((Err(error), (body, pos, true))),
                }
            }
        });
        Body::Stream(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_complete_parts_from_any_order_and_overlap() {
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let mut w = Windows {
            part: 100,
            size: 250,
            filling: Default::default(),
            done: Default::default(),
        };
        // A ranged chunk from 150 to 250 completes the last part only.
        let got = w.offer(150, &data[150..]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 2);
        assert_eq!(&got[0].1[..], &data[200..250]);
        // A stream from 0 with a retry that resends 40..60.
        assert!(w.offer(0, &data[0..60]).is_empty());
        let got = w.offer(40, &data[40..150]);
        let ks: Vec<u64> = got.iter().map(|p| p.0).collect();
        assert_eq!(ks, [0, 1]);
        assert_eq!(&got[0].1[..], &data[0..100]);
        assert_eq!(&got[1].1[..], &data[100..200]);
        // Done parts are not offered again.
        assert!(w.offer(0, &data).is_empty());
        assert!(w.filling.is_empty());
    }
}
