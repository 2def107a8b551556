//! The pure rules that turn the nodes' latest reports into a cluster's next
//! [`ClusterView`]: no I/O, time passed in.
//!
//! Rules (each one has a unit test below):
//! - **Reports age out.** The watcher keeps each node's latest report; one older than
//!   `poll_interval + max(poll_interval, connect_timeout)` (a live node is never that
//!   overdue) counts as no answer. Nodes are polled independently, so one node that
//!   stops answering never holds back the others' reports.
//! - **Roles** come from each node's `/v1/sys/health`; one with no current answer is
//!   `Unreachable`.
//! - **Quorum of configured members**: every node answering `/v1/sys/leader` with a
//!   non-empty `leader_address` casts one vote. The leader is the address named by a
//!   strict majority of the *configured* nodes (2 of 3, 3 of 5, 1 of 1), so an agent that
//!   hears only a minority (it is partitioned with one member) answers no leader rather
//!   than vouching for the one member it hears. A node with `ha_enabled: false` that is
//!   active votes for itself (a single server without HA storage leads alone). For a
//!   load-balanced peer (`load_balanced = true`) the nodes are load-balancer addresses,
//!   not members: a majority of the reports that arrive wins.
//! - **A reported leader we poll ourselves must confirm it**: when the elected address is
//!   one of the polled nodes and that node is not answering as active (it was killed or
//!   cut off, and the others still name it until their election ends), `active` is
//!   withheld rather than answering a dead address. When the leader is not polled (a peer
//!   region behind a load balancer), the majority's report is trusted.
//! - **Staleness**: when no node answers, the previous view is kept, marked stale, and
//!   served for `serve_stale_for` after the last confirmation; then SERVFAIL.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use url::Url;

use super::client::{NodeReport, PollError};
use super::modes::Modes;
use super::view::{ClusterView, Leader, LeaderChange, Member, NoLeader, Role, Votes};

/// One node's latest report, with the addresses its configured host resolved to.
#[derive(Debug, Clone)]
pub struct Polled {
    pub url: Url,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub report: NodeReport,
    /// When the report arrived.
    pub at: Instant,
    /// When the health in `report` was heard (it may be carried over from an earlier
    /// poll: see `probe`); None when there is none.
    pub health_heard: Option<Instant>,
    pub wall: SystemTime,
}

impl Polled {
    /// Whether the node answered either endpoint.
    pub fn answered(&self) -> bool {
        self.report.health.is_ok() || self.report.leader.is_ok()
    }

    /// Whether `other` says what this report says (times aside): the view built from
    /// it would answer the same.
    pub fn says_the_same(&self, other: &Polled) -> bool {
        self.report == other.report && self.addrs == other.addrs && self.port == other.port
    }

    /// A report without an answer (`why`), at `at`, keeping the addresses of the node's
    /// `previous` report: a stand-in for a node not heard, or a poll given up on.
    pub fn unanswered(url: &Url, previous: Option<&Polled>, why: PollError, at: Instant) -> Self {
        Polled {
            url: url.clone(),
            addrs: previous.map(|p| p.addrs.clone()).unwrap_or_default(),
            port: previous.map_or_else(|| url.port_or_known_default().unwrap_or(8200), |p| p.port),
            report: NodeReport {
                health: Err(why.clone()),
                replication: Modes::default(),
                leader: Err(why),
            },
            at,
            health_heard: None,
            // Never read: only answered reports carry a time.
            wall: SystemTime::UNIX_EPOCH,
        }
    }

    /// The address this node stands for as a leader: its configured URL, as Vault
    /// writes an `api_addr` (no trailing slash).
    fn own_api_addr(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_string()
    }
}

/// The report each configured node counts with at `now`: its latest one while it is
/// younger than `max_age` (or failed: that is no answer at any age), else a stand-in
/// that says it was not heard (never polled yet, or its answer aged out), so every
/// configured node is counted exactly once.
pub fn current(
    nodes: &[Url],
    latest: &[Option<Polled>],
    now: Instant,
    max_age: Duration,
) -> Vec<Polled> {
    nodes
        .iter()
        .zip(latest)
        .map(|(url, p)| match p {
            // A failed poll is no answer however old; it keeps saying why.
            Some(p) if !p.answered() || now.saturating_duration_since(p.at) <= max_age => p.clone(),
            Some(p) => Polled::unanswered(
                url,
                Some(p),
                PollError::Unheard(now.saturating_duration_since(p.at)),
                now,
            ),
            None => Polled::unanswered(url, None, PollError::NotYet, now),
        })
        .collect()
}

/// For each node, whether some node's latest report names it as the leader (by its
/// configured URL): a leader being elected or becoming active, whose polls may hang
/// or fail for a while, must not be backed off (see `poll::Schedule`).
pub fn named(latest: &[Option<Polled>]) -> Vec<bool> {
    let votes: Vec<&str> = latest
        .iter()
        .flatten()
        .filter_map(|p| match &p.report.leader {
            Ok(Some(l)) => Some(l.leader_address.trim().trim_end_matches('/')),
            _ => None,
        })
        .collect();
    latest
        .iter()
        .map(|p| {
            p.as_ref()
                .is_some_and(|p| votes.contains(&p.own_api_addr().as_str()))
        })
        .collect()
}

