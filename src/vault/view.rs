//! `ClusterView`: what the agent believes about one cluster, and the pure rules that
//! turn the nodes' latest reports into the next view.
//!
//! Rules (each one has a unit test below):
//! - **Reports age out.** The watcher keeps each node's latest report; one older than
//!   `poll_interval + max(poll_interval, connect_timeout)` (a live node is never that
//!   overdue) counts as no answer. Nodes are polled independently, so one node that
//!   stops answering never holds back the others' reports.
//! - **Roles** come from each node's own `/v1/sys/health`; a node without a current
//!   answer is `Unreachable`.
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
//! - **Staleness**: when no node answers at all, the previous view is kept and marked
//!   stale; the DNS layer serves it for `serve_stale_for` after the last confirmation and
//!   then answers SERVFAIL.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use url::Url;

use super::client::{NodeReport, NodeState, PollError};
use super::modes::Modes;

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
    /// The replication modes the node reported (unknown without a current answer).
    pub replication: Modes,
    /// Wall-clock time of the node's last answer.
    pub last_confirmed: Option<SystemTime>,
    /// Why the node has no current answer, if it has none.
    pub error: Option<String>,
}

/// The elected leader, with the addresses its `api_addr` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's `api_addr` as reported.
    pub api_addr: String,
    /// The leader's `cluster_addr` as reported (the :8201 target for the proxy).
    pub cluster_addr: String,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

/// Why a cluster has no leader right now. `kind()` is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoLeader {
    /// Fewer than a majority of the configured members answer `/v1/sys/leader`.
    Unheard { unheard: usize, configured: usize },
    /// No address is named by a majority (an election, or members disagree).
    NoMajority {
        reports: Vec<(String, usize)>,
        configured: usize,
    },
    /// The majority names a node we poll, and that node does not say it is active.
    Unconfirmed { leader: String, role: Role },
    /// The majority's `leader_address` cannot be used.
    Unusable { leader: String, why: String },
}

impl NoLeader {
    pub const KINDS: [&'static str; 4] = ["unheard", "no_majority", "unconfirmed", "unusable"];

    pub fn kind(&self) -> &'static str {
        match self {
            NoLeader::Unheard { .. } => "unheard",
            NoLeader::NoMajority { .. } => "no_majority",
            NoLeader::Unconfirmed { .. } => "unconfirmed",
            NoLeader::Unusable { .. } => "unusable",
        }
    }
}

impl fmt::Display for NoLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoLeader::Unheard {
                unheard,
                configured,
            } => write!(f, "{unheard} of {configured} members unheard"),
            NoLeader::NoMajority {
                reports,
                configured,
            } if reports.is_empty() => {
                write!(f, "none of the {configured} members reports a leader")
            }
            NoLeader::NoMajority {
                reports,
                configured,
            } => {
                write!(f, "no leader named by a majority of {configured} members (")?;
                for (i, (addr, n)) in reports.iter().enumerate() {
                    write!(f, "{}{addr}: {n}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            NoLeader::Unconfirmed { leader, role } => {
                write!(
                    f,
                    "reported leader {leader} is {} when polled",
                    role.as_str()
                )
            }
            NoLeader::Unusable { leader, why } => write!(f, "reported leader {leader}: {why}"),
        }
    }
}

/// Everything the agent believes about one cluster at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub cluster: String,
    pub leader: Option<Leader>,
    /// Why there is no leader (None while there is one, or before the first view).
    pub no_leader: Option<NoLeader>,
    pub members: Vec<Member>,
    /// Nodes are load-balancer addresses: they report the leader but are not members.
    pub load_balanced: bool,
    /// Monotonic time of the latest answer from any node.
    pub last_confirmed: Option<Instant>,
    /// No node has a current answer; this is the last confirmed view.
    pub stale: bool,
    /// Wall-clock time and reason of the last leader change.
    pub leader_changed: Option<(SystemTime, String)>,
    /// Since when the cluster has had no leader (for the "no leader for Xs" log line).
    pub leaderless_since: Option<Instant>,
    /// How long the view may be served once no node answers (the cluster's config). It
    /// travels with the view, so a view passed on (a replication set's virtual cluster)
    /// keeps its own cluster's window.
    pub serve_stale_for: Duration,
}

/// `serve_stale_for` until a watcher sets its cluster's own (the config default).
const DEFAULT_SERVE_STALE_FOR: Duration = Duration::from_secs(30);

