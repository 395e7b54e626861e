//! `cargo xtask bench`: the benchmarks (never timed tests).
//!
//! With `--json`, stdout carries exactly one JSON object: the lab build
//! benchmark's figures at the top level (small lab) and under `scale`, and
//! one key per further section (`scenarios` with `--scenarios`, `uml` with
//! `--uml`: the guest-cost profile of every cached UML kernel). Progress
//! goes to stderr.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::test::{cargo, step, workspace_root};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also run the scenario benchmark (`patchbay bench`, minutes).
    #[arg(long)]
    pub scenarios: bool,
    /// Also profile every cached UML kernel side by side (`patchbay vt --profile`: syscall,
    /// spawn, boot, shutdown, `vt -- true`, small lab; about a minute per kernel and mode).
    #[arg(long)]
    pub uml: bool,
}

/// A further section of the JSON report: its key and how to produce it.
/// Benchmarks of other areas add theirs in [`sections`].
type Section = (&'static str, fn(&BenchArgs) -> Result<Option<Value>>);

/// The sections after the lab build benchmark, in report order. A section
/// returning `None` is left out (not asked for).
const SECTIONS: &[Section] = &[("scenarios", scenarios_json), ("uml", uml_json)];

pub fn run(args: BenchArgs) -> Result<()> {
    let root = workspace_root()?;
    if !args.json {
        let mut c = cargo(&root);
        c.args(["bench", "-p", "patchbay", "--bench", "lab_build"]);
        step(
            "lab build benchmark (1 router + 10 devices, and 10 routers + 200 devices; first TCP connect)",
            &mut c,
        )?;
        if args.scenarios {
            let mut c = cargo(&root);
            c.args([
                "run",
                "--release",
                "-p",
                "patchbay",
                "--",
                "bench",
                "--out",
                "target/bench",
            ]);
            step("scenario benchmark (patchbay bench)", &mut c)?;
        }
        if args.uml {
            crate::bench_uml::run(false)?;
        }
        return Ok(());
    }
    let mut c = cargo(&root);
    c.args([
        "bench",
        "-q",
        "-p",
        "patchbay",
        "--bench",
        "lab_build",
        "--",
        "--json",
    ]);
    let mut report = json_of("lab build benchmark", &mut c)?;
    let obj = report
        .as_object_mut()
        .context("the lab build benchmark printed JSON that is not an object")?;
    for (key, produce) in SECTIONS {
        if let Some(v) = produce(&args)? {
            obj.insert(key.to_string(), v);
        }
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn scenarios_json(args: &BenchArgs) -> Result<Option<Value>> {
    if !args.scenarios {
        return Ok(None);
    }
    let root = workspace_root()?;
    let mut c = cargo(&root);
    c.args([
        "run",
        "-q",
        "--release",
        "-p",
        "patchbay",
        "--",
        "bench",
        "--out",
        "target/bench",
        "--json",
    ]);
    json_of("scenario benchmark", &mut c).map(Some)
}

fn uml_json(args: &BenchArgs) -> Result<Option<Value>> {
    if !args.uml {
        return Ok(None);
    }
    crate::bench_uml::json().map(Some)
}

/// Runs `cmd` with stdout captured (stderr passes through) and parses its
/// stdout as one JSON value.
fn json_of(name: &str, cmd: &mut Command) -> Result<Value> {
    eprintln!("xtask: ==> {name}");
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {name}"))?;
    if !out.status.success() {
        bail!("{name} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .with_context(|| format!("{name} did not print one JSON value: {text}"))
}
