//! Run artifacts: logs of spawned commands, events.jsonl, topology.json,
//! pcapng captures tshark reads, and retention.

use std::time::Duration;

use patchbay::{native::Lab, native::LabOpts, native::Nat};
use patchbay_tests::*;

fn tmpdir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pb-artifacts-{tag}-{}", std::process::id()))
}

fn events(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn logs_events_topology_and_capture() -> anyhow::Result<()> {
    require_root!();
    let dir = tmpdir("full");
    let _ = std::fs::remove_dir_all(&dir);
    {
        let lab = Lab::with_opts(
            LabOpts::default()
                .label("art")
                .outdir(&dir)
                .keep_artifacts(true),
        )
        .await?;
        let isp = lab.add_router("isp").build().await?;
        let home = lab
            .add_router("home")
            .upstream(&isp)
            .nat(Nat::PortRestricted)
            .build()
            .await?;
        let server = lab.add_device("server").iface("eth0", &isp).build().await?;
        let client = lab
            .add_device("client")
            .iface("eth0", &home)
            .build()
            .await?;
        // Bad input: an unknown interface is a clear error, and the lab goes on.
        let e = client.capture("wlan9").await.unwrap_err().to_string();
        assert!(e.contains("no interface \"wlan9\""), "{e}");
        let cap = client.capture("eth0").await?;
        // Inherited streams go to the log only; a piped stdout is teed.
        let mut c = tokio::process::Command::new("sh");
        c.args(["-c", "echo to-the-log; echo err-line >&2"]);
        assert!(client.spawn_command(c)?.wait().await?.success());
        let mut c = tokio::process::Command::new("echo");
        c.arg("teed").stdout(std::process::Stdio::piped());
        let out = client.spawn_command(c)?.wait_with_output().await?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "teed\n",
            "the caller still reads a piped stdout"
        );
        let refl = server
            .spawn_reflector((server.ip().unwrap(), 3478).into())
            .await?;
        client.probe_udp_mapping(refl.addr()).await?;
        lab.mark("phase", serde_json::json!({"n": 1}));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let frames = cap.stop()?;
        assert!(
            frames >= 2,
            "the probe and its answer are captured ({frames})"
        );
        client.link_down("eth0").await?;
        client.link_up("eth0").await?;
    }
    let names: Vec<String> = std::fs::read_dir(dir.join("logs/client"))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    println!("logs/client: {names:?}");
    let out = std::fs::read_to_string(dir.join("logs/client/1-sh.stdout"))?;
    assert_eq!(out, "to-the-log\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("logs/client/1-sh.stderr"))?,
        "err-line\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("logs/client/2-echo.stdout"))?,
        "teed\n"
    );
    let jl = std::fs::read_to_string(dir.join("logs/client.jsonl"))?;
    assert!(
        jl.contains("\"line\":\"err-line\"") && jl.contains("\"stream\":\"stderr\""),
        "{jl}"
    );
    let ev = events(&dir);
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    println!("event kinds: {kinds:?}");
    for k in [
        "lab.start",
        "node.added",
        "capture.start",
        "cmd.start",
        "mark",
        "link.down",
        "link.up",
        "lab.end",
    ] {
        assert!(kinds.contains(&k), "missing {k} in {kinds:?}");
    }
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64));
        assert!(e["wall_ms"].as_f64().is_some() && e["virtual_ms"].as_f64().is_some());
    }
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json"))?)?;
    assert_eq!(run["status"], "passed");
    assert_eq!(run["version"], 1);
    let topo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("topology.json"))?)?;
    assert_eq!(topo["routers"].as_array().unwrap().len(), 2);
    assert_eq!(
        topo["routers"][0]["nat"], "port-restricted",
        "home sorts first: {topo}"
    );
    let pcap = dir.join("pcap/client-eth0.pcapng");
    match std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .output()
    {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            println!("tshark:\n{text}");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(text.contains("UDP") && text.contains("3478"), "{text}");
        }
        Err(e) => skip(&format!(
            "tshark not installed ({e}); the pcapng was written but not read back"
        )),
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn retention_removes_on_success_and_keeps_on_failure() -> anyhow::Result<()> {
    require_root!();
    let ok = tmpdir("ok");
    let bad = tmpdir("bad");
    {
        let lab = Lab::with_opts(LabOpts::default().outdir(&ok)).await?;
        lab.add_router("r").build().await?;
        assert!(ok.join("run.json").exists());
    }
    assert!(!ok.exists(), "a passing lab removes its directory");
    {
        let lab = Lab::with_opts(LabOpts::default().outdir(&bad)).await?;
        lab.fail("the test said so");
    }
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bad.join("run.json"))?)?;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["failure"], "the test said so");
    // A previous run is replaced; a foreign directory is refused.
    drop(Lab::with_opts(LabOpts::default().outdir(&bad).keep_artifacts(true)).await?);
    let foreign = tmpdir("foreign");
    std::fs::create_dir_all(&foreign)?;
    std::fs::write(foreign.join("precious.txt"), "x")?;
    let e = Lab::with_opts(LabOpts::default().outdir(&foreign))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    assert!(foreign.join("precious.txt").exists());
    std::fs::remove_dir_all(&bad)?;
    std::fs::remove_dir_all(&foreign)?;
    Ok(())
}

#[test]
fn patchbay_run_outdir_leaves_logs_events_and_a_pcap() -> anyhow::Result<()> {
    require_root!();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    // The CLI lives in another package: build it (a no-op when it is
    // fresh). Selecting this package too gives the features of the test
    // build (`cargo nextest run --workspace` builds the same binary), so
    // nothing is rebuilt for it.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "patchbay",
            "-p",
            "patchbay-tests",
            "--bins",
        ])
        .current_dir(root)
        .status()?;
    assert!(
        built.success(),
        "cargo build -p patchbay --bin patchbay failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/patchbay");
    let dir = tmpdir("cli");
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(&bin)
        .args([
            "run",
            "examples/nat-timeout.toml",
            "--time-scale",
            "10",
            "--outdir",
        ])
        .arg(&dir)
        .current_dir(root)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "run.json",
        "topology.json",
        "events.jsonl",
        "logs/client.jsonl",
        "logs/client/2-python3.stdout",
        "compression.json",
        "pcap/client-eth0.pcapng",
    ] {
        assert!(dir.join(f).exists(), "missing {f}");
    }
    match std::process::Command::new("tshark")
        .arg("-r")
        .arg(dir.join("pcap/client-eth0.pcapng"))
        .output()
    {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success() && text.contains("9000"), "{text}");
        }
        Err(e) => skip(&format!("tshark not installed: {e}")),
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
