//! The few lines `check-config` prints: what the agent will do with this config.

use std::fmt::{self, Write};

use super::Config;

impl Config {
    /// A few lines for `check-config` to print.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "zone {} (local cluster {}), DNS on {}",
            self.domain,
            self.local_cluster,
            join(&self.dns.listen)
        );
        let _ = match self.dns.upstreams.as_slice() {
            [] => writeln!(out, "names outside the zone: REFUSED (no upstreams)"),
            up => writeln!(out, "names outside the zone: forwarded to {}", join(up)),
        };
        if !self.dns.zone_fallback.is_empty() {
            let to = join(&self.dns.zone_fallback);
            let _ = writeln!(
                out,
                "names in the zone this agent does not own: forwarded to {to}"
            );
        }
        let _ = writeln!(out, "{} static record(s)", self.dns.records.len());
        for c in &self.clusters {
            let lb = if c.load_balanced {
                " (load-balanced)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "cluster {}: {} node(s){lb}, poll every {} ({} while leaderless), stale for {}",
                c.name,
                c.nodes.len(),
                humantime::format_duration(c.poll_interval),
                humantime::format_duration(c.failover_poll_interval),
                humantime::format_duration(c.serve_stale_for),
            );
        }
        if let Some(r) = &self.replication {
            let set = r.clusters.join(", ");
            let _ = writeln!(
                out,
                "replication set {set}: perf-primary and dr-primary follow its primaries"
            );
        }
        for p in &self.proxies {
            let api = p
                .api_listen
                .map(|a| format!(" (API side {a})"))
                .unwrap_or_default();
            let answered = if p.answer { " (answered in DNS)" } else { "" };
            let _ = writeln!(
                out,
                "proxy {}{api} -> active node of {}{answered}",
                p.listen, p.cluster
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
