//! Binding the DNS listeners (UDP and TCP on every configured address) and running the
//! hickory server until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

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

/// A DNS server with every listener bound, not yet serving.
pub struct DnsServer {
    server: Server<Handler>,
    local_addrs: Vec<SocketAddr>,
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
            let udp = crate::net::bind_udp(addr).map_err(|source| BindError {
                proto: "UDP",
                addr,
                source,
            })?;
            // With port 0, TCP takes the port the kernel gave UDP, so one address
            // still means one port on both.
            let bound = udp.local_addr().map_err(|source| BindError {
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
        let mut server = Server::new(handler);
        for (udp, tcp) in sockets {
            server.register_socket(udp);
            server.register_listener(tcp, tcp_idle_timeout, TCP_RESPONSE_BUFFER);
        }
        Ok(Self {
            server,
            local_addrs,
        })
    }

    /// The addresses actually bound (useful when the config asked for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        for addr in &self.local_addrs {
            info!(%addr, "DNS listening on UDP and TCP");
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                self.server.shutdown_gracefully().await?;
                Ok(())
            }
            result = self.server.block_until_done() => {
                result?;
                anyhow::bail!("DNS server stopped unexpectedly")
            }
        }
    }
}
