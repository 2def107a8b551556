//! The few lines `check-config` prints: what the agent will do with this config.

use std::fmt;

use super::Config;

impl Config {
    /// A few lines for `check-config` to print.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        use fmt::Write;
        let _ = writeln!(
            out,
            "zone {} (local datacenter {}), DNS on {}",
            self.domain,
            self.datacenter,
            join(&self.dns.listen)
        );
        if self.dns.upstreams.is_empty() {
            let _ = writeln!(out, "names outside the zone: REFUSED (no upstreams)");
        } else {
            let _ = writeln!(
                out,
                "names outside the zone: forwarded to {}",
                join(&self.dns.upstreams)
            );
        }
        let _ = writeln!(out, "{} static record(s)", self.dns.records.len());
        for c in &self.clusters {
            let _ = writeln!(
                out,
                "cluster {}: {} node(s){}, poll every {} ({} while leaderless), stale for {}",
                c.name,
                c.nodes.len(),
                if c.load_balanced {
                    " (load-balanced)"
                } else {
                    ""
                },
                humantime::format_duration(c.poll_interval),
                humantime::format_duration(c.failover_poll_interval),
                humantime::format_duration(c.serve_stale_for),
            );
        }
        if let Some(r) = &self.replication {
            let _ = writeln!(
                out,
                "replication set {}: perf-primary and dr-primary follow its primaries",
                r.clusters.join(", ")
            );
        }
        for p in &self.proxies {
            let _ = writeln!(
                out,
                "proxy {}{} -> active node of {}{}",
                p.listen,
                p.api_listen
                    .map(|a| format!(" (API side {a})"))
                    .unwrap_or_default(),
                p.cluster,
                if p.answer { " (answered in DNS)" } else { "" }
            );
        }
        out
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
