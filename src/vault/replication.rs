//! Which cluster of the replication set is the performance primary and which the DR
//! primary, published as the views of two virtual clusters, `perf-primary` and
//! `dr-primary`. A virtual cluster's view *is* the view of the real cluster that holds
//! the role, so the DNS zone and the proxy answer for it with no code of their own: its
//! `active` is the primary's active node, and a promotion is one view change, exactly as
//! a leader change is.
//!
//! Rules (each one has a unit test below):
//! - **A cluster's mode** is what its active node's `/v1/sys/health` says; without an
//!   active node (an election, a load-balanced peer), what its serving members say when
//!   they agree; otherwise unknown. A missing field is unknown, never "disabled". A
//!   server without replication is `unavailable` whatever it says: only Vault
//!   Enterprise replicates (`"enterprise": true`, or a version with build metadata such
//!   as `1.17.3+ent`), and an OpenBao 2.7 HA active node reports perf mode `primary`.
//! - **Only fresh views count.** A cluster counts as a primary when its view is fresh
//!   (a node answered within the last report age) and its mode is `primary`. A primary
//!   seen only through a stale view (we are cut off from that region) never counts as a
//!   *second* one: when a fresh primary exists, it wins. When none is fresh, a single
//!   stale primary keeps answering through its own stale window, like any stale view.
//! - **Never two primaries.** Two fresh primaries of one kind (or two stale ones and no
//!   fresh one): the label's view is unusable, so its names answer SERVFAIL and its proxy
//!   refuses, until one of them stops saying `primary`. Neither cluster is ever named.
//! - **No primary**: the label's view is fresh and empty, so every name under it is
//!   NXDOMAIN (Consul's answer for a known service with no instance).
//! - **Warm-up**: until every cluster of the set has had a first view (or the agent's
//!   `ready_timeout` has passed), nothing is named: the cluster not heard yet might be a
//!   second primary.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use super::modes::{Kind, Mode, Modes};

use super::feed::ClusterFeed;
use super::view::{ClusterView, Freshness, Role};
use crate::telemetry;

/// A cluster's mode of `kind`: see the module docs.
pub fn cluster_mode(view: &ClusterView, kind: Kind) -> Mode {
    // A stale view keeps its members as last confirmed (each with the error since):
    // their modes then are the view's.
    let answering = view
        .members
        .iter()
        .filter(|m| (view.stale || m.error.is_none()) && m.role.is_serving());
    let active: Vec<Mode> = answering
        .clone()
        .filter(|m| !view.load_balanced && m.role == Role::Active)
        .map(|m| m.replication.of(kind))
        .collect();
    let speakers: Vec<Mode> = if active.is_empty() {
        answering.map(|m| m.replication.of(kind)).collect()
    } else {
        active
    };
    match speakers.split_first() {
        Some((first, rest)) if rest.iter().all(|m| m == first) => *first,
        _ => Mode::Unknown,
    }
}

/// One cluster of the set as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMember {
    pub cluster: String,
    pub mode: Mode,
    pub freshness: Freshness,
}

/// Why no cluster is named for a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPrimary {
    /// No cluster of the set reports `primary`.
    None,
    /// More than one does: never answer either.
    Several(Vec<String>),
    /// Waiting for a first view of these clusters.
    WarmingUp(Vec<String>),
}

/// The rule's outcome for one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: Kind,
    pub primary: Result<String, NoPrimary>,
    /// The clusters counted as primaries (the metric's value is their number).
    pub counted: Vec<String>,
    pub members: Vec<SetMember>,
}

impl Decision {
    /// The rule (see the module docs). `unheard`: clusters of the set that have never had
    /// a view, while the warm-up lasts.
    pub fn make(kind: Kind, members: Vec<SetMember>, unheard: Vec<String>) -> Decision {
        let claim = |f: Freshness| -> Vec<String> {
            members
                .iter()
                .filter(|m| m.mode == Mode::Primary && m.freshness == f)
                .map(|m| m.cluster.clone())
                .collect()
        };
        let fresh = claim(Freshness::Fresh);
        let counted = if fresh.is_empty() {
            claim(Freshness::Stale)
        } else {
            fresh
        };
        let primary = if !unheard.is_empty() {
            Err(NoPrimary::WarmingUp(unheard))
        } else {
            match counted.as_slice() {
                [] => Err(NoPrimary::None),
                [one] => Ok(one.clone()),
                several => Err(NoPrimary::Several(several.to_vec())),
            }
        };
        Decision {
            kind,
            primary,
            counted,
            members,
        }
    }

