//! `build-ebpf`, `setup-ebpf` and `check-ebpf`: the workflow around the committed eBPF object.
//!
//! The programs in `patchbay-ebpf/` need nightly (`-Z build-std=core`, target
//! `bpfel-unknown-none`) and bpf-linker. Their output is committed as
//! `patchbay/src/bpf/patchbay.bpf.o`, so ordinary builds need only stable. `check-ebpf`
//! rebuilds into a temporary directory and byte-compares with the committed object.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// bpf-linker version known to work with nightly's LLVM 22 (see docs/ebpf.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where the committed object lives, relative to the repository root.
const OBJECT_PATH: &str = "patchbay/src/bpf/patchbay.bpf.o";
/// Name of the program binary built by `patchbay-ebpf`.
const EBPF_BIN: &str = "patchbay";
/// Fixed prefix that replaces the checkout path in debug info / BTF line info.
const REMAP_SRC: &str = "/patchbay-src";

/// Repository root (the parent of the xtask crate).
pub fn repo_root() -> Result<PathBuf> {
    let manifest = env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?;
    let root = Path::new(&manifest)
        .parent()
        .context("xtask manifest dir has no parent")?;
    Ok(root.to_path_buf())
}

/// A `Command` with the environment of the outer (stable) cargo removed, so the nested nightly
/// build is not steered by it.
pub(crate) fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer_cargo = key.starts_with("CARGO_")
            && key != "CARGO_HOME"
            && !key.starts_with("CARGO_REGISTRIES_")
            && !key.starts_with("CARGO_NET_")
            && !key.starts_with("CARGO_HTTP_");
        if outer_cargo
            || matches!(
                key,
                "RUSTUP_TOOLCHAIN" | "RUSTC" | "RUSTC_WRAPPER" | "RUSTDOC" | "RUSTFLAGS"
            )
            || key.starts_with("RUSTC_")
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// LLVM major version of the nightly toolchain, parsed from `rustc +nightly -vV`.
fn nightly_llvm_major() -> Result<u32> {
    let text = output(clean_command("rustc").args(["+nightly", "-vV"]))?;
    parse_llvm_major(&text).context("`rustc +nightly -vV` printed no `LLVM version:` line")
}

/// Parses the `LLVM version: 22.1.4` line of `rustc -vV`.
fn parse_llvm_major(text: &str) -> Option<u32> {
    let line = text.lines().find_map(|l| l.strip_prefix("LLVM version:"))?;
    line.trim().split('.').next()?.parse().ok()
}

/// `lib/` of the nightly toolchain (holds its libLLVM).
fn nightly_libdir() -> Result<PathBuf> {
    let sysroot = output(clean_command("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(Path::new(sysroot.trim()).join("lib"))
}

/// Directory with `lib/libLLVM.so` pointing at nightly's bundled libLLVM (for `LLVM_PREFIX`).
fn llvm_prefix(root: &Path, major: u32) -> Result<PathBuf> {
    let libdir = nightly_libdir()?;
    let wanted = format!("libLLVM.so.{major}");
    let lib = fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&wanted))
        })
        .with_context(|| format!("no {wanted}* in {}", libdir.display()))?;
    let prefix = root.join("target/llvm-prefix");
    let link_dir = prefix.join("lib");
    fs::create_dir_all(&link_dir).with_context(|| format!("creating {}", link_dir.display()))?;
    let link = link_dir.join("libLLVM.so");
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(&lib, &link)
        .with_context(|| format!("symlinking {} -> {}", link.display(), lib.display()))?;
    Ok(prefix)
}

