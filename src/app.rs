//! Wiring: one watcher task per cluster, the DNS server and proxies reading their views,
//! the admin endpoint and systemd notifications, and an orderly stop.
//!
//! Stop order on shutdown: STOPPING=1; the DNS server stops accepting and answers what it
//! has in flight; proxies stop accepting and give open connections `drain_timeout`;
//! watchers stop last, so draining connections still see leader changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::admin::{ClusterHandle, Observed};
use crate::config::Config;
use crate::dns::handler::{Forwarder, Handler};
use crate::dns::server::DnsServer;
use crate::dns::zone::{ClusterSource, Zone};
use crate::proxy::forward::Proxy;
use crate::systemd::{self, Heartbeat};
use crate::vault::watcher::Watcher;

/// Everything bound and ready to serve; [`App::run`] starts the work.
pub struct App {
    dns: DnsServer,
    watchers: Vec<Watcher>,
    proxies: Vec<(Arc<Proxy>, TcpListener)>,
    admin: Option<TcpListener>,
    observed: Arc<Observed>,
    heartbeats: Vec<Heartbeat>,
    drain_timeout: Duration,
    lameduck: Duration,
}

impl App {
    /// Builds every part and binds every listener. Fails before anything runs, so a bad
    /// address or CA file never leaves a half-started agent.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut watchers = Vec::new();
        let mut sources = HashMap::new();
        let mut handles = Vec::new();
        for cluster in &config.clusters {
            let (watcher, views) = Watcher::new(cluster.clone())?;
            handles.push(ClusterHandle {
                name: cluster.name.clone(),
                views: views.clone(),
                serve_stale_for: cluster.serve_stale_for,
            });
            sources.insert(
                cluster.name.clone(),
                ClusterSource {
                    views,
                    serve_stale_for: cluster.serve_stale_for,
                },
            );
            watchers.push(watcher);
        }
        let mut proxies = Vec::new();
        for p in &config.proxies {
            let source = &sources[&p.cluster];
            let listener = bind_tcp("proxy", p.listen).await?;
            let proxy = Proxy::new(p.clone(), source.views.clone(), source.serve_stale_for);
            proxies.push((Arc::new(proxy), listener));
        }
        let admin = match config.admin.listen {
            Some(addr) => Some(bind_tcp("admin", addr).await?),
            None => None,
        };
        let zone = Arc::new(Zone::new(config, sources));
        let forwarder = if config.dns.upstreams.is_empty() {
            None
        } else {
            Some(Forwarder::new(
                &config.dns.upstreams,
                config.dns.upstream_timeout,
            )?)
        };
        let dns = DnsServer::bind(
            &config.dns.listen,
            Handler::new(zone, forwarder),
            config.dns.tcp_idle_timeout,
        )
        .await?;
        let observed = Arc::new(Observed {
            clusters: handles,
            proxies: proxies.iter().map(|(p, _)| p.clone()).collect(),
            started,
            ready_timeout: config.admin.ready_timeout,
            stopping: Default::default(),
        });
        let heartbeats = watchers.iter().map(Watcher::heartbeat).collect();
        Ok(Self {
            dns,
            watchers,
            proxies,
            admin,
            observed,
            heartbeats,
            drain_timeout: config.drain_timeout,
            lameduck: config.dns.lameduck,
        })
    }

    pub fn dns_addrs(&self) -> &[SocketAddr] {
        self.dns.local_addrs()
    }

    /// Runs until `shutdown` is cancelled, then stops in order (see the module docs).
    pub async fn run(
        self,
        prometheus: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let watchers_stop = CancellationToken::new();
        let watchers = TaskTracker::new();
        for watcher in self.watchers {
            watchers.spawn(watcher.run(watchers_stop.clone()));
        }
        watchers.close();

        let accepting = TaskTracker::new();
        let proxies_stop = CancellationToken::new();
        for (proxy, listener) in self.proxies {
            accepting.spawn(proxy.run(listener, proxies_stop.clone(), self.drain_timeout));
        }
        let side_stop = CancellationToken::new();
        if let Some(listener) = self.admin {
            accepting.spawn(crate::admin::run(
                listener,
                self.observed.clone(),
                prometheus,
                side_stop.clone(),
            ));
        }
        accepting.spawn(systemd::run(
            self.observed.clone(),
            self.heartbeats,
            side_stop.clone(),
        ));
        accepting.close();

        // Lame duck: on shutdown, say STOPPING=1 and turn /ready to 503 at once, but keep
        // answering DNS for `lameduck` so queries in flight (and clients still switching
        // away) get their answers; hickory drops unfinished requests when it stops.
        let dns_stop = CancellationToken::new();
        let lame = {
            let (shutdown, dns_stop, observed) =
                (shutdown.clone(), dns_stop.clone(), self.observed.clone());
            let lameduck = self.lameduck;
            tokio::spawn(async move {
                shutdown.cancelled().await;
                systemd::stopping();
                observed
                    .stopping
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(lameduck).await;
                dns_stop.cancel();
            })
        };
        let result = self.dns.run(dns_stop).await;
        lame.abort();
        // Whether asked to stop or the DNS server failed: stop everything, in order.
        systemd::stopping();
        proxies_stop.cancel();
        side_stop.cancel();
        accepting.wait().await;
        watchers_stop.cancel();
        watchers.wait().await;
        info!("stopped");
        result
    }
}

async fn bind_tcp(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind {what} listener on {addr}: {e}"))
}
