//! The name-based builder the crate is built on (feature `internals`; not part of the API).
//!
//! The public API is upstream patchbay 0.7's shape at the crate root, translated onto
//! these types; the lab-file runner, the command line and this workspace's integration
//! tests use them directly. Everything here keeps the kernel requirements its own docs
//! state.

pub use crate::addr::{AddrError, IpSupport};
pub use crate::bpf::{EventKind, TcpEvent};
pub use crate::dns::{DnsError, DnsRecord, DnsServer, DnsZone};
pub use crate::error::{Error, Result};
pub use crate::firewall::{Firewall, FirewallAction, FirewallPolicy, OutboundPolicy, PortPolicy};
pub use crate::invalid::{InvalidLab, InvalidReason};
pub use crate::kernel_error::{KernelError, Subsystem};
pub use crate::lab::{
    CaptureGuard, Device, DeviceBuilder, Direction, Exchange, FaultGuard, Iface, Lab, LabClock,
    LabEvent, LabOpts, NatBehavior, NatFiltering, NatMapping, Node, NodeKind, Reflector, Region,
    Router, RouterBuilder, TimeMode,
};
pub use crate::link::{LinkCondition, LinkError, Preset};
pub use crate::nat::{
    ConntrackTimeouts, Nat, NatConfig, NatV6Mode, RouterPreset, nat64_embed, nat64_extract,
};
pub use crate::task::{Task, TaskError, ThreadTask};

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
    Ok(crate::sys::userns::init_userns()?)
}
