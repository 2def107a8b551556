//! Integration tests against a real OpenBao cluster (3 raft nodes on loopback) and a
//! 1-node peer cluster, with the real agent binary answering DNS.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::support::addr;
use crate::support::agent::Agent;
use crate::support::config::{agent_config, dc1, nodes};
use crate::support::dns::{ask, has_soa, ips, rcode, Proto};
use crate::support::openbao::{eventually, Cluster};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v
}

/// `name` A is NXDOMAIN with the zone's SOA in the authority section.
fn nxdomain_with_soa(dns: std::net::SocketAddr, name: &str) {
    let m = ask(dns, name, RecordType::A).once();
    assert_eq!(rcode(&m), ResponseCode::NXDomain, "{name}");
    assert!(has_soa(&m), "{name}: SOA in authority");
}

const POLL: (&str, &str) = ("poll_interval", "250ms");
const LB: (&str, &str) = ("load_balanced", "true");

/// Everything that only reads a healthy cluster shares one cluster: startup costs ~20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_a_real_cluster_and_a_peer_region() {
    let (main, peer) = tokio::join!(Cluster::start(21, 0, 3), Cluster::start(21, 1, 1));
    let leader = main.wait_leader(Duration::from_secs(30)).await;

    // An upstream for names outside the zone: a second agent, authoritative for
    // "internal" with one static record.
    let upstream_dns = addr("127.21.0.101:8600");
    let _upstream = Agent::start(
        &agent_config("up", "127.21.0.101:8600")
            .top("domain", "internal")
            .record("db.example.internal", &[("a", "[\"192.0.2.10\"]")])
            .cluster("up", &nodes("127.21.0", 1), &[])
            .toml(),
        upstream_dns,
    );

    let dns = addr("127.21.0.100:8600");
    let agent = Agent::start(
        &agent_config("us-east-1", "127.21.0.100:8600")
            .top("domain", "consul")
            .dns("ttl", "0s")
            .dns("upstreams", "[\"127.21.0.101:8600\"]")
            .record("nomad.service.consul", &[("a", "[\"127.0.0.9\"]")])
            .record("alias.example.org", &[("cname", "db.example.internal")])
            .cluster("us-east-1", &nodes("127.21.0", 3), &[POLL])
            .cluster("us-west-2", &nodes("127.21.1", 1), &[LB, POLL])
            .replication(&["us-east-1", "us-west-2"])
            .toml(),
        dns,
    );

    // Wait for the first full view.
    ask(dns, "active.vault.service.consul", RecordType::A)
        .within(Duration::from_secs(20))
        .until("the agent answers active", |m| {
            rcode(m) == ResponseCode::NoError
        })
        .await;
    ask(dns, "standby.vault.service.consul", RecordType::A)
        .within(Duration::from_secs(20))
        .until("both standbys are listed", |m| ips(m).len() == 2)
        .await;

    no_primary_without_replication(&agent, dns);
    the_leader_and_members_answer_over_udp_and_tcp(dns, &main, leader);
    srv_targets_are_hex_addr_names_with_glue(dns, &main, leader);
    names_without_an_instance_are_negative(dns);
    the_peer_region_and_static_records_answer(dns);
    names_outside_the_zone_go_upstream_or_are_refused(dns, upstream_dns);
    drop((agent, peer));
}

/// Step: two OpenBao clusters in a replication set: OpenBao has no replication, so
/// neither virtual cluster has a primary, in any name form, and /status says why.
fn no_primary_without_replication(agent: &Agent, dns: SocketAddr) {
    for name in [
        "active.vault.service.perf-primary.consul",
        "vault.service.perf-primary.consul",
        "_vault._tcp.service.dr-primary.consul",
        "standby.vault.service.dr-primary.consul",
    ] {
        nxdomain_with_soa(dns, name);
    }
    let (_, json) = agent.admin_get("/status");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    for (i, kind) in ["performance", "DR"].iter().enumerate() {
        assert_eq!(
            status["replication"]["primaries"][i]["why"],
            format!(
                "no cluster of the set is a {kind} primary \
                 (us-east-1: unavailable, us-west-2: unavailable)"
            ),
            "{json}"
        );
    }
}

