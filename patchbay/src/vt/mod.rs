//! Virtual time: run a command inside a User-Mode-Linux (UML) kernel in time-travel mode.
//!
//! The guest kernel is booted with `time-travel=inf-cpu`: its clock jumps forward whenever
//! every guest task is idle, so `sleep 30`, TCP retransmit timers, netem delays, conntrack
//! expiry, `tokio::time` and `Instant` all run in *virtual* time while the real (6.1) kernel
//! network stack processes the packets. CPU work takes no virtual time at all.
//!
//! Requirements:
//! - a UML kernel built by `cargo xtask build-uml` (or `PATCHBAY_UML=/path/to/linux`), with
//!   `CONFIG_UML_TIME_TRAVEL_SUPPORT`, `CONFIG_HOSTFS`, `CONFIG_MAGIC_SYSRQ` and no SMP;
//! - an x86_64 Linux host (5.12+ for `mount_setattr`), and root or unprivileged user
//!   namespaces (an unprivileged caller enters one first): the UML process runs in a private
//!   mount namespace where the whole host tree is read-only except the run's own directories,
//!   and (via util-linux `unshare --pid --fork --kill-child`) as PID 1 of its own PID
//!   namespace, so no guest process can outlive it;
//! - `/bin/sh`, `mount` (util-linux, for `mount -a -T`), `sync`, `sleep` and `env` on the
//!   host (the guest runs the host's binaries through hostfs).
//!
//! Guest layout: the host root via hostfs, read-only underneath a writable overlay whose
//! writes stay in guest memory ([`GuestRoot`]); fresh proc, sysfs, devtmpfs, cgroup2
//! (`/sys/fs/cgroup`), bpffs; empty tmpfs over `/tmp`, `/run`, `/var/tmp` and `/dev/shm`; `lo`
//! up; the results directory mounted writable at the same path as on the host.
//! The command gets `PATCHBAY_VT=1`, `PATCHBAY_VT_RESULTS=<results dir>` and
//! `GLIBC_TUNABLES=glibc.malloc.arena_max=1` (one malloc arena: fewer traps on one guest CPU;
//! the caller's own `GLIBC_TUNABLES`, even empty, replaces it) in its environment.
//!
//! Results directory layout (written by the guest): `stdout`, `stderr`, `exit_code`,
//! `uptime` (guest `/proc/uptime` seconds at command start and end), and `error` only when the
//! command or working directory is missing.

mod boot;
mod cpu;
mod echo;
mod error;
mod fsutil;
mod kernel;
mod locate;
mod paths;
mod process;
mod root;
mod rundir;
mod script;
mod userns;

pub(crate) use fsutil::{host_tool, io};
use fsutil::{os_concat, read_optional, write_executable};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use error::VtError;
pub use kernel::GuestProcesses;
internal! {
    pub use kernel::{UmlKernel, probe as probe_kernel};
}
pub use locate::find_uml_binary;
pub use root::GuestRoot;
pub(crate) use rundir::RESULT_FILES;

/// Environment variable naming the UML `linux` binary; overrides the search.
pub const UML_ENV: &str = "PATCHBAY_UML";

/// The guest's wall clock at boot in seeded virtual-time runs (`time-travel-start`):
/// 2026-01-01T00:00:00Z, in seconds since the Unix epoch.
pub const GUEST_EPOCH: u64 = 1_767_225_600;

/// The environment variable that carries the seed: set in the guest for the command (tests can
/// seed their own generators from it), and read by `patchbay vt` as the default of `--seed`.
pub const SEED_ENV: &str = "PATCHBAY_VT_SEED";

/// The default virtual uptime at which the command starts ([`VtOpts::uptime`]).
pub(crate) const DEFAULT_UPTIME: Duration = Duration::from_secs(300);

/// How the guest clock runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum VtClock {
    /// `time-travel=inf-cpu`: virtual time, jumping forward whenever the guest is idle; CPU work
    /// takes no virtual time. A clock read through a syscall advances it by 256 ns; with the
    /// fast clock ([`VtOpts::fast_clock`]) reads through the vDSO do not, except every 64th read
    /// of an unchanged clock.
    #[default]
    InfCpu,
    /// No time travel: the guest clock follows the host clock. For comparing against a virtual
    /// run on the same (6.1) guest kernel.
    Real,
}

