//! The source patches of `cargo xtask build-uml` and which of them a kernel source got:
//! `xtask/uml-xstate.patch` where the source hard-codes the host's XSAVE size (6.1),
//! `xtask/uml-seed.patch` always, and the optional ones where `patch --dry-run --fuzz=0`
//! accepts them: `xtask/uml-vdso.patch` (the trap-free guest clock) and
//! `xtask/uml-faultaround.patch` (fewer page faults per spawn), both written for 7.x. 6.1's
//! vDSO, timekeeping and fault-around code differ, so 6.1 builds without them and its guests
//! trap as before.

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

/// A patch applied where it applies without fuzz.
struct Optional {
    name: &'static str,
    text: &'static str,
    /// A file of the patched source and a text only the patch puts there: the patch is in a
    /// source that has it.
    marker: (&'static str, &'static str),
}

/// The optional patches, in the order they are applied (at most 8: a bit each in
/// [`Applied::optional`]).
const OPTIONAL: &[Optional] = &[
    // The trap-free clock: in time-travel=inf-cpu mode the kernel publishes the clock in a
    // page below the vDSO, which reads clock_gettime, gettimeofday and time from it without a
    // syscall; boot option patchbay_vclock=off turns it off (docs/virtual-time.md).
    Optional {
        name: "uml-vdso.patch",
        text: include_str!("../../uml-vdso.patch"),
        marker: ("arch/um/include/shared/um_vvar.h", "patchbay"),
    },
    // 1 MiB of fault-around instead of 64 KiB: fewer page faults, each a trap into the UML
    // kernel, when programs load (docs/performance.md).
    Optional {
        name: "uml-faultaround.patch",
        text: include_str!("../../uml-faultaround.patch"),
        marker: ("mm/memory.c", "uml-faultaround.patch"),
    },
];

/// Which patches a source got (the seed patch always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// `xtask/uml-xstate.patch`.
    pub xstate: bool,
    /// Bit i: [`OPTIONAL`]`[i]` applied.
    pub optional: u8,
}

impl Applied {
    /// Every combination. Which one a source gets is decided by the source, which its Debian
    /// version identifies, so a cached build under any of them is the right one.
    pub fn all() -> impl Iterator<Item = Applied> {
        let masks = 0..(1u8 << OPTIONAL.len());
        [false, true].into_iter().flat_map(move |xstate| {
            masks
                .clone()
                .rev()
                .map(move |optional| Applied { xstate, optional })
        })
    }

    /// The patches, in the order they are applied.
    pub fn patches(self) -> Vec<(&'static str, &'static str)> {
        let mut v = Vec::new();
        if self.xstate {
            v.push(("uml-xstate.patch", XSTATE));
        }
        v.push(("uml-seed.patch", SEED));
        for (i, p) in OPTIONAL.iter().enumerate() {
            if self.optional & (1 << i) != 0 {
                v.push((p.name, p.text));
            }
        }
        v
    }

    /// A hash of the patches applied and of the optional ones that were tried and did not
    /// apply (so that a changed patch is tried again): the unpacked source's stamp and part of
    /// the cache key.
    pub fn id(self) -> String {
        let mut all: String = self.patches().iter().map(|(_, p)| *p).collect();
        for (i, p) in OPTIONAL.iter().enumerate() {
            if self.optional & (1 << i) == 0 {
                all.push_str("\0not applied:\0");
                all.push_str(p.text);
            }
        }
        format!("{:016x}", fnv1a64(all.as_bytes()))
    }

    /// What an unpacked and patched source got (`xstate`: whether it needed that patch).
    pub fn of_source(src: &Path, xstate: bool) -> Self {
        let mut optional = 0;
        for (i, p) in OPTIONAL.iter().enumerate() {
            let (file, needle) = p.marker;
            if std::fs::read_to_string(src.join(file)).is_ok_and(|t| t.contains(needle)) {
                optional |= 1 << i;
            }
        }
        Self { xstate, optional }
    }
}

/// Applies the patches to a freshly unpacked source (`dir` holds copies of the patch files):
/// the xstate patch when `xstate`, the seed patch, and each optional patch that applies
/// without fuzz.
pub fn apply(src: &Path, dir: &Path, package: &str, xstate: bool) -> Result<Applied> {
    let mut applied = Applied {
        xstate,
        optional: 0,
    };
    for (name, text) in applied.patches() {
        let file = dir.join(name);
        std::fs::write(&file, text)?;
        patch(src, &file, &[]).with_context(|| format!("applying xtask/{name} to {package}"))?;
        eprintln!("[uml] applied xtask/{name}");
    }
    for (i, p) in OPTIONAL.iter().enumerate() {
        let file = dir.join(p.name);
        std::fs::write(&file, p.text)?;
        if let Err(e) = patch(src, &file, &["--fuzz=0", "--dry-run"]) {
            eprintln!(
                "[uml] not applying xtask/{} to {package}: it is written for 7.x and does not fit \
                 this source, so its guests do without it; patch --dry-run said: {e:#}",
                p.name
            );
            continue;
        }
        patch(src, &file, &["--fuzz=0"])
            .with_context(|| format!("applying xtask/{} to {package}", p.name))?;
        applied.optional |= 1 << i;
        eprintln!("[uml] applied xtask/{}", p.name);
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
        let all: Vec<Applied> = Applied::all().collect();
        assert_eq!(all.len(), 2 << OPTIONAL.len());
        let ids: Vec<String> = all.iter().map(|a| a.id()).collect();
        for (i, a) in ids.iter().enumerate() {
            assert_eq!(ids.iter().filter(|b| *b == a).count(), 1, "{i}: {a}");
        }
        let everything = Applied {
            xstate: true,
            optional: 0b11,
        };
        let names: Vec<&str> = everything.patches().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "uml-xstate.patch",
                "uml-seed.patch",
                "uml-vdso.patch",
                "uml-faultaround.patch"
            ]
        );
        for p in OPTIONAL {
            let (file, needle) = p.marker;
            assert!(p.text.contains(&format!("+++ b/{file}")), "{}", p.name);
            assert!(
                p.text
                    .lines()
                    .any(|l| l.starts_with('+') && l.contains(needle)),
                "{}: the marker is not what the patch adds",
                p.name
            );
        }
    }
}
