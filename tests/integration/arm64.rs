//! The arm64 package's agent, run under qemu-user on this x86_64 host, against a real
//! 3-node OpenBao raft cluster: it answers `active.vault.service.consul` with the active
//! node, passes a ClientHello on :8201 through to it, and follows a `kill -9` of it.
//!
//! OpenBao runs natively (x86_64 `bao`): the binary under test is the agent, and raft
//! elections under emulation would test qemu's speed, not the agent.
//!
//! Ignored in the plain `cargo test` run: it needs the arm64 build, which needs the
//! release build root. `packaging/arm64-smoke.sh` (run by `scripts/test` after the
//! packages are built) extracts the binary from the arm64 .deb and runs this test with
//! `VAULT_LOCATOR_ARM64` (the binary), `VAULT_LOCATOR_ARM64_SYSROOT` (arm64 glibc) and
//! `VAULT_LOCATOR_QEMU` (qemu-aarch64-static) set.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::support::agent::{Agent, Emulated};
use crate::support::config::dc1;
use crate::support::dns::{ask, ips};
use crate::support::openbao::{eventually, Cluster};
use crate::support::tls::{follows_failover, passes_through};
use hickory_proto::rr::RecordType;

fn emulated_from_env() -> Emulated {
    let var = |name: &str| -> PathBuf {
        std::env::var_os(name)
            .unwrap_or_else(|| panic!("{name} is not set: run packaging/arm64-smoke.sh"))
            .into()
    };
    let emulated = Emulated {
        qemu: var("VAULT_LOCATOR_QEMU"),
        sysroot: var("VAULT_LOCATOR_ARM64_SYSROOT"),
        binary: var("VAULT_LOCATOR_ARM64"),
    };
    // The binary is an arm64 ELF (e_machine 183 = EM_AARCH64), so this test cannot pass
    // by running the host's build by mistake.
    let head = std::fs::read(&emulated.binary).expect("read the arm64 binary");
    assert_eq!(
        &head[..4],
        b"\x7fELF",
        "{:?} is not an ELF file",
        emulated.binary
    );
    assert_eq!(
        u16::from_le_bytes([head[18], head[19]]),
        183,
        "{:?} is not an aarch64 binary",
        emulated.binary
    );
    emulated
}

/// Waits until `active.vault.service.consul` answers `ip` alone.
async fn answers(dns: SocketAddr, ip: IpAddr, what: &str) {
    eventually(Duration::from_secs(30), what, || {
        let answer = ips(&ask(dns, "active.vault.service.consul", RecordType::A).once());
        async move { (answer == vec![ip]).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the arm64 build: packaging/arm64-smoke.sh runs it"]
async fn arm64_agent_answers_proxies_and_follows_failover() {
    let emulated = emulated_from_env();
    let mut cluster = Cluster::start(27, 0, 3).await;
    let dns: SocketAddr = "127.27.0.100:8600".parse().unwrap();
    let proxy: SocketAddr = "127.27.0.200:8201".parse().unwrap();
    let config =
        dc1("127.27.0", 3, &[("poll_interval", "250ms")]).proxy("dc1", "127.27.0.200:8201", &[]);
    let agent = Agent::start_emulated(&emulated, &config.toml(), config.dns_addr());
    assert_eq!(config.dns_addr(), dns);
    // The process answering is qemu running the arm64 binary, not a host build.
    let exe = std::fs::read_link(format!("/proc/{}/exe", agent.pid())).unwrap();
    assert!(
        exe.to_string_lossy().contains("qemu-aarch64"),
        "the agent runs as {exe:?}"
    );

    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let leader_ip = cluster.ip(leader);
    answers(dns, leader_ip, "DNS answers the active node").await;

    let direct_chain = passes_through(SocketAddr::new(leader_ip, 8201), proxy).await;

    cluster.kill(leader);
    let new = cluster.wait_leader(Duration::from_secs(60)).await;
    assert_ne!(new, leader);
    let new_ip = cluster.ip(new);
    answers(dns, new_ip, "DNS answers the new active").await;
    follows_failover(SocketAddr::new(new_ip, 8201), proxy, &direct_chain).await;
    drop(agent);
}
