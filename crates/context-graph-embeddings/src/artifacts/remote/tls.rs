//! Which certificate authorities the Hub client, its CDN and the S3 mirror trust.
//!
//! Verification is never turned off. The base is the operating system's trust store through
//! `rustls-platform-verifier` (reqwest 0.13's default; on Linux it reads the system bundle
//! that `openssl-probe` finds, or `SSL_CERT_FILE`/`SSL_CERT_DIR` instead when they are set,
//! as OpenSSL does). On top of it, merged: the certificates of `SSL_CERT_FILE`, of every file
//! in the `SSL_CERT_DIR` folders and of the configured CA bundle (`ca_bundle`,
//! `CG_MODELS_CA_BUNDLE`, `--ca-bundle`), so a company CA given any of these ways is trusted on
//! every platform, for the Hub, the CDN and the mirror alike.

use std::path::{Path, PathBuf};

use crate::error::{EmbeddingError, EmbeddingResult};

/// Extra CA certificates, PEM, with the file each came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustRoots {
    pems: Vec<(PathBuf, Vec<u8>)>,
}

impl TrustRoots {
    /// Reads the CA bundle (must exist and hold a certificate), `SSL_CERT_FILE` (must exist)
    /// and the files of the `SSL_CERT_DIR` folders (files that are not PEM certificates, such
    /// as CRLs, are skipped).
    pub(crate) fn load(
        ca_bundle: Option<&Path>,
        cert_file: Option<&Path>,
        cert_dirs: &[PathBuf],
    ) -> EmbeddingResult<Self> {
        let mut roots = TrustRoots::default();
        for (path, what) in [(ca_bundle, "CA bundle"), (cert_file, "SSL_CERT_FILE")] {
            let Some(path) = path else { continue };
            let pem = std::fs::read(path).map_err(|e| {
                EmbeddingError::Config(format!("cannot read the {what} {}: {e}", path.display()))
            })?;
            if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) {
                return Err(EmbeddingError::Config(format!(
                    "the {what} {} holds no PEM certificate",
                    path.display()
                )));
            }
            roots.pems.push((path.to_path_buf(), pem));
        }
        for dir in cert_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                tracing::warn!(dir = %dir.display(), "SSL_CERT_DIR folder cannot be read");
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for file in files {
                let Ok(pem) = std::fs::read(&file) else {
                    continue;
                };
                if reqwest::Certificate::from_pem_bundle(&pem).is_ok_and(|c| !c.is_empty()) {
                    roots.pems.push((file, pem));
                }
            }
        }
        Ok(roots)
    }

    /// The certificates for reqwest.
    pub(crate) fn for_reqwest(&self) -> Vec<reqwest::Certificate> {
        self.pems
            .iter()
            .filter_map(|(_, pem)| reqwest::Certificate::from_pem_bundle(pem).ok())
            .flatten()
            .collect()
    }

    /// The certificates for the object store client of the mirror.
    pub(crate) fn for_object_store(&self) -> Vec<object_store::Certificate> {
        self.pems
            .iter()
            .filter_map(|(_, pem)| object_store::Certificate::from_pem_bundle(pem).ok())
            .flatten()
            .collect()
    }
}

/// What to say when a server's certificate is not trusted, from the error chain's text.
pub(crate) fn untrusted_certificate(chain: &str) -> Option<&'static str> {
    let lower = chain.to_ascii_lowercase();
    if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        Some("its certificate was issued by an authority this machine does not trust (UnknownIssuer)")
    } else if lower.contains("invalid peer certificate") || lower.contains("certificate verify") {
        Some("its certificate was not accepted")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_issuers_are_recognised() {
        assert!(untrusted_certificate(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        )
        .is_some_and(|s| s.contains("UnknownIssuer")));
        assert!(untrusted_certificate("invalid peer certificate: Expired").is_some());
        assert_eq!(untrusted_certificate("dns error: no such host"), None);
    }

    #[test]
    fn a_missing_or_empty_bundle_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        let err = TrustRoots::load(Some(&missing), None, &[]).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the CA bundle"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = TrustRoots::load(None, Some(&empty), &[]).unwrap_err();
        assert!(err.to_string().contains("SSL_CERT_FILE"), "{err}");
        // A folder of non-certificates adds nothing and is no error.
        let roots = TrustRoots::load(None, None, &[dir.path().to_path_buf()]).unwrap();
        assert!(roots.for_reqwest().is_empty());
    }
}
