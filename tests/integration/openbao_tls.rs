//! Polling a real OpenBao cluster over TLS, as production listeners serve it: a private
//! CA (`ca_file`), a node that requires client certificates (`client_cert_file`,
//! `client_key_file`), a node addressed by IP whose certificate names only a host
//! (`tls_server_name`), a kill -9 failover, and a client certificate rotated on disk
//! and picked up by SIGHUP. Bad cases (wrong CA, no client certificate, no server name,
//! an expired server certificate) are named per node in `/status` and the log, and the
//! other nodes still count.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::support::agent::Agent;
use crate::support::config::agent_config;
use crate::support::dns::{ask, ips, rcode, Proto};
use crate::support::openbao::{
    eventually, ApiTls, Cluster, CLIENT_CERT_REQUIRED, NAME_ONLY, TLS_NAME,
};

/// An agent on `127.55.0.<host>` polling the TLS cluster with `tls` lines (and `extra`
/// after the cluster).
fn agent(host: u8, tls: &str, extra: &str) -> Agent {
    let dns: SocketAddr = format!("127.55.0.{host}:8600").parse().unwrap();
    let nodes: Vec<String> = (1..=3)
        .map(|i| format!("https://127.55.0.{i}:8200"))
        .collect();
    let config = agent_config("dc1", &dns.to_string())
        .cluster("dc1", &nodes, &[("poll_interval", "250ms")])
        .raw(tls)
        .raw(extra);
    Agent::start(&config.toml(), dns)
}

fn status(agent: &Agent) -> Value {
    serde_json::from_str(&agent.admin_get("/status").1).unwrap()
}

/// Each member's error in cluster `name` of `/status` ("" while it answers).
fn member_errors(agent: &Agent, name: &str) -> Vec<String> {
    let status = status(agent);
    let cluster = status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .expect("the cluster is in /status")
        .clone();
    cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["error"].as_str().unwrap_or("").to_string())
        .collect()
}

fn expiry_metric(agent: &Agent) -> Option<f64> {
    let (_, body) = agent.admin_get("/metrics");
    body.lines().find_map(|l| {
        l.strip_prefix("vault_locator_client_cert_expiry_timestamp_seconds{cluster=\"dc1\"} ")
            .map(|v| v.trim().parse().unwrap())
    })
}

async fn active_is(agent: &Agent, want: IpAddr, what: &str) {
    ask(agent.dns, "active.vault.service.consul", RecordType::A)
        .within(Duration::from_secs(30))
        .until(what, |m| ips(m) == vec![want])
        .await;
}

/// A single OpenBao server (never initialised) whose TLS listener presents `cert`:
/// enough for a handshake to fail the way a real server's does.
/// The child, and the directory its files are in (kept until it stops).
struct LoneServer(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl LoneServer {
    fn start(ip: &str, cert: &str, key: &str) -> LoneServer {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls.pem"), dir.path().join("tls-key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        let config = dir.path().join("bao.hcl");
        std::fs::write(
            &config,
            format!(
                "disable_mlock = true\nstorage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"{ip}:8200\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
                c.display(),
                k.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let child = std::process::Command::new(crate::support::openbao::bao_bin())
            .arg("server")
            .arg(format!("-config={}", config.display()))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        LoneServer(child, dir)
    }
}

impl Drop for LoneServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_over_tls_with_client_certs_and_a_server_name() {
    let (mut cluster, tls) = Cluster::start_tls(55, 0).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let ca = tls.ca_file.display().to_string();
    let cert = tls.client_cert_file.display().to_string();
    let key = tls.client_key_file.display().to_string();
    let full = format!(
        "ca_file = \"{ca}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\ntls_server_name = \"{TLS_NAME}\""
    );

    let good = every_setting_right_every_member_answers(&cluster, leader, &tls, &full).await;
    the_wrong_ca_is_servfail_and_named(&tls, &full).await;
    without_a_client_certificate_one_node_refuses(&cluster, leader, &tls).await;
    without_a_server_name_one_node_is_not_valid_for_its_ip(&tls).await;
    a_rotated_client_certificate_is_used_after_sighup(&good, &tls).await;
    cluster.kill(leader);
    let new = cluster.wait_leader(Duration::from_secs(60)).await;
    assert_ne!(new, leader);
    active_is(
        &good,
        cluster.ip(new),
        "the new leader is answered over TLS",
    )
    .await;
}

/// Step: every setting right: all three members answer, node 2 with our certificate
/// and node 3 verified as TLS_NAME; an expired server (same CA, right name) is named
/// as such; the client certificate's expiry is a metric. Returns that agent.
async fn every_setting_right_every_member_answers(
    cluster: &Cluster,
    leader: usize,
    tls: &ApiTls,
    full: &str,
) -> Agent {
    let ca = tls.ca_file.display().to_string();
    let (old_cert, old_key) = tls
        .pki
        .issue_pem(&[TLS_NAME, "127.55.1.1"], Some((2021, 1, 1)));
    let _expired = LoneServer::start("127.55.1.1", &old_cert, &old_key);

    let good = agent(
        100,
        full,
        &format!(
            "[[clusters]]\nname = \"old\"\nnodes = [\"https://127.55.1.1:8200\"]\nca_file = \"{ca}\"\ntls_server_name = \"{TLS_NAME}\"\n"
        ),
    );
    active_is(
        &good,
        cluster.ip(leader),
        "the TLS cluster's leader is answered",
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "all three members answer",
        || async {
            member_errors(&good, "dc1")
                .iter()
                .all(|e| e.is_empty())
                .then_some(())
        },
    )
    .await;
    // The expired server is named as such.
    eventually(
        Duration::from_secs(20),
        "the expired certificate is named",
        || async {
            member_errors(&good, "old")[0]
                .contains("TLS: invalid peer certificate: certificate expired")
                .then_some(())
        },
    )
    .await;
    let expiry = expiry_metric(&good).expect("the client certificate's expiry is a metric");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now,
        "rcgen's default validity runs far ahead: {expiry}"
    );
    good
}

/// Step: the wrong CA (another CA of the same name, so rustls reports the signature):
/// every node fails verification; SERVFAIL, and the reason is named in /status and in
/// the WARN line.
async fn the_wrong_ca_is_servfail_and_named(tls: &ApiTls, full: &str) {
    let ca = tls.ca_file.display().to_string();
    let other_ca = crate::support::tls::Pki::new();
    let wrong_ca = tls.dir.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, &other_ca.ca_pem).unwrap();
    let wrong = agent(101, &full.replace(&ca, &wrong_ca.display().to_string()), "");
    eventually(
        Duration::from_secs(20),
        "every node fails verification",
        || async {
            member_errors(&wrong, "dc1")
                .iter()
                .all(|e| e.contains("TLS: invalid peer certificate: BadSignature"))
                .then_some(())
        },
    )
    .await;
    let m = crate::support::dns::query(
        wrong.dns,
        "active.vault.service.consul",
        RecordType::A,
        Proto::Udp,
    )
    .unwrap();
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    let log = wrong.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("no node answers")
            && l.contains("TLS: invalid peer certificate: BadSignature")),
        "the WARN names the verification error:\n{log}"
    );
}

