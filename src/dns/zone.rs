//! The authoritative data: static records plus the vault service answers read from
//! each cluster's current `ClusterView`, with Consul's rules for what each case returns.
//! The table of cases is in the README ("Names"); differences from Consul in
//! docs/conformance.md.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;

use super::names::{self, Scope, Tag, ZoneName};
use crate::vault::feed::{ClusterFeed, Feeds};
use crate::vault::view::{ClusterView, Role};

/// A computed answer, before it is put on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The records are in a random order (several instances of the service).
    pub shuffled: bool,
}

impl Answer {
    /// An answer with `rcode` and no records yet.
    pub fn empty(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
            shuffled: false,
        }
    }
}

/// What the zone answers besides the clusters' views, as `config` validates it.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    /// The zone, lower case, fully qualified.
    pub domain: Name,
    /// The cluster that names without a cluster label refer to.
    pub local_cluster: String,
    pub ttl: Duration,
    pub records: Vec<StaticRecord>,
    /// Clusters whose `active` answers a local proxy listener ("proxy mode"): the
    /// address answered (the API side's, else the listener's own).
    pub proxy_answers: HashMap<String, SocketAddr>,
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

/// Everything the server answers authoritatively.
pub struct Zone {
    domain: Name,
    local_cluster: String,
    ttl: u32,
    statics: HashMap<Name, StaticRecord>,
    feeds: Feeds,
    /// Clusters whose `active` answers a local proxy listener ("proxy mode"): its IP,
    /// and the API side's port for SRV (the vault service's port is the API port), or
    /// the listener's own when it has no API side.
    proxy_answers: HashMap<String, SocketAddr>,
    /// The SOA's `ns.<domain>` and `hostmaster.<domain>`, built once.
    soa_names: (Name, Name),
}

/// One healthy instance of the vault service: address and API port.
type Instance = (IpAddr, u16);

impl Zone {
    /// Every cluster's feed: the zone's answers change only when one does
    /// (and with the clock, see `dns::cache`).
    pub fn feeds(&self) -> Vec<ClusterFeed> {
        self.feeds.values().cloned().collect()
    }

    pub fn new(config: &ZoneConfig, feeds: Feeds) -> Self {
        // Validation checked that these fit (`names::check_buildable`); the fallback to
        // the apex keeps a config that somehow got past it answering instead of panicking.
        let in_domain =
            |l| names::in_domain(l, &config.domain).unwrap_or_else(|_| config.domain.clone());
        Self {
            soa_names: (in_domain("ns"), in_domain("hostmaster")),
            domain: config.domain.clone(),
            local_cluster: config.local_cluster.clone(),
            ttl: ttl_secs(config.ttl),
            statics: config
                .records
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
            feeds,
            proxy_answers: config.proxy_answers.clone(),
        }
    }

