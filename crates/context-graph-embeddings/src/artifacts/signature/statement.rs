//! The signed statement (an in-toto Statement v1 with the model signing predicate) and the
//! comparison of its file list with ours, by the rules of the official tool's
//! `verifying.Config.verify` and `signing.dsse_payload_to_manifest`. Pure.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::bundle::truncate;
use crate::artifacts::json::{from_utf8_json, Object};
use crate::error::{EmbeddingError, EmbeddingResult};

const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of model signatures (tool 1.0 and later).
pub(super) const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// The predicate of tool 0.2 signatures, which the tool still accepts: the files are the
/// statement's subjects.
const PREDICATE_TYPE_COMPAT: &str = "https://model_signing/Digests/v0.1";
/// Paths the tool leaves out of every signature unless told otherwise (`ignore_git_paths`).
const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// Why a statement cannot be used.
#[derive(Debug)]
pub(super) enum StatementError {
    /// Malformed, inconsistent or of another kind.
    Format(String),
    /// Well formed but made in a way we do not check (shards, another hash).
    Unsupported(String),
}

/// What a model signature says: the model's name and each file's SHA-256.
#[derive(Debug, Clone)]
pub(super) struct SignedManifest {
    /// The subject's name (the folder or file the tool signed).
    model_name: String,
    /// `name` to lower-case hex SHA-256, in the statement's order.
    resources: Vec<(String, String)>,
    /// The statement's `ignore_paths`, normalised (no `.`, no empty parts).
    ignore_paths: Vec<Vec<String>>,
}

/// A signature that verified: who signed, and how each file of the set was covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The signer, in words: the key's fingerprint, or the certificate's subject and chain.
    pub signer: String,
    /// SHA-256 (hex) of the signing key's DER `SubjectPublicKeyInfo` (for a certificate, the
    /// leaf's key): a stable id to record, e.g. in a lock file. `openssl pkey -pubin -in
    /// key.pem -outform der | sha256sum` gives the same.
    pub signer_key_sha256: String,
    /// The name the signature gives the model (the folder the tool signed).
    pub model_name: String,
    /// Files of the set whose SHA-256 the signature lists and that matched, in set order.
    pub signed_files: Vec<String>,
    /// Files of the set the signature does not cover by the tool's rules: the signature file,
    /// git files, its `ignore_paths`. They were not compared.
    pub ignored_files: Vec<String>,
    /// Files the signature lists that the set does not take (e.g. a repo's other formats).
    pub unused_signed_files: Vec<String>,
}

#[derive(Deserialize)]
struct RawStatement {
    #[serde(rename = "_type")]
    kind: Option<String>,
    subject: Option<Vec<Object<RawSubject>>>,
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
    predicate: Option<Object<RawPredicate>>,
}

