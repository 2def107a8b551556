//! Hostile clients against the proxy: silence, garbage, an oversized or slow
//! ClientHello, and more connections than the cap. Each is closed within its limit, the
//! proxy keeps serving others, and afterwards no connection task or file descriptor is
//! left behind. (One test in this binary, so the descriptor count is not disturbed by
//! tests running beside it.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vault_locator::config::Config;
use vault_locator::proxy::ProxySide;
use vault_locator::vault::feed::ClusterFeed;
use vault_locator::vault::view::{ClusterView, Leader};

use crate::support::tls::{connect, FakeNode, Pki, ALPN_FW};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn proxy_for(
    node: &FakeNode,
    listen: &str,
    extra: &str,
) -> (Arc<ProxySide>, watch::Sender<Arc<ClusterView>>) {
    let config = Config::parse(
        &format!(
            "datacenter = \"dc1\"\n[[clusters]]\nname = \"dc1\"\nnodes = [\"http://127.0.0.1:8200\"]\n\
             [[proxy]]\ncluster = \"dc1\"\nlisten = \"{listen}\"\n{extra}\n"
        ),
        "test",
    )
    .unwrap();
    let mut v = ClusterView::empty("dc1", false);
    v.last_confirmed = Some(Instant::now());
    v.leader = Some(Leader::literal(
        "http://127.54.0.1:8200",
        &format!("https://{}", node.addr),
        vec![node.addr.ip()],
        8200,
    ));
    let (tx, rx) = watch::channel(Arc::new(v));
    (
        Arc::new(ProxySide::new(
            config.proxies[0].clone(),
            ClusterFeed::new(rx),
        )),
        tx,
    )
}

/// The connection is closed by the peer (EOF or reset) within `within`.
fn assert_closed(mut s: TcpStream, within: Duration, what: &str) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: still open after {within:?}")
            }
            Err(_) => return, // reset
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn wait_idle(proxy: &ProxySide) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.open_connections() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections still held",
            proxy.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_closed_within_limits_and_nothing_leaks() {
    let pki = Pki::new();
    let node = FakeNode::start(&pki, "127.54.0.1:0".parse().unwrap(), "node-a").await;
    let (strict, _tx1) = proxy_for(
        &node,
        "127.54.0.100:0",
        "client_hello_timeout = \"500ms\"\nmax_client_hello = 2048",
    );
    let (capped, _tx2) = proxy_for(
        &node,
        "127.54.0.101:0",
        "client_hello_timeout = \"30s\"\nmax_connections = 4",
    );
    let shutdown = CancellationToken::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut tasks = Vec::new();
    for (p, listen) in [(&strict, "127.54.0.100:0"), (&capped, "127.54.0.101:0")] {
        let l = vault_locator::net::bind_tcp_group(listen.parse().unwrap(), 2).unwrap();
        addrs.push(l[0].local_addr().unwrap());
        tasks.push(tokio::spawn(p.clone().run(
            l,
            shutdown.clone(),
            // Closed at once on shutdown: no drain.
            shutdown.clone(),
        )));
    }
    let (strict_addr, capped_addr) = (addrs[0], addrs[1]);

    // Warm up (first-use allocations in the runtime), then take the baseline.
    drop(connect(strict_addr, pki.client(&[ALPN_FW])).await.unwrap());
    wait_idle(&strict).await;
    // Pooled pipes (two descriptors each, bounded) are not leaks: account for them.
    let pooled = || 2 * (strict.pooled_pipes() + capped.pooled_pipes());
    let baseline = open_fds() - pooled();

    // Silence: closed at the ClientHello deadline.
    blocking(move || {
        assert_closed(
            TcpStream::connect(strict_addr).unwrap(),
            Duration::from_secs(5),
            "silent client",
        )
    })
    .await;
    // Garbage: closed at once.
    blocking(move || {
        let mut s = TcpStream::connect(strict_addr).unwrap();
        s.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_closed(s, Duration::from_secs(5), "garbage");
    })
    .await;
    // A ClientHello larger than the cap.
    blocking(move || {
        let mut s = TcpStream::connect(strict_addr).unwrap();
        let mut huge = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
        huge.resize(3000, 0x41);
        let _ = s.write_all(&huge);
        assert_closed(s, Duration::from_secs(5), "oversized ClientHello");
    })
    .await;
    // A slow ClientHello: a real one, one byte every 100 ms, outlives the 500 ms deadline.
    blocking(move || {
        let mut s = TcpStream::connect(strict_addr).unwrap();
        let hello_start = [
            0x16u8, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03,
        ];
        let started = Instant::now();
        for b in hello_start {
            if s.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_closed(s, Duration::from_secs(5), "slow ClientHello");
        assert!(started.elapsed() < Duration::from_secs(6));
    })
    .await;

    // A client that says nothing stays with the kernel (TCP_DEFER_ACCEPT) and takes no
    // slot; once it sends a byte it is the proxy's.
    let mut quiet = TcpStream::connect(capped_addr).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        capped.open_connections(),
        0,
        "a silent client reached the proxy"
    );
    quiet.write_all(&[0x16]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while capped.open_connections() < 1 {
        assert!(
            Instant::now() < deadline,
            "a client that spoke was not accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Past the cap: four clients that sent one byte of a ClientHello hold every slot;
    // the fifth is refused at once (the ClientHello deadline is 30 s, so a close now is
    // the cap at work).
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(capped_addr).unwrap();
            s.write_all(&[0x16]).unwrap();
            s
        })
        .collect();
    held.push(quiet);
    let deadline = Instant::now() + Duration::from_secs(5);
    while capped.open_connections() < 4 {
        assert!(Instant::now() < deadline, "slots not taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    blocking(move || {
        let mut s = TcpStream::connect(capped_addr).unwrap();
        s.write_all(&[0x16]).unwrap();
        assert_closed(s, Duration::from_secs(5), "over the cap")
    })
    .await;
    // Meanwhile the other listener serves a real client.
    let ok = connect(strict_addr, pki.client(&[ALPN_FW])).await.unwrap();
    assert_eq!(ok.get_ref().1.peer_certificates().unwrap()[0], node.cert);
    drop(ok);
    drop(held);
    wait_idle(&capped).await;
    // A slot freed: the capped listener serves again.
    let ok = connect(capped_addr, pki.client(&[ALPN_FW])).await.unwrap();
    drop(ok);

    wait_idle(&strict).await;
    wait_idle(&capped).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds() - pooled() > baseline {
        assert!(
            Instant::now() < deadline,
            "file descriptors leaked: {} open ({} in the pipe pools), {baseline} before",
            open_fds(),
            pooled()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    shutdown.cancel();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("proxy stops")
            .unwrap()
            .expect("a stopped proxy ends without error");
    }
}
