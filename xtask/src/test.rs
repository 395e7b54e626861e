//! `cargo xtask test`: everything CI runs, in order, failing fast.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments passed to `cargo nextest run` (e.g. a filter).
    #[arg(last = true)]
    pub nextest_args: Vec<String>,
}

/// Debian packages the tests need, with the binary that shows each is there.
const PACKAGES: &[(&str, &str)] = &[("nftables", "nft"), ("iproute2", "tc")];

pub fn run(args: TestArgs) -> Result<()> {
    let root = workspace_root()?;
    ensure_packages()?;
    if !args.no_lint {
        step(
            "cargo fmt --check",
            cargo(&root).args(["fmt", "--all", "--", "--check"]),
        )?;
        step(
            "cargo clippy",
            cargo(&root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    let nextest = has_nextest();
    if nextest {
        let mut c = cargo(&root);
        c.args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(&args.nextest_args);
        step("cargo nextest run", &mut c)?;
    } else {
        println!(
            "xtask: cargo-nextest is not installed; falling back to `cargo test` (install it with `cargo install cargo-nextest --locked`)"
        );
        let mut c = cargo(&root);
        c.args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--test-threads=1",
        ]);
        step("cargo test", &mut c)?;
    }
    step(
        "doctests",
        cargo(&root).args(["test", "--doc", "--workspace"]),
    )?;
    Ok(())
}

pub fn workspace_root() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

pub fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root);
    c
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a command, echoing it, and fails with its name if it fails.
pub fn step(name: &str, cmd: &mut Command) -> Result<()> {
    println!("xtask: ==> {name}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().nth(1) == Some("0"))
            })
        })
        .unwrap_or(false)
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(bin).is_file())
        })
        .unwrap_or(false)
}

/// Installs missing Debian packages when root and apt exist; otherwise fails
/// naming what to install.
pub fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, bin)| !on_path(bin))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// `apt-get install -y PKGS`, announcing it; `apt-get update` first.
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    if !is_root() || !on_path("apt-get") {
        bail!(
            "missing Debian packages: {}. Install them with `sudo apt-get install -y {}` (the tests need root anyway)",
            pkgs.join(" "),
            pkgs.join(" ")
        );
    }
    println!(
        "xtask: installing missing Debian packages: {} (apt-get)",
        pkgs.join(" ")
    );
    step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    step(
        "apt-get install",
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(pkgs),
    )
}
