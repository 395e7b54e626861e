//! The kernel layer's failures as one public type, [`KernelError`]: which subsystem, which
//! operation, in which namespace. The layer's own error types stay private behind it.

use crate::sys::cgroup::CgroupError;
use crate::sys::cmd::CmdError;
use crate::sys::conntrack::CtFlushError;
use crate::sys::netlink::NetlinkError;
use crate::sys::netns::NetnsError;
use crate::sys::nft::NftError;
use crate::sys::sysctl::SysctlError;
use crate::sys::userns::UsernsError;

/// The part of the kernel a [`KernelError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subsystem {
    /// rtnetlink: links, addresses, routes, neighbours.
    Netlink,
    /// A namespace's worker thread (`unshare`, `setns`, mounts).
    Namespace,
    /// An external command (`nft`, `tc`, …).
    Command,
    /// An nft ruleset.
    Nft,
    /// A `/proc/sys` key in a namespace.
    Sysctl,
    /// The lab's cgroup v2 subtree.
    Cgroup,
    /// Flushing conntrack state (netlink).
    Conntrack,
    /// Entering a user namespace ([`crate::native::init_userns`]).
    UserNamespace,
}

/// A failure of the kernel layer, with the failing operation and the
/// namespace it ran in. Its `Display` is the full message (what ran, where,
/// and what the kernel or tool said); [`std::error::Error::source`] gives the
/// underlying I/O or OS error where there is one.
///
/// The kernel layer's own error types are private: match on
/// [`KernelError::subsystem`] and read [`KernelError::operation`] and
/// [`KernelError::namespace`] instead.
#[derive(Debug)]
pub struct KernelError {
    subsystem: Subsystem,
    operation: String,
    namespace: Option<String>,
    /// What patchbay was doing, when the call site said (netlink requests).
    context: Option<String>,
    inner: Box<SysError>,
}

/// The kernel layer's errors, kept private behind [`KernelError`].
#[derive(Debug, thiserror::Error)]
enum SysError {
    #[error(transparent)]
    Netlink(NetlinkError),
    #[error(transparent)]
    Netns(NetnsError),
    #[error(transparent)]
    Cmd(CmdError),
    #[error(transparent)]
    Nft(NftError),
    #[error(transparent)]
    Sysctl(SysctlError),
    #[error(transparent)]
    Cgroup(CgroupError),
    #[error(transparent)]
    CtFlush(CtFlushError),
    #[error(transparent)]
    Userns(UsernsError),
}

impl KernelError {
    /// The part of the kernel that failed.
    pub fn subsystem(&self) -> Subsystem {
        self.subsystem
    }

    /// What was attempted: the netlink request, the command line, the
    /// sysctl key, the cgroup path.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The namespace (node) it ran in, when it ran in one.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn new(inner: SysError, context: Option<String>) -> Self {
        let (subsystem, operation, namespace) = describe(&inner);
        Self {
            subsystem,
            operation,
            namespace,
            context,
            inner: Box::new(inner),
        }
    }
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.context {
            write!(f, "{c}: ")?;
        }
        write!(f, "{}", self.inner)
    }
}

impl std::error::Error for KernelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The inner error is transparent: its message is already ours.
        std::error::Error::source(&*self.inner)
    }
}

/// (subsystem, operation, namespace) of a kernel-layer error.
fn describe(e: &SysError) -> (Subsystem, String, Option<String>) {
    match e {
        SysError::Netlink(e) => (Subsystem::Netlink, netlink_op(e), None),
        SysError::Netns(e) => netns_op(e),
        SysError::Cmd(e) => cmd_op(e),
        SysError::Nft(NftError::Rejected { what, ns, .. }) => (
            Subsystem::Nft,
            format!("apply the {what} ruleset"),
            Some(ns.clone()),
        ),
        SysError::Nft(NftError::Cmd { source, .. }) => cmd_op(source),
        SysError::Sysctl(SysctlError::Missing { key, ns }) => {
            (Subsystem::Sysctl, format!("read {key}"), Some(ns.clone()))
        }
        SysError::Sysctl(SysctlError::Io { op, key, ns, .. }) => {
            (Subsystem::Sysctl, format!("{op} {key}"), Some(ns.clone()))
        }
        SysError::Sysctl(SysctlError::Netns(n)) => netns_op(n),
        SysError::Cgroup(CgroupError::Io { op, path, .. }) => {
            (Subsystem::Cgroup, format!("{op} {}", path.display()), None)
        }
        SysError::Cgroup(_) => (Subsystem::Cgroup, "find the cgroup2 mount".into(), None),
        SysError::CtFlush(CtFlushError::Io { ns, op, .. }) => {
            (Subsystem::Conntrack, (*op).to_string(), Some(ns.clone()))
        }
        SysError::CtFlush(CtFlushError::Refused { ns, .. }) => {
            (Subsystem::Conntrack, "flush".into(), Some(ns.clone()))
        }
        SysError::CtFlush(CtFlushError::Netns(n)) => netns_op(n),
        SysError::Userns(_) => (
            Subsystem::UserNamespace,
            "enter a user namespace".into(),
            None,
        ),
    }
}

fn netlink_op(e: &NetlinkError) -> String {
    match e {
        NetlinkError::Request { op, .. } => op.clone(),
        NetlinkError::NoSuchLink(name) => format!("find link {name}"),
        _ => "open a netlink socket".into(),
    }
}

fn netns_op(e: &NetnsError) -> (Subsystem, String, Option<String>) {
    let (op, name) = match e {
        NetnsError::Unshare { name, .. } => ("unshare(CLONE_NEWNET)", Some(name)),
        NetnsError::OpenNs { name, .. } => ("open the namespace file", Some(name)),
        NetnsError::Thread { name, .. } => ("start the worker thread", Some(name)),
        NetnsError::Setns { name, .. } => ("setns(CLONE_NEWNET)", Some(name)),
        NetnsError::Mount(m) => {
            return (Subsystem::Namespace, m.step.clone(), Some(m.name.clone()));
        }
        _ => ("run on the namespace worker", None),
    };
    (Subsystem::Namespace, op.into(), name.cloned())
}

fn cmd_op(e: &CmdError) -> (Subsystem, String, Option<String>) {
    match e {
        CmdError::NotFound { argv, ns, .. }
        | CmdError::Spawn { argv, ns, .. }
        | CmdError::Failed { argv, ns, .. } => (Subsystem::Command, argv.clone(), Some(ns.clone())),
        CmdError::Netns(n) => netns_op(n),
    }
}

macro_rules! from_sys {
    ($($ty:ident => $variant:ident),* $(,)?) => {$(
        impl From<$ty> for KernelError {
            fn from(e: $ty) -> Self {
                KernelError::new(SysError::$variant(e), None)
            }
        }
    )*};
}

from_sys!(
    NetlinkError => Netlink,
    NetnsError => Netns,
    CmdError => Cmd,
    NftError => Nft,
    SysctlError => Sysctl,
    CgroupError => Cgroup,
    CtFlushError => CtFlush,
    UsernsError => Userns,
);

impl KernelError {
    /// A failed netlink request, with what patchbay was doing.
    pub(crate) fn netlink(context: String, source: NetlinkError) -> Self {
        KernelError::new(SysError::Netlink(source), Some(context))
    }
}
