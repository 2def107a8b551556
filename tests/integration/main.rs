//! The integration tests, one binary (hickory-dns's `tests/integration` shape): the
//! crate and `support` are compiled and linked once instead of once per file. Each
//! module is one area; `support` holds the real OpenBao cluster, the agent binary, the
//! DNS client, the stand-in nodes and the network-namespace lab they share.

// Tests block their own threads on purpose (a CLI run, a client waiting for a reply);
// clippy.toml's bans are for the agent's runtime threads.
#![allow(clippy::disallowed_methods)]

mod support;

mod arm64;
mod cli;
mod conformance;
mod dns_protocol;
mod enterprise;
mod fault_lab;
mod hostile_input;
mod openbao_dns;
mod openbao_proxy;
mod openbao_tls;
mod operability;
mod panics;
mod polling;
mod proxy_flow;
mod proxy_hostile;
mod replication;
mod systemd_unit;
mod watcher_faults;
