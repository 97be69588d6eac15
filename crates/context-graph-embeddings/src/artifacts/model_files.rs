//! The files that make up a model, as its manifest entry pins them: the weight file, then the
//! other files of a locked set (`files`). This is the one place the operations that work per
//! file from the manifest alone (`outdated`, bundles) ask which files a model has. A set given
//! only by patterns or a preset lists its weight file here until `lock` resolves the rest.

use super::hash::DigestKind;
use super::manifest::ModelArtifact;

/// One file of a model and what its bytes must be, when pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelFile {
    /// Path inside the repo.
    pub(crate) path: String,
    /// How the file is checked: SHA-256 (the weight file and LFS files) or git blob SHA-1
    /// (regular files).
    pub(crate) kind: DigestKind,
    /// The pinned digest, of that kind.
    pub(crate) digest: Option<String>,
    /// Pinned size in bytes.
    pub(crate) size: Option<u64>,
}

/// The files of a model, the weight file first, then the locked set in its order.
pub(crate) fn files_of(artifact: &ModelArtifact) -> Vec<ModelFile> {
    let weights = match (&artifact.sha256, artifact.pinned_file(&artifact.filename)) {
        (None, Some(row)) => ModelFile {
            path: artifact.filename.clone(),
            kind: row.kind,
            digest: Some(row.digest.clone()),
            size: artifact.size_bytes.or(Some(row.size_bytes)),
        },
        _ => ModelFile {
            path: artifact.filename.clone(),
            kind: DigestKind::Sha256,
            digest: artifact.sha256.clone(),
            size: artifact.size_bytes,
        },
    };
    let mut files = vec![weights];
    files.extend(
        artifact
            .selection
            .files
            .iter()
            .flatten()
            .filter(|row| row.path != artifact.filename)
            .map(|row| ModelFile {
                path: row.path.clone(),
                kind: row.kind,
                digest: Some(row.digest.clone()),
                size: Some(row.size_bytes),
            }),
    );
    files
}

/// The branch an entry follows: its `branch`, else its revision when that is a branch or tag
/// name, else `main`
/// (a pinned commit is compared with, and upgraded to, the head of `main`).
pub(crate) fn tracked_branch(artifact: &ModelArtifact) -> String {
    if let Some(branch) = &artifact.branch {
        return branch.clone();
    }
    if artifact.revision_is_commit() {
        super::manifest::DEFAULT_REVISION.to_owned()
    } else {
        artifact.revision_or_default().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::fileset::{FileSelection, PinnedFile};
    use crate::model_id::ModelId;

    #[test]
    fn a_locked_set_lists_the_weight_file_first_then_the_rest() {
        let sha = "a".repeat(64);
        let git = "b".repeat(40);
        let artifact = ModelArtifact {
            model_id: ModelId::Entity,
            repo_id: "org/model".to_owned(),
            filename: "model.safetensors".to_owned(),
            sha256: None,
            size_bytes: None,
            revision: None,
            branch: None,
            selection: FileSelection {
                files: Some(vec![
                    PinnedFile {
                        path: "config.json".to_owned(),
                        size_bytes: 3,
                        kind: DigestKind::GitBlobSha1,
                        digest: git.clone(),
                    },
                    PinnedFile {
                        path: "model.safetensors".to_owned(),
                        size_bytes: 9,
                        kind: DigestKind::Sha256,
                        digest: sha.clone(),
                    },
                ]),
                ..FileSelection::default()
            },
            signed_by: None,
        };
        let files = files_of(&artifact);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "model.safetensors");
        assert_eq!(files[0].digest.as_deref(), Some(sha.as_str()));
        assert_eq!(files[0].size, Some(9));
        assert_eq!(files[1].kind, DigestKind::GitBlobSha1);
        assert_eq!(files[1].digest.as_deref(), Some(git.as_str()));
        let single = ModelArtifact {
            selection: FileSelection::default(),
            sha256: Some(sha.clone()),
            ..artifact
        };
        assert_eq!(files_of(&single).len(), 1);
        assert_eq!(files_of(&single)[0].kind, DigestKind::Sha256);
    }
}
