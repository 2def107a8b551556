//! The upstream forwarder for names outside the zone (only with `upstreams`: without
//! them such names are REFUSED and nothing is ever forwarded).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tracing::warn;

use super::zone::Answer;

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
