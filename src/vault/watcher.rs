//! The polling loop: one task per cluster, publishing a `ClusterView` through
//! `tokio::sync::watch`.
//!
//! Every node is polled on its own schedule (both endpoints concurrently, under the
//! cluster's `request_timeout`, the TCP connect under `connect_timeout`), and the
//! cluster's view is rebuilt from every node's latest report whenever a report arrives,
//! and at least every `poll_interval` so that reports age out (see
//! [`super::rules::current`]). A node whose packets vanish holds back only its own
//! reports: the others keep arriving, and the fast failover cadence keeps running.
//! Nodes are polled every `poll_interval`, or `failover_poll_interval` while there is
//! no leader (see [`Cadence`]). At the normal rate a node has one poll at a time, and
//! one that overran is followed at once by the next; while leaderless, new polls go out
//! on time even while earlier ones hang (up to [`MAX_HEDGED`] per node).
//!
//! A new view wakes the consumers (DNS caches, proxy connections) only when it answers
//! differently ([`ClusterView::answers_like`]); otherwise it replaces the published
//! one silently, so `/status` still shows the latest report times.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, Abortable, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use super::client::{PollError, VaultClient};
use super::config::ClusterConfig;
use super::feed::ClusterFeed;
use super::heartbeat::Heartbeat;
use super::replication;
use super::rules::{current, elect, next_view, Polled, ViewEvent};
use super::view::{self, ClusterAddr, ClusterView, Leader, NoLeader};
use crate::telemetry;

