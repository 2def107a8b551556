//! From the file's schema to a [`Config`]: one function per section, each naming the
//! key it rejects. Sections run in dependency order: the domain and the DNS listeners
//! first (later checks compare against them), then clusters, the replication set,
//! static records, proxies and the admin endpoint.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::rr::Name;

use super::file::{FileAdmin, FileConfig, FileDns, FileRecord};
use super::{AdminConfig, Config, ConfigError, DnsConfig, ProxyConfig, StaticRecord};
use crate::dns::names::{self, ZoneName};

pub(super) type Checked<T> = Result<T, ConfigError>;

/// The file being checked: makes each error name it.
#[derive(Clone, Copy)]
pub(super) struct Check<'a> {
    pub file: &'a str,
}

impl Check<'_> {
    pub fn fail<T>(&self, key: impl Into<String>, reason: impl Into<String>) -> Checked<T> {
        Err(ConfigError::new(self.file, key, reason))
    }
}

pub(super) fn config(raw: FileConfig, file: &str) -> Checked<Config> {
    let check = Check { file };
    // Required before anything else, as serde would have it.
    let Some(datacenter) = raw.datacenter else {
        return check.fail(
            "datacenter",
            "is required: the [[clusters]] entry names without a cluster label mean",
        );
    };
    let domain = parse_domain(&raw.domain).or_else(|r| check.fail("domain", r))?;
    let dns_listen = check.dns_listen(&raw.dns.listen)?;
    let upstreams = check.upstreams(&raw.dns, &dns_listen)?;
    let zone_fallback = check.servers("dns.zone_fallback", &raw.dns.zone_fallback, &dns_listen)?;
    let clusters = check.clusters(raw.clusters, &domain)?;
    let local_cluster = check.datacenter(&datacenter, &clusters)?;
    let replication = check.replication(raw.replication, &clusters, &domain)?;
    let records = check.records(raw.dns.records, &domain)?;
    let proxies = check.proxies(raw.proxy, &clusters, replication.is_some(), &dns_listen)?;
    let admin = check.admin(raw.admin, &dns_listen, &proxies)?;
    Ok(Config {
        local_cluster,
        domain,
        dns: DnsConfig {
            listen: dns_listen,
            ttl: raw.dns.ttl,
            upstreams,
            zone_fallback,
            upstream_timeout: raw.dns.upstream_timeout,
            tcp_idle_timeout: raw.dns.tcp_idle_timeout,
            lameduck: raw.dns.lameduck,
            udp_answer_limit: raw.dns.udp_answer_limit,
            records,
        },
        clusters,
        proxies,
        admin,
        drain_timeout: raw.drain_timeout,
        replication,
    })
}

