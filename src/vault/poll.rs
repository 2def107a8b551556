//! Each node's polls: at which pace (`Pacer`: normal, or failover polling while the
//! cluster has no leader), on the agent's round grid with back-off (`Schedule`), and how
//! many may be pending at once during failover polling. What one poll asks is
//! [`super::probe`]'s.

use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, AbortRegistration};
use url::Url;

use rand::Rng;

use super::client::PollError;
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
const MAX_PENDING: usize = 4;

/// Polls in a row without an answer after which a node is backed off: polled every
/// 2, 4, 8 ... poll intervals, up to `BACKOFF_CAP` of them, and every poll interval
/// while its cluster is leaderless (a dead host is not polled every 50 ms through a
/// whole failover). Above
/// MAX_PENDING, so a node whose first polls hang while it becomes active (above) still
/// gets overlapping polls; its answer ends the back-off at once.
const BACKOFF_AFTER: u32 = 5;
/// The longest back-off, in poll intervals: a node that comes back is polled again
/// within this many intervals (10 s at the default 1 s).
const BACKOFF_CAP: u32 = 10;
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

/// `at` moved on by this process's phase of `interval`.
fn offset_by_phase(at: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    at + interval.mul_f64(phase())
}

/// The first instant at or after `t` on this agent's grid for `interval`: the process's
/// epoch plus `phase()` of an interval plus whole intervals.
#[allow(clippy::disallowed_methods)] // the one place the two clocks meet (clippy.toml)
pub(super) fn on_grid(t: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = tokio::time::Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now));
    let step = interval.as_nanos().max(1);
    let first = offset_by_phase(epoch, interval);
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

/// How often to poll: `poll_interval` while a leader is confirmed, `failover_poll_interval`
/// from the moment there is none (a crash, a step-down, a cluster still starting) until
/// one is confirmed again or `failover_poll_for` has passed. The new leader is then seen
/// within a few tens of milliseconds of its election, while a cluster that stays
/// leaderless (sealed, say) goes back to the normal pace instead of failover polling
/// forever. HAProxy's `fastinter` is the same idea.
pub(super) struct Pacer {
    normal: Duration,
    failover: Duration,
    failover_for: Duration,
    /// Where a leaderless period starts before any view is confirmed.
    started: Instant,
}

impl Pacer {
    pub fn new(config: &ClusterConfig) -> Self {
        Self {
            normal: config.poll_interval,
            failover: config.failover_poll_interval,
            failover_for: config.failover_poll_for,
            started: Instant::now(),
        }
    }

    /// The pace after a round that produced `view`. The leaderless period starts at
    /// the view's own `leaderless_since` (set by `next_view` when the leader is lost, or
    /// by a first view without one), or at the watcher's start before any view. A
    /// failover interval no shorter than the normal one is no failover pace at all.
    pub fn pace(&self, view: &ClusterView, now: Instant) -> Pace {
        if view.leader.is_some() || self.failover >= self.normal {
            return Pace::Normal(self.normal);
        }
        let since = view.leaderless_since.unwrap_or(self.started);
        if now.saturating_duration_since(since) < self.failover_for {
            Pace::Failover(self.failover)
        } else {
            Pace::Normal(self.normal)
        }
    }
}

/// How a cluster's nodes are polled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Every `poll_interval`, one poll per node at a time.
    Normal(Duration),
    /// Failover polling: every `failover_poll_interval`, a new poll even while earlier
    /// ones are pending (up to MAX_PENDING), and no health asked where one is known.
    Failover(Duration),
}

impl Pace {
    pub fn interval(self) -> Duration {
        match self {
            Pace::Normal(d) | Pace::Failover(d) => d,
        }
    }

