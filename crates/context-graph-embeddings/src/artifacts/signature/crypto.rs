//! The signer's side of a model signature: EC public keys from PEM, the DSSE signature over
//! the PAE, and X.509 chains to the operator's root, as the official tool checks them
//! (`sign_ec_key.Verifier`, `sign_certificate.Verifier`). Pure; `aws-lc-rs` does the ECDSA
//! and `x509-parser` (its `verify-aws` feature, the same `aws-lc-rs`) the certificates.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA,
};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The curves the tool signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_oid(oid: &Oid<'_>) -> Option<Self> {
        if *oid == OID_EC_P256 {
            Some(Curve::P256)
        } else if *oid == OID_NIST_EC_P384 {
            Some(Curve::P384)
        } else if *oid == OID_NIST_EC_P521 {
            Some(Curve::P521)
        } else {
            None
        }
    }

    /// The tool's hash for the curve (`get_ec_key_hash`).
    fn algorithm(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1,
        }
    }

    /// SHA-256 whatever the curve: how pre-1.0 certificate signatures were made.
    fn algorithm_sha256(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA256_ASN1,
            Curve::P521 => &signature::ECDSA_P521_SHA256_ASN1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
}

/// An EC public key: its curve, its point and its `SubjectPublicKeyInfo` DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EcKey {
    curve: Curve,
    point: Vec<u8>,
    spki_der: Vec<u8>,
}

impl EcKey {
    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, String> {
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
            return Err(format!(
                "it is not an elliptic curve key (algorithm {}); the tool signs only with EC keys",
                spki.algorithm.algorithm
            ));
        }
        let curve_oid = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or("its curve is not named")?;
        let curve = Curve::from_oid(&curve_oid)
            .ok_or_else(|| format!("its curve {curve_oid} is not one of P-256, P-384, P-521"))?;
        Ok(EcKey {
            curve,
            point: spki.subject_public_key.data.to_vec(),
            spki_der: spki.raw.to_vec(),
        })
    }

    /// Parses a `PUBLIC KEY` PEM (text around it is skipped, as OpenSSL and the tool do).
    pub(super) fn from_pem(pem: &[u8]) -> Result<Self, String> {
        for block in Pem::iter_from_buffer(pem) {
            let block = block.map_err(|e| format!("it is not valid PEM ({e})"))?;
            if block.label.contains("PRIVATE") {
                return Err(
                    "it holds a private key; give the public key (`openssl ec -pubout`)".to_owned(),
                );
            }
            if block.label == "PUBLIC KEY" {
                let (rest, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
                    .map_err(|e| format!("its PUBLIC KEY block does not parse ({e})"))?;
                if !rest.is_empty() {
                    return Err("its PUBLIC KEY block has trailing bytes".to_owned());
                }
                return EcKey::from_spki(&spki);
            }
        }
        Err("it holds no `-----BEGIN PUBLIC KEY-----` block".to_owned())
    }

    /// SHA-256 of the key as the tool writes it in PEM (`publicKey.hint` of a bundle).
    pub(super) fn hint(&self) -> String {
        let base64 = data_encoding::BASE64.encode(&self.spki_der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in base64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        hex::encode(Sha256::digest(pem.as_bytes()))
    }

    /// SHA-256 (hex) of the key's DER `SubjectPublicKeyInfo`.
    pub(super) fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }

    /// `P-384 key sha256:<first 16 hex of the fingerprint>`: names a key in messages.
    pub(super) fn describe(&self) -> String {
        format!(
            "{} key sha256:{}",
            self.curve.name(),
            &self.fingerprint()[..16]
        )
    }

    /// Whether `sig` is this key's DSSE signature over `payload` (an in-toto statement). Like
    /// the tool, the PAE of pre-1.0 releases is tried when the current one fails, hashed by
    /// curve for bare keys and with SHA-256 for certificates (`sha256_compat`).
    pub(super) fn verifies_dsse(&self, payload: &[u8], sig: &[u8], sha256_compat: bool) -> bool {
        let key = UnparsedPublicKey::new(self.curve.algorithm(), &self.point);
        if key.verify(&pae(payload), sig).is_ok() {
            return true;
        }
        let compat_algorithm = if sha256_compat {
            self.curve.algorithm_sha256()
        } else {
            self.curve.algorithm()
        };
        UnparsedPublicKey::new(compat_algorithm, &self.point)
            .verify(&pae_compat(payload), sig)
            .is_ok()
    }
}

