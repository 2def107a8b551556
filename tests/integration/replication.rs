//! A replication set, with mock nodes standing in for Vault Enterprise (OpenBao has no
//! replication): the `perf-primary` names and proxy follow the performance primary
//! through a promotion, two primaries are answered as neither, a primary seen only
//! through a stale view never counts as a second one, and `status --is-primary` flips.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use tokio::io::AsyncReadExt;

use crate::support::agent::{run_cli, Agent};
use crate::support::config::{agent_config, nodes};
use crate::support::dns::{ask, has_soa, ips, rcode, Proto};
use crate::support::mock::{cluster, set_modes, Behavior, MockNode};
use crate::support::openbao::eventually;
use crate::support::tls::{connect, FakeNode, Pki, ALPN_FW};

const DNS: &str = "127.47.0.1:8600";
const ADMIN: &str = "127.47.0.1:9464";
const PROXY: &str = "127.47.0.2:8201";

/// A replication set of two regions on `<net>.1.*` (east, the perf primary) and
/// `<net>.2.*` (west, its secondary), and a TLS node on each active node's cluster port.
struct Regions {
    east: Vec<MockNode>,
    west: Vec<MockNode>,
    pki: Pki,
    east_fw: FakeNode,
    west_fw: FakeNode,
}

async fn regions(net: &str) -> Regions {
    let pki = Pki::new();
    let at = |r: u8| format!("{net}.{r}.1:8201").parse().unwrap();
    Regions {
        east: cluster(&format!("{net}.1"), "primary", "disabled").await,
        west: cluster(&format!("{net}.2"), "secondary", "disabled").await,
        east_fw: FakeNode::start(&pki, at(1), "east").await,
        west_fw: FakeNode::start(&pki, at(2), "west").await,
        pki,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn a(name: &str) -> Vec<IpAddr> {
    let mut got = ips(&ask(DNS.parse().unwrap(), name, RecordType::A).once());
    got.sort();
    got
}

const PERF_ACTIVE: &str = "active.vault.service.perf-primary.consul";

/// Waits until `dns` answers `active.vault.service.perf-primary` as `accept` wants.
async fn perf_active(
    dns: SocketAddr,
    what: &str,
    accept: impl Fn(&hickory_proto::op::Message) -> bool,
) {
    ask(dns, PERF_ACTIVE, RecordType::A)
        .until(what, accept)
        .await;
}

/// Writes `config`, sends SIGHUP and waits for the agent's `n`th applied reload.
async fn reload(agent: &Agent, config: &str, n: usize) {
    agent.write_config(config);
    agent.signal("HUP");
    eventually(Duration::from_secs(10), "the reload is applied", || async {
        (agent.log().matches("reload applied").count() == n).then_some(())
    })
    .await;
}

/// `status --is-primary KIND`'s exit code.
fn is_primary(kind: &str) -> i32 {
    run_cli(&["status", "--admin", ADMIN, "--is-primary", kind])
        .status
        .code()
        .unwrap()
}

/// What `systemd/examples/primary-gate.service` does now: its `ExecStart=` shell line
/// (with systemd's `$$` unescaped), run with this build against the test agent, and a
/// stand-in `systemctl` that records what it was asked. "" when it asked nothing.
fn gate() -> String {
    let exec = crate::support::unit_line("systemd/examples/primary-gate.service", "ExecStart");
    let script = exec
        .strip_prefix("/bin/sh -c '")
        .and_then(|l| l.strip_suffix('\''))
        .expect("the gate runs a shell line")
        .replace("$$", "$")
        .replace(
            "/usr/bin/vault-locator status",
            &format!("{} status --admin {ADMIN}", crate::support::agent::bin()),
        );
    // The job's own condition is the command `is_primary` runs.
    let condition =
        crate::support::unit_line("systemd/examples/consul-replicate.service", "ExecCondition");
    assert_eq!(condition, "/usr/bin/vault-locator status --is-primary perf");
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("systemctl");
    std::fs::write(
        &stub,
        "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/asked\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(status.success(), "the gate itself never fails");
    std::fs::read_to_string(dir.path().join("asked"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn primaries_metric(agent: &Agent, kind: &str) -> Option<f64> {
    let (_, body) = agent.admin_get("/metrics");
    let prefix = format!("vault_locator_replication_primaries{{kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

/// The certificate of the node a TLS connection through `proxy` reaches, or None when
/// the proxy refuses.
async fn reached(pki: &Pki, proxy: &str) -> Option<Vec<u8>> {
    let tls = connect(proxy.parse().unwrap(), pki.client(&[ALPN_FW]))
        .await
        .ok()?;
    let (_, conn) = tls.get_ref();
    Some(conn.peer_certificates()?[0].to_vec())
}

/// Waits for the proxy to close `stream` (its node is no longer the one to reach).
async fn assert_closed<S: tokio::io::AsyncRead + Unpin>(mut stream: S, within: Duration) {
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(within, stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the stream to the old primary is closed: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_proxy_follow_the_primary_and_never_name_two() {
    let Regions {
        east,
        west,
        pki,
        east_fw,
        west_fw,
    } = regions("127.47").await;
    let dns: SocketAddr = DNS.parse().unwrap();
    let agent = Agent::start(
        &agent_config("us-east-1", DNS)
            .cluster(
                "us-east-1",
                &nodes("127.47.1", 3),
                &[("poll_interval", "100ms"), ("serve_stale_for", "1h")],
            )
            .cluster(
                "us-west-2",
                &nodes("127.47.2", 3),
                &[("poll_interval", "100ms")],
            )
            .replication(&["us-east-1", "us-west-2"])
            .proxy("perf-primary", PROXY, &[])
            .toml(),
        dns,
    );

    every_name_form_answers_for_the_primary(&agent, dns).await;
    // The proxy follows the primary: a replication stream reaches the east active.
    let stream = connect(PROXY.parse().unwrap(), pki.client(&[ALPN_FW]))
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.peer_certificates().unwrap()[0],
        east_fw.cert
    );
    a_promotion_moves_names_proxy_and_gate(dns, &east, &west, &pki, &west_fw, stream).await;
    two_primaries_are_answered_as_neither(&agent, dns, &east, &pki).await;
    a_stale_primary_never_counts_as_a_second_one(&agent, dns, &east).await;
}

/// Step: us-east-1 is the performance primary: every name form under perf-primary
/// answers for it; no cluster is a DR primary; the gate starts the job.
async fn every_name_form_answers_for_the_primary(agent: &Agent, dns: SocketAddr) {
    perf_active(dns, "perf-primary names the east active node", |m| {
        ips(m) == vec![ip("127.47.1.1")]
    })
    .await;
    assert_eq!(
        a("standby.vault.service.perf-primary.consul"),
        vec![ip("127.47.1.2"), ip("127.47.1.3")]
    );
    assert_eq!(a("vault.service.perf-primary.consul").len(), 3);
    let srv = ask(
        dns,
        "active.vault.service.perf-primary.consul",
        RecordType::SRV,
    )
    .over(Proto::Tcp)
    .once();
    match &srv.answers[0].data {
        RData::SRV(s) => {
            assert_eq!(s.port, 8200);
            assert_eq!(s.target.to_string(), "7f2f0101.addr.perf-primary.consul.");
        }
        other => panic!("not an SRV answer: {other:?}"),
    }
    assert_eq!(
        a("7f2f0101.addr.perf-primary.consul"),
        vec![ip("127.47.1.1")]
    );
    // No cluster is a DR primary: NXDOMAIN with the SOA, as for a tag with no instance.
    let m = ask(dns, "active.vault.service.dr-primary.consul", RecordType::A).once();
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert!(has_soa(&m));
    assert_eq!(is_primary("perf"), 0, "us-east-1 is the perf primary");
    assert_eq!(is_primary("dr"), 3, "us-east-1 is no DR primary");
    assert_eq!(primaries_metric(agent, "perf"), Some(1.0));
    assert_eq!(primaries_metric(agent, "dr"), Some(0.0));
    assert_eq!(gate(), "start consul-replicate.service");
}

/// Step: promotion: us-west-2 becomes the primary, us-east-1 a secondary; the names,
/// the proxy's streams (the open one closed, new ones to the west) and the gate follow.
async fn a_promotion_moves_names_proxy_and_gate<S: tokio::io::AsyncRead + Unpin>(
    dns: SocketAddr,
    east: &[MockNode],
    west: &[MockNode],
    pki: &Pki,
    west_fw: &FakeNode,
    stream: S,
) {
    let within = Duration::from_secs(10);
    set_modes(east, "secondary", "disabled");
    set_modes(west, "primary", "disabled");
    perf_active(dns, "perf-primary follows the promotion", |m| {
        ips(m) == vec![ip("127.47.2.1")]
    })
    .await;
    assert_closed(stream, within).await;
    let west_cert = west_fw.cert.to_vec();
    eventually(within, "new streams reach the west active", || async {
        (reached(pki, PROXY).await? == west_cert).then_some(())
    })
    .await;
    assert_eq!(is_primary("perf"), 3, "us-east-1 is no longer the primary");
    assert_eq!(gate(), "stop consul-replicate.service");
}

/// Step: two primaries: names under the label answer SERVFAIL, never either cluster;
/// the proxy refuses, `status` exits 5, an ERROR names both; their own names answer.
async fn two_primaries_are_answered_as_neither(
    agent: &Agent,
    dns: SocketAddr,
    east: &[MockNode],
    pki: &Pki,
) {
    set_modes(east, "primary", "disabled");
    perf_active(dns, "two primaries answer SERVFAIL", |m| {
        rcode(m) == ResponseCode::ServFail
    })
    .await;
    for name in [
        "standby.vault.service.perf-primary.consul",
        "vault.service.perf-primary.consul",
    ] {
        let m = ask(dns, name, RecordType::A).once();
        assert_eq!(rcode(&m), ResponseCode::ServFail, "{name}");
    }
    assert_eq!(primaries_metric(agent, "perf"), Some(2.0));
    assert!(reached(pki, PROXY).await.is_none(), "the proxy refuses");
    assert_eq!(is_primary("perf"), 4, "two primaries: unknown");
    assert_eq!(gate(), "", "cannot tell: the gate leaves the job as it is");
    let status = run_cli(&["status", "--admin", ADMIN]);
    assert_eq!(status.status.code(), Some(5), "status flags two primaries");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("us-east-1 and us-west-2 all report performance mode primary"),
        "{table}"
    );
    assert!(
        agent.log().lines().any(|l| l.contains("ERROR")
            && l.contains("two primaries")
            && l.contains("us-east-1,us-west-2")),
        "an ERROR names both clusters:\n{}",
        agent.log()
    );
    // The real clusters' own names still answer.
    assert_eq!(
        a("active.vault.service.us-west-2.consul"),
        vec![ip("127.47.2.1")]
    );
}

/// Step: cut off from us-east-1 (its nodes stop answering): its view goes stale, still
/// saying "primary", and a stale primary never counts as a second one.
async fn a_stale_primary_never_counts_as_a_second_one(
    agent: &Agent,
    dns: SocketAddr,
    east: &[MockNode],
) {
    for n in east {
        n.set(Behavior::Stall);
    }
    perf_active(dns, "the fresh primary wins over the stale one", |m| {
        ips(m) == vec![ip("127.47.2.1")]
    })
    .await;
    assert_eq!(primaries_metric(agent, "perf"), Some(1.0));
    assert_eq!(is_primary("perf"), 4, "the local view is stale: unknown");
    let (_, json) = agent.admin_get("/status");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let perf = &status["replication"]["primaries"][0];
    assert_eq!(perf["label"], "perf-primary");
    assert_eq!(perf["primary"], "us-west-2");
    assert!(
        perf["why"]
            .as_str()
            .unwrap()
            .contains("us-east-1: primary, stale"),
        "{perf}"
    );
    let east_status = &status["clusters"][0];
    assert_eq!(east_status["name"], "us-east-1");
    assert_eq!(east_status["replication"]["perf"], "primary");
}

/// `GET /v1/sys/leader` through `api` (a proxy's API side): the answering node's
/// `leader_address`, when it says it is the leader.
async fn leader_behind(api: &str) -> Option<String> {
    let (_, body) = crate::support::get_json(&format!("http://{api}/v1/sys/leader")).await?;
    body["is_self"]
        .as_bool()?
        .then(|| body["leader_address"].as_str().map(str::to_string))?
}

fn set_config(west_poll: &str, with_set: bool) -> String {
    let west = [("poll_interval", west_poll)];
    let config = agent_config("us-west-2", "127.48.0.1:8600")
        .cluster(
            "us-east-1",
            &nodes("127.48.1", 3),
            &[("poll_interval", "100ms")],
        )
        .cluster("us-west-2", &nodes("127.48.2", 3), &west);
    if !with_set {
        return config.toml();
    }
    config
        .replication(&["us-east-1", "us-west-2"])
        .proxy("perf-primary", "127.48.0.2:8201", &[("answer", "true")])
        .toml()
}

/// Proxy mode for a virtual datacenter: `active.vault.service.perf-primary` answers the
/// listener, whose API side reaches the primary's active node and follows a promotion
/// across a reload that replaced one of the set's watchers; a reload without the set
/// takes the labels away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_follows_the_primary_across_reloads() {
    let Regions {
        east,
        west,
        pki,
        east_fw: _east_fw,
        west_fw,
    } = regions("127.48").await;
    let dns: SocketAddr = "127.48.0.1:8600".parse().unwrap();
    let agent = Agent::start(&set_config("100ms", true), dns);
    let within = Duration::from_secs(10);
    perf_active(dns, "proxy mode answers the listener", |m| {
        ips(m) == vec![ip("127.48.0.2")]
    })
    .await;
    let srv = ask(
        dns,
        "active.vault.service.perf-primary.consul",
        RecordType::SRV,
    )
    .once();
    assert!(
        matches!(&srv.answers[0].data, RData::SRV(s) if s.port == 8200),
        "SRV names the API port: {srv:?}"
    );
    let api = "127.48.0.2:8200";
    eventually(within, "the API side reaches the east active", || async {
        (leader_behind(api).await? == "http://127.48.1.1:8200").then_some(())
    })
    .await;
    // The local cluster is a secondary.
    assert_eq!(
        run_cli(&[
            "status",
            "--admin",
            "127.48.0.1:9464",
            "--is-primary",
            "perf"
        ])
        .status
        .code(),
        Some(3)
    );

    // A replication stream through the cluster side, open across the reload.
    let stream = connect("127.48.0.2:8201".parse().unwrap(), pki.client(&[ALPN_FW]))
        .await
        .unwrap();

    // Reload with one of the set's clusters changed: its watcher and the set are
    // replaced; the label keeps answering and then follows a promotion.
    reload(&agent, &set_config("150ms", true), 1).await;
    let m = ask(dns, PERF_ACTIVE, RecordType::A).once();
    assert_eq!(ips(&m), vec![ip("127.48.0.2")]);
    set_modes(&east, "secondary", "disabled");
    set_modes(&west, "primary", "disabled");
    eventually(within, "the API side follows the promotion", || async {
        (leader_behind(api).await? == "http://127.48.2.1:8200").then_some(())
    })
    .await;
    // The stream opened before the reload followed the set's successor: it is closed.
    assert_closed(stream, within).await;
    let west_cert = west_fw.cert.to_vec();
    eventually(within, "new streams reach the west active", || async {
        (reached(&pki, "127.48.0.2:8201").await? == west_cert).then_some(())
    })
    .await;
    eventually(within, "us-west-2 is now the primary", || async {
        let code = run_cli(&[
            "status",
            "--admin",
            "127.48.0.1:9464",
            "--is-primary",
            "perf",
        ])
        .status
        .code();
        (code == Some(0)).then_some(())
    })
    .await;

    // Without the set, the labels are unknown datacenters again, and the proxy is gone.
    reload(&agent, &set_config("150ms", false), 2).await;
    let m = ask(dns, PERF_ACTIVE, RecordType::A).once();
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    eventually(within, "the API side is closed", || async {
        leader_behind(api).await.is_none().then_some(())
    })
    .await;
}
