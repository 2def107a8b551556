//! Binding listeners with SO_REUSEPORT, so that a reload can bind the new generation's
//! sockets on the same addresses while the old generation still holds them, and retire
//! the old ones without a moment where the address refuses traffic.
//!
//! SO_REUSEPORT only shares an address between sockets of the same user that all set
//! it: a foreign process holding the port still makes the bind fail.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    UdpSocket::from_std(s.into())
}

pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_tcp_std(addr)?)
}

/// A non-blocking listener not yet registered with any runtime (for one that runs on
/// a thread of its own).
pub fn bind_tcp_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.listen(1024)?;
    Ok(s.into())
}

/// `n` listeners on one address (SO_REUSEPORT: the kernel spreads new connections
/// over them), for `n` threads that each accept on their own. Port 0 binds the first
/// on an ephemeral port and the rest on that same port.
pub fn bind_tcp_group(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_tcp_std(addr)?;
    let addr = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..n {
        group.push(bind_tcp_std(addr)?);
    }
    Ok(group)
}
