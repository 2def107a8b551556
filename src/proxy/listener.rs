//! A proxy listener side: accept, peek the ClientHello, route by ALPN, connect to the active node's
//! `cluster_addr`, replay the ClientHello and copy both ways until either side is done.
//! TLS is never terminated; the proxy holds no keys. A listener's API side (proxy mode's
//! :8200) is the same without the peek: it carries HTTP or TLS to the leader's
//! `api_addr`, and needs no ALPN routing.
//!
//! The target comes from the cluster's `ClusterView` (one source of truth: the proxy
//! never polls Vault). When the view names a different leader, connections to the old
//! one are closed (with `on_leader_change = "close"`), so clients reconnect and land on
//! the new leader; new connections go to the new leader at once. With no leader known,
//! connections are refused at once (RST), never left hanging.
//!
//! This file holds the listener: its threads, the accept loop and the drain. A
//! connection's pipeline (hello -> route -> target -> connect -> pump -> cut-over) is in
//! `connection`, the upstream leg in `connect`, the target lookup in `target`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use socket2::SockRef;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::config::{ProxyConfig, Side};
use super::connect::{reset, tune_socket};
use super::metrics::{OpenConnection, ProxyMetrics};
use super::route::Router;
use super::splice::SplicePools;
use crate::vault::feed::ClusterFeed;

/// Empty pipes and small buffers kept per listener (two per connection in flight are
/// reused).
const PIPE_POOL: usize = 256;

/// One side of a `[[proxy]]` listener: its state, shared by its connections.
pub struct ProxySide {
    pub(super) config: ProxyConfig,
    pub(super) side: Side,
    pub(super) router: Router,
    pub(super) metrics: ProxyMetrics,
    /// The cluster's feed; a reload that replaces the cluster's watcher (or its
    /// replication set) points it at the successor ([`ProxySide::follow`]).
    feed: Mutex<ClusterFeed>,
    permits: Arc<Semaphore>,
    pub(super) pools: SplicePools,
    /// Connections closed on a leader change (also a metric; read by tests).
    pub(super) cut_over: AtomicU64,
}

impl ProxySide {
    /// The cluster side of a `[[proxy]]` listener.
    pub fn new(config: ProxyConfig, feed: ClusterFeed) -> Self {
        Self::on_side(config, Side::Cluster, feed)
    }

    pub fn on_side(config: ProxyConfig, side: Side, feed: ClusterFeed) -> Self {
        let router = Router::new(&config);
        Self {
            metrics: ProxyMetrics::new(&config.cluster, side, router.labels()),
            side,
            router,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            config,
            feed: Mutex::new(feed),
            pools: SplicePools::new(PIPE_POOL),
            cut_over: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    pub fn side(&self) -> Side {
        self.side
    }

    /// From now on, new and open connections follow `feed` (the successor of a watcher
    /// a reload replaced): open ones switch when their old feed closes.
    pub fn follow(&self, feed: ClusterFeed) {
        *self.feed.lock().unwrap_or_else(|p| p.into_inner()) = feed;
    }

    pub(super) fn feed(&self) -> ClusterFeed {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The address this side listens on.
    pub fn listen(&self) -> SocketAddr {
        match self.side {
            Side::Cluster => self.config.listen,
            Side::Api => self.config.api_listen.unwrap_or(self.config.listen),
        }
    }

    /// Connections currently held (reading a ClientHello or forwarding).
    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.permits.available_permits()
    }

    /// Empty pipes held for reuse (two file descriptors each; bounded).
    pub fn pooled_pipes(&self) -> usize {
        self.pools.pipes.pooled()
    }

    /// How many open connections were cut over: closed because the leader moved.
    pub fn cut_overs(&self) -> u64 {
        self.cut_over.load(Ordering::Relaxed)
    }

    /// Serves each listener of the group (`net::bind_tcp_group`) on a thread of its own, with
    /// a single-threaded runtime: accepts until `shutdown` is cancelled; then open
    /// connections stay until they end on their own (or their leader changes), or until
    /// `close` is cancelled. Returns once they are all gone. The supervisor cancels
    /// `close` at the agent's drain deadline; a listener a reload retires keeps its
    /// connections until they end.
    ///
    /// Why threads of their own: a connection is accepted, routed and moved by one
    /// thread from start to end, with no hand-off between workers (HAProxy's and
    /// Envoy's model). On the shared multi-threaded runtime, worker wakeups and parking
    /// cost a tenth of the per-connection CPU, and a replication burst competed with
    /// DNS answers and polling for the same workers.
    pub async fn run(
        self: Arc<Self>,
        listeners: Vec<std::net::TcpListener>,
        shutdown: CancellationToken,
        close: CancellationToken,
    ) -> anyhow::Result<()> {
        // Each worker sends on its channel when it returns; one that panics drops it
        // unsent. Either before `shutdown` means this listener lost a worker: fatal
        // (see `crate::panic`).
        let mut done = futures_util::stream::FuturesUnordered::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (this, shutdown, close) = (self.clone(), shutdown.clone(), close.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("proxy-{i}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(this.serve(i, listener, shutdown, close)),
                        Err(e) => error!(error = %e, "cannot start a proxy worker runtime"),
                    }
                    let _ = tx.send(());
                });
            match spawned {
                Ok(_) => done.push(rx),
                Err(e) => anyhow::bail!("cannot start a proxy worker thread: {e}"),
            }
        }
        while let Some(ended) = futures_util::StreamExt::next(&mut done).await {
            match ended {
                Ok(()) if shutdown.is_cancelled() => {}
                Ok(()) => anyhow::bail!("lost a worker (it stopped on its own)"),
                Err(_) => anyhow::bail!("lost a worker (it panicked)"),
            }
        }
        Ok(())
    }

