//! Scenarios in virtual time: each run happens inside the User-Mode-Linux
//! guest of [`crate::vt`], by running the `patchbay` CLI there
//! (`patchbay scenario run NAME --json`) and reading the trace it prints.
//!
//! A virtual run (`time-travel=inf-cpu`) is compared with a run of the same
//! scenario on the same guest kernel with its clock in real time: the guest
//! kernel (6.1) differs from the host's, so a host run is not the right
//! baseline for the event sequence (see `docs/virtual-time.md`).
//!
//! Requirements: root, and the UML kernel of `cargo xtask build-uml`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Mode, Scenario, ScenarioError, Size, Trace, VerifyResult, compare};
use crate::vt::{self, VtClock, VtOpts};

/// Wall-clock guard of one guest run (a real-clock realistic run takes
/// minutes; a busy loop in virtual time never ends on its own).
pub const GUARD: Duration = Duration::from_secs(900);

/// The seed of every guest run (docs/determinism.md): two virtual runs of a scenario repeat
/// each other exactly, which `repeat_max_abs_ms` shows.
pub const SEED: u64 = 1;

/// One scenario run inside the guest.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The trace the guest printed (times on the guest clock).
    pub trace: Trace,
    /// Host wall-clock time of the whole guest run: boot, lab build, the
    /// scenario and power-off.
    pub host_wall: Duration,
    /// Host wall-clock time from starting UML to the guest starting the command.
    pub boot_wall: Option<Duration>,
}

/// The guest's clock for a run: `InfCpu` (virtual time) or `Real`.
fn clock_name(clock: VtClock) -> &'static str {
    match clock {
        VtClock::InfCpu => "virtual",
        VtClock::Real => "real-clock",
    }
}

/// Runs `scenario` at k = 1 inside the UML guest with `clock`, executing the
/// `patchbay` CLI binary `cli` there. Blocking.
pub fn run_in_guest(
    cli: &Path,
    scenario: Scenario,
    size: Size,
    clock: VtClock,
    guard: Duration,
) -> Result<GuestRun, ScenarioError> {
    let sc = scenario.name();
    let mut argv: Vec<OsString> = vec![
        cli.into(),
        "scenario".into(),
        "run".into(),
        sc.into(),
        "--json".into(),
    ];
    if size == Size::Realistic {
        argv.push("--realistic".into());
    }
    let opts = VtOpts {
        guard,
        clock,
        env: forwarded_env(),
        cwd: Some(PathBuf::from("/")),
        seed: Some(SEED),
        ..VtOpts::default()
    };
    let what = format!("running it in the UML guest ({} clock)", clock_name(clock));
    let out = vt::run(&argv, &opts).map_err(|e| ScenarioError::Guest {
        scenario: sc,
        what: what.clone(),
        source: Box::new(e),
    })?;
    if out.exit_code != 0 {
        return Err(ScenarioError::Unexpected {
            scenario: sc,
            what: format!(
                "{what}: `patchbay scenario run` exited {} in the guest: {}",
                out.exit_code,
                tail(&out.stderr)
            ),
        });
    }
    let trace: Trace =
        serde_json::from_slice(&out.stdout).map_err(|e| ScenarioError::Unexpected {
            scenario: sc,
            what: format!(
                "{what}: the guest printed no trace ({e}); stdout: {}; stderr: {}",
                tail(&out.stdout),
                tail(&out.stderr)
            ),
        })?;
    Ok(GuestRun {
        trace,
        host_wall: out.wall,
        boot_wall: out.boot_to_command_wall,
    })
}

/// The host environment the guest run needs: logging settings only (the
/// guest gets a clean environment otherwise).
fn forwarded_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k == "RUST_LOG" || k == "RUST_BACKTRACE")
        .collect()
}

/// The last lines of a guest output, for error messages.
fn tail(b: &[u8]) -> String {
    let t = vt::tail_lines(b, 10);
    if t.trim().is_empty() {
        "(empty)".into()
    } else {
        t
    }
}

/// Runs `scenario` in the guest twice, with its clock in real time (the
/// baseline) and in virtual time, and compares the traces. Wall times and
/// the speedup are host wall-clock times of the whole guest runs, boot and
/// lab build included; the guest-clock durations are in `virtual_s`.
pub async fn verify_virtual(
    cli: &Path,
    scenario: Scenario,
    size: Size,
) -> Result<VerifyResult, ScenarioError> {
    let base = guest(cli, scenario, size, VtClock::Real).await?;
    let virt = guest(cli, scenario, size, VtClock::InfCpu).await?;
    let again = guest(cli, scenario, size, VtClock::InfCpu).await?;
    Ok(with_repeat(
        compare_guest_runs(scenario, size, base, virt),
        &again,
    ))
}

