//! vault-locator: a per-node sidecar that tracks the leader of each configured Vault or
//! OpenBao cluster and answers Consul-style DNS names for it.
//!
//! Data flow: [`vault::watcher`] polls each cluster's nodes and publishes a
//! [`vault::view::ClusterView`] through `tokio::sync::watch`; [`dns`] answers from the
//! current views. Nothing else talks to Vault.
// One foreign call (a socket option no safe crate wraps) in net::defer_accept, with its
// proof beside it; everything else stays safe code.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod dns;
pub mod logfmt;
pub mod net;
pub mod panic;
pub mod proxy;
pub mod systemd;
pub mod telemetry;
pub mod vault;
