//! The `/status` document: what the agent believes, as JSON for `GET /status` and for
//! `vault-locator status` (which reads it back with these same types).

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::vault::feed::ClusterFeed;
use crate::vault::replication::{self, Kind, Mode, Modes, NoPrimary};
use crate::vault::stream_health::StreamHealth;
use crate::vault::view::Freshness;

/// `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub ready: bool,
    /// The local cluster (the config's `datacenter`, the field's name in the
    /// document), whose primacy `status --is-primary` reports.
    #[serde(default)]
    pub datacenter: String,
    pub clusters: Vec<ClusterStatus>,
    /// The replication set's decisions, when one is configured.
    #[serde(default)]
    pub replication: Option<ReplicationStatus>,
    pub proxies: Vec<ProxyStatus>,
    /// The agent's process id (what `vault-locator reload` signals).
    #[serde(default)]
    pub pid: u32,
    /// The reloads so far and the last one's verdict (what `vault-locator reload` waits
    /// for).
    #[serde(default)]
    pub reloads: ReloadStatus,
}

/// Every SIGHUP's outcome, counted: `vault-locator reload` reads `count` before it
/// signals and waits for it to move.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub count: u64,
    /// When the last one ended.
    pub last_at: Option<String>,
    /// Why the last one was rejected (the running config kept), or None if applied.
    pub last_error: Option<String>,
}

/// `[replication]` as the agent sees it now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub clusters: Vec<String>,
    /// One per kind: perf, then dr.
    pub primaries: Vec<PrimaryStatus>,
    /// Each replicating cluster's streams, perf then DR (Vault Enterprise only).
    #[serde(default)]
    pub streams: Vec<StreamHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrimaryStatus {
    /// "perf" or "dr".
    pub kind: String,
    /// The virtual cluster label ("perf-primary").
    pub label: String,
    /// The cluster its names answer for, if one.
    pub primary: Option<String>,
    pub state: PrimaryState,
    /// The clusters counted as primaries.
    pub counted: Vec<String>,
    /// `counted` by replication set (one per DR set for DR); a set of two or more is
    /// a split brain.
    #[serde(default)]
    pub sets: Vec<Vec<String>>,
    /// Why, with every cluster's mode.
    pub why: String,
}

impl PrimaryStatus {
    /// Two primaries of this kind in one replication set, named or not.
    pub fn split(&self) -> bool {
        self.state == PrimaryState::Several || self.sets.iter().any(|s| s.len() > 1)
    }
}

impl ReplicationStatus {
    pub(super) fn of(state: &replication::ReplicationState) -> Self {
        Self {
            clusters: state.clusters.clone(),
            primaries: state
                .decisions
                .iter()
                .map(|d| PrimaryStatus {
                    kind: d.kind.as_str().to_string(),
                    label: d.kind.label().to_string(),
                    primary: d.primary.as_ref().ok().cloned(),
                    state: match &d.primary {
                        Ok(_) => PrimaryState::One,
                        Err(NoPrimary::None | NoPrimary::OtherSets(_)) => PrimaryState::None,
                        Err(NoPrimary::Several(_)) => PrimaryState::Several,
                        Err(NoPrimary::WarmingUp(_)) => PrimaryState::WarmingUp,
                    },
                    counted: d.counted.clone(),
                    sets: d.sets.clone(),
                    why: d.to_string(),
                })
                .collect(),
            streams: state.streams.clone(),
        }
    }
}

/// How many primaries of a kind the set has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryState {
    One,
    None,
    /// Two primaries (or more): names under the label answer SERVFAIL.
    Several,
    /// Not every cluster of the set has had a first view yet.
    WarmingUp,
}

/// A cluster's replication modes as its nodes report them (see
/// `vault::replication::cluster_mode`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModesStatus {
    pub perf: Mode,
    pub dr: Mode,
}

