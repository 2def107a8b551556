//! `ClusterView`: what the agent believes about one cluster, and the pure rules that
//! turn one poll round into the next view.
//!
//! Rules (each one has a unit test below):
//! - **Roles** come from each node's own `/v1/sys/health`; a node that did not answer is
//!   `Unreachable`.
//! - **Leader election by reports**: every node that answers `/v1/sys/leader` with a
//!   non-empty `leader_address` casts one vote. The leader is the address that a strict
//!   majority of those votes name. No majority (a split) means no leader: we never answer
//!   two actives, and we log the disagreement.
//! - **A reported leader we poll ourselves must confirm it**: when the elected address is
//!   one of the polled nodes and that node is not answering as active this round (it was
//!   killed, and the survivors still name it until the election ends), `active` is
//!   withheld rather than answering a dead address. When the leader is not polled (a peer
//!   region behind a load balancer), the majority's report is trusted.
//! - **Staleness**: when no node answers at all, the previous view is kept and marked
//!   stale; the DNS layer serves it for `serve_stale_for` after the last confirmation and
//!   then answers SERVFAIL.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use url::Url;

use super::client::{NodeReport, NodeState};

/// A node's role as the DNS answers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Active,
    Standby,
    PerfStandby,
    Sealed,
    Uninitialized,
    Unreachable,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::PerfStandby => "perf-standby",
            Role::Sealed => "sealed",
            Role::Uninitialized => "uninitialized",
            Role::Unreachable => "unreachable",
        }
    }

    /// Unsealed and initialized: what Consul would list as a healthy `vault` instance.
    pub fn is_serving(self) -> bool {
        matches!(self, Role::Active | Role::Standby | Role::PerfStandby)
    }
}

impl From<NodeState> for Role {
    fn from(s: NodeState) -> Self {
        match s {
            NodeState::Active => Role::Active,
            NodeState::Standby => Role::Standby,
            NodeState::PerfStandby => Role::PerfStandby,
            NodeState::Sealed => Role::Sealed,
            NodeState::Uninitialized => Role::Uninitialized,
        }
    }
}

/// One polled node.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub url: Url,
    /// The IPs the node's configured host resolves to.
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub role: Role,
    /// Wall-clock time of the node's last answer.
    pub last_confirmed: Option<SystemTime>,
    /// Why the last poll failed, if it did.
    pub error: Option<String>,
}

/// The elected leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's `api_addr` as reported.
    pub api_addr: String,
    /// The leader's `cluster_addr` as reported (the :8201 target for the proxy).
    pub cluster_addr: String,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

/// Everything the agent believes about one cluster at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub cluster: String,
    pub leader: Option<Leader>,
    pub members: Vec<Member>,
    /// Nodes are load-balancer addresses: they report the leader but are not members.
    pub load_balanced: bool,
    /// Monotonic time of the last round in which any node answered.
    pub last_confirmed: Option<Instant>,
    /// No node answered in the latest round; this is the last confirmed view.
    pub stale: bool,
    /// Wall-clock time and reason of the last leader change.
    pub leader_changed: Option<(SystemTime, String)>,
    /// Since when the cluster has had no leader (for the "no leader for Xs" log line).
    pub leaderless_since: Option<Instant>,
}

/// How a view may be used to answer at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Confirmed by the latest poll round.
    Fresh,
    /// No node answers, but still within `serve_stale_for` of the last confirmation.
    Stale,
    /// Nothing confirmed recently enough (or ever): answer SERVFAIL.
    Unusable,
}

impl ClusterView {
    /// The view before the first poll: no data, unusable.
    pub fn empty(cluster: &str, load_balanced: bool) -> Self {
        Self {
            cluster: cluster.to_string(),
            leader: None,
            members: Vec::new(),
            load_balanced,
            last_confirmed: None,
            stale: false,
            leader_changed: None,
            leaderless_since: None,
        }
    }

    pub fn freshness(&self, now: Instant, serve_stale_for: Duration) -> Freshness {
        match self.last_confirmed {
            None => Freshness::Unusable,
            Some(_) if !self.stale => Freshness::Fresh,
            Some(t) if now.saturating_duration_since(t) <= serve_stale_for => Freshness::Stale,
            Some(_) => Freshness::Unusable,
        }
    }

