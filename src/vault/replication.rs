//! The replication set: applies the primary rule (`primaries`) to its clusters' views
//! and publishes the result as the views of two virtual clusters, `perf-primary` and
//! `dr-primary`. A virtual cluster's view *is* the view of the real cluster that holds
//! the role, so the DNS zone and the proxy answer for it with no code of their own: its
//! `active` is the primary's active node, and a promotion is one view change, exactly as
//! a leader change is. It also judges the set's streams (`stream_health`) from each
//! cluster's latest replication status, and logs and measures both.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use super::modes::{Kind, Mode, Modes};
pub use super::primaries::{cluster_mode, Decision, NoPrimary, SetMember};

use super::feed::{ClusterFeed, Feeds};
use super::stream_health::{self, StreamHealth, StreamTargets};
use super::view::ClusterView;
use crate::telemetry;

/// Both kinds' decisions and the streams' health, as the admin endpoint shows them.
#[derive(Debug, Clone, Default)]
pub struct ReplicationState {
    pub clusters: Vec<String>,
    pub decisions: Vec<Decision>,
    /// Each replicating cluster's streams (see `stream_health`).
    pub streams: Vec<StreamHealth>,
}

/// The replication set: reads its clusters' feeds, publishes the virtual clusters.
pub struct ReplicationSet {
    feeds: Vec<(String, ClusterFeed)>,
    virtual_views: Vec<(Kind, watch::Sender<Arc<ClusterView>>)>,
    state: watch::Sender<Arc<ReplicationState>>,
    warm_until: Instant,
    targets: StreamTargets,
}

/// What the rest of the agent reads: a feed per virtual cluster, and the decisions.
#[derive(Clone)]
pub struct ReplicationHandle {
    feeds: Vec<(Kind, ClusterFeed)>,
    pub state: watch::Receiver<Arc<ReplicationState>>,
}

impl ReplicationHandle {
    /// Adds the virtual clusters' feeds to `feeds`, under their labels (`perf-primary`,
    /// `dr-primary`): DNS and proxies look them up like any cluster's.
    pub fn add_to(&self, feeds: &mut Feeds) {
        for (kind, feed) in &self.feeds {
            feeds.insert(kind.label().to_string(), feed.clone());
        }
    }

    /// The feed of `kind`'s virtual cluster.
    pub fn feed(&self, kind: Kind) -> Option<ClusterFeed> {
        let found = self.feeds.iter().find(|(k, _)| *k == kind);
        found.map(|(_, feed)| feed.clone())
    }
}

/// How often the rule is applied again without a view change: a stale view's window
/// ends with no change published.
const RECHECK: Duration = Duration::from_secs(1);

impl ReplicationSet {
    /// `clusters`: the set's clusters, in configured order, each with its feed in
    /// `feeds`. The first decisions are made
    /// here, from the feeds as they are, so a reload that builds a new set has its
    /// virtual views at once. `warm_up`: how long to wait for a cluster never heard.
    /// `targets`: what this agent answers, for judging where the streams dial.
    pub fn new(
        clusters: &[String],
        feeds: &Feeds,
        warm_up: Duration,
        targets: StreamTargets,
    ) -> Self {
        let feeds: Vec<(String, ClusterFeed)> = clusters
            .iter()
            .map(|c| (c.clone(), feeds[c].clone()))
            .collect();
        let now = Instant::now();
        let warm_until = now + warm_up;
        let views = views_of(&feeds);
        let state = decide_all(&views, now, warm_until, &targets);
        let mut virtual_views = Vec::new();
        for d in &state.decisions {
            let (tx, _) = watch::channel(d.view(&views, now));
            virtual_views.push((d.kind, tx));
        }
        let state = Arc::new(state);
        let (state_tx, _) = watch::channel(state.clone());
        let set = Self {
            feeds,
            virtual_views,
            state: state_tx,
            warm_until,
            targets,
        };
        set.report(&state, None);
        set
    }

    /// What the rest of the agent reads of this set (its senders keep what they hold
    /// with no reader, so a handle taken any time sees the latest).
    pub fn handle(&self) -> ReplicationHandle {
        let feeds = self.virtual_views.iter();
        ReplicationHandle {
            feeds: feeds
                .map(|(kind, tx)| (*kind, ClusterFeed::new(tx.subscribe())))
                .collect(),
            state: self.state.subscribe(),
        }
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
        let state = decide_all(&views, now, self.warm_until, &self.targets);
        for (d, (_, tx)) in state.decisions.iter().zip(&self.virtual_views) {
            let next = d.view(&views, now);
            tx.send_if_modified(|current| {
                let same = current.cluster == next.cluster && current.answers_like(&next);
                *current = next;
                !same
            });
        }
        self.report(&state, Some(&previous));
        self.state.send_replace(Arc::new(state));
    }

