//! A panic is never silent: in a long-lived part (DNS receive loop, proxy worker,
//! watcher, admin server) it is logged at ERROR and the agent exits 1 so systemd
//! restarts it; in one connection's task it is logged and counted, and the agent keeps
//! serving. Each case runs the real (debug) binary with a fault point armed through
//! `VAULT_LOCATOR_PANIC_AT` (see `src/panic.rs`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::addr;
use crate::support::agent::Agent;
use crate::support::config::{agent_config, nodes};
use crate::support::dns::{query, Proto};
use crate::support::mock::MockNode;
use hickory_proto::rr::RecordType;

fn config(net: &str) -> String {
    agent_config("dc1", &format!("{net}.100:8600"))
        .cluster("dc1", &nodes(net, 1), &[("poll_interval", "100ms")])
        .proxy("dc1", &format!("{net}.200:8201"), &[])
        .toml()
}

/// Starts an agent with `point` armed (and the mock node its cluster polls).
async fn arm(net: &str, point: &str) -> (Agent, MockNode) {
    let node = MockNode::active_leader(&format!("{net}.1")).await;
    let dns = addr(&format!("{net}.100:8600"));
    let agent = Agent::spawn(&config(net), dns, &[("VAULT_LOCATOR_PANIC_AT", point)]);
    (agent, node)
}

fn assert_fatal(agent: &mut Agent, point: &str, part: &str) {
    let code = agent.wait_exit(Duration::from_secs(20));
    let log = agent.log();
    assert_eq!(
        code,
        Some(1),
        "{point}: exits 1 for systemd to restart it:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(&format!("fault injected at {point}"))),
        "{point}: the panic is logged at ERROR:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(part) && l.contains("stopping the agent")),
        "{point}: the supervisor names the part ({part}):\n{log}"
    );
}

/// Sends a (truncated) ClientHello and waits for the agent to close the connection: the
/// task that read it has reached the fault point and unwound (or the agent has exited).
fn connect_and_hello(proxy: &str) {
    if let Ok(mut s) = TcpStream::connect(proxy) {
        let _ = s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_dns_receive_loop_stops_the_agent() {
    let (mut agent, _node) = arm("127.46.0", "udp").await;
    // The first datagram reaches the fault point (the query itself gets no answer).
    agent.wait_for_log(&["DNS listening"], Duration::from_secs(15));
    let _ = query(agent.dns, "consul.", RecordType::SOA, Proto::Udp);
    assert_fatal(&mut agent, "udp", "DNS server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_watcher_stops_the_agent() {
    let (mut agent, _node) = arm("127.46.1", "watcher").await;
    assert_fatal(&mut agent, "watcher", "watcher of cluster dc1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_proxy_worker_stops_the_agent() {
    let (mut agent, _node) = arm("127.46.2", "proxy-worker").await;
    agent.wait_for_log(&["proxy listening", "8201"], Duration::from_secs(15));
    connect_and_hello("127.46.2.200:8201");
    assert_fatal(&mut agent, "proxy-worker", "proxy on 127.46.2.200:8201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_admin_server_stops_the_agent() {
    let (mut agent, _node) = arm("127.46.3", "admin").await;
    agent.wait_for_log(&["admin endpoint listening"], Duration::from_secs(15));
    let _ = TcpStream::connect("127.46.3.100:9464");
    assert_fatal(&mut agent, "admin", "admin endpoint on 127.46.3.100:9464");
}

/// One connection's task panicking costs that connection only: the agent keeps
/// answering DNS and accepting proxy connections, the panic is in the log and in
/// `panics_total`, and the connection is no longer counted as open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_proxied_connection_is_contained_and_counted() {
    let (mut agent, _node) = arm("127.46.4", "proxy-connection").await;
    let dns = agent.dns;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while query(dns, "consul.", RecordType::SOA, Proto::Udp).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "never answered:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        connect_and_hello("127.46.4.200:8201");
    }
    crate::support::openbao::eventually(Duration::from_secs(10), "panics counted", || async {
        let (_, metrics) = agent.admin_get("/metrics");
        metrics
            .lines()
            .any(|l| l.starts_with("vault_locator_panics_total ") && l.ends_with(" 3"))
            .then_some(())
    })
    .await;
    let (_, metrics) = agent.admin_get("/metrics");
    assert!(
        metrics
            .contains(r#"vault_locator_proxy_active_connections{cluster="dc1",side="cluster"} 0"#),
        "an unwound connection is no longer counted as open:\n{metrics}"
    );
    query(dns, "consul.", RecordType::SOA, Proto::Udp).expect("still answering DNS");
    assert!(agent.log().contains("fault injected at proxy-connection"));
    assert_eq!(agent.stop(), Some(0), "a clean stop afterwards");
}
