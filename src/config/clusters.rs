//! `[[clusters]]`, `datacenter` and `[replication]`: which clusters to watch, how, and
//! which of them replicate with each other.

use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::Name;
use url::Url;

use super::file::{
    FileCluster, FileReplication, FAILOVER_POLL_INTERVAL, LOAD_BALANCED_FAILOVER_POLL_INTERVAL,
    NODE_CONNECT_TIMEOUT,
};
use super::validate::{parse_domain, Check, Checked};
use super::{ClusterConfig, ClusterTls, PemFile, ReplicationConfig};
use crate::dns::names::check_buildable;
use crate::vault::modes::Kind;
use crate::vault::tls::{client_config, TlsError};

/// The shortest poll interval (either kind) a cluster may set.
const MIN_POLL: Duration = Duration::from_millis(10);

/// The key that caps `failover_poll_interval`, and what to do about it.
const FAILOVER_POLL_CEILING: (&str, &str) = ("poll_interval", "; set it equal to poll at one rate");
/// The key that caps `connect_timeout`, and why.
const CONNECT_CEILING: (&str, &str) = ("request_timeout", ", which bounds the whole request");

/// The cluster timings a cluster's table may set, checked against each other.
struct Timings {
    failover_poll_interval: Duration,
    connect_timeout: Duration,
}

