//! A real OpenBao raft cluster on loopback, for integration tests.
//!
//! Node i of a cluster on prefix `127.A.B` listens on `127.A.B.i:8200` (API, no TLS) and
//! `127.A.B.i:8201` (cluster port), so tests that use different prefixes run in parallel.
//! Every process is started and killed by its handle; the data directory is removed when
//! the cluster is dropped, whether the test passed or not.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where the `bao` binary is: `$BAO_BIN`, then `.tools/bin/bao` in the repository (what
/// `scripts/install-openbao` puts there), then `bao` on PATH.
pub fn bao_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BAO_BIN") {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/bao");
    if local.exists() {
        return local;
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("bao"))
            .find(|p| p.exists())
    }) {
        return found;
    }
    panic!(
        "no OpenBao binary: run scripts/install-openbao (or set BAO_BIN); \
         these tests need a real OpenBao"
    );
}

pub struct Node {
    pub ip: Ipv4Addr,
    /// The API listener serves TLS (see [`ApiTls`]).
    https: bool,
    /// The network namespace the node runs in (fault-lab tests), if not the test's own.
    netns: Option<String>,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn api(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:8200", self.ip)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub root_token: String,
    pub unseal_key: String,
    _tmp: tempfile::TempDir,
    http: reqwest::Client,
}

impl Cluster {
    /// Starts `n` nodes on `127.a.b.1..=n`, initialises, unseals, and waits until every
    /// node is a raft voter (before that, losing the leader can leave the cluster unable
    /// to elect at all) and one node is active.
    pub async fn start(a: u8, b: u8, n: u8) -> Cluster {
        let ips: Vec<Ipv4Addr> = (1..=n).map(|i| Ipv4Addr::new(127, a, b, i)).collect();
        Self::start_on(ips.iter().map(|ip| (*ip, None)).collect()).await
    }

    /// As [`Cluster::start`], one node per `(ip, netns)`: node i listens on its `ip`,
    /// inside network namespace `netns` when one is given (see `support::netlab`).
    pub async fn start_on(hosts: Vec<(Ipv4Addr, Option<String>)>) -> Cluster {
        Self::start_with(hosts, None).await
    }

    /// As [`Cluster::start`], with TLS API listeners (see [`ApiTls`]); `n` is 3.
    pub async fn start_tls(a: u8, b: u8) -> (Cluster, ApiTls) {
        let tls = ApiTls::new();
        let hosts = (1..=3)
            .map(|i| (Ipv4Addr::new(127, a, b, i), None))
            .collect();
        (Self::start_with(hosts, Some(&tls)).await, tls)
    }

    async fn start_with(hosts: Vec<(Ipv4Addr, Option<String>)>, tls: Option<&ApiTls>) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ips: Vec<Ipv4Addr> = hosts.iter().map(|h| h.0).collect();
        let mut nodes = Vec::new();
        for (i, (ip, netns)) in hosts.iter().enumerate() {
            let dir = tmp.path().join(format!("node{}", i + 1));
            std::fs::create_dir_all(dir.join("raft")).unwrap();
            let scheme = if tls.is_some() { "https" } else { "http" };
            let join_tls = tls.map(ApiTls::join_settings).unwrap_or_default();
            let joins: String = ips
                .iter()
                .filter(|o| *o != ip)
                .map(|o| {
                    format!(
                        "  retry_join {{\n    leader_api_addr = \"{scheme}://{o}:8200\"\n{join_tls}  }}\n"
                    )
                })
                .collect();
            let listener_tls = match tls {
                Some(t) => t.listener_settings(i, *ip, &dir),
                None => "  tls_disable = true\n".to_string(),
            };
            let config = dir.join("bao.hcl");
            std::fs::write(
                &config,
                format!(
                    r#"ui = false
disable_mlock = true
api_addr = "{scheme}://{ip}:8200"
cluster_addr = "https://{ip}:8201"
listener "tcp" {{
  address = "{ip}:8200"
  cluster_address = "{ip}:8201"
{listener_tls}}}
storage "raft" {{
  path = "{raft}"
  node_id = "node{id}"
  performance_multiplier = 1
{joins}}}
"#,
                    raft = dir.join("raft").display(),
                    id = i + 1,
                ),
            )
            .unwrap();
            let mut node = Node {
                ip: *ip,
                https: tls.is_some(),
                netns: netns.clone(),
                dir,
                config,
                child: None,
            };
            node.spawn();
            nodes.push(node);
        }
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy();
        if let Some(t) = tls {
            // The harness drives the cluster; the agent's own verification is what the
            // tests check. Node 3's certificate names only TLS_NAME, so the harness,
            // which dials IPs, skips the name check (never the CA).
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(
                    reqwest::Certificate::from_pem(t.pki.ca_pem.as_bytes()).unwrap(),
                )
                .identity(reqwest::Identity::from_pem(t.client_pem().as_bytes()).unwrap())
                .danger_accept_invalid_hostnames(true);
        }
        let http = http.build().unwrap();
        let mut cluster = Cluster {
            nodes,
            root_token: String::new(),
            unseal_key: String::new(),
            _tmp: tmp,
            http,
        };
        cluster.init_and_unseal().await;
        cluster
    }

