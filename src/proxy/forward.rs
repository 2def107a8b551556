//! The proxy: accept, peek the ClientHello, route by ALPN, connect to the active node's
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

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::net::SendFlags;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use url::Url;

use super::config::{DataPath, OnLeaderChange, ProxyConfig, RouteAction};
use super::hello::read_client_hello;
use super::route::{alpn_label, Router};
use super::splice::{splice_bidirectional, SplicePools};
use crate::telemetry;
use crate::vault::feed::ClusterFeed;
use crate::vault::view::{ClusterView, Freshness};

/// Buffer per direction for the copy loop. 64 KiB keeps syscalls per byte low on bulk
/// replication streams without much memory per connection.
const COPY_BUF: usize = 64 * 1024;

/// Empty pipes and small buffers kept per listener (two per connection in flight are
/// reused).
const PIPE_POOL: usize = 256;

/// Keepalive on both legs: a dead peer (host gone, no RST) is noticed in ~1 minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// When the upstream leg gets its keepalive (well before KEEPALIVE_IDLE matters).
const UPSTREAM_KEEPALIVE_AFTER: Duration = Duration::from_secs(5);

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

/// Counters a test or an operator can read.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub forwarded: AtomicU64,
    pub rejected: AtomicU64,
    pub closed_on_leader_change: AtomicU64,
}

/// Metric handles resolved once per listener. A `counter!` with labels hashes its key
/// (and here cloned the cluster name and ALPN string) on every call: several times per
/// connection, a visible share of the per-connection CPU.
struct ProxyMetrics {
    active: metrics::Gauge,
    connect_duration: metrics::Histogram,
    bytes_up: metrics::Counter,
    bytes_down: metrics::Counter,
    /// `proxy_connections_total{result="forwarded"}` by ALPN label index: the one
    /// result every good connection records, so it is not looked up each time.
    forwarded: Vec<metrics::Counter>,
    /// `proxy_connections_total` for the other results, by (ALPN label index or None
    /// for "-", result). Both sets are bounded (route table labels; result kinds).
    connections: Mutex<HashMap<(Option<usize>, &'static str), metrics::Counter>>,
    cluster: String,
    side: &'static str,
    labels: Vec<String>,
}

impl ProxyMetrics {
    fn new(cluster: &str, side: Side, labels: &[String]) -> Self {
        let side = side.as_str();
        Self {
            active: metrics::gauge!(telemetry::PROXY_ACTIVE, "cluster" => cluster.to_string(), "side" => side),
            connect_duration: metrics::histogram!(telemetry::PROXY_CONNECT_DURATION, "cluster" => cluster.to_string(), "side" => side),
            bytes_up: metrics::counter!(telemetry::PROXY_BYTES, "direction" => "client_to_server", "side" => side),
            bytes_down: metrics::counter!(telemetry::PROXY_BYTES, "direction" => "server_to_client", "side" => side),
            forwarded: labels
                .iter()
                .map(|alpn| connections_counter(cluster, side, alpn, "forwarded"))
                .collect(),
            connections: Mutex::default(),
            cluster: cluster.to_string(),
            side,
            labels: labels.to_vec(),
        }
    }

    fn connection(&self, label: Option<usize>, result: &'static str) {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((label, result))
            .or_insert_with(|| {
                let alpn = label.map_or("-", |i| self.labels[i].as_str());
                connections_counter(&self.cluster, self.side, alpn, result)
            })
            .increment(1);
    }
}

/// The `proxy_connections_total` series of one (cluster, side, ALPN label, result).
fn connections_counter(
    cluster: &str,
    side: &'static str,
    alpn: &str,
    result: &'static str,
) -> metrics::Counter {
    metrics::counter!(
        telemetry::PROXY_CONNECTIONS,
        "cluster" => cluster.to_string(),
        "side" => side,
        "alpn" => alpn.to_string(),
        "result" => result
    )
}

/// One side of a `[[proxy]]` listener: its state, shared by its connections.
pub struct Proxy {
    config: ProxyConfig,
    side: Side,
    router: Router,
    metrics: ProxyMetrics,
    /// The cluster's feed; a reload that replaces the cluster's watcher (or its
    /// replication set) points it at the successor ([`Proxy::follow`]).
    feed: Mutex<ClusterFeed>,
    permits: Arc<Semaphore>,
    stats: Arc<ProxyStats>,
    pools: SplicePools,
    /// The last view a target was parsed for, the address and its socket address.
    last_target: Mutex<Option<(Arc<ClusterView>, String, SocketAddr)>>,
}

/// Why a connection was not forwarded, or how it ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Hello(#[from] super::hello::HelloError),
    #[error("ALPN {0} is routed to reject")]
    Rejected(String),
    #[error("no leader known for this cluster")]
    NoLeader,
    #[error("cannot use leader address {0}")]
    BadAddress(String),
    #[error("cannot resolve leader cluster address {0}")]
    Resolve(String),
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, io::Error),
}

