//! How the replication set's streams are doing, judged from every cluster's latest
//! replication status ([`super::stream`]) and what the agent knows of the clusters.
//! Pure: the replication set calls [`judge`] whenever it applies its rule, and shows,
//! logs and measures the result.
//!
//! For each cluster and kind it reports the mode, the state and the connection state;
//! on a secondary whether it streams (`stream-wals`), which cluster of the set it
//! streams from and how far behind it is (the primary's `last_wal` minus the
//! secondary's `last_remote_wal`); on a primary each secondary's connection, heartbeat
//! age, clock skew, canary age and lag.
//!
//! **Where the stream dials** (the failure nobody else sees until it bites): a
//! secondary dials `primary_cluster_addr` for as long as it runs, and the primary's
//! nodes it learnt from heartbeats (`known_primary_cluster_addrs`). It is warned about
//! when `primary_cluster_addr` is neither a name this agent answers for the primary
//! (`active.vault.service.<primary>.consul`, `perf-primary`, a proxy listener of the
//! primary) nor one of the primary's current nodes, and when no known primary address
//! is a current node of the primary (every node it would fall back to is gone).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::modes::{Kind, Mode};
use super::stream::{Stream, Streams};
use super::view::{ClusterView, CLUSTER_PORT};

/// What the agent answers, for telling whether a stream's address reaches a primary:
/// the DNS domain (lower case, no trailing dot), the local cluster (the one names
/// without a cluster label mean), and the proxy listeners with the cluster or
/// virtual cluster each forwards to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTargets {
    pub domain: String,
    pub local_cluster: String,
    pub proxies: Vec<ProxyTarget>,
}

/// A proxy listener and the cluster (or virtual cluster) it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTarget {
    pub listen: SocketAddr,
    pub cluster: String,
}

/// One cluster's stream of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamHealth {
    pub cluster: String,
    /// "perf" or "dr".
    pub kind: String,
    pub mode: Mode,
    /// A secondary's `state` (`stream-wals`, `merkle-diff`, `merkle-sync`, `idle`);
    /// a primary's (`running`) or empty.
    pub state: String,
    pub connection_state: String,
    /// A secondary's: streaming WALs from its primary. None on a primary.
    pub streaming: Option<bool>,
    /// A secondary's primary among the set's clusters, when the agent can tell.
    pub primary: Option<String>,
    /// A secondary's WAL distance behind its primary.
    pub wal_lag: Option<u64>,
    pub primary_cluster_addr: String,
    pub known_primary_cluster_addrs: Vec<String>,
    /// What is wrong with where the stream dials (see the module docs).
    pub warnings: Vec<String>,
    /// A primary's secondaries.
    pub secondaries: Vec<SecondaryHealth>,
    /// Seconds since the status was read.
    pub read_age_seconds: Option<f64>,
    /// Why the latest ask of the status failed, if it did (the rest is from the last
    /// answer, `read_age_seconds` old).
    pub error: Option<String>,
}

/// One secondary, as its primary lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondaryHealth {
    /// The secondary's id (`node_id` in the primary's list).
    pub id: String,
    /// The cluster of the set it is, when the agent can tell.
    pub cluster: Option<String>,
    pub connection_status: String,
    pub heartbeat_age_seconds: Option<f64>,
    pub clock_skew_ms: Option<i64>,
    pub canary_age_ms: Option<i64>,
    pub wal_lag: Option<u64>,
}

impl SecondaryHealth {
    /// The label the secondary's metrics carry: its cluster's name, or its id.
    pub fn name(&self) -> &str {
        self.cluster.as_deref().unwrap_or(&self.id)
    }
}

/// One cluster of the set with its latest streams.
struct Replicating<'a> {
    name: &'a str,
    view: &'a ClusterView,
    streams: &'a Streams,
}

