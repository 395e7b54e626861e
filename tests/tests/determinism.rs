//! Deterministic virtual time (docs/determinism.md): a seed fixes every random choice of the
//! guest kernel and of the programs in it, so a seeded run repeats byte for byte.
//!
//! Needs root and a UML kernel that takes `patchbay_seed=` (`cargo xtask build-uml` applies
//! xtask/uml-seed.patch); skips with the reason printed otherwise. Every test drives the real
//! `patchbay` binary, as a user would.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use patchbay_tests::{patchbay_bin, require_root, skip, workspace};

/// The `patchbay` binary, or `None` (after printing the skip line).
fn setup() -> Result<Option<PathBuf>> {
    require_root!();
    let kernel = match patchbay::vt::find_uml_binary() {
        Ok(k) => patchbay::vt::probe_kernel(&k)?,
        Err(e) => {
            skip(&format!("no UML kernel ({e}); run `cargo xtask build-uml`"));
            return Ok(None);
        }
    };
    if !kernel.seed {
        skip(&format!(
            "the UML kernel {} was built without xtask/uml-seed.patch (no `patchbay_seed=`); \
             rebuild it with `cargo xtask build-uml`",
            kernel.path.display()
        ));
        return Ok(None);
    }
    Ok(Some(patchbay_bin()?))
}

