//! The supervisor: starts every part from a validated config, reloads it on SIGHUP, and
//! stops it in order.
//!
//! Reload is blue/green inside the process. Watchers whose cluster config did not change
//! keep running; changed ones are replaced by a watcher seeded with the old view, so
//! answers never gap (a replication set is replaced with any of its clusters' watchers).
//! A new DNS server and new proxy listeners are bound on their addresses with
//! SO_REUSEPORT beside the old ones, started, and only then are the old ones retired: the
//! old DNS server stops, old proxy listeners stop accepting while their open connections
//! stay until they end (or their leader changes). Proxy listeners whose config did not
//! change are kept as they are. Kept and retired listeners are pointed at their cluster's
//! current feed before a replaced watcher stops, so open connections keep following the
//! leader. A config that fails validation changes nothing.
//!
//! Stop order: STOPPING=1 and /ready 503 at once; DNS keeps answering for `lameduck`
//! (in-flight queries are answered), then stops; proxies stop accepting and give open
//! connections `drain_timeout`; watchers stop last.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::admin::{ClusterHandle, Observed};
use crate::config::{ClusterConfig, Config, ProxyConfig, ReplicationConfig};
use crate::dns::handler::{Forwarder, Handler};
use crate::dns::server::DnsServer;
use crate::dns::zone::Zone;
use crate::net::Proto;
use crate::panic::{supervise, FatalSender};
use crate::proxy::{Proxy, Side};
use crate::systemd;
use crate::vault::feed::ClusterFeed;
use crate::vault::replication::{ReplicationHandle, ReplicationSet};
use crate::vault::watcher::Watcher;

/// Effectively "until the connection ends": how long a retired listener's connections
/// may stay after a reload.
const RETIRED_DRAIN: Duration = Duration::from_secs(365 * 24 * 3600);

struct RunningWatcher {
    config: ClusterConfig,
    handle: ClusterHandle,
    stop: CancellationToken,
}

struct RunningDns {
    stop: CancellationToken,
    /// Finishes once the server has stopped (and been judged, see `panic::supervise`).
    done: JoinHandle<()>,
}

/// The parts beside the serving ones (admin endpoint, systemd notifier): stopped last,
/// after the watchers' views are no longer needed.
struct SideParts {
    stop: CancellationToken,
    tasks: TaskTracker,
    fatal: FatalSender,
}

struct RunningProxy {
    config: ProxyConfig,
    /// The cluster side, and the API side when there is one.
    sides: Vec<Arc<Proxy>>,
    stop: CancellationToken,
}

/// The replication set's task and the virtual clusters it feeds.
struct RunningReplication {
    config: ReplicationConfig,
    handle: ReplicationHandle,
    stop: CancellationToken,
}

/// A proxy's listeners, bound: the cluster side's group, then the API side's.
type BoundProxy = Vec<(Side, Vec<std::net::TcpListener>)>;

struct RunningAdmin {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
}

/// A running agent.
pub struct Supervisor {
    config: Config,
    watchers: HashMap<String, RunningWatcher>,
    replication: Option<RunningReplication>,
    dns: RunningDns,
    proxies: Vec<RunningProxy>,
    admin: Option<RunningAdmin>,
    observed: Arc<Observed>,
    prometheus: Option<PrometheusHandle>,
    /// Watcher and proxy tasks, including retired ones still draining.
    tasks: TaskTracker,
    watcher_tasks: TaskTracker,
    /// Cancelled at the end of the drain: closes what retired listeners still hold.
    close_all: CancellationToken,
    side: SideParts,
    /// A long-lived part that panics or stops on its own reports here: that is fatal
    /// (see `panic`).
    fatal_tx: FatalSender,
}

