//! The parts the supervisor runs, and how each is prepared (may fail, changes nothing)
//! and started (cannot fail): watchers, the replication set, DNS, proxies, the admin
//! endpoint. Each started part is a supervised task (`panic::supervise`) with a stop
//! token of its own.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::admin::{ClusterHandle, Observed};
use crate::config::{ClusterConfig, Config, ProxyConfig, ReplicationConfig};
use crate::dns::forward::Forwarder;
use crate::dns::handler::Handler;
use crate::dns::server::DnsServer;
use crate::dns::zone::Zone;
use crate::net::Proto;
use crate::panic::{supervise, supervise_on, FatalSender};
use crate::proxy::{Proxy, Side};
use crate::systemd;
use crate::vault::feed::Feeds;
use crate::vault::replication::{ReplicationHandle, ReplicationSet};
use crate::vault::stream_health::{ProxyTarget, StreamTargets};
use crate::vault::watcher::Watcher;

pub(super) struct RunningWatcher {
    pub(super) config: ClusterConfig,
    pub(super) handle: ClusterHandle,
    pub(super) stop: CancellationToken,
}

pub(super) struct RunningDns {
    pub(super) stop: CancellationToken,
    /// Finishes once the server has stopped (and been judged, see `panic::supervise`).
    pub(super) done: JoinHandle<()>,
}

/// The parts beside the serving ones (admin endpoint, systemd notifier): stopped last,
/// after the watchers' views are no longer needed.
pub(super) struct SideParts {
    pub(super) stop: CancellationToken,
    pub(super) tasks: TaskTracker,
    pub(super) fatal: FatalSender,
}

pub(super) struct RunningProxy {
    pub(super) config: ProxyConfig,
    /// The cluster side, and the API side when there is one.
    pub(super) sides: Vec<Arc<Proxy>>,
    pub(super) stop: CancellationToken,
}

/// The replication set's task and the virtual clusters it feeds.
pub(super) struct RunningReplication {
    pub(super) config: ReplicationConfig,
    /// What the set judged the streams' addresses against (a reload that changes the
    /// domain or a proxy starts a new set).
    pub(super) targets: StreamTargets,
    pub(super) handle: ReplicationHandle,
    pub(super) stop: CancellationToken,
}

/// A proxy's listeners, bound: the cluster side's group, then the API side's.
pub(super) type BoundProxy = Vec<(Side, Vec<std::net::TcpListener>)>;

pub(super) struct RunningAdmin {
    pub(super) addr: std::net::SocketAddr,
    pub(super) stop: CancellationToken,
}

/// Every address `config` listens on, with what listens there.
pub(super) fn listen_addresses(
    config: &Config,
) -> Vec<(std::net::SocketAddr, Proto, &'static str)> {
    let dns = config
        .dns
        .listen
        .iter()
        .flat_map(|a| [(*a, Proto::Udp, "DNS"), (*a, Proto::Tcp, "DNS")]);
    let admin = config.admin.listen.map(|a| (a, Proto::Tcp, "admin"));
    let proxies = config.proxies.iter().flat_map(|p| {
        std::iter::once((p.listen, Proto::Tcp, "proxy"))
            .chain(p.api_listen.map(|a| (a, Proto::Tcp, "proxy API side")))
    });
    dns.chain(admin).chain(proxies).collect()
}

