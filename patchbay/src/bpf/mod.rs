//! eBPF timer-compression engine: loads patchbay's committed eBPF object, attaches it to a
//! per-process cgroup v2 child, and exposes per-namespace registration, telemetry and stats.
//!
//! # Kernel requirements
//! * cgroup v2 mounted somewhere (found via `/proc/self/mountinfo`), `CAP_BPF` +
//!   `CAP_NET_ADMIN` (or `CAP_SYS_ADMIN`) and write access to the process's cgroup.
//! * `sock_ops` with `bpf_get_netns_cookie`: Linux 5.15. `BPF_SOCK_OPS_TIMEOUT_INIT`: 4.13,
//!   `RTO_CB`: 4.16, `TCP_BPF_RTO_MIN`/`TCP_BPF_DELACK_MAX`: 5.10, `TCP_RTO_MAX_MS`: 6.15.
//! * Ring buffer: 5.8. `cgroup/setsockopt`: 5.3; socket storage from it: 5.3.
//!
//! Use [`probe`] to learn what the running kernel accepts; see `docs/ebpf.md` for the programs,
//! maps and event format.

mod engine;
mod events;
mod probe;
mod stats;

use std::{io, os::fd::AsRawFd, path::PathBuf};

pub use engine::{Engine, Registration};
pub use events::{EventKind, EventStream, TcpEvent};
pub use patchbay_ebpf_common::{FLAG_SCALE_SOCKOPTS, FLAG_TELEMETRY, NetnsConfig};
pub use probe::{BpfCaps, probe};
pub use stats::{AppSockopt, BpfSockopt, OptionStats, Stats};

/// The eBPF object built by `cargo xtask build-ebpf` from `patchbay-ebpf/` (committed).
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!("patchbay.bpf.o");

/// Errors of the eBPF engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// The process cgroup (`patchbay.<pid>.<starttime>`) could not be set up.
    #[error("setting up this process's cgroup for the eBPF engine: {0}")]
    Cgroup(#[source] crate::sys::cgroup::CgroupError),
    /// Opening the process cgroup directory for attaching failed.
    #[error("opening cgroup {path} to attach programs: {source}")]
    CgroupOpen {
        /// The cgroup directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Loading the eBPF object (maps, BTF, relocations) failed.
    #[error("loading the eBPF object (needs CAP_BPF/CAP_SYS_ADMIN and kernel 5.15+): {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program was not found in the object.
    #[error(
        "the eBPF object has no program or map named {0}; rebuild with `cargo xtask build-ebpf`"
    )]
    Missing(&'static str),
    /// Loading (verifying) or attaching a program failed.
    #[error("{op} program {name}: {source}")]
    Program {
        /// What was attempted (`load`, `attach to <cgroup>`).
        op: String,
        /// Program name.
        name: &'static str,
        /// What aya/the kernel said.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("{op} on map {name}: {source}")]
    Map {
        /// What was attempted.
        op: String,
        /// Map name.
        name: &'static str,
        /// What aya/the kernel said.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The namespace is already registered with the engine.
    #[error("network namespace cookie {0} is already registered; drop the old Registration first")]
    AlreadyRegistered(u64),
    /// The configuration is invalid.
    #[error("invalid eBPF namespace config: {0}")]
    InvalidConfig(String),
    /// Another I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl BpfError {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the calling thread's network namespace: `getsockopt(SO_NETNS_COOKIE)` on a
/// socket created here. This is the key the eBPF programs use (`bpf_get_netns_cookie`).
///
/// Requires Linux 5.14+. Call it from the thread that has entered the namespace.
pub fn netns_cookie_of_current_thread() -> io::Result<u64> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie/len point to valid storage of the advertised size.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
