//! DNS messages as the sprites' resolver (wispd `network/dns.rs`) reads them: the question of
//! a query, error replies, the addresses of an answer. Pure functions over untrusted bytes (a
//! sprite sends the queries), here rather than in the daemon so that they can be fuzzed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Response codes: the query is malformed, the resolver failed, the policy refuses the name.
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_REFUSED: u8 = 5;
/// Record types whose addresses the resolver learns.
pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
/// Bytes of a message header.
pub const HEADER: usize = 12;
/// Longest name on the wire, length bytes and the final zero included (RFC 1035 §3.1).
const MAX_NAME_WIRE: usize = 255;

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower case, without the final dot (`""` for the root).
    pub name: String,
    pub qtype: u16,
    /// Offset just past the question section.
    pub end: usize,
}

/// Reads a (possibly compressed) name at `pos`; returns it and the offset after it.
///
/// The text form is what the policy decides on, so its dots must be exactly the name's label
/// boundaries: a label that itself contains a dot (legal on the wire) is refused, or the wire
/// name `["api.github", "com"]`, a child of `com`, would read as `api.github.com`.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut wire_len = 1;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    let after = end.unwrap_or(pos + 1);
                    return Some((labels.join("."), after));
                }
                let label = msg.get(pos + 1..pos + 1 + len)?;
                // Counted on the wire: the lossy text of a label can be longer than its bytes.
                wire_len += 1 + len;
                if wire_len > MAX_NAME_WIRE || label.contains(&b'.') {
                    return None;
                }
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                pos += 1 + len;
            }
            0xc0 => {
                let target = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                jumps += 1;
                if jumps > 32 || target >= msg.len() {
                    return None;
                }
                pos = target;
            }
            _ => return None,
        }
    }
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// The single question of a query. `Err(true)`: a DNS header but no usable question
/// (answer FORMERR); `Err(false)`: not even a header (drop it).
pub fn parse_query(msg: &[u8]) -> Result<Question, bool> {
    if msg.len() < HEADER {
        return Err(false);
    }
    // A response sent to us, or anything but one question: refuse to guess.
    if msg[2] & 0x80 != 0 || u16_at(msg, 4) != Some(1) {
        return Err(true);
    }
    let (name, pos) = read_name(msg, HEADER).ok_or(true)?;
    let qtype = u16_at(msg, pos).ok_or(true)?;
    u16_at(msg, pos + 2).ok_or(true)?;
    Ok(Question {
        name,
        qtype,
        end: pos + 4,
    })
}

/// An answer with only a header (and the question, up to `question_end`) and `rcode`.
pub fn error_reply(query: &[u8], question_end: usize, rcode: u8) -> Vec<u8> {
    let keep = question_end.clamp(HEADER, query.len().max(HEADER));
    let mut r = query[..keep.min(query.len())].to_vec();
    r.resize(keep, 0);
    // QR, same opcode and RD; RA; rcode.
    r[2] = 0x80 | (r[2] & 0x79);
    r[3] = 0x80 | (rcode & 0x0f);
    let qd = if question_end > HEADER { 1u16 } else { 0 };
    r[4..6].copy_from_slice(&qd.to_be_bytes());
    r[6..12].fill(0);
    r
}

