//! Answering one query: parse it, answer berth names from [`Names`], or say that it must be forwarded.
//!
//! Pure functions over byte slices (hickory-proto does all the wire format), so the serving loops in
//! `mod.rs` stay about sockets only.
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::{Names, TTL};

/// Payload size we announce in our EDNS OPT record and the most we send over UDP to a client that
/// announced at least that much (the DNS flag day 2020 value, below any sane MTU).
pub(crate) const EDNS_PAYLOAD: u16 = 1232;
/// What a client without EDNS can take over UDP (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// Our own limit over TCP (the 2-byte length prefix).
pub(crate) const TCP_MAX: usize = u16::MAX as usize;

/// What to do with one received datagram or TCP message.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not a berth name: forward the raw query to the upstreams and relay their reply; send `fallback`
    /// (SERVFAIL) if none answers.
    Forward { id: u16, fallback: Vec<u8> },
    /// Not worth an answer (a response, or too garbled to carry an id).
    Ignore,
}

/// Everything [`answer`] needs besides the packet.
pub(crate) struct Context<'a> {
    pub names: &'a dyn Names,
    pub sandbox_id: &'a str,
    /// Whether there are upstreams to forward to (else unknown names get REFUSED at once).
    pub can_forward: bool,
    /// Over UDP, replies are limited to what the client announced (512 without EDNS); over TCP to 64 KiB.
    pub udp: bool,
    /// Rotates multi-address answers (round robin, as Docker shuffles them).
    pub rotation: usize,
}

/// Decides how to answer `packet`.
pub(crate) fn answer(ctx: &Context<'_>, packet: &[u8]) -> Outcome {
    let req = match Message::from_vec(packet) {
        Ok(req) => req,
        Err(_) => return format_error(packet),
    };
    if req.metadata.message_type != MessageType::Query {
        return Outcome::Ignore;
    }
    if req.metadata.op_code != OpCode::Query {
        return reply(ctx, &req, ResponseCode::NotImp, Vec::new());
    }
    let [query] = req.queries.as_slice() else {
        return reply(ctx, &req, ResponseCode::FormErr, Vec::new());
    };
    match local_answer(ctx, query) {
        Some(records) => reply(ctx, &req, ResponseCode::NoError, records),
        None if ctx.can_forward => Outcome::Forward {
            id: req.metadata.id,
            fallback: encode(ctx, &response(ctx, &req, ResponseCode::ServFail, Vec::new())),
        },
        None => reply(ctx, &req, ResponseCode::Refused, Vec::new()),
    }
}

/// The records answering `query` if it is about a berth name (possibly none: NOERROR/NODATA),
/// `None` if it is not ours.
fn local_answer(ctx: &Context<'_>, query: &Query) -> Option<Vec<Record>> {
    if query.query_class() != DNSClass::IN {
        return None;
    }
    let owner = query.name().clone();
    if query.query_type() == RecordType::PTR {
        return reverse_answer(ctx, &owner);
    }
    let name = lookup_key(&owner)?;
    let mut addrs = ctx.names.lookup(ctx.sandbox_id, &name)?;
    let qtype = query.query_type();
    let mut records = Vec::new();
    if matches!(qtype, RecordType::A | RecordType::ANY) {
        if !addrs.is_empty() {
            let len = addrs.len();
            addrs.rotate_left(ctx.rotation % len);
        }
        records.extend(
            addrs
                .into_iter()
                .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(ip)))),
        );
    }
    // AAAA: the name's IPv6 addresses on dual-stack networks (none: NOERROR without records, so a
    // resolver asking for A and AAAA in parallel gets both answers at once and does not wait for a
    // timeout). Every other type of a berth name: NOERROR without records too.
    if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
        let mut addrs6 = ctx.names.lookup6(ctx.sandbox_id, &name);
        if !addrs6.is_empty() {
            let len = addrs6.len();
            addrs6.rotate_left(ctx.rotation % len);
        }
        records.extend(
            addrs6
                .into_iter()
                .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(ip)))),
        );
    }
    Some(records)
}

