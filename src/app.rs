//! Wiring: one watcher task per cluster, the DNS server reading their views, and an
//! orderly stop when `shutdown` is cancelled.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Config;
use crate::dns::handler::{Forwarder, Handler};
use crate::dns::server::DnsServer;
use crate::dns::zone::{ClusterSource, Zone};
use crate::proxy::forward::Proxy;
use crate::vault::watcher::Watcher;

/// Everything bound and ready to serve; [`App::run`] starts the work.
pub struct App {
    dns: DnsServer,
    watchers: Vec<Watcher>,
    proxies: Vec<(Arc<Proxy>, tokio::net::TcpListener)>,
}

impl App {
    /// Builds every part and binds every listener. Fails before anything runs, so a bad
    /// address or CA file never leaves a half-started agent.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let mut watchers = Vec::new();
        let mut sources = HashMap::new();
        for cluster in &config.clusters {
            let (watcher, views) = Watcher::new(cluster.clone())?;
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
            let listener = tokio::net::TcpListener::bind(p.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind proxy listener on {}: {e}", p.listen))?;
            let proxy = Proxy::new(p.clone(), source.views.clone(), source.serve_stale_for);
            proxies.push((Arc::new(proxy), listener));
        }
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
        Ok(Self {
            dns,
            watchers,
            proxies,
        })
    }

    pub fn dns_addrs(&self) -> &[std::net::SocketAddr] {
        self.dns.local_addrs()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        for watcher in self.watchers {
            tracker.spawn(watcher.run(shutdown.child_token()));
        }
        for (proxy, listener) in self.proxies {
            tracker.spawn(proxy.run(listener, shutdown.child_token()));
        }
        tracker.close();
        let result = self.dns.run(shutdown.clone()).await;
        // The DNS server stopping on its own is fatal: stop the watchers too.
        shutdown.cancel();
        tracker.wait().await;
        info!("stopped");
        result
    }
}
