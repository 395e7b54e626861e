//! What a process spawned in a lab does between `fork` and `exec` (the crate's one
//! `pre_exec`): die with its parent (`PR_SET_PDEATHSIG`), join the lab's cgroup, and, when
//! the lab has names, see the node's `/etc/hosts` and `/etc/resolv.conf` in a private mount
//! namespace. Only async-signal-safe syscalls on memory prepared before `fork`.
//!
//! Requires Linux 2.1.57+ for `PR_SET_PDEATHSIG`; the name overlay needs `CAP_SYS_ADMIN`
//! over the mount namespace (root, or the owner of the process's user namespace).

use std::ffi::CString;
use std::os::unix::process::CommandExt;

/// The files a spawned process sees at `/etc/hosts` and `/etc/resolv.conf`, as C strings
/// prepared before `fork`.
#[derive(Debug, Clone)]
pub(crate) struct NameOverlay {
    pub hosts: CString,
    pub resolv: CString,
}

/// How a spawned process is set up in the child.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChildSetup {
    /// The lab cgroup's `cgroup.procs` file.
    pub cgroup_procs: Option<CString>,
    /// The node's name files.
    pub names: Option<NameOverlay>,
}

/// Installs the set-up in `cmd`.
pub(crate) fn prepare(cmd: &mut std::process::Command, setup: ChildSetup) {
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl, open, write, close,
    // unshare, mount) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            die_with_parent_in_cgroup(setup.cgroup_procs.as_ref())?;
            match &setup.names {
                Some(o) => enter_overlay(o),
                None => Ok(()),
            }
        });
    }
}

fn die_with_parent_in_cgroup(cgroup_procs: Option<&CString>) -> std::io::Result<()> {
    // SAFETY: plain syscalls on valid pointers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(path) = cgroup_procs {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                // Joining the lab cgroup lets the lab kill grandchildren too; if it fails
                // the PDEATHSIG above still covers this child.
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// A private mount namespace with the node's files over `/etc/hosts` and
/// `/etc/resolv.conf`; nothing mounted here propagates back to the host.
fn enter_overlay(o: &NameOverlay) -> std::io::Result<()> {
    // SAFETY: plain syscalls with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        for (src, dst) in [
            (o.hosts.as_ptr(), c"/etc/hosts".as_ptr()),
            (o.resolv.as_ptr(), c"/etc/resolv.conf".as_ptr()),
        ] {
            if libc::mount(src, dst, std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
