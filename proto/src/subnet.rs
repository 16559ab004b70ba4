//! Client subnets: the unit learned latency is measured, reported and routed by.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A client subnet: a masked address and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// The subnet of `ip`: `v4` bits for IPv4, `v6` bits for IPv6 (an IPv4-mapped IPv6
    /// address counts as IPv4).
    pub fn of(ip: IpAddr, v4: u8, v6: u8) -> Subnet {
        match ip {
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4addr) => Subnet::of(IpAddr::V4(v4addr), v4, v6),
                None => {
                    let prefix = v6.min(128);
                    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                    Subnet {
                        addr: IpAddr::V6((u128::from(a) & mask).into()),
                        prefix,
                    }
                }
            },
            IpAddr::V4(a) => {
                let prefix = v4.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                Subnet {
                    addr: IpAddr::V4((u32::from(a) & mask).into()),
                    prefix,
                }
            }
        }
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Subnet::of(ip, self.prefix, self.prefix) == *self
            && matches!(
                (self.addr, canonical(ip)),
                (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
            )
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn subnets_mask_v4_v6_and_mapped_addresses() {
        assert_eq!(
            Subnet::of(ip("10.1.2.3"), 24, 48).to_string(),
            "10.1.2.0/24"
        );
        assert_eq!(Subnet::of(ip("10.1.2.3"), 0, 48).to_string(), "0.0.0.0/0");
        assert_eq!(
            Subnet::of(ip("10.1.2.3"), 40, 48).to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            Subnet::of(ip("2001:db8:1:2::5"), 24, 48).to_string(),
            "2001:db8:1::/48"
        );
        assert_eq!(
            Subnet::of(ip("::ffff:192.0.2.9"), 24, 48).to_string(),
            "192.0.2.0/24"
        );
        let s = Subnet::of(ip("10.1.2.3"), 24, 48);
        assert!(s.contains(ip("10.1.2.200")) && !s.contains(ip("10.1.3.1")));
        assert!(s.contains(ip("::ffff:10.1.2.7")));
        assert!(!s.contains(ip("2001:db8::1")));
    }
}
