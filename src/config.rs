//! Configuration: the TOML file as written by an operator, and the validated form the
//! rest of the agent runs on.
//!
//! Parsing is two steps so that every error can name the file, the key and the reason:
//! serde (with `deny_unknown_fields`, tracked by `serde_path_to_error` for the key path)
//! turns text into [`FileConfig`], then [`FileConfig::validate`] checks what serde cannot
//! (addresses, duplicates, loops into our own zone) and produces a [`Config`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;
use url::Url;

// The TLS settings' types live with the code that uses them (`vault::tls`); config
// reads the files into them.
use crate::vault::modes::Kind;
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

// ---------------------------------------------------------------------------------------
// The file as written.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    datacenter: String,
    #[serde(default = "default_domain")]
    domain: String,
    #[serde(default)]
    dns: FileDns,
    #[serde(default)]
    clusters: Vec<FileCluster>,
    #[serde(default)]
    proxy: Vec<FileProxy>,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    drain_timeout: Duration,
    replication: Option<FileReplication>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReplication {
    clusters: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    #[serde(default = "default_admin_listen")]
    listen: String,
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    ready_timeout: Duration,
}

impl Default for FileAdmin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            ready_timeout: default_ready_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProxy {
    cluster: String,
    listen: String,
    api_listen: Option<String>,
    #[serde(default)]
    answer: bool,
    #[serde(default)]
    on_leader_change: OnLeaderChange,
    #[serde(default = "default_reject")]
    default_route: RouteAction,
    #[serde(default = "default_reject")]
    no_alpn: RouteAction,
    #[serde(default)]
    routes: BTreeMap<String, RouteAction>,
    #[serde(default = "default_client_hello_timeout", with = "humantime_serde")]
    client_hello_timeout: Duration,
    #[serde(default = "default_max_client_hello")]
    max_client_hello: usize,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default)]
    data_path: DataPath,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDns {
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    ttl: Duration,
    #[serde(default)]
    upstreams: Vec<String>,
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    upstream_timeout: Duration,
    #[serde(default = "default_tcp_idle_timeout", with = "humantime_serde")]
    tcp_idle_timeout: Duration,
    #[serde(default = "default_lameduck", with = "humantime_serde")]
    lameduck: Duration,
    #[serde(default)]
    records: Vec<FileRecord>,
}

impl Default for FileDns {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            ttl: Duration::ZERO,
            upstreams: Vec::new(),
            upstream_timeout: default_upstream_timeout(),
            tcp_idle_timeout: default_tcp_idle_timeout(),
            lameduck: default_lameduck(),
            records: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    name: String,
    #[serde(default)]
    a: Vec<String>,
    #[serde(default)]
    aaaa: Vec<String>,
    cname: Option<String>,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    name: String,
    nodes: Vec<String>,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    poll_interval: Duration,
    #[serde(default, with = "humantime_serde")]
    failover_poll_interval: Option<Duration>,
    #[serde(default = "default_failover_poll_for", with = "humantime_serde")]
    failover_poll_for: Duration,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    #[serde(default = "default_serve_stale_for", with = "humantime_serde")]
    serve_stale_for: Duration,
    #[serde(default)]
    load_balanced: bool,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    tls_server_name: Option<String>,
    /// Not supported (see `vault::tls`): accepted only to be refused with the reason.
    tls_skip_verify: Option<bool>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9464".to_string()
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reject() -> RouteAction {
    RouteAction::Reject
}
fn default_client_hello_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_client_hello() -> usize {
    16 * 1024
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_max_connections() -> usize {
    1024
}

fn default_domain() -> String {
    "consul".to_string()
}
fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8600".to_string()]
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_tcp_idle_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_lameduck() -> Duration {
    Duration::from_millis(500)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_failover_poll_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_failover_poll_for() -> Duration {
    Duration::from_secs(60)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_node_connect_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_serve_stale_for() -> Duration {
    Duration::from_secs(30)
}

// ---------------------------------------------------------------------------------------
// The validated form.
// ---------------------------------------------------------------------------------------

/// A validated configuration. Every address is parsed, every name is lower case.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The cluster that names without a datacenter label refer to.
    pub datacenter: String,
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
/// datacenter labels `perf-primary` and `dr-primary` (see `vault::replication`).
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

/// What the proxy does with a connection, chosen by its ALPN ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAction {
    /// Forward to the cluster's active node.
    Active,
    /// Close the connection.
    Reject,
}

/// How the proxy moves bytes once a connection is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPath {
    /// splice(2) through a pipe: bytes stay in the kernel (see bench/RESULTS.md).
    #[default]
    Splice,
    /// tokio's copy_bidirectional through user-space buffers.
    Copy,
}

/// What happens to open proxy connections when the cluster's leader changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLeaderChange {
    /// Close them, so clients reconnect and land on the new leader.
    #[default]
    Close,
    /// Leave them alone.
    Keep,
}

/// One `[[proxy]]` listener: TLS passthrough of a cluster port to the active node, and
/// optionally an API side: plain TCP passthrough of the API port to the same node.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// A configured cluster, or a replication set's virtual one (`perf-primary`).
    pub cluster: String,
    pub listen: SocketAddr,
    /// The API side: forwards to the leader's `api_addr` without peeking. With
    /// `answer = true` it defaults to the listener's IP on port 8200 (`""` disables).
    pub api_listen: Option<SocketAddr>,
    /// DNS answers this listener for `active.vault.service.<cluster>`.
    pub answer: bool,
    pub on_leader_change: OnLeaderChange,
    /// Routes by ALPN id: the built-in table with the file's `routes` laid over it.
    pub routes: BTreeMap<String, RouteAction>,
    /// For ALPN ids not in `routes`.
    pub default_route: RouteAction,
    /// For ClientHellos without ALPN.
    pub no_alpn: RouteAction,
    pub client_hello_timeout: Duration,
    pub max_client_hello: usize,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub data_path: DataPath,
}