const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// DSSE v1 pre-authentication encoding of an in-toto payload.
fn pae(payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {PAYLOAD_TYPE} {} ",
        PAYLOAD_TYPE.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The PAE of tool 0.2 (`pae_compat`): `DSSEV1` and the payload as Python's `repr` of bytes.
fn pae_compat(payload: &[u8]) -> Vec<u8> {
    format!(
        "DSSEV1 {} {PAYLOAD_TYPE} {} {}",
        PAYLOAD_TYPE.len(),
        payload.len(),
        python_bytes_repr(payload)
    )
    .into_bytes()
}

/// Python's `repr(b"...")`.
fn python_bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push('b');
    out.push(quote);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if char::from(b) == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}

/// Root certificates (DER) from a PEM file's `CERTIFICATE` blocks.
pub(super) fn roots_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut roots = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("it is not valid PEM ({e})"))?;
        if block.label.contains("PRIVATE") {
            return Err("it holds a private key; give only certificates".to_owned());
        }
        if block.label == "CERTIFICATE" {
            parse_certificate(&block.contents)
                .map_err(|e| format!("certificate #{} does not parse: {e}", roots.len() + 1))?;
            roots.push(block.contents);
        }
    }
    if roots.is_empty() {
        return Err("it holds no `-----BEGIN CERTIFICATE-----` block".to_owned());
    }
    Ok(roots)
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".to_owned());
    }
    Ok(cert)
}

/// The leaf of a verified chain: its key and the names it carries.
#[derive(Debug, Clone)]
pub(super) struct Leaf {
    /// The signing key.
    pub(super) key: EcKey,
    /// Every name an identity may match: subject alternative names, the subject's common
    /// names and the whole subject.
    pub(super) names: Vec<String>,
    /// `CN=leaf, issued by CN=intermediate, under root CN=root`.
    pub(super) description: String,
}

/// Most intermediates followed from the leaf to a root.
const MAX_DEPTH: usize = 8;

