//! The bench directory `patchbay bench --out DIR` leaves behind: `bench.json`
//! (format `patchbay-bench`, version 1: per scenario, each comparison's
//! baseline and compressed or virtual trace on the virtual axis, k and the
//! fidelity figures), `run.json` (kind `bench`) and the SVG timelines. The
//! devtools page (`patchbay serve DIR`) reads it; `docs/artifacts.md`
//! documents it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::bench::{BenchEntry, Rung};
use super::modes::{HostComparison, ModesEntry, SuiteTotals};
use super::{Fidelity, Mode, RunSummary, Size, Trace, VerifyResult, check, svg};

/// `bench.json`'s `format`.
pub const FORMAT: &str = "patchbay-bench";
/// `bench.json`'s `version`.
pub const VERSION: u32 = 1;

/// Writing a bench directory failed.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source} (is the --out directory writable?)")]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

/// `bench.json`.
#[derive(Debug, Serialize)]
struct BenchDoc<'a> {
    format: &'static str,
    version: u32,
    /// `ladder` (the default bench) or `modes` (`--modes`).
    kind: &'static str,
    /// k of the headline comparison.
    scale: f64,
    size: Size,
    modes: &'a [Mode],
    scenarios: Vec<ScenarioDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suite: Option<&'a SuiteTotals>,
}

#[derive(Debug, Serialize)]
struct ScenarioDoc<'a> {
    scenario: String,
    /// Each a baseline and a run on one virtual axis.
    comparisons: Vec<Comparison<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    largest_faithful_k: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speedup_at_largest_faithful_k: Option<f64>,
    #[serde(skip_serializing_if = "<[Rung]>::is_empty")]
    ladder: &'a [Rung],
    #[serde(skip_serializing_if = "Option::is_none")]
    real: Option<&'a RunSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_vs_host: Option<&'a HostComparison>,
}

#[derive(Debug, Serialize)]
struct Comparison<'a> {
    /// e.g. `compressed k=20`, `largest faithful k=40`, `virtual`.
    label: String,
    mode: Mode,
    /// k of the run (1 for a virtual run, whose clock is its own).
    k: f64,
    baseline: TraceDoc,
    run: TraceDoc,
    fidelity: Fidelity,
    /// Baseline wall / run wall (scenario time).
    speedup: f64,
    /// The SVG timeline of this comparison, in the same directory.
    svg: String,
    clamped_timers: &'a [String],
}

#[derive(Debug, Serialize)]
struct TraceDoc {
    label: String,
    scale: f64,
    wall_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_wall_s: Option<f64>,
    events: Vec<EventDoc>,
}

#[derive(Debug, Serialize)]
struct EventDoc {
    virtual_ms: f64,
    node: String,
    kind: String,
    detail: String,
}

fn trace_doc(t: &Trace, label: String, sum: Option<&RunSummary>) -> TraceDoc {
    TraceDoc {
        label,
        scale: t.scale,
        wall_s: sum.map_or(t.wall.as_secs_f64(), |s| s.wall_s),
        total_wall_s: sum.and_then(|s| s.total_wall_s),
        events: t
            .events
            .iter()
            .map(|e| EventDoc {
                virtual_ms: e.virtual_at.as_secs_f64() * 1000.0,
                node: e.node.clone(),
                kind: e.kind.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
    }
}

/// A comparison from a verify result; writes its SVG as `svg_name`.
fn of_verify<'a>(
    dir: &Path,
    v: &'a VerifyResult,
    label: String,
    svg_name: String,
) -> Result<Comparison<'a>, WriteError> {
    let labels = svg::Labels::of(v);
    let [b, c] = &v.traces;
    write(dir, &svg_name, svg::timeline_of(v).as_bytes())?;
    Ok(Comparison {
        label,
        mode: v.mode,
        k: v.scale,
        baseline: trace_doc(b, labels.lanes[0].clone(), Some(&v.baseline)),
        run: trace_doc(c, labels.lanes[1].clone(), Some(&v.compressed)),
        fidelity: v.fidelity.clone(),
        speedup: v.speedup,
        svg: svg_name,
        clamped_timers: &v.clamped_timers,
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|source| WriteError { path, source })
}

fn finish(
    dir: &Path,
    doc: &BenchDoc<'_>,
    started: SystemTime,
    pass: bool,
) -> Result<(), WriteError> {
    write_json(dir, "bench.json", doc)?;
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let time_mode = if doc.modes.contains(&Mode::Virtual) && !doc.modes.contains(&Mode::Compressed)
    {
        "virtual"
    } else {
        "compressed"
    };
    let run = serde_json::json!({
        "format": "patchbay-run",
        "version": 1,
        "kind": "bench",
        "name": "bench",
        "time_mode": time_mode,
        "time_scale": doc.scale,
        "seed": null,
        "started_unix_ms": ms(started),
        "ended_unix_ms": ms(SystemTime::now()),
        "status": if pass { "passed" } else { "failed" },
        "patchbay_version": env!("CARGO_PKG_VERSION"),
    });
    write_json(dir, "run.json", &run)
}

fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> Result<(), WriteError> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| WriteError {
        path: dir.join(name),
        source: std::io::Error::other(e),
    })?;
    write(dir, name, &bytes)
}