/// Step: no client certificate: node 2 refuses us, named; the other two still elect.
async fn without_a_client_certificate_one_node_refuses(
    cluster: &Cluster,
    leader: usize,
    tls: &ApiTls,
) {
    let ca = tls.ca_file.display().to_string();
    let anonymous = agent(
        102,
        &format!("ca_file = \"{ca}\"\ntls_server_name = \"{TLS_NAME}\""),
        "",
    );
    eventually(
        Duration::from_secs(20),
        "node 2 wants a certificate",
        || async {
            let errors = member_errors(&anonymous, "dc1");
            let others_fine = (0..3)
                .filter(|i| *i != CLIENT_CERT_REQUIRED)
                .all(|i| errors[i].is_empty());
            (errors[CLIENT_CERT_REQUIRED].contains("TLS:") && others_fine).then_some(())
        },
    )
    .await;
    active_is(&anonymous, cluster.ip(leader), "two of three still elect").await;
}

/// Step: no server name: node 3, addressed by IP, has a certificate for TLS_NAME only.
async fn without_a_server_name_one_node_is_not_valid_for_its_ip(tls: &ApiTls) {
    let ca = tls.ca_file.display().to_string();
    let cert = tls.client_cert_file.display().to_string();
    let key = tls.client_key_file.display().to_string();
    let by_ip = agent(
        103,
        &format!("ca_file = \"{ca}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\""),
        "",
    );
    eventually(
        Duration::from_secs(20),
        "node 3 is not valid for its IP",
        || async {
            let errors = member_errors(&by_ip, "dc1");
            (errors[NAME_ONLY].contains("not valid for name")
                && (0..3)
                    .filter(|i| *i != NAME_ONLY)
                    .all(|i| errors[i].is_empty()))
            .then_some(())
        },
    )
    .await;
}

/// Step: rotation: a new client certificate on disk, then SIGHUP, and the next polls
/// use it. Seen from the server side: node 2 refuses a certificate from another CA,
/// and takes a good one again after the next rotation; and in the expiry metric.
async fn a_rotated_client_certificate_is_used_after_sighup(good: &Agent, tls: &ApiTls) {
    let other_ca = crate::support::tls::Pki::new();
    let rotate = |pki: &crate::support::tls::Pki, not_after| {
        let (c, k) = pki.issue_pem(&["agent.test"], Some(not_after));
        std::fs::write(&tls.client_cert_file, c).unwrap();
        std::fs::write(&tls.client_key_file, k).unwrap();
        good.signal("HUP");
    };
    rotate(&other_ca, (2041, 6, 1));
    eventually(
        Duration::from_secs(20),
        "node 2 refuses the foreign certificate",
        || async {
            let errors = member_errors(good, "dc1");
            (expiry_metric(good)? == 2_253_657_600.0 // 2041-06-01T00:00:00Z
            && errors[CLIENT_CERT_REQUIRED].contains("TLS:")
            && (0..3).filter(|i| *i != CLIENT_CERT_REQUIRED).all(|i| errors[i].is_empty()))
            .then_some(())
        },
    )
    .await;
    rotate(&tls.pki, (2042, 1, 1));
    eventually(
        Duration::from_secs(20),
        "node 2 takes the good one again",
        || async {
            let errors = member_errors(good, "dc1");
            (expiry_metric(good)? == 2_272_147_200.0 // 2042-01-01T00:00:00Z
            && errors.iter().all(|e| e.is_empty()))
            .then_some(())
        },
    )
    .await;
    assert_eq!(good.log().matches("reload applied").count(), 2);
}