impl Check<'_> {
    pub(super) fn clusters(
        &self,
        clusters: Vec<FileCluster>,
        domain: &Name,
    ) -> Checked<Vec<ClusterConfig>> {
        if clusters.is_empty() {
            return self.fail("clusters", "at least one [[clusters]] entry is needed");
        }
        let mut out: Vec<ClusterConfig> = Vec::new();
        for (i, c) in clusters.into_iter().enumerate() {
            let cluster = self.cluster(i, c, domain)?;
            if out.iter().any(|o| o.name == cluster.name) {
                return self.fail(
                    format!("clusters[{i}].name"),
                    format!("cluster {:?} is defined twice", cluster.name),
                );
            }
            out.push(cluster);
        }
        Ok(out)
    }

    fn cluster(&self, i: usize, c: FileCluster, domain: &Name) -> Checked<ClusterConfig> {
        let key = |k: &str| format!("clusters[{i}].{k}");
        let name = self.cluster_name(c.name.as_deref(), &key("name"), domain)?;
        if c.nodes.is_empty() {
            return self.fail(key("nodes"), "needs at least one node address");
        }
        let mut nodes = Vec::new();
        for (j, n) in c.nodes.iter().enumerate() {
            let nkey = format!("clusters[{i}].nodes[{j}]");
            let url = parse_node_url(n, domain).or_else(|r| self.fail(nkey.clone(), r))?;
            if nodes.contains(&url) {
                return self.fail(nkey, format!("{url} is listed twice"));
            }
            nodes.push(url);
        }
        let timings = self.timings(&c, &key)?;
        if c.cluster_port == 0 {
            return self.fail(key("cluster_port"), "must be a port number (1-65535)");
        }
        let tls = self.cluster_tls(&c, &nodes, &key)?;
        Ok(ClusterConfig {
            name,
            nodes,
            poll_interval: c.poll_interval,
            failover_poll_interval: timings.failover_poll_interval,
            failover_poll_for: c.failover_poll_for,
            request_timeout: c.request_timeout,
            connect_timeout: timings.connect_timeout,
            serve_stale_for: c.serve_stale_for,
            load_balanced: c.load_balanced,
            cluster_port: c.cluster_port,
            tls,
        })
    }

    /// A cluster's name: a DNS label, lower case, that every name under it fits after,
    /// and not one Consul's names or a replication set already use.
    fn cluster_name(&self, name: Option<&str>, key: &str, domain: &Name) -> Checked<String> {
        let Some(given) = name else {
            return self.fail(key, "is required (the cluster label in DNS names)");
        };
        let name = given.to_ascii_lowercase();
        if !is_label(&name) {
            return self.fail(
                key,
                format!("{given:?} is not a DNS label (letters, digits, '-')"),
            );
        }
        if let Err(e) = check_buildable(&name, domain) {
            return self.fail(
                "domain",
                format!(
                    "{domain} is {} octets: too long for the names answered under it \
                     (<32 hex digits>.addr.{name}.{domain} must fit in 255): {e}",
                    domain.len()
                ),
            );
        }
        if is_reserved_label(&name) {
            return self.fail(key, format!("{name:?} is reserved in Consul DNS names"));
        }
        if Kind::from_label(&name).is_some() {
            return self.fail(
                key,
                format!(
                    "{name:?} is the virtual cluster a [replication] set answers for \
                     its primary; name the cluster after its region"
                ),
            );
        }
        Ok(name)
    }

    fn timings(&self, c: &FileCluster, key: &dyn Fn(&str) -> String) -> Checked<Timings> {
        if c.poll_interval < MIN_POLL {
            return self.fail(key("poll_interval"), "must be at least 10ms");
        }
        // Unset, each is its default, or its ceiling when that is lower.
        let failover = c.failover_poll_interval;
        let failover = failover.unwrap_or_else(|| {
            let default = match c.load_balanced {
                true => LOAD_BALANCED_FAILOVER_POLL_INTERVAL,
                false => FAILOVER_POLL_INTERVAL,
            };
            default.min(c.poll_interval)
        });
        let most = (MIN_POLL, c.poll_interval);
        self.between(
            key("failover_poll_interval"),
            failover,
            most,
            FAILOVER_POLL_CEILING,
        )?;
        if c.request_timeout.is_zero() {
            return self.fail(key("request_timeout"), "must be above 0");
        }
        let connect = c.connect_timeout;
        let connect = connect.unwrap_or_else(|| NODE_CONNECT_TIMEOUT.min(c.request_timeout));
        let most = (Duration::ZERO, c.request_timeout);
        self.between(key("connect_timeout"), connect, most, CONNECT_CEILING)?;
        Ok(Timings {
            failover_poll_interval: failover,
            connect_timeout: connect,
        })
    }

    /// A duration above 0 when `min` is zero, else at least `min`; and at most `max`,
    /// the value of the key `max_key` (`after` says why).
    fn between(
        &self,
        key: String,
        value: Duration,
        (min, max): (Duration, Duration),
        (max_key, after): (&str, &str),
    ) -> Checked<()> {
        if min.is_zero() && value.is_zero() {
            return self.fail(key, "must be above 0");
        }
        if value < min {
            let min = humantime::format_duration(min);
            return self.fail(key, format!("must be at least {min}"));
        }
        if value > max {
            let max = humantime::format_duration(max);
            return self.fail(key, format!("must not exceed {max_key} ({max}){after}"));
        }
        Ok(())
    }

    /// `datacenter`: the cluster that names without a cluster label refer to.
    pub(super) fn datacenter(&self, given: &str, clusters: &[ClusterConfig]) -> Checked<String> {
        let name = given.to_ascii_lowercase();
        if !clusters.iter().any(|c| c.name == name) {
            return self.fail(
                "datacenter",
                format!(
                    "no [[clusters]] entry is named {given:?} (have: {})",
                    names(clusters)
                ),
            );
        }
        Ok(name)
    }

    pub(super) fn replication(
        &self,
        replication: Option<FileReplication>,
        clusters: &[ClusterConfig],
        domain: &Name,
    ) -> Checked<Option<ReplicationConfig>> {
        let Some(r) = replication else {
            return Ok(None);
        };
        if r.clusters.is_empty() {
            return self.fail(
                "replication.clusters",
                "names no cluster (remove [replication], or list the clusters that \
                 replicate with each other)",
            );
        }
        let mut set: Vec<String> = Vec::new();
        for (i, c) in r.clusters.iter().enumerate() {
            let key = format!("replication.clusters[{i}]");
            let name = c.to_ascii_lowercase();
            if !clusters.iter().any(|k| k.name == name) {
                return self.fail(
                    key,
                    format!(
                        "no [[clusters]] entry is named {c:?} (have: {})",
                        names(clusters)
                    ),
                );
            }
            if set.contains(&name) {
                return self.fail(key, format!("{name} is listed twice"));
            }
            set.push(name);
        }
        for kind in Kind::ALL {
            if let Err(e) = check_buildable(kind.label(), domain) {
                return self.fail(
                    "domain",
                    format!(
                        "{domain} is too long for the names answered under the virtual \
                         datacenter {}: {e}",
                        kind.label()
                    ),
                );
            }
        }
        Ok(Some(ReplicationConfig { clusters: set }))
    }

    /// A cluster's TLS files, read (once: the watcher uses these bytes) and checked:
    /// each readable PEM, the key the certificate's, the whole config buildable
    /// (`vault::tls::client_config`).
    fn cluster_tls(
        &self,
        c: &FileCluster,
        nodes: &[Url],
        key: &dyn Fn(&str) -> String,
    ) -> Checked<ClusterTls> {
        if c.tls_skip_verify.is_some() {
            return self.fail(
                key("tls_skip_verify"),
                "not supported: an unverified node could name the leader that replication \
                 and token requests are sent to; use ca_file for a private CA and \
                 tls_server_name for nodes addressed by IP",
            );
        }
        let read = |k: &str, path: &Option<PathBuf>| -> Checked<Option<PemFile>> {
            let Some(path) = path else {
                return Ok(None);
            };
            match std::fs::read(path) {
                Ok(pem) => Ok(Some(PemFile {
                    path: path.clone(),
                    pem,
                })),
                Err(e) => self.fail(key(k), format!("cannot read {}: {e}", path.display())),
            }
        };
        let tls = ClusterTls {
            ca: read("ca_file", &c.ca_file)?,
            client_cert: read("client_cert_file", &c.client_cert_file)?,
            client_key: read("client_key_file", &c.client_key_file)?,
            server_name: c.tls_server_name.as_ref().map(|n| n.to_ascii_lowercase()),
            // TLS roots are needed only when some node is polled over https.
            https_nodes: nodes.iter().any(|u| u.scheme() == "https"),
        };
        self.tls_pairs_and_name(&tls, key)?;
        match client_config(&tls) {
            Ok(_) => Ok(tls),
            Err(e) => {
                let (k, reason) = tls_reason(e, &tls);
                self.fail(key(k), reason)
            }
        }
    }

    /// A client certificate comes with its key and the key with its certificate, and
    /// `tls_server_name` is a name rustls can verify against.
    fn tls_pairs_and_name(&self, tls: &ClusterTls, key: &dyn Fn(&str) -> String) -> Checked<()> {
        match (&tls.client_cert, &tls.client_key) {
            (Some(_), None) => {
                return self.fail(
                    key("client_key_file"),
                    "client_cert_file needs its key in client_key_file",
                )
            }
            (None, Some(_)) => {
                return self.fail(
                    key("client_cert_file"),
                    "client_key_file needs its certificate in client_cert_file",
                )
            }
            _ => {}
        }
        if let Some(name) = &tls.server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return self.fail(
                    key("tls_server_name"),
                    format!("{name:?} is not a DNS name or an IP address"),
                );
            }
        }
        Ok(())
    }
}

