//! Mock Vault nodes, for what a real server cannot be made to do: garbage JSON, 500s,
//! stalls, contradicting leader reports (split brain), and Vault Enterprise's
//! replication modes.

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

pub struct MockNode {
    pub addr: SocketAddr,
    behavior: Arc<Mutex<Behavior>>,
    /// `(replication_performance_mode, replication_dr_mode)` a `Node` reports in its
    /// health answer; None leaves both fields out (an older server).
    replication: Arc<Mutex<Option<(String, String)>>>,
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
        let replication: Arc<Mutex<Option<(String, String)>>> = Arc::default();
        let modes = replication.clone();
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
                let modes = modes.clone();
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
                    let modes = modes.lock().unwrap().clone();
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
                        Behavior::Node { active, leader } => {
                            if path.starts_with("/v1/sys/health") {
                                let replication = modes
                                    .map(|(perf, dr)| {
                                        format!(
                                            r#","version":"1.17.3+ent","enterprise":true,"replication_performance_mode":"{perf}","replication_dr_mode":"{dr}""#
                                        )
                                    })
                                    .unwrap_or_default();
                                (
                                    if active { 200 } else { 429 },
                                    format!(
                                        r#"{{"initialized":true,"sealed":false,"standby":{}{replication}}}"#,
                                        !active
                                    ),
                                )
                            } else {
                                (
                                    200,
                                    format!(
                                        r#"{{"ha_enabled":true,"is_self":{active},"leader_address":"{leader}","leader_cluster_address":"{}"}}"#,
                                        leader.replace(":8200", ":8201")
                                    ),
                                )
                            }
                        }
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
            replication,
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
        *self.replication.lock().unwrap() = Some((perf.to_string(), dr.to_string()));
    }
}

impl Drop for MockNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}
