//! Parsing a query name inside our zone into what it asks for, the way Consul does:
//! scan from the right for the lookup-kind label (`service`, `addr`, `node`, `query`);
//! the labels after it name the cluster, the labels before it the query.
//!
//! - `[tag.]<service>.service[.<cluster>].<domain>`
//! - `_<service>._<tag>[.service][.<cluster>].<domain>` (RFC 2782; `_tcp`/`_udp` mean no
//!   tag; Consul: "the service label is optional", and Go's `net.LookupSRV` and Java's
//!   JNDI ask without it)
//! - `<hex ip>.addr[.<cluster>].<domain>` (the SRV targets we hand out)
//!
//! The labels after the kind name the cluster (Consul's datacenter) as Consul CE's
//! `parseLabels` reads them: `<dc>`, its older `default.<dc>`, or pairs in any order of
//! `<dc>.dc` (or `<dc>.cluster`), `default.ns` and `default.ap`. Namespaces and admin
//! partitions are Consul Enterprise's and Vault registers in the default ones, so any
//! other value names nothing; cluster peers (`.peer`) and sameness groups (`.sg`) are
//! not ours either.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;
use hickory_proto::ProtoError;

/// A query name inside the zone, with the domain already stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneName {
    /// The zone apex itself.
    Apex,
    Service {
        service: String,
        tag: Tag,
        cluster: Scope,
    },
    Addr {
        ip: IpAddr,
        cluster: Scope,
    },
    /// Anything else: NXDOMAIN.
    Unknown,
}

/// Which instances a service name asks for: Vault's Consul registration tags
/// (`VAULT-CONSUL-FACTS.md`: `active` or `standby`, a perf standby
/// `performance-standby`, every unsealed node `initialized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// No tag, `initialized`, or RFC 2782's `_tcp`/`_udp`: every serving instance.
    All,
    Active,
    Standby,
    /// `performance-standby`, or its short form `perf-standby`.
    PerfStandby,
    /// A tag Vault never registers: a known name with no instance (NXDOMAIN).
    Unregistered,
}

impl Tag {
    fn from_label(label: Option<&str>) -> Tag {
        match label {
            None | Some("initialized" | "tcp" | "udp") => Tag::All,
            Some("active") => Tag::Active,
            Some("standby") => Tag::Standby,
            Some("performance-standby" | "perf-standby") => Tag::PerfStandby,
            Some(_) => Tag::Unregistered,
        }
    }
}

/// The cluster a name is about: the local one (`datacenter`) when it has no cluster
/// label, else the one it names (which may be one the agent does not know).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Local,
    Named(String),
}

impl Scope {
    /// The cluster's name, `local` standing for [`Scope::Local`].
    pub fn name<'a>(&'a self, local: &'a str) -> &'a str {
        match self {
            Scope::Local => local,
            Scope::Named(name) => name,
        }
    }
}

/// `labels`: the labels left of the domain, lower case, leftmost first.
pub fn parse(labels: &[&str]) -> ZoneName {
    if labels.is_empty() {
        return ZoneName::Apex;
    }
    let Some(kind_at) = labels
        .iter()
        .rposition(|l| matches!(*l, "service" | "addr" | "node" | "query"))
    else {
        return rfc2782_without_kind(labels);
    };
    let (parts, rest) = (&labels[..kind_at], &labels[kind_at + 1..]);
    let Some(cluster) = scope(rest) else {
        return ZoneName::Unknown;
    };
    match labels[kind_at] {
        "service" => parse_service(parts, cluster),
        "addr" => match parts {
            [hex] => match decode_addr(hex) {
                Some(ip) => ZoneName::Addr { ip, cluster },
                None => ZoneName::Unknown,
            },
            _ => ZoneName::Unknown,
        },
        // Nodes and prepared queries are not ours to answer.
        _ => ZoneName::Unknown,
    }
}

/// The labels after the lookup kind (see the module doc). `None`: not a form Consul
/// CE answers, or one about something that is not a cluster of ours.
fn scope(rest: &[&str]) -> Option<Scope> {
    let mut cluster = Scope::Local;
    match rest {
        [] => {}
        [name] => cluster = Scope::Named(name.to_string()),
        // Consul reads two labels as a pair when the second is a pair's key, else as
        // the older `<namespace>.<dc>`.
        [ns, name] if !matches!(*name, "ns" | "ap" | "dc" | "cluster" | "sg" | "peer") => {
            (*ns == "default").then_some(())?;
            cluster = Scope::Named(name.to_string());
        }
        _ if matches!(rest.len(), 2 | 4 | 6) => {
            for pair in rest.chunks(2) {
                match pair {
                    [name, "dc" | "cluster"] => cluster = Scope::Named(name.to_string()),
                    ["default", "ns" | "ap"] => {}
                    _ => return None,
                }
            }
        }
        _ => return None,
    }
    Some(cluster)
}

