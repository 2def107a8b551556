//! The config file as written: serde's view of the TOML, before any check.
//!
//! Every table has one `Default`, which is where each default value lives; serde fills
//! absent keys from it (`#[serde(default)]` on the struct). Keys without a sensible
//! default (`datacenter`, a cluster's `name`) are `Option` here so that validation can
//! name them when missing, like any other bad key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::proxy::config::{DataPath, OnLeaderChange, RouteAction};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileConfig {
    pub datacenter: Option<String>,
    pub domain: String,
    pub dns: FileDns,
    pub clusters: Vec<FileCluster>,
    pub proxy: Vec<FileProxy>,
    pub admin: FileAdmin,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    pub replication: Option<FileReplication>,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            datacenter: None,
            domain: "consul".into(),
            dns: FileDns::default(),
            clusters: Vec::new(),
            proxy: Vec::new(),
            admin: FileAdmin::default(),
            drain_timeout: Duration::from_secs(10),
            replication: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileReplication {
    pub clusters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileAdmin {
    pub listen: String,
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl Default for FileAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileDns {
    pub listen: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub upstreams: Vec<String>,
    pub zone_fallback: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub lameduck: Duration,
    pub udp_answer_limit: usize,
    pub records: Vec<FileRecord>,
}

impl Default for FileDns {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:8600".into()],
            ttl: Duration::ZERO,
            upstreams: Vec::new(),
            zone_fallback: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(5),
            lameduck: Duration::from_millis(500),
            udp_answer_limit: crate::dns::handler::UDP_ANSWER_LIMIT,
            records: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileRecord {
    pub name: Option<String>,
    pub a: Vec<String>,
    pub aaaa: Vec<String>,
    pub cname: Option<String>,
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileCluster {
    pub name: Option<String>,
    pub nodes: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Unset: [`FAILOVER_POLL_INTERVAL`] ([`LOAD_BALANCED_FAILOVER_POLL_INTERVAL`] for a
    /// load-balanced peer), or `poll_interval` if that is faster.
    #[serde(with = "humantime_serde")]
    pub failover_poll_interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub failover_poll_for: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Unset: [`NODE_CONNECT_TIMEOUT`], or `request_timeout` if that is shorter.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub serve_stale_for: Duration,
    pub load_balanced: bool,
    /// The leader's cluster port when its nodes report no `leader_cluster_address`
    /// (redacted listeners, servers without HA).
    pub cluster_port: u16,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    /// Not supported (see `vault::tls`): accepted only to be refused with the reason.
    pub tls_skip_verify: Option<bool>,
}

/// The failover poll when unset (capped by the cluster's `poll_interval`): the local
/// cluster's new leader is answered within about this much of its election.
pub(super) const FAILOVER_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// ... and for a load-balanced peer region. Every agent of every other region polls a
/// peer's load balancer, so its election multiplies the load on the new leader by
/// poll_interval / this (bench/RESULTS.md, "Fleet scale": 29 peers' agents at 50 ms
/// sent 5 times what they do at 250 ms); a peer's leader is needed for replication and
/// token fetches, which retry, not for the local cluster's own requests.
pub(super) const LOAD_BALANCED_FAILOVER_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The node connect timeout when unset (capped by the cluster's `request_timeout`).
pub(super) const NODE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

impl Default for FileCluster {
    fn default() -> Self {
        Self {
            name: None,
            nodes: Vec::new(),
            poll_interval: Duration::from_secs(1),
            failover_poll_interval: None,
            // An election takes seconds (raft's election timeout, OpenBao's step-down);
            // a cluster leaderless for longer is sealed or cut off, and failover polling
            // would only load it.
            failover_poll_for: Duration::from_secs(30),
            request_timeout: Duration::from_secs(2),
            connect_timeout: None,
            serve_stale_for: Duration::from_secs(30),
            load_balanced: false,
            cluster_port: crate::vault::view::CLUSTER_PORT,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            tls_server_name: None,
            tls_skip_verify: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileProxy {
    pub cluster: Option<String>,
    pub listen: Option<String>,
    pub api_listen: Option<String>,
    pub answer: bool,
    pub on_leader_change: OnLeaderChange,
    pub default_route: RouteAction,
    pub no_alpn: RouteAction,
    pub routes: BTreeMap<String, RouteAction>,
    #[serde(with = "humantime_serde")]
    pub client_hello_timeout: Duration,
    pub max_client_hello: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub data_path: DataPath,
}

impl Default for FileProxy {
    fn default() -> Self {
        Self {
            cluster: None,
            listen: None,
            api_listen: None,
            answer: false,
            on_leader_change: OnLeaderChange::default(),
            default_route: RouteAction::Reject,
            no_alpn: RouteAction::Reject,
            routes: BTreeMap::new(),
            client_hello_timeout: Duration::from_secs(5),
            max_client_hello: 16 * 1024,
            connect_timeout: Duration::from_secs(3),
            max_connections: 1024,
            data_path: DataPath::default(),
        }
    }
}
