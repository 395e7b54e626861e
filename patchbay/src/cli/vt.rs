//! `patchbay vt [--guard SECS] [--real-clock] [--uptime SECS] [--ptrace] [--uml PATH] -- COMMAND...`:
//! run a command inside a User-Mode-Linux kernel in time-travel mode (virtual time).
//! `patchbay vt --seed N -- COMMAND...` repeats a run; `patchbay vt --seeds A..B [--jobs N]
//! [--partition M/N] [--stop-after-failures K] [--json] -- COMMAND...` sweeps seeds
//! (docs/determinism.md).
//! `patchbay vt --profile [--json] [--uml PATH]... [--both-modes] [--slow-clock]`: measure the
//! guest's costs.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use crate::vt::{self, VtClock, VtOpts};

#[derive(clap::Args)]
pub struct VtArgs {
    /// Wall-clock limit in seconds (a busy loop never advances virtual time).
    #[arg(long, default_value_t = 300)]
    guard: u64,
    /// Run the guest clock in real time (for side-by-side comparisons).
    #[arg(long)]
    real_clock: bool,
    /// Keep the guest's results (stdout, stderr, exit code) in this directory.
    #[arg(long)]
    results_dir: Option<std::path::PathBuf>,
    /// Virtual uptime (seconds) at which the command starts; costs no wall time. 0 starts it
    /// right after boot.
    #[arg(long, default_value_t = vt::DEFAULT_UPTIME.as_secs_f64())]
    uptime: f64,
    /// Print the kernel, the process mode, boot and wall times on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Run guest processes under ptrace even when the kernel has seccomp-based handling.
    #[arg(long)]
    ptrace: bool,
    /// The UML kernel (default: PATCHBAY_UML, else the default build). With --profile it may
    /// be given several times: one column per kernel.
    #[arg(long)]
    uml: Vec<std::path::PathBuf>,
    /// Measure the guest instead of running a command: per-syscall and per-spawn cost, boot to
    /// the first command, power-off, `vt -- true` and a small lab (host wall time).
    #[arg(long, conflicts_with_all = ["real_clock", "results_dir"])]
    profile: bool,
    /// With --profile: also profile seccomp kernels under ptrace.
    #[arg(long, requires = "profile")]
    both_modes: bool,
    /// Read the guest clock without a trap where the kernel can (`xtask/uml-vdso.patch`): the
    /// default; the flag stays for scripts that name it.
    #[arg(long, conflicts_with = "slow_clock")]
    fast_clock: bool,
    /// Make every guest clock read a syscall (`patchbay_vclock=off`), as on kernels without
    /// the trap-free clock: for before/after comparisons.
    #[arg(long)]
    slow_clock: bool,
    /// The run's seed: the same seed repeats the run byte for byte (docs/determinism.md).
    /// Default: PATCHBAY_VT_SEED, else a random one, printed so that the run can be replayed.
    #[arg(long, env = crate::vt::SEED_ENV, conflicts_with_all = ["seeds", "profile"])]
    seed: Option<u64>,
    /// Sweep: run the command once per seed of an inclusive range `A..B` (e.g. `1..1000`), one
    /// guest per seed, and report the failing seeds with a command replaying each.
    #[arg(long, conflicts_with_all = ["profile", "real_clock", "results_dir"])]
    seeds: Option<String>,
    /// With --seeds: guests run in parallel (default: the number of cores).
    #[arg(long, short, requires = "seeds")]
    jobs: Option<usize>,
    /// With --seeds: run only this machine's share `M/N` of the seeds (round robin), as
    /// nextest's `--partition count:M/N`.
    #[arg(long, requires = "seeds")]
    partition: Option<String>,
    /// With --seeds: stop starting seeds after this many failures.
    #[arg(long, requires = "seeds")]
    stop_after_failures: Option<usize>,
    /// With --profile: print JSON lines, one per kernel and mode; with --seeds: print the
    /// sweep's report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep the host tree read-only in the guest (a write fails with EROFS) instead of
    /// writable through an overlay whose writes stay in the guest.
    #[arg(long)]
    read_only_root: bool,
    /// Copy what the command wrote on the host tree (not under the guest's /tmp) to this host
    /// directory, at the same paths below it. Run by nextest, each test gets
    /// `DIR/<binary id>/<test name>`, emptied first.
    #[arg(long, env = KEEP_WRITES_ENV, conflicts_with_all = ["read_only_root", "profile", "seeds"])]
    keep_writes: Option<std::path::PathBuf>,
    /// Append one JSON line per run to this file: the nextest test name, argv, seed, exit
    /// code, wall and virtual time (for reports over a whole suite).
    #[arg(long, env = SUMMARY_ENV, conflicts_with = "profile")]
    summary: Option<std::path::PathBuf>,
    /// Let the guest's cargo run `cargo metadata` itself, instead of answering it from the
    /// host (see docs/virtual-time.md, "Cargo target runner").
    #[arg(long)]
    no_cargo_shim: bool,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "profile")]
    command: Vec<OsString>,
}

