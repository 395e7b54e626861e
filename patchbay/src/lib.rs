//! patchbay: network labs on the real Linux kernel stack.
//!
//! A [`Lab`] is a set of Linux network namespaces wired into routers and
//! devices with veth pairs and bridges. Code under test runs inside them,
//! on the real kernel stack, through [`Node::spawn`], [`Node::run_sync`] and
//! [`Node::spawn_command`].
//!
//! The crate is layered (see `docs/architecture.md`):
//! - **the lab and the time modes** (this module's re-exports, [`vt`],
//!   [`labfile`]) on top, and the devtools web view ([`serve`]);
//! - **kernel-free logic** in the middle: the compression plan ([`compress`]),
//!   scenarios and fidelity checking ([`scenario`]), NAT, firewall and link
//!   models, the address plan;
//! - **one crate-private kernel layer** at the bottom (`sys`: netlink,
//!   namespaces, nft, tc, sysctl, cgroups and the command runner); the eBPF
//!   timer engine ([`bpf`]) is public as the low-level half of compression.
//!
//! The public surface is checked in (`patchbay/public-api.txt`) and compared
//! by `cargo xtask test`.
#![deny(missing_docs)]

mod addr;
pub mod bpf;
#[cfg(feature = "compat")]
pub mod compat;
pub mod compress;
mod dns;
pub mod doctor;
mod error;
mod firewall;
mod invalid;
mod lab;
pub mod labfile;
mod link;
mod nat;
pub mod scenario;
pub mod serve;
mod sys;
pub mod vt;

pub use addr::{AddrError, IpSupport};
pub use bpf::{EventKind, TcpEvent};
pub use dns::{DnsError, DnsRecord, DnsServer, DnsZone};
pub use error::{Error, Result};
pub use firewall::{Firewall, FirewallAction, FirewallPolicy, OutboundPolicy, PortPolicy};
pub use invalid::{InvalidLab, InvalidReason};
pub use lab::{
    CaptureGuard, Device, DeviceBuilder, Direction, Exchange, FaultGuard, Iface, Lab, LabClock,
    LabEvent, LabOpts, NatBehavior, NatFiltering, NatMapping, Node, NodeKind, Reflector, Region,
    Router, RouterBuilder, TimeMode,
};
pub use link::{LinkCondition, LinkError, LinkTiming, Preset};
pub use nat::{
    ConntrackTimeouts, Nat, NatConfig, NatV6Mode, RouterPreset, nat64_embed, nat64_extract,
};
pub use sys::cgroup::CgroupError;
pub use sys::cmd::CmdError;
pub use sys::conntrack::CtFlushError;
pub use sys::netlink::NetlinkError;
pub use sys::netns::{NetnsError, Task, ThreadTask};
pub use sys::nft::NftError;
pub use sys::sysctl::SysctlError;
pub use sys::tc::TcError;
pub use sys::userns::{UsernsError, init_userns};
