//! The Sigstore bundle around a model signature: media type, verification material and the
//! DSSE envelope, as the official tool reads them (`sign_sigstore_pb.Signature.read`). Pure.

use serde::Deserialize;
use serde_json::Value;

use crate::artifacts::json::{from_utf8_json, Object};

/// The only bundle media type the tool writes and accepts for key and certificate signatures.
pub(super) const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// What the bundle says about its signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Material {
    /// Signed with a bare key; `hint` is the SHA-256 of the public key's PEM (tool 1.0.1+).
    PublicKey { hint: Option<String> },
    /// Signed with the key of the first certificate; the rest are intermediates (DER).
    CertificateChain(Vec<Vec<u8>>),
    /// A keyless Sigstore signature (Fulcio certificate, Rekor entry).
    Keyless,
}

/// A parsed bundle: its signer material and the one DSSE signature over its payload.
#[derive(Debug, Clone)]
pub(super) struct Bundle {
    /// Who the bundle says signed it.
    pub(super) material: Material,
    /// The envelope's `payloadType`.
    pub(super) payload_type: String,
    /// The decoded payload (the in-toto statement's JSON).
    pub(super) payload: Vec<u8>,
    /// The decoded signature (ASN.1 DER ECDSA).
    pub(super) signature: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: Option<String>,
    verification_material: Option<Object<RawMaterial>>,
    dsse_envelope: Option<Object<RawEnvelope>>,
    message_signature: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    public_key: Option<Object<RawPublicKey>>,
    x509_certificate_chain: Option<Object<RawChain>>,
    certificate: Option<Value>,
}

#[derive(Deserialize)]
struct RawPublicKey {
    hint: Option<String>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<Object<RawCertificate>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<Object<RawSignature>>,
}

#[derive(Deserialize)]
struct RawSignature {
    sig: String,
}

/// Most certificates a chain in a bundle may carry.
const MAX_CHAIN: usize = 8;

/// Parses a bundle; the error says what is wrong in words.
pub(super) fn parse(json: &[u8]) -> Result<Bundle, String> {
    // UTF-8 text, objects where the bundle has messages: what the tool's reader takes
    // (`crate::artifacts::json`).
    let Object(raw): Object<RawBundle> =
        from_utf8_json(json).map_err(|e| format!("it is not a Sigstore bundle in JSON ({e})"))?;
    let media_type = raw.media_type.unwrap_or_default();
    if media_type != BUNDLE_MEDIA_TYPE {
        return Err(format!(
            "its media type is `{}`, expected `{BUNDLE_MEDIA_TYPE}`",
            truncate(&media_type)
        ));
    }
    let Object(material) = raw
        .verification_material
        .ok_or("it has no verificationMaterial")?;
    let material = match (
        material.public_key,
        material.x509_certificate_chain,
        material.certificate,
    ) {
        (_, _, Some(_)) => Material::Keyless,
        (Some(Object(key)), None, None) => Material::PublicKey {
            hint: key.hint.filter(|h| !h.is_empty()),
        },
        (None, Some(Object(chain)), None) => {
            if chain.certificates.is_empty() {
                return Err("its x509CertificateChain is empty".to_owned());
            }
            if chain.certificates.len() > MAX_CHAIN {
                return Err(format!(
                    "its x509CertificateChain has {} certificates, more than {MAX_CHAIN}",
                    chain.certificates.len()
                ));
            }
            let ders = chain
                .certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    decode_base64(&c.0.raw_bytes)
                        .ok_or_else(|| format!("certificate #{i} of its chain is not base64"))
                })
                .collect::<Result<_, _>>()?;
            Material::CertificateChain(ders)
        }
        (Some(_), Some(_), None) => {
            return Err(
                "its verificationMaterial has both a publicKey and a certificate chain".to_owned(),
            )
        }
        (None, None, None) => {
            return Err(
                "its verificationMaterial names no publicKey, certificate chain or certificate"
                    .to_owned(),
            )
        }
    };
    if raw.message_signature.is_some() {
        return Err(
            "it holds a messageSignature; a model signature holds a DSSE envelope".to_owned(),
        );
    }
    let Object(envelope) = raw
        .dsse_envelope
        .ok_or("it has no dsseEnvelope (the signed statement)")?;
    if envelope.signatures.len() != 1 {
        return Err(format!(
            "its DSSE envelope has {} signatures; a Sigstore bundle has exactly one",
            envelope.signatures.len()
        ));
    }
    let payload =
        decode_base64(&envelope.payload).ok_or("the DSSE envelope's payload is not base64")?;
    let signature = decode_base64(&envelope.signatures[0].0.sig)
        .ok_or("the DSSE envelope's signature is not base64")?;
    if signature.is_empty() {
        return Err("the DSSE envelope's signature is empty".to_owned());
    }
    Ok(Bundle {
        material,
        payload_type: envelope.payload_type,
        payload,
        signature,
    })
}