    /// Members with the given role, in configured order (empty for load-balanced clusters,
    /// whose "members" are load balancers).
    pub fn members_with(&self, role: Role) -> impl Iterator<Item = &Member> {
        let lb = self.load_balanced;
        self.members.iter().filter(move |m| !lb && m.role == role)
    }
}

/// One node's poll result, with the addresses its configured host resolved to.
#[derive(Debug, Clone)]
pub struct Polled {
    pub url: Url,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub report: NodeReport,
}

/// The outcome of counting leader reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// `(api_addr, cluster_addr)` of the majority's leader.
    pub winner: Option<(String, String)>,
    /// Set when reachable nodes disagree: every distinct report with its vote count.
    pub disagreement: Option<Vec<(String, usize)>>,
}

/// Counts `leader_address` reports; a strict majority of the reports wins.
pub fn elect(polled: &[Polled]) -> Election {
    let mut tally: Vec<(String, String, usize)> = Vec::new();
    for p in polled {
        let Ok(Some(report)) = &p.report.leader else {
            continue;
        };
        let addr = report.leader_address.trim();
        if addr.is_empty() {
            continue;
        }
        match tally.iter_mut().find(|(a, _, _)| a == addr) {
            Some(entry) => {
                entry.2 += 1;
                if entry.1.is_empty() {
                    entry.1 = report.leader_cluster_address.clone();
                }
            }
            None => tally.push((addr.to_string(), report.leader_cluster_address.clone(), 1)),
        }
    }
    let total: usize = tally.iter().map(|t| t.2).sum();
    let disagreement =
        (tally.len() > 1).then(|| tally.iter().map(|(a, _, n)| (a.clone(), *n)).collect());
    let winner = tally
        .iter()
        .find(|(_, _, n)| *n * 2 > total)
        .map(|(a, c, _)| (a.clone(), c.clone()));
    Election {
        winner,
        disagreement,
    }
}

