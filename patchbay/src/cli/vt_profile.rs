//! `patchbay vt --profile [--json]`: where a virtual-time guest spends host wall time.
//!
//! Every figure is host wall time (CPU work costs no virtual time under `inf-cpu`), taken from
//! the host's timestamps of console lines: the guest init's start and end markers, and
//! `PATCHBAY-VT-MARK name` lines that the measured programs write to `/dev/console` right
//! before and after their loop, so boot and interpreter start-up are not in the per-item
//! costs.
//! - `true`: `patchbay vt -- true` as a whole, boot to the first command, and power-off
//!   (command end to UML's exit); median of [`RUNS`] boots;
//! - syscall: `os.getppid()` × [`SYSCALLS`] in `/usr/bin/python3`;
//! - clock read: `time.monotonic()` × [`CLOCK_READS`] in the same interpreter (`clock_gettime`:
//!   a syscall, or the vDSO with the kernel's trap-free clock, which still makes the syscall
//!   on every 64th read of an unchanged clock);
//! - spawn: `/bin/true` × [`SPAWNS`] from `/bin/sh`;
//! - small lab: `patchbay run --virtual` of 1 router, 2 devices and one TCP exchange between
//!   two `/usr/bin/python3` commands, as a whole (boot included) and its in-guest part.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vt::{self, GuestProcesses, VtOpts, VtOutcome};
use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

/// Boots per `true` measurement (the median is reported).
const RUNS: usize = 3;
/// Syscalls in the syscall loop.
const SYSCALLS: u32 = 20_000;
/// Clock reads in the clock loop (more than syscalls: through the vDSO one costs about
/// 0.5 µs, and the console marks are timed to the runner's 2 ms poll).
const CLOCK_READS: u32 = 100_000;
/// Processes in the spawn loop.
const SPAWNS: u32 = 200;

/// The small lab: one router, two devices, one TCP exchange between two Python commands.
const LAB: &str = r#"[lab]
label = "vt-profile"

[[router]]
name = "r"

[[device]]
name = "a"
iface = [{ name = "eth0", router = "r" }]

[[device]]
name = "b"
iface = [{ name = "eth0", router = "r" }]

[[step]]
run = "a"
background = "server"
cmd = ["/usr/bin/python3", "-c", """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('${a.ip}', 9000))
s.listen(1)
c, _ = s.accept()
c.sendall(c.recv(99).upper())
c.close()
"""]

[[step]]
run = "b"
expect-output = "PING"
cmd = ["/usr/bin/python3", "-c", """
import socket, time
for _ in range(100):
    try:
        s = socket.create_connection(('${a.ip}', 9000))
        break
    except OSError:
        time.sleep(0.01)
s.sendall(b'ping')
print(s.recv(99).decode())
"""]

[[step]]
kill = "server"
"#;

/// The guest program measuring syscalls, clock reads and spawns (`$1` = python3, `$2`/`$3`/`$4`
/// = counts).
const LOOPS: &str = r#"mark() { echo "PATCHBAY-VT-MARK $1" > /dev/console; }
"$1" -c '
import os, sys, time
n, reads = int(sys.argv[1]), int(sys.argv[2])
con = open("/dev/console", "w")
con.write("PATCHBAY-VT-MARK syscall-start\n"); con.flush()
for _ in range(n):
    os.getppid()
con.write("PATCHBAY-VT-MARK syscall-end\n"); con.flush()
con.write("PATCHBAY-VT-MARK clock-start\n"); con.flush()
for _ in range(reads):
    time.monotonic()
con.write("PATCHBAY-VT-MARK clock-end\n"); con.flush()
' "$2" "$3"
mark spawn-start
i=0
while [ "$i" -lt "$4" ]; do /bin/true; i=$((i + 1)); done
mark spawn-end
"#;

/// One profile of one kernel in one process mode.
#[derive(Debug, Serialize)]
pub struct Profile {
    /// Kernel release (`linux --version`).
    pub kernel: String,
    /// The kernel binary.
    pub kernel_path: PathBuf,
    /// `seccomp` or `ptrace`.
    pub processes: &'static str,
    /// Whether guest processes read the clock without a trap ([`VtOpts::fast_clock`] on a
    /// kernel that has it).
    pub fast_clock: bool,
    /// `patchbay vt -- true`, spawn to UML's exit, seconds (median).
    pub vt_true_s: f64,
    /// Spawn to the guest starting the command, seconds (median).
    pub boot_to_command_s: f64,
    /// Of that: spawn to the guest init's first line (kernel boot), seconds (median).
    pub kernel_boot_s: f64,
    /// The command's end to UML's exit (power-off), seconds (median).
    pub shutdown_s: f64,
    /// One guest syscall (`getppid`), microseconds.
    pub syscall_us: f64,
    /// One clock read (`time.monotonic()` in a loop), microseconds.
    pub clock_read_us: f64,
    /// One process spawn (`/bin/true` from `sh`), milliseconds.
    pub spawn_ms: f64,
    /// The small lab as a whole (`patchbay run --virtual`, boot to exit), seconds.
    pub lab_s: f64,
    /// The small lab's in-guest part (command start to end), seconds.
    pub lab_in_guest_s: f64,
}

/// Runs the profile with the kernel and mode of `base`.
pub fn profile(base: &VtOpts) -> Result<Profile> {
    let work = tempdir()?;
    let result = profile_in(base, &work);
    // Always remove the scratch dir; report the first error.
    let removed =
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()));
    let p = result?;
    removed?;
    Ok(p)
}