/// Options of one virtual-time run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VtOpts {
    /// Wall-clock limit for the whole run, boot included. A guest still running then is killed
    /// and [`VtError::GuardTimeout`] returned (busy loops never advance virtual time).
    pub guard: Duration,
    /// Where the guest writes `stdout`, `stderr`, `exit_code`, ...; kept after the run. `None`:
    /// a fresh directory under the host's temp dir, removed afterwards.
    pub results_dir: Option<PathBuf>,
    /// Extra environment for the command (applied on top of `PATH`, `HOME=/root`,
    /// `PATCHBAY_VT=1`, `PATCHBAY_VT_RESULTS` and `GLIBC_TUNABLES=glibc.malloc.arena_max=1`;
    /// the host environment is not inherited).
    pub env: Vec<(String, String)>,
    /// Working directory in the guest; `None`: the caller's current directory. `/tmp`, `/run`
    /// and `/var/tmp` are guest tmpfs mounts, except that the top directory holding the command
    /// or this directory under one of them is exposed read-only from the host.
    pub cwd: Option<PathBuf>,
    /// Guest memory, as the UML `mem=` parameter (e.g. `512M`).
    pub mem: String,
    /// The UML kernel; `None`: [`find_uml_binary`].
    pub uml_binary: Option<PathBuf>,
    /// Virtual (default) or real guest time.
    pub clock: VtClock,
    /// Seccomp-based (default, where the kernel has it) or ptrace-based guest processes.
    pub processes: GuestProcesses,
    /// Guest uptime (`CLOCK_MONOTONIC`, `/proc/uptime`) at which the command starts; default
    /// [`DEFAULT_UPTIME`], like a machine that has been up for a few minutes (programs such as
    /// iputils `ping` misbehave at an uptime near zero). The guest init sleeps this long before
    /// the command, which under [`VtClock::InfCpu`] is one jump of the clock and costs no wall
    /// time. Ignored with [`VtClock::Real`] (it would cost real time).
    pub uptime: Duration,
    /// The seed of the run (docs/determinism.md): the guest kernel's randomness (and so every
    /// TCP ISN, ephemeral port, `getrandom()` of the workload, netem's loss and jitter) comes
    /// from a stream depending on it alone, and under [`VtClock::InfCpu`] the guest's wall
    /// clock starts at [`GUEST_EPOCH`]: the same seed repeats a run, byte for byte.
    /// `None`: a random seed, reported in [`VtOutcome::seed`] for replay. Needs a kernel with
    /// `xtask/uml-seed.patch` ([`UmlKernel::seed`]); with an older one `Some` is an error
    /// and `None` runs unseeded.
    pub seed: Option<u64>,
    /// What the command may write on the host tree: through an overlay whose writes stay in
    /// the guest (default), or nothing.
    pub root: GuestRoot,
    /// A host directory that receives, after the command, a copy of every file the command
    /// created or changed on the host tree (the overlay's upper layer; deletions are not
    /// copied), at its absolute path below the directory: `<dir>/work/app/target/x` for
    /// `/work/app/target/x`. Files written under the guest's own tmpfs (`/tmp`, `/run`,
    /// `/var/tmp`) are not host-tree writes and stay in the guest. The directory is created
    /// and, alone with the results dir, writable for the guest. Needs [`GuestRoot::Overlay`].
    pub keep_writes: Option<PathBuf>,
    /// Read the guest clock without a trap where the kernel can ([`UmlKernel::fast_clock`]);
    /// default `true`. `false` boots such a kernel with `patchbay_vclock=off`, so every
    /// `clock_gettime`, `gettimeofday` and `time` is a syscall that moves the clock by 256 ns,
    /// as on kernels without `xtask/uml-vdso.patch` (for before/after comparisons). With the
    /// fast clock a process runs in zero virtual time: what it reads right after a kernel event
    /// carries that event's very nanosecond.
    pub fast_clock: bool,
    /// Copy the command's stdout and stderr to this process's while the guest runs (polled
    /// every 20 ms of wall time), as a command run outside a guest would show them; default
    /// `false`. [`VtOutcome::stdout`] and [`VtOutcome::stderr`] carry them either way. Reading
    /// happens on the host only: the guest, and a seeded run's bytes, do not change.
    pub echo: bool,
}

