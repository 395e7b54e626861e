//! patchbay: network labs on the real Linux kernel stack.
//!
//! A [`Lab`] is a set of Linux network namespaces wired into routers and
//! devices with veth pairs and bridges. Code under test runs inside them,
//! on the real kernel stack, through [`Node::spawn`], [`Node::run_sync`] and
//! [`Node::spawn_command`].
#![deny(missing_docs)]

pub mod addr;
pub mod bpf;
pub mod cgroup;
pub mod cmd;
pub mod doctor;
mod error;
pub mod firewall;
mod lab;
pub mod labfile;
pub mod link;
pub mod nat;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod scenario;
pub mod sysctl;
pub mod tc;

pub use error::{Error, Result};
pub use firewall::{Firewall, FirewallAction, FirewallPolicy};
pub use lab::{
    Device, DeviceBuilder, Iface, Lab, LabClock, LabEvent, LabOpts, Node, NodeKind, Router,
    RouterBuilder,
};
pub use lab::{Direction, FaultGuard};
pub use link::{LinkCondition, LinkTiming, Preset};
pub use nat::{ConntrackTimeouts, Nat, NatConfig};

pub mod compress;
pub mod vt;
