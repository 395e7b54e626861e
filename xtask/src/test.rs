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
    /// Skip building the User-Mode-Linux kernel (the virtual-time tests
    /// then print PATCHBAY-SKIP).
    #[arg(long)]
    pub no_uml: bool,
    /// Skip the QEMU kernel matrix.
    #[arg(long)]
    pub no_matrix: bool,
    /// Skip the check against upstream patchbay 0.7 (`cargo xtask upstream-check`).
    #[arg(long)]
    pub no_upstream: bool,
    /// Extra arguments passed to `cargo nextest run` (e.g. a filter).
    #[arg(last = true)]
    pub nextest_args: Vec<String>,
}

/// Debian packages the tests need, with a binary that proves each is there:
/// the real clients of the tests (dig, curl, ping, nc, tayga; python3 for the
/// programs run in virtual time by tests/tests/vt_programs.rs).
const PACKAGES: &[(&str, &str)] = &[
    ("nftables", "nft"),
    ("iproute2", "tc"),
    ("dnsutils", "dig"),
    ("tayga", "tayga"),
    ("curl", "curl"),
    ("iputils-ping", "ping"),
    ("iputils-tracepath", "tracepath"),
    ("netcat-openbsd", "nc"),
    ("python3", "python3"),
    ("tshark", "tshark"),
    // The devtools page is tested in headless Chromium (tests/tests/devtools.rs).
    ("chromium", "chromium"),
];

/// The test binaries of `patchbay-tests` that `cargo xtask test` also runs in virtual time,
/// one UML guest per test process (`patchbay vt --` as the target runner, nextest profile
/// `vt`): labs, NAT and hole punching, firewall, links, faults, lifecycle, errors,
/// compression, and our versions of upstream 0.7's own tests on the compat API.
pub const VT_PARTITION: &[&str] = &[
    "lab_basic",
    "lab_lifecycle",
    "lab_scale",
    "nat",
    "holepunch",
    "firewall",
    "links",
    "faults",
    "lab_errors",
    "compression",
    // Upstream patchbay 0.7's own tests, ours, on the compat API (those that need netem or
    // dummy interfaces skip on hosts without them and run here).
    "upstream_nat",
    "upstream_replug",
    "upstream_presets",
    "upstream_ipv6",
    "upstream_links",
];

/// Debian packages the UML kernel build needs.
const UML_PACKAGES: &[(&str, &str)] = &[
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("make", "make"),
];

pub fn run(args: TestArgs) -> Result<()> {
    let root = workspace_root()?;
    let target = target_dir(&root);
    let cache = crate::cache::cache_dir("");
    crate::disk::report("start", &target, &cache);
    let r = run_steps(&root, args);
    crate::disk::report("end", &target, &cache);
    r
}

