//! The proxy's data path with real TLS on both ends: rustls mTLS servers stand in for
//! cluster nodes (each with its own certificate), the proxy runs in-process, and the
//! cluster view is set by the test (the proxy reads only the view; it never polls).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::addr;
use crate::support::proxy::{view_led_by, InProcessProxy};
use crate::support::tls::{connect, FakeNode, Pki, ALPN_FW};

/// Deterministic pseudo-random bytes, so a corrupted or reordered byte is caught.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfers_round_trip_intact_with_half_close() {
    let pki = Pki::new();
    let a = FakeNode::start(&pki, addr("127.51.0.1:0"), "node-a").await;
    for (i, data_path) in ["splice", "copy"].iter().enumerate() {
        round_trip(&pki, &a, &format!("127.51.0.{}:0", 100 + i), data_path).await;
    }
}

async fn round_trip(pki: &Pki, a: &FakeNode, listen: &str, data_path: &str) {
    let p = InProcessProxy::start(listen, &format!("data_path = \"{data_path}\""), Some(a));

    let tls = connect(p.addr, pki.client(&[ALPN_FW])).await.unwrap();
    {
        let (_, conn) = tls.get_ref();
        assert_eq!(
            conn.peer_certificates().unwrap()[0],
            a.cert,
            "reached node A"
        );
        assert_eq!(conn.alpn_protocol(), Some(ALPN_FW));
    }
    let (mut rd, mut wr) = tokio::io::split(tls);
    let data = pattern(24 * 1024 * 1024, 7);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(100_000) {
            wr.write_all(chunk).await.unwrap();
        }
        // Half-close: close_notify + FIN; the node must still be able to answer.
        wr.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(data.len() + 64);
    rd.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    let trailer = format!("bye {}\n", data.len());
    assert_eq!(got.len(), data.len() + trailer.len());
    assert!(got[..data.len()] == data[..], "echoed bytes differ");
    assert_eq!(
        &got[data.len()..],
        trailer.as_bytes(),
        "written after our half-close"
    );

    p.shutdown.cancel();
    p.task
        .await
        .unwrap()
        .expect("a stopped proxy ends without error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_change_closes_old_connections_and_moves_new_ones() {
    let pki = Pki::new();
    let a = FakeNode::start(&pki, addr("127.52.0.1:0"), "node-a").await;
    let b = FakeNode::start(&pki, addr("127.52.0.2:0"), "node-b").await;
    let close = InProcessProxy::start("127.52.0.100:0", "", Some(&a));
    let keep = InProcessProxy::start("127.52.0.101:0", "on_leader_change = \"keep\"", Some(&a));

    let mut old = connect(close.addr, pki.client(&[ALPN_FW])).await.unwrap();
    let mut kept = connect(keep.addr, pki.client(&[ALPN_FW])).await.unwrap();
    for s in [&mut old, &mut kept] {
        assert_eq!(s.get_ref().1.peer_certificates().unwrap()[0], a.cert);
        s.write_all(b"ping").await.unwrap();
        let mut b4 = [0u8; 4];
        s.read_exact(&mut b4).await.unwrap();
        assert_eq!(&b4, b"ping");
    }

    close.views.send_replace(view_led_by(Some(&b)));
    keep.views.send_replace(view_led_by(Some(&b)));

    // The connection to the old leader is closed by the proxy.
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(10), old.read(&mut buf)).await;
    match r {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("old connection should be closed, got {other:?}"),
    }
    assert_eq!(close.proxy.cut_overs(), 1);
    // With on_leader_change = "keep" it still works.
    kept.write_all(b"still").await.unwrap();
    let mut b5 = [0u8; 5];
    kept.read_exact(&mut b5).await.unwrap();
    assert_eq!(&b5, b"still");

    // New connections reach the new leader at once.
    let new = connect(close.addr, pki.client(&[ALPN_FW])).await.unwrap();
    assert_eq!(
        new.get_ref().1.peer_certificates().unwrap()[0],
        b.cert,
        "reached node B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_or_rejected_alpn_is_refused_not_left_hanging() {
    let pki = Pki::new();
    let a = FakeNode::start(&pki, addr("127.53.0.1:0"), "node-a").await;
    // A long ClientHello deadline: a refusal must come from the decision, not a timeout.
    let p = InProcessProxy::start("127.53.0.100:0", "client_hello_timeout = \"60s\"", None);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        connect(p.addr, pki.client(&[ALPN_FW])),
    )
    .await
    .expect("refused at once, not hung")
    .expect_err("no leader: refused");
    assert_ne!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");

    p.views.send_replace(view_led_by(Some(&a)));
    // Raft traffic and connections without ALPN never reach "the active".
    for alpn in [&[b"raft_storage_v1".as_slice()][..], &[]] {
        let r = tokio::time::timeout(Duration::from_secs(10), connect(p.addr, pki.client(alpn)))
            .await
            .expect("refused at once");
        assert!(r.is_err(), "ALPN {alpn:?} must be rejected");
    }
    // And the allowed id goes through.
    let ok = connect(p.addr, pki.client(&[ALPN_FW])).await.unwrap();
    assert_eq!(ok.get_ref().1.peer_certificates().unwrap()[0], a.cert);
}