/// Verifies that `chain[0]` (the signing certificate) leads through `chain[1..]` to one of
/// `roots`, as OpenSSL's store check in the tool does, at the leaf's `notBefore`; and that
/// the leaf may sign. Like OpenSSL without partial chains, only self-issued certificates of
/// the root file are anchors; others in it only help build the path. The error names the
/// certificate and what failed.
pub(super) fn verify_chain(chain: &[Vec<u8>], roots: &[Vec<u8>]) -> Result<Leaf, String> {
    let leaf_der = chain.first().ok_or("the bundle carries no certificate")?;
    let leaf = parse_certificate(leaf_der)
        .map_err(|e| format!("its signing certificate does not parse: {e}"))?;
    let mut pool = Vec::new();
    for (i, der) in chain[1..].iter().enumerate() {
        let cert = parse_certificate(der)
            .map_err(|e| format!("certificate #{} of its chain does not parse: {e}", i + 2))?;
        pool.push((der.as_slice(), cert));
    }
    let mut anchors = Vec::new();
    for der in roots {
        let cert = parse_certificate(der)?;
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            anchors.push((der.as_slice(), cert));
        } else {
            pool.push((der.as_slice(), cert));
        }
    }
    let signing_time = leaf.validity().not_before;
    let mut path_names = vec![leaf.subject().to_string()];
    check_common(&leaf, signing_time)?;

    // Walk up: each step finds an issuer by name whose key verifies the current certificate.
    let mut current = &leaf;
    let mut cas_below = 0usize;
    let mut used = vec![false; pool.len()];
    let mut trusted = anchors.iter().any(|(der, _)| *der == leaf_der.as_slice());
    while !trusted {
        if path_names.len() > MAX_DEPTH {
            return Err(format!("its chain is longer than {MAX_DEPTH} certificates"));
        }
        let issuer_name = current.issuer().as_raw();
        if let Some((_, anchor)) = anchors
            .iter()
            .find(|(_, a)| a.subject().as_raw() == issuer_name && verify_issued(current, a).is_ok())
        {
            check_issuer(anchor, signing_time, cas_below)?;
            path_names.push(anchor.subject().to_string());
            trusted = true;
            continue;
        }
        let next = pool.iter().enumerate().find(|(i, (_, c))| {
            !used[*i] && c.subject().as_raw() == issuer_name && verify_issued(current, c).is_ok()
        });
        let Some((index, (_, issuer))) = next else {
            if current.subject().as_raw() == issuer_name {
                return Err(format!(
                    "`{}` is a self-signed root that the policy does not trust",
                    current.subject()
                ));
            }
            let by_name = pool
                .iter()
                .chain(anchors.iter())
                .find(|(_, c)| c.subject().as_raw() == issuer_name);
            return Err(match by_name {
                Some((_, c)) => format!(
                    "the signature on `{}` does not verify under `{}`: {}",
                    current.subject(),
                    c.subject(),
                    verify_issued(current, c).err().unwrap_or_default()
                ),
                None => format!(
                    "`{}` was issued by `{}`, which is neither in the bundle nor a trusted root",
                    current.subject(),
                    current.issuer()
                ),
            });
        };
        check_issuer(issuer, signing_time, cas_below)?;
        used[index] = true;
        cas_below += 1;
        path_names.push(issuer.subject().to_string());
        current = issuer;
    }

    // The leaf may sign: key usage digitalSignature, else extended key usage codeSigning.
    let digital_signature = leaf
        .key_usage()
        .map_err(|e| format!("the signing certificate's key usage does not parse: {e}"))?
        .is_some_and(|u| u.value.digital_signature());
    let code_signing = leaf
        .extended_key_usage()
        .map_err(|e| format!("the signing certificate's extended key usage does not parse: {e}"))?
        .is_some_and(|u| u.value.code_signing);
    if !digital_signature && !code_signing {
        return Err(format!(
            "the signing certificate `{}` may not sign (no digitalSignature key usage, no codeSigning extended key usage)",
            leaf.subject()
        ));
    }
    let key = EcKey::from_spki(leaf.public_key())
        .map_err(|e| format!("the signing certificate's key: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::RFC822Name(n) | GeneralName::DNSName(n) | GeneralName::URI(n) => {
                    names.push((*n).to_owned())
                }
                _ => {}
            }
        }
    }
    for cn in leaf.subject().iter_common_name() {
        if let Ok(text) = cn.as_str() {
            names.push(text.to_owned());
        }
    }
    names.push(leaf.subject().to_string());
    let mut description = format!("certificate `{}`", path_names[0]);
    if path_names.len() > 2 {
        description.push_str(&format!(
            " issued by `{}`",
            path_names[1..path_names.len() - 1].join("` < `")
        ));
    }
    if let Some(root) = path_names.get(1..).and_then(<[String]>::last) {
        description.push_str(&format!(" under root `{root}`"));
    }
    Ok(Leaf {
        key,
        names,
        description,
    })
}

fn verify_issued(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<(), String> {
    let algorithm = &cert.signature_algorithm.algorithm;
    if *algorithm == OID_PKCS1_SHA1WITHRSA || *algorithm == OID_SHA1_WITH_RSA {
        return Err("it is signed with SHA-1, which is not accepted".to_owned());
    }
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|e| e.to_string())
}

