//! `cargo xtask build-uml`: build the User-Mode-Linux kernel used by the virtual-time backend.
//!
//! Steps (each one is skipped when its output already exists):
//! 1. `apt-get download linux-source-6.1` into `target/uml/download/` (an `apt-get update` only
//!    when apt does not know the package; the host's apt configuration is never changed);
//! 2. `dpkg-deb -x` the package, untar the source tarball into `target/uml/src-<version>/` and
//!    apply `xtask/uml-xstate.patch` (UML 6.1 hard-codes a 2696-byte host XSAVE area; hosts with
//!    AMX have 11008 bytes and every guest process then dies with `ptrace set fp regs failed`);
//! 3. `make ARCH=um defconfig` in an out-of-tree build directory, merge `xtask/uml.config`
//!    with `scripts/kconfig/merge_config.sh -m`, `make olddefconfig`, and check that every line
//!    of the fragment is in the resulting `.config`;
//! 4. `make ARCH=um -jN linux`, then copy the binary to
//!    `target/uml/<version>-<hash of fragment and patch>/linux` (the cache `patchbay::vt` finds).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// The Debian package holding the kernel source.
const SOURCE_PACKAGE: &str = "linux-source-6.1";
/// The config fragment, embedded so the cache key does not depend on the working directory.
const FRAGMENT: &str = include_str!("../uml.config");
/// Source patch applied after unpacking (see the module docs).
const PATCH: &str = include_str!("../uml-xstate.patch");
/// Host tools the kernel build needs, with the Debian package providing each.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("perl", "perl"),
    ("patch", "patch"),
];

/// Arguments of `cargo xtask build-uml`.
#[derive(Debug, clap::Args)]
pub struct BuildUmlArgs {
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Output directory (default: `<workspace>/target/uml`).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Rebuild even when the cached binary exists.
    #[arg(long)]
    pub force: bool,
}

/// Runs `cargo xtask build-uml`.
pub fn build_uml(args: BuildUmlArgs) -> Result<()> {
    let started = Instant::now();
    let out = match args.out_dir {
        Some(dir) => dir,
        None => workspace_root()?.join("target").join("uml"),
    };
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    let wanted = parse_fragment(FRAGMENT)?;

    let deb = download_source(&out.join("download"))?;
    let version = deb_version(&deb)?;
    let key = format!(
        "{version}-{:016x}",
        fnv1a64(format!("{FRAGMENT}\0{PATCH}").as_bytes())
    );
    let cache_dir = out.join(&key);
    let cached = cache_dir.join("linux");
    if cached.is_file() && !args.force {
        println!(
            "[uml] cached: {} (remove it or pass --force to rebuild)",
            cached.display()
        );
        println!(
            "[uml] set PATCHBAY_UML={} to use it from elsewhere",
            cached.display()
        );
        return Ok(());
    }
    check_host_tools()?;

    let src = unpack_source(&deb, &out.join(format!("src-{version}")))?;
    let build = out.join(format!("build-{key}"));
    fs::create_dir_all(&build)?;
    configure(&src, &build, &out, &wanted)?;

    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let t = Instant::now();
    println!(
        "[uml] building with make -j{jobs} (about 6 min on 2 cores); log: {}",
        build.join("build.log").display()
    );
    let mut make = make_cmd(&src, &build);
    make.arg(format!("-j{jobs}")).arg("linux");
    run_logged(make, &build.join("build.log"))?;
    println!("[uml] kernel built in {}", fmt_dur(t.elapsed()));

    fs::create_dir_all(&cache_dir)?;
    let tmp = cache_dir.join("linux.tmp");
    fs::copy(build.join("linux"), &tmp).with_context(|| {
        format!(
            "copying {} to {}",
            build.join("linux").display(),
            tmp.display()
        )
    })?;
    fs::copy(build.join(".config"), cache_dir.join("config"))?;
    fs::rename(&tmp, &cached)?;
    let size = fs::metadata(&cached)?.len();
    println!(
        "[uml] done in {}: {} ({:.1} MB)",
        fmt_dur(started.elapsed()),
        cached.display(),
        size as f64 / 1e6
    );
    Ok(())
}

/// The workspace root: the parent of the xtask crate.
fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", manifest.display()))
}

fn check_host_tools() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(tool, _)| !std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
        .map(|(_, pkg)| *pkg)
        .collect();
    ensure!(
        missing.is_empty(),
        "the UML kernel build needs host tools that are missing; install them with: apt-get install -y {}",
        missing.join(" ")
    );
    Ok(())
}

