//! The primary rule: which cluster of the replication set is the performance primary
//! and which the DR primary, from every cluster's modes and freshness. Pure: the set
//! (`replication`) applies it on every view change and publishes the result.
//!
//! Rules (each one has a unit test below):
//! - **A cluster's mode** is what its active node's `/v1/sys/health` says; without an
//!   active node (an election, a load-balanced peer), what its serving members say when
//!   they agree; otherwise unknown. A missing field is unknown, never "disabled". A
//!   server without replication is `unavailable` whatever it says: only Vault
//!   Enterprise replicates (`"enterprise": true`, or a version with build metadata such
//!   as `1.17.3+ent`), and an OpenBao 2.7 HA active node reports perf mode `primary`.
//! - **A DR secondary is never a performance primary**, whatever its performance mode
//!   says: it mirrors its DR primary's (a DR secondary of the performance primary
//!   reports `primary`). Promoted, it is one ([`Modes::is_primary`]).
//! - **Only fresh views count.** A cluster counts as a primary when its view is fresh
//!   (a node answered within the last report age) and it is a primary. A primary
//!   seen only through a stale view (we are cut off from that region) never counts as a
//!   *second* one: when a fresh primary exists, it wins. When none is fresh, a single
//!   stale primary keeps answering through its own stale window, like any stale view.
//! - **Never two primaries in one replication set.** Performance replication has one
//!   set. DR has one set per DR primary: every performance cluster may have its own DR
//!   secondaries, so two DR primaries are normal. Two DR primaries are in one DR set when
//!   their DR status gives the same `cluster_id` (the set's id, kept across a promotion),
//!   or, while either id is unknown, when they report the same performance mode (a DR
//!   copy mirrors it). Two primaries in one set (fresh, or stale with none fresh): if
//!   it is the set the label follows, the label's view is unusable, so its names answer
//!   SERVFAIL and its proxy refuses until one stops saying `primary`; either way it is
//!   logged at ERROR, counted in the metric, and `status` is unhealthy.
//! - **Which DR set `dr-primary` follows**: the only one, or the performance primary's
//!   (its DR primary is the one in performance mode `primary`). With several DR sets
//!   and none of them the performance primary's, it names none (NXDOMAIN); each
//!   cluster's own name answers for its own active node in any case.
//! - **No primary**: the label's view is fresh and empty, so every name under it is
//!   NXDOMAIN (Consul's answer for a known service with no instance).
//! - **Warm-up**: until every cluster of the set has had a first view (or the agent's
//!   `ready_timeout` has passed), nothing is named: the cluster not heard yet might be a
//!   second primary. For DR, likewise until each DR primary's first replication status
//!   has told its DR set.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

pub use super::modes::{Kind, Mode, Modes};

use super::view::{ClusterView, Freshness, Role};

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
    /// Both modes: the performance rule reads the DR one too (see [`Modes::is_primary`]).
    pub modes: Modes,
    pub freshness: Freshness,
    /// The DR replication set's id (`cluster_id` of the DR status), when the cluster's
    /// latest replication status gave one.
    pub dr_set: Option<String>,
}

/// Why no cluster is named for a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPrimary {
    /// No cluster of the set reports `primary`.
    None,
    /// More than one does, within one replication set: never answer either.
    Several(Vec<String>),
    /// Waiting for a first view of these clusters (and, for DR, for their replication
    /// status, which tells the DR sets apart).
    WarmingUp(Vec<String>),
    /// DR only: the primaries of several DR sets, none of them the performance
    /// primary's; `dr-primary` follows that one set alone.
    OtherSets(Vec<String>),
}

/// The rule's outcome for one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: Kind,
    pub primary: Result<String, NoPrimary>,
    /// The clusters counted as primaries (fresh ones, or stale ones when none is fresh).
    pub counted: Vec<String>,
    /// `counted`, as the replication sets they belong to (one for performance
    /// replication; one per DR set for DR). A set of two or more is a split brain.
    pub sets: Vec<Vec<String>>,
    pub members: Vec<SetMember>,
}

