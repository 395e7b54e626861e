//! Lab lifetime: teardown on drop, on SIGKILL, and isolation between labs.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use patchbay::{native::Lab, native::LabOpts};
use patchbay_tests::*;

/// The network-namespace inodes used by any thread or fd of `pid`.
fn netns_of(pid: u32) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sub in ["task", "fd"] {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/{sub}")) else {
            continue;
        };
        for e in rd.flatten() {
            let p = if sub == "task" {
                e.path().join("ns/net")
            } else {
                e.path()
            };
            if let Ok(t) = std::fs::read_link(&p) {
                let t = t.to_string_lossy().into_owned();
                if t.starts_with("net:[") {
                    out.insert(t);
                }
            }
        }
    }
    out
}

/// Every network namespace referenced by any process on the host.
fn all_netns() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            out.extend(netns_of(pid));
        }
    }
    out
}

/// The namespace of this process's main thread (the host's, for the test).
fn own_netns() -> BTreeSet<String> {
    BTreeSet::from([std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .to_string_lossy()
        .into_owned()])
}

fn host_links() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[tokio::test]
async fn drop_leaves_no_namespaces_processes_cgroups_or_interfaces() -> anyhow::Result<()> {
    require_root!();
    let links_before = host_links();
    let lab = Lab::with_opts(LabOpts::default().label("dropme")).await?;
    let r = lab.add_router("r").build().await?;
    let d = lab.add_device("d").iface("eth0", &r).build().await?;
    // A child and a grandchild that outlives its parent shell.
    let mut c = tokio::process::Command::new("sh");
    c.args(["-c", "sleep 1000 & echo $!; exec sleep 1000"])
        .stdout(std::process::Stdio::piped());
    let mut child = d.spawn_command(c)?;
    let mut line = String::new();
    {
        use tokio::io::AsyncBufReadExt;
        let out = child.stdout.take().unwrap();
        tokio::io::BufReader::new(out).read_line(&mut line).await?;
    }
    let grandchild: i32 = line.trim().parse()?;
    let child_pid = child.id().unwrap() as i32;
    let mine = netns_of(std::process::id());
    assert!(
        mine.len() >= 4,
        "lab namespaces are held by this process: {mine:?}"
    );
    let cg = std::fs::read_to_string(format!("/proc/{child_pid}/cgroup"))?;
    assert!(
        cg.contains("/lab-"),
        "spawned processes join the lab cgroup: {cg}"
    );
    let cg_dir = patchbay::doctor::cgroup2_mount().unwrap().join(
        patchbay_tests::cgroup_v2_path(&cg)
            .unwrap()
            .trim_start_matches('/'),
    );
    assert!(alive(child_pid) && alive(grandchild));
    drop(lab);
    drop(d);
    drop(r);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(child_pid)
            && !alive(grandchild)),
        "processes survived the lab"
    );
    let left: BTreeSet<_> = netns_of(std::process::id())
        .difference(&own_netns())
        .cloned()
        .collect();
    assert!(
        left.is_empty() || left.iter().all(|n| !mine.contains(n)),
        "namespaces still held: {left:?}"
    );
    assert!(!cg_dir.exists(), "lab cgroup {} survived", cg_dir.display());
    assert_eq!(
        host_links(),
        links_before,
        "interfaces appeared in the host namespace"
    );
    Ok(())
}

