//! The supervisor: starts every part from a validated config, reloads it on SIGHUP, and
//! stops it in order.
//!
//! Reload is blue/green inside the process. Watchers whose cluster config did not change
//! keep running; changed ones are replaced by a watcher seeded with the old view, so
//! answers never gap (a replication set is replaced with any of its clusters' watchers).
//! A new DNS server and new proxy listeners are bound on their addresses with
//! SO_REUSEPORT beside the old ones, started, and only then are the old ones retired: the
//! old DNS server stops, old proxy listeners stop accepting while their open connections
//! stay until they end (or their leader changes). Proxy listeners whose config did not
//! change are kept as they are. Kept and retired listeners are pointed at their cluster's
//! current feed before a replaced watcher stops, so open connections keep following the
//! leader. A config that fails validation changes nothing.
//!
//! Stop order: STOPPING=1 and /ready 503 at once; DNS keeps answering for `lameduck`
//! (in-flight queries are answered), then stops; proxies stop accepting and give open
//! connections `drain_timeout`; watchers stop last.

mod parts;
mod poller;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::admin::{ClusterHandle, Observed};
use crate::config::Config;
use crate::dns::server::DnsServer;
use crate::panic::FatalSender;
use crate::systemd;
use crate::vault::feed::Feeds;
use crate::vault::replication::ReplicationSet;
use parts::*;

/// A running agent.
pub struct Supervisor {
    config: Config,
    watchers: HashMap<String, RunningWatcher>,
    replication: Option<RunningReplication>,
    dns: RunningDns,
    proxies: Vec<RunningProxy>,
    admin: Option<RunningAdmin>,
    observed: Arc<Observed>,
    prometheus: Option<PrometheusHandle>,
    /// Watcher and proxy tasks, including retired ones still draining.
    tasks: TaskTracker,
    watcher_tasks: TaskTracker,
    /// Cancelled at the end of the drain: closes what retired listeners still hold.
    close_all: CancellationToken,
    side: SideParts,
    /// A long-lived part that panics or stops on its own reports here: that is fatal
    /// (see `panic`).
    fatal_tx: FatalSender,
    /// The thread the watchers poll on.
    poller: poller::Poller,
}

/// What a reload found it must change, every part of it built, bound and checked:
/// what [`Supervisor::commit`] swaps in.
struct Plan {
    /// Clusters whose watcher keeps running.
    kept: Vec<String>,
    /// Watchers for new or changed clusters, seeded with the old view.
    prepared: Vec<PreparedWatcher>,
    /// Every cluster's feed in the new generation, virtual ones included.
    feeds: Feeds,
    keep_replication: bool,
    new_replication: Option<(RunningReplication, ReplicationSet)>,
    proxies: ProxyPlan,
    dns_server: DnsServer,
    admin: AdminChange,
}

impl Supervisor {
    /// Binds every listener and starts every task. Fails before serving anything if an
    /// address cannot be bound or a CA file cannot be used.
    pub async fn start(
        config: Config,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<anyhow::Error>)> {
        let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
        let observed = Arc::new(Observed::new(
            &config.datacenter,
            config.admin.ready_timeout,
            Instant::now(),
        ));
        let plan = first_plan(&config).await?;
        let poller = poller::Poller::start()
            .map_err(|e| anyhow::anyhow!("cannot start the polling thread: {e}"))?;
        let (tasks, watcher_tasks) = (TaskTracker::new(), TaskTracker::new());
        let close_all = CancellationToken::new();
        let watchers = start_watchers(plan.prepared, &poller, &watcher_tasks, &fatal_tx);
        let replication = plan
            .new_replication
            .map(|(r, set)| start_replication(r, set, &watcher_tasks, &fatal_tx));
        let proxies = plan
            .proxies
            .new_listeners
            .into_iter()
            .map(|(p, l)| start_proxy(&p, l, &plan.feeds, &close_all, &tasks, &fatal_tx))
            .collect::<Vec<_>>();
        let dns = start_dns(plan.dns_server, &tasks, &fatal_tx);
        // What runs is published before systemd's notifier can look (ready means every
        // published cluster has a view).
        publish(&observed, &config, &watchers, &proxies, &replication);
        let side = start_side_parts(&observed, prometheus.clone(), &fatal_tx);
        let admin = match plan.admin {
            AdminChange::Rebind(bound) => {
                Some(start_admin(bound, &observed, prometheus.clone(), &side))
            }
            AdminChange::Keep | AdminChange::Disable => None,
        };
        let supervisor = Self {
            config,
            watchers,
            replication,
            dns,
            proxies,
            admin,
            observed,
            prometheus,
            tasks,
            watcher_tasks,
            close_all,
            side,
            fatal_tx,
            poller,
        };
        info!(
            clusters = supervisor.config.clusters.len(),
            proxies = supervisor.config.proxies.len(),
            admin = ?supervisor.config.admin.listen,
            "vault-locator started"
        );
        Ok((supervisor, fatal_rx))
    }