impl Default for VtOpts {
    fn default() -> Self {
        Self {
            guard: Duration::from_secs(300),
            results_dir: None,
            env: Vec::new(),
            cwd: None,
            mem: "512M".to_string(),
            uml_binary: None,
            clock: VtClock::InfCpu,
            processes: GuestProcesses::Auto,
            uptime: DEFAULT_UPTIME,
            seed: None,
            root: GuestRoot::Overlay,
            keep_writes: None,
            fast_clock: true,
            echo: false,
        }
    }
}

/// The result of a command that ran to completion in the guest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VtOutcome {
    /// The command's exit code (128 + N when killed by signal N).
    pub exit_code: i32,
    /// The command's standard output.
    pub stdout: Vec<u8>,
    /// The command's standard error.
    pub stderr: Vec<u8>,
    /// Host wall-clock time of the whole run (boot, command, power-off).
    pub wall: Duration,
    /// Guest uptime (virtual time since boot) when the command started: [`VtOpts::uptime`]
    /// plus the few milliseconds of virtual time the boot itself takes.
    pub boot_to_command: Option<Duration>,
    /// Host wall-clock time from spawning UML to the guest starting the command.
    pub boot_to_command_wall: Option<Duration>,
    /// Virtual time the command took, from the guest's clock right before the command to right
    /// after it (nanosecond resolution; each of the two clock reads adds 256 ns in virtual time).
    pub virtual_elapsed: Option<Duration>,
    /// Host wall-clock time from spawning UML to the guest reporting the command's end (the
    /// rest of [`VtOutcome::wall`] is power-off).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) command_end_wall: Option<Duration>,
    /// `PATCHBAY-VT-MARK <name>` lines the guest wrote to `/dev/console`, with the host
    /// wall-clock time since spawning UML at which each arrived (for profiling).
    pub marks: Vec<(String, Duration)>,
    /// The kernel that ran, as probed (for the command line's report).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) kernel: UmlKernel,
    /// Whether guest processes ran under seccomp (else ptrace).
    pub seccomp: bool,
    /// The seed the run used ([`VtOpts::seed`], or the random one chosen); `None` when the
    /// kernel cannot take one.
    pub seed: Option<u64>,
    /// What the caller should know about the run: a kernel without overlayfs (the host tree
    /// was read-only) or, for a failed command, without user namespaces.
    pub warnings: Vec<String>,
}

/// Set once a host refused UML's seccomp filter: later runs go straight to ptrace.
static SECCOMP_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// What UML prints when `seccomp=on` was asked for but the host does not allow the filter.
const SECCOMP_FATAL: &str = "SECCOMP userspace requested but not functional";

/// Stops every virtual-time run of this process, for good: each running guest is killed (its
/// run directory removed) and its [`run`] returns [`VtError::Interrupted`], as does every later
/// [`run`]. For a Ctrl-C handler: it is async-signal-safe (one atomic store).
pub fn interrupt() {
    process::interrupt();
}

