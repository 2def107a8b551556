//! A minimal DNS client for tests: one query over UDP or TCP, decoded with hickory-proto.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

pub const TIMEOUT: Duration = Duration::from_secs(3);

pub fn build_query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("test name"),
        qtype,
    ));
    msg.to_vec().expect("encode query")
}

fn rand_id() -> u16 {
    use std::time::{SystemTime, UNIX_EPOCH};
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}

/// Sends one query and returns the decoded response.
pub fn query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    proto: Proto,
) -> std::io::Result<Message> {
    let bytes = build_query(name, qtype);
    let raw = match proto {
        Proto::Udp => {
            // Loopback for loopback servers; a fault-lab host (see `netlab`) is reached
            // from the test's lab address.
            let local = match server.ip() {
                std::net::IpAddr::V4(ip) if ip.is_loopback() => "127.0.0.1:0",
                std::net::IpAddr::V4(_) => "0.0.0.0:0",
                std::net::IpAddr::V6(_) => "[::1]:0",
            };
            let sock = UdpSocket::bind(local)?;
            sock.set_read_timeout(Some(TIMEOUT))?;
            sock.send_to(&bytes, server)?;
            let mut buf = vec![0u8; 65535];
            let (n, _) = sock.recv_from(&mut buf)?;
            buf.truncate(n);
            buf
        }
        Proto::Tcp => {
            let mut s = TcpStream::connect_timeout(&server, TIMEOUT)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            s.write_all(&framed)?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len)?;
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut buf)?;
            buf
        }
    };
    let msg = Message::from_vec(&raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    Ok(msg)
}

/// The A and AAAA addresses in the answer section, sorted.
pub fn ips(msg: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = msg
        .answers
        .iter()
        .filter_map(|r| r.data.ip_addr())
        .collect();
    v.sort();
    v
}

pub fn rcode(msg: &Message) -> ResponseCode {
    msg.metadata.response_code
}

/// True when the authority section carries an SOA.
pub fn has_soa(msg: &Message) -> bool {
    msg.authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

/// A name a test asks until the answer is the one it waits for: over UDP within 10 s
/// unless told otherwise.
pub struct Ask {
    server: SocketAddr,
    name: String,
    qtype: RecordType,
    proto: Proto,
    within: Duration,
}

pub fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Ask {
    Ask {
        server,
        name: name.to_string(),
        qtype,
        proto: Proto::Udp,
        within: Duration::from_secs(10),
    }
}

impl Ask {
    pub fn over(mut self, proto: Proto) -> Self {
        self.proto = proto;
        self
    }

    pub fn within(mut self, within: Duration) -> Self {
        self.within = within;
        self
    }

    /// Asks once; panics if no answer comes.
    pub fn once(&self) -> Message {
        query(self.server, &self.name, self.qtype, self.proto)
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.name, self.qtype))
    }

    /// Asks until `accept` holds for the answer, or panics naming `what`; returns the
    /// accepted answer.
    pub async fn until(self, what: &str, accept: impl Fn(&Message) -> bool) -> Message {
        super::openbao::eventually(self.within, what, || async {
            let m = query(self.server, &self.name, self.qtype, self.proto).ok()?;
            accept(&m).then_some(m)
        })
        .await
    }
}

/// Sends `msg` over UDP from loopback and returns the response (any message, where
/// `query` builds a plain one).
pub fn exchange(server: SocketAddr, msg: &Message) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.send_to(&msg.to_vec().unwrap(), server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// A query for `name` (as written: its case is kept) with ID 4242, no EDNS.
pub fn question(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}
