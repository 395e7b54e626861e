//! `patchbay scenario`: list the fidelity scenarios, or run one and print its trace.

use std::process::ExitCode;

use crate::scenario::{Scenario, Size};

#[derive(clap::Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    cmd: ScenarioCmd,
}

#[derive(clap::Subcommand)]
enum ScenarioCmd {
    /// List the scenarios.
    List,
    /// Run one scenario once and print its event trace.
    Run {
        /// Scenario name (see `patchbay scenario list`).
        scenario: String,
        /// Time scale k.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Realistic size (minutes at k = 1) instead of the default.
        #[arg(long)]
        realistic: bool,
        /// Print the trace as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        ScenarioCmd::List => {
            for s in Scenario::ALL {
                println!("{:<20} {}", s.name(), s.describe());
            }
        }
        ScenarioCmd::Run {
            scenario,
            scale,
            realistic,
            json,
        } => {
            let s: Scenario = scenario.parse()?;
            let size = if realistic {
                Size::Realistic
            } else {
                Size::Default
            };
            let t = s.run(scale, size).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!(
                    "{} at k={}: {:.3} s wall, {} events",
                    t.scenario,
                    t.scale,
                    t.wall.as_secs_f64(),
                    t.events.len()
                );
                for e in &t.events {
                    println!(
                        "  {:>10.3} s  {:<4} {:<28} {}",
                        e.virtual_at.as_secs_f64(),
                        e.node,
                        e.kind,
                        e.detail
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