    pub fn is_failover(self) -> bool {
        matches!(self, Pace::Failover(_))
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

/// A poll to start: the node's index in the cluster's node list, and the registration
/// that lets the schedule give up on the poll.
pub(super) struct Start {
    pub node: usize,
    pub registration: AbortRegistration,
}

/// What one turn of the watcher's loop must do.
pub(super) struct Due {
    /// Nodes to poll now, each with the registration that lets the schedule give up
    /// on the poll.
    pub start: Vec<Start>,
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

    /// Node `i`'s gap between poll starts at the pace's `interval` (that, or its
    /// back-off), and the interval of the grid its polls fall on.
    /// While the cluster is leaderless a backed-off node is polled every poll interval:
    /// not at the failover pace, and not at its longer back-off either, since a node that
    /// came back may hold the vote the election needs.
    fn gap(&self, i: usize, interval: Duration) -> (Duration, Duration) {
        let node = &self.polls[i];
        let over = node.failures.checked_sub(BACKOFF_AFTER);
        match over.filter(|_| !node.named) {
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
    /// active: the overlapping polls above are for exactly that node).
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

    /// The polls due at `now`. Normal pace: one poll per node at a time; one that
    /// overran is followed at once by the next. Failover polling: a new poll every
    /// interval even while earlier ones hang, the oldest dropped past MAX_PENDING.
    /// A backed-off node has one poll at a time at its own gap, whatever the pace.
    pub fn due(
        &mut self,
        nodes: &[Url],
        now: tokio::time::Instant,
        pace: Pace,
        mut wake: tokio::time::Instant,
    ) -> Due {
        let interval = pace.interval();
        let (mut start, mut abandoned) = (Vec::new(), Vec::new());
        for (i, url) in nodes.iter().enumerate() {
            let overlapping = pace.is_failover() && !self.backed_off(i);
            let cap = if overlapping { MAX_PENDING } else { 1 };
            let due = self.polls[i]
                .last_start
                .map_or(now, |t| self.next_due(i, t, interval));
            let node = &mut self.polls[i];
            if node.flights.len() >= cap && !overlapping {
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
            start.push(Start {
                node: i,
                registration,
            });
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

    fn pacer() -> Pacer {
        Pacer::new(&crate::vault::watcher::tests::cluster())
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
    fn polls_at_the_failover_pace_from_the_loss_of_a_leader_until_one_is_confirmed() {
        let t0 = Instant::now();
        let c = pacer();
        let (failover, normal) = (Duration::from_millis(50), Duration::from_secs(1));
        let s = Duration::from_secs;
        // (the view, seconds after t0) -> the interval; failover_poll_for is 10 s.
        let lost_again = t0 + s(62);
        let cases = [
            (led(), t0, normal),
            (leaderless_since(t0), t0, failover),
            (leaderless_since(t0), t0 + s(9), failover),
            (led(), t0 + s(9), normal),
            // A cluster that stays leaderless goes back to the normal rate.
            (leaderless_since(t0), t0 + s(10), normal),
            (leaderless_since(t0), t0 + s(60), normal),
            // A leader, then a new loss: failover polling again, with a fresh window.
            (led(), t0 + s(61), normal),
            (leaderless_since(lost_again), lost_again, failover),
        ];
        for (i, (view, at, want)) in cases.into_iter().enumerate() {
            assert_eq!(c.pace(&view, at).interval(), want, "case {i}");
        }
    }

    #[test]
    fn a_watcher_starting_without_a_leader_polls_at_the_failover_pace() {
        let c = pacer();
        let no_view_yet = ClusterView::empty("dc1", false);
        assert_eq!(
            c.pace(&no_view_yet, Instant::now()),
            Pace::Failover(Duration::from_millis(50))
        );
        // ... but not forever when no node ever answers.
        assert_eq!(
            c.pace(&no_view_yet, c.started + Duration::from_secs(10)),
            Pace::Normal(Duration::from_secs(1))
        );
    }

    /// A failover interval no shorter than the normal one (a config may set both to
    /// the same) is the normal pace: one poll per node at a time.
    #[test]
    fn a_failover_interval_as_long_as_the_normal_one_is_no_failover_pace() {
        let mut c = pacer();
        c.failover = c.normal;
        let no_view_yet = ClusterView::empty("dc1", false);
        assert_eq!(
            c.pace(&no_view_yet, Instant::now()),
            Pace::Normal(Duration::from_secs(1))
        );
    }

    use crate::vault::modes::Modes;
    use crate::vault::probe::tests::prior;
    use crate::vault::role::Role;

    /// Starts every due poll at `now` and lands it at once as `answered` or not;
    /// returns how many started.
    /// A poll that started before the node's latest report's poll never replaces that
    /// report when it answers late; one that started at the same time or later does.
    #[test]
    fn a_late_answer_never_replaces_a_newer_report() {
        let t0 = tokio::time::Instant::now();
        let (older, newer) = (t0, t0 + Duration::from_millis(10));
        let report = || prior(Role::Standby, Modes::default(), Duration::ZERO);
        let (mut latest, mut latest_start) = (None, None);
        assert!(keep_newest(&mut latest, &mut latest_start, newer, report()));
        assert!(!keep_newest(
            &mut latest,
            &mut latest_start,
            older,
            report()
        ));
        assert_eq!(latest_start, Some(newer), "the newer poll's report stays");
        assert!(keep_newest(&mut latest, &mut latest_start, newer, report()));
    }

    /// The agent's phase is a fraction of an interval, so its grid has one point per
    /// interval, at the same offset every time.
    #[test]
    fn the_grid_is_one_point_per_interval() {
        assert!((0.0..1.0).contains(&phase()), "{}", phase());
        let interval = Duration::from_millis(100);
        let t = tokio::time::Instant::now();
        let a = on_grid(t, interval);
        assert!(a >= t && a < t + interval, "the first point at or after t");
        assert_eq!(on_grid(a, interval), a, "a point is on the grid");
        assert_eq!(on_grid(a + Duration::from_nanos(1), interval), a + interval);
    }

    /// How many polls start over six turns a second apart while every poll hangs
    /// (none lands): every turn is due, at any pace and back-off.
    fn hanging(s: &mut Schedule, nodes: &[Url], from: tokio::time::Instant, pace: Pace) -> usize {
        let step = Duration::from_secs(1);
        (0..6u32)
            .map(|k| {
                let t = from + step * k;
                s.due(nodes, t, pace, t + Duration::from_secs(60))
                    .start
                    .len()
            })
            .sum()
    }

    /// A report says whether the node now says something else; a repeat, or a late
    /// answer to an older poll, does not. Every node heard once is `all_heard`.
    #[test]
    fn a_report_is_news_only_when_it_differs() {
        let mut s = Schedule::new(2, Duration::from_secs(1));
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let standby = || prior(Role::Standby, Modes::default(), Duration::ZERO);
        let active = || prior(Role::Active, Modes::default(), Duration::ZERO);
        assert!(!s.all_heard());
        assert!(s.report(0, at(10), standby()), "a first report");
        assert!(!s.report(0, at(20), standby()), "a repeat");
        assert!(s.report(0, at(30), active()), "another answer");
        assert!(!s.report(0, at(5), standby()), "an older poll's, late");
        assert!(!s.all_heard(), "node 1 not yet");
        s.report(1, at(10), standby());
        assert!(s.all_heard());
    }

    /// Failover polling starts a poll every interval even while earlier ones hang (the
    /// oldest given up past MAX_PENDING); the normal pace, and a backed-off node that
    /// nobody names the leader, have one poll at a time.
    #[test]
    fn failover_polling_overlaps_hanging_polls_but_not_for_a_backed_off_node() {
        let nodes: Vec<Url> = vec!["http://127.0.0.1:8200".parse().unwrap()];
        let t0 = tokio::time::Instant::now();
        let mut s = Schedule::new(1, Duration::from_secs(1));
        assert_eq!(hanging(&mut s, &nodes, t0, FAILOVER), 6, "one per interval");
        assert_eq!(
            s.polls[0].flights.len(),
            MAX_PENDING,
            "the oldest given up past it"
        );
        let mut s = Schedule::new(1, Duration::from_secs(1));
        assert_eq!(hanging(&mut s, &nodes, t0, NORMAL), 1, "one at a time");
        // Backed off: BACKOFF_AFTER polls in a row without an answer.
        let mut s = Schedule::new(1, Duration::from_secs(1));
        run(&mut s, &nodes, t0, Duration::from_secs(6), false, NORMAL);
        assert!(s.backed_off(0));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(hanging(&mut s, &nodes, later, FAILOVER), 1, "backed off");
        // ...unless some member names it the leader: then it is polled as any other.
        s.mark_named(&[true]);
        assert!(!s.backed_off(0));
        let later = later + Duration::from_secs(60);
        assert!(hanging(&mut s, &nodes, later, FAILOVER) > 1, "named");
    }

    const FAILOVER: Pace = Pace::Failover(Duration::from_millis(50));
    const NORMAL: Pace = Pace::Normal(Duration::from_secs(1));

    fn round(s: &mut Schedule, nodes: &[Url], now: tokio::time::Instant, answered: bool) -> usize {
        round_at(s, nodes, now, answered, FAILOVER)
    }

    /// `round` at the failover pace (50 ms, leaderless) or the normal one (1 s).
    fn round_at(
        s: &mut Schedule,
        nodes: &[Url],
        now: tokio::time::Instant,
        answered: bool,
        pace: Pace,
    ) -> usize {
        let due = s.due(nodes, now, pace, now + Duration::from_secs(60));
        let started = due.start.len();
        for Start { node: i, .. } in due.start {
            s.landed(i, now);
            let mut p = prior(Role::Standby, Modes::default(), Duration::ZERO);
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
        pace: Pace,
    ) -> Vec<tokio::time::Instant> {
        let mut starts = Vec::new();
        let mut t = from;
        while t < from + span {
            if round_at(s, nodes, t, answered, pace) > 0 {
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
        // On the 1 s grid: within half a poll interval (and the 10 ms step here).
        let near = |got: f64, want: f64| (got - want).abs() <= 0.52;
        // The normal pace: every second until BACKOFF_AFTER failures, then 2, 4, 8, 10,
        // 10 ... seconds.
        let t0 = tokio::time::Instant::now();
        let steady = gaps(&run(
            &mut s,
            &nodes,
            t0,
            Duration::from_secs(60),
            false,
            NORMAL,
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
        // Leaderless (failover pace): polled every poll interval, neither every 50 ms nor
        // at its back-off (the election may need its vote once it is back).
        let t1 = t0 + Duration::from_secs(60);
        let leaderless = gaps(&run(
            &mut s,
            &nodes,
            t1,
            Duration::from_secs(6),
            false,
            FAILOVER,
        ));
        assert!(leaderless.len() >= 4, "{leaderless:?}");
        assert!(leaderless.iter().all(|g| near(*g, 1.0)), "{leaderless:?}");
        // Steady again, still failing: back at the cap; its return is seen within it.
        let t2 = t1 + Duration::from_secs(6);
        run(&mut s, &nodes, t2, Duration::from_secs(25), false, NORMAL);
        let back = t2 + Duration::from_secs(25);
        let answered = run(&mut s, &nodes, back, Duration::from_secs(15), true, NORMAL);
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
        // The new leader that hangs its polls while it becomes active (the case for overlapping polls).
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
                let due = s.due(nodes, t, Pace::Normal(interval), far);
                if !due.start.is_empty() {
                    assert_eq!(due.start.len(), 3, "a cluster's nodes are polled together");
                    record.push(t);
                }
                for Start { node: i, .. } in due.start {
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