/// The leader a quorum names, as its nodes reported it (before any lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elected {
    /// The leader's `api_addr`.
    pub api_addr: String,
    /// Its `cluster_addr`, empty when no node reported one.
    pub cluster_addr: String,
}

/// The outcome of counting leader reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The leader a quorum names, or why there is none.
    pub winner: Result<Elected, NoLeader>,
    /// Set when answering nodes disagree: every distinct report with its vote count.
    pub disagreement: Option<Vec<Votes>>,
}

/// Counts `leader_address` reports, one per node in `polled` (one entry per configured
/// node, see [`current`]). See the module docs for the quorum rule, and
/// `redacted_claim` for clusters whose listeners redact the addresses.
pub fn elect(polled: &[Polled], load_balanced: bool) -> Election {
    let (tally, heard) = tally(polled);
    let configured = polled.len();
    let votes: usize = tally.iter().map(|t| t.2).sum();
    // Members must be a majority of the configured list; load balancers only of the
    // reports that arrived.
    let quorum_of = if load_balanced { votes } else { configured };
    let disagreement =
        (tally.len() > 1).then(|| tally.iter().map(|(a, _, n)| Votes::new(a, *n)).collect());
    let winner = match tally.iter().find(|(_, _, n)| *n * 2 > quorum_of) {
        Some((a, c, _)) => Ok(Elected {
            api_addr: a.clone(),
            cluster_addr: c.clone(),
        }),
        None if !load_balanced && heard * 2 <= configured => Err(NoLeader::Unheard {
            unheard: configured - heard,
            configured,
        }),
        None if tally.is_empty() && !load_balanced => redacted_claim(polled, configured),
        None => Err(NoLeader::NoMajority {
            reports: tally.iter().map(|(a, _, n)| Votes::new(a, *n)).collect(),
            configured,
        }),
    };
    Election {
        winner,
        disagreement,
    }
}

/// Each leader address named, with its cluster address and how many members name it;
/// and how many members answered at all (a removed node is no member: what it still
/// says about the leader is from before its removal).
fn tally(polled: &[Polled]) -> (Vec<(String, String, usize)>, usize) {
    let mut tally: Vec<(String, String, usize)> = Vec::new();
    let mut heard = 0;
    for p in polled {
        let Ok(Some(report)) = &p.report.leader else {
            continue;
        };
        if p.report.health == Ok(Role::Removed) {
            continue;
        }
        heard += 1;
        let (addr, cluster_addr) = if !report.ha_enabled {
            // Not part of an HA cluster: an active node leads itself, others lead nobody.
            if p.report.health != Ok(Role::Active) {
                continue;
            }
            (p.own_api_addr(), String::new())
        } else {
            (
                report.leader_address.trim().to_string(),
                report.leader_cluster_address.clone(),
            )
        };
        if addr.is_empty() {
            continue;
        }
        match tally.iter_mut().find(|(a, _, _)| *a == addr) {
            Some(entry) => {
                entry.2 += 1;
                if entry.1.is_empty() {
                    entry.1 = cluster_addr;
                }
            }
            None => tally.push((addr, cluster_addr, 1)),
        }
    }
    (tally, heard)
}

/// **Redacted addresses** (Vault 1.17+ `redact_addresses` on the listener: every
/// `leader_address` is empty to callers without a token). When a majority of the
/// configured members answers and none of them names any leader, the active node is
/// the one member that says `is_self: true`: its address is its configured URL, its
/// cluster address left to the cluster's `cluster_port`. Two claimants name nobody.
///
/// Weaker than the vote: a claim is one node's word about itself. A leader cut off from
/// its quorum keeps claiming until raft makes it step down, so while it is still heard
/// and the new leader is not, it is named. Without redaction the majority's vote rules
/// that out; here only "no other member claims" guards it. Load-balanced peers
/// never get here: a claim through a load balancer names the balancer.
fn redacted_claim(polled: &[Polled], configured: usize) -> Result<Elected, NoLeader> {
    let claimants: Vec<String> = polled
        .iter()
        .filter(|p| p.report.health != Ok(Role::Removed))
        .filter(|p| matches!(&p.report.leader, Ok(Some(l)) if l.ha_enabled && l.is_self))
        .map(Polled::own_api_addr)
        .collect();
    match claimants.as_slice() {
        [one] => Ok(Elected {
            api_addr: one.clone(),
            cluster_addr: String::new(),
        }),
        several => Err(NoLeader::NoMajority {
            reports: several.iter().map(|a| Votes::new(a, 1)).collect(),
            configured,
        }),
    }
}

/// What changed between two views, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewEvent {
    LeaderChanged {
        old: Option<String>,
        new: Option<String>,
        /// How long the cluster had no leader before this change, if it had none.
        leaderless_for: Option<Duration>,
        reason: String,
    },
    /// No node answers, and none ever has: nothing to serve.
    NoViewYet,
    BecameStale,
    Recovered,
}

/// A round's view, and what changed since the last (for the log lines and metrics).
pub struct NextView {
    pub view: ClusterView,
    pub events: Vec<ViewEvent>,
}

