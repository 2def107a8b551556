//! vault-locator: a per-node sidecar that tracks the leader of each configured Vault or
//! OpenBao cluster and answers Consul-style DNS names for it.
//!
//! Data flow, one way: [`vault::watcher`] polls each cluster's nodes and publishes a
//! [`vault::view::ClusterView`] through `tokio::sync::watch`; [`vault::replication`]
//! reads a replication set's views and publishes the virtual clusters' (`perf-primary`,
//! `dr-primary`); [`dns`] answers from the current views and [`proxy`] forwards to the
//! leader they name; [`admin`] and [`systemd`] report them. Nothing else talks to Vault.
//!
//! # Glossary
//!
//! One name per idea, used in code, logs, `/status` and docs alike.
//!
//! - **cluster**: one Vault or OpenBao HA cluster, configured as a `[[clusters]]` entry;
//!   its name is its **label** in DNS names (`active.vault.service.<cluster>`). The
//!   **local cluster** is the one names without a label mean; `datacenter` is its name
//!   only as the config key and the `/status` field (Consul's word, kept for
//!   operators), and `<dc>` only where Consul's own name forms are quoted.
//! - **node**: an address the agent polls for a cluster (`nodes = [...]`): a member, or a
//!   peer region's load balancer (`load_balanced`).
//! - **member**: a node that is part of the cluster, with its **role** (active, standby,
//!   perf-standby, sealed, removed, unreachable, ...: [`vault::role::Role`]) from its
//!   own health answer.
//! - **report**: what one poll of one node heard (`vault::rules::Polled`): its health,
//!   its replication modes and its leader answer, with when.
//! - **vote**: a report's `leader_address`; the **leader** is the address a majority of
//!   the configured nodes votes for, confirmed by that node when the agent polls it.
//! - **round**: one poll of every node of a cluster, on the agent's round grid.
//! - **pace**: how a cluster's nodes are polled (`vault::poll::Pace`): normal, or
//!   **failover polling** while the cluster has no confirmed leader
//!   (`failover_poll_interval`, for at most `failover_poll_for`).
//! - **view**: what the agent believes about one cluster now ([`vault::view::ClusterView`]):
//!   leader, members, freshness (fresh, stale, unusable), why there is no leader.
//! - **feed**: a cluster's published view as a consumer reads it
//!   ([`vault::feed::ClusterFeed`]; every cluster's: [`vault::feed::Feeds`]); the
//!   watcher writes it, nothing else does.
//! - **replication set**: the clusters of `[replication]`; **kind**: performance or DR;
//!   **mode**: what a cluster reports for a kind (primary, secondary, disabled, ...);
//!   **primary**: the cluster of the set (of one DR set, for DR) that the rule names.
//! - **DR set**: a DR primary with its DR secondaries, told apart by their DR status's
//!   `cluster_id`.
//! - **virtual cluster**: `perf-primary` or `dr-primary`, whose view is the view of the
//!   cluster that is that primary now; usable wherever a cluster name is.
//! - **stream**: a secondary's replication from its primary, as the clusters' replication
//!   status describes it ([`vault::stream`], judged in [`vault::stream_health`]).
//! - **zone**: the names the agent answers (`domain`, default `consul`); a name's
//!   **tag** is the instances it asks for ([`dns::names::Tag`]).
//! - **proxy**: a `[[proxy]]` forwarding to a cluster's leader on two **sides**
//!   ([`proxy::ProxySide`]): the **cluster side** (:8201, ClientHello peek, ALPN
//!   **routes**) and the **API side** (:8200).
//! - **cut-over**: closing a proxied connection whose target is no longer the leader
//!   (`on_leader_change = "close"`; its metric keeps its first name,
//!   `proxy_closed_on_leader_change_total`).
//! - **generation**: what one config runs; a reload prepares the next generation (may
//!   fail, changes nothing) and commits it (cannot fail). What a generation runs, as
//!   the admin endpoint and systemd read it, is one snapshot ([`admin::Running`]).
//! - **part**: a long-lived task the supervisor starts, watches and stops (a watcher, the
//!   replication set, the DNS server, a proxy side, and the **reporting parts**: the
//!   admin endpoint, the systemd notifier, the metrics upkeep); `app::part`.
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
