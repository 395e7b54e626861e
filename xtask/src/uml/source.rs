//! Getting a kernel source for `cargo xtask build-uml`: Debian's `linux-source-SERIES`
//! through a private apt configuration (the matrix's [`PrivateApt`]: own sources list, lists
//! and cache under `<out>/apt`, so the host's apt setup stays untouched), unpacked and patched
//! (`patches.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use super::patches::{self, Applied};
use super::{fmt_dur, run_quiet};
use crate::matrix::apt::{MIRROR, PrivateApt, SECURITY_MIRROR};

/// The keyring the private sources are signed by (package debian-archive-keyring).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The suites searched for kernel sources: the host's release (6.1), its backports (6.12),
/// trixie-backports (7.3) and sid (7.2 and newer).
const SUITES: &[(&str, &str)] = &[
    (MIRROR, "bookworm"),
    (MIRROR, "bookworm-updates"),
    (SECURITY_MIRROR, "bookworm-security"),
    (MIRROR, "bookworm-backports"),
    (MIRROR, "trixie-backports"),
    (MIRROR, "sid"),
];

/// The private `sources.list`: every suite signed by the Debian archive keyring.
fn sources() -> String {
    SUITES
        .iter()
        .map(|(mirror, suite)| format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n"))
        .collect()
}

/// Checks the shape of a series such as `7.3` (digits, one dot, digits).
pub fn validate_series(series: &str) -> Result<()> {
    let ok = series
        .split_once('.')
        .is_some_and(|(a, b)| is_number(a) && is_number(b));
    ensure!(
        ok,
        "--kernel {series:?}: expected a kernel series such as 7.3 or 6.1 (Debian's \
         linux-source-SERIES package)"
    );
    Ok(())
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Orders series numerically (6.12 after 6.1, 7.2 after 6.12).
fn series_key(s: &str) -> (u32, u32) {
    let (a, b) = s.split_once('.').unwrap_or((s, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// The private apt configuration under `dir`.
pub fn private_apt(dir: &Path) -> Result<PrivateApt> {
    ensure!(
        Path::new(KEYRING).is_file(),
        "{KEYRING} is missing; install it with: apt-get install -y debian-archive-keyring"
    );
    PrivateApt::new(dir, &sources())
}

/// The kernel series Debian's archive has as `linux-source-SERIES`, sorted by version.
fn available_series(apt: &PrivateApt) -> Result<Vec<String>> {
    let mut c = Command::new("apt-cache");
    c.args(apt.options()).args(["pkgnames", "linux-source-"]);
    let names = run_quiet(c)?;
    let mut out: Vec<String> = names
        .lines()
        .filter_map(|n| n.trim().strip_prefix("linux-source-"))
        .filter(|s| validate_series(s).is_ok())
        .map(str::to_owned)
        .collect();
    out.sort_by_key(|s| series_key(s));
    out.dedup();
    Ok(out)
}

/// Returns the downloaded `linux-source-SERIES_*.deb` in `dir`, downloading it through the
/// private apt configuration (with one `apt-get update` of its own lists) when absent. A series
/// Debian does not have is an error naming the ones it has.
pub fn download_source(apt_dir: &Path, series: &str, dir: &Path) -> Result<PathBuf> {
    let package = format!("linux-source-{series}");
    if dir.is_dir()
        && let Some(deb) = find_deb(dir, &package)?
    {
        eprintln!("[uml] source package: {}", deb.display());
        return Ok(deb);
    }
    let t = Instant::now();
    let apt = private_apt(apt_dir)?;
    let mut have = available_series(&apt)?;
    if !have.iter().any(|s| s == series) {
        eprintln!(
            "[uml] apt-get update of the private lists in {} (the host's apt is not touched)",
            apt_dir.display()
        );
        apt.update()?;
        have = available_series(&apt)?;
    }
    if !have.iter().any(|s| s == series) {
        bail!(
            "Debian's archive has no {package} (searched {}); it has linux-source-{{{}}}: pass \
             one of these to --kernel",
            SUITES
                .iter()
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                .join(", "),
            have.join(",")
        );
    }
    eprintln!("[uml] apt-get download {package} into {}", dir.display());
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let deb = apt.download(&package, dir)?;
    eprintln!(
        "[uml] downloaded {} in {}",
        deb.display(),
        fmt_dur(t.elapsed())
    );
    Ok(deb)
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut debs = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            debs.push(dir.join(&*name));
        }
    }
    // Deterministic choice: the lexically last name (normally only one file exists).
    debs.sort();
    Ok(debs.pop())
}

/// The package's `Version` field (e.g. `7.3.4-1~bpo13+1`), checked to be path-safe.
pub fn deb_version(deb: &Path) -> Result<String> {
    let mut c = Command::new("dpkg-deb");
    c.arg("-f").arg(deb).arg("Version");
    let v = run_quiet(c)?;
    let v = v.trim().to_string();
    ensure!(
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+~".contains(c)),
        "unexpected Version {v:?} in {}",
        deb.display()
    );
    Ok(v)
}

/// Whether a kernel source still hard-codes the host's XSAVE size, which
/// `xtask/uml-xstate.patch` fixes. Newer kernels (7.x) size the FP state at runtime from the
/// host (`host_fp_size` in `arch/um`) and need no patch.
pub fn needs_xstate_patch(src: &Path) -> Result<bool> {
    for f in [
        "arch/um/os-Linux/start_up.c",
        "arch/x86/um/os-Linux/registers.c",
    ] {
        let p = src.join(f);
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        if text.contains("host_fp_size") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Unpacks the package and its tarball into `dir` and applies the patches (the seed patch
/// always, the xstate patch when the source needs it, the vDSO patch where it applies).
/// Returns the source directory and the patches it got.
pub fn unpack_source(deb: &Path, series: &str, dir: &Path) -> Result<(PathBuf, Applied)> {
    let package = format!("linux-source-{series}");
    let src = dir.join(&package);
    let stamp = dir.join(".unpacked");
    match fs::read_to_string(&stamp) {
        Ok(s) => {
            let applied = Applied::of_source(&src, needs_xstate_patch(&src)?);
            if s.trim() == applied.id() {
                return Ok((src, applied));
            }
            eprintln!("[uml] the patches changed; unpacking the source again");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", stamp.display())),
    }
    let t = Instant::now();
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    let deb_root = dir.join("deb");
    fs::create_dir_all(&deb_root)?;
    eprintln!("[uml] unpacking {} into {}", deb.display(), dir.display());
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(deb).arg(&deb_root);
    run_quiet(x)?;
    let tarball = deb_root.join("usr/src").join(format!("{package}.tar.xz"));
    ensure!(
        tarball.is_file(),
        "{} does not contain {}",
        deb.display(),
        tarball.display()
    );
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(&tarball).arg("-C").arg(dir);
    run_quiet(tar)?;
    ensure!(
        src.join("Makefile").is_file(),
        "{} has no {package}/Makefile",
        tarball.display()
    );
    fs::remove_dir_all(&deb_root)?;
    let xstate = needs_xstate_patch(&src)?;
    if !xstate {
        eprintln!("[uml] no xstate patch: this kernel sizes the host FP state at runtime");
    }
    let applied = patches::apply(&src, dir, &package, xstate)?;
    fs::write(&stamp, applied.id())?;
    eprintln!("[uml] unpacked in {}", fmt_dur(t.elapsed()));
    Ok((src, applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_shape_and_order() {
        for ok in ["7.3", "6.1", "6.12"] {
            validate_series(ok).expect(ok);
        }
        for bad in ["", "7", "7.", ".3", "7.3.4", "7.x", "../x"] {
            assert!(validate_series(bad).is_err(), "{bad}");
        }
        let mut v = vec!["7.2", "6.12", "6.1", "7.3"];
        v.sort_by_key(|s| series_key(s));
        assert_eq!(v, ["6.1", "6.12", "7.2", "7.3"]);
    }

    #[test]
    fn sources_are_signed_and_private() {
        let s = sources();
        assert_eq!(s.lines().count(), SUITES.len());
        assert!(
            s.lines()
                .all(|l| l.contains(&format!("[signed-by={KEYRING}]")))
        );
        assert!(s.contains(" sid main"));
        assert!(s.contains(" trixie-backports main"));
    }
}
