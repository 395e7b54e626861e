//! patchbay: network labs on the real Linux kernel stack.
//!
//! A [`Lab`] is a set of Linux network namespaces wired into routers and
//! devices with veth pairs and bridges. Code under test runs inside them,
//! on the real kernel stack, through [`Node::spawn`], [`Node::run_sync`] and
//! [`Node::spawn_command`].
//!
//! The crate is layered (see `docs/architecture.md`):
//! - **the lab and the time modes** (this module's re-exports, [`vt`],
//!   [`labfile`]) on top; the command line (`cli`, feature `cli`, on by
//!   default: `patchbay::cli::main` is the binary) with what only it needs
//!   (scenario bench, SVG, the devtools web view, doctor's printing), all
//!   crate-private;
//! - **kernel-free logic** in the middle: the compression plan ([`compress`]),
//!   scenarios and fidelity checking, NAT, firewall and link models, the
//!   address plan;
//! - **one crate-private kernel layer** at the bottom (`sys`: netlink,
//!   namespaces, nft, tc, sysctl, cgroups and the command runner); the eBPF
//!   timer engine (`bpf`) is crate-private too.
//!
//! The public surface is checked in (`patchbay/public-api.txt`) and compared
//! by `cargo xtask test`.
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
#[cfg(feature = "compat")]
pub mod compat;
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub mod compress;
mod dns;
internal! {
    #[cfg(feature = "cli")]
    pub mod doctor;
}
mod error;
mod firewall;
mod invalid;
mod kernel_error;
mod lab;
pub mod labfile;
mod link;
mod nat;
internal! {
    #[cfg(feature = "cli")]
    pub mod scenario;
}
internal! {
    #[cfg(feature = "cli")]
    pub mod serve;
}
mod sys;
mod task;
pub mod vt;

pub use addr::{AddrError, IpSupport};
pub use bpf::{EventKind, TcpEvent};
pub use dns::{DnsError, DnsRecord, DnsServer, DnsZone};
pub use error::{Error, Result};
pub use firewall::{Firewall, FirewallAction, FirewallPolicy, OutboundPolicy, PortPolicy};
pub use invalid::{InvalidLab, InvalidReason};
pub use kernel_error::{KernelError, Subsystem};
pub use lab::{
    CaptureGuard, Device, DeviceBuilder, Direction, Exchange, FaultGuard, Iface, Lab, LabClock,
    LabEvent, LabOpts, NatBehavior, NatFiltering, NatMapping, Node, NodeKind, Reflector, Region,
    Router, RouterBuilder, TimeMode,
};
pub use link::{LinkCondition, LinkError, Preset};
// The timing half of a link condition, as the compression plan scales it.
pub(crate) use link::LinkTiming;
pub use nat::{
    ConntrackTimeouts, Nat, NatConfig, NatV6Mode, RouterPreset, nat64_embed, nat64_extract,
};

/// Makes an unprivileged process root of a fresh user namespace (uid and
/// gid 0 inside map to the caller's own ids outside), so labs without
/// compression build and run without root. Does nothing when the process
/// is already root (effective uid 0). Must be called while the process has
/// one thread, first thing in `main` (see `docs/unprivileged.md`).
///
/// What changes: `getuid()` reports 0; files the process creates belong to
/// the caller outside; the process can no longer use host privileges it
/// did not have anyway. Compression at k > 1 needs eBPF in the initial user
/// namespace and is refused unless `LabOpts::sysctl_only(true)`.
///
/// Needs unprivileged user namespaces (`kernel.unprivileged_userns_clone`,
/// Linux 3.8+). A failure is an [`Error::Kernel`] of
/// [`Subsystem::UserNamespace`].
pub fn init_userns() -> Result<()> {
    Ok(sys::userns::init_userns()?)
}
pub use task::{Task, TaskError, ThreadTask};
