//! The API: upstream patchbay 0.7's shape (n0-computer/patchbay), re-exported at the crate
//! root, so that test files written for upstream compile and run unchanged (through the
//! `patchbay-compat` package, which re-exports exactly upstream's root names; see
//! docs/porting.md), plus patchbay's time modes on [`LabBuilder`] and [`Lab`].
//!
//! It is a translation layer over the crate-private name-based builder (`crate::native`),
//! not a second implementation: ids become node names, upstream's NAT tiers become RFC 4787
//! modes, millisecond link conditions become the builder's, and every operation is the
//! builder's. Upstream's signatures are kept, `anyhow::Result` included. Where the behaviour
//! differs, the item's docs and docs/porting.md say so.
//!
//! Upstream's enums (`Nat`, `Firewall`, `PortPolicy`, `RouterPreset`, ...) are not
//! `#[non_exhaustive]`, as upstream's are not: a test that matches one exhaustively must keep
//! compiling. They change only with the upstream version this API follows.
//!
//! Requirements: root, or a user namespace entered with [`init_userns`] before any thread
//! starts; `nft` and `tc`; netem for delay and loss.

mod device;
mod dns;
mod firewall;
mod iface;
mod ipv6;
mod ix;
mod lab;
mod link;
mod metrics;
mod nat;
mod preset;
mod region;
mod router;
mod runner;
mod shared;
mod sync;

pub use device::{Device, DeviceBuilder, Iface};
pub use firewall::{Firewall, FirewallConfig, FirewallConfigBuilder, PortPolicy};
pub use iface::IfaceConfig;
pub use ipv6::{Ipv6DadMode, Ipv6Profile, Ipv6ProvisioningMode};
pub use ix::Ix;
pub use lab::{Lab, LabBuilder, OutDir, TestGuard};
pub use link::{LinkCondition, LinkDirection};
pub use metrics::MetricsBuilder;
pub use nat::{
    ConntrackTimeouts, Nat, NatConfig, NatConfigBuilder, NatConfigError, NatFiltering, NatMapping,
};
pub use preset::RouterPreset;
pub use region::{DefaultRegions, Region, RegionLink};
pub use router::{Router, RouterBuilder, RouterIface};
pub use runner::ReflectorGuard;
pub use shared::NodeId;

pub use crate::sys::userns::init_userns_for_ctor;
pub use ipnet::Ipv4Net;

/// Upstream's `dns_server` module: the lab DNS server's handle.
pub mod dns_server {
    pub use super::dns::{DnsServer, RecordType};
}

/// Makes an unprivileged process root of its own user namespace, so labs build without
/// root; does nothing when the process is root. Call it before any thread starts (first
/// thing in `main`, or in a `#[ctor]` of a test binary). Idempotent.
pub fn init_userns() -> anyhow::Result<()> {
    // Shared with every later call, so the error sits behind an Arc.
    type Once = Result<(), std::sync::Arc<crate::Error>>;
    static RESULT: std::sync::OnceLock<Once> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| crate::native::init_userns().map_err(std::sync::Arc::new))
        .clone()
        .map_err(anyhow::Error::from)
}

/// Checks that this process may build labs: root, or `CAP_NET_ADMIN`, `CAP_NET_RAW` and
/// `CAP_SYS_ADMIN` in its effective set (as in the user namespace of [`init_userns`]).
pub fn check_caps() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| anyhow::anyhow!("no CapEff in /proc/self/status"))?;
    let eff = u64::from_str_radix(eff.trim(), 16)?;
    let missing: Vec<&str> = [
        ("CAP_NET_ADMIN", 12),
        ("CAP_NET_RAW", 13),
        ("CAP_SYS_ADMIN", 21),
    ]
    .into_iter()
    .filter(|(_, bit)| eff & (1 << bit) == 0)
    .map(|(n, _)| n)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "missing capabilities: {}: run as root, or call patchbay::init_userns() first thing in main",
            missing.join(", ")
        )
    }
}
