//! `cargo xtask iroh-suite`: iroh 1.4.1's patchbay tests (`tests/patchbay.rs`, 74 tests) as a
//! benchmark of this project, against upstream patchbay 0.7.0 or this project's drop-in, in
//! real time or with every test in its own UML guest in virtual time (docs/iroh.md).
//!
//! - iroh's source comes from the crate registry through cargo (`cargo fetch` of a throwaway
//!   manifest; no other network) and is copied into a scratch workspace per mode under
//!   `~/.cache/patchbay/iroh-suite/<mode>/` (`$PATCHBAY_CACHE_DIR/iroh-suite`, or `--dir`),
//!   outside the repository: iroh's crate is its own workspace. Each mode keeps its own cargo
//!   target dir there, so a second run rebuilds nothing and upstream and ours builds do not
//!   evict each other.
//! - `--against upstream` builds iroh's Cargo.toml and Cargo.lock unchanged (`--locked`);
//!   `--against ours` changes exactly one dev-dependency to `patchbay/compat` of this
//!   repository (cargo then updates the lock for that package).
//! - `--virtual` runs nextest with `patchbay vt --` (this repository's CLI) as the target
//!   runner and the kernel `cargo xtask build-uml` builds; `--seeds A..B` sweeps the tests of
//!   `--filter` with `patchbay vt --seeds`.

mod nextest;
mod report;
mod source;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

/// Which patchbay iroh's tests are built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    /// Upstream patchbay 0.7.0 from the crate registry, with iroh's own Cargo.lock.
    Upstream,
    /// This repository's drop-in for upstream patchbay (`patchbay/compat`).
    Ours,
}

impl Against {
    fn name(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Ours => "ours",
        }
    }
}

/// Which ignored tests run (nextest's `--run-ignored`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunIgnored {
    /// Only tests not marked `#[ignore]`.
    Default,
    /// Only ignored tests.
    Only,
    /// Both.
    All,
}

impl RunIgnored {
    fn arg(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Only => "only",
            Self::All => "all",
        }
    }
}

/// Arguments of `cargo xtask iroh-suite`.
#[derive(clap::Args, Debug)]
pub struct IrohSuiteArgs {
    /// The patchbay iroh's tests are built against (default: ours).
    #[arg(long, value_enum)]
    pub against: Option<Against>,
    /// Every test in its own User-Mode-Linux guest in virtual time (`patchbay vt --` as the
    /// nextest runner), guests in parallel.
    #[arg(long = "virtual")]
    pub virtual_time: bool,
    /// A seed sweep of the tests chosen by --filter, in virtual time: one guest per seed and
    /// test (`A..B` inclusive, or one seed).
    #[arg(long, requires = "filter", conflicts_with = "seed")]
    pub seeds: Option<String>,
    /// With --seeds: replay each failing seed this many times and report whether the verdict
    /// and the output repeat.
    #[arg(long, default_value_t = 0, requires = "seeds")]
    pub replays: usize,
    /// The seed of every test's guest (virtual time; default: a random seed per test, shown
    /// in the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Tests (guests) at a time. Default: 1 in real time (serial, as iroh runs its suite),
    /// the number of cores in virtual time.
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// A nextest filterset choosing the tests, e.g. 'test(holepunch_simple)'.
    #[arg(long, short = 'E')]
    pub filter: Option<String>,
    /// Which ignored tests run: default (none), only, all. A sweep runs the tests of --filter
    /// whether ignored or not.
    #[arg(long, value_enum, default_value = "default")]
    pub run_ignored: RunIgnored,
    /// Virtual time: copy each test's writes (iroh's testdir with its logs) to DIR/<binary
    /// id>/<test name> on the host (`patchbay vt --keep-writes`).
    #[arg(long)]
    pub keep_writes: Option<PathBuf>,
    /// Virtual time: every guest clock read is a syscall (`patchbay vt --slow-clock`, the
    /// kernel's `patchbay_vclock=off`), for before/after comparisons of the trap-free clock.
    #[arg(long)]
    pub slow_clock: bool,
    /// Build and run iroh's test target with the release profile (`cargo nextest
    /// --cargo-profile release`); iroh's CI runs debug.
    #[arg(long)]
    pub release: bool,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// The scratch directory (default: ~/.cache/patchbay/iroh-suite).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// What a run does: the arguments, checked and with their defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub against: Against,
    pub virtual_time: bool,
    pub jobs: usize,
    pub filter: Option<String>,
    pub run_ignored: RunIgnored,
    /// A fixed seed for every guest.
    pub seed: Option<u64>,
    /// A sweep: its seeds (inclusive) and replays per failing seed.
    pub sweep: Option<(u64, u64, usize)>,
    pub keep_writes: Option<PathBuf>,
    /// Guest clock reads through the syscall (`patchbay vt --slow-clock`).
    pub slow_clock: bool,
    /// The release profile for iroh's test target.
    pub release: bool,
    pub json: bool,
}