/// Refuses to share an address with another process (a second agent of the same user
/// would bind beside us through SO_REUSEPORT, and the two would split the traffic).
/// Addresses the running generation (`held`) already listens on are ours to rebind.
pub(super) fn claim_addresses(config: &Config, held: Option<&Config>) -> anyhow::Result<()> {
    let ours = held.map(listen_addresses).unwrap_or_default();
    for (addr, proto, what) in listen_addresses(config) {
        if addr.port() == 0 || ours.iter().any(|(a, p, _)| *a == addr && *p == proto) {
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
    /// Starts polling on the polling thread (`poller`, see `app::poller`).
    pub(super) fn start(
        self,
        poller: &tokio::runtime::Handle,
        tasks: &TaskTracker,
        fatal: &FatalSender,
    ) -> RunningWatcher {
        let stop = CancellationToken::new();
        let run = self.watcher.run(stop.clone());
        supervise_on(
            poller,
            tasks,
            format!("watcher of cluster {}", self.config.name),
            stop.clone(),
            fatal.clone(),
            async move {
                run.await;
                Ok(())
            },
        );
        RunningWatcher {
            config: self.config,
            handle: self.handle,
            stop,
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
    let sides = std::iter::once((Side::Cluster, config.listen))
        .chain(config.api_listen.map(|a| (Side::Api, a)));
    sides
        .map(|(side, addr)| {
            crate::net::bind_tcp_group(addr, crate::net::threads_per_address())
                .map(|group| (side, group))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot bind proxy {} listener on {addr}: {e}",
                        side.as_str()
                    )
                })
        })
        .collect()
}

/// The set's task, built (its first decisions made) but not yet running.
pub(super) fn prepare_replication(
    config: &ReplicationConfig,
    agent: &Config,
    feeds: &Feeds,
) -> (RunningReplication, ReplicationSet) {
    let targets = stream_targets(agent);
    let warm_up = agent.admin.ready_timeout;
    let set = ReplicationSet::new(&config.clusters, feeds, warm_up, targets.clone());
    let handle = set.handle();
    (
        RunningReplication {
            config: config.clone(),
            targets,
            handle,
            stop: CancellationToken::new(),
        },
        set,
    )
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
        datacenter: config.datacenter.clone(),
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

/// The virtual clusters' feeds, beside the real ones: DNS and proxies look them up by
/// their labels like any cluster.
pub(super) fn add_virtual_feeds(feeds: &mut Feeds, handle: &ReplicationHandle) {
    handle.add_to(feeds);
}

pub(super) fn start_replication(
    running: RunningReplication,
    set: ReplicationSet,
    tasks: &TaskTracker,
    fatal: &FatalSender,
) -> RunningReplication {
    let run = set.run(running.stop.clone());
    supervise(
        tasks,
        "replication set".into(),
        running.stop.clone(),
        fatal.clone(),
        async move {
            run.await;
            Ok(())
        },
    );
    running
}

/// Starts a proxy on a bound listener. When its `stop` is cancelled (reload or stop) it
/// stops accepting; its connections stay until they end, or until `close_all` (the
/// agent's drain deadline).
pub(super) fn start_proxy(
    config: &ProxyConfig,
    bound: BoundProxy,
    feeds: &Feeds,
    close_all: &CancellationToken,
    tasks: &TaskTracker,
    fatal: &FatalSender,
) -> RunningProxy {
    let stop = CancellationToken::new();
    let mut sides = Vec::new();
    for (side, listeners) in bound {
        let proxy = Arc::new(Proxy::on_side(
            config.clone(),
            side,
            feeds[&config.cluster].clone(),
        ));
        supervise(
            tasks,
            match side {
                Side::Cluster => format!("proxy on {}", proxy.listen()),
                Side::Api => format!("proxy API side on {}", proxy.listen()),
            },
            stop.clone(),
            fatal.clone(),
            proxy
                .clone()
                .run(listeners, stop.clone(), close_all.clone()),
        );
        sides.push(proxy);
    }
    RunningProxy {
        config: config.clone(),
        sides,
        stop,
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

pub(super) fn start_dns(server: DnsServer, tasks: &TaskTracker, fatal: &FatalSender) -> RunningDns {
    let stop = CancellationToken::new();
    let done = supervise(
        tasks,
        "DNS server".into(),
        stop.clone(),
        fatal.clone(),
        server.run(stop.clone()),
    );
    RunningDns { stop, done }
}

/// Waits for a supervised part's judge (`panic::supervise`), which itself never panics.
pub(super) async fn wait_done(done: JoinHandle<()>, part: &str) {
    if let Err(e) = done.await {
        error!(%part, error = %e, "its supervisor ended abnormally");
    }
}

/// What a reload does to the proxies.
pub(super) struct ProxyPlan {
    /// For each running proxy, in order: kept as it is, or retired.
    pub(super) fate: Vec<Fate>,
    /// The new or changed proxies, their listeners bound.
    pub(super) new_listeners: Vec<(crate::config::ProxyConfig, BoundProxy)>,
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
    side: &SideParts,
) -> RunningAdmin {
    let stop = side.stop.child_token();
    let run = crate::admin::run(listener, observed.clone(), prometheus, stop.clone());
    supervise(
        &side.tasks,
        format!("admin endpoint on {addr}"),
        stop.clone(),
        side.fatal.clone(),
        async move {
            run.await;
            Ok(())
        },
    );
    RunningAdmin { addr, stop }
}

/// The parts beside the serving ones: the systemd notifier and the metrics upkeep
/// (the admin endpoint joins them when bound).
pub(super) fn start_side_parts(
    observed: &Arc<Observed>,
    prometheus: Option<PrometheusHandle>,
    fatal: &FatalSender,
) -> SideParts {
    let side = SideParts {
        stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
        fatal: fatal.clone(),
    };
    if let Some(handle) = prometheus {
        let upkeep = crate::telemetry::upkeep(handle, side.stop.clone());
        let (stop, fatal) = (side.stop.clone(), fatal.clone());
        supervise(
            &side.tasks,
            "metrics upkeep".into(),
            stop,
            fatal,
            async move {
                upkeep.await;
                Ok(())
            },
        );
    }
    let notifier = systemd::run(observed.clone(), side.stop.clone());
    let (stop, fatal) = (side.stop.clone(), fatal.clone());
    supervise(
        &side.tasks,
        "systemd notifier".into(),
        stop,
        fatal,
        async move {
            notifier.await;
            Ok(())
        },
    );
    side
}
