//! Vault Enterprise as it really runs, with stand-in nodes answering as Vault does for
//! each role (`crate::support::mock`, sources beside each shape; OpenBao has none of this):
//! the topology Vault recommends (a DR secondary for every performance cluster) is
//! healthy with the set written as operators write it, a DR promotion moves
//! `perf-primary`, the old primary coming back is two primaries; the streams' health
//! and where they dial; redacted listeners; removed and HA-unhealthy nodes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};

use crate::support::agent::{run_cli, Agent};
use crate::support::config::{agent_config, nodes};
use crate::support::dns::{ask, ips, rcode};
use crate::support::mock::{cluster, set_modes, Behavior, MockNode};
use crate::support::openbao::eventually;

const WITHIN: Duration = Duration::from_secs(10);

/// The `data` of every node's `/v1/sys/replication/status` (forwarded to the active
/// node by a standby, so all answer alike).
fn set_status(nodes: &[MockNode], data: Value) {
    for n in nodes {
        n.set_role(|r| r.replication_status = Some(data.clone()));
    }
}

/// A primary's side of one kind (`replication/index.mdx`, primary), listing
/// `secondaries` by id.
fn primary(cluster_id: &str, last_wal: u64, secondaries: &[&str]) -> Value {
    let listed: Vec<Value> = secondaries
        .iter()
        .map(|id| {
            json!({"node_id": id, "api_address": "https://127.0.0.1:49158",
                "cluster_address": "https://127.0.0.1:49160", "connection_status": "connected",
                "last_heartbeat": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                "last_heartbeat_duration_ms": "1", "clock_skew_ms": "0",
                "replication_primary_canary_age_ms": "660"})
        })
        .collect();
    json!({"mode": "primary", "state": "running", "cluster_id": cluster_id, "last_wal": last_wal,
        "known_secondaries": secondaries, "merkle_root": "56794a98", "primary_cluster_addr": "",
        "secondaries": listed})
}

/// A secondary's side of one kind (`replication-dr.mdx`, secondary): it dials
/// `dials` and knows the primary's nodes `known`.
fn secondary(
    cluster_id: &str,
    id: &str,
    state: &str,
    wal: u64,
    dials: &str,
    known: &[String],
) -> Value {
    json!({"mode": "secondary", "state": state, "connection_state": "ready",
        "cluster_id": cluster_id, "secondary_id": id, "last_remote_wal": wal,
        "merkle_root": "56794a98", "primary_cluster_addr": dials,
        "known_primary_cluster_addrs": known, "primaries": []})
}

const DISABLED: &str = r#"{"mode":"disabled"}"#;

fn both(perf: Value, dr: Value) -> Value {
    json!({"performance": perf, "dr": dr})
}