/// Runs `argv` inside a UML guest in `time-travel=inf-cpu` mode and returns its exit code and
/// output. The UML kernel always exits 0; the exit code comes from the results directory.
///
/// Needs root (see the module docs). Nothing remains afterwards: the UML process group is
/// killed and reaped, and the run directory (and the results directory unless
/// [`VtOpts::results_dir`] was given) is removed.
///
/// ```no_run
/// use patchbay::vt::{self, VtOpts};
/// # fn main() -> Result<(), vt::VtError> {
/// let out = vt::run(&["sleep".into(), "30".into()], &VtOpts::default())?;
/// assert_eq!(out.exit_code, 0);
/// println!("{:?} of virtual time in {:?}", out.virtual_elapsed, out.wall);
/// # Ok(())
/// # }
/// ```
pub fn run(argv: &[OsString], opts: &VtOpts) -> Result<VtOutcome, VtError> {
    use std::sync::atomic::Ordering;
    if process::interrupted() {
        return Err(VtError::Interrupted);
    }
    validate_mem(&opts.mem)?;
    check_executable(argv, opts.cwd.as_deref())?;
    let binary = match &opts.uml_binary {
        Some(b) => b.clone(),
        None => find_uml_binary()?,
    };
    let kernel = kernel::probe(&binary)?;
    if opts.clock == VtClock::InfCpu && !kernel.time_travel {
        return Err(VtError::NoTimeTravel {
            binary,
            release: kernel.release,
        });
    }
    let seed = match (opts.seed, kernel.seed) {
        (Some(s), true) => Some(s),
        (None, true) => Some(boot::random_seed()),
        (None, false) => None,
        (Some(_), false) => {
            return Err(VtError::NoSeed {
                binary,
                release: kernel.release,
            });
        }
    };
    let mut seccomp = opts.processes == GuestProcesses::Auto
        && kernel.seccomp
        && !SECCOMP_REFUSED.load(Ordering::Relaxed);
    loop {
        match run_once(argv, opts, &kernel, seccomp, seed) {
            Err(VtError::NoResult { console_tail, .. })
            | Err(VtError::GuestSetup { console_tail, .. })
                if seccomp && console_tail.contains(SECCOMP_FATAL) =>
            {
                tracing::warn!(
                    "this host refused UML's seccomp filter ({SECCOMP_FATAL}); running guest \
                     processes under ptrace from now on"
                );
                SECCOMP_REFUSED.store(true, Ordering::Relaxed);
                seccomp = false;
            }
            other => return other,
        }
    }
}

