//! systemd integration (`Type=notify`): READY=1 once listeners are bound and every
//! cluster has a first view or a first round in which no node answered
//! ([`crate::admin::Observed::is_ready`]; or the first-view deadline passed), STATUS=
//! with each cluster's leader,
//! WATCHDOG=1 at half of `WatchdogSec` only while the watchers make progress, and
//! STOPPING=1 on shutdown. Without `NOTIFY_SOCKET` every call is a no-op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admin::Observed;

/// Sends one notification without ever blocking the runtime: the socket is
/// non-blocking, and a message the manager's queue cannot take is dropped (a later
/// WATCHDOG=1 or STATUS= supersedes it). sd-notify's own `notify` blocks when the queue
/// is full, which would stall a worker thread.
fn notify(states: &[NotifyState]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = send_nonblocking(&path, msg.as_bytes()) {
        debug!(error = %e, "sd_notify message not sent");
    }
}

fn send_nonblocking(path: &std::ffi::OsStr, msg: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.send_to_addr(msg, &addr)?;
    Ok(())
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// RELOADING=1, with the monotonic timestamp systemd >= 253 requires beside it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// READY=1 after a reload, with a fresh STATUS=.
pub fn reloaded(observed: &Observed) {
    let status = summary(observed);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// One line for `systemctl status`: each cluster's leader.
pub fn summary(observed: &Observed) -> String {
    observed
        .status()
        .clusters
        .iter()
        .map(|c| match &c.leader {
            Some(l) if c.state == crate::vault::view::Freshness::Fresh => {
                format!("{}: {}", c.name, l.api_addr)
            }
            Some(l) => format!("{}: {} ({})", c.name, l.api_addr, c.state),
            None => format!("{}: no leader ({})", c.name, c.state),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs until `shutdown`: READY=1, then STATUS= on change and WATCHDOG=1 while healthy.
pub async fn run(observed: Arc<Observed>, shutdown: CancellationToken) {
    // READY=1 once ready.
    while !observed.is_ready() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let mut last = summary(&observed);
    notify(&[NotifyState::Ready, NotifyState::Status(&last)]);

    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = watchdog
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut next_ping = Instant::now();
    let mut ticker = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now_summary = summary(&observed);
        if now_summary != last {
            notify(&[NotifyState::Status(&now_summary)]);
            last = now_summary;
        }
        if let Some(every) = watchdog {
            if Instant::now() >= next_ping {
                next_ping = Instant::now() + every;
                if observed
                    .running()
                    .clusters
                    .iter()
                    .all(|c| c.heartbeat.is_fresh())
                {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    warn!("a cluster watcher has stopped making progress; withholding WATCHDOG=1");
                }
            }
        }
    }
}