/// Errors that keep a watcher from starting.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    #[error("cluster {cluster}: {source}")]
    Tls {
        cluster: String,
        source: super::tls::TlsError,
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

/// What the loop remembers between decisions, for logging transitions once.
#[derive(Default)]
struct Memory {
    /// The kind of each node's last logged failure (None while it answers).
    failing: Vec<Option<&'static str>>,
    /// The addresses of the last logged disagreement.
    disagreement: Option<Vec<String>>,
    /// The last leader resolved from a name: `(api_addr, addrs, port)`.
    resolved: Option<(String, Vec<IpAddr>, u16)>,
}

impl Watcher {
    /// `seed`: a view to start from (the previous generation's, on reload), so answers
    /// continue without a gap until this watcher's first reports.
    pub fn new(
        config: ClusterConfig,
        seed: Option<Arc<ClusterView>>,
    ) -> Result<(Self, ClusterFeed), WatcherError> {
        // Built from the files as validation read them: the same bytes check-config
        // accepted (a reload re-reads them, see `config::PemFile`).
        let tls = super::tls::client_config(&config.tls).map_err(|source| WatcherError::Tls {
            cluster: config.name.clone(),
            source,
        })?;
        let client = VaultClient::new(config.request_timeout, config.connect_timeout, tls)
            .map_err(|source| WatcherError::Client {
                cluster: config.name.clone(),
                source,
            })?;
        if let Some(expiry) = super::tls::client_cert_expiry(&config.tls) {
            let at = expiry
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            metrics::gauge!(telemetry::CLIENT_CERT_EXPIRY, "cluster" => config.name.clone())
                .set(at.as_secs_f64());
        }
        let initial = match seed {
            Some(view) => {
                let mut view = (*view).clone();
                view.load_balanced = config.load_balanced;
                view.serve_stale_for = config.serve_stale_for;
                Arc::new(view)
            }
            None => {
                let mut view = ClusterView::empty(&config.name, config.load_balanced);
                view.serve_stale_for = config.serve_stale_for;
                Arc::new(view)
            }
        };
        let (tx, rx) = watch::channel(initial);
        let feed = ClusterFeed::new(rx);
        // The view is rebuilt at least every poll interval; a poll takes at most the
        // request timeout. Twice both plus slack without a rebuild means the loop is stuck.
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
            feed,
        ))
    }

    /// Beats after every rebuilt view (for the systemd watchdog).
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// How long a node's report counts: one poll interval, plus one more interval or
    /// the connect timeout, whichever is longer. A live node answers a poll within
    /// milliseconds, so its report is never older than about one interval; one whose
    /// answer is overdue by another interval (or a connect timeout, for very short
    /// intervals) is the normal cloud failure, a host whose packets vanish, and waiting
    /// out the whole request timeout would keep answering a leader cut off from its
    /// cluster (measured in bench/partition.py: ~0.6 s past the new election).
    fn max_report_age(&self) -> Duration {
        let c = &self.config;
        c.poll_interval + c.poll_interval.max(c.connect_timeout)
    }

    /// Polls until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let nodes = &self.config.nodes;
        let started = tokio::time::Instant::now();
        let cadence = Cadence::new(&self.config);
        let mut interval = cadence.interval(&self.tx.borrow(), Instant::now());
        let mut latest: Vec<Option<Polled>> = vec![None; nodes.len()];
        // When the poll behind each node's latest report started: an older poll that
        // answers late never replaces a newer one's report.
        let mut latest_start: Vec<Option<tokio::time::Instant>> = vec![None; nodes.len()];
        let mut polls: Vec<NodePolls> = nodes.iter().map(|_| NodePolls::default()).collect();
        let mut in_flight = FuturesUnordered::new();
        let mut next_rebuild = started + self.config.poll_interval;
        let mut memory = Memory {
            failing: vec![None; nodes.len()],
            ..Memory::default()
        };
        loop {
            let now = tokio::time::Instant::now();
            // Normal cadence: one poll per node at a time; one that overran is followed
            // at once by the next. Leaderless (fast) cadence: a new poll every interval
            // even while earlier ones hang, the oldest dropped past MAX_HEDGED (see there).
            let fast = interval < self.config.poll_interval;
            let cap = if fast { MAX_HEDGED } else { 1 };
            let mut wake = next_rebuild;
            let mut abandoned = Vec::new();
            for (i, url) in nodes.iter().enumerate() {
                let node = &mut polls[i];
                if node.flights.len() >= cap && !fast {
                    continue; // its answer wakes the loop
                }
                let due = node.last_start.map_or(now, |t| t + interval);
                if due > now {
                    wake = wake.min(due);
                    continue;
                }
                if node.flights.len() >= cap {
                    if let Some((start, oldest)) = node.flights.pop_front() {
                        // Given up on: it counts as a timeout at its age.
                        oldest.abort();
                        let waited = now.saturating_duration_since(start);
                        let waited = Duration::from_millis(waited.as_millis() as u64);
                        let polled = Polled::unanswered(
                            url,
                            latest[i].as_ref(),
                            PollError::Timeout(waited),
                            Instant::now(),
                        );
                        abandoned.push((i, start, polled));
                    }
                }
                let (abort, registration) = AbortHandle::new_pair();
                let poll = poll_node(&self.client, url, self.config.request_timeout);
                in_flight.push(Abortable::new(poll, registration).map(move |r| (i, now, r)));
                node.flights.push_back((now, abort));
                node.last_start = Some(now);
                wake = wake.min(now + interval);
            }
            for (i, start, polled) in abandoned {
                self.count_errors(&polled);
                keep_newest(&mut latest[i], &mut latest_start[i], start, polled);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                Some((i, start, result)) = in_flight.next() => {
                    polls[i].flights.retain(|(s, _)| *s != start);
                    let Ok(polled) = result else {
                        continue; // abandoned above, and reported as such
                    };
                    self.count_errors(&polled);
                    if !keep_newest(&mut latest[i], &mut latest_start[i], start, polled) {
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() < next_rebuild {
                        continue;
                    }
                }
            }
            // Until every node has answered once (or had its request timeout to), a
            // view without a leader may only mean the quorum has not reported yet.
            let warming_up = latest.iter().any(Option::is_none)
                && started.elapsed() < self.config.request_timeout;
            let view = self.rebuild(&latest, &mut memory, warming_up).await;
            next_rebuild = tokio::time::Instant::now() + self.config.poll_interval;
            interval = cadence.interval(&view, Instant::now());
        }
    }

    /// Builds, logs, records and publishes the view from every node's latest report;
    /// returns the view now published.
    async fn rebuild(
        &self,
        latest: &[Option<Polled>],
        memory: &mut Memory,
        warming_up: bool,
    ) -> Arc<ClusterView> {
        crate::panic::fault_point("watcher");
        let now = Instant::now();
        let polled = current(&self.config.nodes, latest, now, self.max_report_age());
        self.log_nodes(&polled, memory);
        let election = elect(&polled, self.config.load_balanced);
        let reported: Option<Vec<String>> = election
            .disagreement
            .as_ref()
            .map(|votes| votes.iter().map(|(a, _)| a.clone()).collect());
        if reported != memory.disagreement {
            if let Some(votes) = &election.disagreement {
                warn!(
                    cluster = %self.config.name,
                    reports = ?votes,
                    chosen = ?election.winner.as_ref().ok().map(|w| &w.0),
                    "nodes disagree about the leader; answering a majority's, or none without one"
                );
            }
            memory.disagreement = reported;
        }
        let prev = self.tx.borrow().clone();
        let leader = match election.winner {
            Ok(winner) => self.resolve_leader(winner, &polled, &prev, memory).await,
            Err(why) => Err(why),
        };
        let (view, events) = next_view(&prev, polled, leader, now);
        self.heartbeat.beat();
        if warming_up && view.leader.is_none() {
            return prev;
        }
        self.log(&events, &view);
        self.record(&view, &events);
        let view = Arc::new(view);
        self.tx.send_if_modified(|published| {
            let wake = !published.answers_like(&view);
            *published = view.clone();
            wake
        });
        view
    }

    /// The elected leader resolved to the addresses consumers use (see [`Leader`]). A
    /// leader that is one of the polled nodes, or the leader already known, needs no
    /// lookup; a name is looked up once per leader change, under the request timeout.
    async fn resolve_leader(
        &self,
        (api_addr, cluster_addr): (String, String),
        polled: &[Polled],
        prev: &ClusterView,
        memory: &mut Memory,
    ) -> Result<Leader, NoLeader> {
        if let Some(l) = prev
            .leader
            .as_ref()
            .filter(|l| l.api_addr == api_addr && l.cluster_addr == cluster_addr)
        {
            return Ok(l.clone());
        }
        let (addrs, port) = self.api_addrs(&api_addr, polled, memory).await?;
        let cluster_target = match ClusterAddr::parse(&cluster_addr, &addrs) {
            ClusterAddr::Socket(s) => Some(s),
            ClusterAddr::Unusable => None,
            ClusterAddr::Name(host, port) => lookup(&host, port, self.config.request_timeout)
                .await
                .first()
                .map(|ip| SocketAddr::new(*ip, port)),
        };
        Ok(Leader {
            api_addr,
            cluster_addr,
            addrs,
            port,
            cluster_target,
        })
    }

    /// The IPs and port of the elected `api_addr`.
    async fn api_addrs(
        &self,
        api_addr: &str,
        polled: &[Polled],
        memory: &mut Memory,
    ) -> Result<(Vec<IpAddr>, u16), NoLeader> {
        let url = Url::parse(api_addr).map_err(|e| NoLeader::Unusable {
            leader: api_addr.to_string(),
            why: format!("not a URL: {e}"),
        })?;
        let port = url.port_or_known_default().unwrap_or(8200);
        if let Some(p) = polled
            .iter()
            .find(|p| p.url.host_str() == url.host_str() && p.port == port && !p.addrs.is_empty())
        {
            return Ok((p.addrs.clone(), port));
        }
        if let Some((_, addrs, port)) = memory.resolved.as_ref().filter(|r| r.0 == api_addr) {
            return Ok((addrs.clone(), *port));
        }
        let (addrs, port) = resolve_url(&url, self.config.request_timeout).await;
        if addrs.is_empty() {
            return Err(NoLeader::Unusable {
                leader: api_addr.to_string(),
                why: "its address does not resolve".into(),
            });
        }
        memory.resolved = Some((api_addr.to_string(), addrs.clone(), port));
        Ok((addrs, port))
    }

    /// One WARN when a node stops answering (or fails in a new way), one INFO when it
    /// answers again: the node and the reason, never a line per poll.
    fn log_nodes(&self, polled: &[Polled], memory: &mut Memory) {
        let cluster = &self.config.name;
        for (p, logged) in polled.iter().zip(memory.failing.iter_mut()) {
            let failure = match (&p.report.health, &p.report.leader) {
                // Not polled yet is not a failure: nothing to say until it answers.
                (Err(PollError::NotYet), _) => continue,
                (Ok(_), Ok(_)) => None,
                (Err(e), _) | (_, Err(e)) => Some(e),
            };
            // An answer that aged out, then the request's own timeout, is one failure.
            let kind = failure.map(|e| match e.kind() {
                "unheard" => "timeout",
                k => k,
            });
            match (failure, *logged) {
                (Some(e), was) if was != kind => {
                    warn!(%cluster, node = %p.url, reason = %e, "node not answering");
                }
                (None, Some(_)) => info!(%cluster, node = %p.url, "node answers again"),
                _ => {}
            }
            *logged = kind;
        }
    }

    /// Counts a failed poll once, when its report arrives.
    fn count_errors(&self, polled: &Polled) {
        let report = &polled.report;
        if let Some(e) = report
            .health
            .as_ref()
            .err()
            .or(report.leader.as_ref().err())
        {
            metrics::counter!(telemetry::POLL_ERRORS, "cluster" => self.config.name.clone(), "kind" => e.kind())
                .increment(1);
            debug!(cluster = %self.config.name, node = %polled.url, kind = e.kind(), error = %e, "poll failed");
        }
    }

    /// Metrics for one view (the view's age is computed at scrape time).
    fn record(&self, view: &ClusterView, events: &[ViewEvent]) {
        let cluster = self.config.name.clone();
        let reachable = view
            .members
            .iter()
            .filter(|m| m.role != view::Role::Unreachable && !view.stale)
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
        for kind in replication::Kind::ALL {
            let mode = replication::cluster_mode(view, kind);
            for m in replication::Mode::ALL {
                metrics::gauge!(telemetry::REPLICATION_MODE, "cluster" => cluster.clone(), "kind" => kind.as_str(), "mode" => m.as_str())
                    .set(f64::from(u8::from(m == mode)));
            }
        }
        let why = view.no_leader.as_ref().map(NoLeader::kind);
        for kind in NoLeader::KINDS {
            metrics::gauge!(telemetry::NO_LEADER, "cluster" => cluster.clone(), "reason" => kind)
                .set(f64::from(u8::from(why == Some(kind))));
        }
        let changes = events
            .iter()
            .filter(|e| matches!(e, ViewEvent::LeaderChanged { .. }))
            .count();
        if changes > 0 {
            metrics::counter!(telemetry::LEADER_CHANGES, "cluster" => cluster)
                .increment(changes as u64);
        }
    }

    fn log(&self, events: &[ViewEvent], view: &ClusterView) {
        let cluster = &self.config.name;
        // Why each node has no answer, for the lines that say none answers.
        let reasons = || {
            view.members
                .iter()
                .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.url)))
                .collect::<Vec<_>>()
                .join("; ")
        };
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
                    reasons = %reasons(),
                    "no node answers; serving the last confirmed view (stale)"
                ),
                ViewEvent::NoViewYet => warn!(
                    %cluster,
                    reasons = %reasons(),
                    "no node answers and none has yet; this cluster's names answer SERVFAIL"
                ),
                ViewEvent::Recovered => info!(%cluster, "nodes answer again; view is fresh"),
            }
        }
    }
}

