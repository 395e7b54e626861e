//! The trap-free guest clock (`xtask/uml-vdso.patch`, `UmlKernel::fast_clock`): guest processes
//! read `clock_gettime`, `gettimeofday` and `time` through the vDSO from a page the UML kernel
//! keeps current, with the syscall's values to the nanosecond, and a program spinning on the
//! clock still sees it move. Kernels without the patch skip with the reason.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use patchbay::vt::{self, VtOpts};
use patchbay_tests::skip;

use super::{argv, host_binary, setup, text};

/// `setup()` for a kernel with the fast clock, else `None` after the skip line.
fn fast_clock_setup() -> Option<(VtOpts, std::sync::MutexGuard<'static, ()>)> {
    let (mut opts, serial) = setup()?;
    // The default; set anyway so that the test does not depend on it.
    opts.fast_clock = true;
    let binary = opts.uml_binary.clone().expect("setup names the kernel");
    let kernel = vt::probe_kernel(&binary).expect("probing the UML kernel");
    if !kernel.fast_clock {
        skip(&format!(
            "UML {} at {} has no trap-free clock (no `patchbay_vclock=` in `linux --help`): \
             built without xtask/uml-vdso.patch, or a 6.1 kernel it does not apply to; rebuild \
             with `cargo xtask build-uml`",
            kernel.release,
            binary.display()
        ));
        return None;
    }
    Some((opts, serial))
}

/// Clock ids the vDSO serves from the page with the clocksource's arithmetic.
const HRES: &[i32] = &[0, 1, 4, 7, 11]; // REALTIME, MONOTONIC, MONOTONIC_RAW, BOOTTIME, TAI
/// ... and without it: a coarse clock does not read the clocksource, in the kernel either.
const COARSE: &[i32] = &[5, 6]; // REALTIME_COARSE, MONOTONIC_COARSE
/// One step of the clocksource (256 ns) in nanoseconds, as the timekeeper's multiplier converts
/// it: 256, or 255 / 257 while NTP or adjtimex skew the multiplier.
const ONE_READ: std::ops::RangeInclusive<i128> = 255..=257;