/// Step: `active`, `standby` and `vault.service`, in every name form, over UDP and TCP:
/// authoritative, TTL 0.
fn the_leader_and_members_answer_over_udp_and_tcp(dns: SocketAddr, main: &Cluster, leader: usize) {
    let standbys: Vec<IpAddr> = sorted(
        (0..3)
            .filter(|i| *i != leader)
            .map(|i| main.ip(i))
            .collect(),
    );
    for proto in [Proto::Udp, Proto::Tcp] {
        for name in [
            "active.vault.service.consul",
            "active.vault.service.us-east-1.consul",
            "ACTIVE.Vault.Service.US-East-1.Consul.",
            "_vault._active.service.us-east-1.consul",
        ] {
            let m = ask(dns, name, RecordType::A).over(proto).once();
            assert_eq!(rcode(&m), ResponseCode::NoError, "{name} over {proto:?}");
            assert!(m.metadata.authoritative, "{name}: AA set");
            assert_eq!(ips(&m), vec![main.ip(leader)], "{name} over {proto:?}");
            assert!(
                m.answers.iter().all(|r| r.ttl == 0),
                "Consul's default TTL is 0"
            );
        }
        let m = ask(dns, "standby.vault.service.us-east-1.consul", RecordType::A)
            .over(proto)
            .once();
        assert_eq!(ips(&m), standbys, "standby over {proto:?}");
        let m = ask(dns, "vault.service.consul", RecordType::A)
            .over(proto)
            .once();
        assert_eq!(
            ips(&m),
            sorted((0..3).map(|i| main.ip(i)).collect()),
            "vault.service over {proto:?}"
        );
    }
}

/// Step: SRV: port 8200, Consul's <hex>.addr.<cluster>.<domain> target, A in additional.
fn srv_targets_are_hex_addr_names_with_glue(dns: SocketAddr, main: &Cluster, leader: usize) {
    let m = ask(dns, "active.vault.service.consul", RecordType::SRV).once();
    assert_eq!(m.answers.len(), 1);
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!("not SRV: {m:?}")
    };
    assert_eq!(srv.port, 8200);
    let IpAddr::V4(leader_v4) = main.ip(leader) else {
        unreachable!()
    };
    assert_eq!(
        srv.target.to_ascii(),
        format!("{:08x}.addr.us-east-1.consul.", u32::from(leader_v4))
    );
    assert_eq!(
        m.additionals
            .iter()
            .filter(|r| r.name == srv.target)
            .count(),
        1
    );
    let m = ask(dns, &srv.target.to_ascii(), RecordType::A).once();
    assert_eq!(ips(&m), vec![main.ip(leader)], "SRV target resolves");
    let m = ask(dns, "_vault._tcp.service.consul", RecordType::SRV)
        .over(Proto::Tcp)
        .once();
    assert_eq!(m.answers.len(), 3);
}

/// Step: AAAA where only IPv4 exists is NOERROR with the SOA; unknown tags, services,
/// clusters and forms, and a known tag with no instance, are NXDOMAIN.
fn names_without_an_instance_are_negative(dns: SocketAddr) {
    // Only IPv4 exists: AAAA is NOERROR with no answer and the SOA.
    let m = ask(dns, "active.vault.service.consul", RecordType::AAAA).once();
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(has_soa(&m));

    // Unknown tag, service, datacenter, form: NXDOMAIN with the SOA.
    for name in [
        "leader.vault.service.consul",
        "nomad2.service.consul",
        "active.vault.service.eu-central-1.consul",
        "whatever.consul",
    ] {
        nxdomain_with_soa(dns, name);
    }
    // No perf standbys on OpenBao: a known tag with no healthy instance.
    let m = ask(dns, "perf-standby.vault.service.consul", RecordType::A).once();
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
}

/// Step: the peer region, known through one address only, and the static records.
fn the_peer_region_and_static_records_answer(dns: SocketAddr) {
    let m = ask(dns, "active.vault.service.us-west-2.consul", RecordType::A).once();
    assert_eq!(ips(&m), vec![ip("127.21.1.1")]);

    // Static records.
    let m = ask(dns, "nomad.service.consul", RecordType::A).once();
    assert_eq!(ips(&m), vec![ip("127.0.0.9")]);
    assert!(m.metadata.authoritative);
}

