//! `vault-locator status`: reads a running agent's `/status`, prints it as a table or
//! JSON, and turns it into an exit code (see [`run`]).
// The CLI runs no tokio runtime: it may block (clippy.toml bans this in the agent).
#![allow(clippy::disallowed_methods)]

use std::fmt::Write;

use crate::admin::{ClusterStatus, Status};
use crate::vault::stream_health::StreamHealth;

/// A cluster without a leader or a fresh view, or a replication set with two primaries.
/// Not 2: that is clap's usage error, which a monitoring check must tell apart.
pub const EXIT_UNHEALTHY: u8 = 5;
/// The agent could not be reached, or did not answer with a status report.
pub const EXIT_UNREACHABLE: u8 = 1;
/// `--is-primary`: the local cluster is not the primary of that kind.
pub const EXIT_NOT_PRIMARY: u8 = 3;
/// `--is-primary`: whether it is cannot be told now.
pub const EXIT_PRIMARY_UNKNOWN: u8 = 4;

/// Reads `http://{addr}/status`; prints the table (or the raw JSON); returns the exit
/// code: 0 healthy, [`EXIT_UNHEALTHY`], [`EXIT_UNREACHABLE`]. With `is_primary` prints
/// nothing and returns 0, [`EXIT_NOT_PRIMARY`] or [`EXIT_PRIMARY_UNKNOWN`].
pub fn run(addr: &str, json: bool, is_primary: Option<super::PrimaryKind>) -> u8 {
    // Under --is-primary every failure to tell is "unknown", never "not primary".
    let failed = if is_primary.is_some() {
        EXIT_PRIMARY_UNKNOWN
    } else {
        EXIT_UNREACHABLE
    };
    let body = match fetch_status(addr) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read http://{addr}/status: {e:#}");
            return failed;
        }
    };
    let report: Status = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("http://{addr}/status is not a status report: {e}");
            return failed;
        }
    };
    if let Some(kind) = is_primary {
        use super::PrimaryKind;
        use crate::vault::modes::Kind;
        let kind = match kind {
            PrimaryKind::Perf => Kind::Perf,
            PrimaryKind::Dr => Kind::Dr,
        };
        return match report.is_primary(kind) {
            Some(true) => 0,
            Some(false) => EXIT_NOT_PRIMARY,
            None => EXIT_PRIMARY_UNKNOWN,
        };
    }
    if json {
        print!("{body}");
    } else {
        print!("{}", render_table(&report));
    }
    if report.healthy() {
        0
    } else {
        EXIT_UNHEALTHY
    }
}

/// One GET of `/status` over a plain TCP connection (no HTTP client for one request).
pub(super) fn fetch_status(addr: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let sock_addr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{addr} resolves to nothing"))?;
    let timeout = std::time::Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&sock_addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// The human table `vault-locator status` prints: clusters with their members, the
/// replication set, the proxies.
fn render_table(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<28} {:<9} {:>8}  LAST LEADER CHANGE",
        "CLUSTER", "LEADER", "STATE", "AGE"
    );
    for c in &status.clusters {
        render_cluster(&mut out, c);
    }
    if let Some(r) = &status.replication {
        let _ = writeln!(out, "replication set: {}", r.clusters.join(", "));
        for p in &r.primaries {
            let primary = p.primary.as_deref().unwrap_or("(none)");
            let _ = writeln!(out, "  {:<14} {:<14} {}", p.label, primary, p.why);
        }
        for h in &r.streams {
            render_stream(&mut out, h);
        }
    }
    for p in &status.proxies {
        let answered = if p.answer { ", answered in DNS" } else { "" };
        let _ = writeln!(
            out,
            "proxy {} {} -> {} ({} open{answered})",
            p.side, p.listen, p.cluster, p.open_connections
        );
    }
    out
}

/// A cluster's line, its replication modes, and a line per member.
fn render_cluster(out: &mut String, c: &ClusterStatus) {
    let leader = c
        .leader
        .as_ref()
        .map(|l| l.api_addr.as_str())
        .unwrap_or("(none)");
    let age = c
        .view_age_seconds
        .map(|a| format!("{a:.1}s"))
        .unwrap_or_else(|| "-".into());
    let change = c
        .last_leader_change
        .as_ref()
        .map(|ch| format!("{} ({})", ch.at, ch.reason))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "{:<14} {:<28} {:<9} {:>8}  {}",
        c.name, leader, c.state, age, change
    );
    let _ = writeln!(
        out,
        "  replication: performance {}, DR {}",
        c.replication.perf, c.replication.dr
    );
    for m in &c.members {
        let error = m.error.as_deref().unwrap_or("");
        let _ = writeln!(out, "  {:<40} {:<14} {error}", m.url, m.role);
    }
}

/// A replicating cluster's stream of one kind: its state, and on a primary a line per
/// secondary; every warning about where it dials on its own line.
fn render_stream(out: &mut String, h: &StreamHealth) {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut line = format!(
        "  stream {} {}: {} state {} connection {}",
        h.kind,
        h.cluster,
        h.mode,
        or_dash(&h.state),
        or_dash(&h.connection_state)
    );
    if let Some(p) = &h.primary {
        let _ = write!(line, ", from {p}");
    }
    if let Some(lag) = h.wal_lag {
        let _ = write!(line, ", {lag} WALs behind");
    }
    if let Some(age) = h.read_age_seconds {
        let _ = write!(line, " (read {age:.0}s ago)");
    }
    if let Some(e) = &h.error {
        let _ = write!(line, " (latest read failed: {e})");
    }
    let _ = writeln!(out, "{line}");
    for s in &h.secondaries {
        let heartbeat = s
            .heartbeat_age_seconds
            .map_or("-".to_string(), |a| format!("{a:.0}s ago"));
        let lag = s
            .wal_lag
            .map_or(String::new(), |l| format!(", {l} WALs behind"));
        let _ = writeln!(
            out,
            "    secondary {}: {}, heartbeat {heartbeat}{lag}",
            s.name(),
            or_dash(&s.connection_status)
        );
    }
    for w in &h.warnings {
        let _ = writeln!(out, "    WARNING: {w}");
    }
}
