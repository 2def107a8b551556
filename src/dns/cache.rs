//! Encoded UDP responses, reused for repeated questions.
//!
//! Decoding a request, computing the answer and encoding it with hickory-proto's
//! `Message` took ~16k instructions per query (callgrind), most of it allocation and
//! name compression, for what is nearly always one of a handful of questions whose
//! answers change only when a cluster's view does. A response is a pure function of the
//! request bytes after its ID and of the zone's state, so each UDP receive loop keeps
//! the encoded response per request (bytes after the ID as the key) and answers a
//! repeat by copying it and patching the ID.
//!
//! When a cached response is valid:
//! - every view it may depend on is unchanged: any view change clears the cache (a
//!   `watch` version check per datagram, a few atomic loads);
//! - no view is stale: a stale view turns into SERVFAIL on a clock, so nothing is cached
//!   while one is;
//! - the wall-clock second is the same: negative answers carry an SOA whose serial is
//!   the current Unix time, as Consul's does.
//!
//! Answers the zone shuffles (several addresses for `standby`, `vault.service`) are
//! cached only when their records differ in nothing but the address; the cached copy is
//! shuffled again on every use, so clients keep getting Consul's random order. Other
//! multi-record shuffled answers (SRV with several targets) are not cached.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use super::metrics::Served;
use crate::vault::feed::ClusterFeed;

/// Entries per receive loop; when full, the cache starts over (an attacker sending
/// random names gets misses, never unbounded memory).
const MAX_ENTRIES: usize = 1024;

/// DNS header length; the ID is its first two bytes.
const HEADER: usize = 12;

/// How a response may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// As encoded: one record, or records in a fixed order.
    AsIs,
    /// The answer records were shuffled: shuffle them again on each use.
    Shuffled,
    /// Not at all.
    Never,
}

struct Entry {
    response: Box<[u8]>,
    served: Served,
    shuffle: Option<Layout>,
}

/// Where the answer records' addresses are: `count` records of `stride` bytes from
/// `start`, each identical up to its last `rdata` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    start: usize,
    count: usize,
    stride: usize,
    rdata: usize,
}

pub(crate) struct AnswerCache {
    entries: HashMap<Box<[u8]>, Entry>,
    feeds: Vec<ClusterFeed>,
    /// False while any view is stale.
    enabled: bool,
    second: u64,
}

impl AnswerCache {
    pub(crate) fn new(mut feeds: Vec<ClusterFeed>) -> Self {
        let enabled = feeds.iter_mut().all(|f| !f.seen().stale);
        Self {
            entries: HashMap::new(),
            feeds,
            enabled,
            second: unix_second(),
        }
    }

    /// Drops what may be out of date; call once per datagram, before `lookup`.
    pub(crate) fn refresh(&mut self) {
        let second = unix_second();
        if second != self.second {
            self.second = second;
            self.entries.clear();
        }
        if self.feeds.iter().any(ClusterFeed::has_changed) {
            self.entries.clear();
            self.enabled = self.feeds.iter_mut().all(|f| !f.seen().stale);
        }
    }

    /// The response to `request` in `out` (ID patched, answers reshuffled if need be),
    /// with its query type and response code for the metrics; None on a miss.
    pub(crate) fn lookup(&self, request: &[u8], out: &mut Vec<u8>) -> Option<Served> {
        if !self.enabled || request.len() < HEADER {
            return None;
        }
        let entry = self.entries.get(&request[2..])?;
        out.clear();
        out.extend_from_slice(&request[..2]);
        out.extend_from_slice(&entry.response);
        if let Some(layout) = entry.shuffle {
            shuffle(out, layout);
        }
        Some(entry.served)
    }

