//! Errors of the virtual-time runner.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while running a command inside the UML guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VtError {
    /// No UML kernel binary was found.
    #[error(
        "no User-Mode-Linux kernel found (looked in: {searched}); build it with \
         `cargo xtask build-uml` or point PATCHBAY_UML at a UML `linux` binary"
    )]
    UmlNotFound {
        /// The places that were searched, comma-separated.
        searched: String,
    },
    /// `PATCHBAY_UML` names something that is not a file.
    #[error(
        "PATCHBAY_UML={path} is not a file; unset it or build the kernel with `cargo xtask build-uml`"
    )]
    BadUmlEnv {
        /// The value of `PATCHBAY_UML`.
        path: PathBuf,
    },
    /// The binary does not answer `--version` and `--help` like a UML kernel.
    #[error(
        "{binary} is not a User-Mode-Linux kernel (`--version` / `--help` gave no UML answer); \
         build one with `cargo xtask build-uml` or point PATCHBAY_UML at a UML `linux` binary"
    )]
    NotUml {
        /// The binary.
        binary: PathBuf,
    },
    /// The kernel was built without `CONFIG_UML_TIME_TRAVEL_SUPPORT`, so it cannot run in
    /// virtual time.
    #[error(
        "the UML kernel {binary} (release {release}) has no time-travel support (no \
         `time-travel` in `linux --help`): virtual time needs CONFIG_UML_TIME_TRAVEL_SUPPORT=y; \
         build one with `cargo xtask build-uml` (Debian's user-mode-linux package lacks it)"
    )]
    NoTimeTravel {
        /// The binary.
        binary: PathBuf,
        /// Its release.
        release: String,
    },
    /// [`super::interrupt`] stopped the run (its guest was killed).
    #[error("the virtual-time run was interrupted (its guest was killed)")]
    Interrupted,
    /// A seed was asked for but the kernel cannot take one.
    #[error(
        "the UML kernel {binary} ({release}) cannot take a seed (no `patchbay_seed=` in \
         `linux --help`): rebuild it with `cargo xtask build-uml`, which applies \
         xtask/uml-seed.patch"
    )]
    NoSeed {
        /// The binary.
        binary: PathBuf,
        /// Its release.
        release: String,
    },
    /// The caller passed something the runner cannot express in the guest.
    #[error("invalid virtual-time run: {0}")]
    InvalidArgument(String),
    /// A host-side file operation failed.
    #[error("{what}: {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The UML process could not be started.
    #[error(
        "starting the UML kernel {binary} in its private mount and PID namespaces failed \
         (as root directly, otherwise through a user namespace)"
    )]
    Spawn {
        /// The UML binary.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The guest ran longer than the wall-clock guard allows (for example a busy loop, which
    /// never lets virtual time advance under `time-travel=inf-cpu`). The UML process group was killed.
    #[error(
        "the UML guest was still running after the wall-clock guard of {guard:?} and was killed \
         (a busy loop never advances virtual time; raise the guard if the work is real)\n\
         --- console tail ---\n{console_tail}"
    )]
    GuardTimeout {
        /// The guard that expired.
        guard: Duration,
        /// The host pid (and process group id) the UML kernel had; the group is gone when this
        /// error is returned.
        pid: i32,
        /// The last lines of the guest console.
        console_tail: String,
    },
    /// The guest kernel panicked.
    #[error("the UML guest kernel panicked\n--- console tail ---\n{console_tail}")]
    GuestPanic {
        /// The last lines of the guest console.
        console_tail: String,
    },
    /// A step of the guest init (mounting, bringing `lo` up, ...) failed.
    #[error("the guest init failed at: {step}\n--- console tail ---\n{console_tail}")]
    GuestSetup {
        /// The step that failed, as reported by the guest init.
        step: String,
        /// The last lines of the guest console.
        console_tail: String,
    },
    /// The command does not exist in the guest (the host root, read-only, with tmpfs over
    /// `/tmp`, `/run` and `/var/tmp` except for the paths the command line names).
    #[error("command not found in the UML guest: {command}: {why}")]
    CommandNotFound {
        /// The command (`argv[0]`).
        command: String,
        /// Why, as judged on the host (missing, not accessible to the user running the guest,
        /// not on the guest's `PATH`).
        why: String,
    },
    /// The working directory is not usable in the guest.
    #[error("cannot change to {cwd} in the UML guest: {why}")]
    Cwd {
        /// The requested working directory (a host path).
        cwd: PathBuf,
        /// Why, as judged on the host.
        why: String,
    },
    /// Not root, and the host does not allow unprivileged user namespaces, which the runner
    /// needs for the guest's private mount and PID namespaces.
    #[error(
        "patchbay vt needs root or unprivileged user namespaces, and this host forbids them \
         ({detail}); allow them with `sysctl -w kernel.unprivileged_userns_clone=1` (Debian) / \
         `sysctl -w user.max_user_namespaces=15000` / \
         `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu), or run as root"
    )]
    NoUserNamespaces {
        /// What failed and the current values of the sysctls that control it.
        detail: String,
    },
    /// The guest powered off without writing an exit code.
    #[error(
        "the UML guest exited without reporting the command's exit code (results dir {results})\n--- console tail ---\n{console_tail}"
    )]
    NoResult {
        /// The results directory.
        results: PathBuf,
        /// The last lines of the guest console.
        console_tail: String,
    },
    /// Processes of the UML process group survived SIGKILL.
    #[error("UML processes {pids:?} of process group {pgid} are still alive after SIGKILL")]
    Leftover {
        /// The process group.
        pgid: i32,
        /// The surviving pids.
        pids: Vec<i32>,
    },
    /// Waiting for or signalling the UML process failed.
    #[error("{what} (UML pid {pid})")]
    Process {
        /// What was being done.
        what: &'static str,
        /// The UML pid.
        pid: i32,
        /// The errno (as an `io::Error`: no dependency's type in the API).
        #[source]
        source: std::io::Error,
    },
}
