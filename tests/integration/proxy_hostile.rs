//! Hostile clients against the proxy: silence, garbage, an oversized or slow
//! ClientHello, and more connections than the cap. Each is closed within its limit, the
//! proxy keeps serving others, and afterwards no connection task or file descriptor is
//! left behind. The descriptor count is this process's, so the test runs in a process
//! of its own (the one integration binary re-run for just it), where no other test
//! opens descriptors beside it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use vault_locator::proxy::ProxySide;

use crate::support::proxy::InProcessProxy;
use crate::support::tls::{connect, FakeNode, Pki, ALPN_FW};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
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

#[test]
fn hostile_clients_are_closed_within_limits_and_nothing_leaks() {
    let alone = "proxy_hostile::hostile_clients_in_a_process_of_their_own";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            alone,
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "it ran: {log}");
}

/// Run by the test above, alone in its own process (ignored when the binary runs all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run alone, in a process of its own, by hostile_clients_are_closed_within_limits_and_nothing_leaks"]
async fn hostile_clients_in_a_process_of_their_own() {
    let pki = Pki::new();
    let node = FakeNode::start(&pki, "127.54.0.1:0".parse().unwrap(), "node-a").await;
    let strict_side = InProcessProxy::start(
        "127.54.0.100:0",
        "client_hello_timeout = \"500ms\"\nmax_client_hello = 2048",
        Some(&node),
    );
    let capped_side = InProcessProxy::start(
        "127.54.0.101:0",
        "client_hello_timeout = \"30s\"\nmax_connections = 4",
        Some(&node),
    );
    let (strict, capped) = (strict_side.proxy.clone(), capped_side.proxy.clone());
    let (strict_addr, capped_addr) = (strict_side.addr, capped_side.addr);

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

    for side in [strict_side, capped_side] {
        side.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), side.task)
            .await
            .expect("proxy stops")
            .unwrap()
            .expect("a stopped proxy ends without error");
    }
}
