//! IPv6 behind routers: stateful masquerade (NAT66), stateless prefix
//! translation (NPTv6, RFC 6296) and NAT64 (RFC 6146, with the
//! network-specific prefix `2001:db8:64::/96`, see [`NAT64_PREFIX`]) with
//! Debian's `tayga` as the translator.
//!
//! Everything here is pure: nft rule text and the translator's
//! configuration, with golden tests. `lab/nat6_ops.rs` applies it.
//!
//! Kernel requirements: nftables with `nf_nat` for IPv6 (`masquerade`,
//! `snat ip6 prefix to`, Linux 5.8+), TUN for NAT64; the `tayga` binary
//! (`apt-get install tayga`) for NAT64.

use std::net::{Ipv4Addr, Ipv6Addr};

/// How a router treats IPv6 between its LAN and its uplink.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum NatV6Mode {
    /// Routed: the LAN's global prefix is reachable from upstream (default).
    #[default]
    None,
    /// RFC 6296 NPTv6: the LAN's ULA prefix `fd00:db8:1:N::/64` maps 1:1 to
    /// the external prefix `2001:db8:2:N::/64`, in both directions, so a
    /// device keeps one stable external address and is reachable inbound.
    Nptv6,
    /// Stateful NAT66: every LAN host leaves with the router's uplink
    /// address, like NAT44 masquerade (LAN prefix `fd00:db8:1:N::/64`).
    Masquerade,
    /// NAT64: IPv6 devices reach IPv4 hosts at `2001:db8:64::<IPv4>`; the
    /// router translates with `tayga` and masquerades the translated
    /// packets to its IPv4 uplink address. The LAN's IPv6 stays routed.
    /// Pair with [`crate::IpSupport::V6Only`] for a mobile-carrier LAN and a
    /// DNS server with DNS64 ([`crate::DnsZone::dns64`]).
    Nat64,
}

impl NatV6Mode {
    /// The kebab-case name used in lab files.
    pub fn name(self) -> &'static str {
        match self {
            NatV6Mode::None => "none",
            NatV6Mode::Nptv6 => "nptv6",
            NatV6Mode::Masquerade => "masquerade",
            NatV6Mode::Nat64 => "nat64",
        }
    }

    /// Whether the LAN's IPv6 prefix is hidden behind the router (a ULA).
    pub fn hides_lan(self) -> bool {
        matches!(self, NatV6Mode::Nptv6 | NatV6Mode::Masquerade)
    }
}

/// The nft table of a router's IPv6 NAT.
pub const NAT6_TABLE: &str = "patchbay-nat6";
/// The nft table that masquerades a NAT64 router's translator pool.
pub const NAT64_TABLE: &str = "patchbay-nat64";
/// The lab's NAT64 prefix, a network-specific prefix (RFC 6052 2.2).
///
/// Not the well-known `64:ff9b::/96`: RFC 6052 3.1 forbids the well-known
/// prefix for non-global IPv4 addresses, tayga enforces that (it rejects
/// 10/8, 100.64/10, 172.16/12, 192.168/16, 198.18/15, ...), and every
/// IPv4 address of a lab is non-global on purpose (198.18.0.0/15) so that
/// nothing could ever leak out. The prefix sits in the documentation range
/// the lab already uses and is routed only inside NAT64 routers.
pub const NAT64_PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0);
/// The translator's private IPv4 pool in a NAT64 router.
pub const NAT64_POOL: Ipv4Addr = Ipv4Addr::new(192, 168, 255, 0);
/// The translator's own IPv4 address (first of the pool).
pub const NAT64_TAYGA_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 255, 1);
/// The TUN device tayga uses inside a NAT64 router.
pub const NAT64_TUN: &str = "nat64";

/// `2001:db8:64::a.b.c.d` for `v4` (RFC 6052 /96 embedding).
pub fn nat64_embed(v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(NAT64_PREFIX) | u128::from(u32::from(v4)))
}

/// The IPv4 address embedded in a `2001:db8:64::/96` address, if it is one.
pub fn nat64_extract(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let n = u128::from(v6);
    (n >> 32 == u128::from(NAT64_PREFIX) >> 32).then(|| Ipv4Addr::from(n as u32))
}

