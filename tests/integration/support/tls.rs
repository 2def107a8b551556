//! TLS parts for proxy tests: a test CA, fake cluster nodes (rustls mTLS servers, each
//! with its own certificate so a test knows which node answered), and clients.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
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
    /// The CA certificate, PEM (for `ca_file`).
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test cluster CA");
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Pki {
            ca_params: params,
            ca_key: key,
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
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

    /// A leaf certificate for `names` (IP addresses become IP SANs), valid until
    /// `not_after` (y, m, d; default: rcgen's, far in the future), and its key: PEM.
    pub fn issue_pem(&self, names: &[&str], not_after: Option<(i32, u8, u8)>) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
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

/// Handshakes with `addr` using `openssl s_client`, offering `alpn`; returns the server's
/// certificate chain (PEM blocks) and the ALPN id it selected, or `None` when no
/// handshake completed. OpenSSL rather than rustls: OpenBao's cluster certificates are
/// ECDSA P-521, which rustls' ring provider cannot verify signatures for. Our client
/// sends no certificate, which the active node only objects to after the handshake.
pub async fn observe(addr: SocketAddr, alpn: &[u8]) -> Option<(Vec<String>, Option<String>)> {
    let alpn = String::from_utf8(alpn.to_vec()).unwrap();
    let out = tokio::process::Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-alpn", &alpn, "-servername", "fw-observer", "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut chain = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current = Some(String::new());
        }
        if let Some(c) = current.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            chain.extend(current.take());
        }
    }
    if chain.is_empty() {
        return None;
    }
    let selected = text
        .lines()
        .find_map(|l| l.strip_prefix("ALPN protocol: "))
        .map(str::to_string);
    Some((chain, selected))
}

/// The bytes of a real ClientHello (rustls) offering `alpn`: what the proxy peeks at.
/// A connection to a proxy listener at `addr` that forwarded a ClientHello to an echo
/// node and got it back: the proxy path works end to end.
pub fn echoed_hello(addr: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let hello = client_hello_bytes(ALPN_FW);
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    conn.write_all(&hello).unwrap();
    let mut back = vec![0u8; hello.len()];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(back, hello, "the hello came back through {addr}");
    conn
}

pub fn client_hello_bytes(alpn: &[u8]) -> Vec<u8> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), SNI.try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// A plain TCP echo server on `addr` (a stand-in cluster port behind the proxy, for
/// tests that only need bytes to come back), on its own threads.
pub fn spawn_echo(addr: &str) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The ALPN id of request forwarding to the active node.
pub const FORWARDING: &[u8] = b"req_fw_sb-act_v1";

/// Waits until the active node's cluster port `direct` serves request forwarding, then
/// until the proxy at `proxy` passes a forwarding ClientHello through to it untouched:
/// the same certificate chain and the same negotiated ALPN. Returns the chain.
pub async fn passes_through(direct: SocketAddr, proxy: SocketAddr) -> Vec<String> {
    use super::openbao::eventually;
    use std::time::Duration;
    let (direct_chain, direct_alpn) = eventually(
        Duration::from_secs(20),
        "the active serves forwarding",
        || async { observe(direct, FORWARDING).await },
    )
    .await;
    assert_eq!(direct_alpn.as_deref(), Some("req_fw_sb-act_v1"));
    let (chain, alpn) = eventually(Duration::from_secs(20), "the proxy forwards", || async {
        observe(proxy, FORWARDING).await
    })
    .await;
    assert_eq!(
        chain, direct_chain,
        "same server certificate chain through the proxy"
    );
    assert_eq!(alpn, direct_alpn, "same negotiated ALPN through the proxy");
    chain
}

/// After a failover: waits until the new active node's cluster port `new_direct` serves
/// forwarding with a certificate other than the old active's `old_chain`, then until
/// the proxy at `proxy` passes forwarding through to it. Returns the new chain.
pub async fn follows_failover(
    new_direct: SocketAddr,
    proxy: SocketAddr,
    old_chain: &[String],
) -> Vec<String> {
    use super::openbao::eventually;
    use std::time::Duration;
    let (new_chain, _) = eventually(
        Duration::from_secs(20),
        "the new active serves forwarding",
        || async { observe(new_direct, FORWARDING).await },
    )
    .await;
    assert_ne!(
        new_chain, old_chain,
        "a new active presents a new certificate"
    );
    eventually(
        Duration::from_secs(30),
        "the proxy reaches the new active",
        || async {
            let (chain, _) = observe(proxy, FORWARDING).await?;
            (chain == new_chain).then_some(())
        },
    )
    .await;
    new_chain
}