impl ConnError {
    fn kind(&self) -> &'static str {
        match self {
            ConnError::Hello(h) => h.kind(),
            ConnError::Rejected(_) => "alpn_rejected",
            ConnError::NoLeader => "no_leader",
            ConnError::BadAddress(_) => "resolve",
            ConnError::Resolve(_) => "resolve",
            ConnError::ConnectTimeout(_) => "connect_timeout",
            ConnError::Connect(..) => "connect",
        }
    }
}

/// One connection in `proxy_active_connections` for as long as its task lives, however
/// it ends: done, dropped at the drain deadline, or unwound by a panic.
struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    fn count(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Proxy {
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
            stats: Arc::default(),
            pools: SplicePools::new(PIPE_POOL),
            last_target: Mutex::default(),
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

    fn feed(&self) -> ClusterFeed {
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

    pub fn stats(&self) -> Arc<ProxyStats> {
        self.stats.clone()
    }

    /// Serves each listener of the group (`net::bind_tcp_group`) on a thread of its own, with
    /// a single-threaded runtime: accepts until `shutdown` is cancelled; then open
    /// connections get `drain` to finish on their own, or until `close` is cancelled,
    /// before they are closed. Returns once they are all gone. (A reload retires a
    /// listener with an unbounded drain: its connections stay until they end or the
    /// leader changes.)
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
        drain: Duration,
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
                        Ok(rt) => rt.block_on(this.serve(i, listener, shutdown, drain, close)),
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

    /// One worker: the accept loop on one listener of the group, and its connections.
    async fn serve(
        self: Arc<Self>,
        worker: usize,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
        drain: Duration,
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
        // One wait for shutdown for the whole loop: made anew per accept, it registered
        // and unregistered a waiter under a lock for every connection.
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut stop => break,
                a = listener.accept() => a,
            };
            let (sock, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            crate::panic::fault_point("proxy-worker");
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
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
                    this.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    this.metrics.connection(label, e.kind());
                    debug!(%peer, kind = e.kind(), error = %e, "proxy connection refused");
                }
                drop(permit);
            });
        }
        drop(listener);
        tracker.close();
        if !tracker.is_empty() {
            info!(cluster = %self.config.cluster, open = tracker.len(), ?drain, "proxy draining");
            tokio::select! {
                _ = tracker.wait() => {}
                _ = tokio::time::sleep(drain) => {
                    info!(cluster = %self.config.cluster, open = tracker.len(), "drain deadline passed; closing");
                }
                _ = close.cancelled() => {}
            }
        }
        connections.cancel();
        tracker.wait().await;
    }

    async fn handle(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), (Option<usize>, ConnError)> {
        // The cluster side reads the ClientHello to route it; the API side forwards
        // whatever the client sends (its metric label is the one for "no ALPN").
        let (label, hello) = match self.side {
            Side::Cluster => {
                let hello = match read_client_hello(
                    &client,
                    self.config.client_hello_timeout,
                    self.config.max_client_hello,
                )
                .await
                {
                    Ok(h) => h,
                    Err(e) => {
                        reset(client);
                        return Err((None, e.into()));
                    }
                };
                let label = self.router.label(hello.alpn());
                if self.router.route(hello.alpn()) == RouteAction::Reject {
                    reset(client);
                    return Err((Some(label), ConnError::Rejected(alpn_label(hello.alpn()))));
                }
                (label, Some(hello))
            }
            Side::Api => (self.router.label(Default::default()), None),
        };
        let alpn = Some(label);

        let mut feed = self.feed();
        let view = feed.seen();
        let (target_addr, target) = match self.target(&view).await {
            Ok(t) => t,
            Err(e) => {
                reset(client);
                return Err((alpn, e));
            }
        };
        let started = Instant::now();
        let connected = match &hello {
            Some(hello) => {
                connect_and_send(target, &hello.bytes, self.config.connect_timeout).await
            }
            None => connect(target, self.config.connect_timeout).await,
        };
        let mut upstream = match connected {
            Ok(s) => s,
            Err(e) => {
                reset(client);
                return Err((alpn, e));
            }
        };
        self.metrics
            .connect_duration
            .record(started.elapsed().as_secs_f64());
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        self.metrics.forwarded[label].increment(1);
        debug!(%peer, %target, side = self.side.as_str(), alpn = %self.router.labels()[label], sni = ?hello.as_ref().and_then(|h| h.sni()), connect = ?started.elapsed(), "forwarding");
        // Replayed: its buffer need not live as long as the connection.
        drop(hello);

        let data_path = self.config.data_path;
        let (pools, metrics) = (&self.pools, &self.metrics);
        // The streams move into the data path; dropping it (leader change, shutdown)
        // closes both.
        let copy = async move {
            match data_path {
                DataPath::Splice => {
                    let counters = [&metrics.bytes_up, &metrics.bytes_down];
                    let moving = splice_bidirectional(&client, &upstream, pools, counters);
                    tokio::pin!(moving);
                    with_deferred_keepalive(moving, &upstream).await
                }
                DataPath::Copy => {
                    // The fallback path counts when the connection ends.
                    set_keepalive(SockRef::from(&upstream));
                    let result = tokio::io::copy_bidirectional_with_sizes(
                        &mut client,
                        &mut upstream,
                        COPY_BUF,
                        COPY_BUF,
                    )
                    .await;
                    if let Ok((up, down)) = result {
                        metrics.bytes_up.increment(up);
                        metrics.bytes_down.increment(down);
                    }
                    result
                }
            }
        };
        tokio::pin!(copy);
        let watch_leader = self.config.on_leader_change == OnLeaderChange::Close;
        let mut feed_open = true;
        loop {
            // biased: polled in order, without drawing a random number per poll.
            tokio::select! {
                biased;
                result = &mut copy => {
                    let (up, down) = result.unwrap_or((0, 0));
                    debug!(%peer, %target, bytes_up = up, bytes_down = down, "connection done");
                    return Ok(());
                }
                changed = feed.changed(), if watch_leader && feed_open => {
                    if changed.is_err() {
                        // The watcher is gone: a reload replaced it (follow its successor,
                        // judging its view at once), or the agent is stopping (the
                        // shutdown branch ends us).
                        let next = self.feed();
                        if next.same_source(&feed) {
                            feed_open = false;
                            continue;
                        }
                        feed = next;
                    }
                    let view = feed.seen();
                    if let Some(new) = view.leader.as_ref().map(|l| self.address_of(l)) {
                        if new != target_addr {
                            self.stats.closed_on_leader_change.fetch_add(1, Ordering::Relaxed);
                            info!(%peer, old = %target_addr, %new, "leader changed; closing proxied connection");
                            return Ok(());
                        }
                    }
                }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Where a new connection goes under `view`: the leader's cluster address as
    /// reported, and the socket address it names. An IP literal is parsed once per view
    /// (URL parsing and formatting showed in the per-connection profile); a host name
    /// is looked up every time, so it follows the name's records.
    async fn target(&self, view: &Arc<ClusterView>) -> Result<(String, SocketAddr), ConnError> {
        let Some(target_addr) = self.target_of(view) else {
            return Err(ConnError::NoLeader);
        };
        {
            let last = self.last_target.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((v, addr, socket)) = &*last {
                if Arc::ptr_eq(v, view) && *addr == target_addr {
                    return Ok((target_addr, *socket));
                }
            }
        }
        let resolved = match self.side {
            Side::Cluster => resolve(&target_addr).await,
            Side::Api => resolve_api(&target_addr).await,
        };
        let (socket, literal) = match resolved {
            Ok(r) => r,
            Err(Unresolved::BadAddress) => return Err(ConnError::BadAddress(target_addr)),
            Err(Unresolved::Lookup) => return Err(ConnError::Resolve(target_addr)),
        };
        if literal {
            *self.last_target.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((view.clone(), target_addr.clone(), socket));
        }
        Ok((target_addr, socket))
    }

    /// The leader's address on this side, when the view may be used.
    fn target_of(&self, view: &ClusterView) -> Option<String> {
        if view.freshness(Instant::now()) == Freshness::Unusable {
            return None;
        }
        view.leader.as_ref().map(|l| self.address_of(l))
    }

    /// The leader's address this side forwards to: its `api_addr`, or its cluster address.
    fn address_of(&self, leader: &crate::vault::view::Leader) -> String {
        match self.side {
            Side::Cluster => self.cluster_addr_of(leader),
            Side::Api => leader.api_addr.clone(),
        }
    }

    /// `leader_cluster_address` as reported, or the leader's address on port 8201 when
    /// a node did not report one.
    fn cluster_addr_of(&self, leader: &crate::vault::view::Leader) -> String {
        if !leader.cluster_addr.is_empty() {
            return leader.cluster_addr.clone();
        }
        match leader.addrs.first() {
            Some(ip) => format!("https://{}", SocketAddr::new(*ip, 8201)),
            None => String::new(),
        }
    }
}

/// Why a leader address gave no socket address.
enum Unresolved {
    /// Not a URL with a host.
    BadAddress,
    /// Its host name resolves to nothing (now).
    Lookup,
}

/// `https://host:port` (Vault's `cluster_addr` form) or `host:port` to a socket address,
/// and whether the host was an IP literal (no lookup involved). No port means 8201.
async fn resolve(cluster_addr: &str) -> Result<(SocketAddr, bool), Unresolved> {
    let with_scheme = if cluster_addr.contains("://") {
        cluster_addr.to_string()
    } else {
        format!("https://{cluster_addr}")
    };
    let url = Url::parse(&with_scheme).map_err(|_| Unresolved::BadAddress)?;
    let port = url.port().unwrap_or(8201);
    resolve_host(&url, port).await
}

/// An `api_addr` (`http://host:8200`, `https://host`) to a socket address: its port, or
/// its scheme's (a URL without a port means the scheme's port to every HTTP client).
async fn resolve_api(api_addr: &str) -> Result<(SocketAddr, bool), Unresolved> {
    let url = Url::parse(api_addr).map_err(|_| Unresolved::BadAddress)?;
    let port = url.port_or_known_default().ok_or(Unresolved::BadAddress)?;
    resolve_host(&url, port).await
}

async fn resolve_host(url: &Url, port: u16) -> Result<(SocketAddr, bool), Unresolved> {
    match url.host().ok_or(Unresolved::BadAddress)? {
        url::Host::Ipv4(ip) => Ok((SocketAddr::new(ip.into(), port), true)),
        url::Host::Ipv6(ip) => Ok((SocketAddr::new(ip.into(), port), true)),
        url::Host::Domain(name) => {
            let mut found = tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| Unresolved::Lookup)?;
            Ok((found.next().ok_or(Unresolved::Lookup)?, false))
        }
    }
}

/// Connects to `target` within `timeout` (the API side: nothing to send first).
async fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnError> {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(ConnError::Connect(target, e)),
        Err(_) => Err(ConnError::ConnectTimeout(target)),
    }
}

