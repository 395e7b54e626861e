//! Upstream patchbay 0.7's API, on the patchbay core. Depend on it under upstream's name:
//!
//! ```toml
//! [dev-dependencies]
//! patchbay = { package = "patchbay-compat", path = "../patchbay/patchbay/compat" }
//! ```
//!
//! and `use patchbay::{Lab, Nat, ...}` works unchanged. The core crate's API has
//! upstream's shape already; this package re-exports exactly upstream 0.7's root names
//! (not the core's additions, such as its `Result`, which a glob import would otherwise
//! bring into a test file), and builds the core without its command line. See
//! docs/porting.md for what differs from upstream.
#![deny(missing_docs)]

pub use patchbay_core::dns_server::DnsServer;
pub use patchbay_core::{
    ConntrackTimeouts, DefaultRegions, Device, DeviceBuilder, Firewall, FirewallConfig,
    FirewallConfigBuilder, Iface, IfaceConfig, IpSupport, Ipv4Net, Ipv6DadMode, Ipv6Profile,
    Ipv6ProvisioningMode, Ix, Lab, LabBuilder, LinkCondition, LinkDirection, MetricsBuilder, Nat,
    NatConfig, NatConfigBuilder, NatConfigError, NatFiltering, NatMapping, NatV6Mode, NodeId,
    OutDir, PortPolicy, ReflectorGuard, Region, RegionLink, Router, RouterBuilder, RouterIface,
    RouterPreset, TestGuard, check_caps, dns_server, init_userns, init_userns_for_ctor,
};
