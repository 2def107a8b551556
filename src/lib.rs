//! vault-locator: a per-node sidecar that tracks the leader of each configured Vault or
//! OpenBao cluster and answers Consul-style DNS names for it.
//!
//! Data flow, one way: [`vault::watcher`] polls each cluster's nodes and publishes a
//! [`vault::view::ClusterView`] through `tokio::sync::watch`; [`vault::replication`]
//! reads a replication set's views and publishes the virtual clusters' (`perf-primary`,
//! `dr-primary`); [`dns`] answers from the current views and [`proxy`] forwards to the
//! leader they name; [`admin`] and [`systemd`] report them. Nothing else talks to Vault.
// Two places need unsafe code, each with its proof beside it: one foreign call (a socket
// option no safe crate wraps) in net::defer_accept, and adopting the descriptors systemd
// passed at start in fdstore::adopt_inherited; everything else stays safe code.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod dns;
pub mod fdstore;
pub mod logfmt;
pub mod net;
pub mod panic;
pub mod proxy;
pub mod systemd;
pub mod telemetry;
pub mod vault;