/// The cluster addresses of `<net>.1-3` (what a secondary learns from heartbeats).
fn cluster_addrs(net: &str) -> Vec<String> {
    (1..=3).map(|i| format!("https://{net}.{i}:8201")).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn a(dns: SocketAddr, name: &str) -> Vec<IpAddr> {
    ips(&ask(dns, name, RecordType::A).once())
}

fn status(admin: &str) -> (i32, String) {
    let out = run_cli(&["status", "--admin", admin]);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn metric(agent: &Agent, series: &str) -> Option<f64> {
    let (_, body) = agent.admin_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn status_json(agent: &Agent) -> Value {
    serde_json::from_str(&agent.admin_get("/status").1).unwrap()
}

/// The stream of `cluster` and `kind` in `/status`.
fn stream(status: &Value, cluster: &str, kind: &str) -> Value {
    status["replication"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["cluster"] == cluster && s["kind"] == kind)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The recommended topology: `east` (the performance primary) with its DR secondary
/// `east-dr`, `west` (a performance secondary) with its DR secondary `west-dr`. Each
/// DR secondary mirrors its DR primary's performance mode and answers 472 from every
/// node. Streams as HashiCorp's examples show them, dialling the agent's names.
struct Topology {
    east: Vec<MockNode>,
    east_dr: Vec<MockNode>,
    west: Vec<MockNode>,
    west_dr: Vec<MockNode>,
}

async fn topology(net: &str) -> Topology {
    let t = Topology {
        east: cluster(&format!("{net}.1"), "primary", "primary").await,
        east_dr: cluster(&format!("{net}.2"), "primary", "secondary").await,
        west: cluster(&format!("{net}.3"), "secondary", "primary").await,
        west_dr: cluster(&format!("{net}.4"), "secondary", "secondary").await,
    };
    let disabled: Value = serde_json::from_str(DISABLED).unwrap();
    set_status(
        &t.east,
        both(
            primary("perf-set", 230, &["west"]),
            primary("dr-east", 230, &["east-dr"]),
        ),
    );
    set_status(
        &t.east_dr,
        both(
            disabled.clone(),
            secondary(
                "dr-east",
                "east-dr",
                "stream-wals",
                230,
                "https://active.vault.service.east.consul:8201",
                &cluster_addrs(&format!("{net}.1")),
            ),
        ),
    );
    set_status(
        &t.west,
        both(
            secondary(
                "perf-set",
                "west",
                "stream-wals",
                223,
                "https://active.vault.service.perf-primary.consul:8201",
                &cluster_addrs(&format!("{net}.1")),
            ),
            primary("dr-west", 90, &["west-dr"]),
        ),
    );
    set_status(
        &t.west_dr,
        both(
            disabled,
            secondary(
                "dr-west",
                "west-dr",
                "stream-wals",
                90,
                "https://active.vault.service.west.consul:8201",
                &cluster_addrs(&format!("{net}.3")),
            ),
        ),
    );
    t
}

/// An agent in `east` watching all four, the set written as operators write it today:
/// every cluster listed, nothing more. Its admin endpoint is on the DNS address's IP
/// (`crate::support::agent`).
fn topology_agent(net: &str) -> (Agent, SocketAddr, String) {
    let dns: SocketAddr = format!("{net}.0.1:8600").parse().unwrap();
    let admin = format!("{net}.0.1:9464");
    let fast = [("poll_interval", "100ms")];
    let config = agent_config("east", &dns.to_string())
        .cluster("east", &nodes(&format!("{net}.1"), 3), &fast)
        .cluster("east-dr", &nodes(&format!("{net}.2"), 3), &fast)
        .cluster("west", &nodes(&format!("{net}.3"), 3), &fast)
        .cluster("west-dr", &nodes(&format!("{net}.4"), 3), &fast)
        .replication(&["east", "east-dr", "west", "west-dr"]);
    (Agent::start(&config.toml(), dns), dns, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recommended_topology_is_healthy_and_a_dr_promotion_moves_perf_primary() {
    let t = topology("127.49").await;
    let (agent, dns, admin) = topology_agent("127.49");
    let perf_active = "active.vault.service.perf-primary.consul";
    ask(dns, perf_active, RecordType::A)
        .until("perf-primary names east's active node", |m| {
            ips(m) == vec![ip("127.49.1.1")]
        })
        .await;
    assert_eq!(
        a(dns, "active.vault.service.dr-primary.consul"),
        vec![ip("127.49.1.1")],
        "dr-primary follows the performance primary's DR set"
    );
    the_topology_is_healthy(&agent, &admin).await;
    a_dr_promotion_moves_both_labels(&t, dns, perf_active).await;
    the_old_primary_back_is_two_primaries(&t, dns, &admin, perf_active).await;
}

/// Step: healthy: status 0, one primary per set in the metric, no ERROR; every stream
/// flowing from its primary, with the lag and secondaries their primaries report.
async fn the_topology_is_healthy(agent: &Agent, admin: &str) {
    eventually(WITHIN, "every stream is read and judged", || async {
        let s = status_json(agent);
        let streams = s["replication"]["streams"].as_array()?.len();
        (streams == 6).then_some(())
    })
    .await;
    let (code, table) = status(admin);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("east-dr: primary as a DR secondary"),
        "{table}"
    );
    assert_eq!(
        metric(agent, r#"vault_locator_replication_primaries{kind="perf"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(agent, r#"vault_locator_replication_primaries{kind="dr"}"#),
        Some(1.0)
    );
    assert!(!agent.log().contains("level=ERROR"), "{}", agent.log());
    let s = status_json(agent);
    let dr = &s["replication"]["primaries"][1];
    assert_eq!(dr["sets"], json!([["east"], ["west"]]));
    for (cluster, kind, from) in [
        ("east-dr", "dr", "east"),
        ("west", "perf", "east"),
        ("west-dr", "dr", "west"),
    ] {
        let st = stream(&s, cluster, kind);
        assert_eq!(st["streaming"], true, "{st}");
        assert_eq!(st["primary"], from, "{st}");
        assert_eq!(st["warnings"], json!([]), "{st}");
    }
    assert_eq!(stream(&s, "west", "perf")["wal_lag"], 7);
    assert_eq!(
        stream(&s, "east", "perf")["secondaries"][0]["cluster"],
        "west"
    );
    assert_eq!(
        run_cli(&["status", "--admin", admin, "--is-primary", "perf"])
            .status
            .code(),
        Some(0)
    );
}

/// Step: east is lost; its DR secondary is promoted: it is the performance primary now,
/// and both labels move to it.
async fn a_dr_promotion_moves_both_labels(t: &Topology, dns: SocketAddr, perf_active: &str) {
    for n in &t.east {
        n.set(Behavior::Stall);
    }
    set_modes(&t.east_dr, "primary", "primary");
    set_status(
        &t.east_dr,
        both(
            primary("perf-set", 231, &["west"]),
            primary("dr-east", 231, &[]),
        ),
    );
    ask(dns, perf_active, RecordType::A)
        .until("perf-primary moves to the promoted cluster", |m| {
            ips(m) == vec![ip("127.49.2.1")]
        })
        .await;
    ask(dns, "active.vault.service.dr-primary.consul", RecordType::A)
        .until("so does dr-primary", |m| ips(m) == vec![ip("127.49.2.1")])
        .await;
}

/// Step: the old primary comes back still claiming both: two primaries, answered as
/// neither (they share a DR set); each cluster's own name still answers.
async fn the_old_primary_back_is_two_primaries(
    t: &Topology,
    dns: SocketAddr,
    admin: &str,
    perf_active: &str,
) {
    for (i, n) in t.east.iter().enumerate() {
        n.set(Behavior::Node {
            active: i == 0,
            leader: "http://127.49.1.1:8200".into(),
        });
    }
    ask(dns, perf_active, RecordType::A)
        .until("two performance primaries: SERVFAIL", |m| {
            rcode(m) == ResponseCode::ServFail
        })
        .await;
    let m = ask(dns, "active.vault.service.dr-primary.consul", RecordType::A).once();
    assert_eq!(
        rcode(&m),
        ResponseCode::ServFail,
        "east and east-dr share a DR set"
    );
    assert_eq!(status(admin).0, 5);
    // Each cluster's own name still answers for its own active node.
    assert_eq!(
        a(dns, "active.vault.service.east-dr.consul"),
        vec![ip("127.49.2.1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_or_dials_nowhere_shows_and_is_measured() {
    let t = topology("127.50").await;
    let (agent, _dns, admin) = topology_agent("127.50");
    let streaming = r#"vault_locator_replication_streaming{cluster="west",kind="perf"}"#;
    eventually(WITHIN, "west's stream is measured", || async {
        (metric(&agent, streaming)? == 1.0).then_some(())
    })
    .await;
    // west's performance stream goes idle (replication stopped).
    let disabled: Value = serde_json::from_str(DISABLED).unwrap();
    let west = |state: &str, known: &[String]| {
        both(
            secondary(
                "perf-set",
                "west",
                state,
                200,
                "https://active.vault.service.perf-primary.consul:8201",
                known,
            ),
            primary("dr-west", 90, &["west-dr"]),
        )
    };
    set_status(&t.west, west("idle", &cluster_addrs("127.50.1")));
    eventually(Duration::from_secs(30), "the idle stream shows", || async {
        (metric(&agent, streaming)? == 0.0).then_some(())
    })
    .await;
    let st = stream(&status_json(&agent), "west", "perf");
    assert_eq!(st["streaming"], false);
    assert_eq!(st["state"], "idle");
    assert_eq!(st["wal_lag"], 30);
    assert_eq!(
        metric(
            &agent,
            r#"vault_locator_replication_wal_lag{cluster="west",kind="perf"}"#
        ),
        Some(30.0)
    );
    assert!(
        agent.log().lines().any(|l| l.contains("level=WARN")
            && l.contains("replication stream not flowing")
            && l.contains("cluster=west")),
        "{}",
        agent.log()
    );
    let (_, table) = status(&admin);
    assert!(
        table.contains("stream perf west: secondary state idle"),
        "{table}"
    );

    // Every node west knows of its primary is gone (east's nodes were replaced).
    let gone: Vec<String> = (1..=3)
        .map(|i| format!("https://10.9.9.{i}:8201"))
        .collect();
    set_status(&t.west, west("stream-wals", &gone));
    let ok = r#"vault_locator_replication_stream_address_ok{cluster="west",kind="perf"}"#;
    eventually(
        Duration::from_secs(30),
        "the stale addresses show",
        || async { (metric(&agent, ok)? == 0.0).then_some(()) },
    )
    .await;
    let st = stream(&status_json(&agent), "west", "perf");
    assert!(
        st["warnings"][0]
            .as_str()
            .unwrap()
            .contains("none of known_primary_cluster_addrs"),
        "{st}"
    );
    let (_, table) = status(&admin);
    assert!(
        table.contains("WARNING: none of known_primary_cluster_addrs"),
        "{table}"
    );
    drop(disabled);
}

/// A cluster of stand-ins on `<net>.1-3`, the agent in it.
fn plain_agent(net: &str) -> (Agent, SocketAddr) {
    let dns: SocketAddr = format!("{net}.100:8600").parse().unwrap();
    let config = agent_config("dc1", &dns.to_string()).cluster(
        "dc1",
        &nodes(net, 3),
        &[("poll_interval", "100ms")],
    );
    (Agent::start(&config.toml(), dns), dns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_listeners_name_the_one_claimant() {
    let nodes = cluster("127.51.1", "disabled", "disabled").await;
    for n in &nodes {
        n.set_role(|r| r.redacted = true);
    }
    let (_agent, dns) = plain_agent("127.51.1");
    let active = "active.vault.service.dc1.consul";
    ask(dns, active, RecordType::A)
        .until("the claimant is named", |m| {
            ips(m) == vec![ip("127.51.1.1")]
        })
        .await;
    // The claim moves to node 2.
    let leader = |n: usize| Behavior::Node {
        active: n == 1,
        leader: String::new(),
    };
    nodes[0].set(leader(0));
    nodes[1].set(leader(1));
    ask(dns, active, RecordType::A)
        .until("the new claimant is named", |m| {
            ips(m) == vec![ip("127.51.1.2")]
        })
        .await;
    // Two claimants: nobody.
    nodes[0].set(leader(1));
    ask(dns, active, RecordType::A)
        .until("two claimants name nobody", |m| {
            rcode(m) == ResponseCode::NXDomain
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_never_named_and_an_ha_unhealthy_standby_is_shown() {
    let nodes = cluster("127.52.1", "disabled", "disabled").await;
    // Node 3 was removed from raft and still believes it leads.
    nodes[2].set(Behavior::Node {
        active: true,
        leader: "http://127.52.1.3:8200".into(),
    });
    nodes[2].set_role(|r| r.removed = true);
    nodes[1].set_role(|r| r.ha_unhealthy = true);
    let (agent, dns) = plain_agent("127.52.1");
    ask(dns, "active.vault.service.dc1.consul", RecordType::A)
        .until("node 1 leads", |m| ips(m) == vec![ip("127.52.1.1")])
        .await;
    eventually(WITHIN, "every role is read", || async {
        let s = status_json(&agent);
        let roles: Vec<String> = s["clusters"][0]["members"]
            .as_array()?
            .iter()
            .map(|m| m["role"].as_str().unwrap_or("").to_string())
            .collect();
        (roles
            == [
                "active",
                "standby (HA connection unhealthy)",
                "removed from the cluster",
            ])
        .then_some(())
    })
    .await;
    // The 474 standby stays under standby; the removed node is nowhere.
    assert_eq!(
        a(dns, "standby.vault.service.dc1.consul"),
        vec![ip("127.52.1.2")]
    );
    let mut all = a(dns, "vault.service.dc1.consul");
    all.sort();
    assert_eq!(all, vec![ip("127.52.1.1"), ip("127.52.1.2")]);
    // Even when it is the only one claiming.
    nodes[0].set(Behavior::Node {
        active: false,
        leader: "http://127.52.1.3:8200".into(),
    });
    nodes[1].set(Behavior::Node {
        active: false,
        leader: "http://127.52.1.3:8200".into(),
    });
    ask(dns, "active.vault.service.dc1.consul", RecordType::A)
        .until("the removed node is never named", |m| {
            rcode(m) == ResponseCode::NXDomain
        })
        .await;
}
