//! The signature policy as plain data (what the manifest says) and the loaded verifier (the
//! key or root it names, read once). The decision for a model is [`SignatureVerifier::verify`]
//! or [`SignatureVerifier::verify_if_present`].

use std::path::{Path, PathBuf};

use super::bundle::{Bundle, Material};
use super::crypto::{self, EcKey};
use super::statement::VerifiedSignature;
use crate::error::{EmbeddingError, EmbeddingResult};

/// Where the tool writes a signature by default, and where we look for one.
pub const DEFAULT_SIGNATURE_FILE: &str = "model.sig";

/// Whether a model must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureMode {
    /// The signature file must exist at the revision and verify (the default).
    #[default]
    Required,
    /// A signature that exists must verify; a model without one is accepted unsigned.
    IfPresent,
}

impl SignatureMode {
    /// The manifest's spelling: `required`, `if-present`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::Required => "required",
            SignatureMode::IfPresent => "if-present",
        }
    }

    /// Parses the manifest's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "required" => Some(SignatureMode::Required),
            "if-present" => Some(SignatureMode::IfPresent),
            _ => None,
        }
    }
}

/// Who may sign, as the manifest names it (paths to PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerPolicy {
    /// Signed by the private key of this EC public key (`model_signing sign key`).
    PublicKey {
        /// PEM file with a `PUBLIC KEY` block.
        path: PathBuf,
    },
    /// Signed with a certificate that chains to this root (`model_signing sign certificate`)
    /// and names this identity.
    Certificate {
        /// PEM file with the trusted root certificate(s).
        root: PathBuf,
        /// An e-mail, URI or DNS subject alternative name of the signing certificate, its
        /// subject's common name, or its whole subject (`CN=release,O=Example`).
        identity: String,
    },
}

/// A model's signature policy: plain data from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// Path of the signature in the repo, fetched at the same commit (default `model.sig`).
    pub file: String,
    /// Who may sign.
    pub signer: SignerPolicy,
    /// `required` or `if-present`.
    pub mode: SignatureMode,
}

impl SignaturePolicy {
    /// Reads the key or root the policy names (blocking: run it off the async threads).
    /// Relative paths are taken from `base_dir` (the manifest's folder) when given.
    pub fn verifier(&self, base_dir: Option<&Path>) -> EmbeddingResult<SignatureVerifier> {
        let resolve = |path: &Path| match base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        };
        let read = |path: &Path| {
            let bytes =
                std::fs::read(path).map_err(|e| EmbeddingError::SignatureTrustMaterial {
                    source_name: path.display().to_string(),
                    reason: format!("cannot read it: {e}"),
                })?;
            if bytes.len() > 1 << 20 {
                return Err(EmbeddingError::SignatureTrustMaterial {
                    source_name: path.display().to_string(),
                    reason: "it is larger than 1 MiB; a PEM key or root is a few KiB".to_owned(),
                });
            }
            Ok(bytes)
        };
        let verifier = match &self.signer {
            SignerPolicy::PublicKey { path } => {
                let path = resolve(path);
                SignatureVerifier::public_key_pem(&read(&path)?, &path.display().to_string())?
            }
            SignerPolicy::Certificate { root, identity } => {
                let root = resolve(root);
                SignatureVerifier::certificate_root_pem(
                    &read(&root)?,
                    &root.display().to_string(),
                    identity,
                )?
            }
        };
        Ok(verifier
            .with_signature_file(&self.file)
            .with_mode(self.mode))
    }
}

#[derive(Debug, Clone)]
enum TrustedSigner {
    PublicKey(EcKey),
    Certificate {
        roots: Vec<Vec<u8>>,
        root_label: String,
        identity: String,
    },
}

/// A loaded policy: the trusted key or root, the identity, where the signature is and
/// whether it is required. Cheap to clone; holds only public material.
#[derive(Debug, Clone)]
pub struct SignatureVerifier {
    signer: TrustedSigner,
    signature_file: String,
    mode: SignatureMode,
}

impl SignatureVerifier {
    /// Trusts the EC public key in `pem` (a `PUBLIC KEY` block; text around it is skipped).
    /// `label` names it in errors (its path).
    pub fn public_key_pem(pem: &[u8], label: &str) -> EmbeddingResult<Self> {
        let key =
            EcKey::from_pem(pem).map_err(|reason| EmbeddingError::SignatureTrustMaterial {
                source_name: label.to_owned(),
                reason,
            })?;
        Ok(SignatureVerifier {
            signer: TrustedSigner::PublicKey(key),
            signature_file: DEFAULT_SIGNATURE_FILE.to_owned(),
            mode: SignatureMode::Required,
        })
    }

