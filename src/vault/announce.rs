//! What a watcher announces to operators: a log line on each transition (never one per poll)
//! and the cluster's metrics after each view.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::client::PollError;
use super::replication;
use super::rules::{Polled, ViewEvent};
use super::view::{self, ClusterView, NoLeader};
use crate::telemetry;

/// One WARN when a node stops answering (or fails in a new way), one INFO when it
/// answers again: the node and the reason, never a line per poll.
pub(super) fn log_nodes(cluster: &str, polled: &[Polled], failing: &mut [Option<&'static str>]) {
    for (p, logged) in polled.iter().zip(failing.iter_mut()) {
        let failure = match (&p.report.health, &p.report.leader) {
            // Not polled yet is not a failure: nothing to say until it answers.
            (Err(PollError::NotYet), _) => continue,
            (Ok(_), Ok(_)) => None,
            (Err(e), _) | (_, Err(e)) => Some(e),
        };
        // An answer that aged out, then the request's own timeout, is one failure.
        let kind = failure.map(|e| match e.kind() {
            "unheard" => "timeout",
            k => k,
        });
        match (failure, *logged) {
            (Some(e), was) if was != kind => {
                warn!(%cluster, node = %p.url, reason = %e, "node not answering");
            }
            (None, Some(_)) => info!(%cluster, node = %p.url, "node answers again"),
            _ => {}
        }
        *logged = kind;
    }
}

/// Counts a failed poll once, when its report arrives.
pub(super) fn count_errors(cluster: &str, polled: &Polled) {
    let report = &polled.report;
    if let Some(e) = report
        .health
        .as_ref()
        .err()
        .or(report.leader.as_ref().err())
    {
        metrics::counter!(telemetry::POLL_ERRORS, "cluster" => cluster.to_string(), "kind" => e.kind())
            .increment(1);
        debug!(%cluster, node = %polled.url, kind = e.kind(), error = %e, "poll failed");
    }
}

/// What the gauges of one view show: set again only when it changes (a round that
/// repeats the last one, the common case, costs no registry lookups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Gauges {
    reachable: usize,
    unreachable: usize,
    stale: bool,
    has_leader: bool,
    modes: [replication::Mode; 2],
    no_leader: Option<&'static str>,
}

impl Gauges {
    fn of(view: &ClusterView) -> Self {
        let reachable = view
            .members
            .iter()
            .filter(|m| m.role != view::Role::Unreachable && !view.stale)
            .count();
        let [perf, dr] = replication::Kind::ALL;
        Self {
            reachable,
            unreachable: view.members.len() - reachable,
            stale: view.stale,
            has_leader: view.leader.is_some(),
            modes: [
                replication::cluster_mode(view, perf),
                replication::cluster_mode(view, dr),
            ],
            no_leader: view.no_leader.as_ref().map(NoLeader::kind),
        }
    }
}

/// Metrics for one view (the view's age is computed at scrape time); `shown` is what
/// the gauges show now, None before the first view.
pub(super) fn record(
    cluster: &str,
    view: &ClusterView,
    events: &[ViewEvent],
    shown: &mut Option<Gauges>,
) {
    let changes = leader_changes(events);
    if changes > 0 {
        metrics::counter!(telemetry::LEADER_CHANGES, "cluster" => cluster.to_string())
            .increment(changes);
    }
    let gauges = Gauges::of(view);
    if shown.as_ref() == Some(&gauges) {
        return;
    }
    let cluster = cluster.to_string();
    metrics::gauge!(telemetry::NODES, "cluster" => cluster.clone(), "state" => "reachable")
        .set(gauges.reachable as f64);
    metrics::gauge!(telemetry::NODES, "cluster" => cluster.clone(), "state" => "unreachable")
        .set(gauges.unreachable as f64);
    metrics::gauge!(telemetry::STALE, "cluster" => cluster.clone())
        .set(f64::from(u8::from(gauges.stale)));
    metrics::gauge!(telemetry::HAS_LEADER, "cluster" => cluster.clone())
        .set(f64::from(u8::from(gauges.has_leader)));
    for (kind, mode) in replication::Kind::ALL.into_iter().zip(gauges.modes) {
        for m in replication::Mode::ALL {
            metrics::gauge!(telemetry::REPLICATION_MODE, "cluster" => cluster.clone(), "kind" => kind.as_str(), "mode" => m.as_str())
                .set(f64::from(u8::from(m == mode)));
        }
    }
    for kind in NoLeader::KINDS {
        metrics::gauge!(telemetry::NO_LEADER, "cluster" => cluster.clone(), "reason" => kind)
            .set(f64::from(u8::from(gauges.no_leader == Some(kind))));
    }
    *shown = Some(gauges);
}

/// How many leaders the events confirm: a failover (leader, then none, then a new one)
/// is one change, not two; the leaderless period shows in `vault_cluster_has_leader`
/// and `vault_cluster_no_leader`.
fn leader_changes(events: &[ViewEvent]) -> u64 {
    let confirmed = |e: &&ViewEvent| matches!(e, ViewEvent::LeaderChanged { new: Some(_), .. });
    events.iter().filter(confirmed).count() as u64
}

/// One line per event: leader changes at INFO, no answers at WARN with each node's
/// reason.
pub(super) fn log_events(
    cluster: &str,
    serve_stale_for: Duration,
    events: &[ViewEvent],
    view: &ClusterView,
) {
    // Why each node has no answer, for the lines that say none answers.
    let reasons = || {
        view.members
            .iter()
            .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.url)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    for e in events {
        match e {
            ViewEvent::LeaderChanged {
                old,
                new,
                leaderless_for,
                reason,
            } => info!(
                %cluster,
                old = old.as_deref().unwrap_or("none"),
                new = new.as_deref().unwrap_or("none"),
                leaderless_for = %leaderless_for
                    .map(|d| humantime::format_duration(round_ms(d)).to_string())
                    .unwrap_or_else(|| "-".into()),
                %reason,
                "leader changed"
            ),
            ViewEvent::BecameStale => warn!(
                %cluster,
                ?serve_stale_for,
                reasons = %reasons(),
                "no node answers; serving the last confirmed view (stale)"
            ),
            ViewEvent::NoViewYet => warn!(
                %cluster,
                reasons = %reasons(),
                "no node answers and none has yet; this cluster's names answer SERVFAIL"
            ),
            ViewEvent::Recovered => info!(%cluster, "nodes answer again; view is fresh"),
        }
    }
}

/// Millisecond precision is plenty for a log line.
fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_is_one_leader_change() {
        let change = |old: Option<&str>, new: Option<&str>| ViewEvent::LeaderChanged {
            old: old.map(Into::into),
            new: new.map(Into::into),
            leaderless_for: None,
            reason: String::new(),
        };
        let lost = change(Some("a"), None);
        let elected = change(None, Some("b"));
        assert_eq!(leader_changes(std::slice::from_ref(&lost)), 0);
        assert_eq!(leader_changes(&[lost, elected.clone()]), 1);
        assert_eq!(leader_changes(&[change(Some("a"), Some("b"))]), 1);
        assert_eq!(leader_changes(&[ViewEvent::BecameStale, elected]), 1);
    }
}
