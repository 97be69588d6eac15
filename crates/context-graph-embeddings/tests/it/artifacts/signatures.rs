//! OpenSSF model signatures: the verifier against signatures the official tool made.
//!
//! - The recorded vectors (`tests/fixtures/oms-vectors`, from sigstore/model-transparency's
//!   own test data, releases 1.0.0 to 1.1.0; `CG_OMS_VECTORS` overrides the folder): each key
//!   and certificate signature verifies, and is refused after one byte changes in a copy; the
//!   keyless ones give the documented "not supported" error.
//! - Fresh signatures: a key pair made by `openssl` and a CA and leaf made by `rcgen`, a small
//!   folder signed by `model_signing sign key|certificate` from the test venv (`CG_TEST_PYTHON`,
//!   default `target/pyenv/bin/python`; `scripts/setup-python` installs it). Our verdict and
//!   `model_signing verify`'s agree on each case: as signed, a byte changed in a file, a file
//!   added, a signature by another key, a leaf from another CA. `CG_SKIP_PYTHON_TESTS=1` skips
//!   the tests that need the tool; without it a missing tool or `openssl` fails them.

// The skip notice goes to stderr; the verifier's error is the crate's one (large) error type.
#![allow(clippy::print_stderr, clippy::result_large_err)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use context_graph_embeddings::artifacts::{
    verify_model_signature, SignatureMode, SignatureVerifier, VerifiedSignature,
};
use context_graph_embeddings::EmbeddingError;
use sha2::{Digest, Sha256};

const DEFAULT_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oms-vectors");
const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");

fn vectors() -> PathBuf {
    std::env::var_os("CG_OMS_VECTORS").map_or_else(|| PathBuf::from(DEFAULT_VECTORS), PathBuf::from)
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// Every regular file under `dir` as (repo path, SHA-256), sorted, minus `skip`.
fn digests(dir: &Path, skip: &[&str]) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((name, sha256_file(&path)));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.retain(|(name, _)| !skip.contains(&name.as_str()));
    out.sort();
    out
}

fn verify(
    dir: &Path,
    verifier: &SignatureVerifier,
    skip: &[&str],
) -> Result<VerifiedSignature, EmbeddingError> {
    let bundle = fs::read(dir.join("model.sig")).unwrap();
    let files = digests(dir, skip);
    let pairs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_str()))
        .collect();
    verify_model_signature(&bundle, verifier, &pairs)
}

fn key_verifier(pem: &Path) -> SignatureVerifier {
    SignatureVerifier::public_key_pem(&fs::read(pem).unwrap(), &pem.display().to_string()).unwrap()
}

fn certificate_verifier(root: &Path, identity: &str) -> SignatureVerifier {
    SignatureVerifier::certificate_root_pem(
        &fs::read(root).unwrap(),
        &root.display().to_string(),
        identity,
    )
    .unwrap()
}

/// The vector folders signed with a key or a certificate, how each verifies, and which files
/// the tool is told to ignore (`--ignore-paths`) for the 1.0.x ones.
struct Vector {
    name: &'static str,
    certificate: bool,
    /// Files the tool's command line ignores (the 1.1.0 signatures list `ignore-me` themselves).
    cli_ignored: &'static [&'static str],
    signed: &'static [&'static str],
}

const VECTORS: [Vector; 6] = [
    Vector {
        name: "v1.0.0-certificate",
        certificate: true,
        cli_ignored: &[],
        signed: &["signme-1", "signme-2"],
    },
    Vector {
        name: "v1.0.1-certificate",
        certificate: true,
        cli_ignored: &["ignore-me"],
        signed: &["signme-1", "signme-2"],
    },
    Vector {
        name: "v1.1.0-certificate",
        certificate: true,
        cli_ignored: &[],
        signed: &["signme-1", "signme-2"],
    },
    Vector {
        name: "v1.0.0-elliptic-key",
        certificate: false,
        cli_ignored: &[],
        signed: &["signme-1"],
    },
    Vector {
        name: "v1.0.1-elliptic-key",
        certificate: false,
        cli_ignored: &["ignore-me"],
        signed: &["signme-1", "signme-2"],
    },
    Vector {
        name: "v1.1.0-elliptic-key",
        certificate: false,
        cli_ignored: &[],
        signed: &["signme-1", "signme-2"],
    },
];

/// The identity of the vectors' signing certificate (its subject; it has no alternative names).
const VECTOR_IDENTITY: &str = "CN=intermediate-ca";

fn vector_verifier(vector: &Vector) -> SignatureVerifier {
    let keys = vectors().join("keys");
    if vector.certificate {
        certificate_verifier(&keys.join("ca-cert.pem"), VECTOR_IDENTITY)
    } else {
        key_verifier(&keys.join("signing-key-pub.pem"))
    }
}

/// A writable copy of a vector folder.
fn copy_vector(name: &str) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join(name);
    fs::create_dir(&dir).unwrap();
    for entry in fs::read_dir(vectors().join(name)).unwrap() {
        let path = entry.unwrap().path();
        let target = dir.join(path.file_name().unwrap());
        fs::write(&target, fs::read(&path).unwrap()).unwrap();
    }
    (temp, dir)
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// Changes one base64 character in the middle of the DSSE payload of a bundle (the statement
/// stays decodable, so it is the signature check that must refuse it).
fn tamper_payload(sig: &Path) {
    let text = fs::read_to_string(sig).unwrap();
    let start = text.find("\"payload\":").expect("payload") + 40;
    let mut bytes = text.into_bytes();
    let at = (start..bytes.len())
        .find(|&i| bytes[i].is_ascii_alphabetic())
        .unwrap();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    fs::write(sig, bytes).unwrap();
}

