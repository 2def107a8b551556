//! The cluster-port proxy against a real OpenBao cluster: TLS passes through untouched
//! (same certificate chain and ALPN as a direct connection to the active node), DNS in
//! proxy mode answers the listener, and after `kill -9` of the active node new
//! connections reach the new one.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use support::agent::Agent;
use support::dns::{ips, query, Proto};
use support::openbao::{eventually, Cluster};
use support::tls::observe;

const FW: &[u8] = b"req_fw_sb-act_v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_is_exact_and_follows_failover() {
    let mut cluster = Cluster::start(23, 0, 3).await;
    let dns: SocketAddr = "127.23.0.100:8600".parse().unwrap();
    let proxy: SocketAddr = "127.23.0.200:8201".parse().unwrap();
    let _agent = Agent::start(
        r#"
datacenter = "dc1"
[dns]
listen = ["127.23.0.100:8600"]
[[clusters]]
name = "dc1"
nodes = ["http://127.23.0.1:8200", "http://127.23.0.2:8200", "http://127.23.0.3:8200"]
poll_interval = "250ms"
[[proxy]]
cluster = "dc1"
listen = "127.23.0.200:8201"
answer = true
"#,
        dns,
    );
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let direct = SocketAddr::new(cluster.ip(leader), 8201);

    // Proxy mode: DNS answers the listener for the active node.
    let m = query(
        dns,
        "active.vault.service.dc1.consul",
        RecordType::A,
        Proto::Udp,
    )
    .unwrap();
    assert_eq!(ips(&m), vec!["127.23.0.200".parse::<IpAddr>().unwrap()]);

    let (direct_chain, direct_alpn) = eventually(
        Duration::from_secs(20),
        "the active serves forwarding",
        || async { observe(direct, FW).await },
    )
    .await;
    assert_eq!(direct_alpn.as_deref(), Some("req_fw_sb-act_v1"));
    let (chain, alpn) = eventually(Duration::from_secs(20), "the proxy forwards", || async {
        observe(proxy, FW).await
    })
    .await;
    assert_eq!(
        chain, direct_chain,
        "same server certificate chain through the proxy"
    );
    assert_eq!(alpn, direct_alpn, "same negotiated ALPN through the proxy");
    // Raft traffic is never sent to "the active".
    assert!(observe(proxy, b"raft_storage_v1").await.is_none());

    cluster.kill(leader);
    let new = cluster.wait_leader(Duration::from_secs(60)).await;
    assert_ne!(new, leader);
    let new_direct = SocketAddr::new(cluster.ip(new), 8201);
    let (new_chain, _) = eventually(
        Duration::from_secs(20),
        "the new active serves forwarding",
        || async { observe(new_direct, FW).await },
    )
    .await;
    assert_ne!(
        new_chain, direct_chain,
        "a new active presents a new certificate"
    );
    eventually(
        Duration::from_secs(30),
        "the proxy reaches the new active",
        || async {
            let (chain, _) = observe(proxy, FW).await?;
            (chain == new_chain).then_some(())
        },
    )
    .await;
}
