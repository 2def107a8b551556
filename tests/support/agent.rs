//! Runs the real `vault-locator` binary with a config written to a temp dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use super::dns::{self, Proto};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vault-locator")
}

/// Runs the binary to completion with `args`.
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run vault-locator")
}

pub struct Agent {
    child: Option<Child>,
    pub dns: SocketAddr,
    dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `config` (which must listen on `dns`) and waits until it
    /// answers DNS.
    pub fn start(config: &str, dns: SocketAddr) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,vault_locator=debug,hickory_server=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vault-locator");
        let mut agent = Agent {
            child: Some(child),
            dns,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while dns::query(dns, "consul.", RecordType::SOA, Proto::Udp).is_err() {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status}:\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent never answered DNS:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent did not stop within 10s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
    }
}