/// Entry point for child processes started by the tests below.
#[tokio::test]
#[ignore = "helper: run by other tests in a child process"]
async fn child_lab_main() -> anyhow::Result<()> {
    let Ok(mode) = std::env::var("PATCHBAY_TEST_CHILD") else {
        return Ok(());
    };
    let lab = Lab::new().await?;
    let r = lab.add_router("r").build().await?;
    let a = lab.add_device("a").iface("eth0", &r).build().await?;
    let b = lab.add_device("b").iface("eth0", &r).build().await?;
    let bip = b.ip().unwrap();
    start_tcp_echo(&b, (bip, 5000).into()).await?;
    match mode.as_str() {
        "traffic" => {
            for _ in 0..50 {
                let got = a
                    .spawn(move |_| {
                        tcp_roundtrip((bip, 5000).into(), b"x", Duration::from_secs(5))
                    })?
                    .await??;
                assert_eq!(got, b"x");
            }
            println!("CHILD-OK");
        }
        "tree" => {
            // A background shell line and a foreground one (spawned and
            // waited for on another thread), each starting further
            // processes that are not their direct children's business.
            let mut bg = tokio::process::Command::new("sh");
            bg.args(["-c", "sleep 4242; echo done"]);
            let _bg = a.spawn_command(bg)?;
            let b2 = b.clone();
            std::thread::spawn(move || {
                let mut fg = Command::new("sh");
                fg.args(["-c", "sleep 4243 & sleep 4244; echo done"]);
                match b2.spawn_command_sync(fg) {
                    Ok(mut c) => {
                        let st = c.wait();
                        println!("CHILD-FOREGROUND-ENDED {st:?}");
                    }
                    Err(e) => println!("CHILD-FOREGROUND-FAILED {e}"),
                }
            });
            println!("CHILD-READY {}", std::process::id());
            tokio::time::sleep(Duration::from_secs(1000)).await;
        }
        _ => {
            let mut c = tokio::process::Command::new("sleep");
            c.arg("1000");
            let s = a.spawn_command(c)?;
            println!("CHILD-READY {}", s.id().unwrap());
            tokio::time::sleep(Duration::from_secs(1000)).await;
        }
    }
    Ok(())
}

fn child(mode: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_lab_main",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PATCHBAY_TEST_CHILD", mode);
    c
}

#[test]
fn two_labs_in_two_processes_at_once() -> anyhow::Result<()> {
    require_root!();
    let a = child("traffic")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let b = child("traffic")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    for c in [a, b] {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("CHILD-OK"),
            "child failed: {text}"
        );
    }
    Ok(())
}

#[test]
fn sigkill_leaves_nothing_that_outlives_the_process() -> anyhow::Result<()> {
    require_root!();
    use std::io::BufRead;
    let links_before = host_links();
    let mut c = child("hold").stdout(std::process::Stdio::piped()).spawn()?;
    let pid = c.id();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(c.stdout.take().unwrap());
    while !line.contains("CHILD-READY") {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            anyhow::bail!("child exited before building its lab");
        }
    }
    let sleeper: i32 = line.trim().rsplit(' ').next().unwrap().parse()?;
    let held = netns_of(pid);
    assert!(held.len() >= 4, "child holds its lab namespaces: {held:?}");
    let owner_dir = owner_cgroup_dir(pid)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    c.wait()?;
    assert!(
        wait_until(Duration::from_secs(5), || !alive(sleeper)),
        "lab process survived SIGKILL of its owner"
    );
    let host_ns = own_netns();
    let still: Vec<_> = all_netns()
        .into_iter()
        .filter(|n| held.contains(n) && !host_ns.contains(n))
        .collect();
    assert!(
        still.is_empty(),
        "namespaces outlived the killed process: {still:?}"
    );
    assert_eq!(
        host_links(),
        links_before,
        "interfaces appeared in the host namespace"
    );
    // The cgroup directory is the one thing a dead process cannot remove:
    // the next lab reaps it.
    let _lab = tokio::runtime::Runtime::new()?.block_on(Lab::new())?;
    assert!(
        !owner_dir.exists(),
        "dead lab's cgroup {} was not reaped",
        owner_dir.display()
    );
    Ok(())
}

/// The `patchbay.<pid>.<starttime>` cgroup of process `pid`: beside the
/// cgroup the process runs in (labs alone do not move their owner), or the
/// one it runs in (the BPF engine moves it there).
fn owner_cgroup_dir(pid: u32) -> anyhow::Result<std::path::PathBuf> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mount = patchbay::doctor::cgroup2_mount().unwrap();
    let own = mount.join(cgroup_v2_path(&cg).unwrap().trim_start_matches('/'));
    let prefix = format!("patchbay.{pid}.");
    if own
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
    {
        return Ok(own);
    }
    std::fs::read_dir(&own)?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .ok_or_else(|| anyhow::anyhow!("no {prefix}* cgroup in {}", own.display()))
}

