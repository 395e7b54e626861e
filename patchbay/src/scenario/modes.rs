//! The benchmark in three modes, side by side: every scenario in real time
//! on the host, compressed on the host at k, and in virtual time in the
//! User-Mode-Linux guest (see [`super::virt`]).
//!
//! Wall times are host wall-clock times of whole runs: lab build and
//! teardown included, and for guest runs also boot and power-off, so the
//! suite totals compare what a CI job would spend.

use std::path::Path;

use serde::Serialize;

use super::bench::timed;
use super::virt;
use super::{Mode, RunSummary, Scenario, ScenarioError, Size, VerifyResult, compare, fidelity};
use crate::vt::VtClock;

/// What the three-mode benchmark is doing, for progress display.
#[derive(Debug, Clone, Copy)]
pub struct ModeStep {
    /// Scenario.
    pub scenario: Scenario,
    /// The run about to start, e.g. `real`, `compressed k=20`, `uml real clock`.
    pub what: &'static str,
}

/// Runs per scenario the three-mode benchmark makes for `modes`.
pub fn runs_per_scenario(modes: &[Mode]) -> usize {
    let real = modes.contains(&Mode::Real) || modes.contains(&Mode::Compressed);
    usize::from(real)
        + usize::from(modes.contains(&Mode::Compressed))
        + 3 * usize::from(modes.contains(&Mode::Virtual))
}

/// One scenario in every requested mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModesEntry {
    /// Scenario name.
    pub scenario: String,
    /// The host real-time run (also run as the compressed mode's baseline).
    pub real: Option<RunSummary>,
    /// Compressed vs real, on the host.
    pub compressed: Option<VerifyResult>,
    /// Virtual vs a real-clock run on the same guest kernel.
    #[serde(rename = "virtual")]
    pub virtual_: Option<VerifyResult>,
    /// Whether the virtual run's event sequence equals the host real-time
    /// run's (it need not: the guest kernel is 6.1, see docs/virtual-time.md),
    /// with the first difference.
    pub virtual_vs_host: Option<HostComparison>,
}

/// A guest trace's sequence against the host's.
#[derive(Debug, Clone, Serialize)]
pub struct HostComparison {
    /// Identical `(kind, node)` sequences.
    pub sequence_match: bool,
    /// The first difference, if any.
    pub first_mismatch: Option<String>,
}

/// Suite totals: host wall seconds per mode (whole runs), and the speedups
/// over the real-time suite.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SuiteTotals {
    /// Host real time, seconds.
    pub real_s: Option<f64>,
    /// Compressed, seconds.
    pub compressed_s: Option<f64>,
    /// Virtual (guest runs incl. boot), seconds.
    pub virtual_s: Option<f64>,
    /// The real-clock guest runs (the virtual mode's baseline), seconds.
    pub uml_real_clock_s: Option<f64>,
    /// `real_s / compressed_s`.
    pub compressed_speedup: Option<f64>,
    /// `real_s / virtual_s`.
    pub virtual_speedup: Option<f64>,
    /// `uml_real_clock_s / virtual_s`: the same suite on the same guest kernel.
    pub virtual_speedup_same_kernel: Option<f64>,
    /// Every scenario passed in every mode run.
    pub all_faithful: bool,
}

