//! The UDP path: one loop per socket, on a thread of its own, that receives a datagram,
//! decides, encodes and sends the answer without leaving the thread. hickory-server's
//! UDP path hands each request to a new task and each response through a channel to
//! another; on 2 cores those wakeups and hand-offs cost more than the answer itself
//! (bench/RESULTS.md). Zone answers need no I/O, so they are answered inline; only
//! forwarded names get a task of their own.
//! TCP stays on hickory-server. The rules (EDNS, error codes, truncation) are the same:
//! both paths go through `Handler::decide`. A repeated question is answered from the
//! loop's [`AnswerCache`] without decoding it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::cache::{AnswerCache, Reuse};
use super::handler::{response_edns, Decision, Handler, Origin};
use super::metrics::Served;
use super::zone::Answer;
use crate::net::Proto;

/// Largest datagram read; anything longer is cut and fails to decode (FORMERR).
const MAX_DATAGRAM: usize = 4096;

/// How often a receive loop checks for shutdown while no datagram arrives.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Serves `socket` on the calling (blocking) thread until `stop`: receive, decide,
/// encode, send, with no task hand-off or wakeup between them, the way unbound's workers
/// do. Forwarded names go to the runtime; those still in flight are awaited before
/// returning.
pub fn serve_blocking(
    socket: std::net::UdpSocket,
    handler: Arc<Handler>,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_CHECK))?;
    let socket = Arc::new(socket);
    let forwards = TaskTracker::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut responder = Responder::new(handler.clone());
    while !stop.is_cancelled() {
        let Some((n, src)) = receive(&socket, &mut buf) else {
            continue;
        };
        crate::panic::fault_point("udp");
        let started = Instant::now();
        match responder.respond(&buf[..n]) {
            Response::Drop => {}
            Response::Reply { bytes, served } => {
                send(&socket, bytes, src);
                handler.metrics.record(Proto::Udp, served, started);
            }
            Response::Forward(request) => {
                let (socket, handler) = (socket.clone(), handler.clone());
                let forwarding = forward(socket, handler, request, src, started);
                forwards.spawn_on(forwarding, &runtime);
            }
        }
    }
    forwards.close();
    runtime.block_on(forwards.wait());
    Ok(())
}

/// The next datagram and its sender, or `None` when the wait timed out (to look at
/// `stop`), failed, or came from an address no answer can go to.
fn receive(socket: &std::net::UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match socket.recv_from(buf) {
        Ok((n, src)) if src.port() != 0 && !src.ip().is_unspecified() => Some((n, src)),
        Ok(_) => None,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => {
            // ICMP errors from earlier sends surface here; keep serving.
            debug!(error = %e, "udp receive error");
            None
        }
    }
}

/// A name outside the zone: asked upstream on the runtime, answered from there.
async fn forward(
    socket: Arc<std::net::UdpSocket>,
    handler: Arc<Handler>,
    request: Message,
    src: SocketAddr,
    started: Instant,
) {
    let (name, qtype) = {
        let q = &request.queries[0];
        (q.name().clone(), q.query_type())
    };
    let answer = handler.forward(&name, qtype).await;
    let served = Served {
        qtype: Some(qtype),
        rcode: answer.rcode,
    };
    let bytes = encode(&handler, &request, answer, Origin::Elsewhere);
    send(&socket, &bytes, src);
    handler.metrics.record(Proto::Udp, served, started);
}

/// A UDP send does not block for long (no congestion control); a failure is the
/// client's loss, like a dropped datagram.
fn send(socket: &std::net::UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, dst) {
        debug!(error = %e, %dst, "udp send failed");
    }
}

/// What a receive loop does with each datagram, without the socket: the answer cache,
/// then the handler. The loop and the fuzz target (`fuzz/`) both go through it.
pub struct Responder {
    handler: Arc<Handler>,
    cache: AnswerCache,
    /// The last response, reused as the buffer for the next cache hit.
    last: Vec<u8>,
}