/// One boot of `kernel` running `argv`.
fn run_once(
    argv: &[OsString],
    opts: &VtOpts,
    kernel: &UmlKernel,
    seccomp: bool,
    seed: Option<u64>,
) -> Result<VtOutcome, VtError> {
    let binary = kernel.path.clone();
    let rundir = rundir::RunDir::create()?;
    // `results` is where the host reads them, `guest_results` where UML sees them.
    let (results, guest_results) = match &opts.results_dir {
        Some(dir) => {
            let d = rundir::prepare_results(dir, RESULT_FILES)?;
            (d.clone(), d)
        }
        None => {
            let dir = rundir.path.join("results");
            std::fs::create_dir(&dir).map_err(io("creating the results dir", &dir))?;
            (dir, rundir.guest.join("results"))
        }
    };
    let cwd = match &opts.cwd {
        Some(c) => c.clone(),
        None => {
            std::env::current_dir().map_err(io("reading the current directory", Path::new(".")))?
        }
    };
    let env_binary = host_tool("env").ok_or_else(|| {
        VtError::InvalidArgument("no `env` binary at /usr/bin/env or /bin/env".into())
    })?;
    let mut user_env = opts.env.clone();
    user_env.retain(|(k, _)| k != SEED_ENV);
    if let Some(s) = seed {
        user_env.push((SEED_ENV.to_string(), s.to_string()));
    }
    let env = script::command_env(&guest_results, &user_env)?;
    let init = rundir.path.join("init.sh");
    let g = &rundir.guest;
    let expose = paths::exposed(argv, &cwd);
    let fstab = rundir.path.join("fstab");
    let (table, results_in_fstab) = script::fstab(&guest_results, &expose);
    std::fs::write(&fstab, table).map_err(io("writing the guest fstab", &fstab))?;
    let uptime = match opts.clock {
        VtClock::InfCpu => format!("{:.9}", opts.uptime.as_secs_f64()),
        VtClock::Real => "0".to_string(),
    };
    // Unprivileged: a non-setuid copy of the host's `mount` for the guest's first mounts.
    let own_mount = if nix::unistd::geteuid().is_root() {
        None
    } else {
        Some(rundir.copy_mount(script::OWN_MOUNT)?)
    };
    let keep = match &opts.keep_writes {
        Some(dir) => Some(root::prepare_keep_dir(dir)?),
        None => None,
    };
    let text = script::render(&script::Init {
        argv,
        env: &env,
        cwd: &cwd,
        results: &guest_results,
        env_binary: &env_binary,
        fstab: &g.join("fstab"),
        expose: &expose,
        uptime: &uptime,
        nofile: boot::nofile_limits(),
        own_mount: own_mount.as_deref(),
        results_in_fstab,
        root: opts.root,
        keep: keep.as_deref(),
    })?;
    write_executable(&init, &text)?;
    for d in ["mem", "uml"] {
        let d = rundir.path.join(d);
        std::fs::create_dir(&d).map_err(io("creating a run directory", &d))?;
    }

    // Kernels without the option (6.1) get none: they always use ptrace.
    let procs = kernel.seccomp.then_some(seccomp);
    let args = boot::kernel_args(
        &opts.mem,
        opts.clock,
        procs,
        seed,
        kernel.fast_clock && !opts.fast_clock,
        &g.join("uml"),
        &g.join("init.sh"),
    );
    let mut writable = vec![g.clone()];
    if !results.starts_with(&rundir.path) {
        writable.push(results.clone());
    }
    writable.extend(keep.clone());
    let sandbox = process::Sandbox {
        alias: (rundir.path.clone(), g.clone()),
        writable,
        mem_dir: g.join("mem"),
    };
    let started = Instant::now();
    let echo = opts.echo.then(|| echo::Echo::start(&results)).transpose()?;
    let finished = process::run_uml(&binary, &args, &sandbox, opts.guard)?;
    if let Some(e) = echo {
        e.finish();
    }
    let wall = started.elapsed();
    if finished.interrupted {
        return Err(VtError::Interrupted);
    }
    let console_tail = tail_lines(&finished.console, 40);
    let read = |name: &str| read_optional(&results.join(name));

    if let Some(kind) = read("error")? {
        return Err(match String::from_utf8_lossy(&kind).trim() {
            "cwd" => VtError::Cwd {
                why: paths::why_not_visible(&cwd, false),
                cwd,
            },
            _ => command_not_found(&argv[0], &cwd, &env),
        });
    }
    let exit_code =
        read("exit_code")?.and_then(|b| String::from_utf8_lossy(&b).trim().parse::<i32>().ok());
    let Some(exit_code) = exit_code else {
        return Err(failure_without_result(
            &finished,
            opts.guard,
            console_tail,
            &results,
        ));
    };
    let uptime = read("uptime")?.and_then(|b| parse_uptime(&String::from_utf8_lossy(&b)));
    let clock = read("clock")?.and_then(|b| parse_clock(&String::from_utf8_lossy(&b)));
    if let Some(dir) = &keep
        && let Some(e) = root::keep_error(read(root::KEEP_ERROR)?, dir)
    {
        return Err(e);
    }
    let stdout = read("stdout")?.unwrap_or_default();
    let stderr = read("stderr")?.unwrap_or_default();
    Ok(VtOutcome {
        exit_code,
        stdout,
        stderr,
        wall,
        boot_to_command: uptime.map(|(start, _)| start),
        boot_to_command_wall: finished.command_start,
        virtual_elapsed: clock.or(uptime.map(|(start, end)| end.saturating_sub(start))),
        command_end_wall: finished.command_end,
        warnings: root::warnings(&finished.marks, exit_code != 0),
        marks: finished.marks,
        kernel: kernel.clone(),
        seccomp,
        seed,
    })
}

