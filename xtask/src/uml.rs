//! `cargo xtask build-uml [--kernel SERIES]`: build the User-Mode-Linux kernel used by the
//! virtual-time backend.
//!
//! Steps (each one is skipped when its output already exists):
//! 1. download Debian's `linux-source-SERIES` (default [`DEFAULT_KERNEL`]) into
//!    `<out>/download/SERIES/` through a private apt configuration in `<out>/apt` (sources
//!    bookworm, bookworm-backports, trixie-backports and sid, signed by the Debian archive
//!    keyring; the host's apt configuration is never changed). A series Debian does not have
//!    is an error naming the ones it has;
//! 2. `dpkg-deb -x` the package, untar the source tarball into `<out>/src-<version>/` and,
//!    only when the source still hard-codes the host's XSAVE size (6.1: no `host_fp_size`),
//!    apply `xtask/uml-xstate.patch` (hosts with AMX have 11008 bytes instead of 2696 and every
//!    guest process then dies with `ptrace set fp regs failed`); then, always,
//!    `xtask/uml-seed.patch` (the `patchbay_seed=N` boot option: the guest's randomness from a
//!    stream depending on N alone, with nothing else entering the random pool, so that the
//!    microseconds by which the host moves the guest's clock do not change it,
//!    docs/determinism.md); then, where they apply without fuzz (7.x, not 6.1),
//!    `xtask/uml-vdso.patch` (the trap-free guest clock, boot option `patchbay_vclock=`,
//!    docs/virtual-time.md) and `xtask/uml-faultaround.patch` (1 MiB of fault-around: fewer
//!    page faults, each a trap, per spawn; docs/performance.md);
//! 3. `make ARCH=um defconfig` in an out-of-tree build directory, merge `xtask/uml.config`
//!    with `scripts/kconfig/merge_config.sh -m`, `make olddefconfig`, and check that every line
//!    of the fragment is in the resulting `.config`;
//! 4. `make ARCH=um -jN linux` with a fixed build identity ([`BUILD_IDENTITY`]: timestamp,
//!    user, host and build count), so the binary, and the guest's random stream for a seed, do
//!    not depend on the machine or the time of the build; then copy the binary to
//!    `<out>/<debian version>-<hash of fragment and applied patches>/linux`, where
//!    `patchbay::vt` finds it, and remove the source and build trees (about 2 GB; `--keep-tree`
//!    keeps them). `<out>` defaults to the cache `cargo xtask test` uses
//!    (`~/.cache/patchbay/uml`, or `$PATCHBAY_CACHE_DIR/uml`).

mod patches;
mod source;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use patches::Applied;

/// The kernel series built by default and by `cargo xtask test` (the only one CI builds):
/// 7.3, with seccomp-based process handling, which measures faster than 6.1 and passes the
/// virtual-time tests, the kernel matrix's `uml` column and `patchbay verify --mode virtual`
/// for every scenario (docs/virtual-time.md, docs/performance.md). 6.1 stays buildable with
/// `--kernel 6.1`.
pub const DEFAULT_KERNEL: &str = "7.3";
/// The config fragment, embedded so the cache key does not depend on the working directory.
const FRAGMENT: &str = include_str!("../uml.config");
/// The build's identity in the kernel, fixed so that two builds of the same source, fragment
/// and patches give the same `linux` on any machine. An open random pool mixes `init_utsname()`
/// (which holds the build timestamp, user, host and build count) into its state at boot: before
/// the seed patch closed the pool, seed 1 of `examples/flaky-loss.toml` passed on one build and
/// timed out on another (docs/determinism.md).
const BUILD_IDENTITY: &[(&str, &str)] = &[
    ("KBUILD_BUILD_TIMESTAMP", "Thu Jan  1 00:00:00 UTC 2026"),
    ("KBUILD_BUILD_USER", "patchbay"),
    ("KBUILD_BUILD_HOST", "patchbay"),
    ("KBUILD_BUILD_VERSION", "1"),
];
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
    /// Kernel series, from Debian's `linux-source-SERIES` (e.g. 7.3, 7.2, 6.12, 6.1).
    #[arg(long, default_value = DEFAULT_KERNEL)]
    pub kernel: String,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Output directory (default: the cache of `cargo xtask test`, `~/.cache/patchbay/uml`).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Rebuild even when the cached binary exists.
    #[arg(long)]
    pub force: bool,
    /// Keep the unpacked source (`<out>/src-<version>`, about 1.8 GB) and the build directory
    /// (`<out>/build-<key>`, with `vmlinux`-style objects for profiling) after a successful
    /// build; by default only the kernel binary and its `.config` stay.
    #[arg(long)]
    pub keep_tree: bool,
}