impl Plan {
    /// Checks the arguments; `cores` is the default of `--jobs` in virtual time.
    pub fn new(args: &IrohSuiteArgs, cores: usize) -> Result<Self> {
        let sweep = match &args.seeds {
            Some(s) => {
                let (a, b) = parse_seeds(s)?;
                Some((a, b, args.replays))
            }
            None => None,
        };
        let virtual_time = args.virtual_time || sweep.is_some();
        ensure!(
            virtual_time || args.seed.is_none(),
            "--seed fixes the randomness of the guests: it needs --virtual"
        );
        ensure!(
            virtual_time || args.keep_writes.is_none(),
            "--keep-writes copies what a guest wrote: it needs --virtual (in real time the \
             tests write to the host directly)"
        );
        ensure!(
            virtual_time || !args.slow_clock,
            "--slow-clock chooses how a guest reads its clock: it needs --virtual"
        );
        ensure!(
            args.jobs != Some(0),
            "--jobs 0: at least one test must run at a time"
        );
        Ok(Self {
            against: args.against.unwrap_or(Against::Ours),
            virtual_time,
            jobs: args
                .jobs
                .unwrap_or(if virtual_time { cores.max(1) } else { 1 }),
            filter: args.filter.clone(),
            run_ignored: args.run_ignored,
            seed: args.seed,
            sweep,
            keep_writes: args.keep_writes.clone(),
            slow_clock: args.slow_clock,
            release: args.release,
            json: args.json,
        })
    }

    /// The mode's name in reports: `upstream`, `ours virtual`, ...
    pub fn label(&self) -> String {
        let time = if self.virtual_time { "virtual" } else { "real" };
        let clock = if self.slow_clock { " slow-clock" } else { "" };
        let build = if self.release { " release" } else { "" };
        format!("{} {time}{clock}{build}", self.against.name())
    }
}

/// Parses `A..B` (inclusive) or `A`; `patchbay vt --seeds` takes the same syntax.
fn parse_seeds(s: &str) -> Result<(u64, u64)> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .with_context(|| format!("--seeds {s:?}: {t:?} is not a seed (0 to 2^64-1)"))
    };
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    ensure!(a <= b, "--seeds {s:?} is empty: A..B needs A <= B");
    Ok((a, b))
}

/// The per-mode scratch directory name: `upstream`, or `ours-<hash of the repository path>`
/// (each checkout's drop-in is a different dependency).
fn work_name(against: Against, repo: &Path) -> String {
    match against {
        Against::Upstream => "upstream".into(),
        Against::Ours => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in repo.as_os_str().as_encoded_bytes() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
            format!("ours-{:08x}", h >> 32)
        }
    }
}

/// Everything a run needs on disk.
struct Setup {
    repo: PathBuf,
    /// iroh's copy for this mode.
    crate_dir: PathBuf,
    /// Its cargo target dir.
    target: PathBuf,
    /// The nextest config file.
    config: PathBuf,
    /// The `patchbay` CLI and the UML kernel (virtual time).
    vt: Option<(PathBuf, PathBuf)>,
}

pub fn run(args: IrohSuiteArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let plan = Plan::new(&args, cores)?;
    let setup = prepare(&plan, args.dir)?;
    match plan.sweep {
        Some(_) => sweep::run(&plan, &setup),
        None => run_suite(&plan, &setup),
    }
}

