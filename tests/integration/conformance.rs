//! Consul conformance, row by row: every row of `docs/conformance.md` that the agent's
//! answers can show is a row of the table below, asked of a running agent whose
//! cluster `dc1` has an active node and four standbys (stand-ins answering as Vault
//! does). What Consul answers is in the doc, read from its source and a probe; what
//! these rows pin is our side, so a change to either shows in one place.

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

use crate::support::agent::Agent;
use crate::support::config::{agent_config, nodes};
use crate::support::dns::{ask, exchange, question, Proto};
use crate::support::mock::{Behavior, MockNode};

/// What a row expects of the answer section (the rcode is checked separately).
#[derive(Debug)]
enum Expect {
    /// This many records of the asked type in the answer section.
    Records(usize),
    /// No answer, the SOA in authority (NXDOMAIN or NODATA, with the rcode).
    NegativeWithSoa,
    /// No answer and nothing in authority.
    Empty,
}

struct Row {
    case: &'static str,
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    expect: Expect,
}

const fn row(
    case: &'static str,
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    expect: Expect,
) -> Row {
    Row {
        case,
        name,
        qtype,
        rcode,
        expect,
    }
}

use Expect::*;
use RecordType::{A, AAAA, ANY, MX, NS, SOA, SRV, TXT};
use ResponseCode::{NXDomain, NoError, Refused};

/// The rows asked plainly (UDP with EDNS, so no answer limit applies). The names are
/// the doc's, in its order.
const ROWS: &[Row] = &[
    // Matches.
    row(
        "active A",
        "active.vault.service.consul.",
        A,
        NoError,
        Records(1),
    ),
    row(
        "active A, dc",
        "active.vault.service.dc1.consul.",
        A,
        NoError,
        Records(1),
    ),
    row(
        "standby A",
        "standby.vault.service.consul.",
        A,
        NoError,
        Records(4),
    ),
    row(
        "vault.service A",
        "vault.service.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "initialized tag",
        "initialized.vault.service.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "ANY gives the addresses",
        "active.vault.service.consul.",
        ANY,
        NoError,
        Records(1),
    ),
    row(
        "SRV",
        "active.vault.service.consul.",
        SRV,
        NoError,
        Records(1),
    ),
    row(
        "RFC 2782 with service",
        "_vault._active.service.consul.",
        SRV,
        NoError,
        Records(1),
    ),
    row(
        "RFC 2782 without service",
        "_vault._tcp.consul.",
        SRV,
        NoError,
        Records(5),
    ),
    row(
        "RFC 2782 tag without service",
        "_vault._active.dc1.consul.",
        SRV,
        NoError,
        Records(1),
    ),
    row(
        "<dc>.dc",
        "vault.service.dc1.dc.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "default.ns.<dc>.dc",
        "vault.service.default.ns.dc1.dc.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "default.<dc>",
        "vault.service.default.dc1.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "default.ns",
        "vault.service.default.ns.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "default.ap.<dc>.dc",
        "vault.service.default.ap.dc1.dc.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "another namespace",
        "vault.service.team.ns.dc1.dc.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "a peer",
        "vault.service.dc1.peer.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "unknown tag",
        "primary.vault.service.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "unknown service",
        "nomad.service.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "unknown dc",
        "vault.service.dc9.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "known tag, no instance",
        "perf-standby.vault.service.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "AAAA on IPv4 only",
        "active.vault.service.consul.",
        AAAA,
        NoError,
        NegativeWithSoa,
    ),
    row(
        "MX on a service name",
        "vault.service.consul.",
        MX,
        NoError,
        NegativeWithSoa,
    ),
    row(
        ".query. without a query",
        "vault.query.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "empty non-terminal",
        "service.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "addr label",
        "7f390001.addr.dc1.consul.",
        A,
        NoError,
        Records(1),
    ),
    row(
        "outside the zone, no upstreams",
        "example.org.",
        A,
        Refused,
        Empty,
    ),
    // Differences, documented.
    row(
        "TXT on a service name",
        "vault.service.consul.",
        TXT,
        NoError,
        NegativeWithSoa,
    ),
    row(
        "SOA on a service name",
        "vault.service.consul.",
        SOA,
        NoError,
        NegativeWithSoa,
    ),
    row(
        "NS on a service name",
        "vault.service.consul.",
        NS,
        NoError,
        NegativeWithSoa,
    ),
    row("apex A", "consul.", A, NoError, NegativeWithSoa),
    row("apex NS", "consul.", NS, NoError, NegativeWithSoa),
    row(
        "A without service",
        "_vault._tcp.consul.",
        A,
        NoError,
        Records(5),
    ),
    row(
        "_udp means no tag",
        "_vault._udp.service.consul.",
        SRV,
        NoError,
        Records(5),
    ),
    row(
        "addr in an unknown dc",
        "7f390001.addr.dc9.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        ".node. lookups",
        "n1.node.consul.",
        A,
        NXDomain,
        NegativeWithSoa,
    ),
    row(
        "PTR",
        "1.0.57.127.in-addr.arpa.",
        RecordType::PTR,
        Refused,
        Empty,
    ),
];

