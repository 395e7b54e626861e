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
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = patchbay::doctor::probe_with_scale(args.time_scale).await;
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