/// Compiles tests/tests/vt/clock_compare.c with the host's gcc (the guest runs host binaries).
fn compile_compare() -> anyhow::Result<Option<PathBuf>> {
    let Some(gcc) = host_binary("gcc") else {
        skip("no gcc on the host to build the guest's clock probe: apt-get install -y gcc");
        return Ok(None);
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vt/clock_compare.c");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("clock_compare");
    let st = std::process::Command::new(gcc)
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .status()?;
    anyhow::ensure!(st.success(), "gcc {} failed: {st}", src.display());
    Ok(Some(out))
}

/// The numbers of one output line of the probe after its tag, e.g. `clock 1 0 0 0 0 ...`.
fn fields(line: &str) -> Vec<i128> {
    line.split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// Checks `clock_compare` output of a guest whose vDSO serves the clock: a vDSO read does not
/// move the clock, the syscall moves it by one clocksource step, and the vDSO right after the
/// syscall returns exactly the syscall's value. Returns the lines checked per clock id (-1:
/// gettimeofday, -2: time), or the first line that breaks a rule.
fn check_fast(stdout: &str) -> anyhow::Result<BTreeMap<i32, usize>> {
    use anyhow::ensure;
    let mut checked = BTreeMap::new();
    for line in stdout.lines() {
        let f = fields(line);
        let id = if line.starts_with("clock ") {
            let (id, rc, v) = (f[0] as i32, &f[1..5], &f[5..9]);
            let (v1, v2, s, v3) = (v[0], v[1], v[2], v[3]);
            if HRES.contains(&id) {
                ensure!(rc == [0, 0, 0, 0], "clock {id}: an error: {line}");
                ensure!(v1 == v2, "clock {id}: a vDSO read moved the clock: {line}");
                ensure!(
                    ONE_READ.contains(&(s - v2)),
                    "clock {id}: the syscall is not one clocksource step after the vDSO: {line}"
                );
                ensure!(
                    v3 == s,
                    "clock {id}: vDSO and syscall differ at one instant: {line}"
                );
            } else if COARSE.contains(&id) {
                ensure!(rc == [0, 0, 0, 0], "clock {id}: an error: {line}");
                ensure!(v1 == v2 && v2 == s && s == v3, "clock {id}: {line}");
            } else {
                // Not served (CPU-time, alarm and invalid clocks): the syscall's answer.
                ensure!(rc.iter().all(|r| *r == rc[2]), "clock {id}: {line}");
                ensure!(v1 <= v2 && v2 <= s && s <= v3, "clock {id}: {line}");
            }
            id
        } else if line.starts_with("tod ") {
            let (v1, s, v2) = (f[3], f[4], f[5]);
            ensure!(f[..3] == [0, 0, 0], "gettimeofday: an error: {line}");
            ensure!(s == v1 || s == v1 + 1, "gettimeofday: {line}");
            ensure!(v2 == s, "gettimeofday: vDSO and syscall differ: {line}");
            -1
        } else if line.starts_with("time ") {
            ensure!(f[0] == f[1] && f[1] == f[2], "time: {line}");
            -2
        } else {
            continue;
        };
        *checked.entry(id).or_default() += 1;
    }
    Ok(checked)
}

#[test]
fn vdso_clock_reads_equal_the_syscall() -> anyhow::Result<()> {
    let Some((opts, _serial)) = fast_clock_setup() else {
        return Ok(());
    };
    let Some(probe) = compile_compare()? else {
        return Ok(());
    };
    const ROUNDS: usize = 30;
    let out = vt::run(&[probe.clone().into(), ROUNDS.to_string().into()], &opts)?;
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "{stdout}{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "adjtimex or clock_settime failed");
    let checked = check_fast(&stdout)?;
    println!("checked per clock id (-1 gettimeofday, -2 time): {checked:?}");
    assert_eq!(checked.len(), 14, "{stdout}");
    assert!(checked.values().all(|n| *n == ROUNDS), "{checked:?}");

    // The same probe with the fast clock off must fail the check: every read is a syscall
    // and moves the clock (so the check above can tell).
    let slow = vt::run(&[probe.clone().into(), "1".into()], &{
        let mut o = opts.clone();
        o.fast_clock = false;
        o
    })?;
    let slow_out = text(&slow.stdout);
    let err = check_fast(&slow_out).expect_err("syscall-only reads pass the check");
    println!("with the fast clock off the check fails, as it must: {err}");

    // In a time namespace of its own (offsets 1000 s, 2000 s) a process reads through the
    // syscall, which adds the offsets; the vDSO must not serve it the root namespace's clock.
    let Some(unshare) = host_binary("unshare") else {
        skip("no util-linux unshare on the host");
        return Ok(());
    };
    let ns = vt::run(
        &argv(&[
            &unshare.to_string_lossy(),
            "--time",
            "--monotonic",
            "1000",
            "--boottime",
            "2000",
            "--fork",
            &probe.to_string_lossy(),
            "1",
        ]),
        &opts,
    )?;
    let ns_out = text(&ns.stdout);
    assert_eq!(ns.exit_code, 0, "{ns_out}{}", text(&ns.stderr));
    for line in ns_out.lines().filter(|l| l.starts_with("clock ")) {
        let f = fields(line);
        let (id, v1, s) = (f[0] as i32, f[5], f[7]);
        let offset = match id {
            1 | 4 | 6 => 1000,
            7 => 2000,
            _ => continue,
        };
        assert!(
            v1 >= offset * 1_000_000_000 && (s - v1).abs() < 1_000_000,
            "clock {id} in a time namespace with offset {offset} s: {line}"
        );
    }
    Ok(())
}

/// Guest syscalls of a tokio program under `strace -c -f` with the fast clock (and, for
/// contrast, without it): none of them reads the clock.
#[test]
fn tokio_program_reads_the_clock_without_syscalls() -> anyhow::Result<()> {
    let Some((opts, _serial)) = fast_clock_setup() else {
        return Ok(());
    };
    let Some(strace) = host_binary("strace") else {
        skip("strace is not installed on the host: apt-get install -y strace");
        return Ok(());
    };
    let results = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vt-strace-{}", std::process::id()));
    let mut counts = Vec::new();
    for fast_clock in [true, false] {
        let opts = {
            let mut o = opts.clone();
            o.fast_clock = fast_clock;
            o.results_dir = Some(results.clone());
            o
        };
        let summary = results.join("strace");
        let mut cmd = vec![
            strace.clone().into_os_string(),
            "-c".into(),
            "-f".into(),
            "-o".into(),
            summary.clone().into_os_string(),
            std::env::current_exe()?.into_os_string(),
        ];
        cmd.extend(
            [
                "--ignored",
                "--exact",
                "clock::guest_tokio_clock_workload",
                "--nocapture",
            ]
            .iter()
            .map(OsString::from),
        );
        let out = vt::run(&cmd, &opts)?;
        let stdout = text(&out.stdout);
        assert_eq!(out.exit_code, 0, "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
        let table = std::fs::read_to_string(&summary)?;
        let calls = |name: &str| -> u64 {
            table
                .lines()
                .find(|l| l.split_whitespace().last() == Some(name))
                .and_then(|l| l.split_whitespace().nth(3))
                .map_or(0, |n| n.parse().unwrap_or(0))
        };
        let total = table
            .lines()
            .find(|l| l.split_whitespace().last() == Some("total"))
            .and_then(|l| l.split_whitespace().nth(3))
            .map_or(0, |n| n.parse().unwrap_or(0));
        println!(
            "fast clock {fast_clock}: wall {:.2} s, virtual {:?}, {total} syscalls\n{stdout}\n{table}",
            out.wall.as_secs_f64(),
            out.virtual_elapsed
        );
        counts.push((
            calls("clock_gettime") + calls("gettimeofday") + calls("time"),
            total,
        ));
    }
    std::fs::remove_dir_all(&results)?;
    let ((fast, fast_total), (slow, slow_total)) = (counts[0], counts[1]);
    assert_eq!(
        fast, 0,
        "with the fast clock, the tokio program still made {fast} clock syscalls"
    );
    assert!(
        slow >= 4000,
        "without the fast clock the program made only {slow} clock syscalls: the workload \
         does not read the clock as it should"
    );
    println!(
        "clock syscalls: {fast} of {fast_total} with the fast clock, {slow} of {slow_total} without"
    );
    Ok(())
}

/// Runs in the guest under strace (`tokio_program_reads_the_clock_without_syscalls`): four
/// tasks on a two-thread runtime, each timing 500 sleeps of 1 to 3 ms with `Instant`.
#[test]
#[ignore = "guest side of tokio_program_reads_the_clock_without_syscalls"]
fn guest_tokio_clock_workload() {
    if std::env::var("PATCHBAY_VT").as_deref() != Ok("1") {
        skip("runs only inside the UML guest (PATCHBAY_VT=1)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let start = Instant::now();
    let slept = rt.block_on(async {
        let tasks: Vec<_> = (0..4u64)
            .map(|task| {
                tokio::spawn(async move {
                    let mut total = Duration::ZERO;
                    for i in 0..500u64 {
                        let asked = Duration::from_millis(1 + (i + task) % 3);
                        let t = Instant::now();
                        tokio::time::sleep(asked).await;
                        let took = t.elapsed();
                        assert!(took >= asked, "slept {took:?} < {asked:?}");
                        total += took;
                    }
                    total
                })
            })
            .collect();
        let mut sum = Duration::ZERO;
        for t in tasks {
            sum += t.await.expect("task");
        }
        sum
    });
    println!(
        "guest: 4 x 500 tokio sleeps, {slept:?} slept in all, {:?} elapsed",
        start.elapsed()
    );
}

/// A program that busy-waits on `Instant::now()` (no syscall of its own) for 5 ms of virtual
/// time ends: every 64th read of an unchanged clock makes the syscall, which moves it.
#[test]
fn spinning_on_the_clock_ends() -> anyhow::Result<()> {
    let Some((opts, _serial)) = fast_clock_setup() else {
        return Ok(());
    };
    let opts = {
        let mut o = opts;
        o.guard = Duration::from_secs(120);
        o
    };
    let mut cmd = vec![std::env::current_exe()?.into_os_string()];
    cmd.extend(
        [
            "--ignored",
            "--exact",
            "clock::guest_spin_on_the_clock",
            "--nocapture",
        ]
        .iter()
        .map(OsString::from),
    );
    let out = vt::run(&cmd, &opts)?;
    let stdout = text(&out.stdout);
    println!(
        "{stdout}wall {:.2} s, virtual {:?}",
        out.wall.as_secs_f64(),
        out.virtual_elapsed
    );
    assert_eq!(out.exit_code, 0, "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    Ok(())
}

/// Runs in the guest (`spinning_on_the_clock_ends`).
#[test]
#[ignore = "guest side of spinning_on_the_clock_ends"]
fn guest_spin_on_the_clock() {
    if std::env::var("PATCHBAY_VT").as_deref() != Ok("1") {
        skip("runs only inside the UML guest (PATCHBAY_VT=1)");
        return;
    }
    let start = Instant::now();
    let mut reads = 0u64;
    while start.elapsed() < Duration::from_millis(5) {
        reads += 1;
    }
    let took = start.elapsed();
    println!("guest: {reads} clock reads spun {took:?}");
    // 64 reads per 256 ns step: 5 ms is about 1.25 million reads.
    assert!(reads >= 1_000_000, "{reads} reads");
    assert!(took < Duration::from_millis(6), "{took:?}");
}