#[derive(Deserialize)]
struct RawSubject {
    name: Option<String>,
    digest: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct RawPredicate {
    serialization: Option<HashMap<String, Value>>,
    resources: Option<Vec<Object<RawResource>>>,
}

#[derive(Deserialize)]
struct RawResource {
    name: Option<String>,
    algorithm: Option<String>,
    digest: Option<String>,
}

/// Most files a signature may list (the hard cap on work for hostile input).
const MAX_RESOURCES: usize = 200_000;

/// Parses the envelope's payload into the signed file list.
pub(super) fn parse(payload_type: &str, payload: &[u8]) -> Result<SignedManifest, StatementError> {
    use StatementError::{Format, Unsupported};
    if payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(Format(format!(
            "its DSSE payload type is `{}`, expected `{IN_TOTO_PAYLOAD_TYPE}`",
            truncate(payload_type)
        )));
    }
    // UTF-8 text, objects where the statement has them (`crate::artifacts::json`), as the
    // tool's json.loads reads it.
    let Object(raw): Object<RawStatement> = from_utf8_json(payload)
        .map_err(|e| Format(format!("its statement is not in-toto JSON ({e})")))?;
    let kind = raw.kind.unwrap_or_default();
    if kind != STATEMENT_TYPE {
        return Err(Format(format!(
            "its statement type is `{}`, expected `{STATEMENT_TYPE}`",
            truncate(&kind)
        )));
    }
    let subjects = raw.subject.unwrap_or_default();
    let predicate_type = raw.predicate_type.unwrap_or_default();
    if predicate_type == PREDICATE_TYPE_COMPAT {
        // Tool 0.2: every subject is a file; files serialisation with SHA-256, nothing ignored.
        if subjects.len() > MAX_RESOURCES {
            return Err(Format(format!("it lists more than {MAX_RESOURCES} files")));
        }
        let mut resources = Vec::with_capacity(subjects.len());
        for (i, Object(subject)) in subjects.into_iter().enumerate() {
            let name = subject
                .name
                .ok_or_else(|| Format(format!("subject #{i} has no name")))?;
            let digest = subject
                .digest
                .and_then(|mut d| d.remove("sha256"))
                .ok_or_else(|| Format(format!("subject `{}` has no sha256", truncate(&name))))?;
            resources.push((name, normalise_digest(&digest)?));
        }
        return SignedManifest::new(
            "compat-undefined-not-present".to_owned(),
            resources,
            Vec::new(),
        );
    }
    if predicate_type != PREDICATE_TYPE {
        return Err(Format(format!(
            "its predicate type is `{}`, expected `{PREDICATE_TYPE}` (a model signature)",
            truncate(&predicate_type)
        )));
    }
    let [Object(subject)] = <[Object<RawSubject>; 1]>::try_from(subjects).map_err(|s| {
        Format(format!(
            "its statement has {} subjects, expected one (the model)",
            s.len()
        ))
    })?;
    let model_name = subject.name.unwrap_or_default();
    let root_digest = subject
        .digest
        .and_then(|mut d| d.remove("sha256"))
        .ok_or_else(|| Format("its subject has no sha256 digest".to_owned()))?;
    let Object(predicate) = raw
        .predicate
        .ok_or_else(|| Format("its statement has no predicate".to_owned()))?;
    let serialization = predicate
        .serialization
        .ok_or_else(|| Format("its predicate has no serialization".to_owned()))?;
    match serialization.get("method").and_then(Value::as_str) {
        Some("files") => {}
        Some("shards") => {
            return Err(Unsupported(
                "it was made with shard serialization (`--shard_size`); sign with file serialization (the tool's default) to be checked while downloading".to_owned(),
            ))
        }
        other => {
            return Err(Format(format!(
                "its serialization method is {}, expected `files`",
                other.map_or("missing".to_owned(), |m| format!("`{}`", truncate(m)))
            )))
        }
    }
    match serialization.get("hash_type").and_then(Value::as_str) {
        Some("sha256") => {}
        Some(other) => {
            return Err(Unsupported(format!(
                "its files are hashed with `{}`; only sha256 (the tool's default) can be checked against the SHA-256 computed while downloading",
                truncate(other)
            )))
        }
        None => return Err(Format("its serialization has no hash_type".to_owned())),
    }
    let ignore_paths = match serialization.get("ignore_paths") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| Format("its ignore_paths holds a non-string".to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter_map(ignore_components)
            .collect(),
        Some(_) => return Err(Format("its ignore_paths is not a list".to_owned())),
    };
    let raw_resources = predicate
        .resources
        .ok_or_else(|| Format("its predicate has no resources".to_owned()))?;
    if raw_resources.len() > MAX_RESOURCES {
        return Err(Format(format!("it lists more than {MAX_RESOURCES} files")));
    }
    let mut root = Sha256::new();
    let mut resources = Vec::with_capacity(raw_resources.len());
    for (i, Object(resource)) in raw_resources.into_iter().enumerate() {
        let name = resource
            .name
            .ok_or_else(|| Format(format!("resource #{i} has no name")))?;
        let algorithm = resource.algorithm.unwrap_or_default();
        if algorithm != "sha256" {
            return Err(Unsupported(format!(
                "resource `{}` is hashed with `{}`; only sha256 can be checked",
                truncate(&name),
                truncate(&algorithm)
            )));
        }
        let digest =
            normalise_digest(resource.digest.as_deref().unwrap_or_default()).map_err(|_| {
                Format(format!(
                    "resource `{}` has no valid sha256 digest",
                    truncate(&name)
                ))
            })?;
        root.update(hex::decode(&digest).unwrap_or_default());
        resources.push((name, digest));
    }
    // The tool refuses a statement whose subject digest is not the SHA-256 over the resource
    // digests in order: the statement is inconsistent.
    let computed_root = hex::encode(root.finalize());
    if !root_digest.eq_ignore_ascii_case(&computed_root) {
        return Err(Format(format!(
            "its manifest is inconsistent: the subject digest is {}, but the listed files hash to {computed_root}",
            truncate(&root_digest)
        )));
    }
    SignedManifest::new(model_name, resources, ignore_paths)
}

fn normalise_digest(digest: &str) -> Result<String, StatementError> {
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(StatementError::Format(format!(
            "`{}` is not a SHA-256 digest",
            truncate(digest)
        )))
    }
}