    /// The virtual cluster's view: the primary's own view, an empty fresh one (no
    /// primary: NXDOMAIN), or an unusable one (SERVFAIL).
    fn view(&self, views: &[(String, Arc<ClusterView>)], now: Instant) -> Arc<ClusterView> {
        match &self.primary {
            Ok(name) => match views.iter().find(|(n, _)| n == name) {
                Some((_, v)) => v.clone(),
                None => Arc::new(ClusterView::empty(self.kind.label(), false)),
            },
            Err(NoPrimary::None) => {
                let mut v = ClusterView::empty(self.kind.label(), false);
                v.last_confirmed = Some(now);
                Arc::new(v)
            }
            Err(_) => Arc::new(ClusterView::empty(self.kind.label(), false)),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let modes = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            for (i, m) in self.members.iter().enumerate() {
                let freshness = match m.freshness {
                    Freshness::Fresh => "",
                    Freshness::Stale => ", stale",
                    Freshness::Unusable => ", no usable view",
                };
                write!(
                    f,
                    "{}{}: {}{freshness}",
                    if i > 0 { ", " } else { "" },
                    m.cluster,
                    m.mode.as_str()
                )?;
            }
            Ok(())
        };
        let kind = self.kind.describe();
        match &self.primary {
            Ok(name) => write!(f, "{name} is the {kind} primary (")?,
            Err(NoPrimary::None) => write!(f, "no cluster of the set is a {kind} primary (")?,
            Err(NoPrimary::Several(names)) => write!(
                f,
                "{} all report {kind} mode primary: answering none of them (",
                names.join(" and ")
            )?,
            Err(NoPrimary::WarmingUp(names)) => write!(
                f,
                "waiting for a first view of {} before naming a {kind} primary (",
                names.join(", ")
            )?,
        }
        modes(f)?;
        write!(f, ")")
    }
}

/// Both kinds' decisions, as the admin endpoint shows them.
#[derive(Debug, Clone, Default)]
pub struct ReplicationState {
    pub clusters: Vec<String>,
    pub decisions: Vec<Decision>,
}

/// The replication set: reads its clusters' feeds, publishes the virtual clusters.
pub struct ReplicationSet {
    feeds: Vec<(String, ClusterFeed)>,
    virtual_views: Vec<(Kind, watch::Sender<Arc<ClusterView>>)>,
    state: watch::Sender<Arc<ReplicationState>>,
    warm_until: Instant,
}

/// What the rest of the agent reads: a feed per virtual cluster, and the decisions.
#[derive(Clone)]
pub struct ReplicationHandle {
    pub feeds: Vec<(Kind, ClusterFeed)>,
    pub state: watch::Receiver<Arc<ReplicationState>>,
}

/// How often the rule is applied again without a view change: a stale view's window
/// ends with no change published.
const RECHECK: Duration = Duration::from_secs(1);

impl ReplicationSet {
    /// `feeds`: the set's clusters, in configured order. The first decisions are made
    /// here, from the feeds as they are, so a reload that builds a new set has its
    /// virtual views at once. `warm_up`: how long to wait for a cluster never heard.
    pub fn new(feeds: Vec<(String, ClusterFeed)>, warm_up: Duration) -> (Self, ReplicationHandle) {
        let now = Instant::now();
        let warm_until = now + warm_up;
        let views = views_of(&feeds);
        let state = decide_all(&views, now, warm_until);
        let mut virtual_views = Vec::new();
        let mut handle_feeds = Vec::new();
        for d in &state.decisions {
            let (tx, rx) = watch::channel(d.view(&views, now));
            virtual_views.push((d.kind, tx));
            handle_feeds.push((d.kind, ClusterFeed::new(rx)));
        }
        let state = Arc::new(state);
        let (state_tx, state_rx) = watch::channel(state.clone());
        let set = Self {
            feeds,
            virtual_views,
            state: state_tx,
            warm_until,
        };
        set.report(&state.decisions, None);
        (
            set,
            ReplicationHandle {
                feeds: handle_feeds,
                state: state_rx,
            },
        )
    }

