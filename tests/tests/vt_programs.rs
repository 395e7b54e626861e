//! Real programs in virtual time, each the first command of a fresh guest: `sleep`, `timeout`,
//! iputils `ping -i`, `curl --connect-timeout` and `nc -w` against a blackholed port, and
//! Python's `time.sleep`, `select` and asyncio timers. Each virtual duration is asserted to
//! within 1 ms of what the program was asked to wait (beyond the kernel's documented slack),
//! or, for ping, of what the kernel's timer wheel makes of it.
//!
//! The guest starts the command at a virtual uptime of 300 s (`VtOpts::uptime`), like a machine
//! that has been up for minutes; `ping_right_after_boot` shows why that matters.
//!
//! Needs a UML kernel (`cargo xtask build-uml`) and the host tools (the guest runs host
//! binaries): `ping` (iputils-ping), `curl`, `nc` (netcat-openbsd), `nft`, `python3`.
//! `cargo xtask test` installs them. Missing ones skip with a printed reason.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use patchbay::vt::{self, VtError, VtOpts};
use patchbay_tests::skip;

/// Drops every TCP packet to 127.0.0.1:9 in the guest: a server that never answers.
const BLACKHOLE: &str = "nft -f - <<'EOF' || exit 99
table inet blackhole {
    chain out {
        type filter hook output priority 0;
        ip daddr 127.0.0.1 tcp dport 9 drop
    }
}
EOF
";

/// The allowed difference between a program's virtual duration and what it was asked for:
/// 1 ms beyond the kernel's own timer slack. `poll`, `select` and `epoll_wait` timeouts of a
/// normal (non-RT) task may expire up to 0.1 % late (`select_estimate_accuracy` in
/// fs/select.c, capped at 100 ms). An idle machine arms the timer at the end of that window,
/// so real hosts show the same lateness: `nc -w 3` 3.0031 s, python `select` 1.5 s 1.5016 s,
/// curl's 5 s connect timeout 5.0011 s (measured on UML 6.1, before this bound was set).
/// `nanosleep` has only the task's 50 µs `timer_slack_ns`.
fn tolerance(expect: Duration) -> Duration {
    Duration::from_millis(1) + expect / 1000
}

fn opts() -> Option<VtOpts> {
    match vt::find_uml_binary() {
        Ok(binary) => Some({
            let mut o = VtOpts::default();
            o.guard = Duration::from_secs(120);
            o.uml_binary = Some(binary);
            o.cwd = Some(PathBuf::from("/"));
            o
        }),
        Err(e @ VtError::UmlNotFound { .. }) => {
            skip(&format!("no UML kernel; run `cargo xtask build-uml` ({e})"));
            None
        }
        Err(e) => panic!("finding the UML kernel failed: {e}"),
    }
}

/// Whether the host has every tool (skips naming the missing one and its package otherwise).
fn have(tools: &[(&str, &str)]) -> bool {
    for (tool, package) in tools {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file());
        if !found {
            skip(&format!(
                "`{tool}` is not installed on the host (the guest runs host binaries): apt-get install -y {package}"
            ));
            return false;
        }
    }
    true
}

struct Ran {
    exit: i32,
    stdout: String,
    stderr: String,
}

/// Runs `args` as the first command of a fresh guest and checks its virtual duration.
fn run_timed(opts: &VtOpts, args: &[&str], expect: Duration) -> anyhow::Result<Ran> {
    run_within(opts, args, expect, tolerance(expect))
}

/// [`run_timed`] with its own tolerance.
fn run_within(
    opts: &VtOpts,
    args: &[&str],
    expect: Duration,
    tolerance: Duration,
) -> anyhow::Result<Ran> {
    run_predicted(opts, args, |_| expect, tolerance)
}

