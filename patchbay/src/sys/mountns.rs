//! A node's view of the file system: every namespace worker runs in a private mount namespace
//! in which `/proc/net` shows the worker's network namespace, and, once the lab has names or
//! nameservers, `/etc/hosts` and `/etc/resolv.conf` are the node's files.
//!
//! Why: `/proc/net` is a symlink to `self/net`, which resolves to the *thread group leader's*
//! network namespace, not the calling thread's, so a library reading `/proc/net/route` (to find
//! the default interface, e.g. iroh's netwatch) on a node's worker would see the host's. And an
//! in-process resolver (hickory, glibc's `getaddrinfo`) reads `/etc/resolv.conf` and
//! `/etc/hosts` from the calling thread's mount namespace. Threads cloned from the worker
//! (tokio's blocking pool) share its mount namespace, so they see the same view; threads
//! started with [`super::netns::Netns::spawn_thread`] join it with `setns`.
//!
//! Every mount is made in a namespace that was made private (`MS_REC | MS_PRIVATE`) first, so
//! nothing propagates to the host's mount namespace. Requires `CAP_SYS_ADMIN` over the mount
//! namespace (root, or the owner of the process's user namespace), Linux 3.8+.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

/// Why a node's file-system view could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the file-system view of {name}: {step}: {source}")]
pub struct MountError {
    /// The namespace's name.
    pub name: String,
    /// What failed (`unshare(CLONE_NEWNS)`, a mount, `setns`).
    pub step: String,
    /// The errno.
    #[source]
    pub source: nix::Error,
}

fn err(name: &str, step: impl Into<String>) -> impl FnOnce(nix::Error) -> MountError {
    let (name, step) = (name.to_string(), step.into());
    move |source| MountError { name, step, source }
}

/// On a new worker thread (already in its network namespace): a private mount namespace with
/// `/proc/net` bound to this thread's network namespace. Returns the mount namespace's file
/// descriptor, for threads that join it later ([`join`]).
pub(crate) fn private_view(name: &str) -> Result<OwnedFd, MountError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(err(name, "unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err(name, "making / private (MS_REC | MS_PRIVATE)"))?;
    mount(
        Some("/proc/thread-self/net"),
        "/proc/net",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err(name, "binding /proc/thread-self/net over /proc/net"))?;
    std::fs::File::open("/proc/thread-self/ns/mnt")
        .map(OwnedFd::from)
        .map_err(|e| MountError {
            name: name.to_string(),
            step: "opening /proc/thread-self/ns/mnt".into(),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
}

/// On a thread that entered a worker's network namespace: joins the worker's mount namespace
/// (`unshare(CLONE_FS)` first, which `setns(CLONE_NEWNS)` requires of a thread).
pub(crate) fn join(name: &str, mnt: &OwnedFd) -> Result<(), MountError> {
    unshare(CloneFlags::CLONE_FS).map_err(err(name, "unshare(CLONE_FS)"))?;
    setns(mnt, CloneFlags::CLONE_NEWNS).map_err(err(name, "setns(CLONE_NEWNS)"))
}

/// On the worker: binds the node's `hosts` and `resolv.conf` files over `/etc/hosts` and
/// `/etc/resolv.conf` in its private mount namespace. The files are rewritten in place later,
/// so the binds stay valid.
pub(crate) fn bind_names(name: &str, hosts: &Path, resolv: &Path) -> Result<(), MountError> {
    for (src, dst) in [(hosts, "/etc/hosts"), (resolv, "/etc/resolv.conf")] {
        let c = CString::new(src.as_os_str().as_bytes()).map_err(|_| MountError {
            name: name.to_string(),
            step: format!("{} holds a NUL byte", src.display()),
            source: nix::Error::EINVAL,
        })?;
        mount(
            Some(c.as_c_str()),
            dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err(name, format!("binding {} over {dst}", src.display())))?;
    }
    Ok(())
}