    /// Applies a new, already validated config (see the module docs): prepare, which
    /// may fail and then changes nothing, then commit, which cannot fail.
    pub async fn reload(&mut self, new: Config) -> anyhow::Result<()> {
        let plan = self.prepare(&new).await?;
        self.commit(plan).await;
        self.config = new;
        self.publish();
        Ok(())
    }

    /// Everything that can fail: watcher clients built, listeners bound, nothing
    /// started or stopped.
    async fn prepare(&self, new: &Config) -> anyhow::Result<Plan> {
        claim_addresses(new, Some(&self.config))?;
        let mut kept: Vec<String> = Vec::new();
        let mut prepared: Vec<PreparedWatcher> = Vec::new();
        for c in &new.clusters {
            match self.watchers.get(&c.name) {
                Some(old) if old.config == *c => kept.push(c.name.clone()),
                Some(old) => prepared.push(prepare_watcher(c, Some(old.handle.feed.latest()))?),
                None => prepared.push(prepare_watcher(c, None)?),
            }
        }
        let mut feeds: Feeds = kept
            .iter()
            .map(|n| (n.clone(), self.watchers[n].handle.feed.clone()))
            .chain(
                prepared
                    .iter()
                    .map(|p| (p.config.name.clone(), p.handle.feed.clone())),
            )
            .collect();
        let keep_replication = keeps_replication(self.replication.as_ref(), new, &kept);
        let new_replication = match &new.replication {
            Some(r) if !keep_replication => Some(prepare_replication(r, new, &feeds)),
            _ => None,
        };
        match (&new_replication, &self.replication) {
            (Some((r, _)), _) => add_virtual_feeds(&mut feeds, &r.handle),
            (None, Some(old)) if keep_replication => add_virtual_feeds(&mut feeds, &old.handle),
            _ => {}
        }
        let proxies = self.prepare_proxies(new)?;
        let dns_server = bind_dns(new, &feeds).await?;
        // A new admin address is bound now, so that a reload that cannot bind it
        // changes nothing (the old endpoint keeps serving).
        let admin = match new.admin.listen {
            _ if self.admin.as_ref().map(|a| a.addr) == new.admin.listen => AdminChange::Keep,
            Some(addr) => AdminChange::Rebind(bind_admin(addr)?),
            None => AdminChange::Disable,
        };
        Ok(Plan {
            kept,
            prepared,
            feeds,
            keep_replication,
            new_replication,
            proxies,
            dns_server,
            admin,
        })
    }

    /// A proxy whose config did not change is kept (if its cluster's feed was
    /// replaced, it follows the new one at commit); the others get new listeners.
    fn prepare_proxies(&self, new: &Config) -> anyhow::Result<ProxyPlan> {
        let mut fate = vec![Fate::Retire; self.proxies.len()];
        let mut new_listeners = Vec::new();
        for p in &new.proxies {
            let reusable = self
                .proxies
                .iter()
                .enumerate()
                .position(|(i, o)| fate[i] == Fate::Retire && o.config == *p);
            match reusable {
                Some(i) => fate[i] = Fate::Keep,
                None => new_listeners.push((p.clone(), bind_proxy(p)?)),
            }
        }
        Ok(ProxyPlan {
            fate,
            new_listeners,
        })
    }

    /// Starts the plan's new parts, then retires the old. Nothing here can fail.
    async fn commit(&mut self, plan: Plan) {
        let mut watchers = HashMap::new();
        for name in &plan.kept {
            if let Some(w) = self.watchers.remove(name) {
                watchers.insert(name.clone(), w);
            }
        }
        let retired_watchers: Vec<RunningWatcher> = self.watchers.drain().map(|(_, w)| w).collect();
        let started = start_watchers(
            plan.prepared,
            &self.poller,
            &self.watcher_tasks,
            &self.fatal_tx,
        );
        watchers.extend(started);
        let retired_replication = if plan.keep_replication {
            None
        } else {
            let started = plan
                .new_replication
                .map(|(r, set)| start_replication(r, set, &self.watcher_tasks, &self.fatal_tx));
            std::mem::replace(&mut self.replication, started)
        };
        let retired_proxies = self.commit_proxies(plan.proxies, &plan.feeds);
        let new_dns = start_dns(plan.dns_server, &self.tasks, &self.fatal_tx);
        let old_dns = std::mem::replace(&mut self.dns, new_dns);
        old_dns.stop.cancel();
        wait_done(old_dns.done, "retired DNS server").await;
        for p in retired_proxies {
            p.stop.cancel();
        }
        for w in retired_watchers {
            w.stop.cancel();
        }
        if let Some(r) = retired_replication {
            r.stop.cancel();
        }
        self.watchers = watchers;
        // Admin: rebound only if its address changed; the new one was bound in prepare.
        if !matches!(plan.admin, AdminChange::Keep) {
            if let Some(old) = self.admin.take() {
                old.stop.cancel();
            }
        }
        if let AdminChange::Rebind(bound) = plan.admin {
            let (observed, side) = (&self.observed, &self.side);
            self.admin = Some(start_admin(bound, observed, self.prometheus.clone(), side));
        }
    }