/// The key a TLS error belongs to, and the reason with the file it is about.
fn tls_reason(e: TlsError, tls: &ClusterTls) -> (&'static str, String) {
    let named = |f: &Option<PemFile>| {
        f.as_ref()
            .map_or(String::new(), |f| f.path.display().to_string())
    };
    match e {
        TlsError::Ca(why) => ("ca_file", format!("{}: {why}", named(&tls.ca))),
        TlsError::ClientCert(why) => (
            "client_cert_file",
            format!("{}: {why}", named(&tls.client_cert)),
        ),
        TlsError::ClientKey(why) => (
            "client_key_file",
            format!("{}: {why}", named(&tls.client_key)),
        ),
        TlsError::Mismatch => (
            "client_key_file",
            format!(
                "{} is not the key of the certificate in {}",
                named(&tls.client_key),
                named(&tls.client_cert)
            ),
        ),
        TlsError::Roots(why) => (
            "ca_file",
            format!("no ca_file, and the system roots cannot be used: {why}"),
        ),
    }
}

fn names(clusters: &[ClusterConfig]) -> String {
    clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Labels that select a lookup kind in Consul names; a cluster named like one of
/// them would make names ambiguous.
fn is_reserved_label(label: &str) -> bool {
    matches!(
        label,
        "service" | "node" | "addr" | "query" | "connect" | "virtual" | "ingress"
    )
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
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
