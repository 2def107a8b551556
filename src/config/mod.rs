//! Configuration: the TOML file as written by an operator, and the validated form the
//! rest of the agent runs on.
//!
//! Parsing is two steps so that every error can name the file, the key and the reason:
//! serde (with `deny_unknown_fields`, tracked by `serde_path_to_error` for the key path)
//! turns text into the file's schema (`file.rs`), then validation (`validate.rs`, one
//! function per section) checks what serde cannot (addresses, duplicates, loops into
//! our own zone) and produces a [`Config`].
//!
//! The validated form is made of the parts' own settings types (`vault::config`,
//! `proxy::config`, `dns::zone::ZoneConfig`): config depends on the parts, never the
//! other way round, so `vault/` can be built and tested without the rest.

mod clusters;
mod file;
mod proxies;
mod summary;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::Name;

pub use crate::dns::zone::StaticRecord;
use crate::dns::zone::ZoneConfig;
pub use crate::proxy::config::{DataPath, OnLeaderChange, ProxyConfig, RouteAction};
pub use crate::vault::config::ClusterConfig;
pub use crate::vault::tls::{ClusterTls, PemFile};

/// Where `run` looks for a config when none is given on the command line.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vault-locator/config.toml";

/// The config used when no file is given and none exists at [`DEFAULT_CONFIG_PATH`]:
/// watch the local Vault and answer on Consul's default DNS port.
pub const EMBEDDED_DEFAULT: &str = r#"
datacenter = "dc1"

[dns]
listen = ["127.0.0.1:8600"]

[[clusters]]
name = "dc1"
nodes = ["http://127.0.0.1:8200"]
"#;

/// The embedded default with a `[[proxy]]` for its cluster and `extra` appended (more
/// proxy keys, or tables): the base of the unit tests that judge a proxy.
#[cfg(test)]
pub(crate) fn with_proxy(extra: &str) -> String {
    format!("{EMBEDDED_DEFAULT}[[proxy]]\ncluster = \"dc1\"\nlisten = \"127.77.0.1:8201\"\n{extra}")
}

/// A config that could not be used: which file, which key, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(file: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A validated configuration. Every address is parsed, every name is lower case.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The cluster that names without a cluster label refer to (the `datacenter` key).
    pub local_cluster: String,
    /// The zone answered authoritatively, lower case, fully qualified.
    pub domain: Name,
    pub dns: DnsConfig,
    pub clusters: Vec<ClusterConfig>,
    pub proxies: Vec<ProxyConfig>,
    pub admin: AdminConfig,
    /// How long open proxy connections may finish after SIGTERM.
    pub drain_timeout: Duration,
    /// The clusters that replicate with each other (`[replication]`), if any.
    pub replication: Option<ReplicationConfig>,
}

/// `[replication]`: the set whose performance and DR primaries get the virtual
/// cluster labels `perf-primary` and `dr-primary` (see `vault::replication`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationConfig {
    /// Configured cluster names, lower case, in the file's order.
    pub clusters: Vec<String>,
}

/// The admin HTTP endpoint: /metrics, /status, /ready, /live.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `None` when disabled (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// Ready (and systemd READY=1) once every cluster has a first view, or after this.
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub ttl: Duration,
    pub upstreams: Vec<SocketAddr>,
    /// Where names in the zone that the agent does not own are forwarded (a Consul
    /// agent during a migration); empty: they are NXDOMAIN.
    pub zone_fallback: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    /// After SIGTERM, keep answering this long (with /ready at 503) before closing.
    pub lameduck: Duration,
    /// Instances of the service in a UDP answer to a client without EDNS (Consul's key).
    pub udp_answer_limit: usize,
    pub records: Vec<StaticRecord>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&file, "(file)", format!("cannot read: {e}")))?;
        Self::parse(&text, &file)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let raw: file::FileConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." {
                    "(top level)".to_string()
                } else {
                    key
                };
                ConfigError::new(file, key, toml_reason(e.inner(), text))
            })?;
        validate::config(raw, file)
    }

    /// The embedded default, used when no file exists.
    pub fn embedded_default() -> Self {
        Self::parse(EMBEDDED_DEFAULT, "(embedded default)")
            .expect("the embedded default config is valid")
    }

    /// The zone's settings: static records, the local cluster, proxy answers.
    pub fn zone(&self) -> ZoneConfig {
        ZoneConfig {
            domain: self.domain.clone(),
            local_cluster: self.local_cluster.clone(),
            ttl: self.dns.ttl,
            records: self.dns.records.clone(),
            proxy_answers: self
                .proxies
                .iter()
                .filter(|p| p.answer)
                .map(|p| (p.cluster.clone(), p.api_listen.unwrap_or(p.listen)))
                .collect(),
        }
    }
}

/// toml's message on one line, with the line and column it points at.
fn toml_reason(e: &toml::de::Error, text: &str) -> String {
    let msg = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{msg} (line {line}, column {col})")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests;
