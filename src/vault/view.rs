//! `ClusterView`: what the agent believes about one cluster at one moment, as every
//! consumer reads it (DNS, the proxy, the replication set, `/status`). The rules that
//! build it from the nodes' reports are in `vault::rules`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use url::Url;

use super::modes::Modes;
pub use super::role::Role;
use super::stream::StreamReport;

/// One polled node.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub url: Url,
    /// The IPs the node's configured host resolves to.
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub role: Role,
    /// The replication modes the node reported (unknown without a current answer).
    pub replication: Modes,
    /// Wall-clock time of the node's last answer.
    pub last_confirmed: Option<SystemTime>,
    /// Why the node has no current answer, if it has none.
    pub error: Option<String>,
}

/// The elected leader, resolved once (by the watcher, when it is elected) to the
/// addresses consumers use: DNS answers `addrs`, the proxy connects to
/// [`Leader::api_target`] and `cluster_target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's `api_addr` as reported.
    pub api_addr: String,
    /// The leader's `cluster_addr` as reported.
    pub cluster_addr: String,
    /// The IPs `api_addr`'s host resolves to, and its port (or its scheme's).
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    /// The cluster port (:8201) the proxy forwards to: `cluster_addr` resolved, or the
    /// leader's first address on 8201 when no node reported one. `None`: unusable.
    pub cluster_target: Option<SocketAddr>,
}

/// Vault's cluster port, when a `cluster_addr` names none.
pub const CLUSTER_PORT: u16 = 8201;

/// What a reported `cluster_addr` points at, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAddr {
    /// An IP literal (or none reported: the leader's own address).
    Socket(SocketAddr),
    /// A host name, to be looked up, and the port.
    Name { host: String, port: u16 },
    /// Not a usable address.
    Unusable,
}

impl ClusterAddr {
    /// `https://host:port` (Vault's form) or `host:port`; no port means 8201; empty
    /// means the leader's first API address on 8201.
    pub fn parse(cluster_addr: &str, addrs: &[IpAddr]) -> Self {
        if cluster_addr.is_empty() {
            return addrs.first().map_or(ClusterAddr::Unusable, |ip| {
                ClusterAddr::Socket(SocketAddr::new(*ip, CLUSTER_PORT))
            });
        }
        let with_scheme = if cluster_addr.contains("://") {
            cluster_addr.to_string()
        } else {
            format!("https://{cluster_addr}")
        };
        let Ok(url) = url::Url::parse(&with_scheme) else {
            return ClusterAddr::Unusable;
        };
        let port = url.port().unwrap_or(CLUSTER_PORT);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => ClusterAddr::Socket(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Ipv6(ip)) => ClusterAddr::Socket(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Domain(name)) => ClusterAddr::Name {
                host: name.to_string(),
                port,
            },
            None => ClusterAddr::Unusable,
        }
    }
}

impl Leader {
    /// A leader whose addresses are IP literals (no lookup needed): the watcher's
    /// result for such a leader, and what tests build.
    pub fn literal(api_addr: &str, cluster_addr: &str, addrs: Vec<IpAddr>, port: u16) -> Self {
        let cluster_target = match ClusterAddr::parse(cluster_addr, &addrs) {
            ClusterAddr::Socket(s) => Some(s),
            ClusterAddr::Name { .. } | ClusterAddr::Unusable => None,
        };
        Self {
            api_addr: api_addr.to_string(),
            cluster_addr: cluster_addr.to_string(),
            addrs,
            port,
            cluster_target,
        }
    }

    /// The API port (:8200) the proxy's API side forwards to.
    pub fn api_target(&self) -> Option<SocketAddr> {
        self.addrs.first().map(|ip| SocketAddr::new(*ip, self.port))
    }
}

/// Why a cluster has no leader right now. `kind()` is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoLeader {
    /// Fewer than a majority of the configured members answer `/v1/sys/leader`.
    Unheard { unheard: usize, configured: usize },
    /// No address is named by a majority (an election, or members disagree).
    NoMajority {
        reports: Vec<Votes>,
        configured: usize,
    },
    /// The majority names a node we poll, and that node does not say it is active.
    Unconfirmed { leader: String, role: Role },
    /// The majority's `leader_address` cannot be used.
    Unusable { leader: String, why: String },
}

