//! Binding the DNS listeners (UDP and TCP on every configured address) and running the
//! hickory server until shutdown.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::Server;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::handler::Handler;
use crate::fdstore;
use crate::net::Proto;

/// Response buffer per TCP connection, in messages.
const TCP_RESPONSE_BUFFER: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("cannot bind DNS {proto} listener on {addr}")]
pub struct BindError {
    pub proto: Proto,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A DNS server with every listener bound, not yet serving: UDP on our own per-socket
/// receive threads (`super::udp`, one per core via SO_REUSEPORT), TCP on hickory-server.
pub struct DnsServer {
    server: Server<SharedHandler>,
    handler: Arc<Handler>,
    udp: Vec<std::net::UdpSocket>,
    local_addrs: Vec<SocketAddr>,
    /// A copy of every socket, by its name in systemd's store (`fdstore`): handed over
    /// when the server starts serving, so the store always holds the sockets read.
    to_store: Vec<(String, Vec<OwnedFd>)>,
    /// Some sockets were kept by systemd across a restart: queries may be waiting in
    /// them, to be answered from the first views rather than with SERVFAIL.
    inherited: bool,
}

/// How long a restarted agent holds queries waiting in inherited sockets for the
/// clusters' first views (a live cluster answers its first poll within milliseconds;
/// one that does not is answered as at any start, SERVFAIL until it does).
const FIRST_VIEWS_WAIT: Duration = Duration::from_secs(1);

/// hickory-server takes its handler by value; the UDP loops share the same one.
pub struct SharedHandler(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

impl DnsServer {
    /// Binds UDP and TCP on each address. Binding everything before serving anything
    /// means a bad address fails start-up instead of leaving half a server.
    pub async fn bind(
        listen: &[SocketAddr],
        handler: Handler,
        tcp_idle_timeout: Duration,
    ) -> Result<Self, BindError> {
        let mut sockets = Vec::new();
        let mut local_addrs = Vec::new();
        let mut to_store = Vec::new();
        let mut inherited = false;
        for &addr in listen {
            let (udp, tcp, kept) = bind_address(addr)?;
            inherited |= kept;
            let bound = udp[0].local_addr().map_err(|source| BindError {
                proto: Proto::Udp,
                addr,
                source,
            })?;
            let copies = |fds: Vec<BorrowedFd>| -> Result<Vec<OwnedFd>, BindError> {
                fds.into_iter()
                    .map(|fd| fd.try_clone_to_owned())
                    .collect::<Result<_, _>>()
                    .map_err(|source| BindError {
                        proto: Proto::Udp,
                        addr,
                        source,
                    })
            };
            to_store.push((
                fdstore::name(fdstore::Kind::DnsUdp, bound),
                copies(udp.iter().map(|u| u.as_fd()).collect())?,
            ));
            to_store.push((
                fdstore::name(fdstore::Kind::DnsTcp, bound),
                copies(vec![tcp.as_fd()])?,
            ));
            local_addrs.push(bound);
            sockets.push((udp, tcp));
        }
        let handler = Arc::new(handler);
        let mut server = Server::new(SharedHandler(handler.clone()));
        let mut udp_sockets = Vec::new();
        for (udp, tcp) in sockets {
            udp_sockets.extend(udp);
            server.register_listener(tcp, tcp_idle_timeout, TCP_RESPONSE_BUFFER);
        }
        Ok(Self {
            server,
            handler,
            udp: udp_sockets,
            local_addrs,
            to_store,
            inherited,
        })
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        for addr in &self.local_addrs {
            info!(%addr, "DNS listening on UDP and TCP");
        }
        // From now on these are the sockets read: systemd keeps them across a restart.
        let stored: Vec<(String, Vec<BorrowedFd>)> = self
            .to_store
            .iter()
            .map(|(n, fds)| (n.clone(), fds.iter().map(|f| f.as_fd()).collect()))
            .collect();
        fdstore::replace(&stored);
        drop(stored);
        self.to_store.clear();
        if self.inherited {
            self.wait_first_views(&shutdown).await;
        }
        // Receive loops end only when `shutdown` is cancelled; one that ends earlier
        // (it panicked, or its socket failed) is a DNS server that lost a listener.
        let mut udp = futures_util::stream::FuturesUnordered::new();
        let runtime = tokio::runtime::Handle::current();
        for socket in self.udp.drain(..) {
            let (handler, stop, rt) = (self.handler.clone(), shutdown.clone(), runtime.clone());
            udp.push(tokio::task::spawn_blocking(move || {
                super::udp::serve_blocking(socket, handler, stop, rt)
            }));
        }
        // biased: once `shutdown` is cancelled the receive loops end too (within
        // STOP_CHECK); polled in this order, their ending is never mistaken for a loss.
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                self.server.shutdown_gracefully().await?;
                Ok(())
            }
            result = self.server.block_until_done() => {
                result?;
                Err(anyhow::anyhow!("DNS server stopped unexpectedly"))
            }
            Some(ended) = udp.next() => Err(match ended {
                Err(e) if e.is_panic() => anyhow::anyhow!("a UDP receive loop panicked"),
                Ok(Err(e)) => anyhow::anyhow!("a UDP receive loop cannot use its socket: {e}"),
                _ => anyhow::anyhow!("a UDP receive loop stopped on its own"),
            }),
        };
        shutdown.cancel();
        while udp.next().await.is_some() {}
        result
    }

