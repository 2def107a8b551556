//! The watcher when nodes misbehave: a node that never answers holds back nobody, a
//! leader needs a majority of the configured members, hostile answers are named in the
//! WARN line and `/status`, and a server without HA storage is its own active node.
//!
//! Mock nodes stand in for what a real server cannot be made to do (stalls, trickled
//! and huge bodies, wrong types); the non-HA case runs a real `bao server -dev`.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::addr;
use crate::support::agent::Agent;
use crate::support::config::dc1;
use crate::support::dns::{ask, ips, rcode, Proto};
use crate::support::mock::{Behavior, MockNode};
use crate::support::openbao::{bao_bin, eventually};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn node(active: bool, leader: &str) -> Behavior {
    Behavior::Node {
        active,
        leader: leader.into(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The `/status` entry of `cluster`.
fn cluster_status(agent: &Agent, cluster: &str) -> serde_json::Value {
    let (code, body) = agent.admin_get("/status");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster} in {body}"))
        .clone()
}

/// A member whose requests hang for 30 s (its request timeout) does not hold back the
/// others: a leader change is answered long before that poll could have returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_member_never_delays_a_leader_change() {
    let (l1, l2) = ("http://127.43.0.1:8200", "http://127.43.0.2:8200");
    let n1 = MockNode::start(addr("127.43.0.1:8200"), node(true, l1)).await;
    let n2 = MockNode::start(addr("127.43.0.2:8200"), node(false, l1)).await;
    let _n3 = MockNode::start(addr("127.43.0.3:8200"), Behavior::Stall).await;
    let dns = addr("127.43.0.100:8600");
    let polls = [("poll_interval", "100ms"), ("request_timeout", "30s")];
    let agent = Agent::with(&dc1("127.43.0", 3, &polls));
    let active = "active.vault.service.consul.";
    ask(dns, active, RecordType::A)
        .until("the first leader, named by 2 of 3 members", |m| {
            ips(m) == vec![ip("127.43.0.1")]
        })
        .await;

    // Node 2 takes over while node 3's first request is still hanging.
    n1.set(node(false, l2));
    n2.set(node(true, l2));
    ask(dns, active, RecordType::A)
        .until(
            "the new leader, well before the stalled poll's 30 s timeout",
            |m| ips(m) == vec![ip("127.43.0.2")],
        )
        .await;
    let status = cluster_status(&agent, "dc1");
    assert_eq!(status["members"][2]["role"], "unreachable", "{status}");
    assert_eq!(status["members"][2]["error"], "no answer yet", "{status}");
}

/// An agent that hears only one of three members (cut off with it) does not vouch for
/// it, however sure that member is; once a second member answers, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_hears_one_of_three_members_answers_no_active() {
    let l1 = "http://127.43.1.1:8200";
    let _n1 = MockNode::start(addr("127.43.1.1:8200"), node(true, l1)).await;
    let n2 = MockNode::start(addr("127.43.1.2:8200"), Behavior::Stall).await;
    let _n3 = MockNode::start(addr("127.43.1.3:8200"), Behavior::Stall).await;
    let dns = addr("127.43.1.100:8600");
    let polls = [("poll_interval", "100ms"), ("request_timeout", "500ms")];
    let agent = Agent::with(&dc1("127.43.1", 3, &polls));
    let active = "active.vault.service.consul.";
    eventually(Duration::from_secs(10), "the reason in /status", || async {
        let status = cluster_status(&agent, "dc1");
        (status["no_leader"] == "2 of 3 members unheard").then_some(())
    })
    .await;
    for _ in 0..10 {
        let m = crate::support::dns::query(dns, active, RecordType::A, Proto::Udp).unwrap();
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "no active from 1 of 3");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = agent.admin_get("/metrics");
    assert!(
        metrics
            .contains(r#"vault_locator_vault_cluster_no_leader{cluster="dc1",reason="unheard"} 1"#),
        "{metrics}"
    );
    assert!(
        agent.log().contains("2 of 3 members unheard"),
        "the leader-change line says why"
    );

    n2.set(node(false, l1));
    ask(dns, active, RecordType::A)
        .until("the leader, once 2 of 3 members name it", |m| {
            ips(m) == vec![ip("127.43.1.1")]
        })
        .await;
}

/// Each hostile answer makes its node unreachable, named with its reason in the WARN
/// line and in `/status`, while the cluster's other two members keep it answering; the
/// huge bodies leave the agent's memory flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_are_named_and_bounded() {
    let cases: [(&str, Behavior, &str, &str); 7] = [
        ("stall", Behavior::Stall, "http", "timed out after 1s"),
        ("trickle", Behavior::Trickle, "http", "timed out after 1s"),
        ("huge", Behavior::Huge, "http", "larger than 65536 bytes"),
        ("garbage", Behavior::Garbage, "http", "unreadable body"),
        ("types", Behavior::WrongTypes, "http", "invalid type"),
        (
            "status",
            Behavior::ServerError,
            "http",
            "unexpected HTTP status 500",
        ),
        // A TLS client meeting a plain-HTTP listener: rustls reads the 400 as a record.
        (
            "tls",
            node(false, ""),
            "https",
            "TLS: received corrupt message of type InvalidContentType",
        ),
    ];
    let mut mocks = Vec::new();
    let mut config =
        String::from("datacenter = \"stall\"\n[dns]\nlisten = [\"127.44.0.100:8600\"]\n");
    for (i, (name, behavior, scheme, _)) in cases.iter().enumerate() {
        let leader = format!("http://127.44.{i}.1:8200");
        mocks.push(MockNode::start(addr(&format!("127.44.{i}.1:8200")), node(true, &leader)).await);
        mocks
            .push(MockNode::start(addr(&format!("127.44.{i}.2:8200")), node(false, &leader)).await);
        mocks.push(MockNode::start(addr(&format!("127.44.{i}.3:8200")), behavior.clone()).await);
        config.push_str(&format!(
            "[[clusters]]\nname = \"{name}\"\nnodes = [\"http://127.44.{i}.1:8200\", \
             \"http://127.44.{i}.2:8200\", \"{scheme}://127.44.{i}.3:8200\"]\n\
             poll_interval = \"200ms\"\nrequest_timeout = \"1s\"\n"
        ));
    }
    let dns = addr("127.44.0.100:8600");
    let agent = Agent::start(&config, dns);
    for (i, (name, _, scheme, reason)) in cases.iter().enumerate() {
        let node = format!("{scheme}://127.44.{i}.3:8200/");
        ask(
            dns,
            &format!("active.vault.service.{name}.consul."),
            RecordType::A,
        )
        .until(
            &format!("{name}: the two good members still name the leader"),
            |m| ips(m) == vec![ip(&format!("127.44.{i}.1"))],
        )
        .await;
        eventually(
            Duration::from_secs(10),
            &format!("{name}: /status names the reason"),
            || async {
                let status = cluster_status(&agent, name);
                let member = &status["members"][2];
                (member["url"] == node.as_str()
                    && member["role"] == "unreachable"
                    && member["error"].as_str().unwrap_or("").contains(reason))
                .then_some(())
            },
        )
        .await;
        let log = agent.log();
        assert!(
            log.lines().any(|l| l.contains("node not answering")
                && l.contains(&format!("node={node}"))
                && l.contains(reason)),
            "{name}: a WARN names the node and the reason:\n{log}"
        );
    }
    // Reasons with spaces and quotes, URLs, durations: every line is still logfmt.
    crate::support::agent::assert_logfmt(&agent.log());

    // Memory stays flat while the huge and trickling nodes are polled on.
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB in 5 s of hostile answers"
    );
    // Each warning was said once per transition, not once per poll.
    let warns = agent
        .log()
        .lines()
        .filter(|l| l.contains("node not answering") && l.contains("127.44.3.3"))
        .count();
    assert_eq!(warns, 1, "one WARN for the garbage node, not one per poll");
}

/// A real server without HA storage (`bao server -dev`, inmem) answers
/// `{"ha_enabled": false}`: it is the active node, and the only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_ha_storage_is_the_active_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(bao_bin())
        .args([
            "server",
            "-dev",
            "-dev-listen-address=127.43.2.1:8200",
            "-dev-root-token-id=root",
        ])
        .env("HOME", dir.path())
        .env("BAO_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bao server -dev");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(&mut server);
    let dns = addr("127.43.2.100:8600");
    let _agent = Agent::with(&dc1("127.43.2", 1, &[("poll_interval", "100ms")]));
    ask(dns, "active.vault.service.consul.", RecordType::A)
        .within(Duration::from_secs(30))
        .until("the dev server as the active node", |m| {
            ips(m) == vec![ip("127.43.2.1")]
        })
        .await;
}