/// `_<service>._<tag>[.<cluster>]`: RFC 2782 without the `service` label.
fn rfc2782_without_kind(labels: &[&str]) -> ZoneName {
    match labels {
        [s, t, rest @ ..] if s.starts_with('_') && t.starts_with('_') => match scope(rest) {
            Some(cluster) => parse_service(&[s, t], cluster),
            None => ZoneName::Unknown,
        },
        _ => ZoneName::Unknown,
    }
}

fn parse_service(parts: &[&str], cluster: Scope) -> ZoneName {
    let (service, tag) = match parts {
        [service] => (*service, None),
        [s, t] if s.starts_with('_') && t.starts_with('_') => (&s[1..], Some(&t[1..])),
        [tag, service] => (*service, Some(*tag)),
        _ => return ZoneName::Unknown,
    };
    if service.is_empty() || tag == Some("") {
        return ZoneName::Unknown;
    }
    ZoneName::Service {
        service: service.to_string(),
        tag: Tag::from_label(tag),
        cluster,
    }
}

/// The label Consul uses for an address in SRV targets: 8 hex digits for IPv4,
/// 32 for IPv6.
pub fn encode_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

/// `<hex ip>.addr.<cluster>.<domain>.`, Consul's SRV target form.
pub fn addr_name(ip: IpAddr, cluster: &str, domain: &Name) -> Result<Name, ProtoError> {
    Name::from_ascii(format!("{}.addr.{cluster}", encode_addr(ip)))?.append_domain(domain)
}

/// `<label>.<domain>.` (the SOA's `ns` and `hostmaster` names).
pub fn in_domain(label: &str, domain: &Name) -> Result<Name, ProtoError> {
    Name::from_ascii(label)?.append_domain(domain)
}

/// Checks that every name the zone builds for `cluster` fits in DNS's 255 octets: the
/// longest are an IPv6 SRV target (`<32 hex>.addr.<cluster>.<domain>`) and
/// `hostmaster.<domain>`.
/// Config validation calls this, so answering never meets a name it cannot build.
pub fn check_buildable(cluster: &str, domain: &Name) -> Result<(), ProtoError> {
    in_domain("hostmaster", domain)?;
    addr_name(IpAddr::V6(Ipv6Addr::from(u128::MAX)), cluster, domain).map(drop)
}