/// Returns the newest downloaded `linux-source-6.1_*.deb`, downloading it when absent.
fn download_source(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    if let Some(deb) = find_deb(dir)? {
        println!("[uml] source package: {}", deb.display());
        return Ok(deb);
    }
    let t = Instant::now();
    println!(
        "[uml] apt-get download {SOURCE_PACKAGE} into {}",
        dir.display()
    );
    let mut first = Command::new("apt-get");
    first.args(["download", SOURCE_PACKAGE]).current_dir(dir);
    if let Err(err) = run_quiet(first) {
        println!("[uml] download failed ({err:#}); running apt-get update and retrying");
        run_quiet({
            let mut c = Command::new("apt-get");
            c.arg("update");
            c
        })?;
        let mut again = Command::new("apt-get");
        again.args(["download", SOURCE_PACKAGE]).current_dir(dir);
        run_quiet(again)?;
    }
    let deb = find_deb(dir)?.with_context(|| {
        format!(
            "apt-get download succeeded but no {SOURCE_PACKAGE}_*.deb is in {}",
            dir.display()
        )
    })?;
    println!(
        "[uml] downloaded {} in {}",
        deb.display(),
        fmt_dur(t.elapsed())
    );
    Ok(deb)
}

fn find_deb(dir: &Path) -> Result<Option<PathBuf>> {
    let prefix = format!("{SOURCE_PACKAGE}_");
    let mut debs = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            debs.push(dir.join(&*name));
        }
    }
    // Deterministic choice: the lexically last name (Debian versions of one series sort sanely
    // enough here, and normally only one file exists).
    debs.sort();
    Ok(debs.pop())
}

fn deb_version(deb: &Path) -> Result<String> {
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

/// Unpacks the package and its tarball and applies the patch; returns the source directory.
fn unpack_source(deb: &Path, dir: &Path) -> Result<PathBuf> {
    let src = dir.join(SOURCE_PACKAGE);
    let stamp = dir.join(".unpacked");
    let patch_id = format!("{:016x}\n", fnv1a64(PATCH.as_bytes()));
    match fs::read_to_string(&stamp) {
        Ok(id) if id == patch_id => return Ok(src),
        Ok(_) => println!("[uml] the patch changed; unpacking the source again"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", stamp.display())),
    }
    let t = Instant::now();
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    let deb_root = dir.join("deb");
    fs::create_dir_all(&deb_root)?;
    println!("[uml] unpacking {} into {}", deb.display(), dir.display());
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(deb).arg(&deb_root);
    run_quiet(x)?;
    let tarball = deb_root
        .join("usr/src")
        .join(format!("{SOURCE_PACKAGE}.tar.xz"));
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
        "{} has no {SOURCE_PACKAGE}/Makefile",
        tarball.display()
    );
    fs::remove_dir_all(&deb_root)?;
    let mut patch = Command::new("patch");
    patch
        .args(["-p1", "--forward", "--batch", "-i"])
        .arg(dir.join("uml-xstate.patch"))
        .current_dir(&src);
    fs::write(dir.join("uml-xstate.patch"), PATCH)?;
    run_quiet(patch).context("applying xtask/uml-xstate.patch")?;
    fs::write(&stamp, patch_id)?;
    println!("[uml] unpacked in {}", fmt_dur(t.elapsed()));
    Ok(src)
}

fn make_cmd(src: &Path, build: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg("ARCH=um")
        .arg(format!("O={}", build.display()));
    c.env("ARCH", "um");
    c
}

fn configure(
    src: &Path,
    build: &Path,
    out: &Path,
    wanted: &[(String, Option<String>)],
) -> Result<()> {
    let t = Instant::now();
    let log = build.join("config.log");
    let mut defconfig = make_cmd(src, build);
    defconfig.arg("defconfig");
    run_logged(defconfig, &log)?;
    let fragment = out.join("uml.config");
    fs::write(&fragment, FRAGMENT)?;
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge
        .arg("-m")
        .arg("-O")
        .arg(build)
        .arg(build.join(".config"))
        .arg(&fragment);
    merge.current_dir(src).env("ARCH", "um");
    run_logged(merge, &log)?;
    let mut olddefconfig = make_cmd(src, build);
    olddefconfig.arg("olddefconfig");
    run_logged(olddefconfig, &log)?;
    let config = fs::read_to_string(build.join(".config"))?;
    let missing = verify_config(&config, wanted);
    if !missing.is_empty() {
        bail!(
            "these options from xtask/uml.config did not end up in {} (a dependency is missing \
             or the symbol does not exist in this kernel): {}",
            build.join(".config").display(),
            missing.join(", ")
        );
    }
    println!(
        "[uml] configured ({} options checked) in {}",
        wanted.len(),
        fmt_dur(t.elapsed())
    );
    Ok(())
}

/// Parses `CONFIG_X=VALUE` (Some) and `# CONFIG_X is not set` (None) lines.
fn parse_fragment(text: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# CONFIG_")
            && let Some(name) = rest.strip_suffix(" is not set")
        {
            out.push((format!("CONFIG_{name}"), None));
        } else if let Some((name, value)) = line.split_once('=')
            && name.starts_with("CONFIG_")
            && value != "m"
            && value != "n"
            && !value.is_empty()
        {
            out.push((name.to_string(), Some(value.to_string())));
        } else if !(line.is_empty() || line.starts_with('#')) {
            bail!(
                "xtask/uml.config line {}: expected CONFIG_X=VALUE (not m or n: modules are off) \
                 or '# CONFIG_X is not set', got {line:?}",
                n + 1
            );
        }
    }
    Ok(out)
}

