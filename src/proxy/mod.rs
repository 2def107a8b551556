//! The cluster-port (:8201) TLS passthrough proxy: ClientHello peek, ALPN routing,
//! forwarding to the active node, cut-over on leader change.

pub mod config;
pub mod forward;
pub mod hello;
pub mod read;
pub mod route;
pub mod splice;

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
