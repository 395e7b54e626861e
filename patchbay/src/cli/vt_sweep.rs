//! `patchbay vt --seeds A..B [--jobs N] [--partition M/N] [--stop-after-failures K] [--json]
//! -- COMMAND...`: one virtual-time guest per seed, N at a time, with the failing seeds and a
//! command that replays each (docs/determinism.md).

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::vt::{self, VtOpts, VtOutcome};
use anyhow::{Context, bail, ensure};
use serde::Serialize;

/// An inclusive range of seeds, `A..B` (or a single seed `A`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    pub first: u64,
    pub last: u64,
}

impl SeedRange {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let num = |t: &str| {
            t.trim().parse::<u64>().with_context(|| {
                format!("--seeds {s:?}: {t:?} is not a seed (a number from 0 to 2^64-1)")
            })
        };
        let (first, last) = match s.split_once("..") {
            Some((a, b)) => (num(a)?, num(b.strip_prefix('=').unwrap_or(b))?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        ensure!(
            first <= last,
            "--seeds {s:?} is empty: the range is inclusive, A..B with A <= B (e.g. 1..100)"
        );
        Ok(Self { first, last })
    }

    fn len(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// One machine's share of a sweep: `M/N` (or nextest's `count:M/N`), 1 <= M <= N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: u64,
    pub count: u64,
}

impl Partition {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let body = s.strip_prefix("count:").unwrap_or(s);
        let parsed = body
            .split_once('/')
            .and_then(|(m, n)| Some((m.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
        let Some((index, count)) = parsed else {
            bail!("--partition {s:?}: expected M/N, e.g. 1/4 for the first of four machines");
        };
        ensure!(
            count >= 1 && (1..=count).contains(&index),
            "--partition {s:?} is out of range: M must be between 1 and N, and N at least 1"
        );
        Ok(Self { index, count })
    }

    /// Whether the `i`-th seed of the range (0-based) is this partition's: round robin, so
    /// every machine gets seeds from the whole range.
    fn has(&self, i: u64) -> bool {
        i % self.count == self.index - 1
    }
}

/// The seeds a sweep runs, in order.
pub fn seeds(range: SeedRange, partition: Option<Partition>) -> Vec<u64> {
    (0..range.len())
        .filter(|&i| partition.is_none_or(|p| p.has(i)))
        .map(|i| range.first + i)
        .collect()
}

/// What a sweep was asked to do.
pub struct Sweep {
    pub range: SeedRange,
    pub partition: Option<Partition>,
    pub jobs: usize,
    pub stop_after_failures: Option<usize>,
    pub json: bool,
    pub verbose: bool,
    /// Options of every run; the seed is set per run.
    pub opts: VtOpts,
    pub command: Vec<OsString>,
}

/// One seed's result.
#[derive(Debug, Clone, Serialize)]
struct SeedResult {
    seed: u64,
    /// The command's exit code; `None` when the guest itself failed (see `error`).
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The last lines of the command's stderr (failing seeds only).
    #[serde(skip_serializing_if = "String::is_empty")]
    stderr_tail: String,
    replay: String,
    wall_s: f64,
    boot_s: Option<f64>,
    command_s: Option<f64>,
    virtual_s: Option<f64>,
}

impl SeedResult {
    fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// The JSON report (`--json`) and the source of the text one.
#[derive(Debug, Serialize)]
struct Report {
    seeds: String,
    partition: Option<String>,
    jobs: usize,
    planned: usize,
    run: usize,
    passed: usize,
    failed: usize,
    /// Stopped by `--stop-after-failures` before every planned seed ran.
    stopped_early: bool,
    /// Interrupted (Ctrl-C) before every planned seed ran.
    interrupted: bool,
    wall_s: f64,
    seeds_per_minute: f64,
    /// Mean host wall time per seed: UML start to the command, the command, and power-off.
    mean_boot_s: Option<f64>,
    mean_command_s: Option<f64>,
    mean_poweroff_s: Option<f64>,
    failing: Vec<SeedResult>,
}

/// Ctrl-C (SIGINT) stops the sweep from starting further seeds and kills the running guests
/// (`vt::interrupt`), whose runners remove their run directories; the report then shows the
/// seeds that had finished.
fn catch_sigint() -> anyhow::Result<()> {
    crate::sys::sigint::catch().context("installing the Ctrl-C handler")
}

/// Whether Ctrl-C was pressed.
fn interrupted() -> bool {
    crate::sys::sigint::received()
}

/// The command that replays one seed.
pub fn replay_command(seed: u64, command: &[OsString]) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "patchbay".into());
    let argv: Vec<String> = command
        .iter()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    format!("{exe} vt --seed {seed} -- {}", argv.join(" "))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn run_seed(seed: u64, sweep: &Sweep) -> SeedResult {
    let opts = VtOpts {
        seed: Some(seed),
        ..sweep.opts.clone()
    };
    let replay = replay_command(seed, &sweep.command);
    let t = Instant::now();
    match vt::run(&sweep.command, &opts) {
        Ok(out) => from_outcome(seed, &out, replay),
        Err(e) => SeedResult {
            seed,
            exit_code: None,
            error: Some(e.to_string()),
            stderr_tail: String::new(),
            replay,
            wall_s: t.elapsed().as_secs_f64(),
            boot_s: None,
            command_s: None,
            virtual_s: None,
        },
    }
}

fn from_outcome(seed: u64, out: &VtOutcome, replay: String) -> SeedResult {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let command = match (out.boot_to_command_wall, out.command_end_wall) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let stderr_tail = if out.exit_code == 0 {
        String::new()
    } else {
        tail(&out.stderr, 5)
    };
    SeedResult {
        seed,
        exit_code: Some(out.exit_code),
        error: None,
        stderr_tail,
        replay,
        wall_s: out.wall.as_secs_f64(),
        boot_s: secs(out.boot_to_command_wall),
        command_s: secs(command),
        virtual_s: secs(out.virtual_elapsed),
    }
}

/// The last `n` lines of `b`.
fn tail(b: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(b);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let xs: Vec<f64> = v.flatten().collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Runs the sweep; the exit code is 0 when every seed that ran passed.
pub fn run(sweep: Sweep) -> anyhow::Result<std::process::ExitCode> {
    ensure!(
        sweep.jobs >= 1,
        "--jobs 0: at least one guest must run (default: one per core)"
    );
    let planned = seeds(sweep.range, sweep.partition);
    catch_sigint()?;
    let bar = super::progress::bar(planned.len() as u64, "seeds");
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let stopped = AtomicBool::new(false);
    let results: Mutex<Vec<SeedResult>> = Mutex::new(Vec::new());
    let sweep = Arc::new(sweep);
    std::thread::scope(|s| {
        for _ in 0..sweep.jobs.min(planned.len().max(1)) {
            s.spawn(|| {
                loop {
                    if interrupted() || stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&seed) = planned.get(i) else { return };
                    let r = run_seed(seed, &sweep);
                    if interrupted() && r.exit_code.is_none() {
                        // Killed by the Ctrl-C: not a verdict on the seed.
                        return;
                    }
                    if !r.passed() {
                        let n = failures.fetch_add(1, Ordering::SeqCst) + 1;
                        if sweep.stop_after_failures.is_some_and(|k| n >= k) {
                            stopped.store(true, Ordering::SeqCst);
                        }
                        if sweep.verbose {
                            bar.suspend(|| eprintln!("seed {seed} failed: {}", r.replay));
                        }
                    }
                    bar.set_message(format!("{} failed", failures.load(Ordering::SeqCst)));
                    bar.inc(1);
                    results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(r);
                }
            });
        }
    });
    bar.finish_and_clear();
    let wall = started.elapsed();
    let mut results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    results.sort_by_key(|r| r.seed);
    let passed = results.iter().filter(|r| r.passed()).count();
    let run = results.len();
    let poweroff = results.iter().map(|r| match (r.boot_s, r.command_s) {
        (Some(b), Some(c)) => Some((r.wall_s - b - c).max(0.0)),
        _ => None,
    });
    let report = Report {
        seeds: format!("{}..{}", sweep.range.first, sweep.range.last),
        partition: sweep.partition.map(|p| format!("{}/{}", p.index, p.count)),
        jobs: sweep.jobs,
        planned: planned.len(),
        run,
        passed,
        failed: run - passed,
        stopped_early: stopped.load(Ordering::SeqCst) && run < planned.len(),
        interrupted: interrupted(),
        wall_s: wall.as_secs_f64(),
        seeds_per_minute: run as f64 / wall.as_secs_f64().max(1e-9) * 60.0,
        mean_boot_s: mean(results.iter().map(|r| r.boot_s)),
        mean_command_s: mean(results.iter().map(|r| r.command_s)),
        mean_poweroff_s: mean(poweroff),
        failing: results.into_iter().filter(|r| !r.passed()).collect(),
    };
    if sweep.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.failed == 0 && !report.interrupted {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let part = r
        .partition
        .as_ref()
        .map(|p| format!(", partition {p}"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "sweep {}{part}: {} of {} seeds run with {} jobs: {} passed, {} failed in {:.1} s ({:.1} seeds/min)",
        r.seeds, r.run, r.planned, r.jobs, r.passed, r.failed, r.wall_s, r.seeds_per_minute
    );
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3} s"));
    let _ = writeln!(
        s,
        "per seed (host wall, mean): boot {}, command {}, power-off {}",
        f(r.mean_boot_s),
        f(r.mean_command_s),
        f(r.mean_poweroff_s)
    );
    if r.interrupted {
        let _ = writeln!(s, "interrupted: the seeds above are those that finished");
    }
    if r.stopped_early {
        let _ = writeln!(s, "stopped early after {} failures", r.failed);
    }
    if !r.failing.is_empty() {
        let _ = writeln!(s, "failing seeds (replay each with the command shown):");
        for x in &r.failing {
            let what = match (&x.exit_code, &x.error) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(e)) => format!("guest error: {e}"),
                (None, None) => "no result".into(),
            };
            let _ = writeln!(s, "  seed {}: {what}\n    {}", x.seed, x.replay);
            for line in x.stderr_tail.lines() {
                let _ = writeln!(s, "    | {line}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_inclusively() {
        assert_eq!(
            SeedRange::parse("1..1000").unwrap(),
            SeedRange {
                first: 1,
                last: 1000
            }
        );
        assert_eq!(SeedRange::parse("1..1000").unwrap().len(), 1000);
        assert_eq!(SeedRange::parse("5..=5").unwrap().len(), 1);
        assert_eq!(SeedRange::parse("7").unwrap().len(), 1);
        for bad in ["", "..", "1..", "a..b", "10..1", "1...3", "-1..3"] {
            let e = SeedRange::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("--seeds"), "{bad}: {e}");
        }
        assert!(
            SeedRange::parse("10..1")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn partitions_split_the_range_round_robin() {
        let r = SeedRange::parse("1..10").unwrap();
        let p1 = seeds(r, Some(Partition::parse("1/3").unwrap()));
        let p2 = seeds(r, Some(Partition::parse("count:2/3").unwrap()));
        let p3 = seeds(r, Some(Partition::parse("3/3").unwrap()));
        assert_eq!(p1, [1, 4, 7, 10]);
        assert_eq!(p2, [2, 5, 8]);
        assert_eq!(p3, [3, 6, 9]);
        assert_eq!(seeds(r, None).len(), 10);
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", "hash:1/2"] {
            let e = Partition::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("--partition"), "{bad}: {e}");
        }
    }

    #[test]
    fn replay_commands_quote_what_the_shell_would_split() {
        let cmd = replay_command(42, &["sh".into(), "-c".into(), "exit 1; echo 'x'".into()]);
        assert!(
            cmd.ends_with(r#"vt --seed 42 -- sh -c 'exit 1; echo '\''x'\'''"#),
            "{cmd}"
        );
    }
}
