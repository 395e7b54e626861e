//! Host set-up for CLI commands that need external tools: the way `cargo
//! xtask test` does it. A missing tool is installed through apt-get when the
//! command runs as root (saying what and why); otherwise the command stops
//! with one line naming the package. The library never does this: a library
//! call that lacks a tool returns its "not installed" error.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// A tool a command needs: the binary, its Debian package, and what for.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The binary looked up on `PATH` (or a path).
    pub bin: String,
    /// The Debian package that provides it, if patchbay knows it.
    pub package: Option<&'static str>,
    /// Why the command needs it (printed in errors and when installing).
    pub why: String,
}

/// The Debian package of each program the examples and common lab files
/// run (bookworm names).
const PACKAGES: &[(&str, &str)] = &[
    ("arping", "iputils-arping"),
    ("awk", "mawk"),
    ("bash", "bash"),
    ("cat", "coreutils"),
    ("conntrack", "conntrack"),
    ("curl", "curl"),
    ("dig", "bind9-dnsutils"),
    ("env", "coreutils"),
    ("ethtool", "ethtool"),
    ("getent", "libc-bin"),
    ("grep", "grep"),
    ("head", "coreutils"),
    ("host", "bind9-host"),
    ("ip", "iproute2"),
    ("iperf3", "iperf3"),
    ("jq", "jq"),
    ("mtr", "mtr-tiny"),
    ("nc", "netcat-openbsd"),
    ("nft", "nftables"),
    ("nice", "coreutils"),
    ("nohup", "coreutils"),
    ("nslookup", "bind9-dnsutils"),
    ("openssl", "openssl"),
    ("ping", "iputils-ping"),
    ("python3", "python3"),
    ("sed", "sed"),
    ("seq", "coreutils"),
    ("setsid", "util-linux"),
    ("sh", "dash"),
    ("sleep", "coreutils"),
    ("socat", "socat"),
    ("ss", "iproute2"),
    ("stdbuf", "coreutils"),
    ("tail", "coreutils"),
    ("tayga", "tayga"),
    ("tc", "iproute2"),
    ("tcpdump", "tcpdump"),
    ("tee", "coreutils"),
    ("timeout", "coreutils"),
    ("tracepath", "iputils-tracepath"),
    ("traceroute", "traceroute"),
    ("tshark", "tshark"),
    ("wc", "coreutils"),
    ("wget", "wget"),
];

/// The Debian package that provides `bin` (by its file name).
pub fn package_of(bin: &str) -> Option<&'static str> {
    let name = bin.rsplit('/').next().unwrap_or(bin);
    PACKAGES.iter().find(|(b, _)| *b == name).map(|(_, p)| *p)
}

fn tool(bin: &str, why: impl Into<String>) -> Tool {
    Tool {
        bin: bin.to_string(),
        package: package_of(bin),
        why: why.into(),
    }
}

/// What `patchbay demo` runs besides the library's own netlink calls.
pub fn demo_tools() -> Vec<Tool> {
    vec![
        tool(
            "nft",
            "the demo's scenarios partition hosts and NAT with nftables",
        ),
        tool("tc", "link impairments use tc qdiscs"),
    ]
}

/// What a lab file runs: its steps' programs and the host tools its lab
/// needs ([`crate::labfile::LabFile::programs`]).
pub fn lab_tools(file: &crate::labfile::LabFile) -> Vec<Tool> {
    file.programs()
        .into_iter()
        .map(|(bin, step)| {
            let why = match (step, bin.as_str()) {
                (Some(n), _) => format!("step {n} runs it"),
                (None, "nft") => "the lab's NAT, firewalls or faults are nftables rules".into(),
                (None, "tc") => "the lab's link conditions are tc qdiscs".into(),
                (None, "tayga") => "a router's NAT64 runs tayga".into(),
                (None, _) => "the lab needs it".into(),
            };
            tool(&bin, why)
        })
        .collect()
}

fn executable(f: &std::path::Path) -> bool {
    f.is_file()
        && std::fs::metadata(f)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false)
}

fn on_path(bin: &str) -> bool {
    if bin.contains('/') {
        return executable(std::path::Path::new(bin));
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d: PathBuf| executable(&d.join(bin))))
}

/// The tools of `tools` that are not on `PATH`.
pub fn missing(tools: &[Tool]) -> Vec<Tool> {
    tools.iter().filter(|t| !on_path(&t.bin)).cloned().collect()
}

fn describe(miss: &[Tool]) -> String {
    miss.iter()
        .map(|t| match t.package {
            Some(p) => format!("`{}` (Debian package {p}; {})", t.bin, t.why),
            None => format!("`{}` ({}; patchbay knows no package for it)", t.bin, t.why),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes sure every tool is on `PATH`. Missing ones are installed with
/// apt-get when `install` is set and the process is root (saying what and
/// why); otherwise this fails naming each program, why it is needed and
/// its Debian package, and `how` installs them. `who` starts the message
/// (`examples/dns.toml runs`, `` `patchbay demo` needs ``); `command` names
/// the subcommand in progress lines.
pub fn ensure(
    command: &str,
    who: &str,
    tools: &[Tool],
    install: bool,
    how: &str,
) -> anyhow::Result<()> {
    let miss = missing(tools);
    if miss.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = miss.iter().filter_map(|t| t.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    let list = pkgs.join(" ");
    let unknown: Vec<&Tool> = miss.iter().filter(|t| t.package.is_none()).collect();
    let install_hint = if pkgs.is_empty() {
        String::new()
    } else {
        format!(" Install them with `sudo apt-get install -y {list}`, or as root {how}.")
    };
    if !install || !nix::unistd::geteuid().is_root() || !unknown.is_empty() {
        bail!(
            "{who} programs that are not installed: {}.{install_hint}",
            describe(&miss)
        );
    }
    if !on_path("apt-get") {
        bail!(
            "{who} programs that are not installed: {}, and this host has no apt-get: install the packages {list} with its package manager",
            describe(&miss)
        );
    }
    for t in &miss {
        eprintln!(
            "patchbay {command}: installing Debian package {} with apt-get: `{}` is missing and {}",
            t.package.unwrap_or("?"),
            t.bin,
            t.why
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
            still
                .iter()
                .map(|t| t.bin.as_str())
                .collect::<Vec<_>>()
                .join(" "),
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
        let tools = [tool("sh", ""), tool("patchbay-no-such-tool", "")];
        let m = missing(&tools);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].package, None);
    }

    #[test]
    fn the_examples_tools_have_their_debian_packages() {
        for (bin, pkg) in [
            ("dig", "bind9-dnsutils"),
            ("nc", "netcat-openbsd"),
            ("tracepath", "iputils-tracepath"),
            ("ping", "iputils-ping"),
            ("tayga", "tayga"),
            ("/usr/bin/curl", "curl"),
            ("nft", "nftables"),
        ] {
            assert_eq!(package_of(bin), Some(pkg), "{bin}");
        }
        let d = describe(&[
            tool("dig", "step 3 runs it"),
            tool("frob", "step 4 runs it"),
        ]);
        assert_eq!(
            d,
            "`dig` (Debian package bind9-dnsutils; step 3 runs it), `frob` (step 4 runs it; patchbay knows no package for it)"
        );
    }
}