/// A command given by path that exists on the host without an execute bit would fail in the
/// guest with exit 126 and a shell's "Permission denied": refuse it before booting, naming the
/// path and the permission.
fn check_executable(argv: &[OsString], cwd: Option<&Path>) -> Result<(), VtError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(argv0) = argv.first() else {
        return Ok(());
    };
    if !argv0.as_encoded_bytes().contains(&b'/') {
        return Ok(());
    }
    let path = match cwd {
        Some(c) => c.join(argv0),
        None => PathBuf::from(argv0),
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 == 0 => {
            Err(VtError::CommandNotFound {
                command: argv0.to_string_lossy().into_owned(),
                why: format!(
                    "{} cannot execute: it has no execute permission (mode {:o}); `chmod +x` \
                     it, or run it through its interpreter (`sh {}`)",
                    path.display(),
                    m.permissions().mode() & 0o7777,
                    path.display()
                ),
            })
        }
        // Missing or unreadable here: the guest's own lookup reports it.
        _ => Ok(()),
    }
}

/// The error for a command the guest could not find, with the host's view of why.
fn command_not_found(
    argv0: &std::ffi::OsStr,
    cwd: &Path,
    env: &std::collections::BTreeMap<String, String>,
) -> VtError {
    let command = argv0.to_string_lossy().into_owned();
    let why = if command.contains('/') {
        paths::why_not_visible(&cwd.join(argv0), true)
    } else {
        let guest_path = env.get("PATH").map_or(script::DEFAULT_PATH, String::as_str);
        match paths::host_only_command(&command, guest_path) {
            Some(host) => format!(
                "it is not on the guest's PATH ({guest_path}); on the host it is {}: pass that \
                 path, or set PATH",
                host.display()
            ),
            None => format!("it is not on the guest's PATH ({guest_path}) nor on the host's"),
        }
    };
    VtError::CommandNotFound { command, why }
}

/// Parses the guest's `clock` file: "START END" in nanoseconds of the guest's wall clock.
fn parse_clock(text: &str) -> Option<Duration> {
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    let (a, b) = (it.next()??, it.next()??);
    Some(Duration::from_nanos(b.checked_sub(a)?))
}

/// Classifies a run that produced no exit code, most specific cause first.
fn failure_without_result(
    finished: &process::Finished,
    guard: Duration,
    console_tail: String,
    results: &Path,
) -> VtError {
    let console = String::from_utf8_lossy(&finished.console);
    if let Some(excerpt) = panic_excerpt(&console) {
        return VtError::GuestPanic {
            console_tail: excerpt,
        };
    }
    if let Some(line) = console
        .lines()
        .rev()
        .find(|l| l.contains("PATCHBAY-VT-SETUP-ERROR:"))
    {
        let step = line
            .split_once("PATCHBAY-VT-SETUP-ERROR:")
            .map_or(line, |(_, s)| s)
            .trim();
        return VtError::GuestSetup {
            step: step.to_string(),
            console_tail,
        };
    }
    if finished.timed_out {
        return VtError::GuardTimeout {
            guard,
            pid: finished.pid,
            console_tail,
        };
    }
    VtError::NoResult {
        results: results.to_path_buf(),
        console_tail,
    }
}

fn validate_mem(mem: &str) -> Result<(), VtError> {
    let digits = mem.trim_end_matches(['K', 'M', 'G']);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && mem.len() - digits.len() <= 1;
    if ok {
        Ok(())
    } else {
        Err(VtError::InvalidArgument(format!(
            "mem {mem:?} must look like 512M (digits and one of K, M, G)"
        )))
    }
}

/// Parses the guest's `uptime` file: "START END" in seconds with two decimals.
fn parse_uptime(text: &str) -> Option<(Duration, Duration)> {
    let mut it = text.split_whitespace().map(|s| {
        s.parse::<f64>()
            .ok()
            .and_then(|v| Duration::try_from_secs_f64(v).ok())
    });
    Some((it.next()??, it.next()??))
}

/// The console lines leading up to a guest kernel panic and the panic line itself (the stack
/// dump after it rarely helps; the cause is printed before).
fn panic_excerpt(console: &str) -> Option<String> {
    let lines: Vec<&str> = console.lines().collect();
    let at = lines.iter().rposition(|l| l.contains("Kernel panic"))?;
    Some(lines[at.saturating_sub(20)..=at].join("\n"))
}

/// The last `n` lines of an output, lossily decoded.
pub(crate) fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests;
