//! The hickory `RequestHandler`: checks the request, answers from the [`Zone`], forwards
//! names outside it to the configured upstreams (or refuses them), and puts EDNS on the
//! response when the client sent it.
//!
//! Never an open resolver: with no upstreams, anything outside the zone and the static
//! records is REFUSED; names inside the zone are never forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, warn};

use super::zone::{Answer, Zone};
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

#[derive(Clone, Copy)]
pub(crate) enum Proto {
    Udp = 0,
    Tcp = 1,
}

impl DnsMetrics {
    fn new() -> Self {
        let requests = |proto: &'static str| {
            QTYPES
                .iter()
                .map(|t| t.to_string())
                .chain(std::iter::once("other".to_string()))
                .map(|t| metrics::counter!(telemetry::DNS_REQUESTS, "proto" => proto, "type" => t))
                .collect()
        };
        Self {
            requests: [requests("udp"), requests("tcp")],
            responses: RCODES
                .iter()
                .map(|r| metrics::counter!(telemetry::DNS_RESPONSES, "rcode" => *r))
                .collect(),
            duration: [
                metrics::histogram!(telemetry::DNS_DURATION, "proto" => "udp"),
                metrics::histogram!(telemetry::DNS_DURATION, "proto" => "tcp"),
            ],
        }
    }

    pub(crate) fn record(
        &self,
        proto: Proto,
        qtype: Option<RecordType>,
        rcode: ResponseCode,
        started: std::time::Instant,
    ) {
        let i = qtype
            .and_then(|t| QTYPES.iter().position(|q| *q == t))
            .unwrap_or(QTYPES.len());
        self.requests[proto as usize][i].increment(1);
        let label = rcode_label(rcode);
        let r = RCODES
            .iter()
            .position(|x| *x == label)
            .unwrap_or(RCODES.len() - 1);
        self.responses[r].increment(1);
        self.duration[proto as usize].record(started.elapsed().as_secs_f64());
    }
}

/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;

/// What a request gets, decided without I/O (both transports share this).
pub(crate) enum Decision {
    /// An error response with this code (no records).
    Error(ResponseCode),
    /// An answer; `authoritative` sets AA.
    Answer { answer: Answer, authoritative: bool },
    /// The name is outside what we serve and upstreams are configured.
    Forward,
}

pub struct Handler {
    zone: Arc<Zone>,
    forwarder: Option<Forwarder>,
    pub(crate) metrics: DnsMetrics,
}

impl Handler {
    /// Every cluster's view receiver (for caches that must notice a change).
    pub(crate) fn feeds(&self) -> Vec<crate::vault::feed::ClusterFeed> {
        self.zone.feeds()
    }

    pub fn new(zone: Arc<Zone>, forwarder: Option<Forwarder>) -> Self {
        Self {
            zone,
            forwarder,
            metrics: DnsMetrics::new(),
        }
    }

    pub(crate) fn recursion_available(&self) -> bool {
        self.forwarder.is_some()
    }

    /// The header flags of a response to `request`, on both transports.
    pub(crate) fn response_metadata(
        &self,
        request: &Metadata,
        authoritative: bool,
        rcode: ResponseCode,
    ) -> Metadata {
        let mut metadata = Metadata::response_from_request(request);
        metadata.authoritative = authoritative;
        metadata.recursion_available = self.recursion_available();
        metadata.response_code = rcode;
        metadata
    }

    /// The checks every request goes through, then the zone's answer.
    pub(crate) fn decide(
        &self,
        op_code: OpCode,
        edns: Option<&Edns>,
        queries: &[(&Name, RecordType, DNSClass)],
    ) -> Decision {
        if edns.is_some_and(|e| e.version() > EDNS_VERSION) {
            return Decision::Error(ResponseCode::BADVERS);
        }
        if op_code != OpCode::Query {
            return Decision::Error(ResponseCode::NotImp);
        }
        let [(qname, qtype, qclass)] = queries else {
            return Decision::Error(ResponseCode::FormErr);
        };
        if !matches!(qclass, DNSClass::IN | DNSClass::ANY) {
            return Decision::Error(ResponseCode::Refused);
        }
        match self.zone.answer(qname, *qtype) {
            Some(answer) => Decision::Answer {
                answer,
                authoritative: true,
            },
            None if self.forwarder.is_some() => Decision::Forward,
            None => Decision::Error(ResponseCode::Refused),
        }
    }

