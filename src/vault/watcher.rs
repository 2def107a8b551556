//! The polling loop: one task per cluster, publishing a `ClusterView` through
//! `tokio::sync::watch` after every round.
//!
//! A round polls every node concurrently (each request under the cluster's
//! `request_timeout`), counts the leader reports, resolves the winner's address and
//! builds the next view with [`super::view::next_view`]. Rounds start every
//! `poll_interval` (`failover_poll_interval` while there is no leader, see [`Cadence`]);
//! a slow round delays the next one instead of piling rounds up.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use super::client::VaultClient;
use super::view::{elect, next_view, ClusterView, Polled, ResolvedLeader, ViewEvent};
use crate::config::ClusterConfig;
use crate::systemd::Heartbeat;
use crate::telemetry;

/// Receivers of a cluster's view.
pub type ViewReceiver = watch::Receiver<Arc<ClusterView>>;

/// Errors that keep a watcher from starting.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    #[error("cluster {cluster}: cannot read ca_file: {source}")]
    CaFile {
        cluster: String,
        source: std::io::Error,
    },
    #[error("cluster {cluster}: cannot build HTTP client: {source}")]
    Client {
        cluster: String,
        source: reqwest::Error,
    },
}

/// A cluster's watcher, ready to run.
pub struct Watcher {
    config: ClusterConfig,
    client: VaultClient,
    tx: watch::Sender<Arc<ClusterView>>,
    heartbeat: Heartbeat,
}