/// The ALPN ids Vault uses on its cluster port, and where each belongs when the target
/// is "the active node of a cluster" (Vault's `sdk/helper/consts`; see the README).
pub const DEFAULT_ROUTES: &[(&str, RouteAction)] = &[
    // Standby -> active request forwarding: only the active serves it.
    ("req_fw_sb-act_v1", RouteAction::Active),
    // Enterprise performance standby -> active.
    ("perf_standby_v1", RouteAction::Active),
    // Enterprise performance and DR replication, secondary -> primary's active.
    ("replication_v1", RouteAction::Active),
    ("replication_dr_v1", RouteAction::Active),
    // Enterprise replication address resolution (any unsealed node; the active is fine).
    ("replication_resolver_v1", RouteAction::Active),
    // Raft RPC is node-to-node, addressed to one specific node: never "the active".
    ("raft_storage_v1", RouteAction::Reject),
];

#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub ttl: Duration,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    /// After SIGTERM, keep answering this long (with /ready at 503) before closing.
    pub lameduck: Duration,
    pub records: Vec<StaticRecord>,
}

/// One `[[dns.records]]` entry: either addresses or a CNAME.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticRecord {
    pub name: Name,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub cname: Option<Name>,
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The datacenter label in DNS names, lower case.
    pub name: String,
    pub nodes: Vec<Url>,
    pub poll_interval: Duration,
    /// While the cluster has no confirmed leader (an election, a step-down, a start),
    /// rounds run this often instead, for at most `failover_poll_for` after the leader
    /// was lost: the new leader is seen within this interval of its election.
    pub failover_poll_interval: Duration,
    pub failover_poll_for: Duration,
    /// Bounds a whole request to a node (connect, headers, body).
    pub request_timeout: Duration,
    /// Bounds the TCP connect alone: much shorter, since a connect to a live host
    /// completes in milliseconds and one to a dead or cut-off host never does.
    pub connect_timeout: Duration,
    /// How long the last confirmed view is served once no node answers.
    pub serve_stale_for: Duration,
    /// The nodes are load-balancer addresses: they tell us the leader, but are not
    /// members themselves.
    pub load_balanced: bool,
    /// TLS for https nodes.
    pub tls: ClusterTls,
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
        let raw: FileConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(top level)".to_string()
            } else {
                key
            };
            ConfigError::new(file, key, toml_reason(e.inner(), text))
        })?;
        raw.validate(file)
    }

    /// The embedded default, used when no file exists.
    pub fn embedded_default() -> Self {
        Self::parse(EMBEDDED_DEFAULT, "(embedded default)")
            .expect("the embedded default config is valid")
    }

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