    /// Answers `qname` (as asked, any case) if it is ours: a static record or a name in
    /// the zone. `None` means the name is outside what we serve.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        let mut lower = qname.to_lowercase();
        lower.set_fqdn(true);
        if let Some(rec) = self.statics.get(&lower) {
            let mut answer = self.static_answer(qname, rec, qtype);
            if answer.answers.is_empty() && self.domain.zone_of(&lower) {
                answer.authority.push(self.soa());
            }
            return Some(answer);
        }
        if !self.domain.zone_of(&lower) {
            return None;
        }
        let labels = self.labels(&lower);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        Some(match names::parse(&labels) {
            ZoneName::Apex => match qtype {
                RecordType::SOA => Answer {
                    answers: vec![self.soa()],
                    ..Answer::empty(ResponseCode::NoError)
                },
                _ => self.negative(ResponseCode::NoError),
            },
            ZoneName::Service {
                service,
                tag,
                cluster,
            } => self.service_answer(qname, &service, tag, &cluster, qtype),
            ZoneName::Addr { ip, cluster } => {
                if !self.knows(&cluster) {
                    return Some(self.negative(ResponseCode::NXDomain));
                }
                let rdata = match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                        Some(RData::AAAA(AAAA(v6)))
                    }
                    _ => None,
                };
                match rdata {
                    Some(r) => Answer {
                        answers: vec![Record::from_rdata(qname.clone(), self.ttl, r)],
                        ..Answer::empty(ResponseCode::NoError)
                    },
                    None => self.negative(ResponseCode::NoError),
                }
            }
            ZoneName::Unknown => self.negative(ResponseCode::NXDomain),
        })
    }

    /// Whether `qname` is inside the zone (static records outside it are answered,
    /// but are not "in the zone").
    pub fn contains(&self, qname: &Name) -> bool {
        self.domain.zone_of(&qname.to_lowercase())
    }

    /// Whether this agent answers `qname` (in the zone) itself: the apex, a static
    /// record, a vault service name or an address label of a cluster it knows. The
    /// rest of the zone is someone else's (a Consul agent's, during a migration):
    /// with `dns.zone_fallback` it is forwarded there, without it NXDOMAIN.
    pub fn owns(&self, qname: &Name) -> bool {
        let mut lower = qname.to_lowercase();
        lower.set_fqdn(true);
        if self.statics.contains_key(&lower) {
            return true;
        }
        let labels = self.labels(&lower);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        match names::parse(&labels) {
            ZoneName::Apex => true,
            ZoneName::Service {
                service, cluster, ..
            } => service == "vault" && self.knows(&cluster),
            ZoneName::Addr { cluster, .. } => self.knows(&cluster),
            ZoneName::Unknown => false,
        }
    }

    /// The labels of `lower` (in the zone) left of the domain, leftmost first.
    fn labels(&self, lower: &Name) -> Vec<String> {
        let inside =
            (lower.num_labels() as usize).saturating_sub(self.domain.num_labels() as usize);
        lower
            .iter()
            .take(inside)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn knows(&self, cluster: &Scope) -> bool {
        self.feeds.contains_key(cluster.name(&self.local_cluster))
    }

    fn service_answer(
        &self,
        qname: &Name,
        service: &str,
        tag: Tag,
        cluster: &Scope,
        qtype: RecordType,
    ) -> Answer {
        let cluster = cluster.name(&self.local_cluster);
        let Some(feed) = self.feeds.get(cluster) else {
            return self.negative(ResponseCode::NXDomain);
        };
        if service != "vault" {
            return self.negative(ResponseCode::NXDomain);
        }
        let Some(view) = feed.usable() else {
            return Answer::empty(ResponseCode::ServFail);
        };
        if view.members.is_empty() && view.leader.is_none() {
            // A replication set's virtual cluster with no primary: nothing under it
            // exists, not even the proxy's stand-in (a real cluster always has members).
            return self.negative(ResponseCode::NXDomain);
        }
        let Some(mut instances) = self.instances(&view, cluster, tag) else {
            return self.negative(ResponseCode::NXDomain);
        };
        if instances.is_empty() {
            // Consul: a known service with no healthy instance is NXDOMAIN.
            return self.negative(ResponseCode::NXDomain);
        }
        instances.shuffle(&mut rand::rng());
        let answer = self.records(qname, cluster, &instances, qtype);
        if answer.answers.is_empty() {
            // The name exists, but has no record of this type (AAAA with only IPv4).
            return self.negative(ResponseCode::NoError);
        }
        answer
    }

    /// The instances a tag selects, each once, in the view's order; `None` for a tag
    /// Vault does not register.
    fn instances(&self, view: &ClusterView, cluster: &str, tag: Tag) -> Option<Vec<Instance>> {
        let leader = view
            .leader
            .iter()
            .flat_map(|l| l.addrs.iter().map(|a| (*a, l.port)));
        let of_role = |role: Role| {
            view.members_with_tag(role)
                .flat_map(|m| m.addrs.iter().map(|a| (*a, m.port)))
        };
        let proxy = self.proxy_answers.get(cluster).map(|l| (l.ip(), l.port()));
        let mut instances: Vec<Instance> = match tag {
            // Proxy mode: the local listener stands for the active node, answered as long
            // as the view is usable; the proxy refuses at once while no leader is known.
            Tag::Active if proxy.is_some() => proxy.into_iter().collect(),
            Tag::Active => leader.collect(),
            Tag::Standby => of_role(Role::Standby).collect(),
            Tag::PerfStandby => of_role(Role::PerfStandby).collect(),
            Tag::All => leader
                .chain(of_role(Role::Active))
                .chain(of_role(Role::Standby))
                .chain(of_role(Role::PerfStandby))
                .collect(),
            Tag::Unregistered => return None,
        };
        let mut seen = Vec::with_capacity(instances.len());
        instances.retain(|i| {
            let fresh = !seen.contains(i);
            seen.push(*i);
            fresh
        });
        Some(instances)
    }

    /// The records of `qtype` for `instances`: SRV with its target's address as glue,
    /// or the addresses themselves.
    fn records(
        &self,
        qname: &Name,
        cluster: &str,
        instances: &[Instance],
        qtype: RecordType,
    ) -> Answer {
        let mut answer = Answer::empty(ResponseCode::NoError);
        answer.shuffled = instances.len() > 1;
        for (ip, port) in instances {
            match qtype {
                RecordType::SRV => {
                    // Validation keeps every target buildable; one that is not is
                    // left out rather than answered wrong.
                    let Ok(target) = names::addr_name(*ip, cluster, &self.domain) else {
                        continue;
                    };
                    answer.answers.push(Record::from_rdata(
                        qname.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(1, 1, *port, target.clone())),
                    ));
                    answer
                        .additionals
                        .push(Record::from_rdata(target, self.ttl, ip_rdata(*ip)));
                }
                RecordType::A | RecordType::AAAA | RecordType::ANY => {
                    let matches = match ip {
                        IpAddr::V4(_) => qtype != RecordType::AAAA,
                        IpAddr::V6(_) => qtype != RecordType::A,
                    };
                    if matches {
                        let rdata = ip_rdata(*ip);
                        answer
                            .answers
                            .push(Record::from_rdata(qname.clone(), self.ttl, rdata));
                    }
                }
                _ => {}
            }
        }
        answer
    }

    fn static_answer(&self, qname: &Name, rec: &StaticRecord, qtype: RecordType) -> Answer {
        let ttl = rec.ttl.map(ttl_secs).unwrap_or(self.ttl);
        let mut answer = Answer::empty(ResponseCode::NoError);
        let mut push = |rdata| {
            answer
                .answers
                .push(Record::from_rdata(qname.clone(), ttl, rdata))
        };
        if let Some(target) = &rec.cname {
            // A CNAME answers every type; the client chases it.
            push(RData::CNAME(CNAME(target.clone())));
        } else {
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                rec.a.iter().for_each(|ip| push(RData::A(A(*ip))));
            }
            if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                rec.aaaa.iter().for_each(|ip| push(RData::AAAA(AAAA(*ip))));
            }
        }
        answer
    }

    fn negative(&self, rcode: ResponseCode) -> Answer {
        Answer {
            authority: vec![self.soa()],
            ..Answer::empty(rcode)
        }
    }

    /// Consul's SOA: `ns.<domain> hostmaster.<domain> <unix time> 3600 600 86400 0`,
    /// with TTL = minimum = 0 so negative answers are not cached.
    fn soa(&self) -> Record {
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        Record::from_rdata(
            self.domain.clone(),
            0,
            RData::SOA(SOA::new(
                self.soa_names.0.clone(),
                self.soa_names.1.clone(),
                serial,
                3600,
                600,
                86400,
                0,
            )),
        )
    }
}

