//! Stand-in Vault nodes, for what a real server cannot be made to do: garbage JSON,
//! 500s, stalls, contradicting leader reports (split brain), and Vault Enterprise's
//! roles. Each path answers as Vault does for the node's role, with its source named
//! beside the shape (see `../shared/VAULT-ENTERPRISE-SHAPES.md`):
//!
//! - `/v1/sys/health`: `health()`, from Vault's `http/sys_health.go` (precedence of the
//!   codes, fields by version) and the DR secondary captured in
//!   DataDog/integrations-core#7819.
//! - `/v1/sys/leader`: `leader()`, from Vault's `http/sys_leader.go`.
//! - `/v1/sys/replication/status`, `/performance/status`, `/dr/status`: the JSON a
//!   test sets, wrapped in `{"data": ..}` as `replication/index.mdx` and
//!   `replication-dr.mdx` show it; `{"data":{"mode":"disabled"}}` per kind when unset.
//! - anything else: 404 `{"errors":[]}`, Vault's answer for a path it does not serve.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Behavior {
    /// A well-formed node: `active` or standby, naming `leader` as the leader.
    Node { active: bool, leader: String },
    /// 200 with a body that is not JSON.
    Garbage,
    /// 500 Internal Server Error on everything.
    ServerError,
    /// Accepts and never answers (slow headers, or a host whose packets vanish).
    Stall,
    /// Answers a well-formed active node's headers, then sends its body a byte a second.
    Trickle,
    /// 200 with a body far larger than any real answer (16 MiB of JSON whitespace).
    Huge,
    /// Valid JSON with the wrong types (`"sealed": "no"`).
    WrongTypes,
}

/// What a `Node` is beyond active or standby: Vault Enterprise's roles.
#[derive(Clone, Debug, Default)]
pub struct Role {
    /// `(replication_performance_mode, replication_dr_mode)` its health reports (a
    /// standby reports its active node's: `ActiveNodeReplicationState`); None leaves
    /// both out and answers as an OpenBao node does.
    pub modes: Option<(String, String)>,
    /// A performance standby (health 473, `performance_standby: true`).
    pub perf_standby: bool,
    /// A standby whose heartbeats to the active node fail (1.19+: 474,
    /// `ha_connection_healthy: false`).
    pub ha_unhealthy: bool,
    /// Removed from the raft cluster (1.19+: 530, `removed_from_cluster: true`); it
    /// still names the leader it knew.
    pub removed: bool,
    pub sealed: bool,
    /// The listener has `redact_addresses = true` (1.17+): leader addresses are "".
    pub redacted: bool,
    /// The `data` of `/v1/sys/replication/status` (`{"dr": .., "performance": ..}`).
    pub replication_status: Option<serde_json::Value>,
}

