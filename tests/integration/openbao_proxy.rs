//! The proxy against a real OpenBao cluster: TLS passes through untouched (same
//! certificate chain and ALPN as a direct connection to the active node), DNS in proxy
//! mode answers the listener, whose API side (:8200) reaches the active node too, and
//! after `kill -9` of the active node new connections on both ports reach the new one.
//! The cluster is also a replication set of one: OpenBao has no replication, so the
//! virtual primaries answer NXDOMAIN and `/status` says why.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::support::agent::Agent;
use crate::support::config::dc1;
use crate::support::dns::{ask, has_soa, ips, rcode};
use crate::support::openbao::{eventually, Cluster};
use crate::support::tls::{follows_failover, observe, passes_through};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// What the node behind the proxy's API side says of itself: `(health status code,
/// is_self, leader_address)`.
async fn api_through(api: SocketAddr) -> Option<(u16, bool, String)> {
    let (health, _) = crate::support::get_json(&format!("http://{api}/v1/sys/health")).await?;
    let (_, leader) = crate::support::get_json(&format!("http://{api}/v1/sys/leader")).await?;
    Some((
        health,
        leader["is_self"].as_bool()?,
        leader["leader_address"].as_str()?.to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_is_exact_and_follows_failover() {
    let mut cluster = Cluster::start(23, 0, 3).await;
    let dns: SocketAddr = "127.23.0.100:8600".parse().unwrap();
    let proxy: SocketAddr = "127.23.0.200:8201".parse().unwrap();
    // answer = true gives the listener an API side on the same IP, port 8200.
    let api: SocketAddr = "127.23.0.200:8200".parse().unwrap();
    let agent = Agent::with(
        &dc1("127.23.0", 3, &[("poll_interval", "250ms")])
            .proxy("dc1", "127.23.0.200:8201", &[("answer", "true")])
            .replication(&["dc1"]),
    );
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let direct = SocketAddr::new(cluster.ip(leader), 8201);

    // Proxy mode: DNS answers the listener for the active node.
    let m = ask(dns, "active.vault.service.dc1.consul", RecordType::A).once();
    assert_eq!(ips(&m), vec!["127.23.0.200".parse::<IpAddr>().unwrap()]);

    let direct_chain = passes_through(direct, proxy).await;
    // Raft traffic is never sent to "the active".
    assert!(observe(proxy, b"raft_storage_v1").await.is_none());

    // The answered IP serves the API port too: an HTTP request reaches the active node.
    let leader_api = format!("http://{}:8200", cluster.ip(leader));
    let seen = eventually(Duration::from_secs(20), "the API side forwards", || async {
        api_through(api).await
    })
    .await;
    assert_eq!(seen, (200, true, leader_api), "the active node answers");

    // OpenBao has no replication (though its active node reports perf mode "primary"):
    // no primary of either kind.
    for label in ["perf-primary", "dr-primary"] {
        let m = ask(
            dns,
            &format!("active.vault.service.{label}.consul"),
            RecordType::A,
        )
        .once();
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "{label}");
        assert!(has_soa(&m), "{label}");
    }
    let (_, json) = agent.admin_get("/status");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["clusters"][0]["replication"]["perf"], "unavailable");
    assert_eq!(
        status["replication"]["primaries"][0]["why"],
        "no cluster of the set is a performance primary (dc1: unavailable)"
    );
    assert_eq!(
        status["replication"]["primaries"][1]["why"],
        "no cluster of the set is a DR primary (dc1: unavailable)"
    );

    cluster.kill(leader);
    let new = cluster.wait_leader(Duration::from_secs(60)).await;
    assert_ne!(new, leader);
    let new_direct = SocketAddr::new(cluster.ip(new), 8201);
    follows_failover(new_direct, proxy, &direct_chain).await;
    let new_api = format!("http://{}:8200", cluster.ip(new));
    eventually(
        Duration::from_secs(30),
        "the API side reaches the new active",
        || async { (api_through(api).await? == (200, true, new_api.clone())).then_some(()) },
    )
    .await;
}