impl Watcher {
    /// `seed`: a view to start from (the previous generation's, on reload), so answers
    /// continue without a gap until this watcher's first round.
    pub fn new(
        config: ClusterConfig,
        seed: Option<Arc<ClusterView>>,
    ) -> Result<(Self, ViewReceiver), WatcherError> {
        let ca = match &config.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| WatcherError::CaFile {
                cluster: config.name.clone(),
                source,
            })?),
            None => None,
        };
        let client = VaultClient::new(config.request_timeout, ca.as_deref()).map_err(|source| {
            WatcherError::Client {
                cluster: config.name.clone(),
                source,
            }
        })?;
        let initial = match seed {
            Some(view) => {
                let mut view = (*view).clone();
                view.load_balanced = config.load_balanced;
                Arc::new(view)
            }
            None => Arc::new(ClusterView::empty(&config.name, config.load_balanced)),
        };
        let (tx, rx) = watch::channel(initial);
        // A round takes at most the request timeout (both requests run concurrently) and
        // starts every poll interval; twice that plus slack means the loop is stuck.
        let heartbeat = Heartbeat::new(
            2 * (config.poll_interval + config.request_timeout) + Duration::from_secs(1),
        );
        Ok((
            Self {
                config,
                client,
                tx,
                heartbeat,
            },
            rx,
        ))
    }

    /// Beats after every completed round (for the systemd watchdog).
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// Polls until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let cadence = Cadence::new(&self.config);
        let mut next_round = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_round) => {}
            }
            let started = tokio::time::Instant::now();
            let round = tokio::select! {
                _ = shutdown.cancelled() => return,
                round = self.poll_round() => round,
            };
            let prev = self.tx.borrow().clone();
            let now = Instant::now();
            let (view, events) =
                next_view(&prev, round.polled, round.leader, now, SystemTime::now());
            self.heartbeat.beat();
            self.log(&events);
            self.record(&view, &events);
            let interval = cadence.interval(&view, now);
            if *prev != view {
                self.tx.send_replace(Arc::new(view));
            }
            // Rounds start on a fixed cadence; one that overran starts the next at once
            // instead of bunching several up (tokio's MissedTickBehavior::Delay).
            next_round = (started + interval).max(tokio::time::Instant::now());
        }
    }

    async fn poll_round(&self) -> Round {
        let polls = self.config.nodes.iter().map(|url| async move {
            let (addrs, port) = resolve_url(url).await;
            let report = self.client.poll(url).await;
            Polled {
                url: url.clone(),
                addrs,
                port,
                report,
            }
        });
        let polled = futures_util::future::join_all(polls).await;
        for p in &polled {
            if let Err(e) = &p.report.health {
                metrics::counter!(telemetry::POLL_ERRORS, "cluster" => self.config.name.clone(), "kind" => e.kind())
                    .increment(1);
                debug!(cluster = %self.config.name, node = %p.url, kind = e.kind(), error = %e, "poll failed");
            }
        }
        let election = elect(&polled);
        if let Some(votes) = &election.disagreement {
            warn!(
                cluster = %self.config.name,
                reports = ?votes,
                chosen = ?election.winner.as_ref().map(|w| &w.0),
                "nodes disagree about the leader; answering the majority's, or none without one"
            );
        }
        let leader = match election.winner {
            Some((api_addr, cluster_addr)) => match Url::parse(&api_addr) {
                Ok(url) => {
                    let (addrs, port) = resolve_url(&url).await;
                    if addrs.is_empty() {
                        warn!(cluster = %self.config.name, leader = %api_addr, "cannot resolve the leader's address");
                        None
                    } else {
                        Some(ResolvedLeader {
                            api_addr,
                            cluster_addr,
                            addrs,
                            port,
                        })
                    }
                }
                Err(e) => {
                    warn!(cluster = %self.config.name, leader = %api_addr, error = %e, "leader_address is not a URL");
                    None
                }
            },
            None => None,
        };
        Round { polled, leader }
    }

    /// Metrics for one round (the view's age is computed at scrape time).
    fn record(&self, view: &ClusterView, events: &[ViewEvent]) {
        let cluster = self.config.name.clone();
        let reachable = view
            .members
            .iter()
            .filter(|m| m.role != super::view::Role::Unreachable && !view.stale)
            .count();
        let unreachable = view.members.len() - reachable;
        metrics::gauge!(telemetry::NODES, "cluster" => cluster.clone(), "state" => "reachable")
            .set(reachable as f64);
        metrics::gauge!(telemetry::NODES, "cluster" => cluster.clone(), "state" => "unreachable")
            .set(unreachable as f64);
        metrics::gauge!(telemetry::STALE, "cluster" => cluster.clone())
            .set(f64::from(u8::from(view.stale)));
        metrics::gauge!(telemetry::HAS_LEADER, "cluster" => cluster.clone())
            .set(f64::from(u8::from(view.leader.is_some())));
        let changes = events
            .iter()
            .filter(|e| matches!(e, ViewEvent::LeaderChanged { .. }))
            .count();
        if changes > 0 {
            metrics::counter!(telemetry::LEADER_CHANGES, "cluster" => cluster)
                .increment(changes as u64);
        }
    }

    fn log(&self, events: &[ViewEvent]) {
        let cluster = &self.config.name;
        for e in events {
            match e {
                ViewEvent::LeaderChanged {
                    old,
                    new,
                    leaderless_for,
                    reason,
                } => info!(
                    %cluster,
                    old = old.as_deref().unwrap_or("none"),
                    new = new.as_deref().unwrap_or("none"),
                    leaderless_for = %leaderless_for
                        .map(|d| humantime::format_duration(round_ms(d)).to_string())
                        .unwrap_or_else(|| "-".into()),
                    %reason,
                    "leader changed"
                ),
                ViewEvent::BecameStale => warn!(
                    %cluster,
                    serve_stale_for = ?self.config.serve_stale_for,
                    "no node answers; serving the last confirmed view (stale)"
                ),
                ViewEvent::NoViewYet => warn!(
                    %cluster,
                    "no node answers and none has yet; this cluster's names answer SERVFAIL"
                ),
                ViewEvent::Recovered => info!(%cluster, "nodes answer again; view is fresh"),
            }
        }
    }
}

/// How often to poll: `poll_interval` while a leader is confirmed, `failover_poll_interval`
/// from the moment there is none (a crash, a step-down, a cluster still starting) until
/// one is confirmed again or `failover_poll_for` has passed. The new leader is then seen
/// within a few tens of milliseconds of its election, while a cluster that stays
/// leaderless (sealed, say) goes back to the normal rate instead of being polled fast
/// forever. HAProxy's `fastinter` is the same idea.
struct Cadence {
    normal: Duration,
    fast: Duration,
    fast_for: Duration,
    /// Where a leaderless period starts before any view is confirmed.
    started: Instant,
}

impl Cadence {
    fn new(config: &ClusterConfig) -> Self {
        Self {
            normal: config.poll_interval,
            fast: config.failover_poll_interval,
            fast_for: config.failover_poll_for,
            started: Instant::now(),
        }
    }

