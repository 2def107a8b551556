//! Shared test support: a real OpenBao cluster, the agent binary, a DNS client and
//! mock Vault nodes for inputs a real server cannot produce.
#![allow(dead_code)] // each test binary uses a different part

pub mod agent;
pub mod dns;
pub mod mock;
pub mod netlab;
pub mod openbao;
pub mod tls;

/// A socket address written in a test (panics on a typo).
pub fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}
