//! The admin endpoint (loopback by default): `GET /metrics` (Prometheus text),
//! `GET /status` (JSON of every cluster's view and every proxy listener), `GET /ready`
//! and `GET /live`.
//!
//! A few fixed GET routes on a loopback socket do not justify an HTTP server framework:
//! this reads one request head (bounded in size and time), answers, and closes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::proxy::forward::Proxy;
use crate::telemetry;
use crate::vault::feed::ClusterFeed;
use crate::vault::replication::{self, Kind, Mode, Modes, NoPrimary, ReplicationHandle};
use crate::vault::view::Freshness;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One tracked cluster, as the admin endpoint and systemd see it.
#[derive(Clone)]
pub struct ClusterHandle {
    pub name: String,
    pub feed: ClusterFeed,
    pub heartbeat: crate::vault::heartbeat::Heartbeat,
}

/// Everything the admin endpoint reports on. The lists are replaced on reload.
pub struct Observed {
    /// The local datacenter (`datacenter` in the config).
    pub datacenter: std::sync::RwLock<String>,
    pub clusters: std::sync::RwLock<Vec<ClusterHandle>>,
    /// Every proxy side (a listener's cluster side and its API side are two).
    pub proxies: std::sync::RwLock<Vec<Arc<Proxy>>>,
    pub replication: std::sync::RwLock<Option<ReplicationHandle>>,
    pub started: Instant,
    pub ready_timeout: Duration,
    /// Set when the agent is stopping (lame duck): no longer ready.
    pub stopping: std::sync::atomic::AtomicBool,
}

impl Observed {
    /// Listeners are bound before anything runs, so ready means: every cluster has a
    /// first view, or the first-view deadline has passed.
    pub fn is_ready(&self) -> bool {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.started.elapsed() >= self.ready_timeout
            || self
                .clusters()
                .iter()
                .all(|c| c.feed.latest().last_confirmed.is_some())
    }

    pub fn clusters(&self) -> Vec<ClusterHandle> {
        self.clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn proxies(&self) -> Vec<Arc<Proxy>> {
        self.proxies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace(
        &self,
        datacenter: &str,
        clusters: Vec<ClusterHandle>,
        proxies: Vec<Arc<Proxy>>,
        replication: Option<ReplicationHandle>,
    ) {
        *self.datacenter.write().unwrap_or_else(|p| p.into_inner()) = datacenter.to_string();
        *self.clusters.write().unwrap_or_else(|p| p.into_inner()) = clusters;
        *self.proxies.write().unwrap_or_else(|p| p.into_inner()) = proxies;
        *self.replication.write().unwrap_or_else(|p| p.into_inner()) = replication;
    }

    pub fn status(&self) -> Status {
        let now = Instant::now();
        let replication = self
            .replication
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| ReplicationStatus::of(&r.state.borrow()));
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.is_ready(),
            datacenter: self
                .datacenter
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            clusters: self
                .clusters()
                .iter()
                .map(|c| ClusterStatus::of(&c.feed, now))
                .collect(),
            replication,
            proxies: self
                .proxies()
                .iter()
                .map(|p| ProxyStatus {
                    cluster: p.config().cluster.clone(),
                    side: p.side().as_str().to_string(),
                    listen: p.listen().to_string(),
                    answer: p.config().answer,
                    open_connections: p.open_connections(),
                })
                .collect(),
        }
    }

    /// Gauges that depend on "now" are set at scrape time.
    fn refresh_gauges(&self) {
        let now = Instant::now();
        for c in &self.clusters() {
            if let Some(t) = c.feed.latest().last_confirmed {
                metrics::gauge!(telemetry::VIEW_AGE, "cluster" => c.name.clone())
                    .set(now.saturating_duration_since(t).as_secs_f64());
            }
        }
    }
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub ready: bool,
    /// The local datacenter, whose primacy `status --is-primary` reports.
    #[serde(default)]
    pub datacenter: String,
    pub clusters: Vec<ClusterStatus>,
    /// The replication set's decisions, when one is configured.
    #[serde(default)]
    pub replication: Option<ReplicationStatus>,
    pub proxies: Vec<ProxyStatus>,
}

/// `[replication]` as the agent sees it now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub clusters: Vec<String>,
    /// One per kind: perf, then dr.
    pub primaries: Vec<PrimaryStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrimaryStatus {
    /// "perf" or "dr".
    pub kind: String,
    /// The virtual datacenter label ("perf-primary").
    pub label: String,
    /// The cluster its names answer for, if one.
    pub primary: Option<String>,
    pub state: PrimaryState,
    /// The clusters counted as primaries.
    pub counted: Vec<String>,
    /// Why, with every cluster's mode.
    pub why: String,
}