/// What every certificate of the path must satisfy: valid at the signing time, no critical
/// extension we do not understand.
fn check_common(cert: &X509Certificate<'_>, at: x509_parser::time::ASN1Time) -> Result<(), String> {
    if !cert.validity().is_valid_at(at) {
        return Err(format!(
            "`{}` was not valid when the signing certificate was issued ({}; valid {} to {})",
            cert.subject(),
            at,
            cert.validity().not_before,
            cert.validity().not_after
        ));
    }
    if let Some(ext) = cert.extensions().iter().find(|e| {
        e.critical
            && matches!(
                e.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. }
            )
    }) {
        return Err(format!(
            "`{}` has a critical extension {} that is not understood",
            cert.subject(),
            ext.oid
        ));
    }
    Ok(())
}

/// What an issuing certificate must satisfy: a CA (basic constraints), allowed to sign
/// certificates (key usage, when present), within its path length.
fn check_issuer(
    cert: &X509Certificate<'_>,
    at: x509_parser::time::ASN1Time,
    cas_below: usize,
) -> Result<(), String> {
    check_common(cert, at)?;
    let constraints = cert
        .basic_constraints()
        .map_err(|e| format!("`{}`: basic constraints do not parse: {e}", cert.subject()))?;
    let Some(constraints) = constraints.filter(|c| c.value.ca) else {
        return Err(format!(
            "`{}` issued a certificate of the chain but is not a CA",
            cert.subject()
        ));
    };
    if let Some(limit) = constraints.value.path_len_constraint {
        if cas_below > limit as usize {
            return Err(format!(
                "`{}` allows {limit} intermediate(s) below it, the chain has {cas_below}",
                cert.subject()
            ));
        }
    }
    if let Some(usage) = cert
        .key_usage()
        .map_err(|e| format!("`{}`: key usage does not parse: {e}", cert.subject()))?
    {
        if !usage.value.key_cert_sign() {
            return Err(format!(
                "`{}` may not sign certificates (no keyCertSign key usage)",
                cert.subject()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_bytes_repr_matches_python() {
        // repr(b'{"a": 1}\n\\\x00\xff') == b'{"a": 1}\n\\\x00\xff'
        assert_eq!(
            python_bytes_repr(b"{\"a\": 1}\n\\\x00\xff"),
            r#"b'{"a": 1}\n\\\x00\xff'"#
        );
        assert_eq!(python_bytes_repr(b"it's"), r#"b"it's""#);
        assert_eq!(python_bytes_repr(b"'\""), r#"b'\'"'"#);
    }

    /// A fresh key of `signing`'s curve and its public key as an [`EcKey`].
    fn fresh_key(
        signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    ) -> (aws_lc_rs::signature::EcdsaKeyPair, EcKey) {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(signing).unwrap();
        let spki = pair.public_key().as_der().unwrap();
        let (_, parsed) = SubjectPublicKeyInfo::from_der(spki.as_ref()).unwrap();
        let key = EcKey::from_spki(&parsed).unwrap();
        (pair, key)
    }

    #[test]
    fn signatures_over_the_pre_1_0_encoding_verify_as_the_tool_verifies_them() {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P521_SHA256_ASN1_SIGNING,
            ECDSA_P521_SHA512_ASN1_SIGNING,
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let payload = b"{\"_type\": \"https://in-toto.io/Statement/v1\"}\n";
        // Current encoding, hashed by curve.
        let (pair, key) = fresh_key(&ECDSA_P521_SHA512_ASN1_SIGNING);
        assert_eq!(key.curve, Curve::P521);
        let sig = pair.sign(&rng, &pae(payload)).unwrap();
        assert!(key.verifies_dsse(payload, sig.as_ref(), false));
        assert!(key.verifies_dsse(payload, sig.as_ref(), true));
        assert!(!key.verifies_dsse(b"{}", sig.as_ref(), false));
        // Tool 0.2's encoding: hashed by curve for bare keys...
        let sig = pair.sign(&rng, &pae_compat(payload)).unwrap();
        assert!(key.verifies_dsse(payload, sig.as_ref(), false));
        assert!(!key.verifies_dsse(payload, sig.as_ref(), true));
        // ...and with SHA-256 whatever the curve for certificates.
        let (pair, key) = fresh_key(&ECDSA_P521_SHA256_ASN1_SIGNING);
        let sig = pair.sign(&rng, &pae_compat(payload)).unwrap();
        assert!(key.verifies_dsse(payload, sig.as_ref(), true));
        assert!(!key.verifies_dsse(payload, sig.as_ref(), false));
        // Another key's signature never verifies.
        let (_, other) = fresh_key(&ECDSA_P256_SHA256_ASN1_SIGNING);
        assert!(!other.verifies_dsse(payload, sig.as_ref(), true));
    }

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(
            pae(b"{}"),
            b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec()
        );
    }

    /// A CA made by rcgen: its issuer handle and DER.
    struct Ca {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        der: Vec<u8>,
    }

    fn ca_params(name: &str, is_ca: rcgen::IsCa) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = is_ca;
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params
    }

    fn root(name: &str, constraints: rcgen::BasicConstraints) -> Ca {
        root_with(ca_params(name, rcgen::IsCa::Ca(constraints)))
    }

    fn root_with(params: rcgen::CertificateParams) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            der,
        }
    }

    fn intermediate(parent: &Ca, name: &str, is_ca: rcgen::IsCa) -> Ca {
        let params = ca_params(name, is_ca);
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params
            .signed_by(&key, &parent.issuer)
            .unwrap()
            .der()
            .to_vec();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            der,
        }
    }

    fn leaf(
        parent: &Ca,
        usages: Vec<rcgen::KeyUsagePurpose>,
        extended: Vec<rcgen::ExtendedKeyUsagePurpose>,
    ) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "release");
        params.subject_alt_names = vec![
            rcgen::SanType::Rfc822Name("release@example.com".try_into().unwrap()),
            rcgen::SanType::URI("https://example.com/release".try_into().unwrap()),
        ];
        params.key_usages = usages;
        params.extended_key_usages = extended;
        params
            .signed_by(&key, &parent.issuer)
            .unwrap()
            .der()
            .to_vec()
    }

    fn signing_leaf(parent: &Ca) -> Vec<u8> {
        leaf(
            parent,
            vec![rcgen::KeyUsagePurpose::DigitalSignature],
            Vec::new(),
        )
    }

    #[test]
    fn a_chain_through_an_intermediate_to_the_root_verifies_and_names_the_leaf() {
        let root = root("Root", rcgen::BasicConstraints::Unconstrained);
        let middle = intermediate(
            &root,
            "Middle",
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0)),
        );
        let leaf = signing_leaf(&middle);
        let verified = verify_chain(
            &[leaf.clone(), middle.der.clone()],
            std::slice::from_ref(&root.der),
        )
        .unwrap();
        assert_eq!(verified.key.curve, Curve::P384);
        assert_eq!(
            verified.names,
            [
                "release@example.com",
                "https://example.com/release",
                "release",
                "CN=release"
            ]
        );
        assert_eq!(
            verified.description,
            "certificate `CN=release` issued by `CN=Middle` under root `CN=Root`"
        );
        // The intermediate may come from the operator's root file instead of the bundle.
        assert!(verify_chain(
            std::slice::from_ref(&leaf),
            &[root.der.clone(), middle.der.clone()]
        )
        .is_ok());
        // Without it there is no path.
        let error = verify_chain(&[leaf], std::slice::from_ref(&root.der)).unwrap_err();
        assert!(
            error.contains(
                "issued by `CN=Middle`, which is neither in the bundle nor a trusted root"
            ),
            "{error}"
        );
        // Code signing alone lets a leaf sign too (the tool's second test).
        let code_signing = leaf_with_code_signing(&middle);
        assert!(verify_chain(&[code_signing, middle.der.clone()], &[root.der]).is_ok());
    }

    fn leaf_with_code_signing(parent: &Ca) -> Vec<u8> {
        leaf(
            parent,
            vec![rcgen::KeyUsagePurpose::KeyEncipherment],
            vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning],
        )
    }

    #[test]
    fn a_chain_that_breaks_a_ca_rule_is_refused_naming_the_certificate() {
        let root_ca = root("Root", rcgen::BasicConstraints::Unconstrained);
        // An intermediate that is not a CA.
        let not_ca = intermediate(&root_ca, "NotCa", rcgen::IsCa::ExplicitNoCa);
        let error = verify_chain(
            &[signing_leaf(&not_ca), not_ca.der.clone()],
            std::slice::from_ref(&root_ca.der),
        )
        .unwrap_err();
        assert!(
            error.contains("`CN=NotCa` issued a certificate of the chain but is not a CA"),
            "{error}"
        );
        // A root that allows no intermediate.
        let strict = root("Strict", rcgen::BasicConstraints::Constrained(0));
        let middle = intermediate(
            &strict,
            "Middle",
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        );
        let error = verify_chain(
            &[signing_leaf(&middle), middle.der.clone()],
            std::slice::from_ref(&strict.der),
        )
        .unwrap_err();
        assert!(
            error.contains("`CN=Strict` allows 0 intermediate(s) below it, the chain has 1"),
            "{error}"
        );
        // A leaf that may not sign.
        let no_usage = leaf(
            &root_ca,
            vec![rcgen::KeyUsagePurpose::KeyEncipherment],
            Vec::new(),
        );
        let error = verify_chain(&[no_usage], std::slice::from_ref(&root_ca.der)).unwrap_err();
        assert!(error.contains("`CN=release` may not sign"), "{error}");
        // A root that was not valid when the leaf was issued.
        let mut later = ca_params(
            "Later",
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        );
        later.not_before = rcgen::date_time_ymd(2030, 1, 1);
        later.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let later = root_with(later);
        let error =
            verify_chain(&[signing_leaf(&later)], std::slice::from_ref(&later.der)).unwrap_err();
        assert!(
            error.contains("`CN=Later` was not valid when the signing certificate was issued"),
            "{error}"
        );
        // A root without keyCertSign.
        let mut no_cert_sign = ca_params(
            "NoCertSign",
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        );
        no_cert_sign.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let no_cert_sign = root_with(no_cert_sign);
        let error = verify_chain(
            &[signing_leaf(&no_cert_sign)],
            std::slice::from_ref(&no_cert_sign.der),
        )
        .unwrap_err();
        assert!(
            error.contains("`CN=NoCertSign` may not sign certificates"),
            "{error}"
        );
        // A leaf signed by another root of the same name.
        let impostor = root("Root", rcgen::BasicConstraints::Unconstrained);
        let error = verify_chain(
            &[signing_leaf(&impostor), impostor.der.clone()],
            std::slice::from_ref(&root_ca.der),
        )
        .unwrap_err();
        assert!(
            error.contains("`CN=Root` is a self-signed root that the policy does not trust"),
            "{error}"
        );
        let error = verify_chain(&[signing_leaf(&impostor)], &[root_ca.der]).unwrap_err();
        assert!(
            error.contains("the signature on `CN=release` does not verify under `CN=Root`"),
            "{error}"
        );
        // Garbage where a certificate should be.
        let error = verify_chain(&[b"not a certificate".to_vec()], &[impostor.der]).unwrap_err();
        assert!(
            error.contains("its signing certificate does not parse"),
            "{error}"
        );
    }

    #[test]
    fn a_private_key_is_refused_without_echoing_it() {
        let pem = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let error = EcKey::from_pem(pem).unwrap_err();
        assert!(error.contains("private key"), "{error}");
        assert!(!error.contains("c2VjcmV0"), "{error}");
        assert!(EcKey::from_pem(b"not pem")
            .unwrap_err()
            .contains("no `-----BEGIN PUBLIC KEY"));
    }
}
