//! Upstream's IPv6 settings, accepted for compatibility.

use serde::Deserialize;

/// IPv6 duplicate address detection (accepted for upstream compatibility: addresses are
/// usable at once here either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ipv6DadMode {
    /// Kernel default.
    Enabled,
    /// Off (upstream's default).
    #[default]
    Disabled,
}

/// How IPv6 routes are provisioned (accepted for upstream compatibility: always static
/// here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ipv6ProvisioningMode {
    /// Routes installed at build time.
    #[default]
    Static,
    /// Router-advertisement driven (not modelled here: routes stay static).
    RaDriven,
}

/// Upstream's IPv6 profiles (accepted; see [`Ipv6ProvisioningMode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ipv6Profile {
    /// DAD off, static routes.
    Deterministic,
    /// DAD on, RA-driven routes.
    Realistic,
}
