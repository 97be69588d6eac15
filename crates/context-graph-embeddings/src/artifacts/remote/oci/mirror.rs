//! A pull-through mirror in an OCI registry (`--mirror oci://HOST/REPO`), beside the S3 one.
//! Every model lives in the one repository as a ModelPack artifact tagged
//! [`mirror_tag`](super::reference::mirror_tag)`(repo, commit)`; its layers are the files.
//!
//! A blob known by its SHA-256 is read directly by digest; a regular file known only by its
//! git blob id is found through the model's manifest (its path and git annotation). Either way
//! the bytes go through the same resumable, ranged, verifying downloader as the Hub's: a
//! registry can never poison a cache. Writing (`--mirror-write`) is the publisher's job
//! (`ensure/publish.rs`): once a model is complete, its blobs (`HEAD` first) and manifest.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::auth::{find_credentials, RegistryCredentials, WithAuthFile};
use super::client::{RegistryBlob, RegistryClient, RegistryOptions};
use super::modelpack::{is_sha256_digest, model_files, parse_manifest, ManifestFile};
use super::reference::{mirror_tag, OciReference};
use crate::artifacts::environment::EnvLookup;
use crate::artifacts::hash::DigestKind;
use crate::artifacts::remote::tls::TrustRoots;
use crate::error::{EmbeddingError, EmbeddingResult};

/// The files of one model manifest, fetched once per run.
type Listing = Arc<tokio::sync::OnceCell<Option<Vec<ManifestFile>>>>;

/// A connected OCI mirror.
pub struct OciMirror {
    pub(crate) client: Arc<RegistryClient>,
    pub(crate) reference: OciReference,
    write: bool,
    listings: Mutex<HashMap<String, Listing>>,
}

impl std::fmt::Debug for OciMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciMirror")
            .field("reference", &self.reference)
            .field("write", &self.write)
            .finish_non_exhaustive()
    }
}

/// Connects a registry client for `reference` with the credentials the environment and the
/// usual files give (`credentials` first when set), trusting `trust`.
pub(crate) fn registry_client(
    reference: &OciReference,
    credentials: Option<RegistryCredentials>,
    env: &dyn EnvLookup,
    trust: &TrustRoots,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> EmbeddingResult<RegistryClient> {
    let credentials = match credentials {
        Some(given) => Some(given),
        None => find_credentials(&reference.registry, env).map_err(|message| {
            EmbeddingError::Registry {
                reference: reference.to_string(),
                message,
            }
        })?,
    };
    RegistryClient::new(
        reference,
        RegistryOptions {
            connect_timeout,
            idle_timeout,
            trust: trust.clone(),
            credentials,
        },
    )
}

impl OciMirror {
    /// A mirror at `reference` (a repository; a tag is refused: tags are per model).
    pub(crate) fn connect(
        reference: OciReference,
        write: bool,
        env: &dyn EnvLookup,
        auth_file: Option<&Path>,
        trust: &TrustRoots,
        idle_timeout: Duration,
    ) -> EmbeddingResult<OciMirror> {
        if reference.tag.is_some() {
            return Err(EmbeddingError::Config(format!(
                "mirror `{reference}` names a tag; a mirror is a repository (oci://HOST/REPO): each model has its own tag there"
            )));
        }
        let client = registry_client(
            &reference,
            None,
            &WithAuthFile {
                env,
                file: auth_file,
            },
            trust,
            Duration::from_secs(10),
            idle_timeout,
        )?;
        Ok(OciMirror {
            client: Arc::new(client),
            reference,
            write,
            listings: Mutex::new(HashMap::new()),
        })
    }

    /// Whether models fetched from the Hub are pushed here once verified.
    pub fn is_writable(&self) -> bool {
        self.write
    }

    /// The repository, `oci://host/repo`.
    pub fn name(&self) -> String {
        self.reference.to_string()
    }

    fn object_name(&self, digest: &str) -> String {
        format!("{}@{digest}", self.reference)
    }

    /// The file `path` of `repo_id` at `commit`, expected to hash to `expected` (`kind`), as
    /// a byte source: by digest when it is a SHA-256, else through the model's manifest.
    /// `MirrorMissing` when the registry has neither.
    pub(crate) async fn source(
        &self,
        kind: DigestKind,
        expected: &str,
        repo_id: &str,
        commit: &str,
        path: &str,
    ) -> EmbeddingResult<RegistryBlob> {
        let digest = match kind {
            DigestKind::Sha256 => format!("sha256:{expected}"),
            DigestKind::GitBlobSha1 => {
                let tag = mirror_tag(repo_id, commit);
                let files = self.listing(&tag).await?;
                files
                    .iter()
                    .flatten()
                    .find(|f| f.path == path)
                    .map(|f| f.digest.clone())
                    .ok_or_else(|| EmbeddingError::MirrorMissing {
                        url: format!("{}:{tag} {path}", self.reference),
                    })?
            }
        };
        if !is_sha256_digest(&digest) {
            return Err(EmbeddingError::MirrorMissing {
                url: self.object_name(&digest),
            });
        }
        Ok(RegistryBlob {
            client: self.client.clone(),
            repository: self.reference.repository.clone(),
            name: self.object_name(&digest),
            digest,
        })
    }

    /// The files of the model manifest tagged `tag` (`None`: no such manifest), once per run.
    async fn listing(&self, tag: &str) -> EmbeddingResult<Option<Vec<ManifestFile>>> {
        let cell = {
            let mut listings = match self.listings.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            listings.entry(tag.to_owned()).or_default().clone()
        };
        let reference = self.reference.with_tag(tag);
        cell.get_or_try_init(|| async {
            let Some((bytes, _)) = self
                .client
                .manifest(&self.reference.repository, tag)
                .await?
            else {
                return Ok(None);
            };
            let manifest = parse_manifest(&bytes).map_err(|message| EmbeddingError::Mirror {
                url: reference.to_string(),
                message,
            })?;
            Ok(Some(model_files(&manifest)))
        })
        .await
        .cloned()
    }
}
