//! `patchbay doctor [--json]`.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = patchbay::doctor::probe().await;
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
