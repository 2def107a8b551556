//! Each node's polls: what one poll asks (`poll_node`, `HealthCadence`), how often
//! (`Cadence`; the agent's round grid and back-off in `Schedule`), and how many may be in flight while
//! leaderless (hedging).
//!
//! **About one request per node per round.** `/v1/sys/leader` decides the answer: who
//! leads as each node sees it (the votes), and whether the node is that leader itself
//! (`is_self`, `performance_standby`; Vault's `http/sys_leader.go` and OpenBao's, both
//! from `vault.Core.GetLeaderStatus`). A sealed or uninitialised node cannot answer it
//! (503/501). So it is asked every round. `/v1/sys/health` adds what changes rarely:
//! sealed against uninitialised, the replication modes, whether the server can
//! replicate at all. It is asked after the leader, on the same connection, when the node has no current
//! health, every `HEALTH_REFRESH` rounds, and every `SPEAKER_EVERY` rounds from a node
//! that speaks for its cluster's replication modes (the active node, or any node of a
//! load-balanced peer) when those can change (Vault Enterprise); and at once after a
//! leader answer that differs from the node's previous one (its role, its leader, or
//! its seal may have changed): a role the leader answer tells (`is_self`) is reported
//! at once and the health left to its next refresh, anything else (sealed, an error
//! status) asks the health at once. No refresh while the cluster is leaderless. A five-node OpenBao cluster costs 1.03 requests per node per round, a
//! five-node Enterprise one 1.13.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, AbortRegistration};
use tracing::debug;
use url::Url;

use rand::Rng;

use super::client::{LeaderReport, NodeReport, NodeState, PollError, VaultClient};
use super::config::ClusterConfig;
use super::modes::Modes;
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

/// Polls in a row without an answer after which a node is backed off: polled every
/// 2, 4, 8 ... poll intervals, up to `BACKOFF_CAP` of them, and every poll interval
/// while its cluster is leaderless (a dead host is not polled every 50 ms through a
/// whole failover). Above
/// MAX_HEDGED, so a node whose first polls hang while it becomes active (above) is
/// still hedged; its answer ends the back-off at once.
const BACKOFF_AFTER: u32 = 5;
/// The longest back-off, in poll intervals: a node that comes back is polled again
/// within this many intervals (10 s at the default 1 s).
const BACKOFF_CAP: u32 = 10;
/// A speaker's health is asked every this many rounds when its modes can change.
const SPEAKER_EVERY: u32 = 2;
/// Every node's health is asked at least every this many rounds.
const HEALTH_REFRESH: u32 = 30;
/// Where this process's rounds fall within any interval, as a fraction of it: drawn
/// once per process, so the agents of a fleet restarted together spread their polls
/// over the interval, while within one agent every cluster polling at the same
/// interval polls in the same instant. Measured in bench/fleet (30 clusters of 5 at
/// 1 s): one phase per cluster cost 0.8 % of a core more than one per agent, every
/// cluster's round a wake-up of its own instead of one for all.
fn phase() -> f64 {
    static PHASE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PHASE.get_or_init(|| rand::rng().random_range(0.0..1.0))
}

/// The first instant at or after `t` on this agent's grid for `interval`: the process's
/// epoch plus `phase()` of an interval plus whole intervals.
pub(super) fn on_grid(t: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = tokio::time::Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now));
    let step = interval.as_nanos().max(1);
    let first = epoch + interval.mul_f64(phase());
    let late = t.saturating_duration_since(first).as_nanos();
    let steps = late.div_ceil(step);
    first + Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX))
}

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

/// One node's polls in flight, oldest first; when the last one started, and how many
/// polls in a row went unanswered.
#[derive(Default)]
struct NodePolls {
    last_start: Option<tokio::time::Instant>,
    failures: u32,
    /// Some node names this one the leader: never backed off.
    named: bool,
    flights: std::collections::VecDeque<(tokio::time::Instant, AbortHandle)>,
}

