//! DNS queries a sprite sends its resolver, and the answers the resolver reads addresses from.
//! The question's name is what the network policy decides on, so its text must be a faithful
//! picture of the name on the wire.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use wisp_api::dns::{answer_addrs, error_reply, parse_query, HEADER, RCODE_REFUSED};

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any bytes at all.
    Raw(Vec<u8>),
    /// A well-formed query for a name made of these labels.
    Labels(Vec<Vec<u8>>, u16),
}

/// A query with id 0x1234, RD set, one question of `labels` (those that fit a length byte).
fn encode(labels: &[Vec<u8>], qtype: u16) -> (Vec<u8>, Vec<&[u8]>) {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let used: Vec<&[u8]> = labels
        .iter()
        .map(|l| &l[..l.len().min(63)])
        .filter(|l| !l.is_empty())
        .collect();
    for l in &used {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    (q, used)
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(msg) => raw(&msg),
        Input::Labels(labels, qtype) => {
            let (msg, used) = encode(&labels, qtype);
            raw(&msg);
            let wire_len = 1 + used.iter().map(|l| l.len() + 1).sum::<usize>();
            let faithful = used.iter().all(|l| !l.contains(&b'.'));
            match parse_query(&msg) {
                Ok(q) => {
                    // The dots of the text are the label boundaries, nothing else.
                    assert!(faithful && wire_len <= 255, "{used:?} read as {:?}", q.name);
                    let want: Vec<String> = used
                        .iter()
                        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
                        .collect();
                    assert_eq!(q.name, want.join("."));
                    assert_eq!((q.qtype, q.end), (qtype, msg.len()));
                }
                Err(formerr) => {
                    assert!(formerr);
                    assert!(!faithful || wire_len > 255, "{used:?} refused");
                }
            }
        }
    }
});

/// Nothing panics; a parsed question lies within the message and its name is lower case; an
/// error reply keeps the id and the question and says it is a response.
fn raw(msg: &[u8]) {
    let _ = answer_addrs(msg);
    let end = match parse_query(msg) {
        Ok(q) => {
            assert!(q.end <= msg.len() && q.end > HEADER);
            assert_eq!(q.name, q.name.to_ascii_lowercase());
            q.end
        }
        Err(false) => return assert!(msg.len() < HEADER),
        Err(true) => HEADER,
    };
    let r = error_reply(msg, end, RCODE_REFUSED);
    assert_eq!(r.len(), end);
    assert_eq!(r[..2], msg[..2]);
    assert_eq!(r[HEADER..], msg[HEADER..end]);
    assert_eq!(r[2] & 0x80, 0x80);
    assert_eq!(r[3] & 0x0f, RCODE_REFUSED);
}
