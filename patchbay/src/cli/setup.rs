//! Host set-up for CLI commands that need external tools: the way `cargo
//! xtask test` does it. A missing tool is installed through apt-get when the
//! command runs as root (saying what and why); otherwise the command stops
//! with one line naming the package. The library never does this: a library
//! call that lacks a tool returns its "not installed" error.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// A tool a command needs: the binary, its Debian package, and what for.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The binary looked up on `PATH`.
    pub bin: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    /// Why the command needs it (printed when installing).
    pub why: &'static str,
}

/// What `patchbay demo` runs besides the library's own netlink calls.
pub const DEMO_TOOLS: &[Tool] = &[
    Tool {
        bin: "nft",
        package: "nftables",
        why: "the demo's scenarios partition hosts and NAT with nftables",
    },
    Tool {
        bin: "tc",
        package: "iproute2",
        why: "link impairments use tc qdiscs",
    },
];

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d: PathBuf| {
            let f = d.join(bin);
            f.is_file()
                && std::fs::metadata(&f)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}

/// The tools of `tools` that are not on `PATH`.
pub fn missing(tools: &[Tool]) -> Vec<Tool> {
    tools.iter().filter(|t| !on_path(t.bin)).copied().collect()
}

/// Makes sure every tool is on `PATH`: installs the missing ones with
/// apt-get as root, or fails naming the packages.
pub fn ensure(command: &str, tools: &[Tool]) -> anyhow::Result<()> {
    let miss = missing(tools);
    if miss.is_empty() {
        return Ok(());
    }
    let pkgs: Vec<&str> = miss.iter().map(|t| t.package).collect();
    let list = pkgs.join(" ");
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "`patchbay {command}` needs {}; not installed. Install with `sudo apt-get install -y {list}` (as root, `patchbay {command}` installs it itself)",
            miss.iter()
                .map(|t| format!("`{}` (Debian package {})", t.bin, t.package))
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    if !on_path("apt-get") {
        bail!(
            "`patchbay {command}` needs the Debian packages {list}, and this host has no apt-get: install them with its package manager"
        );
    }
    for t in &miss {
        eprintln!(
            "patchbay {command}: installing Debian package {} with apt-get: `{}` is missing and {}",
            t.package, t.bin, t.why
        );
    }
    // Without package lists (a fresh image) install cannot find anything;
    // with stale ones the download may 404: update first, or retry after one.
    let mut updated = false;
    if !has_package_lists() {
        apt_update()?;
        updated = true;
    }
    if let Err(e) = apt_install(&pkgs) {
        if updated {
            return Err(e);
        }
        eprintln!(
            "patchbay {command}: apt-get install failed ({e:#}); updating the package lists and retrying"
        );
        apt_update()?;
        apt_install(&pkgs)?;
    }
    let still = missing(tools);
    if !still.is_empty() {
        bail!(
            "apt-get installed {list}, but {} is still not on PATH ({})",
            still.iter().map(|t| t.bin).collect::<Vec<_>>().join(" "),
            std::env::var("PATH").unwrap_or_default()
        );
    }
    Ok(())
}

fn has_package_lists() -> bool {
    std::fs::read_dir("/var/lib/apt/lists").is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
    })
}

fn apt_update() -> anyhow::Result<()> {
    eprintln!("patchbay: apt-get update");
    run_apt(Command::new("apt-get").args(["update", "-qq"]))
}

fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    eprintln!("patchbay: apt-get install -y {}", pkgs.join(" "));
    run_apt(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(pkgs),
    )
}

fn run_apt(c: &mut Command) -> anyhow::Result<()> {
    let argv = format!("{c:?}");
    let st = c
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {argv}"))?;
    if !st.success() {
        bail!("{argv} failed ({st})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_is_found_and_a_made_up_tool_is_missing() {
        let tools = [
            Tool {
                bin: "sh",
                package: "dash",
                why: "",
            },
            Tool {
                bin: "patchbay-no-such-tool",
                package: "nothing",
                why: "",
            },
        ];
        let m = missing(&tools);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].package, "nothing");
    }
}
