//! Deterministic address and MAC allocation from documented pools.
//!
//! | pool | use |
//! |------|-----|
//! | `198.18.0.0/24`, `2001:db8::/64` | the exchange (IX) bridge in the lab root namespace; `.1`/`::1` is the root |
//! | `198.19.N.0/24` | downstream LAN of the N-th router without NAT (public) |
//! | `10.A.B.0/24` | downstream LAN of the N-th NAT router (N = 256·A + B) |
//! | `100.64.N.0/24` | downstream LAN of the N-th carrier-grade NAT router (RFC 6598) |
//! | `2001:db8:1:N::/64` | IPv6 LAN of the N-th router (routed unless the router NATs IPv6) |
//! | `fd00:db8:1:N::/64` | IPv6 LAN of the N-th router when it NATs IPv6 (masquerade, NPTv6) |
//! | `2001:db8:2:N::/64` | external prefix of the N-th router's NPTv6 mapping |
//! | `2001:db8:64::/96` | NAT64 network-specific prefix (RFC 6052), translated by NAT64 routers |
//! | `192.168.255.0/24` | a NAT64 router's private translator pool (masqueraded to its uplink) |
//!
//! In each LAN, `.1`/`::1` is the router and hosts get `.2` … `.254` in the
//! order they join. Both benchmark (`198.18.0.0/15`, RFC 2544) and
//! documentation (`2001:db8::/32`, RFC 3849) ranges are never routed on the
//! internet, and no lab namespace has a route to the host anyway.
//!
//! Everything here is pure and allocation order is the order of calls, so
//! the same lab description always gets the same addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Address-pool exhaustion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// No more LANs of this kind.
    #[error(
        "address pool exhausted: no more {kind} LANs (at most {max}); use fewer routers of this kind per lab, or split the lab"
    )]
    Lans {
        /// Pool name.
        kind: &'static str,
        /// Capacity.
        max: u32,
    },
    /// No more hosts in a LAN.
    #[error(
        "address pool exhausted: LAN {lan} has no free host address (at most 253 hosts per router); attach some devices to another router"
    )]
    Hosts {
        /// The LAN's prefix.
        lan: String,
    },
    /// The exchange is full.
    #[error(
        "address pool exhausted: the exchange 198.18.0.0/24 has no room for another top-level router (at most 253); chain routers with .upstream(..)"
    )]
    Exchange,
}

/// What kind of LAN a router offers downstream.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum LanKind {
    /// Globally routed addresses (no NAT).
    Public,
    /// RFC 1918 addresses behind a NAT.
    Private,
    /// RFC 6598 shared address space behind a carrier-grade NAT.
    Cgnat,
}

/// Which address families a router's LAN (and every device on it) has.
///
/// Upstream patchbay defaults to [`IpSupport::V4Only`]; patchbay defaults to
/// [`IpSupport::DualStack`], which is what every lab had before this knob.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum IpSupport {
    /// IPv4 only: no global IPv6 address or IPv6 route (link-local
    /// addresses remain, as on any Linux interface).
    V4Only,
    /// IPv6 only: no IPv4 address or IPv4 route.
    V6Only,
    /// Both families (the default).
    #[default]
    DualStack,
}

impl IpSupport {
    /// Whether IPv4 is on.
    pub fn has_v4(self) -> bool {
        matches!(self, IpSupport::V4Only | IpSupport::DualStack)
    }

    /// Whether IPv6 is on.
    pub fn has_v6(self) -> bool {
        matches!(self, IpSupport::V6Only | IpSupport::DualStack)
    }

    /// The families both `self` and `other` have.
    pub fn intersect(self, other: IpSupport) -> Option<IpSupport> {
        match (
            self.has_v4() && other.has_v4(),
            self.has_v6() && other.has_v6(),
        ) {
            (true, true) => Some(IpSupport::DualStack),
            (true, false) => Some(IpSupport::V4Only),
            (false, true) => Some(IpSupport::V6Only),
            (false, false) => None,
        }
    }

    /// The kebab-case name used in lab files (`v4-only`, ...).
    pub fn name(self) -> &'static str {
        match self {
            IpSupport::V4Only => "v4-only",
            IpSupport::V6Only => "v6-only",
            IpSupport::DualStack => "dual-stack",
        }
    }
}

