//! Building what runs in the guests: the `patchbay-tests` integration test binaries and the
//! `patchbay` binary (for `doctor --json`), once, on the host.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::script::TestBin;
use super::{NOT_KERNEL_SENSITIVE, run_checked};

/// Keeps the binaries named in `wanted`; when it is empty, the default
/// kernel-sensitive set ([`super::CI_BINS`]); `all` means every binary except
/// those that do not depend on the kernel.
pub(super) fn select_bins(all: Vec<TestBin>, wanted: &[String]) -> Result<Vec<TestBin>> {
    if wanted.is_empty() {
        return Ok(all
            .into_iter()
            .filter(|b| super::CI_BINS.contains(&b.name.as_str()))
            .collect());
    }
    if wanted.len() == 1 && wanted[0] == "all" {
        return Ok(all
            .into_iter()
            .filter(|b| NOT_KERNEL_SENSITIVE.iter().all(|(n, _)| *n != b.name))
            .collect());
    }
    for w in wanted {
        if !all.iter().any(|b| &b.name == w) {
            let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
            bail!(
                "--bins: no integration test target {w:?} in patchbay-tests; have: {}",
                names.join(", ")
            );
        }
    }
    Ok(all
        .into_iter()
        .filter(|b| wanted.contains(&b.name))
        .collect())
}

/// Builds the integration test binaries once and returns their executables.
pub(super) fn build_test_bins(root: &Path) -> Result<Vec<TestBin>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(&cargo);
    c.args([
        "test",
        "-p",
        "patchbay-tests",
        "--no-run",
        "--message-format=json",
    ])
    .current_dir(root);
    let mut bins = Vec::new();
    for v in cargo_messages(&run_checked(&mut c)?)? {
        if v["reason"] != "compiler-artifact" || !v["profile"]["test"].as_bool().unwrap_or(false) {
            continue;
        }
        let is_test = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|x| x == "test"));
        if let (true, Some(exe), Some(name)) = (
            is_test,
            v["executable"].as_str(),
            v["target"]["name"].as_str(),
        ) {
            bins.push(TestBin {
                name: name.to_owned(),
                path: exe.to_owned(),
            });
        }
    }
    bins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(bins)
}

/// Parses cargo's `--message-format=json` stdout (one JSON object per line).
fn cargo_messages(stdout: &str) -> Result<Vec<serde_json::Value>> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).with_context(|| format!("cargo printed a non-JSON line: {l}"))
        })
        .collect()
}

/// The host-built `patchbay` binary and the subcommands its `--help` lists.
#[derive(Debug, Clone, Default)]
pub(super) struct PatchbayCli {
    /// Absolute path of the executable.
    pub(super) exe: String,
    /// Subcommand names (`doctor`, `vt`, ...).
    pub(super) subcommands: Vec<String>,
}

impl PatchbayCli {
    /// The executable, if it has subcommand `name`.
    pub(super) fn with(&self, name: &str) -> Option<String> {
        self.subcommands
            .iter()
            .any(|s| s == name)
            .then(|| self.exe.clone())
    }
}

/// Builds the `patchbay` binary and reads its subcommands (`doctor` is the feature probe,
/// `vt` runs the `uml` kernel's guests).
pub(super) fn build_patchbay(root: &Path) -> Result<Option<PatchbayCli>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(&cargo);
    c.args([
        "build",
        "-p",
        "patchbay",
        "--bin",
        "patchbay",
        "--message-format=json",
    ])
    .current_dir(root);
    let exe = cargo_messages(&run_checked(&mut c)?)?
        .into_iter()
        .find_map(|v| {
            (v["reason"] == "compiler-artifact" && v["target"]["name"] == "patchbay")
                .then(|| v["executable"].as_str().map(str::to_owned))
                .flatten()
        });
    let Some(exe) = exe else { return Ok(None) };
    let help = run_checked(Command::new(&exe).arg("--help"))?;
    Ok(Some(PatchbayCli {
        exe,
        subcommands: subcommands(&help),
    }))
}

/// Subcommand names from clap's `--help`: the indented `name  <about>` lines of the
/// `Commands:` section.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_from_clap_help() {
        let help = "patchbay: labs\n\nUsage: patchbay <COMMAND>\n\nCommands:\n  doctor  Check the kernel\n  \
vt      Run a command in virtual time\n  help    Print this message\n\nOptions:\n  -h, --help  Print help\n";
        let cli = PatchbayCli {
            exe: "/t/patchbay".into(),
            subcommands: subcommands(help),
        };
        assert_eq!(cli.subcommands, ["doctor", "vt", "help"]);
        assert_eq!(cli.with("vt").as_deref(), Some("/t/patchbay"));
        assert!(cli.with("-h,").is_none());
        assert!(cli.with("bench").is_none());
    }
}
