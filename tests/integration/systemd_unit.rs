//! The shipped unit's own command lines, run by hand with a test NOTIFY_SOCKET: the
//! agent reaches READY=1 against a real OpenBao cluster (with STATUS= naming the
//! leader), and `ExecReload=` applies a good file and fails, with the reason, on a bad
//! one while the running config stays.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::config::{agent_config, nodes};
use crate::support::openbao::Cluster;

/// `key=` of systemd/vault-locator.service, split into words, with the binary and the
/// config file replaced by this build's and `config`, and `$MAINPID` by `pid`.
fn unit_command(key: &str, config: &std::path::Path, pid: u32) -> Vec<String> {
    let line = crate::support::unit_line("systemd/vault-locator.service", key);
    line.split_whitespace()
        .map(|w| match w {
            "/usr/bin/vault-locator" => crate::support::agent::bin().to_string(),
            "/etc/vault-locator/config.toml" => config.display().to_string(),
            "$MAINPID" => pid.to_string(),
            _ => w.to_string(),
        })
        .collect()
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
    let words = unit_command("ExecStart", &config, 0);
    assert_eq!(words[1], "run", "the unit runs the agent: {words:?}");
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    /// Kills the agent when the test ends, passed or not.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(&words[0])
        .args(&words[1..])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Running(child);
    // The notifications up to READY=1: before it, the DNS sockets handed to systemd's
    // store (`fdstore`), so a restart keeps them.
    let mut before_ready = Vec::new();
    let msg = loop {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification within 20 s");
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.contains("READY=1") {
            break msg;
        }
        before_ready.push(msg);
    };
    assert!(
        before_ready
            .iter()
            .any(|m| m == "FDSTORE=1\nFDNAME=dns-udp@127.25.0.100_8600\n"),
        "{before_ready:?}"
    );
    assert!(
        before_ready
            .iter()
            .any(|m| m == "FDSTORE=1\nFDNAME=dns-tcp@127.25.0.100_8600\n"),
        "{before_ready:?}"
    );
    assert!(
        msg.contains(&format!("STATUS=dc1: http://{}:8200", cluster.ip(leader))),
        "{msg}"
    );

    // `systemctl reload`: ExecReload= as the unit has it, $MAINPID the agent's pid.
    let reload = || {
        let words = unit_command("ExecReload", &config, child.0.id());
        Command::new(&words[0]).args(&words[1..]).output().unwrap()
    };
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("\"250ms\"", "\"300ms\"")).unwrap();
    let out = reload();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reload applied\n");
    // A bad file: refused before the agent is signalled, with the file, key and reason.
    std::fs::write(
        &config,
        good.replace("poll_interval = \"250ms\"", "poll_interval = \"soon\""),
    )
    .unwrap();
    let out = reload();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("clusters[0].poll_interval"), "{why}");
    // A file the agent itself rejects (a DNS address it cannot bind): the reload fails
    // with the agent's reason, and the agent runs the previous config.
    let taken = std::net::UdpSocket::bind("127.25.0.100:8700").unwrap();
    std::fs::write(
        &config,
        good.replace(
            "listen = [\"127.25.0.100:8600\"]",
            "listen = [\"127.25.0.100:8600\", \"127.25.0.100:8700\"]",
        ),
    )
    .unwrap();
    let out = reload();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("reload rejected") && why.contains("127.25.0.100:8700"),
        "{why}"
    );
    drop(taken);
    let (code, _) = crate::support::get_json("http://127.25.0.100:9464/status")
        .await
        .expect("still running");
    assert_eq!(code, 200);
}
