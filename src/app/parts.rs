//! The parts the supervisor runs, and how each is prepared (may fail, changes nothing)
//! and started (cannot fail): watchers, the replication set, DNS, proxies, the admin
//! endpoint and the reporting parts. Each started part is a [`Part`], started by a
//! [`Spawner`] (see `part.rs`).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{ClusterHandle, Observed};
use crate::config::{ClusterConfig, Config, ProxyConfig, ReplicationConfig};
use crate::dns::forward::Forwarder;
use crate::dns::handler::Handler;
use crate::dns::server::DnsServer;
use crate::dns::zone::Zone;
use crate::net::Proto;
use crate::proxy::{ProxySide, Side};
use crate::systemd;
use crate::vault::feed::Feeds;
use crate::vault::replication::{ReplicationHandle, ReplicationSet};
use crate::vault::stream_health::{ProxyTarget, StreamTargets};
use crate::vault::watcher::Watcher;

use super::part::{Part, Spawner};

pub(super) struct RunningWatcher {
    pub(super) config: ClusterConfig,
    pub(super) handle: ClusterHandle,
    pub(super) part: Part,
}

/// The reporting parts (the admin endpoint, the systemd notifier, the metrics upkeep):
/// stopped last, after the watchers' views are no longer needed.
pub(super) struct ReportingParts {
    pub(super) stop: CancellationToken,
    pub(super) spawner: Spawner,
}

pub(super) struct RunningProxy {
    pub(super) config: ProxyConfig,
    /// The cluster side, and the API side when there is one.
    pub(super) sides: Vec<Arc<ProxySide>>,
    /// One part per side, stopped together.
    pub(super) parts: Vec<Part>,
}

impl RunningProxy {
    pub(super) fn stop(&self) {
        self.parts.iter().for_each(Part::stop);
    }
}

/// The replication set, built (its first decisions made) but not yet running.
pub(super) struct PreparedReplication {
    pub(super) config: ReplicationConfig,
    pub(super) targets: StreamTargets,
    pub(super) handle: ReplicationHandle,
    set: ReplicationSet,
}

/// The replication set's task and the virtual clusters it feeds.
pub(super) struct RunningReplication {
    pub(super) config: ReplicationConfig,
    /// What the set judged the streams' addresses against (a reload that changes the
    /// domain or a proxy starts a new set).
    pub(super) targets: StreamTargets,
    pub(super) handle: ReplicationHandle,
    pub(super) part: Part,
}

/// A proxy's listeners, bound: the cluster side's group, then the API side's.
pub(super) struct BoundProxy {
    pub(super) config: ProxyConfig,
    sides: Vec<BoundSide>,
}

struct BoundSide {
    side: Side,
    listeners: Vec<std::net::TcpListener>,
}

pub(super) struct RunningAdmin {
    pub(super) addr: std::net::SocketAddr,
    pub(super) part: Part,
}

/// An address a config listens on, with what listens there.
pub(super) struct Listening {
    addr: std::net::SocketAddr,
    proto: Proto,
    what: &'static str,
}

/// Every address `config` listens on.
pub(super) fn listen_addresses(config: &Config) -> Vec<Listening> {
    let on = |addr, proto, what| Listening { addr, proto, what };
    let dns = config
        .dns
        .listen
        .iter()
        .flat_map(|a| [on(*a, Proto::Udp, "DNS"), on(*a, Proto::Tcp, "DNS")]);
    let admin = config.admin.listen.map(|a| on(a, Proto::Tcp, "admin"));
    let proxies = config.proxies.iter().flat_map(|p| {
        std::iter::once(on(p.listen, Proto::Tcp, "proxy"))
            .chain(p.api_listen.map(|a| on(a, Proto::Tcp, "proxy API side")))
    });
    dns.chain(admin).chain(proxies).collect()
}

/// Refuses to share an address with another process (a second agent of the same user
/// would bind beside us through SO_REUSEPORT, and the two would split the traffic).
/// Addresses the running generation (`held`) already listens on are ours to rebind.
pub(super) fn claim_addresses(config: &Config, held: Option<&Config>) -> anyhow::Result<()> {
    let ours = held.map(listen_addresses).unwrap_or_default();
    for Listening { addr, proto, what } in listen_addresses(config) {
        if addr.port() == 0 || ours.iter().any(|l| l.addr == addr && l.proto == proto) {
            continue;
        }
        // Kept for us by systemd across a restart (`fdstore`): ours too.
        let kind = match proto {
            Proto::Udp => crate::fdstore::Kind::DnsUdp,
            Proto::Tcp => crate::fdstore::Kind::DnsTcp,
        };
        if what == "DNS" && crate::fdstore::holds(&crate::fdstore::name(kind, addr)) {
            continue;
        }
        crate::net::ensure_free(addr, proto)
            .map_err(|e| anyhow::anyhow!("cannot bind {what} listener on {addr}: {e}"))?;
    }
    Ok(())
}