/// Connects to `target` and sends it `hello`, the way HAProxy does: the send is tried
/// as soon as connect() returns, since on loopback and fast networks the handshake is
/// often done by then; only when it is not (EAGAIN) does the connection wait to become
/// writable, within `timeout`. That saves a trip through the event loop and the
/// SO_ERROR query per connection that tokio's `connect` makes.
async fn connect_and_send(
    target: SocketAddr,
    hello: &[u8],
    timeout: Duration,
) -> Result<TcpStream, ConnError> {
    let failed = |e: io::Error| ConnError::Connect(target, e);
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(failed)?;
    sock.set_tcp_nodelay(true).map_err(failed)?;
    match sock.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => return Err(failed(e)),
    }
    // A send on a socket still connecting fails with EAGAIN; one whose connect failed
    // reports that failure (ECONNREFUSED and the like).
    let sent = match rustix::net::send(&sock, hello, SendFlags::NOSIGNAL) {
        Ok(n) => n,
        Err(rustix::io::Errno::AGAIN) => 0,
        Err(e) => return Err(failed(e.into())),
    };
    let mut stream = TcpStream::from_std(sock.into()).map_err(failed)?;
    if sent < hello.len() {
        match tokio::time::timeout(timeout, stream.write_all(&hello[sent..])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(ConnError::ConnectTimeout(target)),
        }
    }
    Ok(stream)
}

