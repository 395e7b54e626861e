//! Every `examples/*.toml` runs through the `patchbay` binary and must
//! pass: the examples check themselves with expect-output steps.
//! `cargo xtask test` runs this, so a new example is tested by existing.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use patchbay_tests::*;

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
        if text.contains("time = \"virtual\"")
            && let Err(e) = patchbay::vt::find_uml_binary()
        {
            skip(&format!(
                "{}: runs in virtual time and there is no UML kernel ({e}); run `cargo xtask build-uml`",
                f.display()
            ));
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