/// How a view may be used to answer at a given moment (in `/status`: "fresh",
/// "stale", "unusable").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    /// Confirmed by current reports.
    Fresh,
    /// No node answers, but still within `serve_stale_for` of the last confirmation.
    Stale,
    /// Nothing confirmed recently enough (or ever): answer SERVFAIL.
    Unusable,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Stale => "stale",
            Freshness::Unusable => "unusable",
        }
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl ClusterView {
    /// The view before the first poll: no data, unusable.
    pub fn empty(cluster: &str, load_balanced: bool) -> Self {
        Self {
            cluster: cluster.to_string(),
            leader: None,
            no_leader: None,
            members: Vec::new(),
            load_balanced,
            last_confirmed: None,
            stale: false,
            leader_changed: None,
            leaderless_since: None,
            serve_stale_for: DEFAULT_SERVE_STALE_FOR,
        }
    }

    /// How the view may be used to answer at `now`.
    pub fn freshness(&self, now: Instant) -> Freshness {
        match self.last_confirmed {
            None => Freshness::Unusable,
            Some(_) if !self.stale => Freshness::Fresh,
            Some(t) if now.saturating_duration_since(t) <= self.serve_stale_for => Freshness::Stale,
            Some(_) => Freshness::Unusable,
        }
    }

    /// Members with the given role, in configured order (empty for load-balanced clusters,
    /// whose "members" are load balancers).
    pub fn members_with(&self, role: Role) -> impl Iterator<Item = &Member> {
        let lb = self.load_balanced;
        self.members.iter().filter(move |m| !lb && m.role == role)
    }

    /// Whether `other` would answer anything differently: the leader, a member's role or
    /// address, staleness, or having a first view at all. Timestamps and error texts
    /// change with every report and are read from the latest view by whoever shows them;
    /// the watcher wakes consumers (proxy connections, DNS answer caches) only when this
    /// is false.
    pub fn answers_like(&self, other: &ClusterView) -> bool {
        let key = |m: &Member| {
            (
                m.url.clone(),
                m.addrs.clone(),
                m.port,
                m.role,
                m.replication,
            )
        };
        self.leader == other.leader
            && self.stale == other.stale
            && self.load_balanced == other.load_balanced
            && self.last_confirmed.is_some() == other.last_confirmed.is_some()
            && self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .map(key)
                .eq(other.members.iter().map(key))
    }
}

/// One node's latest report, with the addresses its configured host resolved to.
#[derive(Debug, Clone)]
pub struct Polled {
    pub url: Url,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub report: NodeReport,
    /// When the report arrived.
    pub at: Instant,
    pub wall: SystemTime,
}

