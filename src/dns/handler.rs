//! The hickory `RequestHandler`: checks the request, answers from the [`Zone`], forwards
//! names outside it to the configured upstreams (or refuses them), and puts EDNS on the
//! response when the client sent it.
//!
//! Never an open resolver: with no upstreams, anything outside the zone and the static
//! records is REFUSED. Names inside the zone are forwarded only with
//! `dns.zone_fallback`, and only those the agent does not own ([`Zone::owns`]).

use std::sync::Arc;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use super::forward::Forwarder;
use super::metrics::{DnsMetrics, Served};
use super::zone::{Answer, Zone};
use crate::net::Proto;

/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;

/// What a request gets, decided without I/O (both transports share this).
pub(crate) enum Decision {
    /// An error response with this code (no records).
    Error(ResponseCode),
    /// The zone's answer (authoritative).
    Answer(Answer),
    /// The name is outside what we serve and upstreams are configured, or in the zone
    /// but not ours, with a zone fallback.
    Forward,
}

/// Where a response comes from, which decides AA: the agent's own zone (authoritative),
/// or elsewhere (an upstream, the zone fallback, an error before the zone was asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Zone,
    Elsewhere,
}

pub struct Handler {
    zone: Arc<Zone>,
    forwarder: Option<Forwarder>,
    /// Where names in the zone that the agent does not own go (`dns.zone_fallback`).
    zone_fallback: Option<Forwarder>,
    pub(crate) metrics: DnsMetrics,
    /// See [`Handler::udp_answer_limit`].
    pub(crate) udp_answer_limit: usize,
}

/// Consul's default `udp_answer_limit`.
pub const UDP_ANSWER_LIMIT: usize = 3;

impl Handler {
    /// Every cluster's view receiver (for caches that must notice a change).
    pub(crate) fn feeds(&self) -> Vec<crate::vault::feed::ClusterFeed> {
        self.zone.feeds()
    }

    pub fn new(zone: Arc<Zone>, forwarder: Option<Forwarder>) -> Self {
        Self {
            zone,
            forwarder,
            zone_fallback: None,
            metrics: DnsMetrics::new(),
            udp_answer_limit: UDP_ANSWER_LIMIT,
        }
    }

    /// Where names in the zone that the agent does not own go (`dns.zone_fallback`):
    /// a Consul agent, during a migration.
    pub fn zone_fallback(mut self, fallback: Option<Forwarder>) -> Self {
        self.zone_fallback = fallback;
        self
    }

    /// At most `limit` instances of the service go in a UDP response to a client
    /// without EDNS (Consul's `udp_answer_limit`), a fresh random choice each time;
    /// TCP and EDNS clients get every instance that fits.
    pub fn udp_answer_limit(mut self, limit: usize) -> Self {
        self.udp_answer_limit = limit.max(1);
        self
    }

    pub(crate) fn recursion_available(&self) -> bool {
        self.forwarder.is_some()
    }

    /// The header flags of a response to `request`, on both transports.
    pub(crate) fn response_metadata(
        &self,
        request: &Metadata,
        origin: Origin,
        rcode: ResponseCode,
    ) -> Metadata {
        let mut metadata = Metadata::response_from_request(request);
        metadata.authoritative = origin == Origin::Zone;
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
        // During a migration the rest of the zone is still Consul's.
        if self.zone_fallback.is_some() && self.zone.contains(qname) && !self.zone.owns(qname) {
            return Decision::Forward;
        }
        match self.zone.answer(qname, *qtype) {
            Some(answer) => Decision::Answer(answer),
            None if self.forwarder.is_some() => Decision::Forward,
            None => Decision::Error(ResponseCode::Refused),
        }
    }

    /// Asks the upstreams (only after `decide` said `Forward`).
    pub(crate) async fn forward(&self, qname: &Name, qtype: RecordType) -> Answer {
        let to = if self.zone.contains(qname) {
            &self.zone_fallback
        } else {
            &self.forwarder
        };
        match to {
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
        let served = Served {
            qtype,
            rcode: info.response_code,
        };
        self.metrics.record(proto, served, started);
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
        let (answer, origin) =
            match self.decide(request.metadata.op_code, request.edns.as_ref(), &queries) {
                Decision::Error(code) => {
                    let mut response = builder.error_msg(&request.metadata, code);
                    response.metadata_mut().recursion_available = self.recursion_available();
                    return finish(request, response_handle.send_response(response).await);
                }
                Decision::Answer(answer) => (answer, Origin::Zone),
                Decision::Forward => {
                    let forwarded = self.forward(queries[0].0, queries[0].1).await;
                    (forwarded, Origin::Elsewhere)
                }
            };
        let metadata = self.response_metadata(&request.metadata, origin, answer.rcode);
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
