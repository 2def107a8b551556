//! TLS parts for proxy tests: a test CA, fake cluster nodes (rustls mTLS servers, each
//! with its own certificate so a test knows which node answered), and clients.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const SNI: &str = "fw-test";
pub const ALPN_FW: &[u8] = b"req_fw_sb-act_v1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test cluster CA");
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().der().clone();
        Pki {
            ca_params: params,
            ca_key: key,
            ca,
        }
    }

    /// A leaf certificate for `SNI` with common name `cn`.
    pub fn issue(&self, cn: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(vec![SNI.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap().der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert, key)
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(roots)
    }

    /// A client that trusts the CA, presents its own certificate, and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> ClientConfig {
        let (cert, key) = self.issue("client");
        let mut c = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        c
    }
}

/// A fake cluster node: mTLS with its own certificate. After the handshake it echoes
/// every byte; when the client half-closes it sends `bye <bytes echoed>\n` and closes.
pub struct FakeNode {
    pub addr: SocketAddr,
    pub cert: CertificateDer<'static>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNode {
    pub async fn start(pki: &Pki, bind: SocketAddr, cn: &str) -> FakeNode {
        let (cert, key) = pki.issue(cn);
        let verifier = WebPkiClientVerifier::builder_with_provider(pki.roots(), provider())
            .build()
            .unwrap();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![ALPN_FW.to_vec(), b"replication_v1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total: u64 = 0;
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                                total += n as u64;
                            }
                            Err(_) => return,
                        }
                    }
                    let _ = tls.write_all(format!("bye {total}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        FakeNode { addr, cert, task }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to `addr` and completes a TLS handshake with `config` for `SNI`.
pub async fn connect(
    addr: SocketAddr,
    config: ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SNI).unwrap(), tcp)
        .await
}

/// Accepts any server certificate (checking only the handshake signature) so a test
/// can see exactly which chain a server presented: OpenBao's cluster certificates are
/// self-signed per active node.
#[derive(Debug)]
struct RecordOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for RecordOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client that offers `alpn`, accepts any server certificate and has none of its own.
pub fn observing_client(alpn: &[u8]) -> ClientConfig {
    let p = provider();
    let mut c = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordOnly(p)))
        .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    c
}

/// Handshakes with `addr` offering `alpn`; returns the server's chain and the ALPN id it
/// selected. The handshake completing on our side is all we need: an OpenBao active node
/// then aborts because we present no client certificate.
pub async fn observe(
    addr: SocketAddr,
    alpn: &[u8],
) -> std::io::Result<(Vec<Vec<u8>>, Option<Vec<u8>>)> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(Arc::new(observing_client(alpn)))
        .connect(ServerName::try_from("fw-observer").unwrap(), tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    let chain = conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    Ok((chain, conn.alpn_protocol().map(<[u8]>::to_vec)))
}
