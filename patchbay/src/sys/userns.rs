//! Labs without root: entering a user namespace in which this process is
//! root, so it may create network namespaces, veths, nft tables and
//! per-namespace sysctls that all belong to namespaces it owns.
//!
//! `unshare(CLONE_NEWUSER)` only works in a single-threaded process, so
//! [`init_userns`] must run before any thread starts: first thing in
//! `main`, or from an ELF constructor (`.init_array`) in test binaries,
//! before libtest and tokio start their threads.
//!
//! Requires unprivileged user namespaces (a positive
//! `/proc/sys/user/max_user_namespaces`; some distributions also gate them
//! with `kernel.unprivileged_userns_clone` or AppArmor), Linux 3.8+.

use std::sync::atomic::{AtomicBool, Ordering};

static IN_USERNS: AtomicBool = AtomicBool::new(false);

/// Why a user namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The process already runs more than one thread.
    #[error(
        "init_userns must run before any thread starts, but this process has {threads} threads: call it first thing in main() (before building a tokio runtime), or from a constructor in a test binary (see docs/unprivileged.md)"
    )]
    Threaded {
        /// Threads counted in /proc/self/status.
        threads: usize,
    },
    /// The kernel refused `unshare(CLONE_NEWUSER)`.
    #[error(
        "unshare(CLONE_NEWUSER) failed: {0}; unprivileged user namespaces may be disabled (check /proc/sys/user/max_user_namespaces, kernel.unprivileged_userns_clone, or AppArmor's restrict_unprivileged_userns)"
    )]
    Unshare(#[source] nix::Error),
    /// Writing the uid/gid maps failed.
    #[error("cannot write {path}: {source}")]
    Map {
        /// The /proc file.
        path: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Whether this process entered a user namespace through [`init_userns`].
pub fn in_userns() -> bool {
    IN_USERNS.load(Ordering::Relaxed)
}

/// Makes an unprivileged process root of a fresh user namespace (uid and
/// gid 0 inside map to the caller's own ids outside), so labs without
/// compression build and run without root. Does nothing when the process
/// is already root (effective uid 0). Must be called while the process has
/// one thread (see the module docs and `docs/unprivileged.md`).
///
/// What changes: `getuid()` reports 0; files the process creates belong to
/// the caller outside; the process can no longer use host privileges it
/// did not have anyway. Compression at k > 1 needs eBPF in the initial user
/// namespace and is refused unless `LabOpts::sysctl_only(true)`.
pub fn init_userns() -> Result<(), UsernsError> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return Ok(());
    }
    let n = threads();
    if n > 1 {
        return Err(UsernsError::Threaded { threads: n });
    }
    let gid = nix::unistd::getegid();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(UsernsError::Unshare)?;
    let write = |path: &'static str, text: String| {
        std::fs::write(path, text).map_err(|source| UsernsError::Map { path, source })
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1\n"))?;
    IN_USERNS.store(true, Ordering::Relaxed);
    Ok(())
}

/// [`init_userns`] for an ELF constructor, as upstream patchbay 0.7 has it (the `compat`
/// layer's `init_userns_for_ctor`); a failure is printed on stderr and reported again by
/// the next lab.
///
/// # Safety
/// Call it only from a single-threaded constructor (`#[ctor::ctor]`), as upstream requires.
pub unsafe fn init_userns_for_ctor() {
    if let Err(e) = init_userns() {
        eprintln!("patchbay: {e}");
    }
}
