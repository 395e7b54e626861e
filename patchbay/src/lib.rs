//! patchbay: network labs on the real Linux kernel stack, in real, compressed or
//! virtual time.
//!
//! A [`Lab`] is a set of Linux network namespaces wired into routers and devices with
//! veth pairs and bridges. Code under test runs inside them, on the real kernel stack,
//! through [`Device::spawn`], [`Device::run_sync`] and [`Device::spawn_command`].
//!
//! The API has the shape of upstream patchbay 0.7 (n0-computer/patchbay), so that its
//! users' tests compile unchanged (with the `patchbay-compat` package, which re-exports
//! exactly upstream's names; docs/porting.md), plus patchbay's time modes:
//! [`LabBuilder::time_mode`] with [`TimeMode`], the lab's [`LabClock`] and its
//! [`compress::CompressionReport`]. [`vt`] runs a test binary in the time-travel guest,
//! [`labfile`] loads and runs TOML labs.
//!
//! ```no_run
//! use patchbay::{Lab, Nat, TimeMode};
//! # async fn demo() -> anyhow::Result<()> {
//! let lab = Lab::builder().time_mode(TimeMode::compressed(10.0)?).build().await?;
//! let isp = lab.add_router("isp").build().await?;
//! let home = lab.add_router("home").upstream(isp.id()).nat(Nat::Moderate).build().await?;
//! let laptop = lab.add_device("laptop").iface("eth0", home.id()).build().await?;
//! let server = lab.add_device("server").iface("eth0", isp.id()).build().await?;
//! let addr = server.ip().expect("server has an address");
//! let refused = laptop
//!     .spawn(move |_| async move { tokio::net::TcpStream::connect((addr, 80)).await.is_err() })?
//!     .await?;
//! # let _ = refused; Ok(()) }
//! ```
//!
//! Requirements: root (or [`init_userns`] for labs in real time), Linux 5.10+ with
//! network namespaces, veth and bridges, `nft` and `tc`; compression needs cgroup v2 and
//! eBPF `sock_ops` (Linux 5.15+), virtual time patchbay's UML kernel
//! (`cargo xtask build-uml`).
//!
//! The crate is layered (see `docs/architecture.md`): this API and the time modes on
//! top, over the name-based builder it translates to (crate-private; `native` with the
//! workspace-only feature `internals`) and the command line (`cli`, default feature);
//! kernel-free logic in the middle (the compression plan, scenarios and fidelity, NAT,
//! firewall and link models); one crate-private kernel layer at the bottom (`sys`:
//! netlink, namespaces, nft, tc, sysctl, cgroups; the eBPF engine in `bpf`).
//!
//! The public surface is checked in (`patchbay/public-api.txt`) and compared by
//! `cargo xtask test`.
#![deny(missing_docs)]

/// Declares items that are public with the feature `internals` and
/// crate-private otherwise. `internals` exists for this workspace's own
/// integration tests (`tests/`), which drive crate-private machinery (the
/// eBPF engine, the scenario bench, the web view) on the real kernel; it is
/// not part of the API and `cargo xtask public-api` lists the crate without
/// it. A module or re-export declared here is reachable from the command
/// line (`cli`) and the tests only.
macro_rules! internal {
    ($(#[$attr:meta])* pub mod $name:ident;) => {
        #[cfg(feature = "internals")]
        $(#[$attr])*
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        $(#[$attr])*
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    };
    (pub use $($path:tt)*) => {
        #[cfg(feature = "internals")]
        pub use $($path)*
        #[cfg(not(feature = "internals"))]
        #[allow(unused_imports)]
        pub(crate) use $($path)*
    };
}

mod addr;
internal! {
    pub mod bpf;
}
#[cfg(feature = "cli")]
pub mod cli;
mod compat;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub mod compress;
// The builder's modules (dns, firewall, lab, link, nat, sys, task) hold parts that only
// `native` callers reach (tests, with `internals`): dead code is allowed without it.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod dns;
internal! {
    #[cfg(feature = "cli")]
    pub mod doctor;
}
mod error;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod firewall;
mod invalid;
mod kernel_error;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod lab;
pub mod labfile;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod link;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod nat;
internal! {
    pub mod native;
}
internal! {
    #[cfg(feature = "cli")]
    pub mod scenario;
}
internal! {
    #[cfg(feature = "cli")]
    pub mod serve;
}
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod sys;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
mod task;
pub mod vt;

// The API: upstream patchbay 0.7's shape (see `compat`), with the time modes.
pub use addr::IpSupport;
pub use compat::{
    ConntrackTimeouts, DefaultRegions, Device, DeviceBuilder, Firewall, FirewallConfig,
    FirewallConfigBuilder, Iface, IfaceConfig, Ipv4Net, Ipv6DadMode, Ipv6Profile,
    Ipv6ProvisioningMode, Ix, Lab, LabBuilder, LinkCondition, LinkDirection, MetricsBuilder, Nat,
    NatConfig, NatConfigBuilder, NatConfigError, NatFiltering, NatMapping, NodeId, OutDir,
    PortPolicy, ReflectorGuard, Region, RegionLink, Router, RouterBuilder, RouterIface,
    RouterPreset, TestGuard, check_caps, dns_server, init_userns, init_userns_for_ctor,
};
pub use error::{Error, Result};
pub use invalid::{InvalidLab, InvalidReason};
pub use kernel_error::{KernelError, Subsystem};
pub use lab::{LabClock, TimeMode};
pub use nat::NatV6Mode;

// The crate's own code names the builder's other types from the root.
#[allow(unused_imports)]
pub(crate) use native::{
    AddrError, CaptureGuard, Direction, DnsError, DnsRecord, DnsZone, EventKind, Exchange,
    FaultGuard, FirewallAction, FirewallPolicy, LabEvent, LabOpts, LinkError, NatBehavior, Node,
    NodeKind, OutboundPolicy, Preset, Reflector, Task, TaskError, TcpEvent, ThreadTask,
    nat64_embed, nat64_extract,
};
// The timing half of a link condition, as the compression plan scales it.
pub(crate) use link::LinkTiming;