/// A datagram's fate.
pub enum Response<'a> {
    /// Not answerable (too short, or a response): say nothing.
    Drop,
    /// The response bytes, with what the metrics count of it.
    Reply { bytes: &'a [u8], served: Served },
    /// A name outside the zone, for the upstreams.
    Forward(Message),
}

impl Responder {
    pub fn new(handler: Arc<Handler>) -> Self {
        Self {
            cache: AnswerCache::new(handler.feeds()),
            handler,
            last: Vec::with_capacity(512),
        }
    }

    pub fn respond(&mut self, raw: &[u8]) -> Response<'_> {
        self.cache.refresh();
        if let Some(served) = self.cache.lookup(raw, &mut self.last) {
            return Response::Reply {
                bytes: &self.last,
                served,
            };
        }
        match handle(&self.handler, raw) {
            Outcome::Drop => Response::Drop,
            Outcome::Forward(request) => Response::Forward(request),
            Outcome::Reply {
                bytes,
                served,
                reuse,
            } => {
                self.cache.insert(raw, &bytes, served, reuse);
                self.last = bytes;
                Response::Reply {
                    bytes: &self.last,
                    served,
                }
            }
        }
    }
}

enum Outcome {
    /// Not answerable (too short, or a response): say nothing.
    Drop,
    /// The response, what the metrics count of it, and whether it may be reused for
    /// the same request bytes.
    Reply {
        bytes: Vec<u8>,
        served: Served,
        reuse: Reuse,
    },
    Forward(Message),
}

fn handle(handler: &Handler, raw: &[u8]) -> Outcome {
    let request = match Message::from_vec(raw) {
        Ok(m) => m,
        Err(_) => {
            // Undecodable: FORMERR if at least the header is there, as hickory does.
            let Ok(header) = Header::read(&mut BinDecoder::new(raw)) else {
                return Outcome::Drop;
            };
            if header.metadata.message_type == MessageType::Response {
                return Outcome::Drop;
            }
            let out = bare_response(handler, &header.metadata, ResponseCode::FormErr);
            let (qtype, rcode) = (None, ResponseCode::FormErr);
            let served = Served { qtype, rcode };
            return Outcome::Reply {
                bytes: out,
                served,
                reuse: Reuse::Never,
            };
        }
    };
    if request.metadata.message_type == MessageType::Response {
        // Never answer responses: no reflection loops.
        return Outcome::Drop;
    }
    let qtype = request.queries.first().map(|q| q.query_type());
    let queries: Vec<(&Name, RecordType, DNSClass)> = request
        .queries
        .iter()
        .map(|q| (q.name(), q.query_type(), q.query_class()))
        .collect();
    let decision = handler.decide(request.metadata.op_code, request.edns.as_ref(), &queries);
    let (answer, origin) = match decision {
        Decision::Forward => return Outcome::Forward(request),
        Decision::Error(code) => (Answer::empty(code), Origin::Elsewhere),
        Decision::Answer(answer) => (answer, Origin::Zone),
    };
    let rcode = answer.rcode;
    let mut answer = answer;
    let limited = request.edns.is_none()
        && answer.shuffled
        && answer.answers.len() > handler.udp_answer_limit;
    let reuse = if limited {
        // A fresh random choice of instances for every query, as Consul makes.
        keep_in_step(&mut answer, handler.udp_answer_limit);
        Reuse::Never
    } else if answer.shuffled && answer.answers.len() > 1 {
        Reuse::Shuffled
    } else {
        Reuse::AsIs
    };
    Outcome::Reply {
        bytes: encode(handler, &request, answer, origin),
        served: Served { qtype, rcode },
        reuse,
    }
}

