//! Exit codes and the error a command ends with: which failures are the user's to fix in the
//! command line or configuration (2), which mean a model is not ready (1).

use std::fmt;

use context_graph_embeddings::EmbeddingError;

/// Exit code: everything asked for is done.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code: something failed, or some model is not ready.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line or the configuration (manifest, token file) is wrong.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: `outdated` found a pin behind its branch, or a file that changed.
pub(crate) const EXIT_OUTDATED: u8 = 3;
/// Exit code: interrupted by Ctrl-C (SIGINT).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;
/// Exit code: stopped by SIGTERM.
pub(crate) const EXIT_TERMINATED: u8 = 143;

/// An error that ends a command, with the exit code it maps to.
#[derive(Debug)]
pub(crate) struct CliError {
    /// The exit code.
    pub code: u8,
    /// What failed; its `Display` is the sentence shown to the user.
    pub error: anyhow::Error,
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub(crate) fn usage(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_USAGE,
            error: anyhow::anyhow!("{message}"),
        }
    }

    /// A failure (exit 1).
    pub(crate) fn failure(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_FAILURE,
            error: anyhow::anyhow!("{message}"),
        }
    }
}

impl From<EmbeddingError> for CliError {
    fn from(error: EmbeddingError) -> Self {
        CliError {
            code: exit_code_of(&error),
            error: error.into(),
        }
    }
}

/// The exit code for a library error: configuration and manifest problems are usage errors.
pub(crate) fn exit_code_of(error: &EmbeddingError) -> u8 {
    match error {
        EmbeddingError::ManifestRead { .. }
        | EmbeddingError::ManifestSyntax { .. }
        | EmbeddingError::ManifestEntry { .. }
        | EmbeddingError::Config(_)
        | EmbeddingError::Client(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}
