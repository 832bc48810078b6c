//! rustls configurations built on the `ring` provider explicitly, so that no other provider a
//! dependency enables can change which one runs.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Trust for `wss://` connections: the webpki roots, or certificates of your own (a private
/// gateway, tests). The server name is taken from the stream URL's host.
///
/// # Examples
///
/// ```
/// use ssm_session::net::TlsConfig;
///
/// let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
/// // Not a real certificate: refused with a message naming the problem.
/// assert!(TlsConfig::with_root_pem(pem).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct TlsConfig {
    client: Arc<rustls::ClientConfig>,
    trust: Arc<str>,
}

impl Default for TlsConfig {
    /// Trusts the webpki (Mozilla) roots.
    fn default() -> Self {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::from_roots(roots, "the built-in Mozilla roots (webpki-roots)".into())
    }
}

impl TlsConfig {
    /// Trusts only `roots` (DER certificates).
    pub fn with_roots(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, rustls::Error> {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root)?;
        }
        let trust = format!("{} certificate(s) given by the program", store.len());
        Ok(Self::from_roots(store, trust.into()))
    }

    /// Trusts only the certificates in the PEM file at `path` (`--ca-cert`, `AWS_CA_BUNDLE`);
    /// errors and [`TlsConfig::trust`] name the file.
    pub fn from_pem_file(path: impl AsRef<std::path::Path>) -> Result<Self, CaFileError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|error| CaFileError {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        let mut config = Self::with_root_pem(&pem).map_err(|error| CaFileError {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        config.trust = format!("the CA file {}", path.display()).into();
        Ok(config)
    }

    /// Which roots are trusted, for messages: "the CA file …", "the built-in Mozilla roots …".
    pub fn trust(&self) -> &str {
        &self.trust
    }

    /// Trusts only the certificates in `pem` (one or more `CERTIFICATE` blocks).
    pub fn with_root_pem(pem: &[u8]) -> Result<Self, rustls::Error> {
        use rustls::pki_types::pem::PemObject;
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| rustls::Error::General(format!("bad PEM certificate: {error}")))?;
        if roots.is_empty() {
            return Err(rustls::Error::General("no certificate in the PEM".into()));
        }
        Self::with_roots(roots)
    }

    fn from_roots(roots: RootCertStore, trust: Box<str>) -> Self {
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConfig {
            client: Arc::new(client),
            trust: trust.into(),
        }
    }

    pub(crate) fn client(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
}

/// A CA file (`--ca-cert`, `AWS_CA_BUNDLE`) that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot use the CA file {}: {reason}", path.display())]
pub struct CaFileError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why (unreadable, not PEM, no certificate).
    pub reason: String,
}

/// A connection that failed because the two ends do not agree on TLS, said in terms of what
/// to change: the URL's scheme, or the CA to trust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsMismatch {
    /// The server's certificate chain does not end at a trusted root.
    #[error(
        "the gateway's certificate is not signed by a trusted CA ({reason}): pass --ca-cert FILE or set AWS_CA_BUNDLE (currently: {trust})"
    )]
    UntrustedCertificate {
        /// rustls' reason, e.g. `UnknownIssuer`.
        reason: String,
        /// What was trusted ([`TlsConfig::trust`]).
        trust: String,
    },
    /// The certificate was refused for another reason (name, expiry, usage).
    #[error("the gateway's certificate was refused: {reason} (trusting {trust})")]
    BadCertificate {
        /// rustls' reason, e.g. `NotValidForName`.
        reason: String,
        /// What was trusted ([`TlsConfig::trust`]).
        trust: String,
    },
    /// An `https://` (`wss://`) URL, but the server answered in plain text.
    #[error("the endpoint speaks plain HTTP, not TLS: use http:// (not https://)")]
    PlainText,
    /// An `http://` (`ws://`) URL, but the server answered with TLS records.
    #[error("the endpoint speaks TLS: use https:// (not http://)")]
    SpeaksTls,
}

impl TlsMismatch {
    /// What a failed TLS handshake (`rustls::Error`, or an `io::Error` carrying one) means, if
    /// it is one of the mismatches above.
    pub fn diagnose(error: &(dyn std::error::Error + 'static), tls: &TlsConfig) -> Option<Self> {
        let rustls_error = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
            None => error.downcast_ref::<rustls::Error>()?,
        };
        let trust = tls.trust().to_owned();
        match rustls_error {
            rustls::Error::InvalidCertificate(
                reason @ (rustls::CertificateError::UnknownIssuer
                | rustls::CertificateError::BadSignature
                | rustls::CertificateError::UnhandledCriticalExtension),
            ) => Some(TlsMismatch::UntrustedCertificate {
                reason: format!("{reason:?}"),
                trust,
            }),
            rustls::Error::InvalidCertificate(reason) => Some(TlsMismatch::BadCertificate {
                reason: format!("{reason:?}"),
                trust,
            }),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                Some(TlsMismatch::PlainText)
            }
            _ => None,
        }
    }

    /// Whether the first bytes a server sent on a plain connection are a TLS record (an alert
    /// or a handshake message, version 3.x): the server expected TLS.
    pub fn looks_like_tls(first: &[u8]) -> bool {
        matches!(first, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
    }
}

/// A server configuration (for a relay or gateway) presenting `chain` with `key`, on ring.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}
