//! Command-line front end: argument parsing and output rendering only; the
//! work is done by the library.

mod bench;
mod bench_modes;
mod demo;
mod doctor;
mod progress;
mod run;
mod scenario;
mod serve;
mod table;
mod verify;
mod vt;

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

pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`patchbay doctor --json | head`), like
    // other Unix tools, instead of panicking in println!.
    // SAFETY: setting a signal disposition has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
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
