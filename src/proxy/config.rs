//! A `[[proxy]]` listener's settings, as `config` validates them: what the proxy needs
//! and nothing of the file's syntax. (The ALPN table they start from is in `route`.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// What the proxy does with a connection, chosen by its ALPN ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAction {
    /// Forward to the cluster's active node.
    Active,
    /// Close the connection.
    Reject,
}

/// How the proxy moves bytes once a connection is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPath {
    /// splice(2) through a pipe: bytes stay in the kernel (see bench/RESULTS.md).
    #[default]
    Splice,
    /// tokio's copy_bidirectional through user-space buffers.
    Copy,
}

/// What happens to open proxy connections when the cluster's leader changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLeaderChange {
    /// Close them, so clients reconnect and land on the new leader.
    #[default]
    Close,
    /// Leave them alone.
    Keep,
}

/// One `[[proxy]]` listener: TLS passthrough of a cluster port to the active node, and
/// optionally an API side: plain TCP passthrough of the API port to the same node.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// A configured cluster, or a replication set's virtual one (`perf-primary`).
    pub cluster: String,
    pub listen: SocketAddr,
    /// The API side: forwards to the leader's `api_addr` without peeking. With
    /// `answer = true` it defaults to the listener's IP on port 8200 (`""` disables).
    pub api_listen: Option<SocketAddr>,
    /// DNS answers this listener for `active.vault.service.<cluster>`.
    pub answer: bool,
    pub on_leader_change: OnLeaderChange,
    /// Routes by ALPN id: the built-in table with the file's `routes` laid over it.
    pub routes: BTreeMap<String, RouteAction>,
    /// For ALPN ids not in `routes`.
    pub default_route: RouteAction,
    /// For ClientHellos without ALPN.
    pub no_alpn: RouteAction,
    pub client_hello_timeout: Duration,
    pub max_client_hello: usize,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub data_path: DataPath,
}

/// Which port of the active node a listener forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The cluster port (`cluster_addr`, :8201): ClientHello peek, ALPN routes.
    Cluster,
    /// The API port (`api_addr`, :8200): plain TCP passthrough.
    Api,
}

impl Side {
    /// The metric and log label.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Cluster => "cluster",
            Side::Api => "api",
        }
    }
}