/// Records how far a second virtual run's events lie from the first's
/// (`repeat_max_abs_ms`; a different sequence counts as infinitely far).
pub fn with_repeat(mut r: VerifyResult, again: &GuestRun) -> VerifyResult {
    let f = super::check(&r.traces[1], &again.trace);
    let far = f
        .events
        .iter()
        .map(|e| (e.compressed_s - e.baseline_s).abs() * 1000.0)
        .fold(0.0, f64::max);
    r.repeat_max_abs_ms = Some(if f.sequence_match { far } else { f64::INFINITY });
    r
}

/// Runs [`run_in_guest`] on the blocking pool.
pub async fn guest(
    cli: &Path,
    scenario: Scenario,
    size: Size,
    clock: VtClock,
) -> Result<GuestRun, ScenarioError> {
    let cli = cli.to_path_buf();
    tokio::task::spawn_blocking(move || run_in_guest(&cli, scenario, size, clock, GUARD))
        .await
        .map_err(|e| ScenarioError::Unexpected {
            scenario: scenario.name(),
            what: format!("the guest runner panicked: {e}"),
        })?
}

/// The verdict of a virtual run against a real-clock run on the same guest
/// kernel (see [`verify_virtual`]).
pub fn compare_guest_runs(
    scenario: Scenario,
    size: Size,
    base: GuestRun,
    virt: GuestRun,
) -> VerifyResult {
    let (bv, vv) = (base.trace.wall, virt.trace.wall);
    let mut r = compare(scenario, size, base.trace, virt.trace);
    r.mode = Mode::Virtual;
    r.baseline.wall_s = base.host_wall.as_secs_f64();
    r.compressed.wall_s = virt.host_wall.as_secs_f64();
    r.baseline.total_wall_s = Some(r.baseline.wall_s);
    r.compressed.total_wall_s = Some(r.compressed.wall_s);
    r.baseline.virtual_s = Some(bv.as_secs_f64());
    r.compressed.virtual_s = Some(vv.as_secs_f64());
    r.compressed.boot_wall_s = virt.boot_wall.map(|d| d.as_secs_f64());
    r.baseline.boot_wall_s = base.boot_wall.map(|d| d.as_secs_f64());
    r.speedup = r.baseline.wall_s / r.compressed.wall_s.max(1e-6);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::TraceEvent;

    fn run(wall_ms: u64, host_ms: u64, times_ms: &[u64]) -> GuestRun {
        GuestRun {
            trace: Trace {
                scenario: "syn-blackhole".into(),
                scale: 1.0,
                wall: Duration::from_millis(wall_ms),
                events: times_ms
                    .iter()
                    .map(|&t| TraceEvent {
                        virtual_at: Duration::from_millis(t),
                        node: "c".into(),
                        kind: "rto".into(),
                        detail: String::new(),
                    })
                    .collect(),
            },
            host_wall: Duration::from_millis(host_ms),
            boot_wall: Some(Duration::from_millis(200)),
        }
    }

    #[test]
    fn speedup_is_host_wall_of_the_guest_runs() {
        let r = compare_guest_runs(
            Scenario::SynBlackhole,
            Size::Default,
            run(7220, 7900, &[1060, 3140, 7220]),
            run(7220, 1400, &[1060, 3140, 7221]),
        );
        assert_eq!(r.mode, Mode::Virtual);
        assert!((r.speedup - 7900.0 / 1400.0).abs() < 1e-9, "{}", r.speedup);
        assert_eq!(r.compressed.virtual_s, Some(7.22));
        assert!(r.pass);
        assert!((r.timing_error.max_abs_ms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_guest_run_with_another_sequence_fails() {
        let r = compare_guest_runs(
            Scenario::SynBlackhole,
            Size::Default,
            run(7220, 7900, &[1060, 3140, 7220]),
            run(3140, 900, &[1060, 3140]),
        );
        assert!(!r.sequence_match && !r.pass);
    }

    #[test]
    fn a_trace_survives_the_json_round_trip() {
        let t = run(7220, 0, &[1060, 3140]).trace;
        let json = serde_json::to_string(&t).expect("serialize");
        let back: Trace = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, t);
    }
}