/// `cargo xtask setup-ebpf`: installs nightly's rust-src and bpf-linker (built against nightly's
/// own libLLVM, since Debian's LLVM is too old).
pub fn setup_ebpf() -> Result<()> {
    let root = repo_root()?;
    run(clean_command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    let major = nightly_llvm_major()?;
    let prefix = llvm_prefix(&root, major)?;
    println!("nightly LLVM {major}; LLVM_PREFIX={}", prefix.display());
    run(clean_command("cargo")
        .args([
            "+stable",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))?;
    Ok(())
}

/// Why the eBPF toolchain cannot run here, or `None` when it can.
pub fn toolchain_missing() -> Option<String> {
    match clean_command("rustc").args(["+nightly", "-vV"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(_) => return Some("no nightly toolchain (`rustup toolchain install nightly`)".into()),
        Err(e) => return Some(format!("rustup/rustc not runnable: {e}")),
    }
    // bpf-linker links nightly's libLLVM dynamically; rustup puts it on the library path when
    // it runs the linker for `cargo +nightly`, so do the same here.
    let libdir = match nightly_libdir() {
        Ok(d) => d,
        Err(e) => return Some(format!("nightly sysroot not found: {e:#}")),
    };
    match clean_command("bpf-linker")
        .arg("--version")
        .env("LD_LIBRARY_PATH", &libdir)
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "bpf-linker --version failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(_) => Some("bpf-linker not installed (run `cargo xtask setup-ebpf`)".into()),
    }
}

/// Builds the programs with `target_dir` and returns the path of the linked object.
fn build_into(root: &Path, target_dir: &Path) -> Result<PathBuf> {
    let ebpf_dir = root.join("patchbay-ebpf");
    let home = env::var("CARGO_HOME")
        .ok()
        .or_else(|| env::var("HOME").ok().map(|h| format!("{h}/.cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let sysroot = output(clean_command("rustc").args(["+nightly", "--print", "sysroot"]))?;
    // Paths end up in BTF line info: map them to fixed prefixes so the object does not depend
    // on where the repository, the cargo home or the toolchain live.
    let remaps = [
        format!("--remap-path-prefix={}={REMAP_SRC}", ebpf_dir.display()),
        format!("--remap-path-prefix={home}/registry/src=/cargo-registry"),
        format!("--remap-path-prefix={}=/rust-sysroot", sysroot.trim()),
    ];
    let mut flags: Vec<String> = ["-C", "debuginfo=2", "-C", "link-arg=--btf"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    flags.extend(remaps);
    run(clean_command("cargo")
        .current_dir(&ebpf_dir)
        .args([
            "+nightly",
            "build",
            "--release",
            "--locked",
            "--bin",
            EBPF_BIN,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env("LD_LIBRARY_PATH", nightly_libdir()?)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f")))?;
    Ok(target_dir.join("bpfel-unknown-none/release").join(EBPF_BIN))
}

/// `cargo xtask build-ebpf`: builds the programs and copies the object to
/// `patchbay/src/bpf/patchbay.bpf.o`.
pub fn build_ebpf() -> Result<()> {
    let root = repo_root()?;
    if let Some(why) = toolchain_missing() {
        bail!("cannot build the eBPF object: {why}");
    }
    let built = build_into(&root, &root.join("patchbay-ebpf/target"))?;
    let dest = root.join(OBJECT_PATH);
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(&built, &dest)
        .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    let len = fs::metadata(&dest)?.len();
    println!("wrote {} ({len} bytes)", dest.display());
    Ok(())
}

/// `cargo xtask check-ebpf`: fresh build into a temporary target dir, byte-compared with the
/// committed object. Prints `SKIPPED: <reason>` (and succeeds) when nightly or bpf-linker are
/// missing; fails on a mismatch.
pub fn check_ebpf() -> Result<()> {
    let root = repo_root()?;
    if let Some(why) = toolchain_missing() {
        println!("check-ebpf SKIPPED: {why}");
        return Ok(());
    }
    let tmp = env::temp_dir().join(format!("patchbay-check-ebpf-{}", std::process::id()));
    let result = build_into(&root, &tmp).and_then(|built| {
        let fresh = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
        let committed_path = root.join(OBJECT_PATH);
        let committed = fs::read(&committed_path)
            .with_context(|| format!("reading {}", committed_path.display()))?;
        if fresh != committed {
            bail!(
                "{OBJECT_PATH} ({} bytes) differs from a fresh build ({} bytes); \
                 run `cargo xtask build-ebpf` and commit the result",
                committed.len(),
                fresh.len()
            );
        }
        println!(
            "check-ebpf OK: {OBJECT_PATH} matches a fresh build ({} bytes)",
            fresh.len()
        );
        Ok(())
    });
    if let Err(e) = fs::remove_dir_all(&tmp) {
        eprintln!("warning: could not remove {}: {e}", tmp.display());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::parse_llvm_major;

    #[test]
    fn parses_llvm_major() {
        let text = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(text), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
    }
}