/// A watcher built (its HTTP client and channel exist) but not yet polling.
pub(super) struct PreparedWatcher {
    pub(super) config: ClusterConfig,
    pub(super) watcher: Watcher,
    pub(super) handle: ClusterHandle,
}

impl PreparedWatcher {
    /// Starts polling; `spawner` runs it on the polling thread (see `app::poller`).
    pub(super) fn start(self, spawner: &Spawner) -> RunningWatcher {
        let stop = CancellationToken::new();
        let name = format!("watcher of cluster {}", self.config.name);
        let part = spawner.start(name, &stop, self.watcher.run(stop.clone()));
        RunningWatcher {
            config: self.config,
            handle: self.handle,
            part,
        }
    }
}

pub(super) fn prepare_watcher(
    config: &ClusterConfig,
    seed: Option<Arc<crate::vault::view::ClusterView>>,
) -> anyhow::Result<PreparedWatcher> {
    let watcher = Watcher::new(config.clone(), seed)?;
    let feed = watcher.feed();
    let handle = ClusterHandle {
        name: config.name.clone(),
        feed,
        heartbeat: watcher.heartbeat(),
    };
    Ok(PreparedWatcher {
        config: config.clone(),
        watcher,
        handle,
    })
}

pub(super) fn bind_proxy(config: &ProxyConfig) -> anyhow::Result<BoundProxy> {
    let mut sides = vec![(Side::Cluster, config.listen)];
    sides.extend(config.api_listen.map(|a| (Side::Api, a)));
    let sides = sides
        .into_iter()
        .map(|(side, addr)| {
            crate::net::bind_tcp_group(addr, crate::net::threads_per_address())
                .map(|listeners| BoundSide { side, listeners })
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot bind proxy {} listener on {addr}: {e}",
                        side.as_str()
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(BoundProxy {
        config: config.clone(),
        sides,
    })
}

pub(super) fn prepare_replication(
    config: &ReplicationConfig,
    agent: &Config,
    feeds: &Feeds,
) -> PreparedReplication {
    let targets = stream_targets(agent);
    let warm_up = agent.admin.ready_timeout;
    let set = ReplicationSet::new(&config.clusters, feeds, warm_up, targets.clone());
    PreparedReplication {
        config: config.clone(),
        targets,
        handle: set.handle(),
        set,
    }
}

/// Whether a reload keeps the running replication set: neither it, nor what it judges
/// the streams against, nor any of its clusters' watchers (`kept`) changed. Otherwise a
/// new one reads the new feeds (and decides at once, from their seeded views).
pub(super) fn keeps_replication(
    running: Option<&RunningReplication>,
    new: &Config,
    kept: &[String],
) -> bool {
    match (running, &new.replication) {
        (Some(old), Some(r)) => {
            old.config == *r
                && old.targets == stream_targets(new)
                && r.clusters.iter().all(|c| kept.contains(c))
        }
        _ => false,
    }
}

/// What the agent answers, as the replication set judges where streams dial.
pub(super) fn stream_targets(config: &Config) -> StreamTargets {
    StreamTargets {
        domain: config
            .domain
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        local_cluster: config.local_cluster.clone(),
        proxies: config
            .proxies
            .iter()
            .map(|p| ProxyTarget {
                listen: p.listen,
                cluster: p.cluster.clone(),
            })
            .collect(),
    }
}

impl PreparedReplication {
    pub(super) fn start(self, spawner: &Spawner) -> RunningReplication {
        let stop = CancellationToken::new();
        let part = spawner.start("replication set".into(), &stop, self.set.run(stop.clone()));
        RunningReplication {
            config: self.config,
            targets: self.targets,
            handle: self.handle,
            part,
        }
    }
}

/// Starts a proxy on its bound listeners. When it is stopped (reload or stop) it stops
/// accepting; its connections stay until they end, or until `close_all` (the agent's
/// drain deadline).
pub(super) fn start_proxy(
    bound: BoundProxy,
    feeds: &Feeds,
    close_all: &CancellationToken,
    spawner: &Spawner,
) -> RunningProxy {
    let (config, stop) = (bound.config, CancellationToken::new());
    let (mut sides, mut parts) = (Vec::new(), Vec::new());
    for BoundSide { side, listeners } in bound.sides {
        let feed = feeds[&config.cluster].clone();
        let proxy = Arc::new(ProxySide::on_side(config.clone(), side, feed));
        let name = match side {
            Side::Cluster => format!("proxy on {}", proxy.listen()),
            Side::Api => format!("proxy API side on {}", proxy.listen()),
        };
        let run = proxy
            .clone()
            .run(listeners, stop.clone(), close_all.clone());
        parts.push(spawner.start(name, &stop, run));
        sides.push(proxy);
    }
    RunningProxy {
        config,
        sides,
        parts,
    }
}

pub(super) async fn bind_dns(config: &Config, feeds: &Feeds) -> anyhow::Result<DnsServer> {
    let zone = Arc::new(Zone::new(&config.zone(), feeds.clone()));
    let forwarder_to = |servers: &[std::net::SocketAddr]| -> anyhow::Result<Option<Forwarder>> {
        if servers.is_empty() {
            return Ok(None);
        }
        Ok(Some(Forwarder::new(servers, config.dns.upstream_timeout)?))
    };
    let handler = Handler::new(zone, forwarder_to(&config.dns.upstreams)?)
        .zone_fallback(forwarder_to(&config.dns.zone_fallback)?)
        .udp_answer_limit(config.dns.udp_answer_limit);
    let (listen, idle) = (&config.dns.listen, config.dns.tcp_idle_timeout);
    Ok(DnsServer::bind(listen, handler, idle).await?)
}

pub(super) fn start_dns(server: DnsServer, spawner: &Spawner) -> Part {
    let stop = CancellationToken::new();
    spawner.start("DNS server".into(), &stop, server.run(stop.clone()))
}

/// What a reload does to the proxies.
pub(super) struct ProxyPlan {
    /// For each running proxy, in order: kept as it is, or retired.
    pub(super) fate: Vec<Fate>,
    /// The new or changed proxies, their listeners bound.
    pub(super) new_listeners: Vec<BoundProxy>,
}

/// A running proxy's fate in a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Keep,
    Retire,
}
/// What a reload does to the admin endpoint.
pub(super) enum AdminChange {
    /// The address is the same: the running endpoint stays.
    Keep,
    /// A new address, bound in prepare (so a reload that cannot bind it changes nothing).
    Rebind(BoundAdmin),
    /// `admin.listen = ""`: the running endpoint stops.
    Disable,
}

/// The admin endpoint's listener, bound, with its configured address.
pub(super) struct BoundAdmin {
    addr: std::net::SocketAddr,
    listener: tokio::net::TcpListener,
}

pub(super) fn bind_admin(addr: std::net::SocketAddr) -> anyhow::Result<BoundAdmin> {
    let listener = crate::net::bind_tcp(addr)
        .map_err(|e| anyhow::anyhow!("cannot bind admin listener on {addr}: {e}"))?;
    Ok(BoundAdmin { addr, listener })
}

pub(super) fn start_admin(
    BoundAdmin { addr, listener }: BoundAdmin,
    observed: &Arc<Observed>,
    prometheus: Option<PrometheusHandle>,
    reporting: &ReportingParts,
) -> RunningAdmin {
    let stop = reporting.stop.child_token();
    let run = crate::admin::run(listener, observed.clone(), prometheus, stop.clone());
    let part = reporting
        .spawner
        .start(format!("admin endpoint on {addr}"), &stop, run);
    RunningAdmin { addr, part }
}

/// The reporting parts: the systemd notifier and the metrics upkeep (the admin endpoint
/// joins them when bound). They stop together, with `stop`.
pub(super) fn start_reporting_parts(
    observed: &Arc<Observed>,
    prometheus: Option<PrometheusHandle>,
    spawner: Spawner,
) -> ReportingParts {
    let stop = CancellationToken::new();
    if let Some(handle) = prometheus {
        let upkeep = crate::telemetry::upkeep(handle, stop.clone());
        spawner.start("metrics upkeep".into(), &stop, upkeep);
    }
    let notifier = systemd::run(observed.clone(), stop.clone());
    spawner.start("systemd notifier".into(), &stop, notifier);
    ReportingParts { stop, spawner }
}
