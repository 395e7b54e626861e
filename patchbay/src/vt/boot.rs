//! The UML command line of one run and the per-run values that go into it or into the guest
//! init (seed, open-file limits).

use std::ffi::OsString;
use std::path::Path;

use super::{GUEST_EPOCH, VtClock, os_concat};

/// The runner's open-file limits (soft, hard), which the command gets in the guest too (test
/// runners such as nextest raise the soft limit; the guest kernel's default is 1024).
pub(crate) fn nofile_limits() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 4096))
}

/// A random seed for a run without one (small enough to type when replaying).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std seeds every RandomState from the OS's randomness (getrandom), without unsafe here.
    let h = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    u64::from(h as u32)
}

/// The UML kernel command line. `seccomp`: `Some(on)` for kernels that know the `seccomp=`
/// option, `None` for older ones (ptrace only). `seed`: `patchbay_seed=` and, in virtual
/// time, the guest's wall clock pinned to [`GUEST_EPOCH`]. `slow_clock`: `patchbay_vclock=off`
/// (every clock read a syscall; only for kernels that know the option).
pub(crate) fn kernel_args(
    mem: &str,
    clock: VtClock,
    seccomp: Option<bool>,
    seed: Option<u64>,
    slow_clock: bool,
    uml_dir: &Path,
    init: &Path,
) -> Vec<OsString> {
    let mut pinned = Vec::new();
    if let Some(s) = seed {
        pinned.push(format!("patchbay_seed={s}"));
        if clock == VtClock::InfCpu {
            pinned.push(format!("time-travel-start={}", GUEST_EPOCH * 1_000_000_000));
        }
    }
    let clock = match clock {
        VtClock::InfCpu => Some("time-travel=inf-cpu"),
        VtClock::Real => None,
    };
    let procs = seccomp.map(|on| if on { "seccomp=on" } else { "seccomp=off" });
    let vclock = slow_clock.then_some("patchbay_vclock=off");
    let fixed = [
        // Host root over hostfs, read-only (the host side is read-only too, see process.rs).
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "ro",
        "quiet",
        // Console 0 writes to UML's stdout (the runner's pipe); no other consoles, no xterms.
        "con=null",
        "con0=null,fd:1",
        "ssl=null",
    ];
    std::iter::once(OsString::from(format!("mem={mem}")))
        .chain(
            clock
                .into_iter()
                .chain(procs)
                .chain(vclock)
                .chain(fixed)
                .map(OsString::from),
        )
        .chain(pinned.into_iter().map(OsString::from))
        .chain([os_concat("uml_dir=", uml_dir), os_concat("init=", init)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_command_line() {
        let args = kernel_args(
            "256M",
            VtClock::InfCpu,
            Some(true),
            Some(42),
            false,
            Path::new("/r/uml"),
            Path::new("/r/init.sh"),
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..3], ["mem=256M", "time-travel=inf-cpu", "seccomp=on"]);
        assert!(args.contains(&"ro".to_string()));
        assert_eq!(
            args[args.len() - 4..],
            [
                "patchbay_seed=42",
                "time-travel-start=1767225600000000000",
                "uml_dir=/r/uml",
                "init=/r/init.sh"
            ]
        );
        let real = kernel_args(
            "256M",
            VtClock::Real,
            None,
            Some(7),
            true,
            Path::new("/u"),
            Path::new("/i"),
        );
        assert!(
            !real
                .iter()
                .any(|a| a.to_string_lossy().starts_with("seccomp"))
        );
        assert!(
            !real
                .iter()
                .any(|a| a.to_string_lossy().starts_with("time-travel"))
        );
        // A seed without virtual time still fixes the randomness, not the clock.
        assert!(real.iter().any(|a| a == "patchbay_seed=7"));
        assert!(real.iter().any(|a| a == "patchbay_vclock=off"));
        assert!(!args.iter().any(|a| a.starts_with("patchbay_vclock")));
        let unseeded = kernel_args(
            "1G",
            VtClock::InfCpu,
            None,
            None,
            false,
            Path::new("/u"),
            Path::new("/i"),
        );
        assert!(
            !unseeded
                .iter()
                .any(|a| a.to_string_lossy().starts_with("patchbay_seed"))
        );
    }
}