    /// Applies the rule on every view change of a member cluster (and every `RECHECK`)
    /// until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open: Vec<bool> = vec![true; self.feeds.len()];
        loop {
            let changes: Vec<_> = self
                .feeds
                .iter_mut()
                .zip(&open)
                .enumerate()
                .filter(|(_, (_, open))| **open)
                .map(|(i, ((_, feed), _))| Box::pin(async move { (i, feed.changed().await) }))
                .collect();
            let any_change = async {
                if changes.is_empty() {
                    std::future::pending().await
                } else {
                    futures_util::future::select_all(changes).await.0
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                (i, changed) = any_change => {
                    // A watcher gone (replaced by a reload): stop waiting on it.
                    if changed.is_err() {
                        open[i] = false;
                    }
                }
                _ = tick.tick() => {}
            }
            crate::panic::fault_point("replication");
            self.apply();
        }
    }

    fn apply(&mut self) {
        let now = Instant::now();
        let previous = self.state.borrow().clone();
        // One snapshot of the set's views: the decisions and the views published for
        // them come from the same reports.
        let views = views_of(&self.feeds);
        let state = decide_all(&views, now, self.warm_until);
        for (d, (_, tx)) in state.decisions.iter().zip(&self.virtual_views) {
            let next = d.view(&views, now);
            tx.send_if_modified(|current| {
                let same = current.cluster == next.cluster && current.answers_like(&next);
                *current = next;
                !same
            });
        }
        self.report(&state.decisions, Some(&previous));
        self.state.send_replace(Arc::new(state));
    }

    /// Logs what changed since `previous` and sets the metrics.
    fn report(&self, decisions: &[Decision], previous: Option<&ReplicationState>) {
        for d in decisions {
            let kind = d.kind.as_str();
            metrics::gauge!(telemetry::REPLICATION_PRIMARIES, "kind" => kind)
                .set(d.counted.len() as f64);
            let before = previous.and_then(|p| p.decisions.iter().find(|o| o.kind == d.kind));
            if before.map(|b| &b.primary) == Some(&d.primary) {
                continue;
            }
            let old = before
                .and_then(|b| b.primary.as_ref().ok())
                .map_or("none", String::as_str);
            match &d.primary {
                Ok(new) => info!(%kind, %old, %new, why = %d, "primary changed"),
                Err(NoPrimary::Several(names)) => error!(
                    %kind,
                    clusters = %names.join(","),
                    why = %d,
                    "two primaries: answering neither (SERVFAIL, proxy refuses)"
                ),
                Err(NoPrimary::None) => info!(%kind, %old, why = %d, "no primary"),
                Err(NoPrimary::WarmingUp(_)) => info!(%kind, why = %d, "no primary named yet"),
            }
        }
    }
}

fn views_of(feeds: &[(String, ClusterFeed)]) -> Vec<(String, Arc<ClusterView>)> {
    feeds.iter().map(|(n, f)| (n.clone(), f.latest())).collect()
}

