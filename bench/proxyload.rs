//! Load tool for the proxy benchmark (`bench/proxy`). Modes:
//!
//! - `sink LISTEN`: a stand-in cluster node. Per connection: read the first bytes,
//!   answer one byte, then read and discard until EOF.
//! - `fake-vault LISTEN CLUSTER_ADDR [LEADER_API]`: answers `/v1/sys/health` and
//!   `/v1/sys/leader`, naming CLUSTER_ADDR as the leader's cluster address (so the agent
//!   proxies to the sink) and LEADER_API as the leader (default: itself, active; any
//!   other: it is a standby).
//! - `throughput TARGET SECONDS`: one connection: a real ClientHello with ALPN
//!   `req_fw_sb-act_v1`, wait for the sink's byte, then stream 256 KiB writes; prints
//!   Gbit/s.
//! - `connrate TARGET SECONDS CONCURRENCY`: connect, ClientHello, wait for the byte,
//!   close; prints completed connections per second.
//!
//! The bytes after the ClientHello are not TLS: the proxy never looks past the hello,
//! so this measures the proxy, not the cipher.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn client_hello() -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"req_fw_sb-act_v1".to_vec()];
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "fw-bench".try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

async fn sink(listen: SocketAddr) {
    let l = TcpListener::bind(listen).await.unwrap();
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 256 * 1024];
            if matches!(s.read(&mut buf).await, Ok(n) if n > 0) && s.write_all(b"k").await.is_ok() {
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        });
    }
}

async fn fake_vault(listen: SocketAddr, cluster_addr: String, leader: Option<String>) {
    let l = TcpListener::bind(listen).await.unwrap();
    let own = format!("http://{listen}");
    let standby = leader.as_ref().is_some_and(|l| *l != own);
    let api = leader.unwrap_or(own);
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        let (api, cluster) = (api.clone(), cluster_addr.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let Ok(n) = s.read(&mut buf).await else {
                return;
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let body = if req.contains("/v1/sys/health") {
                format!(r#"{{"initialized":true,"sealed":false,"standby":{standby}}}"#)
            } else {
                format!(
                    r#"{{"ha_enabled":true,"is_self":{},"leader_address":"{api}","leader_cluster_address":"https://{cluster}"}}"#,
                    !standby
                )
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

async fn open(target: SocketAddr, hello: &[u8]) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    s.write_all(hello).await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(s)
}

async fn throughput(target: SocketAddr, secs: u64) {
    let hello = client_hello();
    let mut s = open(target, &hello).await.expect("connect");
    let buf = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        s.write_all(&buf).await.unwrap();
        sent += buf.len() as u64;
    }
    let gbit = sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9;
    println!("{gbit:.2}");
}

async fn connrate(target: SocketAddr, secs: u64, concurrency: usize) {
    let hello = Arc::new(client_hello());
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (hello, done, failed) = (hello.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match open(target, &hello).await {
                    Ok(s) => {
                        drop(s);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "{:.0} {}",
        done.load(Ordering::Relaxed) as f64 / secs as f64,
        failed.load(Ordering::Relaxed)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "sink" => sink(arg(2).parse().unwrap()).await,
        "fake-vault" => {
            let leader = args.get(4).cloned();
            fake_vault(arg(2).parse().unwrap(), arg(3), leader).await
        }
        "throughput" => throughput(arg(2).parse().unwrap(), arg(3).parse().unwrap()).await,
        "connrate" => {
            connrate(
                arg(2).parse().unwrap(),
                arg(3).parse().unwrap(),
                arg(4).parse().unwrap(),
            )
            .await
        }
        _ => {
            eprintln!("usage: proxyload sink|fake-vault|throughput|connrate ...");
            #[allow(clippy::disallowed_methods)] // a bench tool, nothing to drop
            std::process::exit(64);
        }
    }
}