    /// Keeps `response` (to `request`) for reuse, if `reuse` and its layout allow.
    pub(crate) fn insert(&mut self, request: &[u8], response: &[u8], served: Served, reuse: Reuse) {
        // A truncated response (TC) holds whichever records fitted: never reused.
        if !self.enabled
            || request.len() < HEADER
            || response.len() < HEADER
            || response[2] & 0x02 != 0
        {
            return;
        }
        let shuffle = match reuse {
            Reuse::Never => return,
            Reuse::AsIs => None,
            Reuse::Shuffled => match uniform_answers(response) {
                Some(layout) if layout.count > 1 => Some(layout),
                Some(_) => None,
                None => return,
            },
        };
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(
            request[2..].into(),
            Entry {
                response: response[2..].into(),
                served,
                shuffle,
            },
        );
    }
}

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Fisher-Yates over the records' address bytes.
fn shuffle(msg: &mut [u8], l: Layout) {
    let mut rng = rand::rng();
    let at = |i: usize| l.start + i * l.stride + (l.stride - l.rdata);
    let mut tmp = [0u8; 16];
    for i in (1..l.count).rev() {
        let j = rng.random_range(0..=i);
        if i != j {
            let (a, b) = (at(i), at(j));
            tmp[..l.rdata].copy_from_slice(&msg[a..a + l.rdata]);
            msg.copy_within(b..b + l.rdata, a);
            msg[b..b + l.rdata].copy_from_slice(&tmp[..l.rdata]);
        }
    }
}

/// The answer section's layout when it holds only A or AAAA records that are byte for
/// byte the same but for the address (same owner encoding, type, class, TTL), else None.
fn uniform_answers(msg: &[u8]) -> Option<Layout> {
    let count16 = |at: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]) as usize)
    };
    if count16(4)? != 1 {
        return None;
    }
    let ancount = count16(6)?;
    let start = skip_name(msg, HEADER)? + 4;
    let mut pos = start;
    let mut first: Option<(usize, usize)> = None; // (prefix length, rdata length)
    for _ in 0..ancount {
        let name_end = skip_name(msg, pos)?;
        let rtype = count16(name_end)?;
        let rdlen = count16(name_end + 8)?;
        let prefix = name_end + 10 - pos;
        let ok_type = matches!((rtype, rdlen), (1, 4) | (28, 16));
        if !ok_type || msg.len() < pos + prefix + rdlen {
            return None;
        }
        match first {
            None => first = Some((prefix, rdlen)),
            Some((p, r)) => {
                if (p, r) != (prefix, rdlen) || msg[start..start + p] != msg[pos..pos + p] {
                    return None;
                }
            }
        }
        pos += prefix + rdlen;
    }
    let (prefix, rdata) = first?;
    Some(Layout {
        start,
        count: ancount,
        stride: prefix + rdata,
        rdata,
    })
}