impl Polled {
    /// Whether the node answered either endpoint.
    pub fn answered(&self) -> bool {
        self.report.health.is_ok() || self.report.leader.is_ok()
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

/// The outcome of counting leader reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// `(api_addr, cluster_addr)` of the leader a quorum names, or why there is none.
    pub winner: Result<(String, String), NoLeader>,
    /// Set when answering nodes disagree: every distinct report with its vote count.
    pub disagreement: Option<Vec<(String, usize)>>,
}

/// Counts `leader_address` reports, one per node in `polled` (one entry per configured
/// node, see [`current`]). See the module docs for the quorum rule.
pub fn elect(polled: &[Polled], load_balanced: bool) -> Election {
    let mut tally: Vec<(String, String, usize)> = Vec::new();
    let mut heard = 0;
    for p in polled {
        let Ok(Some(report)) = &p.report.leader else {
            continue;
        };
        heard += 1;
        let (addr, cluster_addr) = if !report.ha_enabled {
            // Not part of an HA cluster: an active node leads itself, others lead nobody.
            if p.report.health != Ok(NodeState::Active) {
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
    let configured = polled.len();
    let votes: usize = tally.iter().map(|t| t.2).sum();
    // Members must be a majority of the configured list; load balancers only of the
    // reports that arrived.
    let quorum_of = if load_balanced { votes } else { configured };
    let disagreement =
        (tally.len() > 1).then(|| tally.iter().map(|(a, _, n)| (a.clone(), *n)).collect());
    let winner = match tally.iter().find(|(_, _, n)| *n * 2 > quorum_of) {
        Some((a, c, _)) => Ok((a.clone(), c.clone())),
        None if !load_balanced && heard * 2 <= configured => Err(NoLeader::Unheard {
            unheard: configured - heard,
            configured,
        }),
        None => Err(NoLeader::NoMajority {
            reports: tally.iter().map(|(a, _, n)| (a.clone(), *n)).collect(),
            configured,
        }),
    };
    Election {
        winner,
        disagreement,
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

/// Builds the next view from every configured node's current report (see [`current`])
/// and the leader the election chose (resolved by the watcher, which may need DNS).
pub fn next_view(
    prev: &ClusterView,
    polled: Vec<Polled>,
    leader: Result<Leader, NoLeader>,
    now: Instant,
) -> (ClusterView, Vec<ViewEvent>) {
    let mut events = Vec::new();
    let latest_answer = polled.iter().filter(|p| p.answered()).map(|p| p.at).max();
    let wall = polled
        .iter()
        .filter(|p| p.answered())
        .map(|p| p.wall)
        .max()
        .unwrap_or_else(SystemTime::now);

    let Some(latest_answer) = latest_answer else {
        // Keep the last confirmed view; record why each node has no answer.
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
    };
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
                    replication: p.report.replication,
                    last_confirmed: Some(p.wall),
                    error: None,
                },
                Err(_) => unreachable_member(p, previous.and_then(|m| m.last_confirmed)),
            }
        })
        .collect();

    // A leader we poll ourselves must say it is active.
    let leader = leader.and_then(|l| {
        if prev.load_balanced {
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
    });
    let (leader, no_leader) = match leader {
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
    };

    let old = prev.leader.as_ref().map(|l| l.api_addr.clone());
    let new = view.leader.as_ref().map(|l| l.api_addr.clone());
    let first_view = prev.last_confirmed.is_none();
    if old != new || (first_view && new.is_none()) {
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
        replication: Modes::default(),
        last_confirmed,
        error: p.report.health.as_ref().err().map(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::client::{LeaderReport, PollError};

    fn node_at(i: u8, health: Result<NodeState, PollError>, leader: Option<&str>) -> Polled {
        let url: Url = format!("http://127.0.0.{i}:8200").parse().unwrap();
        let leader = match (&health, leader) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), l) => Ok(Some(LeaderReport {
                ha_enabled: true,
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
            wall: SystemTime::now(),
        }
    }

    fn node(i: u8, health: NodeState, leader: Option<&str>) -> Polled {
        node_at(i, Ok(health), leader)
    }

    fn down(i: u8) -> Polled {
        node_at(i, Err(PollError::Connect("refused".into())), None)
    }

    /// The watcher's resolution step, for IP-literal leaders.
    fn resolved(e: &Election) -> Result<Leader, NoLeader> {
        e.winner.clone().map(|(api, cl)| {
            let url: Url = api.parse().unwrap();
            Leader {
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
        let e = elect(&polled, prev.load_balanced);
        next_view(prev, polled, resolved(&e), now)
    }

    const L1: &str = "http://127.0.0.1:8200";
    const L2: &str = "http://127.0.0.2:8200";

    #[test]
    fn healthy_cluster_has_one_leader_and_roles() {
        let prev = ClusterView::empty("dc1", false);
        let (v, ev) = round(
            &prev,
            vec![
                node(1, NodeState::Active, Some(L1)),
                node(2, NodeState::Standby, Some(L1)),
                node(3, NodeState::Standby, Some(L1)),
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
            node(1, NodeState::Active, Some(L1)),
            node(2, NodeState::Active, Some(L2)),
            node(3, NodeState::Standby, Some(L1)),
        ];
        let e = elect(&polled, false);
        assert_eq!(e.winner.as_ref().unwrap().0, L1);
        assert_eq!(e.disagreement.as_ref().unwrap().len(), 2);
        let (v, _) = next_view(
            &ClusterView::empty("dc1", false),
            polled,
            resolved(&e),
            Instant::now(),
        );
        assert_eq!(v.leader.unwrap().api_addr, L1);
    }

    #[test]
    fn even_split_answers_no_leader() {
        let polled = vec![
            node(1, NodeState::Active, Some(L1)),
            node(2, NodeState::Active, Some(L2)),
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
        let polled = vec![node(1, NodeState::Active, Some(L1)), down(2), down(3)];
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
            node(1, NodeState::Active, Some(L1)),
            node(2, NodeState::Standby, Some(L1)),
            down(3),
        ];
        assert_eq!(elect(&polled, false).winner.unwrap().0, L1);

        // Two of three heard but disagreeing: none has a majority of three.
        let polled = vec![
            node(1, NodeState::Active, Some(L1)),
            node(2, NodeState::Active, Some(L2)),
            down(3),
        ];
        assert!(matches!(
            elect(&polled, false).winner,
            Err(NoLeader::NoMajority { configured: 3, .. })
        ));

        // Five configured (one decommissioned, one down): three agreeing still lead.
        let polled = vec![
            node(1, NodeState::Active, Some(L1)),
            node(2, NodeState::Standby, Some(L1)),
            node(3, NodeState::Standby, Some(L1)),
            down(4),
            down(5),
        ];
        assert_eq!(elect(&polled, false).winner.unwrap().0, L1);
    }

    #[test]
    fn a_one_node_cluster_is_its_own_quorum() {
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![node(1, NodeState::Active, Some(L1))],
            Instant::now(),
        );
        assert_eq!(v.leader.unwrap().api_addr, L1);
    }

    #[test]
    fn an_active_node_without_ha_leads_alone() {
        // `bao server -dev`: {"ha_enabled": false} and health 200.
        let mut solo = node(1, NodeState::Active, None);
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
        solo.report.health = Ok(NodeState::Sealed);
        let (v, _) = round(
            &ClusterView::empty("dc1", false),
            vec![solo],
            Instant::now(),
        );
        assert_eq!(v.leader, None);
    }

    #[test]
    fn dead_leader_still_reported_by_survivors_is_withheld() {
        let t0 = Instant::now();
        let (v1, _) = round(
            &ClusterView::empty("dc1", false),
            vec![
                node(1, NodeState::Active, Some(L1)),
                node(2, NodeState::Standby, Some(L1)),
                node(3, NodeState::Standby, Some(L1)),
            ],
            t0,
        );
        // Node 1 killed: the survivors still name it until the election ends.
        let (v2, ev) = round(
            &v1,
            vec![
                down(1),
                node(2, NodeState::Standby, Some(L1)),
                node(3, NodeState::Standby, Some(L1)),
            ],
            t0 + Duration::from_millis(250),
        );
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
        let (v3, ev) = round(
            &v2,
            vec![
                down(1),
                node(2, NodeState::Active, Some(L2)),
                node(3, NodeState::Standby, Some(L2)),
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
    fn reports_age_out_and_never_heard_nodes_count_as_unheard() {
        let nodes: Vec<Url> = (1..=3)
            .map(|i| format!("http://127.0.0.{i}:8200").parse().unwrap())
            .collect();
        let t0 = Instant::now();
        let mut old = node(1, NodeState::Active, Some(L1));
        old.at = t0;
        let mut fresh = node(2, NodeState::Standby, Some(L1));
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
        let lb = node(9, NodeState::Standby, Some("http://10.1.2.3:8200"));
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
            node(8, NodeState::Standby, Some("http://10.1.2.3:8200")),
            down(9),
        ];
        assert!(elect(&polled, true).winner.is_ok());
    }

    #[test]
    fn unpolled_leader_named_by_the_quorum_is_trusted() {
        let (v, _) = round(
            &ClusterView::empty("peer", false),
            vec![node(9, NodeState::Standby, Some("http://10.1.2.3:8200"))],
            Instant::now(),
        );
        assert!(v.leader.is_some());
    }

    #[test]
    fn stale_then_unusable() {
        let t0 = Instant::now();
        let mut empty = ClusterView::empty("dc1", false);
        empty.serve_stale_for = Duration::from_secs(5);
        let mut first = node(1, NodeState::Active, Some(L1));
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
        let mut back = node(1, NodeState::Active, Some(L1));
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
            vec![
                node(1, NodeState::Active, Some(L1)),
                node(2, NodeState::Sealed, None),
            ],
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
                node(1, NodeState::Active, Some(L1)),
                node(2, NodeState::Standby, Some(L1)),
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
            vec![
                node(1, NodeState::Active, Some(L1)),
                node(2, NodeState::Sealed, None),
            ],
            t0 + Duration::from_secs(2),
        );
        assert!(!v2.answers_like(&v3));
        // So does going stale.
        let (v4, _) = round(&v3, vec![down(1), down(2)], t0 + Duration::from_secs(3));
        assert!(!v3.answers_like(&v4));
    }
}
