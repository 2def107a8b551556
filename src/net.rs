//! Binding listeners with SO_REUSEPORT, so that a reload can bind the new generation's
//! sockets on the same addresses while the old generation still holds them, and retire
//! the old ones without a moment where the address refuses traffic.
//!
//! SO_REUSEPORT only shares an address between sockets of the same user that all set
//! it: a foreign process holding the port still makes the bind fail.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

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

/// Sockets per address, each served by a thread of its own (DNS receive loops, proxy
/// accept threads): one per core, up to 4. The kernel spreads clients over them
/// (SO_REUSEPORT); beyond 4 there is nothing left to spread for this agent's traffic.
pub fn threads_per_address() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// A UDP socket for a receive loop on a blocking thread (not registered with tokio).
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    Ok(socket(addr, Type::DGRAM, Protocol::UDP)?.into())
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

/// `n` UDP sockets on one address (see [`group`]).
pub fn bind_udp_group(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    group(addr, n, bind_udp, std::net::UdpSocket::local_addr)
}

/// `n` TCP listeners on one address (see [`group`]).
pub fn bind_tcp_group(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    group(addr, n, bind_tcp_std, std::net::TcpListener::local_addr)
}

/// `n` sockets on one address, for `n` threads that each serve their own; the kernel
/// spreads new clients over them (SO_REUSEPORT). Port 0 binds the first on an
/// ephemeral port and the rest on that same port.
fn group<S>(
    addr: SocketAddr,
    n: usize,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
    local_addr: impl Fn(&S) -> io::Result<SocketAddr>,
) -> io::Result<Vec<S>> {
    let first = bind(addr)?;
    let addr = local_addr(&first)?;
    let mut group = vec![first];
    for _ in 1..n {
        group.push(bind(addr)?);
    }
    Ok(group)
}