/// The agent on `<net>.100:8600`, its cluster `dc1` five stand-ins on `<net>.1-5`
/// (`.1` the active node); each test has its own `net`.
async fn start(net: &str) -> (Agent, Vec<MockNode>) {
    let leader = format!("http://{net}.1:8200");
    let mut mocks = vec![MockNode::active_leader(&format!("{net}.1")).await];
    for i in 2..=5 {
        let standby = Behavior::Node {
            active: false,
            leader: leader.clone(),
        };
        mocks.push(MockNode::start(format!("{net}.{i}:8200").parse().unwrap(), standby).await);
    }
    let agent = Agent::with(&agent_config("dc1", &format!("{net}.100:8600")).cluster(
        "dc1",
        &nodes(net, 5),
        &[("poll_interval", "100ms")],
    ));
    ask(agent.dns, "vault.service.consul", A)
        .over(Proto::Tcp)
        .until("five instances", |m| m.answers.len() == 5)
        .await;
    (agent, mocks)
}

fn with_edns(mut q: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    q.edns = Some(edns);
    q
}

fn check(row: &Row, m: &Message) -> Result<(), String> {
    let soa_in_authority = m.authorities.iter().any(|r| r.record_type() == SOA);
    let asked = |r: &&hickory_proto::rr::Record| {
        r.record_type() == row.qtype || (row.qtype == ANY && r.record_type() == A)
    };
    let records = m.answers.iter().filter(asked).count();
    if m.metadata.response_code != row.rcode {
        return Err(format!("rcode {:?}", m.metadata.response_code));
    }
    let in_zone = row.rcode != Refused;
    if m.metadata.authoritative != in_zone {
        return Err(format!("AA {}", m.metadata.authoritative));
    }
    let holds = match row.expect {
        Records(n) => records == n && records == m.answers.len(),
        NegativeWithSoa => m.answers.is_empty() && soa_in_authority,
        Empty => m.answers.is_empty() && m.authorities.is_empty(),
    };
    holds.then_some(()).ok_or_else(|| {
        format!(
            "{} answers ({records} of the type), SOA in authority: {soa_in_authority}",
            m.answers.len()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_table_row_by_row() {
    let (agent, _mocks) = start("127.57.0").await;
    let mut wrong = Vec::new();
    for row in ROWS {
        let m = exchange(agent.dns, &with_edns(question(row.name, row.qtype), 4096));
        if let Err(why) = check(row, &m) {
            wrong.push(format!(
                "{}: {} {:?}: want {:?} {:?}, got {why}",
                row.case, row.name, row.qtype, row.rcode, row.expect
            ));
        }
        // TTL 0 on every record of the zone, as Consul's default.
        if row.rcode != Refused {
            assert!(m.answers.iter().all(|r| r.ttl == 0), "{}: TTL", row.case);
        }
    }
    assert!(
        wrong.is_empty(),
        "rows that do not hold:\n{}",
        wrong.join("\n")
    );
}

/// The rows that need more than a plain question: the SRV form and glue, the query's
/// case, EDNS, the answer count at 512 bytes, opcodes, classes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_rows_that_need_a_closer_look() {
    let (agent, _mocks) = start("127.57.2").await;
    let dns = agent.dns;

    // SRV target: always `<hex>.addr.<dc>.<domain>.` (Consul names
    // `<node>.node.<dc>.consul.` when the service address is the node's), port from
    // the leader's api_addr, priority and weight 1, the A as glue.
    let m = exchange(dns, &question("active.vault.service.consul.", SRV));
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!("SRV: {m:?}")
    };
    assert_eq!(
        (srv.priority, srv.weight, srv.port, srv.target.to_string()),
        (1, 1, 8200, "7f390201.addr.dc1.consul.".to_string())
    );
    assert_eq!(m.additionals[0].name, srv.target, "the target's A as glue");

    // The query's case is kept in the answer (Consul 1.19+ lower-cases it).
    let m = exchange(dns, &question("Active.Vault.Service.CONSUL.", A));
    assert_eq!(
        m.answers[0].name.to_string(),
        "Active.Vault.Service.CONSUL."
    );

    // The apex SOA: in the answer, NS-less authority (Consul adds its NS records).
    let m = exchange(dns, &question("consul.", SOA));
    assert_eq!(m.answers.len(), 1);
    assert!(m.authorities.is_empty(), "no NS in authority: {m:?}");

    // Without EDNS, at most udp_answer_limit (3) instances, as Consul.
    let m = exchange(dns, &question("vault.service.consul.", A));
    assert_eq!(m.answers.len(), 3, "udp_answer_limit without EDNS");
    assert!(m.edns.is_none(), "no EDNS asked, none answered");
    // EDNS with a 512-byte payload: every instance that fits (Consul applies the
    // answer limit at 512 bytes whether or not EDNS is there).
    let m = exchange(dns, &with_edns(question("vault.service.consul.", A), 512));
    assert_eq!(m.answers.len(), 5, "EDNS at 512 bytes: every instance");
    // The payload answered is max(512, the client's), not an echo below 512.
    let m = exchange(dns, &with_edns(question("vault.service.consul.", A), 300));
    assert_eq!(m.edns.expect("EDNS answered").max_payload(), 512);
    let m = exchange(dns, &with_edns(question("vault.service.consul.", A), 1232));
    assert_eq!(m.edns.expect("EDNS answered").max_payload(), 1232);
    // EDNS version 1: BADVERS (extended rcode 16, decoded under TSIG's BADSIG name).
    let mut v1 = with_edns(question("vault.service.consul.", A), 1232);
    v1.edns.as_mut().unwrap().set_version(1);
    let code = exchange(dns, &v1).metadata.response_code;
    assert_eq!(
        u16::from(code),
        u16::from(ResponseCode::BADVERS),
        "{code:?}"
    );

    // NOTIFY and other opcodes: NOTIMP.
    let mut notify = question("consul.", SOA);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        exchange(dns, &notify).metadata.response_code,
        ResponseCode::NotImp
    );

    // Class CH: REFUSED (Consul answers it as IN); class ANY is answered as IN.
    let mut chaos = question("active.vault.service.consul.", A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(exchange(dns, &chaos).metadata.response_code, Refused);
    let mut any = question("active.vault.service.consul.", A);
    any.queries[0].set_query_class(DNSClass::ANY);
    let m = exchange(dns, &any);
    assert_eq!((m.metadata.response_code, m.answers.len()), (NoError, 1));
}

/// SERVFAIL (a cluster with no usable view) carries AA (Consul's has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_is_authoritative() {
    let agent = Agent::with(&agent_config("dc1", "127.57.1.100:8600").cluster(
        "dc1",
        &nodes("127.57.1", 1),
        &[],
    ));
    let m = ask(agent.dns, "active.vault.service.consul", A)
        .until("SERVFAIL once started", |m| {
            m.metadata.response_code == ResponseCode::ServFail
        })
        .await;
    assert!(m.metadata.authoritative);
}
