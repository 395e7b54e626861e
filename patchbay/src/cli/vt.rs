//! `patchbay vt [--guard SECS] [--real-clock] [--ptrace] [--uml PATH] -- COMMAND...`: run a
//! command inside a User-Mode-Linux kernel in time-travel mode (virtual time).
//! `patchbay vt --profile [--json] [--uml PATH]... [--both-modes]`: measure the guest's costs.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use patchbay::vt::{self, VtClock, VtOpts};

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
    /// With --profile: print JSON lines, one per kernel and mode.
    #[arg(long, requires = "profile")]
    json: bool,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "profile")]
    command: Vec<OsString>,
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
    let opts = VtOpts {
        uml_binary: args.uml.first().cloned(),
        processes: super::vt_profile::processes(args.ptrace),
        guard: Duration::from_secs(args.guard),
        results_dir: args.results_dir,
        env: std::env::vars().collect(),
        clock: if args.real_clock {
            VtClock::Real
        } else {
            VtClock::InfCpu
        },
        ..VtOpts::default()
    };
    let out = vt::run(&args.command, &opts)?;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
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
        eprintln!(
            "patchbay vt: UML {} at {}, guest processes: {mode}",
            out.kernel.release,
            out.kernel.path.display()
        );
        eprintln!(
            "patchbay vt: exit {} in {:.3} s wall (boot to command {:.3} s)",
            out.exit_code,
            out.wall.as_secs_f64(),
            out.boot_to_command_wall
                .map(|d| d.as_secs_f64())
                .unwrap_or(f64::NAN)
        );
    }
    Ok(ExitCode::from(
        u8::try_from(out.exit_code.clamp(0, 255)).unwrap_or(1),
    ))
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
