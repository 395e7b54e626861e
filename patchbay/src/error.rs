//! The library's top-level error type.

use crate::addr::AddrError;
use crate::invalid::{InvalidLab, InvalidReason};
use crate::kernel_error::KernelError;
use crate::link::LinkError;
use crate::sys::cgroup::CgroupError;
use crate::sys::cmd::CmdError;
use crate::sys::conntrack::CtFlushError;
use crate::sys::netlink::NetlinkError;
use crate::sys::netns::NetnsError;
use crate::sys::nft::NftError;
use crate::sys::sysctl::SysctlError;
use crate::sys::tc::TcError;
use crate::sys::userns::UsernsError;
use crate::task::TaskError;

/// Any error of the patchbay library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lab description or request is invalid (caught before touching
    /// the kernel): which node, which field, why.
    #[error("invalid lab: {0}")]
    Invalid(#[from] InvalidLab),
    /// A time scale outside 1 ≤ k ≤ [`crate::compress::MAX_TIME_SCALE`].
    #[error(transparent)]
    TimeScale(#[from] crate::compress::ScaleError),
    /// This process lacks a privilege patchbay needs.
    #[error("{0}")]
    Privilege(String),
    /// The kernel lacks a feature patchbay needs.
    #[error("missing kernel feature: {feature}: {hint}")]
    KernelFeature {
        /// The feature (e.g. `CONFIG_NET_SCH_NETEM`).
        feature: String,
        /// What to do about it.
        hint: String,
    },
    /// Address-pool exhaustion.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// The kernel layer failed: a netlink request, a namespace worker, an
    /// nft or tc invocation, a sysctl, cgroup or conntrack operation. The
    /// [`KernelError`] names the operation and the namespace.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A task spawned on a node gave no value (aborted, its node gone, or
    /// it panicked).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// An invalid link condition.
    #[error("invalid link condition: {0}")]
    Link(#[from] LinkError),
    /// Spawning a process in a node failed.
    #[error("cannot spawn `{program}` in node {node}: {source}")]
    Spawn {
        /// Program.
        program: String,
        /// Node name.
        node: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        /// What patchbay was doing.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Invalid`] about `field`.
    pub(crate) fn invalid(
        field: &'static str,
        reason: InvalidReason,
        message: impl Into<String>,
    ) -> Error {
        Error::Invalid(InvalidLab::new(field, reason, message))
    }

    /// An [`Error::Invalid`] about `field` of `node`.
    pub(crate) fn invalid_node(
        node: impl Into<String>,
        field: &'static str,
        reason: InvalidReason,
        message: impl Into<String>,
    ) -> Error {
        Error::Invalid(InvalidLab::new(field, reason, message).node(node))
    }
}

macro_rules! from_sys {
    ($($ty:ident),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::Kernel(e.into())
            }
        }
    )*};
}

from_sys!(
    NetlinkError,
    NetnsError,
    CmdError,
    NftError,
    SysctlError,
    CgroupError,
    CtFlushError,
    UsernsError,
);

impl Error {
    /// A failed netlink request, with what patchbay was doing.
    pub(crate) fn netlink(context: String, source: NetlinkError) -> Self {
        Error::Kernel(KernelError::netlink(context, source))
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait NetlinkContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> NetlinkContext<T> for std::result::Result<T, NetlinkError> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::netlink(context(), source))
    }
}

impl From<TcError> for Error {
    fn from(e: TcError) -> Error {
        match e {
            TcError::MissingQdisc {
                kind: "netem",
                argv,
                ..
            } => Error::KernelFeature {
                feature: "CONFIG_NET_SCH_NETEM (tc netem)".into(),
                hint: format!(
                    "`{argv}` failed: this kernel has no netem qdisc, so delay, jitter, loss, duplication and reordering are unavailable (rate limits alone still work via tbf); use a kernel with CONFIG_NET_SCH_NETEM=y or the netem module loaded"
                ),
            },
            TcError::MissingQdisc { config, argv, .. } => Error::KernelFeature {
                feature: config.into(),
                hint: format!("`{argv}` failed: enable {config} in the kernel"),
            },
            TcError::Cmd(c) => c.into(),
        }
    }
}