/// `patchbay vt --seed SEED -- ARGS...`, from the workspace root.
fn vt(bin: &Path, seed: u64, args: &[&str]) -> Result<Output> {
    let out = Command::new(bin)
        .args(["vt", "--seed", &seed.to_string(), "--"])
        .args(args)
        .current_dir(workspace())
        .env_remove(patchbay::vt::SEED_ENV)
        .output()
        .context("running patchbay vt")?;
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a guest shows of its randomness, clock, name and seed.
const PROBE: &str = "cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1; \
                     date +%s.%N; hostname; cat /proc/uptime; echo \"seed=$PATCHBAY_VT_SEED\"";

/// A seed replays on another machine's build when both builds are the same kernel with a closed
/// random pool: `cargo xtask build-uml` fixes the build identity (the banner shows it) and
/// applies xtask/uml-seed.patch (`UmlKernel::reproducible`).
#[test]
fn the_kernel_has_a_fixed_build_identity_so_seeds_replay_across_machines() -> Result<()> {
    let Some(bin) = setup()? else { return Ok(()) };
    let kernel = patchbay::vt::probe_kernel(&patchbay::vt::find_uml_binary()?)?;
    let out = vt(&bin, 1, &["cat", "/proc/version"])?;
    let version = text(&out.stdout);
    println!("{}: {version}", kernel.path.display());
    ensure!(
        kernel.reproducible,
        "the UML kernel {} is seeded but its random pool is open (it takes in the guest's clock), \
         so its seeds replay only on this machine; rebuild it with `cargo xtask build-uml`",
        kernel.path.display()
    );
    ensure!(
        version.contains("(patchbay@patchbay)")
            && version.contains("#1 ")
            && version.contains("Thu Jan  1 00:00:00 UTC 2026"),
        "the UML kernel {} has its builder's identity ({version:?}), so another machine's build \
         of the same source is other bytes; rebuild it with `cargo xtask build-uml`",
        kernel.path.display()
    );
    Ok(())
}

#[test]
fn the_same_seed_repeats_a_guest_byte_for_byte_and_another_seed_does_not() -> Result<()> {
    let Some(bin) = setup()? else { return Ok(()) };
    let a = vt(&bin, 7, &["sh", "-c", PROBE])?;
    let b = vt(&bin, 7, &["sh", "-c", PROBE])?;
    let c = vt(&bin, 8, &["sh", "-c", PROBE])?;
    for o in [&a, &b, &c] {
        ensure!(o.status.success(), "probe failed: {}", text(&o.stderr));
    }
    println!("seed 7:\n{}seed 8:\n{}", text(&a.stdout), text(&c.stdout));
    assert_eq!(text(&a.stdout), text(&b.stdout), "seed 7 twice");
    assert_eq!(text(&a.stderr), text(&b.stderr), "seed 7 twice (stderr)");
    let (la, lc): (Vec<&str>, Vec<&str>) = (
        text(&a.stdout).leak().lines().collect(),
        text(&c.stdout).leak().lines().collect(),
    );
    assert_ne!(la[0], lc[0], "boot ids of seeds 7 and 8");
    assert_ne!(la[1], lc[1], "random bytes of seeds 7 and 8");
    // The guest's wall clock starts at the pinned epoch; the command runs after the default
    // 300 s of virtual uptime.
    let date: f64 = la[2].parse().context("date +%s.%N")?;
    let epoch = patchbay::vt::GUEST_EPOCH as f64;
    assert!(
        (epoch + 300.0..epoch + 302.0).contains(&date),
        "guest date {date}, epoch {epoch}"
    );
    assert_eq!(la[3], "patchbay-vt", "hostname");
    assert_eq!(la[5], "seed=7");
    Ok(())
}

/// In time-travel mode every failed syscall costs the guest 1 µs of virtual time, so details
/// of the host move the guest's clock: each `PATH` entry that `execve` tries in vain, the
/// glibc-hwcaps directories the loader probes for this CPU, a config file that is missing. The
/// random stream must not follow: in a seeded guest nothing enters the random pool, and the
/// seed alone keys it (xtask/uml-seed.patch). Before that, three extra `PATH` entries gave
/// seed 5 other random bytes, and CI drew another stream for a lab file's seed.
#[test]
fn failed_syscalls_shift_the_clock_but_not_the_random_stream() -> Result<()> {
    let Some(bin) = setup()? else { return Ok(()) };
    const PLAIN: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let detour = format!("/nonexistent/a:/nonexistent/b:/nonexistent/c:{PLAIN}");
    let probe = "for i in 1 2 3 4 5; do ls / >/dev/null; done; date +%s.%N; \
                 head -c 16 /dev/urandom | od -An -tx1; cat /proc/sys/kernel/random/boot_id; \
                 sleep 61; head -c 16 /dev/urandom | od -An -tx1";
    let run = |path: &str| -> Result<Vec<String>> {
        let out = Command::new(&bin)
            .args(["vt", "--seed", "5", "--", "sh", "-c", probe])
            .current_dir(workspace())
            .env_remove(patchbay::vt::SEED_ENV)
            .env("PATH", path)
            .output()
            .context("running patchbay vt")?;
        ensure!(out.status.success(), "probe failed: {}", text(&out.stderr));
        Ok(text(&out.stdout).lines().map(str::to_string).collect())
    };
    let (plain, detoured) = (run(PLAIN)?, run(&detour)?);
    println!(
        "PATH={PLAIN}:\n{}\nPATH={detour}:\n{}",
        plain.join("\n"),
        detoured.join("\n")
    );
    ensure!(
        plain.len() == 4 && detoured.len() == 4,
        "unexpected probe output: {plain:?} {detoured:?}"
    );
    let clock = |l: &[String]| l[0].parse::<f64>().context("date +%s.%N");
    let shift = clock(&detoured)? - clock(&plain)?;
    // The failed lookups must have moved the clock, or this test proves nothing.
    ensure!(
        shift > 0.0,
        "the extra PATH entries did not move the guest clock ({shift} s): the kernel no longer \
         charges failed syscalls, so this test cannot show that the random stream ignores the clock"
    );
    ensure!(
        plain[1..] == detoured[1..],
        "seed 5 drew other random bytes (or another boot id) when failed syscalls moved the \
         clock by {:.0} us: the guest's random pool takes in virtual-time stamps, so a seed does \
         not replay on a machine with another PATH or CPU; rebuild the kernel with \
         `cargo xtask build-uml` (xtask/uml-seed.patch keeps the pool closed)",
        shift * 1e6
    );
    Ok(())
}

/// Runs `examples/flaky-loss.toml` in the guest and prints its report, its events and the hash
/// of its capture (ISNs, ports and timestamps of every packet); exits with the run's status.
fn lab_command(bin: &Path) -> String {
    let file = workspace().join("examples/flaky-loss.toml");
    format!(
        "{bin} run {file} --json --outdir /tmp/o > /tmp/report.json; rc=$?; cat /tmp/report.json; \
         cat /tmp/o/events.jsonl; sha256sum /tmp/o/pcap/*.pcapng; exit $rc",
        bin = bin.display(),
        file = file.display()
    )
}

#[test]
fn a_seeded_lab_repeats_its_report_events_and_packet_capture() -> Result<()> {
    let Some(bin) = setup()? else { return Ok(()) };
    let cmd = lab_command(&bin);
    let a = vt(&bin, 3, &["sh", "-c", &cmd])?;
    let b = vt(&bin, 3, &["sh", "-c", &cmd])?;
    let c = vt(&bin, 4, &["sh", "-c", &cmd])?;
    let (sa, sb, sc) = (text(&a.stdout), text(&b.stdout), text(&c.stdout));
    ensure!(
        sa.contains("\"steps\"") && sa.contains("pcapng"),
        "no report or capture: {sa}\n{}",
        text(&a.stderr)
    );
    assert_eq!(a.status.code(), b.status.code());
    assert_eq!(sa, sb, "seed 3 twice");
    let hash = |s: &str| s.lines().last().unwrap_or("").to_string();
    assert_ne!(
        hash(&sa),
        hash(&sc),
        "seeds 3 and 4 captured the same packets"
    );
    Ok(())
}

/// Replays `seed` ten times: the same verdict as the sweep's and the same output every time.
fn replay_ten_times(bin: &Path, cmd: &str, seed: u64, passes: bool) -> Result<()> {
    let first = vt(bin, seed, &["sh", "-c", cmd])?;
    ensure!(
        first.status.success() == passes,
        "seed {seed}: the replay's verdict differs from the sweep's: {}",
        text(&first.stderr)
    );
    for i in 1..10 {
        let again = vt(bin, seed, &["sh", "-c", cmd])?;
        ensure!(
            again.status.code() == first.status.code(),
            "seed {seed}, replay {i}: exit {:?}, first run {:?}",
            again.status.code(),
            first.status.code()
        );
        ensure!(
            again.stdout == first.stdout,
            "seed {seed}, replay {i}: report, events or capture differ:\n{}\n---\n{}",
            text(&first.stdout),
            text(&again.stdout)
        );
    }
    println!(
        "seed {seed} ({}): 10 identical replays",
        if passes { "passes" } else { "fails" }
    );
    Ok(())
}

#[test]
fn a_flaky_test_fails_on_some_seeds_and_every_seed_replays_exactly() -> Result<()> {
    let Some(bin) = setup()? else { return Ok(()) };
    // The sweep runs exactly the command the replays run: a seed repeats a run of the same
    // command, environment and files (any other workload draws differently from the stream).
    let cmd = lab_command(&bin);
    let out = Command::new(&bin)
        .args(["vt", "--seeds", "1..100", "--json", "--", "sh", "-c", &cmd])
        .current_dir(workspace())
        .env_remove(patchbay::vt::SEED_ENV)
        .output()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("sweep report: {}\n{}", text(&out.stdout), text(&out.stderr)))?;
    let num = |k: &str| report[k].as_u64().unwrap_or(u64::MAX);
    let failing_list = report["failing"].as_array().cloned().unwrap_or_default();
    let failing: BTreeSet<u64> = failing_list
        .iter()
        .filter_map(|f| f["seed"].as_u64())
        .collect();
    println!(
        "sweep 1..100: {} passed, {} failed, {:.1} seeds/min; failing: {failing:?}",
        num("passed"),
        num("failed"),
        report["seeds_per_minute"].as_f64().unwrap_or(f64::NAN),
    );
    assert_eq!(num("run"), 100, "{report}");
    assert!(num("failed") >= 2, "fewer than two failing seeds");
    assert!(num("passed") >= 2, "fewer than two passing seeds");
    for f in &failing_list {
        let seed = f["seed"].as_u64().unwrap_or(u64::MAX);
        assert!(
            f["exit_code"].is_i64()
                && f["replay"]
                    .as_str()
                    .is_some_and(|r| r.contains(&format!("--seed {seed}"))),
            "every failure is the command's own, with its replay command: {f}"
        );
    }
    let passing: Vec<u64> = (1..=100).filter(|s| !failing.contains(s)).take(2).collect();
    let chosen: Vec<(u64, bool)> = failing
        .iter()
        .take(2)
        .map(|&s| (s, false))
        .chain(passing.into_iter().map(|s| (s, true)))
        .collect();
    // Two replay threads (one guest per core), two seeds each.
    std::thread::scope(|sc| -> Result<()> {
        let handles: Vec<_> = chosen
            .chunks(2)
            .map(|part| {
                let (bin, cmd) = (&bin, &cmd);
                sc.spawn(move || -> Result<()> {
                    for &(seed, passes) in part {
                        replay_ten_times(bin, cmd, seed, passes)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a replay thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(())
}

#[test]
fn bad_sweep_input_is_one_clear_line() -> Result<()> {
    // Parsed before any guest starts: no root or kernel needed.
    let bin = patchbay_bin()?;
    for (args, needle) in [
        (&["--seeds", "10..1"][..], "empty"),
        (&["--seeds", "1..x"][..], "is not a seed"),
        (
            &["--seeds", "1..10", "--partition", "3/2"][..],
            "out of range",
        ),
        (
            &["--seeds", "1..10", "--partition", "1-2"][..],
            "expected M/N",
        ),
        (&["--seeds", "1..10", "--jobs", "0"][..], "--jobs 0"),
    ] {
        let out = Command::new(&bin)
            .arg("vt")
            .args(args)
            .args(["--", "true"])
            .output()?;
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            err.trim().lines().count() <= 2,
            "{args:?}: not one clear line: {err}"
        );
    }
    Ok(())
}

/// The run dirs of the runner with pid `pid` (`<tmp>/patchbay-vt.<uid>/<pid>-<n>-<nanos>`). A
/// runner removes a run dir only after its UML process group is gone, so none left means no
/// guest left either.
fn run_dirs_of(pid: u32) -> Vec<String> {
    let parent = std::env::temp_dir().join(format!("patchbay-vt.{}", nix::unistd::geteuid()));
    std::fs::read_dir(&parent)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{pid}-"))
                })
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ctrl_c_stops_a_sweep_and_leaves_no_guest_behind() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let Some(bin) = setup()? else { return Ok(()) };
    let file = workspace().join("examples/flaky-loss.toml");
    let child = Command::new(&bin)
        .args(["vt", "--seeds", "1..200", "--jobs", "2", "--json", "--"])
        .arg(&bin)
        .arg("run")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(
        !run_dirs_of(child.id()).is_empty(),
        "no guest was running when the test pressed Ctrl-C"
    );
    // What a terminal's Ctrl-C does: SIGINT to the foreground process group.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let pid = child.id();
    let started = std::time::Instant::now();
    let out = child.wait_with_output()?;
    let waited = started.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("report: {}\n{}", text(&out.stdout), text(&out.stderr)))?;
    println!(
        "interrupted after 6 s: {} of {} seeds run, exit {:?}, stopped in {waited:?}",
        report["run"],
        report["planned"],
        out.status.code()
    );
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(out.status.code(), Some(1));
    let run = report["run"].as_u64().unwrap_or(0);
    assert!(run > 0 && run < 200, "{run} seeds ran");
    assert!(
        waited < std::time::Duration::from_secs(5),
        "the running guests were not stopped at once ({waited:?})"
    );
    let left = run_dirs_of(pid);
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}