impl Supervisor {
    /// Binds every listener and starts every task. Fails before serving anything if an
    /// address cannot be bound or a CA file cannot be used.
    pub async fn start(
        config: Config,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<anyhow::Error>)> {
        let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
        let observed = Arc::new(Observed {
            datacenter: config.datacenter.clone().into(),
            clusters: Default::default(),
            proxies: Default::default(),
            replication: Default::default(),
            started: Instant::now(),
            ready_timeout: config.admin.ready_timeout,
            stopping: Default::default(),
        });
        let tasks = TaskTracker::new();
        let watcher_tasks = TaskTracker::new();
        let close_all = CancellationToken::new();

        claim_addresses(&config, None)?;
        let mut prepared = Vec::new();
        for c in &config.clusters {
            prepared.push(prepare_watcher(c, None)?);
        }
        let mut views: HashMap<String, ClusterFeed> = prepared
            .iter()
            .map(|p| (p.config.name.clone(), p.handle.feed.clone()))
            .collect();
        let replication = config
            .replication
            .as_ref()
            .map(|r| prepare_replication(r, &views, config.admin.ready_timeout));
        if let Some((r, _)) = &replication {
            add_virtual_feeds(&mut views, &r.handle);
        }
        let mut listeners = Vec::new();
        for p in &config.proxies {
            listeners.push((p.clone(), bind_proxy(p)?));
        }
        let dns_server = bind_dns(&config, &views).await?;
        let watchers: HashMap<String, RunningWatcher> = prepared
            .into_iter()
            .map(|p| (p.config.name.clone(), p.start(&watcher_tasks, &fatal_tx)))
            .collect();
        let replication =
            replication.map(|(r, set)| start_replication(r, set, &watcher_tasks, &fatal_tx));
        let proxies = listeners
            .into_iter()
            .map(|(p, l)| start_proxy(&p, l, &views, &close_all, &tasks, &fatal_tx))
            .collect::<Vec<_>>();
        let dns = start_dns(dns_server, &tasks, &fatal_tx);
        let side = SideParts {
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            fatal: fatal_tx.clone(),
        };
        let admin = match config.admin.listen {
            Some(addr) => {
                let (addr, listener) = bind_admin(addr)?;
                Some(start_admin(
                    addr,
                    listener,
                    &observed,
                    prometheus.clone(),
                    &side,
                ))
            }
            None => None,
        };
        observed.replace(
            &config.datacenter,
            in_config_order(&config, &watchers),
            proxies.iter().flat_map(|p| p.sides.clone()).collect(),
            replication.as_ref().map(|r| r.handle.clone()),
        );
        if let Some(handle) = prometheus.clone() {
            let upkeep = crate::telemetry::upkeep(handle, side.stop.clone());
            supervise(
                &side.tasks,
                "metrics upkeep".into(),
                side.stop.clone(),
                fatal_tx.clone(),
                async move {
                    upkeep.await;
                    Ok(())
                },
            );
        }
        let notifier = systemd::run(observed.clone(), side.stop.clone());
        supervise(
            &side.tasks,
            "systemd notifier".into(),
            side.stop.clone(),
            fatal_tx.clone(),
            async move {
                notifier.await;
                Ok(())
            },
        );
        info!(
            clusters = config.clusters.len(),
            proxies = config.proxies.len(),
            admin = ?config.admin.listen,
            "vault-locator started"
        );
        Ok((
            Self {
                config,
                watchers,
                replication,
                dns,
                proxies,
                admin,
                observed,
                prometheus,
                tasks,
                watcher_tasks,
                close_all,
                side,
                fatal_tx,
            },
            fatal_rx,
        ))
    }

