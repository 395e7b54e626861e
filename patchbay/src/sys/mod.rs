//! The kernel layer: every netlink request, namespace switch, nft and tc
//! invocation, sysctl write and cgroup operation of the library goes through
//! here, and nothing here imports from the layers above it.
//!
//! - [`netns`]: one worker thread per namespace (the only place `setns` runs);
//! - [`netlink`]: links, addresses, routes and neighbours (rtnetlink);
//! - [`cmd`]: the choke point for external commands (`nft`, `tc`, …), which
//!   records argv, namespace and stderr for every failure;
//! - [`nft`], [`tc`]: applying rendered rulesets and qdiscs;
//! - [`sysctl`]: per-namespace `/proc/sys` reads and writes;
//! - [`capture`]: `AF_PACKET` sockets for pcap captures;
//! - [`userns`]: entering a user namespace for labs without root;
//! - [`cgroup`]: the lab's cgroup v2 subtree (process tracking, eBPF attach
//!   point, killing a lab's whole process tree);
//! - [`watchdog`]: kills a process's labs when the process dies (SIGKILL
//!   included).

pub(crate) mod capture;
pub(crate) mod cgroup;
pub(crate) mod cmd;
pub(crate) mod conntrack;
pub(crate) mod linkattr;
pub(crate) mod mountns;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod nft;
pub(crate) mod sandbox;
pub(crate) mod sigint;
#[cfg(feature = "cli")]
pub(crate) mod sockdiag;
pub(crate) mod spawn;
pub(crate) mod sysctl;
pub(crate) mod tc;
pub(crate) mod userns;
pub(crate) mod watchdog;

/// Restores the default SIGPIPE disposition, so that the command line dies
/// quietly on a closed pipe (`patchbay doctor --json | head`) instead of
/// panicking in `println!`.
#[cfg(feature = "cli")]
pub(crate) fn default_sigpipe() {
    // SAFETY: setting a signal disposition has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
