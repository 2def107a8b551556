//! Reading a TLS ClientHello without terminating TLS: the bytes read are kept, exactly,
//! so they can be replayed to the chosen backend, and the two fields routing needs (the
//! ALPN ids, and SNI for logs) are found in them.
//!
//! Why a scanner of our own rather than rustls' `Acceptor` (which this module used
//! first): the Acceptor builds a server connection and an owned copy of every extension
//! to hand back two of them. That was half of the proxy's user-space instructions per
//! connection (callgrind: ~26k of ~53k, with a zeroed 4 KiB buffer on each side), on a
//! path where HAProxy spends none. The scanner below reads record and handshake framing
//! and walks the extension list; everything else (cipher suites, key shares, versions)
//! is the backend's to judge, as it receives the bytes unchanged. The tests hold it to
//! rustls' answers on real ClientHellos, reframed and split every way.
//!
//! Limits: the whole ClientHello must arrive within a deadline and fit in a size cap;
//! anything that is not a TLS handshake is refused at the first byte that says so.

use std::io;
use std::ops::Range;
use std::time::Duration;

use tokio::net::TcpStream;

/// Handshake record content type, and the ClientHello handshake message type.
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// How much to ask the kernel for per read: a ClientHello is ~250-1,800 bytes.
const READ_CHUNK: usize = 4096;

/// What the client asked for, and the bytes it sent to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Every byte read from the client so far, to forward unchanged.
    pub bytes: Vec<u8>,
    /// The handshake message, when it spanned several records (a legal but rare
    /// framing); empty otherwise, and the ranges below point into `bytes`.
    gathered: Vec<u8>,
    /// The ALPN extension's protocol list (empty when the client sent none).
    alpn: Range<usize>,
    /// The first host name of the server_name extension.
    sni: Option<Range<usize>>,
}

impl ClientHello {
    fn fields(&self) -> &[u8] {
        if self.gathered.is_empty() {
            &self.bytes
        } else {
            &self.gathered
        }
    }

    /// ALPN ids in the client's order; empty when the client sent no ALPN extension.
    pub fn alpn(&self) -> Alpn<'_> {
        Alpn(&self.fields()[self.alpn.clone()])
    }

    /// The SNI host name, when there is one and it is UTF-8 (it is only logged).
    pub fn sni(&self) -> Option<&str> {
        let range = self.sni.clone().filter(|r| !r.is_empty())?;
        std::str::from_utf8(&self.fields()[range]).ok()
    }
}

/// An ALPN protocol list in its wire form (each id prefixed by its length), checked when
/// made: every id is non-empty and the lengths add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Alpn<'a>(&'a [u8]);

impl<'a> Alpn<'a> {
    /// Checks a wire-form list; None when the lengths do not add up or an id is empty.
    pub fn parse(wire: &'a [u8]) -> Option<Self> {
        let mut rest = wire;
        while let Some((&len, tail)) = rest.split_first() {
            if len == 0 || tail.len() < usize::from(len) {
                return None;
            }
            rest = &tail[usize::from(len)..];
        }
        Some(Alpn(wire))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> Option<&'a [u8]> {
        self.iter().next()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (id, tail) = tail.split_at(usize::from(len));
            rest = tail;
            Some(id)
        })
    }
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

/// Reads from `stream` until a full ClientHello is found, `max` bytes have been read,
/// or `timeout` passes (a slow client dribbling bytes still hits the deadline).
pub async fn read_client_hello(
    stream: &TcpStream,
    timeout: Duration,
    max: usize,
) -> Result<ClientHello, HelloError> {
    tokio::time::timeout(timeout, read_inner(stream, max))
        .await
        .map_err(|_| HelloError::Timeout(timeout))?
}

async fn read_inner(stream: &TcpStream, max: usize) -> Result<ClientHello, HelloError> {
    // Read straight into the bytes we keep: no second buffer, no copy, no zeroing.
    let mut bytes = Vec::with_capacity(max.min(READ_CHUNK));
    let mut scanner = Scanner::new(max);
    loop {
        if bytes.len() >= max {
            return Err(HelloError::TooLarge(max));
        }
        if bytes.len() == bytes.capacity() {
            bytes.reserve_exact((max - bytes.len()).min(READ_CHUNK));
        }
        if super::read::read_append(stream, &mut bytes).await? == 0 {
            return Err(HelloError::Eof);
        }
        if let Some(found) = scanner.scan(&bytes)? {
            return Ok(found.into_hello(bytes, scanner.gathered));
        }
    }
}