    /// Logs what changed since `previous` and sets the metrics.
    fn report(&self, state: &ReplicationState, previous: Option<&ReplicationState>) {
        stream_health::record(&state.streams, previous.map(|p| p.streams.as_slice()));
        for d in &state.decisions {
            let kind = d.kind.as_str();
            metrics::gauge!(telemetry::REPLICATION_PRIMARIES, "kind" => kind)
                .set(d.most_in_one_set() as f64);
            let before = previous.and_then(|p| p.decisions.iter().find(|o| o.kind == d.kind));
            // A split brain in a DR set the label does not follow is as loud as one in
            // the set it does: its clusters' own names are what that set's stream dials.
            let split_before: Vec<&Vec<String>> = before.iter().flat_map(|b| b.split()).collect();
            for set in d.split().filter(|s| !split_before.contains(s)) {
                if d.primary != Err(NoPrimary::Several(set.clone())) {
                    error!(
                        %kind,
                        clusters = %set.join(","),
                        why = %d,
                        "two primaries in one replication set"
                    );
                }
            }
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
                Err(NoPrimary::None | NoPrimary::OtherSets(_)) => {
                    info!(%kind, %old, why = %d, "no primary")
                }
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
    targets: &StreamTargets,
) -> ReplicationState {
    let warming = now < warm_until;
    let unheard: Vec<String> = views
        .iter()
        .filter(|_| warming)
        .filter(|(_, v)| v.last_confirmed.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let members: Vec<SetMember> = views
        .iter()
        .map(|(name, view)| SetMember {
            cluster: name.clone(),
            modes: Modes {
                perf: cluster_mode(view, Kind::Perf),
                dr: cluster_mode(view, Kind::Dr),
            },
            freshness: view.freshness(now),
            dr_set: view
                .streams
                .as_ref()
                .and_then(|r| r.streams.as_ref())
                .map(|s| s.dr.cluster_id.clone())
                .filter(|id| !id.is_empty()),
        })
        .collect();
    // A DR primary whose DR set is not known yet, while the warm-up lasts: its first
    // replication status (asked as soon as it has a leader) tells the sets apart.
    let unsorted: Vec<String> = members
        .iter()
        .filter(|m| warming && m.modes.dr == Mode::Primary && m.dr_set.is_none())
        .map(|m| m.cluster.clone())
        .collect();
    let decisions: Vec<Decision> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let mut waiting = unheard.clone();
            if kind == Kind::Dr {
                let unsorted = unsorted.iter().filter(|c| !unheard.contains(c));
                waiting.extend(unsorted.cloned());
            }
            Decision::make(kind, members.clone(), waiting)
        })
        .collect();
    let named: Vec<(Kind, String)> = decisions
        .iter()
        .filter_map(|d| Some((d.kind, d.primary.as_ref().ok()?.clone())))
        .collect();
    ReplicationState {
        clusters: views.iter().map(|(n, _)| n.clone()).collect(),
        streams: stream_health::judge(views, &named, targets, SystemTime::now()),
        decisions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::view::{Leader, Member, Role};

    /// A fresh view of `name` whose one node is active with `modes`.
    fn view(name: &str, i: u8, perf: Mode, dr: Mode) -> Arc<ClusterView> {
        let mut v = ClusterView::empty(name, false);
        v.last_confirmed = Some(Instant::now());
        let api = format!("http://127.0.0.{i}:8200");
        let ip = format!("127.0.0.{i}").parse().unwrap();
        v.leader = Some(Leader::literal(&api, "", vec![ip], 8200));
        v.members = vec![Member {
            url: api.parse().unwrap(),
            addrs: vec![ip],
            port: 8200,
            role: Role::Active,
            replication: Modes { perf, dr },
            last_confirmed: None,
            error: None,
        }];
        Arc::new(v)
    }

    /// A promotion moves the label on the view change that shows it, not on the
    /// set's periodic recheck: the answer follows within the poll that saw it.
    #[tokio::test(start_paused = true)]
    async fn a_promotion_moves_the_label_on_the_view_change_that_shows_it() {
        use Mode::{Primary, Secondary};
        let (east, east_rx) = watch::channel(view("east", 1, Primary, Primary));
        let (east_dr, dr_rx) = watch::channel(view("east-dr", 2, Primary, Secondary));
        let feeds = Feeds::from([
            ("east".to_string(), ClusterFeed::new(east_rx)),
            ("east-dr".to_string(), ClusterFeed::new(dr_rx)),
        ]);
        let clusters = ["east".to_string(), "east-dr".to_string()];
        let set = ReplicationSet::new(&clusters, &feeds, Duration::ZERO, StreamTargets::default());
        let handle = set.handle();
        let perf = handle.feed(Kind::Perf).unwrap();
        let dr = handle.feed(Kind::Dr).unwrap();
        assert!(!perf.same_source(&dr), "one feed per kind");
        let mut all = Feeds::new();
        handle.add_to(&mut all);
        assert!(all["perf-primary"].same_source(&perf));
        assert!(all["dr-primary"].same_source(&dr));
        assert_eq!(
            perf.latest().cluster,
            "east",
            "a DR secondary is no second primary"
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(set.run(stop.clone()));
        // Let the set take its first (immediate) recheck tick and wait on the feeds.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let before = tokio::time::Instant::now();
        // east is cut off (stale), east-dr promoted.
        let mut lost = (*view("east", 1, Primary, Primary)).clone();
        lost.stale = true;
        east.send_replace(Arc::new(lost));
        east_dr.send_replace(view("east-dr", 2, Primary, Primary));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(perf.latest().cluster, "east-dr");
        assert_eq!(
            tokio::time::Instant::now(),
            before,
            "no time passed: the change itself moved the label"
        );
        let state = handle.state.borrow().clone();
        assert_eq!(state.decisions[0].primary, Ok("east-dr".into()));
        stop.cancel();
        task.await.unwrap();
    }

    /// `view` with a DR status giving `cluster_id` (what tells DR sets apart).
    fn with_dr_set(view: Arc<ClusterView>, cluster_id: &str) -> Arc<ClusterView> {
        use crate::vault::stream::{Stream, StreamReport, Streams};
        let mut v = (*view).clone();
        let dr = Stream {
            mode: Mode::Primary,
            cluster_id: cluster_id.into(),
            ..Stream::default()
        };
        v.streams = Some(Arc::new(StreamReport {
            node: "n".into(),
            streams: Some(Streams {
                perf: Stream::default(),
                dr,
            }),
            read_at: None,
            error: None,
        }));
        Arc::new(v)
    }

    fn named(views: &[Arc<ClusterView>]) -> Vec<(String, Arc<ClusterView>)> {
        views
            .iter()
            .map(|v| (v.cluster.clone(), v.clone()))
            .collect()
    }

    /// Until the warm-up ends (and not at its last instant) a cluster with no first
    /// view holds both decisions; after it, the ones heard decide.
    #[test]
    fn the_warm_up_waits_for_every_cluster_until_it_ends() {
        use Mode::{Primary, Secondary};
        let east = view("east", 1, Primary, Primary);
        let mut west = (*view("west", 2, Secondary, Primary)).clone();
        west.last_confirmed = None;
        let views = named(&[east, Arc::new(west)]);
        let (now, targets) = (Instant::now(), StreamTargets::default());
        let warm_until = now + Duration::from_secs(5);
        let during = decide_all(&views, now, warm_until, &targets);
        let [perf, dr] = [&during.decisions[0], &during.decisions[1]];
        assert_eq!(perf.primary, Err(NoPrimary::WarmingUp(vec!["west".into()])));
        // DR also waits for east, a DR primary whose set is not known yet; each once.
        let both = vec!["west".into(), "east".into()];
        assert_eq!(dr.primary, Err(NoPrimary::WarmingUp(both)));
        for at in [warm_until, warm_until + Duration::from_secs(1)] {
            let after = decide_all(&views, at, warm_until, &targets);
            assert_eq!(after.decisions[0].primary, Ok("east".into()), "perf");
        }
    }

    /// During the warm-up a DR primary whose DR set is not known (no status yet, or an
    /// empty `cluster_id`) holds the DR decision only; once known, DR decides too.
    #[test]
    fn a_dr_primary_of_unknown_set_holds_only_the_dr_decision_while_warming_up() {
        use Mode::Primary;
        let (now, targets) = (Instant::now(), StreamTargets::default());
        let warm_until = now + Duration::from_secs(5);
        let dr_of = |state: &ReplicationState| {
            let d = state.decisions.iter().find(|d| d.kind == Kind::Dr).unwrap();
            d.primary.clone()
        };
        for unknown in [
            view("east", 1, Primary, Primary),
            with_dr_set(view("east", 1, Primary, Primary), ""),
        ] {
            let state = decide_all(&named(&[unknown]), now, warm_until, &targets);
            assert_eq!(state.decisions[0].kind, Kind::Perf);
            assert_eq!(state.decisions[0].primary, Ok("east".into()));
            assert_eq!(
                dr_of(&state),
                Err(NoPrimary::WarmingUp(vec!["east".into()]))
            );
        }
        let known = with_dr_set(view("east", 1, Primary, Primary), "d1");
        let state = decide_all(&named(&[known]), now, warm_until, &targets);
        assert_eq!(dr_of(&state), Ok("east".into()));
    }

    /// A virtual cluster's feed wakes its readers (DNS caches, proxied connections)
    /// only when what it answers changes: the cluster it follows, or that cluster's
    /// answer; a recheck that changes nothing wakes no one.
    #[tokio::test]
    async fn a_virtual_feed_wakes_its_readers_only_when_its_answer_changes() {
        use Mode::{Primary, Secondary};
        let (east, east_rx) = watch::channel(view("east", 1, Primary, Primary));
        let (_west, west_rx) = watch::channel(view("west", 2, Secondary, Primary));
        let feeds = Feeds::from([
            ("east".to_string(), ClusterFeed::new(east_rx)),
            ("west".to_string(), ClusterFeed::new(west_rx)),
        ]);
        let clusters = ["east".to_string(), "west".to_string()];
        let mut set =
            ReplicationSet::new(&clusters, &feeds, Duration::ZERO, StreamTargets::default());
        let mut perf = set.handle().feed(Kind::Perf).unwrap();
        perf.seen();
        set.apply();
        assert!(!perf.has_changed(), "nothing changed: no wake-up");
        // The primary's leader moves: same cluster, another answer.
        east.send_replace(view("east", 3, Primary, Primary));
        set.apply();
        assert!(perf.has_changed(), "a new leader of the primary wakes them");
        perf.seen();
        // No primary any more: the label follows no cluster.
        east.send_replace(view("east", 3, Secondary, Primary));
        set.apply();
        assert!(perf.has_changed(), "losing the primary wakes them");
        assert_ne!(perf.seen().cluster, "east");
    }

    /// The lines `report` logs for `state` after `previous`, as text.
    fn logged(
        set: &ReplicationSet,
        state: &ReplicationState,
        previous: &ReplicationState,
    ) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || set.report(state, Some(previous)));
        let text = buffer.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    /// A primary that changes is logged once, with the old and the new; two primaries
    /// in one set are an ERROR once, not again on every recheck while they last.
    #[test]
    fn changes_of_primary_are_logged_once_each() {
        use Mode::{Primary, Secondary};
        let (now, targets) = (Instant::now(), StreamTargets::default());
        let state = |views: &[Arc<ClusterView>]| decide_all(&named(views), now, now, &targets);
        let feeds = Feeds::from([("east".to_string(), {
            let (_tx, rx) = watch::channel(view("east", 1, Primary, Primary));
            ClusterFeed::new(rx)
        })]);
        let set = ReplicationSet::new(
            &["east".to_string()],
            &feeds,
            Duration::ZERO,
            StreamTargets::default(),
        );
        let east_leads = state(&[
            with_dr_set(view("east", 1, Primary, Primary), "d1"),
            with_dr_set(view("west", 2, Secondary, Primary), "d2"),
        ]);
        let west_leads = state(&[
            with_dr_set(view("east", 1, Secondary, Primary), "d1"),
            with_dr_set(view("west", 2, Primary, Primary), "d2"),
        ]);
        let log = logged(&set, &west_leads, &east_leads);
        assert!(log.contains("primary changed"), "{log}");
        assert!(
            log.contains("old=east") && log.contains("new=west"),
            "{log}"
        );
        assert_eq!(
            logged(&set, &west_leads, &west_leads),
            "",
            "no change, no line"
        );

        let split = state(&[
            with_dr_set(view("east", 1, Primary, Primary), "d1"),
            with_dr_set(view("west", 2, Primary, Primary), "d2"),
        ]);
        let log = logged(&set, &split, &east_leads);
        assert_eq!(log.matches("ERROR").count(), 1, "{log}");
        assert!(log.contains("two primaries"), "{log}");
        assert_eq!(
            logged(&set, &split, &split),
            "",
            "still split: said already"
        );

        // A split in a DR set the label does not follow (west's, while east leads) is
        // as loud, once.
        let healthy = state(&[
            with_dr_set(view("east", 1, Primary, Primary), "d1"),
            with_dr_set(view("west", 2, Secondary, Primary), "d2"),
            with_dr_set(view("west-dr", 3, Secondary, Secondary), "d2"),
        ]);
        let west_split = state(&[
            with_dr_set(view("east", 1, Primary, Primary), "d1"),
            with_dr_set(view("west", 2, Secondary, Primary), "d2"),
            with_dr_set(view("west-dr", 3, Secondary, Primary), "d2"),
        ]);
        let log = logged(&set, &west_split, &healthy);
        assert!(
            log.contains("two primaries in one replication set"),
            "{log}"
        );
        assert!(log.contains("west,west-dr"), "{log}");
        assert_eq!(logged(&set, &west_split, &west_split), "", "said already");
    }
}