/// The environment variable behind `--keep-writes` (set it for a whole nextest run).
pub const KEEP_WRITES_ENV: &str = "PATCHBAY_VT_KEEP_WRITES";
/// The environment variable behind `--summary`.
pub const SUMMARY_ENV: &str = "PATCHBAY_VT_SUMMARY";

/// Host environment variables that differ from one invocation to the next (a test runner's
/// run id, the terminal's session, the previous command): not forwarded, so that the same
/// seed sees the same environment.
const VOLATILE_ENV: &[&str] = &[
    "_",
    "OLDPWD",
    "NEXTEST_RUN_ID",
    "NEXTEST_ATTEMPT",
    "NEXTEST_ATTEMPT_ID",
    "NEXTEST_STRESS_CURRENT",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SSH_CLIENT",
    "SSH_CONNECTION",
    "SSH_AUTH_SOCK",
    "SSH_TTY",
    "TERM_SESSION_ID",
    "WINDOWID",
    "XDG_SESSION_ID",
    "SECURITYSESSIONID",
    // nextest's slot numbers and thread count differ between a suite and a replay of one
    // of its tests.
    "NEXTEST_TEST_GLOBAL_SLOT",
    "NEXTEST_TEST_GROUP_SLOT",
    "NEXTEST_TEST_THREADS",
    crate::vt::SEED_ENV,
    KEEP_WRITES_ENV,
    SUMMARY_ENV,
];

/// The host environment forwarded into the guest: everything but [`VOLATILE_ENV`].
pub fn forwarded_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !VOLATILE_ENV.contains(&k.as_str()))
        .collect()
}

/// Prints how to replay a run (always when the seed was chosen at random, else on failure).
pub fn print_replay(seed: Option<u64>, chosen: bool, failed: bool, replay: &str) {
    let Some(seed) = seed else { return };
    if failed {
        eprintln!("patchbay vt: failed with seed {seed}; replay: {replay}");
    } else if chosen {
        eprintln!("patchbay vt: seed {seed} (replay: {replay})");
    }
}