/// Writes the directory of the ladder bench: per scenario the headline
/// comparison (k = `scale`) and, when one passed, the one at the largest
/// faithful k, with their SVGs (`<scenario>.svg`, `<scenario>-k<k>.svg`).
pub fn write_ladder(
    dir: &Path,
    entries: &[BenchEntry],
    scale: f64,
    size: Size,
    started: SystemTime,
) -> Result<(), WriteError> {
    let mut scenarios = vec![];
    for e in entries {
        let v = &e.verify;
        let s = &v.scenario;
        let mut comparisons = vec![of_verify(
            dir,
            v,
            format!("compressed k={}", v.scale),
            format!("{s}.svg"),
        )?];
        if let (Some(t), Some(k)) = (&e.faithful_trace, e.largest_faithful_k) {
            let b = &v.traces[0];
            let f = check(b, t);
            let name = format!("{s}-k{k}.svg");
            write(dir, &name, svg::timeline(b, t, &f).as_bytes())?;
            let labels = svg::Labels::compressed(b, t);
            comparisons.push(Comparison {
                label: format!("largest faithful k={k}"),
                mode: Mode::Compressed,
                k,
                baseline: trace_doc(b, labels.lanes[0].clone(), Some(&v.baseline)),
                run: trace_doc(t, labels.lanes[1].clone(), None),
                speedup: b.wall.as_secs_f64() / t.wall.as_secs_f64().max(1e-9),
                fidelity: f,
                svg: name,
                clamped_timers: &[],
            });
        }
        scenarios.push(ScenarioDoc {
            scenario: s.clone(),
            comparisons,
            largest_faithful_k: e.largest_faithful_k,
            speedup_at_largest_faithful_k: e.speedup_at_largest_faithful_k,
            ladder: &e.ladder,
            real: None,
            virtual_vs_host: None,
        });
    }
    let doc = BenchDoc {
        format: FORMAT,
        version: VERSION,
        kind: "ladder",
        scale,
        size,
        modes: &[Mode::Real, Mode::Compressed],
        scenarios,
        suite: None,
    };
    let pass = entries.iter().all(|e| e.verify.pass);
    finish(dir, &doc, started, pass)
}

/// Writes the directory of the three-mode bench (`--modes`): per scenario
/// the compressed comparison (`<scenario>.svg`) and the virtual one
/// (`<scenario>-virtual.svg`), whichever ran, and the suite totals.
pub fn write_modes(
    dir: &Path,
    entries: &[ModesEntry],
    modes: &[Mode],
    scale: f64,
    size: Size,
    suite: &SuiteTotals,
    started: SystemTime,
) -> Result<(), WriteError> {
    let mut scenarios = vec![];
    for e in entries {
        let s = &e.scenario;
        let mut comparisons = vec![];
        if let Some(v) = &e.compressed {
            let label = format!("compressed k={}", v.scale);
            comparisons.push(of_verify(dir, v, label, format!("{s}.svg"))?);
        }
        if let Some(v) = &e.virtual_ {
            let name = format!("{s}-virtual.svg");
            comparisons.push(of_verify(dir, v, "virtual".into(), name)?);
        }
        scenarios.push(ScenarioDoc {
            scenario: s.clone(),
            comparisons,
            largest_faithful_k: None,
            speedup_at_largest_faithful_k: None,
            ladder: &[],
            real: e.real.as_ref(),
            virtual_vs_host: e.virtual_vs_host.as_ref(),
        });
    }
    let doc = BenchDoc {
        format: FORMAT,
        version: VERSION,
        kind: "modes",
        scale,
        size,
        modes,
        scenarios,
        suite: Some(suite),
    };
    finish(dir, &doc, started, suite.all_faithful)
}
