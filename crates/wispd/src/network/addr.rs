//! The sprite address pool: one /30 per slot out of `--sprite-subnet`.
//!
//! Slot `n` owns `base + 4n .. base + 4n + 3`: the host end of its veth (the sprite's gateway
//! and DNS server) is `+1`, the sprite's `eth0` is `+2`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub const SLOT_PREFIX: u8 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR (like 10.213.0.0/16)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        if !(8..=SLOT_PREFIX).contains(&prefix) {
            return Err(format!("prefix length must be 8..=30, not {prefix}"));
        }
        let mask = u32::MAX << (32 - prefix);
        let base = u32::from(ip) & mask;
        if base != u32::from(ip) {
            return Err(format!("{s} has host bits set"));
        }
        Ok(Subnet {
            base: Ipv4Addr::from(base),
            prefix,
        })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The two addresses of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotAddrs {
    pub gateway: Ipv4Addr,
    pub sprite: Ipv4Addr,
}

impl Subnet {
    /// How many /30 slots fit.
    pub fn slots(&self) -> u32 {
        1u32 << (SLOT_PREFIX - self.prefix)
    }

    pub fn slot(&self, n: u32) -> Option<SlotAddrs> {
        if n >= self.slots() {
            return None;
        }
        let net = u32::from(self.base) + 4 * n;
        Some(SlotAddrs {
            gateway: Ipv4Addr::from(net + 1),
            sprite: Ipv4Addr::from(net + 2),
        })
    }

    #[cfg(test)]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_slots() {
        let s: Subnet = "10.213.0.0/16".parse().unwrap();
        assert_eq!(s.to_string(), "10.213.0.0/16");
        assert_eq!(s.slots(), 16384);
        assert_eq!(
            s.slot(0),
            Some(SlotAddrs {
                gateway: "10.213.0.1".parse().unwrap(),
                sprite: "10.213.0.2".parse().unwrap()
            })
        );
        assert_eq!(
            s.slot(65).unwrap().sprite,
            "10.213.1.6".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(s.slot(16384), None);
        assert!(s.contains("10.213.255.255".parse().unwrap()));
        assert!(!s.contains("10.214.0.1".parse().unwrap()));
        let small: Subnet = "10.9.8.0/30".parse().unwrap();
        assert_eq!(small.slots(), 1);
        for bad in [
            "10.0.0.0",
            "10.0.0.1/16",
            "10.0.0.0/31",
            "10.0.0.0/7",
            "x/16",
            "::/64",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }
}
