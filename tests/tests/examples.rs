//! Every `examples/*.toml` runs through the `patchbay` binary and must
//! pass: the examples check themselves with expect-output steps.
//! `cargo xtask test` runs this, so a new example is tested by existing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use patchbay_tests::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `patchbay` binary of this build (target/<profile>/patchbay), built
/// (or found up to date) by cargo first, so a stale binary never runs.
fn patchbay_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/examples-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary outside target/<profile>/deps")?;
    let bin = profile_dir.join("patchbay");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "patchbay", "--bin", "patchbay"])
        .current_dir(workspace());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let st = build.status()?;
    if !st.success() || !bin.exists() {
        bail!("cannot build the patchbay binary at {}", bin.display());
    }
    Ok(bin)
}

/// Tools the examples call; an example needing a missing one is skipped
/// with the reason printed.
fn missing_tool(text: &str) -> Option<&'static str> {
    for tool in ["tayga", "curl", "dig", "ping", "python3", "getent"] {
        let used = text.contains(&format!("\"{tool}\""))
            || (tool == "tayga" && text.contains("\"nat64\""));
        if used
            && !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        {
            return Some(tool);
        }
    }
    None
}

#[test]
fn every_example_passes() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join("examples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples found");
    let bin = patchbay_bin()?;
    let mut failed = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        if let Some(tool) = missing_tool(&text) {
            skip(&format!("{}: `{tool}` is not installed", f.display()));
            continue;
        }
        let out = Command::new(&bin).arg("run").arg(f).output()?;
        println!(
            "== {}: {}\n{}{}",
            f.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failed.push(f.display().to_string());
        }
    }
    assert!(failed.is_empty(), "failing examples: {failed:?}");
    Ok(())
}
