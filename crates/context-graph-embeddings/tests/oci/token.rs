//! A token service for the registry's `auth.token` mode, as Docker Hub, Harbor and GitLab run
//! one: `GET /token?service=…&scope=repository:NAME:ACTIONS` with basic credentials answers
//! `{"token": JWT}`, an ES256 JWT whose `x5c` certificate the registry trusts
//! (`rootcertbundle`). It serves TLS with its own CA, and records what it was asked.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use data_encoding::{BASE64, BASE64URL_NOPAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// One request the service answered.
#[derive(Debug, Clone)]
pub(crate) struct TokenRequest {
    /// The `scope` parameters.
    pub(crate) scopes: Vec<String>,
    /// Whether the right basic credentials came with it.
    pub(crate) authenticated: bool,
    /// The status answered.
    pub(crate) status: u16,
}

pub(crate) struct TokenService {
    pub(crate) realm: String,
    pub(crate) service: String,
    pub(crate) issuer: String,
    /// The signing certificate (the registry's `rootcertbundle`).
    pub(crate) signing_certificate: PathBuf,
    /// The CA of the service's TLS certificate.
    pub(crate) ca_pem: String,
    pub(crate) requests: Arc<Mutex<Vec<TokenRequest>>>,
    _dir: tempfile::TempDir,
}

fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenService {
    /// Starts the service on loopback for `username`/`password`.
    pub(crate) fn start(username: &str, password: &str) -> TokenService {
        let dir = tempfile::tempdir().unwrap();
        // The key that signs tokens, and its self-signed certificate for the registry.
        let signing_key = rcgen::KeyPair::generate().unwrap();
        let mut signing_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        signing_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cg-test token signer");
        let signing_cert = signing_params.self_signed(&signing_key).unwrap();
        let signing_certificate = dir.path().join("token-signer.pem");
        std::fs::write(&signing_certificate, signing_cert.pem()).unwrap();
        let x5c = BASE64.encode(signing_cert.der());
        let pkcs8 = signing_key.serialize_der();

        // The service's own TLS certificate.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cg-test token service CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer_ca = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST,
            )));
        let leaf = leaf_params.signed_by(&leaf_key, &issuer_ca).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let service = "cg-test-registry".to_owned();
        let issuer = "cg-test-token-issuer".to_owned();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "Basic {}",
            BASE64.encode(format!("{username}:{password}").as_bytes())
        );
        let (served_requests, served_issuer, served_service) =
            (requests.clone(), issuer.clone(), service.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = acceptor.clone();
                    let (requests, issuer, service, expected, x5c, pkcs8) = (
                        served_requests.clone(),
                        served_issuer.clone(),
                        served_service.clone(),
                        expected.clone(),
                        x5c.clone(),
                        pkcs8.clone(),
                    );
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        let mut head = Vec::new();
                        let mut buffer = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buffer[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&head).into_owned();
                        let target = text.split(' ').nth(1).unwrap_or("").to_owned();
                        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                        let authenticated = text.lines().any(|line| {
                            line.split_once(':').is_some_and(|(k, v)| {
                                k.eq_ignore_ascii_case("authorization") && v.trim() == expected
                            })
                        });
                        let scopes = query_values(query, "scope");
                        let (status, body) = if authenticated {
                            let token = sign_token(&issuer, &service, &scopes, &x5c, &pkcs8);
                            (200, serde_json::json!({ "token": token }).to_string())
                        } else {
                            (401, r#"{"details":"bad credentials"}"#.to_owned())
                        };
                        requests.lock().unwrap().push(TokenRequest {
                            scopes,
                            authenticated,
                            status,
                        });
                        let reason = if status == 200 { "OK" } else { "Unauthorized" };
                        let answer = format!(
                            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.write_all(answer.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
        });
        TokenService {
            realm: format!("https://127.0.0.1:{port}/token"),
            service,
            issuer,
            signing_certificate,
            ca_pem: ca_cert.pem(),
            requests,
            _dir: dir,
        }
    }
}

/// An ES256 JWT granting what `scopes` ask for (`repository:NAME:a,b`).
fn sign_token(issuer: &str, service: &str, scopes: &[String], x5c: &str, pkcs8: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": "cg-test",
        "aud": service,
        "exp": now + 600,
        "nbf": now - 60,
        "iat": now,
        "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).unwrap();
    let signature = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    format!(
        "{signing_input}.{}",
        BASE64URL_NOPAD.encode(signature.as_ref())
    )
}