/// Both kinds' decisions for one snapshot of the set's views (in configured order).
fn decide_all(
    views: &[(String, Arc<ClusterView>)],
    now: Instant,
    warm_until: Instant,
) -> ReplicationState {
    let unheard: Vec<String> = if now < warm_until {
        views
            .iter()
            .filter(|(_, v)| v.last_confirmed.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        Vec::new()
    };
    let decisions: Vec<Decision> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let members = views
                .iter()
                .map(|(name, view)| SetMember {
                    cluster: name.clone(),
                    mode: cluster_mode(view, kind),
                    freshness: view.freshness(now),
                })
                .collect();
            Decision::make(kind, members, unheard.clone())
        })
        .collect();
    ReplicationState {
        clusters: views.iter().map(|(n, _)| n.clone()).collect(),
        decisions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(cluster: &str, mode: Mode, freshness: Freshness) -> SetMember {
        SetMember {
            cluster: cluster.into(),
            mode,
            freshness,
        }
    }

    /// The decision over two clusters `a` and `b` (their modes and freshness), nobody
    /// still awaited.
    fn decide(kind: Kind, a: (Mode, Freshness), b: (Mode, Freshness)) -> Decision {
        let members = vec![member("a", a.0, a.1), member("b", b.0, b.1)];
        Decision::make(kind, members, vec![])
    }

    use Freshness::{Fresh, Stale, Unusable};
    use Mode::{Disabled, Primary, Secondary};

    #[test]
    fn the_primary_rule() {
        let named = |name: &str| Ok(name.to_string());
        let several = Err(NoPrimary::Several(vec!["a".into(), "b".into()]));
        // (a, b) -> the primary named, and which clusters counted.
        let cases = [
            ((Primary, Fresh), (Secondary, Fresh), named("a"), vec!["a"]),
            (
                (Primary, Fresh),
                (Primary, Fresh),
                several.clone(),
                vec!["a", "b"],
            ),
            // Cut off from the old primary's region (a) while b was promoted.
            ((Primary, Stale), (Primary, Fresh), named("b"), vec!["b"]),
            // With no fresh one, a single stale primary is served through its window.
            ((Primary, Stale), (Secondary, Fresh), named("a"), vec!["a"]),
            // Two stale ones and no fresh one: neither.
            ((Primary, Stale), (Primary, Stale), several, vec!["a", "b"]),
            // An unusable view counts for nothing.
            (
                (Primary, Unusable),
                (Disabled, Fresh),
                Err(NoPrimary::None),
                vec![],
            ),
        ];
        for (a, b, primary, counted) in cases {
            let d = decide(Kind::Perf, a, b);
            assert_eq!(d.primary, primary, "{a:?} {b:?}");
            assert_eq!(d.counted, counted, "{a:?} {b:?}");
        }
        let d = decide(Kind::Dr, (Primary, Fresh), (Primary, Fresh));
        assert!(
            d.to_string().contains("a and b all report DR mode primary"),
            "{d}"
        );
    }

    #[test]
    fn no_primary_and_warm_up() {
        let d = decide(Kind::Perf, (Disabled, Fresh), (Disabled, Fresh));
        assert_eq!(d.primary, Err(NoPrimary::None));
        assert_eq!(
            d.to_string(),
            "no cluster of the set is a performance primary (a: disabled, b: disabled)"
        );
        let d = Decision::make(
            Kind::Perf,
            vec![
                member("a", Primary, Fresh),
                member("b", Mode::Unknown, Unusable),
            ],
            vec!["b".into()],
        );
        assert_eq!(d.primary, Err(NoPrimary::WarmingUp(vec!["b".into()])));
    }

    fn view_with(members: &[(Role, Modes, bool)], load_balanced: bool) -> ClusterView {
        let mut v = ClusterView::empty("dc1", load_balanced);
        v.last_confirmed = Some(Instant::now());
        v.members = members
            .iter()
            .enumerate()
            .map(|(i, (role, modes, answering))| super::super::view::Member {
                url: format!("http://127.0.0.{}:8200", i + 1).parse().unwrap(),
                addrs: vec![],
                port: 8200,
                role: *role,
                replication: *modes,
                last_confirmed: None,
                error: (!answering).then(|| "down".into()),
            })
            .collect();
        v
    }

    const P: Modes = Modes {
        perf: Primary,
        dr: Disabled,
    };
    const S: Modes = Modes {
        perf: Secondary,
        dr: Disabled,
    };

    #[test]
    fn the_active_node_speaks_for_its_cluster() {
        // A standby that has not caught up with a promotion is outvoted by the active.
        let v = view_with(
            &[
                (Role::Active, P, true),
                (Role::Standby, S, true),
                (Role::Standby, S, true),
            ],
            false,
        );
        assert_eq!(cluster_mode(&v, Kind::Perf), Primary);
        assert_eq!(cluster_mode(&v, Kind::Dr), Disabled);
        // No active node (an election): the serving members, when they agree.
        let v = view_with(&[(Role::Standby, P, true), (Role::Standby, P, true)], false);
        assert_eq!(cluster_mode(&v, Kind::Perf), Primary);
        let v = view_with(&[(Role::Standby, P, true), (Role::Standby, S, true)], false);
        assert_eq!(cluster_mode(&v, Kind::Perf), Mode::Unknown);
        // Nobody answering, or only sealed nodes: unknown.
        let v = view_with(&[(Role::Active, P, false), (Role::Sealed, P, true)], false);
        assert_eq!(cluster_mode(&v, Kind::Perf), Mode::Unknown);
        // A stale view speaks as last confirmed.
        let mut v = view_with(
            &[(Role::Active, P, false), (Role::Standby, P, false)],
            false,
        );
        v.stale = true;
        assert_eq!(cluster_mode(&v, Kind::Perf), Primary);
        // Load balancers: whatever node answered through them, when they agree.
        let v = view_with(&[(Role::Active, P, true), (Role::Standby, P, true)], true);
        assert_eq!(cluster_mode(&v, Kind::Perf), Primary);
    }

    #[test]
    fn labels_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_label(k.label()), Some(k));
        }
        assert_eq!(Kind::from_label("us-east-1"), None);
    }
}
