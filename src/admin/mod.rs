//! The admin endpoint (loopback by default): `GET /metrics` (Prometheus text),
//! `GET /status` (JSON of every cluster's view and every proxy listener), `GET /ready`
//! and `GET /live`.
//!
//! A few fixed GET routes on a loopback socket do not justify an HTTP server framework:
//! this reads one request head (bounded in size and time), answers, and closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::proxy::ProxySide;
use crate::telemetry;
use crate::vault::feed::ClusterFeed;
use crate::vault::replication::ReplicationHandle;

mod status;
pub use status::*;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One tracked cluster, as the admin endpoint and systemd see it.
#[derive(Clone)]
pub struct ClusterHandle {
    pub name: String,
    pub feed: ClusterFeed,
    pub heartbeat: crate::vault::heartbeat::Heartbeat,
}

/// What one generation runs, as the admin endpoint and systemd read it. It is replaced
/// whole on start and on every reload, so a reader never sees part of one generation
/// beside part of the next.
#[derive(Clone, Default)]
pub struct Running {
    /// The local cluster (`datacenter` in the config).
    pub local_cluster: String,
    /// The clusters in the config's order (what `/status` and `status` list).
    pub clusters: Vec<ClusterHandle>,
    /// Every proxy side (a listener's cluster side and its API side are two).
    pub proxies: Vec<Arc<ProxySide>>,
    pub replication: Option<ReplicationHandle>,
}

/// Everything the admin endpoint and systemd report on.
pub struct Observed {
    running: tokio::sync::watch::Sender<Arc<Running>>,
    pub started: Instant,
    pub ready_timeout: Duration,
    /// Set when the agent is stopping (lame duck): no longer ready.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Every reload's outcome (see [`Observed::reloaded`]).
    pub reloads: std::sync::Mutex<ReloadStatus>,
}

impl Observed {
    /// Nothing running yet: the supervisor [`replace`](Observed::replace)s what starts.
    pub fn new(local_cluster: &str, ready_timeout: Duration, started: Instant) -> Self {
        let running = Running {
            local_cluster: local_cluster.to_string(),
            ..Running::default()
        };
        Self {
            running: tokio::sync::watch::Sender::new(Arc::new(running)),
            started,
            ready_timeout,
            stopping: Default::default(),
            reloads: Default::default(),
        }
    }

    /// What runs now: one generation, whole.
    pub fn running(&self) -> Arc<Running> {
        self.running.borrow().clone()
    }

    /// Swaps in what a start or reload runs, in one step.
    pub fn replace(&self, running: Running) {
        self.running.send_replace(Arc::new(running));
    }

    /// Records a reload's outcome: `Err` is why it was rejected (the running config
    /// kept). `vault-locator reload` waits for the count to move.
    pub fn reloaded(&self, outcome: Result<(), String>) {
        let mut r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        r.count += 1;
        r.last_at =
            Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
        r.last_error = outcome.err();
    }

    /// Listeners are bound before anything runs, so ready means: every cluster has a
    /// first view, or every node of it has been tried (a first round in which none
    /// answered: waiting longer changes nothing), or the first-view deadline has passed.
    /// At boot the unit is ordered before Vault's: a local cluster whose nodes are not
    /// up yet must not hold the agent's READY (and so Vault's start) for the deadline.
    pub fn is_ready(&self) -> bool {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.started.elapsed() >= self.ready_timeout
            || self.running().clusters.iter().all(|c| {
                let view = c.feed.latest();
                view.last_confirmed.is_some()
                    || (!view.members.is_empty() && view.members.iter().all(|m| m.error.is_some()))
            })
    }

