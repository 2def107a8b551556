//! Reading a TLS ClientHello without terminating TLS: the bytes read are kept, exactly,
//! so they can be replayed to the chosen backend; rustls' own `Acceptor` parses them
//! (records, fragmentation across records, extensions) so we write no TLS parser.
//!
//! Limits: the whole ClientHello must arrive within a deadline and fit in a size cap;
//! anything that is not a TLS handshake is refused at once.

use std::io;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};

/// What the client asked for, and the bytes it sent to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub sni: Option<String>,
    /// ALPN ids in the client's order; empty when the client sent no ALPN extension.
    pub alpn: Vec<Vec<u8>>,
    /// Every byte read from the client so far, to forward unchanged.
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("ClientHello larger than {0} bytes")]
    TooLarge(usize),
    #[error("not a TLS ClientHello: {0}")]
    NotTls(String),
    #[error("client closed before a complete ClientHello")]
    Eof,
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

impl HelloError {
    /// Stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HelloError::Timeout(_) => "hello_timeout",
            HelloError::TooLarge(_) => "hello_too_large",
            HelloError::NotTls(_) => "not_tls",
            HelloError::Eof => "hello_eof",
            HelloError::Io(_) => "io",
        }
    }
}

/// Reads from `stream` until a full ClientHello is parsed, `max` bytes have been read,
/// or `timeout` passes (a slow client dribbling bytes still hits the deadline).
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
    max: usize,
) -> Result<ClientHello, HelloError> {
    tokio::time::timeout(timeout, read_inner(stream, max))
        .await
        .map_err(|_| HelloError::Timeout(timeout))?
}

async fn read_inner<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<ClientHello, HelloError> {
    // Read straight into the bytes we keep (no second buffer, no copy).
    let mut bytes = Vec::with_capacity(4096);
    let mut acceptor = Acceptor::default();
    loop {
        let start = bytes.len();
        let room = max.saturating_sub(start);
        if room == 0 {
            return Err(HelloError::TooLarge(max));
        }
        bytes.resize(start + room.min(4096), 0);
        let n = stream.read(&mut bytes[start..]).await?;
        bytes.truncate(start + n);
        if n == 0 {
            return Err(HelloError::Eof);
        }
        // Refuse plain text at the first byte: a TLS connection starts with a handshake
        // record (content type 22). Saves buffering a slow HTTP request to the cap.
        if start == 0 && bytes[0] != 0x16 {
            return Err(HelloError::NotTls(format!(
                "first byte {:#04x} is not a handshake record",
                bytes[0]
            )));
        }
        let mut fed = &bytes[start..];
        while !fed.is_empty() {
            acceptor
                .read_tls(&mut fed)
                .map_err(|e| HelloError::NotTls(e.to_string()))?;
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return Ok(ClientHello {
                    sni: hello.server_name().map(str::to_string),
                    alpn: hello
                        .alpn()
                        .map(|ids| ids.map(<[u8]>::to_vec).collect())
                        .unwrap_or_default(),
                    bytes,
                });
            }
            Err((e, _alert)) => return Err(HelloError::NotTls(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello from rustls' client, with the given SNI and ALPN ids.
    pub(crate) fn client_hello_bytes(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), sni.to_string().try_into().unwrap())
                .unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    async fn parse(bytes: &[u8]) -> Result<ClientHello, HelloError> {
        let mut r = bytes;
        read_client_hello(&mut r, Duration::from_secs(1), 16384).await
    }

    #[tokio::test]
    async fn reads_sni_and_alpn_and_keeps_the_bytes() {
        let raw = client_hello_bytes("fw-1234.example", &[b"req_fw_sb-act_v1"]);
        let h = parse(&raw).await.unwrap();
        assert_eq!(h.sni.as_deref(), Some("fw-1234.example"));
        assert_eq!(h.alpn, vec![b"req_fw_sb-act_v1".to_vec()]);
        assert_eq!(h.bytes, raw);
    }

    #[tokio::test]
    async fn no_alpn_is_an_empty_list() {
        let raw = client_hello_bytes("raft-1", &[]);
        assert!(parse(&raw).await.unwrap().alpn.is_empty());
    }

    #[tokio::test]
    async fn hello_split_over_many_records_and_reads() {
        let raw = client_hello_bytes("x.example", &[b"replication_v1", b"h2"]);
        // Re-frame the handshake into 50-byte records, as a client may legally do.
        let body = &raw[5..];
        let mut reframed = Vec::new();
        for part in body.chunks(50) {
            reframed.extend_from_slice(&[0x16, 0x03, 0x01]);
            reframed.extend_from_slice(&(part.len() as u16).to_be_bytes());
            reframed.extend_from_slice(part);
        }
        // Deliver it 7 bytes per read.
        let (mut client, mut server) = tokio::io::duplex(7);
        let data = reframed.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in data.chunks(7) {
                client.write_all(c).await.unwrap();
            }
            std::future::pending::<()>().await;
        });
        let h = read_client_hello(&mut server, Duration::from_secs(2), 16384)
            .await
            .unwrap();
        assert_eq!(h.alpn, vec![b"replication_v1".to_vec(), b"h2".to_vec()]);
        assert_eq!(h.bytes, reframed);
    }

    #[tokio::test]
    async fn plain_text_and_garbage_are_refused() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n\r\n").await,
            Err(HelloError::NotTls(_))
        ));
        assert!(matches!(
            parse(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).await,
            Err(HelloError::NotTls(_))
        ));
        assert!(matches!(parse(&[0x16, 0x03]).await, Err(HelloError::Eof)));
    }

    #[tokio::test]
    async fn oversized_hello_hits_the_cap() {
        // A record header promising 16 KiB of handshake, then filler.
        let mut raw = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
        raw.resize(20000, 0);
        let mut r = &raw[..];
        let e = read_client_hello(&mut r, Duration::from_secs(1), 1024).await;
        assert!(matches!(e, Err(HelloError::TooLarge(1024))), "{e:?}");
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let e = read_client_hello(&mut server, Duration::from_millis(100), 1024).await;
        assert!(matches!(e, Err(HelloError::Timeout(_))));
    }
}
