//! The DNS metrics, as handles resolved once (CoreDNS-like names: requests by
//! transport and type, responses by code, duration by transport).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::net::Proto;
use crate::telemetry;

/// Prometheus label for a response code, in the names operators grep for.
fn rcode_label(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::NotImp => "NOTIMP",
        _ => "OTHER",
    }
}

/// Query types with a label of their own; everything else counts as "other".
const QTYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::ANY,
    RecordType::SOA,
    RecordType::NS,
    RecordType::TXT,
    RecordType::PTR,
    RecordType::CNAME,
];
const RCODES: &[&str] = &[
    "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "OTHER",
];

/// Metric handles resolved once: a per-query `counter!` with labels hashes its key in
/// the registry every time, which showed in the DNS profile.
pub(crate) struct DnsMetrics {
    /// [proto][qtype index or "other"]
    requests: [Vec<metrics::Counter>; 2],
    responses: Vec<metrics::Counter>,
    duration: [metrics::Histogram; 2],
}

/// What the metrics count of an answered query: its type (none when the request did not
/// decode) and the response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub qtype: Option<RecordType>,
    pub rcode: ResponseCode,
}

impl DnsMetrics {
    pub(crate) fn new() -> Self {
        let requests = |proto: Proto| {
            QTYPES
                .iter()
                .map(|t| t.to_string())
                .chain(std::iter::once("other".to_string()))
                .map(|t| metrics::counter!(telemetry::DNS_REQUESTS, "proto" => proto.as_str(), "type" => t))
                .collect()
        };
        Self {
            requests: [requests(Proto::Udp), requests(Proto::Tcp)],
            responses: RCODES
                .iter()
                .map(|r| metrics::counter!(telemetry::DNS_RESPONSES, "rcode" => *r))
                .collect(),
            duration: [
                metrics::histogram!(telemetry::DNS_DURATION, "proto" => Proto::Udp.as_str()),
                metrics::histogram!(telemetry::DNS_DURATION, "proto" => Proto::Tcp.as_str()),
            ],
        }
    }

    pub(crate) fn record(
        &self,
        proto: Proto,
        Served { qtype, rcode }: Served,
        started: std::time::Instant,
    ) {
        let i = qtype
            .and_then(|t| QTYPES.iter().position(|q| *q == t))
            .unwrap_or(QTYPES.len());
        self.requests[proto.index()][i].increment(1);
        let label = rcode_label(rcode);
        let r = RCODES
            .iter()
            .position(|x| *x == label)
            .unwrap_or(RCODES.len() - 1);
        self.responses[r].increment(1);
        self.duration[proto.index()].record(started.elapsed().as_secs_f64());
    }
}
