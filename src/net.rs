//! Binding listeners with SO_REUSEPORT, so that a reload can bind the new generation's
//! sockets on the same addresses while the old generation still holds them, and retire
//! the old ones without a moment where the address refuses traffic.
//!
//! SO_REUSEPORT only shares an address between sockets of the same user that all set
//! it: a foreign process holding the port still makes the bind fail. A second
//! vault-locator of the same user would share it silently (answers split between two
//! configs), so addresses this process does not hold yet are first checked with
//! [`ensure_free`], a bind without either reuse option.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

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

/// A transport: what a socket is bound for, what a DNS query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    /// The metric label and log form: `udp`, `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }

    /// 0 or 1, for tables with one entry per transport.
    pub fn index(self) -> usize {
        match self {
            Proto::Udp => 0,
            Proto::Tcp => 1,
        }
    }
}

/// `UDP`, `TCP`, as error messages name them.
impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str().to_ascii_uppercase())
    }
}

/// Fails when any socket is bound to `addr` already, naming the process that holds it
/// when `/proc` tells. The probe does not set SO_REUSEPORT, so every existing listener
/// conflicts with it, whoever made it; it is closed at once. Call it only
/// for addresses this process does not hold (its own reuseport sockets conflict too).
pub fn ensure_free(addr: SocketAddr, proto: Proto) -> io::Result<()> {
    let (ty, p) = match proto {
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
    };
    let s = Socket::new(Domain::for_address(addr), ty, Some(p))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // TCP: SO_REUSEADDR lets the probe past connections in TIME_WAIT (a restart within a
    // minute of a scrape or a proxied connection the agent closed first) and still
    // conflicts with any listening socket, reuseport or not. UDP has no TIME_WAIT, and
    // there SO_REUSEADDR would share the port with another agent's socket.
    if proto == Proto::Tcp {
        s.set_reuse_address(true)?;
    }
    match s.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let holder = match holder_of(addr, proto) {
                Some((pid, name)) => format!("by {name} (pid {pid})"),
                None => "by another process".to_string(),
            };
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} {addr} is already in use {holder}", proto.as_str()),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Whether this agent could bind a TCP listener on `addr` (as [`bind_tcp`] does, with
/// SO_REUSEPORT): an address held by another user's process or by a socket without
/// SO_REUSEPORT (Vault's own listener, say on `0.0.0.0:8200`), or one this host does not
/// have, fails with the reason. A running agent's own listener on it does not count
/// (same user: reuseport shares; another user: it is recognised by name), so
/// `check-config` may be run beside it.
pub fn check_bindable(addr: SocketAddr) -> Result<(), String> {
    match socket(addr, Type::STREAM, Protocol::TCP) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let wildcard = SocketAddr::new(
                match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                },
                addr.port(),
            );
            let holder = holder_of(addr, Proto::Tcp)
                .map(|h| (h, addr))
                .or_else(|| holder_of(wildcard, Proto::Tcp).map(|h| (h, wildcard)));
            match holder {
                // The running agent itself, under its own user (check-config run as
                // root beside it, as Ansible's `validate` does): its reuseport socket
                // refuses another user's probe, but the agent will bind there again.
                Some(((_, name), on)) if on == addr && name == "vault-locator" => Ok(()),
                Some(((pid, name), on)) => Err(format!("in use by {name} (pid {pid}) on {on}")),
                None => Err("in use by another process".to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The process holding a socket bound to `addr`, from `/proc/net/{tcp,udp}[6]` (the
/// socket's inode) and `/proc/<pid>/fd` (who has it open). Best effort: None when the
/// holder is another user's process we may not look into.
fn holder_of(addr: SocketAddr, proto: Proto) -> Option<(u32, String)> {
    let table = match (proto, addr) {
        (Proto::Tcp, SocketAddr::V4(_)) => "/proc/net/tcp",
        (Proto::Tcp, SocketAddr::V6(_)) => "/proc/net/tcp6",
        (Proto::Udp, SocketAddr::V4(_)) => "/proc/net/udp",
        (Proto::Udp, SocketAddr::V6(_)) => "/proc/net/udp6",
    };
    let want = proc_net_addr(addr);
    let text = std::fs::read_to_string(table).ok()?;
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1)? == &want).then(|| f.get(9).map(|s| format!("socket:[{s}]")))?
        })
        .collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let link = std::fs::read_link(fd.path()).ok();
            if link.is_some_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str())) {
                let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
                return Some((pid, name.trim().to_string()));
            }
        }
    }
    None
}