    /// Applies a new, already validated config (see the module docs). Everything that
    /// can fail (watcher clients, binding listeners) happens before anything is swapped,
    /// so an error leaves the running generation untouched.
    pub async fn reload(&mut self, new: Config) -> anyhow::Result<()> {
        // 1. Prepare: watchers (not yet running), listeners (bound, not yet serving).
        claim_addresses(&new, Some(&self.config))?;
        let mut kept: Vec<String> = Vec::new();
        let mut prepared: Vec<PreparedWatcher> = Vec::new();
        for c in &new.clusters {
            match self.watchers.get(&c.name) {
                Some(old) if old.config == *c => kept.push(c.name.clone()),
                Some(old) => {
                    let seed = old.handle.feed.latest();
                    prepared.push(prepare_watcher(c, Some(seed))?);
                }
                None => prepared.push(prepare_watcher(c, None)?),
            }
        }
        let mut views: HashMap<String, ClusterFeed> = kept
            .iter()
            .map(|n| (n.clone(), self.watchers[n].handle.feed.clone()))
            .chain(
                prepared
                    .iter()
                    .map(|p| (p.config.name.clone(), p.handle.feed.clone())),
            )
            .collect();
        // The set keeps running when neither it nor any of its clusters' watchers
        // changed; otherwise a new one reads the new feeds (and decides at once, from
        // their seeded views).
        let keep_replication = match (&self.replication, &new.replication) {
            (Some(old), Some(r)) => old.config == *r && r.clusters.iter().all(|c| kept.contains(c)),
            _ => false,
        };
        let new_replication = match &new.replication {
            Some(r) if !keep_replication => {
                Some(prepare_replication(r, &views, new.admin.ready_timeout))
            }
            _ => None,
        };
        match (&new_replication, &self.replication) {
            (Some((r, _)), _) => add_virtual_feeds(&mut views, &r.handle),
            (None, Some(old)) if keep_replication => add_virtual_feeds(&mut views, &old.handle),
            _ => {}
        }
        // A proxy whose config did not change is kept; if its cluster's feed was
        // replaced, it follows the new one (see the commit below).
        let mut keep_proxy = vec![false; self.proxies.len()];
        let mut new_listeners = Vec::new();
        for p in &new.proxies {
            let reusable = self
                .proxies
                .iter()
                .enumerate()
                .position(|(i, o)| !keep_proxy[i] && o.config == *p);
            match reusable {
                Some(i) => keep_proxy[i] = true,
                None => new_listeners.push((p.clone(), bind_proxy(p)?)),
            }
        }
        let dns_server = bind_dns(&new, &views).await?;
        // A new admin address is bound now, so that a reload that cannot bind it
        // changes nothing (the old endpoint keeps serving).
        let new_admin = if self.admin.as_ref().map(|a| a.addr) != new.admin.listen {
            Some(new.admin.listen.map(bind_admin).transpose()?)
        } else {
            None
        };

        // 2. Commit: start the new parts, then retire the old.
        let mut watchers = HashMap::new();
        for name in &kept {
            let w = self.watchers.remove(name).expect("kept watcher exists");
            watchers.insert(name.clone(), w);
        }
        let retired_watchers: Vec<RunningWatcher> = self.watchers.drain().map(|(_, w)| w).collect();
        for p in prepared {
            watchers.insert(
                p.config.name.clone(),
                p.start(&self.watcher_tasks, &self.fatal_tx),
            );
        }
        let retired_replication = if keep_replication {
            None
        } else {
            let started = new_replication
                .map(|(r, set)| start_replication(r, set, &self.watcher_tasks, &self.fatal_tx));
            std::mem::replace(&mut self.replication, started)
        };
        let mut proxies = Vec::new();
        let mut retired_proxies = Vec::new();
        for (keep, old) in keep_proxy
            .into_iter()
            .zip(std::mem::take(&mut self.proxies))
        {
            if keep {
                proxies.push(old);
            } else {
                retired_proxies.push(old);
            }
        }
        for (config, listener) in new_listeners {
            proxies.push(start_proxy(
                &config,
                listener,
                &views,
                &self.close_all,
                &self.tasks,
                &self.fatal_tx,
            ));
        }
        // Kept and retired listeners follow their cluster's current feed before the
        // replaced watchers stop: their open connections switch to it when the old one
        // closes, so they keep following the leader (and the primary).
        for p in proxies.iter().chain(&retired_proxies) {
            if let Some(feed) = views.get(&p.config.cluster) {
                for side in &p.sides {
                    side.follow(feed.clone());
                }
            }
        }
        let old_dns = std::mem::replace(
            &mut self.dns,
            start_dns(dns_server, &self.tasks, &self.fatal_tx),
        );
        old_dns.stop.cancel();
        wait_done(old_dns.done, "retired DNS server").await;
        for p in retired_proxies {
            p.stop.cancel();
        }
        for w in retired_watchers {
            w.stop.cancel();
        }
        if let Some(r) = retired_replication {
            r.stop.cancel();
        }
        self.watchers = watchers;
        self.proxies = proxies;

        // Admin: rebound only if its address changed; the new one was bound in step 1.
        if let Some(listener) = new_admin {
            if let Some(old) = self.admin.take() {
                old.stop.cancel();
            }
            self.admin = listener.map(|(addr, l)| {
                start_admin(addr, l, &self.observed, self.prometheus.clone(), &self.side)
            });
        }
        self.observed.replace(
            &new.datacenter,
            in_config_order(&new, &self.watchers),
            self.proxies.iter().flat_map(|p| p.sides.clone()).collect(),
            self.replication.as_ref().map(|r| r.handle.clone()),
        );
        self.config = new;
        Ok(())
    }

    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// Stops in order (see the module docs).
    pub async fn shutdown(self) {
        systemd::stopping();
        self.observed
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(self.config.dns.lameduck).await;
        self.dns.stop.cancel();
        wait_done(self.dns.done, "DNS server").await;
        for p in &self.proxies {
            p.stop.cancel();
        }
        // Retired listeners' connections get the same drain deadline as current ones.
        let close_all = self.close_all.clone();
        let drain = self.config.drain_timeout;
        let closer = tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            close_all.cancel();
        });
        self.tasks.close();
        self.tasks.wait().await;
        closer.abort();
        self.side.stop.cancel();
        for w in self.watchers.values() {
            w.stop.cancel();
        }
        if let Some(r) = &self.replication {
            r.stop.cancel();
        }
        self.watcher_tasks.close();
        self.watcher_tasks.wait().await;
        self.side.tasks.close();
        self.side.tasks.wait().await;
        info!("stopped");
    }
}