    async fn init_and_unseal(&mut self) {
        let first = self.nodes[0].api();
        let init: Value = eventually(
            Duration::from_secs(30),
            "node 1 answers sys/init",
            || async {
                let r = self
                    .http
                    .put(format!("{first}/v1/sys/init"))
                    .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
                    .send()
                    .await
                    .ok()?;
                if !r.status().is_success() {
                    return None;
                }
                r.json().await.ok()
            },
        )
        .await;
        self.unseal_key = init["keys_base64"][0].as_str().unwrap().to_string();
        self.root_token = init["root_token"].as_str().unwrap().to_string();
        for i in 0..self.nodes.len() {
            self.unseal(i).await;
        }
        self.wait_all_voters().await;
        self.wait_leader(Duration::from_secs(60)).await;
    }

    /// Unseals node `i`, retrying while it joins the cluster.
    pub async fn unseal(&self, i: usize) {
        let api = self.nodes[i].api();
        let key = self.unseal_key.clone();
        eventually(
            Duration::from_secs(60),
            &format!("node {} unseals", i + 1),
            || async {
                let r = self
                    .http
                    .put(format!("{api}/v1/sys/unseal"))
                    .json(&json!({"key": key}))
                    .send()
                    .await
                    .ok()?;
                let v: Value = r.json().await.ok()?;
                (v["sealed"] == json!(false)).then_some(())
            },
        )
        .await;
    }

    async fn wait_all_voters(&self) {
        let n = self.nodes.len();
        eventually(
            Duration::from_secs(90),
            "every node is a raft voter",
            || async {
                for node in &self.nodes {
                    let r = self
                        .http
                        .get(format!("{}/v1/sys/storage/raft/configuration", node.api()))
                        .header("X-Vault-Token", &self.root_token)
                        .send()
                        .await
                        .ok()?;
                    let v: Value = r.json().await.ok()?;
                    let servers = v["data"]["config"]["servers"].as_array()?;
                    if servers.len() == n && servers.iter().all(|s| s["voter"] == json!(true)) {
                        return Some(());
                    }
                }
                None
            },
        )
        .await;
    }

    /// The index of the node that reports itself active, if any.
    pub async fn active_index(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let Ok(r) = self
                .http
                .get(format!("{}/v1/sys/leader", node.api()))
                .send()
                .await
            else {
                continue;
            };
            let Ok(v) = r.json::<Value>().await else {
                continue;
            };
            if v["is_self"] == json!(true) {
                return Some(i);
            }
        }
        None
    }

    pub async fn wait_leader(&self, within: Duration) -> usize {
        eventually(within, "a node is active", || self.active_index()).await
    }

    pub fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.nodes[i].ip)
    }

    /// Asks the active node to step down (a graceful leader change in ~0.7 s).
    pub async fn step_down(&self) {
        let active = self.wait_leader(Duration::from_secs(30)).await;
        let r = self
            .http
            .put(format!("{}/v1/sys/step-down", self.nodes[active].api()))
            .header("X-Vault-Token", &self.root_token)
            .send()
            .await
            .expect("step-down request");
        assert!(r.status().is_success(), "step-down: {}", r.status());
    }

    /// `kill -9` of node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again (it comes back sealed: there is no auto-unseal).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
    }
}

