//! `patchbay vt [--guard SECS] [--real-clock] [--uptime SECS] -- COMMAND...`: run a command
//! inside a User-Mode-Linux kernel in time-travel mode (virtual time).

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
    /// Virtual uptime (seconds) at which the command starts; costs no wall time. 0 starts it
    /// right after boot.
    #[arg(long, default_value_t = vt::DEFAULT_UPTIME.as_secs_f64())]
    uptime: f64,
    /// Print boot and wall times on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

pub fn run(args: VtArgs) -> anyhow::Result<ExitCode> {
    let uptime = Duration::try_from_secs_f64(args.uptime)
        .map_err(|e| anyhow::anyhow!("--uptime {}: {e}", args.uptime))?;
    let opts = VtOpts {
        uptime,
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
    }
    Ok(ExitCode::from(
        u8::try_from(out.exit_code.clamp(0, 255)).unwrap_or(1),
    ))
}
