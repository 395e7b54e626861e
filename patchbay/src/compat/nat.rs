//! Upstream 0.7's NAT vocabulary (`Nat::{None, Open, Moderate, Strict, Custom}`,
//! `NatConfig`) and its translation into the core's RFC 4787 modes.
//!
//! | upstream | RFC 4787 | core |
//! |---|---|---|
//! | `Open` | EIM + EIF | [`crate::native::Nat::FullCone`] |
//! | `Moderate` | EIM + APDF | [`crate::native::Nat::PortRestricted`] |
//! | `Strict` | EDM (random ports) + APDF | [`crate::native::Nat::Symmetric`] |
//! | EIM + ADF (`Custom`) | | [`crate::native::Nat::AddressRestricted`] |
//!
//! Timeouts are upstream's (UDP 30 s, UDP stream 300 s, TCP established 7200 s, and the
//! endpoint-independent mapping's 300 s), set explicitly on the core router.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// NAT behaviour for IPv4, on upstream's difficulty scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nat {
    /// No NAT: the LAN has public addresses and is routed.
    #[default]
    None,
    /// Endpoint-independent mapping and filtering (full cone).
    Open,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (port-restricted
    /// cone): the typical home router; hole punching works.
    Moderate,
    /// Endpoint-dependent mapping with random ports, address-and-port-dependent filtering
    /// (symmetric): hole punching needs a relay.
    Strict,
    /// A custom configuration.
    Custom(NatConfig),
}

impl Nat {
    /// The configuration this preset expands to (`None` for [`Nat::None`]).
    pub fn to_config(self) -> Option<NatConfig> {
        self.into()
    }
}

impl From<NatConfig> for Nat {
    fn from(config: NatConfig) -> Self {
        Nat::Custom(config)
    }
}

impl From<Nat> for Option<NatConfig> {
    fn from(nat: Nat) -> Self {
        let (eim, edm) = (
            NatMapping::EndpointIndependent,
            NatMapping::EndpointDependent,
        );
        let apdf = NatFiltering::AddressAndPortDependent;
        let (mapping, filtering) = match nat {
            Nat::None => return None,
            Nat::Open => (eim, NatFiltering::EndpointIndependent),
            Nat::Moderate => (eim, apdf),
            Nat::Strict => (edm, apdf),
            Nat::Custom(c) => return Some(c),
        };
        Some(NatConfig {
            mapping,
            filtering,
            timeouts: ConntrackTimeouts::default(),
            hairpin: false,
        })
    }
}

/// How the NAT picks external ports (RFC 4787 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatMapping {
    /// One external port for every destination (EIM).
    EndpointIndependent,
    /// A fresh random external port per destination (EDM, "symmetric").
    EndpointDependent,
}

/// Which inbound packets reach a mapping (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatFiltering {
    /// Anyone (EIF, full cone).
    EndpointIndependent,
    /// Any port of an address the internal endpoint has sent to (ADF); needs EIM.
    AddressDependent,
    /// Only the exact endpoints it has sent to (APDF).
    AddressAndPortDependent,
}

/// Conntrack timeouts in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConntrackTimeouts {
    /// A UDP flow that has seen one direction only.
    pub udp: u32,
    /// A UDP flow that has seen both directions.
    pub udp_stream: u32,
    /// An established TCP connection.
    pub tcp_established: u32,
}

impl Default for ConntrackTimeouts {
    fn default() -> Self {
        ConntrackTimeouts {
            udp: 30,
            udp_stream: 300,
            tcp_established: 7200,
        }
    }
}

/// A combination [`NatConfigBuilder::build`] refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatConfigError {
    /// Address-dependent filtering needs endpoint-independent mapping.
    #[error(
        "NatFiltering::AddressDependent requires NatMapping::EndpointIndependent: with endpoint-dependent mapping there is no mapping to deliver inbound packets to"
    )]
    AdfRequiresEim,
    /// Hairpinning needs endpoint-independent mapping.
    #[error(
        "hairpin requires NatMapping::EndpointIndependent: with endpoint-dependent mapping there is no mapping to hairpin through"
    )]
    HairpinRequiresEim,
}

/// A NAT configuration: mapping, filtering, timeouts, hairpinning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NatConfig {
    /// How external ports are picked.
    pub mapping: NatMapping,
    /// Which inbound packets pass.
    pub filtering: NatFiltering,
    /// Conntrack timeouts.
    pub timeouts: ConntrackTimeouts,
    /// Whether LAN hosts reach each other through the router's public address.
    pub hairpin: bool,
}

impl NatConfig {
    /// A builder (default: EIM + APDF, upstream's home-router timeouts, no hairpin).
    pub fn builder() -> NatConfigBuilder {
        NatConfigBuilder::default()
    }

    /// Checks the combinations that cannot be built ([`NatConfigError`]).
    pub fn validate(&self) -> Result<(), NatConfigError> {
        let eim = self.mapping == NatMapping::EndpointIndependent;
        if !eim && self.filtering == NatFiltering::AddressDependent {
            return Err(NatConfigError::AdfRequiresEim);
        }
        if !eim && self.hairpin {
            return Err(NatConfigError::HairpinRequiresEim);
        }
        Ok(())
    }