impl FileConfig {
    fn validate(self, file: &str) -> Result<Config, ConfigError> {
        let err = |key: String, reason: String| ConfigError::new(file, key, reason);

        let domain = parse_domain(&self.domain).map_err(|r| err("domain".into(), r))?;

        // DNS listeners.
        if self.dns.listen.is_empty() {
            return Err(err(
                "dns.listen".into(),
                "needs at least one address".into(),
            ));
        }
        let mut dns_listen = Vec::new();
        for (i, l) in self.dns.listen.iter().enumerate() {
            let addr: SocketAddr = l.parse().map_err(|_| {
                err(
                    format!("dns.listen[{i}]"),
                    format!("{l:?} is not an IP:port address"),
                )
            })?;
            if dns_listen.contains(&addr) {
                return Err(err(
                    format!("dns.listen[{i}]"),
                    format!("{addr} is listed twice"),
                ));
            }
            dns_listen.push(addr);
        }

        let mut upstreams = Vec::new();
        for (i, u) in self.dns.upstreams.iter().enumerate() {
            let key = format!("dns.upstreams[{i}]");
            let addr = parse_upstream(u).map_err(|r| err(key.clone(), r))?;
            if dns_listen.contains(&addr) {
                return Err(err(
                    key,
                    format!("{addr} is one of our own listen addresses: that would loop"),
                ));
            }
            upstreams.push(addr);
        }
        if self.dns.upstream_timeout.is_zero() {
            return Err(err("dns.upstream_timeout".into(), "must be above 0".into()));
        }
        if self.dns.tcp_idle_timeout.is_zero() {
            return Err(err("dns.tcp_idle_timeout".into(), "must be above 0".into()));
        }

        // Clusters.
        if self.clusters.is_empty() {
            return Err(err(
                "clusters".into(),
                "at least one [[clusters]] entry is needed".into(),
            ));
        }
        let mut clusters: Vec<ClusterConfig> = Vec::new();
        for (i, c) in self.clusters.into_iter().enumerate() {
            let key = |k: &str| format!("clusters[{i}].{k}");
            let name = c.name.to_ascii_lowercase();
            if !is_label(&name) {
                return Err(err(
                    key("name"),
                    format!("{:?} is not a DNS label (letters, digits, '-')", c.name),
                ));
            }
            if let Err(e) = crate::dns::names::check_buildable(&name, &domain) {
                return Err(err(
                    "domain".into(),
                    format!(
                        "{domain} is {} octets: too long for the names answered under it \
                         (<32 hex digits>.addr.{name}.{domain} must fit in 255): {e}",
                        domain.len()
                    ),
                ));
            }
            if is_reserved_label(&name) {
                return Err(err(
                    key("name"),
                    format!("{name:?} is reserved in Consul DNS names"),
                ));
            }
            if Kind::from_label(&name).is_some() {
                return Err(err(
                    key("name"),
                    format!(
                        "{name:?} is the virtual datacenter a [replication] set answers for \
                         its primary; name the cluster after its region"
                    ),
                ));
            }
            if clusters.iter().any(|o| o.name == name) {
                return Err(err(
                    key("name"),
                    format!("datacenter {name:?} is defined twice"),
                ));
            }
            if c.nodes.is_empty() {
                return Err(err(key("nodes"), "needs at least one node address".into()));
            }
            let mut nodes = Vec::new();
            for (j, n) in c.nodes.iter().enumerate() {
                let nkey = format!("clusters[{i}].nodes[{j}]");
                let url = parse_node_url(n, &domain).map_err(|r| err(nkey.clone(), r))?;
                if nodes.contains(&url) {
                    return Err(err(nkey, format!("{url} is listed twice")));
                }
                nodes.push(url);
            }
            if c.poll_interval < Duration::from_millis(10) {
                return Err(err(key("poll_interval"), "must be at least 10ms".into()));
            }
            // Unset, it is 50 ms, or the poll interval if that is already faster.
            let failover_poll_interval = c
                .failover_poll_interval
                .unwrap_or_else(|| default_failover_poll_interval().min(c.poll_interval));
            if failover_poll_interval < Duration::from_millis(10) {
                return Err(err(
                    key("failover_poll_interval"),
                    "must be at least 10ms".into(),
                ));
            }
            if failover_poll_interval > c.poll_interval {
                return Err(err(
                    key("failover_poll_interval"),
                    format!(
                        "must not exceed poll_interval ({}); set it equal to poll at one rate",
                        humantime::format_duration(c.poll_interval)
                    ),
                ));
            }
            if c.request_timeout.is_zero() {
                return Err(err(key("request_timeout"), "must be above 0".into()));
            }
            // Unset, it is 500 ms, or the request timeout if that is already shorter.
            let connect_timeout = c
                .connect_timeout
                .unwrap_or_else(|| default_node_connect_timeout().min(c.request_timeout));
            if connect_timeout.is_zero() {
                return Err(err(key("connect_timeout"), "must be above 0".into()));
            }
            if connect_timeout > c.request_timeout {
                return Err(err(
                    key("connect_timeout"),
                    format!(
                        "must not exceed request_timeout ({}), which bounds the whole request",
                        humantime::format_duration(c.request_timeout)
                    ),
                ));
            }
            let tls = cluster_tls(&c, file, &key)?;
            clusters.push(ClusterConfig {
                name,
                nodes,
                poll_interval: c.poll_interval,
                failover_poll_interval,
                failover_poll_for: c.failover_poll_for,
                request_timeout: c.request_timeout,
                connect_timeout,
                serve_stale_for: c.serve_stale_for,
                load_balanced: c.load_balanced,
                tls,
            });
        }

        let datacenter = self.datacenter.to_ascii_lowercase();
        if !clusters.iter().any(|c| c.name == datacenter) {
            return Err(err(
                "datacenter".into(),
                format!(
                    "no [[clusters]] entry is named {:?} (have: {})",
                    self.datacenter,
                    clusters
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }

        // The replication set.
        let replication = match self.replication {
            None => None,
            Some(r) => {
                if r.clusters.is_empty() {
                    return Err(err(
                        "replication.clusters".into(),
                        "names no cluster (remove [replication], or list the clusters that \
                         replicate with each other)"
                            .into(),
                    ));
                }
                let mut set: Vec<String> = Vec::new();
                for (i, c) in r.clusters.iter().enumerate() {
                    let key = format!("replication.clusters[{i}]");
                    let name = c.to_ascii_lowercase();
                    if !clusters.iter().any(|k| k.name == name) {
                        return Err(err(
                            key,
                            format!(
                                "no [[clusters]] entry is named {c:?} (have: {})",
                                clusters
                                    .iter()
                                    .map(|c| c.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                    if set.contains(&name) {
                        return Err(err(key, format!("{name} is listed twice")));
                    }
                    set.push(name);
                }
                for kind in Kind::ALL {
                    if let Err(e) = crate::dns::names::check_buildable(kind.label(), &domain) {
                        return Err(err(
                            "domain".into(),
                            format!(
                                "{domain} is too long for the names answered under the \
                                 virtual datacenter {}: {e}",
                                kind.label()
                            ),
                        ));
                    }
                }
                Some(ReplicationConfig { clusters: set })
            }
        };

        // Static records.
        let mut records: Vec<StaticRecord> = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in self.dns.records.into_iter().enumerate() {
            let key = |k: &str| format!("dns.records[{i}].{k}");
            let name = parse_domain(&r.name).map_err(|reason| err(key("name"), reason))?;
            if !seen.insert(name.clone()) {
                return Err(err(
                    key("name"),
                    format!("{name} already has a [[dns.records]] entry"),
                ));
            }
            if domain.zone_of(&name) && shadows_vault_name(&name, &domain) {
                return Err(err(
                    key("name"),
                    format!("{name} would shadow the vault service answers"),
                ));
            }
            let a = parse_each::<Ipv4Addr>(&r.a, &format!("dns.records[{i}].a"), "an IPv4 address")
                .map_err(|(key, reason)| err(key, reason))?;
            let aaaa = parse_each::<Ipv6Addr>(
                &r.aaaa,
                &format!("dns.records[{i}].aaaa"),
                "an IPv6 address",
            )
            .map_err(|(key, reason)| err(key, reason))?;
            let cname = match &r.cname {
                Some(c) => Some(parse_domain(c).map_err(|reason| err(key("cname"), reason))?),
                None => None,
            };
            if cname.is_some() && !(a.is_empty() && aaaa.is_empty()) {
                return Err(err(
                    key("cname"),
                    "a CNAME cannot stand beside a or aaaa records".into(),
                ));
            }
            if cname.is_none() && a.is_empty() && aaaa.is_empty() {
                return Err(err(key("name"), "needs a, aaaa or cname".into()));
            }
            records.push(StaticRecord {
                name,
                a,
                aaaa,
                cname,
                ttl: r.ttl,
            });
        }

        // Proxy listeners.
        let mut proxies: Vec<ProxyConfig> = Vec::new();
        for (i, p) in self.proxy.into_iter().enumerate() {
            let key = |k: &str| format!("proxy[{i}].{k}");
            let cluster = p.cluster.to_ascii_lowercase();
            let is_virtual = Kind::from_label(&cluster).is_some();
            if is_virtual && replication.is_none() {
                return Err(err(
                    key("cluster"),
                    format!("{cluster} exists only with a [replication] set"),
                ));
            }
            if !is_virtual && !clusters.iter().any(|c| c.name == cluster) {
                return Err(err(
                    key("cluster"),
                    format!("no [[clusters]] entry is named {:?}", p.cluster),
                ));
            }
            let listen: SocketAddr = p.listen.parse().map_err(|_| {
                err(
                    key("listen"),
                    format!("{:?} is not an IP:port address", p.listen),
                )
            })?;
            if tcp_listener_taken(&dns_listen, &proxies, listen) {
                return Err(err(
                    key("listen"),
                    format!("{listen} is already used by another listener"),
                ));
            }
            if p.answer && proxies.iter().any(|o| o.answer && o.cluster == cluster) {
                return Err(err(
                    key("answer"),
                    format!("another [[proxy]] already answers DNS for {cluster}"),
                ));
            }
            if p.answer && listen.ip().is_unspecified() {
                return Err(err(
                    key("answer"),
                    format!("{listen} is a wildcard address; DNS needs a concrete IP to answer"),
                ));
            }
            let api_listen = match p.api_listen.as_deref() {
                Some("") => None,
                Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                    err(
                        key("api_listen"),
                        format!("{a:?} is not an IP:port address (\"\" disables)"),
                    )
                })?),
                // Proxy mode: the answered IP must serve the API port too.
                None if p.answer => Some(SocketAddr::new(listen.ip(), 8200)),
                None => None,
            };
            if let Some(api) = api_listen {
                if api == listen || tcp_listener_taken(&dns_listen, &proxies, api) {
                    return Err(err(
                        key("api_listen"),
                        format!("{api} is already used by another listener"),
                    ));
                }
                if p.answer && api.ip() != listen.ip() {
                    return Err(err(
                        key("api_listen"),
                        format!(
                            "{api} is not on {}, the IP DNS answers for this proxy: clients \
                             of the answered name would not reach the API side",
                            listen.ip()
                        ),
                    ));
                }
                // The API port is the one Vault itself listens on, often on every
                // address of the host; find out now rather than at start.
                if let Err(e) = crate::net::check_bindable(api) {
                    return Err(err(
                        key("api_listen"),
                        format!(
                            "the API side cannot be bound on {api}: {e}{}",
                            if p.api_listen.is_none() {
                                " (the default for answer = true; set api_listen to another \
                                 address, or \"\" for none)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            }
            let mut routes: BTreeMap<String, RouteAction> = DEFAULT_ROUTES
                .iter()
                .map(|(id, a)| (id.to_string(), *a))
                .collect();
            for (id, action) in p.routes {
                if id.is_empty() || id.len() > 255 || !id.is_ascii() {
                    return Err(err(
                        format!("proxy[{i}].routes.{id:?}"),
                        "an ALPN id is 1 to 255 ASCII bytes".into(),
                    ));
                }
                routes.insert(id, action);
            }
            if p.client_hello_timeout.is_zero() {
                return Err(err(key("client_hello_timeout"), "must be above 0".into()));
            }
            if !(512..=65536).contains(&p.max_client_hello) {
                return Err(err(
                    key("max_client_hello"),
                    "must be between 512 and 65536 bytes".into(),
                ));
            }
            if p.connect_timeout.is_zero() {
                return Err(err(key("connect_timeout"), "must be above 0".into()));
            }
            if p.max_connections == 0 {
                return Err(err(key("max_connections"), "must be above 0".into()));
            }
            proxies.push(ProxyConfig {
                cluster,
                listen,
                api_listen,
                answer: p.answer,
                on_leader_change: p.on_leader_change,
                routes,
                default_route: p.default_route,
                no_alpn: p.no_alpn,
                client_hello_timeout: p.client_hello_timeout,
                max_client_hello: p.max_client_hello,
                connect_timeout: p.connect_timeout,
                max_connections: p.max_connections,
                data_path: p.data_path,
            });
        }

        let admin_listen = if self.admin.listen.is_empty() {
            None
        } else {
            let addr: SocketAddr = self.admin.listen.parse().map_err(|_| {
                err(
                    "admin.listen".into(),
                    format!(
                        "{:?} is not an IP:port address (\"\" disables)",
                        self.admin.listen
                    ),
                )
            })?;
            if tcp_listener_taken(&dns_listen, &proxies, addr) {
                return Err(err(
                    "admin.listen".into(),
                    format!("{addr} is already used by another listener"),
                ));
            }
            Some(addr)
        };

        Ok(Config {
            datacenter,
            domain,
            dns: DnsConfig {
                listen: dns_listen,
                ttl: self.dns.ttl,
                upstreams,
                upstream_timeout: self.dns.upstream_timeout,
                tcp_idle_timeout: self.dns.tcp_idle_timeout,
                lameduck: self.dns.lameduck,
                records,
            },
            clusters,
            proxies,
            admin: AdminConfig {
                listen: admin_listen,
                ready_timeout: self.admin.ready_timeout,
            },
            drain_timeout: self.drain_timeout,
            replication,
        })
    }
}

/// True when a DNS listener (which is TCP too) or a proxy (either side) already has
/// `addr`.
fn tcp_listener_taken(dns: &[SocketAddr], proxies: &[ProxyConfig], addr: SocketAddr) -> bool {
    dns.contains(&addr)
        || proxies
            .iter()
            .any(|p| p.listen == addr || p.api_listen == Some(addr))
}

/// Labels that select a lookup kind in Consul names; a datacenter named like one of
/// them would make names ambiguous.
fn is_reserved_label(label: &str) -> bool {
    matches!(
        label,
        "service" | "node" | "addr" | "query" | "connect" | "virtual" | "ingress"
    )
}

/// True when `name` is one of the names the vault service answers (so a static record
/// there would be ambiguous).
fn shadows_vault_name(name: &Name, domain: &Name) -> bool {
    let labels: Vec<String> = name
        .iter()
        .take(name.num_labels() as usize - domain.num_labels() as usize)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    labels.iter().any(|l| l == "vault" || l == "_vault") && labels.iter().any(|l| l == "service")
}

pub(crate) fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A cluster's TLS files, read and checked: each readable PEM, the key the
/// certificate's, the whole config buildable (`vault::tls::client_config`).
fn cluster_tls(
    c: &FileCluster,
    file: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<ClusterTls, ConfigError> {
    let err = |k: &str, reason: String| ConfigError::new(file, key(k), reason);
    if c.tls_skip_verify.is_some() {
        return Err(err(
            "tls_skip_verify",
            "not supported: an unverified node could name the leader that replication \
             and token requests are sent to; use ca_file for a private CA and \
             tls_server_name for nodes addressed by IP"
                .into(),
        ));
    }
    let read = |k: &str, path: &Option<PathBuf>| -> Result<Option<PemFile>, ConfigError> {
        let Some(path) = path else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|e| err(k, format!("cannot read {}: {e}", path.display())))?;
        Ok(Some(PemFile {
            path: path.clone(),
            pem,
        }))
    };
    let tls = ClusterTls {
        ca: read("ca_file", &c.ca_file)?,
        client_cert: read("client_cert_file", &c.client_cert_file)?,
        client_key: read("client_key_file", &c.client_key_file)?,
        server_name: c.tls_server_name.as_ref().map(|n| n.to_ascii_lowercase()),
    };
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) => {
            return Err(err(
                "client_key_file",
                "client_cert_file needs its key in client_key_file".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "client_cert_file",
                "client_key_file needs its certificate in client_cert_file".into(),
            ))
        }
        _ => {}
    }
    if let Some(name) = &tls.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            return Err(err(
                "tls_server_name",
                format!("{name:?} is not a DNS name or an IP address"),
            ));
        }
    }
    let named = |f: &Option<PemFile>| {
        f.as_ref()
            .map_or(String::new(), |f| f.path.display().to_string())
    };
    crate::vault::tls::client_config(&tls).map_err(|e| {
        use crate::vault::tls::TlsError;
        match e {
            TlsError::Ca(why) => err("ca_file", format!("{}: {why}", named(&tls.ca))),
            TlsError::ClientCert(why) => err(
                "client_cert_file",
                format!("{}: {why}", named(&tls.client_cert)),
            ),
            TlsError::ClientKey(why) => err(
                "client_key_file",
                format!("{}: {why}", named(&tls.client_key)),
            ),
            TlsError::Mismatch => err(
                "client_key_file",
                format!(
                    "{} is not the key of the certificate in {}",
                    named(&tls.client_key),
                    named(&tls.client_cert)
                ),
            ),
            TlsError::Roots(why) => err(
                "ca_file",
                format!("no ca_file, and the system roots cannot be used: {why}"),
            ),
        }
    })?;
    Ok(tls)
}

fn parse_domain(s: &str) -> Result<Name, String> {
    let trimmed = s.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("must not be empty".to_string());
    }
    let mut name =
        Name::from_ascii(trimmed).map_err(|e| format!("{s:?} is not a domain name: {e}"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Parses every string of a list, naming the first bad one as `key[index]`.
fn parse_each<T: std::str::FromStr>(
    items: &[String],
    key: &str,
    what: &str,
) -> Result<Vec<T>, (String, String)> {
    items
        .iter()
        .enumerate()
        .map(|(j, s)| {
            s.parse::<T>()
                .map_err(|_| (format!("{key}[{j}]"), format!("{s:?} is not {what}")))
        })
        .collect()
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "{s:?} is not an IP or IP:port address (upstreams are addresses, never names)"
    ))
}

fn parse_node_url(s: &str, domain: &Name) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("{s:?}: scheme must be http or https"));
    }
    if !(url.path() == "/" || url.path().is_empty()) || url.query().is_some() {
        return Err(format!(
            "{s:?}: give the node's base address only (no path or query)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{s:?}: credentials do not belong in a node address"
        ));
    }
    match url.host() {
        None => return Err(format!("{s:?} has no host")),
        Some(url::Host::Domain(host)) => {
            if let Ok(name) = parse_domain(host) {
                if domain.zone_of(&name) {
                    return Err(format!(
                        "{s:?} is under {domain}, the zone this agent answers: \
                         resolving it would ask ourselves"
                    ));
                }
            }
        }
        Some(_) => {}
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
datacenter = "us-east-1"          # local cluster; names without a dc label mean this one
domain = "consul"                 # the zone answered authoritatively (default "consul")

[dns]
listen = ["127.0.0.1:8600"]       # each address served on UDP and TCP
ttl = "0s"                        # answer TTL (Consul's default is 0)
upstreams = []                    # names outside the zone: forward here; empty -> REFUSED

[[dns.records]]                   # static records, e.g. to retire nomad.service.consul
name = "nomad.service.consul"
a = ["127.0.0.9"]                 # and/or aaaa = [...], or cname = "host.example.internal"

[[clusters]]
name = "us-east-1"                # the dc label in DNS names
nodes = ["http://127.0.0.1:8200", "http://127.0.0.2:8200", "http://127.0.0.3:8200"]
poll_interval = "250ms"

[[clusters]]
name = "us-west-2"                # a peer region, reached through one load-balanced address
nodes = ["http://127.0.1.1:8200"]
# ca_file = "/etc/vault.d/tls/ca.pem"   # for https nodes
"#;

    fn parse_err(text: &str) -> ConfigError {
        Config::parse(text, "test.toml").expect_err("config should be rejected")
    }

    #[test]
    fn issue_example_is_accepted_as_written() {
        let c = Config::parse(ISSUE_EXAMPLE, "x.toml").unwrap();
        assert_eq!(c.datacenter, "us-east-1");
        assert_eq!(c.domain.to_string(), "consul.");
        assert_eq!(c.dns.listen, vec!["127.0.0.1:8600".parse().unwrap()]);
        assert_eq!(c.clusters.len(), 2);
        assert_eq!(c.clusters[0].poll_interval, Duration::from_millis(250));
        assert_eq!(c.clusters[1].poll_interval, Duration::from_secs(1));
        assert_eq!(c.dns.records[0].name.to_string(), "nomad.service.consul.");
        assert_eq!(c.dns.records[0].a, vec![Ipv4Addr::new(127, 0, 0, 9)]);
    }

    #[test]
    fn failover_polling_defaults_to_50ms_or_the_poll_interval_if_faster() {
        let c = Config::parse(ISSUE_EXAMPLE, "x.toml").unwrap();
        assert_eq!(
            c.clusters[0].failover_poll_interval,
            Duration::from_millis(50)
        );
        assert_eq!(c.clusters[0].failover_poll_for, Duration::from_secs(60));
        let fast = ISSUE_EXAMPLE.replace("\"250ms\"", "\"20ms\"");
        let c = Config::parse(&fast, "x.toml").unwrap();
        assert_eq!(
            c.clusters[0].failover_poll_interval,
            Duration::from_millis(20)
        );
        let set = ISSUE_EXAMPLE.replace(
            "poll_interval = \"250ms\"",
            "poll_interval = \"250ms\"\nfailover_poll_interval = \"100ms\"\nfailover_poll_for = \"5s\"",
        );
        let c = Config::parse(&set, "x.toml").unwrap();
        assert_eq!(
            c.clusters[0].failover_poll_interval,
            Duration::from_millis(100)
        );
        assert_eq!(c.clusters[0].failover_poll_for, Duration::from_secs(5));
    }

    #[test]
    fn failover_poll_interval_slower_than_the_poll_interval_is_rejected() {
        let e = parse_err(&ISSUE_EXAMPLE.replace(
            "poll_interval = \"250ms\"",
            "poll_interval = \"250ms\"\nfailover_poll_interval = \"1s\"",
        ));
        assert_eq!(e.key, "clusters[0].failover_poll_interval", "{e}");
        assert!(e.reason.contains("must not exceed poll_interval"), "{e}");
        let e = parse_err(&ISSUE_EXAMPLE.replace(
            "poll_interval = \"250ms\"",
            "poll_interval = \"250ms\"\nfailover_poll_interval = \"1ms\"",
        ));
        assert_eq!(e.key, "clusters[0].failover_poll_interval", "{e}");
    }

    #[test]
    fn embedded_default_matches_the_contract() {
        let c = Config::embedded_default();
        assert_eq!(c.datacenter, "dc1");
        assert_eq!(c.clusters[0].nodes[0].as_str(), "http://127.0.0.1:8200/");
        assert_eq!(c.dns.listen, vec!["127.0.0.1:8600".parse().unwrap()]);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = parse_err(&ISSUE_EXAMPLE.replace("poll_interval", "poll_intervall"));
        assert_eq!(e.file, "test.toml");
        assert!(e.key.starts_with("clusters[0]"), "{e}");
        assert!(e.reason.contains("poll_intervall"), "{e}");
    }

    #[test]
    fn bad_addresses_are_named() {
        let e = parse_err(&ISSUE_EXAMPLE.replace("127.0.0.1:8600", "127.0.0.1"));
        assert_eq!(e.key, "dns.listen[0]");
        let e = parse_err(&ISSUE_EXAMPLE.replace("http://127.0.0.2:8200", "ftp://x"));
        assert_eq!(e.key, "clusters[0].nodes[1]");
        let e = parse_err(&ISSUE_EXAMPLE.replace("127.0.0.9", "300.1.1.1"));
        assert_eq!(e.key, "dns.records[0].a[0]");
        let e = parse_err(&ISSUE_EXAMPLE.replace("upstreams = []", "upstreams = [\"dns.google\"]"));
        assert_eq!(e.key, "dns.upstreams[0]");
        let e = parse_err(&ISSUE_EXAMPLE.replace("ttl = \"0s\"", "ttl = \"soon\""));
        assert_eq!(e.key, "dns.ttl");
    }

    #[test]
    fn duplicate_datacenters_are_rejected() {
        let e = parse_err(&ISSUE_EXAMPLE.replace("name = \"us-west-2\"", "name = \"US-EAST-1\""));
        assert_eq!(e.key, "clusters[1].name");
        assert!(e.reason.contains("twice"), "{e}");
    }

    #[test]
    fn node_under_served_domain_is_rejected() {
        let e = parse_err(&ISSUE_EXAMPLE.replace(
            "http://127.0.1.1:8200",
            "http://active.vault.service.us-west-2.consul:8200",
        ));
        assert_eq!(e.key, "clusters[1].nodes[0]");
        assert!(e.reason.contains("ask ourselves"), "{e}");
    }

    /// Four 60-octet labels: 244 octets with the dots, a valid name on its own.
    fn long_domain(labels: usize) -> String {
        vec!["d".repeat(60); labels].join(".")
    }

    #[test]
    fn domain_too_long_for_the_names_built_under_it_is_rejected() {
        let config = ISSUE_EXAMPLE.replace(
            "domain = \"consul\"",
            &format!("domain = \"{}\"", long_domain(4)),
        );
        let e = parse_err(&config);
        assert_eq!(e.key, "domain");
        assert!(e.reason.contains("255"), "{e}");
        // Three labels (183 octets) leave room for the longest SRV target.
        let config = ISSUE_EXAMPLE.replace(
            "domain = \"consul\"",
            &format!("domain = \"{}\"", long_domain(3)),
        );
        Config::parse(&config, "x.toml").unwrap();
    }

    #[test]
    fn empty_node_list_is_rejected() {
        let e =
            parse_err(&ISSUE_EXAMPLE.replace("nodes = [\"http://127.0.1.1:8200\"]", "nodes = []"));
        assert_eq!(e.key, "clusters[1].nodes");
    }

    #[test]
    fn datacenter_must_name_a_cluster() {
        let e =
            parse_err(&ISSUE_EXAMPLE.replace("datacenter = \"us-east-1\"", "datacenter = \"eu\""));
        assert_eq!(e.key, "datacenter");
    }

    #[test]
    fn upstream_loop_is_rejected() {
        let e =
            parse_err(&ISSUE_EXAMPLE.replace("upstreams = []", "upstreams = [\"127.0.0.1:8600\"]"));
        assert!(e.reason.contains("loop"), "{e}");
    }

    #[test]
    fn static_record_rules() {
        let e = parse_err(&ISSUE_EXAMPLE.replace("a = [\"127.0.0.9\"]", ""));
        assert_eq!(e.key, "dns.records[0].name");
        let e = parse_err(&ISSUE_EXAMPLE.replace(
            "a = [\"127.0.0.9\"]",
            "a = [\"127.0.0.9\"]\ncname = \"x.example.\"",
        ));
        assert_eq!(e.key, "dns.records[0].cname");
        let e = parse_err(
            &ISSUE_EXAMPLE.replace("nomad.service.consul", "active.vault.service.consul"),
        );
        assert!(e.reason.contains("shadow"), "{e}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = parse_err("[dns]\nlisten = [\"127.0.0.1:53\"]\n");
        assert!(e.reason.contains("datacenter"), "{e}");
    }

    const PROXY_BASE: &str = r#"
datacenter = "dc1"
[dns]
listen = ["127.0.0.1:8600"]
[[clusters]]
name = "dc1"
nodes = ["http://127.0.0.1:8200"]
[[proxy]]
cluster = "dc1"
listen = "127.77.0.1:8201"
"#;

    #[test]
    fn proxy_defaults_and_route_table() {
        let c = Config::parse(PROXY_BASE, "p").unwrap();
        let p = &c.proxies[0];
        assert_eq!(p.on_leader_change, OnLeaderChange::Close);
        assert!(!p.answer);
        assert_eq!(p.routes["req_fw_sb-act_v1"], RouteAction::Active);
        assert_eq!(p.routes["raft_storage_v1"], RouteAction::Reject);
        assert_eq!(p.default_route, RouteAction::Reject);
        assert_eq!(p.no_alpn, RouteAction::Reject);
    }

    const SET_BASE: &str = r#"
datacenter = "us-east-1"
[[clusters]]
name = "us-east-1"
nodes = ["http://127.0.0.1:8200"]
[[clusters]]
name = "us-west-2"
nodes = ["http://127.0.0.2:8200"]
"#;

    #[test]
    fn replication_set_rules() {
        let c = Config::parse(
            &format!("{SET_BASE}[replication]\nclusters = [\"US-East-1\", \"us-west-2\"]\n"),
            "r",
        )
        .unwrap();
        assert_eq!(
            c.replication.unwrap().clusters,
            vec!["us-east-1".to_string(), "us-west-2".to_string()]
        );
        let e = parse_err(&format!(
            "{SET_BASE}[replication]\nclusters = [\"us-east-1\", \"eu-west-1\"]\n"
        ));
        assert_eq!(e.key, "replication.clusters[1]");
        assert!(e.reason.contains("eu-west-1"), "{e}");
        let e = parse_err(&format!(
            "{SET_BASE}[replication]\nclusters = [\"us-east-1\", \"us-east-1\"]\n"
        ));
        assert_eq!(e.key, "replication.clusters[1]");
        let e = parse_err(&format!("{SET_BASE}[replication]\nclusters = []\n"));
        assert_eq!(e.key, "replication.clusters");
        // A cluster may not take a virtual label, set or no set.
        for label in ["perf-primary", "DR-primary"] {
            let e = parse_err(&format!(
                "{SET_BASE}[[clusters]]\nname = \"{label}\"\nnodes = [\"http://127.0.0.3:8200\"]\n"
            ));
            assert_eq!(e.key, "clusters[2].name", "{label}");
            assert!(e.reason.contains("virtual datacenter"), "{e}");
        }
        // A proxy may follow a primary only when there is a set.
        let proxy = "[[proxy]]\ncluster = \"perf-primary\"\nlisten = \"127.71.0.1:8201\"\n";
        let e = parse_err(&format!("{SET_BASE}{proxy}"));
        assert_eq!(e.key, "proxy[0].cluster");
        let c = Config::parse(
            &format!("{SET_BASE}{proxy}[replication]\nclusters = [\"us-east-1\", \"us-west-2\"]\n"),
            "r",
        )
        .unwrap();
        assert_eq!(c.proxies[0].cluster, "perf-primary");
    }

    #[test]
    fn api_side_defaults_and_rules() {
        let base = "datacenter = \"dc1\"\n[[clusters]]\nname = \"dc1\"\nnodes = [\"http://127.0.0.1:8200\"]\n[[proxy]]\ncluster = \"dc1\"\nlisten = \"127.71.0.2:8201\"\n";
        let api = |extra: &str| {
            Config::parse(&format!("{base}{extra}"), "a").map(|c| c.proxies[0].api_listen)
        };
        assert_eq!(
            api("").unwrap(),
            None,
            "no API side unless asked or answered"
        );
        assert_eq!(
            api("answer = true\n").unwrap(),
            Some("127.71.0.2:8200".parse().unwrap()),
            "proxy mode: the answered IP serves :8200 too"
        );
        assert_eq!(api("answer = true\napi_listen = \"\"\n").unwrap(), None);
        assert_eq!(
            api("api_listen = \"127.71.0.3:9200\"\n").unwrap(),
            Some("127.71.0.3:9200".parse().unwrap())
        );
        let key = |extra: &str| api(extra).unwrap_err().key;
        assert_eq!(key("api_listen = \"nope\"\n"), "proxy[0].api_listen");
        assert_eq!(
            key("api_listen = \"127.71.0.2:8201\"\n"),
            "proxy[0].api_listen"
        );
        assert_eq!(
            key("answer = true\napi_listen = \"127.71.0.9:8200\"\n"),
            "proxy[0].api_listen",
            "the API side must be on the answered IP"
        );
        // Something else (here: a socket without SO_REUSEPORT, as Vault's own listener
        // is) holds the default API address: check-config says so, naming the key.
        let holder = std::net::TcpListener::bind("127.71.0.2:8200").unwrap();
        let e = api("answer = true\n").unwrap_err();
        assert_eq!(e.key, "proxy[0].api_listen");
        assert!(
            e.reason.contains("cannot be bound on 127.71.0.2:8200"),
            "{e}"
        );
        assert!(
            e.reason.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(holder);
        // Vault on every address of the host blocks the API side on any of them.
        let everywhere = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = everywhere.local_addr().unwrap().port();
        let e = api(&format!("api_listen = \"127.71.0.4:{port}\"\n")).unwrap_err();
        assert!(e.reason.contains(&format!("0.0.0.0:{port}")), "{e}");
    }

    #[test]
    fn cluster_tls_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let issue = || {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["agent.test".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = issue();
        let (_, other_key) = issue();
        let (cert_file, key_file) = (write("c.pem", &cert), write("k.pem", &key));
        let other = write("other.pem", &other_key);
        let ca = write("ca.pem", &cert);
        let cluster = |extra: &str| {
            format!(
                "datacenter = \"dc1\"\n[[clusters]]\nname = \"dc1\"\nnodes = [\"https://127.0.0.1:8200\"]\n{extra}"
            )
        };
        let good = Config::parse(
            &cluster(&format!(
                "ca_file = \"{ca}\"\nclient_cert_file = \"{cert_file}\"\nclient_key_file = \"{key_file}\"\ntls_server_name = \"Vault.Test\"\n"
            )),
            "t",
        )
        .unwrap();
        let tls = &good.clusters[0].tls;
        assert_eq!(tls.server_name.as_deref(), Some("vault.test"));
        assert_eq!(tls.client_cert.as_ref().unwrap().pem, cert.as_bytes());
        // The key of another certificate: both files named.
        let e = parse_err(&cluster(&format!(
            "client_cert_file = \"{cert_file}\"\nclient_key_file = \"{other}\"\n"
        )));
        assert_eq!(e.key, "clusters[0].client_key_file");
        assert!(
            e.reason.contains(&other) && e.reason.contains(&cert_file),
            "{e}"
        );
        let e = parse_err(&cluster(&format!("client_cert_file = \"{cert_file}\"\n")));
        assert_eq!(e.key, "clusters[0].client_key_file");
        let e = parse_err(&cluster(&format!("client_key_file = \"{key_file}\"\n")));
        assert_eq!(e.key, "clusters[0].client_cert_file");
        let e = parse_err(&cluster(&format!(
            "client_cert_file = \"{key_file}\"\nclient_key_file = \"{key_file}\"\n"
        )));
        assert_eq!(
            e.key, "clusters[0].client_cert_file",
            "a key is no certificate"
        );
        let e = parse_err(&cluster(&format!("ca_file = \"{key_file}\"\n")));
        assert_eq!(e.key, "clusters[0].ca_file");
        let e = parse_err(&cluster("ca_file = \"/nonexistent/ca.pem\"\n"));
        assert!(e.reason.contains("cannot read /nonexistent/ca.pem"), "{e}");
        let e = parse_err(&cluster("tls_server_name = \"not a name!\"\n"));
        assert_eq!(e.key, "clusters[0].tls_server_name");
        let e = parse_err(&cluster("tls_skip_verify = true\n"));
        assert_eq!(e.key, "clusters[0].tls_skip_verify");
        assert!(e.reason.contains("not supported"), "{e}");
    }

    #[test]
    fn proxy_validation() {
        let e = parse_err(&PROXY_BASE.replace("cluster = \"dc1\"", "cluster = \"dc9\""));
        assert_eq!(e.key, "proxy[0].cluster");
        let e = parse_err(&PROXY_BASE.replace("127.77.0.1:8201", "127.0.0.1:8600"));
        assert_eq!(e.key, "proxy[0].listen");
        let e = parse_err(&format!(
            "{PROXY_BASE}answer = true\n[[proxy]]\ncluster = \"dc1\"\nlisten = \"127.77.0.2:8201\"\nanswer = true\n"
        ));
        assert_eq!(e.key, "proxy[1].answer");
        let e = parse_err(&format!("{PROXY_BASE}on_leader_change = \"drop\"\n"));
        assert_eq!(e.key, "proxy[0].on_leader_change");
        let e = parse_err(&format!("{PROXY_BASE}[proxy.routes]\n\"x\" = \"maybe\"\n"));
        assert!(e.key.starts_with("proxy[0].routes"), "{e}");
        let e = parse_err(&format!("{PROXY_BASE}max_client_hello = 10\n"));
        assert_eq!(e.key, "proxy[0].max_client_hello");
        let e = parse_err(
            &PROXY_BASE
                .replace("127.77.0.1:8201", "0.0.0.0:8201")
                .replace(
                    "listen = \"0.0.0.0:8201\"",
                    "listen = \"0.0.0.0:8201\"\nanswer = true",
                ),
        );
        assert_eq!(e.key, "proxy[0].answer");
    }
}