pub fn run(args: VtArgs) -> anyhow::Result<ExitCode> {
    if args.profile {
        return profile(&args);
    }
    anyhow::ensure!(
        args.uml.len() <= 1,
        "--uml was given {} times; only --profile takes several kernels",
        args.uml.len()
    );
    let uptime = Duration::try_from_secs_f64(args.uptime)
        .map_err(|e| anyhow::anyhow!("--uptime {}: {e}", args.uptime))?;
    let mut opts = VtOpts {
        uptime,
        uml_binary: args.uml.first().cloned(),
        processes: super::vt_profile::processes(args.ptrace),
        guard: Duration::from_secs(args.guard),
        results_dir: args.results_dir.clone(),
        env: forwarded_env(),
        clock: if args.real_clock {
            VtClock::Real
        } else {
            VtClock::InfCpu
        },
        seed: args.seed,
        root: if args.read_only_root {
            vt::GuestRoot::ReadOnly
        } else {
            vt::GuestRoot::Overlay
        },
        fast_clock: args.fast_clock || !args.slow_clock,
        ..VtOpts::default()
    };
    if !args.no_cargo_shim {
        add_cargo_shim(&mut opts.env);
    }
    if let Some(range) = &args.seeds {
        let jobs = args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        return super::vt_sweep::run(super::vt_sweep::Sweep {
            range: super::vt_sweep::SeedRange::parse(range)?,
            partition: args
                .partition
                .as_deref()
                .map(super::vt_sweep::Partition::parse)
                .transpose()?,
            jobs,
            stop_after_failures: args.stop_after_failures,
            json: args.json,
            verbose: args.verbose,
            opts,
            command: args.command,
        });
    }
    if let Some(dir) = &args.keep_writes {
        opts.keep_writes = Some(super::vt_report::keep_writes_dir(dir)?);
    }
    // One guest: its output shows as it is written (a sweep's guests run in parallel and
    // report at the end).
    opts.echo = true;
    let started = std::time::Instant::now();
    let result = vt::run(&args.command, &opts);
    if let Some(file) = &args.summary {
        super::vt_report::append_summary(file, &args.command, &result, started.elapsed())?;
    }
    let out = result?;
    for w in &out.warnings {
        eprintln!("patchbay vt: warning: {w}");
    }
    if let Some(seed) = out.seed {
        print_replay(
            Some(seed),
            args.seed.is_none(),
            out.exit_code != 0,
            &super::vt_sweep::replay_command(seed, &args.command),
        );
    }
    if args.verbose {
        let mode = if out.seccomp {
            "seccomp".to_string()
        } else {
            let why = out
                .kernel
                .ptrace_reason(opts.processes)
                .unwrap_or_else(|| "the host refused the seccomp filter".into());
            format!("ptrace ({why})")
        };
        let clock = match (out.kernel.fast_clock, opts.fast_clock) {
            (true, true) => "read through the vDSO",
            (true, false) => "a syscall per read (--slow-clock)",
            (false, _) => "a syscall per read (no patchbay_vclock in this kernel)",
        };
        eprintln!(
            "patchbay vt: UML {} at {}, guest processes: {mode}, clock: {clock}",
            out.kernel.release,
            out.kernel.path.display()
        );
        eprintln!(
            "patchbay vt: exit {} in {:.3} s wall (boot to command {:.3} s wall); \
             virtual {:.6} s from uptime {:.3} s",
            out.exit_code,
            out.wall.as_secs_f64(),
            out.boot_to_command_wall
                .map(|d| d.as_secs_f64())
                .unwrap_or(f64::NAN),
            out.virtual_elapsed
                .map(|d| d.as_secs_f64())
                .unwrap_or(f64::NAN),
            out.boot_to_command
                .map(|d| d.as_secs_f64())
                .unwrap_or(f64::NAN),
        );
        // The guest init's profiling marks: where the boot's wall time went.
        let mut last = Duration::ZERO;
        for (name, at) in &out.marks {
            eprintln!(
                "patchbay vt: mark {name:<10} at {:.4} s wall (+{:.4} s)",
                at.as_secs_f64(),
                at.saturating_sub(last).as_secs_f64()
            );
            last = *at;
        }
    }
    Ok(ExitCode::from(
        u8::try_from(out.exit_code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Points the guest's `CARGO` at the shim that answers `cargo metadata` from the host (a
/// failure leaves the real cargo in place, with a warning).
fn add_cargo_shim(env: &mut Vec<(String, String)>) {
    let cache = std::env::var_os("PATCHBAY_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/patchbay"))
        });
    let (Some(cache), Ok(cwd)) = (cache, std::env::current_dir()) else {
        return;
    };
    match super::vt_cargo::shim_env(env, &cwd, &cache.join("vt-cargo")) {
        Ok(Some(vars)) => env.extend(vars),
        Ok(None) => {}
        Err(e) => eprintln!(
            "patchbay vt: warning: cargo metadata is not answered from the host ({e:#}); the \
             guest's cargo runs it"
        ),
    }
}

fn profile(args: &VtArgs) -> anyhow::Result<ExitCode> {
    use super::vt_profile;
    let kernels = if args.uml.is_empty() {
        vec![vt::find_uml_binary()?]
    } else {
        args.uml.clone()
    };
    let mut profiles = Vec::new();
    for k in kernels {
        let seccomp = vt::probe_kernel(&k)?.seccomp;
        let mut modes = vec![vt_profile::processes(args.ptrace)];
        if args.both_modes && seccomp && !args.ptrace {
            modes.push(vt::GuestProcesses::Ptrace);
        }
        for processes in modes {
            let opts = VtOpts {
                uml_binary: Some(k.clone()),
                processes,
                fast_clock: args.fast_clock || !args.slow_clock,
                ..VtOpts::default()
            };
            let p = vt_profile::profile(&opts)?;
            if args.json {
                println!("{}", serde_json::to_string(&p)?);
            } else if args.verbose {
                eprintln!("{}", vt_profile::render(std::slice::from_ref(&p)));
            }
            profiles.push(p);
        }
    }
    if !args.json {
        print!("{}", vt_profile::render(&profiles));
    }
    Ok(ExitCode::SUCCESS)
}