#[test]
fn every_key_and_certificate_vector_verifies_as_the_tool_does() {
    for vector in &VECTORS {
        let dir = vectors().join(vector.name);
        let verified = verify(&dir, &vector_verifier(vector), vector.cli_ignored)
            .unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        assert_eq!(verified.signed_files, vector.signed, "{}", vector.name);
        assert!(
            verified.ignored_files.contains(&"model.sig".to_owned()),
            "{}: {verified:?}",
            vector.name
        );
        if vector.name.starts_with("v1.1.0") {
            // The signature itself says to ignore `ignore-me`.
            assert!(
                verified.ignored_files.contains(&"ignore-me".to_owned()),
                "{verified:?}"
            );
        }
        if vector.certificate {
            assert_eq!(
                verified.signer,
                "certificate `CN=intermediate-ca` issued by `CN=intermediate-ca` under root `CN=root-ca`"
            );
        } else {
            assert!(
                verified.signer.starts_with("P-384 key sha256:"),
                "{}",
                verified.signer
            );
        }
        // The vectors' bare key is the certificate's leaf key: one fingerprint for both
        // (`openssl pkey -pubin -in keys/signing-key-pub.pem -outform der | sha256sum`).
        assert_eq!(
            verified.signer_key_sha256,
            "c1e49d63327f85c7e2971aefd30b5a0d1c6b9b5e1a892e7f5fba995adace816d"
        );
    }
}

#[test]
fn every_vector_is_refused_after_one_byte_changes() {
    for vector in &VECTORS {
        let verifier = vector_verifier(vector);
        // A byte of a signed file.
        let (_temp, dir) = copy_vector(vector.name);
        let signed_digest = sha256_file(&dir.join("signme-1"));
        flip_byte(&dir.join("signme-1"), 3);
        let error = verify(&dir, &verifier, vector.cli_ignored).unwrap_err();
        match &error {
            EmbeddingError::SignatureDigestMismatch {
                path,
                signed,
                actual,
                ..
            } => {
                assert_eq!(path, "signme-1", "{}", vector.name);
                assert_eq!(signed, &signed_digest);
                assert_eq!(actual, &sha256_file(&dir.join("signme-1")));
            }
            other => panic!("{}: expected a digest mismatch, got {other:?}", vector.name),
        }
        // A byte of the signed statement.
        let (_temp, dir) = copy_vector(vector.name);
        tamper_payload(&dir.join("model.sig"));
        let error = verify(&dir, &verifier, vector.cli_ignored).unwrap_err();
        assert!(
            matches!(error, EmbeddingError::SignatureBadSignature { .. }),
            "{}: {error:?}",
            vector.name
        );
        // A byte of the signature value itself (its first base64 character after `"sig":"`).
        let (_temp, dir) = copy_vector(vector.name);
        let text = fs::read_to_string(dir.join("model.sig")).unwrap();
        let at = text.find("\"sig\":").unwrap() + 12;
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'Q' { b'R' } else { b'Q' };
        fs::write(dir.join("model.sig"), bytes).unwrap();
        let error = verify(&dir, &verifier, vector.cli_ignored).unwrap_err();
        assert!(
            matches!(error, EmbeddingError::SignatureBadSignature { .. }),
            "{}: {error:?}",
            vector.name
        );
    }
}

#[test]
fn keyless_vectors_are_refused_as_not_supported() {
    let keys = vectors().join("keys");
    for name in ["v1.0.0-sigstore", "v1.0.1-sigstore", "v1.1.0-sigstore"] {
        let dir = vectors().join(name);
        for verifier in [
            key_verifier(&keys.join("signing-key-pub.pem")),
            certificate_verifier(&keys.join("ca-cert.pem"), VECTOR_IDENTITY),
        ] {
            let error = verify(&dir, &verifier, &["ignore-me"]).unwrap_err();
            assert!(
                matches!(error, EmbeddingError::SignatureUnsupported { .. }),
                "{name}: {error:?}"
            );
            let text = error.to_string();
            assert!(text.contains("keyless Sigstore signature"), "{text}");
            assert!(text.contains("model_signing sign key"), "{text}");
        }
    }
}