impl Node {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.ip);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bao.log"))
            .unwrap();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bao_bin());
                c
            }
            None => Command::new(bao_bin()),
        };
        // `ip netns exec` execs the program: the child's pid is the server's.
        let child = command
            .arg("server")
            .arg(format!("-config={}", self.config.display()))
            .env("BAO_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bao_bin().display()));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                if let Ok(log) = std::fs::read_to_string(n.dir.join("bao.log")) {
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!("--- last lines of {} log ---", n.ip);
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// The name every TLS node's certificate carries (`tls_server_name` in tests).
pub const TLS_NAME: &str = "vault.test";
/// The TLS node that requires a client certificate (index).
pub const CLIENT_CERT_REQUIRED: usize = 1;
/// The TLS node whose certificate names only [`TLS_NAME`], not its IP (index).
pub const NAME_ONLY: usize = 2;

/// TLS on a test cluster's API listeners, from a CA the test makes. Every node's
/// certificate names [`TLS_NAME`]; nodes 1 and 2's their IP as well, node 3's not (a node
/// addressed by IP whose certificate names a host). Node 2 requires client certificates
/// signed by the CA. Files for the agent's config are in `dir`.
pub struct ApiTls {
    pub pki: super::tls::Pki,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
}

impl ApiTls {
    fn new() -> ApiTls {
        let pki = super::tls::Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let (cert, key) = pki.issue_pem(&["agent.test"], None);
        let client_cert_file = dir.path().join("client.pem");
        let client_key_file = dir.path().join("client-key.pem");
        std::fs::write(&client_cert_file, cert).unwrap();
        std::fs::write(&client_key_file, key).unwrap();
        ApiTls {
            pki,
            dir,
            ca_file,
            client_cert_file,
            client_key_file,
        }
    }

    /// The client certificate and key, one PEM (reqwest's `Identity`).
    fn client_pem(&self) -> String {
        std::fs::read_to_string(&self.client_cert_file).unwrap()
            + &std::fs::read_to_string(&self.client_key_file).unwrap()
    }

    /// A `retry_join` stanza's TLS lines: trust the CA, verify TLS_NAME, present the
    /// client certificate (node 2 asks for one).
    fn join_settings(&self) -> String {
        format!(
            "    leader_ca_cert_file = \"{}\"\n    leader_client_cert_file = \"{}\"\n    leader_client_key_file = \"{}\"\n    leader_tls_servername = \"{TLS_NAME}\"\n",
            self.ca_file.display(),
            self.client_cert_file.display(),
            self.client_key_file.display()
        )
    }

    /// Node `i`'s listener TLS lines, its certificate written to `dir`.
    fn listener_settings(&self, i: usize, ip: Ipv4Addr, dir: &Path) -> String {
        let ip = ip.to_string();
        let names: Vec<&str> = if i == NAME_ONLY {
            vec![TLS_NAME]
        } else {
            vec![TLS_NAME, &ip]
        };
        let (cert, key) = self.pki.issue_pem(&names, None);
        let (cert_file, key_file) = (dir.join("tls.pem"), dir.join("tls-key.pem"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let mut out = format!(
            "  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n",
            cert_file.display(),
            key_file.display()
        );
        if i == CLIENT_CERT_REQUIRED {
            out += &format!(
                "  tls_require_and_verify_client_cert = \"true\"\n  tls_client_ca_file = \"{}\"\n",
                self.ca_file.display()
            );
        }
        out
    }
}

/// Retries `f` until it returns `Some`, or panics naming `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