/// When a poll asks `/v1/sys/health` beside `/v1/sys/leader` (see the module docs).
pub(super) struct HealthCadence {
    speaker: Duration,
    refresh: Duration,
    load_balanced: bool,
}

impl HealthCadence {
    pub fn new(config: &ClusterConfig) -> Self {
        // Half an interval short of the round count, so that the round lands on it.
        let rounds = |n: u32| config.poll_interval * (2 * n - 1) / 2;
        Self {
            speaker: rounds(SPEAKER_EVERY),
            refresh: rounds(HEALTH_REFRESH),
            load_balanced: config.load_balanced,
        }
    }

    /// Whether a poll starting at `now` asks the health after the leader, given the
    /// node's latest report. Never while the cluster is leaderless (`fast`) and the
    /// node has a health: an election is when the nodes are busiest, and when a vote
    /// must not wait behind a health answer (measured: kill -9 and step-down answered
    /// 30-80 ms later with it).
    pub fn with_leader(&self, prior: Option<&Polled>, now: Instant, fast: bool) -> bool {
        let Some((Ok(state), Some(heard))) = prior.map(|p| (&p.report.health, p.health_heard))
        else {
            return true;
        };
        if fast {
            return false;
        }
        let age = now.saturating_duration_since(heard);
        let speaks = self.load_balanced || *state == NodeState::Active;
        if speaks && prior.is_some_and(|p| p.report.replication.can_change()) {
            age >= self.speaker
        } else {
            age >= self.refresh
        }
    }
}

/// Whether a leader answer calls for the node's health at once: the node answered, and
/// differently from last time (or had no health then). An unreachable node is not
/// asked again: the health request would fail the same way.
fn leader_moved(prior: Option<&Polled>, leader: &Result<Option<LeaderReport>, PollError>) -> bool {
    match leader {
        Err(PollError::Connect(_) | PollError::Timeout(_) | PollError::Tls(_)) => false,
        _ => prior.is_none_or(|p| p.report.health.is_err() || p.report.leader != *leader),
    }
}

/// The node's role as a leader answer that moved says it (`is_self`,
/// `performance_standby`), when its previous report had a health to keep the modes of:
/// a standby's health carries its cluster's modes too, so a failover never shows a
/// primary's new active node with unknown modes. None: ask the health now.
fn role_from(
    prior: Option<&Polled>,
    leader: &Result<Option<LeaderReport>, PollError>,
) -> Option<NodeState> {
    let known = prior.is_some_and(|p| p.report.health.is_ok());
    match leader {
        Ok(Some(l)) if known && l.ha_enabled => Some(if l.is_self {
            NodeState::Active
        } else if l.performance_standby {
            NodeState::PerfStandby
        } else {
            NodeState::Standby
        }),
        _ => None,
    }
}

