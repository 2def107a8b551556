//! One poll of one node: which endpoints it asks, and the report it makes.
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

use tracing::{debug, trace};
use url::Url;

use super::client::{LeaderReport, NodeReport, PollError, VaultClient};
use super::config::ClusterConfig;
use super::modes::Modes;
use super::poll::Pace;
use super::role::Role;
use super::rules::Polled;
use super::view::ClusterView;

/// A speaker's health is asked every this many rounds when its modes can change.
const SPEAKER_EVERY: u32 = 2;
/// Every node's health is asked at least every this many rounds.
const HEALTH_REFRESH: u32 = 30;

/// When a poll asks `/v1/sys/health` after `/v1/sys/leader` (see the module docs).
pub(super) struct HealthCadence {
    speaker: Duration,
    refresh: Duration,
    load_balanced: bool,
}

/// What one poll asks: `/v1/sys/leader` always, and the health after it when due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asks {
    Leader,
    LeaderAndHealth,
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
    /// node's latest report. Never during failover polling (the cluster is leaderless) where the
    /// node has a health: an election is when the nodes are busiest, and when a vote
    /// must not wait behind a health answer (measured: kill -9 and step-down answered
    /// 30-80 ms later with it).
    pub fn asks(&self, prior: Option<&Polled>, now: Instant, pace: Pace) -> Asks {
        match self.health_due(prior, now, pace) {
            true => Asks::LeaderAndHealth,
            false => Asks::Leader,
        }
    }

    fn health_due(&self, prior: Option<&Polled>, now: Instant, pace: Pace) -> bool {
        let Some((Ok(state), Some(heard))) = prior.map(|p| (&p.report.health, p.health_heard))
        else {
            return true;
        };
        if pace.is_failover() {
            return false;
        }
        let age = now.saturating_duration_since(heard);
        let speaks = self.load_balanced || *state == Role::Active;
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
    !unreachable(leader)
        && prior.is_none_or(|p| p.report.health.is_err() || p.report.leader != *leader)
}

/// The leader request never reached the node (no connection, no answer in time, no
/// TLS session): a health request would fail the same way.
fn unreachable(leader: &Result<Option<LeaderReport>, PollError>) -> bool {
    matches!(
        leader,
        Err(PollError::Connect(_) | PollError::Timeout(_) | PollError::Tls(_))
    )
}

/// The node's role as a leader answer that moved says it (`is_self`,
/// `performance_standby`), when its previous report had a health to keep the modes of:
/// a standby's health carries its cluster's modes too, so a failover never shows a
/// primary's new active node with unknown modes. None: ask the health now.
fn role_from(
    prior: Option<&Polled>,
    leader: &Result<Option<LeaderReport>, PollError>,
) -> Option<Role> {
    let known = prior.is_some_and(|p| p.report.health.is_ok());
    match leader {
        Ok(Some(l)) if known && l.ha_enabled => Some(if l.is_self {
            Role::Active
        } else if l.performance_standby {
            Role::PerfStandby
        } else {
            Role::Standby
        }),
        _ => None,
    }
}

/// Polls one node: resolves its configured host, asks `/v1/sys/leader`, then the health
/// when `asks` says (from [`HealthCadence`]) or the leader answer moved; otherwise the
/// node's health is carried over from `prior`. One request after the other on one
/// connection: each node costs each agent one connection, and the leader answer, which
/// decides, never waits for the health.
pub(super) async fn poll_node(
    client: &VaultClient,
    url: &Url,
    timeout: Duration,
    prior: Option<Polled>,
    asks: Asks,
) -> Polled {
    let with_health = asks == Asks::LeaderAndHealth;
    let Target { addrs, port } = resolve_url(url, timeout).await;
    let leader = client.leader(url).await;
    let reachable = !unreachable(&leader);
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
    // What each poll heard, for following an election poll by poll (docs/operations.md, "Logs").
    trace!(
        node = %url,
        ?leader,
        role_from_leader = ?role,
        health = ?health.as_ref().map(|h| h.as_ref().map(|h| h.state)),
        "polled"
    );
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

/// Whom to ask for a cluster's replication status, and at which endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StreamsSource {
    pub node: Url,
    pub path: &'static str,
}

/// The active node of a cluster that replicates (its modes can change: Vault
/// Enterprise), or any node of a load-balanced peer (the balancer forwards to a node,
/// which forwards to the active one). None for OpenBao and Vault Community, and while
/// there is no leader.
pub(super) fn streams_source(view: &ClusterView) -> Option<StreamsSource> {
    view.leader.as_ref()?;
    let speaker = view
        .members
        .iter()
        .filter(|m| m.replication.can_change())
        .find(|m| view.load_balanced || m.role == Role::Active)?;
    Some(StreamsSource {
        node: speaker.url.clone(),
        path: super::stream::path(speaker.replication.dr),
    })
}

/// Where a node or leader URL points: its IPs (none when its name does not resolve)
/// and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

/// The target a URL points at. IP literals need no lookup; names go through the system
/// resolver (config validation keeps names in our own zone out), under `timeout`: a
/// resolver that hangs holds back only this node.
pub(super) async fn resolve_url(url: &Url, timeout: Duration) -> Target {
    let port = url.port_or_known_default().unwrap_or(8200);
    let addrs = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => lookup(name, port, timeout).await,
        None => Vec::new(),
    };
    Target { addrs, port }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node's latest report: `state` from its health heard `health_age` ago, with
    /// `modes`, saying `leader` leads (itself when active).
    pub(crate) fn prior(state: Role, modes: Modes, health_age: Duration) -> Polled {
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
                    is_self: state == Role::Active,
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
            let pace = Pace::Normal(c.poll_interval);
            HealthCadence::new(c).asks(p, Instant::now(), pace) == Asks::LeaderAndHealth
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
        use Role::{Active, Standby};
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
        let p = prior(Role::Standby, Modes::default(), Duration::ZERO);
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
        let standby = prior(Role::Standby, ent, Duration::ZERO);
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
            Some(Role::Active)
        );
        assert_eq!(
            role_from(Some(&standby), &said(false, true)),
            Some(Role::PerfStandby)
        );
        assert_eq!(
            role_from(Some(&standby), &said(false, false)),
            Some(Role::Standby)
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
}