/// TCP_NODELAY (cluster traffic is RPC: latency matters more than packet count) and
/// keepalive (so a vanished peer does not pin a connection forever).
fn tune_socket(sock: SockRef<'_>) {
    let _ = sock.set_tcp_nodelay(true);
    set_keepalive(sock);
}

/// Runs `moving` and gives `upstream` its keepalive once the connection has lived
/// `UPSTREAM_KEEPALIVE_AFTER`: probes start after KEEPALIVE_IDLE of silence anyway, and
/// three setsockopt calls on every short forwarding connection were a measurable share
/// of the connection rate. (The client leg inherits keepalive from the listener.)
/// `moving` is taken pinned, by reference: taken by value, its state would be laid out
/// twice in the connection's task (here and in the caller).
async fn with_deferred_keepalive<F: std::future::Future>(
    mut moving: std::pin::Pin<&mut F>,
    upstream: &TcpStream,
) -> F::Output {
    tokio::select! {
        biased;
        done = &mut moving => return done,
        _ = tokio::time::sleep(UPSTREAM_KEEPALIVE_AFTER) => {}
    }
    set_keepalive(SockRef::from(upstream));
    moving.await
}

fn set_keepalive(sock: SockRef<'_>) {
    let ka = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = sock.set_tcp_keepalive(&ka);
}

