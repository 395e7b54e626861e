//! One host CPU per guest. A guest syscall is a round trip between two host processes (the
//! guest task's stub and the UML kernel, a signal and a futex each way); when the two sit on
//! different CPUs every hand-off is a cross-CPU wake-up. Measured on a 2-vCPU host: a futex
//! round trip between two processes takes 13–14 µs across CPUs and 7.2 µs on one, and 200 000
//! guest `getppid` calls take 4.1–5.3 s unpinned against 2.9–3.3 s with the guest on one CPU
//! (docs/performance.md, "The per-syscall floor").
//!
//! Guests run in parallel (one per test under nextest), each from its own `patchbay vt`
//! process, so the choice is made between processes: a guest claims a CPU of the caller's
//! affinity mask by binding the abstract Unix socket `patchbay-vt-cpu-<n>`, which the kernel
//! frees when the process ends, however it ends. No file is left behind. When every CPU is
//! claimed, the guest is not pinned and the host scheduler places it. `PATCHBAY_VT_PIN=off`
//! turns pinning off (for before/after comparisons).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// A claimed CPU; the claim ends when this is dropped.
#[derive(Debug)]
pub(crate) struct CpuClaim {
    /// The CPU number.
    pub cpu: usize,
    _socket: UnixListener,
}

/// The CPUs this process may run on, in order.
fn allowed() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return vec![];
    };
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// The name of CPU `cpu`'s claim.
fn name(cpu: usize) -> String {
    format!("patchbay-vt-cpu-{cpu}")
}

/// Claims the first free CPU of the affinity mask, or `None`: one CPU only (nothing to
/// choose), or all claimed.
pub(crate) fn claim() -> Option<CpuClaim> {
    if std::env::var_os("PATCHBAY_VT_PIN").is_some_and(|v| v == "off") {
        return None;
    }
    let cpus = allowed();
    if cpus.len() < 2 {
        return None;
    }
    cpus.into_iter().find_map(|cpu| {
        let addr = SocketAddr::from_abstract_name(name(cpu).as_bytes()).ok()?;
        let socket = UnixListener::bind_addr(&addr).ok()?;
        Some(CpuClaim {
            cpu,
            _socket: socket,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_exclusive() {
        if allowed().len() < 2 {
            println!("SKIP: one CPU in this process's affinity mask, nothing to claim");
            return;
        }
        let Some(a) = claim() else {
            println!("SKIP: every CPU is claimed by running guests");
            return;
        };
        let b = claim();
        assert_ne!(Some(a.cpu), b.as_ref().map(|b| b.cpu));
    }
}