/// Every replicating cluster's streams, in configured order, perf then DR. `named`:
/// each kind whose virtual cluster names a primary now, with that primary.
pub fn judge(
    views: &[(String, Arc<ClusterView>)],
    named: &[(Kind, String)],
    targets: &StreamTargets,
    now: SystemTime,
) -> Vec<StreamHealth> {
    let set: Vec<Replicating> = views
        .iter()
        .filter_map(|(name, view)| {
            let streams = view.streams.as_ref()?.streams.as_ref()?;
            Some(Replicating {
                name,
                view,
                streams,
            })
        })
        .collect();
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for c in &set {
            let stream = c.streams.of(kind);
            let health = match stream.mode {
                Mode::Secondary => secondary_health(kind, c, &set, named, targets, now),
                Mode::Primary => primary_health(kind, c, &set, now),
                _ => continue,
            };
            out.push(health);
        }
    }
    out
}

/// What every stream's health says alike: the cluster, kind, mode, state and when the
/// status was read.
fn base(kind: Kind, c: &Replicating, now: SystemTime) -> StreamHealth {
    let stream = c.streams.of(kind);
    let report = c.view.streams.as_deref();
    StreamHealth {
        cluster: c.name.to_string(),
        kind: kind.as_str().to_string(),
        mode: stream.mode,
        state: stream.state.clone(),
        connection_state: stream.connection_state.clone(),
        streaming: None,
        primary: None,
        wal_lag: None,
        primary_cluster_addr: stream.primary_cluster_addr.clone(),
        known_primary_cluster_addrs: stream.known_primary_cluster_addrs.clone(),
        warnings: Vec::new(),
        secondaries: Vec::new(),
        read_age_seconds: report.and_then(|r| r.read_at).map(|t| age(now, t)),
        error: report.and_then(|r| r.error.as_ref()).map(|e| e.to_string()),
    }
}

/// A secondary: whether it streams, from which cluster, how far behind, and what is
/// wrong with where it dials.
fn secondary_health(
    kind: Kind,
    c: &Replicating,
    set: &[Replicating],
    named: &[(Kind, String)],
    targets: &StreamTargets,
    now: SystemTime,
) -> StreamHealth {
    let stream = c.streams.of(kind);
    let mut health = base(kind, c, now);
    health.streaming = Some(stream.streaming());
    if let Some(p) = primary_of(kind, c, set, named) {
        health.wal_lag = lag(p.streams.of(kind).last_wal, stream.last_remote_wal);
        health.primary = Some(p.name.to_string());
        health.warnings = dial_warnings(stream, p, kind, named, targets);
    }
    health
}

/// A primary: each secondary it lists, matched to a cluster of the set where it can be.
fn primary_health(
    kind: Kind,
    c: &Replicating,
    set: &[Replicating],
    now: SystemTime,
) -> StreamHealth {
    let stream = c.streams.of(kind);
    let mut health = base(kind, c, now);
    health.secondaries = stream
        .secondaries
        .iter()
        .map(|s| {
            let of = secondary_cluster(kind, s, set);
            SecondaryHealth {
                id: s.node_id.clone(),
                cluster: of.map(|o| o.name.to_string()),
                connection_status: s.connection_status.clone(),
                heartbeat_age_seconds: s.last_heartbeat.map(|t| age(now, t)),
                clock_skew_ms: s.clock_skew_ms,
                canary_age_ms: s.canary_age_ms,
                wal_lag: of.and_then(|o| lag(stream.last_wal, o.streams.of(kind).last_remote_wal)),
            }
        })
        .collect();
    health
}

fn age(now: SystemTime, then: SystemTime) -> f64 {
    now.duration_since(then).unwrap_or_default().as_secs_f64()
}

fn lag(primary_wal: Option<u64>, secondary_wal: Option<u64>) -> Option<u64> {
    Some(primary_wal?.saturating_sub(secondary_wal?))
}

