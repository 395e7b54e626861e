//! `patchbay bench --modes real,compressed,virtual`: every scenario in real
//! time, compressed and in virtual time, side by side, with suite totals.

use std::path::Path;
use std::process::ExitCode;

use crate::scenario::bench_dir;
use crate::scenario::modes::{
    ModeStep, ModesEntry, SuiteTotals, bench_modes, runs_per_scenario, totals,
};
use crate::scenario::{Mode, Scenario, Size, VerifyResult};
use anyhow::Context;

use super::progress::bar;
use super::table;

/// Runs the three-mode benchmark and prints its table or JSON.
pub async fn run(
    scenarios: &[Scenario],
    modes: &[Mode],
    k: f64,
    size: Size,
    out: &Path,
    json: bool,
    started: std::time::SystemTime,
) -> anyhow::Result<ExitCode> {
    let cli = std::env::current_exe().context("locating the patchbay binary")?;
    let per = runs_per_scenario(modes);
    let pb = bar((per * scenarios.len()) as u64, "runs");
    let mut entries = vec![];
    for s in scenarios {
        let mut progress = |st: ModeStep| {
            pb.set_message(format!("{} {}", st.scenario, st.what));
            pb.inc(1);
        };
        let e = bench_modes(&cli, *s, k, size, modes, &mut progress).await?;
        entries.push(e);
    }
    pb.finish_and_clear();
    let suite = totals(&entries);
    bench_dir::write_modes(out, &entries, modes, k, size, &suite, started)?;
    if json {
        let v =
            serde_json::json!({ "modes": modes, "scale": k, "results": entries, "suite": suite });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print_table(&entries, &suite, k);
        println!(
            "bench.json and SVG timelines in {} (`patchbay serve {}` shows them)",
            out.display(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cell_s(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.2}")).unwrap_or_else(|| "-".into())
}

fn verdict(v: &VerifyResult) -> String {
    format!(
        "{} {:.1}%/{:.1}%",
        if v.pass { "pass" } else { "FAIL" },
        v.timing_error.median * 100.0,
        v.timing_error.max * 100.0
    )
}

fn print_table(entries: &[ModesEntry], suite: &SuiteTotals, k: f64) {
    let real_total = |e: &ModesEntry| e.real.as_ref().and_then(|r| r.total_wall_s);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let speed = |t: Option<f64>| match (real_total(e), t) {
                (Some(r), Some(t)) => format!("{:.1}x", r / t.max(1e-9)),
                _ => "-".into(),
            };
            let c = e.compressed.as_ref();
            let v = e.virtual_.as_ref();
            let ct = c.and_then(|c| c.compressed.total_wall_s);
            let vt = v.map(|v| v.compressed.wall_s);
            vec![
                e.scenario.clone(),
                cell_s(real_total(e)),
                cell_s(ct),
                speed(ct),
                c.map(verdict).unwrap_or_else(|| "-".into()),
                cell_s(v.map(|v| v.baseline.wall_s)),
                cell_s(vt),
                speed(vt),
                v.map(verdict).unwrap_or_else(|| "-".into()),
                v.map(|v| format!("{:.1}", v.timing_error.max_abs_ms))
                    .unwrap_or_else(|| "-".into()),
                v.and_then(|v| v.repeat_max_abs_ms)
                    .map(|d| format!("{d:.3}"))
                    .unwrap_or_else(|| "-".into()),
                e.virtual_vs_host
                    .as_ref()
                    .map(|h| if h.sequence_match { "same" } else { "differs" }.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &[
                "scenario",
                "real s",
                &format!("k={k} s"),
                "speedup",
                "fidelity vs real",
                "uml real s",
                "virtual s",
                "speedup",
                "fidelity vs uml real",
                "max dt ms",
                "repeat dt ms",
                "seq vs host",
            ],
            &rows
        )
    );
    let x = |v: Option<f64>| v.map(|v| format!("{v:.1}x")).unwrap_or_else(|| "-".into());
    println!(
        "suite (host wall, whole runs): real {} s, compressed {} s ({}), virtual {} s ({}; {} against the real-clock guest runs, {} s)",
        cell_s(suite.real_s),
        cell_s(suite.compressed_s),
        x(suite.compressed_speedup),
        cell_s(suite.virtual_s),
        x(suite.virtual_speedup),
        x(suite.virtual_speedup_same_kernel),
        cell_s(suite.uml_real_clock_s),
    );
    for e in entries {
        if let Some(m) = e
            .virtual_vs_host
            .as_ref()
            .and_then(|h| h.first_mismatch.as_ref())
        {
            println!("{}: guest (6.1) vs host kernel: {m}", e.scenario);
        }
        for v in [&e.compressed, &e.virtual_].into_iter().flatten() {
            if let Some(m) = &v.fidelity.first_mismatch {
                println!("{} ({:?}): {m}", e.scenario, v.mode);
            }
        }
    }
}
