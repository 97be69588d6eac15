//! The files that make up a model, as its manifest entry pins them. Today an entry names one
//! weight file; this is the one place the operations that work per file (`outdated`, bundles)
//! ask which files a model has, so models made of several files extend them here.

use super::manifest::ModelArtifact;

/// One file of a model and what its bytes must be, when pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PinnedFile {
    /// Path inside the repo.
    pub(crate) path: String,
    /// Pinned SHA-256.
    pub(crate) sha256: Option<String>,
    /// Pinned size in bytes.
    pub(crate) size: Option<u64>,
}

/// The files of a model, in a stable order.
pub(crate) fn files_of(artifact: &ModelArtifact) -> Vec<PinnedFile> {
    vec![PinnedFile {
        path: artifact.filename.clone(),
        sha256: artifact.sha256.clone(),
        size: artifact.size_bytes,
    }]
}

/// The branch an entry follows: its revision when that is a branch or tag name, else `main`
/// (a pinned commit is compared with, and upgraded to, the head of `main`).
pub(crate) fn tracked_branch(artifact: &ModelArtifact) -> String {
    if artifact.revision_is_commit() {
        super::manifest::DEFAULT_REVISION.to_owned()
    } else {
        artifact.revision_or_default().to_owned()
    }
}
