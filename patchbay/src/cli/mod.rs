//! The `patchbay` command-line tool (feature `cli`, on by default): argument
//! parsing and output rendering. Its one public item is [`main`], which the
//! `patchbay` binary calls; everything it uses only for the command line
//! (the scenario bench and ladders, SVG, the web view, doctor's printing)
//! is crate-private, so a library user sees the lab API and, with
//! `default-features = false`, does not build clap, axum or indicatif.

mod bench;
mod bench_modes;
mod demo;
mod doctor;
mod progress;
mod run;
mod scenario;
mod serve;
mod setup;
mod table;
mod verify;
mod vt;
mod vt_cargo;
mod vt_profile;
mod vt_report;
mod vt_sweep;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "patchbay",
    version,
    about = "Network labs on the real Linux kernel stack, with timer compression"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a lab from a TOML file and run its steps.
    Run(run::RunArgs),
    /// Report what this host's kernel and tools support.
    Doctor(doctor::DoctorArgs),
    /// Run the built-in showcase lab.
    Demo(demo::DemoArgs),
    /// List the fidelity scenarios, or run one and print its trace.
    Scenario(scenario::ScenarioArgs),
    /// Run a scenario at real time and compressed, and compare the traces.
    Verify(verify::VerifyArgs),
    /// Benchmark every scenario: speedup, fidelity, largest faithful k.
    Bench(bench::BenchArgs),
    /// Run a command in virtual time inside a User-Mode-Linux kernel.
    Vt(vt::VtArgs),
    /// Serve run directories to a local web page (topology, timeline, logs).
    Serve(serve::ServeArgs),
}

/// Runs the `patchbay` command line with the process's arguments and returns
/// its exit code (the whole of the binary `patchbay`).
pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`patchbay doctor --json | head`), like
    // other Unix tools, instead of panicking in println!.
    crate::sys::default_sigpipe();
    let cli = Cli::parse();
    init_tracing();
    // A user namespace can only be entered while the process has one
    // thread: before the runtime.
    if let Cmd::Run(a) = &cli.cmd
        && let Err(e) = run::before_runtime(a)
    {
        eprintln!("error: {}", chain(&e));
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Run(a) => run::run(a).await,
            Cmd::Doctor(a) => doctor::run(a).await,
            Cmd::Demo(a) => demo::run(a).await,
            Cmd::Scenario(a) => scenario::run(a).await,
            Cmd::Verify(a) => verify::run(a).await,
            Cmd::Bench(a) => bench::run(a).await,
            Cmd::Vt(a) => vt::run(a),
            Cmd::Serve(a) => serve::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Prints `tracing` events to stderr when asked: `RUST_LOG` (an env-filter
/// spec) and `PATCHBAY_BPF_LOG=<level>` (the eBPF programs' log records,
/// target `patchbay::bpf`). Without either, nothing is installed and the
/// output stays as it is.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let bpf_log = std::env::var(crate::bpf::LOG_ENV)
        .ok()
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v != "off" && v != "0");
    if rust_log.is_none() && bpf_log.is_none() {
        return;
    }
    let mut spec = rust_log.unwrap_or_else(|| "warn".into());
    if let Some(level) = bpf_log {
        spec.push_str(&format!(",patchbay::bpf={level}"));
    }
    let filter = match EnvFilter::try_new(&spec) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: ignoring the log filter {spec:?}: {e}");
            return;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The error and its causes, skipping a cause whose text the message before
/// it already contains (library errors include their source in their text).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