impl ReplicationStatus {
    fn of(state: &replication::ReplicationState) -> Self {
        Self {
            clusters: state.clusters.clone(),
            primaries: state
                .decisions
                .iter()
                .map(|d| PrimaryStatus {
                    kind: d.kind.as_str().to_string(),
                    label: d.kind.label().to_string(),
                    primary: d.primary.as_ref().ok().cloned(),
                    state: match &d.primary {
                        Ok(_) => PrimaryState::One,
                        Err(NoPrimary::None) => PrimaryState::None,
                        Err(NoPrimary::Several(_)) => PrimaryState::Several,
                        Err(NoPrimary::WarmingUp(_)) => PrimaryState::WarmingUp,
                    },
                    counted: d.counted.clone(),
                    why: d.to_string(),
                })
                .collect(),
        }
    }
}

/// How many primaries of a kind the set has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryState {
    One,
    None,
    /// Two primaries (or more): names under the label answer SERVFAIL.
    Several,
    /// Not every cluster of the set has had a first view yet.
    WarmingUp,
}

/// A cluster's replication modes as its nodes report them (see
/// `vault::replication::cluster_mode`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModesStatus {
    pub perf: Mode,
    pub dr: Mode,
}

impl ModesStatus {
    fn of(&self, kind: Kind) -> Mode {
        Modes {
            perf: self.perf,
            dr: self.dr,
        }
        .of(kind)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    /// Fresh, stale (served from the last confirmed view) or unusable (SERVFAIL).
    pub state: Freshness,
    pub leader: Option<LeaderStatus>,
    /// Why there is no leader ("2 of 3 members unheard"), while there is none.
    #[serde(default)]
    pub no_leader: Option<String>,
    pub view_age_seconds: Option<f64>,
    pub last_leader_change: Option<ChangeStatus>,
    pub load_balanced: bool,
    #[serde(default)]
    pub replication: ModesStatus,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderStatus {
    pub api_addr: String,
    pub cluster_addr: String,
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeStatus {
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub url: String,
    pub role: String,
    pub last_confirmed: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub cluster: String,
    /// "cluster" (ClientHello peek, ALPN routes) or "api" (plain passthrough).
    #[serde(default)]
    pub side: String,
    pub listen: String,
    pub answer: bool,
    pub open_connections: usize,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl ClusterStatus {
    fn of(feed: &ClusterFeed, now: Instant) -> Self {
        let view = feed.latest();
        Self {
            name: view.cluster.clone(),
            state: feed.freshness(&view, now),
            leader: view.leader.as_ref().map(|l| LeaderStatus {
                api_addr: l.api_addr.clone(),
                cluster_addr: l.cluster_addr.clone(),
                addrs: l.addrs.iter().map(|a| a.to_string()).collect(),
            }),
            no_leader: view.no_leader.as_ref().map(|w| w.to_string()),
            view_age_seconds: view
                .last_confirmed
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            last_leader_change: view
                .leader_changed
                .as_ref()
                .map(|(at, reason)| ChangeStatus {
                    at: rfc3339(*at),
                    reason: reason.clone(),
                }),
            load_balanced: view.load_balanced,
            replication: ModesStatus {
                perf: replication::cluster_mode(&view, Kind::Perf),
                dr: replication::cluster_mode(&view, Kind::Dr),
            },
            members: view
                .members
                .iter()
                .map(|m| MemberStatus {
                    url: m.url.to_string(),
                    role: m.role.as_str().to_string(),
                    last_confirmed: m.last_confirmed.map(rfc3339),
                    error: m.error.clone(),
                })
                .collect(),
        }
    }

    /// Healthy for `vault-locator status`: a leader, and a view that is not stale.
    pub fn healthy(&self) -> bool {
        self.leader.is_some() && self.state == Freshness::Fresh
    }
}

impl Status {
    /// Healthy for `vault-locator status`: every cluster healthy, and no kind with two
    /// primaries.
    pub fn healthy(&self) -> bool {
        self.clusters.iter().all(ClusterStatus::healthy)
            && self
                .replication
                .iter()
                .flat_map(|r| &r.primaries)
                .all(|p| p.state != PrimaryState::Several)
    }

    /// `status --is-primary KIND`: whether the local datacenter is the primary of that
    /// kind now. None when that cannot be told: no fresh view of the local cluster, its
    /// mode unknown, or two primaries in the set.
    pub fn is_primary(&self, kind: Kind) -> Option<bool> {
        let several = self
            .replication
            .iter()
            .flat_map(|r| &r.primaries)
            .any(|p| p.kind == kind.as_str() && p.state == PrimaryState::Several);
        let local = self.clusters.iter().find(|c| c.name == self.datacenter)?;
        let mode = local.replication.of(kind);
        if several || local.state != Freshness::Fresh || mode == Mode::Unknown {
            return None;
        }
        Some(mode == Mode::Primary)
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
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        crate::panic::fault_point("admin");
        let observed = observed.clone();
        let prometheus = prometheus.clone();
        tokio::spawn(async move {
            let served =
                tokio::time::timeout(REQUEST_TIMEOUT, serve(sock, &observed, prometheus.as_ref()))
                    .await;
            if !matches!(served, Ok(Ok(()))) {
                debug!(%peer, "admin request failed or timed out");
            }
        });
    }
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
