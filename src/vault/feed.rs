//! `ClusterFeed`: a cluster's published view as every consumer reads it (the DNS zone
//! and its answer caches, the proxy, the admin endpoint, systemd). The view carries its
//! cluster's `serve_stale_for`, so the freshness rule is applied in one place
//! ([`ClusterView::freshness`]) whoever passes the view on (a replication set's virtual
//! cluster is fed the views of real ones).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::view::{ClusterView, Freshness};

/// Every cluster's feed by cluster name (the replication set's virtual clusters too):
/// what the DNS zone answers from and the proxies forward by.
pub type Feeds = HashMap<String, ClusterFeed>;

/// A cluster's view, read-only.
#[derive(Clone)]
pub struct ClusterFeed {
    rx: watch::Receiver<Arc<ClusterView>>,
}

impl ClusterFeed {
    /// The watcher makes the feed of its own channel; tests make one from theirs.
    pub fn new(rx: watch::Receiver<Arc<ClusterView>>) -> Self {
        Self { rx }
    }

    /// The latest view (with the latest report times), whatever its freshness.
    pub fn latest(&self) -> Arc<ClusterView> {
        self.rx.borrow().clone()
    }

    /// How `view` may be used to answer at `now`.
    pub fn freshness(&self, view: &ClusterView, now: Instant) -> Freshness {
        view.freshness(now)
    }

    /// The latest view if it may be used to answer now (fresh, or stale within the
    /// window); None means SERVFAIL for DNS and a refused connection for the proxy.
    pub fn usable(&self) -> Option<Arc<ClusterView>> {
        let view = self.latest();
        (self.freshness(&view, Instant::now()) != Freshness::Unusable).then_some(view)
    }

    /// Whether the view has changed in a way that answers differently since this copy
    /// of the feed last looked (`seen`). The watcher wakes consumers only for those.
    pub fn has_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(false)
    }

    /// The latest view, marking it seen by this copy of the feed.
    pub fn seen(&mut self) -> Arc<ClusterView> {
        self.rx.borrow_and_update().clone()
    }

    /// Whether both read the same watcher's channel.
    pub fn same_source(&self, other: &ClusterFeed) -> bool {
        self.rx.same_channel(&other.rx)
    }

    /// Waits for a change that answers differently; Err once the watcher is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn usable_applies_the_stale_window() {
        let mut view = ClusterView::empty("dc1", false);
        view.serve_stale_for = Duration::from_secs(5);
        let (tx, rx) = watch::channel(Arc::new(view.clone()));
        let feed = ClusterFeed::new(rx);
        assert!(feed.usable().is_none(), "no view yet");
        view.last_confirmed = Some(Instant::now());
        view.stale = true;
        tx.send_replace(Arc::new(view.clone()));
        assert!(feed.usable().is_some(), "stale within the window");
        view.last_confirmed = Some(Instant::now() - Duration::from_secs(6));
        tx.send_replace(Arc::new(view));
        assert!(feed.usable().is_none(), "stale past the window");
    }
}
