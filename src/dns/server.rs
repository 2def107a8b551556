//! Binding the DNS listeners (UDP and TCP on every configured address) and running the
//! hickory server until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::Server;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::handler::Handler;

/// Response buffer per TCP connection, in messages.
const TCP_RESPONSE_BUFFER: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("cannot bind DNS {proto} listener on {addr}")]
pub struct BindError {
    pub proto: &'static str,
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
}

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
        for &addr in listen {
            // One UDP socket per receive loop (SO_REUSEPORT: the kernel spreads clients
            // over them).
            let udp = crate::net::bind_udp_group(addr, crate::net::threads_per_address()).map_err(
                |source| BindError {
                    proto: "UDP",
                    addr,
                    source,
                },
            )?;
            // With port 0, TCP takes the port the kernel gave UDP, so one address
            // still means one port on both.
            let bound = udp[0].local_addr().map_err(|source| BindError {
                proto: "UDP",
                addr,
                source,
            })?;
            let tcp = crate::net::bind_tcp(bound).map_err(|source| BindError {
                proto: "TCP",
                addr: bound,
                source,
            })?;
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
        })
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        for addr in &self.local_addrs {
            info!(%addr, "DNS listening on UDP and TCP");
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
}
