//! A whole lab in virtual time: the same API inside the User-Mode-Linux
//! kernel, with a TCP SYN timeout that takes seconds of virtual time and a
//! fraction of that in wall time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use patchbay::{TimeMode, native::Direction, native::Lab, native::LabOpts};
use patchbay_tests::*;

/// Runs inside the guest (started by the test below).
#[tokio::test]
#[ignore = "helper: run inside UML by a_lab_runs_in_virtual_time"]
async fn guest_syn_blackhole() -> Result<()> {
    if std::env::var_os("PATCHBAY_VT").is_none() {
        return Ok(());
    }
    let lab = Lab::with_opts(
        LabOpts::default()
            .time_mode(TimeMode::Virtual { seed: None })
            .tcp_syn_retries(3),
    )
    .await?;
    let r = lab.add_router("r").build().await?;
    let server = lab.add_device("server").iface("eth0", &r).build().await?;
    let client = lab.add_device("client").iface("eth0", &r).build().await?;
    let _hole = server.blackhole("eth0", Direction::In).await?;
    let sip = server.ip().context("ip")?;
    let t = Instant::now();
    let r = client
        .spawn(move |_| async move { tokio::net::TcpStream::connect((sip, 80)).await.map(|_| ()) })?
        .await?;
    let elapsed = t.elapsed();
    assert_eq!(
        r.expect_err("blackholed").kind(),
        std::io::ErrorKind::TimedOut
    );
    println!("GUEST-SYN-TIMEOUT-MS {}", elapsed.as_millis());
    // 6.12+ (the 7.x UML kernels) retransmit the first SYNs at a fixed RTO; 6.1 has no knob.
    let linear = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syn_linear_timeouts")
        .map_or(0, |s| s.trim().parse::<u32>().unwrap_or(0));
    println!("GUEST-SYN-LINEAR {linear}");
    Ok(())
}

#[test]
fn a_lab_runs_in_virtual_time() -> Result<()> {
    require_root!();
    if let Err(e) = patchbay::vt::find_uml_binary() {
        skip(&format!(
            "no UML kernel ({e}); build it with `cargo xtask build-uml`"
        ));
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let argv = [
        exe.as_os_str(),
        "--exact".as_ref(),
        "guest_syn_blackhole".as_ref(),
        "--ignored".as_ref(),
        "--nocapture".as_ref(),
    ]
    .map(std::ffi::OsString::from);
    let opts = {
        let mut o = patchbay::vt::VtOpts::default();
        o.guard = Duration::from_secs(240);
        o
    };
    let t = Instant::now();
    let out = patchbay::vt::run(&argv, &opts)?;
    let wall = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "guest test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms: u64 = stdout
        .lines()
        .find_map(|l| l.split("GUEST-SYN-TIMEOUT-MS ").nth(1))
        .context("guest printed its timing")?
        .split_whitespace()
        .next()
        .context("a number after the marker")?
        .parse()?;
    println!(
        "virtual SYN timeout {ms} ms, whole guest run {:.2} s wall",
        wall.as_secs_f64()
    );
    let linear: u32 = stdout
        .lines()
        .find_map(|l| l.split("GUEST-SYN-LINEAR ").nth(1))
        .context("guest printed tcp_syn_linear_timeouts")?
        .trim()
        .parse()?;
    // Linux 6.1: SYN retransmits at 1, 2 and 4 s, then gives up 8 s later: 15 s. With
    // tcp_syn_linear_timeouts=L (6.12+, UML 7.x: L=4) the first L retransmits keep the 1 s
    // RTO and come on top of the 3 retries: 5 x 1 s + 2 + 4 + 8 = 19 s. Plus the
    // initial-RTO jiffy slack.
    let expected: u64 = (0..=3 + linear)
        .map(|i| {
            if i <= linear {
                1000
            } else {
                1000 << (i - linear)
            }
        })
        .sum();
    assert!(
        (expected - 500..expected + 2000).contains(&ms),
        "virtual SYN timeout {ms} ms, expected about {expected} ms (tcp_syn_linear_timeouts {linear})"
    );
    assert!(
        wall < Duration::from_millis(ms) / 2,
        "virtual time must run faster than real time"
    );
    Ok(())
}

/// A lab file directly in /tmp (which the guest covers with a fresh tmpfs), given by a relative
/// path from /tmp and by its absolute path: the guest sees it at the same path. Its ping step
/// is the first program of the lab and paces its probes (the guest's realistic uptime).
#[test]
fn lab_file_under_tmp_runs_in_virtual_time() -> Result<()> {
    require_root!();
    if let Err(e) = patchbay::vt::find_uml_binary() {
        skip(&format!(
            "no UML kernel ({e}); build it with `cargo xtask build-uml`"
        ));
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let Some(cli) = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("patchbay"))
        .filter(|p| p.is_file())
    else {
        skip("no `patchbay` binary next to the test binaries: run `cargo build -p patchbay`");
        return Ok(());
    };
    if !std::path::Path::new("/usr/bin/ping").is_file() {
        skip("no ping on the host: apt-get install -y iputils-ping");
        return Ok(());
    }
    let name = format!("patchbay-vtlab-{}.toml", std::process::id());
    let file = std::path::Path::new("/tmp").join(&name);
    std::fs::write(
        &file,
        r#"[lab]
label = "vt-tmp"
time = "virtual"

[[router]]
name = "r"

[[device]]
name = "server"
iface = [{ name = "eth0", router = "r" }]

[[device]]
name = "client"
iface = [{ name = "eth0", router = "r" }]

[[step]]
run = "client"
expect-output = "3 received"
cmd = ["ping", "-n", "-c", "3", "-i", "2", "${server.ip}"]
"#,
    )?;
    let runs = [(name.clone(), "/tmp"), (file.display().to_string(), "/")];
    let mut result = Ok(());
    for (arg, cwd) in runs {
        let t = Instant::now();
        let out = std::process::Command::new(&cli)
            .args(["run", &arg, "--json"])
            .current_dir(cwd)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "patchbay run {arg} (cwd {cwd}): {} in {:.2} s wall\n{stdout}\n{stderr}",
            out.status,
            t.elapsed().as_secs_f64()
        );
        if !out.status.success() {
            result = Err(anyhow::anyhow!("patchbay run {arg} failed: {stderr}"));
            break;
        }
        let report: serde_json::Value = serde_json::from_str(&stdout)?;
        let wall = report["steps"][0]["wall_s"].as_f64().context("step time")?;
        // In the guest, the step's own clock is virtual: probes at 0, 2 and 4 s (measured
        // 4.159 s: see vt_programs.rs, ping_paces_its_probes).
        assert!(
            (4.0..4.25).contains(&wall),
            "ping step took {wall} s (virtual)"
        );
    }
    std::fs::remove_file(&file)?;
    result
}