/// Closes with RST: the client learns at once that there is nothing here for it.
fn reset(sock: TcpStream) {
    let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    drop(sock);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn upstream_keepalive_is_set_only_on_connections_that_live_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let short = TcpStream::connect(addr).await.unwrap();
        let long = TcpStream::connect(addr).await.unwrap();
        assert!(!SockRef::from(&long).keepalive().unwrap());

        let quick = std::pin::pin!(async { 1 });
        assert_eq!(with_deferred_keepalive(quick, &short).await, 1);
        assert!(
            !SockRef::from(&short).keepalive().unwrap(),
            "a short connection pays nothing"
        );

        let lives_on = std::pin::pin!(tokio::time::sleep(UPSTREAM_KEEPALIVE_AFTER * 2));
        with_deferred_keepalive(lives_on, &long).await;
        let s = SockRef::from(&long);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
    }

    #[tokio::test]
    async fn connect_and_send_delivers_the_hello_or_says_why_not() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let hello = vec![0x16u8; 5000];
        let upstream = connect_and_send(target, &hello, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(SockRef::from(&upstream).tcp_nodelay().unwrap());
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; hello.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello);

        // Nothing listening: refused, and said so.
        drop(listener);
        let e = connect_and_send(target, &hello, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(ConnError::Connect(..))), "{e:?}");

        // A listener whose accept queue is full drops SYNs: the connect never completes.
        let full = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        let dropped = loop {
            let r = connect_and_send(full_addr, &hello, Duration::from_millis(300)).await;
            match r {
                Ok(s) => fillers.push(s),
                Err(e) => break e,
            }
            assert!(fillers.len() < 16, "the accept queue never filled");
        };
        assert!(
            matches!(dropped, ConnError::ConnectTimeout(_)),
            "{dropped:?}"
        );
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tune_socket(SockRef::from(&listener));
        let _c = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = listener.accept().await.unwrap();
        let s = SockRef::from(&s);
        assert!(s.tcp_nodelay().unwrap());
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
    }
}
