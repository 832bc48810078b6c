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
}

impl Default for TlsConfig {
    /// Trusts the webpki (Mozilla) roots.
    fn default() -> Self {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::from_roots(roots)
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
        Ok(Self::from_roots(store))
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

    fn from_roots(roots: RootCertStore) -> Self {
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConfig {
            client: Arc::new(client),
        }
    }

    pub(crate) fn client(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
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
