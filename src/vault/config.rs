//! A cluster's settings, as `config` validates them: whom to poll, how often, how long
//! to trust what was heard.

use std::time::Duration;

use url::Url;

use super::tls::ClusterTls;

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The cluster label in DNS names, lower case.
    pub name: String,
    pub nodes: Vec<Url>,
    pub poll_interval: Duration,
    /// While the cluster has no confirmed leader (an election, a step-down, a start),
    /// rounds run this often instead, for at most `failover_poll_for` after the leader
    /// was lost: the new leader is seen within this interval of its election.
    pub failover_poll_interval: Duration,
    pub failover_poll_for: Duration,
    /// Bounds a whole request to a node (connect, headers, body).
    pub request_timeout: Duration,
    /// Bounds the TCP connect alone: much shorter, since a connect to a live host
    /// completes in milliseconds and one to a dead or cut-off host never does.
    pub connect_timeout: Duration,
    /// How long the last confirmed view is served once no node answers.
    pub serve_stale_for: Duration,
    /// The nodes are load-balancer addresses: they tell us the leader, but are not
    /// members themselves.
    pub load_balanced: bool,
    /// The port of the leader's cluster address when its nodes report none (a listener
    /// with `redact_addresses`, a server without HA): Vault's 8201 unless set.
    pub cluster_port: u16,
    /// TLS for https nodes.
    pub tls: ClusterTls,
}