/// The cluster of the set a secondary streams from: the primary of that kind that
/// lists the secondary's id, else the one sharing its replication set's id, else (for
/// performance replication, one per set) the performance primary the rule named.
fn primary_of<'a>(
    kind: Kind,
    secondary: &Replicating,
    set: &'a [Replicating<'a>],
    named: &[(Kind, String)],
) -> Option<&'a Replicating<'a>> {
    let own = secondary.streams.of(kind);
    let primaries = || {
        set.iter()
            .filter(move |p| p.name != secondary.name && p.streams.of(kind).mode == Mode::Primary)
    };
    let lists_it = |p: &&Replicating| {
        !own.secondary_id.is_empty()
            && p.streams
                .of(kind)
                .secondaries
                .iter()
                .any(|s| s.node_id == own.secondary_id)
    };
    let shares_id = |p: &&Replicating| {
        !own.cluster_id.is_empty() && p.streams.of(kind).cluster_id == own.cluster_id
    };
    primaries()
        .find(lists_it)
        .or_else(|| primaries().find(shares_id))
        .or_else(|| {
            let (_, perf) = named
                .iter()
                .find(|(k, _)| *k == kind && kind == Kind::Perf)?;
            primaries().find(|p| p.name == perf)
        })
}

/// The cluster of the set that a primary's `secondaries[]` entry is: the one whose
/// stream has that secondary id, else the one with a node at its address.
fn secondary_cluster<'a>(
    kind: Kind,
    entry: &super::stream::Secondary,
    set: &'a [Replicating<'a>],
) -> Option<&'a Replicating<'a>> {
    let by_id = set.iter().find(|c| {
        let s = c.streams.of(kind);
        s.mode == Mode::Secondary && !entry.node_id.is_empty() && s.secondary_id == entry.node_id
    });
    by_id.or_else(|| {
        set.iter().find(|c| {
            [&entry.cluster_address, &entry.api_address]
                .into_iter()
                .filter_map(|a| host_port(a))
                .any(|(host, _)| is_node_of(&host, c.view))
        })
    })
}

/// What is wrong with where `stream` (a secondary's) dials its primary `p`.
fn dial_warnings(
    stream: &Stream,
    p: &Replicating,
    kind: Kind,
    named: &[(Kind, String)],
    targets: &StreamTargets,
) -> Vec<String> {
    // The virtual clusters whose names answer for `p` now.
    let labels: Vec<&str> = named
        .iter()
        .filter(|(_, primary)| primary == p.name)
        .map(|(k, _)| k.label())
        .collect();
    let reaches = |addr: &str| {
        host_port(addr).is_some_and(|(host, port)| {
            is_node_of(&host, p.view) || targets.answers_for(&host, port, p.name, &labels)
        })
    };
    let mut warnings = Vec::new();
    let dialled = stream.primary_cluster_addr.trim();
    if !dialled.is_empty() && !reaches(dialled) {
        warnings.push(format!(
            "primary_cluster_addr {dialled} is neither a name this agent answers for {} nor \
             one of its nodes: the {} stream breaks when it next redials",
            p.name,
            kind.describe()
        ));
    }
    let known = &stream.known_primary_cluster_addrs;
    if !known.is_empty() && !known.iter().any(|a| reaches(a)) {
        warnings.push(format!(
            "none of known_primary_cluster_addrs ({}) is a current node of {}",
            known.join(", "),
            p.name
        ));
    }
    warnings
}

impl StreamTargets {
    /// Whether `host:port` is something this agent answers for `primary`: a name in
    /// the zone whose cluster label is `primary` or one of `labels` (the virtual clusters
    /// naming it now), or a proxy listener forwarding to one of those.
    fn answers_for(&self, host: &str, port: u16, primary: &str, labels: &[&str]) -> bool {
        let ours = |cluster: &str| cluster == primary || labels.contains(&cluster);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .proxies
                .iter()
                .any(|p| p.listen == SocketAddr::new(ip, port) && ours(&p.cluster));
        }
        let Some(rest) = host.strip_suffix(&format!(".{}", self.domain)) else {
            return false;
        };
        let labels_of_name: Vec<&str> = rest.split('.').collect();
        // `<...>.service.<cluster>`, `<...>.addr.<cluster>`, `<node>.node.<cluster>`;
        // without the cluster label, the local one.
        let cluster = match labels_of_name.as_slice() {
            [.., kind, cluster] if matches!(*kind, "service" | "addr" | "node") => *cluster,
            [.., "service" | "node"] => self.local_cluster.as_str(),
            _ => return false,
        };
        ours(cluster)
    }
}