#[test]
fn a_vector_file_the_signature_omits_is_refused_as_the_tool_refuses_it() {
    // v1.0.1 signatures do not list `ignore-me`; without `--ignore-paths` the tool refuses the
    // folder ("Extra files found"), and so do we.
    let vector = &VECTORS[4];
    let error = verify(&vectors().join(vector.name), &vector_verifier(vector), &[]).unwrap_err();
    match &error {
        EmbeddingError::SignatureUnlistedFile { path, .. } => assert_eq!(path, "ignore-me"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_vector_certificate_must_name_the_identity_and_reach_a_self_signed_root() {
    let keys = vectors().join("keys");
    let dir = vectors().join("v1.1.0-certificate");
    let error = verify(
        &dir,
        &certificate_verifier(&keys.join("ca-cert.pem"), "release@example.com"),
        &[],
    )
    .unwrap_err();
    match &error {
        EmbeddingError::SignatureIdentityMismatch {
            expected, found, ..
        } => {
            assert_eq!(expected, "release@example.com");
            assert!(found.contains(&"intermediate-ca".to_owned()), "{found:?}");
            assert!(found.contains(&VECTOR_IDENTITY.to_owned()), "{found:?}");
        }
        other => panic!("{other:?}"),
    }
    // The intermediate is not a root: the tool says "unable to get issuer certificate".
    let error = verify(
        &dir,
        &certificate_verifier(&keys.join("int-ca-cert.pem"), VECTOR_IDENTITY),
        &[],
    )
    .unwrap_err();
    match &error {
        EmbeddingError::SignatureUntrustedCertificate { reason, .. } => {
            assert!(
                reason.contains("`CN=root-ca`, which is neither in the bundle nor a trusted root"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A key signature where a certificate is required.
    let error = verify(
        &vectors().join("v1.1.0-elliptic-key"),
        &certificate_verifier(&keys.join("ca-cert.pem"), VECTOR_IDENTITY),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(error, EmbeddingError::SignatureWrongSigner { .. }),
        "{error:?}"
    );
    // Roots and keys are not interchangeable.
    let not_a_key = SignatureVerifier::public_key_pem(
        &fs::read(keys.join("ca-cert.pem")).unwrap(),
        "ca-cert.pem",
    )
    .unwrap_err();
    assert!(
        not_a_key
            .to_string()
            .contains("no `-----BEGIN PUBLIC KEY-----` block"),
        "{not_a_key}"
    );
}

#[test]
fn a_missing_signature_is_refused_only_when_required() {
    let keys = vectors().join("keys");
    let verifier = key_verifier(&keys.join("signing-key-pub.pem"));
    let files = [(
        "signme-1",
        "bc9a717db6064a32cbe9eae6fc40651dd6d36ef1757183f590eff2b1765d7ebc",
    )];
    let error = verifier.verify_if_present(None, &files).unwrap_err();
    assert!(
        matches!(error, EmbeddingError::SignatureMissing { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("model.sig is required"),
        "{error}"
    );
    let lenient = verifier.clone().with_mode(SignatureMode::IfPresent);
    assert_eq!(lenient.verify_if_present(None, &files).unwrap(), None);
    // Present: checked under either mode.
    let bundle = fs::read(vectors().join("v1.1.0-elliptic-key/model.sig")).unwrap();
    let bad = [("signme-1", "00".repeat(32))];
    let bad: Vec<(&str, &str)> = bad.iter().map(|(p, d)| (*p, d.as_str())).collect();
    assert!(lenient.verify_if_present(Some(&bundle), &bad).is_err());
}

// ---- The official tool on fresh keys and certificates -------------------------------------

/// The test venv's Python with `model_signing`, or `None` when `CG_SKIP_PYTHON_TESTS=1`.
fn tool() -> Option<PathBuf> {
    let exe = std::env::var_os("CG_TEST_PYTHON")
        .map_or_else(|| PathBuf::from(DEFAULT_PYTHON), PathBuf::from);
    let usable = Command::new(&exe)
        .args(["-c", "import model_signing, OpenSSL"])
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        return Some(exe);
    }
    if std::env::var("CG_SKIP_PYTHON_TESTS").is_ok_and(|v| v == "1") {
        eprintln!(
            "skipping: no Python with model_signing at {}; CG_SKIP_PYTHON_TESTS=1",
            exe.display()
        );
        return None;
    }
    panic!(
        "no Python with model_signing and pyopenssl at {} (CG_TEST_PYTHON, default target/pyenv/bin/python): \
         run scripts/setup-python, or set CG_SKIP_PYTHON_TESTS=1 to skip these tests",
        exe.display()
    );
}

/// Runs `python -m model_signing ARGS`; returns (success, output).
fn model_signing(python: &Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = Command::new(python)
        .args(["-m", "model_signing"])
        .args(args)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run model_signing");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn openssl(args: &[&std::ffi::OsStr]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed for the signature tests");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An EC P-256 key pair made by openssl: (private PEM, public PEM).
fn openssl_key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    openssl(&[
        "ecparam".as_ref(),
        "-name".as_ref(),
        "prime256v1".as_ref(),
        "-genkey".as_ref(),
        "-noout".as_ref(),
        "-out".as_ref(),
        private.as_os_str(),
    ]);
    openssl(&[
        "ec".as_ref(),
        "-in".as_ref(),
        private.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);
    (private, public)
}

/// A CA and a code-signing leaf for `identity` made by rcgen: (CA PEM, leaf PEM, leaf key PEM).
fn rcgen_ca_and_leaf(dir: &Path, name: &str, identity: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{name} model signing CA"),
    );
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "release");
    leaf_params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(identity.try_into().unwrap())];
    leaf_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-leaf.pem")),
        dir.join(format!("{name}-leaf-key.pem")),
    );
    fs::write(&paths.0, ca_cert.pem()).unwrap();
    fs::write(&paths.1, leaf.pem()).unwrap();
    fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

/// A small model folder: a weight file, configs, a tokenizer in a subfolder, `.gitattributes`.
fn model_folder(root: &Path) -> PathBuf {
    let dir = root.join("model");
    fs::create_dir_all(dir.join("onnx")).unwrap();
    let weights: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(dir.join("model.safetensors"), weights).unwrap();
    fs::write(dir.join("config.json"), br#"{"hidden_size": 384}"#).unwrap();
    fs::write(dir.join("onnx/model.onnx"), b"onnx bytes").unwrap();
    fs::write(dir.join(".gitattributes"), b"*.safetensors filter=lfs\n").unwrap();
    dir
}

/// Copies a folder (files only, one level of subfolders is enough here).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

fn sign_key(python: &Path, dir: &Path, private: &Path) {
    let sig = dir.join("model.sig");
    let (ok, out) = model_signing(
        python,
        &[
            "sign".as_ref(),
            "key".as_ref(),
            dir.as_os_str(),
            "--private_key".as_ref(),
            private.as_os_str(),
            "--signature".as_ref(),
            sig.as_os_str(),
        ],
    );
    assert!(ok, "model_signing sign key: {out}");
}

fn sign_certificate(python: &Path, dir: &Path, leaf: &Path, leaf_key: &Path, ca: &Path) {
    let sig = dir.join("model.sig");
    let (ok, out) = model_signing(
        python,
        &[
            "sign".as_ref(),
            "certificate".as_ref(),
            dir.as_os_str(),
            "--private_key".as_ref(),
            leaf_key.as_os_str(),
            "--signing_certificate".as_ref(),
            leaf.as_os_str(),
            "--certificate_chain".as_ref(),
            ca.as_os_str(),
            "--signature".as_ref(),
            sig.as_os_str(),
        ],
    );
    assert!(ok, "model_signing sign certificate: {out}");
}

fn tool_verifies_key(python: &Path, dir: &Path, public: &Path) -> (bool, String) {
    let sig = dir.join("model.sig");
    model_signing(
        python,
        &[
            "verify".as_ref(),
            "key".as_ref(),
            dir.as_os_str(),
            "--public_key".as_ref(),
            public.as_os_str(),
            "--signature".as_ref(),
            sig.as_os_str(),
        ],
    )
}

fn tool_verifies_certificate(python: &Path, dir: &Path, ca: &Path) -> (bool, String) {
    let sig = dir.join("model.sig");
    model_signing(
        python,
        &[
            "verify".as_ref(),
            "certificate".as_ref(),
            dir.as_os_str(),
            "--certificate_chain".as_ref(),
            ca.as_os_str(),
            "--signature".as_ref(),
            sig.as_os_str(),
        ],
    )
}

/// Each case of a signed folder: a name, how to damage a copy, and what we must say.
fn tampered_copies(root: &Path, signed: &Path) -> Vec<(&'static str, PathBuf)> {
    let changed = root.join("changed-byte");
    copy_dir(signed, &changed);
    flip_byte(&changed.join("config.json"), 5);
    let added = root.join("added-file");
    copy_dir(signed, &added);
    fs::write(added.join("onnx/extra.onnx"), b"not signed").unwrap();
    vec![("changed-byte", changed), ("added-file", added)]
}

fn expect_refusal(case: &str, error: &EmbeddingError) {
    match (case, error) {
        ("changed-byte", EmbeddingError::SignatureDigestMismatch { path, .. }) => {
            assert_eq!(path, "config.json")
        }
        ("added-file", EmbeddingError::SignatureUnlistedFile { path, .. }) => {
            assert_eq!(path, "onnx/extra.onnx")
        }
        _ => panic!("{case}: unexpected {error:?}"),
    }
}

#[test]
fn the_official_tool_and_we_agree_on_key_signatures() {
    let Some(python) = tool() else { return };
    let temp = tempfile::tempdir().unwrap();
    let (private, public) = openssl_key_pair(temp.path(), "publisher");
    let signed = model_folder(temp.path());
    sign_key(&python, &signed, &private);
    let verifier = key_verifier(&public);

    let verified = verify(&signed, &verifier, &[]).unwrap();
    assert_eq!(
        verified.signed_files,
        ["config.json", "model.safetensors", "onnx/model.onnx"]
    );
    assert_eq!(verified.ignored_files, [".gitattributes", "model.sig"]);
    let (ok, out) = tool_verifies_key(&python, &signed, &public);
    assert!(ok && out.contains("Verification succeeded"), "{out}");

    for (case, dir) in tampered_copies(temp.path(), &signed) {
        let error = verify(&dir, &verifier, &[]).unwrap_err();
        expect_refusal(case, &error);
        let (ok, out) = tool_verifies_key(&python, &dir, &public);
        assert!(!ok, "{case}: the tool accepted it: {out}");
    }

    // Signed by another key: the bundle's key hint names the other key, and its signature
    // does not verify under ours.
    let (other_private, _) = openssl_key_pair(temp.path(), "intruder");
    let other = temp.path().join("other-key");
    copy_dir(&signed, &other);
    sign_key(&python, &other, &other_private);
    let error = verify(&other, &verifier, &[]).unwrap_err();
    assert!(
        matches!(error, EmbeddingError::SignatureWrongSigner { .. }),
        "{error:?}"
    );
    let (ok, out) = tool_verifies_key(&python, &other, &public);
    assert!(!ok && out.contains("Key mismatch"), "{out}");
}

#[test]
fn the_official_tool_and_we_agree_on_certificate_signatures() {
    let Some(python) = tool() else { return };
    let temp = tempfile::tempdir().unwrap();
    let identity = "release@example.com";
    let (ca, leaf, leaf_key) = rcgen_ca_and_leaf(temp.path(), "trusted", identity);
    let signed = model_folder(temp.path());
    sign_certificate(&python, &signed, &leaf, &leaf_key, &ca);
    let verifier = certificate_verifier(&ca, identity);

    let verified = verify(&signed, &verifier, &[]).unwrap();
    assert_eq!(
        verified.signed_files,
        ["config.json", "model.safetensors", "onnx/model.onnx"]
    );
    assert!(
        verified.signer.contains("CN=release"),
        "{}",
        verified.signer
    );
    assert!(
        verified
            .signer
            .contains("under root `CN=trusted model signing CA`"),
        "{}",
        verified.signer
    );
    let (ok, out) = tool_verifies_certificate(&python, &signed, &ca);
    assert!(ok && out.contains("Verification succeeded"), "{out}");
    // The subject's common name names the signer too; another identity does not.
    assert!(verify(&signed, &certificate_verifier(&ca, "release"), &[]).is_ok());
    let error = verify(
        &signed,
        &certificate_verifier(&ca, "someone@example.com"),
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(error, EmbeddingError::SignatureIdentityMismatch { .. }),
        "{error:?}"
    );

    for (case, dir) in tampered_copies(temp.path(), &signed) {
        let error = verify(&dir, &verifier, &[]).unwrap_err();
        expect_refusal(case, &error);
        let (ok, out) = tool_verifies_certificate(&python, &dir, &ca);
        assert!(!ok, "{case}: the tool accepted it: {out}");
    }

    // A leaf from another CA (with the same identity): not under our root.
    let (other_ca, other_leaf, other_key) = rcgen_ca_and_leaf(temp.path(), "rogue", identity);
    let other = temp.path().join("other-ca");
    copy_dir(&signed, &other);
    sign_certificate(&python, &other, &other_leaf, &other_key, &other_ca);
    let error = verify(&other, &verifier, &[]).unwrap_err();
    match &error {
        EmbeddingError::SignatureUntrustedCertificate { reason, .. } => {
            assert!(reason.contains("rogue model signing CA"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let (ok, out) = tool_verifies_certificate(&python, &other, &ca);
    assert!(!ok, "the tool accepted a leaf of another CA: {out}");
}

/// The messages a user sees, word for word (quoted in docs/signatures.md).
#[test]
fn refusals_name_the_file_or_the_signer_in_words() {
    let keys = vectors().join("keys");
    let key = key_verifier(&keys.join("signing-key-pub.pem"));
    let certificate = certificate_verifier(&keys.join("ca-cert.pem"), VECTOR_IDENTITY);
    let text = |result: Result<VerifiedSignature, EmbeddingError>| {
        result
            .unwrap_err()
            .to_string()
            .replace(&vectors().display().to_string(), "VECTORS")
    };
    let mut texts = Vec::new();

    let (_temp, dir) = copy_vector("v1.1.0-elliptic-key");
    flip_byte(&dir.join("signme-1"), 3);
    texts.push(text(verify(&dir, &key, &[])));

    let (_temp, dir) = copy_vector("v1.1.0-elliptic-key");
    fs::write(dir.join("added.txt"), b"x").unwrap();
    texts.push(text(verify(&dir, &key, &[])));

    let (_temp, dir) = copy_vector("v1.1.0-elliptic-key");
    tamper_payload(&dir.join("model.sig"));
    texts.push(text(verify(&dir, &key, &[])));

    let dir = vectors().join("v1.1.0-certificate");
    let wrong_identity = certificate_verifier(&keys.join("ca-cert.pem"), "release@example.com");
    texts.push(text(verify(&dir, &wrong_identity, &[])));
    let intermediate_as_root = certificate_verifier(&keys.join("int-ca-cert.pem"), VECTOR_IDENTITY);
    texts.push(text(verify(&dir, &intermediate_as_root, &[])));
    texts.push(text(verify(
        &vectors().join("v1.1.0-elliptic-key"),
        &certificate,
        &[],
    )));
    texts.push(text(verify(
        &vectors().join("v1.1.0-sigstore"),
        &key,
        &["ignore-me"],
    )));
    texts.push(key.verify_if_present(None, &[]).unwrap_err().to_string());
    let expected = [
        "signme-1: SHA-256 23ce8ec48aa603bf3d2a8f9196733fdb5009525c770f662ce86569164209833d, but the signature by P-384 key sha256:c1e49d63327f85c7 lists bc9a717db6064a32cbe9eae6fc40651dd6d36ef1757183f590eff2b1765d7ebc; the file is not the one that was signed",
        "added.txt is not listed in the signature by P-384 key sha256:c1e49d63327f85c7; a file the signer did not sign is not used",
        "signature model.sig does not verify under P-384 key sha256:c1e49d63327f85c7: the signed statement was changed after signing, or another key signed it",
        "signature model.sig: the signing certificate names `intermediate-ca`, `CN=intermediate-ca`, not the identity `release@example.com` the policy requires",
        "signature model.sig: its certificate is not trusted under the root in VECTORS/keys/int-ca-cert.pem: `CN=intermediate-ca` was issued by `CN=root-ca`, which is neither in the bundle nor a trusted root",
        "signature model.sig was not made by the trusted signer (a certificate under the root in VECTORS/keys/ca-cert.pem): it was signed with a bare key (no certificate), but the policy requires a certificate",
        "signature model.sig cannot be checked: it is a keyless Sigstore signature (a Fulcio certificate and a Rekor entry), which is not supported: checking it needs Sigstore's online trust root. Sign with `model_signing sign key` or `model_signing sign certificate` and name the public key or certificate root in the policy",
        "signature model.sig is required by the signature policy, but the repo has no such file at this revision; sign the model with the official tool (docs/signatures.md) or set the policy's mode to if-present",
    ];
    assert_eq!(texts, expected);
}

/// `model_signing verify` on a vector folder as its README says (the 1.0.0 key vector signed
/// the single file `signme-1`).
fn tool_verifies_vector(python: &Path, dir: &Path, vector: &Vector) -> (bool, String) {
    let keys = vectors().join("keys");
    let model = if vector.name == "v1.0.0-elliptic-key" {
        dir.join("signme-1")
    } else {
        dir.to_path_buf()
    };
    let (mode, flag, trust) = if vector.certificate {
        (
            "certificate",
            "--certificate_chain",
            keys.join("ca-cert.pem"),
        )
    } else {
        ("key", "--public_key", keys.join("signing-key-pub.pem"))
    };
    let sig = dir.join("model.sig");
    let mut args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        mode.into(),
        model.into(),
        flag.into(),
        trust.into(),
        "--signature".into(),
        sig.into(),
    ];
    for ignored in vector.cli_ignored {
        args.push("--ignore-paths".into());
        args.push(dir.join(ignored).into());
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    model_signing(python, &args)
}

#[test]
fn the_official_tool_and_we_agree_on_the_vectors() {
    let Some(python) = tool() else { return };
    for vector in &VECTORS {
        let (_temp, dir) = copy_vector(vector.name);
        let (ok, out) = tool_verifies_vector(&python, &dir, vector);
        assert!(
            ok && out.contains("Verification succeeded"),
            "{}: {out}",
            vector.name
        );
        assert!(verify(&dir, &vector_verifier(vector), vector.cli_ignored).is_ok());
        flip_byte(&dir.join("signme-1"), 3);
        let (ok, out) = tool_verifies_vector(&python, &dir, vector);
        assert!(
            !ok,
            "{}: the tool accepted a changed byte: {out}",
            vector.name
        );
        assert!(verify(&dir, &vector_verifier(vector), vector.cli_ignored).is_err());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Hostile bytes anywhere in a signature (its JSON, base64, certificates, statement) give
    /// an error or, when the change is outside what is signed and checked (a JSON field we do
    /// not read), the same verdict; never a panic, never another file list.
    #[test]
    fn a_signature_with_any_byte_changed_never_panics_or_changes_the_files(
        vector in 0usize..6, position in 0usize..8192, value in proptest::prelude::any::<u8>()
    ) {
        let vector = &VECTORS[vector];
        let dir = vectors().join(vector.name);
        let mut bundle = fs::read(dir.join("model.sig")).unwrap();
        let at = position % bundle.len();
        bundle[at] = value;
        let files = digests(&dir, vector.cli_ignored);
        let pairs: Vec<(&str, &str)> = files.iter().map(|(p, d)| (p.as_str(), d.as_str())).collect();
        if let Ok(verified) = verify_model_signature(&bundle, &vector_verifier(vector), &pairs) {
            proptest::prop_assert_eq!(verified.signed_files, vector.signed);
        }
    }
}

/// The signature check wired into `ensure`, `status` and `verify` (issue 26), as a new user
/// meets it: a publisher signs a folder with the official tool, the emulator serves it and
/// four tampered repos (one byte of `config.json` changed with the Hub's digests changed to
/// match, a file added that the signature does not list, a signature by another key, no
/// signature at all), and a manifest whose default policy requires the publisher's key (the
/// pattern list does not name `model.sig`: the policy puts it in the set). The signed model is
/// ready with its signer; each tampered one is refused with its own error and never reported
/// ready, by this process or the next; no weight file is hashed again for the signature; and a
/// read-only cache verifies the signature without writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_verifies_a_signed_repo_and_refuses_each_tampered_one() {
    use context_graph_embeddings::artifacts::test_support::times_hashed;
    use context_graph_embeddings::artifacts::{
        ArtifactManagerConfig, ModelArtifactManager, ReadinessState,
    };
    use context_graph_embeddings::ModelId;

    let Some(python) = tool() else { return };
    let temp = tempfile::tempdir().unwrap();
    let (private, public) = openssl_key_pair(temp.path(), "publisher");
    let (other_private, other_public) = openssl_key_pair(temp.path(), "other");
    let unsigned = model_folder(&temp.path().join("unsigned-root"));
    let signed = temp.path().join("signed");
    copy_dir(&unsigned, &signed);
    sign_key(&python, &signed, &private);
    let malicious = temp.path().join("malicious");
    copy_dir(&signed, &malicious);
    flip_byte(&malicious.join("config.json"), 5);
    let added = temp.path().join("added");
    copy_dir(&signed, &added);
    fs::write(added.join("onnx/extra.onnx"), b"not signed").unwrap();
    let other_key = temp.path().join("other-key");
    copy_dir(&unsigned, &other_key);
    sign_key(&python, &other_key, &other_private);

    let repos = [
        (ModelId::Semantic, "publisher/signed", &signed),
        (ModelId::Entity, "publisher/malicious", &malicious),
        (ModelId::Code, "publisher/added", &added),
        (ModelId::Causal, "publisher/other-key", &other_key),
        (ModelId::Graph, "publisher/unsigned", &unsigned),
    ];
    let mut hub = hub_emulator::HubBuilder::new();
    for (_, repo, dir) in &repos {
        hub = hub.repo(hub_emulator::RepoSpec::from_dir(repo, dir).unwrap());
    }
    let hub = hub.start().unwrap();
    let manifest_dir = temp.path().join("deploy");
    fs::create_dir(&manifest_dir).unwrap();
    fs::copy(&public, manifest_dir.join("publisher.pub.pem")).unwrap();
    let models: Vec<serde_json::Value> = ModelId::ALL
        .iter()
        .map(|id| match repos.iter().find(|(m, _, _)| m == id) {
            Some((_, repo, _)) => serde_json::json!({
                "model_id": id.as_str(), "repo_id": repo, "filename": "model.safetensors",
                "sha256": null, "size_bytes": null, "revision": "main",
                "include": ["*.json", "onnx/*"],
            }),
            None => serde_json::json!({"model_id": id.as_str(), "builtin": true}),
        })
        .collect();
    let manifest_path = manifest_dir.join("models.json");
    fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "signature": {"public_key": "publisher.pub.pem"},
            "models": models,
        }))
        .unwrap(),
    )
    .unwrap();
    let cache_dir = temp.path().join("hub");
    let manager = || {
        ModelArtifactManager::new(ArtifactManagerConfig {
            cache_dir: cache_dir.clone(),
            endpoint: hub.endpoint(),
            manifest_path: Some(manifest_path.clone()),
            hf_token: None,
            implicit_token: false,
            offline: false,
            ..ArtifactManagerConfig::from_env()
        })
        .unwrap()
    };

    let first = manager();
    let failures = match first.ensure_all_models().await {
        Err(EmbeddingError::DownloadsFailed(failures)) => failures,
        other => panic!("four tampered repos must fail: {other:?}"),
    };
    let error_of = |id: ModelId| {
        failures
            .iter()
            .find(|(m, _)| *m == id)
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("{id:?} must be refused: {failures:?}"))
    };
    assert_eq!(failures.len(), 4, "{failures:?}");
    let signed_config = sha256_file(&signed.join("config.json"));
    match error_of(ModelId::Entity) {
        EmbeddingError::SignatureDigestMismatch {
            path,
            signed,
            actual,
            ..
        } => {
            assert_eq!(path, "config.json");
            assert_eq!(*signed, signed_config);
            assert_eq!(*actual, sha256_file(&malicious.join("config.json")));
        }
        other => panic!("malicious: {other:?}"),
    }
    match error_of(ModelId::Code) {
        EmbeddingError::SignatureUnlistedFile { path, .. } => assert_eq!(path, "onnx/extra.onnx"),
        other => panic!("added: {other:?}"),
    }
    assert!(
        matches!(
            error_of(ModelId::Causal),
            EmbeddingError::SignatureWrongSigner { .. }
                | EmbeddingError::SignatureBadSignature { .. }
        ),
        "{:?}",
        error_of(ModelId::Causal)
    );
    match error_of(ModelId::Graph) {
        EmbeddingError::SignatureMissing { signature } => assert_eq!(signature, "model.sig"),
        other => panic!("unsigned: {other:?}"),
    }
    for (id, _) in &failures {
        eprintln!("{id:?}: {}", error_of(*id));
    }

    let model = first
        .verified_model(ModelId::Semantic)
        .expect("signed and verified");
    let names: Vec<String> = model
        .files
        .iter()
        .map(|p| {
            p.strip_prefix(&model.snapshot_dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(names.contains(&"model.sig".to_owned()), "{names:?}");
    let weights = model.weights.clone();
    // The blob the snapshot entry links to: hashing it by that name would be a read too.
    let weights_blob = fs::canonicalize(&weights).unwrap();
    assert_ne!(weights_blob, weights, "a link to the blob");
    let check_report = |manager: &ModelArtifactManager, when: &str| {
        let report = manager.readiness_report();
        assert!(
            report.ready_models.contains(&ModelId::Semantic),
            "{when}: {report:#?}"
        );
        let row = report
            .models
            .iter()
            .find(|m| m.model_id == ModelId::Semantic)
            .unwrap();
        let signer = row.signer.as_deref().expect("the signer");
        assert!(signer.starts_with("P-256 key sha256:"), "{when}: {signer}");
        let sig_row = row
            .files
            .iter()
            .find(|f| f.path == "model.sig")
            .expect("in the set");
        assert_eq!(sig_row.state, ReadinessState::Ready);
        for (id, _) in &failures {
            assert!(
                !report.ready_models.contains(id),
                "{when}: {id:?} reported ready"
            );
            assert!(
                manager.verified_model(*id).is_none(),
                "{when}: {id:?} reaches the registry"
            );
            let row = report.models.iter().find(|m| m.model_id == *id).unwrap();
            assert_ne!(row.state, ReadinessState::Ready, "{when}: {row:?}");
            assert_eq!(row.signer, None, "{when}: {row:?}");
            assert!(row.problem.is_some(), "{when}: {row:?}");
        }
        report
    };
    let report = check_report(&first, "after ensure");
    for (id, error) in &failures {
        let row = report.models.iter().find(|m| m.model_id == *id).unwrap();
        assert_eq!(row.state, ReadinessState::Failed, "{row:?}");
        assert_eq!(row.error.as_deref(), Some(error.to_string().as_str()));
    }

    // The next process: the verdict is a record checked by the stamps' `stat`s; the refused
    // ones stay refused (ensure again, verify) and are still not ready.
    let second = manager();
    check_report(&second, "a new process");
    assert!(second.ensure_all_models().await.is_err());
    let outcomes = second.verify_present(2, true).await;
    for outcome in &outcomes {
        let expect_ok = outcome.model_id == ModelId::Semantic;
        assert_eq!(outcome.verified == Some(true), expect_ok, "{outcome:?}");
    }
    check_report(&second, "after ensure and verify again");
    assert_eq!(
        times_hashed(&weights),
        0,
        "checking the signature never hashes the weight file again"
    );

    // Pins move only to signed content: `lock` pins `model.sig` with the set of the signed
    // repo, and refuses each tampered head with the same error as `ensure`.
    let upgraded = second
        .upgrade_pins(&[ModelId::Semantic])
        .await
        .expect("the signed head");
    let entry = upgraded
        .manifest
        .artifacts()
        .find(|a| a.model_id == ModelId::Semantic)
        .unwrap();
    let locked: Vec<&str> = entry
        .selection
        .files
        .iter()
        .flatten()
        .map(|f| f.path.as_str())
        .collect();
    assert!(locked.contains(&"model.sig"), "{locked:?}");
    let signed_by = entry.signed_by.clone().expect("lock records the signer");
    assert_eq!(signed_by.len(), 64);
    let status_signer = check_report(&second, "before lock")
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Semantic)
        .unwrap()
        .signer
        .clone()
        .unwrap();
    assert!(
        status_signer.ends_with(&signed_by[..16]),
        "{status_signer} {signed_by}"
    );
    assert!(upgraded
        .filled
        .iter()
        .any(|c| c.field == "signed_by" && c.new == signed_by));
    let written = upgraded.manifest.to_json_pretty();
    assert!(
        written.contains(&format!("\"signed_by\": \"{signed_by}\"")),
        "{written}"
    );
    let reread = context_graph_embeddings::artifacts::Manifest::parse(&written, "locked").unwrap();
    assert_eq!(
        reread
            .artifacts()
            .find(|a| a.model_id == ModelId::Semantic)
            .unwrap()
            .signed_by
            .as_deref(),
        Some(signed_by.as_str())
    );
    match second.pin_manifest().await {
        Err(EmbeddingError::DownloadsFailed(refused)) => {
            let ids: Vec<ModelId> = refused.iter().map(|(id, _)| *id).collect();
            let expected: Vec<ModelId> = failures.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids.len(), 4, "{refused:?}");
            assert!(expected.iter().all(|id| ids.contains(id)), "{refused:?}");
            for (id, error) in &refused {
                assert_eq!(error.to_string(), error_of(*id).to_string(), "{id:?}");
            }
        }
        other => panic!("lock must refuse the tampered heads: {other:?}"),
    }

    // `outdated` checks the head's versions of the pinned files (here the weight file, the
    // entries being unlocked) and the signature under the same policy.
    let drifts = second.check_outdated(&[]).await.expect("outdated");
    let refused = |id: ModelId| {
        drifts
            .iter()
            .find(|d| d.model_id == id)
            .unwrap()
            .head_signature_refused
            .clone()
    };
    assert_eq!(refused(ModelId::Semantic), None);
    assert_eq!(
        refused(ModelId::Causal).as_deref(),
        Some(error_of(ModelId::Causal).to_string().as_str())
    );
    assert_eq!(
        refused(ModelId::Graph).as_deref(),
        Some(error_of(ModelId::Graph).to_string().as_str())
    );

    // A bundle carries the signature file (a file of the set), and import checks it like a
    // download: the model is ready at the other site with its signer, no hashing of weights.
    let bundle = temp.path().join("signed.tar");
    let exported = second
        .export_bundle(&bundle, &[ModelId::Semantic])
        .await
        .expect("export");
    assert!(
        exported.files.iter().any(|f| f.path == "model.sig"),
        "{exported:?}"
    );
    let site_cache = temp.path().join("site");
    let site = ModelArtifactManager::new(ArtifactManagerConfig {
        cache_dir: site_cache.clone(),
        endpoint: "http://127.0.0.1:9".to_owned(),
        manifest_path: Some(manifest_path.clone()),
        hf_token: None,
        implicit_token: false,
        offline: true,
        ..ArtifactManagerConfig::from_env()
    })
    .unwrap();
    site.import_bundle(&bundle).await.expect("import");
    let report = site.readiness_report();
    let row = report
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Semantic)
        .unwrap();
    assert_eq!(row.state, ReadinessState::Ready, "{row:?}");
    assert_eq!(
        row.signer,
        check_report(&second, "before the bundle")
            .models
            .iter()
            .find(|m| m.model_id == ModelId::Semantic)
            .unwrap()
            .signer
    );
    let site_records = site_cache.join("models--publisher--signed/.cg-models-v1/signatures");
    assert_eq!(
        fs::read_dir(&site_records).unwrap().count(),
        1,
        "the verdict is recorded"
    );

    // Another policy (the other key) over the same cache: the verdict recorded under the
    // publisher's key does not hold for it, and `verify` refuses the publisher's signature.
    let other_dir = temp.path().join("other-deploy");
    fs::create_dir(&other_dir).unwrap();
    fs::copy(&other_public, other_dir.join("publisher.pub.pem")).unwrap();
    let other_manifest = other_dir.join("models.json");
    fs::copy(&manifest_path, &other_manifest).unwrap();
    let strict = ModelArtifactManager::new(ArtifactManagerConfig {
        cache_dir: cache_dir.clone(),
        endpoint: hub.endpoint(),
        manifest_path: Some(other_manifest),
        hf_token: None,
        implicit_token: false,
        offline: true,
        ..ArtifactManagerConfig::from_env()
    })
    .unwrap();
    let report = strict.readiness_report();
    let row = report
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Semantic)
        .unwrap();
    assert_eq!(row.state, ReadinessState::Unverified, "{row:?}");
    assert_eq!(row.signer, None);
    assert!(
        row.problem
            .as_deref()
            .is_some_and(|p| p.contains("model.sig is not verified")),
        "{row:?}"
    );
    let outcomes = strict.verify_present(2, true).await;
    let semantic = outcomes
        .iter()
        .find(|o| o.model_id == ModelId::Semantic)
        .unwrap();
    assert_eq!(semantic.verified, Some(false), "{semantic:?}");
    assert!(
        semantic
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("another key")),
        "{semantic:?}"
    );
    assert!(strict.verified_model(ModelId::Semantic).is_none());
    check_report(&manager(), "the publisher's policy again");

    // A read-only cache without the verdict: `verify` checks the signature from the stamps,
    // keeps the verdict in memory with the one notice, and writes nothing.
    let records = cache_dir.join("models--publisher--signed/.cg-models-v1/signatures");
    fs::remove_dir_all(&records).unwrap();
    let before = super::read_only::tree(&cache_dir);
    let _mount = super::read_only::ReadOnlyMount::new(&cache_dir);
    let third = manager();
    let report = third.readiness_report();
    let row = report
        .models
        .iter()
        .find(|m| m.model_id == ModelId::Semantic)
        .unwrap();
    assert_ne!(row.state, ReadinessState::Ready, "no verdict: {row:?}");
    assert!(
        row.problem
            .as_deref()
            .is_some_and(|p| p.contains("model.sig is not verified")),
        "{row:?}"
    );
    let outcomes = third.verify_present(2, true).await;
    let semantic = outcomes
        .iter()
        .find(|o| o.model_id == ModelId::Semantic)
        .unwrap();
    assert_eq!(semantic.verified, Some(true), "{semantic:?}");
    check_report(&third, "read-only, verified in memory");
    let notice = third.unrecorded_stamps().expect("the one notice");
    assert!(notice.reason.contains("Read-only"), "{notice:?}");
    assert_eq!(
        super::read_only::tree(&cache_dir),
        before,
        "nothing written"
    );
    assert_eq!(times_hashed(&weights), 0);
    assert_eq!(times_hashed(&weights_blob), 0);
    // The counter is live: `verify` that re-hashes reads the weight file, once.
    let rehashed = third.verify_present(2, false).await;
    assert!(rehashed
        .iter()
        .any(|o| o.model_id == ModelId::Semantic && o.verified == Some(true)));
    assert_eq!(times_hashed(&weights), 1);
}