/// A leader address some members name, and how many of them do.
#[derive(Clone, PartialEq, Eq)]
pub struct Votes {
    pub address: String,
    pub count: usize,
}

impl Votes {
    pub fn new(address: &str, count: usize) -> Self {
        let address = address.to_string();
        Self { address, count }
    }
}

/// As the tuple it replaced, so the disagreement WARN line reads as before.
impl fmt::Debug for Votes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:?}, {})", self.address, self.count)
    }
}

/// When the leader last changed, and why (for `/status` and `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange {
    pub at: SystemTime,
    pub reason: String,
}

impl NoLeader {
    pub const KINDS: [&'static str; 4] = ["unheard", "no_majority", "unconfirmed", "unusable"];

    pub fn kind(&self) -> &'static str {
        match self {
            NoLeader::Unheard { .. } => "unheard",
            NoLeader::NoMajority { .. } => "no_majority",
            NoLeader::Unconfirmed { .. } => "unconfirmed",
            NoLeader::Unusable { .. } => "unusable",
        }
    }
}

impl fmt::Display for NoLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoLeader::Unheard {
                unheard,
                configured,
            } => write!(f, "{unheard} of {configured} members unheard"),
            NoLeader::NoMajority {
                reports,
                configured,
            } if reports.is_empty() => {
                write!(f, "none of the {configured} members reports a leader")
            }
            NoLeader::NoMajority {
                reports,
                configured,
            } => {
                write!(f, "no leader named by a majority of {configured} members (")?;
                for (i, Votes { address, count }) in reports.iter().enumerate() {
                    write!(f, "{}{address}: {count}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            NoLeader::Unconfirmed { leader, role } => {
                write!(
                    f,
                    "reported leader {leader} is {} when polled",
                    role.as_str()
                )
            }
            NoLeader::Unusable { leader, why } => write!(f, "reported leader {leader}: {why}"),
        }
    }
}

/// Everything the agent believes about one cluster at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub cluster: String,
    pub leader: Option<Leader>,
    /// Why there is no leader (None while there is one, or before the first view).
    pub no_leader: Option<NoLeader>,
    pub members: Vec<Member>,
    /// Nodes are load-balancer addresses: they report the leader but are not members.
    pub load_balanced: bool,
    /// Monotonic time of the latest answer from any node.
    pub last_confirmed: Option<Instant>,
    /// No node has a current answer; this is the last confirmed view.
    pub stale: bool,
    /// Wall-clock time and reason of the last leader change.
    pub leader_changed: Option<LeaderChange>,
    /// Since when the cluster has had no leader (for the "no leader for Xs" log line).
    pub leaderless_since: Option<Instant>,
    /// How long the view may be served once no node answers (the cluster's config). It
    /// travels with the view, so a view passed on (a replication set's virtual cluster)
    /// keeps its own cluster's window.
    pub serve_stale_for: Duration,
    /// The latest answer of the active node's replication status (Vault Enterprise
    /// only; see `stream`). Not part of what the view answers: DNS and the proxy never
    /// read it, so a new one replaces the published view silently.
    pub streams: Option<Arc<StreamReport>>,
}

/// `serve_stale_for` until a watcher sets its cluster's own (the config default).
const DEFAULT_SERVE_STALE_FOR: Duration = Duration::from_secs(30);

