//! `patchbay run LAB.toml [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use patchbay::labfile::{LabFile, RunReport, StepOutcome};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The lab description (see docs/toml.md).
    file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Override the file's `[lab] time-scale` (k; 1 = real time).
    #[arg(long)]
    time_scale: Option<f64>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = LabFile::load(&args.file)?;
    let json = args.json;
    let o = patchbay::labfile::RunOverrides {
        time_scale: args.time_scale,
    };
    let report = patchbay::labfile::run(&file, o, |s| {
        if !json {
            eprintln!(
                "  step {:>2} {:<5} {}",
                s.step,
                s.kind,
                if s.ok { "ok" } else { "FAILED" }
            );
        }
    })
    .await
    .with_context(|| format!("building the lab of {}", args.file.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", render(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(r: &RunReport) -> String {
    let rows: Vec<Vec<String>> = r.steps.iter().map(row).collect();
    let mut s = format!("lab {} built in {:.3} s\n", r.lab, r.build_s);
    s.push_str(&super::table::render(
        &[
            "step",
            "kind",
            "node",
            "exit",
            "wall s",
            "virtual s",
            "result",
        ],
        &rows,
    ));
    for st in r.steps.iter().filter(|s| !s.ok) {
        s.push_str(&format!(
            "\nstep {} failed: {}",
            st.step,
            st.error.as_deref().unwrap_or("?")
        ));
    }
    s.push_str(if r.ok {
        "\nall steps passed"
    } else {
        "\nFAILED"
    });
    s
}

fn row(s: &StepOutcome) -> Vec<String> {
    vec![
        s.step.to_string(),
        s.kind.to_string(),
        s.node.clone().unwrap_or_default(),
        s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        format!("{:.3}", s.wall_s),
        format!("{:.3}", s.virtual_s),
        if s.ok { "ok".into() } else { "FAILED".into() },
    ]
}
