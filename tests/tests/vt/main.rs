//! Virtual-time backend: commands inside a UML kernel in `time-travel=inf-cpu` mode.
//!
//! Needs root and a UML kernel from `cargo xtask build-uml`; skips with a printed reason otherwise.
//! Runs are serialized: each guest uses one host CPU, and the wall-time ratios assume no
//! competing guest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use patchbay::vt::{self, VtClock, VtError, VtOpts};
use patchbay_tests::{require_root, skip};

static SERIAL: Mutex<()> = Mutex::new(());

/// Options for a test run, or `None` (after printing the skip line) when UML is unavailable.
fn setup() -> Option<(VtOpts, MutexGuard<'static, ()>)> {
    require_root!();
    match vt::find_uml_binary() {
        Ok(binary) => {
            let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
            let opts = {
                let mut o = VtOpts::default();
                o.guard = Duration::from_secs(60);
                o.uml_binary = Some(binary);
                o.cwd = Some(PathBuf::from("/"));
                o
            };
            Some((opts, guard))
        }
        Err(e @ VtError::UmlNotFound { .. }) => {
            skip(&format!("no UML kernel; run `cargo xtask build-uml` ({e})"));
            None
        }
        Err(e) => panic!("finding the UML kernel failed: {e}"),
    }
}

/// The `patchbay` CLI next to this test binary (`target/<profile>/patchbay`; `cargo xtask test`
/// builds it), or `None` after printing the skip line.
fn patchbay_cli() -> Option<PathBuf> {
    let p = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("patchbay")))
        .filter(|p| p.is_file());
    if p.is_none() {
        skip("no `patchbay` binary next to the test binaries: run `cargo build -p patchbay`");
    }
    p
}

fn argv(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A host binary the guest can run (the guest sees the host root), or `None`.
fn host_binary(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn sleep_runs_in_virtual_time() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let out = vt::run(&argv(&["sleep", "30"]), &opts)?;
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    let virt = out.virtual_elapsed.expect("the guest reports virtual time");
    println!(
        "sleep 30: virtual {virt:?}, wall {:?}, boot-to-command wall {:?} (virtual {:?})",
        out.wall, out.boot_to_command_wall, out.boot_to_command
    );
    assert!(virt >= Duration::from_secs(30), "virtual {virt:?} < 30 s");
    assert!(
        virt < Duration::from_secs(31),
        "virtual {virt:?} overshoots 30 s by more than 1 s"
    );
    // At least 5x faster than real time, boot and power-off included.
    assert!(
        out.wall * 5 < virt,
        "wall {:?} is not 5x below virtual {virt:?}",
        out.wall
    );
    Ok(())
}

#[test]
fn real_clock_follows_the_host() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let opts = {
        let mut o = opts;
        o.clock = VtClock::Real;
        o
    };
    let out = vt::run(&argv(&["sleep", "1"]), &opts)?;
    assert_eq!(out.exit_code, 0);
    let virt = out.virtual_elapsed.expect("guest time");
    println!(
        "real clock: sleep 1 took guest {virt:?}, wall {:?}",
        out.wall
    );
    assert!(virt >= Duration::from_secs(1));
    assert!(
        out.wall >= Duration::from_secs(1),
        "wall {:?} < guest sleep",
        out.wall
    );
    Ok(())
}

#[test]
fn exit_code_and_output_propagate() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let mut opts = opts;
    opts.env.push(("GREETING".into(), "it's 'quoted'".into()));
    let out = vt::run(
        &argv(&["sh", "-c", "echo \"$GREETING\"; echo err >&2; exit 7"]),
        &opts,
    )?;
    assert_eq!(out.exit_code, 7);
    assert_eq!(text(&out.stdout), "it's 'quoted'\n");
    assert_eq!(text(&out.stderr), "err\n");
    Ok(())
}

/// The guest kernel has user namespaces: test binaries written for upstream patchbay enter
/// one from a constructor (`init_userns`) before they build a lab.
#[test]
fn the_guest_enters_a_user_namespace() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let out = vt::run(
        &argv(&[
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map",
        ]),
        &opts,
    )?;
    if out.exit_code != 0 && text(&out.stderr).contains("Invalid argument") {
        skip("this UML kernel has no user namespaces: rebuild it with `cargo xtask build-uml`");
        return Ok(());
    }
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("0"), "{stdout}");
    let map: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(map, ["0", "0", "1"], "{stdout}");
    Ok(())
}