    /// The interval after a round that produced `view`. The leaderless period starts
    /// at the view's own `leaderless_since` (set by `next_view` when the leader is lost,
    /// or by a first view without one), or at the watcher's start before any view.
    fn interval(&self, view: &ClusterView, now: Instant) -> Duration {
        if view.leader.is_some() {
            return self.normal;
        }
        let since = view.leaderless_since.unwrap_or(self.started);
        if now.saturating_duration_since(since) < self.fast_for {
            self.fast
        } else {
            self.normal
        }
    }
}

/// Millisecond precision is plenty for a log line.
fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

struct Round {
    polled: Vec<Polled>,
    leader: Option<ResolvedLeader>,
}

/// The IPs and port a node or leader URL points at. IP literals need no lookup; names
/// go through the system resolver (config validation keeps names in our own zone out).
async fn resolve_url(url: &Url) -> (Vec<IpAddr>, u16) {
    let port = url.port_or_known_default().unwrap_or(8200);
    match url.host() {
        Some(url::Host::Ipv4(ip)) => (vec![IpAddr::V4(ip)], port),
        Some(url::Host::Ipv6(ip)) => (vec![IpAddr::V6(ip)], port),
        Some(url::Host::Domain(name)) => {
            let addrs = match tokio::net::lookup_host((name, port)).await {
                Ok(it) => {
                    let mut v: Vec<IpAddr> = it.map(|sa: SocketAddr| sa.ip()).collect();
                    v.sort();
                    v.dedup();
                    v
                }
                Err(e) => {
                    debug!(host = name, error = %e, "cannot resolve");
                    Vec::new()
                }
            };
            (addrs, port)
        }
        None => (Vec::new(), port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::view::Leader;

    fn cadence() -> Cadence {
        let config = crate::config::Config::parse(
            r#"
datacenter = "dc1"
[[clusters]]
name = "dc1"
nodes = ["http://127.0.0.1:8200"]
poll_interval = "1s"
failover_poll_interval = "50ms"
failover_poll_for = "10s"
"#,
            "t.toml",
        )
        .unwrap();
        Cadence::new(&config.clusters[0])
    }

    fn led() -> ClusterView {
        let mut v = ClusterView::empty("dc1", false);
        v.leader = Some(Leader {
            api_addr: "http://127.0.0.1:8200".into(),
            cluster_addr: "https://127.0.0.1:8201".into(),
            addrs: vec!["127.0.0.1".parse().unwrap()],
            port: 8200,
        });
        v
    }

    fn leaderless_since(t: Instant) -> ClusterView {
        let mut v = ClusterView::empty("dc1", false);
        v.leaderless_since = Some(t);
        v
    }

    #[test]
    fn polls_fast_from_the_loss_of_a_leader_until_one_is_confirmed() {
        let t0 = Instant::now();
        let c = cadence();
        assert_eq!(c.interval(&led(), t0), Duration::from_secs(1));
        assert_eq!(
            c.interval(&leaderless_since(t0), t0),
            Duration::from_millis(50)
        );
        assert_eq!(
            c.interval(&leaderless_since(t0), t0 + Duration::from_secs(9)),
            Duration::from_millis(50)
        );
        assert_eq!(
            c.interval(&led(), t0 + Duration::from_secs(9)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_cluster_that_stays_leaderless_goes_back_to_the_normal_rate() {
        let t0 = Instant::now();
        let c = cadence();
        assert_eq!(
            c.interval(&leaderless_since(t0), t0),
            Duration::from_millis(50)
        );
        assert_eq!(
            c.interval(&leaderless_since(t0), t0 + Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            c.interval(&leaderless_since(t0), t0 + Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        // A leader, then a new loss: fast again, with a fresh window.
        assert_eq!(
            c.interval(&led(), t0 + Duration::from_secs(61)),
            Duration::from_secs(1)
        );
        let lost_again = t0 + Duration::from_secs(62);
        assert_eq!(
            c.interval(&leaderless_since(lost_again), lost_again),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn a_watcher_starting_without_a_leader_polls_fast() {
        let c = cadence();
        let no_view_yet = ClusterView::empty("dc1", false);
        assert_eq!(
            c.interval(&no_view_yet, Instant::now()),
            Duration::from_millis(50)
        );
        // ... but not forever when no node ever answers.
        assert_eq!(
            c.interval(&no_view_yet, c.started + Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }
}