/// Protobuf JSON `bytes`: standard base64, padded or not (URL-safe is accepted too).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use data_encoding::{BASE64, BASE64URL, BASE64URL_NOPAD, BASE64_NOPAD};
    let text = text.trim();
    [BASE64, BASE64_NOPAD, BASE64URL, BASE64URL_NOPAD]
        .iter()
        .find_map(|encoding| encoding.decode(text.as_bytes()).ok())
}

/// At most 80 characters of a value from the file, for messages.
pub(super) fn truncate(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(material: &str, envelope: &str) -> String {
        format!(
            r#"{{"mediaType":"{BUNDLE_MEDIA_TYPE}","verificationMaterial":{material},"dsseEnvelope":{envelope}}}"#
        )
    }

    const ENVELOPE: &str = r#"{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"AQID","keyid":""}]}"#;

    #[test]
    fn a_key_bundle_gives_its_hint_payload_and_signature() {
        let parsed =
            parse(bundle(r#"{"publicKey":{"hint":"ab"},"tlogEntries":[]}"#, ENVELOPE).as_bytes())
                .unwrap();
        assert_eq!(
            parsed.material,
            Material::PublicKey {
                hint: Some("ab".to_owned())
            }
        );
        assert_eq!(parsed.payload, b"{}");
        assert_eq!(parsed.signature, [1, 2, 3]);
        assert_eq!(parsed.payload_type, "application/vnd.in-toto+json");
    }

    #[test]
    fn keyless_material_is_recognised() {
        let parsed = parse(
            bundle(
                r#"{"certificate":{"rawBytes":"AQID"},"tlogEntries":[{}]}"#,
                ENVELOPE,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.material, Material::Keyless);
    }

    #[test]
    fn hostile_shapes_are_refused_with_a_reason() {
        let cases = [
            (String::from("[]"), "not a Sigstore bundle"),
            (
                bundle(r#"{"publicKey":{}}"#, ENVELOPE).replace("v0.3", "v0.1"),
                "media type",
            ),
            (
                format!(r#"{{"mediaType":"{BUNDLE_MEDIA_TYPE}","dsseEnvelope":{ENVELOPE}}}"#),
                "no verificationMaterial",
            ),
            (
                format!(
                    r#"{{"mediaType":"{BUNDLE_MEDIA_TYPE}","verificationMaterial":{{"publicKey":{{}}}}}}"#
                ),
                "no dsseEnvelope",
            ),
            (
                bundle(
                    r#"{"publicKey":{}}"#,
                    &ENVELOPE.replace(r#"[{"sig":"AQID","keyid":""}]"#, "[]"),
                ),
                "0 signatures",
            ),
            (
                bundle(r#"{"publicKey":{}}"#, &ENVELOPE.replace("e30=", "%%%")),
                "payload is not base64",
            ),
            (
                bundle(r#"{"x509CertificateChain":{"certificates":[]}}"#, ENVELOPE),
                "x509CertificateChain is empty",
            ),
            (bundle("{}", ENVELOPE), "names no publicKey"),
        ];
        for (json, expected) in cases {
            let error = parse(json.as_bytes()).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
        // A byte that is not UTF-8 in a field we do not read (the fuzzer's finding).
        let mut not_utf8 = bundle(r#"{"publicKey":{"rawBytes":"?"}}"#, ENVELOPE).into_bytes();
        let at = not_utf8.iter().position(|b| *b == b'?').unwrap();
        not_utf8[at] = 0xf1;
        assert!(parse(&not_utf8).unwrap_err().contains("not UTF-8"));
        // The bundle (or one of its messages) as an array of its fields: serde's derived
        // structs would take it, the tool does not.
        let as_array =
            format!(r#"["{BUNDLE_MEDIA_TYPE}", {{"publicKey": {{}}}}, {ENVELOPE}, null]"#);
        assert!(parse(as_array.as_bytes())
            .unwrap_err()
            .contains("JSON object"));
        let envelope_as_array = bundle(
            r#"{"publicKey":{}}"#,
            r#"["e30=", "application/vnd.in-toto+json", [["AQID"]]]"#,
        );
        assert!(parse(envelope_as_array.as_bytes()).is_err());
    }
}
