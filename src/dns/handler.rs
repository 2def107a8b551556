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

/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;

pub struct Handler {
    zone: Arc<Zone>,
    forwarder: Option<Forwarder>,
}

impl Handler {
    pub fn new(zone: Arc<Zone>, forwarder: Option<Forwarder>) -> Self {
        Self { zone, forwarder }
    }

    async fn resolve(&self, qname: &Name, qtype: RecordType) -> (Answer, bool) {
        if let Some(answer) = self.zone.answer(qname, qtype) {
            return (answer, true);
        }
        match &self.forwarder {
            Some(f) => (f.forward(qname, qtype).await, false),
            None => (
                Answer {
                    rcode: ResponseCode::Refused,
                    answers: vec![],
                    authority: vec![],
                    additionals: vec![],
                },
                false,
            ),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = std::time::Instant::now();
        let proto = match request.protocol() {
            hickory_server::net::xfer::Protocol::Udp => "udp",
            hickory_server::net::xfer::Protocol::Tcp => "tcp",
            _ => "other",
        };
        let qtype = request
            .queries
            .queries()
            .first()
            .map(|q| q.query_type().to_string())
            .unwrap_or_else(|| "none".into());
        metrics::counter!(telemetry::DNS_REQUESTS, "proto" => proto, "type" => qtype).increment(1);
        let info = self.respond(request, &mut response_handle).await;
        metrics::counter!(telemetry::DNS_RESPONSES, "rcode" => rcode_label(info.response_code))
            .increment(1);
        metrics::histogram!(telemetry::DNS_DURATION, "proto" => proto)
            .record(started.elapsed().as_secs_f64());
        info
    }
}

impl Handler {
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: &mut R,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_dnssec_ok(false);
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(EDNS_VERSION);
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &response_edns {
            builder.edns(e);
        }

        let error = if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            Some(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        let result = if let Some(code) = error {
            let mut response = builder.error_msg(&request.metadata, code);
            response.metadata_mut().recursion_available = self.forwarder.is_some();
            response_handle.send_response(response).await
        } else {
            let query = &request.queries.queries()[0];
            let qname: &Name = query.original().name();
            let qtype = query.query_type();
            let (answer, authoritative) =
                if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
                    (
                        Answer {
                            rcode: ResponseCode::Refused,
                            answers: vec![],
                            authority: vec![],
                            additionals: vec![],
                        },
                        false,
                    )
                } else {
                    self.resolve(qname, qtype).await
                };
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = authoritative;
            metadata.recursion_available = self.forwarder.is_some();
            metadata.response_code = answer.rcode;
            let response = builder.build(
                metadata,
                answer.answers.iter(),
                answer.authority.iter(),
                std::iter::empty::<&Record>(),
                answer.additionals.iter(),
            );
            response_handle.send_response(response).await
        };
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

    async fn forward(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut name = qname.clone();
        name.set_fqdn(true);
        match self.resolver.lookup(name, qtype).await {
            Ok(lookup) => Answer {
                rcode: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authority: vec![],
                additionals: vec![],
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
                }
            }
            Err(e) => {
                warn!(name = %qname, %qtype, error = %e, "upstream lookup failed");
                Answer {
                    rcode: ResponseCode::ServFail,
                    answers: vec![],
                    authority: vec![],
                    additionals: vec![],
                }
            }
        }
    }
}