impl Check<'_> {
    fn dns_listen(&self, listen: &[String]) -> Checked<Vec<SocketAddr>> {
        if listen.is_empty() {
            return self.fail("dns.listen", "needs at least one address");
        }
        let mut addrs = Vec::new();
        for (i, l) in listen.iter().enumerate() {
            let key = format!("dns.listen[{i}]");
            let Ok(addr) = l.parse::<SocketAddr>() else {
                return self.fail(key, format!("{l:?} is not an IP:port address"));
            };
            if addrs.contains(&addr) {
                return self.fail(key, format!("{addr} is listed twice"));
            }
            addrs.push(addr);
        }
        Ok(addrs)
    }

    fn upstreams(&self, dns: &FileDns, listen: &[SocketAddr]) -> Checked<Vec<SocketAddr>> {
        if dns.upstream_timeout.is_zero() {
            return self.fail("dns.upstream_timeout", "must be above 0");
        }
        if dns.tcp_idle_timeout.is_zero() {
            return self.fail("dns.tcp_idle_timeout", "must be above 0");
        }
        if dns.udp_answer_limit == 0 {
            return self.fail(
                "dns.udp_answer_limit",
                "must be at least 1 (Consul's default is 3)",
            );
        }
        self.servers("dns.upstreams", &dns.upstreams, listen)
    }

    /// DNS servers to forward to: addresses (port 53 unless given), none of ours.
    fn servers(
        &self,
        key: &str,
        list: &[String],
        listen: &[SocketAddr],
    ) -> Checked<Vec<SocketAddr>> {
        let mut servers = Vec::new();
        for (i, u) in list.iter().enumerate() {
            let key = format!("{key}[{i}]");
            let addr = parse_upstream(u).or_else(|r| self.fail(key.clone(), r))?;
            if listen.contains(&addr) {
                return self.fail(
                    key,
                    format!("{addr} is one of our own listen addresses: that would loop"),
                );
            }
            servers.push(addr);
        }
        Ok(servers)
    }

    fn records(&self, records: Vec<FileRecord>, domain: &Name) -> Checked<Vec<StaticRecord>> {
        let mut out: Vec<StaticRecord> = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in records.into_iter().enumerate() {
            let record = self.record(i, r, domain)?;
            if !seen.insert(record.name.clone()) {
                return self.fail(
                    format!("dns.records[{i}].name"),
                    format!("{} already has a [[dns.records]] entry", record.name),
                );
            }
            out.push(record);
        }
        Ok(out)
    }

    fn record(&self, i: usize, r: FileRecord, domain: &Name) -> Checked<StaticRecord> {
        let key = |k: &str| format!("dns.records[{i}].{k}");
        let Some(name) = r.name else {
            return self.fail(key("name"), "is required");
        };
        let name = parse_domain(&name).or_else(|reason| self.fail(key("name"), reason))?;
        if domain.zone_of(&name) && shadows_vault_name(&name, domain) {
            return self.fail(
                key("name"),
                format!("{name} would shadow the vault service answers"),
            );
        }
        let a = self.each::<Ipv4Addr>(&r.a, &key("a"), "an IPv4 address")?;
        let aaaa = self.each::<Ipv6Addr>(&r.aaaa, &key("aaaa"), "an IPv6 address")?;
        let cname = match &r.cname {
            Some(c) => Some(parse_domain(c).or_else(|reason| self.fail(key("cname"), reason))?),
            None => None,
        };
        if cname.is_some() && !(a.is_empty() && aaaa.is_empty()) {
            return self.fail(
                key("cname"),
                "a CNAME cannot stand beside a or aaaa records",
            );
        }
        if cname.is_none() && a.is_empty() && aaaa.is_empty() {
            return self.fail(key("name"), "needs a, aaaa or cname");
        }
        Ok(StaticRecord {
            name,
            a,
            aaaa,
            cname,
            ttl: r.ttl,
        })
    }

    fn admin(
        &self,
        admin: FileAdmin,
        dns: &[SocketAddr],
        proxies: &[ProxyConfig],
    ) -> Checked<AdminConfig> {
        let listen = if admin.listen.is_empty() {
            None
        } else {
            let Ok(addr) = admin.listen.parse::<SocketAddr>() else {
                return self.fail(
                    "admin.listen",
                    format!(
                        "{:?} is not an IP:port address (\"\" disables)",
                        admin.listen
                    ),
                );
            };
            if tcp_listener_taken(dns, proxies, addr) {
                return self.fail(
                    "admin.listen",
                    format!("{addr} is already used by another listener"),
                );
            }
            Some(addr)
        };
        Ok(AdminConfig {
            listen,
            ready_timeout: admin.ready_timeout,
        })
    }

    /// Parses every string of a list, naming the first bad one as `key[index]`.
    fn each<T: std::str::FromStr>(
        &self,
        items: &[String],
        key: &str,
        what: &str,
    ) -> Checked<Vec<T>> {
        let mut out = Vec::new();
        for (j, s) in items.iter().enumerate() {
            let Ok(v) = s.parse::<T>() else {
                return self.fail(format!("{key}[{j}]"), format!("{s:?} is not {what}"));
            };
            out.push(v);
        }
        Ok(out)
    }
}

/// True when a DNS listener (which is TCP too) or a proxy (either side) already has
/// `addr`.
pub(super) fn tcp_listener_taken(
    dns: &[SocketAddr],
    proxies: &[ProxyConfig],
    addr: SocketAddr,
) -> bool {
    dns.contains(&addr)
        || proxies
            .iter()
            .any(|p| p.listen == addr || p.api_listen == Some(addr))
}

/// True when `name` is one of the names the vault service answers, in any form the
/// zone parses (so a static record there would be ambiguous).
fn shadows_vault_name(name: &Name, domain: &Name) -> bool {
    let labels: Vec<String> = name
        .iter()
        .take(name.num_labels() as usize - domain.num_labels() as usize)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    matches!(names::parse(&labels), ZoneName::Service { service, .. } if service == "vault")
}

pub(super) fn parse_domain(s: &str) -> Result<Name, String> {
    let trimmed = s.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("must not be empty".to_string());
    }
    let mut name =
        Name::from_ascii(trimmed).map_err(|e| format!("{s:?} is not a domain name: {e}"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
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
