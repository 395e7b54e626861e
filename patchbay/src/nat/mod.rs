//! NAT on routers, with nftables in the router's namespace. Modes are
//! named after RFC 4787 (mapping and filtering behaviour).
//!
//! Kernel requirements: `CONFIG_NF_TABLES`, `NFT_NAT`, `NFT_MASQ`, `NFT_CT`
//! and dynamic sets with timeouts (Linux 5.4+; `ct original proto-src` needs
//! 4.19+). The `nft` binary must be installed.
//!
//! How the modes are built (see `docs/nat-and-links.md` for details):
//! - Mapping: `masquerade` keeps the source port when it is free, so one
//!   internal endpoint keeps one external port for every destination
//!   (endpoint-independent mapping, EIM). `masquerade fully-random` picks a
//!   random port per connection (endpoint-dependent mapping, EDM).
//! - Filtering: conntrack lets only replies in (address-and-port-dependent
//!   filtering). For wider filtering a dynamic map `eim` (mapped UDP port →
//!   internal address . port, timeout from [`ConntrackTimeouts::eim_map`])
//!   is recorded from outbound packets and inbound packets to a mapped port
//!   are DNATed through it: from anyone (full cone) or only from addresses
//!   the mapping has sent to (set `adf_seen`). UDP only.
//! - Hairpinning DNATs LAN packets to the router's own public address
//!   through the same map and source-NATs them to that public address, so
//!   the receiver sees the sender's external address (RFC 4787 REQ-9).

mod presets;
mod render;
mod timeouts;
mod v6;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::addr::LanKind;

pub use presets::RouterPreset;
pub use render::{NAT_TABLE, render_nat};
pub use timeouts::ConntrackTimeouts;
pub use v6::{
    NAT64_POOL, NAT64_PREFIX, NAT64_TUN, NatV6Mode, nat64_embed, nat64_extract, render_nat6,
    render_nat64_masq, render_tayga_conf, tayga_v6,
};

/// A router's NAT behaviour (RFC 4787 terms). In TOML: `nat = "port-restricted"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Nat {
    /// No NAT: the LAN uses public addresses and is routed.
    #[default]
    None,
    /// Endpoint-independent mapping and filtering ("full cone"): once an
    /// internal endpoint has sent out, anyone can reach it on its mapped port.
    FullCone,
    /// EIM with address-dependent filtering: inbound is allowed from any
    /// port of an address the internal endpoint has sent to.
    AddressRestricted,
    /// EIM with address-and-port-dependent filtering: only replies from the
    /// exact remote endpoint get in (the typical home router).
    PortRestricted,
    /// Endpoint-dependent mapping ("symmetric", corporate): a new random
    /// external port for each connection; only replies get in.
    Symmetric,
    /// Carrier-grade NAT (RFC 6888): EIM with endpoint-independent
    /// filtering (UDP), as upstream patchbay and carriers' CGNs do, and a
    /// LAN in the shared address space 100.64.0.0/10; home NATs chain
    /// behind it with `.upstream(&cgnat)` (double NAT).
    Cgnat,
    /// Upstream patchbay's home router: port-restricted behaviour (EIM +
    /// APDF), with upstream's timeouts (UDP 30 s, UDP stream 300 s, TCP
    /// established 7200 s) unless the router sets its own.
    Home,
    /// Upstream patchbay's corporate firewall NAT: symmetric behaviour
    /// (EDM + APDF), timeouts UDP 30 s, UDP stream 120 s, TCP established
    /// 3600 s.
    Corporate,
    /// Upstream patchbay's cloud NAT gateway (AWS/Azure/GCP): symmetric
    /// behaviour, timeouts UDP 30 s, UDP stream 350 s, TCP established
    /// 3600 s.
    CloudNat,
}

impl Nat {
    /// Every mode, in a stable order.
    pub const ALL: [Nat; 9] = [
        Nat::None,
        Nat::FullCone,
        Nat::AddressRestricted,
        Nat::PortRestricted,
        Nat::Symmetric,
        Nat::Cgnat,
        Nat::Home,
        Nat::Corporate,
        Nat::CloudNat,
    ];

    /// The RFC 4787 mode that implements this one (upstream's names map to
    /// ours: `Home` → `PortRestricted`, `Corporate`/`CloudNat` →
    /// `Symmetric`; the rest are themselves).
    pub(crate) fn behaviour(self) -> Nat {
        match self {
            Nat::Home => Nat::PortRestricted,
            Nat::Corporate | Nat::CloudNat => Nat::Symmetric,
            m => m,
        }
    }

    /// Conntrack timeouts that come with this mode (upstream's per-preset
    /// values), used when the router sets none; `None` keeps the kernel's.
    pub(crate) fn preset_timeouts(self) -> Option<ConntrackTimeouts> {
        presets::nat_timeouts(self)
    }

    /// The address pool a router with this NAT gives its LAN.
    pub(crate) fn lan_kind(self) -> LanKind {
        match self {
            Nat::None => LanKind::Public,
            Nat::Cgnat => LanKind::Cgnat,
            _ => LanKind::Private,
        }
    }

    /// Whether the mapping is endpoint-independent.
    pub fn is_eim(self) -> bool {
        !matches!(self.behaviour(), Nat::None | Nat::Symmetric)
    }

    /// The mode's name as written in TOML.
    pub fn name(self) -> &'static str {
        match self {
            Nat::None => "none",
            Nat::FullCone => "full-cone",
            Nat::AddressRestricted => "address-restricted",
            Nat::PortRestricted => "port-restricted",
            Nat::Symmetric => "symmetric",
            Nat::Cgnat => "cgnat",
            Nat::Home => "home",
            Nat::Corporate => "corporate",
            Nat::CloudNat => "cloud-nat",
        }
    }
}

impl std::str::FromStr for Nat {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Nat> {
        Nat::ALL
            .into_iter()
            .find(|n| n.name() == s.trim())
            .ok_or_else(|| {
                crate::Error::invalid("nat", crate::InvalidReason::Unknown, format!(
                    "unknown NAT mode {s:?}: use one of none, full-cone, address-restricted, port-restricted, symmetric, cgnat, home, corporate, cloud-nat"
                ))
            })
    }
}

/// A router's NAT configuration: mode, hairpinning and conntrack timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct NatConfig {
    /// The NAT mode.
    pub nat: Nat,
    /// Whether LAN hosts can reach each other through the router's public
    /// address and mapped ports (hairpinning). Default: off.
    pub hairpin: bool,
    /// Conntrack timeouts of the router's namespace. `None` keeps the
    /// kernel's defaults (and renders EIM map timeouts from them).
    pub conntrack: Option<ConntrackTimeouts>,
}

/// Everything the NAT renderer needs; pure data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatSpec {
    /// The mode.
    pub mode: Nat,
    /// Hairpinning on/off.
    pub hairpin: bool,
    /// Name of the uplink interface (`wan`).
    pub wan: String,
    /// Name of the LAN interface (`lan`).
    pub lan: String,
    /// The LAN's IPv4 network address (for hairpinning).
    pub lan_net: Ipv4Addr,
    /// The LAN's prefix length.
    pub lan_prefix: u8,
    /// The router's public (uplink) IPv4 address.
    pub wan_ip: Ipv4Addr,
    /// Timeouts: every timeout in the rules comes from here.
    pub timeouts: ConntrackTimeouts,
}