/// The host (lower case, no trailing dot) and port of an address as Vault writes it
/// (`https://host:port`, or `host:port`); the port defaults to the cluster port.
fn host_port(addr: &str) -> Option<(String, u16)> {
    let with_scheme = if addr.contains("://") {
        addr.trim().to_string()
    } else {
        format!("https://{}", addr.trim())
    };
    let url = url::Url::parse(&with_scheme).ok()?;
    let host = match url.host()? {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    Some((host, url.port().unwrap_or(CLUSTER_PORT)))
}

/// Whether `host` is one of the cluster's current nodes: a configured node's host or
/// address, or the host of the leader's reported API or cluster address.
fn is_node_of(host: &str, view: &ClusterView) -> bool {
    let ip = host.parse::<IpAddr>().ok();
    let member = view.members.iter().any(|m| {
        m.url
            .host_str()
            .is_some_and(|h| h.trim_matches(['[', ']']).eq_ignore_ascii_case(host))
            || ip.is_some_and(|ip| m.addrs.contains(&ip))
    });
    let leader = view.leader.as_ref().is_some_and(|l| {
        [&l.api_addr, &l.cluster_addr]
            .into_iter()
            .filter_map(|a| host_port(a))
            .any(|(h, _)| h == host)
            || ip.is_some_and(|ip| l.addrs.contains(&ip))
    });
    member || leader
}

/// Sets the streams' metrics and logs what changed since `previous`: a secondary that
/// stops or starts streaming, a warning about where a stream dials that appears or
/// clears.
pub fn record(now: &[StreamHealth], previous: Option<&[StreamHealth]>) {
    use crate::telemetry;
    for h in now {
        let before = previous
            .into_iter()
            .flatten()
            .find(|p| p.cluster == h.cluster && p.kind == h.kind);
        let (cluster, kind) = (h.cluster.clone(), h.kind.clone());
        if let Some(streaming) = h.streaming {
            metrics::gauge!(telemetry::REPLICATION_STREAMING, "cluster" => cluster.clone(), "kind" => kind.clone())
                .set(f64::from(u8::from(streaming)));
            let ok = h.warnings.is_empty();
            metrics::gauge!(telemetry::REPLICATION_DIAL_OK, "cluster" => cluster.clone(), "kind" => kind.clone())
                .set(f64::from(u8::from(ok)));
            if before.and_then(|b| b.streaming) != Some(streaming) {
                if streaming {
                    tracing::info!(%cluster, %kind, state = %h.state, "replication stream flowing");
                } else {
                    tracing::warn!(%cluster, %kind, state = %h.state, connection = %h.connection_state, "replication stream not flowing");
                }
            }
        }
        if let Some(lag) = h.wal_lag {
            metrics::gauge!(telemetry::REPLICATION_WAL_LAG, "cluster" => cluster.clone(), "kind" => kind.clone())
                .set(lag as f64);
        }
        for s in &h.secondaries {
            if let Some(age) = s.heartbeat_age_seconds {
                metrics::gauge!(telemetry::REPLICATION_HEARTBEAT_AGE, "cluster" => cluster.clone(), "kind" => kind.clone(), "secondary" => s.name().to_string())
                    .set(age);
            }
        }
        let warned_before = before.map(|b| b.warnings.as_slice()).unwrap_or_default();
        for w in h.warnings.iter().filter(|w| !warned_before.contains(w)) {
            tracing::warn!(%cluster, %kind, warning = %w, "replication stream address");
        }
        if h.warnings.is_empty() && !warned_before.is_empty() {
            tracing::info!(%cluster, %kind, "replication stream address reaches its primary again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::modes::Modes;
    use crate::vault::stream::{Secondary, StreamReport};
    use crate::vault::view::{Leader, Member, Role};
    use std::time::Duration;

    /// A fresh view of `name` with nodes `<net>.1-3:8200`, the first active.
    fn view(name: &str, net: &str, streams: Streams) -> (String, Arc<ClusterView>) {
        let mut v = ClusterView::empty(name, false);
        v.members = (1..=3)
            .map(|i| Member {
                url: format!("http://{net}.{i}:8200").parse().unwrap(),
                addrs: vec![format!("{net}.{i}").parse().unwrap()],
                port: 8200,
                role: if i == 1 { Role::Active } else { Role::Standby },
                replication: Modes::default(),
                last_confirmed: None,
                error: None,
            })
            .collect();
        v.leader = Some(Leader::literal(
            &format!("http://{net}.1:8200"),
            &format!("https://{net}.1:8201"),
            vec![format!("{net}.1").parse().unwrap()],
            8200,
        ));
        v.streams = Some(Arc::new(StreamReport {
            node: format!("http://{net}.1:8200"),
            streams: Some(streams),
            read_at: Some(SystemTime::now()),
            error: None,
        }));
        (name.to_string(), Arc::new(v))
    }

    fn primary(id: &str, last_wal: u64, secondaries: Vec<Secondary>) -> Stream {
        Stream {
            mode: Mode::Primary,
            cluster_id: id.into(),
            state: "running".into(),
            last_wal: Some(last_wal),
            secondaries,
            ..Stream::default()
        }
    }

    fn secondary(
        id: &str,
        secondary_id: &str,
        state: &str,
        wal: u64,
        dials: &str,
        known: &[&str],
    ) -> Stream {
        Stream {
            mode: Mode::Secondary,
            cluster_id: id.into(),
            state: state.into(),
            connection_state: "ready".into(),
            last_remote_wal: Some(wal),
            primary_cluster_addr: dials.into(),
            known_primary_cluster_addrs: known.iter().map(|s| s.to_string()).collect(),
            secondary_id: secondary_id.into(),
            ..Stream::default()
        }
    }

    fn listed(node_id: &str, heartbeat_ago: u64) -> Secondary {
        Secondary {
            node_id: node_id.into(),
            connection_status: "connected".into(),
            last_heartbeat: Some(SystemTime::now() - Duration::from_secs(heartbeat_ago)),
            ..Secondary::default()
        }
    }

    fn perf(s: Stream) -> Streams {
        Streams {
            perf: s,
            dr: Stream::default(),
        }
    }

    fn targets() -> StreamTargets {
        StreamTargets {
            domain: "consul".into(),
            local_cluster: "west".into(),
            proxies: vec![ProxyTarget {
                listen: "127.0.0.5:8201".parse().unwrap(),
                cluster: "perf-primary".into(),
            }],
        }
    }

    fn judged(views: &[(String, Arc<ClusterView>)], named: &[(Kind, String)]) -> Vec<StreamHealth> {
        judge(views, named, &targets(), SystemTime::now())
    }

    #[test]
    fn a_secondary_streams_from_its_primary_with_its_lag_and_the_primary_lists_it() {
        let views = [
            view(
                "east",
                "10.1.0",
                perf(primary("c1", 230, vec![listed("w", 3)])),
            ),
            view(
                "west",
                "10.2.0",
                perf(secondary(
                    "c1",
                    "w",
                    "stream-wals",
                    223,
                    "https://active.vault.service.east.consul:8201",
                    &["https://10.1.0.1:8201", "https://10.1.0.2:8201"],
                )),
            ),
        ];
        let h = judged(&views, &[(Kind::Perf, "east".into())]);
        assert_eq!(h.len(), 2);
        let (east, west) = (&h[0], &h[1]);
        assert_eq!(east.mode, Mode::Primary);
        assert_eq!(east.streaming, None);
        let s = &east.secondaries[0];
        assert_eq!(s.cluster.as_deref(), Some("west"));
        assert_eq!(s.wal_lag, Some(7));
        assert!((2.5..10.0).contains(&s.heartbeat_age_seconds.unwrap()));
        assert_eq!(west.streaming, Some(true));
        assert_eq!(west.primary.as_deref(), Some("east"));
        assert_eq!(west.wal_lag, Some(7));
        assert!(west.warnings.is_empty(), "{:?}", west.warnings);
        // Idle: not streaming.
        let views = [
            views[0].clone(),
            view(
                "west",
                "10.2.0",
                perf(secondary("c1", "w", "idle", 200, "", &[])),
            ),
        ];
        let h = judged(&views, &[(Kind::Perf, "east".into())]);
        assert_eq!(h[1].streaming, Some(false));
        assert_eq!(h[1].wal_lag, Some(30));
    }

    #[test]
    fn where_the_stream_dials_is_checked_against_what_the_agent_answers() {
        let east = view("east", "10.1.0", perf(primary("c1", 1, vec![])));
        let warnings = |dials: &str, known: &[&str]| {
            let west = view(
                "west",
                "10.2.0",
                perf(secondary("c1", "w", "stream-wals", 1, dials, known)),
            );
            let h = judged(&[east.clone(), west], &[(Kind::Perf, "east".into())]);
            h[1].warnings.clone()
        };
        let node = ["https://10.1.0.2:8201"];
        // Names this agent answers for east: its own datacenter, the label naming it,
        // upper case and a trailing dot; a proxy listener forwarding to the label; one
        // of east's nodes.
        for fine in [
            "https://active.vault.service.east.consul:8201",
            "https://ACTIVE.vault.service.perf-primary.consul.:8201",
            "https://0a010001.addr.east.consul:8201",
            "127.0.0.5:8201",
            "https://10.1.0.3:8201",
        ] {
            assert!(warnings(fine, &node).is_empty(), "{fine}");
        }
        // Not east: west's own names (the local cluster without a label), another
        // port of the proxy's address, a host nobody knows.
        for wrong in [
            "https://active.vault.service.consul:8201",
            "https://active.vault.service.west.consul:8201",
            "127.0.0.5:8202",
            "https://vault-old.example:8201",
        ] {
            let w = warnings(wrong, &node);
            assert_eq!(w.len(), 1, "{wrong}: {w:?}");
            assert!(
                w[0].contains("neither a name this agent answers for east"),
                "{w:?}"
            );
        }
        // Every known primary address gone (nodes replaced): warned, even though the
        // configured address is fine.
        let w = warnings(
            "https://active.vault.service.east.consul:8201",
            &["https://10.1.9.1:8201", "https://10.1.9.2:8201"],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("none of known_primary_cluster_addrs"),
            "{w:?}"
        );
        // One known address still a node: fine.
        let w = warnings("", &["https://10.1.9.1:8201", "https://10.1.0.1:8201"]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn dr_secondaries_find_their_own_dr_primary_by_the_sets_id() {
        let dr = |s: Stream| Streams {
            perf: Stream::default(),
            dr: s,
        };
        let views = [
            view("east", "10.1.0", dr(primary("x", 50, vec![listed("e", 1)]))),
            view("west", "10.2.0", dr(primary("y", 90, vec![]))),
            view(
                "west-dr",
                "10.3.0",
                dr(secondary(
                    "y",
                    "",
                    "stream-wals",
                    80,
                    "https://active.vault.service.west.consul",
                    &[],
                )),
            ),
        ];
        let h = judged(&views, &[(Kind::Dr, "east".into())]);
        let west_dr = h.iter().find(|h| h.cluster == "west-dr").unwrap();
        assert_eq!(west_dr.primary.as_deref(), Some("west"));
        assert_eq!(west_dr.wal_lag, Some(10));
        assert!(west_dr.warnings.is_empty(), "{:?}", west_dr.warnings);
        // The east secondary "e" is none of the set's clusters: shown by its id.
        let east = h.iter().find(|h| h.cluster == "east").unwrap();
        assert_eq!(east.secondaries[0].name(), "e");
    }
}
