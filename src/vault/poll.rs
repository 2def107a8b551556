//! Each node's polls: one poll (resolve the node's host, ask both endpoints), how often
//! (`Cadence`), and how many may be in flight while leaderless (hedging).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, AbortRegistration};
use tracing::debug;
use url::Url;

use super::client::{PollError, VaultClient};
use super::config::ClusterConfig;
use super::rules::Polled;
use super::view::ClusterView;

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
pub(super) async fn poll_node(client: &VaultClient, url: &Url, timeout: Duration) -> Polled {
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
pub(super) struct Cadence {
    normal: Duration,
    fast: Duration,
    fast_for: Duration,
    /// Where a leaderless period starts before any view is confirmed.
    started: Instant,
}

impl Cadence {
    pub fn new(config: &ClusterConfig) -> Self {
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
    pub fn interval(&self, view: &ClusterView, now: Instant) -> Duration {
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

/// The IPs and port a node or leader URL points at. IP literals need no lookup; names
/// go through the system resolver (config validation keeps names in our own zone out),
/// under `timeout`: a resolver that hangs holds back only this node.
pub(super) async fn resolve_url(url: &Url, timeout: Duration) -> (Vec<IpAddr>, u16) {
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
pub(super) async fn lookup(name: &str, port: u16, timeout: Duration) -> Vec<IpAddr> {
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

/// Every node's polls: its latest report, when the poll behind it started (an older
/// poll that answers late never replaces a newer one's report), and its polls in
/// flight.
pub(super) struct Schedule {
    pub latest: Vec<Option<Polled>>,
    latest_start: Vec<Option<tokio::time::Instant>>,
    polls: Vec<NodePolls>,
}

/// What one turn of the watcher's loop must do.
pub(super) struct Due {
    /// Nodes to poll now, each with the registration that lets the schedule give up
    /// on the poll.
    pub start: Vec<(usize, AbortRegistration)>,
    /// Polls given up on, already recorded as the nodes' reports (timeouts at their
    /// age), for the caller to count.
    pub abandoned: Vec<Polled>,
    /// When the loop must wake next if nothing answers.
    pub wake: tokio::time::Instant,
}

impl Schedule {
    pub fn new(nodes: usize) -> Self {
        Self {
            latest: vec![None; nodes],
            latest_start: vec![None; nodes],
            polls: (0..nodes).map(|_| NodePolls::default()).collect(),
        }
    }

    /// The polls due at `now`. Normal cadence: one poll per node at a time; one that
    /// overran is followed at once by the next. Leaderless (`fast`) cadence: a new poll
    /// every interval even while earlier ones hang, the oldest dropped past MAX_HEDGED.
    pub fn due(
        &mut self,
        nodes: &[Url],
        now: tokio::time::Instant,
        interval: Duration,
        fast: bool,
        mut wake: tokio::time::Instant,
    ) -> Due {
        let cap = if fast { MAX_HEDGED } else { 1 };
        let (mut start, mut abandoned) = (Vec::new(), Vec::new());
        for (i, url) in nodes.iter().enumerate() {
            let node = &mut self.polls[i];
            if node.flights.len() >= cap && !fast {
                continue; // its answer wakes the loop
            }
            let due = node.last_start.map_or(now, |t| t + interval);
            if due > now {
                wake = wake.min(due);
                continue;
            }
            if node.flights.len() >= cap {
                if let Some((started, oldest)) = node.flights.pop_front() {
                    // Given up on: it counts as a timeout at its age.
                    oldest.abort();
                    let waited = now.saturating_duration_since(started);
                    let waited = Duration::from_millis(waited.as_millis() as u64);
                    let latest = self.latest[i].as_ref();
                    let timeout = PollError::Timeout(waited);
                    let polled = Polled::unanswered(url, latest, timeout, Instant::now());
                    abandoned.push((i, started, polled));
                }
            }
            let (abort, registration) = AbortHandle::new_pair();
            node.flights.push_back((now, abort));
            node.last_start = Some(now);
            start.push((i, registration));
            wake = wake.min(now + interval);
        }
        let abandoned = abandoned
            .into_iter()
            .map(|(i, started, polled)| {
                let kept = polled.clone();
                self.report(i, started, polled);
                kept
            })
            .collect();
        Due {
            start,
            abandoned,
            wake,
        }
    }

    /// The poll of node `i` that started at `started` has ended.
    pub fn landed(&mut self, i: usize, started: tokio::time::Instant) {
        self.polls[i].flights.retain(|(s, _)| *s != started);
    }

    /// Makes `polled` node `i`'s latest report unless a newer poll's is already
    /// there; says whether it did.
    pub fn report(&mut self, i: usize, started: tokio::time::Instant, polled: Polled) -> bool {
        keep_newest(
            &mut self.latest[i],
            &mut self.latest_start[i],
            started,
            polled,
        )
    }

    /// Every node has answered (or given up) at least once.
    pub fn all_heard(&self) -> bool {
        self.latest.iter().all(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::view::Leader;

    fn cadence() -> Cadence {
        Cadence::new(&crate::vault::watcher::tests::cluster())
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
        let (fast, normal) = (Duration::from_millis(50), Duration::from_secs(1));
        let s = Duration::from_secs;
        // (the view, seconds after t0) -> the interval; failover_poll_for is 10 s.
        let lost_again = t0 + s(62);
        let cases = [
            (led(), t0, normal),
            (leaderless_since(t0), t0, fast),
            (leaderless_since(t0), t0 + s(9), fast),
            (led(), t0 + s(9), normal),
            // A cluster that stays leaderless goes back to the normal rate.
            (leaderless_since(t0), t0 + s(10), normal),
            (leaderless_since(t0), t0 + s(60), normal),
            // A leader, then a new loss: fast again, with a fresh window.
            (led(), t0 + s(61), normal),
            (leaderless_since(lost_again), lost_again, fast),
        ];
        for (i, (view, at, want)) in cases.into_iter().enumerate() {
            assert_eq!(c.interval(&view, at), want, "case {i}");
        }
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
