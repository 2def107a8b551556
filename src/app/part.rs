//! One shape for every long-lived part the supervisor runs (a cluster's watcher, the
//! replication set, the DNS server, each proxy side, the admin endpoint, the systemd
//! notifier, the metrics upkeep): a [`Spawner`] starts it under a name, the supervision
//! judges how it ends (`panic::supervise_on`: ending unasked is fatal), and the
//! [`Part`] it returns stops it and waits for it. pingora's `Service` and linkerd's
//! stacks give their parts one shape for the same reason: starting, naming, watching
//! and stopping are written once.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::panic::{supervise_on, FatalSender};

/// What a part's task returns: nothing (it runs until stopped), or why it failed.
pub(super) trait Outcome: Send + 'static {
    fn into_result(self) -> anyhow::Result<()>;
}

impl Outcome for () {
    fn into_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Outcome for anyhow::Result<()> {
    fn into_result(self) -> anyhow::Result<()> {
        self
    }
}

/// Starts parts: each on the current runtime (or `runtime`), tracked by `tasks` so a
/// stop can wait for them, reporting a fatal end to `fatal`.
#[derive(Clone)]
pub(super) struct Spawner {
    tasks: TaskTracker,
    fatal: FatalSender,
    runtime: Option<Handle>,
}

impl Spawner {
    pub(super) fn new(tasks: TaskTracker, fatal: FatalSender) -> Self {
        Self {
            tasks,
            fatal,
            runtime: None,
        }
    }

    /// The same, with the parts running on `runtime` (the polling thread's); their
    /// supervision stays on the current runtime, where `tasks` is waited for.
    pub(super) fn on(&self, runtime: Handle) -> Self {
        Self {
            runtime: Some(runtime),
            ..self.clone()
        }
    }

    pub(super) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Starts `run` as the part `name`, stopped by `stop` (which `run` watches).
    pub(super) fn start<O: Outcome>(
        &self,
        name: String,
        stop: &CancellationToken,
        run: impl Future<Output = O> + Send + 'static,
    ) -> Part {
        let runtime = self.runtime.clone().unwrap_or_else(Handle::current);
        let done = supervise_on(
            &runtime,
            &self.tasks,
            name.clone(),
            stop.clone(),
            self.fatal.clone(),
            async move { run.await.into_result() },
        );
        Part {
            name,
            stop: stop.clone(),
            done,
        }
    }
}

/// A started part.
pub(super) struct Part {
    name: String,
    stop: CancellationToken,
    /// Finishes once the part has ended and been judged.
    done: JoinHandle<()>,
}

impl Part {
    /// Tells the part to stop (it finishes what it must: a DNS server its in-flight
    /// queries, a proxy its open connections until the drain deadline).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops the part and waits until it has ended.
    pub(super) async fn stopped(self) {
        self.stop.cancel();
        if let Err(e) = self.done.await {
            // The judge itself never panics; say so if it ever does.
            error!(part = %self.name, error = %e, "its supervision ended abnormally");
        }
    }
}