pub fn decode_addr(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(service: &str, tag: Option<&str>, dc: Option<&str>) -> ZoneName {
        ZoneName::Service {
            service: service.into(),
            tag: Tag::from_label(tag),
            cluster: scoped(dc),
        }
    }

    fn scoped(dc: Option<&str>) -> Scope {
        dc.map_or(Scope::Local, |dc| Scope::Named(dc.into()))
    }

    #[test]
    fn consul_service_forms() {
        assert_eq!(parse(&["vault", "service"]), svc("vault", None, None));
        assert_eq!(
            parse(&["active", "vault", "service"]),
            svc("vault", Some("active"), None)
        );
        assert_eq!(
            parse(&["perf-standby", "vault", "service", "us-east-1"]),
            svc("vault", Some("perf-standby"), Some("us-east-1"))
        );
        assert_eq!(
            parse(&["_vault", "_active", "service", "dc1"]),
            svc("vault", Some("active"), Some("dc1"))
        );
        assert_eq!(
            parse(&["_vault", "_tcp", "service"]),
            svc("vault", None, None)
        );
    }

    /// The forms Consul answers beyond the classic ones (CONSUL-DNS-CONFORMANCE):
    /// RFC 2782 without `service`, and the `.dc` / namespace datacenter forms.
    #[test]
    fn consul_optional_and_newer_forms() {
        let east = Some("us-east-1");
        let cases: [(&[&str], ZoneName); 15] = [
            (&["_vault", "_tcp"], svc("vault", None, None)),
            (
                &["_vault", "_active", "dc1"],
                svc("vault", Some("active"), Some("dc1")),
            ),
            (
                &["_vault", "_tcp", "us-east-1", "dc"],
                svc("vault", None, east),
            ),
            (
                &["active", "vault", "service", "us-east-1", "dc"],
                svc("vault", Some("active"), east),
            ),
            (
                &["vault", "service", "default", "ns", "us-east-1", "dc"],
                svc("vault", None, east),
            ),
            (
                &["vault", "service", "default", "us-east-1"],
                svc("vault", None, east),
            ),
            // Consul CE's parseLabels also reads these: the default namespace or admin
            // partition without a dc, pairs in any order, `.cluster` for `.dc`.
            (
                &["vault", "service", "default", "ns"],
                svc("vault", None, None),
            ),
            (
                &["vault", "service", "default", "ap", "us-east-1", "dc"],
                svc("vault", None, east),
            ),
            (
                &[
                    "vault",
                    "service",
                    "us-east-1",
                    "dc",
                    "default",
                    "ns",
                    "default",
                    "ap",
                ],
                svc("vault", None, east),
            ),
            (
                &["vault", "service", "us-east-1", "cluster"],
                svc("vault", None, east),
            ),
            // Another namespace or partition has no vault service; a peer or sameness
            // group is not ours.
            (
                &["vault", "service", "team-a", "ap", "us-east-1", "dc"],
                ZoneName::Unknown,
            ),
            (
                &["vault", "service", "g", "sg", "default", "ns"],
                ZoneName::Unknown,
            ),
            (
                &["vault", "service", "team-a", "ns", "us-east-1", "dc"],
                ZoneName::Unknown,
            ),
            (
                &["vault", "service", "us-east-1", "peer"],
                ZoneName::Unknown,
            ),
            (&["_vault", "tcp"], ZoneName::Unknown),
        ];
        for (labels, want) in cases {
            assert_eq!(parse(labels), want, "{labels:?}");
        }
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let addr = ZoneName::Addr {
            ip,
            cluster: scoped(Some("dc1")),
        };
        assert_eq!(parse(&["0a000001", "addr", "dc1", "dc"]), addr);
    }

    #[test]
    fn other_forms_are_unknown() {
        assert_eq!(parse(&[]), ZoneName::Apex);
        assert_eq!(parse(&["vault"]), ZoneName::Unknown);
        assert_eq!(parse(&["a", "b", "vault", "service"]), ZoneName::Unknown);
        assert_eq!(
            parse(&["vault", "service", "dc1", "extra"]),
            ZoneName::Unknown
        );
        assert_eq!(parse(&["web", "node", "dc1"]), ZoneName::Unknown);
        assert_eq!(parse(&["service"]), ZoneName::Unknown);
        // Three, five or eight labels are no form (Consul reads at most three pairs);
        // two are a pair only with a pair's key.
        let eight = [
            "default", "ns", "default", "ap", "dc1", "dc", "default", "ns",
        ];
        assert_eq!(
            parse(&[&["vault", "service"], &eight[..]].concat()),
            ZoneName::Unknown
        );
        // An RFC 2782 form needs both underscores; its service cannot be empty.
        assert_eq!(
            parse(&["_vault", "active", "service"]),
            svc("active", Some("_vault"), None)
        );
        assert_eq!(parse(&["_", "_tcp", "service"]), ZoneName::Unknown);
        assert_eq!(
            parse(&["vault", "service", "a", "b", "dc"]),
            ZoneName::Unknown
        );
        assert_eq!(
            parse(&["vault", "service", "dc1", "dc", "x"]),
            ZoneName::Unknown
        );
    }

    #[test]
    fn addr_round_trip() {
        for ip in ["127.0.0.1", "10.20.30.40", "::1", "fd00::1:2"] {
            let ip: IpAddr = ip.parse().unwrap();
            let hex = encode_addr(ip);
            assert_eq!(decode_addr(&hex), Some(ip));
            assert_eq!(
                parse(&[&hex, "addr", "dc1"]),
                ZoneName::Addr {
                    ip,
                    cluster: scoped(Some("dc1"))
                }
            );
        }
        assert_eq!(encode_addr("127.0.0.1".parse().unwrap()), "7f000001");
        assert_eq!(decode_addr("7f00001"), None);
        assert_eq!(decode_addr("zz000001"), None);
    }

    #[test]
    fn names_that_do_not_fit_are_errors_not_panics() {
        let short = Name::from_ascii("consul.").unwrap();
        assert!(check_buildable("us-east-1", &short).is_ok());
        // 4 labels of 60 plus dots: a valid 244-octet domain, too long to prefix.
        let long = Name::from_ascii(format!("{0}.{0}.{0}.{0}.", "a".repeat(60))).unwrap();
        assert!(check_buildable("dc1", &long).is_err());
        assert!(in_domain("hostmaster", &long).is_err());
        assert!(addr_name("::1".parse().unwrap(), "dc1", &long).is_err());
    }
}
