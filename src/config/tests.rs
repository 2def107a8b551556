//! The config's rules, each by the error it gives.

use std::net::Ipv4Addr;
use std::time::Duration;

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

/// The issue's example with `from` replaced by `to`, rejected.
fn change(from: &str, to: &str) -> ConfigError {
    parse_err(&ISSUE_EXAMPLE.replace(from, to))
}

fn parse_err(text: &str) -> ConfigError {
    Config::parse(text, "test.toml").expect_err("config should be rejected")
}

#[test]
fn issue_example_is_accepted_as_written() {
    let c = Config::parse(ISSUE_EXAMPLE, "x.toml").unwrap();
    assert_eq!(c.local_cluster, "us-east-1");
    assert_eq!(c.domain.to_string(), "consul.");
    assert_eq!(c.dns.listen, vec!["127.0.0.1:8600".parse().unwrap()]);
    assert_eq!(c.clusters.len(), 2);
    assert_eq!(c.clusters[0].poll_interval, Duration::from_millis(250));
    assert_eq!(c.clusters[1].poll_interval, Duration::from_secs(1));
    assert_eq!(c.dns.records[0].name.to_string(), "nomad.service.consul.");
    assert_eq!(c.dns.records[0].a, vec![Ipv4Addr::new(127, 0, 0, 9)]);
}

#[test]
fn failover_polling_defaults_to_50ms_250ms_behind_a_load_balancer_or_the_poll_interval() {
    let c = Config::parse(ISSUE_EXAMPLE, "x.toml").unwrap();
    assert_eq!(
        c.clusters[0].failover_poll_interval,
        Duration::from_millis(50)
    );
    assert_eq!(c.clusters[0].failover_poll_for, Duration::from_secs(30));
    let peer = ISSUE_EXAMPLE.replace(
        "poll_interval = \"250ms\"",
        "poll_interval = \"1s\"\nload_balanced = true",
    );
    let c = Config::parse(&peer, "x.toml").unwrap();
    assert!(c.clusters[0].load_balanced);
    assert_eq!(
        c.clusters[0].failover_poll_interval,
        Duration::from_millis(250)
    );
    let quick = ISSUE_EXAMPLE.replace("\"250ms\"", "\"20ms\"");
    let c = Config::parse(&quick, "x.toml").unwrap();
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
    let e = change(
        "poll_interval = \"250ms\"",
        "poll_interval = \"250ms\"\nfailover_poll_interval = \"1s\"",
    );
    assert_eq!(e.key, "clusters[0].failover_poll_interval", "{e}");
    assert!(e.reason.contains("must not exceed poll_interval"), "{e}");
    let e = change(
        "poll_interval = \"250ms\"",
        "poll_interval = \"250ms\"\nfailover_poll_interval = \"1ms\"",
    );
    assert_eq!(e.key, "clusters[0].failover_poll_interval", "{e}");
}

#[test]
fn embedded_default_matches_the_contract() {
    let c = Config::embedded_default();
    assert_eq!(c.local_cluster, "dc1");
    assert_eq!(c.clusters[0].nodes[0].as_str(), "http://127.0.0.1:8200/");
    assert_eq!(c.dns.listen, vec!["127.0.0.1:8600".parse().unwrap()]);
}

#[test]
fn unknown_key_names_its_path() {
    let e = change("poll_interval", "poll_intervall");
    assert_eq!(e.file, "test.toml");
    assert!(e.key.starts_with("clusters[0]"), "{e}");
    assert!(e.reason.contains("poll_intervall"), "{e}");
}

#[test]
fn bad_addresses_are_named() {
    let cases = [
        ("127.0.0.1:8600", "127.0.0.1", "dns.listen[0]"),
        ("http://127.0.0.2:8200", "ftp://x", "clusters[0].nodes[1]"),
        ("127.0.0.9", "300.1.1.1", "dns.records[0].a[0]"),
        (
            "upstreams = []",
            "upstreams = [\"dns.google\"]",
            "dns.upstreams[0]",
        ),
        ("ttl = \"0s\"", "ttl = \"soon\"", "dns.ttl"),
    ];
    for (from, to, key) in cases {
        assert_eq!(change(from, to).key, key, "{from} -> {to}");
    }
}

#[test]
fn duplicate_datacenters_are_rejected() {
    let e = change("name = \"us-west-2\"", "name = \"US-EAST-1\"");
    assert_eq!(e.key, "clusters[1].name");
    assert!(e.reason.contains("twice"), "{e}");
}

#[test]
fn node_under_served_domain_is_rejected() {
    let e = change(
        "http://127.0.1.1:8200",
        "http://active.vault.service.us-west-2.consul:8200",
    );
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
    let e = change("nodes = [\"http://127.0.1.1:8200\"]", "nodes = []");
    assert_eq!(e.key, "clusters[1].nodes");
}

