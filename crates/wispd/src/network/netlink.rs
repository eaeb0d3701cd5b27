//! Just enough netlink, synchronously and in-process: rtnetlink for links, addresses and
//! routes (building a slot costs no process spawn: see `slot.rs` for the figures) and
//! ctnetlink for dropping conntrack entries when a policy change blocks a destination.
//!
//! A netlink socket belongs to the network namespace it was created in, whatever thread
//! uses it later; `slot.rs` relies on that.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
    SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

/// How long the kernel may take to answer one request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const IFF_UP: u32 = 0x1;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;

/// One request being built: header, fixed part, attributes (nested ones closed by `end`).
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(pos) = self.nests.pop() {
            let len = (self.buf.len() - pos) as u16;
            self.buf[pos..pos + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = family;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// Attributes of a message body: `(type without flags, payload)`.
pub(crate) fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        let next = (len + 3) & !3;
        b = &b[next.min(b.len())..];
    }
    out
}

/// A received message: type and payload (after the 16-byte header).
struct Reply {
    ty: u16,
    payload: Vec<u8>,
}

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open(proto: SockProtocol) -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            proto,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // A netlink peer that never answers would otherwise hang a slot build forever.
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0),
        )?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// rtnetlink, in the calling thread's network namespace.
    pub fn route() -> io::Result<Self> {
        Self::open(SockProtocol::NetlinkRoute)
    }

    /// nfnetlink (conntrack), in the calling thread's network namespace.
    pub fn netfilter() -> io::Result<Self> {
        Self::open(SockProtocol::NetlinkNetFilter)
    }

    /// Sends `msg` and collects replies to it until the ack (or the end of a dump).
    fn exchange(&mut self, msg: Msg, dump: bool) -> io::Result<Vec<Reply>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        sendto(
            self.fd.as_raw_fd(),
            &bytes,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut b = &buf[..n];
            while b.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let rseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < NLMSG_HDRLEN || len > b.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let payload = &b[NLMSG_HDRLEN..len];
                b = &b[((len + 3) & !3).min(b.len())..];
                if rseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                            .unwrap_or(0);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(out);
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => {
                        out.push(Reply {
                            ty,
                            payload: payload.to_vec(),
                        });
                        if !dump {
                            // A plain GET answers with one message and no ack.
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    fn ack(&mut self, msg: Msg) -> io::Result<()> {
        self.exchange(msg, true).map(drop)
    }

    /// A veth pair: `host` here, `peer` created directly in the namespace `peer_ns`.
    /// `EEXIST` when `host` is taken (another slot, maybe of another wispd).
    pub fn create_veth(&mut self, host: &str, peer: &str, peer_ns: BorrowedFd) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        );
        m.raw(&ifinfomsg(AF_UNSPEC, 0, 0, 0))
            .attr_str(IFLA_IFNAME, host)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfomsg(AF_UNSPEC, 0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_NET_NS_FD, &(peer_ns.as_raw_fd() as u32).to_ne_bytes())
            .end()
            .end()
            .end();
        self.ack(m)
    }

    /// The index of interface `name`.
    pub fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut m = Msg::new(RTM_GETLINK, NLM_F_REQUEST);
        m.raw(&ifinfomsg(AF_UNSPEC, 0, 0, 0))
            .attr_str(IFLA_IFNAME, name);
        let replies = self.exchange(m, false)?;
        replies
            .iter()
            .find(|r| r.ty == RTM_NEWLINK && r.payload.len() >= 16)
            .map(|r| u32::from_ne_bytes([r.payload[4], r.payload[5], r.payload[6], r.payload[7]]))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// Names of every interface.
    pub fn link_names(&mut self) -> io::Result<Vec<String>> {
        let mut m = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
        m.raw(&ifinfomsg(AF_UNSPEC, 0, 0, 0));
        let replies = self.exchange(m, true)?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == RTM_NEWLINK && r.payload.len() >= 16)
            .filter_map(|r| {
                attrs(&r.payload[16..])
                    .into_iter()
                    .find(|(t, _)| *t == IFLA_IFNAME)
                    .map(|(_, v)| {
                        String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[]))
                            .into_owned()
                    })
            })
            .collect())
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
        m.raw(&ifinfomsg(AF_UNSPEC, index, IFF_UP, IFF_UP));
        self.ack(m)
    }

    /// Deletes interface `name` (a veth takes its peer with it); absent is fine.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK);
        m.raw(&ifinfomsg(AF_UNSPEC, 0, 0, 0))
            .attr_str(IFLA_IFNAME, name);
        match self.ack(m) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Adds (or keeps) `addr/prefix` on interface `index`.
    pub fn add_addr4(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        );
        let mut ifa = [0u8; 8];
        ifa[0] = AF_INET;
        ifa[1] = prefix;
        ifa[4..8].copy_from_slice(&index.to_ne_bytes());
        m.raw(&ifa)
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.ack(m)
    }

    /// The default IPv4 route via `gateway` on interface `oif`.
    pub fn add_default_route4(&mut self, gateway: Ipv4Addr, oif: u32) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        );
        // family, dst_len, src_len, tos, table (main), protocol (boot), scope (universe),
        // type (unicast), flags.
        let rtm = [AF_INET, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        m.raw(&rtm)
            .attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &oif.to_ne_bytes());
        self.ack(m)
    }

    /// Every conntrack entry of `family` (IPv4 or IPv6) as `(original tuple attribute,
    /// source, destination)`; the tuple is what [`Netlink::ct_delete`] needs.
    pub fn ct_dump(&mut self, v6: bool) -> io::Result<Vec<(Vec<u8>, IpAddr, IpAddr)>> {
        let family = if v6 { AF_INET6 } else { AF_INET };
        let mut m = Msg::new(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
        );
        m.raw(&[family, 0, 0, 0]);
        let replies = self.exchange(m, true)?;
        let mut out = Vec::new();
        for r in replies {
            if r.payload.len() < 4 {
                continue;
            }
            for (ty, tuple) in attrs(&r.payload[4..]) {
                if ty != CTA_TUPLE_ORIG {
                    continue;
                }
                if let Some((src, dst)) = tuple_addrs(tuple) {
                    let mut raw = Msg::new(0, 0);
                    raw.begin(CTA_TUPLE_ORIG).raw(tuple).end();
                    out.push((raw.buf[NLMSG_HDRLEN..].to_vec(), src, dst));
                }
            }
        }
        Ok(out)
    }

    /// Deletes the conntrack entry with this original tuple; gone already is fine.
    pub fn ct_delete(&mut self, v6: bool, tuple_attr: &[u8]) -> io::Result<()> {
        let family = if v6 { AF_INET6 } else { AF_INET };
        let mut m = Msg::new(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
        );
        m.raw(&[family, 0, 0, 0]).raw(tuple_attr);
        match self.ack(m) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }
}