/// `patchbay run --virtual --outdir D`: the guest writes the lab's artifacts into D on the host
/// (it used to write them into the guest's own /tmp, or fail on a read-only path, while
/// printing "artifacts kept in D"). A second run replaces the first; a directory with files of
/// its own is refused and keeps them.
#[test]
fn outdir_of_a_virtual_run_lands_on_the_host() -> Result<()> {
    require_root!();
    if let Err(e) = patchbay::vt::find_uml_binary() {
        skip(&format!(
            "no UML kernel ({e}); build it with `cargo xtask build-uml`"
        ));
        return Ok(());
    }
    let cli = patchbay_bin()?;
    let base = std::env::temp_dir().join(format!("patchbay-vtout-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let file = base.join("lab.toml");
    std::fs::write(
        &file,
        r#"[lab]
label = "vt-outdir"
time = "virtual"
capture = ["client.eth0"]

[[router]]
name = "r"

[[device]]
name = "server"
iface = [{ name = "eth0", router = "r" }]

[[device]]
name = "client"
iface = [{ name = "eth0", router = "r" }]

[[step]]
run = "client"
expect-output = "1 received"
cmd = ["ping", "-n", "-c", "1", "${server.ip}"]
"#,
    )?;
    let out_dir = base.join("out");
    let run = |dir: &std::path::Path| {
        std::process::Command::new(&cli)
            .arg("run")
            .arg(&file)
            .arg("--outdir")
            .arg(dir)
            .output()
    };
    let result = (|| -> Result<()> {
        for attempt in 1..=2 {
            let out = run(&out_dir)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            println!("run {attempt}: {}\n{stderr}", out.status);
            anyhow::ensure!(out.status.success(), "run {attempt} failed: {stderr}");
            for f in [
                "run.json",
                "events.jsonl",
                "topology.json",
                "pcap/client-eth0.pcapng",
            ] {
                let p = out_dir.join(f);
                anyhow::ensure!(p.is_file(), "run {attempt}: no {} on the host", p.display());
            }
            let manifest: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json"))?)?;
            anyhow::ensure!(
                manifest["status"] == "passed" && manifest["time_mode"] == "virtual",
                "run {attempt}: run.json {manifest}"
            );
            let events = std::fs::read_to_string(out_dir.join("events.jsonl"))?;
            anyhow::ensure!(
                events
                    .lines()
                    .filter(|l| l.contains("\"lab.start\""))
                    .count()
                    == 1,
                "run {attempt}: events of more than one run:\n{events}"
            );
        }
        let foreign = base.join("foreign");
        std::fs::create_dir_all(&foreign)?;
        std::fs::write(foreign.join("notes.txt"), "mine")?;
        let out = run(&foreign)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            !out.status.success() && stderr.contains("not empty"),
            "a directory of someone else's files was not refused: {stderr}"
        );
        anyhow::ensure!(
            std::fs::read_to_string(foreign.join("notes.txt"))? == "mine",
            "the refused directory lost its file"
        );
        Ok(())
    })();
    std::fs::remove_dir_all(&base)?;
    result
}
