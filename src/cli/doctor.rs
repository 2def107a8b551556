//! `vault-locator doctor`: what an operator checks by hand on a host, in one command,
//! each finding with what to fix. Exit 0 when all is well, 5 when something needs
//! fixing (as `status`), 64 for a config that does not load.
//!
//! It checks, in order: the agent is up and ready (its admin endpoint); every cluster
//! has a leader and a fresh view; the system resolver (getaddrinfo, as Vault and every
//! other program resolve) answers the agent's names as the agent itself does (asked
//! directly on its DNS listener), and when it does not, which resolver is in the way
//! and which drop-in is missing; client certificates far from expiry; each proxy
//! listener accepts connections; the addresses replication streams dial
//! (`primary_cluster_addr`, from `/status`) resolve to what the agent answers.
// The CLI runs no tokio runtime: it may block (clippy.toml bans this in the agent).
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::admin::Status;
use crate::config::Config;

/// Something needs fixing.
pub const EXIT_FINDINGS: u8 = 5;
/// A client certificate closer to its expiry than this is a finding.
const CERT_WARNING: Duration = Duration::from_secs(14 * 86400);
const TIMEOUT: Duration = Duration::from_secs(3);

/// One check's outcome: what was checked, and what to fix when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub fix: Option<String>,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            fix: None,
        }
    }

    fn fix(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check for the agent `config` describes; prints them; the exit code.
pub fn run(config: &Config) -> u8 {
    let findings = examine(config, &Host::real());
    let mut out = String::new();
    for f in &findings {
        match &f.fix {
            None => writeln!(out, "ok   {}", f.what),
            Some(fix) => writeln!(out, "FIX  {}\n     {fix}", f.what),
        }
        .expect("writing to a String");
    }
    print!("{out}");
    if findings.iter().all(|f| f.fix.is_none()) {
        0
    } else {
        EXIT_FINDINGS
    }
}

/// Where the checks look: the real host, or a test's stand-ins.
pub struct Host {
    /// `/etc/resolv.conf`.
    pub resolv_conf: std::path::PathBuf,
    /// systemd-resolved's drop-in directory.
    pub resolved_dropins: std::path::PathBuf,
}

impl Host {
    pub fn real() -> Self {
        Self {
            resolv_conf: "/etc/resolv.conf".into(),
            resolved_dropins: "/etc/systemd/resolved.conf.d".into(),
        }
    }
}

/// Every finding, in the order of the module docs.
pub fn examine(config: &Config, host: &Host) -> Vec<Finding> {
    let mut findings = Vec::new();
    let status = match config.admin.listen {
        None => {
            findings.push(Finding::fix(
                "the agent's admin endpoint",
                "admin.listen is \"\" in the config: doctor reads the agent's state there",
            ));
            None
        }
        Some(admin) => match fetch(&admin.to_string()) {
            Ok(s) => {
                findings.push(if s.ready {
                    Finding::ok(format!(
                        "the agent answers on {admin} and is ready (pid {})",
                        s.pid
                    ))
                } else {
                    Finding::fix(
                        format!("the agent answers on {admin} but is not ready"),
                        "it has no first view of every cluster yet: see `vault-locator status`",
                    )
                });
                Some(s)
            }
            Err(e) => {
                findings.push(Finding::fix(
                    format!("the agent on {admin}: {e}"),
                    "is it running? `systemctl status vault-locator`, `journalctl -u vault-locator`",
                ));
                None
            }
        },
    };
    if let Some(s) = &status {
        for c in &s.clusters {
            findings.push(if c.healthy() {
                Finding::ok(format!("cluster {}: leader known, view fresh", c.name))
            } else {
                Finding::fix(
                    format!(
                        "cluster {}: {}",
                        c.name,
                        c.no_leader.as_deref().unwrap_or("view not fresh")
                    ),
                    "see `vault-locator status`: its nodes, their errors",
                )
            });
        }
    }
    findings.extend(resolver(config, host));
    findings.extend(certificates(config, SystemTime::now()));
    findings.extend(proxies(config));
    if let Some(s) = &status {
        findings.extend(stream_addresses(config, s));
    }
    findings
}

/// The local cluster's `active` name through getaddrinfo, against the agent's own
/// answer on its first DNS listener.
fn resolver(config: &Config, host: &Host) -> Vec<Finding> {
    let Some(&dns) = config.dns.listen.first() else {
        return vec![];
    };
    let domain = config.domain.to_ascii();
    let name = format!("active.vault.service.{}", domain.trim_end_matches('.'));
    let direct = match ask(dns, &name) {
        Ok(ips) => ips,
        Err(e) => {
            return vec![Finding::fix(
                format!("the agent's DNS on {dns}: {e}"),
                "is it running? `systemctl status vault-locator`",
            )]
        }
    };
    let system = system_lookup(&name);
    if !direct.is_empty() && system == direct {
        return vec![Finding::ok(format!(
            "the system resolver answers {name} as the agent does ({})",
            list(&direct)
        ))];
    }
    let got = if system.is_empty() {
        "nothing".to_string()
    } else {
        list(&system)
    };
    vec![Finding::fix(
        format!(
            "the system resolver answers {name} with {got}; the agent answers {}",
            if direct.is_empty() {
                "no address".into()
            } else {
                list(&direct)
            }
        ),
        resolver_fix(config, host, dns),
    )]
}

/// What stands between getaddrinfo and the agent, and what to add.
fn resolver_fix(config: &Config, host: &Host, dns: SocketAddr) -> String {
    let resolv = std::fs::read_to_string(&host.resolv_conf).unwrap_or_default();
    let domain = config.domain.to_ascii();
    let zone = domain.trim_end_matches('.');
    let stub = resolv
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["nameserver", "127.0.0.53"]);
    if stub {
        let dropin = host.resolved_dropins.join("vault-locator.conf");
        let routes = std::fs::read_to_string(&dropin)
            .is_ok_and(|d| d.contains(&format!("~{zone}")) && d.contains(&dns.to_string()));
        if !routes {
            return format!(
                "systemd-resolved (nameserver 127.0.0.53) has no route for ~{zone}: {} with \
                 [Resolve] DNS={dns} Domains=~{zone}, then `systemctl restart systemd-resolved`",
                dropin.display()
            );
        }
        return format!(
            "systemd-resolved has {} but does not answer as the agent: \
             `systemctl restart systemd-resolved`, then `resolvectl query {}`",
            dropin.display(),
            format_args!("active.vault.service.{zone}")
        );
    }
    let servers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    format!(
        "{} names {}: that resolver must send the {zone} zone to {dns} (dnsmasq: \
         server=/{zone}/{}#{}; unbound: a stub-zone; see packaging/README.md)",
        host.resolv_conf.display(),
        if servers.is_empty() {
            "no nameserver".to_string()
        } else {
            servers.join(", ")
        },
        dns.ip(),
        dns.port()
    )
}

