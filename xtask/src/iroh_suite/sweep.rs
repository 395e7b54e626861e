//! `--seeds A..B --filter EXPR`: each chosen test once per seed, one guest per run, through
//! `patchbay vt --seeds`; the failing seeds with their replay lines, each replayed `--replays`
//! times to show that the verdict (and the output) repeats.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::nextest::Listed;
use super::{Plan, RunIgnored, Setup};

/// One failing seed of one test.
#[derive(Debug, Clone)]
struct Failing {
    seed: u64,
    exit_code: Option<i64>,
    error: Option<String>,
    /// The replays' exit codes.
    replays: Vec<Option<i32>>,
    /// Whether every replay printed the same bytes (stdout and stderr).
    identical_output: Option<bool>,
}

/// One test's sweep.
#[derive(Debug, Clone)]
struct TestSweep {
    name: String,
    run: u64,
    passed: u64,
    wall_s: f64,
    failing: Vec<Failing>,
}

pub fn run(plan: &Plan, setup: &Setup) -> Result<()> {
    let (first, last, replays) = plan.sweep.context("not a sweep")?;
    let (cli, kernel) = setup.vt.as_ref().context("a sweep runs in virtual time")?;
    let list = super::list(plan, setup, RunIgnored::All)?;
    let chosen: Vec<&Listed> = list.tests.iter().filter(|t| t.selected).collect();
    ensure!(
        !chosen.is_empty(),
        "--filter {:?} chooses none of the {} tests; `cargo nextest list` in {} shows their names",
        plan.filter.as_deref().unwrap_or(""),
        list.tests.len(),
        setup.crate_dir.display()
    );
    let guest = Guest {
        cli,
        kernel,
        binary: &list.binary,
        cwd: &list.cwd,
        crate_dir: &setup.crate_dir,
        slow_clock: plan.slow_clock,
    };
    let mut out = Vec::new();
    for t in &chosen {
        eprintln!(
            "iroh-suite: {} over seeds {first}..{last} ({} guests at a time)",
            t.name, plan.jobs
        );
        let mut s = guest.sweep(t, first, last, plan.jobs)?;
        for f in &mut s.failing {
            guest.replay(t, f, replays)?;
        }
        out.push(s);
    }
    let report = Report {
        plan,
        repo: &setup.repo,
        guest: &guest,
        tests: out,
        chosen: &chosen,
    };
    if plan.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// How a chosen test runs in a guest.
struct Guest<'a> {
    cli: &'a Path,
    kernel: &'a Path,
    binary: &'a Path,
    cwd: &'a Path,
    crate_dir: &'a Path,
    /// `patchbay vt --slow-clock`.
    slow_clock: bool,
}

impl Guest<'_> {
    /// `patchbay vt ARGS -- BINARY --exact NAME ...`, with the environment nextest would give
    /// the test: `CARGO` (the toolchain's cargo, as cargo set it for this xtask) and the
    /// package's `CARGO_MANIFEST_DIR`, none of the other variables cargo set for this xtask.
    fn command(&self, t: &Listed, vt_args: &[String]) -> Command {
        let mut c = Command::new(self.cli);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTC" {
                c.env_remove(k);
            }
        }
        c.arg("vt")
            .arg(if self.slow_clock {
                "--slow-clock"
            } else {
                "--fast-clock"
            })
            .args(vt_args)
            .arg("--")
            .arg(self.binary)
            .args(test_args(t))
            .current_dir(self.cwd)
            .env("PATCHBAY_UML", self.kernel)
            .env("CARGO_MANIFEST_DIR", self.crate_dir);
        c
    }

    fn sweep(&self, t: &Listed, first: u64, last: u64, jobs: usize) -> Result<TestSweep> {
        let args = [
            "--seeds".to_string(),
            format!("{first}..{last}"),
            "--jobs".into(),
            jobs.to_string(),
            "--json".into(),
        ];
        let started = Instant::now();
        let out = self
            .command(t, &args)
            .stderr(Stdio::inherit())
            .output()
            .context("running patchbay vt --seeds")?;
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "patchbay vt --seeds printed no report (exit {}); see its errors above",
                out.status
            )
        })?;
        let failing = v["failing"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| {
                        Some(Failing {
                            seed: f["seed"].as_u64()?,
                            exit_code: f["exit_code"].as_i64(),
                            error: f["error"].as_str().map(String::from),
                            replays: Vec::new(),
                            identical_output: None,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(TestSweep {
            name: t.name.clone(),
            run: v["run"].as_u64().unwrap_or(0),
            passed: v["passed"].as_u64().unwrap_or(0),
            wall_s: started.elapsed().as_secs_f64(),
            failing,
        })
    }

    /// Runs the failing seed `times` more times.
    fn replay(&self, t: &Listed, f: &mut Failing, times: usize) -> Result<()> {
        let mut outputs = Vec::new();
        for i in 0..times {
            eprintln!(
                "iroh-suite: replaying {} seed {} ({}/{times})",
                t.name,
                f.seed,
                i + 1
            );
            let out = self
                .command(t, &["--seed".into(), f.seed.to_string()])
                .output()
                .context("running patchbay vt --seed")?;
            f.replays.push(out.status.code());
            outputs.push((out.stdout, out.stderr));
        }
        f.identical_output = (times > 0).then(|| outputs.windows(2).all(|w| w[0] == w[1]));
        Ok(())
    }

    /// The raw replay: `patchbay vt --seed N` in the test's directory, with the variables the
    /// sweep gave the guest. `CARGO` belongs to them: iroh's testdir runs it, and without it
    /// (measured: degrade_server_very_bad_cellular, seed 10) the guest's run differs and
    /// the verdict with it.
    fn replay_line(&self, t: &Listed, seed: u64) -> String {
        let cargo = std::env::var_os("CARGO")
            .map(|c| format!("CARGO={} ", Path::new(&c).display()))
            .unwrap_or_default();
        format!(
            "cd {} && {cargo}PATCHBAY_UML={} CARGO_MANIFEST_DIR={} {} vt{} --seed {seed} -- {} {}",
            self.cwd.display(),
            self.kernel.display(),
            self.crate_dir.display(),
            self.cli.display(),
            if self.slow_clock {
                " --slow-clock"
            } else {
                " --fast-clock"
            },
            self.binary.display(),
            test_args(t).join(" ")
        )
    }
}

/// The test binary's arguments for one test, as nextest passes them.
fn test_args(t: &Listed) -> Vec<String> {
    let mut v = vec![
        "--exact".to_string(),
        t.name.clone(),
        "--nocapture".to_string(),
    ];
    if t.ignored {
        v.push("--include-ignored".into());
    }
    v
}

struct Report<'a> {
    plan: &'a Plan,
    repo: &'a Path,
    guest: &'a Guest<'a>,
    tests: Vec<TestSweep>,
    chosen: &'a [&'a Listed],
}

