//! Inputs a real OpenBao cannot produce (mock nodes: garbage, 500s, stalls, a split
//! brain) and hostile DNS traffic (garbage datagrams, truncated TCP messages).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::support::addr;
use crate::support::agent::Agent;
use crate::support::config::{agent_config, dc1, nodes};
use crate::support::dns::{ask, build_query, ips, query, rcode, Proto};
use crate::support::mock::{Behavior, MockNode};
use crate::support::openbao::eventually;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn leader(s: &str) -> Behavior {
    Behavior::Node {
        active: false,
        leader: s.to_string(),
    }
}

/// Three mock nodes: two name .1 as leader, one claims to be active itself. The
/// majority's leader is answered, never two actives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_answers_the_majority_leader() {
    let l1 = "http://127.31.0.1:8200";
    let _n1 = MockNode::start(
        addr("127.31.0.1:8200"),
        Behavior::Node {
            active: true,
            leader: l1.into(),
        },
    )
    .await;
    let n2 = MockNode::start(addr("127.31.0.2:8200"), leader(l1)).await;
    let n3 = MockNode::active_leader("127.31.0.3").await;
    let dns = addr("127.31.0.100:8600");
    let agent = Agent::with(&dc1("127.31.0", 3, &[("poll_interval", "100ms")]));
    eventually(Duration::from_secs(10), "active answers", || async {
        let m = query(
            dns,
            "active.vault.service.consul",
            RecordType::A,
            Proto::Udp,
        )
        .ok()?;
        (rcode(&m) == ResponseCode::NoError).then_some(m)
    })
    .await;
    for _ in 0..5 {
        let m = ask(dns, "active.vault.service.consul", RecordType::A).once();
        assert_eq!(ips(&m), vec!["127.31.0.1".parse::<IpAddr>().unwrap()]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        agent.log().contains("disagree"),
        "the disagreement is logged"
    );

    // An even split (1 vs 1, the third node unreachable): no active at all.
    n3.set(Behavior::ServerError);
    n2.set(Behavior::Node {
        active: true,
        leader: "http://127.31.0.2:8200".into(),
    });
    ask(dns, "active.vault.service.consul", RecordType::A)
        .until("no active during an even split", |m| {
            rcode(m) == ResponseCode::NXDomain
        })
        .await;
}

/// Garbage JSON, 500s and stalls make a node unreachable; a cluster where no node
/// answers usefully is SERVFAIL; other clusters keep answering promptly meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_nodes_never_break_other_clusters() {
    let good = MockNode::active_leader("127.32.0.1").await;
    let garbage = MockNode::start(addr("127.32.1.1:8200"), Behavior::Garbage).await;
    let failing = MockNode::start(addr("127.32.2.1:8200"), Behavior::ServerError).await;
    let stalled = MockNode::start(addr("127.32.3.1:8200"), Behavior::Stall).await;
    let dns = addr("127.32.0.100:8600");
    let agent = Agent::start(
        &agent_config("good", "127.32.0.100:8600")
            .cluster("good", &[good.url()], &[("poll_interval", "100ms")])
            .cluster("garbage", &[garbage.url()], &[])
            .cluster("failing", &[failing.url()], &[])
            .cluster("stalled", &[stalled.url()], &[("request_timeout", "300ms")])
            .toml(),
        dns,
    );
    ask(dns, "active.vault.service.good.consul", RecordType::A)
        .until("the good cluster answers", |m| {
            rcode(m) == ResponseCode::NoError
        })
        .await;
    for dc in ["garbage", "failing", "stalled"] {
        let m = ask(
            dns,
            &format!("active.vault.service.{dc}.consul"),
            RecordType::A,
        )
        .once();
        assert_eq!(
            rcode(&m),
            ResponseCode::ServFail,
            "{dc}: no usable view is SERVFAIL"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = agent.log();
    assert!(
        log.contains("kind=\"body\""),
        "garbage JSON is a body error:\n{log}"
    );
    assert!(log.contains("kind=\"status\""), "500 is a status error");
    assert!(log.contains("kind=\"timeout\""), "a stall is a timeout");
    // The stalled cluster never delays the others.
    let m = ask(dns, "vault.service.good.consul", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert_eq!(ips(&m), vec!["127.32.0.1".parse::<IpAddr>().unwrap()]);

    // A node that recovers is picked up.
    garbage.set(Behavior::Node {
        active: true,
        leader: "http://127.32.1.1:8200".into(),
    });
    ask(dns, "active.vault.service.garbage.consul", RecordType::A)
        .until("the recovered cluster answers", |m| {
            ips(m) == vec!["127.32.1.1".parse::<IpAddr>().unwrap()]
        })
        .await;
}

/// Garbage datagrams, a truncated TCP message, a TCP length prefix with nothing behind
/// it, a response (QR=1) and a multi-question message: the server answers normally
/// afterwards, on both transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_leave_the_server_answering() {
    let _node = MockNode::active_leader("127.33.0.1").await;
    let dns = addr("127.33.0.100:8600");
    let mut agent = Agent::start(
        &agent_config("dc1", "127.33.0.100:8600")
            .dns("tcp_idle_timeout", "1s")
            .cluster("dc1", &nodes("127.33.0", 1), &[("poll_interval", "100ms")])
            .toml(),
        dns,
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0u8; 11],
        vec![0xff; 12],
        vec![0xab; 512],
        vec![0x55; 4096],
    ];
    // A valid query cut at every length.
    let q = build_query("active.vault.service.consul", RecordType::A);
    for n in 0..q.len() {
        garbage.push(q[..n].to_vec());
    }
    // Question count claims 60000 questions.
    let mut many = q.clone();
    many[4] = 0xea;
    many[5] = 0x60;
    garbage.push(many);
    // A response (QR=1) must be ignored, not answered.
    let mut resp = q.clone();
    resp[2] |= 0x80;
    garbage.push(resp);
    // Deterministic pseudo-random junk.
    let mut x: u32 = 0x1234_5678;
    for len in [13usize, 40, 100, 300, 1200] {
        let v = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        garbage.push(v);
    }
    for g in &garbage {
        udp.send_to(g, dns).unwrap();
        let mut buf = [0u8; 4096];
        // An answer (FORMERR) or silence are both fine; a crash is not.
        let _ = udp.recv_from(&mut buf);
    }

    // TCP: a length prefix promising more than is sent, then close.
    let mut s = TcpStream::connect(dns).unwrap();
    s.write_all(&[0x01, 0x00, 0xde, 0xad]).unwrap();
    drop(s);
    // A truncated message inside a correct frame.
    let mut s = TcpStream::connect(dns).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let cut = &q[..q.len() - 3];
    let mut framed = (cut.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(cut);
    s.write_all(&framed).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    // A client that connects and sends nothing is dropped at the idle timeout.
    let mut idle = TcpStream::connect(dns).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        idle.read(&mut b).unwrap_or(0),
        0,
        "idle TCP client is closed"
    );

    ask(dns, "active.vault.service.consul", RecordType::A)
        .until("answers after the garbage", |m| {
            ips(m) == vec!["127.33.0.1".parse::<IpAddr>().unwrap()]
        })
        .await;
    let m = ask(dns, "active.vault.service.consul", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert_eq!(ips(&m), vec!["127.33.0.1".parse::<IpAddr>().unwrap()]);
    assert!(
        !agent.log().contains("panicked"),
        "no panic:\n{}",
        agent.log()
    );
    assert_eq!(agent.stop(), Some(0), "SIGTERM stops the agent cleanly");
}