/// The nft ruleset of a router's masquerade or NPTv6 mode (`lan_v6` and
/// `ext_v6` are /64 prefixes; `ext_v6` is used by NPTv6 only). Returns the
/// removal of the table for the other modes.
pub fn render_nat6(mode: NatV6Mode, wan: &str, lan_v6: Ipv6Addr, ext_v6: Ipv6Addr) -> String {
    let body = match mode {
        NatV6Mode::Masquerade => format!(
            "table ip6 {NAT6_TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{wan}\" ip6 saddr {lan_v6}/64 masquerade\n  }}\n}}\n"
        ),
        NatV6Mode::Nptv6 => format!(
            "table ip6 {NAT6_TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname \"{wan}\" ip6 daddr {ext_v6}/64 dnat ip6 prefix to {lan_v6}/64\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{wan}\" ip6 saddr {lan_v6}/64 snat ip6 prefix to {ext_v6}/64\n  }}\n}}\n"
        ),
        NatV6Mode::None | NatV6Mode::Nat64 => {
            return crate::sys::nft::remove_table("ip6", NAT6_TABLE);
        }
    };
    crate::sys::nft::replace_table("ip6", NAT6_TABLE, &body)
}

/// The nft ruleset that masquerades the NAT64 translator's pool to the
/// uplink `wan`.
pub fn render_nat64_masq(wan: &str) -> String {
    let body = format!(
        "table ip {NAT64_TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{wan}\" ip saddr {NAT64_POOL}/24 masquerade\n  }}\n}}\n"
    );
    crate::sys::nft::replace_table("ip", NAT64_TABLE, &body)
}

/// tayga's configuration for a NAT64 router whose LAN is `lan_v6`/64.
pub fn render_tayga_conf(lan_v6: Ipv6Addr) -> String {
    format!(
        "tun-device {NAT64_TUN}\nipv4-addr {NAT64_TAYGA_V4}\nipv6-addr {}\nprefix {NAT64_PREFIX}/96\ndynamic-pool {NAT64_POOL}/24\n",
        tayga_v6(lan_v6)
    )
}

/// tayga's own IPv6 address: `<LAN prefix>::64:64`, routed onto the TUN.
pub fn tayga_v6(lan_v6: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(lan_v6) | 0x64_0064)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_and_extracts() {
        let v4 = Ipv4Addr::new(198, 19, 0, 2);
        let v6 = nat64_embed(v4);
        assert_eq!(v6.to_string(), "2001:db8:64::c613:2");
        assert_eq!(nat64_extract(v6), Some(v4));
        assert_eq!(nat64_extract("2001:db8::1".parse().unwrap()), None);
    }

    #[test]
    fn nptv6_rules_map_both_ways() {
        let lan: Ipv6Addr = "fd00:db8:1:3::".parse().unwrap();
        let ext: Ipv6Addr = "2001:db8:2:3::".parse().unwrap();
        let r = render_nat6(NatV6Mode::Nptv6, "wan", lan, ext);
        assert!(r.contains("snat ip6 prefix to 2001:db8:2:3::/64"), "{r}");
        assert!(r.contains("dnat ip6 prefix to fd00:db8:1:3::/64"), "{r}");
        let m = render_nat6(NatV6Mode::Masquerade, "wan", lan, ext);
        assert!(m.contains("ip6 saddr fd00:db8:1:3::/64 masquerade"), "{m}");
        let none = render_nat6(NatV6Mode::None, "wan", lan, ext);
        assert!(none.ends_with("delete table ip6 patchbay-nat6\n"), "{none}");
    }

    #[test]
    fn tayga_conf_golden() {
        let lan: Ipv6Addr = "2001:db8:1:4::".parse().unwrap();
        assert_eq!(
            render_tayga_conf(lan),
            "tun-device nat64\nipv4-addr 192.168.255.1\nipv6-addr 2001:db8:1:4::64:64\nprefix 2001:db8:64::/96\ndynamic-pool 192.168.255.0/24\n"
        );
        assert!(render_nat64_masq("wan").contains("ip saddr 192.168.255.0/24 masquerade"));
    }
}
