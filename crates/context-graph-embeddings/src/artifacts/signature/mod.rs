//! Who made these bytes: OpenSSF model signatures (`sigstore/model-transparency`, PyPI
//! `model-signing`, CLI `model_signing`), checked against the digests we computed. Pure
//! parsing and verification: no network, no cache, no file I/O except loading the operator's
//! key or root certificate ([`SignaturePolicy::verifier`], blocking).
//!
//! A signature (`model.sig` at the repo root by default) is a Sigstore bundle v0.3 whose DSSE
//! envelope carries an in-toto Statement v1 with predicate type
//! `https://model_signing/signature/v1.0`: one `resources` entry (`name`, `algorithm`
//! `sha256`, `digest`) per file and how the files were chosen (`serialization`, with
//! `ignore_paths`). [`verify_model_signature`] decides, the way the official tool's
//! `model_signing verify key|certificate` does:
//!
//! - `bundle.rs`: the bundle's shape (media type, verification material, one DSSE signature).
//! - `crypto.rs`: the signer. The DSSE signature over the PAE must verify under the policy's
//!   EC public key (P-256, P-384 or P-521, hashed with SHA-256/384/512 by curve, as the tool
//!   does; pre-1.0 signatures over the tool's old PAE are accepted as it accepts them), or
//!   under the leaf of an X.509 chain that leads to the operator's root, checked at the
//!   leaf's `notBefore` (the tool's signing time), whose leaf may sign (key usage
//!   `digitalSignature` or extended key usage `codeSigning`) and names the identity the
//!   policy requires (an e-mail, URI or DNS subject alternative name, the subject's common
//!   name or the whole subject, e.g. `CN=release`). The tool itself checks no identity in
//!   certificate mode; the policy does, so a root that issues to many cannot sign for all.
//! - `statement.rs`: the statement (type, predicate type, the subject digest over all
//!   resource digests) and the comparison with our files: every file of the set is listed
//!   with exactly the SHA-256 we computed, and none is missing from it. The signature file,
//!   the git files the tool skips (`.git`, `.gitattributes`, `.github`, `.gitignore`) and the
//!   statement's `ignore_paths` are not compared. Files the signature lists that the set
//!   does not take (a repo's other formats) are reported, not refused: each file we use is
//!   signed, and the manifest, not the signer, decides which files a model takes.
//! - `policy.rs`: the policy as plain data (where the signature is, who may sign, `required`
//!   or `if-present`) and loading the key or root it names.
//!
//! Keyless Sigstore signatures (a Fulcio certificate and a Rekor entry) are refused with
//! [`EmbeddingError::SignatureUnsupported`]: checking them offline needs the public good
//! instance's trusted root (distributed by TUF, fetched online by the tool) and a Rekor
//! inclusion proof check; the Rust implementations of that (sigstore-rs, sigstore-rust)
//! are pre-1.0 and still changing their verification API after audit findings, and a
//! half-done keyless check would be worse than a clear refusal. Key and certificate
//! signatures, which need nothing online, cover an operator's own publishing.
//!
//! Crypto crates: `aws-lc-rs` (already the TLS stack's provider through rustls, so no new
//! crypto code) verifies the ECDSA signatures; `x509-parser` (already in the lock file: the
//! tests' `rcgen` builds it with the same `verify-aws` feature, which checks certificate
//! signatures through the same `aws-lc-rs`) parses certificates and PEM; the shipped binary
//! gains it and its DER parsers (`asn1-rs`, `der-parser`, `oid-registry`, `time`,
//! `num-bigint`), no new crypto. The RustCrypto `p256`/`p384`/`ecdsa`/`x509-cert` stack would
//! have added a second implementation of the same curves and crates no other part of the
//! workspace uses.
//!
//! [`EmbeddingError::SignatureUnsupported`]: crate::EmbeddingError::SignatureUnsupported

mod bundle;
mod crypto;
mod policy;
mod statement;

pub use policy::{
    SignatureMode, SignaturePolicy, SignatureVerifier, SignerPolicy, DEFAULT_SIGNATURE_FILE,
};
pub use statement::VerifiedSignature;

use crate::error::{EmbeddingError, EmbeddingResult};

/// Largest signature file we parse (16 MiB: a statement listing 100 000 files is about 15 MB).
pub const MAX_SIGNATURE_BYTES: usize = 16 << 20;

/// Verifies an OpenSSF model signature (`bundle_json`, the bytes of `model.sig`) for a file
/// set: the signer must be the one `verifier` trusts and every file of `files` (repo path,
/// SHA-256 in hex that we computed) must be listed with that digest. Files the signature does
/// not cover by the tool's rules (the signature file itself, git files, its `ignore_paths`)
/// are skipped and reported. Every failure is its own [`EmbeddingError`] variant naming the
/// file (with the signed and the computed digest) or the signer.
pub fn verify_model_signature(
    bundle_json: &[u8],
    verifier: &SignatureVerifier,
    files: &[(&str, &str)],
) -> EmbeddingResult<VerifiedSignature> {
    if bundle_json.len() > MAX_SIGNATURE_BYTES {
        return Err(EmbeddingError::SignatureFormat {
            signature: verifier.signature_file().to_owned(),
            reason: format!(
                "it is {} bytes, more than the {MAX_SIGNATURE_BYTES} a model signature may have",
                bundle_json.len()
            ),
        });
    }
    let parsed = bundle::parse(bundle_json).map_err(|reason| EmbeddingError::SignatureFormat {
        signature: verifier.signature_file().to_owned(),
        reason,
    })?;
    let signer = verifier.check_signer(&parsed)?;
    let manifest =
        statement::parse(&parsed.payload_type, &parsed.payload).map_err(|e| match e {
            statement::StatementError::Format(reason) => EmbeddingError::SignatureFormat {
                signature: verifier.signature_file().to_owned(),
                reason,
            },
            statement::StatementError::Unsupported(reason) => {
                EmbeddingError::SignatureUnsupported {
                    signature: verifier.signature_file().to_owned(),
                    reason,
                }
            }
        })?;
    manifest.compare(files, verifier.signature_file(), signer)
}
