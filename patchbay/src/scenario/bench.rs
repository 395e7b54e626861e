//! The benchmark: every scenario at the baseline and at k, plus the
//! **largest faithful k**: the largest rung of [`LADDER`] at which the
//! fidelity check passes in [`RUNS`] of [`RUNS`] runs, walking up from the
//! bottom and stopping at the first rung that fails (jiffy quantisation
//! makes fidelity non-monotonic between rungs, so a rung above a failure is
//! not trusted).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Scenario, ScenarioError, Size, Trace, VerifyResult, clamped_timers, compare};

/// The k ladder of the benchmark.
pub const LADDER: [f64; 10] = [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0];
/// Runs per rung; all must pass.
pub const RUNS: usize = 3;

/// One run on a rung.
#[derive(Debug, Clone, Serialize)]
pub struct RungRun {
    /// Fidelity verdict.
    pub pass: bool,
    /// Median relative error.
    pub median: f64,
    /// Max relative error.
    pub max: f64,
    /// Whether the sequences matched.
    pub sequence_match: bool,
    /// Baseline wall / this run's wall (scenario time, from the start mark).
    pub speedup: f64,
    /// Wall time including building and tearing down the lab, seconds.
    pub total_wall_s: f64,
}

/// One rung of the ladder.
#[derive(Debug, Clone, Serialize)]
pub struct Rung {
    /// k.
    pub k: f64,
    /// The runs (fewer than [`RUNS`] when one failed: the walk stops there).
    pub runs: Vec<RungRun>,
    /// All runs passed.
    pub pass: bool,
}

/// A scenario's benchmark result: the verify object at the requested k plus
/// the ladder.
#[derive(Debug, Clone, Serialize)]
pub struct BenchEntry {
    /// Baseline vs the requested k.
    #[serde(flatten)]
    pub verify: VerifyResult,
    /// Largest rung passing 3/3, `None` if even the lowest fails.
    pub largest_faithful_k: Option<f64>,
    /// Mean speedup of the 3 runs at that rung.
    pub speedup_at_largest_faithful_k: Option<f64>,
    /// Every rung tried.
    pub ladder: Vec<Rung>,
    /// The last compressed trace at the largest faithful k (for plots).
    #[serde(skip)]
    pub faithful_trace: Option<Trace>,
}

/// What the benchmark is doing, for progress display.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Scenario.
    pub scenario: Scenario,
    /// k of the run about to start.
    pub k: f64,
    /// Run number on a ladder rung (0 for the baseline and the requested k).
    pub run: usize,
}

pub(crate) async fn timed(
    s: Scenario,
    k: f64,
    size: Size,
) -> Result<(Trace, Duration), ScenarioError> {
    let t = Instant::now();
    let tr = s.run(k, size).await?;
    Ok((tr, t.elapsed()))
}

/// Benchmarks one scenario: baseline, the requested `k`, then the ladder
/// (up to `max_k`).
pub async fn bench_scenario(
    s: Scenario,
    k: f64,
    size: Size,
    max_k: f64,
    progress: &mut dyn FnMut(Step),
) -> Result<BenchEntry, ScenarioError> {
    progress(Step {
        scenario: s,
        k: 1.0,
        run: 0,
    });
    let (base, base_total) = timed(s, 1.0, size).await?;
    progress(Step {
        scenario: s,
        k,
        run: 0,
    });
    let (c, c_total) = timed(s, k, size).await?;
    let mut verify = compare(s, size, base.clone(), c);
    verify.baseline.total_wall_s = Some(base_total.as_secs_f64());
    verify.compressed.total_wall_s = Some(c_total.as_secs_f64());
    verify.clamped_timers = clamped_timers(s, k).await?;
    let mut ladder = vec![];
    let mut largest = None;
    let mut faithful_trace = None;
    for &rk in LADDER.iter().filter(|&&rk| rk <= max_k) {
        let mut rung = Rung {
            k: rk,
            runs: vec![],
            pass: true,
        };
        let mut last = None;
        for run in 1..=RUNS {
            progress(Step {
                scenario: s,
                k: rk,
                run,
            });
            let (t, total) = timed(s, rk, size).await?;
            let v = compare(s, size, base.clone(), t);
            rung.runs.push(RungRun {
                pass: v.pass,
                median: v.timing_error.median,
                max: v.timing_error.max,
                sequence_match: v.sequence_match,
                speedup: v.speedup,
                total_wall_s: total.as_secs_f64(),
            });
            let ok = v.pass;
            last = Some(v.traces[1].clone());
            if !ok {
                rung.pass = false;
                break;
            }
        }
        let pass = rung.pass;
        if pass {
            let mean = rung.runs.iter().map(|r| r.speedup).sum::<f64>() / rung.runs.len() as f64;
            largest = Some((rk, mean));
            faithful_trace = last;
        }
        ladder.push(rung);
        if !pass {
            break;
        }
    }
    Ok(BenchEntry {
        verify,
        largest_faithful_k: largest.map(|l| l.0),
        speedup_at_largest_faithful_k: largest.map(|l| l.1),
        ladder,
        faithful_trace,
    })
}