impl Decision {
    /// The rule (see the module docs). `unheard`: clusters of the set that have never had
    /// a view, while the warm-up lasts.
    pub fn make(kind: Kind, members: Vec<SetMember>, unheard: Vec<String>) -> Decision {
        let claim = |f: Freshness| -> Vec<&SetMember> {
            members
                .iter()
                .filter(|m| m.modes.is_primary(kind) && m.freshness == f)
                .collect()
        };
        let fresh = claim(Freshness::Fresh);
        let claimants = if fresh.is_empty() {
            claim(Freshness::Stale)
        } else {
            fresh
        };
        let sets = match kind {
            Kind::Perf => vec![claimants.iter().map(|m| m.cluster.clone()).collect()],
            Kind::Dr => dr_sets(&claimants),
        };
        let sets: Vec<Vec<String>> = sets.into_iter().filter(|s| !s.is_empty()).collect();
        // The set the label follows: the only one, or the DR set of the performance
        // primary (its DR primary mirrors performance mode `primary`).
        let followed = match sets.as_slice() {
            [one] => Some(one),
            several => several.iter().find(|set| {
                set.iter().any(|c| {
                    members
                        .iter()
                        .any(|m| &m.cluster == c && m.modes.is_primary(Kind::Perf))
                })
            }),
        };
        let primary = if !unheard.is_empty() {
            Err(NoPrimary::WarmingUp(unheard))
        } else {
            match (followed.map(Vec::as_slice), sets.is_empty()) {
                (_, true) => Err(NoPrimary::None),
                (Some([one]), _) => Ok(one.clone()),
                (Some(several), _) => Err(NoPrimary::Several(several.to_vec())),
                (None, _) => Err(NoPrimary::OtherSets(sets.concat())),
            }
        };
        Decision {
            kind,
            primary,
            counted: claimants.iter().map(|m| m.cluster.clone()).collect(),
            sets,
            members,
        }
    }

    /// The replication sets with more than one primary (each a split brain).
    pub fn split(&self) -> impl Iterator<Item = &Vec<String>> {
        self.sets.iter().filter(|s| s.len() > 1)
    }

