//! `patchbay verify`: one scenario at the baseline and at k, compared.

use std::process::ExitCode;

use crate::scenario::{Mode, Scenario, Size, VerifyResult, verify, virt};
use anyhow::Context;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Scenario name (see `patchbay scenario list`).
    scenario: String,
    /// How the run under test saves time: `compressed` (on the host at
    /// --scale, against a k = 1 host run) or `virtual` (in the
    /// User-Mode-Linux guest, against a real-clock run on the same guest
    /// kernel; needs `cargo xtask build-uml`).
    #[arg(long, default_value = "compressed")]
    mode: Mode,
    /// Time scale k of the compressed run (compressed mode; required there).
    #[arg(long)]
    scale: Option<f64>,
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
    let verdict = if r.pass { "FAITHFUL" } else { "NOT FAITHFUL" };
    match r.mode {
        Mode::Real | Mode::Compressed => {
            println!(
                "{} at k={} vs k={} ({:?} size): {verdict}",
                r.scenario, r.scale, r.baseline.scale, r.size,
            );
            println!(
                "  wall: baseline {:.2} s, compressed {:.3} s, speedup {:.1}x",
                r.baseline.wall_s, r.compressed.wall_s, r.speedup
            );
        }
        Mode::Virtual => {
            println!(
                "{} in virtual time vs real clock, both in the UML guest ({:?} size): {verdict}",
                r.scenario, r.size,
            );
            println!(
                "  host wall incl. boot: real clock {:.2} s, virtual {:.3} s (boot {:.3} s), speedup {:.1}x",
                r.baseline.wall_s,
                r.compressed.wall_s,
                r.compressed.boot_wall_s.unwrap_or(f64::NAN),
                r.speedup
            );
            println!(
                "  guest clock: real clock run {:.3} s, virtual run {:.3} s; largest event difference {:.3} ms",
                r.baseline.virtual_s.unwrap_or(f64::NAN),
                r.compressed.virtual_s.unwrap_or(f64::NAN),
                r.timing_error.max_abs_ms
            );
        }
    }
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
    let r = match (args.mode, args.scale) {
        (Mode::Real, _) => {
            anyhow::bail!("verify compares a mode with real time: use --mode compressed or virtual")
        }
        (Mode::Virtual, _) => {
            let cli = std::env::current_exe().context("locating the patchbay binary")?;
            virt::verify_virtual(&cli, s, size).await?
        }
        (Mode::Compressed, Some(k)) => verify(s, k, args.baseline_scale, size).await?,
        (Mode::Compressed, None) => anyhow::bail!("--scale K is required in compressed mode"),
    };
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
