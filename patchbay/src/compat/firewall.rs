//! Upstream 0.7's firewall presets and builder, translated into the core's [`crate::native::Firewall`].
//!
//! One difference: the core's firewall guards the router itself too (its `input` chain), not
//! only what it forwards, so with `BlockInbound` an unsolicited packet to the router's own
//! public address is dropped as well. Hosts behind the router see the same thing either way.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A router firewall preset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firewall {
    /// No filtering beyond NAT.
    #[default]
    None,
    /// Unsolicited inbound traffic on the WAN is dropped (RFC 6092).
    BlockInbound,
    /// Blocks inbound; outbound only TCP 80/443 and UDP 53.
    Corporate,
    /// Blocks inbound; outbound any TCP, UDP only to 53.
    CaptivePortal,
    /// A custom configuration.
    Custom(FirewallConfig),
}

impl Firewall {
    /// The configuration this preset expands to (`None` for [`Firewall::None`]).
    pub fn to_config(&self) -> Option<FirewallConfig> {
        let cfg = |tcp, udp| FirewallConfig {
            block_inbound: true,
            outbound_tcp: tcp,
            outbound_udp: udp,
        };
        match self {
            Firewall::None => None,
            Firewall::BlockInbound => Some(cfg(PortPolicy::AllowAll, PortPolicy::AllowAll)),
            Firewall::Corporate => Some(cfg(
                PortPolicy::Allow(vec![80, 443]),
                PortPolicy::Allow(vec![53]),
            )),
            Firewall::CaptivePortal => Some(cfg(PortPolicy::AllowAll, PortPolicy::Allow(vec![53]))),
            Firewall::Custom(c) => Some(c.clone()),
        }
    }

    /// The core firewall (`None`: no firewall).
    pub(crate) fn to_core(&self) -> Option<crate::native::Firewall> {
        let c = self.to_config()?;
        let mut fw = if c.block_inbound {
            crate::native::Firewall::block_inbound()
        } else {
            crate::native::Firewall::default()
        };
        if c.outbound_tcp != PortPolicy::AllowAll || c.outbound_udp != PortPolicy::AllowAll {
            fw = fw.outbound(crate::OutboundPolicy {
                tcp: c.outbound_tcp.to_core(),
                udp: c.outbound_udp.to_core(),
            });
        }
        Some(fw)
    }
}

/// Which destination ports of one protocol may be used outbound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortPolicy {
    /// Every port.
    #[default]
    AllowAll,
    /// Only these ports (an empty list blocks everything).
    Allow(Vec<u16>),
    /// No port.
    BlockAll,
}

impl PortPolicy {
    fn to_core(&self) -> crate::native::PortPolicy {
        match self {
            PortPolicy::AllowAll => crate::native::PortPolicy::AllowAll,
            PortPolicy::Allow(p) if p.is_empty() => crate::native::PortPolicy::BlockAll,
            PortPolicy::Allow(p) => {
                crate::native::PortPolicy::Allow(p.iter().copied().collect::<BTreeSet<_>>())
            }
            PortPolicy::BlockAll => crate::native::PortPolicy::BlockAll,
        }
    }
}

/// A firewall: inbound blocking and outbound port policies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FirewallConfig {
    /// Drop unsolicited inbound traffic on the WAN.
    pub block_inbound: bool,
    /// Outbound TCP destination ports.
    pub outbound_tcp: PortPolicy,
    /// Outbound UDP destination ports.
    pub outbound_udp: PortPolicy,
}

impl FirewallConfig {
    /// A builder.
    pub fn builder() -> FirewallConfigBuilder {
        FirewallConfigBuilder::default()
    }
}

/// Builds a [`FirewallConfig`]; used by reference, as in
/// `RouterBuilder::firewall_custom(|f| f.block_inbound().allow_udp(&[53]))`.
#[derive(Clone, Debug, Default)]
pub struct FirewallConfigBuilder {
    cfg: FirewallConfig,
}

impl FirewallConfigBuilder {
    /// Drops unsolicited inbound traffic.
    pub fn block_inbound(&mut self) -> &mut Self {
        self.cfg.block_inbound = true;
        self
    }

    /// Sets the outbound TCP policy.
    pub fn outbound_tcp(&mut self, policy: PortPolicy) -> &mut Self {
        self.cfg.outbound_tcp = policy;
        self
    }

    /// Sets the outbound UDP policy.
    pub fn outbound_udp(&mut self, policy: PortPolicy) -> &mut Self {
        self.cfg.outbound_udp = policy;
        self
    }

    /// Only these outbound TCP ports.
    pub fn allow_tcp(&mut self, ports: &[u16]) -> &mut Self {
        self.cfg.outbound_tcp = PortPolicy::Allow(ports.to_vec());
        self
    }

    /// Only these outbound UDP ports.
    pub fn allow_udp(&mut self, ports: &[u16]) -> &mut Self {
        self.cfg.outbound_udp = PortPolicy::Allow(ports.to_vec());
        self
    }

    /// No outbound TCP.
    pub fn block_tcp(&mut self) -> &mut Self {
        self.cfg.outbound_tcp = PortPolicy::BlockAll;
        self
    }

    /// No outbound UDP.
    pub fn block_udp(&mut self) -> &mut Self {
        self.cfg.outbound_udp = PortPolicy::BlockAll;
        self
    }

    /// The configuration.
    pub fn build(&self) -> FirewallConfig {
        self.cfg.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn presets_and_builder_translate_to_the_core() {
        assert!(Firewall::None.to_core().is_none());
        let b = Firewall::BlockInbound.to_core().unwrap();
        assert_eq!(b, crate::native::Firewall::block_inbound());
        let mut f = FirewallConfigBuilder::default();
        f.block_inbound().allow_udp(&[53]);
        let c = Firewall::Custom(f.build()).to_core().unwrap();
        assert_eq!(c.policy, crate::FirewallPolicy::BlockInbound);
        let out = c.outbound.unwrap();
        assert_eq!(out.tcp, crate::native::PortPolicy::AllowAll);
        assert_eq!(out.udp, crate::native::PortPolicy::Allow([53].into()));
        let corp = Firewall::Corporate.to_core().unwrap().effective_outbound();
        assert_eq!(corp.tcp, crate::native::PortPolicy::Allow([80, 443].into()));
    }
}
