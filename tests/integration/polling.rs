//! The poll cadence: fast while a cluster has no leader, normal once it has one, and
//! back to normal when a cluster stays leaderless past `failover_poll_for`.
//!
//! The intervals are chosen far apart (20 ms against 30 s) so that counting requests
//! tells the two rates apart without any timing assertion: at the normal rate the node
//! would see one round (one or two requests) in the whole test.

use std::time::Duration;

use crate::support::addr;
use crate::support::agent::Agent;
use crate::support::config::{agent_config, nodes};
use crate::support::dns::{ask, ips};
use crate::support::mock::{Behavior, MockNode};
use crate::support::openbao::eventually;
use hickory_proto::rr::RecordType;

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

/// Three nodes, the first active, polled every 50 ms; answered once the agent sees
/// the leader. Returns the nodes (the agent is kept alive by the caller).
async fn led_cluster(net: &str) -> (Vec<MockNode>, Agent) {
    let mut mocks = Vec::new();
    let leader = format!("http://{net}.1:8200");
    for i in 1..=3 {
        let behavior = Behavior::Node {
            active: i == 1,
            leader: leader.clone(),
        };
        mocks.push(MockNode::start(addr(&format!("{net}.{i}:8200")), behavior).await);
    }
    let polls = [
        ("poll_interval", "50ms"),
        ("failover_poll_interval", "20ms"),
    ];
    let dns = format!("{net}.100:8600");
    let config = agent_config("dc1", &dns)
        .cluster("dc1", &nodes(net, 3), &polls)
        .toml();
    let agent = Agent::start(&config, addr(&dns));
    ask(agent.dns, "active.vault.service.consul.", RecordType::A)
        .within(Duration::from_secs(20))
        .until("the leader to be answered", |m| {
            ips(m) == vec![mocks[0].addr.ip()]
        })
        .await;
    (mocks, agent)
}

/// Each node's (leader, health) requests in the next `window`.
async fn split_during(mocks: &[MockNode], window: Duration) -> Vec<(usize, usize)> {
    let before: Vec<(usize, usize)> = mocks
        .iter()
        .map(|m| (m.requests(), m.health_requests()))
        .collect();
    tokio::time::sleep(window).await;
    mocks
        .iter()
        .zip(before)
        .map(|(m, (all, health))| {
            let health = m.health_requests() - health;
            (m.requests() - all - health, health)
        })
        .collect()
}

/// `/v1/sys/leader` decides the answer and is asked every round; `/v1/sys/health` only
/// every HEALTH_REFRESH (30) rounds from a server that cannot replicate (these mocks
/// leave the replication fields out, like a server without replication), and every
/// other round from the active node of one that can (Vault Enterprise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_rounds_ask_the_leader_every_round_and_the_health_rarely() {
    let (mocks, _agent) = led_cluster("127.39.2").await;
    let split = split_during(&mocks, Duration::from_secs(3)).await;
    for (i, (leader, health)) in split.iter().enumerate() {
        // 3 s at 50 ms is 60 rounds; a round that overran makes fewer.
        assert!(
            *leader >= 30,
            "node {i}: {leader} leader requests in 60 rounds"
        );
        assert!(
            *health <= leader / 10 + 1,
            "node {i}: {health} health requests beside {leader} leader requests"
        );
    }

    // Enterprise: the active node speaks for the replication modes.
    for m in &mocks {
        m.set_replication("primary", "disabled");
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // past one refresh
    let split = split_during(&mocks, Duration::from_secs(3)).await;
    let (leader, health) = split[0];
    assert!(
        (leader / 4..=leader * 3 / 4).contains(&health),
        "active: {health} health requests beside {leader} leader requests, want about half"
    );
    for (i, (leader, health)) in split.iter().enumerate().skip(1) {
        assert!(
            *health <= leader / 10 + 1,
            "standby {i}: {health} health requests beside {leader} leader requests"
        );
    }
}

/// A node that keeps failing is backed off even while its cluster is polled fast (to
/// the poll interval), and its return is noticed within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_is_backed_off_and_its_return_is_noticed() {
    let live = MockNode::start(addr("127.39.3.1:8200"), leaderless()).await;
    let failing = MockNode::start(addr("127.39.3.2:8200"), Behavior::ServerError).await;
    let polls = [
        ("poll_interval", "200ms"),
        ("failover_poll_interval", "20ms"),
        ("failover_poll_for", "1h"),
    ];
    let config = agent_config("dc1", "127.39.3.100:8600")
        .cluster("dc1", &nodes("127.39.3", 2), &polls)
        .toml();
    let agent = Agent::start(&config, addr("127.39.3.100:8600"));
    eventually(Duration::from_secs(20), "fast rounds", || async {
        (live.requests() >= 20).then_some(())
    })
    .await;

    // Leaderless, so polled every 20 ms: 150 rounds in 3 s for the live node; the
    // failing one, backed off after 5 failures, every poll interval (200 ms) while the
    // cluster is leaderless: 15 polls, two requests each (a 500 from the leader
    // endpoint asks the health too), against 300 without the back-off.
    let (live_before, failing_before) = (live.requests(), failing.requests());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (live_n, failing_n) = (
        live.requests() - live_before,
        failing.requests() - failing_before,
    );
    assert!(live_n >= 50, "the live node: {live_n} requests in 3 s");
    assert!(
        failing_n <= 40,
        "the failing node: {failing_n} requests in 3 s of a 20 ms cadence"
    );

    // It comes back as the leader, and the live node names it.
    let back = failing.url();
    failing.set(Behavior::Node {
        active: true,
        leader: back.clone(),
    });
    live.set(Behavior::Node {
        active: false,
        leader: back,
    });
    ask(agent.dns, "active.vault.service.consul.", RecordType::A)
        .within(Duration::from_secs(6))
        .until("the returned node to be answered as the leader", |m| {
            ips(m) == vec![failing.addr.ip()]
        })
        .await;
}