/// Polls one node: resolves its configured host, asks `/v1/sys/leader`, then the health
/// when `with_health` (from [`HealthCadence`]) or the leader answer moved; otherwise the
/// node's health is carried over from `prior`. One request after the other on one
/// connection: each node costs each agent one connection, and the leader answer, which
/// decides, never waits for the health.
pub(super) async fn poll_node(
    client: &VaultClient,
    url: &Url,
    timeout: Duration,
    prior: Option<Polled>,
    with_health: bool,
) -> Polled {
    let (addrs, port) = resolve_url(url, timeout).await;
    let leader = client.leader(url).await;
    let reachable = !matches!(
        leader,
        Err(PollError::Connect(_) | PollError::Timeout(_) | PollError::Tls(_))
    );
    // A role change read off the leader answer is reported at once; the health, which
    // a node becoming active can hold for seconds, follows at its next refresh.
    let moved = leader_moved(prior.as_ref(), &leader);
    let role = if moved && !with_health {
        role_from(prior.as_ref(), &leader)
    } else {
        None
    };
    let health = match role.is_none() && ((with_health && reachable) || moved) {
        true => Some(client.health(url).await),
        false => None,
    };
    let at = Instant::now();
    let (health, replication, health_heard) = match (health, role, prior, &leader) {
        (Some(Ok(h)), ..) => (Ok(h.state), h.replication, Some(at)),
        (Some(Err(e)), ..) => (Err(e), Modes::default(), None),
        (None, _, _, Err(e)) => (Err(e.clone()), Modes::default(), None),
        // The health keeps its age: its next refresh asks.
        (None, Some(state), Some(p), Ok(_)) => (Ok(state), p.report.replication, p.health_heard),
        (None, None, Some(p), Ok(_)) => (p.report.health, p.report.replication, p.health_heard),
        // Not reached: a node without a prior report is asked its health.
        (None, _, None, Ok(_)) => (Err(PollError::NotYet), Modes::default(), None),
    };
    Polled {
        url: url.clone(),
        addrs,
        port,
        report: NodeReport {
            health,
            replication,
            leader,
        },
        at,
        health_heard,
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
    /// The cluster's `poll_interval`: the unit of the back-off.
    normal: Duration,
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
    pub fn new(nodes: usize, poll_interval: Duration) -> Self {
        Self {
            latest: vec![None; nodes],
            latest_start: vec![None; nodes],
            polls: (0..nodes).map(|_| NodePolls::default()).collect(),
            normal: poll_interval,
        }
    }

    /// Node `i`'s gap between poll starts at the cadence's `interval` (that, or its
    /// back-off), and the interval of the grid its polls fall on.
    /// While the cluster is leaderless a backed-off node is polled every poll interval:
    /// not at the fast rate, and not at its longer back-off either, since a node that
    /// came back may hold the vote the election needs.
    fn gap(&self, i: usize, interval: Duration) -> (Duration, Duration) {
        let over = self.polls[i].failures.checked_sub(BACKOFF_AFTER);
        match over.filter(|_| self.backed_off(i)) {
            Some(_) if interval < self.normal => (self.normal, self.normal),
            Some(over) => {
                let steps = 2u32.saturating_pow(over + 1).min(BACKOFF_CAP);
                (self.normal * steps, self.normal)
            }
            None => (interval, interval),
        }
    }

    /// When node `i`'s next poll is due after one that started at `last`: the grid
    /// point nearest `last` + its gap (so a round that started late, the first one or
    /// one after an overrun, falls back onto the grid).
    fn next_due(
        &self,
        i: usize,
        last: tokio::time::Instant,
        interval: Duration,
    ) -> tokio::time::Instant {
        let (gap, grid) = self.gap(i, interval);
        on_grid(last + gap - grid / 2, grid)
    }

    /// Whether node `i` is backed off (see BACKOFF_AFTER): never while some node names
    /// it the leader (a new leader's polls can hang for seconds while it becomes
    /// active: the hedging above is for exactly that node).
    fn backed_off(&self, i: usize) -> bool {
        let node = &self.polls[i];
        node.failures >= BACKOFF_AFTER && !node.named
    }

    /// Which nodes some node names the leader (`rules::named`).
    pub fn mark_named(&mut self, named: &[bool]) {
        for (node, named) in self.polls.iter_mut().zip(named) {
            node.named = *named;
        }
    }

    /// The polls due at `now`. Normal cadence: one poll per node at a time; one that
    /// overran is followed at once by the next. Leaderless (`fast`) cadence: a new poll
    /// every interval even while earlier ones hang, the oldest dropped past MAX_HEDGED.
    /// A backed-off node has one poll at a time at its own gap, whatever the cadence.
    pub fn due(
        &mut self,
        nodes: &[Url],
        now: tokio::time::Instant,
        interval: Duration,
        fast: bool,
        mut wake: tokio::time::Instant,
    ) -> Due {
        let (mut start, mut abandoned) = (Vec::new(), Vec::new());
        for (i, url) in nodes.iter().enumerate() {
            let hedging = fast && !self.backed_off(i);
            let cap = if hedging { MAX_HEDGED } else { 1 };
            let due = self.polls[i]
                .last_start
                .map_or(now, |t| self.next_due(i, t, interval));
            let node = &mut self.polls[i];
            if node.flights.len() >= cap && !hedging {
                continue; // its answer wakes the loop
            }
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
            wake = wake.min(self.next_due(i, now, interval));
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

    /// Makes `polled` node `i`'s latest report unless a newer poll's is already there.
    /// Returns whether the node now says something else than before (a report that only
    /// repeats the last one changes no answer: the periodic rebuild takes its time).
    /// An answer ends the node's back-off; a failure counts toward it.
    pub fn report(&mut self, i: usize, started: tokio::time::Instant, polled: Polled) -> bool {
        let answered = polled.answered();
        let repeats = self.latest[i]
            .as_ref()
            .is_some_and(|p| p.says_the_same(&polled));
        let kept = keep_newest(
            &mut self.latest[i],
            &mut self.latest_start[i],
            started,
            polled,
        );
        if kept {
            let node = &mut self.polls[i];
            node.failures = if answered { 0 } else { node.failures + 1 };
        }
        kept && !repeats
    }

    /// The majority names a leader that no node confirms, by an address `mark_named`
    /// cannot match to a node's URL (a host name, say): most likely a backed-off node
    /// that is back and elected. Each backed-off node is polled again within its first
    /// back-off step (two poll intervals), not its longest.
    pub fn recheck_backed_off(&mut self) {
        for node in &mut self.polls {
            node.failures = node.failures.min(BACKOFF_AFTER);
        }
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

    /// A node's latest report: `state` from its health heard `health_age` ago, with
    /// `modes`, saying `leader` leads (itself when active).
    fn prior(state: NodeState, modes: Modes, health_age: Duration) -> Polled {
        let url: Url = "http://127.0.0.1:8200".parse().unwrap();
        let now = Instant::now();
        Polled {
            url: url.clone(),
            addrs: vec!["127.0.0.1".parse().unwrap()],
            port: 8200,
            report: NodeReport {
                health: Ok(state),
                replication: modes,
                leader: Ok(Some(LeaderReport {
                    is_self: state == NodeState::Active,
                    leader_address: "http://127.0.0.1:8200".into(),
                    ..LeaderReport::default()
                })),
            },
            at: now,
            health_heard: now.checked_sub(health_age),
            wall: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn the_health_is_asked_when_missing_stale_or_from_a_replicating_speaker() {
        use super::super::modes::Mode;
        let mut config = crate::vault::watcher::tests::cluster(); // poll_interval 1 s
        let health = |c: &ClusterConfig, p: Option<&Polled>| {
            HealthCadence::new(c).with_leader(p, Instant::now(), false)
        };
        let bao = Modes {
            perf: Mode::Unavailable,
            dr: Mode::Unavailable,
        };
        let ent = Modes {
            perf: Mode::Primary,
            dr: Mode::Disabled,
        };
        let ms = Duration::from_millis;
        use NodeState::{Active, Standby};
        // (state, modes, health heard ms ago) -> asked with the leader
        let cases = [
            (Active, bao, 900, false),
            (Active, bao, 28_000, false),
            (Active, bao, 29_500, true), // HEALTH_REFRESH rounds
            (Standby, bao, 29_000, false),
            (Standby, ent, 1_400, false), // a standby does not speak for the cluster
            (Standby, ent, 29_500, true),
            (Active, ent, 900, false),
            (Active, ent, 1_500, true), // SPEAKER_EVERY rounds
        ];
        for (i, (state, modes, age, want)) in cases.into_iter().enumerate() {
            let p = prior(state, modes, ms(age));
            assert_eq!(health(&config, Some(&p)), want, "case {i}");
        }
        // No report yet, or none with a health: asked.
        assert!(health(&config, None));
        let mut failed = prior(Standby, bao, ms(0));
        failed.report.health = Err(PollError::Timeout(ms(5)));
        assert!(health(&config, Some(&failed)));
        // Every node of a load-balanced peer speaks for its cluster.
        config.load_balanced = true;
        assert!(health(&config, Some(&prior(Standby, ent, ms(1_500)))));
        assert!(!health(&config, Some(&prior(Standby, bao, ms(1_500)))));
    }

    #[test]
    fn a_leader_answer_that_moved_calls_for_the_health_at_once() {
        let p = prior(NodeState::Standby, Modes::default(), Duration::ZERO);
        let same = p.report.leader.clone();
        assert!(!leader_moved(Some(&p), &same));
        let mut elected = same.clone().unwrap().unwrap();
        elected.is_self = true;
        assert!(leader_moved(Some(&p), &Ok(Some(elected))));
        let mut other = same.clone().unwrap().unwrap();
        other.leader_address = "http://127.0.0.2:8200".into();
        assert!(leader_moved(Some(&p), &Ok(Some(other))));
        // Sealed (cannot say), or an error status: the health tells which.
        assert!(leader_moved(Some(&p), &Ok(None)));
        assert!(leader_moved(Some(&p), &Err(PollError::Status(500))));
        // Unreachable: the health would fail the same way.
        for unreachable in [
            PollError::Connect("refused".into()),
            PollError::Timeout(Duration::from_secs(2)),
            PollError::Tls("bad certificate".into()),
        ] {
            assert!(!leader_moved(Some(&p), &Err(unreachable)));
        }
        assert!(leader_moved(None, &same));
    }

    #[test]
    fn a_role_the_leader_answer_tells_is_taken_at_once_keeping_the_modes() {
        use super::super::modes::Mode;
        let ent = Modes {
            perf: Mode::Primary,
            dr: Mode::Disabled,
        };
        let standby = prior(NodeState::Standby, ent, Duration::ZERO);
        let said = |is_self: bool, perf: bool| {
            Ok(Some(LeaderReport {
                is_self,
                performance_standby: perf,
                leader_address: "http://127.0.0.1:8200".into(),
                ..LeaderReport::default()
            }))
        };
        assert_eq!(
            role_from(Some(&standby), &said(true, false)),
            Some(NodeState::Active)
        );
        assert_eq!(
            role_from(Some(&standby), &said(false, true)),
            Some(NodeState::PerfStandby)
        );
        assert_eq!(
            role_from(Some(&standby), &said(false, false)),
            Some(NodeState::Standby)
        );
        // Sealed, an error, no HA, or no health before (no modes to keep): ask it now.
        assert_eq!(role_from(Some(&standby), &Ok(None)), None);
        assert_eq!(
            role_from(Some(&standby), &Err(PollError::Status(500))),
            None
        );
        let solo = Ok(Some(LeaderReport {
            ha_enabled: false,
            ..LeaderReport::default()
        }));
        assert_eq!(role_from(Some(&standby), &solo), None);
        let mut down = standby.clone();
        down.report.health = Err(PollError::Connect("refused".into()));
        assert_eq!(role_from(Some(&down), &said(true, false)), None);
        assert_eq!(role_from(None, &said(true, false)), None);
    }

    /// Starts every due poll at `now` and lands it at once as `answered` or not;
    /// returns how many started.
    fn round(s: &mut Schedule, nodes: &[Url], now: tokio::time::Instant, answered: bool) -> usize {
        round_at(s, nodes, now, answered, true)
    }

    /// `round` at the fast cadence (50 ms, leaderless) or the normal one (1 s).
    fn round_at(
        s: &mut Schedule,
        nodes: &[Url],
        now: tokio::time::Instant,
        answered: bool,
        fast: bool,
    ) -> usize {
        let interval = Duration::from_millis(if fast { 50 } else { 1000 });
        let due = s.due(nodes, now, interval, fast, now + Duration::from_secs(60));
        let started = due.start.len();
        for (i, _) in due.start {
            s.landed(i, now);
            let mut p = prior(NodeState::Standby, Modes::default(), Duration::ZERO);
            if !answered {
                p = Polled::unanswered(
                    &nodes[i],
                    None,
                    PollError::Connect("refused".into()),
                    Instant::now(),
                );
            }
            s.report(i, now, p);
        }
        started
    }

    /// Polls from `from` for `span` in 10 ms steps; returns when polls started.
    fn run(
        s: &mut Schedule,
        nodes: &[Url],
        from: tokio::time::Instant,
        span: Duration,
        answered: bool,
        fast: bool,
    ) -> Vec<tokio::time::Instant> {
        let mut starts = Vec::new();
        let mut t = from;
        while t < from + span {
            if round_at(s, nodes, t, answered, fast) > 0 {
                starts.push(t);
            }
            t += Duration::from_millis(10);
        }
        starts
    }

    fn gaps(starts: &[tokio::time::Instant]) -> Vec<f64> {
        starts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_node_is_backed_off_and_polled_again_within_the_cap() {
        let nodes: Vec<Url> = vec!["http://127.0.0.1:8200".parse().unwrap()];
        let mut s = Schedule::new(1, Duration::from_secs(1));
        let near = |got: f64, want: f64| (got - want).abs() <= 0.52; // on the 1 s grid
                                                                     // Steady cadence: every second until BACKOFF_AFTER failures, then 2, 4, 8, 10,
                                                                     // 10 ... seconds.
        let t0 = tokio::time::Instant::now();
        let steady = gaps(&run(
            &mut s,
            &nodes,
            t0,
            Duration::from_secs(60),
            false,
            false,
        ));
        let first = BACKOFF_AFTER as usize - 1;
        assert!(steady[..first].iter().all(|g| near(*g, 1.0)), "{steady:?}");
        for (got, want) in steady[first..].iter().zip([2.0, 4.0, 8.0, 10.0, 10.0]) {
            assert!(
                near(*got, want),
                "back-off gaps {steady:?}, want about {want}"
            );
        }
        assert!(
            steady.iter().all(|g| *g <= 10.52),
            "past the cap: {steady:?}"
        );
        // Leaderless (fast cadence): polled every poll interval, neither every 50 ms nor
        // at its back-off (the election may need its vote once it is back).
        let t1 = t0 + Duration::from_secs(60);
        let leaderless = gaps(&run(
            &mut s,
            &nodes,
            t1,
            Duration::from_secs(6),
            false,
            true,
        ));
        assert!(leaderless.len() >= 4, "{leaderless:?}");
        assert!(leaderless.iter().all(|g| near(*g, 1.0)), "{leaderless:?}");
        // Steady again, still failing: back at the cap; its return is seen within it.
        let t2 = t1 + Duration::from_secs(6);
        run(&mut s, &nodes, t2, Duration::from_secs(25), false, false);
        let back = t2 + Duration::from_secs(25);
        let answered = run(&mut s, &nodes, back, Duration::from_secs(15), true, false);
        assert!(
            answered[0] - back <= Duration::from_millis(10_520),
            "{:?}",
            answered[0] - back
        );
        // The answer ends the back-off: every second again.
        assert!(
            gaps(&answered).iter().all(|g| near(*g, 1.0)),
            "{:?}",
            gaps(&answered)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backed_off_node_named_leader_is_rechecked_within_two_intervals() {
        let nodes: Vec<Url> = vec!["http://127.0.0.1:8200".parse().unwrap()];
        let mut s = Schedule::new(1, Duration::from_secs(1));
        let t0 = tokio::time::Instant::now();
        let mut t = t0;
        while t < t0 + Duration::from_secs(40) {
            round(&mut s, &nodes, t, false);
            t += Duration::from_millis(10);
        }
        let last = s.polls[0].last_start.unwrap();
        let normal = Duration::from_secs(1); // steady: the back-off is at its cap
        assert!(s.next_due(0, last, normal) - last > Duration::from_secs(9));
        s.recheck_backed_off();
        let wait = s.next_due(0, last, normal) - last;
        assert!(wait <= Duration::from_millis(2500), "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_node_that_others_name_the_leader_is_never_backed_off() {
        // The new leader that hangs its polls while it becomes active (the hedging case).
        let nodes: Vec<Url> = vec!["http://127.0.0.1:8200".parse().unwrap()];
        let mut s = Schedule::new(1, Duration::from_secs(1));
        s.mark_named(&[true]);
        let t0 = tokio::time::Instant::now();
        let (mut t, mut polls) = (t0, 0);
        while t < t0 + Duration::from_secs(2) {
            polls += round(&mut s, &nodes, t, false);
            t += Duration::from_millis(10);
        }
        assert!(polls >= 30, "{polls} polls in 2 s at 50 ms");
        // No longer named: the failures it had count at once.
        s.mark_named(&[false]);
        let last = s.polls[0].last_start.unwrap();
        assert!(s.next_due(0, last, Duration::from_secs(1)) - last > Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_fall_on_one_grid_for_every_cluster_of_the_agent() {
        let interval = Duration::from_secs(1);
        let far = tokio::time::Instant::now() + Duration::from_secs(600);
        // Two clusters whose watchers start at different moments.
        let nodes = |net: u8| -> Vec<Url> {
            (1..=3)
                .map(|i| format!("http://127.{net}.0.{i}:8200").parse().unwrap())
                .collect()
        };
        let (a, b) = (nodes(1), nodes(2));
        let (mut sa, mut sb) = (Schedule::new(3, interval), Schedule::new(3, interval));
        let t0 = tokio::time::Instant::now();
        let mut starts = (Vec::new(), Vec::new());
        let mut t = t0;
        while t < t0 + Duration::from_secs(10) {
            for (s, nodes, record, begin) in [
                (&mut sa, &a, &mut starts.0, t0),
                (&mut sb, &b, &mut starts.1, t0 + Duration::from_millis(370)),
            ] {
                if t < begin {
                    continue;
                }
                let due = s.due(nodes, t, interval, false, far);
                if !due.start.is_empty() {
                    assert_eq!(due.start.len(), 3, "a cluster's nodes are polled together");
                    record.push(t);
                }
                for (i, _) in due.start {
                    s.landed(i, t);
                }
            }
            t += Duration::from_millis(10);
        }
        // Each polls at once when it starts, then on the same grid, a second apart.
        assert_eq!(
            (starts.0[0], starts.1[0]),
            (t0, t0 + Duration::from_millis(370))
        );
        // Every later round of the second cluster is a round of the first.
        assert!(starts.1.len() >= 8, "{} rounds", starts.1.len());
        for t in &starts.1[1..] {
            assert!(
                starts.0.contains(t),
                "cluster b polled off cluster a's grid"
            );
        }
        for w in starts.0[1..].windows(2) {
            let gap = w[1] - w[0];
            let ms = Duration::from_millis;
            assert!(gap >= ms(990) && gap <= ms(1010), "rounds {gap:?} apart");
        }
    }

    #[test]
    fn the_grid_is_on_the_agents_phase() {
        let interval = Duration::from_millis(200);
        let t = tokio::time::Instant::now();
        let g = on_grid(t, interval);
        assert!(g >= t && g - t <= interval);
        assert_eq!(on_grid(g, interval), g, "a grid point is on the grid");
        assert_eq!(on_grid(g + Duration::from_nanos(1), interval), g + interval);
        // Another interval has its own grid, on the same phase of it.
        let long = Duration::from_secs(2);
        let h = on_grid(t, long);
        assert_eq!(on_grid(h + long / 2, long), h + long);
    }
}