fn prepare(plan: &Plan, dir: Option<PathBuf>) -> Result<Setup> {
    let repo = crate::test::workspace_root()?;
    check_nextest()?;
    let compat = repo.join(source::COMPAT_DIR);
    if plan.against == Against::Ours && !compat.join("Cargo.toml").is_file() {
        bail!(
            "--against ours needs this project's drop-in for upstream patchbay at {} (package \
             `{}`, issue #22), and this checkout has no {}/Cargo.toml yet; run with \
             `--against upstream` meanwhile",
            compat.display(),
            source::COMPAT_PACKAGE,
            source::COMPAT_DIR
        );
    }
    let dir = dir.unwrap_or_else(|| crate::cache::cache_dir("iroh-suite"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let src = source::fetch_iroh(&dir)?;
    let work = dir.join(work_name(plan.against, &repo));
    let crate_dir = source::prepare(&src, &work, plan.against, &compat)?;
    let config = work.join("nextest.toml");
    std::fs::write(
        &config,
        nextest::config(&work.join("target").join("nextest"))?,
    )?;
    let vt = if plan.virtual_time {
        Some(vt_tools(&repo)?)
    } else {
        None
    };
    Ok(Setup {
        repo,
        crate_dir,
        target: work.join("target"),
        config,
        vt,
    })
}

fn check_nextest() -> Result<()> {
    let ok = Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ensure!(
        ok,
        "cargo-nextest is not installed; install it with `cargo install cargo-nextest --locked`"
    );
    Ok(())
}

/// Builds (if needed) the UML kernel of this checkout's config and the `patchbay` CLI. A
/// kernel named by `PATCHBAY_UML` is used as it is (e.g. an older build, for before/after
/// comparisons), and nothing is built for it.
fn vt_tools(repo: &Path) -> Result<(PathBuf, PathBuf)> {
    let kernel = match std::env::var_os("PATCHBAY_UML") {
        Some(k) => {
            let k = PathBuf::from(k);
            ensure!(
                k.is_file(),
                "PATCHBAY_UML={} is not a file; unset it to use the kernel `cargo xtask \
                 build-uml` builds",
                k.display()
            );
            eprintln!("iroh-suite: the UML kernel {} (PATCHBAY_UML)", k.display());
            k
        }
        None => {
            eprintln!(
                "iroh-suite: the UML kernel (cargo xtask build-uml; about 10 min when not cached)"
            );
            crate::uml::build_uml(crate::uml::BuildUmlArgs {
                kernel: crate::uml::DEFAULT_KERNEL.to_string(),
                jobs: None,
                out_dir: None,
                force: false,
                keep_tree: false,
            })
            .context("building the UML kernel for virtual time")?
        }
    };
    eprintln!("iroh-suite: cargo build -p patchbay (the `patchbay vt` runner)");
    quiet_step(
        crate::test::cargo(repo).args(["build", "-p", "patchbay"]),
        "cargo build -p patchbay",
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let cli = target.join("debug").join("patchbay");
    ensure!(cli.is_file(), "{} was not built", cli.display());
    Ok((cli, kernel))
}

/// Runs `cmd` with its stdout on our stderr (our stdout carries only the report).
fn quiet_step(cmd: &mut Command, what: &str) -> Result<std::process::ExitStatus> {
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(status)
}

/// `cargo nextest <sub>` on iroh's `patchbay` test target in the mode's workspace.
fn nextest(plan: &Plan, setup: &Setup, sub: &str) -> Command {
    let mut c = crate::test::cargo(&setup.crate_dir);
    c.args(["nextest", sub, "--test", "patchbay", "--config-file"])
        .arg(&setup.config)
        .env("CARGO_TARGET_DIR", &setup.target);
    if plan.against == Against::Upstream {
        c.arg("--locked");
    }
    if plan.release {
        c.args(["--cargo-profile", "release"]);
    }
    c
}

/// Lists the tests (building the binary first), on the host.
fn list(plan: &Plan, setup: &Setup, run_ignored: RunIgnored) -> Result<nextest::TestList> {
    eprintln!(
        "iroh-suite: building iroh's patchbay tests ({}; a first build takes minutes)",
        plan.against.name()
    );
    let mut c = nextest(plan, setup, "list");
    c.args([
        "--message-format",
        "json",
        "--run-ignored",
        run_ignored.arg(),
    ]);
    if let Some(f) = &plan.filter {
        c.args(["-E", f]);
    }
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo nextest list")?;
    ensure!(
        out.status.success(),
        "cargo nextest list failed ({}): see the build errors above",
        out.status
    );
    nextest::parse_list(&String::from_utf8_lossy(&out.stdout))
}

/// The whole target (or the filter's share) through nextest, then the report.
fn run_suite(plan: &Plan, setup: &Setup) -> Result<()> {
    let listed = list(plan, setup, plan.run_ignored)?;
    let selected = listed.tests.iter().filter(|t| t.selected).count();
    let profile = if plan.virtual_time {
        nextest::PROFILE_VT
    } else {
        nextest::PROFILE_REAL
    };
    let summary = setup.target.join(format!("{profile}-summary.jsonl"));
    if summary.exists() {
        std::fs::remove_file(&summary)?;
    }
    let junit = setup.target.join("nextest").join(profile).join("junit.xml");
    if junit.exists() {
        std::fs::remove_file(&junit)?;
    }
    let mut c = nextest(plan, setup, "run");
    c.args(["--profile", profile, "--no-fail-fast", "--run-ignored"])
        .arg(plan.run_ignored.arg())
        .arg("--test-threads")
        .arg(plan.jobs.to_string());
    if let Some(f) = &plan.filter {
        c.args(["-E", f]);
    }
    if let Some((cli, kernel)) = &setup.vt {
        let cli = cli
            .to_str()
            .context("the patchbay CLI's path is not UTF-8")?;
        ensure!(
            !cli.contains(char::is_whitespace),
            "the patchbay CLI's path {cli:?} has whitespace, which a cargo target runner \
             cannot hold; move the checkout"
        );
        let clock = if plan.slow_clock {
            " --slow-clock"
        } else {
            " --fast-clock"
        };
        c.env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER",
            format!("{cli} vt{clock} --"),
        )
        .env("PATCHBAY_UML", kernel)
        .env("PATCHBAY_VT_SUMMARY", &summary);
        if let Some(s) = plan.seed {
            c.env("PATCHBAY_VT_SEED", s.to_string());
        }
        if let Some(k) = &plan.keep_writes {
            c.env("PATCHBAY_VT_KEEP_WRITES", std::path::absolute(k)?);
        }
    }
    eprintln!(
        "iroh-suite: running {selected} tests ({}, {} at a time)",
        plan.label(),
        plan.jobs
    );
    let started = Instant::now();
    let status = c
        .stdout(std::io::stderr())
        .status()
        .context("running cargo nextest run")?;
    let wall = started.elapsed();
    let junit_text = std::fs::read_to_string(&junit).with_context(|| {
        format!(
            "nextest wrote no JUnit report at {} (it exited {status})",
            junit.display()
        )
    })?;
    let outcomes = nextest::parse_junit(&junit_text)?;
    let runs = report::read_summary(&summary)?;
    let r = report::Report::new(plan, &setup.repo, &listed, &outcomes, &runs, wall);
    r.print(plan.json)?;
    ensure!(
        r.failed == 0,
        "{} of {} tests failed ({})",
        r.failed,
        r.run,
        plan.label()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IrohSuiteArgs,
    }

    fn plan(argv: &[&str]) -> Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("iroh-suite").chain(argv.iter().copied()))?;
        Plan::new(&cli.args, 4)
    }

    #[test]
    fn defaults_are_ours_serial_in_real_time_and_one_guest_per_core_in_virtual_time() {
        let p = plan(&[]).expect("ok");
        assert_eq!(
            (p.against, p.virtual_time, p.jobs),
            (Against::Ours, false, 1)
        );
        let p = plan(&["--against", "upstream", "--virtual"]).expect("ok");
        assert_eq!(
            (p.against, p.virtual_time, p.jobs),
            (Against::Upstream, true, 4)
        );
        assert_eq!(p.label(), "upstream virtual");
        let p = plan(&["--virtual", "-j", "1", "--seed", "7", "-E", "test(x)"]).expect("ok");
        assert_eq!((p.jobs, p.seed), (1, Some(7)));
        assert_eq!(p.filter.as_deref(), Some("test(x)"));
        let p = plan(&["--virtual", "--slow-clock", "--release"]).expect("ok");
        assert_eq!(p.label(), "ours virtual slow-clock release");
    }

    #[test]
    fn a_sweep_needs_a_filter_and_runs_in_virtual_time() {
        let p = plan(&["--seeds", "1..100", "--filter", "test(a)", "--replays", "2"]).expect("ok");
        assert!(p.virtual_time);
        assert_eq!(p.sweep, Some((1, 100, 2)));
        assert_eq!(
            plan(&["--seeds", "5", "-E", "test(a)"]).expect("ok").sweep,
            Some((5, 5, 0))
        );
        assert!(plan(&["--seeds", "1..100"]).is_err(), "no filter");
        for bad in ["10..1", "x", "1..", "-1..2"] {
            let arg = format!("--seeds={bad}");
            let e = plan(&[&arg, "-E", "test(a)"]).expect_err(bad);
            assert!(e.to_string().contains("--seeds"), "{bad}: {e}");
        }
        assert!(plan(&["--seeds", "1..2", "-E", "t", "--seed", "3"]).is_err());
        assert!(
            plan(&["--replays", "2"]).is_err(),
            "replays without a sweep"
        );
    }

    #[test]
    fn real_time_refuses_what_only_guests_have() {
        let e = plan(&["--seed", "3"]).expect_err("seed without --virtual");
        assert!(e.to_string().contains("--virtual"), "{e}");
        assert!(plan(&["--keep-writes", "/tmp/k"]).is_err());
        assert!(plan(&["--jobs", "0", "--virtual"]).is_err());
        assert!(
            plan(&["--slow-clock"]).is_err(),
            "slow clock without --virtual"
        );
        assert!(plan(&["--against", "theirs"]).is_err());
    }

    #[test]
    fn each_mode_and_checkout_has_its_own_workspace() {
        let a = work_name(Against::Ours, Path::new("/work/main"));
        let b = work_name(Against::Ours, Path::new("/work/wt/x"));
        assert!(a.starts_with("ours-") && a != b, "{a} {b}");
        assert_eq!(work_name(Against::Upstream, Path::new("/x")), "upstream");
    }
}