/// While a cluster has no leader, how many polls one node may have in flight. A node
/// that is becoming active can leave a request hanging for seconds while it answers new
/// ones at once (seen in the fault lab: a poll sent as the new leader took the lock hung
/// for the whole 2 s request timeout, while HAProxy's next health check was answered).
/// So while leaderless, polls go out every `failover_poll_interval` regardless, and the
/// oldest is dropped when this many are pending: each node always has a recent request
/// outstanding, and a dead node costs at most this many sockets.
const MAX_HEDGED: usize = 4;

/// Makes `polled` (from a poll that started at `start`) the node's latest report unless
/// a newer poll's report is already there; says whether it did.
fn keep_newest(
    latest: &mut Option<Polled>,
    latest_start: &mut Option<tokio::time::Instant>,
    start: tokio::time::Instant,
    polled: Polled,
) -> bool {
    if latest_start.is_some_and(|newest| newest > start) {
        return false;
    }
    *latest = Some(polled);
    *latest_start = Some(start);
    true
}

/// One node's polls in flight, oldest first, and when the last one started.
#[derive(Default)]
struct NodePolls {
    last_start: Option<tokio::time::Instant>,
    flights: std::collections::VecDeque<(tokio::time::Instant, AbortHandle)>,
}

/// Polls one node: resolves its configured host, then asks both endpoints.
async fn poll_node(client: &VaultClient, url: &Url, timeout: Duration) -> Polled {
    let (addrs, port) = resolve_url(url, timeout).await;
    let report = client.poll(url).await;
    Polled {
        url: url.clone(),
        addrs,
        port,
        report,
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
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

/// The IPs and port a node or leader URL points at. IP literals need no lookup; names
/// go through the system resolver (config validation keeps names in our own zone out),
/// under `timeout`: a resolver that hangs holds back only this node.
async fn resolve_url(url: &Url, timeout: Duration) -> (Vec<IpAddr>, u16) {
    let port = url.port_or_known_default().unwrap_or(8200);
    let addrs = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => lookup(name, port, timeout).await,
        None => Vec::new(),
    };
    (addrs, port)
}

/// A host name's IPs, sorted, through the system resolver under `timeout`; none when
/// it fails (logged at debug: the caller says what it means).
async fn lookup(name: &str, port: u16, timeout: Duration) -> Vec<IpAddr> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(it)) => {
            let mut v: Vec<IpAddr> = it.map(|sa: SocketAddr| sa.ip()).collect();
            v.sort();
            v.dedup();
            v
        }
        Ok(Err(e)) => {
            debug!(host = name, error = %e, "cannot resolve");
            Vec::new()
        }
        Err(_) => {
            debug!(host = name, "name lookup timed out");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::view::Leader;

    fn cluster() -> ClusterConfig {
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
        config.clusters[0].clone()
    }

    fn cadence() -> Cadence {
        Cadence::new(&cluster())
    }

    /// The leader is resolved once, here: a `cluster_addr` with a host name becomes the
    /// socket address the proxy connects to; one that cannot be used becomes none.
    #[tokio::test]
    async fn the_watcher_resolves_the_leaders_cluster_address_once() {
        let (watcher, _feed) = Watcher::new(cluster(), None).unwrap();
        let mut memory = Memory::default();
        let empty = ClusterView::empty("dc1", false);
        let api = "http://127.0.0.1:8200".to_string();
        let named = (api.clone(), "https://localhost:8209".to_string());
        let l = watcher
            .resolve_leader(named, &[], &empty, &mut memory)
            .await
            .unwrap();
        assert_eq!(l.cluster_target, Some("127.0.0.1:8209".parse().unwrap()));
        assert_eq!(l.api_target(), Some("127.0.0.1:8200".parse().unwrap()));
        let bad = (api.clone(), "https://".to_string());
        let l = watcher
            .resolve_leader(bad, &[], &empty, &mut memory)
            .await
            .unwrap();
        assert_eq!(l.cluster_target, None);
        // Known already: reused as it is, without a lookup.
        let mut prev = empty.clone();
        prev.leader = Some(Leader {
            cluster_target: Some("127.0.0.9:8201".parse().unwrap()),
            ..Leader::literal(&api, "https://localhost:8209", vec![], 8200)
        });
        let same = (api.clone(), "https://localhost:8209".to_string());
        let l = watcher
            .resolve_leader(same, &[], &prev, &mut memory)
            .await
            .unwrap();
        assert_eq!(l.cluster_target, Some("127.0.0.9:8201".parse().unwrap()));
    }

    fn led() -> ClusterView {
        let mut v = ClusterView::empty("dc1", false);
        v.leader = Some(Leader::literal(
            "http://127.0.0.1:8200",
            "https://127.0.0.1:8201",
            vec!["127.0.0.1".parse().unwrap()],
            8200,
        ));
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
