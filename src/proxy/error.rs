//! Why a proxied connection was refused or ended early: each reason is a bounded
//! metric label (`kind`).

use std::io;
use std::net::SocketAddr;

/// Why a connection was not forwarded, or how it ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Hello(#[from] super::hello::HelloError),
    #[error("ALPN {0} is routed to reject")]
    Rejected(String),
    #[error("no leader known for this cluster")]
    NoLeader,
    #[error("cannot use leader address {0:?} (not an address, or its name did not resolve)")]
    Unusable(String),
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connect to {target}: {error}")]
    Connect {
        target: SocketAddr,
        error: io::Error,
    },
}

impl ConnError {
    pub fn kind(&self) -> &'static str {
        match self {
            ConnError::Hello(h) => h.kind(),
            ConnError::Rejected(_) => "alpn_rejected",
            ConnError::NoLeader => "no_leader",
            ConnError::Unusable(_) => "resolve",
            ConnError::ConnectTimeout(_) => "connect_timeout",
            ConnError::Connect { .. } => "connect",
        }
    }
}
