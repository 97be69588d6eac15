//! TLS on the CDN listener, as the Hub's CDN speaks it: a certificate for `127.0.0.1` (and
//! `localhost`) signed by a CA made at start-up, rustls on the workspace's crypto provider
//! (aws-lc-rs), and HTTP/2 offered by ALPN beside HTTP/1.1 (what CloudFront offers). Clients
//! under test trust the CA ([`CdnTls::ca_pem`]); nothing else does.

use std::fmt;
use std::io;
use std::sync::Arc;

use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Which application protocols the CDN offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alpn {
    /// `h2` first, then `http/1.1`: a client with HTTP/2 gets HTTP/2 (the Hub's CDN).
    #[default]
    Http2AndHttp1,
    /// Only `http/1.1` (a server or proxy without HTTP/2).
    Http1Only,
}

/// A CA and a server certificate signed by it, for the CDN listener
/// ([`crate::HubBuilder::cdn_tls`]). `Debug` shows neither key.
#[derive(Clone)]
pub struct CdnTls {
    ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
    alpn: Alpn,
}

impl fmt::Debug for CdnTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdnTls")
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

impl CdnTls {
    /// A fresh CA ("hub-emulator test CA") and a certificate for `127.0.0.1` and `localhost`
    /// signed by it; HTTP/2 and HTTP/1.1 offered.
    pub fn generate() -> io::Result<Self> {
        let ca_key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hub-emulator test CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(io::Error::other)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
        let leaf_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(io::Error::other)?;
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(io::Error::other)?;
        Ok(CdnTls {
            ca_pem: ca_cert.pem(),
            chain: vec![leaf.der().clone()],
            key_der: leaf_key.serialize_der(),
            alpn: Alpn::default(),
        })
    }

    /// The same certificate, offering `alpn`.
    pub fn alpn(mut self, alpn: Alpn) -> Self {
        self.alpn = alpn;
        self
    }

    /// What is offered by ALPN.
    pub fn offered(&self) -> Alpn {
        self.alpn
    }

    /// The CA certificate, PEM: what a client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The acceptor for the listener.
    pub(crate) fn acceptor(&self) -> io::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .map_err(io::Error::other)?;
        config.alpn_protocols = match self.alpn {
            Alpn::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
        };
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
