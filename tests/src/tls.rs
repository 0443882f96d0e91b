//! Certificates made for a test: a CA the worker is told to trust, and
//! server configurations for HTTPS receivers
//! ([`crate::receivers::Receiver::start_tls`]).

use std::sync::Arc;

/// A CA made for the test, which the worker is told to trust.
pub fn test_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    test_ca_named("postbox test CA")
}

/// A CA named `name`: CAs with one name would be told apart only by their
/// signatures.
pub fn test_ca_named(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap()
}

/// What the worker is given to trust `ca`.
pub fn trust(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) -> reqwest::Certificate {
    reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()
}

/// A TLS server configuration whose certificate holds `names`, signed by `ca`.
pub fn tls_receiver_config(
    names: &[&str],
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> tokio_rustls::TlsAcceptor {
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    tls_acceptor(params, ca)
}

/// A TLS server configuration for a certificate made from `params` (names,
/// validity, ...), signed by `ca`.
pub fn tls_acceptor(
    params: rcgen::CertificateParams,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> tokio_rustls::TlsAcceptor {
    tls_acceptor_alpn(params, ca, &[])
}

/// [`tls_acceptor`] offering the application protocols `alpn` (e.g. `h2`,
/// `http/1.1`), most preferred first; none: the client's choice is ignored.
pub fn tls_acceptor_alpn(
    params: rcgen::CertificateParams,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