/// Builds the next view from every configured node's current report (see [`current`])
/// and the leader the election chose (resolved by the watcher, which may need DNS).
pub fn next_view(
    prev: &ClusterView,
    polled: Vec<Polled>,
    leader: Result<Leader, NoLeader>,
    now: Instant,
) -> NextView {
    let latest_answer = polled.iter().filter(|p| p.answered()).map(|p| p.at).max();
    let Some(latest_answer) = latest_answer else {
        return no_answer(prev, &polled);
    };
    let wall = polled
        .iter()
        .filter(|p| p.answered())
        .map(|p| p.wall)
        .max()
        .unwrap_or_else(SystemTime::now);
    let mut events = Vec::new();
    if prev.stale {
        events.push(ViewEvent::Recovered);
    }
    let members = members(prev, &polled);
    let (leader, no_leader) = match confirmed(leader, &members, prev.load_balanced) {
        Ok(l) => (Some(l), None),
        Err(why) => (None, Some(why)),
    };
    let mut view = ClusterView {
        cluster: prev.cluster.clone(),
        leader,
        no_leader,
        members,
        load_balanced: prev.load_balanced,
        last_confirmed: Some(latest_answer.max(prev.last_confirmed.unwrap_or(latest_answer))),
        stale: false,
        leader_changed: prev.leader_changed.clone(),
        leaderless_since: prev.leaderless_since,
        serve_stale_for: prev.serve_stale_for,
        streams: prev.streams.clone(),
    };
    events.extend(leader_change(prev, &mut view, wall, now));
    NextView { view, events }
}

/// No node answers: the last confirmed view is kept, marked stale, with why each
/// node has no answer.
fn no_answer(prev: &ClusterView, polled: &[Polled]) -> NextView {
    let mut events = Vec::new();
    let mut view = prev.clone();
    if !view.stale {
        events.push(if view.last_confirmed.is_some() {
            ViewEvent::BecameStale
        } else {
            ViewEvent::NoViewYet
        });
    }
    view.stale = true;
    for p in polled {
        if let Some(m) = view.members.iter_mut().find(|m| m.url == p.url) {
            m.error = p.report.health.as_ref().err().map(|e| e.to_string());
        }
    }
    if view.members.is_empty() {
        view.members = polled.iter().map(|p| unreachable_member(p, None)).collect();
    }
    NextView { view, events }
}

/// Each configured node as a member: its role from its own health answer, or
/// unreachable (keeping when it was last confirmed).
fn members(prev: &ClusterView, polled: &[Polled]) -> Vec<Member> {
    polled
        .iter()
        .map(|p| {
            let previous = prev.members.iter().find(|m| m.url == p.url);
            match &p.report.health {
                Ok(state) => Member {
                    url: p.url.clone(),
                    addrs: p.addrs.clone(),
                    port: p.port,
                    role: *state,
                    replication: p.report.replication,
                    last_confirmed: Some(p.wall),
                    error: None,
                },
                Err(_) => unreachable_member(p, previous.and_then(|m| m.last_confirmed)),
            }
        })
        .collect()
}

/// A leader we poll ourselves must say it is active (a load-balanced peer's report is
/// trusted: its nodes are not members).
fn confirmed(
    leader: Result<Leader, NoLeader>,
    members: &[Member],
    load_balanced: bool,
) -> Result<Leader, NoLeader> {
    let l = leader?;
    if load_balanced {
        return Ok(l);
    }
    let polled_as = members
        .iter()
        .find(|m| m.port == l.port && m.addrs.iter().any(|a| l.addrs.contains(a)));
    match polled_as {
        Some(m) if m.role != Role::Active => Err(NoLeader::Unconfirmed {
            leader: l.api_addr,
            role: m.role,
        }),
        _ => Ok(l),
    }
}

/// The leader change from `prev` to `view`, if any (a first view without a leader is
/// one too): recorded in the view (when, why, since when leaderless) and returned as
/// an event.
fn leader_change(
    prev: &ClusterView,
    view: &mut ClusterView,
    wall: SystemTime,
    now: Instant,
) -> Option<ViewEvent> {
    let old = prev.leader.as_ref().map(|l| l.api_addr.clone());
    let new = view.leader.as_ref().map(|l| l.api_addr.clone());
    let first_view = prev.last_confirmed.is_none();
    if old == new && !(first_view && new.is_none()) {
        return None;
    }
    let reason = match (&new, &view.no_leader) {
        (Some(n), _) if first_view => format!("first view: {n} leads"),
        (Some(n), _) => format!("a majority of members now report {n}"),
        (None, Some(why)) => why.to_string(),
        (None, None) => "no leader".into(),
    };
    let leaderless_for = match (&old, prev.leaderless_since) {
        (None, Some(since)) => Some(now.saturating_duration_since(since)),
        _ => None,
    };
    view.leaderless_since = if new.is_none() {
        Some(prev.leaderless_since.unwrap_or(now))
    } else {
        None
    };
    view.leader_changed = Some(LeaderChange {
        at: wall,
        reason: reason.clone(),
    });
    Some(ViewEvent::LeaderChanged {
        old,
        new,
        leaderless_for,
        reason,
    })
}