/// Returns the fragment entries not satisfied by `config`, rendered as in the fragment.
fn verify_config(config: &str, wanted: &[(String, Option<String>)]) -> Vec<String> {
    let set: std::collections::BTreeMap<&str, &str> = config
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    wanted
        .iter()
        .filter(|(name, value)| set.get(name.as_str()).copied() != value.as_deref())
        .map(|(name, value)| match value {
            Some(v) => format!(
                "{name}={v} (got {})",
                set.get(name.as_str()).copied().unwrap_or("unset")
            ),
            None => format!("{name} (must be off)"),
        })
        .collect()
}

/// 64-bit FNV-1a: a stable hash for the cache key (no dependency needed).
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a short command, returning stdout; the error names the command and its stderr.
fn run_quiet(mut cmd: Command) -> Result<String> {
    let what = describe(&cmd);
    let out = cmd.output().with_context(|| format!("spawning `{what}`"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a long command with output appended to `log`, printing a progress line every 20 s;
/// on failure the error carries the last lines of the log.
fn run_logged(mut cmd: Command, log: &Path) -> Result<()> {
    let what = describe(&cmd);
    let mut file = fs::OpenOptions::new().create(true).append(true).open(log)?;
    writeln!(file, "$ {what}")?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning `{what}`"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut err_file = file.try_clone()?;
    let err_thread = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        let mut tail = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            writeln!(err_file, "{line}")?;
            tail.push(line);
            if tail.len() > 40 {
                tail.remove(0);
            }
        }
        Ok(tail)
    });
    let t = Instant::now();
    let mut last_print = Instant::now();
    let mut tail = Vec::new();
    let stdout = child.stdout.take().context("no stdout pipe")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        writeln!(file, "{line}")?;
        if last_print.elapsed() >= Duration::from_secs(20) {
            println!("[uml]   {} {}", fmt_dur(t.elapsed()), line.trim());
            last_print = Instant::now();
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let status = child.wait()?;
    let err_tail = err_thread
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader panicked"))??;
    if !status.success() {
        bail!(
            "`{what}` failed ({status}); full log: {}\n--- last output ---\n{}\n{}",
            log.display(),
            tail.join("\n"),
            err_tail.join("\n")
        );
    }
    Ok(())
}

fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_parses_and_verifies() {
        let wanted = parse_fragment(FRAGMENT).expect("committed fragment parses");
        assert!(wanted.contains(&("CONFIG_UML_TIME_TRAVEL_SUPPORT".into(), Some("y".into()))));
        assert!(wanted.contains(&("CONFIG_MODULES".into(), None)));
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_E=2\n";
        let w = vec![
            ("CONFIG_A".into(), Some("y".into())),
            ("CONFIG_B".into(), None),
            ("CONFIG_C".into(), None),
            ("CONFIG_D".into(), Some("y".into())),
            ("CONFIG_E".into(), Some("3".into())),
        ];
        assert_eq!(
            verify_config(config, &w),
            vec![
                "CONFIG_C (must be off)",
                "CONFIG_D=y (got unset)",
                "CONFIG_E=3 (got 2)"
            ]
        );
    }

    #[test]
    fn bad_fragment_line_is_rejected() {
        let err = parse_fragment("CONFIG_A=m\n").expect_err("=m is not allowed");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
