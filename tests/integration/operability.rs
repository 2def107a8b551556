//! Operating the agent: metrics that move with traffic and failover, the status command,
//! systemd notifications, and a clean stop under load.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::addr;
use crate::support::agent::{run_cli, Agent};
use crate::support::config::{agent_config, dc1, nodes};
use crate::support::dns::{ask, build_query, Proto};
use crate::support::mock::MockNode;
use crate::support::openbao::{eventually, Cluster};
use crate::support::tls::observe;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

/// Sum of the samples of `name` whose labels include every `k="v"` pair.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(agent: &Agent) -> String {
    let (code, body) = agent.admin_get("/metrics");
    assert_eq!(code, 200);
    body
}

/// Writes `config`, sends SIGHUP, and waits for the agent to log `line`.
async fn reload_logs(agent: &Agent, config: &str, line: &str) {
    agent.write_config(config);
    agent.signal("HUP");
    eventually(Duration::from_secs(10), line, || async {
        agent.log().contains(line).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_follow_a_real_cluster() {
    let mut cluster = Cluster::start(24, 0, 3).await;
    let dns = addr("127.24.0.100:8600");
    let agent = Agent::with(
        &dc1(
            "127.24.0",
            3,
            &[("poll_interval", "250ms"), ("serve_stale_for", "2s")],
        )
        .proxy("dc1", "127.24.0.200:8201", &[]),
    );
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(20),
        "ready with a full view",
        || async {
            let (code, _) = agent.admin_get("/ready");
            let out = run_cli(&["status", "--admin", &agent.admin.to_string()]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (code == 200 && out.status.code() == Some(0) && text.matches("standby").count() == 2)
                .then_some(())
        },
    )
    .await;
    assert_eq!(agent.admin_get("/live").0, 200);

    status_names_the_leader_and_each_role(&agent, &cluster, leader);
    let changes_before = counters_move_with_the_traffic(&agent, dns).await;
    a_failover_moves_the_leader_change_counter(&mut cluster, &agent, leader, changes_before).await;
    a_dead_cluster_is_unhealthy_then_stale(&mut cluster, &agent).await;
}

/// Step: `status` names the leader and every member's role, in the table and in JSON.
fn status_names_the_leader_and_each_role(agent: &Agent, cluster: &Cluster, leader: usize) {
    let leader_api = format!("http://{}:8200", cluster.ip(leader));
    let out = run_cli(&["status", "--admin", &agent.admin.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&leader_api), "{text}");
    for i in 0..3 {
        let role = if i == leader { "active" } else { "standby" };
        let line = text
            .lines()
            .find(|l| l.contains(&format!("http://{}:8200/", cluster.ip(i))))
            .unwrap_or_else(|| panic!("no member line for node {i}: {text}"));
        assert!(line.contains(role), "node {i} should be {role}: {line}");
    }
    let out = run_cli(&["status", "--admin", &agent.admin.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clusters"][0]["leader"]["api_addr"], leader_api.as_str());
    assert_eq!(v["clusters"][0]["state"], "fresh");
    assert_eq!(v["proxies"][0]["listen"], "127.24.0.200:8201");
}

/// Step: the DNS and proxy counters move with the traffic sent; returns the leader
/// changes counted so far.
async fn counters_move_with_the_traffic(agent: &Agent, dns: std::net::SocketAddr) -> f64 {
    let before = scrape(agent);
    for _ in 0..3 {
        ask(dns, "active.vault.service.consul", RecordType::A).once();
    }
    for _ in 0..2 {
        ask(dns, "nope.vault.service.consul", RecordType::A)
            .over(Proto::Tcp)
            .once();
    }
    ask(dns, "example.com", RecordType::A).once();
    // Proxy counters: one forwarded, one rejected (raft is never sent to the active).
    let proxy = addr("127.24.0.200:8201");
    assert!(observe(proxy, b"req_fw_sb-act_v1").await.is_some());
    assert!(observe(proxy, b"raft_storage_v1").await.is_none());
    let after = scrape(agent);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(
        delta("vault_locator_dns_responses_total", &[("rcode", "NOERROR")]),
        3.0
    );
    assert_eq!(
        delta(
            "vault_locator_dns_responses_total",
            &[("rcode", "NXDOMAIN")]
        ),
        2.0
    );
    assert_eq!(
        delta("vault_locator_dns_responses_total", &[("rcode", "REFUSED")]),
        1.0
    );
    assert_eq!(
        delta(
            "vault_locator_dns_requests_total",
            &[("proto", "tcp"), ("type", "A")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "vault_locator_proxy_connections_total",
            &[("alpn", "req_fw_sb-act_v1"), ("result", "forwarded")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "vault_locator_proxy_connections_total",
            &[("alpn", "raft_storage_v1"), ("result", "alpn_rejected")]
        ),
        1.0
    );
    assert!(
        metric(
            &after,
            "vault_locator_dns_request_duration_seconds_count",
            &[]
        ) >= 6.0
    );
    assert_eq!(
        metric(
            &after,
            "vault_locator_vault_cluster_nodes",
            &[("state", "reachable")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &after,
            "vault_locator_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let changes_before = metric(
        &after,
        "vault_locator_vault_leader_changes_total",
        &[("cluster", "dc1")],
    );
    assert!(changes_before >= 1.0, "the first view counts as a change");
    changes_before
}

/// Step: a real failover moves the leader-change counter and counts the dead node's
/// connect errors.
async fn a_failover_moves_the_leader_change_counter(
    cluster: &mut Cluster,
    agent: &Agent,
    leader: usize,
    changes_before: f64,
) {
    cluster.kill(leader);
    let new = cluster.wait_leader(Duration::from_secs(60)).await;
    let new_api = format!("http://{}:8200", cluster.ip(new));
    // The table lists every member, so the new leader's address is in it from the
    // start: wait for the leader column (the line that starts with the cluster).
    eventually(
        Duration::from_secs(20),
        "status shows the new leader",
        || async {
            let out = run_cli(&["status", "--admin", &agent.admin.to_string()]);
            let table = String::from_utf8_lossy(&out.stdout).into_owned();
            let led = table
                .lines()
                .any(|l| l.starts_with("dc1 ") && l.contains(&new_api));
            led.then_some(())
        },
    )
    .await;
    let m = scrape(agent);
    assert!(
        metric(
            &m,
            "vault_locator_vault_leader_changes_total",
            &[("cluster", "dc1")]
        ) >= changes_before + 1.0
    );
    assert!(
        metric(
            &m,
            "vault_locator_vault_poll_errors_total",
            &[("cluster", "dc1"), ("kind", "connect")]
        ) >= 1.0
    );
}

/// Step: with every node dead, `status` exits 5 at once, and the view turns stale.
async fn a_dead_cluster_is_unhealthy_then_stale(cluster: &mut Cluster, agent: &Agent) {
    for i in 0..3 {
        cluster.kill(i);
    }
    eventually(
        Duration::from_secs(20),
        "status reports the cluster unhealthy",
        || async {
            let out = run_cli(&["status", "--admin", &agent.admin.to_string()]);
            (out.status.code() == Some(5)).then_some(())
        },
    )
    .await;
    // Unhealthy already once the leader is gone; stale once no node answers at all
    // (the kills are sequential, and leaderless rounds run every 50 ms).
    eventually(Duration::from_secs(20), "the stale gauge", || async {
        let stale = metric(
            &scrape(agent),
            "vault_locator_vault_cluster_stale",
            &[("cluster", "dc1")],
        );
        (stale == 1.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_ready_status_watchdog_and_stopping() {
    let _node = MockNode::active_leader("127.36.0.1").await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut agent = Agent::start_with_env(
        &agent_config("dc1", "127.36.0.100:8600")
            .cluster("dc1", &nodes("127.36.0", 1), &[("poll_interval", "100ms")])
            .toml(),
        addr("127.36.0.100:8600"),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let recv = |sock: &UnixDatagram| {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    // The first notification after the DNS sockets are stored with the manager
    // (FDSTORE, see `fdstore`) is READY=1.
    let first = loop {
        let m = recv(&sock);
        if !m.starts_with("FDSTORE") {
            break m;
        }
    };
    assert!(first.contains("READY=1"), "{first}");
    assert!(
        first.contains("STATUS=dc1: http://127.36.0.1:8200"),
        "{first}"
    );

    // WATCHDOG=1 every WatchdogSec/2 = 200 ms: about 10 in 2 s (after draining what
    // queued up while the test was starting the agent).
    sock.set_nonblocking(true).unwrap();
    while sock.recv(&mut [0u8; 4096]).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if recv(&sock).contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!((6..=14).contains(&pings), "{pings} watchdog pings in 2 s");

    // A reload is framed by RELOADING=1 (with MONOTONIC_USEC) and READY=1.
    agent.signal("HUP");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(seen.contains("RELOADING=1") && seen.contains("READY=1")) {
        assert!(Instant::now() < deadline, "no RELOADING/READY pair: {seen}");
        let m = recv(&sock);
        if m.contains("RELOADING=1") {
            assert!(m.contains("MONOTONIC_USEC="), "{m}");
            seen.push_str(&m);
        } else if seen.contains("RELOADING=1") && m.contains("READY=1") {
            seen.push_str(&m);
        }
    }

    agent.signal("TERM");
    let mut stopping = false;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        let mut buf = [0u8; 4096];
        match sock.recv(&mut buf) {
            Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") => {
                stopping = true;
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_in_flight_dns_and_drains_proxy_connections() {
    let _node = MockNode::active_leader("127.35.0.1").await;
    // The "cluster port" of the active node: a plain TCP echo.
    crate::support::tls::spawn_echo("127.35.0.1:8201");
    let dns = addr("127.35.0.100:8600");
    let mut agent = Agent::start(
        &agent_config("dc1", "127.35.0.100:8600")
            .top("drain_timeout", "2s")
            .dns("lameduck", "1s")
            .cluster("dc1", &nodes("127.35.0", 1), &[("poll_interval", "100ms")])
            .proxy("dc1", "127.35.0.200:8201", &[])
            .toml(),
        dns,
    );
    ask(dns, "active.vault.service.consul", RecordType::A)
        .until("active answers", |m| !m.answers.is_empty())
        .await;

    // A proxied connection, working.
    let mut conn = crate::support::tls::echoed_hello("127.35.0.200:8201");

    // 200 queries pipelined on one TCP connection and 100 UDP queries, then SIGTERM
    // before reading any answer: every one is answered.
    let mut tcp = TcpStream::connect(dns).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let q = build_query("active.vault.service.consul", RecordType::A);
    let mut framed = Vec::new();
    for _ in 0..200 {
        framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
        framed.extend_from_slice(&q);
    }
    tcp.write_all(&framed).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..100 {
        udp.send_to(&q, dns).unwrap();
    }
    let stopped_at = Instant::now();
    agent.signal("TERM");
    for i in 0..200 {
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len)
            .unwrap_or_else(|e| panic!("TCP answer {i} lost: {e}"));
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        tcp.read_exact(&mut msg).unwrap();
        assert!(!Message::from_vec(&msg).unwrap().answers.is_empty());
    }
    for i in 0..100 {
        let mut buf = [0u8; 512];
        udp.recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("UDP answer {i} lost: {e}"));
    }

    // The proxied connection keeps working while it drains...
    conn.write_all(b"still here").unwrap();
    let mut b = [0u8; 10];
    conn.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"still here");
    // ...and is closed by the drain deadline (lame duck 1 s + drain 2 s).
    let mut rest = [0u8; 16];
    match conn.read(&mut rest) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
    }
    assert!(
        stopped_at.elapsed() < Duration::from_secs(8),
        "closed by the drain deadline"
    );
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

/// SIGHUP with a broken config keeps the old one answering; with a good one the new
/// static record and the new cluster are answered, while a proxy connection opened
/// before the reload stays open and working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_old_on_error_and_applies_good_config() {
    let _n1 = MockNode::active_leader("127.38.0.1").await;
    let _n2 = MockNode::active_leader("127.38.1.1").await;
    crate::support::tls::spawn_echo("127.38.0.1:8201");
    let dns = addr("127.38.0.100:8600");
    let base = &agent_config("dc1", "127.38.0.100:8600")
        .top("drain_timeout", "1s")
        .record("old.example.internal", &[("a", "[\"192.0.2.1\"]")])
        .cluster("dc1", &nodes("127.38.0", 1), &[("poll_interval", "100ms")])
        .proxy("dc1", "127.38.0.200:8201", &[])
        .toml();
    let mut agent = Agent::start(base, dns);
    ask(dns, "active.vault.service.dc1.consul", RecordType::A)
        .until("dc1 answers", |m| !m.answers.is_empty())
        .await;
    let mut conn = crate::support::tls::echoed_hello("127.38.0.200:8201");
    let echo_ok = |conn: &mut TcpStream, what: &[u8]| {
        conn.write_all(what).unwrap();
        let mut b = vec![0u8; what.len()];
        conn.read_exact(&mut b).unwrap();
        assert_eq!(b, what);
    };

    // A broken config: logged, and the old one keeps answering.
    let broken = base.replace("poll_interval", "poll_intervall");
    reload_logs(&agent, &broken, "reload rejected").await;
    let m = ask(dns, "old.example.internal", RecordType::A).once();
    assert_eq!(
        crate::support::dns::ips(&m),
        vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let m = ask(dns, "active.vault.service.dc1.consul", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert!(!m.answers.is_empty());
    echo_ok(&mut conn, b"after bad reload");

    // A valid config whose new admin address another process holds: the reload fails
    // before anything changes, and the old admin endpoint keeps serving.
    let holder = std::net::TcpListener::bind("127.38.0.101:9464").unwrap();
    let taken = format!("{base}\n[admin]\nlisten = \"127.38.0.101:9464\"\n");
    reload_logs(&agent, &taken, "reload failed").await;
    assert_eq!(
        agent.admin_get("/live").0,
        200,
        "the old admin endpoint serves"
    );
    drop(holder);
    agent.write_config(base);

    // A good config: a new record and a new cluster.
    let good = base.replace("old.example.internal", "new.example.internal")
        + agent_config("dc1", "-")
            .cluster("dc2", &nodes("127.38.1", 1), &[("poll_interval", "100ms")])
            .tables();
    agent.write_config(&good);
    agent.signal("HUP");
    // The new generation answers as soon as it is bound; the reload is complete (the
    // old generation retired) when the agent says so.
    eventually(Duration::from_secs(10), "the reload completes", || async {
        agent.log().contains("reload applied").then_some(())
    })
    .await;
    ask(dns, "new.example.internal", RecordType::A)
        .until("the new record is answered", |m| !m.answers.is_empty())
        .await;
    ask(dns, "active.vault.service.dc2.consul", RecordType::A)
        .until("the new cluster is answered", |m| {
            crate::support::dns::ips(m) == vec!["127.38.1.1".parse::<std::net::IpAddr>().unwrap()]
        })
        .await;
    let m = ask(dns, "old.example.internal", RecordType::A).once();
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::Refused,
        "old record gone"
    );
    echo_ok(&mut conn, b"after good reload");
    // The kept proxy listener still accepts.
    crate::support::tls::echoed_hello("127.38.0.200:8201");
    assert_eq!(agent.stop(), Some(0));
}