    /// One worker: the accept loop on one listener of the group, then the drain of its
    /// connections.
    async fn serve(
        self: Arc<Self>,
        worker: usize,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
        close: CancellationToken,
    ) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot register a proxy listener");
                return;
            }
        };
        let tracker = TaskTracker::new();
        let connections = CancellationToken::new();
        // Accepted sockets inherit TCP_NODELAY and the keepalive settings from the
        // listener on Linux: set once here instead of four setsockopt calls per client.
        tune_socket(SockRef::from(&listener));
        if let Err(e) = crate::net::defer_accept(&listener, self.config.client_hello_timeout) {
            warn!(error = %e, "cannot defer accepts until clients speak; serving without");
        }
        let local = listener.local_addr().ok();
        info!(listen = ?local, cluster = %self.config.cluster, side = self.side.as_str(), worker, "proxy listening");
        self.accept_until(&listener, &shutdown, &tracker, &connections)
            .await;
        drop(listener);
        self.drain(&tracker, &close).await;
        connections.cancel();
        tracker.wait().await;
    }

    /// Accepts until `shutdown`, each connection a task on `tracker` that ends early
    /// when `connections` is cancelled.
    async fn accept_until(
        self: &Arc<Self>,
        listener: &TcpListener,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
        connections: &CancellationToken,
    ) {
        // One wait for shutdown for the whole loop: made anew per accept, it registered
        // and unregistered a waiter under a lock for every connection.
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut stop => return,
                a = listener.accept() => a,
            };
            let (sock, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    crate::net::after_accept_error(&e, "proxy").await;
                    continue;
                }
            };
            crate::panic::fault_point("proxy-worker");
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.metrics.connection(None, "over_capacity");
                debug!(%peer, max = self.config.max_connections, "connection cap reached; refusing");
                reset(sock);
                continue;
            };
            let this = self.clone();
            let conn_shutdown = connections.clone();
            tracker.spawn(async move {
                let _open = OpenConnection::count(&this.metrics.active);
                crate::panic::fault_point("proxy-connection");
                if let Err((label, e)) = this.handle(sock, peer, conn_shutdown).await {
                    this.metrics.connection(label, e.kind());
                    debug!(%peer, kind = e.kind(), error = %e, "proxy connection refused");
                }
                drop(permit);
            });
        }
    }

    /// Lets open connections finish, until `close`.
    async fn drain(&self, tracker: &TaskTracker, close: &CancellationToken) {
        tracker.close();
        if tracker.is_empty() {
            return;
        }
        info!(cluster = %self.config.cluster, open = tracker.len(), "proxy draining");
        tokio::select! {
            _ = tracker.wait() => {}
            _ = close.cancelled() => {
                info!(cluster = %self.config.cluster, open = tracker.len(), "drain deadline passed; closing");
            }
        }
    }
}
