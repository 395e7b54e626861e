//! `patchbay doctor [--json]`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The time scale to show the compression plan for.
    #[arg(long, default_value_t = 20.0)]
    time_scale: f64,
    /// Kill and remove what labs of dead processes left behind (stale
    /// `patchbay.*` cgroups and their processes), then exit.
    #[arg(long)]
    cleanup: bool,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    if args.cleanup {
        let reaped = crate::doctor::cleanup_stale_labs()?;
        if args.json {
            println!("{}", serde_json::json!({ "reaped": reaped }));
        } else if reaped.is_empty() {
            println!("no stale lab cgroups");
        } else {
            for p in &reaped {
                println!("reaped {}", p.display());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = crate::doctor::probe_with_scale(args.time_scale).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.labs_supported() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