/// Client certificates far from expiry.
fn certificates(config: &Config, now: SystemTime) -> Vec<Finding> {
    config
        .clusters
        .iter()
        .filter_map(|c| Some((c, crate::vault::tls::client_cert_expiry(&c.tls)?)))
        .map(|(c, expiry)| {
            let left = expiry.duration_since(now).unwrap_or_default();
            let days = left.as_secs() / 86400;
            if left > CERT_WARNING {
                Finding::ok(format!("cluster {}: client certificate valid for {days} more days", c.name))
            } else {
                Finding::fix(
                    format!("cluster {}: client certificate expires in {days} days", c.name),
                    "rotate client_cert_file and client_key_file, then `systemctl reload vault-locator`",
                )
            }
        })
        .collect()
}

/// Each proxy listener (both sides) accepts a connection.
fn proxies(config: &Config) -> Vec<Finding> {
    config
        .proxies
        .iter()
        .flat_map(|p| {
            std::iter::once(p.listen)
                .chain(p.api_listen)
                .map(move |a| (p, a))
        })
        .map(
            |(p, addr)| match std::net::TcpStream::connect_timeout(&addr, TIMEOUT) {
                Ok(_) => Finding::ok(format!("proxy for {} accepts on {addr}", p.cluster)),
                Err(e) => Finding::fix(
                    format!("proxy for {} on {addr}: {e}", p.cluster),
                    "see `journalctl -u vault-locator` for the listener",
                ),
            },
        )
        .collect()
}

/// The addresses replication streams dial, through the system resolver, against the
/// agent's own answer for the same name.
fn stream_addresses(config: &Config, status: &Status) -> Vec<Finding> {
    let Some(&dns) = config.dns.listen.first() else {
        return vec![];
    };
    let Some(r) = &status.replication else {
        return vec![];
    };
    let domain = config
        .domain
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut findings = Vec::new();
    for s in r
        .streams
        .iter()
        .filter(|s| !s.primary_cluster_addr.is_empty())
    {
        let Some(host) = host_of(&s.primary_cluster_addr) else {
            continue;
        };
        if !host.ends_with(&format!(".{domain}")) {
            continue; // not one of the agent's names: stream_health judges it
        }
        let (direct, system) = (ask(dns, &host).unwrap_or_default(), system_lookup(&host));
        let what = format!(
            "{} {} stream dials {}",
            s.cluster, s.kind, s.primary_cluster_addr
        );
        findings.push(if !direct.is_empty() && direct == system {
            Finding::ok(format!(
                "{what}: resolves to {} as the agent answers",
                list(&direct)
            ))
        } else {
            Finding::fix(
                format!(
                    "{what}: the system resolver gives {}, the agent {}",
                    list(&system),
                    list(&direct)
                ),
                "that host resolves its primary's name elsewhere: fix its resolver (see above)",
            )
        });
    }
    findings
}

