//! The upstream leg: connecting to the leader (the ClientHello sent at once, as HAProxy
//! does), socket tuning on both legs, and closing with RST.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rustix::net::SendFlags;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::error::ConnError;

/// Keepalive on both legs: a dead peer (host gone, no RST) is noticed in ~1 minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// When the upstream leg gets its keepalive (well before KEEPALIVE_IDLE matters).
const UPSTREAM_KEEPALIVE_AFTER: Duration = Duration::from_secs(5);

/// Connects to `target` within `timeout` (the API side: nothing to send first).
pub(super) async fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnError> {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(error)) => Err(ConnError::Connect { target, error }),
        Err(_) => Err(ConnError::ConnectTimeout(target)),
    }
}

/// Connects to `target` and sends it `hello`, the way HAProxy does: the send is tried
/// as soon as connect() returns, since on loopback and fast networks the handshake is
/// often done by then; only when it is not (EAGAIN) does the connection wait to become
/// writable, within `timeout`. That saves a trip through the event loop and the
/// SO_ERROR query per connection that tokio's `connect` makes.
pub(super) async fn connect_and_send(
    target: SocketAddr,
    hello: &[u8],
    timeout: Duration,
) -> Result<TcpStream, ConnError> {
    let failed = |error: io::Error| ConnError::Connect { target, error };
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(failed)?;
    sock.set_tcp_nodelay(true).map_err(failed)?;
    match sock.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => return Err(failed(e)),
    }
    // A send on a socket still connecting fails with EAGAIN; one whose connect failed
    // reports that failure (ECONNREFUSED and the like).
    let sent = match rustix::net::send(&sock, hello, SendFlags::NOSIGNAL) {
        Ok(n) => n,
        Err(rustix::io::Errno::AGAIN) => 0,
        Err(e) => return Err(failed(e.into())),
    };
    let mut stream = TcpStream::from_std(sock.into()).map_err(failed)?;
    if sent < hello.len() {
        match tokio::time::timeout(timeout, stream.write_all(&hello[sent..])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(ConnError::ConnectTimeout(target)),
        }
    }
    Ok(stream)
}

/// TCP_NODELAY (cluster traffic is RPC: latency matters more than packet count) and
/// keepalive (so a vanished peer does not pin a connection forever).
pub(super) fn tune_socket(sock: SockRef<'_>) {
    let _ = sock.set_tcp_nodelay(true);
    set_keepalive(sock);
}

/// Runs `moving` and gives `upstream` its keepalive once the connection has lived
/// `UPSTREAM_KEEPALIVE_AFTER`: probes start after KEEPALIVE_IDLE of silence anyway, and
/// three setsockopt calls on every short forwarding connection were a measurable share
/// of the connection rate. (The client leg inherits keepalive from the listener.)
/// `moving` is taken pinned, by reference: taken by value, its state would be laid out
/// twice in the connection's task (here and in the caller).
pub(super) async fn with_deferred_keepalive<F: std::future::Future>(
    mut moving: std::pin::Pin<&mut F>,
    upstream: &TcpStream,
) -> F::Output {
    tokio::select! {
        biased;
        done = &mut moving => return done,
        _ = tokio::time::sleep(UPSTREAM_KEEPALIVE_AFTER) => {}
    }
    set_keepalive(SockRef::from(upstream));
    moving.await
}

pub(super) fn set_keepalive(sock: SockRef<'_>) {
    let ka = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = sock.set_tcp_keepalive(&ka);
}

/// Closes with RST: the client learns at once that there is nothing here for it.
pub(super) fn reset(sock: TcpStream) {
    let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    drop(sock);
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn upstream_keepalive_is_set_only_on_connections_that_live_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let short = TcpStream::connect(addr).await.unwrap();
        let long = TcpStream::connect(addr).await.unwrap();
        assert!(!SockRef::from(&long).keepalive().unwrap());

        let quick = std::pin::pin!(async { 1 });
        assert_eq!(with_deferred_keepalive(quick, &short).await, 1);
        assert!(
            !SockRef::from(&short).keepalive().unwrap(),
            "a short connection pays nothing"
        );

        let lives_on = std::pin::pin!(tokio::time::sleep(UPSTREAM_KEEPALIVE_AFTER * 2));
        with_deferred_keepalive(lives_on, &long).await;
        let s = SockRef::from(&long);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
    }

    #[tokio::test]
    async fn connect_and_send_delivers_the_hello_or_says_why_not() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let hello = vec![0x16u8; 5000];
        let upstream = connect_and_send(target, &hello, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(SockRef::from(&upstream).tcp_nodelay().unwrap());
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; hello.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello);

        // Nothing listening: refused, and said so.
        drop(listener);
        let e = connect_and_send(target, &hello, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ConnError::Connect { .. })), "{e:?}");

        // A listener whose accept queue is full drops SYNs: the connect never completes.
        let full = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        let dropped = loop {
            let r = connect_and_send(full_addr, &hello, Duration::from_millis(300)).await;
            match r {
                Ok(s) => fillers.push(s),
                Err(e) => break e,
            }
            assert!(fillers.len() < 16, "the accept queue never filled");
        };
        assert!(
            matches!(dropped, ConnError::ConnectTimeout(_)),
            "{dropped:?}"
        );
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tune_socket(SockRef::from(&listener));
        let _c = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let s = SockRef::from(&s);
        assert!(s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
    }
}
