//! `patchbay bench`: every scenario at the baseline and at k, the largest
//! faithful k over the ladder, SVG timelines and a progress bar.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::scenario::bench::{BenchEntry, LADDER, RUNS, Step, bench_scenario};
use crate::scenario::bench_dir;
use crate::scenario::{Mode, Scenario, Size};
use anyhow::Context;

use super::progress::bar;
use super::table;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Time scale k of the headline comparison (the ladder is run as well).
    #[arg(long, default_value_t = 20.0)]
    scale: f64,
    /// Realistic sizes (minutes per scenario at k = 1) instead of the defaults.
    #[arg(long)]
    realistic: bool,
    /// Print `{"results": [...]}` as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Directory for bench.json, run.json and the SVG timelines (one per
    /// comparison); `patchbay serve DIR` shows it.
    #[arg(long, default_value = "target/patchbay-bench")]
    out: PathBuf,
    /// Only these scenarios (repeatable; default: all).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Highest ladder rung to try.
    #[arg(long, default_value_t = 100.0)]
    max_k: f64,
    /// Compare time modes side by side instead of walking the ladder:
    /// comma-separated `real`, `compressed` (at --scale), `virtual` (in the
    /// User-Mode-Linux guest; needs `cargo xtask build-uml`).
    #[arg(long, value_delimiter = ',')]
    modes: Vec<Mode>,
}

fn fmt_k(k: Option<f64>) -> String {
    k.map(|k| format!("{k}")).unwrap_or_else(|| "<5".into())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let size = if args.realistic {
        Size::Realistic
    } else {
        Size::Default
    };
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    };
    let started = std::time::SystemTime::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output directory {}", args.out.display()))?;
    if !args.modes.is_empty() {
        let mut modes = args.modes.clone();
        modes.sort();
        modes.dedup();
        return super::bench_modes::run(
            &scenarios, &modes, args.scale, size, &args.out, args.json, started,
        )
        .await;
    }
    let rungs = LADDER.iter().filter(|&&k| k <= args.max_k).count();
    let per = 2 + rungs * RUNS;
    let pb = bar((per * scenarios.len()) as u64, "runs (max)");
    let mut entries: Vec<BenchEntry> = vec![];
    for s in &scenarios {
        let mut progress = |st: Step| {
            pb.set_message(format!("{} k={} run {}", st.scenario, st.k, st.run));
            pb.inc(1);
        };
        let e = bench_scenario(*s, args.scale, size, args.max_k, &mut progress).await?;
        // Runs skipped after a failing rung still count as done.
        let done = 2 + e.ladder.iter().map(|r| r.runs.len()).sum::<usize>();
        pb.inc((per - done.min(per)) as u64);
        entries.push(e);
    }
    pb.finish_and_clear();
    bench_dir::write_ladder(&args.out, &entries, args.scale, size, started)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "results": entries }))?
        );
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let v = &e.verify;
                vec![
                    v.scenario.clone(),
                    format!("{:.2}", v.baseline.wall_s),
                    format!("{:.3}", v.compressed.wall_s),
                    format!("{:.1}x", v.speedup),
                    format!(
                        "{:.1}% / {:.1}%",
                        v.timing_error.median * 100.0,
                        v.timing_error.max * 100.0
                    ),
                    if v.pass { "pass".into() } else { "FAIL".into() },
                    fmt_k(e.largest_faithful_k),
                    e.speedup_at_largest_faithful_k
                        .map(|s| format!("{s:.1}x"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        println!(
            "{}",
            table::render(
                &[
                    "scenario",
                    "k=1 wall s",
                    &format!("k={} wall s", args.scale),
                    "speedup",
                    "median / max err",
                    "fidelity",
                    "largest faithful k",
                    "speedup there",
                ],
                &rows
            )
        );
        for e in &entries {
            if let Some(m) = &e.verify.fidelity.first_mismatch {
                println!("{}: {m}", e.verify.scenario);
            }
            for t in &e.verify.clamped_timers {
                println!("{}: clamped/unsupported: {t}", e.verify.scenario);
            }
        }
        println!(
            "bench.json and SVG timelines in {} (`patchbay serve {}` shows them)",
            args.out.display(),
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
