//! Agent configs for tests, built instead of copied: `datacenter` and the DNS listener,
//! then the tables a test needs, each `key = value` written once here.
//!
//! Values are TOML as the file would have them, except that a plain word is quoted:
//! `("poll_interval", "100ms")` writes `poll_interval = "100ms"`, while `true`, numbers
//! and `[...]` lists go in as they are.

use std::fmt::Write;

/// A config under construction; [`TestConfig::toml`] is the file.
#[derive(Clone, Debug)]
pub struct TestConfig {
    dns_addr: std::net::SocketAddr,
    top: String,
    dns: String,
    tables: String,
}

/// `datacenter = dc` and `[dns] listen = [dns]`.
pub fn agent_config(dc: &str, dns: &str) -> TestConfig {
    TestConfig {
        // A placeholder where a test only wants the tables (see `tables`).
        dns_addr: dns.parse().unwrap_or(([127, 0, 0, 1], 8600).into()),
        top: format!("datacenter = \"{dc}\"\n"),
        dns: format!("[dns]\nlisten = [\"{dns}\"]\n"),
        tables: String::new(),
    }
}

/// The usual test agent: datacenter and cluster `dc1` of `n` nodes on `<net>.1..n`,
/// DNS on `<net>.100:8600`, the cluster's keys `with`.
pub fn dc1(net: &str, n: usize, with: &[(&str, &str)]) -> TestConfig {
    agent_config("dc1", &format!("{net}.100:8600")).cluster("dc1", &nodes(net, n), with)
}

/// `http://<net>.1:8200` .. `http://<net>.<n>:8200`: a cluster's nodes on one /24.
pub fn nodes(net: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("http://{net}.{i}:8200")).collect()
}

fn value(v: &str) -> String {
    let raw = v == "true"
        || v == "false"
        || v.starts_with('[')
        || v.starts_with('"')
        || v.parse::<f64>().is_ok();
    if raw {
        v.to_string()
    } else {
        format!("\"{v}\"")
    }
}

fn settings(out: &mut String, settings: &[(&str, &str)]) {
    for (k, v) in settings {
        let _ = writeln!(out, "{k} = {}", value(v));
    }
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.as_ref()))
        .collect();
    format!("[{}]", quoted.join(", "))
}

impl TestConfig {
    /// A top-level key (`domain`, `drain_timeout`).
    pub fn top(mut self, key: &str, v: &str) -> Self {
        settings(&mut self.top, &[(key, v)]);
        self
    }

    /// A key under `[dns]` (`upstreams`, `lameduck`, `tcp_idle_timeout`).
    pub fn dns(mut self, key: &str, v: &str) -> Self {
        settings(&mut self.dns, &[(key, v)]);
        self
    }

    /// A `[[clusters]]` entry.
    pub fn cluster<S: AsRef<str>>(
        mut self,
        name: &str,
        nodes: &[S],
        with: &[(&str, &str)],
    ) -> Self {
        let _ = write!(
            self.tables,
            "[[clusters]]\nname = \"{name}\"\nnodes = {}\n",
            list(nodes)
        );
        settings(&mut self.tables, with);
        self
    }

    /// A `[[proxy]]` listener.
    pub fn proxy(mut self, cluster: &str, listen: &str, with: &[(&str, &str)]) -> Self {
        let _ = write!(
            self.tables,
            "[[proxy]]\ncluster = \"{cluster}\"\nlisten = \"{listen}\"\n"
        );
        settings(&mut self.tables, with);
        self
    }

    /// A `[[dns.records]]` entry.
    pub fn record(mut self, name: &str, with: &[(&str, &str)]) -> Self {
        let _ = write!(self.tables, "[[dns.records]]\nname = \"{name}\"\n");
        settings(&mut self.tables, with);
        self
    }

    /// `[admin] listen = listen` (`""` disables it).
    pub fn admin(mut self, listen: &str) -> Self {
        let _ = write!(self.tables, "[admin]\nlisten = \"{listen}\"\n");
        self
    }

    /// `[replication] clusters = [...]`.
    pub fn replication(mut self, clusters: &[&str]) -> Self {
        let _ = write!(
            self.tables,
            "[replication]\nclusters = {}\n",
            list(clusters)
        );
        self
    }

    /// TOML appended as written (a table the builder has no method for).
    pub fn raw(mut self, toml: &str) -> Self {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }

    /// The address DNS listens on.
    pub fn dns_addr(&self) -> std::net::SocketAddr {
        self.dns_addr
    }

    /// The tables alone (to append to another config).
    pub fn tables(&self) -> &str {
        &self.tables
    }

    pub fn toml(&self) -> String {
        format!("{}{}{}", self.top, self.dns, self.tables)
    }
}