/// The offset just past the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)? as usize;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xC0 == 0xC0 => return (pos + 2 <= msg.len()).then_some(pos + 2),
            l if l < 64 => pos += 1 + l,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use std::collections::HashSet;
    use std::sync::Arc;

    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record};
    use hickory_proto::serialize::binary::BinEncodable;
    use tokio::sync::watch;

    use crate::vault::view::ClusterView;

    fn served(qtype: Option<RecordType>, rcode: ResponseCode) -> Served {
        Served { qtype, rcode }
    }

    fn view(stale: bool) -> ClusterView {
        let mut v = ClusterView::empty("dc1", false);
        v.stale = stale;
        v
    }

    fn request(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_bytes().unwrap()
    }

    fn response(id: u16, name: &str, addrs: &[[u8; 4]]) -> Vec<u8> {
        let n = Name::from_ascii(name).unwrap();
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(n.clone(), RecordType::A));
        for a in addrs {
            m.add_answer(Record::from_rdata(
                n.clone(),
                0,
                RData::A(A::from(std::net::Ipv4Addr::from(*a))),
            ));
        }
        m.to_bytes().unwrap()
    }

    fn answers(msg: &[u8]) -> Vec<String> {
        Message::from_vec(msg)
            .unwrap()
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect()
    }

    /// Names in the answers are skipped label by label or by a compression pointer;
    /// a pointer cut short, a 64-byte label and the reserved label types are not names.
    #[test]
    fn skip_name_reads_labels_and_pointers_and_nothing_else() {
        assert_eq!(skip_name(&[3, b'a', b'b', b'c', 0], 0), Some(5));
        assert_eq!(skip_name(&[1, b'x', 0xC0, 0x0C], 0), Some(4));
        assert_eq!(skip_name(&[0xC0], 0), None, "a pointer cut short");
        let mut odd = vec![0x40];
        odd.extend([b'x'; 64]);
        odd.push(0);
        assert_eq!(skip_name(&odd, 0), None, "64: too long, and label type 01");
        odd[0] = 0x80;
        assert_eq!(skip_name(&odd, 0), None, "label type 10");
    }

    /// What is never kept: anything while a view is stale, a truncated response,
    /// requests or responses too short to be DNS messages (without panicking on them).
    #[test]
    fn what_is_never_kept() {
        let (tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let q = request(1, "active.vault.service.consul.");
        let r = response(1, "active.vault.service.consul.", &[[10, 0, 0, 1]]);
        let ok = served(None, ResponseCode::NoError);
        let mut truncated = r.clone();
        truncated[2] |= 0x02;
        c.insert(&q, &truncated, ok, Reuse::AsIs);
        c.insert(&q[..5], &r, ok, Reuse::AsIs);
        c.insert(&q[..1], &r, ok, Reuse::AsIs);
        c.insert(&q, &r[..5], ok, Reuse::AsIs);
        assert!(c.entries.is_empty(), "TC, short request, short response");
        let mut out = Vec::new();
        assert!(c.lookup(&q[..1], &mut out).is_none(), "a 1-byte request");
        tx.send_replace(Arc::new(view(true)));
        c.refresh();
        c.insert(&q, &r, ok, Reuse::AsIs);
        assert!(c.entries.is_empty(), "nothing while a view is stale");
    }

    /// Below its bound the cache keeps every question it was given, not just the last.
    #[test]
    fn it_keeps_many_questions_below_its_bound() {
        let (_tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let ok = served(None, ResponseCode::NoError);
        let names = ["a.consul.", "b.consul.", "c.consul."];
        for name in names {
            c.insert(&request(1, name), &response(1, name, &[]), ok, Reuse::AsIs);
        }
        let mut out = Vec::new();
        for name in names {
            assert!(c.lookup(&request(2, name), &mut out).is_some(), "{name}");
        }
    }

    /// Entries live within one wall-clock second (the SOA serial is the Unix time):
    /// kept while it lasts, dropped when it turns.
    #[test]
    fn entries_last_until_the_second_turns() {
        let (_tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let q = request(1, "active.vault.service.consul.");
        let r = response(1, "active.vault.service.consul.", &[[10, 0, 0, 1]]);
        let mut out = Vec::new();
        let kept = loop {
            let now = unix_second();
            c.second = now;
            c.insert(&q, &r, served(None, ResponseCode::NoError), Reuse::AsIs);
            c.refresh();
            let hit = c.lookup(&q, &mut out).is_some();
            if unix_second() == now {
                break hit; // else the second turned mid-way: again
            }
        };
        assert!(kept, "the same second: kept");
        c.second -= 1;
        c.refresh();
        assert!(c.lookup(&q, &mut out).is_none(), "a new second: dropped");
        // The second is the wall clock's, as the SOA serial is.
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(unix_second().abs_diff(wall) <= 1);
    }

    #[test]
    fn a_repeat_gets_the_same_bytes_with_its_own_id() {
        let (_tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let resp = response(7, "active.vault.service.consul.", &[[10, 0, 0, 1]]);
        c.insert(
            &request(7, "active.vault.service.consul."),
            &resp,
            served(Some(RecordType::A), ResponseCode::NoError),
            Reuse::AsIs,
        );
        let mut out = Vec::new();
        let hit = c.lookup(&request(9, "active.vault.service.consul."), &mut out);
        assert_eq!(
            hit,
            Some(served(Some(RecordType::A), ResponseCode::NoError))
        );
        assert_eq!(&out[..2], &9u16.to_be_bytes());
        assert_eq!(&out[2..], &resp[2..]);
        assert!(
            c.lookup(&request(9, "Active.vault.service.consul."), &mut out)
                .is_none(),
            "exact bytes only"
        );
    }

    #[test]
    fn a_view_change_or_a_stale_view_empties_it() {
        let (tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let (q, r) = (
            request(1, "x.consul."),
            response(1, "x.consul.", &[[1, 2, 3, 4]]),
        );
        let mut out = Vec::new();
        c.refresh();
        c.insert(&q, &r, served(None, ResponseCode::NoError), Reuse::AsIs);
        assert!(c.lookup(&q, &mut out).is_some());
        tx.send_replace(Arc::new(view(false)));
        c.refresh();
        assert!(c.lookup(&q, &mut out).is_none(), "cleared on a view change");
        tx.send_replace(Arc::new(view(true)));
        c.refresh();
        c.insert(&q, &r, served(None, ResponseCode::NoError), Reuse::AsIs);
        assert!(
            c.lookup(&q, &mut out).is_none(),
            "nothing is cached while a view is stale"
        );
    }

    #[test]
    fn shuffled_answers_are_reshuffled_on_every_use() {
        let (_tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let addrs = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]];
        let q = request(1, "vault.service.consul.");
        c.insert(
            &q,
            &response(1, "vault.service.consul.", &addrs),
            served(Some(RecordType::A), ResponseCode::NoError),
            Reuse::Shuffled,
        );
        let mut orders = HashSet::new();
        let mut out = Vec::new();
        for _ in 0..200 {
            c.lookup(&q, &mut out).expect("cached");
            let got = answers(&out);
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
            orders.insert(got);
        }
        assert_eq!(orders.len(), 6, "all 3! orders show up in 200 draws");
    }

    #[test]
    fn shuffled_answers_that_differ_beyond_the_address_are_not_cached() {
        let (_tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let n = Name::from_ascii("vault.service.consul.").unwrap();
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(n.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            n.clone(),
            0,
            RData::A(A::new(1, 1, 1, 1)),
        ));
        m.add_answer(Record::from_rdata(n, 5, RData::A(A::new(2, 2, 2, 2))));
        let q = request(1, "vault.service.consul.");
        for reuse in [Reuse::Shuffled, Reuse::Never] {
            let response = m.to_bytes().unwrap();
            c.insert(&q, &response, served(None, ResponseCode::NoError), reuse);
            assert!(c.lookup(&q, &mut Vec::new()).is_none());
        }
    }

    #[test]
    fn it_never_grows_past_its_bound_and_keeps_answering() {
        let (_tx, rx) = watch::channel(Arc::new(view(false)));
        let mut c = AnswerCache::new(vec![ClusterFeed::new(rx)]);
        let mut out = Vec::new();
        for i in 0..3 * MAX_ENTRIES {
            let name = format!("n{i}.consul.");
            c.insert(
                &request(1, &name),
                &response(1, &name, &[]),
                served(None, ResponseCode::NXDomain),
                Reuse::AsIs,
            );
            assert!(c.entries.len() <= MAX_ENTRIES);
            // What was just kept is reused, past the bound too: a cache that stored
            // nothing would stay within it as well.
            assert!(
                c.lookup(&request(7, &name), &mut out).is_some(),
                "entry {i}"
            );
        }
        assert!(!c.entries.is_empty());
    }

    #[test]
    fn malformed_responses_have_no_layout() {
        assert_eq!(uniform_answers(&[0u8; 5]), None);
        let mut r = response(1, "a.consul.", &[[1, 1, 1, 1], [2, 2, 2, 2]]);
        r.truncate(r.len() - 3);
        assert_eq!(uniform_answers(&r), None);
    }
}
