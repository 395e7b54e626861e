//! The devtools web view (`patchbay serve`): the page rendered by a real
//! headless Chromium against a real bench directory and a lab outdir, and
//! the server's path and address safety over raw HTTP.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use patchbay::scenario::bench::bench_scenario;
use patchbay::scenario::{Scenario, Size, bench_dir};
use patchbay::serve::{ServeOpts, Server};
use patchbay_tests::{skip, skip_unless_root};

fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("devtools-{name}-{}", std::process::id()));
    if d.exists() {
        std::fs::remove_dir_all(&d)?;
    }
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Headless Chromium, or `None` (with the skip printed) when it is missing
/// outside CI; in CI a missing browser fails.
fn chromium() -> anyhow::Result<Option<PathBuf>> {
    let found = std::env::var_os("PATCHBAY_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file());
    match found {
        Some(p) => Ok(Some(p)),
        None if std::env::var_os("CI").is_some() => {
            bail!(
                "chromium is missing in CI: `cargo xtask test` installs it (apt package chromium)"
            )
        }
        None => {
            skip("chromium is not installed (apt-get install chromium, or run `cargo xtask test`)");
            Ok(None)
        }
    }
}

/// Runs headless Chromium on `url` with `extra` flags (`--dump-dom`,
/// `--screenshot=...`); returns stdout. The flags keep it off the network
/// (the machine's closed network refuses its background connections).
fn browse(chrome: &Path, url: &str, extra: &[String]) -> anyhow::Result<String> {
    let profile = scratch("chromium-profile")?;
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=20000",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .context("starting chromium")?;
    std::fs::remove_dir_all(&profile).ok();
    ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A small lab outdir in the run-directory format (docs/artifacts.md):
/// two devices behind a NAT router, `rtos` RTO events on dev1, a fault and
/// a step, and per-node logs.
fn write_lab_dir(dir: &Path, rtos: usize) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("run.json"),
        r#"{"format":"patchbay-run","version":1,"kind":"lab","name":"nat-demo","time_mode":"compressed","time_scale":20.0,"seed":null,"started_unix_ms":0,"ended_unix_ms":1,"status":"failed","patchbay_version":"0.1.0"}"#,
    )?;
    std::fs::write(
        dir.join("topology.json"),
        r#"{"version":1,"routers":[{"name":"isp","upstream":null,"nat":null,"firewall":null,"region":"eu","ifaces":[]},
        {"name":"home","upstream":"isp","nat":"port-restricted","firewall":"block-inbound","region":"eu",
         "ifaces":[{"name":"wan","peer":"isp","ipv4":["203.0.113.2/24"],"ipv6":[],"link":{"latency_ms":40,"loss":0.01}}]}],
        "devices":[{"name":"laptop","ifaces":[{"name":"eth0","peer":"home","ipv4":["192.168.1.2/24"],"ipv6":["fd00::2/64"],"link":null}]},
        {"name":"server","ifaces":[{"name":"eth0","peer":"isp","ipv4":["203.0.113.10/24"],"ipv6":[],"link":{"latency_ms":5}}]}]}"#,
    )?;
    let mut ev = String::new();
    let mut seq = 0;
    let mut push = |t: f64, node: &str, kind: &str, data: &str| {
        ev.push_str(&format!(
            r#"{{"seq":{seq},"wall_ms":{},"virtual_ms":{t},"node":{node},"kind":"{kind}","data":{data}}}"#,
            t / 20.0
        ));
        ev.push('\n');
        seq += 1;
    };
    push(0.0, "null", "lab.start", "{}");
    push(10.0, r#""laptop""#, "step.start", r#"{"step":1}"#);
    push(
        100.0,
        r#""home""#,
        "fault.start",
        r#"{"fault":"blackhole"}"#,
    );
    for i in 0..rtos {
        let t = 1000.0 * (1u64 << i.min(10)) as f64;
        push(
            t,
            r#""laptop""#,
            "tcp",
            &format!(r#"{{"kind":"rto","retransmits":{i},"rto_jiffies":250}}"#),
        );
        push(t, r#""laptop""#, "tcp", r#"{"kind":"retrans","err":0}"#);
    }
    push(
        9000.0,
        r#""home""#,
        "nat.changed",
        r#"{"mapping":"new-port"}"#,
    );
    push(12_000.0, r#""home""#, "fault.end", "{}");
    push(
        12_500.0,
        r#""laptop""#,
        "step.end",
        r#"{"step":1,"ok":false}"#,
    );
    push(13_000.0, "null", "lab.end", "{}");
    std::fs::write(dir.join("events.jsonl"), ev)?;
    std::fs::create_dir_all(dir.join("logs/laptop"))?;
    std::fs::write(
        dir.join("logs/laptop.jsonl"),
        [
            r#"{"wall_ms":0.5,"virtual_ms":10.0,"cmd":0,"stream":"stdout","line":"connecting to 203.0.113.10:443"}"#,
            r#"{"wall_ms":600.0,"virtual_ms":12000.0,"cmd":0,"stream":"stderr","line":"curl: (28) Connection timed out"}"#,
        ]
        .join("\n")
            + "\n",
    )?;
    std::fs::write(
        dir.join("logs/laptop/0-curl.stdout"),
        "connecting to 203.0.113.10:443\n",
    )?;
    Ok(())
}

/// A lab outdir with `n` events over 10 nodes and 8 kinds.
fn write_big_dir(dir: &Path, n: usize) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    std::fs::write(
        dir.join("run.json"),
        r#"{"format":"patchbay-run","version":1,"kind":"lab","name":"big","time_mode":"real","time_scale":1.0,"status":"passed"}"#,
    )?;
    let kinds = [
        r#""tcp","data":{"kind":"rto"}"#,
        r#""tcp","data":{"kind":"retrans"}"#,
        r#""tcp","data":{"kind":"state","old":2,"new":1}"#,
        r#""nat.changed","data":{}"#,
        r#""link.condition","data":{"latency_ms":20}"#,
        r#""cmd.start","data":{"cmd":0}"#,
        r#""cmd.exit","data":{"code":0}"#,
        r#""mark","data":{"text":"tick"}"#,
    ];
    let mut s = String::with_capacity(n * 110);
    for i in 0..n {
        let t = i as f64 * 7.3;
        let _ = writeln!(
            s,
            r#"{{"seq":{i},"wall_ms":{t},"virtual_ms":{t},"node":"n{}","kind":{}}}"#,
            i % 10,
            kinds[(i / 10) % kinds.len()]
        );
    }
    std::fs::write(dir.join("events.jsonl"), s)?;
    Ok(())
}

async fn start(dirs: Vec<PathBuf>, ip: IpAddr) -> anyhow::Result<SocketAddr> {
    let server = Server::bind(ServeOpts {
        dirs,
        addr: SocketAddr::new(ip, 0),
    })
    .await?;
    let addr = server.local_addr();
    tokio::spawn(server.run());
    Ok(addr)
}

/// The value and the bold text of the page's `<div class="{class}" data-value="…"><b>…</b>`.
fn figure_in(dom: &str, class: &str) -> Option<(f64, String)> {
    let start = format!(r#"class="{class}" data-value=""#);
    let rest = &dom[dom.find(&start)? + start.len()..];
    let (value, rest) = rest.split_once('"')?;
    let text = rest.strip_prefix("><b>")?.split_once("</b>")?.0;
    Some((value.parse().ok()?, text.to_string()))
}

/// The page's fidelity figures (for a failure message).
fn figures_of(dom: &str) -> &str {
    let Some(start) = dom.find(r#"class="figures""#) else {
        return "(no figures)";
    };
    let rest = &dom[start..];
    &rest[..rest.len().min(1500)]
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devtools_page_renders_a_bench_dir_and_a_lab_outdir_in_chromium() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let Some(chrome) = chromium()? else {
        return Ok(());
    };
    let bench = scratch("bench")?;
    let started = SystemTime::now();
    let entry = bench_scenario(
        Scenario::SynBlackhole,
        20.0,
        Size::Default,
        0.0,
        &mut |_| {},
    )
    .await
    .context("running syn-blackhole at k=1 and k=20")?;
    bench_dir::write_ladder(&bench, &[entry], 20.0, Size::Default, started)?;
    let lab = scratch("lab")?;
    write_lab_dir(&lab, 6)?;
    let big = scratch("big")?;
    write_big_dir(&big, 100_000)?;
    let addr = start(vec![bench.clone(), lab.clone(), big], "127.0.0.1".parse()?).await?;

    // The bench directory: side by side, with the fidelity figures.
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(bench.join("bench.json"))?)?;
    ensure!(
        doc["format"] == "patchbay-bench" && doc["version"] == 1,
        "{doc}"
    );
    let cmp = &doc["scenarios"][0]["comparisons"][0];
    let rtos = ["baseline", "run"]
        .iter()
        .flat_map(|l| cmp[l]["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["kind"] == "rto")
        .count();
    ensure!(rtos >= 2, "the SYN blackhole retransmits: {cmp}");
    let url = format!("http://{addr}/#run=0&tab=side");
    let dom = tokio::task::spawn_blocking({
        let chrome = chrome.clone();
        move || browse(&chrome, &url, &["--dump-dom".into()])
    })
    .await??;
    ensure!(
        dom.contains(r#"data-ready="1""#),
        "the page did not finish: {dom}"
    );
    let drawn = count(&dom, r#"class="sbs-ev" data-kind="rto""#);
    assert_eq!(drawn, rtos, "RTO ticks drawn side by side");
    let f = &cmp["fidelity"];
    for (class, key) in [("fid-median", "median"), ("fid-max", "max")] {
        let v = f[key].as_f64().context("fidelity figure")?;
        let (shown, text) = figure_in(&dom, class)
            .with_context(|| format!("no {class} figure; the figures: {}", figures_of(&dom)))?;
        // serde_json's default parser may land one ulp off a 17-digit number, so the page's
        // value (JavaScript's exact parse) is compared to the last few ulps, and its text
        // exactly.
        ensure!(
            (shown - v).abs() <= v.abs() * 1e-15 && text == format!("{:.1}%", v * 100.0),
            "{class}: the page shows {shown} as {text:?}, bench.json has {v}"
        );
    }
    let verdict = if f["pass"] == true { "PASS" } else { "FAIL" };
    ensure!(
        dom.contains(&format!("<b>{verdict}</b>")),
        "verdict {verdict}"
    );
    ensure!(dom.contains("syn-blackhole — compressed k=20"));

    // The lab outdir: topology and timeline.
    let url = format!("http://{addr}/#run=1&tab=timeline");
    let dom = tokio::task::spawn_blocking({
        let chrome = chrome.clone();
        move || browse(&chrome, &url, &["--dump-dom".into()])
    })
    .await??;
    ensure!(
        dom.contains(r#"data-ready="1""#),
        "the page did not finish: {dom}"
    );
    for node in ["isp", "home", "laptop", "server"] {
        ensure!(
            dom.contains(&format!(r#"class="topo-node" data-node="{node}""#)),
            "node {node} not drawn"
        );
    }
    ensure!(dom.contains("NAT port-restricted") && dom.contains("latency_ms=40"));
    assert_eq!(
        count(&dom, r#"class="tl-ev" data-kind="tcp:rto""#),
        6,
        "RTO ticks"
    );
    assert_eq!(count(&dom, r#"class="band""#), 2, "the fault and the step");
    ensure!(dom.contains("curl: (28) Connection timed out"), "logs");

    // 100k events: the page loads a binned window.
    let url = format!("http://{addr}/#run=2&tab=timeline");
    let t = Instant::now();
    let dom = tokio::task::spawn_blocking({
        let chrome = chrome.clone();
        move || browse(&chrome, &url, &["--dump-dom".into()])
    })
    .await??;
    let load = t.elapsed();
    ensure!(dom.contains(r#"data-ready="1""#));
    ensure!(dom.contains("100000 events"), "the total is shown");
    let marks = count(&dom, r#"class="tl-ev""#);
    ensure!(
        (1000..=8000).contains(&marks),
        "binned to at most a mark per node and pixel: {marks}"
    );
    println!(
        "DEVTOOLS-100K: chromium start to rendered DOM {:.2} s, {marks} marks",
        load.as_secs_f64()
    );

    // Screenshots for docs/devtools.md (PATCHBAY_SCREENSHOTS=DIR keeps them).
    let shots = match std::env::var_os("PATCHBAY_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => scratch("shots")?,
    };
    std::fs::create_dir_all(&shots)?;
    for (name, frag) in [
        ("devtools.png", "run=0&tab=side"),
        ("devtools-timeline.png", "run=1&tab=timeline"),
        ("devtools-topology.png", "run=1&tab=topology"),
    ] {
        let png = shots.join(name);
        let url = format!("http://{addr}/#{frag}");
        let arg = format!("--screenshot={}", png.display());
        let chrome = chrome.clone();
        tokio::task::spawn_blocking(move || browse(&chrome, &url, &[arg])).await??;
        let bytes = std::fs::read(&png).with_context(|| format!("{}", png.display()))?;
        ensure!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
            "{name}: a blank page compresses to a few kB ({} B)",
            bytes.len()
        );
        println!("DEVTOOLS-SCREENSHOT: {}", png.display());
    }
    Ok(())
}

/// `GET path` with `Host: host`; returns (status, body).
fn get(addr: SocketAddr, path: &str, host: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .context("status line")?
        .parse()?;
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}

/// This host's first non-loopback IPv4 address (connecting to it stays on
/// this machine).
fn non_loopback_ip() -> anyhow::Result<Option<IpAddr>> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .find(|ip: &IpAddr| !ip.is_loopback()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_paths_outside_and_binds_loopback_only() -> anyhow::Result<()> {
    let base = scratch("safety")?;
    let root = base.join("run");
    std::fs::create_dir_all(&root)?;
    std::fs::write(base.join("secret.txt"), "TOP-SECRET")?;
    std::fs::write(root.join("run.json"), r#"{"kind":"lab","name":"x"}"#)?;
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("escape.txt"))?;
    std::os::unix::fs::symlink(&base, root.join("up"))?;
    let addr = start(vec![root.clone()], "127.0.0.1".parse()?).await?;
    let host = addr.to_string();
    let (st, body) =
        tokio::task::spawn_blocking(move || get(addr, "/api/runs/0/file/run.json", &host))
            .await??;
    assert_eq!((st, body.contains("\"lab\"")), (200, true), "{body}");
    for (path, want) in [
        ("/api/runs/0/file/../secret.txt", 400),
        ("/api/runs/0/file/%2e%2e/secret.txt", 400),
        ("/api/runs/0/file/%2E%2E%2Fsecret.txt", 400),
        ("/api/runs/0/file/%2Fetc%2Fpasswd", 400),
        ("/api/runs/0/file//etc/passwd", 400),
        ("/api/runs/0/file/escape.txt", 403),
        ("/api/runs/0/file/up/secret.txt", 403),
        ("/api/runs/1/file/run.json", 404),
        ("/../../secret.txt", 404),
    ] {
        let host = addr.to_string();
        let (st, body) = tokio::task::spawn_blocking(move || get(addr, path, &host)).await??;
        assert_eq!(st, want, "{path}: {body}");
        assert!(!body.contains("TOP-SECRET"), "{path} leaked the file");
    }
    // A page on another site reaching us by DNS rebinding sends its own Host.
    let (st, _) =
        tokio::task::spawn_blocking(move || get(addr, "/api/runs", "attacker.example")).await??;
    assert_eq!(st, 403, "foreign Host header");

    // Loopback only by default; another address only when asked for.
    let Some(ip) = non_loopback_ip()? else {
        skip("no non-loopback IPv4 address on this host to probe the bind with");
        return Ok(());
    };
    let other = SocketAddr::new(ip, addr.port());
    let refused = TcpStream::connect_timeout(&other, Duration::from_secs(3));
    assert!(
        refused.is_err(),
        "the default server must not answer on {other}"
    );
    let wide = start(vec![root], "0.0.0.0".parse()?).await?;
    let there = SocketAddr::new(ip, wide.port());
    let host = there.to_string();
    let (st, body) =
        tokio::task::spawn_blocking(move || get(there, "/api/runs/0/file/run.json", &host))
            .await??;
    assert_eq!(st, 200, "asked for 0.0.0.0, reachable on {there}: {body}");
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