/// A relative path's components as Python's `pathlib` sees them (no empty or `.` parts);
/// `None` for an absolute path, which the tool drops (it is outside the model).
fn ignore_components(path: &str) -> Option<Vec<String>> {
    if path.starts_with('/') {
        return None;
    }
    let parts: Vec<String> = components(path).map(str::to_owned).collect();
    (!parts.is_empty()).then_some(parts)
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|p| !p.is_empty() && *p != ".")
}

/// Whether `path` is `ignored` or inside it (`pathlib.Path.is_relative_to`).
fn is_under(path: &str, ignored: &[String]) -> bool {
    let mut parts = components(path);
    ignored
        .iter()
        .all(|want| parts.next() == Some(want.as_str()))
}

impl SignedManifest {
    fn new(
        model_name: String,
        resources: Vec<(String, String)>,
        ignore_paths: Vec<Vec<String>>,
    ) -> Result<Self, StatementError> {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &resources {
            if !seen.insert(name.as_str()) {
                return Err(StatementError::Format(format!(
                    "it lists `{}` twice",
                    truncate(name)
                )));
            }
        }
        Ok(SignedManifest {
            model_name,
            resources,
            ignore_paths,
        })
    }

    /// Compares the signed list with our files (`path`, SHA-256 hex). The first file of the
    /// set that differs decides the error.
    pub(super) fn compare(
        &self,
        files: &[(&str, &str)],
        signature_file: &str,
        signer: (String, String),
    ) -> EmbeddingResult<VerifiedSignature> {
        let signature_parts: Vec<String> = components(signature_file).map(str::to_owned).collect();
        let ignored = |path: &str| {
            is_under(path, &signature_parts)
                || GIT_PATHS.iter().any(|g| is_under(path, &[(*g).to_owned()]))
                || self.ignore_paths.iter().any(|p| is_under(path, p))
        };
        // A single file signed on its own (tool 1.0.0, `sign key FILE`) is listed as `.`.
        let single_file = self.resources.len() == 1 && self.resources[0].0 == ".";
        let listed: HashMap<String, &str> = self
            .resources
            .iter()
            .map(|(name, digest)| {
                (
                    components(name).collect::<Vec<_>>().join("/"),
                    digest.as_str(),
                )
            })
            .collect();
        let mut verified = VerifiedSignature {
            signer: signer.0,
            signer_key_sha256: signer.1,
            model_name: self.model_name.clone(),
            signed_files: Vec::new(),
            ignored_files: Vec::new(),
            unused_signed_files: Vec::new(),
        };
        let mut used = std::collections::HashSet::new();
        for (path, actual) in files {
            let normal = components(path).collect::<Vec<_>>().join("/");
            if ignored(&normal) {
                verified.ignored_files.push((*path).to_owned());
                continue;
            }
            let signed = if single_file {
                (verified.signed_files.is_empty()).then_some(self.resources[0].1.as_str())
            } else {
                listed.get(&normal).copied()
            };
            let Some(signed) = signed else {
                return Err(EmbeddingError::SignatureUnlistedFile {
                    path: (*path).to_owned(),
                    signer: verified.signer,
                });
            };
            if !signed.eq_ignore_ascii_case(actual) {
                return Err(EmbeddingError::SignatureDigestMismatch {
                    path: (*path).to_owned(),
                    signed: signed.to_owned(),
                    actual: (*actual).to_owned(),
                    signer: verified.signer,
                });
            }
            // The single file's resource `.` normalises to the empty path.
            used.insert(if single_file { String::new() } else { normal });
            verified.signed_files.push((*path).to_owned());
        }
        verified.unused_signed_files = self
            .resources
            .iter()
            .filter(|(name, _)| !used.contains(&components(name).collect::<Vec<_>>().join("/")))
            .map(|(name, _)| name.clone())
            .collect();
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "f6310066c7320497ea554260c32c43660bff648cb2a61194832cc086077085e1";
    const B: &str = "32dcb1f8e1ae52d5963e56a6ba06ab58b424c15ed2a6b70d2feca1d089370028";

    fn statement(resources: &[(&str, &str)], ignore: &[&str]) -> Vec<u8> {
        let mut root = Sha256::new();
        for (_, d) in resources {
            root.update(hex::decode(d).unwrap());
        }
        serde_json::to_vec(&serde_json::json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "m", "digest": {"sha256": hex::encode(root.finalize())}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false, "ignore_paths": ignore},
                "resources": resources.iter().map(|(n, d)| serde_json::json!({"name": n, "algorithm": "sha256", "digest": d})).collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    fn manifest(resources: &[(&str, &str)], ignore: &[&str]) -> SignedManifest {
        parse(IN_TOTO_PAYLOAD_TYPE, &statement(resources, ignore)).unwrap()
    }

    #[test]
    fn every_file_listed_with_its_digest_verifies_and_ignored_ones_are_reported() {
        let m = manifest(
            &[("config.json", A), ("onnx/model.onnx", B), ("extra.bin", A)],
            &["notes"],
        );
        let v = m
            .compare(
                &[
                    ("config.json", A),
                    ("onnx/model.onnx", &B.to_ascii_uppercase()),
                    ("model.sig", B),
                    (".gitattributes", B),
                    ("notes/readme.md", B),
                ],
                "model.sig",
                ("k".to_owned(), String::new()),
            )
            .unwrap();
        assert_eq!(v.signed_files, ["config.json", "onnx/model.onnx"]);
        assert_eq!(
            v.ignored_files,
            ["model.sig", ".gitattributes", "notes/readme.md"]
        );
        assert_eq!(v.unused_signed_files, ["extra.bin"]);
        assert_eq!(v.model_name, "m");
    }

    #[test]
    fn a_changed_digest_names_the_file_and_both_digests() {
        let m = manifest(&[("config.json", A)], &[]);
        let e = m
            .compare(
                &[("config.json", B)],
                "model.sig",
                ("k".to_owned(), String::new()),
            )
            .unwrap_err();
        assert!(
            matches!(&e, EmbeddingError::SignatureDigestMismatch { path, signed, actual, .. } if path == "config.json" && signed == A && actual == B),
            "{e:?}"
        );
    }

    #[test]
    fn a_file_the_signature_omits_is_refused() {
        let m = manifest(&[("config.json", A)], &[]);
        let e = m
            .compare(
                &[("config.json", A), ("added.txt", B)],
                "model.sig",
                ("k".to_owned(), String::new()),
            )
            .unwrap_err();
        assert!(
            matches!(&e, EmbeddingError::SignatureUnlistedFile { path, .. } if path == "added.txt"),
            "{e:?}"
        );
        // An ignore path is a whole component: `note` does not cover `notes.txt`.
        let m = manifest(&[("config.json", A)], &["note"]);
        assert!(m
            .compare(
                &[("notes.txt", A)],
                "model.sig",
                ("k".to_owned(), String::new())
            )
            .is_err());
    }

    #[test]
    fn an_inconsistent_or_foreign_statement_is_refused() {
        let mut value: Value = serde_json::from_slice(&statement(&[("a", A)], &[])).unwrap();
        value["predicate"]["resources"][0]["digest"] = Value::String(B.to_owned());
        let e = parse(IN_TOTO_PAYLOAD_TYPE, &serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(
            matches!(&e, StatementError::Format(r) if r.contains("inconsistent")),
            "{e:?}"
        );

        let mut value: Value = serde_json::from_slice(&statement(&[("a", A)], &[])).unwrap();
        value["predicateType"] = Value::String("https://slsa.dev/provenance/v1".to_owned());
        let e = parse(IN_TOTO_PAYLOAD_TYPE, &serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(
            matches!(&e, StatementError::Format(r) if r.contains("predicate type")),
            "{e:?}"
        );

        let mut value: Value = serde_json::from_slice(&statement(&[("a", A)], &[])).unwrap();
        value["predicate"]["serialization"]["method"] = Value::String("shards".to_owned());
        let e = parse(IN_TOTO_PAYLOAD_TYPE, &serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(
            matches!(&e, StatementError::Unsupported(r) if r.contains("shard")),
            "{e:?}"
        );

        let e = parse("text/plain", &statement(&[("a", A)], &[])).unwrap_err();
        assert!(
            matches!(&e, StatementError::Format(r) if r.contains("payload type")),
            "{e:?}"
        );

        let twice = statement(&[("a", A), ("a", A)], &[]);
        let e = parse(IN_TOTO_PAYLOAD_TYPE, &twice).unwrap_err();
        assert!(
            matches!(&e, StatementError::Format(r) if r.contains("twice")),
            "{e:?}"
        );
    }

    #[test]
    fn the_compat_predicate_lists_files_as_subjects() {
        let payload = serde_json::to_vec(&serde_json::json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "a", "digest": {"sha256": A}}],
            "predicateType": PREDICATE_TYPE_COMPAT,
            "predicate": {}
        }))
        .unwrap();
        let m = parse(IN_TOTO_PAYLOAD_TYPE, &payload).unwrap();
        assert!(m
            .compare(&[("a", A)], "model.sig", ("k".to_owned(), String::new()))
            .is_ok());
        assert!(m
            .compare(&[("a", B)], "model.sig", ("k".to_owned(), String::new()))
            .is_err());
    }
}
