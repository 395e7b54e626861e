//! `patchbay verify`: one scenario at the baseline and at k, compared.

use std::process::ExitCode;

use patchbay::scenario::{Scenario, Size, VerifyResult, verify};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Scenario name (see `patchbay scenario list`).
    scenario: String,
    /// Time scale k of the compressed run.
    #[arg(long)]
    scale: f64,
    /// Time scale of the baseline run.
    #[arg(long, default_value_t = 1.0)]
    baseline_scale: f64,
    /// Realistic size (minutes at k = 1) instead of the default.
    #[arg(long)]
    realistic: bool,
    /// Print exactly one JSON object.
    #[arg(long)]
    json: bool,
}

/// Prints a verify result as text: summary, per-event comparison, mismatch.
pub fn print_text(r: &VerifyResult) {
    println!(
        "{} at k={} vs k={} ({:?} size): {}",
        r.scenario,
        r.scale,
        r.baseline.scale,
        r.size,
        if r.pass { "FAITHFUL" } else { "NOT FAITHFUL" }
    );
    println!(
        "  wall: baseline {:.2} s, compressed {:.3} s, speedup {:.1}x",
        r.baseline.wall_s, r.compressed.wall_s, r.speedup
    );
    println!(
        "  events: {} vs {}, sequence {}, timing error median {:.2}% max {:.2}% (limits 5% / 15%)",
        r.baseline.events,
        r.compressed.events,
        if r.sequence_match {
            "identical"
        } else {
            "DIFFERS"
        },
        r.timing_error.median * 100.0,
        r.timing_error.max * 100.0
    );
    println!("  {:>10} {:>10} {:>7}  event", "k=1 (s)", "k (s)", "error");
    for e in &r.fidelity.events {
        let err = e
            .rel_error
            .map(|x| format!("{:.1}%", x * 100.0))
            .unwrap_or_else(|| "anchor".into());
        println!(
            "  {:>10.3} {:>10.3} {:>7}  {} {}",
            e.baseline_s, e.compressed_s, err, e.node, e.kind
        );
    }
    if let Some(m) = &r.fidelity.first_mismatch {
        println!("  first mismatch: {m}");
    }
    for t in &r.clamped_timers {
        println!("  clamped/unsupported timer shaping these events: {t}");
    }
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let s: Scenario = args.scenario.parse()?;
    let size = if args.realistic {
        Size::Realistic
    } else {
        Size::Default
    };
    let r = verify(s, args.scale, args.baseline_scale, size).await?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_text(&r);
    }
    Ok(if r.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
