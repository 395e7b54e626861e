//! The suite's report: one row per test (outcome, wall time, virtual time, seed) from
//! nextest's JUnit report and the lines `patchbay vt --summary` appends, as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::Plan;
use super::nextest::{Listed, Outcome, TestList};

/// What `patchbay vt --summary` recorded about one test's guest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestRun {
    pub seed: Option<u64>,
    pub virtual_s: Option<f64>,
    pub wall_s: Option<f64>,
    pub boot_s: Option<f64>,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// The summary file's test runs by test name (its list runs left out; a test run twice keeps
/// its last line). A missing file is no runs (real time).
pub fn read_summary(path: &Path) -> Result<BTreeMap<String, GuestRun>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse_summary(&text)
}

fn parse_summary(text: &str) -> Result<BTreeMap<String, GuestRun>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("a summary line is not JSON: {line}"))?;
        let (Some(test), false) = (v["test"].as_str(), v["phase"] == "list") else {
            continue;
        };
        let strings = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        out.insert(
            test.to_string(),
            GuestRun {
                seed: v["seed"].as_u64(),
                virtual_s: v["virtual_s"].as_f64(),
                wall_s: v["wall_s"].as_f64(),
                boot_s: v["boot_s"].as_f64(),
                error: v["error"].as_str().map(String::from),
                warnings: strings("warnings"),
            },
        );
    }
    Ok(out)
}

/// One test's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    /// `passed`, `failed`, `timed out`, `not run`.
    pub outcome: String,
    pub ignored: bool,
    pub wall_s: Option<f64>,
    pub guest: Option<GuestRun>,
    pub message: Option<String>,
    /// How to run this test again (with its seed, in virtual time).
    pub replay: String,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: String,
    pub jobs: usize,
    pub run: usize,
    pub passed: usize,
    pub failed: usize,
    pub not_run: usize,
    pub wall_s: f64,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(
        plan: &Plan,
        repo: &Path,
        listed: &TestList,
        outcomes: &BTreeMap<String, Outcome>,
        guests: &BTreeMap<String, GuestRun>,
        wall: Duration,
    ) -> Self {
        let rows: Vec<Row> = listed
            .tests
            .iter()
            .map(|t| row(plan, repo, t, outcomes.get(&t.name), guests.get(&t.name)))
            .collect();
        let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
        Self {
            mode: plan.label(),
            jobs: plan.jobs,
            run: count(&|r| r.outcome != "not run"),
            passed: count(&|r| r.outcome == "passed"),
            failed: count(&|r| r.outcome != "passed" && r.outcome != "not run"),
            not_run: count(&|r| r.outcome == "not run"),
            wall_s: wall.as_secs_f64(),
            rows,
        }
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        let tests: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let g = r.guest.clone().unwrap_or_default();
                json!({
                    "name": r.name,
                    "outcome": r.outcome,
                    "ignored": r.ignored,
                    "wall_s": r.wall_s,
                    "virtual_s": g.virtual_s,
                    "seed": g.seed,
                    "guest_boot_s": g.boot_s,
                    "guest_error": g.error,
                    "message": r.message,
                    "replay": (r.outcome != "not run").then_some(&r.replay),
                })
            })
            .collect();
        json!({
            "mode": self.mode,
            "jobs": self.jobs,
            "run": self.run,
            "passed": self.passed,
            "failed": self.failed,
            "not_run": self.not_run,
            "wall_s": self.wall_s,
            "sum_test_wall_s": self.rows.iter().filter_map(|r| r.wall_s).sum::<f64>(),
            "sum_virtual_s": self.rows.iter()
                .filter_map(|r| r.guest.as_ref().and_then(|g| g.virtual_s)).sum::<f64>(),
            "tests": tests,
        })
    }

    /// A Markdown table with a totals line.
    pub fn table(&self) -> String {
        let mut s =
            String::from("| test | outcome | wall s | virtual s | seed |\n|---|---|---|---|---|\n");
        let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
        for r in self.rows.iter().filter(|r| r.outcome != "not run") {
            let g = r.guest.clone().unwrap_or_default();
            let seed = g.seed.map_or("-".into(), |s| s.to_string());
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {seed} |",
                r.name,
                r.outcome,
                f(r.wall_s),
                f(g.virtual_s)
            );
        }
        let _ = writeln!(
            s,
            "\n{}: {} run, {} passed, {} failed, {} not run (ignored or filtered) in {:.1} s \
             wall, {} at a time",
            self.mode, self.run, self.passed, self.failed, self.not_run, self.wall_s, self.jobs
        );
        for r in self
            .rows
            .iter()
            .filter(|r| r.outcome != "passed" && r.outcome != "not run")
        {
            let why = r.message.as_deref().unwrap_or("");
            let _ = writeln!(s, "{} {}: {why}\n  replay: {}", r.outcome, r.name, r.replay);
            if let Some(e) = r.guest.as_ref().and_then(|g| g.error.as_deref()) {
                let _ = writeln!(s, "  guest: {e}");
            }
        }
        let mut warned: Vec<&String> = self
            .rows
            .iter()
            .filter_map(|r| r.guest.as_ref())
            .flat_map(|g| &g.warnings)
            .collect();
        warned.sort();
        warned.dedup();
        for w in warned {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }

    /// Prints the report on stdout: JSON or the table.
    pub fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&self.json())?);
        } else {
            print!("{}", self.table());
        }
        Ok(())
    }
}

