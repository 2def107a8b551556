//! The polling loop: one task per cluster, publishing a `ClusterView` through
//! `tokio::sync::watch`.
//!
//! Every node is polled on its own schedule (`poll::Schedule`: the round grid, failover
//! polling while leaderless, back-off; what a poll asks is `probe`'s),
//! and the view is rebuilt from every node's latest report whenever a report changes
//! what its node says, and at least every `poll_interval` so that reports age out
//! ([`super::rules::current`]): a node whose packets vanish holds back only its own
//! reports. The active node of a replicating cluster is also asked its replication
//! status every `stream::STATUS_EVERY`, beside the polls.
//!
//! A new view wakes the consumers (DNS caches, proxy connections) only when it answers
//! differently ([`ClusterView::answers_like`]); otherwise it replaces the published
//! one silently, so `/status` still shows the latest report times.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{AbortRegistration, Abortable, Aborted, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use url::Url;

use super::announce;
use super::client::VaultClient;
use super::config::ClusterConfig;
use super::feed::ClusterFeed;
use super::heartbeat::Heartbeat;
use super::poll::{on_grid, Pacer, Schedule};
use super::probe::{
    lookup, poll_node, resolve_url, streams_source, Asks, HealthCadence, StreamsSource, Target,
};
use super::rules::{current, elect, named, next_view, Elected, NextView, Polled};
use super::stream::{self, StreamReport, STATUS_EVERY};
use super::view::{ClusterAddr, ClusterView, Leader, NoLeader};
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

/// A leader's `api_addr` as its name last resolved (looked up once per leader change).
struct ResolvedLeader {
    api_addr: String,
    target: Target,
}

/// What the loop remembers between decisions, for logging transitions once.
#[derive(Default)]
struct Memory {
    /// The kind of each node's last logged failure (None while it answers).
    failing: Vec<Option<&'static str>>,
    /// The addresses of the last logged disagreement.
    disagreement: Option<Vec<String>>,
    resolved: Option<ResolvedLeader>,
    /// What the cluster's gauges show.
    gauges: Option<announce::Gauges>,
}

impl Watcher {
    /// `seed`: a view to start from (the previous generation's, on reload), so answers
    /// continue without a gap until this watcher's first reports.
    pub fn new(
        config: ClusterConfig,
        seed: Option<Arc<ClusterView>>,
    ) -> Result<Self, WatcherError> {
        // Built from the files as validation read them: the same bytes check-config
        // accepted (a reload re-reads them, see `tls::PemFile`).
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
        let (tx, _) = watch::channel(initial);
        // The view is rebuilt at least every poll interval; a poll takes at most the
        // request timeout. Twice both plus slack without a rebuild means the loop is stuck.
        let heartbeat = Heartbeat::new(
            2 * (config.poll_interval + config.request_timeout) + Duration::from_secs(1),
        );
        Ok(Self {
            config,
            client,
            tx,
            heartbeat,
        })
    }

