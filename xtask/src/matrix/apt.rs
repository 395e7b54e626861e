//! Private apt configurations (own sources list, lists and cache directories, passed with
//! `-o`), so neither kernel downloads nor the backports QEMU install touch the host's apt
//! setup; plus installing the host tools the matrix needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::run_checked;

/// Debian mirror used by the private configurations.
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// Debian security mirror.
pub const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// An apt configuration living entirely under `dir`.
#[derive(Debug, Clone)]
pub struct PrivateApt {
    dir: PathBuf,
}

/// The `sources.list` text for a Debian release (`bookworm`, `bullseye`), optionally with
/// its backports suite.
pub fn sources_list(codename: &str, backports: bool) -> String {
    let mut s = format!(
        "deb {MIRROR} {codename} main\ndeb {MIRROR} {codename}-updates main\n\
         deb {SECURITY_MIRROR} {codename}-security main\n"
    );
    if backports {
        s += &format!("deb {MIRROR} {codename}-backports main\n");
    }
    s
}

impl PrivateApt {
    /// Creates (or reuses) the configuration in `dir` with the given sources.
    pub fn new(dir: &Path, sources: &str) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let list = dir.join("sources.list");
        std::fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The `-o` options selecting this configuration.
    pub fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "-o".into(),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "-o".into(),
            "Dir::Etc::SourceParts=/dev/null".into(),
            "-o".into(),
            format!("Dir::State::Lists={d}/lists"),
            "-o".into(),
            format!("Dir::Cache={d}/cache"),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
        ]
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options())
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// `apt-get update` of the private lists.
    pub fn update(&self) -> Result<()> {
        let mut c = self.cmd("apt-get");
        c.args(["-q", "update"]);
        run_checked(&mut c).map(drop)
    }

    /// `apt-cache show --no-all-versions PKG` (the candidate's control fields).
    pub fn show(&self, pkg: &str) -> Result<String> {
        let mut c = self.cmd("apt-cache");
        c.args(["show", "--no-all-versions", pkg]);
        run_checked(&mut c)
    }

    /// Whether some configured suite has `pkg` in `suite` (e.g. `bookworm-backports`).
    pub fn has_in_suite(&self, pkg: &str, suite: &str) -> Result<bool> {
        let mut c = self.cmd("apt-cache");
        c.args(["policy", pkg]);
        Ok(run_checked(&mut c)?
            .lines()
            .any(|l| l.contains(&format!(" {suite}/"))))
    }

    /// `apt-get download PKG` into `dir`; returns the `.deb` path.
    pub fn download(&self, pkg: &str, dir: &Path) -> Result<PathBuf> {
        let mut c = self.cmd("apt-get");
        c.args(["-q", "download", pkg]).current_dir(dir);
        run_checked(&mut c)?;
        let prefix = format!("{pkg}_");
        for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(&prefix) && name.ends_with(".deb") {
                return Ok(p);
            }
        }
        bail!(
            "apt-get download {pkg} succeeded but no {prefix}*.deb in {}",
            dir.display()
        )
    }

    /// `apt-get install -y --no-install-recommends [-t RELEASE] PKGS` through this configuration.
    pub fn install(&self, pkgs: &[&str], target_release: Option<&str>) -> Result<()> {
        let mut c = self.cmd("apt-get");
        c.args(["-q", "-y", "--no-install-recommends"]);
        if let Some(t) = target_release {
            c.args(["-t", t]);
        }
        c.arg("install").args(pkgs);
        run_checked(&mut c).map(drop)
    }
}

/// The name of the kernel image package a meta package depends on, from `apt-cache show`.
pub fn image_dependency(show: &str) -> Option<String> {
    let deps = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    deps.split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .find(|n| n.starts_with("linux-image-"))
        .map(str::to_owned)
}

/// Whether a Debian package is installed on the host (`dpkg-query` exits 1 for unknown ones).
pub fn installed(pkg: &str) -> Result<bool> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .context("running dpkg-query (the matrix installs its tools with apt on Debian hosts)")?;
    Ok(o.status.success() && String::from_utf8_lossy(&o.stdout) == "install ok installed")
}

fn host_codename() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME; install qemu-system-x86, busybox-static and kmod by hand")
}

/// Installs the host tools the matrix needs when missing, saying so on stdout. QEMU comes
/// from `<codename>-backports` when available there, so a backports `qemu-utils` stays.
pub fn ensure_host_tools(apt_root: &Path) -> Result<()> {
    let wanted = [
        "qemu-system-x86",
        "busybox-static",
        "kmod",
        "nftables",
        "xz-utils",
        "zstd",
    ];
    let mut missing = Vec::new();
    for p in wanted {
        if !installed(p)? {
            missing.push(p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let codename = host_codename()?;
    println!(
        "kernel-matrix: installing missing host packages: {}",
        missing.join(" ")
    );
    let apt = PrivateApt::new(
        &apt_root.join(format!("host-{codename}")),
        &sources_list(&codename, true),
    )?;
    apt.update()?;
    let backports = format!("{codename}-backports");
    let (qemu, rest): (Vec<&str>, Vec<&str>) =
        missing.into_iter().partition(|p| *p == "qemu-system-x86");
    if !rest.is_empty() {
        apt.install(&rest, None)?;
        println!("kernel-matrix: installed {}", rest.join(" "));
    }
    if !qemu.is_empty() {
        // -t so that qemu-system-x86's own dependencies (qemu-system-common, seabios...)
        // come from backports too; bookworm's 7.2 would replace the backports qemu-utils.
        let release = apt
            .has_in_suite("qemu-system-x86", &backports)?
            .then_some(backports.as_str());
        apt.install(&qemu, release)?;
        println!(
            "kernel-matrix: installed qemu-system-x86 from {}",
            release.unwrap_or(&codename)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_package_resolves_to_image() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nDescription: x\n";
        assert_eq!(
            image_dependency(show).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(image_dependency("Package: x\n"), None);
    }

    #[test]
    fn sources_have_backports_only_when_asked() {
        assert!(!sources_list("bullseye", false).contains("backports"));
        assert!(sources_list("bookworm", true).contains("bookworm-backports main"));
        assert!(sources_list("bullseye", false).contains("bullseye-security main"));
    }
}
