//! `--metrics-file`: the library's metrics recorder, rendered to a Prometheus textfile that
//! is rewritten atomically at an interval while a command runs, and once more at its end. The
//! file is written once before the command starts, so a path in a missing or read-only folder
//! fails before any download.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use context_graph_embeddings::artifacts::{
    write_metrics_file, MetricsRecorder, ModelArtifactManager,
};

use crate::cli::{Command, GlobalArgs};
use crate::failure::CliError;
use crate::output::Output;

/// Seconds between two rewrites unless `--metrics-interval` says otherwise.
const DEFAULT_INTERVAL_SECS: f64 = 5.0;

/// A metrics textfile kept current while a command runs.
#[derive(Debug)]
pub(crate) struct MetricsFile {
    path: PathBuf,
    interval: Duration,
    recorder: MetricsRecorder,
}

impl MetricsFile {
    /// With `--metrics-file`: a recorder subscribed to the manager's progress and a first
    /// write of the file (its errors are configuration errors, exit 2). Only `ensure`,
    /// `verify` and `import` take the option.
    pub(crate) fn start(
        manager: &ModelArtifactManager,
        global: &GlobalArgs,
        command: &Command,
    ) -> Result<Option<Self>, CliError> {
        let Some(path) = &global.metrics_file else {
            return Ok(None);
        };
        if !matches!(
            command,
            Command::Ensure(_) | Command::Verify(_) | Command::Import(_)
        ) {
            return Err(CliError::usage(
                "--metrics-file applies to ensure, verify and import",
            ));
        }
        let file = MetricsFile {
            path: path.clone(),
            interval: Duration::from_secs_f64(
                global.metrics_interval.unwrap_or(DEFAULT_INTERVAL_SECS),
            ),
            recorder: manager.metrics_recorder()?,
        };
        file.write(manager)
            .map_err(|e| CliError::usage(format!("--metrics-file: {e}")))?;
        Ok(Some(file))
    }

    /// The recorder, for commands that count what events do not carry (verification).
    pub(crate) fn recorder(&self) -> &MetricsRecorder {
        &self.recorder
    }

    /// Refreshes the gauges and rewrites the file; the error as shown to users.
    fn write(&self, manager: &ModelArtifactManager) -> Result<(), String> {
        // Walks the cache: off the async worker's hot path.
        tokio::task::block_in_place(|| {
            manager.update_metrics(&self.recorder);
            write_metrics_file(&self.path, &self.recorder.render()).map_err(|e| e.to_string())
        })
    }

    /// Runs `work`, rewriting the file every interval and once at the end. A failed rewrite
    /// is a warning (shown once); the command goes on.
    pub(crate) async fn run_while<T>(
        &self,
        manager: &ModelArtifactManager,
        output: &Output,
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut warned = false;
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = ticker.tick() => {
                    if let Err(error) = self.write(manager) {
                        if !warned {
                            output.warn(format!("metrics file not updated: {error}"));
                            warned = true;
                        }
                    }
                }
            }
        };
        // Let the recorder read the last events before the final write.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(error) = self.write(manager) {
            output.warn(format!("metrics file not updated: {error}"));
        }
        result
    }
}