    /// Trusts certificates that chain to a root in `pem` and name `identity`. `label` names
    /// the root file in errors.
    pub fn certificate_root_pem(pem: &[u8], label: &str, identity: &str) -> EmbeddingResult<Self> {
        let roots = crypto::roots_from_pem(pem).map_err(|reason| {
            EmbeddingError::SignatureTrustMaterial {
                source_name: label.to_owned(),
                reason,
            }
        })?;
        if identity.trim().is_empty() {
            return Err(EmbeddingError::SignatureTrustMaterial {
                source_name: label.to_owned(),
                reason: "the identity the signing certificate must name is empty".to_owned(),
            });
        }
        Ok(SignatureVerifier {
            signer: TrustedSigner::Certificate {
                roots,
                root_label: label.to_owned(),
                identity: identity.to_owned(),
            },
            signature_file: DEFAULT_SIGNATURE_FILE.to_owned(),
            mode: SignatureMode::Required,
        })
    }

    /// The same verifier for a signature at another repo path.
    pub fn with_signature_file(mut self, file: &str) -> Self {
        file.clone_into(&mut self.signature_file);
        self
    }

    /// The same verifier with another mode.
    pub fn with_mode(mut self, mode: SignatureMode) -> Self {
        self.mode = mode;
        self
    }

    /// Path of the signature in the repo.
    pub fn signature_file(&self) -> &str {
        &self.signature_file
    }

    /// `required` or `if-present`.
    pub fn mode(&self) -> SignatureMode {
        self.mode
    }

    /// Verifies a signature for a file set (see [`super::verify_model_signature`]).
    pub fn verify(
        &self,
        bundle_json: &[u8],
        files: &[(&str, &str)],
    ) -> EmbeddingResult<VerifiedSignature> {
        super::verify_model_signature(bundle_json, self, files)
    }

    /// The whole decision for a model: its signature file's bytes if the repo has one at the
    /// revision. `Ok(None)` means unsigned and accepted (`if-present` only); a missing
    /// signature under `required` is [`EmbeddingError::SignatureMissing`].
    pub fn verify_if_present(
        &self,
        bundle_json: Option<&[u8]>,
        files: &[(&str, &str)],
    ) -> EmbeddingResult<Option<VerifiedSignature>> {
        match (bundle_json, self.mode) {
            (Some(bytes), _) => self.verify(bytes, files).map(Some),
            (None, SignatureMode::IfPresent) => Ok(None),
            (None, SignatureMode::Required) => Err(EmbeddingError::SignatureMissing {
                signature: self.signature_file.clone(),
            }),
        }
    }

    /// Checks the bundle's signature under the trusted key or chain; returns the signer in
    /// words and its key's SHA-256.
    pub(super) fn check_signer(&self, bundle: &Bundle) -> EmbeddingResult<(String, String)> {
        let signature = || self.signature_file.clone();
        if bundle.material == Material::Keyless {
            return Err(EmbeddingError::SignatureUnsupported {
                signature: signature(),
                reason: "it is a keyless Sigstore signature (a Fulcio certificate and a Rekor entry), which is not supported: checking it needs Sigstore's online trust root. Sign with `model_signing sign key` or `model_signing sign certificate` and name the public key or certificate root in the policy".to_owned(),
            });
        }
        match &self.signer {
            TrustedSigner::PublicKey(key) => {
                if let Material::PublicKey { hint: Some(hint) } = &bundle.material {
                    if !hint.eq_ignore_ascii_case(&key.hint()) {
                        return Err(EmbeddingError::SignatureWrongSigner {
                            signature: signature(),
                            expected: key.describe(),
                            reason: "the bundle names another public key (its key hint differs): it was signed by another key".to_owned(),
                        });
                    }
                }
                if !key.verifies_dsse(&bundle.payload, &bundle.signature, false) {
                    return Err(EmbeddingError::SignatureBadSignature {
                        signature: signature(),
                        signer: key.describe(),
                    });
                }
                Ok((key.describe(), key.fingerprint()))
            }
            TrustedSigner::Certificate {
                roots,
                root_label,
                identity,
            } => {
                let Material::CertificateChain(chain) = &bundle.material else {
                    return Err(EmbeddingError::SignatureWrongSigner {
                        signature: signature(),
                        expected: format!("a certificate under the root in {root_label}"),
                        reason: "it was signed with a bare key (no certificate), but the policy requires a certificate".to_owned(),
                    });
                };
                let leaf = crypto::verify_chain(chain, roots).map_err(|reason| {
                    EmbeddingError::SignatureUntrustedCertificate {
                        signature: signature(),
                        root: root_label.clone(),
                        reason,
                    }
                })?;
                if !leaf.names.iter().any(|n| n == identity) {
                    return Err(EmbeddingError::SignatureIdentityMismatch {
                        signature: signature(),
                        expected: identity.clone(),
                        found: leaf.names,
                    });
                }
                if !leaf
                    .key
                    .verifies_dsse(&bundle.payload, &bundle.signature, true)
                {
                    return Err(EmbeddingError::SignatureBadSignature {
                        signature: signature(),
                        signer: leaf.description,
                    });
                }
                Ok((leaf.description, leaf.key.fingerprint()))
            }
        }
    }
}