/// Step: outside the zone, forwarded to the upstream, which answers its own zone and
/// refuses what is not its own.
fn names_outside_the_zone_go_upstream_or_are_refused(dns: SocketAddr, upstream_dns: SocketAddr) {
    let m = ask(dns, "db.example.internal", RecordType::A).once();
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(ips(&m), vec![ip("192.0.2.10")]);
    assert!(!m.metadata.authoritative);
    assert!(m.metadata.recursion_available);
    // ...and the upstream itself, which has no upstreams, refuses what is not its own.
    let m = ask(upstream_dns, "active.vault.service.consul", RecordType::A).once();
    assert_eq!(rcode(&m), ResponseCode::Refused);
    assert!(m.answers.is_empty());
    assert!(!m.metadata.recursion_available);
    let m = ask(upstream_dns, "example.com", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert_eq!(rcode(&m), ResponseCode::Refused);
}

/// Kills the active node and watches the answer move; a restarted (sealed) node stays
/// out of `standby` and `vault.service`; with every node down the last view is served
/// for the stale window, then SERVFAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_sealed_node_and_stale_window() {
    let mut cluster = Cluster::start(22, 0, 3).await;
    let dns = addr("127.22.0.100:8600");
    let _agent = Agent::with(&dc1(
        "127.22.0",
        3,
        &[
            ("poll_interval", "250ms"),
            ("request_timeout", "500ms"),
            ("serve_stale_for", "6s"),
        ],
    ));
    let old = cluster.wait_leader(Duration::from_secs(30)).await;
    let old_ip = cluster.ip(old);
    ask(dns, "active.vault.service.consul", RecordType::A)
        .within(Duration::from_secs(20))
        .until("active answers the leader", |m| ips(m) == vec![old_ip])
        .await;

    cluster.kill(old);
    let new = cluster.wait_leader(Duration::from_secs(60)).await;
    assert_ne!(new, old);
    let new_ip = cluster.ip(new);
    ask(dns, "active.vault.service.consul", RecordType::A)
        .within(Duration::from_secs(20))
        .until("active answers the new leader", |m| ips(m) == vec![new_ip])
        .await;
    let m = ask(dns, "vault.service.consul", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert!(
        !ips(&m).contains(&old_ip),
        "the dead node is not listed: {:?}",
        ips(&m)
    );

    // The old leader comes back sealed: not a standby, not an instance.
    cluster.restart(old);
    let remaining = (0..3).find(|i| *i != old && *i != new).unwrap();
    let remaining_ip = cluster.ip(remaining);
    eventually(
        Duration::from_secs(30),
        "the sealed node answers health",
        || async {
            let r = reqwest::get(format!("http://{old_ip}:8200/v1/sys/health"))
                .await
                .ok()?;
            (r.status().as_u16() == 503).then_some(())
        },
    )
    .await;
    // Give the agent a few polls of the sealed node, then check it stays out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..5 {
        let m = ask(dns, "standby.vault.service.consul", RecordType::A).once();
        assert_eq!(ips(&m), vec![remaining_ip], "sealed node is no standby");
        let m = ask(dns, "vault.service.consul", RecordType::A).once();
        assert_eq!(
            ips(&m),
            sorted(vec![new_ip, remaining_ip]),
            "sealed node is no instance"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Unsealed, it rejoins as a standby.
    cluster.unseal(old).await;
    ask(dns, "standby.vault.service.consul", RecordType::A)
        .within(Duration::from_secs(30))
        .until("the unsealed node is a standby again", |m| {
            ips(m) == sorted(vec![old_ip, remaining_ip])
        })
        .await;

    // Every node gone: the last view is served (stale), then SERVFAIL.
    for i in 0..3 {
        cluster.kill(i);
    }
    let m = ask(dns, "active.vault.service.consul", RecordType::A).once();
    assert_eq!(
        ips(&m),
        vec![new_ip],
        "the last confirmed view is served while stale"
    );
    ask(dns, "active.vault.service.consul", RecordType::A)
        .within(Duration::from_secs(30))
        .until("SERVFAIL after the stale window", |m| {
            rcode(m) == ResponseCode::ServFail
        })
        .await;
    let m = ask(dns, "vault.service.consul", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert_eq!(rcode(&m), ResponseCode::ServFail);
}