/// The unique-local (ULA, RFC 4193) twin of a LAN prefix
/// `2001:db8:1:N::/64`: `fd00:db8:1:N::/64`. LANs behind an IPv6 NAT
/// (masquerade or NPTv6) use it, as RFC 1918 space sits behind NAT44.
pub fn ula_of(lan_v6: Ipv6Addr) -> Ipv6Addr {
    let mut s = lan_v6.segments();
    s[0] = 0xfd00;
    Ipv6Addr::from(s)
}

/// The external prefix `2001:db8:2:N::/64` an NPTv6 router maps its LAN
/// `fd00:db8:1:N::/64` to (RFC 6296: same length, 1:1).
pub fn nptv6_external_of(lan_v6: Ipv6Addr) -> Ipv6Addr {
    let mut s = lan_v6.segments();
    s[0] = 0x2001;
    s[2] = 2;
    Ipv6Addr::from(s)
}

/// The link-local address the kernel derives from `mac` (modified EUI-64,
/// RFC 4291 appendix A; `addr_gen_mode` 0, the default): `fe80::/64` plus
/// the MAC with the universal/local bit flipped and `ff:fe` in the middle.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// An IPv4 + IPv6 subnet with host allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lan {
    /// Network address (a /24).
    pub v4: Ipv4Addr,
    /// IPv6 prefix (a /64).
    pub v6: Ipv6Addr,
    next_host: u32,
}

/// IPv4 prefix length of every LAN and of the exchange.
pub const V4_PREFIX: u8 = 24;
/// IPv6 prefix length of every LAN and of the exchange.
pub const V6_PREFIX: u8 = 64;

impl Lan {
    fn new(v4: Ipv4Addr, v6: Ipv6Addr) -> Self {
        Lan {
            v4,
            v6,
            next_host: 2,
        }
    }

    /// The gateway (router) address, `.1` and `::1`.
    pub fn gateway(&self) -> (Ipv4Addr, Ipv6Addr) {
        (self.host_v4(1), self.host_v6(1))
    }

    fn host_v4(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4) + n)
    }

    fn host_v6(&self, n: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.v6) + u128::from(n))
    }

    /// Allocates the next host address pair.
    pub fn alloc(&mut self) -> Result<(Ipv4Addr, Ipv6Addr), AddrError> {
        if self.next_host > 254 {
            return Err(AddrError::Hosts {
                lan: format!("{}/{V4_PREFIX}", self.v4),
            });
        }
        let n = self.next_host;
        self.next_host += 1;
        Ok((self.host_v4(n), self.host_v6(n)))
    }
}

/// Allocator for one lab.
#[derive(Debug, Clone, Default)]
pub struct AddrPlan {
    public: u32,
    private: u32,
    cgnat: u32,
    routers: u32,
    exchange_next: u32,
}

/// The exchange LAN's root address.
pub const IX_ROOT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The exchange LAN's root IPv6 address.
pub const IX_ROOT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

impl AddrPlan {
    /// A fresh plan.
    pub fn new() -> Self {
        AddrPlan {
            exchange_next: 2,
            ..Default::default()
        }
    }

    /// Allocates an exchange address for a top-level router.
    pub fn alloc_exchange(&mut self) -> Result<(Ipv4Addr, Ipv6Addr), AddrError> {
        if self.exchange_next > 254 {
            return Err(AddrError::Exchange);
        }
        let n = self.exchange_next;
        self.exchange_next += 1;
        Ok((
            Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n),
            Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)) + u128::from(n),
            ),
        ))
    }

    /// Allocates a downstream LAN of `kind` for a new router.
    pub fn alloc_lan(&mut self, kind: LanKind) -> Result<Lan, AddrError> {
        let v4 = match kind {
            LanKind::Public => {
                if self.public >= 256 {
                    return Err(AddrError::Lans {
                        kind: "public (198.19.0.0/16)",
                        max: 256,
                    });
                }
                self.public += 1;
                Ipv4Addr::new(198, 19, (self.public - 1) as u8, 0)
            }
            LanKind::Private => {
                if self.private >= 65536 {
                    return Err(AddrError::Lans {
                        kind: "private (10.0.0.0/8)",
                        max: 65536,
                    });
                }
                self.private += 1;
                let n = self.private - 1;
                Ipv4Addr::new(10, (n >> 8) as u8, (n & 0xff) as u8, 0)
            }
            LanKind::Cgnat => {
                if self.cgnat >= 64 * 256 {
                    return Err(AddrError::Lans {
                        kind: "CGNAT (100.64.0.0/10)",
                        max: 64 * 256,
                    });
                }
                self.cgnat += 1;
                let n = self.cgnat - 1;
                Ipv4Addr::new(100, 64 + (n >> 8) as u8, (n & 0xff) as u8, 0)
            }
        };
        if self.routers >= 65536 {
            return Err(AddrError::Lans {
                kind: "IPv6 (2001:db8:1::/48)",
                max: 65536,
            });
        }
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 1, self.routers as u16, 0, 0, 0, 0);
        self.routers += 1;
        Ok(Lan::new(v4, v6))
    }
}

