//! Upstream patchbay's vocabulary: per-mode conntrack timeouts for its NAT
//! names (`Home`, `Corporate`, `CloudNat`) and router presets that bundle
//! NAT, firewall, addressing and timeouts for a real-world deployment.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NatV6Mode;
use super::{ConntrackTimeouts, Nat, NatConfig};
use crate::addr::IpSupport;
use crate::firewall::Firewall;

/// Timeouts with upstream's three knobs; the rest keep Linux's defaults.
fn timeouts(udp: u64, udp_stream: u64, tcp_established: u64) -> ConntrackTimeouts {
    ConntrackTimeouts {
        udp: Duration::from_secs(udp),
        udp_stream: Duration::from_secs(udp_stream),
        tcp_established: Duration::from_secs(tcp_established),
        ..Default::default()
    }
}

/// The timeouts that come with a NAT mode (upstream's values for its
/// names); `None` for our RFC 4787 names, which keep the kernel's.
pub(crate) fn nat_timeouts(nat: Nat) -> Option<ConntrackTimeouts> {
    match nat {
        Nat::Home => Some(timeouts(30, 300, 7200)),
        Nat::Corporate => Some(timeouts(30, 120, 3600)),
        Nat::CloudNat => Some(timeouts(30, 350, 3600)),
        _ => None,
    }
}

impl NatConfig {
    /// The timeouts in force: the router's own, else its mode's
    /// ([`Nat::preset_timeouts`]), else `None` (the kernel's).
    pub(crate) fn effective_conntrack(&self) -> Option<ConntrackTimeouts> {
        self.conntrack
            .clone()
            .or_else(|| self.nat.preset_timeouts())
    }
}

/// A router modelled on a real-world deployment (upstream patchbay's
/// `RouterPreset`, plus `Mobile`). In TOML: `preset = "home"` on a
/// `[[router]]`; keys set next to it override the preset's values, as
/// builder calls after [`crate::native::RouterBuilder::preset`] do.
///
/// Presets also set the LAN's IP support as upstream does
/// ([`RouterPreset::ip_support`]): `PublicV4` and `Hotel` are v4-only,
/// `IspV6` is v6-only with NAT64 ([`RouterPreset::nat_v6`], which needs
/// Debian's `tayga`); the others are dual-stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RouterPreset {
    /// Home router: NAT [`Nat::Home`] (EIM + APDF, upstream's timeouts),
    /// block-inbound firewall, private LAN.
    Home,
    /// Public router: no NAT, no firewall, public LAN (datacenter, VPS).
    Public,
    /// Upstream's IPv4-only public router: as [`RouterPreset::Public`].
    PublicV4,
    /// ISP with carrier-grade NAT: [`Nat::Cgnat`] (EIM + EIF), no firewall,
    /// LAN in 100.64.0.0/10 for home routers or devices behind it; UDP
    /// 30 s, UDP stream 300 s, TCP established 7200 s.
    IspCgnat,
    /// IPv6 ISP: no NAT, block-inbound firewall, public LAN.
    IspV6,
    /// Enterprise gateway: [`Nat::Corporate`] (symmetric) and the
    /// corporate firewall (inbound blocked; out only TCP 80/443, UDP 53).
    Corporate,
    /// Hotel / airport guest Wi-Fi: [`Nat::Corporate`] and the
    /// captive-portal firewall (any TCP, UDP only to 53).
    Hotel,
    /// Cloud NAT gateway: [`Nat::CloudNat`] (symmetric, UDP stream 350 s),
    /// no firewall.
    Cloud,
    /// Mobile carrier (not an upstream preset): [`Nat::Cgnat`] with short
    /// UDP idle timeouts (UDP 30 s, UDP stream 60 s, TCP established
    /// 1800 s), as mobile CGNs commonly use, and a block-inbound firewall.
    Mobile,
}

impl RouterPreset {
    /// Every preset, in a stable order.
    pub const ALL: [RouterPreset; 9] = [
        RouterPreset::Home,
        RouterPreset::Public,
        RouterPreset::PublicV4,
        RouterPreset::IspCgnat,
        RouterPreset::IspV6,
        RouterPreset::Corporate,
        RouterPreset::Hotel,
        RouterPreset::Cloud,
        RouterPreset::Mobile,
    ];

    /// The NAT mode.
    pub fn nat(self) -> Nat {
        match self {
            Self::Home => Nat::Home,
            Self::Public | Self::PublicV4 | Self::IspV6 => Nat::None,
            Self::IspCgnat | Self::Mobile => Nat::Cgnat,
            Self::Corporate | Self::Hotel => Nat::Corporate,
            Self::Cloud => Nat::CloudNat,
        }
    }

