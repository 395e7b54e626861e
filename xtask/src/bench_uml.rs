//! The UML guest-cost benchmark: `patchbay vt --profile` for every UML kernel in the cache of
//! `cargo xtask build-uml` (side by side, seccomp and ptrace where the kernel has both), so
//! docs/performance.md can quote one table for all kernels. Called by `cargo xtask bench-uml`
//! and by `cargo xtask bench --uml` (its `uml` section with `--json`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::test::{cargo, step, workspace_root};

/// Builds the release `patchbay` and profiles every cached UML kernel (sorted by cache entry,
/// i.e. by Debian version). With `json`, one JSON object per kernel and mode on stdout.
pub fn run(json: bool) -> Result<()> {
    let mut c = profile_command(json)?;
    step(
        "UML guest costs (patchbay vt --profile, every cached kernel)",
        &mut c,
    )
}

/// The same profile as one JSON array (one object per kernel and mode), for
/// `cargo xtask bench --json --uml`.
pub fn json() -> Result<serde_json::Value> {
    let mut c = profile_command(true)?;
    eprintln!("xtask: ==> UML guest costs (patchbay vt --profile --json, every cached kernel)");
    let out = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start patchbay vt --profile")?;
    if !out.status.success() {
        bail!("patchbay vt --profile failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).with_context(|| {
                format!("patchbay vt --profile printed a line that is not JSON: {l}")
            })
        })
        .collect::<Result<Vec<serde_json::Value>>>()?;
    Ok(serde_json::Value::Array(rows))
}

/// Builds the release binary and returns its `vt --profile --both-modes` command over every
/// cached kernel.
fn profile_command(json: bool) -> Result<std::process::Command> {
    let kernels = cached_kernels();
    if kernels.is_empty() {
        bail!(
            "no UML kernel in {}; build one with `cargo xtask build-uml [--kernel 7.3]`",
            crate::cache::cache_dir("uml").display()
        );
    }
    let root = workspace_root()?;
    // stdout may be the JSON report's: the build's progress goes to stderr.
    eprintln!("xtask: ==> build the release patchbay binary");
    let built = cargo(&root)
        .args(["build", "--release", "-p", "patchbay"])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot start cargo build")?;
    if !built.success() {
        bail!("building the release patchbay binary failed ({built})");
    }
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
    Ok(c)
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