/// Runs the scanner over `reads`, each as if it arrived in one read, the way
/// [`read_client_hello`] does (at most `max` bytes in all); `Ok(None)` when they end
/// before a whole ClientHello. Sans I/O, for the fuzz target (`fuzz/`).
pub fn scan_reads(reads: &[&[u8]], max: usize) -> Result<Option<ClientHello>, HelloError> {
    let mut bytes = Vec::new();
    let mut scanner = Scanner::new(max);
    for read in reads {
        if bytes.len() >= max {
            return Err(HelloError::TooLarge(max));
        }
        let room = max - bytes.len();
        bytes.extend_from_slice(&read[..read.len().min(room)]);
        if let Some(found) = scanner.scan(&bytes)? {
            return Ok(Some(found.into_hello(bytes, scanner.gathered)));
        }
    }
    Ok(None)
}

/// Where the fields are, in the handshake message.
struct Found {
    alpn: Range<usize>,
    sni: Option<Range<usize>>,
}

impl Found {
    fn into_hello(self, bytes: Vec<u8>, gathered: Vec<u8>) -> ClientHello {
        ClientHello {
            bytes,
            gathered,
            alpn: self.alpn,
            sni: self.sni,
        }
    }
}

/// Finds the ClientHello in the bytes received so far, one call per read; sans I/O, so
/// the tests can feed it every framing and split.
struct Scanner {
    max: usize,
    /// Offset in the bytes of the first record not yet complete.
    next_record: usize,
    /// The handshake bytes of the first complete record, as a range of the bytes.
    first: Option<Range<usize>>,
    /// The handshake bytes of all complete records, once there is more than one.
    gathered: Vec<u8>,
}

impl Scanner {
    fn new(max: usize) -> Self {
        Self {
            max,
            next_record: 0,
            first: None,
            gathered: Vec::new(),
        }
    }

    /// The handshake bytes of the complete records so far.
    fn message<'b>(&'b self, bytes: &'b [u8]) -> &'b [u8] {
        match &self.first {
            Some(first) => &bytes[first.clone()],
            None => &self.gathered,
        }
    }

    /// `Ok(None)`: need more bytes. `bytes` must be the previous call's bytes plus
    /// whatever arrived since. Offsets in the result are into `bytes`, or into
    /// `self.gathered` when that is not empty.
    fn scan(&mut self, bytes: &[u8]) -> Result<Option<Found>, HelloError> {
        self.take_records(bytes)?;
        let message = self.message(bytes);
        let base = self.first.as_ref().map_or(0, |r| r.start);
        if message.len() < 4 {
            return Ok(None);
        }
        if message[0] != CLIENT_HELLO {
            return Err(not_tls(format!(
                "handshake message type {} is not ClientHello",
                message[0]
            )));
        }
        let len = u24(&message[1..4]);
        // Each record adds 5 bytes of header to what must be read.
        if 4 + len + 5 > self.max {
            return Err(HelloError::TooLarge(self.max));
        }
        if message.len() < 4 + len {
            return Ok(None);
        }
        let found = client_hello_fields(&message[4..4 + len]).map_err(not_tls)?;
        let shift = |r: Range<usize>| r.start + base + 4..r.end + base + 4;
        Ok(Some(Found {
            alpn: shift(found.alpn),
            sni: found.sni.map(shift),
        }))
    }

    /// Takes complete handshake records until the message is whole; what follows it
    /// (early data, say) is not ours to judge.
    #[inline]
    fn take_records(&mut self, bytes: &[u8]) -> Result<(), HelloError> {
        while !whole(self.message(bytes)) {
            let header = &bytes[self.next_record..];
            // Refuse at the first byte: plain text is not worth buffering to the cap.
            match header.first() {
                None => break,
                Some(&HANDSHAKE) => {}
                Some(&other) => {
                    return Err(not_tls(format!("record type {other} is not a handshake")))
                }
            }
            if header.len() < 5 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len == 0 {
                return Err(not_tls("empty handshake record".into()));
            }
            if header.len() < 5 + len {
                break;
            }
            let payload = self.next_record + 5..self.next_record + 5 + len;
            match self.first.take() {
                None if self.gathered.is_empty() => self.first = Some(payload),
                first => {
                    if let Some(first) = first {
                        self.gathered.extend_from_slice(&bytes[first]);
                    }
                    self.gathered.extend_from_slice(&bytes[payload]);
                }
            }
            self.next_record += 5 + len;
        }
        Ok(())
    }
}