fn unreachable_member(p: &Polled, last_confirmed: Option<SystemTime>) -> Member {
    Member {
        url: p.url.clone(),
        addrs: p.addrs.clone(),
        port: p.port,
        role: Role::Unreachable,
        replication: Modes::default(),
        last_confirmed,
        error: p.report.health.as_ref().err().map(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::client::{LeaderReport, PollError};
    use crate::vault::view::Freshness;

    fn node_at(i: u8, health: Result<Role, PollError>, leader: Option<&str>) -> Polled {
        let url: Url = format!("http://127.0.0.{i}:8200").parse().unwrap();
        let leader = match (&health, leader) {
            (Err(e), _) => Err(e.clone()),
            (Ok(state), l) => Ok(Some(LeaderReport {
                ha_enabled: true,
                is_self: *state == Role::Active,
                performance_standby: false,
                leader_address: l.unwrap_or("").to_string(),
                leader_cluster_address: l
                    .map(|l| l.replace("http:", "https:").replace(":8200", ":8201"))
                    .unwrap_or_default(),
            })),
        };
        Polled {
            addrs: vec![url.host_str().unwrap().parse().unwrap()],
            port: 8200,
            url,
            report: NodeReport {
                health,
                replication: Modes::default(),
                leader,
            },
            at: Instant::now(),
            health_heard: Some(Instant::now()),
            wall: SystemTime::now(),
        }
    }

    fn node(i: u8, health: Role, leader: Option<&str>) -> Polled {
        node_at(i, Ok(health), leader)
    }

    /// Every leader change is recorded once, with its reason: a first view names its
    /// leader as such, a later change says the majority moved; a first view without a
    /// leader is a change too (from nothing); the same leader again is none.
    #[test]
    fn leader_changes_are_recorded_once_with_their_reason() {
        let changes = |events: &[ViewEvent]| -> Vec<(Option<String>, Option<String>)> {
            let changed = events.iter().filter_map(|e| match e {
                ViewEvent::LeaderChanged { old, new, .. } => Some((old.clone(), new.clone())),
                _ => None,
            });
            changed.collect()
        };
        let led_by = |leader: &str, active: u8| -> Vec<Polled> {
            let role = |i: u8| {
                if i == active {
                    Role::Active
                } else {
                    Role::Standby
                }
            };
            (1..=3).map(|i| node(i, role(i), Some(leader))).collect()
        };
        let (v1, e1) = round(
            &ClusterView::empty("dc1", false),
            led_by(L1, 1),
            Instant::now(),
        );
        assert_eq!(changes(&e1), vec![(None, Some(L1.to_string()))]);
        let reason = |v: &ClusterView| v.leader_changed.as_ref().unwrap().reason.clone();
        assert_eq!(reason(&v1), format!("first view: {L1} leads"));
        let (v2, e2) = round(&v1, led_by(L1, 1), Instant::now());
        assert!(changes(&e2).is_empty(), "the same leader is no change");
        let (v3, e3) = round(&v2, led_by(L2, 2), Instant::now());
        assert_eq!(
            changes(&e3),
            vec![(Some(L1.to_string()), Some(L2.to_string()))]
        );
        assert_eq!(
            reason(&v3),
            format!("a majority of members now report {L2}")
        );
        let no_leader: Vec<Polled> = (1..=3).map(|i| node(i, Role::Standby, None)).collect();
        let (v0, e0) = round(
            &ClusterView::empty("dc1", false),
            no_leader.clone(),
            Instant::now(),
        );
        let (_, e00) = round(&v0, no_leader, Instant::now());
        assert!(changes(&e00).is_empty(), "still no leader: no change");
        assert_eq!(
            changes(&e0),
            vec![(None, None)],
            "a first view without a leader"
        );
    }

    /// With no node answering, each member keeps its own error (in `/status`), and a
    /// node that stops answering keeps its own last confirmation, not another's.
    #[test]
    fn each_member_keeps_its_own_error_and_last_confirmation() {
        use std::time::UNIX_EPOCH;
        let (mut a, mut b) = (
            node(1, Role::Active, Some(L1)),
            node(2, Role::Standby, Some(L1)),
        );
        a.wall = UNIX_EPOCH + Duration::from_secs(100);
        b.wall = UNIX_EPOCH + Duration::from_secs(200);
        let (v1, _) = round(
            &ClusterView::empty("dc1", false),
            vec![a, b.clone()],
            Instant::now(),
        );
        // Node 1 stops answering, node 2 still answers: node 1's last confirmation stays.
        let down = node_at(1, Err(PollError::Connect("refused".into())), None);
        let (v2, _) = round(&v1, vec![down, b], Instant::now());
        assert_eq!(
            v2.members[0].last_confirmed,
            Some(UNIX_EPOCH + Duration::from_secs(100))
        );
        assert_eq!(
            v2.members[1].last_confirmed,
            Some(UNIX_EPOCH + Duration::from_secs(200))
        );
        // Neither answers: the view goes stale, each member with its own error.
        let polled = vec![
            node_at(1, Err(PollError::Connect("refused".into())), None),
            node_at(2, Err(PollError::Timeout(Duration::from_secs(2))), None),
        ];
        let (v3, _) = round(&v2, polled, Instant::now());
        assert!(v3.stale);
        let errors: Vec<String> = v3
            .members
            .iter()
            .map(|m| m.error.clone().unwrap())
            .collect();
        assert!(
            errors[0].contains("refused") && !errors[1].contains("refused"),
            "{errors:?}"
        );
    }

    /// Three of five members heard is a heard majority: with their votes split, there
    /// is no majority for a leader (not "unheard"); two of five is unheard.
    #[test]
    fn three_of_five_heard_is_no_majority_two_of_five_is_unheard() {
        let refused = || Err(PollError::Connect("refused".into()));
        let mut polled = vec![
            node(1, Role::Standby, Some(L1)),
            node(2, Role::Standby, Some(L1)),
            node(3, Role::Standby, Some(L2)),
            node_at(4, refused(), None),
            node_at(5, refused(), None),
        ];
        let e = elect(&polled, false);
        assert!(
            matches!(&e.winner, Err(NoLeader::NoMajority { configured: 5, .. })),
            "{:?}",
            e.winner
        );
        polled[2] = node_at(3, refused(), None);
        let e = elect(&polled, false);
        let unheard = Err(NoLeader::Unheard {
            unheard: 3,
            configured: 5,
        });
        assert_eq!(e.winner, unheard);
    }

    /// A report says the same as another when its answers, addresses and port match,
    /// whenever each was heard; any of them differing is news for the view.
    #[test]
    fn a_report_says_the_same_only_with_the_same_answers_addresses_and_port() {
        let a = node(1, Role::Standby, Some(L1));
        let mut later = a.clone();
        later.at += Duration::from_secs(1);
        later.wall += Duration::from_secs(1);
        assert!(a.says_the_same(&later), "only the times differ");
        let mut other = a.clone();
        other.report.health = Ok(Role::Sealed);
        assert!(!a.says_the_same(&other), "another answer");
        let mut moved = a.clone();
        moved.addrs = vec!["10.0.0.9".parse().unwrap()];
        assert!(!a.says_the_same(&moved), "another address");
        let mut port = a.clone();
        port.port = 8300;
        assert!(!a.says_the_same(&port), "another port");
    }

    /// A node answered when either endpoint did: a sealed node's health answer counts
    /// though its leader answer failed, and the other way round.
    #[test]
    fn a_node_answered_when_either_endpoint_did() {
        let refused = || PollError::Connect("refused".into());
        let mut health_only = node(1, Role::Sealed, None);
        health_only.report.leader = Err(refused());
        assert!(health_only.answered());
        let mut leader_only = node(1, Role::Standby, Some(L1));
        leader_only.report.health = Err(refused());
        assert!(leader_only.answered());
        assert!(!node_at(1, Err(refused()), None).answered());
    }

    fn down(i: u8) -> Polled {
        node_at(i, Err(PollError::Connect("refused".into())), None)
    }

    /// The watcher's resolution step, for IP-literal leaders.
    fn resolved(e: &Election) -> Result<Leader, NoLeader> {
        e.winner.clone().map(
            |Elected {
                 api_addr: api,
                 cluster_addr: cl,
             }| {
                let url: Url = api.parse().unwrap();
                Leader::literal(
                    &api,
                    &cl,
                    vec![url.host_str().unwrap().parse().unwrap()],
                    url.port().unwrap(),
                )
            },
        )
    }

    fn round(
        prev: &ClusterView,
        polled: Vec<Polled>,
        now: Instant,
    ) -> (ClusterView, Vec<ViewEvent>) {
        let e = elect(&polled, prev.load_balanced);
        let next = next_view(prev, polled, resolved(&e), now);
        (next.view, next.events)
    }

    const L1: &str = "http://127.0.0.1:8200";
    const L2: &str = "http://127.0.0.2:8200";

    #[test]
    fn a_node_is_named_when_some_report_names_its_url() {
        let latest = vec![
            Some(node(1, Role::Standby, Some("http://127.0.0.2:8200/"))),
            Some(node(2, Role::Standby, Some(L1))),
            Some(down(3)),
            None,
        ];
        // Node 1 (L1) and node 2 (trailing slash and all) are named; 3 and 4 are not.
        assert_eq!(named(&latest), vec![true, true, false, false]);
    }

    #[test]
    fn healthy_cluster_has_one_leader_and_roles() {
        let prev = ClusterView::empty("dc1", false);
        let (v, ev) = round(
            &prev,
            vec![
                node(1, Role::Active, Some(L1)),
                node(2, Role::Standby, Some(L1)),
                node(3, Role::Standby, Some(L1)),
            ],
            Instant::now(),
        );
        let l = v.leader.as_ref().unwrap();
        assert_eq!(l.api_addr, L1);
        assert_eq!(l.cluster_addr, "https://127.0.0.1:8201");
        assert_eq!(v.no_leader, None);
        assert_eq!(v.members_with(Role::Standby).count(), 2);
        assert!(matches!(&ev[0], ViewEvent::LeaderChanged { new: Some(n), .. } if n == L1));
    }

    #[test]
    fn split_brain_majority_wins_and_is_logged() {
        let polled = vec![
            node(1, Role::Active, Some(L1)),
            node(2, Role::Active, Some(L2)),
            node(3, Role::Standby, Some(L1)),
        ];
        let e = elect(&polled, false);
        assert_eq!(e.winner.as_ref().unwrap().api_addr, L1);
        assert_eq!(e.disagreement.as_ref().unwrap().len(), 2);
        let v = next_view(
            &ClusterView::empty("dc1", false),
            polled,
            resolved(&e),
            Instant::now(),
        )
        .view;
        assert_eq!(v.leader.unwrap().api_addr, L1);
    }

    #[test]
    fn even_split_answers_no_leader() {
        let polled = vec![
            node(1, Role::Active, Some(L1)),
            node(2, Role::Active, Some(L2)),
        ];
        let e = elect(&polled, false);
        assert!(
            matches!(&e.winner, Err(NoLeader::NoMajority { reports, configured: 2 }) if reports.len() == 2)
        );
        assert!(e.disagreement.is_some());
    }

    #[test]
    fn a_leader_needs_a_majority_of_the_configured_members() {
        // Three configured, only one heard (the agent is cut off with node 1): node 1's
        // own word is not enough, however sure it is.
        let polled = vec![node(1, Role::Active, Some(L1)), down(2), down(3)];
        let e = elect(&polled, false);
        assert_eq!(
            e.winner,
            Err(NoLeader::Unheard {
                unheard: 2,
                configured: 3
            })
        );
        assert_eq!(e.winner.unwrap_err().to_string(), "2 of 3 members unheard");
        let (v, ev) = round(&ClusterView::empty("dc1", false), polled, Instant::now());
        assert_eq!(v.leader, None);
        assert!(
            matches!(&ev[0], ViewEvent::LeaderChanged { reason, .. } if reason == "2 of 3 members unheard")
        );
        assert_eq!(v.no_leader.as_ref().map(NoLeader::kind), Some("unheard"));

        // Two of three heard and agreeing: a quorum.
        let polled = vec![
            node(1, Role::Active, Some(L1)),
            node(2, Role::Standby, Some(L1)),
            down(3),
        ];
        assert_eq!(elect(&polled, false).winner.unwrap().api_addr, L1);

        // Two of three heard but disagreeing: none has a majority of three.
        let polled = vec![
            node(1, Role::Active, Some(L1)),
            node(2, Role::Active, Some(L2)),
            down(3),
        ];
        assert!(matches!(
            elect(&polled, false).winner,
            Err(NoLeader::NoMajority { configured: 3, .. })
        ));

        // Five configured (one decommissioned, one down): three agreeing still lead.
        let polled = vec![
            node(1, Role::Active, Some(L1)),
            node(2, Role::Standby, Some(L1)),
            node(3, Role::Standby, Some(L1)),
            down(4),
            down(5),
        ];
        assert_eq!(elect(&polled, false).winner.unwrap().api_addr, L1);
    }

    #[test]
    fn a_node_removed_from_the_cluster_casts_no_vote() {
        // Node 3 was removed (530) and still names its old leader L2; nodes 1 and 2 name
        // L1. Of three configured, two count: L1 leads; L2 is never counted.
        let mut removed = node(3, Role::Removed, Some(L2));
        removed.report.health = Ok(Role::Removed);
        let polled = vec![
            node(1, Role::Active, Some(L1)),
            node(2, Role::Standby, Some(L1)),
            removed.clone(),
        ];
        let e = elect(&polled, false);
        assert_eq!(e.winner.unwrap().api_addr, L1);
        assert_eq!(
            e.disagreement, None,
            "the removed node's vote is not counted"
        );
        // It alone naming a leader, with one member down: not heard enough.
        let polled = vec![node(1, Role::Standby, None), down(2), removed];
        assert!(matches!(
            elect(&polled, false).winner,
            Err(NoLeader::Unheard { unheard: 2, .. })
        ));
        // And it is never confirmed as a leader (its role is not active).
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![
                node(1, Role::Standby, Some("http://127.0.0.3:8200")),
                node(2, Role::Standby, Some("http://127.0.0.3:8200")),
                node(3, Role::Removed, None),
            ],
            Instant::now(),
        );
        assert_eq!(v.leader, None);
        assert_eq!(v.members[2].role, Role::Removed);
    }

    /// A node behind a listener with `redact_addresses = true`: every address empty,
    /// `is_self` as it is.
    fn redacted(i: u8, state: Role) -> Polled {
        let mut p = node(i, state, None);
        p.report.leader = Ok(Some(LeaderReport {
            is_self: state == Role::Active,
            ..LeaderReport::default()
        }));
        p
    }

    #[test]
    fn with_redacted_addresses_the_one_member_that_claims_leads() {
        use Role::{Active, Standby};
        let polled = vec![
            redacted(1, Standby),
            redacted(2, Active),
            redacted(3, Standby),
        ];
        let (v, _) = round(&ClusterView::empty("dc1", false), polled, Instant::now());
        let l = v.leader.clone().expect("the claimant leads");
        assert_eq!(l.api_addr, L2, "its configured URL");
        assert_eq!(l.cluster_addr, "", "left to the cluster's cluster_port");
        // It follows a change of claimant.
        let polled = vec![
            redacted(1, Active),
            redacted(2, Standby),
            redacted(3, Standby),
        ];
        let (v, _) = round(&v, polled, Instant::now());
        assert_eq!(v.leader.unwrap().api_addr, L1);
        // Two claimants: nobody.
        let polled = vec![
            redacted(1, Active),
            redacted(2, Active),
            redacted(3, Standby),
        ];
        let e = elect(&polled, false);
        assert!(
            matches!(&e.winner, Err(NoLeader::NoMajority { reports, .. }) if reports.len() == 2),
            "{e:?}"
        );
        // A claim without a quorum answering: nobody (the claimant may be cut off).
        let polled = vec![redacted(1, Active), down(2), down(3)];
        assert!(matches!(
            elect(&polled, false).winner,
            Err(NoLeader::Unheard { .. })
        ));
        // No claimant (an election): none of the members reports a leader.
        let polled = vec![redacted(1, Standby), redacted(2, Standby)];
        assert!(matches!(
            elect(&polled, false).winner,
            Err(NoLeader::NoMajority { reports, .. }) if reports.is_empty()
        ));
        // A removed node's claim is no claim.
        let mut gone = redacted(3, Active);
        gone.report.health = Ok(Role::Removed);
        let polled = vec![redacted(1, Active), redacted(2, Standby), gone];
        assert_eq!(elect(&polled, false).winner.unwrap().api_addr, L1);
        // Through a load balancer a claim names the balancer: never believed.
        let polled = vec![redacted(1, Active)];
        assert!(elect(&polled, true).winner.is_err());
        // Where any member names a leader, the vote rules as always.
        let polled = vec![
            redacted(1, Active),
            node(2, Standby, Some(L2)),
            redacted(3, Standby),
        ];
        assert!(elect(&polled, false).winner.is_err());
    }

    #[test]
    fn a_one_node_cluster_is_its_own_quorum() {
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![node(1, Role::Active, Some(L1))],
            Instant::now(),
        );
        assert_eq!(v.leader.unwrap().api_addr, L1);
    }

    #[test]
    fn an_active_node_without_ha_leads_alone() {
        // `bao server -dev`: {"ha_enabled": false} and health 200.
        let mut solo = node(1, Role::Active, None);
        solo.report.leader = Ok(Some(LeaderReport {
            ha_enabled: false,
            ..LeaderReport::default()
        }));
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![solo.clone()],
            Instant::now(),
        );
        let l = v.leader.expect("a non-HA active node is the active node");
        assert_eq!(l.api_addr, L1);
        assert_eq!(l.cluster_addr, "", "no cluster port without HA");

        // Sealed, it leads nobody.
        solo.report.health = Ok(Role::Sealed);
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![solo],
            Instant::now(),
        );
        assert_eq!(v.leader, None);
    }

    #[test]
    fn dead_leader_still_reported_by_survivors_is_withheld() {
        use Role::{Active, Standby};
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let all_name_1 = vec![
            node(1, Active, Some(L1)),
            node(2, Standby, Some(L1)),
            node(3, Standby, Some(L1)),
        ];
        let (v1, _) = round(&ClusterView::empty("dc1", false), all_name_1, t0);
        // Node 1 killed: the survivors still name it until the election ends.
        let survivors = vec![
            down(1),
            node(2, Standby, Some(L1)),
            node(3, Standby, Some(L1)),
        ];
        let (v2, ev) = round(&v1, survivors, t0 + ms(250));
        assert_eq!(v2.leader, None);
        assert!(
            matches!(&ev[0], ViewEvent::LeaderChanged { new: None, reason, .. } if reason.contains("unreachable")),
            "{ev:?}"
        );
        assert_eq!(
            v2.no_leader.as_ref().map(NoLeader::kind),
            Some("unconfirmed")
        );
        // Node 2 wins the election.
        let elected = vec![
            down(1),
            node(2, Active, Some(L2)),
            node(3, Standby, Some(L2)),
        ];
        let (v3, ev) = round(&v2, elected, t0 + ms(2500));
        assert_eq!(v3.leader.unwrap().api_addr, L2);
        match &ev[0] {
            ViewEvent::LeaderChanged { leaderless_for, .. } => {
                assert_eq!(*leaderless_for, Some(Duration::from_millis(2250)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v3.members[0].role, Role::Unreachable);
        assert!(v3.members[0].last_confirmed.is_some());
    }

    #[test]
    fn reports_age_out_and_never_heard_nodes_count_as_unheard() {
        let nodes: Vec<Url> = (1..=3)
            .map(|i| format!("http://127.0.0.{i}:8200").parse().unwrap())
            .collect();
        let t0 = Instant::now();
        let mut old = node(1, Role::Active, Some(L1));
        old.at = t0;
        let mut fresh = node(2, Role::Standby, Some(L1));
        fresh.at = t0 + Duration::from_secs(3);
        let latest = vec![Some(old), Some(fresh), None];
        let now = t0 + Duration::from_secs(4);
        let cur = current(&nodes, &latest, now, Duration::from_secs(3));
        assert_eq!(cur.len(), 3, "one entry per configured node");
        assert_eq!(
            cur[0].report.health,
            Err(PollError::Unheard(Duration::from_secs(4)))
        );
        assert_eq!(cur[0].addrs, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(cur[1].answered());
        assert_eq!(cur[2].report.health, Err(PollError::NotYet));
        assert_eq!(cur[2].port, 8200);
        // Node 1's old "I lead" no longer counts: one vote of three.
        assert!(matches!(
            elect(&cur, false).winner,
            Err(NoLeader::Unheard { unheard: 2, .. })
        ));
        // A failed poll keeps saying why, however old.
        let mut refused = down(3);
        refused.at = t0;
        let cur = current(
            &nodes,
            &[None, None, Some(refused)],
            now,
            Duration::from_secs(3),
        );
        assert_eq!(
            cur[2].report.health,
            Err(PollError::Connect("refused".into()))
        );
    }

    #[test]
    fn load_balanced_peer_trusts_the_report() {
        let lb = node(9, Role::Standby, Some("http://10.1.2.3:8200"));
        let (v, _) = round(&ClusterView::empty("peer", true), vec![lb], Instant::now());
        let l = v.leader.as_ref().unwrap();
        assert_eq!(l.addrs, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            v.members_with(Role::Standby).count(),
            0,
            "an LB is not a member"
        );
        // Two LB addresses, one down: the one that answers is trusted alone.
        let polled = vec![
            node(8, Role::Standby, Some("http://10.1.2.3:8200")),
            down(9),
        ];
        assert!(elect(&polled, true).winner.is_ok());
    }

    #[test]
    fn unpolled_leader_named_by_the_quorum_is_trusted() {
        let (v, _) = round(
            &ClusterView::empty("peer", false),
            vec![node(9, Role::Standby, Some("http://10.1.2.3:8200"))],
            Instant::now(),
        );
        assert!(v.leader.is_some());
    }

    #[test]
    fn stale_then_unusable() {
        let t0 = Instant::now();
        let mut empty = ClusterView::empty("dc1", false);
        empty.serve_stale_for = Duration::from_secs(5);
        let mut first = node(1, Role::Active, Some(L1));
        first.at = t0;
        let (v1, _) = round(&empty, vec![first], t0);
        assert_eq!(v1.freshness(t0), Freshness::Fresh);
        let (v2, ev) = round(&v1, vec![down(1)], t0 + Duration::from_secs(1));
        assert_eq!(ev, vec![ViewEvent::BecameStale]);
        assert!(v2.stale);
        assert_eq!(v2.leader.as_ref().unwrap().api_addr, L1, "last view kept");
        assert_eq!(v2.freshness(t0 + Duration::from_secs(4)), Freshness::Stale);
        assert_eq!(
            v2.freshness(t0 + Duration::from_secs(6)),
            Freshness::Unusable
        );
        let mut back = node(1, Role::Active, Some(L1));
        back.at = t0 + Duration::from_secs(7);
        let (v3, ev) = round(&v2, vec![back], t0 + Duration::from_secs(7));
        assert_eq!(ev, vec![ViewEvent::Recovered]);
        assert_eq!(v3.freshness(t0 + Duration::from_secs(7)), Freshness::Fresh);
    }

    #[test]
    fn never_confirmed_is_unusable() {
        let v = ClusterView::empty("dc1", false);
        assert_eq!(v.freshness(Instant::now()), Freshness::Unusable);
        let (v, _) = round(&v, vec![down(1)], Instant::now());
        assert_eq!(v.freshness(Instant::now()), Freshness::Unusable);
    }

    #[test]
    fn sealed_node_is_not_serving() {
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![node(1, Role::Active, Some(L1)), node(2, Role::Sealed, None)],
            Instant::now(),
        );
        assert_eq!(v.members[1].role, Role::Sealed);
        assert!(!v.members[1].role.is_serving());
        assert_eq!(v.members_with(Role::Standby).count(), 0);
    }

    #[test]
    fn new_report_times_alone_do_not_change_the_answers() {
        let t0 = Instant::now();
        let polled = || {
            vec![
                node(1, Role::Active, Some(L1)),
                node(2, Role::Standby, Some(L1)),
            ]
        };
        let (v1, _) = round(&ClusterView::empty("dc1", false), polled(), t0);
        let (v2, ev) = round(&v1, polled(), t0 + Duration::from_secs(1));
        assert!(ev.is_empty());
        assert_ne!(v1, v2, "timestamps moved");
        assert!(v1.answers_like(&v2));
        // A role change does change them.
        let (v3, _) = round(
            &v2,
            vec![node(1, Role::Active, Some(L1)), node(2, Role::Sealed, None)],
            t0 + Duration::from_secs(2),
        );
        assert!(!v2.answers_like(&v3));
        // So does going stale.
        let (v4, _) = round(&v3, vec![down(1), down(2)], t0 + Duration::from_secs(3));
        assert!(!v3.answers_like(&v4));
    }
}