/// The cache key of a build: Debian version plus a hash of the fragment, the patches applied
/// and the build identity.
fn cache_key(version: &str, applied: Applied) -> String {
    let identity: String = BUILD_IDENTITY
        .iter()
        .map(|(k, v)| format!("{k}={v}\0"))
        .collect();
    format!(
        "{version}-{:016x}",
        fnv1a64(format!("{FRAGMENT}\0{}\0{identity}", applied.id()).as_bytes())
    )
}

/// Runs `cargo xtask build-uml`; returns the path of the kernel binary.
pub fn build_uml(args: BuildUmlArgs) -> Result<PathBuf> {
    let started = Instant::now();
    source::validate_series(&args.kernel)?;
    let out = match args.out_dir {
        Some(dir) => dir,
        None => crate::cache::cache_dir("uml"),
    };
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    let wanted = parse_fragment(FRAGMENT)?;

    let deb = source::download_source(
        &out.join("apt"),
        &args.kernel,
        &out.join("download").join(&args.kernel),
    )?;
    let version = source::deb_version(&deb)?;
    // Which patches apply is decided by the source, which the version identifies: a cached
    // build under any of the keys is the right one.
    if !args.force {
        for applied in Applied::all() {
            let cached = out.join(cache_key(&version, applied)).join("linux");
            if cached.is_file() {
                eprintln!(
                    "[uml] cached: {} (remove it or pass --force to rebuild)",
                    cached.display()
                );
                eprintln!(
                    "[uml] set PATCHBAY_UML={} to use it from elsewhere",
                    cached.display()
                );
                return Ok(cached);
            }
        }
    }
    check_host_tools()?;

    let src_dir = out.join(format!("src-{version}"));
    let (src, applied) = source::unpack_source(&deb, &args.kernel, &src_dir)?;
    let key = cache_key(&version, applied);
    let cache_dir = out.join(&key);
    let cached = cache_dir.join("linux");
    let build = out.join(format!("build-{key}"));
    fs::create_dir_all(&build)?;
    configure(&src, &build, &out, &wanted)?;

    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let t = Instant::now();
    eprintln!(
        "[uml] building with make -j{jobs} (about 10 min on 2 cores); log: {}",
        build.join("build.log").display()
    );
    let mut make = make_cmd(&src, &build);
    make.arg(format!("-j{jobs}")).arg("linux");
    run_logged(make, &build.join("build.log"))?;
    eprintln!("[uml] kernel built in {}", fmt_dur(t.elapsed()));

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
    if !args.keep_tree {
        remove_trees(&[src_dir, build])?;
    }
    let size = fs::metadata(&cached)?.len();
    eprintln!(
        "[uml] done in {}: {} ({:.1} MB)",
        fmt_dur(started.elapsed()),
        cached.display(),
        size as f64 / 1e6
    );
    Ok(cached)
}

/// Removes the source and build trees of a finished build (about 2 GB that nothing reads once
/// the binary is cached); `--keep-tree` keeps them.
fn remove_trees(dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs {
        fs::remove_dir_all(dir).with_context(|| {
            format!(
                "removing {} after the build (pass --keep-tree to keep it)",
                dir.display()
            )
        })?;
    }
    eprintln!("[uml] removed the source and build trees (--keep-tree keeps them)");
    Ok(())
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

fn make_cmd(src: &Path, build: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg("ARCH=um")
        .arg(format!("O={}", build.display()));
    c.env("ARCH", "um");
    c.envs(BUILD_IDENTITY.iter().copied());
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
    eprintln!(
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
            eprintln!("[uml]   {} {}", fmt_dur(t.elapsed()), line.trim());
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
