//! The shipped unit's own command line, run by hand with a test NOTIFY_SOCKET, reaches
//! READY=1 against a real OpenBao cluster (with STATUS= naming the leader).

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::config::{agent_config, nodes};
use support::openbao::Cluster;

/// `ExecStart=` of systemd/vault-locator.service, split into words.
fn exec_start() -> Vec<String> {
    let line = support::unit_line("systemd/vault-locator.service", "ExecStart");
    line.split_whitespace().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_command_line_reaches_ready_against_openbao() {
    let cluster = Cluster::start(25, 0, 3).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        agent_config("dc1", "127.25.0.100:8600")
            .admin("127.25.0.100:9464")
            .cluster("dc1", &nodes("127.25.0", 3), &[("poll_interval", "250ms")])
            .toml(),
    )
    .unwrap();
    let words: Vec<String> = exec_start()
        .into_iter()
        .map(|w| match w.as_str() {
            "/usr/bin/vault-locator" => support::agent::bin().to_string(),
            "/etc/vault-locator/config.toml" => config.display().to_string(),
            _ => w,
        })
        .collect();
    assert_eq!(words[1], "run", "the unit runs the agent: {words:?}");
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let msg = String::from_utf8_lossy(&buf[..n.expect("a notification within 20 s")]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(
        msg.contains(&format!("STATUS=dc1: http://{}:8200", cluster.ip(leader))),
        "{msg}"
    );
}