/// How a view may be used to answer at a given moment (in `/status`: "fresh",
/// "stale", "unusable").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    /// Confirmed by current reports.
    Fresh,
    /// No node answers, but still within `serve_stale_for` of the last confirmation.
    Stale,
    /// Nothing confirmed recently enough (or ever): answer SERVFAIL.
    Unusable,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Stale => "stale",
            Freshness::Unusable => "unusable",
        }
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl ClusterView {
    /// The view before the first poll: no data, unusable.
    pub fn empty(cluster: &str, load_balanced: bool) -> Self {
        Self {
            cluster: cluster.to_string(),
            leader: None,
            no_leader: None,
            members: Vec::new(),
            load_balanced,
            last_confirmed: None,
            stale: false,
            leader_changed: None,
            leaderless_since: None,
            serve_stale_for: DEFAULT_SERVE_STALE_FOR,
            streams: None,
        }
    }

    /// How the view may be used to answer at `now`.
    pub fn freshness(&self, now: Instant) -> Freshness {
        match self.last_confirmed {
            None => Freshness::Unusable,
            Some(_) if !self.stale => Freshness::Fresh,
            Some(t) if now.saturating_duration_since(t) <= self.serve_stale_for => Freshness::Stale,
            Some(_) => Freshness::Unusable,
        }
    }

    /// Members with the given role, in configured order (empty for load-balanced clusters,
    /// whose "members" are load balancers).
    pub fn members_with(&self, role: Role) -> impl Iterator<Item = &Member> {
        let lb = self.load_balanced;
        self.members.iter().filter(move |m| !lb && m.role == role)
    }

    /// Members listed under `role`'s Consul tag: [`Self::members_with`], except that
    /// `standby` lists every standby ([`Role::is_standby`]).
    pub fn members_with_tag(&self, role: Role) -> impl Iterator<Item = &Member> {
        let lb = self.load_balanced;
        let standby = role == Role::Standby;
        self.members
            .iter()
            .filter(move |m| !lb && (m.role == role || (standby && m.role.is_standby())))
    }

    /// Whether `other` would answer anything differently: the leader, a member's role or
    /// address, staleness, or having a first view at all. Timestamps and error texts
    /// change with every report and are read from the latest view by whoever shows them;
    /// the watcher wakes consumers (proxy connections, DNS answer caches) only when this
    /// is false.
    pub fn answers_like(&self, other: &ClusterView) -> bool {
        let key = |m: &Member| {
            (
                m.url.clone(),
                m.addrs.clone(),
                m.port,
                m.role,
                m.replication,
            )
        };
        self.leader == other.leader
            && self.stale == other.stale
            && self.load_balanced == other.load_balanced
            && self.last_confirmed.is_some() == other.last_confirmed.is_some()
            && self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .map(key)
                .eq(other.members.iter().map(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addr_forms() {
        let sock = |s: &str| ClusterAddr::Socket(s.parse().unwrap());
        let leader_ip: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap()];
        let cases = [
            ("https://10.0.0.1:8201", sock("10.0.0.1:8201")),
            ("10.0.0.1:8301", sock("10.0.0.1:8301")),
            ("https://[::1]", sock("[::1]:8201")),
            ("https://10.0.0.1", sock("10.0.0.1:8201")),
            ("", sock("10.0.0.2:8201")),
            (
                "https://vault-1.internal:8202",
                ClusterAddr::Name {
                    host: "vault-1.internal".into(),
                    port: 8202,
                },
            ),
            ("https://", ClusterAddr::Unusable),
            ("https://a b", ClusterAddr::Unusable),
        ];
        for (given, want) in cases {
            assert_eq!(ClusterAddr::parse(given, &leader_ip), want, "{given:?}");
        }
        assert_eq!(ClusterAddr::parse("", &[]), ClusterAddr::Unusable);
    }

    #[test]
    fn a_literal_leader_has_both_targets_and_a_named_one_waits_for_the_watcher() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let l = Leader::literal(
            "http://10.0.0.1:8200",
            "https://10.0.0.1:8201",
            vec![ip],
            8200,
        );
        assert_eq!(l.cluster_target, Some("10.0.0.1:8201".parse().unwrap()));
        assert_eq!(l.api_target(), Some("10.0.0.1:8200".parse().unwrap()));
        let l = Leader::literal(
            "http://10.0.0.1:8200",
            "https://vault-1:8201",
            vec![ip],
            8200,
        );
        assert_eq!(l.cluster_target, None);
    }
}
