//! Prometheus metrics: progress events and readiness turned into counters and gauges, rendered
//! in the text exposition format (version 0.0.4) for node_exporter's textfile collector or an
//! embedder's own `/metrics` endpoint. Owns the metric names, labels and help texts
//! (`docs/metrics.md`), and writing the textfile atomically; never prints, never blocks on a
//! download (it reads the lossy progress broadcast like any other subscriber).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::progress::{Outcome, ProgressEvent, ProgressKind};
use super::store::fs::write_atomic;
use crate::error::{EmbeddingError, EmbeddingResult};
use crate::model_id::ModelId;

/// Outcomes a file or model can end with (the `outcome` label), each always exposed.
const OUTCOMES: [&str; 6] = [
    "downloaded",
    "resumed",
    "reused",
    "already_present",
    "verified",
    "failed",
];

/// Reasons a transfer is retried (the `reason` label), each always exposed.
const RETRY_REASONS: [&str; 7] = [
    "server_error",
    "rate_limited",
    "timeout",
    "network",
    "bad_response",
    "integrity",
    "other",
];

/// Readiness states (the `state` label of `cg_models_models`), each always exposed.
const STATES: [&str; 5] = ["ready", "unverified", "missing", "failed", "builtin"];

/// One transfer in flight.
#[derive(Debug, Clone, Default)]
struct Transfer {
    bytes: u64,
    total: u64,
    speed: u64,
    /// Bytes already added to the downloaded counter for this transfer.
    counted: u64,
}

#[derive(Debug, Default)]
struct State {
    downloaded: BTreeMap<ModelId, u64>,
    reused: BTreeMap<ModelId, u64>,
    files: BTreeMap<&'static str, u64>,
    models: BTreeMap<&'static str, u64>,
    retries: BTreeMap<&'static str, u64>,
    verification_failures: BTreeMap<ModelId, u64>,
    in_flight: BTreeMap<ModelId, Transfer>,
    states: Option<BTreeMap<&'static str, u64>>,
    cache_size: Option<u64>,
    lost_events: u64,
}

/// Counters and gauges of downloads and the cache, fed by progress events (see
/// [`ModelArtifactManager::metrics_recorder`](super::ModelArtifactManager::metrics_recorder))
/// and rendered as Prometheus text. Cheap to clone; clones share the same values.
#[derive(Debug, Clone, Default)]
pub struct MetricsRecorder {
    state: Arc<Mutex<State>>,
}