    /// The most primaries any one replication set of this kind has (the metric's
    /// value: 1 when healthy, 2+ a split brain, 0 none).
    pub fn most_in_one_set(&self) -> usize {
        self.sets.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The virtual cluster's view: the primary's own view, an empty fresh one (no
    /// primary: NXDOMAIN), or an unusable one (SERVFAIL).
    pub(super) fn view(
        &self,
        views: &[(String, Arc<ClusterView>)],
        now: Instant,
    ) -> Arc<ClusterView> {
        match &self.primary {
            Ok(name) => match views.iter().find(|(n, _)| n == name) {
                Some((_, v)) => v.clone(),
                None => Arc::new(ClusterView::empty(self.kind.label(), false)),
            },
            Err(NoPrimary::None | NoPrimary::OtherSets(_)) => {
                let mut v = ClusterView::empty(self.kind.label(), false);
                v.last_confirmed = Some(now);
                Arc::new(v)
            }
            Err(_) => Arc::new(ClusterView::empty(self.kind.label(), false)),
        }
    }
}

/// The DR primaries `claimants` grouped into DR sets. Two are in one set when their
/// DR status gives the same `cluster_id` (a DR set's id, kept by a promotion: the old
/// primary back and the promoted secondary share it), or when either id is unknown and
/// they report the same performance mode: a DR secondary mirrors its primary's
/// performance mode, so DR primaries in different performance modes are never copies of
/// one another, and without an id the agent assumes the worst of the rest.
fn dr_sets(claimants: &[&SetMember]) -> Vec<Vec<String>> {
    let linked = |a: &SetMember, b: &SetMember| match (&a.dr_set, &b.dr_set) {
        (Some(x), Some(y)) => x == y,
        _ => a.modes.perf == b.modes.perf,
    };
    // Connected components, in configured order (a handful of clusters).
    let mut set_of: Vec<usize> = (0..claimants.len()).collect();
    for i in 0..claimants.len() {
        for j in 0..i {
            if linked(claimants[i], claimants[j]) {
                let (from, to) = (set_of[i], set_of[j]);
                for s in set_of.iter_mut().filter(|s| **s == from) {
                    *s = to;
                }
            }
        }
    }
    // Each component's clusters, in configured order.
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    for (i, m) in claimants.iter().enumerate() {
        let root = set_of[i];
        match roots.iter().position(|r| *r == root) {
            Some(k) => sets[k].push(m.cluster.clone()),
            None => {
                roots.push(root);
                sets.push(vec![m.cluster.clone()]);
            }
        }
    }
    sets
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
                // A DR secondary's performance mode is its DR primary's, not its own.
                let mirrored = match self.kind {
                    Kind::Perf if m.modes.dr == Mode::Secondary => " as a DR secondary",
                    _ => "",
                };
                write!(
                    f,
                    "{}{}: {}{mirrored}{freshness}",
                    if i > 0 { ", " } else { "" },
                    m.cluster,
                    m.modes.of(self.kind).as_str()
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
            Err(NoPrimary::OtherSets(names)) => write!(
                f,
                "{} are primaries of separate {kind} sets, none of them the performance \
                 primary's: naming none (",
                names.join(" and ")
            )?,
        }
        modes(f)?;
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster of the set: its modes (perf, DR), freshness, and DR set id if known.
    fn member(cluster: &str, modes: (Mode, Mode), freshness: Freshness, dr_set: &str) -> SetMember {
        SetMember {
            cluster: cluster.into(),
            modes: Modes {
                perf: modes.0,
                dr: modes.1,
            },
            freshness,
            dr_set: (!dr_set.is_empty()).then(|| dr_set.to_string()),
        }
    }

    /// The decision over two clusters `a` and `b` (their modes of `kind` and
    /// freshness, DR disabled), nobody still awaited.
    fn decide(kind: Kind, a: (Mode, Freshness), b: (Mode, Freshness)) -> Decision {
        let modes = |m: Mode| match kind {
            Kind::Perf => (m, Disabled),
            Kind::Dr => (Disabled, m),
        };
        let members = vec![
            member("a", modes(a.0), a.1, ""),
            member("b", modes(b.0), b.1, ""),
        ];
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
        assert_eq!(d.most_in_one_set(), 2);
    }

    /// The topology Vault recommends: the performance primary `east` and its DR
    /// secondary `east-dr`, the performance secondary `west` and its DR secondary
    /// `west-dr`. Each DR secondary mirrors its DR primary's performance mode.
    fn recommended(ids: [&str; 4]) -> Vec<SetMember> {
        vec![
            member("east", (Primary, Primary), Fresh, ids[0]),
            member("east-dr", (Primary, Secondary), Fresh, ids[1]),
            member("west", (Secondary, Primary), Fresh, ids[2]),
            member("west-dr", (Secondary, Secondary), Fresh, ids[3]),
        ]
    }

    #[test]
    fn a_dr_secondary_is_never_a_performance_primary_and_dr_sets_are_told_apart() {
        let set = recommended(["x", "x", "y", "y"]);
        let perf = Decision::make(Kind::Perf, set.clone(), vec![]);
        assert_eq!(perf.primary, Ok("east".into()));
        assert_eq!(perf.counted, ["east"]);
        assert!(
            perf.to_string()
                .contains("east-dr: primary as a DR secondary"),
            "{perf}"
        );
        let dr = Decision::make(Kind::Dr, set.clone(), vec![]);
        assert_eq!(
            dr.primary,
            Ok("east".into()),
            "the performance primary's DR set"
        );
        assert_eq!(dr.sets, [vec!["east"], vec!["west"]]);
        assert_eq!(dr.split().count(), 0);
        assert_eq!(dr.most_in_one_set(), 1);
        // Without any DR status yet, the performance modes still tell them apart.
        let dr = Decision::make(Kind::Dr, recommended(["", "", "", ""]), vec![]);
        assert_eq!(dr.sets, [vec!["east"], vec!["west"]]);

        // east is lost; east-dr is promoted: it is the performance primary now.
        let mut promoted = set.clone();
        promoted[0].freshness = Unusable;
        promoted[1].modes = Modes {
            perf: Primary,
            dr: Primary,
        };
        let perf = Decision::make(Kind::Perf, promoted.clone(), vec![]);
        assert_eq!(perf.primary, Ok("east-dr".into()));
        assert_eq!(
            Decision::make(Kind::Dr, promoted.clone(), vec![]).primary,
            Ok("east-dr".into())
        );
        // east comes back still claiming both: two primaries of each kind, in one DR
        // set (the id survived the promotion).
        promoted[0].freshness = Fresh;
        let perf = Decision::make(Kind::Perf, promoted.clone(), vec![]);
        assert_eq!(
            perf.primary,
            Err(NoPrimary::Several(vec!["east".into(), "east-dr".into()]))
        );
        let dr = Decision::make(Kind::Dr, promoted, vec![]);
        assert!(matches!(dr.primary, Err(NoPrimary::Several(_))), "{dr}");
        assert_eq!(dr.sets, [vec!["east", "east-dr"], vec!["west"]]);
    }

    #[test]
    fn a_split_in_a_dr_set_the_label_does_not_follow_is_still_a_split() {
        // west-dr promoted, west back: both DR primaries of the set "y".
        let mut set = recommended(["x", "x", "y", "y"]);
        set[3].modes.dr = Primary;
        let dr = Decision::make(Kind::Dr, set.clone(), vec![]);
        assert_eq!(
            dr.primary,
            Ok("east".into()),
            "dr-primary follows east's set"
        );
        assert_eq!(dr.split().collect::<Vec<_>>(), [&vec!["west", "west-dr"]]);
        assert_eq!(dr.most_in_one_set(), 2);
        // Different ids: two sets after all (west-dr was re-enabled as a new primary).
        set[3].dr_set = Some("z".into());
        let dr = Decision::make(Kind::Dr, set, vec![]);
        assert_eq!(dr.split().count(), 0);
    }

    #[test]
    fn several_dr_sets_without_the_performance_primarys_name_none() {
        let set = vec![
            member("west", (Secondary, Primary), Fresh, "y"),
            member("north", (Secondary, Primary), Fresh, "z"),
        ];
        let dr = Decision::make(Kind::Dr, set, vec![]);
        assert_eq!(
            dr.primary,
            Err(NoPrimary::OtherSets(vec!["west".into(), "north".into()]))
        );
        assert!(dr.to_string().contains("separate DR sets"), "{dr}");
        assert_eq!(dr.most_in_one_set(), 1);
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
                member("a", (Primary, Disabled), Fresh, ""),
                member("b", (Mode::Unknown, Mode::Unknown), Unusable, ""),
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
