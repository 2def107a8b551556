//! The polling thread: every cluster's watcher runs on one current-thread runtime of
//! its own, beside the multi-threaded runtime that serves DNS and the proxy.
//!
//! Polling is many tiny tasks (a request, an answer, a view) that are never urgent to
//! the microsecond. On the work-stealing runtime each of them could wake the other
//! worker thread too; on one thread they never do. Measured in bench/fleet (30 clusters
//! of 5 nodes at 1 s): the same agent cost 0.95-1.07 % of a core with the watchers on
//! the shared runtime, 0.82 % with a single worker. DNS and proxy traffic keep every
//! worker of the main runtime, and a slow poll can never delay an answer.

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The polling thread and its runtime; the thread ends when this is dropped.
pub(super) struct Poller {
    handle: Handle,
    stop: CancellationToken,
}

impl Poller {
    pub(super) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("vault-locator-poll".into())
            .spawn(move || {
                runtime.block_on(stopped.cancelled());
                // A name lookup still running in the blocking pool (the system
                // resolver can outlast its timeout) must not hold the agent's exit.
                runtime.shutdown_background();
            })?;
        Ok(Self { handle, stop })
    }

    /// Where the watchers are spawned.
    pub(super) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