/// The watchers' handles in the config's order (what `/status` and `status` list).
fn in_config_order(
    config: &Config,
    watchers: &HashMap<String, RunningWatcher>,
) -> Vec<ClusterHandle> {
    config
        .clusters
        .iter()
        .filter_map(|c| watchers.get(&c.name).map(|w| w.handle.clone()))
        .collect()
}

/// Every address `config` listens on, with what listens there.
fn listen_addresses(config: &Config) -> Vec<(std::net::SocketAddr, Proto, &'static str)> {
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
fn claim_addresses(config: &Config, held: Option<&Config>) -> anyhow::Result<()> {
    let ours = held.map(listen_addresses).unwrap_or_default();
    for (addr, proto, what) in listen_addresses(config) {
        if addr.port() == 0 || ours.iter().any(|(a, p, _)| *a == addr && *p == proto) {
            continue;
        }
        crate::net::ensure_free(addr, proto)
            .map_err(|e| anyhow::anyhow!("cannot bind {what} listener on {addr}: {e}"))?;
    }
    Ok(())
}

/// A watcher built (its HTTP client and channel exist) but not yet polling.
struct PreparedWatcher {
    config: ClusterConfig,
    watcher: Watcher,
    handle: ClusterHandle,
}

impl PreparedWatcher {
    fn start(self, tasks: &TaskTracker, fatal: &FatalSender) -> RunningWatcher {
        let stop = CancellationToken::new();
        let run = self.watcher.run(stop.clone());
        supervise(
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

fn prepare_watcher(
    config: &ClusterConfig,
    seed: Option<Arc<crate::vault::view::ClusterView>>,
) -> anyhow::Result<PreparedWatcher> {
    let (watcher, feed) = Watcher::new(config.clone(), seed)?;
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

fn bind_proxy(config: &ProxyConfig) -> anyhow::Result<BoundProxy> {
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
fn prepare_replication(
    config: &ReplicationConfig,
    views: &HashMap<String, ClusterFeed>,
    warm_up: Duration,
) -> (RunningReplication, ReplicationSet) {
    let feeds = config
        .clusters
        .iter()
        .map(|c| (c.clone(), views[c].clone()))
        .collect();
    let (set, handle) = ReplicationSet::new(feeds, warm_up);
    (
        RunningReplication {
            config: config.clone(),
            handle,
            stop: CancellationToken::new(),
        },
        set,
    )
}

/// The virtual clusters' feeds, beside the real ones: DNS and proxies look them up by
/// their labels like any cluster.
fn add_virtual_feeds(views: &mut HashMap<String, ClusterFeed>, handle: &ReplicationHandle) {
    for (kind, feed) in &handle.feeds {
        views.insert(kind.label().to_string(), feed.clone());
    }
}

fn start_replication(
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
fn start_proxy(
    config: &ProxyConfig,
    bound: BoundProxy,
    views: &HashMap<String, ClusterFeed>,
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
            views[&config.cluster].clone(),
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
                .run(listeners, stop.clone(), RETIRED_DRAIN, close_all.clone()),
        );
        sides.push(proxy);
    }
    RunningProxy {
        config: config.clone(),
        sides,
        stop,
    }
}

async fn bind_dns(
    config: &Config,
    views: &HashMap<String, ClusterFeed>,
) -> anyhow::Result<DnsServer> {
    let zone = Arc::new(Zone::new(&config.zone(), views.clone()));
    let forwarder = if config.dns.upstreams.is_empty() {
        None
    } else {
        Some(Forwarder::new(
            &config.dns.upstreams,
            config.dns.upstream_timeout,
        )?)
    };
    Ok(DnsServer::bind(
        &config.dns.listen,
        Handler::new(zone, forwarder),
        config.dns.tcp_idle_timeout,
    )
    .await?)
}

fn start_dns(server: DnsServer, tasks: &TaskTracker, fatal: &FatalSender) -> RunningDns {
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
async fn wait_done(done: JoinHandle<()>, part: &str) {
    if let Err(e) = done.await {
        error!(%part, error = %e, "its supervisor ended abnormally");
    }
}

fn bind_admin(
    addr: std::net::SocketAddr,
) -> anyhow::Result<(std::net::SocketAddr, tokio::net::TcpListener)> {
    let listener = crate::net::bind_tcp(addr)
        .map_err(|e| anyhow::anyhow!("cannot bind admin listener on {addr}: {e}"))?;
    Ok((addr, listener))
}

fn start_admin(
    addr: std::net::SocketAddr,
    listener: tokio::net::TcpListener,
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
