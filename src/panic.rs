//! What a panic means: never silent, and fatal where it leaves a part of the agent dead.
//!
//! - Every panic, on any thread or task, is logged at ERROR (thread, location, message)
//!   by [`install_hook`] and counted in `panics_total`.
//! - A panic in a **long-lived part** (a watcher, a DNS receive loop, a proxy worker,
//!   the admin server, the systemd notifier) ends that part; the supervisor sees it end
//!   before it was told to stop ([`supervise`]), reports it as fatal, and the agent
//!   stops and exits 1, so systemd's `Restart=on-failure` starts a whole agent again.
//!   Restarting one part in place was rejected: the state that part held is unknown,
//!   while a fresh agent rebuilds every view from its first polls in milliseconds.
//! - A panic in a **per-connection task** (one proxied connection, one admin request,
//!   one hickory TCP connection) is contained by its task: that connection is dropped,
//!   the panic is logged and counted, and everything else keeps serving. Making it fatal
//!   would let one hostile client take the node's DNS down.
//!
//! In debug builds, `VAULT_LOCATOR_PANIC_AT=<point>` makes the named point panic, so the
//! tests can prove each of the above on the real binary; release builds have no such
//! points.

use std::future::Future;

use tokio::sync::mpsc;
use tracing::error;

use crate::telemetry;

/// Logs every panic at ERROR and counts it, instead of the default message on stderr.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        metrics::counter!(telemetry::PANICS).increment(1);
        error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default(),
            %message,
            "panic"
        );
    }));
}

/// Where a long-lived part reports that it ended before it was told to stop.
pub type FatalSender = mpsc::UnboundedSender<anyhow::Error>;

/// Runs a long-lived part as a task and reports to `fatal` if it panics, fails, or
/// returns while `stop` is not cancelled (a part that gives up is as dead as one that
/// panicked). The returned handle finishes when the part has ended and been judged.
pub fn supervise<F>(
    tasks: &tokio_util::task::TaskTracker,
    part: String,
    stop: tokio_util::sync::CancellationToken,
    fatal: FatalSender,
    fut: F,
) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    supervise_on(
        &tokio::runtime::Handle::current(),
        tasks,
        part,
        stop,
        fatal,
        fut,
    )
}

/// [`supervise`], with the part running on `runtime` (the polling thread's, say); the
/// supervision itself runs on the current runtime, where `tasks` is waited for.
pub fn supervise_on<F>(
    runtime: &tokio::runtime::Handle,
    tasks: &tokio_util::task::TaskTracker,
    part: String,
    stop: tokio_util::sync::CancellationToken,
    fatal: FatalSender,
    fut: F,
) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let handle = runtime.spawn(fut);
    tasks.spawn(async move {
        let why = match handle.await {
            Ok(Err(e)) => Some(format!("failed: {e:#}")),
            Ok(Ok(())) => ended_early(None, stop.is_cancelled()).map(str::to_string),
            Err(e) => ended_early(Some(e), stop.is_cancelled()).map(str::to_string),
        };
        if let Some(why) = why {
            error!(%part, "{why}; stopping the agent");
            let _ = fatal.send(anyhow::anyhow!("{part} {why}"));
        }
    })
}

/// Why a part that ended counts as a failure: a panic always; a return only while it
/// was still meant to run.
pub fn ended_early(error: Option<tokio::task::JoinError>, stopping: bool) -> Option<&'static str> {
    match error {
        Some(e) if e.is_panic() => Some("panicked"),
        Some(_) => None,
        None if !stopping => Some("stopped unexpectedly"),
        None => None,
    }
}

/// A named fault point (see the module docs): panics when `VAULT_LOCATOR_PANIC_AT`
/// names it, in debug builds only.
#[inline]
pub fn fault_point(point: &str) {
    #[cfg(debug_assertions)]
    {
        static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let at = AT.get_or_init(|| std::env::var("VAULT_LOCATOR_PANIC_AT").ok());
        if at.as_deref() == Some(point) {
            panic!("fault injected at {point}");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_that_panics_or_gives_up_is_fatal_one_that_was_stopped_is_not() {
        let panicked = tokio::spawn(async { panic!("boom") }).await.err();
        assert_eq!(ended_early(panicked, false), Some("panicked"));
        let panicked = tokio::spawn(async { panic!("boom") }).await.err();
        assert_eq!(
            ended_early(panicked, true),
            Some("panicked"),
            "even while stopping"
        );
        assert_eq!(ended_early(None, false), Some("stopped unexpectedly"));
        assert_eq!(ended_early(None, true), None);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let tasks = tokio_util::task::TaskTracker::new();
        let stop = tokio_util::sync::CancellationToken::new();
        supervise(
            &tasks,
            "watcher dc1".into(),
            stop.clone(),
            tx.clone(),
            async { panic!("boom") },
        );
        let e = rx.recv().await.unwrap();
        assert_eq!(e.to_string(), "watcher dc1 panicked");
        supervise(&tasks, "dns".into(), stop.clone(), tx.clone(), async {
            Err(anyhow::anyhow!("socket gone"))
        });
        let e = rx.recv().await.unwrap();
        assert_eq!(e.to_string(), "dns failed: socket gone");
        supervise(&tasks, "proxy".into(), stop.clone(), tx.clone(), async {
            Ok(())
        });
        let e = rx.recv().await.unwrap();
        assert_eq!(e.to_string(), "proxy stopped unexpectedly");
        stop.cancel();
        supervise(&tasks, "admin".into(), stop, tx, async { Ok(()) });
        tasks.close();
        tasks.wait().await;
        assert!(
            rx.try_recv().is_err(),
            "a part that was stopped is not fatal"
        );
    }
}