/// Runs `s` in `modes`; `cli` is the `patchbay` binary to run in the guest.
pub async fn bench_modes(
    cli: &Path,
    s: Scenario,
    k: f64,
    size: Size,
    modes: &[Mode],
    progress: &mut dyn FnMut(ModeStep),
) -> Result<ModesEntry, ScenarioError> {
    let mut step = |what| progress(ModeStep { scenario: s, what });
    let want = |m| modes.contains(&m);
    let mut entry = ModesEntry {
        scenario: s.name().to_string(),
        real: None,
        compressed: None,
        virtual_: None,
        virtual_vs_host: None,
    };
    let mut host_real = None;
    if want(Mode::Real) || want(Mode::Compressed) {
        step("real");
        let (t, total) = timed(s, 1.0, size).await?;
        let mut sum = RunSummary::of(&t);
        sum.total_wall_s = Some(total.as_secs_f64());
        entry.real = Some(sum);
        host_real = Some((t, total));
    }
    if let (true, Some((b, bt))) = (want(Mode::Compressed), &host_real) {
        step("compressed");
        let (c, ct) = timed(s, k, size).await?;
        let mut v = compare(s, size, b.clone(), c);
        v.baseline.total_wall_s = Some(bt.as_secs_f64());
        v.compressed.total_wall_s = Some(ct.as_secs_f64());
        entry.compressed = Some(v);
    }
    if want(Mode::Virtual) {
        step("uml real clock");
        let base = virt::guest(cli, s, size, VtClock::Real).await?;
        step("virtual");
        let first = virt::guest(cli, s, size, VtClock::InfCpu).await?;
        step("virtual (repeat)");
        let again = virt::guest(cli, s, size, VtClock::InfCpu).await?;
        if let Some((h, _)) = &host_real {
            let f = fidelity::check(h, &first.trace);
            entry.virtual_vs_host = Some(HostComparison {
                sequence_match: f.sequence_match,
                first_mismatch: f.first_mismatch,
            });
        }
        entry.virtual_ = Some(virt::with_repeat(
            virt::compare_guest_runs(s, size, base, first),
            &again,
        ));
    }
    Ok(entry)
}

/// Sums the entries into suite totals.
pub fn totals(entries: &[ModesEntry]) -> SuiteTotals {
    fn sum(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
        v.collect::<Option<Vec<f64>>>()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().sum())
    }
    let real_s = sum(entries
        .iter()
        .map(|e| e.real.as_ref().and_then(|r| r.total_wall_s)));
    let compressed_s = sum(entries.iter().map(|e| {
        e.compressed
            .as_ref()
            .and_then(|v| v.compressed.total_wall_s)
    }));
    let virtual_s = sum(entries
        .iter()
        .map(|e| e.virtual_.as_ref().map(|v| v.compressed.wall_s)));
    let uml_real_clock_s = sum(entries
        .iter()
        .map(|e| e.virtual_.as_ref().map(|v| v.baseline.wall_s)));
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?.max(1e-9));
    SuiteTotals {
        real_s,
        compressed_s,
        virtual_s,
        uml_real_clock_s,
        compressed_speedup: ratio(real_s, compressed_s),
        virtual_speedup: ratio(real_s, virtual_s),
        virtual_speedup_same_kernel: ratio(uml_real_clock_s, virtual_s),
        all_faithful: entries.iter().all(|e| {
            e.compressed.as_ref().is_none_or(|v| v.pass)
                && e.virtual_.as_ref().is_none_or(|v| v.pass)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_count_runs() {
        let all: Vec<Mode> = "real,compressed,virtual"
            .split(',')
            .map(|m| m.parse().expect("mode"))
            .collect();
        assert_eq!(runs_per_scenario(&all), 5);
        assert_eq!(runs_per_scenario(&[Mode::Compressed]), 2);
        assert_eq!(runs_per_scenario(&[Mode::Virtual]), 3);
        let e = "fast".parse::<Mode>().expect_err("unknown").to_string();
        assert!(e.contains("real, compressed or virtual"), "{e}");
    }

    fn summary(total: f64) -> RunSummary {
        RunSummary {
            scale: 1.0,
            wall_s: total,
            events: 1,
            total_wall_s: Some(total),
            virtual_s: None,
            boot_wall_s: None,
        }
    }

    #[test]
    fn totals_sum_whole_runs() {
        let e = |real: f64| ModesEntry {
            scenario: "x".into(),
            real: Some(summary(real)),
            compressed: None,
            virtual_: None,
            virtual_vs_host: None,
        };
        let t = totals(&[e(10.0), e(30.0)]);
        assert_eq!(t.real_s, Some(40.0));
        assert_eq!(t.compressed_s, None);
        assert_eq!(t.virtual_speedup, None);
        assert!(t.all_faithful);
    }
}