/// PTR for `d.c.b.a.in-addr.arpa.` (or the 32 nibbles of `ip6.arpa.`) when
/// [`Names::reverse`] knows the address.
fn reverse_answer(ctx: &Context<'_>, owner: &Name) -> Option<Vec<Record>> {
    let net = owner.parse_arpa_name().ok()?;
    if net.prefix_len() != net.max_prefix_len() {
        return None;
    }
    let names = ctx.names.reverse(ctx.sandbox_id, net.addr())?;
    Some(
        names
            .iter()
            .filter_map(|n| {
                let fqdn = if n.ends_with('.') {
                    n.clone()
                } else {
                    format!("{n}.")
                };
                Name::from_ascii(fqdn).ok()
            })
            .map(|target| Record::from_rdata(owner.clone(), TTL, RData::PTR(PTR(target))))
            .collect(),
    )
}

/// The form [`Names::lookup`] takes: ASCII (punycode), lowercase, without the trailing dot.
/// `None` for the root name.
pub(crate) fn lookup_key(name: &Name) -> Option<String> {
    let mut key = name.to_ascii().to_ascii_lowercase();
    if key.ends_with('.') {
        key.pop();
    }
    (!key.is_empty()).then_some(key)
}

/// FORMERR for a query hickory cannot parse, if it at least carries a query header (id + QR=0).
fn format_error(packet: &[u8]) -> Outcome {
    use hickory_proto::op::Header;
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
        return Outcome::Ignore;
    };
    if header.metadata.message_type != MessageType::Query {
        return Outcome::Ignore;
    }
    let msg = Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr);
    match msg.to_vec() {
        Ok(bytes) => Outcome::Reply(bytes),
        Err(_) => Outcome::Ignore,
    }
}

fn reply(ctx: &Context<'_>, req: &Message, code: ResponseCode, answers: Vec<Record>) -> Outcome {
    Outcome::Reply(encode(ctx, &response(ctx, req, code, answers)))
}

/// A response to `req`: same id, opcode, RD and CD bits and question; AA set for berth names; RA
/// set when we forward; an OPT record when the query had one (RFC 6891 6.1.1).
fn response(ctx: &Context<'_>, req: &Message, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut msg = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    msg.metadata = Metadata::response_from_request(&req.metadata);
    msg.metadata.response_code = code;
    msg.metadata.authoritative = code == ResponseCode::NoError;
    msg.metadata.recursion_available = ctx.can_forward;
    msg.add_queries(req.queries.iter().cloned());
    msg.add_answers(answers);
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        msg.set_edns(edns);
    }
    msg
}

/// The most this client takes in one reply over this transport.
fn reply_limit(ctx: &Context<'_>, req: &Message) -> usize {
    if !ctx.udp {
        return TCP_MAX;
    }
    match &req.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(CLASSIC_UDP as u16, EDNS_PAYLOAD)),
        None => CLASSIC_UDP,
    }
}

/// Encodes `msg`; when it does not fit the client's limit, sends the header and question with TC set
/// instead, so the client retries over TCP.
fn encode(ctx: &Context<'_>, msg: &Message) -> Vec<u8> {
    let limit = reply_limit(ctx, msg);
    let bytes = msg.to_vec().unwrap_or_default();
    if !bytes.is_empty() && bytes.len() <= limit {
        return bytes;
    }
    let mut truncated = msg.truncate();
    truncated.metadata.message_type = MessageType::Response;
    truncated.to_vec().unwrap_or_else(|_| {
        Message::error_msg(msg.metadata.id, msg.metadata.op_code, ResponseCode::ServFail)
            .to_vec()
            .unwrap_or_default()
    })
}