/// Whether `message` holds a whole handshake message (type, 3-byte length, body).
fn whole(message: &[u8]) -> bool {
    message.len() >= 4 && message.len() - 4 >= u24(&message[1..4])
}

fn u24(b: &[u8]) -> usize {
    usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2])
}

fn not_tls(reason: String) -> HelloError {
    HelloError::NotTls(reason)
}

/// The ALPN list and SNI host name in a ClientHello's body (RFC 8446 4.1.2; TLS 1.2's
/// is the same up to the extensions, which 1.2 allows to be absent), as offsets into it.
fn client_hello_fields(body: &[u8]) -> Result<Found, String> {
    let mut r = Cursor { buf: body, pos: 0 };
    r.skip(2 + 32, "version and random")?;
    let session_id = r.u8("session id length")?;
    r.skip(usize::from(session_id), "session id")?;
    // Cipher suites and compression methods: only their lengths matter here.
    let suites = r.u16("cipher suites length")?;
    r.skip(usize::from(suites), "cipher suites")?;
    let compression = r.u8("compression methods length")?;
    r.skip(usize::from(compression), "compression methods")?;
    let mut found = Found {
        alpn: 0..0,
        sni: None,
    };
    if r.pos == body.len() {
        return Ok(found);
    }
    let extensions = usize::from(r.u16("extensions length")?);
    if extensions != body.len() - r.pos {
        return Err("extensions length does not match the message".into());
    }
    let (mut seen_alpn, mut seen_sni) = (false, false);
    while r.pos < body.len() {
        let kind = r.u16("extension type")?;
        let len = usize::from(r.u16("extension length")?);
        let start = r.pos;
        r.skip(len, "extension")?;
        let ext = Cursor {
            buf: &body[..start + len],
            pos: start,
        };
        // A second copy of an extension we act on could make us route by one list
        // while the server reads the other: refuse, as TLS requires.
        match kind {
            EXT_ALPN if seen_alpn => return Err("two ALPN extensions".into()),
            EXT_SERVER_NAME if seen_sni => return Err("two server_name extensions".into()),
            EXT_ALPN => {
                seen_alpn = true;
                found.alpn = alpn_list(ext)?;
            }
            EXT_SERVER_NAME => {
                seen_sni = true;
                found.sni = host_name(ext)?;
            }
            _ => {}
        }
    }
    Ok(found)
}

/// The protocol list of an ALPN extension (RFC 7301: at least one id, none empty).
fn alpn_list(mut ext: Cursor<'_>) -> Result<Range<usize>, String> {
    ext.list_filling_the_rest("ALPN list")?;
    let list = ext.pos..ext.buf.len();
    Alpn::parse(&ext.buf[list.clone()]).ok_or("malformed ALPN list")?;
    Ok(list)
}

/// The first host name of a server_name extension (RFC 6066 3).
fn host_name(mut ext: Cursor<'_>) -> Result<Option<Range<usize>>, String> {
    ext.list_filling_the_rest("server name list")?;
    let mut name = None;
    while ext.pos < ext.buf.len() {
        if ext.u8("server name type")? != 0 {
            // Another type of name: its encoding is unknown, so nothing after it can
            // be read (rustls, too, stops here).
            break;
        }
        if name.is_some() {
            return Err("two host names in server_name".into());
        }
        let len = usize::from(ext.u16("server name length")?);
        let start = ext.pos;
        ext.skip(len, "server name")?;
        name = Some(start..start + len);
    }
    Ok(name)
}

#[cold]
fn cut_short(what: &str) -> String {
    format!("{what} cut short")
}