fn run_steps(root: &Path, args: TestArgs) -> Result<()> {
    ensure_packages()?;
    if !args.no_lint {
        step(
            "cargo fmt --check",
            cargo(root).args(["fmt", "--all", "--", "--check"]),
        )?;
        step(
            "cargo clippy",
            cargo(root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    step_fn("public API (patchbay/public-api.txt vs rustdoc)", || {
        crate::public_api::run(&crate::public_api::PublicApiArgs {
            bless: false,
            from_json: None,
        })
    })?;
    step_fn("module graph (no import cycle in patchbay/src)", || {
        crate::modgraph::run(&crate::modgraph::ModGraphArgs { check: true })
    })?;
    step_fn(
        "check-ebpf (committed object vs a fresh build)",
        crate::ebpf::check_ebpf,
    )?;
    let mut uml_env = None;
    if !args.no_uml {
        install_missing(UML_PACKAGES)?;
        let out = crate::cache::cache_dir("uml");
        // Only the default kernel: CI builds it once (about 10 min on 2 cores).
        let built = crate::uml::build_uml(crate::uml::BuildUmlArgs {
            kernel: crate::uml::DEFAULT_KERNEL.to_string(),
            jobs: None,
            out_dir: Some(out.clone()),
            force: false,
            keep_tree: false,
        })
        .context("building the UML kernel for the virtual-time tests (skip with --no-uml)")?;
        uml_env = Some(built);
    }
    // The `patchbay` CLI: the unprivileged `patchbay vt` tests and the virtual-time partition
    // run it.
    step(
        "cargo build -p patchbay (the CLI)",
        cargo(root).args(["build", "-p", "patchbay"]),
    )?;
    let nextest = has_nextest();
    if nextest {
        let mut c = cargo(root);
        c.args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(&args.nextest_args);
        if let Some(uml) = &uml_env {
            c.env("PATCHBAY_UML", uml);
        }
        step("cargo nextest run", &mut c)?;
        match &uml_env {
            Some(uml) => {
                step_fn("virtual-time partition (one UML guest per test)", || {
                    run_vt_partition(root, uml)
                })?;
            }
            None => println!("xtask: virtual-time partition skipped (--no-uml)"),
        }
    } else {
        println!(
            "xtask: cargo-nextest is not installed; falling back to `cargo test` (install it with `cargo install cargo-nextest --locked`)"
        );
        let mut c = cargo(root);
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
        cargo(root).args(["test", "--doc", "--workspace"]),
    )?;
    if args.no_upstream {
        println!("xtask: upstream check skipped (--no-upstream)");
    } else {
        step_fn(
            "upstream check (upstream 0.7.0's examples on patchbay-compat; NAT side by side)",
            || {
                crate::upstream::run(&crate::upstream::UpstreamArgs {
                    nat_only: false,
                    runs: 3,
                    json: None,
                })
            },
        )?;
    }
    if args.no_matrix {
        println!("xtask: kernel matrix skipped (--no-matrix)");
    } else {
        let name = if uml_env.is_some() {
            "kernel matrix (Debian 5.10, 6.1, 6.12 under QEMU; UML in virtual time)"
        } else {
            "kernel matrix (Debian 5.10, 6.1, 6.12 under QEMU)"
        };
        step_fn(name, || run_matrix(uml_env))?;
    }
    Ok(())
}

/// Runs [`VT_PARTITION`] with every test process in its own UML guest, in parallel up to the
/// core count, and prints the wall time.
fn run_vt_partition(root: &Path, uml: &Path) -> Result<()> {
    let cli = target_dir(root).join("debug").join("patchbay");
    anyhow::ensure!(cli.is_file(), "{} was not built", cli.display());
    let mut c = cargo(root);
    c.args([
        "nextest",
        "run",
        "--profile",
        "vt",
        "-p",
        "patchbay-tests",
        "--no-fail-fast",
    ])
    .env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER",
        format!("{} vt --", cli.display()),
    )
    .env("PATCHBAY_UML", uml);
    for t in VT_PARTITION {
        c.args(["--test", t]);
    }
    let t = std::time::Instant::now();
    let r = step(
        "cargo nextest run --profile vt (patchbay vt -- as the runner)",
        &mut c,
    );
    println!(
        "xtask: virtual-time partition took {:.1} s wall",
        t.elapsed().as_secs_f64()
    );
    r
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
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

/// The kernel-sensitive tests on the Debian kernels (the host kernel is
/// what `cargo nextest run` just covered), cached across clones in
/// `$PATCHBAY_CACHE_DIR/kernels` unless PATCHBAY_KERNEL_CACHE says otherwise,
/// and on the UML kernel in virtual time when one was built (`uml`).
fn run_matrix(uml: Option<PathBuf>) -> Result<()> {
    if let Some(why) = crate::matrix::unavailable_reason() {
        println!("xtask: kernel matrix SKIPPED: {why}");
        return Ok(());
    }
    if std::env::var_os(crate::matrix::CACHE_ENV).is_none() {
        // SAFETY: xtask is single-threaded here; the matrix reads it below.
        unsafe { std::env::set_var(crate::matrix::CACHE_ENV, crate::cache::cache_dir("kernels")) };
    }
    let mut kernels = ["5.10", "6.1", "6.12"].map(String::from).to_vec();
    if uml.is_some() {
        kernels.push(crate::matrix::UML.to_owned());
    }
    let opts = crate::matrix::MatrixOpts {
        kernels,
        uml_kernel: uml,
        bins: crate::matrix::CI_BINS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    };
    let summary = crate::matrix::run_matrix(&opts)?;
    let failures = summary.failures();
    anyhow::ensure!(
        failures.is_empty(),
        "kernel matrix failed:\n  {}",
        failures.join("\n  ")
    );
    Ok(())
}

/// Runs an in-process step, echoing its name.
fn step_fn(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("xtask: ==> {name}");
    f().with_context(|| format!("{name} failed"))
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
    install_missing(PACKAGES)
}

/// Installs those of `pkgs` whose binary is missing.
pub fn install_missing(pkgs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = pkgs
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
