//! The UDP answer path (`dns::udp::Responder`: answer cache, then the handler) on
//! arbitrary datagrams, over a spread of configs and view states: the longest domain
//! check-config accepts, many static records, upstreams, proxy mode; a cluster with a
//! leader, IPv6 members, no leader, a stale view, no view at all, a load-balanced peer.
//! Never a panic; a datagram asked twice gets an answer of the same length (the cache
//! only patches the ID and reshuffles).
//!
//! The first byte picks the scenario, the rest is the datagram.
#![no_main]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use tokio::sync::watch;
use vault_locator::config::Config;
use vault_locator::dns::forward::Forwarder;
use vault_locator::dns::handler::Handler;
use vault_locator::dns::udp::{Responder, Response};
use vault_locator::dns::zone::Zone;
use vault_locator::vault::feed::ClusterFeed;
use vault_locator::vault::view::{ClusterView, Leader, Member, NoLeader, Role};

/// Both configs' clusters: dc1 on IPv4, dc2 on IPv6.
const CLUSTERS: &str = r#"
[[clusters]]
name = "dc1"
nodes = ["http://10.0.0.1:8200", "http://10.0.0.2:8200", "http://10.0.0.3:8200"]
[[clusters]]
name = "dc2"
nodes = ["http://[fd00::1]:8200", "http://[fd00::2]:8200"]
"#;

const CONFIGS: [&str; 2] = [
    r#"
datacenter = "dc1"
[dns]
listen = ["127.0.0.1:8600"]
[[dns.records]]
name = "vault.example.internal"
a = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
aaaa = ["fd00::1"]
[[dns.records]]
name = "alias.consul"
cname = "vault.example.internal"
"#,
    // The longest domain accepted (three 60-octet labels), upstreams, proxy mode.
    r#"
datacenter = "dc1"
domain = "DOMAIN"
[dns]
listen = ["127.0.0.1:8600"]
upstreams = ["127.0.0.1:53"]
[[proxy]]
cluster = "dc1"
listen = "127.0.0.2:8201"
answer = true
"#,
];

fn member(ip: &str, role: Role) -> Member {
    let ip: IpAddr = ip.parse().unwrap();
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    Member {
        url: format!("http://{host}:8200").parse().unwrap(),
        addrs: vec![ip],
        port: 8200,
        role,
        replication: Default::default(),
        last_confirmed: Some(SystemTime::now()),
        error: None,
    }
}

/// The view states, for a cluster whose members are `ips`.
fn views(name: &str, ips: &[&str]) -> Vec<ClusterView> {
    let led = {
        let mut v = ClusterView::empty(name, false);
        v.members = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| member(ip, if i == 0 { Role::Active } else { Role::Standby }))
            .collect();
        v.leader = Some(Leader::literal(
            v.members[0].url.as_str(),
            "",
            v.members[0].addrs.clone(),
            8200,
        ));
        v.last_confirmed = Some(Instant::now());
        v
    };
    let leaderless = ClusterView {
        leader: None,
        no_leader: Some(NoLeader::Unheard {
            unheard: 2,
            configured: 3,
        }),
        ..led.clone()
    };
    let stale = ClusterView {
        stale: true,
        ..led.clone()
    };
    let load_balanced = ClusterView {
        load_balanced: true,
        ..led.clone()
    };
    vec![
        led,
        leaderless,
        stale,
        ClusterView::empty(name, false),
        load_balanced,
    ]
}

struct Scenario {
    responder: Mutex<Responder>,
    /// Kept so the receivers stay open.
    _senders: Vec<watch::Sender<Arc<ClusterView>>>,
}

fn scenarios() -> &'static Vec<Scenario> {
    static ALL: OnceLock<Vec<Scenario>> = OnceLock::new();
    ALL.get_or_init(|| {
        let domain = vec!["d".repeat(60); 3].join(".");
        let mut all = Vec::new();
        for text in CONFIGS {
            let text = format!("{text}{CLUSTERS}").replace("DOMAIN", &domain);
            let config = Config::parse(&text, "fuzz.toml")
                .expect("the fuzz configs are valid");
            let dc1 = views("dc1", &["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
            let dc2 = views("dc2", &["fd00::1", "fd00::2"]);
            for state in 0..dc1.len() {
                let mut senders = Vec::new();
                let mut clusters = HashMap::new();
                // A replication set's virtual datacenters: one following dc1, one with
                // no primary (a fresh view without members).
                let mut no_primary = ClusterView::empty("dr-primary", false);
                no_primary.last_confirmed = Some(std::time::Instant::now());
                for (name, view) in [
                    ("dc1", &dc1[state]),
                    ("dc2", &dc2[(state + 1) % dc2.len()]),
                    ("perf-primary", &dc1[state]),
                    ("dr-primary", &no_primary),
                ] {
                    let mut view = view.clone();
                    view.serve_stale_for = Duration::from_secs(3600);
                    let (tx, rx) = watch::channel(Arc::new(view));
                    senders.push(tx);
                    clusters.insert(name.to_string(), ClusterFeed::new(rx));
                }
                let zone = Arc::new(Zone::new(&config.zone(), clusters));
                let forwarder = (!config.dns.upstreams.is_empty()).then(|| {
                    Forwarder::new(&config.dns.upstreams, Duration::from_secs(1)).unwrap()
                });
                all.push(Scenario {
                    responder: Mutex::new(Responder::new(Arc::new(Handler::new(zone, forwarder)))),
                    _senders: senders,
                });
            }
        }
        all
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let all = scenarios();
    let mut responder = all[usize::from(pick) % all.len()].responder.lock().unwrap();
    let mut reply_len = || match responder.respond(datagram) {
        Response::Reply { bytes, .. } => Some(bytes.len()),
        Response::Drop | Response::Forward(_) => None,
    };
    let first = reply_len();
    assert_eq!(first, reply_len(), "asked twice, answered differently");
});
