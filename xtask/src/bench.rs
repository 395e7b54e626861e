//! `cargo xtask bench`: the benchmarks (never timed tests).

use anyhow::Result;

use crate::test::{cargo, step, workspace_root};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also run the scenario benchmark (`patchbay bench`, minutes).
    #[arg(long)]
    pub scenarios: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let root = workspace_root()?;
    let mut c = cargo(&root);
    c.args(["bench", "-p", "patchbay", "--bench", "lab_build"]);
    if args.json {
        c.args(["--", "--json"]);
    }
    step(
        "lab build benchmark (1 router + 10 devices, first TCP connect)",
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
        if args.json {
            c.arg("--json");
        }
        step("scenario benchmark (patchbay bench)", &mut c)?;
    }
    Ok(())
}