pub struct MockNode {
    pub addr: SocketAddr,
    behavior: Arc<Mutex<Behavior>>,
    role: Arc<Mutex<Role>>,
    requests: Arc<AtomicUsize>,
    /// Of those, the ones to `/v1/sys/health`.
    health_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl MockNode {
    pub async fn start(bind: SocketAddr, behavior: Behavior) -> MockNode {
        let listener = TcpListener::bind(bind).await.expect("bind mock node");
        let addr = listener.local_addr().unwrap();
        let behavior = Arc::new(Mutex::new(behavior));
        let b = behavior.clone();
        let role: Arc<Mutex<Role>> = Arc::default();
        let roles = role.clone();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let health_requests = Arc::new(AtomicUsize::new(0));
        let health_counter = health_requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let b = b.clone();
                let counter = counter.clone();
                let health_counter = health_counter.clone();
                let roles = roles.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        // A TLS ClientHello to this plain-HTTP node: answer as Go's
                        // net/http does, with a plain 400, and close.
                        if buf.first() == Some(&0x16) {
                            let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                            return;
                        }
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    let request = String::from_utf8_lossy(&buf);
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                    if path.starts_with("/v1/sys/health") {
                        health_counter.fetch_add(1, Ordering::Relaxed);
                    }
                    let behavior = b.lock().unwrap().clone();
                    let role = roles.lock().unwrap().clone();
                    let (status, body) = match behavior {
                        Behavior::Stall => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        Behavior::Trickle => {
                            let body = br#"{"initialized":true,"sealed":false,"standby":false}"#;
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            let _ = sock.write_all(head.as_bytes()).await;
                            for b in body {
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                                if sock.write_all(&[*b]).await.is_err() {
                                    return;
                                }
                            }
                            return;
                        }
                        Behavior::Huge => {
                            let size = 16 << 20;
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
                                size + 2
                            );
                            let _ = sock.write_all(head.as_bytes()).await;
                            let chunk = vec![b' '; 64 << 10];
                            for _ in 0..size / chunk.len() {
                                if sock.write_all(&chunk).await.is_err() {
                                    return;
                                }
                            }
                            let _ = sock.write_all(b"}").await;
                            return;
                        }
                        Behavior::WrongTypes => (
                            200,
                            r#"{"initialized":"yes","sealed":"no","standby":0,"ha_enabled":"sure","leader_address":17}"#.to_string(),
                        ),
                        Behavior::Garbage => (200, "<html>not json".to_string()),
                        Behavior::ServerError => (500, "{\"errors\":[\"boom\"]}".to_string()),
                        Behavior::Node { active, leader } => answer(&path, active, &leader, &role),
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        MockNode {
            addr,
            behavior,
            role,
            requests,
            health_requests,
            task,
        }
    }

    /// A node on `ip:8200` that is active and names itself the leader.
    pub async fn active_leader(ip: &str) -> MockNode {
        let addr: SocketAddr = format!("{ip}:8200").parse().unwrap();
        Self::start(
            addr,
            Behavior::Node {
                active: true,
                leader: format!("http://{addr}"),
            },
        )
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// HTTP requests answered or stalled so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Of `requests()`, those to `/v1/sys/health`.
    pub fn health_requests(&self) -> usize {
        self.health_requests.load(Ordering::Relaxed)
    }

    pub fn set(&self, behavior: Behavior) {
        *self.behavior.lock().unwrap() = behavior;
    }

    /// The replication modes this node reports from now on (Vault Enterprise's
    /// `replication_performance_mode`, `replication_dr_mode`).
    pub fn set_replication(&self, perf: &str, dr: &str) {
        self.role.lock().unwrap().modes = Some((perf.to_string(), dr.to_string()));
    }

    /// Changes what the node is beyond active or standby.
    pub fn set_role(&self, change: impl FnOnce(&mut Role)) {
        change(&mut self.role.lock().unwrap());
    }
}

/// Three nodes on `<net>.1-3:8200`, the first active (all name it the leader), each
/// reporting replication modes `perf` and `dr` (a standby reports its active node's).
pub async fn cluster(net: &str, perf: &str, dr: &str) -> Vec<MockNode> {
    let leader = format!("http://{net}.1:8200");
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let node = MockNode::start(
            format!("{net}.{i}:8200").parse().unwrap(),
            Behavior::Node {
                active: i == 1,
                leader: leader.clone(),
            },
        )
        .await;
        node.set_replication(perf, dr);
        nodes.push(node);
    }
    nodes
}

/// Every node of a cluster reports `perf` and `dr` from now on.
pub fn set_modes(nodes: &[MockNode], perf: &str, dr: &str) {
    for n in nodes {
        n.set_replication(perf, dr);
    }
}

/// A `Node`'s answer on `path`: see the module docs for the sources.
fn answer(path: &str, active: bool, leader: &str, role: &Role) -> (u16, String) {
    if path.starts_with("/v1/sys/health") {
        health(active, role)
    } else if path.starts_with("/v1/sys/leader") {
        leader_answer(active, leader, role)
    } else if path.starts_with("/v1/sys/replication/") && role.modes.is_some() {
        replication_status(path, role)
    } else {
        (404, r#"{"errors":[]}"#.to_string())
    }
}

/// `/v1/sys/health` as `http/sys_health.go` builds it: the code by Vault's precedence
/// (501 uninitialised, 530 removed, 503 sealed, 474 HA-unhealthy standby, 472 DR
/// secondary (active and standbys), 473 perf standby, 429 standby, 200 active);
/// `last_wal` on an unsealed active node only; `cluster_name`/`cluster_id` left out
/// while sealed. Enterprise bodies carry the 1.16+ and 1.19+ fields.
fn health(active: bool, role: &Role) -> (u16, String) {
    let standby = !active;
    let Some((perf, dr)) = &role.modes else {
        // OpenBao 2.x / Vault Community shape (tests/openbao_*.rs read the real one).
        let code = if role.sealed {
            503
        } else if active {
            200
        } else {
            429
        };
        return (
            code,
            format!(
                r#"{{"initialized":true,"sealed":{},"standby":{standby}}}"#,
                role.sealed
            ),
        );
    };
    let dr_secondary = dr == "secondary";
    let code = if role.removed {
        530
    } else if role.sealed {
        503
    } else if standby && role.ha_unhealthy {
        474
    } else if dr_secondary {
        472
    } else if standby && role.perf_standby {
        473
    } else if standby {
        429
    } else {
        200
    };
    let cluster = if role.sealed {
        String::new()
    } else {
        r#","cluster_name":"vault-cluster-5e9c","cluster_id":"d4ff959c-38e1-f4b1-9d3e-3c2f06b1e1a1""#.into()
    };
    let last_wal = if active && !role.sealed {
        r#","last_wal":92935320"#
    } else {
        ""
    };
    let standby_fields = if standby {
        format!(
            r#","ha_connection_healthy":{},"last_request_forwarding_heartbeat_ms":{}"#,
            !role.ha_unhealthy,
            if role.ha_unhealthy { 61234 } else { 412 }
        )
    } else {
        String::new()
    };
    (
        code,
        format!(
            r#"{{"initialized":true,"sealed":{},"standby":{standby},"performance_standby":{},"replication_performance_mode":"{perf}","replication_dr_mode":"{dr}","server_time_utc":1733480000,"version":"1.19.2+ent","enterprise":true,"echo_duration_ms":1,"clock_skew_ms":0,"replication_primary_canary_age_ms":420,"removed_from_cluster":{}{cluster}{last_wal}{standby_fields}}}"#,
            role.sealed,
            standby && role.perf_standby,
            role.removed
        ),
    )
}

/// `/v1/sys/leader` as `http/sys_leader.go` answers it (every field present, Vault does
/// not omit empty ones); 503 while sealed; empty addresses behind a redacting
/// listener.
fn leader_answer(active: bool, leader: &str, role: &Role) -> (u16, String) {
    if role.sealed {
        return (503, r#"{"errors":["Vault is sealed"]}"#.into());
    }
    let (address, cluster_address) = if role.redacted {
        (String::new(), String::new())
    } else {
        (leader.to_string(), leader.replace(":8200", ":8201"))
    };
    if role.modes.is_none() {
        return (
            200,
            format!(
                r#"{{"ha_enabled":true,"is_self":{active},"leader_address":"{address}","leader_cluster_address":"{cluster_address}"}}"#
            ),
        );
    }
    (
        200,
        format!(
            r#"{{"ha_enabled":true,"is_self":{active},"active_time":"2024-12-06T10:00:00Z","leader_address":"{address}","leader_cluster_address":"{cluster_address}","performance_standby":{},"performance_standby_last_remote_wal":0,"last_wal":92935320,"raft_committed_index":1204,"raft_applied_index":1204}}"#,
            !active && role.perf_standby
        ),
    )
}

/// The replication status endpoints (`replication/index.mdx`, `replication-dr.mdx`):
/// the combined one wraps both kinds, the per-kind ones that kind alone.
fn replication_status(path: &str, role: &Role) -> (u16, String) {
    let disabled = serde_json::json!({"mode": "disabled"});
    let data = role
        .replication_status
        .clone()
        .unwrap_or_else(|| serde_json::json!({"dr": disabled, "performance": disabled}));
    let body = if path.starts_with("/v1/sys/replication/dr/status") {
        data.get("dr").cloned().unwrap_or(disabled)
    } else if path.starts_with("/v1/sys/replication/performance/status") {
        data.get("performance").cloned().unwrap_or(disabled)
    } else {
        data
    };
    (200, serde_json::json!({ "data": body }).to_string())
}

impl Drop for MockNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}