/// The response message within 512 bytes, or the client's EDNS size. An answer that
/// does not fit loses records from its end, each with its glue (Consul's `syncExtra`),
/// until it does, and says so with TC: the client can ask again over TCP.
fn encode(handler: &Handler, request: &Message, answer: Answer, origin: Origin) -> Vec<u8> {
    let mut response = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    response.metadata = handler.response_metadata(&request.metadata, origin, answer.rcode);
    response.queries = request.queries.clone();
    response.answers = answer.answers;
    response.authorities = answer.authority;
    response.additionals = answer.additionals;
    response.edns = response_edns(request.edns.as_ref());
    let max = response.edns.as_ref().map_or(512, |e| e.max_payload());
    loop {
        let mut out = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut out);
        encoder.set_max_size(max);
        if response.emit(&mut encoder).is_err() {
            // Not even the header and question fit: a bare SERVFAIL.
            return bare_response(handler, &request.metadata, ResponseCode::ServFail);
        }
        let written = written_counts(&out);
        let whole = (
            response.answers.len(),
            response.authorities.len(),
            response.additionals.len() + usize::from(response.edns.is_some()),
        );
        if written == whole || response.answers.is_empty() {
            return out;
        }
        // hickory wrote what fitted (with TC): drop answers from the end, each with its
        // glue, until the rest fits whole.
        let keep = written.0.min(response.answers.len() - 1);
        trim_in_step(&mut response.answers, &mut response.additionals, keep);
        response.metadata.truncation = true;
    }
}

/// The answer, authority and additional counts of an encoded message's header.
fn written_counts(out: &[u8]) -> (usize, usize, usize) {
    let count = |at: usize| {
        out.get(at..at + 2)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    (count(6), count(8), count(10))
}

/// Keeps the first `keep` records of `answer` (already in random order) and only the
/// glue of the SRV records kept.
fn keep_in_step(answer: &mut Answer, keep: usize) {
    trim_in_step(&mut answer.answers, &mut answer.additionals, keep);
}

/// Keeps the first `keep` answers; an additional record stays only while an SRV answer
/// kept names it as its target (Consul's `syncExtra`).
fn trim_in_step(answers: &mut Vec<Record>, additionals: &mut Vec<Record>, keep: usize) {
    answers.truncate(keep);
    let targets: Vec<&Name> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(&srv.target),
            _ => None,
        })
        .collect();
    additionals.retain(|extra| targets.contains(&&extra.name));
}

/// A header-only response to `request` with `rcode` (no question, no records).
fn bare_response(handler: &Handler, request: &Metadata, rcode: ResponseCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    let _ = Header {
        metadata: handler.response_metadata(request, Origin::Elsewhere, rcode),
        counts: Default::default(),
    }
    .emit(&mut BinEncoder::new(&mut out));
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::{A, SRV};

    use super::*;

    /// `n` SRV answers, each target's A in the additional section.
    fn instances(n: u8) -> (Vec<Record>, Vec<Record>) {
        let owner = Name::from_ascii("vault.service.consul.").unwrap();
        (1..=n)
            .map(|i| {
                let ip = Ipv4Addr::new(10, 0, 0, i);
                let target =
                    Name::from_ascii(format!("{}.addr.dc1.consul.", u32::from(ip))).unwrap();
                let srv = SRV::new(1, 1, 8200, target.clone());
                (
                    Record::from_rdata(owner.clone(), 0, RData::SRV(srv)),
                    Record::from_rdata(target, 0, RData::A(A(ip))),
                )
            })
            .unzip()
    }

    fn names(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.data {
                RData::SRV(srv) => srv.target.to_string(),
                _ => r.name.to_string(),
            })
            .collect()
    }

    #[test]
    fn trimming_keeps_each_kept_srv_with_its_glue_only() {
        let (mut answers, mut extra) = instances(5);
        // The glue in another order than the answers: kept by name, not position.
        extra.reverse();
        trim_in_step(&mut answers, &mut extra, 2);
        let mut glue = names(&extra);
        glue.sort();
        assert_eq!(names(&answers), glue);
        assert_eq!(answers.len(), 2);
    }
}