    /// After a restart, until every cluster has a first view (or `FIRST_VIEWS_WAIT`):
    /// the queries that waited in the kept sockets are then answered from them.
    async fn wait_first_views(&self, shutdown: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + FIRST_VIEWS_WAIT;
        let heard = || {
            self.handler
                .feeds()
                .iter()
                .all(|f| f.latest().last_confirmed.is_some())
        };
        while !heard() && tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The UDP group and the TCP listener of one address: the ones systemd kept across a
/// restart when it has them (and `true`), else bound anew. One UDP socket per receive
/// loop (SO_REUSEPORT: the kernel spreads clients over them); with port 0, TCP takes the
/// port the kernel gave UDP, so one address still means one port on both.
fn bind_address(
    addr: SocketAddr,
) -> Result<(Vec<std::net::UdpSocket>, tokio::net::TcpListener, bool), BindError> {
    let udp_err = |source| BindError {
        proto: Proto::Udp,
        addr,
        source,
    };
    let tcp_err = |source| BindError {
        proto: Proto::Tcp,
        addr,
        source,
    };
    let kept_udp: Vec<std::net::UdpSocket> =
        fdstore::take(&fdstore::name(fdstore::Kind::DnsUdp, addr))
            .into_iter()
            .map(std::net::UdpSocket::from)
            .filter(|s| s.local_addr().is_ok_and(|a| a == addr))
            .collect();
    let kept_tcp = fdstore::take(&fdstore::name(fdstore::Kind::DnsTcp, addr))
        .into_iter()
        .map(std::net::TcpListener::from)
        .find(|s| s.local_addr().is_ok_and(|a| a == addr));
    let kept = !kept_udp.is_empty();
    let udp = if kept {
        kept_udp
    } else {
        crate::net::bind_udp_group(addr, crate::net::threads_per_address()).map_err(udp_err)?
    };
    let bound = udp[0].local_addr().map_err(udp_err)?;
    let tcp = match kept_tcp {
        Some(l) => {
            l.set_nonblocking(true).map_err(tcp_err)?;
            tokio::net::TcpListener::from_std(l).map_err(tcp_err)?
        }
        None => crate::net::bind_tcp(bound).map_err(|source| BindError {
            proto: Proto::Tcp,
            addr: bound,
            source,
        })?,
    };
    Ok((udp, tcp, kept))
}