/// Every A and AAAA record in the answer section, with its TTL.
pub fn answer_addrs(msg: &[u8]) -> Vec<(IpAddr, u32)> {
    let mut out = Vec::new();
    let (Some(qd), Some(an)) = (u16_at(msg, 4), u16_at(msg, 6)) else {
        return out;
    };
    let mut pos = HEADER;
    for _ in 0..qd {
        let Some((_, p)) = read_name(msg, pos) else {
            return out;
        };
        pos = p + 4;
    }
    for _ in 0..an {
        let Some((_, p)) = read_name(msg, pos) else {
            return out;
        };
        let (Some(ty), Some(rdlen)) = (u16_at(msg, p), u16_at(msg, p + 8)) else {
            return out;
        };
        let ttl = match msg.get(p + 4..p + 8) {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => return out,
        };
        let data = p + 10;
        let Some(rdata) = msg.get(data..data + rdlen as usize) else {
            return out;
        };
        match (ty, rdata.len()) {
            (TYPE_A, 4) => out.push((
                IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
                ttl,
            )),
            (TYPE_AAAA, 16) => {
                let a: [u8; 16] = rdata.try_into().unwrap_or([0; 16]);
                out.push((IpAddr::V6(Ipv6Addr::from(a)), ttl));
            }
            _ => {}
        }
        pos = data + rdlen as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype` with id 0x1234 and RD set.
    pub fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn questions() {
        let q = query("WWW.Example.com", TYPE_A);
        let parsed = parse_query(&q).unwrap();
        assert_eq!(parsed.name, "www.example.com");
        assert_eq!(parsed.qtype, TYPE_A);
        assert_eq!(parsed.end, q.len());
        assert_eq!(parse_query(&q[..5]), Err(false));
        assert_eq!(parse_query(&q[..q.len() - 1]), Err(true));
        let mut two = q.clone();
        two[5] = 2;
        assert_eq!(parse_query(&two), Err(true));
        // A pointer loop is refused, not followed forever.
        let mut looped = q[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&looped), Err(true));

        // Found by fuzzing: a label containing a dot read as two labels, so the policy saw
        // `api.github.com` for a name under `com` whose first label is `api.github`.
        let mut dotted = q[..12].to_vec();
        dotted.extend_from_slice(b"\x0aapi.github\x03com\x00\x00\x01\x00\x01");
        assert_eq!(parse_query(&dotted), Err(true));

        // Found by fuzzing: the length limit counted the lossy text, not the wire bytes, so a
        // name of 255 wire bytes was refused when it held bytes that are not UTF-8, and one of
        // 256 was accepted. 63+63+63+61 label bytes and 4 length bytes plus the zero: 255.
        let named = |labels: &[Vec<u8>]| {
            let mut m = q[..12].to_vec();
            for l in labels {
                m.push(l.len() as u8);
                m.extend_from_slice(l);
            }
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
            m
        };
        let at_limit = [
            vec![0xff; 63],
            vec![b'a'; 63],
            vec![b'b'; 63],
            vec![b'c'; 61],
        ];
        assert!(parse_query(&named(&at_limit)).is_ok());
        let over = [
            vec![b'a'; 63],
            vec![b'a'; 63],
            vec![b'b'; 63],
            vec![b'c'; 62],
        ];
        assert_eq!(parse_query(&named(&over)), Err(true));
    }

    #[test]
    fn refusals_echo_the_question() {
        let q = query("denied.example", TYPE_AAAA);
        let end = parse_query(&q).unwrap().end;
        let r = error_reply(&q, end, RCODE_REFUSED);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[2] & 0x01, 0x01, "RD kept");
        assert_eq!(r[3] & 0x0f, RCODE_REFUSED);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[12..], &q[12..]);
        let f = error_reply(&q[..12], HEADER, RCODE_FORMERR);
        assert_eq!(f.len(), 12);
        assert_eq!(&f[4..6], &[0, 0]);
    }

    #[test]
    fn addresses_of_an_answer() {
        // Question, then a CNAME (compressed owner), an A and an AAAA.
        let mut m = query("a.example", TYPE_A);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 3;
        let rr = |m: &mut Vec<u8>, ty: u16, ttl: u32, data: &[u8]| {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        };
        rr(&mut m, 5, 60, &[1, b'b', 0xc0, 14]);
        rr(&mut m, TYPE_A, 300, &[198, 18, 0, 7]);
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[15] = 9;
        rr(&mut m, TYPE_AAAA, 30, &v6);
        assert_eq!(
            answer_addrs(&m),
            vec![
                (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7)), 300),
                (IpAddr::V6(Ipv6Addr::from(v6)), 30)
            ]
        );
        // Truncated: whatever was whole.
        assert_eq!(answer_addrs(&m[..m.len() - 3]).len(), 1);
    }
}