#[test]
fn cluster_port_defaults_to_vaults_and_must_be_a_port() {
    let c = Config::parse(ISSUE_EXAMPLE, "x.toml").unwrap();
    assert_eq!(c.clusters[0].cluster_port, 8201);
    let with = |port: &str| {
        ISSUE_EXAMPLE.replace(
            "poll_interval = \"250ms\"",
            &format!("poll_interval = \"250ms\"\ncluster_port = {port}"),
        )
    };
    let c = Config::parse(&with("8301"), "x.toml").unwrap();
    assert_eq!(c.clusters[0].cluster_port, 8301);
    let e = parse_err(&with("0"));
    assert_eq!(e.key, "clusters[0].cluster_port");
    let e = parse_err(&with("70000"));
    assert!(e.key.contains("cluster_port"), "{e}");
}

#[test]
fn datacenter_must_name_a_cluster() {
    let e = change("datacenter = \"us-east-1\"", "datacenter = \"eu\"");
    assert_eq!(e.key, "datacenter");
}

#[test]
fn upstream_loop_is_rejected() {
    let e = change("upstreams = []", "upstreams = [\"127.0.0.1:8600\"]");
    assert!(e.reason.contains("loop"), "{e}");
}

#[test]
fn static_record_rules() {
    let e = change("a = [\"127.0.0.9\"]", "");
    assert_eq!(e.key, "dns.records[0].name");
    let e = change(
        "a = [\"127.0.0.9\"]",
        "a = [\"127.0.0.9\"]\ncname = \"x.example.\"",
    );
    assert_eq!(e.key, "dns.records[0].cname");
    let e = change("nomad.service.consul", "active.vault.service.consul");
    assert!(e.reason.contains("shadow"), "{e}");
    // Every form the zone answers for the vault service, the optional ones too.
    for name in ["_vault._tcp.consul", "vault.service.us-east-1.dc.consul"] {
        let e = change("nomad.service.consul", name);
        assert!(e.reason.contains("shadow"), "{name}: {e}");
    }
}

#[test]
fn missing_required_key_is_named() {
    let e = parse_err("[dns]\nlisten = [\"127.0.0.1:53\"]\n");
    assert_eq!(
        (e.key.as_str(), e.reason.contains("required")),
        ("datacenter", true),
        "{e}"
    );
    // Inside a table, the missing key is named with its path.
    let e = parse_err("datacenter = \"dc1\"\n[[clusters]]\nnodes = [\"http://127.0.0.1:8200\"]\n");
    assert_eq!(
        (e.key.as_str(), e.reason.contains("required")),
        ("clusters[0].name", true),
        "{e}"
    );
    let e = parse_err(&format!(
        "{ISSUE_EXAMPLE}\n[[proxy]]\ncluster = \"us-east-1\"\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.reason.contains("required")),
        ("proxy[0].listen", true),
        "{e}"
    );
    let e = parse_err("datacenter = \"dc1\"\n[[dns.records]]\na = [\"127.0.0.1\"]\n[[clusters]]\nname = \"dc1\"\nnodes = [\"http://127.0.0.1:8200\"]\n");
    assert_eq!(e.key, "dns.records[0].name", "{e}");
}

#[test]
fn proxy_defaults_and_route_table() {
    let c = Config::parse(&with_proxy(""), "p").unwrap();
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
        assert!(e.reason.contains("virtual cluster"), "{e}");
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
    let e = parse_err(&with_proxy("").replace("cluster = \"dc1\"", "cluster = \"dc9\""));
    assert_eq!(e.key, "proxy[0].cluster");
    let e = parse_err(&with_proxy("").replace("127.77.0.1:8201", "127.0.0.1:8600"));
    assert_eq!(e.key, "proxy[0].listen");
    let e = parse_err(&with_proxy(
        "answer = true\n[[proxy]]\ncluster = \"dc1\"\nlisten = \"127.77.0.2:8201\"\nanswer = true\n",
    ));
    assert_eq!(e.key, "proxy[1].answer");
    let e = parse_err(&with_proxy("on_leader_change = \"drop\"\n"));
    assert_eq!(e.key, "proxy[0].on_leader_change");
    let e = parse_err(&with_proxy("[proxy.routes]\n\"x\" = \"maybe\"\n"));
    assert!(e.key.starts_with("proxy[0].routes"), "{e}");
    let e = parse_err(&with_proxy("max_client_hello = 10\n"));
    assert_eq!(e.key, "proxy[0].max_client_hello");
    let e = parse_err(
        &with_proxy("")
            .replace("127.77.0.1:8201", "0.0.0.0:8201")
            .replace(
                "listen = \"0.0.0.0:8201\"",
                "listen = \"0.0.0.0:8201\"\nanswer = true",
            ),
    );
    assert_eq!(e.key, "proxy[0].answer");
    // A second proxy on the first one's API side (127.77.0.1:8200, with answer = true).
    let e = parse_err(&with_proxy(
        "answer = true\n[[proxy]]\ncluster = \"dc1\"\nlisten = \"127.77.0.1:8200\"\n",
    ));
    assert_eq!(e.key, "proxy[1].listen");
    assert!(e.reason.contains("already used"), "{e}");
}
