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

/// How the agent binary is run.
enum Runner<'a> {
    /// This build's binary, on the host.
    Native,
    /// This build's binary inside a network namespace.
    Netns(&'a str),
    /// Another architecture's binary under qemu-user.
    Emulated(&'a Emulated),
}

/// Another architecture's agent binary and what runs it: `qemu -L sysroot binary`,
/// where the sysroot holds that architecture's dynamic loader and glibc.
pub struct Emulated {
    pub qemu: PathBuf,
    pub sysroot: PathBuf,
    pub binary: PathBuf,
}

pub struct Agent {
    child: Option<Child>,
    pub dns: SocketAddr,
    /// The admin endpoint: `<dns ip>:9464` unless the config sets `[admin]`.
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `config` (which must listen on `dns`) and waits until it
    /// answers DNS.
    pub fn start(config: &str, dns: SocketAddr) -> Agent {
        Self::start_with_env(config, dns, &[])
    }

    /// [`Agent::start`] with a built config, on its DNS address.
    pub fn with(config: &super::config::TestConfig) -> Agent {
        Self::start(&config.toml(), config.dns_addr())
    }

    /// As [`Agent::start`], with extra environment variables.
    pub fn start_with_env(config: &str, dns: SocketAddr, env: &[(&str, &str)]) -> Agent {
        Self::spawn(config, dns, env).wait_answering(dns)
    }

    fn wait_answering(mut self, dns: SocketAddr) -> Agent {
        let deadline = Instant::now() + Duration::from_secs(15);
        while dns::query(dns, "consul.", RecordType::SOA, Proto::Udp).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent never answered DNS:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    /// Starts the agent without waiting for it to answer (for one that should not).
    pub fn spawn(config: &str, dns: SocketAddr, env: &[(&str, &str)]) -> Agent {
        Self::spawn_as(Runner::Native, config, dns, env)
    }

    /// Starts the agent inside network namespace `netns` (see `support::netlab`) and
    /// waits until it answers DNS on `dns` (an address reachable from the test).
    pub fn start_in(netns: &str, config: &str, dns: SocketAddr) -> Agent {
        let agent = Self::spawn_as(Runner::Netns(netns), config, dns, &[]);
        agent.wait_answering(dns)
    }

    /// Starts another architecture's agent binary under qemu-user and waits until it
    /// answers DNS on `dns`.
    pub fn start_emulated(emulated: &Emulated, config: &str, dns: SocketAddr) -> Agent {
        let agent = Self::spawn_as(Runner::Emulated(emulated), config, dns, &[]);
        agent.wait_answering(dns)
    }

    fn spawn_as(runner: Runner, config: &str, dns: SocketAddr, env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let admin = SocketAddr::new(dns.ip(), 9464);
        std::fs::write(&path, with_admin(config, admin)).unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let mut command = match runner {
            Runner::Native => Command::new(bin()),
            Runner::Netns(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            Runner::Emulated(e) => {
                let mut c = Command::new(&e.qemu);
                c.arg("-L").arg(&e.sysroot).arg(&e.binary);
                c
            }
        };
        // `ip netns exec` execs the program, and qemu-user runs it in its own process
        // (passing signals on): either way the child's pid is the agent's.
        let child = command
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,vault_locator=debug,hickory_server=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vault-locator");
        Agent {
            child: Some(child),
            dns,
            admin,
            dir,
        }
    }

    /// Replaces the config file (a SIGHUP then applies it).
    pub fn write_config(&self, config: &str) {
        std::fs::write(
            self.dir.path().join("config.toml"),
            with_admin(config, self.admin),
        )
        .unwrap();
    }

    /// Waits until the agent's log has a line containing every one of `needles`
    /// (a part saying it is listening, say): a readiness wait, not a sleep.
    pub fn wait_for_log(&self, needles: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        while !self
            .log()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
        {
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Sends a signal (by name, e.g. "HUP") to the agent.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `GET path` on the admin endpoint: (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.admin).expect("admin endpoint");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, body.to_string())
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for the agent to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent did not stop within {within:?}");
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

/// Each test owns its IP; unless the config says otherwise, its admin endpoint is there too.
fn with_admin(config: &str, admin: SocketAddr) -> String {
    if config.contains("[admin]") {
        config.to_string()
    } else {
        format!("{config}\n[admin]\nlisten = \"{admin}\"\n")
    }
}

/// Panics unless every line of `log` is logfmt (`key=value` pairs separated by one
/// space, each value bare or quoted with `\"` escapes) starting `ts= level= target=`.
pub fn assert_logfmt(log: &str) {
    for line in log.lines() {
        let mut keys = Vec::new();
        let mut rest = line;
        while !rest.is_empty() {
            let (key, value) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("no key=value at {rest:?} in:\n{line}"));
            assert!(
                !key.is_empty() && !key.contains([' ', '"']),
                "bad key {key:?} in:\n{line}"
            );
            keys.push(key);
            let after = match value.strip_prefix('"') {
                Some(quoted) => {
                    let mut escaped = false;
                    let end = quoted.char_indices().find(|&(_, c)| {
                        let closes = c == '"' && !escaped;
                        escaped = c == '\\' && !escaped;
                        closes
                    });
                    let (end, _) = end.unwrap_or_else(|| panic!("unclosed quote in:\n{line}"));
                    &quoted[end + 1..]
                }
                None => {
                    let end = value.find(' ').unwrap_or(value.len());
                    let bare = &value[..end];
                    assert!(
                        !bare.is_empty() && !bare.contains(['"', '=']),
                        "bad bare value {bare:?} in:\n{line}"
                    );
                    &value[end..]
                }
            };
            assert!(
                after.is_empty() || after.starts_with(' '),
                "no space after a value in:\n{line}"
            );
            rest = after.strip_prefix(' ').unwrap_or(after);
        }
        assert_eq!(
            keys.get(..3),
            Some(&["ts", "level", "target"][..]),
            "{line}"
        );
    }
}