    /// The core configuration: the RFC 4787 mode, hairpinning and every timeout. EDM with
    /// endpoint-independent filtering has no separate core mode: it is the symmetric NAT
    /// (upstream's rules for it deliver nothing either, as EDM keeps no mapping to deliver
    /// unsolicited packets to).
    pub(crate) fn to_core(self) -> anyhow::Result<crate::native::NatConfig> {
        self.validate()?;
        let nat = match (self.mapping, self.filtering) {
            (NatMapping::EndpointIndependent, NatFiltering::EndpointIndependent) => {
                crate::native::Nat::FullCone
            }
            (NatMapping::EndpointIndependent, NatFiltering::AddressDependent) => {
                crate::native::Nat::AddressRestricted
            }
            (NatMapping::EndpointIndependent, NatFiltering::AddressAndPortDependent) => {
                crate::native::Nat::PortRestricted
            }
            (NatMapping::EndpointDependent, _) => crate::native::Nat::Symmetric,
        };
        let t = self.timeouts;
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        Ok(crate::native::NatConfig {
            nat,
            hairpin: self.hairpin,
            conntrack: Some(crate::native::ConntrackTimeouts {
                udp: secs(t.udp),
                udp_stream: secs(t.udp_stream),
                tcp_established: secs(t.tcp_established),
                // Upstream's endpoint-independent mapping table keeps entries 300 s.
                eim_map: Some(Duration::from_secs(300)),
                ..Default::default()
            }),
        })
    }
}

/// Builds a [`NatConfig`], checking it in [`NatConfigBuilder::build`].
#[derive(Clone, Debug)]
pub struct NatConfigBuilder {
    cfg: NatConfig,
}

impl Default for NatConfigBuilder {
    fn default() -> Self {
        NatConfigBuilder {
            cfg: NatConfig {
                mapping: NatMapping::EndpointIndependent,
                filtering: NatFiltering::AddressAndPortDependent,
                timeouts: ConntrackTimeouts::default(),
                hairpin: false,
            },
        }
    }
}

impl NatConfigBuilder {
    /// Sets the mapping behaviour.
    pub fn mapping(mut self, mapping: NatMapping) -> Self {
        self.cfg.mapping = mapping;
        self
    }

    /// Sets the filtering behaviour.
    pub fn filtering(mut self, filtering: NatFiltering) -> Self {
        self.cfg.filtering = filtering;
        self
    }

    /// Sets the UDP timeout in seconds (default 30).
    pub fn udp_timeout(mut self, secs: u32) -> Self {
        self.cfg.timeouts.udp = secs;
        self
    }

    /// Sets the UDP stream timeout in seconds (default 300).
    pub fn udp_stream_timeout(mut self, secs: u32) -> Self {
        self.cfg.timeouts.udp_stream = secs;
        self
    }

    /// Sets the TCP established timeout in seconds (default 7200).
    pub fn tcp_established_timeout(mut self, secs: u32) -> Self {
        self.cfg.timeouts.tcp_established = secs;
        self
    }

    /// Turns hairpinning on or off (default off; needs EIM).
    pub fn hairpin(mut self, enabled: bool) -> Self {
        self.cfg.hairpin = enabled;
        self
    }

    /// Checks and returns the configuration.
    pub fn build(self) -> Result<NatConfig, NatConfigError> {
        self.cfg.validate()?;
        Ok(self.cfg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn presets_expand_as_upstream_and_map_to_the_rfc_modes() {
        let core = |n: Nat| n.to_config().unwrap().to_core().unwrap().nat;
        assert_eq!(Nat::None.to_config(), None);
        assert_eq!(core(Nat::Open), crate::native::Nat::FullCone);
        assert_eq!(core(Nat::Moderate), crate::native::Nat::PortRestricted);
        assert_eq!(core(Nat::Strict), crate::native::Nat::Symmetric);
        let adf = NatConfig::builder()
            .filtering(NatFiltering::AddressDependent)
            .build()
            .unwrap();
        assert_eq!(
            adf.to_core().unwrap().nat,
            crate::native::Nat::AddressRestricted
        );
        let t = Nat::Moderate
            .to_config()
            .unwrap()
            .to_core()
            .unwrap()
            .conntrack
            .unwrap();
        assert_eq!(t.udp_stream, Duration::from_secs(300));
        assert_eq!(t.tcp_established, Duration::from_secs(7200));
    }

    #[test]
    fn the_builder_refuses_what_cannot_be_built() {
        let e = NatConfig::builder()
            .mapping(NatMapping::EndpointDependent)
            .filtering(NatFiltering::AddressDependent)
            .build()
            .unwrap_err();
        assert_eq!(e, NatConfigError::AdfRequiresEim);
        let e = NatConfig::builder()
            .mapping(NatMapping::EndpointDependent)
            .hairpin(true)
            .build()
            .unwrap_err();
        assert_eq!(e, NatConfigError::HairpinRequiresEim);
        let mut c = NatConfig::builder().hairpin(true).build().unwrap();
        c.mapping = NatMapping::EndpointDependent;
        assert!(c.to_core().is_err(), "a mutated config is checked again");
    }
}