    /// The feed of this watcher's view (its sender keeps what it holds with no reader,
    /// so a feed taken any time starts at the latest view).
    pub fn feed(&self) -> ClusterFeed {
        ClusterFeed::new(self.tx.subscribe())
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

    /// Polls until `shutdown` is cancelled: each node on its own schedule, the view
    /// rebuilt on every answer that changes a node's report and at least every poll
    /// interval, and the replication status asked beside.
    ///
    /// Two clocks, on purpose: `tokio::time::Instant` for this loop's timers, `Instant`
    /// (std's) for what reports and views carry, since the DNS threads that read them
    /// run no tokio clock. They meet only in `poll::on_grid` (clippy.toml holds that).
    // Long because it is the one select loop over the polls, the rebuild timer and the
    // replication status asks; each branch hands its work to a method.
    pub async fn run(self, shutdown: CancellationToken) {
        let nodes = &self.config.nodes;
        let started = tokio::time::Instant::now();
        let pacer = Pacer::new(&self.config);
        let health = HealthCadence::new(&self.config);
        let mut schedule = Schedule::new(nodes.len(), self.config.poll_interval);
        let mut in_flight = FuturesUnordered::new();
        let mut next_rebuild = self.next_rebuild();
        let mut memory = Memory {
            failing: vec![None; nodes.len()],
            ..Memory::default()
        };
        // The replication status, asked of the active node every `STATUS_EVERY` (Vault
        // Enterprise only), beside the polls and never holding them back.
        let mut streams_poll = None;
        let mut streams_due = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            // Every turn, not only after a rebuild: a report that repeats the last one
            // rebuilds nothing, and failover polling must still end on time.
            let pace = pacer.pace(&self.tx.borrow(), Instant::now());
            let due = schedule.due(nodes, now, pace, next_rebuild);
            for start in due.start {
                let (i, registration) = (start.node, start.registration);
                let prior = schedule.latest[i].clone();
                let asks = health.asks(prior.as_ref(), Instant::now(), pace);
                in_flight.push(self.poll(i, prior, asks, registration, now));
            }
            for polled in &due.abandoned {
                announce::count_errors(&self.config.name, polled);
            }
            let ask_streams = match &streams_poll {
                None => streams_source(&self.tx.borrow()),
                Some(_) => None,
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                report = async { streams_poll.as_mut().expect("guarded").await }, if streams_poll.is_some() => {
                    streams_poll = None;
                    streams_due = tokio::time::Instant::now() + STATUS_EVERY;
                    self.publish_streams(report);
                    continue;
                }
                _ = tokio::time::sleep_until(streams_due), if ask_streams.is_some() => {
                    let source = ask_streams.expect("guarded");
                    streams_poll = Some(Box::pin(self.ask_streams(source)));
                    continue;
                }
                Some((i, start, result)) = in_flight.next() => {
                    schedule.landed(i, start);
                    let Ok(polled) = result else {
                        continue; // given up on in `due`, and reported as such
                    };
                    announce::count_errors(&self.config.name, &polled);
                    if !schedule.report(i, start, polled) {
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(due.wake) => {
                    if tokio::time::Instant::now() < next_rebuild {
                        continue;
                    }
                }
            }
            // Until every node has answered once (or had its request timeout to), a
            // view without a leader may only mean the quorum has not reported yet.
            let warming_up =
                !schedule.all_heard() && started.elapsed() < self.config.request_timeout;
            let view = self
                .rebuild(&schedule.latest, &mut memory, warming_up)
                .await;
            next_rebuild = self.next_rebuild();
            schedule.mark_named(&named(&schedule.latest));
            if matches!(view.no_leader, Some(NoLeader::Unconfirmed { .. })) {
                schedule.recheck_backed_off();
            }
        }
    }

    /// Node `i`'s poll as the loop runs it: given up on through `registration`, its
    /// outcome tagged with the node and the poll's `start`.
    fn poll(
        &self,
        i: usize,
        prior: Option<Polled>,
        asks: Asks,
        registration: AbortRegistration,
        start: tokio::time::Instant,
    ) -> impl std::future::Future<Output = (usize, tokio::time::Instant, Result<Polled, Aborted>)> + '_
    {
        let timeout = self.config.request_timeout;
        let poll = poll_node(&self.client, &self.config.nodes[i], timeout, prior, asks);
        Abortable::new(poll, registration).map(move |r| (i, start, r))
    }

    /// Puts the latest replication status into the published view without waking
    /// anyone: nothing that answers changed (see `ClusterView::streams`).
    fn publish_streams(&self, report: StreamReport) {
        self.tx.send_if_modified(|published| {
            let mut view = (**published).clone();
            view.streams = Some(Arc::new(report));
            *published = Arc::new(view);
            false
        });
    }

    /// One ask of a cluster's replication status.
    async fn ask_streams(&self, StreamsSource { node, path }: StreamsSource) -> StreamReport {
        let answer = self
            .client
            .get_path(&node, path, |status, body| {
                stream::parse(path, status, body)
            })
            .await;
        if let Err(e) = &answer {
            debug!(cluster = %self.config.name, %node, error = %e, "replication status not read");
        }
        let previous = self.tx.borrow().streams.clone();
        StreamReport::next(
            previous.as_deref(),
            node.to_string(),
            answer,
            std::time::SystemTime::now(),
        )
    }

    /// When the view is rebuilt if no report changes it first: one poll interval on,
    /// on the round grid, so that this rebuild shares the wake-up that starts the next
    /// round (see `poll::phase`).
    fn next_rebuild(&self) -> tokio::time::Instant {
        let interval = self.config.poll_interval;
        on_grid(tokio::time::Instant::now() + interval / 2, interval)
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
        announce::log_nodes(&self.config.name, &polled, &mut memory.failing);
        let election = elect(&polled, self.config.load_balanced);
        let reported: Option<Vec<String>> = election
            .disagreement
            .as_ref()
            .map(|votes| votes.iter().map(|v| v.address.clone()).collect());
        if reported != memory.disagreement {
            if let Some(votes) = &election.disagreement {
                warn!(
                    cluster = %self.config.name,
                    reports = ?votes,
                    chosen = ?election.winner.as_ref().ok().map(|w| &w.api_addr),
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
        let NextView { view, events } = next_view(&prev, polled, leader, now);
        self.heartbeat.beat();
        if warming_up && view.leader.is_none() {
            return prev;
        }
        announce::log_events(
            &self.config.name,
            self.config.serve_stale_for,
            &events,
            &view,
        );
        announce::record(&self.config.name, &view, &events, &mut memory.gauges);
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
        Elected {
            api_addr,
            cluster_addr,
        }: Elected,
        polled: &[Polled],
        prev: &ClusterView,
        memory: &mut Memory,
    ) -> Result<Leader, NoLeader> {
        // No reported cluster address (redacted, or no HA): the leader's host on the
        // cluster's cluster port.
        let cluster_addr = match Url::parse(&api_addr) {
            Ok(url) if cluster_addr.is_empty() => url
                .host_str()
                .map(|h| format!("https://{h}:{}", self.config.cluster_port))
                .unwrap_or_default(),
            _ => cluster_addr,
        };
        if let Some(l) = prev
            .leader
            .as_ref()
            .filter(|l| l.api_addr == api_addr && l.cluster_addr == cluster_addr)
        {
            return Ok(l.clone());
        }
        let Target { addrs, port } = self.api_target(&api_addr, polled, memory).await?;
        let cluster_target = match ClusterAddr::parse(&cluster_addr, &addrs) {
            ClusterAddr::Socket(s) => Some(s),
            ClusterAddr::Unusable => None,
            ClusterAddr::Name { host, port } => lookup(&host, port, self.config.request_timeout)
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
    async fn api_target(
        &self,
        api_addr: &str,
        polled: &[Polled],
        memory: &mut Memory,
    ) -> Result<Target, NoLeader> {
        let url = Url::parse(api_addr).map_err(|e| NoLeader::Unusable {
            leader: api_addr.to_string(),
            why: format!("not a URL: {e}"),
        })?;
        let port = url.port_or_known_default().unwrap_or(8200);
        if let Some(p) = polled
            .iter()
            .find(|p| p.url.host_str() == url.host_str() && p.port == port && !p.addrs.is_empty())
        {
            let addrs = p.addrs.clone();
            return Ok(Target { addrs, port });
        }
        if let Some(r) = memory.resolved.as_ref().filter(|r| r.api_addr == api_addr) {
            return Ok(r.target.clone());
        }
        let target = resolve_url(&url, self.config.request_timeout).await;
        if target.addrs.is_empty() {
            return Err(NoLeader::Unusable {
                leader: api_addr.to_string(),
                why: "its address does not resolve".into(),
            });
        }
        memory.resolved = Some(ResolvedLeader {
            api_addr: api_addr.to_string(),
            target: target.clone(),
        });
        Ok(target)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::vault::view::Role;

    pub(crate) fn cluster() -> ClusterConfig {
        let text = format!(
            "{}poll_interval = \"1s\"\nfailover_poll_interval = \"50ms\"\nfailover_poll_for = \"10s\"\n",
            crate::config::EMBEDDED_DEFAULT
        );
        let config = crate::config::Config::parse(&text, "t.toml").unwrap();
        config.clusters[0].clone()
    }

    #[test]
    fn only_a_replicating_clusters_active_node_is_asked_its_streams() {
        use crate::vault::modes::{Mode, Modes};
        use crate::vault::view::Member;
        let member = |i: u8, role: Role, perf: Mode, dr: Mode| Member {
            url: format!("http://127.0.0.{i}:8200").parse().unwrap(),
            addrs: vec![],
            port: 8200,
            role,
            replication: Modes { perf, dr },
            last_confirmed: None,
            error: None,
        };
        let mut view = ClusterView::empty("dc1", false);
        view.leader = Some(Leader::literal("http://127.0.0.2:8200", "", vec![], 8200));
        // OpenBao (and Vault Community): never asked.
        view.members = vec![
            member(1, Role::Standby, Mode::Unavailable, Mode::Unavailable),
            member(2, Role::Active, Mode::Unavailable, Mode::Unavailable),
        ];
        assert_eq!(streams_source(&view), None);
        // Vault Enterprise: the active node, the combined endpoint.
        view.members = vec![
            member(1, Role::Standby, Mode::Primary, Mode::Disabled),
            member(2, Role::Active, Mode::Primary, Mode::Disabled),
        ];
        let source = streams_source(&view).unwrap();
        assert_eq!(source.node.as_str(), "http://127.0.0.2:8200/");
        assert_eq!(source.path, "/v1/sys/replication/status");
        // A DR secondary: its own DR endpoint.
        view.members[1].replication.dr = Mode::Secondary;
        assert_eq!(
            streams_source(&view).unwrap().path,
            "/v1/sys/replication/dr/status"
        );
        // No leader: nobody.
        view.leader = None;
        assert_eq!(streams_source(&view), None);
    }

    /// The leader is resolved once, here: a `cluster_addr` with a host name becomes the
    /// socket address the proxy connects to; one that cannot be used becomes none.
    #[tokio::test]
    async fn the_watcher_resolves_the_leaders_cluster_address_once() {
        let watcher = Watcher::new(cluster(), None).unwrap();
        let api = "http://127.0.0.1:8200";
        let target = |cluster_addr: &str, prev: ClusterView| {
            let elected = Elected {
                api_addr: api.to_string(),
                cluster_addr: cluster_addr.to_string(),
            };
            let watcher = &watcher;
            async move {
                let mut memory = Memory::default();
                let l = watcher
                    .resolve_leader(elected, &[], &prev, &mut memory)
                    .await;
                l.unwrap()
            }
        };
        let empty = ClusterView::empty("dc1", false);
        let named = target("https://localhost:8209", empty.clone()).await;
        assert_eq!(
            named.cluster_target,
            Some("127.0.0.1:8209".parse().unwrap())
        );
        assert_eq!(named.api_target(), Some("127.0.0.1:8200".parse().unwrap()));
        assert_eq!(target("https://", empty.clone()).await.cluster_target, None);
        // Known already: reused as it is, without a lookup.
        let mut prev = empty.clone();
        prev.leader = Some(Leader {
            cluster_target: Some("127.0.0.9:8201".parse().unwrap()),
            ..Leader::literal(api, "https://localhost:8209", vec![], 8200)
        });
        let known = target("https://localhost:8209", prev).await;
        assert_eq!(
            known.cluster_target,
            Some("127.0.0.9:8201".parse().unwrap())
        );
    }
}
