//! Protocol details: truncation without EDNS, EDNS echo, error codes for requests we do
//! not serve (non-QUERY opcodes, several questions, EDNS versions we do not speak).

use std::time::Duration;

use crate::support::agent::Agent;
use crate::support::config::{agent_config, nodes};
use crate::support::dns::{ask, exchange, question, Proto};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

fn start(ip: &str) -> Agent {
    let addrs: String = (1..=100)
        .map(|i| format!("\"10.9.{}.{}\"", i / 250, i % 250))
        .collect::<Vec<_>>()
        .join(", ");
    let config = agent_config("dc1", &format!("{ip}:8600"))
        .record("many.example.internal", &[("a", &format!("[{addrs}]"))])
        .cluster("dc1", &nodes("127.34.0", 1), &[]);
    Agent::start(&config.toml(), format!("{ip}:8600").parse().unwrap())
}

#[test]
fn large_answers_truncate_on_udp_and_fit_on_tcp_or_with_edns() {
    let agent = start("127.34.0.100");
    let m = exchange(agent.dns, &question("many.example.internal", RecordType::A));
    assert!(m.metadata.truncation, "100 A records do not fit 512 bytes");
    assert!(m.answers.len() < 100);

    let mut q = question("many.example.internal", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.edns = Some(edns);
    let m = exchange(agent.dns, &q);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    let e = m.edns.expect("EDNS echoed");
    assert_eq!(e.version(), 0);
    assert_eq!(e.max_payload(), 4096);

    let m = ask(agent.dns, "many.example.internal", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert_eq!(m.answers.len(), 100);
}

#[test]
fn requests_we_do_not_serve_get_the_right_error() {
    let agent = start("127.34.0.101");
    let mut two = question("vault.service.consul", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("nomad.service.consul").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        exchange(agent.dns, &two).metadata.response_code,
        ResponseCode::FormErr
    );

    let mut notify = question("consul", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        exchange(agent.dns, &notify).metadata.response_code,
        ResponseCode::NotImp
    );

    let mut chaos = Message::new(7, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("version.bind").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    assert_eq!(
        exchange(agent.dns, &chaos).metadata.response_code,
        ResponseCode::Refused
    );

    let mut v1 = question("vault.service.consul", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    v1.edns = Some(edns);
    // BADVERS is extended rcode 16 (it shares the number with TSIG's BADSIG, which is
    // how the decoder names it).
    let code = exchange(agent.dns, &v1).metadata.response_code;
    assert_eq!(
        u16::from(code),
        u16::from(ResponseCode::BADVERS),
        "{code:?}"
    );

    // The apex answers its SOA; a cluster never confirmed answers SERVFAIL.
    let m = exchange(agent.dns, &question("consul.", RecordType::SOA));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = exchange(
        agent.dns,
        &question("active.vault.service.consul.", RecordType::A),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

/// Repeated identical questions are answered from the UDP path's cache of encoded
/// responses: each answer still carries its own ID, several instances still come in a
/// fresh random order each time (Consul's), and static records keep their configured
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_questions_keep_their_id_and_a_random_order() {
    use crate::support::mock::{Behavior, MockNode};
    let leader = "http://127.34.1.1:8200".to_string();
    let _n1 = MockNode::active_leader("127.34.1.1").await;
    let standby = |ip: &str| {
        MockNode::start(
            format!("{ip}:8200").parse().unwrap(),
            Behavior::Node {
                active: false,
                leader: leader.clone(),
            },
        )
    };
    let _n2 = standby("127.34.1.2").await;
    let _n3 = standby("127.34.1.3").await;
    let agent = Agent::start(
        &agent_config("dc1", "127.34.1.100:8600")
            .record(
                "fixed.example.internal",
                &[("a", "[\"10.0.0.3\", \"10.0.0.1\", \"10.0.0.2\"]")],
            )
            .cluster("dc1", &nodes("127.34.1", 3), &[])
            .toml(),
        "127.34.1.100:8600".parse().unwrap(),
    );
    let ips =
        |m: &Message| -> Vec<String> { m.answers.iter().map(|r| r.data.to_string()).collect() };
    crate::support::openbao::eventually(Duration::from_secs(20), "all three instances", || async {
        let m = exchange(agent.dns, &question("vault.service.consul.", RecordType::A));
        (m.answers.len() == 3).then_some(())
    })
    .await;

    let mut orders = std::collections::HashSet::new();
    for id in 0..60u16 {
        let mut q = question("vault.service.consul.", RecordType::A);
        q.metadata.id = id;
        let m = exchange(agent.dns, &q);
        assert_eq!(m.metadata.id, id);
        let got = ips(&m);
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, ["127.34.1.1", "127.34.1.2", "127.34.1.3"]);
        orders.insert(got);
    }
    assert!(orders.len() > 1, "60 answers all in one order: {orders:?}");

    for id in 0..10u16 {
        let mut q = question("fixed.example.internal.", RecordType::A);
        q.metadata.id = id;
        let m = exchange(agent.dns, &q);
        assert_eq!(m.metadata.id, id);
        assert_eq!(ips(&m), ["10.0.0.3", "10.0.0.1", "10.0.0.2"]);
    }
}

/// Five instances of the service: a UDP answer without EDNS carries
/// `udp_answer_limit` (3) of them, a fresh random choice each time, each SRV with its
/// own glue; with EDNS or over TCP every instance comes. The RFC 2782 form without
/// `service` and the `.dc` form answer the same (Consul's optional forms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answer_limit_keeps_glue_in_step_and_consul_forms_answer() {
    use crate::support::mock::{Behavior, MockNode};
    use std::collections::BTreeSet;
    let leader = "http://127.34.2.1:8200".to_string();
    let mut mocks = vec![MockNode::active_leader("127.34.2.1").await];
    for i in 2..=5 {
        let standby = Behavior::Node {
            active: false,
            leader: leader.clone(),
        };
        mocks.push(MockNode::start(format!("127.34.2.{i}:8200").parse().unwrap(), standby).await);
    }
    let agent = Agent::with(&agent_config("dc1", "127.34.2.100:8600").cluster(
        "dc1",
        &nodes("127.34.2", 5),
        &[("poll_interval", "100ms")],
    ));
    ask(agent.dns, "vault.service.consul", RecordType::SRV)
        .over(Proto::Tcp)
        .until("five instances", |m| m.answers.len() == 5)
        .await;
    let targets = |m: &Message| -> Vec<String> {
        let mut t: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.target.to_string()),
                _ => None,
            })
            .collect();
        t.sort();
        t
    };
    let glue = |m: &Message| -> Vec<String> {
        let mut g: Vec<String> = m.additionals.iter().map(|r| r.name.to_string()).collect();
        g.sort();
        g
    };
    let mut seen = BTreeSet::new();
    for name in [
        "vault.service.consul",
        "_vault._tcp.consul",
        "_vault._tcp.service.dc1.dc.consul",
    ] {
        for _ in 0..10 {
            let m = exchange(agent.dns, &question(name, RecordType::SRV));
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert_eq!(m.answers.len(), 3, "{name}: udp_answer_limit");
            assert!(
                !m.metadata.truncation,
                "{name}: trimmed to the limit is not TC"
            );
            assert_eq!(glue(&m), targets(&m), "{name}: each SRV with its own glue");
            seen.extend(targets(&m));
        }
    }
    assert!(seen.len() > 3, "a fresh random choice each time: {seen:?}");
    let mut q = question("vault.service.consul", RecordType::SRV);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.edns = Some(edns);
    let m = exchange(agent.dns, &q);
    assert_eq!(
        (m.answers.len(), m.additionals.len()),
        (5, 5),
        "EDNS: every instance"
    );
    assert_eq!(glue(&m), targets(&m));
    let m = ask(agent.dns, "_vault._tcp.consul", RecordType::SRV)
        .over(Proto::Tcp)
        .once();
    assert_eq!(targets(&m).len(), 5, "TCP: every instance");
    // A records are limited the same way.
    let m = exchange(agent.dns, &question("vault.service.consul", RecordType::A));
    assert_eq!(m.answers.len(), 3);
    drop(mocks);
}

/// During a migration the rest of `.consul` is still a Consul agent's: with
/// `zone_fallback` the names this agent does not own go there (here a second agent
/// stands in for Consul), while its own names, and everything outside the zone, are
/// answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_fallback_forwards_the_names_the_agent_does_not_own() {
    use crate::support::mock::MockNode;
    let _leader = MockNode::active_leader("127.34.3.1").await;
    let consul = Agent::with(
        &agent_config("dc1", "127.34.3.101:8600")
            .record("nomad.service.consul", &[("a", "[\"192.0.2.7\"]")])
            .cluster("dc1", &nodes("127.34.9", 1), &[]),
    );
    let agent = Agent::with(
        &agent_config("dc1", "127.34.3.100:8600")
            .dns("zone_fallback", "[\"127.34.3.101:8600\"]")
            .cluster("dc1", &nodes("127.34.3", 1), &[("poll_interval", "100ms")]),
    );
    let dns = agent.dns;
    ask(dns, "active.vault.service.consul", RecordType::A)
        .until("the agent's own answer", |m| !m.answers.is_empty())
        .await;
    let m = ask(dns, "nomad.service.consul", RecordType::A).once();
    assert_eq!(
        m.answers.first().and_then(|r| r.data.ip_addr()),
        Some("192.0.2.7".parse().unwrap()),
        "a name the agent does not own: Consul's answer"
    );
    assert!(!m.metadata.authoritative, "forwarded, not ours");
    let m = ask(dns, "web.service.consul", RecordType::A)
        .over(Proto::Tcp)
        .once();
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "Consul's NXDOMAIN"
    );
    // Ours stay ours: the vault names and addresses of a known datacenter.
    let m = ask(dns, "active.vault.service.consul", RecordType::A).once();
    assert_eq!(
        m.answers[0].data.ip_addr(),
        Some("127.34.3.1".parse().unwrap())
    );
    assert!(m.metadata.authoritative);
    // Outside the zone, still never an open resolver.
    let m = ask(dns, "example.org", RecordType::A).once();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    drop(consul);
}
