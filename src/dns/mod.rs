//! DNS: Consul-compatible answers for the vault service, static records, forwarding.

pub mod cache;
pub mod handler;
pub mod names;
pub mod server;
pub mod udp;
pub mod zone;