/// [`run_within`] with the expected duration predicted from the uptime the command started at.
fn run_predicted(
    opts: &VtOpts,
    args: &[&str],
    predict: impl Fn(Duration) -> Duration,
    tolerance: Duration,
) -> anyhow::Result<Ran> {
    let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
    let out = vt::run(&argv, opts)?;
    let virt = out.virtual_elapsed.expect("the guest reports virtual time");
    let ran = Ran {
        exit: out.exit_code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let start = out.boot_to_command.expect("the guest reports its uptime");
    let expect = predict(start);
    println!(
        "{:<60} exit {:>3}  virtual {:>12.6} s (asked {:.3} s)  wall {:.3} s  uptime at start {:.2} s\n  stdout: {}\n  stderr: {}",
        args.last().map_or("", |a| a.lines().last().unwrap_or(a)),
        ran.exit,
        virt.as_secs_f64(),
        expect.as_secs_f64(),
        out.wall.as_secs_f64(),
        start.as_secs_f64(),
        ran.stdout.trim().replace('\n', " | "),
        ran.stderr.trim().replace('\n', " | "),
    );
    assert!(
        start >= vt::VtOpts::default().uptime,
        "the command must start at the realistic uptime, not {start:?}"
    );
    let diff = virt.abs_diff(expect);
    assert!(
        diff <= tolerance,
        "{args:?}: virtual {virt:?} differs from {expect:?} by {diff:?} (> {tolerance:?})\nstdout: {}\nstderr: {}",
        ran.stdout,
        ran.stderr
    );
    Ok(ran)
}

#[test]
fn sleep_and_timeout() -> anyhow::Result<()> {
    let Some(opts) = opts() else { return Ok(()) };
    let r = run_timed(&opts, &["sleep", "2.5"], Duration::from_millis(2500))?;
    assert_eq!(r.exit, 0);
    let r = run_timed(
        &opts,
        &["timeout", "3", "sleep", "10"],
        Duration::from_secs(3),
    )?;
    assert_eq!(r.exit, 124, "timeout kills sleep after 3 s");
    Ok(())
}

/// UML's `HZ` (fixed at 100 by arch/um/Kconfig).
const GUEST_HZ: u64 = 100;
/// `INITIAL_JIFFIES` on 64-bit (include/linux/jiffies.h): jiffies wrap 32 bits 300 s after boot.
const INITIAL_JIFFIES: u64 = (-300_i64 * GUEST_HZ as i64) as u32 as u64;

/// The jiffy at which a `schedule_timeout(timeout)` armed at jiffy `now` fires. The timer
/// wheel files a timer in the level whose range holds its delta (level n starts at
/// `63 << 3(n-1)` jiffies) and rounds the expiry *past* it to that level's granularity,
/// `8^n` jiffies (`calc_index` in kernel/time/timer.c, 6.1 and 7.3 alike).
fn wheel_fires_at(now: u64, timeout: u64) -> u64 {
    let expires = now + timeout;
    let mut lvl = 0;
    while lvl < 8 && timeout >= 63 << (3 * lvl) {
        lvl += 1;
    }
    let shift = 3 * lvl;
    ((expires >> shift) + 1) << shift
}

#[test]
fn wheel_rounding_matches_the_kernel_formula() {
    // Level 0 (< 63 jiffies): one jiffy past the expiry.
    assert_eq!(wheel_fires_at(1000, 10), 1011);
    // Level 1 (63..504): the next multiple of 8 past it. A 2 s socket timeout at HZ=100
    // armed on a multiple of 8 fires 80 ms late.
    assert_eq!(wheel_fires_at(30_000, 200), 30_208);
    assert_eq!(wheel_fires_at(30_007, 200), 30_208);
    // Level 2 (504..4032): multiples of 64.
    assert_eq!(wheel_fires_at(0, 1000), 1024);
}

#[test]
fn ping_paces_its_probes() -> anyhow::Result<()> {
    let Some(opts) = opts() else { return Ok(()) };
    if !have(&[("ping", "iputils-ping")]) {
        return Ok(());
    }
    // iputils ping sends a probe, then waits for replies in a blocking recvmsg whose
    // SO_RCVTIMEO is the interval: 2 s = 200 jiffies (`sock_set_timeout`), slept by
    // `schedule_timeout`, a timer-wheel timer. Level 1's 8-jiffy (80 ms) granularity makes each
    // wait end at the next multiple of 8 jiffies past the expiry; the run ends with the third
    // reply. (A real HZ=250 host shows the same: `time 4029ms`..`4032ms` for this command, its
    // level-1 granularity being 32 ms.) The prediction is exact, so the bound is 1 ms.
    let tick = 1_000_000_000 / GUEST_HZ;
    let predict = |start: Duration| {
        let start_ns = u64::try_from(start.as_nanos()).expect("uptime fits u64 ns");
        let mut j = INITIAL_JIFFIES + start_ns / tick;
        for _ in 0..2 {
            j = wheel_fires_at(j, 2 * GUEST_HZ);
        }
        Duration::from_nanos((j - INITIAL_JIFFIES) * tick - start_ns)
    };
    let r = run_predicted(
        &opts,
        &["ping", "-n", "-c", "3", "-i", "2", "127.0.0.1"],
        predict,
        Duration::from_millis(1),
    )?;
    assert_eq!(r.exit, 0, "{}", r.stderr);
    assert!(r.stdout.contains("3 received"), "{}", r.stdout);
    Ok(())
}

/// The failure mode the realistic uptime fixes: at an uptime near zero, iputils ping treats
/// its last-send time 0 as "never sent" and sends every probe at once.
#[test]
fn ping_right_after_boot() -> anyhow::Result<()> {
    let Some(opts) = opts() else { return Ok(()) };
    if !have(&[("ping", "iputils-ping")]) {
        return Ok(());
    }
    let opts = {
        let mut o = opts;
        o.uptime = Duration::ZERO;
        o
    };
    let argv: Vec<OsString> = ["ping", "-n", "-c", "3", "-i", "2", "127.0.0.1"]
        .iter()
        .map(OsString::from)
        .collect();
    let out = vt::run(&argv, &opts)?;
    let virt = out.virtual_elapsed.expect("virtual time");
    println!(
        "uptime 0: ping -c 3 -i 2 took {virt:?} virtual (uptime at start {:?})\n{}",
        out.boot_to_command,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.boot_to_command
            .is_some_and(|u| u < Duration::from_secs(1)),
        "uptime 0 starts the command right after boot"
    );
    Ok(())
}

#[test]
fn curl_connect_timeout_to_a_blackhole() -> anyhow::Result<()> {
    let Some(opts) = opts() else { return Ok(()) };
    if !have(&[("curl", "curl"), ("nft", "nftables")]) {
        return Ok(());
    }
    let script = format!("{BLACKHOLE}exec curl -sS --connect-timeout 5 http://127.0.0.1:9/");
    // curl's own timer resolution is 1 ms: it reports "after 5000" or "after 5001" (ms or
    // milliseconds, depending on curl's version).
    let r = run_timed(&opts, &["sh", "-c", &script], Duration::from_secs(5))?;
    assert_eq!(r.exit, 28, "curl's timeout exit code; stderr: {}", r.stderr);
    assert!(r.stderr.contains("after 500"), "{}", r.stderr);
    Ok(())
}

#[test]
fn nc_wait_to_a_blackhole() -> anyhow::Result<()> {
    let Some(opts) = opts() else { return Ok(()) };
    if !have(&[("nc", "netcat-openbsd"), ("nft", "nftables")]) {
        return Ok(());
    }
    let script = format!("{BLACKHOLE}exec nc -w 3 127.0.0.1 9");
    let r = run_timed(&opts, &["sh", "-c", &script], Duration::from_secs(3))?;
    assert_eq!(r.exit, 1, "nc gives up; stderr: {}", r.stderr);
    Ok(())
}

#[test]
fn python_sleep_select_and_asyncio() -> anyhow::Result<()> {
    let Some(opts) = opts() else { return Ok(()) };
    // The system Python: the guest PATH has no version-manager shims.
    if !Path::new("/usr/bin/python3").is_file() {
        skip("no /usr/bin/python3 on the host: apt-get install -y python3");
        return Ok(());
    }
    let cases = [
        "import time; t = time.monotonic(); time.sleep(1.5); print(time.monotonic() - t)",
        "import select, time; t = time.monotonic(); select.select([], [], [], 1.5); print(time.monotonic() - t)",
        "import asyncio, time\n\
         async def main():\n\
         \x20   loop = asyncio.get_running_loop()\n\
         \x20   done = loop.create_future()\n\
         \x20   loop.call_later(1.0, done.set_result, None)\n\
         \x20   await done\n\
         \x20   await asyncio.sleep(0.5)\n\
         t = time.monotonic(); asyncio.run(main()); print(time.monotonic() - t)",
    ];
    for code in cases {
        let r = run_timed(
            &opts,
            &["/usr/bin/python3", "-c", code],
            Duration::from_millis(1500),
        )?;
        assert_eq!(r.exit, 0, "{}", r.stderr);
        let own: f64 = r.stdout.trim().parse()?;
        assert!(
            (own - 1.5).abs() < tolerance(Duration::from_millis(1500)).as_secs_f64(),
            "Python measured {own} s itself"
        );
    }
    Ok(())
}
