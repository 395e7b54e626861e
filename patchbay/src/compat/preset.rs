//! Upstream 0.7's router presets, expanded as upstream expands them (NAT with its
//! timeouts, firewall, IP support, NAT64, address pool). The expansion is pure.

use super::firewall::Firewall;
use super::nat::{ConntrackTimeouts, Nat, NatConfig};
use crate::{IpSupport, NatV6Mode};

/// A router modelled on a real deployment. Builder calls after
/// [`super::RouterBuilder::preset`] override the preset's values.
///
/// | preset | NAT | firewall | IP |
/// |---|---|---|---|
/// | `Home` | `Moderate` | block inbound | dual |
/// | `Public` | none | none | dual |
/// | `PublicV4` | none | none | v4 |
/// | `IspCgnat` | `Moderate` | block inbound | dual |
/// | `IspCgnatSymmetric` | `Strict` (UDP stream 180 s) | block inbound | dual |
/// | `IspV6` | NAT64 | block inbound | v6 |
/// | `Corporate` | `Strict` (UDP stream 120 s) | TCP 80/443, UDP 53 out | dual |
/// | `Hotel` | `Strict` (UDP stream 120 s) | captive portal | v4 |
/// | `Cloud` | `Strict` (UDP stream 350 s) | none | dual |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterPreset {
    /// A residential router.
    Home,
    /// A public router (datacenter, ISP hand-off): no NAT, no firewall.
    Public,
    /// [`RouterPreset::Public`] without IPv6.
    PublicV4,
    /// An ISP's RFC 6888 carrier-grade NAT.
    IspCgnat,
    /// An ISP's symmetric CGNAT (and most cellular carriers).
    IspCgnatSymmetric,
    /// An IPv6-only ISP with NAT64.
    IspV6,
    /// An enterprise gateway.
    Corporate,
    /// Hotel or airport guest Wi-Fi.
    Hotel,
    /// A cloud NAT gateway.
    Cloud,
}

/// What a preset sets on a router.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Expanded {
    pub nat: Option<NatConfig>,
    pub nat_v6: NatV6Mode,
    pub firewall: Firewall,
    pub ip_support: IpSupport,
    pub public_pool: bool,
}

impl RouterPreset {
    /// Upstream's recommended IPv6 profile (always `Realistic`).
    pub fn recommended_ipv6_profile(self) -> super::ipv6::Ipv6Profile {
        super::ipv6::Ipv6Profile::Realistic
    }

    pub(crate) fn expand(self) -> Expanded {
        use RouterPreset::*;
        let (udp_stream, tcp_established) = match self {
            IspCgnatSymmetric => (180, 3600),
            Corporate | Hotel => (120, 3600),
            Cloud => (350, 3600),
            _ => (300, 7200),
        };
        let base = match self {
            Public | PublicV4 | IspV6 => Nat::None,
            Home | IspCgnat => Nat::Moderate,
            IspCgnatSymmetric | Corporate | Hotel | Cloud => Nat::Strict,
        };
        let nat = base.to_config().map(|mut c| {
            c.timeouts = ConntrackTimeouts {
                udp_stream,
                tcp_established,
                ..ConntrackTimeouts::default()
            };
            c
        });
        Expanded {
            nat,
            nat_v6: if self == IspV6 {
                NatV6Mode::Nat64
            } else {
                NatV6Mode::None
            },
            firewall: match self {
                Home | IspV6 | IspCgnat | IspCgnatSymmetric => Firewall::BlockInbound,
                Public | PublicV4 | Cloud => Firewall::None,
                Corporate => Firewall::Corporate,
                Hotel => Firewall::CaptivePortal,
            },
            ip_support: match self {
                PublicV4 | Hotel => IpSupport::V4Only,
                IspV6 => IpSupport::V6Only,
                _ => IpSupport::DualStack,
            },
            public_pool: matches!(self, Public | PublicV4 | IspV6),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::compat::nat::{NatFiltering, NatMapping};

    #[test]
    fn presets_expand_as_upstream_07() {
        let home = RouterPreset::Home.expand();
        let nat = home.nat.unwrap();
        assert_eq!(nat.mapping, NatMapping::EndpointIndependent);
        assert_eq!(nat.filtering, NatFiltering::AddressAndPortDependent);
        assert_eq!(home.firewall, Firewall::BlockInbound);
        assert_eq!(home.ip_support, IpSupport::DualStack);
        let cg = RouterPreset::IspCgnat.expand();
        assert_eq!(cg.nat.unwrap().mapping, NatMapping::EndpointIndependent);
        assert_eq!(cg.firewall, Firewall::BlockInbound);
        let sym = RouterPreset::IspCgnatSymmetric.expand().nat.unwrap();
        assert_eq!(sym.mapping, NatMapping::EndpointDependent);
        assert_eq!(sym.timeouts.udp_stream, 180);
        let v6 = RouterPreset::IspV6.expand();
        assert_eq!((v6.nat, v6.nat_v6), (None, NatV6Mode::Nat64));
        assert!(v6.public_pool);
        assert_eq!(RouterPreset::Hotel.expand().ip_support, IpSupport::V4Only);
        assert_eq!(
            RouterPreset::Cloud
                .expand()
                .nat
                .unwrap()
                .timeouts
                .udp_stream,
            350
        );
        assert_eq!(
            RouterPreset::Corporate.expand().firewall,
            Firewall::Corporate
        );
    }
}