impl ModesStatus {
    fn modes(&self) -> Modes {
        Modes {
            perf: self.perf,
            dr: self.dr,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    /// Fresh, stale (served from the last confirmed view) or unusable (SERVFAIL).
    pub state: Freshness,
    pub leader: Option<LeaderStatus>,
    /// Why there is no leader ("2 of 3 members unheard"), while there is none.
    #[serde(default)]
    pub no_leader: Option<String>,
    pub view_age_seconds: Option<f64>,
    pub last_leader_change: Option<ChangeStatus>,
    pub load_balanced: bool,
    #[serde(default)]
    pub replication: ModesStatus,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderStatus {
    pub api_addr: String,
    pub cluster_addr: String,
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeStatus {
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub url: String,
    pub role: String,
    pub last_confirmed: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub cluster: String,
    /// "cluster" (ClientHello peek, ALPN routes) or "api" (plain passthrough).
    #[serde(default)]
    pub side: String,
    pub listen: String,
    pub answer: bool,
    pub open_connections: usize,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl ClusterStatus {
    pub(super) fn of(feed: &ClusterFeed, now: Instant) -> Self {
        let view = feed.latest();
        Self {
            name: view.cluster.clone(),
            state: feed.freshness(&view, now),
            leader: view.leader.as_ref().map(|l| LeaderStatus {
                api_addr: l.api_addr.clone(),
                cluster_addr: l.cluster_addr.clone(),
                addrs: l.addrs.iter().map(|a| a.to_string()).collect(),
            }),
            no_leader: view.no_leader.as_ref().map(|w| w.to_string()),
            view_age_seconds: view
                .last_confirmed
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            last_leader_change: view.leader_changed.as_ref().map(|change| ChangeStatus {
                at: rfc3339(change.at),
                reason: change.reason.clone(),
            }),
            load_balanced: view.load_balanced,
            replication: ModesStatus {
                perf: replication::cluster_mode(&view, Kind::Perf),
                dr: replication::cluster_mode(&view, Kind::Dr),
            },
            members: view
                .members
                .iter()
                .map(|m| MemberStatus {
                    url: m.url.to_string(),
                    role: m.role.as_str().to_string(),
                    last_confirmed: m.last_confirmed.map(rfc3339),
                    error: m.error.clone(),
                })
                .collect(),
        }
    }

    /// Healthy for `vault-locator status`: a leader, and a view that is not stale.
    pub fn healthy(&self) -> bool {
        self.leader.is_some() && self.state == Freshness::Fresh
    }
}

impl Status {
    /// Healthy for `vault-locator status`: every cluster healthy, and no kind with two
    /// primaries.
    pub fn healthy(&self) -> bool {
        self.clusters.iter().all(ClusterStatus::healthy)
            && !self
                .replication
                .iter()
                .flat_map(|r| &r.primaries)
                .any(PrimaryStatus::split)
    }

    /// `status --is-primary KIND`: whether the local cluster is the primary of that
    /// kind now. None when that cannot be told: no fresh view of the local cluster, its
    /// mode unknown, or two primaries in the set.
    pub fn is_primary(&self, kind: Kind) -> Option<bool> {
        // Split within the set the local cluster is in (or the label's): cannot tell.
        let local_name = self.datacenter.as_str();
        let several = self
            .replication
            .iter()
            .flat_map(|r| &r.primaries)
            .filter(|p| p.kind == kind.as_str())
            .any(|p| {
                p.state == PrimaryState::Several
                    || p.sets
                        .iter()
                        .any(|s| s.len() > 1 && s.iter().any(|c| c == local_name))
            });
        let local = self.clusters.iter().find(|c| c.name == self.datacenter)?;
        let modes = local.replication.modes();
        if several || local.state != Freshness::Fresh || modes.of(kind) == Mode::Unknown {
            return None;
        }
        Some(modes.is_primary(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status whose local cluster `dc` is fresh with `perf` and `dr`, and whose set
    /// has `dr_sets` (the DR primaries counted, by set).
    fn local(perf: Mode, dr: Mode, dr_sets: Vec<Vec<String>>) -> Status {
        let primary = |kind: Kind, sets: Vec<Vec<String>>| PrimaryStatus {
            kind: kind.as_str().into(),
            label: kind.label().into(),
            primary: None,
            state: PrimaryState::None,
            counted: sets.concat(),
            sets,
            why: String::new(),
        };
        Status {
            version: String::new(),
            ready: true,
            datacenter: "dc".into(),
            clusters: vec![ClusterStatus {
                name: "dc".into(),
                state: Freshness::Fresh,
                leader: None,
                no_leader: None,
                view_age_seconds: None,
                last_leader_change: None,
                load_balanced: false,
                replication: ModesStatus { perf, dr },
                members: vec![],
            }],
            replication: Some(ReplicationStatus {
                clusters: vec!["dc".into()],
                primaries: vec![primary(Kind::Perf, vec![]), primary(Kind::Dr, dr_sets)],
                streams: vec![],
            }),
            proxies: vec![],
            pid: 1,
            reloads: ReloadStatus::default(),
        }
    }

    #[test]
    fn a_dr_secondary_is_never_the_performance_primary() {
        use Mode::{Primary, Secondary};
        let s = local(Primary, Secondary, vec![]);
        assert_eq!(
            s.is_primary(Kind::Perf),
            Some(false),
            "mirrored, not its own"
        );
        assert_eq!(s.is_primary(Kind::Dr), Some(false));
        let promoted = local(Primary, Primary, vec![vec!["dc".into()]]);
        assert_eq!(promoted.is_primary(Kind::Perf), Some(true));
        assert_eq!(promoted.is_primary(Kind::Dr), Some(true));
        // Its DR set split (the old primary back): cannot tell, and unhealthy.
        let split = local(Primary, Primary, vec![vec!["dc".into(), "old".into()]]);
        assert_eq!(split.is_primary(Kind::Dr), None);
        assert!(split.replication.as_ref().unwrap().primaries[1].split());
        // Another DR set with its own primary is no split.
        let other = local(
            Primary,
            Primary,
            vec![vec!["dc".into()], vec!["west".into()]],
        );
        assert_eq!(other.is_primary(Kind::Dr), Some(true));
        assert!(!other.replication.as_ref().unwrap().primaries[1].split());
    }
}