    /// Asks the upstreams (only after `decide` said `Forward`).
    pub(crate) async fn forward(&self, qname: &Name, qtype: RecordType) -> Answer {
        match &self.forwarder {
            Some(f) => f.forward(qname, qtype).await,
            None => Answer::empty(ResponseCode::Refused),
        }
    }
}

/// The OPT record of a response to a request that carried `req`.
pub(crate) fn response_edns(req: Option<&Edns>) -> Option<Edns> {
    req.map(|req| {
        let mut e = Edns::new();
        e.set_dnssec_ok(false);
        e.set_max_payload(req.max_payload().max(512));
        e.set_version(EDNS_VERSION);
        e
    })
}

/// hickory-server's path: TCP (and UDP only if a socket is registered with it).
#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = std::time::Instant::now();
        let proto = match request.protocol() {
            hickory_server::net::xfer::Protocol::Udp => Proto::Udp,
            _ => Proto::Tcp,
        };
        let qtype = request.queries.queries().first().map(|q| q.query_type());
        let info = self.respond(request, &mut response_handle).await;
        self.metrics
            .record(proto, qtype, info.response_code, started);
        info
    }
}

impl Handler {
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: &mut R,
    ) -> ResponseInfo {
        let response_edns = response_edns(request.edns.as_ref());
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &response_edns {
            builder.edns(e);
        }
        let queries: Vec<(&Name, RecordType, DNSClass)> = request
            .queries
            .queries()
            .iter()
            .map(|q| (q.original().name(), q.query_type(), q.query_class()))
            .collect();
        let (answer, authoritative) =
            match self.decide(request.metadata.op_code, request.edns.as_ref(), &queries) {
                Decision::Error(code) => {
                    let mut response = builder.error_msg(&request.metadata, code);
                    response.metadata_mut().recursion_available = self.recursion_available();
                    return finish(request, response_handle.send_response(response).await);
                }
                Decision::Answer {
                    answer,
                    authoritative,
                } => (answer, authoritative),
                Decision::Forward => (self.forward(queries[0].0, queries[0].1).await, false),
            };
        let metadata = self.response_metadata(&request.metadata, authoritative, answer.rcode);
        let response = builder.build(
            metadata,
            answer.answers.iter(),
            answer.authority.iter(),
            std::iter::empty::<&Record>(),
            answer.additionals.iter(),
        );
        finish(request, response_handle.send_response(response).await)
    }
}

fn finish(
    request: &Request,
    result: Result<ResponseInfo, hickory_server::net::NetError>,
) -> ResponseInfo {
    match result {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, src = %request.src(), "cannot send response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}

/// Forwards names outside the zone through hickory-resolver. Its cache honours the
/// upstream TTLs, as any stub forwarder does.
pub struct Forwarder {
    resolver: TokioResolver,
}

impl Forwarder {
    pub fn new(
        upstreams: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Self, hickory_resolver::net::NetError> {
        let mut config = ResolverConfig::from_parts(None, vec![], vec![]);
        for up in upstreams {
            let mut ns = NameServerConfig::udp_and_tcp(up.ip());
            for c in &mut ns.connections {
                c.port = up.port();
            }
            config.add_name_server(ns);
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.edns0 = true;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        Ok(Self {
            resolver: builder.build()?,
        })
    }

    pub(crate) async fn forward(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut name = qname.clone();
        name.set_fqdn(true);
        match self.resolver.lookup(name, qtype).await {
            Ok(lookup) => Answer {
                rcode: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authority: vec![],
                additionals: vec![],
                shuffled: false,
            },
            Err(e) if e.is_no_records_found() => {
                let rcode = if e.is_nx_domain() {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                let authority = e
                    .into_soa()
                    .map(|soa| vec![soa.into_record_of_rdata()])
                    .unwrap_or_default();
                Answer {
                    rcode,
                    answers: vec![],
                    authority,
                    additionals: vec![],
                    shuffled: false,
                }
            }
            Err(e) => {
                warn!(name = %qname, %qtype, error = %e, "upstream lookup failed");
                Answer::empty(ResponseCode::ServFail)
            }
        }
    }
}