/// A deterministic, locally administered unicast MAC for interface `iface`
/// of node `node` (both lab-local ordinals).
pub fn mac(node: u32, iface: u8) -> [u8; 6] {
    let n = node.to_be_bytes();
    [0x02, 0x50, n[1], n[2], n[3], iface]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lans_are_deterministic_and_distinct() {
        let mut p = AddrPlan::new();
        let a = p.alloc_lan(LanKind::Public).unwrap();
        let b = p.alloc_lan(LanKind::Private).unwrap();
        let c = p.alloc_lan(LanKind::Private).unwrap();
        let d = p.alloc_lan(LanKind::Cgnat).unwrap();
        assert_eq!(a.v4, Ipv4Addr::new(198, 19, 0, 0));
        assert_eq!(b.v4, Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(c.v4, Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(d.v4, Ipv4Addr::new(100, 64, 0, 0));
        assert_eq!(d.v6, "2001:db8:1:3::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(a.gateway().0, Ipv4Addr::new(198, 19, 0, 1));
    }

    #[test]
    fn hosts_run_out_after_253() {
        let mut p = AddrPlan::new();
        let mut lan = p.alloc_lan(LanKind::Public).unwrap();
        let first = lan.alloc().unwrap();
        assert_eq!(first.0, Ipv4Addr::new(198, 19, 0, 2));
        assert_eq!(first.1, "2001:db8:1::2".parse::<Ipv6Addr>().unwrap());
        for _ in 0..252 {
            lan.alloc().unwrap();
        }
        let err = lan.alloc().unwrap_err();
        assert!(err.to_string().contains("exhausted"), "{err}");
    }

    #[test]
    fn exchange_runs_out() {
        let mut p = AddrPlan::new();
        assert_eq!(p.alloc_exchange().unwrap().0, Ipv4Addr::new(198, 18, 0, 2));
        for _ in 0..252 {
            p.alloc_exchange().unwrap();
        }
        assert_eq!(p.alloc_exchange().unwrap_err(), AddrError::Exchange);
    }

    #[test]
    fn public_lans_run_out() {
        let mut p = AddrPlan::new();
        for _ in 0..256 {
            p.alloc_lan(LanKind::Public).unwrap();
        }
        assert!(matches!(
            p.alloc_lan(LanKind::Public),
            Err(AddrError::Lans { .. })
        ));
    }

    #[test]
    fn link_local_is_modified_eui64() {
        assert_eq!(
            link_local([0x02, 0x50, 0, 0, 3, 1]).to_string(),
            "fe80::50:ff:fe00:301"
        );
    }

    #[test]
    fn ip_support_families() {
        use IpSupport::*;
        assert!(DualStack.has_v4() && DualStack.has_v6());
        assert!(!V6Only.has_v4() && V4Only.has_v4());
        assert_eq!(V4Only.intersect(V6Only), None);
        assert_eq!(DualStack.intersect(V6Only), Some(V6Only));
        let p: Ipv6Addr = "2001:db8:1:7::".parse().unwrap();
        assert_eq!(ula_of(p), "fd00:db8:1:7::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            nptv6_external_of(ula_of(p)),
            "2001:db8:2:7::".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn macs_are_unicast_local_and_unique() {
        let a = mac(1, 0);
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_eq!(a[0] & 2, 2, "locally administered");
        assert_ne!(mac(1, 0), mac(1, 1));
        assert_ne!(mac(1, 0), mac(256, 0));
    }
}