fn host_of(addr: &str) -> Option<String> {
    let with_scheme = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("https://{addr}")
    };
    let url = url::Url::parse(&with_scheme).ok()?;
    Some(url.host_str()?.trim_end_matches('.').to_ascii_lowercase())
}

fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "nothing".into();
    }
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// getaddrinfo, as every program on the host resolves: the IPv4 and IPv6 addresses,
/// sorted; none when it fails.
fn system_lookup(name: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = (name, 0)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

/// The A and AAAA answers of the agent's DNS listener at `dns`, sorted.
fn ask(dns: SocketAddr, name: &str) -> std::io::Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        let mut q = Message::new(0x5eed, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii(name).map_err(std::io::Error::other)?,
            qtype,
        ));
        let local = if dns.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let sock = UdpSocket::bind(local)?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.send_to(&q.to_vec().map_err(std::io::Error::other)?, dns)?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf)?;
        let reply = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
        ips.extend(reply.answers.iter().filter_map(|r| r.data.ip_addr()));
    }
    ips.sort();
    ips.dedup();
    Ok(ips)
}

fn fetch(admin: &str) -> anyhow::Result<Status> {
    let body = super::status::fetch_status(admin)?;
    Ok(serde_json::from_str(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(crate::config::EMBEDDED_DEFAULT, "t.toml").unwrap()
    }

    /// A host whose resolv.conf says `resolv`, with the drop-in `dropin` if any.
    fn host(resolv: &str, dropin: Option<&str>) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("resolv.conf"), resolv).unwrap();
        let dropins = dir.path().join("resolved.conf.d");
        std::fs::create_dir(&dropins).unwrap();
        if let Some(d) = dropin {
            std::fs::write(dropins.join("vault-locator.conf"), d).unwrap();
        }
        let host = Host {
            resolv_conf: dir.path().join("resolv.conf"),
            resolved_dropins: dropins,
        };
        (dir, host)
    }

    #[test]
    fn the_fix_names_the_resolver_and_the_missing_piece() {
        let dns: SocketAddr = "127.0.0.1:8600".parse().unwrap();
        let (_d, h) = host("nameserver 127.0.0.53\noptions edns0\n", None);
        let fix = resolver_fix(&config(), &h, dns);
        assert!(
            fix.contains("systemd-resolved") && fix.contains("no route for ~consul"),
            "{fix}"
        );
        assert!(fix.contains("DNS=127.0.0.1:8600 Domains=~consul"), "{fix}");
        let (_d, h) = host(
            "nameserver 127.0.0.53\n",
            Some("[Resolve]\nDNS=127.0.0.1:8600\nDomains=~consul\n"),
        );
        let fix = resolver_fix(&config(), &h, dns);
        assert!(fix.contains("restart systemd-resolved"), "{fix}");
        let (_d, h) = host("nameserver 10.0.0.2\n", None);
        let fix = resolver_fix(&config(), &h, dns);
        assert!(
            fix.contains("names 10.0.0.2") && fix.contains("server=/consul/127.0.0.1#8600"),
            "{fix}"
        );
    }

    #[test]
    fn nothing_running_is_a_finding_with_its_fix() {
        // The embedded default's admin and DNS addresses, with no agent behind them (a
        // test binds nothing on 127.0.0.1:9464 or :8600).
        let mut c = config();
        c.admin.listen = Some("127.0.0.1:1".parse().unwrap());
        c.dns.listen = vec!["127.0.0.1:1".parse().unwrap()];
        let (_d, h) = host("nameserver 127.0.0.53\n", None);
        let findings = examine(&c, &h);
        assert!(findings.iter().all(|f| f.fix.is_some()), "{findings:?}");
        assert!(findings[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("systemctl status vault-locator"));
        assert!(findings.len() >= 2, "the agent and its DNS: {findings:?}");
    }

    #[test]
    fn stream_hosts_are_read_from_vaults_addresses() {
        assert_eq!(
            host_of("https://Active.vault.service.perf-primary.consul.:8201").as_deref(),
            Some("active.vault.service.perf-primary.consul")
        );
        assert_eq!(host_of("10.0.0.1:8201").as_deref(), Some("10.0.0.1"));
    }
}