fn profile_in(base: &VtOpts, work: &Path) -> Result<Profile> {
    let opts = VtOpts {
        results_dir: Some(work.to_path_buf()),
        guard: Duration::from_secs(120),
        ..base.clone()
    };
    let mut trues = Vec::new();
    for _ in 0..RUNS {
        trues.push(run_ok(&["true".into()], &opts)?);
    }
    let first = &trues[0];
    let kernel = first.kernel.clone();
    let boot = median(trues.iter().map(|o| secs(o.boot_to_command_wall)).collect());
    let kernel_boot = median(trues.iter().map(|o| mark(o, "init")).collect());
    let shutdown = median(
        trues
            .iter()
            .map(|o| o.wall.as_secs_f64() - secs(o.command_end_wall))
            .collect(),
    );
    let whole = median(trues.iter().map(|o| o.wall.as_secs_f64()).collect());
    let seccomp = first.seccomp;

    let script = work.join("loops.sh");
    std::fs::write(&script, LOOPS).with_context(|| format!("writing {}", script.display()))?;
    let loops = run_ok(
        &[
            "/bin/sh".into(),
            script.clone().into(),
            "/usr/bin/python3".into(),
            SYSCALLS.to_string().into(),
            CLOCK_READS.to_string().into(),
            SPAWNS.to_string().into(),
        ],
        &opts,
    )?;
    let span = |a: &str, b: &str| -> Result<f64> {
        let at = |n: &str| {
            let t = mark(&loops, n);
            ensure!(t.is_finite(), "the guest wrote no {n} mark to /dev/console");
            Ok(t)
        };
        Ok(at(b)? - at(a)?)
    };
    let syscall_us = span("syscall-start", "syscall-end")? / f64::from(SYSCALLS) * 1e6;
    let spawn_ms = span("spawn-start", "spawn-end")? / f64::from(SPAWNS) * 1e3;
    let clock_read_us = span("clock-start", "clock-end")? / f64::from(CLOCK_READS) * 1e6;

    let lab = work.join("lab.toml");
    std::fs::write(&lab, LAB).with_context(|| format!("writing {}", lab.display()))?;
    let exe = std::env::current_exe().context("locating the patchbay binary")?;
    let lab_out = run_ok(
        &[exe.into(), "run".into(), "--virtual".into(), lab.into()],
        &opts,
    )?;
    Ok(Profile {
        kernel: kernel.release,
        kernel_path: kernel.path,
        processes: if seccomp { "seccomp" } else { "ptrace" },
        fast_clock: kernel.fast_clock && base.fast_clock,
        vt_true_s: whole,
        boot_to_command_s: boot,
        kernel_boot_s: kernel_boot,
        shutdown_s: shutdown,
        syscall_us,
        clock_read_us,
        spawn_ms,
        lab_s: lab_out.wall.as_secs_f64(),
        lab_in_guest_s: secs(lab_out.command_end_wall) - secs(lab_out.boot_to_command_wall),
    })
}

fn run_ok(argv: &[OsString], opts: &VtOpts) -> Result<VtOutcome> {
    let out = vt::run(argv, opts)?;
    if out.exit_code != 0 {
        bail!(
            "{:?} exited {} in the guest:\n{}{}",
            argv,
            out.exit_code,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Wall seconds since spawn of a console mark, NaN when absent.
fn mark(o: &VtOutcome, name: &str) -> f64 {
    o.marks
        .iter()
        .find(|(m, _)| m == name)
        .map_or(f64::NAN, |(_, t)| t.as_secs_f64())
}

fn secs(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A fresh private scratch dir (the guest sees it at the same path, writable).
fn tempdir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "patchbay-vt-profile-{}-{nanos}",
        std::process::id()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    ensure!(
        !dir.as_os_str().as_encoded_bytes().contains(&b','),
        "the temp dir {} contains a comma, which hostfs mount options cannot carry",
        dir.display()
    );
    Ok(dir)
}

/// The text table of one or more profiles, one column each.
pub fn render(profiles: &[Profile]) -> String {
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        (
            "kernel",
            profiles
                .iter()
                .map(|p| {
                    let clock = if p.fast_clock {
                        "vDSO clock"
                    } else {
                        "syscall clock"
                    };
                    format!("UML {} {} {clock}", p.kernel, p.processes)
                })
                .collect(),
        ),
        (
            "syscall (getppid)",
            profiles
                .iter()
                .map(|p| format!("{:.1} µs", p.syscall_us))
                .collect(),
        ),
        (
            "clock read (monotonic)",
            profiles
                .iter()
                .map(|p| format!("{:.2} µs", p.clock_read_us))
                .collect(),
        ),
        (
            "spawn (/bin/true)",
            profiles
                .iter()
                .map(|p| format!("{:.2} ms", p.spawn_ms))
                .collect(),
        ),
    ];
    let s = |f: fn(&Profile) -> f64| -> Vec<String> {
        profiles.iter().map(|p| format!("{:.3} s", f(p))).collect()
    };
    rows.push(("kernel boot (to init)", s(|p| p.kernel_boot_s)));
    rows.push(("boot to first command", s(|p| p.boot_to_command_s)));
    rows.push(("shutdown", s(|p| p.shutdown_s)));
    rows.push(("vt -- true", s(|p| p.vt_true_s)));
    rows.push(("small lab (whole run)", s(|p| p.lab_s)));
    rows.push(("small lab (in guest)", s(|p| p.lab_in_guest_s)));
    let w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, cells) in rows {
        out += &format!("{name:w$}  {}\n", cells.join("  "));
    }
    out
}

/// Whether a mode name given on the command line asks for ptrace.
pub fn processes(ptrace: bool) -> GuestProcesses {
    if ptrace {
        GuestProcesses::Ptrace
    } else {
        GuestProcesses::Auto
    }
}