impl Report<'_> {
    fn listed(&self, name: &str) -> Option<&Listed> {
        self.chosen.iter().copied().find(|t| t.name == name)
    }

    /// `cargo xtask iroh-suite` sweeping just this seed: the same environment as the sweep,
    /// the guest kernel included (a seed's verdict holds for one kernel build).
    fn xtask_line(&self, name: &str, seed: u64) -> String {
        format!(
            "cd {} && PATCHBAY_UML={} cargo xtask iroh-suite --against {}{}{} --seeds {seed} \
             -E 'test(={name})'",
            self.repo.display(),
            self.guest.kernel.display(),
            self.plan.against.name(),
            if self.plan.release { " --release" } else { "" },
            if self.plan.slow_clock {
                " --slow-clock"
            } else {
                ""
            }
        )
    }

    fn json(&self) -> Value {
        let tests: Vec<Value> = self
            .tests
            .iter()
            .map(|s| {
                let t = self.listed(&s.name);
                let failing: Vec<Value> = s
                    .failing
                    .iter()
                    .map(|f| {
                        json!({
                            "seed": f.seed,
                            "exit_code": f.exit_code,
                            "guest_error": f.error,
                            "replays": f.replays,
                            "replays_identical_output": f.identical_output,
                            "replay": self.xtask_line(&s.name, f.seed),
                            "replay_vt": t.map(|t| self.guest.replay_line(t, f.seed)),
                        })
                    })
                    .collect();
                json!({
                    "name": s.name, "run": s.run, "passed": s.passed,
                    "failed": s.run - s.passed, "wall_s": s.wall_s, "failing": failing,
                })
            })
            .collect();
        json!({"mode": self.plan.label(), "seeds": self.plan.sweep.map(|(a, b, _)| format!("{a}..{b}")),
               "jobs": self.plan.jobs, "tests": tests})
    }

    fn text(&self) -> String {
        let mut s = String::from(
            "| test | seeds run | passed | failed | failing seeds | replays |\n|---|---|---|---|---|---|\n",
        );
        for t in &self.tests {
            let seeds: Vec<String> = t.failing.iter().map(|f| f.seed.to_string()).collect();
            let replays = replay_summary(&t.failing);
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} | {replays} |",
                t.name,
                t.run,
                t.passed,
                t.run - t.passed,
                if seeds.is_empty() {
                    "-".into()
                } else {
                    seeds.join(", ")
                }
            );
        }
        for t in &self.tests {
            for f in &t.failing {
                let _ = writeln!(
                    s,
                    "{} seed {}: {}",
                    t.name,
                    f.seed,
                    self.xtask_line(&t.name, f.seed)
                );
            }
        }
        s
    }
}

/// `2/2 same verdict, same output` for the failing seeds' replays, or `-`.
fn replay_summary(failing: &[Failing]) -> String {
    let replayed: Vec<&Failing> = failing.iter().filter(|f| !f.replays.is_empty()).collect();
    if replayed.is_empty() {
        return "-".into();
    }
    let same_verdict = replayed
        .iter()
        .filter(|f| {
            f.replays
                .iter()
                .all(|c| c.map(i64::from) == f.exit_code && f.exit_code.is_some())
        })
        .count();
    let same_output = replayed
        .iter()
        .filter(|f| f.identical_output == Some(true))
        .count();
    format!(
        "{same_verdict}/{} seeds same verdict every replay, {same_output}/{} same output",
        replayed.len(),
        replayed.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_tests_are_included_and_replays_are_summed_up() {
        let t = Listed {
            name: "nat::x".into(),
            ignored: true,
            selected: true,
        };
        assert_eq!(
            test_args(&t),
            ["--exact", "nat::x", "--nocapture", "--include-ignored"]
        );
        let f = |code, replays: Vec<Option<i32>>, same| Failing {
            seed: 1,
            exit_code: code,
            error: None,
            replays,
            identical_output: Some(same),
        };
        assert_eq!(replay_summary(&[]), "-");
        let s = replay_summary(&[
            f(Some(101), vec![Some(101), Some(101)], true),
            f(Some(101), vec![Some(0), Some(101)], false),
        ]);
        assert_eq!(s, "1/2 seeds same verdict every replay, 1/2 same output");
    }
}
