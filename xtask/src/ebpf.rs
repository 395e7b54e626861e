//! `build-ebpf`, `setup-ebpf` and `check-ebpf`: the workflow around the committed eBPF object.
//!
//! The programs in `patchbay-ebpf/` need nightly (`-Z build-std=core`, target
//! `bpfel-unknown-none`) and bpf-linker. Their output is committed as
//! `patchbay/src/bpf/patchbay.bpf.o`, so ordinary builds need only stable. `check-ebpf`
//! rebuilds into a temporary directory and byte-compares with the committed object; on a
//! mismatch it names the ELF sections that differ. Under `CI=true` it installs bpf-linker
//! (as `setup-ebpf` does) instead of skipping.

use std::{
    collections::BTreeMap,
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

/// Whether this is a CI run (`CI=true`, as CI services set it).
fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `cargo xtask check-ebpf`: fresh build into a temporary target dir, byte-compared with the
/// committed object. When nightly or bpf-linker are missing it prints `SKIPPED: <reason>` and
/// succeeds, except under `CI=true`, where it installs bpf-linker first (`setup-ebpf`) and
/// fails if the toolchain still cannot run. Fails on a mismatch, naming the sections.
pub fn check_ebpf() -> Result<()> {
    let root = repo_root()?;
    if let Some(why) = toolchain_missing() {
        if !in_ci() {
            println!("check-ebpf SKIPPED: {why} (under CI=true it is installed instead)");
            return Ok(());
        }
        println!("check-ebpf: {why}; CI=true, so installing it (cargo xtask setup-ebpf)");
        setup_ebpf().context("CI=true: installing the eBPF toolchain for check-ebpf")?;
        if let Some(why) = toolchain_missing() {
            bail!("CI=true: the eBPF toolchain still cannot run after setup-ebpf: {why}");
        }
    }
    let tmp = env::temp_dir().join(format!("patchbay-check-ebpf-{}", std::process::id()));
    let result = build_into(&root, &tmp).and_then(|built| {
        let fresh = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
        let committed_path = root.join(OBJECT_PATH);
        let committed = fs::read(&committed_path)
            .with_context(|| format!("reading {}", committed_path.display()))?;
        if fresh != committed {
            let sections = match section_diff(&committed, &fresh) {
                Ok(d) if d.is_empty() => "no section differs (headers or layout do)".to_string(),
                Ok(d) => d.join("; "),
                Err(e) => format!("could not compare sections: {e:#}"),
            };
            bail!(
                "{OBJECT_PATH} ({} bytes) differs from a fresh build ({} bytes): {sections}; \
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

/// The sections of an ELF object by name, with their contents (`SHT_NOBITS` sections have
/// none; their size is kept). Repeated names get a `#n` suffix.
fn sections(elf: &[u8]) -> Result<BTreeMap<String, (u64, Vec<u8>)>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).context("parsing the ELF object")?;
    let mut out = BTreeMap::new();
    for section in file.sections() {
        let name = section.name().unwrap_or("<unnamed>").to_string();
        let data = section.data().unwrap_or_default().to_vec();
        let mut key = name.clone();
        let mut n = 1;
        while out.contains_key(&key) {
            n += 1;
            key = format!("{name}#{n}");
        }
        out.insert(key, (section.size(), data));
    }
    Ok(out)
}

/// The sections that differ between two ELF objects, described one per entry
/// (`.BTF.ext: 1200 -> 1210 bytes`, `.text: content differs`, `only in fresh: maps`).
fn section_diff(committed: &[u8], fresh: &[u8]) -> Result<Vec<String>> {
    let (a, b) = (sections(committed)?, sections(fresh)?);
    let mut out = vec![];
    for (name, (size_a, data_a)) in &a {
        match b.get(name) {
            None => out.push(format!("only in the committed object: {name}")),
            Some((size_b, _)) if size_b != size_a => {
                out.push(format!("{name}: {size_a} -> {size_b} bytes"));
            }
            Some((_, data_b)) if data_b != data_a => {
                out.push(format!("{name}: content differs ({size_a} bytes)"));
            }
            Some(_) => {}
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        out.push(format!("only in the fresh build: {name}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{parse_llvm_major, section_diff};

    /// A minimal ELF64 little-endian relocatable object with one `PROGBITS` section `name`
    /// holding `data`, plus `.shstrtab`.
    fn elf(name: &str, data: &[u8]) -> Vec<u8> {
        let mut shstr = b"\0.shstrtab\0".to_vec();
        let name_off = shstr.len() as u32;
        shstr.extend_from_slice(name.as_bytes());
        shstr.push(0);
        let data_off = 64u64;
        let shstr_off = data_off + data.len() as u64;
        let sh_off = (shstr_off + shstr.len() as u64).next_multiple_of(8);
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        out[18..20].copy_from_slice(&247u16.to_le_bytes()); // EM_BPF
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[40..48].copy_from_slice(&sh_off.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        out[60..62].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
        out[62..64].copy_from_slice(&2u16.to_le_bytes()); // e_shstrndx
        out.extend_from_slice(data);
        out.extend_from_slice(&shstr);
        out.resize(sh_off as usize, 0);
        let header = |name: u32, kind: u32, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h[48..56].copy_from_slice(&1u64.to_le_bytes());
            h
        };
        out.extend(vec![0u8; 64]);
        out.extend(header(name_off, 1, data_off, data.len() as u64));
        out.extend(header(1, 3, shstr_off, shstr.len() as u64));
        out
    }

    #[test]
    fn names_differing_sections() {
        let a = elf("license", b"GPL\0");
        assert_eq!(section_diff(&a, &a).unwrap(), Vec::<String>::new());
        let b = elf("license", b"MIT\0");
        assert_eq!(
            section_diff(&a, &b).unwrap(),
            ["license: content differs (4 bytes)"]
        );
        let c = elf("license", b"GPLv2\0");
        assert_eq!(section_diff(&a, &c).unwrap(), ["license: 4 -> 6 bytes"]);
        let d = elf("maps", b"GPL\0");
        let diff = section_diff(&a, &d).unwrap();
        assert!(diff.contains(&"only in the committed object: license".to_string()));
        assert!(diff.contains(&"only in the fresh build: maps".to_string()));
        assert!(section_diff(b"not elf", &a).is_err());
    }

    #[test]
    fn parses_llvm_major() {
        let text = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(text), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
    }
}
