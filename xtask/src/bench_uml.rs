//! The UML guest-cost benchmark: `patchbay vt --profile` for every UML kernel in the cache of
//! `cargo xtask build-uml` (side by side, seccomp and ptrace where the kernel has both), so
//! docs/performance.md can quote one table for all kernels. Called by `cargo xtask bench-uml`
//! and meant for `cargo xtask bench` via [`run`].

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::test::{cargo, step, workspace_root};

/// Builds the release `patchbay` and profiles every cached UML kernel (sorted by cache entry,
/// i.e. by Debian version). With `json`, one JSON object per kernel and mode on stdout.
pub fn run(json: bool) -> Result<()> {
    let kernels = cached_kernels();
    if kernels.is_empty() {
        bail!(
            "no UML kernel in {}; build one with `cargo xtask build-uml [--kernel 7.3]`",
            crate::cache::cache_dir("uml").display()
        );
    }
    let root = workspace_root()?;
    step(
        "build the release patchbay binary",
        cargo(&root).args(["build", "--release", "-p", "patchbay"]),
    )?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let mut c = std::process::Command::new(target.join("release").join("patchbay"));
    c.args(["vt", "--profile", "--both-modes"]);
    for k in &kernels {
        c.arg("--uml").arg(k);
    }
    if json {
        c.arg("--json");
    }
    step(
        "UML guest costs (patchbay vt --profile, every cached kernel)",
        &mut c,
    )
}

/// `<cache>/<version>-<hash>/linux` of every cached kernel, sorted by path.
fn cached_kernels() -> Vec<PathBuf> {
    let dir = crate::cache::cache_dir("uml");
    // A missing cache dir holds no kernels.
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("build-"))
        .map(|e| e.path().join("linux"))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}