#[test]
fn busy_loop_is_killed_by_the_guard() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let opts = {
        let mut o = opts;
        o.guard = Duration::from_secs(4);
        o
    };
    let started = std::time::Instant::now();
    let err =
        vt::run(&argv(&["sh", "-c", "while :; do :; done"]), &opts).expect_err("must time out");
    let took = started.elapsed();
    let VtError::GuardTimeout { pid, .. } = err else {
        panic!("expected GuardTimeout, got {err}")
    };
    assert!(took < Duration::from_secs(4) * 3, "killing took {took:?}");
    let left = processes_in_group(pid)?;
    assert!(
        left.is_empty(),
        "UML processes left in group {pid}: {left:?}"
    );
    Ok(())
}

/// A script under /tmp without the execute bit: the guest cannot start it, and the error names
/// the path and the permission.
#[test]
fn a_script_without_the_execute_bit_is_a_typed_error() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    // A script under /tmp (exposed to the guest) without the execute bit: the error names the
    // path and the permission.
    let dir = std::env::temp_dir().join(format!("patchbay-vt-noexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n")?;
    let err = vt::run(&[script.clone().into_os_string()], &opts).expect_err("not executable");
    std::fs::remove_dir_all(&dir)?;
    match err {
        VtError::CommandNotFound { command, why } => {
            assert_eq!(command, script.display().to_string());
            assert!(why.contains("cannot execute"), "{why}");
        }
        other => panic!("expected CommandNotFound, got {other}"),
    }
    Ok(())
}

#[test]
fn missing_command_is_a_typed_error() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let err = vt::run(&argv(&["patchbay-no-such-command"]), &opts).expect_err("must fail");
    match err {
        VtError::CommandNotFound { command, why } => {
            assert_eq!(command, "patchbay-no-such-command");
            assert!(why.contains("not on the guest's PATH"), "{why}");
        }
        other => panic!("expected CommandNotFound, got {other}"),
    }
    let bad_cwd = {
        let mut o = opts.clone();
        o.cwd = Some(PathBuf::from("/nonexistent-patchbay-dir"));
        o
    };
    match vt::run(&argv(&["true"]), &bad_cwd).expect_err("must fail") {
        VtError::Cwd { cwd, why } => {
            assert_eq!(cwd, PathBuf::from("/nonexistent-patchbay-dir"));
            assert!(why.contains("does not exist on the host"), "{why}");
        }
        other => panic!("expected Cwd, got {other}"),
    }
    // A command that itself exits 127 is not confused with a missing one.
    let out = vt::run(&argv(&["sh", "-c", "exit 127"]), &opts)?;
    assert_eq!(out.exit_code, 127);
    Ok(())
}

#[test]
fn netns_veth_netem_nft_in_guest() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    for tool in ["ip", "tc", "nft", "python3"] {
        if host_binary(tool).is_none() {
            skip(&format!(
                "`{tool}` is not installed on the host (the guest runs host binaries); e.g. apt-get install -y nftables"
            ));
            return Ok(());
        }
    }
    // A UDP round trip across a veth with netem 100 ms on one direction, counted by nft.
    let script = r#"
set -e
ip netns add a
ip link add v0 type veth peer name v1
ip link set v1 netns a
ip addr add 10.9.0.1/24 dev v0
ip link set v0 up
ip -n a addr add 10.9.0.2/24 dev v1
ip -n a link set v1 up
tc qdisc add dev v0 root netem delay 100ms
ip netns exec a nft add table inet t
ip netns exec a nft add chain inet t input '{ type filter hook input priority 0; }'
ip netns exec a nft add rule inet t input udp dport 7777 ct state new counter
ip netns exec a python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.9.0.2", 7777))
for _ in range(2):
    d, a = s.recvfrom(100)
    s.sendto(d, a)
' &
sleep 1
python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("10.9.0.2", 7777))
for i in range(2):
    t = time.monotonic()
    s.send(b"x")
    s.recv(100)
    print("rtt", i, time.monotonic() - t)
'
wait
ip netns exec a nft list chain inet t input
"#;
    let out = vt::run(&argv(&["sh", "-c", script]), &opts)?;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    println!("{stdout}");
    let rtt: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rtt 1 "))
        .expect("second rtt line")
        .trim()
        .parse()?;
    // netem delays one direction by 100 ms; in virtual time the RTT is that delay plus a
    // few microseconds of (clock-read advanced) processing.
    assert!(
        (1.0..1.02).contains(&(rtt / 0.100)),
        "rtt {rtt} s vs netem 0.100 s"
    );
    assert!(
        stdout.contains("counter packets 1 "),
        "nft counter (ct state new) must see exactly one packet:\n{stdout}"
    );
    Ok(())
}