    pub fn status(&self) -> Status {
        let now = Instant::now();
        let running = self.running();
        let replication = running
            .replication
            .as_ref()
            .map(|r| ReplicationStatus::of(&r.state.borrow()));
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.is_ready(),
            datacenter: running.local_cluster.clone(),
            clusters: running
                .clusters
                .iter()
                .map(|c| ClusterStatus::of(&c.feed, now))
                .collect(),
            replication,
            proxies: running
                .proxies
                .iter()
                .map(|p| ProxyStatus {
                    cluster: p.config().cluster.clone(),
                    side: p.side().as_str().to_string(),
                    listen: p.listen().to_string(),
                    answer: p.config().answer,
                    open_connections: p.open_connections(),
                })
                .collect(),
            pid: std::process::id(),
            reloads: self
                .reloads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Gauges that depend on "now" are set at scrape time.
    fn refresh_gauges(&self) {
        let now = Instant::now();
        for c in &self.running().clusters {
            if let Some(t) = c.feed.latest().last_confirmed {
                metrics::gauge!(telemetry::VIEW_AGE, "cluster" => c.name.clone())
                    .set(now.saturating_duration_since(t).as_secs_f64());
            }
        }
    }
}

/// Serves the admin endpoint until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    observed: Arc<Observed>,
    prometheus: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) {
    info!(addr = ?listener.local_addr().ok(), "admin endpoint listening");
    // Each request is a task of this endpoint's, bounded by REQUEST_TIMEOUT; the
    // endpoint returns once the ones in flight at shutdown are done.
    let requests = TaskTracker::new();
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    crate::net::after_accept_error(&e, "admin").await;
                    continue;
                }
            },
        };
        crate::panic::fault_point("admin");
        let observed = observed.clone();
        let prometheus = prometheus.clone();
        requests.spawn(async move {
            let served =
                tokio::time::timeout(REQUEST_TIMEOUT, serve(sock, &observed, prometheus.as_ref()))
                    .await;
            if !matches!(served, Ok(Ok(()))) {
                debug!(%peer, "admin request failed or timed out");
            }
        });
    }
    requests.close();
    requests.wait().await;
}

async fn serve(
    mut sock: TcpStream,
    observed: &Observed,
    prometheus: Option<&PrometheusHandle>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut sock, 431, "text/plain", "request head too large\n").await;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut sock, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/metrics" => {
            observed.refresh_gauges();
            let body = match prometheus {
                Some(p) => {
                    p.run_upkeep();
                    p.render()
                }
                None => String::new(),
            };
            respond(&mut sock, 200, "text/plain; version=0.0.4", &body).await
        }
        "/status" => {
            let body = serde_json::to_string_pretty(&observed.status())
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            respond(&mut sock, 200, "application/json", &(body + "\n")).await
        }
        "/ready" => {
            if observed.is_ready() {
                respond(&mut sock, 200, "text/plain", "ready\n").await
            } else if observed.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                respond(&mut sock, 503, "text/plain", "stopping\n").await
            } else {
                respond(&mut sock, 503, "text/plain", "waiting for first views\n").await
            }
        }
        "/live" => respond(&mut sock, 200, "text/plain", "live\n").await,
        _ => respond(&mut sock, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(sock: &mut TcpStream, code: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(msg.as_bytes()).await?;
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::view::{ClusterView, Member, Role};
    use tokio::sync::watch;

    /// Ready comes with a first view, or once every node was tried and none answered
    /// (at boot, before the local Vault is up), not only at the deadline.
    #[test]
    fn ready_once_every_cluster_has_a_view_or_every_node_was_tried() {
        let observed = Observed::new("dc1", Duration::from_secs(3600), Instant::now());
        let (tx, rx) = watch::channel(Arc::new(ClusterView::empty("dc1", false)));
        observed.replace(Running {
            local_cluster: "dc1".into(),
            clusters: vec![ClusterHandle {
                name: "dc1".into(),
                feed: ClusterFeed::new(rx),
                heartbeat: crate::vault::heartbeat::Heartbeat::new(Duration::from_secs(1)),
            }],
            proxies: vec![],
            replication: None,
        });
        assert!(!observed.is_ready(), "nothing polled yet");
        let refused = |i: u8| Member {
            url: format!("http://127.0.0.{i}:8200").parse().unwrap(),
            addrs: vec![],
            port: 8200,
            role: Role::Unreachable,
            replication: Default::default(),
            last_confirmed: None,
            error: Some("connection failed: Connection refused".into()),
        };
        let mut tried = ClusterView::empty("dc1", false);
        tried.members = vec![refused(1), refused(2)];
        tried.stale = true;
        tx.send_replace(Arc::new(tried.clone()));
        assert!(
            observed.is_ready(),
            "every node tried: waiting changes nothing"
        );
        tried.members[1].error = None;
        tx.send_replace(Arc::new(tried.clone()));
        assert!(!observed.is_ready(), "a node not tried yet");
        tried.last_confirmed = Some(Instant::now());
        tx.send_replace(Arc::new(tried));
        assert!(observed.is_ready(), "a first view");
        observed
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!observed.is_ready(), "stopping");
    }
}