    /// Starts the new proxies beside the kept ones and returns the retired. Kept and
    /// retired listeners follow their cluster's current feed before the replaced
    /// watchers stop: their open connections switch to it when the old one closes, so
    /// they keep following the leader (and the primary).
    fn commit_proxies(&mut self, plan: ProxyPlan, feeds: &Feeds) -> Vec<RunningProxy> {
        let (mut proxies, mut retired) = (Vec::new(), Vec::new());
        for (fate, old) in plan.fate.into_iter().zip(std::mem::take(&mut self.proxies)) {
            match fate {
                Fate::Keep => proxies.push(old),
                Fate::Retire => retired.push(old),
            }
        }
        for (config, listener) in plan.new_listeners {
            let (close, tasks, fatal) = (&self.close_all, &self.tasks, &self.fatal_tx);
            proxies.push(start_proxy(&config, listener, feeds, close, tasks, fatal));
        }
        for p in proxies.iter().chain(&retired) {
            if let Some(feed) = feeds.get(&p.config.cluster) {
                for side in &p.sides {
                    side.follow(feed.clone());
                }
            }
        }
        self.proxies = proxies;
        retired
    }

    /// Tells the admin endpoint and systemd what now runs.
    fn publish(&self) {
        let (config, watchers) = (&self.config, &self.watchers);
        publish(
            &self.observed,
            config,
            watchers,
            &self.proxies,
            &self.replication,
        );
    }

    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// Stops in order (see the module docs).
    pub async fn shutdown(self) {
        systemd::stopping();
        self.observed
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(self.config.dns.lameduck).await;
        self.dns.stop.cancel();
        wait_done(self.dns.done, "DNS server").await;
        for p in &self.proxies {
            p.stop.cancel();
        }
        // Open connections, retired listeners' too, get until the drain deadline.
        let close_all = self.close_all.clone();
        let drain = self.config.drain_timeout;
        let closer = tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            close_all.cancel();
        });
        self.tasks.close();
        self.tasks.wait().await;
        closer.abort();
        self.side.stop.cancel();
        for w in self.watchers.values() {
            w.stop.cancel();
        }
        if let Some(r) = &self.replication {
            r.stop.cancel();
        }
        self.watcher_tasks.close();
        self.watcher_tasks.wait().await;
        self.side.tasks.close();
        self.side.tasks.wait().await;
        info!("stopped");
    }
}

/// The plan of a start: every part new, everything that can fail done (addresses
/// claimed, clients built, listeners bound) before anything runs.
async fn first_plan(config: &Config) -> anyhow::Result<Plan> {
    claim_addresses(config, None)?;
    let mut prepared = Vec::new();
    for c in &config.clusters {
        prepared.push(prepare_watcher(c, None)?);
    }
    let mut feeds: Feeds = prepared
        .iter()
        .map(|p| (p.config.name.clone(), p.handle.feed.clone()))
        .collect();
    let new_replication = config
        .replication
        .as_ref()
        .map(|r| prepare_replication(r, config, &feeds));
    if let Some((r, _)) = &new_replication {
        add_virtual_feeds(&mut feeds, &r.handle);
    }
    let mut new_listeners = Vec::new();
    for p in &config.proxies {
        new_listeners.push((p.clone(), bind_proxy(p)?));
    }
    let dns_server = bind_dns(config, &feeds).await?;
    let admin = match config.admin.listen {
        Some(addr) => AdminChange::Rebind(bind_admin(addr)?),
        None => AdminChange::Disable,
    };
    Ok(Plan {
        kept: Vec::new(),
        prepared,
        feeds,
        keep_replication: false,
        new_replication,
        proxies: ProxyPlan {
            fate: Vec::new(),
            new_listeners,
        },
        dns_server,
        admin,
    })
}

/// Tells `observed` (the admin endpoint, systemd) what runs: the watchers' handles in
/// the config's order (what `/status` and `status` list), every proxy side, the set.
fn publish(
    observed: &Observed,
    config: &Config,
    watchers: &HashMap<String, RunningWatcher>,
    proxies: &[RunningProxy],
    replication: &Option<RunningReplication>,
) {
    let clusters: Vec<ClusterHandle> = config
        .clusters
        .iter()
        .filter_map(|c| watchers.get(&c.name).map(|w| w.handle.clone()))
        .collect();
    observed.replace(
        &config.datacenter,
        clusters,
        proxies.iter().flat_map(|p| p.sides.clone()).collect(),
        replication.as_ref().map(|r| r.handle.clone()),
    );
}

/// Starts each prepared watcher on the polling thread, by cluster name.
fn start_watchers(
    prepared: Vec<PreparedWatcher>,
    poller: &poller::Poller,
    tasks: &TaskTracker,
    fatal: &FatalSender,
) -> HashMap<String, RunningWatcher> {
    prepared
        .into_iter()
        .map(|p| {
            let running = p.start(poller.handle(), tasks, fatal);
            (running.config.name.clone(), running)
        })
        .collect()
}
