//! The source patches of `cargo xtask build-uml` and which of them a kernel source got:
//! `xtask/uml-xstate.patch` where the source hard-codes the host's XSAVE size (6.1),
//! `xtask/uml-seed.patch` always, and `xtask/uml-vdso.patch` (the trap-free guest clock) where
//! `patch --dry-run` accepts it: 7.x. 6.1's vDSO and timekeeping differ, so 6.1 builds without
//! it and its guests read the clock through syscalls, as before.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::fnv1a64;

/// Raises UML 6.1's XSAVE buffer to the host's real size (docs/virtual-time.md).
const XSTATE: &str = include_str!("../../uml-xstate.patch");
/// The `patchbay_seed=N` boot option: the guest's randomness from a stream depending on N
/// alone, with nothing else entering the random pool, since what it would take in moves with
/// the host: each failed syscall costs 1 µs of virtual time (docs/determinism.md).
const SEED: &str = include_str!("../../uml-seed.patch");
/// The trap-free clock: in `time-travel=inf-cpu` mode the kernel publishes the clock in a page
/// below the vDSO, which reads `clock_gettime`, `gettimeofday` and `time` from it without a
/// syscall; boot option `patchbay_vclock=off` turns it off (docs/virtual-time.md).
const VDSO: &str = include_str!("../../uml-vdso.patch");
/// A file the vDSO patch creates: its presence says the patch is in a source.
const VDSO_MARKER: &str = "arch/um/include/shared/um_vvar.h";

/// Which of the optional patches a source got (the seed patch is always applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// `xtask/uml-xstate.patch`.
    pub xstate: bool,
    /// `xtask/uml-vdso.patch` (tried on every source; applied where it fits).
    pub vdso: bool,
}

impl Applied {
    /// Every combination. Which one a source gets is decided by the source, which its Debian
    /// version identifies, so a cached build under any of them is the right one.
    pub const ALL: [Applied; 4] = [
        Applied {
            xstate: false,
            vdso: true,
        },
        Applied {
            xstate: false,
            vdso: false,
        },
        Applied {
            xstate: true,
            vdso: true,
        },
        Applied {
            xstate: true,
            vdso: false,
        },
    ];

    /// The patches, in the order they are applied.
    pub fn patches(self) -> Vec<(&'static str, &'static str)> {
        let mut v = Vec::new();
        if self.xstate {
            v.push(("uml-xstate.patch", XSTATE));
        }
        v.push(("uml-seed.patch", SEED));
        if self.vdso {
            v.push(("uml-vdso.patch", VDSO));
        }
        v
    }

    /// A hash of the patches applied, and of the vDSO patch when it was tried and did not
    /// apply (so that a changed patch is tried again): the unpacked source's stamp and part of
    /// the cache key.
    pub fn id(self) -> String {
        let mut all: String = self.patches().iter().map(|(_, p)| *p).collect();
        if !self.vdso {
            all.push_str("\0not applied:\0");
            all.push_str(VDSO);
        }
        format!("{:016x}", fnv1a64(all.as_bytes()))
    }

    /// What an unpacked and patched source got (`xstate`: whether it needed that patch).
    pub fn of_source(src: &Path, xstate: bool) -> Self {
        Self {
            xstate,
            vdso: src.join(VDSO_MARKER).is_file(),
        }
    }
}

/// Applies the patches to a freshly unpacked source (`dir` holds copies of the patch files):
/// the xstate patch when `xstate`, the seed patch, and the vDSO patch when it applies without
/// fuzz.
pub fn apply(src: &Path, dir: &Path, package: &str, xstate: bool) -> Result<Applied> {
    let mut applied = Applied { xstate, vdso: true };
    for (name, text) in applied.patches() {
        let file = dir.join(name);
        std::fs::write(&file, text)?;
        let optional = name == "uml-vdso.patch";
        if optional && let Err(e) = patch(src, &file, &["--fuzz=0", "--dry-run"]) {
            println!(
                "[uml] no trap-free clock for {package}: xtask/uml-vdso.patch does not apply \
                 (it is written for 7.x's vDSO and timekeeping), so the guest's clock reads stay \
                 syscalls; patch --dry-run said: {e:#}"
            );
            applied.vdso = false;
            continue;
        }
        let fuzz: &[&str] = if optional { &["--fuzz=0"] } else { &[] };
        patch(src, &file, fuzz).with_context(|| format!("applying xtask/{name} to {package}"))?;
        println!("[uml] applied xtask/{name}");
    }
    Ok(applied)
}

/// `patch -p1 --forward --batch EXTRA -i FILE` in `src`; the error carries what patch printed.
fn patch(src: &Path, file: &Path, extra: &[&str]) -> Result<()> {
    let out = Command::new("patch")
        .args(["-p1", "--forward", "--batch"])
        .args(extra)
        .arg("-i")
        .arg(file)
        .current_dir(src)
        .output()
        .context("spawning `patch`")?;
    if !out.status.success() {
        bail!(
            "`patch {}` failed ({}): {}{}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_by_what_was_applied() {
        let ids: Vec<String> = Applied::ALL.iter().map(|a| a.id()).collect();
        for (i, a) in ids.iter().enumerate() {
            assert_eq!(ids.iter().filter(|b| *b == a).count(), 1, "{i}: {a}");
        }
        let names: Vec<&str> = Applied::ALL[2].patches().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["uml-xstate.patch", "uml-seed.patch", "uml-vdso.patch"]
        );
        assert!(VDSO.contains(&format!("+++ b/{VDSO_MARKER}")));
    }
}