/// Pids whose cgroup v2 path lies under `dir` (relative to the mount).
fn pids_in_cgroup(dir: &std::path::Path) -> Vec<i32> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && let Ok(procs) = std::fs::read_to_string(e.path().join("cgroup.procs"))
        {
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    out.sort();
    out
}

/// Live processes whose threads or fds use one of `held` namespaces.
fn procs_in_netns(held: &BTreeSet<String>) -> Vec<(i32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if alive(pid as i32) && !netns_of(pid).is_disjoint(held) {
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            out.push((pid as i32, cmd));
        }
    }
    out
}

fn cmdline(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ")
}

#[test]
fn sigkill_of_the_owner_kills_every_lab_process_and_their_descendants() -> anyhow::Result<()> {
    require_root!();
    if patchbay::doctor::cgroup2_mount().is_none() {
        skip("no cgroup v2 mount: a lab's process tree is held by its cgroup");
        return Ok(());
    }
    use std::io::BufRead;
    let mut c = child("tree").stdout(std::process::Stdio::piped()).spawn()?;
    let pid = c.id();
    let mut reader = std::io::BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("CHILD-READY") {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            anyhow::bail!("child exited before building its lab");
        }
    }
    let owner_dir = owner_cgroup_dir(pid)?;
    let base = owner_dir.parent().unwrap().to_path_buf();
    // Both shells and their three sleeps, in the lab's cgroup.
    let mut members = vec![];
    let seen = wait_until(Duration::from_secs(10), || {
        members = pids_in_cgroup(&owner_dir);
        let cmds: Vec<String> = members.iter().map(|p| cmdline(*p)).collect();
        // Exact matches: a shell's own command line also contains
        // "sleep 424x" between its fork and the sleeps' exec.
        ["sleep 4242", "sleep 4243", "sleep 4244"]
            .iter()
            .all(|s| cmds.iter().any(|c| c.trim() == *s))
    });
    assert!(
        seen,
        "the lab's processes did not all start: {:?}",
        members.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()
    );
    assert!(
        members.len() >= 5,
        "two shells and three sleeps: {members:?}"
    );
    let held: BTreeSet<String> = netns_of(pid).difference(&own_netns()).cloned().collect();
    assert!(held.len() >= 4, "child holds its lab namespaces: {held:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    c.wait()?;
    let t = Instant::now();
    let mut left = vec![];
    let gone = wait_until(Duration::from_secs(5), || {
        left = procs_in_netns(&held);
        left.is_empty() && members.iter().all(|p| !alive(*p))
    });
    assert!(
        gone,
        "lab processes survived SIGKILL of their owner: {left:?}, of {:?}: {:?}",
        members,
        members
            .iter()
            .filter(|p| alive(**p))
            .map(|p| cmdline(*p))
            .collect::<Vec<_>>()
    );
    println!(
        "every lab process was gone {:?} after the SIGKILL",
        t.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(5), || !owner_dir.exists()),
        "the watchdog did not remove the dead owner's cgroup {}",
        owner_dir.display()
    );
    println!(
        "the owner's cgroup was gone {:?} after the SIGKILL",
        t.elapsed()
    );
    let lab = tokio::runtime::Runtime::new()?.block_on(Lab::new())?;
    let stale: Vec<String> = std::fs::read_dir(&base)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("patchbay."))
        .filter(|n| {
            let mut it = n.split('.').skip(1);
            let (Some(p), Some(st)) = (it.next(), it.next()) else {
                return false;
            };
            // The owner is gone when its pid is gone or belongs to another
            // process (another start time).
            let now = std::fs::read_to_string(format!("/proc/{p}/stat")).ok();
            let st_now = now.as_deref().and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(19)
                    .map(str::to_string)
            });
            st_now.as_deref() != Some(st)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "stale lab cgroups after Lab::new: {stale:?}"
    );
    drop(lab);
    Ok(())
}
