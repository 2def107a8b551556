//! The command line: check-config's summary and exit codes, `--version`, and `run`
//! refusing a bad config or an address it cannot bind.

use std::net::{TcpListener, UdpSocket};

use crate::support::agent::run_cli;
use crate::support::config::{agent_config, nodes};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A config check-config accepts; tests change one thing in it.
fn good() -> String {
    agent_config("us-east-1", "127.0.0.1:8600")
        .cluster("us-east-1", &nodes("127.0.0", 1), &[])
        .toml()
}

#[test]
fn check_config_accepts_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "good.toml", &good());
    let out = run_cli(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cluster us-east-1: 1 node(s)"), "{stdout}");
    assert!(stdout.contains("REFUSED"), "{stdout}");
}

/// A host without trust roots (a minimal image without ca-certificates): a plain-http
/// cluster needs none and is accepted; an https one without `ca_file` is refused,
/// naming why. Found by packaging/test.sh's role run on a clean Debian 12.
#[test]
fn trust_roots_are_needed_only_for_https_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-roots.pem").display().to_string();
    let check = |text: &str| {
        let path = write(&dir, "c.toml", text);
        std::process::Command::new(crate::support::agent::bin())
            .args(["check-config", "--config", &path])
            .env("SSL_CERT_FILE", &missing)
            .env("SSL_CERT_DIR", &missing)
            .output()
            .unwrap()
    };
    let out = check(&good());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let https = good().replace("http://127.0.0.1:8200", "https://127.0.0.1:8200");
    assert_ne!(https, good());
    let out = check(&https);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clusters[0].ca_file") && stderr.contains("system roots"),
        "{stderr}"
    );
}