/// Reads big-endian fields off a byte slice, failing with what was cut short.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    // Inlined, with the message built out of line: these run a few dozen times per
    // connection, and as calls they were a third of the scan.
    #[inline]
    fn skip(&mut self, n: usize, what: &str) -> Result<(), String> {
        if self.buf.len() - self.pos < n {
            return Err(cut_short(what));
        }
        self.pos += n;
        Ok(())
    }

    #[inline]
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        self.skip(1, what)?;
        Ok(self.buf[self.pos - 1])
    }

    /// A non-empty list's 2-byte length, which must account for the rest of the
    /// extension exactly (both extensions we read are one such list).
    fn list_filling_the_rest(&mut self, what: &str) -> Result<(), String> {
        let len = usize::from(self.u16(what)?);
        if len == 0 || len != self.buf.len() - self.pos {
            return Err(format!("{what} length does not match its extension"));
        }
        Ok(())
    }

    #[inline]
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        self.skip(2, what)?;
        Ok(u16::from_be_bytes([
            self.buf[self.pos - 2],
            self.buf[self.pos - 1],
        ]))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::proxy::testing::tcp_pair;

    /// A real ClientHello from rustls' client, with the given SNI and ALPN ids.
    fn client_hello_bytes(sni: &str, alpn: &[&[u8]], tls12_only: bool) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ));
        let builder = if tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        };
        let mut config = builder
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

    /// What rustls' server side makes of `bytes`: (SNI, ALPN ids), or None if it
    /// refuses them or wants more.
    fn rustls_reading(bytes: &[u8]) -> Option<(Option<String>, Vec<Vec<u8>>)> {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut fed = bytes;
        while !fed.is_empty() {
            acceptor.read_tls(&mut fed).ok()?;
        }
        let accepted = acceptor.accept().ok()??;
        let hello = accepted.client_hello();
        let alpn = hello
            .alpn()
            .map(|ids| ids.map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        Some((hello.server_name().map(str::to_string), alpn))
    }

    /// Our reading of `bytes` fed in the given pieces: the result after the last piece
    /// (errors end it early).
    fn scan_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Option<ClientHello>, String> {
        let mut scanner = Scanner::new(65536);
        let mut so_far = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            so_far.extend_from_slice(&bytes[from..cut]);
            from = cut;
            match scanner.scan(&so_far) {
                Err(e) => return Err(e.to_string()),
                Ok(Some(found)) => {
                    let gathered = std::mem::take(&mut scanner.gathered);
                    return Ok(Some(found.into_hello(so_far, gathered)));
                }
                Ok(None) => {}
            }
        }
        Ok(None)
    }

    fn ours(hello: &ClientHello) -> (Option<String>, Vec<Vec<u8>>) {
        let alpn = hello.alpn().iter().map(<[u8]>::to_vec).collect();
        (hello.sni().map(str::to_string), alpn)
    }

    /// The handshake of `raw` (one record) re-framed into records of `size` bytes, as
    /// a client may legally send it.
    fn reframe(raw: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in raw[5..].chunks(size) {
            out.extend_from_slice(&raw[..3]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    const ALPN_CASES: &[&[&[u8]]] = &[
        &[b"req_fw_sb-act_v1"],
        &[b"replication_v1", b"h2"],
        &[],
        &[b"raft_storage_v1"],
        &[b"x"],
    ];

    #[test]
    fn agrees_with_rustls_on_real_hellos_in_every_framing_and_split() {
        for (i, alpn) in ALPN_CASES.iter().enumerate() {
            for tls12_only in [false, true] {
                let sni = format!("node-{i}.fw-1234.example");
                let raw = client_hello_bytes(&sni, alpn, tls12_only);
                let expected = rustls_reading(&raw).expect("rustls reads its own hello");
                assert_eq!(expected.0.as_deref(), Some(sni.as_str()));
                for size in [usize::MAX, 1, 7, 50, 300] {
                    let framed = if size == usize::MAX {
                        raw.clone()
                    } else {
                        reframe(&raw, size)
                    };
                    assert_eq!(rustls_reading(&framed).as_ref(), Some(&expected));
                    // Every single split point, then one byte per read.
                    for cut in 0..framed.len() {
                        let hello = scan_in_pieces(&framed, &[cut]).unwrap().unwrap();
                        assert_eq!(ours(&hello), expected, "record size {size}, cut {cut}");
                        assert_eq!(hello.bytes, framed, "the bytes are kept exactly");
                    }
                    let every: Vec<usize> = (1..framed.len()).collect();
                    let hello = scan_in_pieces(&framed, &every).unwrap().unwrap();
                    assert_eq!(ours(&hello), expected);
                }
            }
        }
    }

    #[test]
    fn agrees_with_rustls_whenever_rustls_accepts_a_mangled_hello() {
        // Bytes flipped, fields zeroed, lengths bent, and cut short: never a panic, and
        // whatever rustls still accepts, we read as rustls does (SNI only where rustls
        // reports one: it drops names it cannot use).
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let originals: Vec<Vec<u8>> = ALPN_CASES
            .iter()
            .map(|alpn| client_hello_bytes("fw.example", alpn, false))
            .collect();
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut bytes = originals[round % originals.len()].clone();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..4) {
                    0 => bytes[at] = rng.random(),
                    1 => bytes[at] ^= 1 << rng.random_range(0..8),
                    2 => bytes[at] = 0,
                    _ => bytes.truncate(at.max(1)),
                }
            }
            let ours = scan_in_pieces(&bytes, &[bytes.len() / 2]);
            match rustls_reading(&bytes) {
                Some((sni, alpn)) => {
                    accepted += 1;
                    let hello = ours
                        .unwrap_or_else(|e| {
                            panic!("rustls accepts what we refuse ({e}): {bytes:02x?}")
                        })
                        .expect("rustls found a whole hello");
                    let (our_sni, our_alpn) = super::tests::ours(&hello);
                    assert_eq!(our_alpn, alpn, "{bytes:02x?}");
                    if let Some(sni) = sni {
                        // rustls lowercases and drops a trailing dot; we keep the name
                        // as sent (it is only logged).
                        let ours = our_sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
                        assert_eq!(ours, Some(sni), "{bytes:02x?}");
                    }
                }
                None => refused += 1,
            }
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} / {refused}");
    }

    #[test]
    fn refusals_say_why() {
        let refuse = |bytes: &[u8]| scan_in_pieces(bytes, &[]).unwrap_err();
        assert!(refuse(b"GET / HTTP/1.1\r\n").contains("record type 71"));
        // Refused at the first byte, before a record header is complete.
        assert!(scan_in_pieces(b"G", &[]).is_err());
        assert!(refuse(&[0x16, 3, 1, 0, 0]).contains("empty handshake record"));
        assert!(refuse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]).contains("not ClientHello"));
        // A whole message too short for its fields: named by the field cut short.
        let short = [0x16, 3, 1, 0, 14, 1, 0, 0, 10, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(
            refuse(&short).contains("version and random cut short"),
            "{}",
            refuse(&short)
        );
        // A hello whose extension list claims more than there is.
        let mut raw = client_hello_bytes("a.example", &[b"h2"], false);
        let body = &raw[9..];
        let ext_len_at = 9 + 34 + 1 + usize::from(body[34]);
        let suites = u16::from_be_bytes([raw[ext_len_at], raw[ext_len_at + 1]]);
        let at = ext_len_at + 2 + usize::from(suites);
        let at = at + 1 + usize::from(raw[at]);
        raw[at + 1] ^= 1;
        assert!(
            refuse(&raw).contains("extensions length"),
            "{}",
            refuse(&raw)
        );
        // Two ALPN extensions: we would route by one, the server might read the other.
        let raw = client_hello_bytes("a.example", &[b"h2"], false);
        let doubled = with_extra_extension(&raw, &[0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
        assert!(refuse(&doubled).contains("two ALPN"));
        // An ALPN list whose length is not its extension's, or that is empty.
        let no_alpn = client_hello_bytes("a.example", &[], false);
        let short = with_extra_extension(&no_alpn, &[0, 16, 0, 5, 0, 4, 2, b'h', b'2']);
        assert!(
            refuse(&short).contains("ALPN list length"),
            "{}",
            refuse(&short)
        );
        let empty = with_extra_extension(&no_alpn, &[0, 16, 0, 2, 0, 0]);
        assert!(
            refuse(&empty).contains("ALPN list length"),
            "{}",
            refuse(&empty)
        );
        // Two server names, likewise.
        let mut sni = vec![0, 0, 0, 14, 0, 12, 0, 0, 9];
        sni.extend_from_slice(b"b.example");
        let doubled = with_extra_extension(&raw, &sni);
        assert!(
            refuse(&doubled).contains("two server_name"),
            "{}",
            refuse(&doubled)
        );
        let bad_list = with_extra_extension(
            &client_hello_bytes("a.example", &[], false),
            &[0, 16, 0, 4, 0, 2, 0, 0],
        );
        assert!(refuse(&bad_list).contains("malformed ALPN"));
    }

    /// `raw` (one record) with `ext` appended to its extension list, lengths mended.
    fn with_extra_extension(raw: &[u8], ext: &[u8]) -> Vec<u8> {
        let mut out = raw.to_vec();
        out.extend_from_slice(ext);
        let grow = |at: usize, width: usize, out: &mut Vec<u8>| {
            let mut v = 0usize;
            for b in &out[at..at + width] {
                v = v << 8 | usize::from(*b);
            }
            v += ext.len();
            for i in 0..width {
                out[at + i] = (v >> (8 * (width - 1 - i))) as u8;
            }
        };
        grow(3, 2, &mut out); // record length
        grow(6, 3, &mut out); // handshake length
        let session = 9 + 34;
        let suites = session + 1 + usize::from(out[session]);
        let compression =
            suites + 2 + usize::from(u16::from_be_bytes([out[suites], out[suites + 1]]));
        let extensions = compression + 1 + usize::from(out[compression]);
        grow(extensions, 2, &mut out);
        out
    }

    #[test]
    fn a_hello_declared_larger_than_the_cap_is_refused_before_it_arrives() {
        // A record header promising 16 KiB of handshake.
        let raw = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
        let mut scanner = Scanner::new(1024);
        assert!(
            matches!(scanner.scan(&raw), Ok(None)),
            "a record must be whole"
        );
        let mut raw = raw.to_vec();
        raw.resize(5 + 0x4000, 0);
        assert!(matches!(
            scanner.scan(&raw),
            Err(HelloError::TooLarge(1024))
        ));
        // A handshake length past 64 KiB (its high byte set) is refused at its header.
        let mut scanner = Scanner::new(16384);
        let big = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00];
        assert!(matches!(
            scanner.scan(&big),
            Err(HelloError::TooLarge(16384))
        ));
    }

    #[test]
    fn early_data_after_the_hello_is_not_judged() {
        let mut raw = client_hello_bytes("a.example", &[b"h2"], false);
        raw.extend_from_slice(&[23, 3, 3, 0, 2, 0xab, 0xcd]);
        let hello = scan_in_pieces(&raw, &[]).unwrap().unwrap();
        assert_eq!(ours(&hello).1, vec![b"h2".to_vec()]);
        assert_eq!(hello.bytes, raw);
    }

    #[test]
    fn alpn_lists_are_checked_when_made() {
        assert!(Alpn::parse(&[2, b'h', b'2', 1, b'x']).is_some());
        assert!(Alpn::parse(&[]).is_some_and(|a| a.is_empty()));
        assert!(Alpn::parse(&[3, b'h', b'2']).is_none(), "short");
        assert!(Alpn::parse(&[0]).is_none(), "empty id");
        let ids: Vec<&[u8]> = Alpn::parse(&[2, b'h', b'2', 1, b'x'])
            .unwrap()
            .iter()
            .collect();
        assert_eq!(ids, [&b"h2"[..], b"x"]);
    }

    #[tokio::test]
    async fn reads_a_hello_off_a_socket_and_keeps_every_byte() {
        let (mut client, server) = tcp_pair().await;
        let raw = reframe(
            &client_hello_bytes("fw.example", &[b"replication_v1"], false),
            100,
        );
        let (head, tail) = raw.split_at(raw.len() / 3);
        client.write_all(head).await.unwrap();
        let tail = tail.to_vec();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(&tail).await.unwrap();
            client
        });
        let hello = read_client_hello(&server, Duration::from_secs(5), 16384)
            .await
            .unwrap();
        assert_eq!(hello.bytes, raw);
        assert_eq!(hello.sni(), Some("fw.example"));
        assert_eq!(ours(&hello).1, vec![b"replication_v1".to_vec()]);
        drop(writer.await);
    }

    /// A hello bigger than one read's buffer (a padding extension takes it past
    /// READ_CHUNK, twice): the buffer grows until it is whole, every byte kept.
    #[tokio::test]
    async fn a_hello_longer_than_one_read_is_read_whole() {
        let (mut client, server) = tcp_pair().await;
        // A padding extension of 10,000 bytes: the hello spans reads that fill the
        // buffer exactly (4096, then 8192 bytes).
        let mut padding = vec![0, 21, 0x27, 0x10];
        padding.resize(4 + 10_000, 0);
        let raw = with_extra_extension(
            &client_hello_bytes("fw.example", &[b"replication_v1"], false),
            &padding,
        );
        assert!(raw.len() > READ_CHUNK);
        client.write_all(&raw).await.unwrap();
        let hello = read_client_hello(&server, Duration::from_secs(5), 16384)
            .await
            .unwrap();
        assert_eq!(hello.bytes, raw);
        assert_eq!(ours(&hello).1, vec![b"replication_v1".to_vec()]);
    }

    /// What a connection holds while its hello is read stays within the cap, even when
    /// the client sends early data right behind the hello.
    #[tokio::test]
    async fn the_bytes_held_never_pass_the_cap() {
        let (mut client, server) = tcp_pair().await;
        let mut padding = vec![0, 21, 0x10, 0xcc]; // 4300 bytes: a 4.5 KB hello
        padding.resize(4 + 4300, 0);
        let mut raw = with_extra_extension(
            &client_hello_bytes("fw.example", &[b"replication_v1"], false),
            &padding,
        );
        let hello_len = raw.len();
        raw.extend_from_slice(&[23, 3, 3, 0x0f, 0x9c]); // application data, 3996 bytes
        raw.resize(hello_len + 4001, 0xab);
        client.write_all(&raw).await.unwrap();
        let hello = read_client_hello(&server, Duration::from_secs(5), 5000)
            .await
            .unwrap();
        assert!(
            hello.bytes.len() <= 5000,
            "{} bytes held",
            hello.bytes.len()
        );
        assert_eq!(hello.bytes[..], raw[..hello.bytes.len()]);
    }

    /// `scan_reads` (the fuzz target's entry) reads as the socket path does: pieces
    /// until a whole hello, at most `max` bytes in all, `None` when the reads end first.
    #[test]
    fn scan_reads_takes_pieces_up_to_the_cap() {
        let raw = client_hello_bytes("a.example", &[b"h2"], false);
        let (a, b) = raw.split_at(raw.len() / 2);
        let hello = scan_reads(&[a, b], raw.len()).unwrap().expect("whole");
        assert_eq!(hello.bytes, raw);
        assert!(
            scan_reads(&[a], raw.len()).unwrap().is_none(),
            "reads ended"
        );
        // One byte short of the hello: the second read is cut at the cap...
        assert!(scan_reads(&[a, b], raw.len() - 1).unwrap().is_none());
        // ...and a third read finds the cap reached.
        let e = scan_reads(&[a, b, b"x"], raw.len() - 1);
        assert!(matches!(e, Err(HelloError::TooLarge(_))), "{e:?}");
    }

    /// The refusal labels are metric label values (alert rules and dashboards read them).
    #[test]
    fn refusal_kinds_are_stable_labels() {
        let kinds = [
            (HelloError::Timeout(Duration::from_secs(1)), "hello_timeout"),
            (HelloError::TooLarge(1), "hello_too_large"),
            (HelloError::NotTls("x".into()), "not_tls"),
            (HelloError::Eof, "hello_eof"),
            (HelloError::Io(io::ErrorKind::Other.into()), "io"),
        ];
        for (e, kind) in kinds {
            assert_eq!(e.kind(), kind);
        }
    }

    #[tokio::test]
    async fn socket_refusals_eof_cap_and_deadline() {
        let (mut client, server) = tcp_pair().await;
        client.write_all(&[0x16, 0x03]).await.unwrap();
        client.shutdown().await.unwrap();
        let e = read_client_hello(&server, Duration::from_secs(5), 1024).await;
        assert!(matches!(e, Err(HelloError::Eof)), "{e:?}");

        // A 1,000-byte hello in 1-byte records: six bytes on the wire per byte of it,
        // so the byte cap ends it before it is whole.
        let (mut client, server) = tcp_pair().await;
        let mut message = vec![1, 0, 0x03, 0xe8];
        message.resize(4 + 1000, 0);
        let endless: Vec<u8> = message
            .iter()
            .flat_map(|b| [0x16, 0x03, 0x01, 0x00, 0x01, *b])
            .collect();
        client.write_all(&endless).await.unwrap();
        let e = read_client_hello(&server, Duration::from_secs(5), 1024).await;
        assert!(matches!(e, Err(HelloError::TooLarge(1024))), "{e:?}");

        let (_client, server) = tcp_pair().await;
        let e = read_client_hello(&server, Duration::from_millis(100), 1024).await;
        assert!(matches!(e, Err(HelloError::Timeout(_))), "{e:?}");
    }
}
