//! `vault-locator reload`: signals a running agent to re-read its config and waits for
//! the agent's own verdict, read back from `/status` (`reloads`). systemd's
//! `ExecReload=` runs it, so `systemctl reload` fails visibly when the agent rejects the
//! file, and no `/bin/kill` is needed (a minimal Debian has none).
// The CLI runs no tokio runtime: it may block (clippy.toml bans this in the agent).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use crate::admin::{ReloadStatus, Status};

/// The agent applied the new config.
pub const EXIT_APPLIED: u8 = 0;
/// The agent rejected it (kept the running one), gave no verdict in time, or could not
/// be reached or signalled.
pub const EXIT_FAILED: u8 = 1;

/// How often `/status` is read while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Signals the agent behind `admin` (at `pid`, or the pid it reports) and waits up to
/// `timeout` for its verdict; prints it and returns the exit code. Without an admin
/// endpoint (`admin.listen = ""`) there is no verdict to read: the agent at `pid` is
/// signalled and the journal has its verdict.
pub fn run(admin: Option<&str>, pid: Option<u32>, timeout: Duration) -> u8 {
    let Some(admin) = admin else {
        let Some(pid) = pid else {
            eprintln!("the admin endpoint is disabled in this config: pass --pid (or --admin)");
            return EXIT_FAILED;
        };
        return match hangup(pid) {
            Ok(()) => {
                println!(
                    "signalled pid {pid}; without an admin endpoint its verdict is in its log"
                );
                EXIT_APPLIED
            }
            Err(e) => {
                eprintln!("cannot signal the agent (pid {pid}): {e}");
                EXIT_FAILED
            }
        };
    };
    let before = match read(admin) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read http://{admin}/status: {e:#}");
            return EXIT_FAILED;
        }
    };
    let pid = pid.unwrap_or(before.pid);
    if let Err(e) = hangup(pid) {
        eprintln!("cannot signal the agent (pid {pid}): {e}");
        return EXIT_FAILED;
    }
    let deadline = Instant::now() + timeout;
    loop {
        std::thread::sleep(POLL);
        // A read that fails while the agent swaps its admin listener is retried.
        if let Ok(now) = read(admin) {
            if let Some(verdict) = verdict(&before.reloads, &now.reloads) {
                return match verdict {
                    Ok(()) => {
                        println!("reload applied");
                        EXIT_APPLIED
                    }
                    Err(why) => {
                        eprintln!("reload rejected, the running config is kept: {why}");
                        EXIT_FAILED
                    }
                };
            }
        }
        if Instant::now() >= deadline {
            eprintln!(
                "no verdict from the agent within {}",
                humantime::format_duration(timeout)
            );
            return EXIT_FAILED;
        }
    }
}

/// The outcome of the reload that followed `before`, once the count has moved.
fn verdict(before: &ReloadStatus, now: &ReloadStatus) -> Option<Result<(), String>> {
    (now.count > before.count).then(|| match &now.last_error {
        None => Ok(()),
        Some(why) => Err(why.clone()),
    })
}

fn read(admin: &str) -> anyhow::Result<Status> {
    let body = super::status::fetch_status(admin)?;
    Ok(serde_json::from_str(&body)?)
}

/// SIGHUP to `pid`, without a `kill` binary.
fn hangup(pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("not a process id"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_reload_after_the_one_seen_before() {
        let seen = |count, error: Option<&str>| ReloadStatus {
            count,
            last_at: None,
            last_error: error.map(str::to_string),
        };
        assert_eq!(verdict(&seen(2, None), &seen(2, None)), None, "not yet");
        // An earlier rejection is not this reload's verdict.
        assert_eq!(verdict(&seen(2, Some("old")), &seen(2, Some("old"))), None);
        assert_eq!(verdict(&seen(2, Some("old")), &seen(3, None)), Some(Ok(())));
        assert_eq!(
            verdict(&seen(0, None), &seen(1, Some("x.toml: dns.ttl: bad"))),
            Some(Err("x.toml: dns.ttl: bad".into()))
        );
    }

    #[test]
    fn no_pid_zero_or_negative() {
        assert!(hangup(0).is_err());
        assert!(hangup(u32::MAX).is_err());
    }
}