#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.toml");
    let out = run_cli(&["check-config", "--config", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_configs_exit_64_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rejects =
        |what: &str, text: &str, key: &str, reason: &str| rejected(&dir, what, text, key, reason);
    let swap = |from: &str, to: &str| good().replace(from, to);
    let nodez = swap("nodes =", "nodez = [\"x\"]\nnodes =");
    rejects("unknown key", &nodez, "clusters[0]", "nodez");
    let listen = swap("127.0.0.1:8600", "localhost:8600");
    rejects("bad listen", &listen, "dns.listen[0]", "not an IP:port");
    let twice = "\n[[clusters]]\nname = \"US-EAST-1\"\nnodes = [\"http://127.0.0.2:8200\"]\n";
    rejects(
        "duplicate dc",
        &(good() + twice),
        "clusters[1].name",
        "twice",
    );
    let ours = swap("http://127.0.0.1:8200", "http://vault.service.consul:8200");
    rejects(
        "node in our zone",
        &ours,
        "clusters[0].nodes[0]",
        "zone this agent answers",
    );
    let empty = swap("[\"http://127.0.0.1:8200\"]", "[]");
    rejects("empty nodes", &empty, "clusters[0].nodes", "at least one");
    // Too long for the SOA and SRV names (243 octets).
    let long = format!(
        "domain = \"{}\"\n{}",
        vec!["d".repeat(60); 4].join("."),
        good()
    );
    rejects("long domain", &long, "domain", "255");
    rejects("not toml", "datacenter = \n", "", "");
    let out = run_cli(&[
        "check-config",
        "--config",
        "/nonexistent/vault-locator.toml",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vault-locator.toml"));
}

/// `check-config` and `run` both exit 64 on `text`, naming the file, `key` and `reason`.
fn rejected(dir: &tempfile::TempDir, what: &str, text: &str, key: &str, reason: &str) {
    let path = write(dir, "bad.toml", text);
    let out = run_cli(&["check-config", "--config", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{what}: {stderr}");
    assert!(
        stderr.starts_with(&format!("{path}: ")),
        "{what}: names the file: {stderr}"
    );
    assert!(
        stderr.contains(&format!(": {key}")),
        "{what}: names the key {key}: {stderr}"
    );
    assert!(
        stderr.contains(reason),
        "{what}: says why ({reason}): {stderr}"
    );
    // `run` refuses the same file with the same code, before binding anything.
    let out = run_cli(&["run", "--config", &path]);
    assert_eq!(out.status.code(), Some(64), "run with {what}");
}

#[test]
fn version_is_printed() {
    let out = run_cli(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("vault-locator {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn run_fails_with_1_when_the_dns_address_is_taken() {
    let udp = UdpSocket::bind("127.41.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let _tcp = TcpListener::bind(("127.41.0.1", port));
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "c.toml",
        &good().replace("127.0.0.1:8600", &format!("127.41.0.1:{port}")),
    );
    let out = run_cli(&["run", "--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.41.0.1:{port}")), "{stderr}");
}

/// Two agents with one address: the second exits 1 naming the address and the first
/// agent's pid, instead of binding beside it (SO_REUSEPORT) and taking half the
/// queries; the first answers every query after it.
#[test]
fn a_second_agent_on_the_same_addresses_exits_1() {
    let dns: std::net::SocketAddr = "127.45.0.100:8600".parse().unwrap();
    let config = good().replace("127.0.0.1:8600", &dns.to_string());
    let first = crate::support::agent::Agent::start(&config, dns);
    let mut second = crate::support::agent::Agent::spawn(&config, dns, &[]);
    assert_eq!(
        second.wait_exit(std::time::Duration::from_secs(10)),
        Some(1),
        "{}",
        second.log()
    );
    let log = second.log();
    assert!(log.contains(&format!("{dns} is already in use")), "{log}");
    assert!(
        log.contains(&format!("vault-locator (pid {})", first.pid())),
        "names the other agent: {log}"
    );
    for _ in 0..200 {
        crate::support::dns::query(
            dns,
            "consul.",
            hickory_proto::rr::RecordType::SOA,
            crate::support::dns::Proto::Udp,
        )
        .expect("the first agent answers every query");
    }

    // Another DNS address, but the first agent's admin endpoint: refused as well.
    let other = "127.45.0.101:8600".parse().unwrap();
    let config = format!(
        "{}\n[admin]\nlisten = \"{}\"\n",
        good().replace("127.0.0.1:8600", "127.45.0.101:8600"),
        first.admin
    );
    let mut third = crate::support::agent::Agent::spawn(&config, other, &[]);
    assert_eq!(third.wait_exit(std::time::Duration::from_secs(10)), Some(1));
    assert!(
        third
            .log()
            .contains(&format!("admin listener on {}", first.admin)),
        "{}",
        third.log()
    );
}

/// check-config probes that a proxy's API side can be bound. Run as root beside the
/// agent running as its own user (Ansible's `validate` does that), the agent's own
/// listener refuses root's probe (SO_REUSEPORT is per user), and must not count as the
/// address being taken. Needs root (to run the agent as another user); skipped without.
#[test]
fn check_config_beside_the_running_agent_of_another_user_accepts_its_api_side() {
    if !crate::support::netlab::is_root() {
        eprintln!("skipped: needs root to run the agent as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = write(
        &dir,
        "config.toml",
        &agent_config("dc1", "127.45.1.100:8600")
            .admin("")
            .cluster("dc1", &nodes("127.45.1", 1), &[])
            .proxy("dc1", "127.45.1.200:8201", &[("answer", "true")])
            .toml(),
    );
    let mut agent = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::support::agent::bin())
        .args(["run", "--config", &config])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dns = "127.45.1.100:8600".parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while crate::support::dns::query(
        dns,
        "consul.",
        hickory_proto::rr::RecordType::SOA,
        crate::support::dns::Proto::Udp,
    )
    .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Its API side is up, held by user 65534.
    assert!(std::net::TcpStream::connect("127.45.1.200:8200").is_ok());
    let out = run_cli(&["check-config", "--config", &config]);
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
#[test]
fn the_builder_writes_the_file_a_test_would() {
    let c = agent_config("dc1", "127.0.0.1:8600")
        .top("drain_timeout", "1s")
        .cluster(
            "dc1",
            &nodes("127.0.0", 2),
            &[("poll_interval", "100ms"), ("load_balanced", "true")],
        )
        .proxy("dc1", "127.0.0.1:8201", &[("answer", "true")])
        .replication(&["dc1"])
        .toml();
    assert_eq!(
        c,
        "datacenter = \"dc1\"\ndrain_timeout = \"1s\"\n[dns]\nlisten = [\"127.0.0.1:8600\"]\n\
         [[clusters]]\nname = \"dc1\"\nnodes = [\"http://127.0.0.1:8200\", \"http://127.0.0.2:8200\"]\n\
         poll_interval = \"100ms\"\nload_balanced = true\n\
         [[proxy]]\ncluster = \"dc1\"\nlisten = \"127.0.0.1:8201\"\nanswer = true\n\
         [replication]\nclusters = [\"dc1\"]\n"
    );
}

/// `status`' own codes never collide with clap's usage error (2) or a bad config (64).
#[test]
fn status_exit_codes_are_distinct_from_usage_errors() {
    let out = run_cli(&["status", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    // Nobody listens on this admin address: unreachable, 1.
    let out = run_cli(&["status", "--admin", "127.45.2.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    let codes = [
        vault_locator::cli::status::EXIT_UNREACHABLE,
        vault_locator::cli::status::EXIT_NOT_PRIMARY,
        vault_locator::cli::status::EXIT_PRIMARY_UNKNOWN,
        vault_locator::cli::status::EXIT_UNHEALTHY,
    ];
    for code in codes {
        assert!(![0, 2, 64].contains(&code), "{code}");
    }
}