#[test]
fn guest_panic_is_a_typed_error() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let opts = {
        let mut o = opts;
        o.guard = Duration::from_secs(20);
        o
    };
    let err = vt::run(&argv(&["sh", "-c", "echo c > /proc/sysrq-trigger"]), &opts)
        .expect_err("must panic");
    match err {
        VtError::GuestPanic { console_tail } => {
            assert!(console_tail.contains("Kernel panic"), "{console_tail}")
        }
        other => panic!("expected GuestPanic, got {other}"),
    }
    Ok(())
}

#[test]
fn cargo_test_binary_runs_in_virtual_time() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    // This very test binary, running only the guest-side probe below: what
    // `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="patchbay vt --"` does for a whole binary.
    let exe = std::env::current_exe()?;
    let args = [
        "--ignored",
        "--exact",
        "guest_probe_timers",
        "--nocapture",
        "--test-threads",
        "1",
    ];
    let mut argv = vec![exe.into_os_string()];
    argv.extend(args.iter().map(OsString::from));
    let out = vt::run(&argv, &opts)?;
    let stdout = text(&out.stdout);
    println!(
        "{stdout}\nwall {:?}, virtual {:?}",
        out.wall, out.virtual_elapsed
    );
    assert_eq!(
        out.exit_code,
        0,
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    let virt = out.virtual_elapsed.expect("virtual time");
    assert!(virt >= Duration::from_secs(25), "virtual {virt:?}");
    assert!(
        out.wall * 5 < virt,
        "wall {:?} vs virtual {virt:?}",
        out.wall
    );
    Ok(())
}

/// Runs inside the guest (started by `cargo_test_binary_runs_in_virtual_time`): tokio timers on
/// a multi-threaded runtime and `std::thread::sleep`, measured with `Instant`.
#[test]
#[ignore = "guest side of cargo_test_binary_runs_in_virtual_time"]
fn guest_probe_timers() {
    if std::env::var("PATCHBAY_VT").as_deref() != Ok("1") {
        skip("runs only inside the UML guest (PATCHBAY_VT=1)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let t = std::time::Instant::now();
    rt.block_on(async {
        let a = tokio::spawn(tokio::time::sleep(Duration::from_secs(20)));
        let b = tokio::spawn(tokio::time::sleep(Duration::from_secs(10)));
        a.await.expect("task a");
        b.await.expect("task b");
    });
    std::thread::sleep(Duration::from_secs(5));
    let e = t.elapsed();
    println!("guest: 20 s tokio sleep || 10 s tokio sleep, then 5 s thread::sleep took {e:?}");
    assert!(e >= Duration::from_secs(25), "{e:?}");
    assert!(
        e < Duration::from_millis(25_050),
        "virtual time overshot: {e:?}"
    );
}

/// Live processes whose process group is `pgid` (independent of the runner's own check).
fn processes_in_group(pgid: i32) -> anyhow::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        }; // exited meanwhile
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// A binary that answers `--version`/`--help` like a UML kernel built without
/// `CONFIG_UML_TIME_TRAVEL_SUPPORT` is refused before anything boots (no root or kernel needed).
#[test]
fn a_kernel_without_time_travel_is_refused() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("patchbay-fake-uml-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let fake = dir.join("linux");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in\n--version) echo 6.1.0;;\n\
         --help) printf 'User Mode Linux v6.1.0\\n\\nmem=<Amount of desired ram>\\n    x\\n';;\n\
         *) exit 1;;\nesac\n",
    )?;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
    let opts = {
        let mut o = VtOpts::default();
        o.uml_binary = Some(fake.clone());
        o
    };
    let err = vt::run(&argv(&["true"]), &opts).expect_err("no time travel");
    std::fs::remove_dir_all(&dir)?;
    match err {
        VtError::NoTimeTravel { binary, release } => {
            assert_eq!(binary, fake);
            assert_eq!(release, "6.1.0");
        }
        other => panic!("expected NoTimeTravel, got {other}"),
    }
    let kernel = vt::probe_kernel(Path::new("/bin/true")).expect_err("not UML");
    assert!(matches!(kernel, VtError::NotUml { .. }), "{kernel}");
    Ok(())
}

mod clock;
mod echo;
mod guest_fs;
mod unprivileged;