impl MetricsRecorder {
    /// An empty recorder (every counter at zero).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts one progress event.
    pub fn observe(&self, event: &ProgressEvent) {
        let mut state = self.lock();
        let model = event.model_id;
        match &event.kind {
            ProgressKind::Started { .. } => {
                let transfer = state.in_flight.entry(model).or_default();
                transfer.bytes = event.bytes_downloaded;
                transfer.total = event.total_bytes;
                transfer.speed = 0;
            }
            ProgressKind::Progress => {
                let transfer = state.in_flight.entry(model).or_insert_with(|| Transfer {
                    bytes: event.bytes_downloaded,
                    ..Transfer::default()
                });
                let delta = event.bytes_downloaded.saturating_sub(transfer.bytes);
                transfer.bytes = event.bytes_downloaded;
                transfer.total = event.total_bytes;
                transfer.speed = event.speed_bps;
                transfer.counted += delta;
                *state.downloaded.entry(model).or_default() += delta;
            }
            ProgressKind::Retrying { reason, .. } => {
                let reason = retry_reason(reason);
                *state.retries.entry(reason).or_default() += 1;
                if reason == "integrity" {
                    *state.verification_failures.entry(model).or_default() += 1;
                }
                if let Some(transfer) = state.in_flight.get_mut(&model) {
                    transfer.speed = 0;
                }
            }
            ProgressKind::Completed {
                outcome,
                bytes_transferred,
                ..
            } => {
                let counted = state.in_flight.remove(&model).map_or(0, |t| t.counted);
                // Progress events are throttled: the last bytes arrive without one.
                let rest = bytes_transferred.saturating_sub(counted);
                *state.downloaded.entry(model).or_default() += rest;
                let reused = match outcome {
                    Outcome::Downloaded => 0,
                    Outcome::Resumed => event.total_bytes.saturating_sub(*bytes_transferred),
                    _ => event.total_bytes,
                };
                *state.reused.entry(model).or_default() += reused;
                let label = outcome_label(*outcome);
                *state.files.entry(label).or_default() += 1;
                *state.models.entry(label).or_default() += 1;
            }
            ProgressKind::Failed { error } => {
                state.in_flight.remove(&model);
                *state.files.entry("failed").or_default() += 1;
                *state.models.entry("failed").or_default() += 1;
                if is_integrity(error) {
                    *state.verification_failures.entry(model).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// Counts events a slow subscriber lost (the broadcast is lossy).
    pub fn lost_events(&self, count: u64) {
        self.lock().lost_events += count;
    }

    /// Counts one verification by full hashing outside a download (`verify`): a failure adds
    /// to `cg_models_verification_failures_total`.
    pub fn record_verification(&self, model_id: ModelId, passed: bool) {
        if !passed {
            *self
                .lock()
                .verification_failures
                .entry(model_id)
                .or_default() += 1;
        }
    }

    /// Sets the readiness gauge from each model's state name (`ready`, `unverified`,
    /// `missing`, `failed`, `builtin`).
    pub fn set_model_states<'a>(&self, states: impl IntoIterator<Item = &'a str>) {
        let mut counts: BTreeMap<&'static str, u64> = STATES.iter().map(|s| (*s, 0)).collect();
        for name in states {
            if let Some(known) = STATES.iter().find(|s| **s == name) {
                *counts.entry(known).or_default() += 1;
            }
        }
        self.lock().states = Some(counts);
    }

    /// Sets the cache size gauge.
    pub fn set_cache_size(&self, bytes: u64) {
        self.lock().cache_size = Some(bytes);
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let state = self.lock();
        let mut out = String::new();
        let by_model = |map: &BTreeMap<ModelId, u64>| -> Vec<(String, u64)> {
            map.iter()
                .map(|(m, v)| (format!("model=\"{m}\""), *v))
                .collect()
        };
        let by_label = |name: &str, keys: &[&'static str], map: &BTreeMap<&'static str, u64>| {
            keys.iter()
                .map(|k| (format!("{name}=\"{k}\""), map.get(k).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
        };
        family(
            &mut out,
            "cg_models_downloaded_bytes_total",
            "counter",
            "Bytes received over the network (Hub or mirror), by model.",
            &by_model(&state.downloaded),
        );
        family(
            &mut out,
            "cg_models_reused_bytes_total",
            "counter",
            "Bytes not downloaded because they were already on disk (verified files, cached blobs, resumed partial downloads), by model.",
            &by_model(&state.reused),
        );
        family(
            &mut out,
            "cg_models_files_total",
            "counter",
            "Model files that ended, by outcome.",
            &by_label("outcome", &OUTCOMES, &state.files),
        );
        family(
            &mut out,
            "cg_models_models_total",
            "counter",
            "Models that ended, by outcome (a model is ready when all its files are).",
            &by_label("outcome", &OUTCOMES, &state.models),
        );
        family(
            &mut out,
            "cg_models_retries_total",
            "counter",
            "Retries of a transfer or metadata request, by reason.",
            &by_label("reason", &RETRY_REASONS, &state.retries),
        );
        family(
            &mut out,
            "cg_models_verification_failures_total",
            "counter",
            "Files whose bytes did not match the expected SHA-256 or size, by model.",
            &by_model(&state.verification_failures),
        );
        family(
            &mut out,
            "cg_models_progress_events_lost_total",
            "counter",
            "Progress events this recorder missed because it fell behind.",
            &[(String::new(), state.lost_events)],
        );
        let speed: u64 = state.in_flight.values().map(|t| t.speed).sum();
        let remaining: u64 = state
            .in_flight
            .values()
            .map(|t| t.total.saturating_sub(t.bytes))
            .sum();
        let sizes_known = state.in_flight.values().all(|t| t.total > 0);
        family(
            &mut out,
            "cg_models_downloads_in_progress",
            "gauge",
            "Files being downloaded now.",
            &[(String::new(), state.in_flight.len() as u64)],
        );
        family(
            &mut out,
            "cg_models_download_speed_bytes_per_second",
            "gauge",
            "Current download speed of all transfers together.",
            &[(String::new(), speed)],
        );
        if sizes_known {
            family(
                &mut out,
                "cg_models_download_remaining_bytes",
                "gauge",
                "Bytes still to download by the transfers in progress.",
                &[(String::new(), remaining)],
            );
        }
        let eta = if remaining == 0 {
            Some(0.0)
        } else if speed > 0 && sizes_known {
            Some(remaining as f64 / speed as f64)
        } else {
            None
        };
        if let Some(eta) = eta {
            family_f64(
                &mut out,
                "cg_models_download_remaining_seconds",
                "gauge",
                "Estimated time left for the transfers in progress at the current speed.",
                eta,
            );
        }
        if let Some(states) = &state.states {
            family(
                &mut out,
                "cg_models_models",
                "gauge",
                "Models of the manifest, by readiness state.",
                &by_label("state", &STATES, states),
            );
        }
        if let Some(size) = state.cache_size {
            family(
                &mut out,
                "cg_models_cache_size_bytes",
                "gauge",
                "Bytes of all regular files in the cache.",
                &[(String::new(), size)],
            );
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        family_f64(
            &mut out,
            "cg_models_metrics_updated_timestamp_seconds",
            "gauge",
            "When these metrics were rendered (Unix time).",
            now,
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn family_f64(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value:.3}");
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Downloaded => "downloaded",
        Outcome::Resumed => "resumed",
        Outcome::Reused => "reused",
        Outcome::AlreadyPresent => "already_present",
        Outcome::Verified => "verified",
    }
}

fn is_integrity(reason: &str) -> bool {
    reason.contains("SHA-256 mismatch") || reason.contains("size mismatch")
}

/// The `reason` label of a retry, from the error text of the failure (a small fixed set, so
/// label values stay few).
fn retry_reason(reason: &str) -> &'static str {
    if is_integrity(reason) {
        "integrity"
    } else if reason.contains("HTTP 429") {
        "rate_limited"
    } else if reason.contains("server busy") || reason.contains("HTTP 5") {
        "server_error"
    } else if reason.contains("idle timeout") {
        "timeout"
    } else if reason.contains("network error") {
        "network"
    } else if reason.contains("unusable answer") {
        "bad_response"
    } else {
        "other"
    }
}

/// Writes `text` to the metrics file at `path` atomically (a temporary file in the same
/// folder, then a rename), so node_exporter's textfile collector never reads half a file. The
/// folder must exist: a mistyped path is an error, not a new folder.
pub fn write_metrics_file(path: &Path, text: &str) -> EmbeddingResult<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(EmbeddingError::io(
                "cannot write the metrics file into",
                parent,
                std::io::Error::other("not a folder"),
            ))
        }
        Err(error) => {
            return Err(EmbeddingError::io(
                "cannot write the metrics file: its folder is missing:",
                parent,
                error,
            ))
        }
    }
    write_atomic(path, text.as_bytes()).map_err(|error| match error {
        EmbeddingError::Io { source, .. } => {
            EmbeddingError::io("cannot write the metrics file", path, source)
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(bytes: u64, total: u64, speed: u64, kind: ProgressKind) -> ProgressEvent {
        ProgressEvent {
            model_id: ModelId::Entity,
            bytes_downloaded: bytes,
            total_bytes: total,
            speed_bps: speed,
            kind,
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_download_counts_its_bytes_speed_and_time_left() {
        let recorder = MetricsRecorder::new();
        recorder.observe(&event(
            100,
            1000,
            0,
            ProgressKind::Started { resumed_from: 100 },
        ));
        recorder.observe(&event(400, 1000, 300, ProgressKind::Progress));
        let text = recorder.render();
        assert_eq!(
            value(&text, "cg_models_downloaded_bytes_total{model=\"Entity\"}"),
            Some(300.0)
        );
        assert_eq!(
            value(&text, "cg_models_download_remaining_bytes"),
            Some(600.0)
        );
        assert_eq!(
            value(&text, "cg_models_download_remaining_seconds"),
            Some(2.0)
        );
        recorder.observe(&event(
            0,
            1000,
            0,
            ProgressKind::Retrying {
                attempt: 1,
                delay_ms: 0,
                reason: "server busy or failing: HTTP 503".to_owned(),
            },
        ));
        recorder.observe(&event(
            1000,
            1000,
            0,
            ProgressKind::Completed {
                path: "x".into(),
                outcome: Outcome::Resumed,
                bytes_transferred: 900,
                source: Some("hub".to_owned()),
            },
        ));
        let text = recorder.render();
        assert_eq!(
            value(&text, "cg_models_downloaded_bytes_total{model=\"Entity\"}"),
            Some(900.0)
        );
        assert_eq!(
            value(&text, "cg_models_reused_bytes_total{model=\"Entity\"}"),
            Some(100.0)
        );
        assert_eq!(
            value(&text, "cg_models_files_total{outcome=\"resumed\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "cg_models_retries_total{reason=\"server_error\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "cg_models_downloads_in_progress"), Some(0.0));
    }

    #[test]
    fn retry_reasons_are_a_small_fixed_set() {
        assert_eq!(
            retry_reason("server busy or failing: HTTP 503 (from x)"),
            "server_error"
        );
        assert_eq!(
            retry_reason("server busy or failing: HTTP 429 (from x)"),
            "rate_limited"
        );
        assert_eq!(
            retry_reason("no data from x for 3s (idle timeout; …)"),
            "timeout"
        );
        assert_eq!(
            retry_reason(
                "E (r@c/f): SHA-256 mismatch in p: expected a, got b; fetching the file again"
            ),
            "integrity"
        );
        assert_eq!(retry_reason("something new"), "other");
    }
}