/// Addresses of a query for tests and logs: `(id, lowercase name, type)`.
#[cfg(test)]
pub(crate) fn describe(packet: &[u8]) -> Option<(u16, String, RecordType)> {
    let msg = Message::from_vec(packet).ok()?;
    let q = msg.queries.first()?;
    Some((msg.metadata.id, lookup_key(q.name())?, q.query_type()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    struct Fixed;
    impl Names for Fixed {
        fn lookup(&self, sandbox_id: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
            match (sandbox_id, name) {
                ("s1", "web") => Some(vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]),
                ("s1", "many") => Some((1..=200).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect()),
                _ => None,
            }
        }
        fn reverse(&self, _: &str, addr: std::net::IpAddr) -> Option<Vec<String>> {
            let v6: std::net::IpAddr = "fd42::2".parse().unwrap();
            (addr == Ipv4Addr::new(10, 0, 0, 2) || addr == v6).then(|| vec!["web.net1".to_owned()])
        }
    }

    fn ctx(can_forward: bool, udp: bool) -> Context<'static> {
        Context {
            names: &Fixed,
            sandbox_id: "s1",
            can_forward,
            udp,
            rotation: 0,
        }
    }

    fn query(name: &str, ty: RecordType, edns: bool) -> Vec<u8> {
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            msg.set_edns(e);
        }
        msg.to_vec().unwrap()
    }

    fn reply_of(outcome: Outcome) -> Message {
        match outcome {
            Outcome::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn answers_known_names_case_insensitively() {
        let q = query("WeB.", RecordType::A, false);
        let msg = reply_of(answer(&ctx(true, true), &q));
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert_eq!(msg.metadata.id, describe(&q).unwrap().0);
        assert!(msg.metadata.authoritative && msg.metadata.recursion_desired);
        let ips: Vec<_> = msg
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ips, [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)]);
        assert!(msg.answers.iter().all(|r| r.ttl == TTL));
    }

    #[test]
    fn aaaa_of_known_name_is_empty_noerror() {
        let msg = reply_of(answer(&ctx(true, true), &query("web", RecordType::AAAA, true)));
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert!(msg.answers.is_empty());
        assert_eq!(msg.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD);
    }

    #[test]
    fn unknown_names_forward_or_refuse() {
        let q = query("example.com", RecordType::A, false);
        assert!(matches!(answer(&ctx(true, true), &q), Outcome::Forward { .. }));
        let msg = reply_of(answer(&ctx(false, true), &q));
        assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
        // Another sandbox does not see s1's names.
        let other = Context {
            sandbox_id: "s2",
            ..ctx(false, true)
        };
        let msg = reply_of(answer(&other, &query("web", RecordType::A, false)));
        assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn big_answers_truncate_over_udp_only() {
        let q = query("many", RecordType::A, false);
        let udp = reply_of(answer(&ctx(true, true), &q));
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        let tcp = reply_of(answer(&ctx(true, false), &q));
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 200);
    }

    #[test]
    fn ptr_for_known_address() {
        let msg = reply_of(answer(
            &ctx(true, false),
            &query("2.0.0.10.in-addr.arpa.", RecordType::PTR, false),
        ));
        assert_eq!(msg.answers.len(), 1);
        assert_eq!(
            msg.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("web.net1.").unwrap()))
        );
        let q = query("3.0.0.10.in-addr.arpa.", RecordType::PTR, false);
        assert!(matches!(answer(&ctx(true, false), &q), Outcome::Forward { .. }));
        // fd42::2, nibble by nibble.
        let v6 = format!("2.{}2.4.d.f.ip6.arpa.", "0.".repeat(27));
        let msg = reply_of(answer(&ctx(true, false), &query(&v6, RecordType::PTR, false)));
        assert_eq!(msg.answers.len(), 1, "{v6}");
        let q = query("0.0.10.in-addr.arpa.", RecordType::PTR, false);
        assert!(
            matches!(answer(&ctx(true, false), &q), Outcome::Forward { .. }),
            "a /24 is no address"
        );
    }

    #[test]
    fn garbage_and_responses() {
        assert!(matches!(answer(&ctx(true, false), b"xy"), Outcome::Ignore));
        let mut q = query("web", RecordType::A, false);
        q.truncate(14); // header + a cut question
        let msg = reply_of(answer(&ctx(true, false), &q));
        assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
        let resp = reply_of(answer(&ctx(true, false), &query("web", RecordType::A, false)));
        let bytes = resp.to_vec().unwrap();
        assert!(matches!(answer(&ctx(true, false), &bytes), Outcome::Ignore));
    }
}
