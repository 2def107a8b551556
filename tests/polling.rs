//! The poll cadence: fast while a cluster has no leader, normal once it has one, and
//! back to normal when a cluster stays leaderless past `failover_poll_for`.
//!
//! The intervals are chosen far apart (20 ms against 30 s) so that counting requests
//! tells the two rates apart without any timing assertion: at the normal rate the node
//! would see one round (two requests) in the whole test.

mod support;

use std::time::Duration;

use hickory_proto::rr::RecordType;
use support::addr;
use support::agent::Agent;
use support::config::{agent_config, nodes};
use support::dns::{ask, ips};
use support::mock::{Behavior, MockNode};
use support::openbao::eventually;

fn leaderless() -> Behavior {
    Behavior::Node {
        active: false,
        leader: String::new(),
    }
}

/// How many requests `node` receives in the next `window`.
async fn requests_during(node: &MockNode, window: Duration) -> usize {
    let before = node.requests();
    tokio::time::sleep(window).await;
    node.requests() - before
}

fn config(failover_poll_for: &str) -> String {
    let polls = [
        ("poll_interval", "30s"),
        ("failover_poll_interval", "20ms"),
        ("failover_poll_for", failover_poll_for),
    ];
    agent_config("dc1", "127.39.0.100:8600")
        .cluster("dc1", &nodes("127.39.0", 1), &polls)
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_fast_while_leaderless_and_slows_down_once_a_leader_is_confirmed() {
    let node = MockNode::start(addr("127.39.0.1:8200"), leaderless()).await;
    let agent = Agent::start(&config("1h"), addr("127.39.0.100:8600"));

    // Leaderless: rounds every 20 ms, not every 30 s.
    eventually(Duration::from_secs(20), "20 fast rounds", || async {
        (node.requests() >= 40).then_some(())
    })
    .await;

    // A leader appears and is seen by a fast round.
    node.set(Behavior::Node {
        active: true,
        leader: node.url(),
    });
    ask(agent.dns, "active.vault.service.consul.", RecordType::A)
        .within(Duration::from_secs(20))
        .until("the leader to be answered", |m| {
            ips(m) == vec![node.addr.ip()]
        })
        .await;

    // Confirmed: back to one round per 30 s (allow the round that was in flight).
    let n = requests_during(&node, Duration::from_secs(1)).await;
    assert!(
        n <= 2,
        "{n} requests in 1 s with a leader confirmed and a 30 s poll interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_stays_leaderless_is_polled_fast_only_for_failover_poll_for() {
    let node = MockNode::start(addr("127.39.1.1:8200"), leaderless()).await;
    let config = config("3s").replace("127.39.0.", "127.39.1.");
    let _agent = Agent::start(&config, addr("127.39.1.100:8600"));

    // Within the first 3 s, fast rounds...
    eventually(Duration::from_secs(20), "fast rounds", || async {
        (node.requests() >= 10).then_some(())
    })
    .await;
    // ...then, past failover_poll_for, the normal 30 s interval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = requests_during(&node, Duration::from_secs(2)).await;
    assert!(
        n <= 2,
        "{n} requests in 2 s after failover_poll_for (3 s) with a 30 s poll interval"
    );
}
