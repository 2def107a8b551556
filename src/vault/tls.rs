//! TLS for polling a cluster's nodes: the rustls client config built from a cluster's
//! `ca_file`, `client_cert_file` + `client_key_file` and `tls_server_name` (Vault's own
//! client calls them `VAULT_CACERT`, `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY`,
//! `VAULT_TLS_SERVER_NAME`), and the client certificate's expiry for its metric.
//!
//! Config validation builds the same config, so whatever `check-config` accepts builds
//! here too. The crypto provider is ring, the one reqwest's rustls uses: one provider
//! for the whole binary.
//!
//! There is no `tls_skip_verify`: the agent's answers decide where replication streams
//! and token requests go, so a node it has not verified must not be able to name the
//! leader. Nodes addressed by IP whose certificates name hosts are what
//! `tls_server_name` is for; a private CA is what `ca_file` is for.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A PEM file as validation read it: its path, for messages, and its contents, so that
/// a reload after the file changed on disk (a rotated certificate) counts as a changed
/// cluster and rebuilds its client.
#[derive(Debug, Clone, PartialEq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// A cluster's TLS settings for polling (the keys `ca_file`, `client_cert_file`, `client_key_file`, `tls_server_name`;
/// `config` reads and checks them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterTls {
    /// `ca_file`: CAs to trust instead of the system roots.
    pub ca: Option<PemFile>,
    /// `client_cert_file` and `client_key_file`: presented to nodes that ask.
    pub client_cert: Option<PemFile>,
    pub client_key: Option<PemFile>,
    /// `tls_server_name`: the name to verify node certificates for, instead of the
    /// address in the node's URL.
    pub server_name: Option<String>,
    /// Some node is polled over https. Without one no TLS is ever spoken, so no trust
    /// roots are read: a plain-http cluster works on a host without ca-certificates
    /// (a minimal image; found by packaging/test.sh's clean Debian 12).
    pub https_nodes: bool,
}

/// Why a cluster's TLS settings cannot be used; each names the setting it is about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("ca_file: {0}")]
    Ca(String),
    #[error("client_cert_file: {0}")]
    ClientCert(String),
    #[error("client_key_file: {0}")]
    ClientKey(String),
    /// The key is not the certificate's (both files named by the caller).
    #[error("the key does not match the certificate")]
    Mismatch,
    #[error("no system root certificates: {0}")]
    Roots(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM bundle; an error when there is none.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// How long one read of the system trust store serves: long enough for one start or
/// reload (validation, then every cluster's watcher), short enough that the next
/// reload reads the store again (an updated ca-certificates is picked up by a reload).
const SYSTEM_ROOTS_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// The system trust store, shared by every cluster without a `ca_file`. Read once per
/// SYSTEM_ROOTS_FRESH rather than once per cluster: each read parses ~150 certificates
/// into a few hundred KiB, which 30 clusters (and their validation) would hold 30 times.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Arc<RootCertStore>)>> =
        std::sync::Mutex::new(None);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((read, roots)) = cache.as_ref() {
        if read.elapsed() < SYSTEM_ROOTS_FRESH {
            return Ok(roots.clone());
        }
    }
    let native = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        let why = native
            .errors
            .first()
            .map_or("none found".to_string(), |e| e.to_string());
        return Err(TlsError::Roots(why));
    }
    let roots = Arc::new(roots);
    *cache = Some((std::time::Instant::now(), roots.clone()));
    Ok(roots)
}

/// The rustls config a cluster's polls use.
pub fn client_config(tls: &ClusterTls) -> Result<rustls::ClientConfig, TlsError> {
    let roots = match &tls.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(&ca.pem).map_err(TlsError::Ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Ca(format!("unusable certificate: {e}")))?;
            }
            Arc::new(roots)
        }
        None if tls.https_nodes => system_roots()?,
        // No node speaks TLS: nothing to trust, no roots to read.
        None => return finish(tls, Arc::new(NoHttps)),
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Ca(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &tls.server_name {
        Some(name) => Arc::new(VerifyAs {
            inner: webpki,
            name: ServerName::try_from(name.clone())
                .map_err(|e| TlsError::Ca(format!("tls_server_name {name:?}: {e}")))?,
        }),
        None => webpki,
    };
    finish(tls, verifier)
}

/// The rest of a cluster's rustls config around its certificate `verifier`: the
/// protocol versions and the client certificate.
fn finish(
    tls: &ClusterTls,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Ca(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(&cert.pem).map_err(TlsError::ClientCert)?;
            let key = PrivateKeyDer::from_pem_slice(&key.pem)
                .map_err(|e| TlsError::ClientKey(format!("no private key in it: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => TlsError::Mismatch,
                    other => TlsError::ClientKey(other.to_string()),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// When the client certificate (the first of its file) stops being valid.
pub fn client_cert_expiry(tls: &ClusterTls) -> Option<SystemTime> {
    let cert = certificates(&tls.client_cert.as_ref()?.pem).ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.first()?).ok()?;
    let secs = parsed.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Verifies the server's certificate for a configured name instead of the address the
/// node was dialled at (nodes addressed by IP, certificates naming hosts).
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate verifier of a cluster with no https node: TLS is never spoken to
/// its nodes, so it trusts nothing (and reads no trust roots, which a minimal host may
/// not have).
#[derive(Debug)]
struct NoHttps;

impl NoHttps {
    fn refuse<T>() -> Result<T, rustls::Error> {
        Err(rustls::Error::General(
            "no node of this cluster is configured for https".into(),
        ))
    }
}

impl ServerCertVerifier for NoHttps {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::refuse()
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::refuse()
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::refuse()
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS failure behind a poll error, if that is what it was: rustls' own words
/// ("invalid peer certificate: UnknownIssuer", "received fatal alert:
/// CertificateRequired"). rustls errors reach reqwest inside `io::Error`s, whose
/// `source()` skips the error they wrap, so each level is unwrapped by hand.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = tls_failure(inner) {
                return Some(found);
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(text: String) -> PemFile {
        PemFile {
            path: "t.pem".into(),
            pem: text.into_bytes(),
        }
    }

    /// A self-signed certificate valid from 2020-01-01 until `day` of January 2040
    /// (or 2020, for `day` above 100: 2020-01-(day - 100)), and its key.
    fn issued(day: u8) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = if day > 100 {
            rcgen::date_time_ymd(2020, 1, day - 100)
        } else {
            rcgen::date_time_ymd(2040, 1, day)
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let (cert, _) = issued(1);
        let (_, other_key) = issued(1);
        let tls = ClusterTls {
            client_cert: Some(pem(cert.clone())),
            client_key: Some(pem(other_key)),
            ..Default::default()
        };
        assert_eq!(client_config(&tls).unwrap_err(), TlsError::Mismatch);
        let (cert2, key2) = issued(1);
        let tls = ClusterTls {
            client_cert: Some(pem(cert2)),
            client_key: Some(pem(key2)),
            ..Default::default()
        };
        assert!(client_config(&tls).is_ok());
        assert!(matches!(
            certificates(b"not a pem").unwrap_err().as_str(),
            "holds no certificate"
        ));
    }

    #[test]
    fn the_expiry_is_the_certificates_not_after() {
        let (cert, key) = issued(111);
        let tls = ClusterTls {
            client_cert: Some(pem(cert)),
            client_key: Some(pem(key)),
            ..Default::default()
        };
        let at = client_cert_expiry(&tls).unwrap();
        // 2020-01-11T00:00:00Z
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_578_700_800
        );
        assert_eq!(client_cert_expiry(&ClusterTls::default()), None);
    }
}