fn tuple_addrs(tuple: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let ip = attrs(tuple)
        .into_iter()
        .find(|(t, _)| *t == CTA_TUPLE_IP)?
        .1;
    let mut src = None;
    let mut dst = None;
    for (t, v) in attrs(ip) {
        match (t, v.len()) {
            (CTA_IP_V4_SRC, 4) => src = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            (CTA_IP_V4_DST, 4) => dst = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            (CTA_IP_V6_SRC, 16) => src = v6(v),
            (CTA_IP_V6_DST, 16) => dst = v6(v),
            _ => {}
        }
    }
    Some((src?, dst?))
}

fn v6(v: &[u8]) -> Option<IpAddr> {
    let a: [u8; 16] = v.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_their_lengths() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST);
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let bytes = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        let top = attrs(&bytes[16..]);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, IFLA_LINKINFO);
        let inner = attrs(top[0].1);
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"veth\0"[..])]);
    }

    #[test]
    fn conntrack_tuple_addresses() {
        let mut m = Msg::new(0, 0);
        m.begin(CTA_TUPLE_IP)
            .attr(CTA_IP_V4_SRC, &[10, 0, 0, 2])
            .attr(CTA_IP_V4_DST, &[198, 18, 0, 1])
            .end();
        let tuple = &m.buf[NLMSG_HDRLEN..];
        assert_eq!(
            tuple_addrs(tuple),
            Some((
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))
            ))
        );
    }
}