fn ip_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn ttl_secs(d: std::time::Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}

/// The README's "Names" table, row by row, against a zone with one cluster of
/// every member kind, a cluster with no view yet, and a replication set's virtual
/// clusters (one following `dc1`, one with no primary).
#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{Name, RData, RecordType};
    use tokio::sync::watch;

    use super::{Answer, Zone};
    use crate::config::Config;
    use crate::vault::feed::ClusterFeed;
    use crate::vault::view::{ClusterView, Leader, Member, Role};

    /// The embedded default's dc1, a dc2, and one static record.
    fn config() -> Config {
        let text = format!(
            "{}[[clusters]]\nname = \"dc2\"\nnodes = [\"http://10.0.1.1:8200\"]\n\
             [[dns.records]]\nname = \"nomad.service.consul\"\na = [\"127.0.0.9\"]\n",
            crate::config::EMBEDDED_DEFAULT
        );
        Config::parse(&text, "t").unwrap()
    }

    fn member(ip: &str, role: Role) -> Member {
        Member {
            url: format!("http://{ip}:8200").parse().unwrap(),
            addrs: vec![ip.parse().unwrap()],
            port: 8200,
            role,
            replication: Default::default(),
            last_confirmed: Some(SystemTime::now()),
            error: None,
        }
    }

    fn dc1() -> ClusterView {
        let mut v = ClusterView::empty("dc1", false);
        v.last_confirmed = Some(Instant::now());
        v.leader = Some(Leader::literal(
            "http://10.0.0.1:8200",
            "https://10.0.0.1:8201",
            vec!["10.0.0.1".parse().unwrap()],
            8200,
        ));
        v.members = vec![
            member("10.0.0.1", Role::Active),
            member("10.0.0.2", Role::Standby),
            member("10.0.0.3", Role::PerfStandby),
            member("10.0.0.4", Role::Sealed),
            member("10.0.0.5", Role::Unreachable),
        ];
        v
    }

    /// The zone, and the senders that keep its feeds open.
    fn zone() -> (Zone, Vec<watch::Sender<Arc<ClusterView>>>) {
        let config = config();
        let mut no_primary = ClusterView::empty("dr-primary", false);
        no_primary.last_confirmed = Some(Instant::now());
        let views = [
            ("dc1", dc1()),
            ("dc2", ClusterView::empty("dc2", false)),
            ("perf-primary", dc1()),
            ("dr-primary", no_primary),
        ];
        let mut senders = Vec::new();
        let mut feeds = std::collections::HashMap::new();
        for (name, view) in views {
            let (tx, rx) = watch::channel(Arc::new(view));
            senders.push(tx);
            feeds.insert(name.to_string(), ClusterFeed::new(rx));
        }
        (Zone::new(&config.zone(), feeds), senders)
    }

    fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Option<Answer> {
        zone.answer(&Name::from_ascii(name).unwrap(), qtype)
    }

    /// The answer's addresses (A/AAAA), sorted, and SRV (port, target) pairs.
    fn ips(a: &Answer) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = a.answers.iter().filter_map(|r| r.data.ip_addr()).collect();
        v.sort();
        v
    }

    fn has_soa(a: &Answer) -> bool {
        a.authority
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    }

    fn ip_list(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|i| i.parse().unwrap()).collect()
    }

    #[test]
    fn the_readme_answer_table() {
        use RecordType::{A, AAAA, ANY, SOA, TXT};
        use ResponseCode::{NXDomain, NoError, ServFail};
        let (zone, _senders) = zone();
        // (query, type, rcode, addresses answered, SOA in authority)
        let rows: &[(&str, RecordType, ResponseCode, &[&str], bool)] = &[
            (
                "active.vault.service.consul.",
                A,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            (
                "active.vault.service.dc1.consul.",
                A,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            (
                "ACTIVE.Vault.Service.DC1.Consul.",
                A,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            (
                "_vault._active.service.dc1.consul.",
                A,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            (
                "standby.vault.service.consul.",
                A,
                NoError,
                &["10.0.0.2"],
                false,
            ),
            (
                "perf-standby.vault.service.consul.",
                A,
                NoError,
                &["10.0.0.3"],
                false,
            ),
            (
                "performance-standby.vault.service.consul.",
                A,
                NoError,
                &["10.0.0.3"],
                false,
            ),
            // Leader + standbys + perf standbys; never sealed or unreachable nodes.
            (
                "vault.service.consul.",
                A,
                NoError,
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                false,
            ),
            (
                "initialized.vault.service.consul.",
                A,
                NoError,
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                false,
            ),
            (
                "_vault._tcp.service.consul.",
                A,
                NoError,
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                false,
            ),
            (
                "0a000001.addr.dc1.consul.",
                A,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            // AAAA with only IPv4: NOERROR, empty, SOA.
            ("active.vault.service.consul.", AAAA, NoError, &[], true),
            (
                "active.vault.service.consul.",
                ANY,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            // A known tag with no instance; unknown tag, service, dc, forms.
            (
                "active.vault.service.dr-primary.consul.",
                A,
                NXDomain,
                &[],
                true,
            ),
            ("bogus.vault.service.consul.", A, NXDomain, &[], true),
            ("active.nomad.service.dc1.consul.", A, NXDomain, &[], true),
            ("active.vault.service.dc9.consul.", A, NXDomain, &[], true),
            ("foo.node.consul.", A, NXDomain, &[], true),
            ("foo.query.consul.", A, NXDomain, &[], true),
            // The apex.
            ("consul.", SOA, NoError, &[], false),
            ("consul.", TXT, NoError, &[], true),
            // A cluster with no view yet.
            ("active.vault.service.dc2.consul.", A, ServFail, &[], false),
            ("vault.service.dc2.consul.", A, ServFail, &[], false),
            // Static records.
            ("nomad.service.consul.", A, NoError, &["127.0.0.9"], false),
            ("nomad.service.consul.", AAAA, NoError, &[], true),
            // A replication set's virtual cluster: the primary's answers.
            (
                "active.vault.service.perf-primary.consul.",
                A,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            (
                "standby.vault.service.perf-primary.consul.",
                A,
                NoError,
                &["10.0.0.2"],
                false,
            ),
            (
                "0a000001.addr.perf-primary.consul.",
                A,
                NoError,
                &["10.0.0.1"],
                false,
            ),
            ("vault.service.dr-primary.consul.", A, NXDomain, &[], true),
        ];
        for (name, qtype, rcode, want, soa) in rows {
            let a = ask(&zone, name, *qtype).unwrap_or_else(|| panic!("{name} is ours"));
            assert_eq!(a.rcode, *rcode, "{name} {qtype}");
            assert_eq!(ips(&a), ip_list(want), "{name} {qtype}");
            assert_eq!(has_soa(&a), *soa, "{name} {qtype}: SOA in authority");
            assert!(a.answers.iter().all(|r| r.ttl == 0), "{name}: TTL 0");
        }
        // Outside the zone: not ours (the handler answers REFUSED or forwards).
        assert!(ask(&zone, "example.com.", A).is_none());
    }

    /// The apex SOA is in the answer section; an IPv6 `.addr` label answers its AAAA
    /// (and no A); the zone says which names are inside it, in any case; and it hands
    /// every cluster's feed to the answer caches.
    #[test]
    fn the_apex_ipv6_addr_names_the_zone_and_its_feeds() {
        let (zone, _senders) = zone();
        let soa = ask(&zone, "consul.", RecordType::SOA).unwrap();
        assert_eq!(soa.answers.len(), 1);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let label = format!("{}.addr.dc1.consul.", super::names::encode_addr(v6));
        assert_eq!(
            ips(&ask(&zone, &label, RecordType::AAAA).unwrap()),
            vec![v6]
        );
        let a = ask(&zone, &label, RecordType::A).unwrap();
        assert!(
            a.answers.is_empty() && has_soa(&a),
            "no A for an IPv6 label"
        );
        let name = |n: &str| Name::from_ascii(n).unwrap();
        assert!(zone.contains(&name("nomad.service.consul.")));
        assert!(zone.contains(&name("Nomad.Service.CONSUL.")));
        assert!(!zone.contains(&name("example.org.")));
        assert_eq!(zone.feeds().len(), 4, "dc1, dc2 and both virtual clusters");
    }

    /// A cluster between leaders still lists its standbys; `active` has nothing.
    #[test]
    fn a_leaderless_cluster_still_answers_its_standbys() {
        let (zone, senders) = zone();
        let mut leaderless = dc1();
        leaderless.leader = None;
        senders[0].send_replace(Arc::new(leaderless));
        let standby = ask(&zone, "standby.vault.service.dc1.consul.", RecordType::A).unwrap();
        assert_eq!(ips(&standby), ip_list(&["10.0.0.2"]));
        let active = ask(&zone, "active.vault.service.dc1.consul.", RecordType::A).unwrap();
        assert_eq!(active.rcode, ResponseCode::NXDomain);
    }

    /// In proxy mode (`answer = true`) `active` is the proxy's listener, the other tags
    /// the real nodes.
    #[test]
    fn proxy_mode_answers_active_with_the_listener() {
        let config = Config::parse(&crate::config::with_proxy("answer = true"), "t").unwrap();
        let (_tx, rx) = watch::channel(Arc::new(dc1()));
        let feeds = crate::vault::feed::Feeds::from([("dc1".to_string(), ClusterFeed::new(rx))]);
        let zone = Zone::new(&config.zone(), feeds);
        let active = ask(&zone, "active.vault.service.dc1.consul.", RecordType::A).unwrap();
        assert_eq!(ips(&active), ip_list(&["127.77.0.1"]));
        let standby = ask(&zone, "standby.vault.service.dc1.consul.", RecordType::A).unwrap();
        assert_eq!(ips(&standby), ip_list(&["10.0.0.2"]));
    }

    /// A leader on IPv6 answers AAAA, not A; records carry `dns.ttl`.
    #[test]
    fn an_ipv6_leader_answers_aaaa_with_the_configured_ttl() {
        let mut zone_config = config().zone();
        zone_config.ttl = std::time::Duration::from_secs(30);
        let mut v6 = dc1();
        let addr: IpAddr = "fd00::1".parse().unwrap();
        v6.leader = Some(Leader::literal(
            "http://[fd00::1]:8200",
            "",
            vec![addr],
            8200,
        ));
        let (_tx, rx) = watch::channel(Arc::new(v6));
        let feeds = crate::vault::feed::Feeds::from([("dc1".to_string(), ClusterFeed::new(rx))]);
        let zone = Zone::new(&zone_config, feeds);
        let aaaa = ask(&zone, "active.vault.service.consul.", RecordType::AAAA).unwrap();
        assert_eq!(ips(&aaaa), vec![addr]);
        assert!(aaaa.answers.iter().all(|r| r.ttl == 30), "dns.ttl");
        let a = ask(&zone, "active.vault.service.consul.", RecordType::A).unwrap();
        assert!(
            a.answers.is_empty() && has_soa(&a),
            "no A for an IPv6 leader"
        );
    }

    /// What the agent owns in its zone (the rest goes to `zone_fallback`, a Consul
    /// agent's during a migration): the apex, its static records, the vault service
    /// and `.addr` names of the clusters it knows; not other services, nodes, clusters.
    #[test]
    fn the_zone_owns_only_its_own_names() {
        let (zone, _senders) = zone();
        let owns = |n: &str| zone.owns(&Name::from_ascii(n).unwrap());
        for ours in [
            "consul.",
            "nomad.service.consul.",
            "active.vault.service.consul.",
            "Vault.Service.DC2.consul.",
            "0a000001.addr.perf-primary.consul.",
        ] {
            assert!(owns(ours), "{ours}");
        }
        for theirs in [
            "web.service.consul.",
            "n1.node.consul.",
            "vault.service.dc9.consul.",
            "0a000001.addr.dc9.consul.",
        ] {
            assert!(!owns(theirs), "{theirs}");
        }
    }

    #[test]
    fn srv_names_the_api_port_and_an_addr_target_with_glue() {
        let (zone, _senders) = zone();
        let a = ask(&zone, "active.vault.service.consul.", RecordType::SRV).unwrap();
        let [srv] = a.answers.as_slice() else {
            panic!("one SRV: {a:?}")
        };
        let RData::SRV(srv) = &srv.data else {
            panic!("{srv:?}")
        };
        assert_eq!((srv.priority, srv.weight, srv.port), (1, 1, 8200));
        assert_eq!(srv.target.to_string(), "0a000001.addr.dc1.consul.");
        assert_eq!(a.additionals.len(), 1);
        assert_eq!(
            a.additionals[0].name.to_string(),
            "0a000001.addr.dc1.consul."
        );
        let a = ask(&zone, "vault.service.perf-primary.consul.", RecordType::SRV).unwrap();
        assert_eq!(a.answers.len(), 3);
        assert!(a.shuffled, "several instances: shuffled");
        assert!(a
            .additionals
            .iter()
            .all(|r| r.name.to_string().ends_with(".addr.perf-primary.consul.")));
    }
}
