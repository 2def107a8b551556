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

mod part;
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

use crate::admin::{ClusterHandle, Observed, Running};
use crate::config::Config;
use crate::dns::server::DnsServer;
use crate::systemd;
use crate::vault::feed::Feeds;
use part::{Part, Spawner};
use parts::*;

/// A running agent.
pub struct Supervisor {
    config: Config,
    watchers: HashMap<String, RunningWatcher>,
    replication: Option<RunningReplication>,
    dns: Part,
    proxies: Vec<RunningProxy>,
    admin: Option<RunningAdmin>,
    observed: Arc<Observed>,
    prometheus: Option<PrometheusHandle>,
    /// Starts the serving parts (DNS, proxies, retired ones still draining included).
    serving: Spawner,
    /// Starts the replication set; `polling` the watchers, on the polling thread.
    /// Both are waited for after the serving parts, which read their views.
    watching: Spawner,
    polling: Spawner,
    /// Cancelled at the end of the drain: closes what retired listeners still hold.
    close_all: CancellationToken,
    reporting: ReportingParts,
    /// The thread the watchers poll on (`polling` starts parts there); held, since
    /// dropping it ends the thread.
    _poller: poller::Poller,
}

/// A started agent, and where its parts report a fatal end (the caller then stops it).
pub struct Started {
    pub supervisor: Supervisor,
    pub fatal: mpsc::UnboundedReceiver<anyhow::Error>,
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
    new_replication: Option<PreparedReplication>,
    proxies: ProxyPlan,
    dns_server: DnsServer,
    admin: AdminChange,
}

impl Supervisor {
    /// Binds every listener and starts every task. Fails before serving anything if an
    /// address cannot be bound or a CA file cannot be used.
    // Long because it starts every part in the order the module docs give, one
    // statement each; split, that order would be spread over several functions.
    pub async fn start(
        config: Config,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<Started> {
        let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
        let observed = Arc::new(Observed::new(
            &config.local_cluster,
            config.admin.ready_timeout,
            Instant::now(),
        ));
        let plan = first_plan(&config).await?;
        let poller = poller::Poller::start()
            .map_err(|e| anyhow::anyhow!("cannot start the polling thread: {e}"))?;
        let [serving, watching] =
            [(); 2].map(|_| Spawner::new(TaskTracker::new(), fatal_tx.clone()));
        let polling = watching.on(poller.handle().clone());
        let close_all = CancellationToken::new();
        let watchers = start_watchers(plan.prepared, &polling);
        let replication = plan.new_replication.map(|r| r.start(&watching));
        let proxies = plan
            .proxies
            .new_listeners
            .into_iter()
            .map(|bound| start_proxy(bound, &plan.feeds, &close_all, &serving))
            .collect::<Vec<_>>();
        let dns = start_dns(plan.dns_server, &serving);
        // What runs is published before systemd's notifier can look (ready means every
        // published cluster has a view).
        publish(&observed, &config, &watchers, &proxies, &replication);
        let reporting = Spawner::new(TaskTracker::new(), fatal_tx);
        let reporting = start_reporting_parts(&observed, prometheus.clone(), reporting);
        let admin = match plan.admin {
            AdminChange::Rebind(bound) => Some(start_admin(
                bound,
                &observed,
                prometheus.clone(),
                &reporting,
            )),
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
            serving,
            watching,
            polling,
            close_all,
            reporting,
            _poller: poller,
        };
        info!(
            clusters = supervisor.config.clusters.len(),
            proxies = supervisor.config.proxies.len(),
            admin = ?supervisor.config.admin.listen,
            "vault-locator started"
        );
        Ok(Started {
            supervisor,
            fatal: fatal_rx,
        })
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
            (Some(r), _) => r.handle.add_to(&mut feeds),
            (None, Some(old)) if keep_replication => old.handle.add_to(&mut feeds),
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
                None => new_listeners.push(bind_proxy(p)?),
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
        watchers.extend(start_watchers(plan.prepared, &self.polling));
        let retired_replication = if plan.keep_replication {
            None
        } else {
            let started = plan.new_replication.map(|r| r.start(&self.watching));
            std::mem::replace(&mut self.replication, started)
        };
        let retired_proxies = self.commit_proxies(plan.proxies, &plan.feeds);
        let new_dns = start_dns(plan.dns_server, &self.serving);
        std::mem::replace(&mut self.dns, new_dns).stopped().await;
        for p in retired_proxies {
            p.stop();
        }
        for w in retired_watchers {
            w.part.stop();
        }
        if let Some(r) = retired_replication {
            r.part.stop();
        }
        self.watchers = watchers;
        // Admin: rebound only if its address changed; the new one was bound in prepare.
        if !matches!(plan.admin, AdminChange::Keep) {
            if let Some(old) = self.admin.take() {
                old.part.stop();
            }
        }
        if let AdminChange::Rebind(bound) = plan.admin {
            let (observed, reporting) = (&self.observed, &self.reporting);
            self.admin = Some(start_admin(
                bound,
                observed,
                self.prometheus.clone(),
                reporting,
            ));
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
        for bound in plan.new_listeners {
            proxies.push(start_proxy(bound, feeds, &self.close_all, &self.serving));
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
        self.dns.stopped().await;
        for p in &self.proxies {
            p.stop();
        }
        // Open connections, retired listeners' too, get until the drain deadline.
        let close_all = self.close_all.clone();
        let drain = self.config.drain_timeout;
        let closer = tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            close_all.cancel();
        });
        let serving = self.serving.tasks();
        serving.close();
        serving.wait().await;
        closer.abort();
        self.reporting.stop.cancel();
        for w in self.watchers.values() {
            w.part.stop();
        }
        if let Some(r) = &self.replication {
            r.part.stop();
        }
        let watching = self.watching.tasks();
        watching.close();
        watching.wait().await;
        let reporting = self.reporting.spawner.tasks();
        reporting.close();
        reporting.wait().await;
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
    if let Some(r) = &new_replication {
        r.handle.add_to(&mut feeds);
    }
    let mut new_listeners = Vec::new();
    for p in &config.proxies {
        new_listeners.push(bind_proxy(p)?);
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
    observed.replace(Running {
        local_cluster: config.local_cluster.clone(),
        clusters,
        proxies: proxies.iter().flat_map(|p| p.sides.clone()).collect(),
        replication: replication.as_ref().map(|r| r.handle.clone()),
    });
}

/// Starts each prepared watcher (with `polling`: on the polling thread), by cluster name.
fn start_watchers(
    prepared: Vec<PreparedWatcher>,
    polling: &Spawner,
) -> HashMap<String, RunningWatcher> {
    prepared
        .into_iter()
        .map(|p| {
            let running = p.start(polling);
            (running.config.name.clone(), running)
        })
        .collect()
}