/// `addr` as `/proc/net/*` writes it: the address's 32-bit words in host byte order,
/// in hex, then the port.
fn proc_net_addr(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        std::net::IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

/// Sockets per address, each served by a thread of its own (DNS receive loops, proxy
/// accept threads): one per core, up to 4. The kernel spreads clients over them
/// (SO_REUSEPORT); beyond 4 there is nothing left to spread for this agent's traffic.
/// After a failed accept (out of file descriptors and the like): logged, then a pause,
/// so a listener backs off instead of spinning on an error that will repeat.
pub async fn after_accept_error(e: &io::Error, listener: &str) {
    tracing::warn!(error = %e, listener, "accept failed; pausing 50ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

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

/// Has the kernel hold each new connection on `listener` until the client sends data
/// (TCP_DEFER_ACCEPT), for about `wait` (whole seconds, at least one); a client still
/// silent by then is handed over anyway. For protocols where the client speaks first
/// (TLS): an accept then always finds the ClientHello waiting, which saves a wakeup per
/// connection, and a client that connects and says nothing costs the agent nothing until
/// `wait` has passed. nginx (`deferred`) and HAProxy (`defer-accept`) offer the same.
pub fn defer_accept(listener: &impl AsFd, wait: Duration) -> io::Result<()> {
    let secs = libc::c_int::try_from(wait.as_secs_f64().ceil().max(1.0) as u64)
        .unwrap_or(libc::c_int::MAX);
    let fd = listener.as_fd();
    // Neither socket2 nor rustix wraps this option, and std's wrapper is unstable
    // (rust-lang/rust#119639), hence the one foreign call.
    // SAFETY: setsockopt only reads `optlen` bytes from `optval`; `optval` points at
    // `secs`, a c_int that lives on this frame for the whole call, and `optlen` is its
    // exact size. `fd` is borrowed from `listener`, so it is open for the whole call. The
    // kernel copies the value and keeps no pointer; no Rust memory is written.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test thread waits for the kernel
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_held_address_is_named_with_its_holder() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = ensure_free(addr, Proto::Udp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let me = std::process::id();
        assert!(e.to_string().contains(&format!("(pid {me})")), "{e}");
        assert!(e.to_string().contains(&format!("udp {addr}")), "{e}");
        // Our own reuseport sockets conflict too (hence: only for addresses not held).
        let ours = bind_tcp_std("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(ensure_free(ours.local_addr().unwrap(), Proto::Tcp).is_err());
        drop(held);
        ensure_free(addr, Proto::Udp).unwrap();
    }

    #[test]
    fn connections_in_time_wait_do_not_hold_an_address() {
        // The agent answers a scrape and closes first: its port keeps a TIME_WAIT
        // socket for a minute after it stops, which must not block its restart.
        let listener = bind_tcp_std("127.0.0.1:0".parse().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (served, _) = listener.accept().unwrap();
        drop(served);
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut client, &mut buf).unwrap(), 0);
        drop(client);
        drop(listener);
        ensure_free(addr, Proto::Tcp).unwrap();
        // A foreign listener without any reuse option still conflicts.
        let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = ensure_free(foreign.local_addr().unwrap(), Proto::Tcp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_deferred_listener_sees_a_client_only_once_it_speaks() {
        let listener = bind_tcp_std("127.0.0.1:0".parse().unwrap()).unwrap();
        defer_accept(&listener, Duration::from_secs(30)).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let e = listener.accept().unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::WouldBlock,
            "a silent client waits in the kernel"
        );
        client.write_all(&[0x16]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match listener.accept() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "never accepted");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