/// The elected leader with its address resolved (by the watcher, which may need DNS).
#[derive(Debug, Clone)]
pub struct ResolvedLeader {
    pub api_addr: String,
    pub cluster_addr: String,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

/// What changed between two views, for logs (and later metrics).
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

/// Builds the next view from one poll round.
pub fn next_view(
    prev: &ClusterView,
    polled: Vec<Polled>,
    leader: Option<ResolvedLeader>,
    now: Instant,
    wall: SystemTime,
) -> (ClusterView, Vec<ViewEvent>) {
    let mut events = Vec::new();
    let any_answer = polled
        .iter()
        .any(|p| p.report.health.is_ok() || p.report.leader.is_ok());

    if !any_answer {
        // Keep the last confirmed view; record why each node failed.
        let mut view = prev.clone();
        if !view.stale {
            events.push(if view.last_confirmed.is_some() {
                ViewEvent::BecameStale
            } else {
                ViewEvent::NoViewYet
            });
        }
        view.stale = true;
        for p in &polled {
            if let Some(m) = view.members.iter_mut().find(|m| m.url == p.url) {
                m.error = p.report.health.as_ref().err().map(|e| e.to_string());
            }
        }
        if view.members.is_empty() {
            view.members = polled.iter().map(|p| unreachable_member(p, None)).collect();
        }
        return (view, events);
    }
    if prev.stale {
        events.push(ViewEvent::Recovered);
    }

    let members: Vec<Member> = polled
        .iter()
        .map(|p| {
            let previous = prev.members.iter().find(|m| m.url == p.url);
            match &p.report.health {
                Ok(state) => Member {
                    url: p.url.clone(),
                    addrs: p.addrs.clone(),
                    port: p.port,
                    role: Role::from(*state),
                    last_confirmed: Some(wall),
                    error: None,
                },
                Err(_) => unreachable_member(p, previous.and_then(|m| m.last_confirmed)),
            }
        })
        .collect();

    // A leader we poll ourselves must say it is active.
    let mut withheld = None;
    let leader = leader.and_then(|l| {
        if prev.load_balanced {
            return Some(l);
        }
        let polled_as = members
            .iter()
            .find(|m| m.port == l.port && m.addrs.iter().any(|a| l.addrs.contains(a)));
        match polled_as {
            Some(m) if m.role != Role::Active => {
                withheld = Some(format!(
                    "reported leader {} is {} when polled",
                    l.api_addr,
                    m.role.as_str()
                ));
                None
            }
            _ => Some(l),
        }
    });
    let leader = leader.map(|l| Leader {
        api_addr: l.api_addr,
        cluster_addr: l.cluster_addr,
        addrs: l.addrs,
        port: l.port,
    });

    let mut view = ClusterView {
        cluster: prev.cluster.clone(),
        leader,
        members,
        load_balanced: prev.load_balanced,
        last_confirmed: Some(now),
        stale: false,
        leader_changed: prev.leader_changed.clone(),
        leaderless_since: prev.leaderless_since,
    };

    let old = prev.leader.as_ref().map(|l| l.api_addr.clone());
    let new = view.leader.as_ref().map(|l| l.api_addr.clone());
    let first_view = prev.last_confirmed.is_none();
    if old != new || (first_view && new.is_none()) {
        let reason = match (&old, &new) {
            (_, Some(n)) if first_view => format!("first view: {n} leads"),
            (_, Some(n)) => format!("majority of nodes now report {n}"),
            (_, None) => withheld.unwrap_or_else(|| "no majority of nodes reports a leader".into()),
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
        view.leader_changed = Some((wall, reason.clone()));
        events.push(ViewEvent::LeaderChanged {
            old,
            new,
            leaderless_for,
            reason,
        });
    }
    (view, events)
}

fn unreachable_member(p: &Polled, last_confirmed: Option<SystemTime>) -> Member {
    Member {
        url: p.url.clone(),
        addrs: p.addrs.clone(),
        port: p.port,
        role: Role::Unreachable,
        last_confirmed,
        error: p.report.health.as_ref().err().map(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::client::{LeaderReport, PollError};

    fn node(i: u8, health: Result<NodeState, PollError>, leader: Option<&str>) -> Polled {
        let url: Url = format!("http://127.0.0.{i}:8200").parse().unwrap();
        let leader = match (&health, leader) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), l) => Ok(Some(LeaderReport {
                is_self: l == Some(&format!("http://127.0.0.{i}:8200")[..]),
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
            report: NodeReport { health, leader },
        }
    }

    fn down(i: u8) -> Polled {
        node(i, Err(PollError::Connect("refused".into())), None)
    }

    fn resolved(e: &Election) -> Option<ResolvedLeader> {
        e.winner.as_ref().map(|(api, cl)| {
            let url: Url = api.parse().unwrap();
            ResolvedLeader {
                api_addr: api.clone(),
                cluster_addr: cl.clone(),
                addrs: vec![url.host_str().unwrap().parse().unwrap()],
                port: url.port().unwrap(),
            }
        })
    }

    fn round(
        prev: &ClusterView,
        polled: Vec<Polled>,
        now: Instant,
    ) -> (ClusterView, Vec<ViewEvent>) {
        let e = elect(&polled);
        next_view(prev, polled, resolved(&e), now, SystemTime::now())
    }

    const L1: &str = "http://127.0.0.1:8200";
    const L2: &str = "http://127.0.0.2:8200";

    #[test]
    fn healthy_cluster_has_one_leader_and_roles() {
        let prev = ClusterView::empty("dc1", false);
        let (v, ev) = round(
            &prev,
            vec![
                node(1, Ok(NodeState::Active), Some(L1)),
                node(2, Ok(NodeState::Standby), Some(L1)),
                node(3, Ok(NodeState::Standby), Some(L1)),
            ],
            Instant::now(),
        );
        let l = v.leader.as_ref().unwrap();
        assert_eq!(l.api_addr, L1);
        assert_eq!(l.cluster_addr, "https://127.0.0.1:8201");
        assert_eq!(v.members_with(Role::Standby).count(), 2);
        assert!(matches!(&ev[0], ViewEvent::LeaderChanged { new: Some(n), .. } if n == L1));
    }

    #[test]
    fn split_brain_majority_wins_and_is_logged() {
        let polled = vec![
            node(1, Ok(NodeState::Active), Some(L1)),
            node(2, Ok(NodeState::Active), Some(L2)),
            node(3, Ok(NodeState::Standby), Some(L1)),
        ];
        let e = elect(&polled);
        assert_eq!(e.winner.as_ref().unwrap().0, L1);
        assert_eq!(e.disagreement.as_ref().unwrap().len(), 2);
        let (v, _) = next_view(
            &ClusterView::empty("dc1", false),
            polled,
            resolved(&e),
            Instant::now(),
            SystemTime::now(),
        );
        assert_eq!(v.leader.unwrap().api_addr, L1);
    }

    #[test]
    fn even_split_answers_no_leader() {
        let polled = vec![
            node(1, Ok(NodeState::Active), Some(L1)),
            node(2, Ok(NodeState::Active), Some(L2)),
        ];
        let e = elect(&polled);
        assert_eq!(e.winner, None);
        assert!(e.disagreement.is_some());
    }

    #[test]
    fn dead_leader_still_reported_by_survivors_is_withheld() {
        let t0 = Instant::now();
        let (v1, _) = round(
            &ClusterView::empty("dc1", false),
            vec![
                node(1, Ok(NodeState::Active), Some(L1)),
                node(2, Ok(NodeState::Standby), Some(L1)),
                node(3, Ok(NodeState::Standby), Some(L1)),
            ],
            t0,
        );
        // Node 1 killed: survivors still name it until the election ends.
        let (v2, ev) = round(
            &v1,
            vec![
                down(1),
                node(2, Ok(NodeState::Standby), Some(L1)),
                node(3, Ok(NodeState::Standby), Some("")),
            ],
            t0 + Duration::from_millis(250),
        );
        assert_eq!(v2.leader, None);
        assert!(
            matches!(&ev[0], ViewEvent::LeaderChanged { new: None, reason, .. } if reason.contains("unreachable"))
        );
        // Node 2 wins the election.
        let (v3, ev) = round(
            &v2,
            vec![
                down(1),
                node(2, Ok(NodeState::Active), Some(L2)),
                node(3, Ok(NodeState::Standby), Some(L2)),
            ],
            t0 + Duration::from_millis(2500),
        );
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
    fn load_balanced_peer_trusts_the_report() {
        let lb = node(9, Ok(NodeState::Standby), Some("http://10.1.2.3:8200"));
        let (v, _) = round(&ClusterView::empty("peer", true), vec![lb], Instant::now());
        let l = v.leader.as_ref().unwrap();
        assert_eq!(l.addrs, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            v.members_with(Role::Standby).count(),
            0,
            "an LB is not a member"
        );
    }

    #[test]
    fn unpolled_leader_is_trusted_even_without_lb_flag() {
        let (v, _) = round(
            &ClusterView::empty("peer", false),
            vec![node(
                9,
                Ok(NodeState::Standby),
                Some("http://10.1.2.3:8200"),
            )],
            Instant::now(),
        );
        assert!(v.leader.is_some());
    }

    #[test]
    fn stale_then_unusable() {
        let t0 = Instant::now();
        let window = Duration::from_secs(5);
        let (v1, _) = round(
            &ClusterView::empty("dc1", false),
            vec![node(1, Ok(NodeState::Active), Some(L1))],
            t0,
        );
        assert_eq!(v1.freshness(t0, window), Freshness::Fresh);
        let (v2, ev) = round(&v1, vec![down(1)], t0 + Duration::from_secs(1));
        assert_eq!(ev, vec![ViewEvent::BecameStale]);
        assert!(v2.stale);
        assert_eq!(v2.leader.as_ref().unwrap().api_addr, L1, "last view kept");
        assert_eq!(
            v2.freshness(t0 + Duration::from_secs(4), window),
            Freshness::Stale
        );
        assert_eq!(
            v2.freshness(t0 + Duration::from_secs(6), window),
            Freshness::Unusable
        );
        let (v3, ev) = round(
            &v2,
            vec![node(1, Ok(NodeState::Active), Some(L1))],
            t0 + Duration::from_secs(7),
        );
        assert_eq!(ev, vec![ViewEvent::Recovered]);
        assert_eq!(
            v3.freshness(t0 + Duration::from_secs(7), window),
            Freshness::Fresh
        );
    }

    #[test]
    fn never_confirmed_is_unusable() {
        let v = ClusterView::empty("dc1", false);
        assert_eq!(
            v.freshness(Instant::now(), Duration::from_secs(60)),
            Freshness::Unusable
        );
        let (v, _) = round(&v, vec![down(1)], Instant::now());
        assert_eq!(
            v.freshness(Instant::now(), Duration::from_secs(60)),
            Freshness::Unusable
        );
    }

    #[test]
    fn sealed_node_is_not_serving() {
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![
                node(1, Ok(NodeState::Active), Some(L1)),
                node(2, Ok(NodeState::Sealed), None),
            ],
            Instant::now(),
        );
        assert_eq!(v.members[1].role, Role::Sealed);
        assert!(!v.members[1].role.is_serving());
        assert_eq!(v.members_with(Role::Standby).count(), 0);
    }
}