    /// The firewall (`None`: none).
    pub fn firewall(self) -> Option<Firewall> {
        match self {
            Self::Home | Self::IspV6 | Self::Mobile => Some(Firewall::block_inbound()),
            Self::Corporate => Some(Firewall::corporate()),
            Self::Hotel => Some(Firewall::captive_portal()),
            Self::Public | Self::PublicV4 | Self::IspCgnat | Self::Cloud => None,
        }
    }

    /// Conntrack timeouts (`None`: the kernel's).
    pub fn conntrack(self) -> Option<ConntrackTimeouts> {
        match self {
            Self::IspCgnat => Some(timeouts(30, 300, 7200)),
            Self::Mobile => Some(timeouts(30, 60, 1800)),
            p => p.nat().preset_timeouts(),
        }
    }

    /// The NAT configuration (mode, no hairpin, timeouts). Timeouts that
    /// are simply the NAT mode's are left to the mode
    /// ([`NatConfig::effective_conntrack`]), so changing the mode after the
    /// preset also changes them.
    pub fn nat_config(self) -> NatConfig {
        let own = matches!(self, Self::IspCgnat | Self::Mobile);
        NatConfig {
            nat: self.nat(),
            hairpin: false,
            conntrack: if own { self.conntrack() } else { None },
        }
    }

    /// The address families of the router's LAN: v4-only for `PublicV4`
    /// and `Hotel`, v6-only for `IspV6`, dual-stack for the others.
    pub fn ip_support(self) -> IpSupport {
        match self {
            Self::PublicV4 | Self::Hotel => IpSupport::V4Only,
            Self::IspV6 => IpSupport::V6Only,
            _ => IpSupport::DualStack,
        }
    }

    /// How the router treats IPv6: NAT64 for `IspV6` (its v6-only LAN
    /// reaches IPv4 through it; needs `tayga` and an IPv4 uplink), routed
    /// for the others.
    pub fn nat_v6(self) -> NatV6Mode {
        match self {
            Self::IspV6 => NatV6Mode::Nat64,
            _ => NatV6Mode::None,
        }
    }

    /// The address pool of the router's LAN.
    #[cfg(test)]
    pub(crate) fn lan_kind(self) -> crate::addr::LanKind {
        self.nat().lan_kind()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::addr::LanKind;
    use crate::firewall::FirewallPolicy;

    #[test]
    fn presets_expand_like_upstream() {
        let h = RouterPreset::Home;
        assert_eq!(h.nat().behaviour(), Nat::PortRestricted);
        assert_eq!(h.conntrack().unwrap().udp_stream, Duration::from_secs(300));
        assert_eq!(
            RouterPreset::Corporate.firewall().unwrap().policy,
            FirewallPolicy::Corporate
        );
        assert_eq!(RouterPreset::Cloud.nat().behaviour(), Nat::Symmetric);
        assert_eq!(
            RouterPreset::Cloud.conntrack().unwrap().udp_stream,
            Duration::from_secs(350)
        );
        assert_eq!(RouterPreset::Public.lan_kind(), LanKind::Public);
        assert_eq!(RouterPreset::IspCgnat.lan_kind(), LanKind::Cgnat);
        assert_eq!(RouterPreset::PublicV4.ip_support(), IpSupport::V4Only);
        assert_eq!(RouterPreset::Hotel.ip_support(), IpSupport::V4Only);
        assert_eq!(RouterPreset::IspV6.ip_support(), IpSupport::V6Only);
        assert_eq!(RouterPreset::IspV6.nat_v6(), NatV6Mode::Nat64);
        assert_eq!(RouterPreset::Home.ip_support(), IpSupport::DualStack);
        #[derive(Deserialize)]
        struct D {
            preset: RouterPreset,
            nat: Nat,
        }
        let d: D = toml::from_str("preset = \"isp-cgnat\"\nnat = \"cloud-nat\"").unwrap();
        assert_eq!((d.preset, d.nat), (RouterPreset::IspCgnat, Nat::CloudNat));
        // An explicit timeout wins over the mode's.
        let c = NatConfig {
            nat: Nat::Home,
            hairpin: false,
            conntrack: Some(ConntrackTimeouts::default()),
        };
        assert_eq!(c.effective_conntrack(), Some(ConntrackTimeouts::default()));
        assert_eq!(
            NatConfig {
                conntrack: None,
                ..c
            }
            .effective_conntrack()
            .unwrap()
            .tcp_established,
            Duration::from_secs(7200)
        );
    }
}
