//! The cluster-port (:8201) TLS passthrough proxy: ClientHello peek, ALPN routing,
//! forwarding to the active node, cut-over on leader change.

pub mod forward;
pub mod hello;
pub mod read;
pub mod route;
pub mod splice;
