//! The cluster-port (:8201) TLS passthrough proxy: ClientHello peek, ALPN routing,
//! forwarding to the active node, cut-over on leader change; and a listener's API side
//! (:8200), the same without the peek.
//!
//! | file | its one job |
//! |---|---|
//! | `config` | a listener's settings and the route actions |
//! | `listener` | [`ProxySide`]: worker threads, the accept loop, the drain |
//! | `connection` | one connection: hello -> route -> target -> connect -> pump -> cut-over |
//! | `target` | the leader's address on a side, to a socket address |
//! | `connect` | the upstream connect, socket tuning, RST |
//! | `hello`, `read` | the ClientHello scanner and its reads from the socket |
//! | `route` | the ALPN table and the routing rule |
//! | `splice` | the zero-copy data path and its pipe pools |
//! | `metrics`, `error` | per-listener metric handles; why a connection was refused |

pub mod config;
mod connect;
mod connection;
mod error;
pub mod hello;
mod listener;
mod metrics;
pub mod read;
pub mod route;
pub mod splice;
mod target;

pub use config::Side;
pub use listener::ProxySide;

#[cfg(test)]
pub(crate) mod testing {
    use tokio::net::{TcpListener, TcpStream};

    /// A connected TCP pair on loopback: (connecting end, accepted end).
    pub(crate) async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }
}
