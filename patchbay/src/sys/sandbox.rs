//! The child side of the User-Mode-Linux runner (`vt`): what runs between fork and exec,
//! with raw, async-signal-safe syscalls only and no allocation. Unprivileged callers first
//! enter a user namespace in which they are root; then the child gets a private mount
//! namespace with a read-only root, the writable paths bound back read-write, an alias
//! directory and a fresh tmpfs for UML's memory file.
//!
//! The `unsafe` of this set-up lives here, behind [`install`], which only takes data
//! prepared before the fork.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The id maps of a user namespace in which the caller is root (`/proc/self/uid_map` and
/// `gid_map` contents).
#[derive(Debug, Clone)]
pub(crate) struct UsernsMaps {
    /// `uid_map` contents, e.g. `0 1000 1`.
    pub uid_map: Vec<u8>,
    /// `gid_map` contents.
    pub gid_map: Vec<u8>,
}

/// What the child sets up before exec, prepared (paths as C strings) before the fork.
#[derive(Debug)]
pub(crate) struct ChildSandbox {
    /// `(source, target)` of a recursive bind mount.
    pub alias: (CString, CString),
    /// Paths that stay writable under the read-only root.
    pub writable: Vec<CString>,
    /// An empty directory that gets a fresh tmpfs.
    pub mem_dir: CString,
    /// A user namespace to enter first (unprivileged callers).
    pub userns: Option<UsernsMaps>,
    /// The one host CPU of the child and everything it starts (`vt::cpu`).
    pub cpu: Option<usize>,
}

/// Makes the child of `cmd` enter `sb` between fork and exec.
pub(crate) fn install(cmd: &mut Command, sb: ChildSandbox) {
    // SAFETY: the closure only makes raw syscalls (see `enter`) on data prepared before the
    // fork and owned by the closure; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || enter(&sb));
    }
}

fn check(rc: libc::c_long) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the forked child before exec: only async-signal-safe syscalls, no allocation.
/// Unprivileged callers first enter a user namespace in which they are root.
fn enter(sb: &ChildSandbox) -> std::io::Result<()> {
    let ChildSandbox {
        alias,
        writable,
        mem_dir,
        userns,
        cpu,
    } = sb;
    if let Some(maps) = userns {
        enter_userns(maps)?;
    }
    if let Some(cpu) = *cpu {
        pin(cpu)?;
    }
    let root = c"/";
    let tmpfs = c"tmpfs";
    let set_ro = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let clr_ro = libc::mount_attr {
        attr_set: 0,
        attr_clr: libc::MOUNT_ATTR_RDONLY,
        ..set_ro
    };
    let size = std::mem::size_of::<libc::mount_attr>();
    // SAFETY: plain syscalls on NUL-terminated strings and a properly sized mount_attr that
    // all outlive the calls; the child is single-threaded between fork and exec.
    unsafe {
        // If the runner's thread dies, `unshare` dies, which kills UML (--kill-child), which
        // tears down its PID namespace with every guest process in it.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL).into())?;
        // No host ASLR for UML (inherited through `unshare`'s exec): interrupt entropy mixes
        // in the host instruction pointer an IRQ interrupted, often in libc, whose address
        // would otherwise differ from run to run and make seeded runs diverge.
        let current = libc::personality(0xffff_ffff);
        check(
            libc::personality(
                (current as libc::c_ulong) | libc::ADDR_NO_RANDOMIZE as libc::c_ulong,
            )
            .into(),
        )?;
        check(libc::unshare(libc::CLONE_NEWNS).into())?;
        let none = std::ptr::null();
        check(
            libc::mount(
                none,
                root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            )
            .into(),
        )?;
        check(
            libc::mount(
                alias.0.as_ptr(),
                alias.1.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                none.cast(),
            )
            .into(),
        )?;
        for w in writable {
            check(
                libc::mount(
                    w.as_ptr(),
                    w.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    none.cast(),
                )
                .into(),
            )?;
        }
        check(libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            root.as_ptr(),
            libc::AT_RECURSIVE,
            &set_ro,
            size,
        ))?;
        for w in writable {
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                w.as_ptr(),
                libc::AT_RECURSIVE,
                &clr_ro,
                size,
            ))?;
        }
        check(
            libc::mount(
                tmpfs.as_ptr(),
                mem_dir.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                none.cast(),
            )
            .into(),
        )?;
    }
    Ok(())
}

/// Runs in the forked child before exec: the child's affinity mask becomes `cpu` alone, which
/// every process it starts inherits.
fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it (and ignores
    // numbers past its size); sched_setaffinity reads it for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set).into())
    }
}

/// Runs in the forked child before exec: `unshare(CLONE_NEWUSER)` and the id maps, with raw
/// syscalls only.
fn enter_userns(maps: &UsernsMaps) -> std::io::Result<()> {
    fn write_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
        // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd.into())?;
            let n = libc::write(fd, data.as_ptr().cast(), data.len());
            let write_err = std::io::Error::last_os_error();
            libc::close(fd);
            if n < 0 {
                return Err(write_err);
            }
        }
        Ok(())
    }
    // SAFETY: a plain syscall.
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())?;
    write_file(c"/proc/self/setgroups", b"deny")?;
    write_file(c"/proc/self/uid_map", &maps.uid_map)?;
    write_file(c"/proc/self/gid_map", &maps.gid_map)
}