fn row(
    plan: &Plan,
    repo: &Path,
    t: &Listed,
    outcome: Option<&Outcome>,
    guest: Option<&GuestRun>,
) -> Row {
    let seed = guest.and_then(|g| g.seed).or(plan.seed);
    Row {
        name: t.name.clone(),
        outcome: outcome.map_or("not run".into(), |o| o.status.clone()),
        ignored: t.ignored,
        wall_s: outcome.map(|o| o.time_s),
        guest: guest.cloned(),
        message: outcome.and_then(|o| o.message.clone()),
        replay: replay_line(plan, repo, &t.name, t.ignored, seed),
    }
}

/// `cargo xtask iroh-suite` for this test alone, with its seed in virtual time.
pub fn replay_line(
    plan: &Plan,
    repo: &Path,
    name: &str,
    ignored: bool,
    seed: Option<u64>,
) -> String {
    let mut s = format!(
        "cd {} && cargo xtask iroh-suite --against {}",
        repo.display(),
        plan.against.name()
    );
    if plan.release {
        s.push_str(" --release");
    }
    if plan.virtual_time {
        s.push_str(" --virtual");
        if plan.slow_clock {
            s.push_str(" --slow-clock");
        }
        if let Some(seed) = seed {
            let _ = write!(s, " --seed {seed}");
        }
    }
    let _ = write!(s, " -E 'test(={name})'");
    if ignored {
        s.push_str(" --run-ignored all");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_give_each_test_its_seed_and_virtual_time() {
        let text = r#"{"test":null,"phase":"list","argv":["b","--list"],"seed":1}
{"test":"nat::a","phase":"run","seed":7,"virtual_s":12.5,"wall_s":3.0,"boot_s":0.1,"warnings":[]}
{"test":"b","phase":"run","seed":9,"error":"guard","warnings":["w"]}
"#;
        let m = parse_summary(text).expect("parses");
        assert_eq!(m.len(), 2);
        assert_eq!(m["nat::a"].seed, Some(7));
        assert_eq!(m["nat::a"].virtual_s, Some(12.5));
        assert_eq!(m["b"].error.as_deref(), Some("guard"));
        assert_eq!(m["b"].warnings, vec!["w".to_string()]);
        assert!(parse_summary("not json").is_err());
    }

    #[test]
    fn replay_lines_name_the_mode_the_seed_and_ignored_tests() {
        let args = super::super::IrohSuiteArgs {
            against: Some(super::super::Against::Upstream),
            virtual_time: true,
            seeds: None,
            replays: 0,
            seed: None,
            jobs: None,
            filter: None,
            run_ignored: super::super::RunIgnored::Default,
            keep_writes: None,
            slow_clock: false,
            release: false,
            json: false,
            dir: None,
        };
        let plan = Plan::new(&args, 2).expect("plan");
        let l = replay_line(&plan, Path::new("/r"), "nat::x", true, Some(5));
        assert_eq!(
            l,
            "cd /r && cargo xtask iroh-suite --against upstream --virtual --seed 5 \
             -E 'test(=nat::x)' --run-ignored all"
        );
        let args = super::super::IrohSuiteArgs {
            slow_clock: true,
            release: true,
            ..args
        };
        let plan = Plan::new(&args, 2).expect("plan");
        assert_eq!(
            replay_line(&plan, Path::new("/r"), "a", false, Some(1)),
            "cd /r && cargo xtask iroh-suite --against upstream --release --virtual \
             --slow-clock --seed 1 -E 'test(=a)'"
        );
    }
}
