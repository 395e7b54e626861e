//! The devtools web view (`patchbay serve`): the page rendered by a real
//! headless Chromium (driven over the DevTools protocol, `cdp.rs`) against
//! real run directories, and the server's path and address safety over raw
//! HTTP.
//!
//! - this file: a bench directory, a small lab outdir written here and a
//!   100k-event one; the server's safety;
//! - `runs.rs`: the examples run by the `patchbay` binary (step bands, a
//!   k=1 vs k=10 pair side by side, region links, removed nodes, phone
//!   width on every view);
//! - `qlog.rs`: a quinn connection's qlog and a tracing log in the page.
//!
//! `PATCHBAY_SCREENSHOTS=DIR` keeps the screenshots (docs/img has them).

mod cdp;
mod qlog;
mod runs;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use cdp::{Browser, DESKTOP, PHONE, Viewport};
use patchbay::scenario::bench::bench_scenario;
use patchbay::scenario::{Scenario, Size, bench_dir};
use patchbay::serve::{ServeOpts, Server};
use patchbay_tests::{ip_here, require_root, skip};

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

/// Chromium when the test can run: as root (the labs) with a browser; else
/// `None`, the skip printed.
fn root_and_chromium() -> anyhow::Result<Option<PathBuf>> {
    require_root!();
    chromium()
}

fn browser(chrome: &Path, name: &str) -> anyhow::Result<Browser> {
    Browser::start(chrome, scratch(&format!("chromium-{name}"))?)
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
fn figure(b: &mut Browser, class: &str) -> anyhow::Result<(String, String)> {
    let v = b.eval(&format!(
        "(e => e ? [e.dataset.value, e.querySelector('b').textContent] : null)(document.querySelector('.{class}'))"
    ))?;
    let text = |i: usize| v[i].as_str().unwrap_or_default().to_string();
    ensure!(!v.is_null(), "no .{class} figure");
    Ok((text(0), text(1)))
}

fn count(b: &mut Browser, selector: &str) -> anyhow::Result<usize> {
    let n = b.eval(&format!("document.querySelectorAll({selector:?}).length"))?;
    Ok(n.as_u64().unwrap_or(0) as usize)
}

/// Where screenshots go: `PATCHBAY_SCREENSHOTS`, else a scratch directory.
fn shots() -> anyhow::Result<PathBuf> {
    let d = match std::env::var_os("PATCHBAY_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("devtools-shots"),
    };
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Opens `url` at 1400×900 and at 390×844 (a phone) and saves both views
/// as `<name>.png` and `<name>-phone.png`; checks at the phone width that
/// nothing is wider than the viewport.
fn shoot(b: &mut Browser, url: &str, name: &str) -> anyhow::Result<()> {
    let dir = shots()?;
    for (vp, file) in [
        (DESKTOP, format!("{name}.png")),
        (PHONE, format!("{name}-phone.png")),
    ] {
        b.open(url, vp)?;
        if vp.mobile {
            fits(b, url, vp)?;
        }
        let png = dir.join(&file);
        let size = b.screenshot(&png)?;
        // A blank page compresses to a few kB.
        ensure!(size > 8_000, "{file}: {size} B, blank?");
        println!("DEVTOOLS-SCREENSHOT: {} ({size} B)", png.display());
    }
    Ok(())
}

/// The document is no wider than the viewport (what sticks out is named).
fn fits(b: &mut Browser, url: &str, vp: Viewport) -> anyhow::Result<()> {
    let (scroll, client, out) = b.overflow()?;
    ensure!(
        scroll <= client && client == u64::from(vp.width),
        "{url} at {} px: scrollWidth {scroll} > clientWidth {client}; sticking out: {out}",
        vp.width
    );
    Ok(())
}

/// Every tab of `run` fits a phone.
fn fits_phone(b: &mut Browser, addr: SocketAddr, run: usize) -> anyhow::Result<()> {
    for tab in ["topology", "timeline", "side", "logs", "qlog", "reports"] {
        let url = format!("http://{addr}/#run={run}&tab={tab}");
        b.open(&url, PHONE)?;
        fits(b, &url, PHONE)?;
    }
    Ok(())
}

/// A small lab outdir in the run-directory format (docs/artifacts.md):
/// two devices behind a NAT router, `rtos` RTO events on dev1, a fault and
/// a step, per-node logs with tracing JSON lines, and region links (one
/// broken).
fn write_lab_dir(dir: &Path, rtos: usize) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("run.json"),
        r#"{"format":"patchbay-run","version":1,"kind":"lab","name":"nat-demo","time_mode":"compressed","time_scale":20.0,"seed":null,"started_unix_ms":0,"ended_unix_ms":1,"status":"failed","patchbay_version":"0.1.0"}"#,
    )?;
    std::fs::write(
        dir.join("topology.json"),
        r#"{"version":2,"routers":[{"name":"region-eu","upstream":null,"nat":"none","region":"eu","ifaces":[]},
        {"name":"region-us","upstream":null,"nat":"none","region":"us","ifaces":[]},
        {"name":"isp","upstream":"region-eu","nat":"none","firewall":null,"region":"eu","ifaces":[]},
        {"name":"home","upstream":"isp","nat":"port-restricted","nat_config":{"hairpin":false,"conntrack":{"udp":"30s","udp-stream":"120s"}},"firewall":{"preset":"block-inbound"},"region":"eu",
         "lan":{"kind":"private","ip_support":"dual-stack","ipv4":"10.0.1.0/24","ipv6":"fd00:1::/64"},
         "ifaces":[{"name":"wan","peer":"isp","ipv4":["203.0.113.2/24"],"ipv6":[],"mtu":1400,"link":{"out":{"delay":"40ms","loss":"1%"},"in":{"delay":"40ms"}}}]}],
        "devices":[{"name":"laptop","default_via":"eth0","ifaces":[{"name":"eth0","peer":"home","ipv4":["10.0.1.2/24"],"ipv6":["fd00::2/64"],"link":{"out":null,"in":null},
            "counters":{"rx_packets":12,"tx_packets":20,"rx_bytes":1500,"tx_bytes":2300,"rx_dropped":0,"tx_dropped":1}}]},
        {"name":"server","ifaces":[{"name":"eth0","peer":"region-us","ipv4":["203.0.113.10/24"],"ipv6":[],"link":{"out":{"delay":"5ms"},"in":{"delay":"5ms"}}}]}],
        "regions":[{"name":"eu","router":"region-eu"},{"name":"us","router":"region-us"}],
        "region_links":[{"a":"eu","b":"us","condition":{"delay":"40ms"},"state":"broken","via":null,
            "history":[{"state":"linked","via":null,"virtual_ms":0},{"state":"broken","via":null,"virtual_ms":5000}]}],
        "removed":[{"name":"phone","role":"device","ifaces":[{"name":"eth0","peer":"home","ipv4":["10.0.1.3/24"]}],"removed_ms":11000}]}"#,
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
    push(10.0, "null", "step.start", r#"{"step":1}"#);
    push(
        100.0,
        "null",
        "fault.start",
        r#"{"fault":"blackhole home.wan (Both)"}"#,
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
    push(
        12_000.0,
        "null",
        "fault.end",
        r#"{"fault":"blackhole home.wan (Both)"}"#,
    );
    push(
        12_500.0,
        r#""laptop""#,
        "step.end",
        r#"{"step":1,"kind":"run","ok":false}"#,
    );
    push(13_000.0, "null", "lab.end", "{}");
    std::fs::write(dir.join("events.jsonl"), ev)?;
    std::fs::create_dir_all(dir.join("logs/laptop"))?;
    let tracing = |ms: f64, level: &str, msg: &str| {
        serde_json::json!({"wall_ms": ms / 20.0, "virtual_ms": ms, "cmd": 1, "stream": "stderr",
            "line": serde_json::json!({"timestamp": "2026-01-01T00:00:00Z", "level": level,
                "fields": {"message": msg}, "target": "app::net"}).to_string()})
        .to_string()
    };
    std::fs::write(
        dir.join("logs/laptop.jsonl"),
        [
            r#"{"wall_ms":0.5,"virtual_ms":10.0,"cmd":0,"stream":"stdout","line":"connecting to 203.0.113.10:443"}"#.to_string(),
            tracing(1000.0, "INFO", "handshake started"),
            tracing(3000.0, "WARN", "no answer, retransmitting"),
            tracing(7000.0, "DEBUG", "backoff 4 s"),
            tracing(11_000.0, "ERROR", "connection timed out"),
            r#"{"wall_ms":600.0,"virtual_ms":12000.0,"cmd":0,"stream":"stderr","line":"curl: (28) Connection timed out"}"#.to_string(),
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
        writeln!(
            s,
            r#"{{"seq":{i},"wall_ms":{t},"virtual_ms":{t},"node":"n{}","kind":{}}}"#,
            i % 10,
            kinds[(i / 10) % kinds.len()]
        )?;
    }
    std::fs::write(dir.join("events.jsonl"), s)?;
    Ok(())
}

/// The bench directory side by side, the small lab's topology, timeline
/// and logs, and the 100k run binned.
fn check_bench_and_small_lab(
    b: &mut Browser,
    addr: SocketAddr,
    bench: &Path,
) -> anyhow::Result<()> {
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
    b.open(&format!("http://{addr}/#run=0&tab=side"), DESKTOP)?;
    assert_eq!(
        count(b, r#".sbs-ev[data-kind="rto"]"#)?,
        rtos,
        "RTO ticks drawn side by side"
    );
    let f = &cmp["fidelity"];
    for (class, key) in [("fid-median", "median"), ("fid-max", "max")] {
        let v = f[key].as_f64().context("fidelity figure")?;
        let (shown, text) = figure(b, class)?;
        let shown: f64 = shown.parse()?;
        // serde_json's default parser may land one ulp off a 17-digit number, so the page's
        // value (JavaScript's exact parse) is compared to the last few ulps, and its text
        // exactly.
        ensure!(
            (shown - v).abs() <= v.abs() * 1e-15 && text == format!("{:.1}%", v * 100.0),
            "{class}: the page shows {shown} as {text:?}, bench.json has {v}"
        );
    }
    let verdict = if f["pass"] == true { "PASS" } else { "FAIL" };
    ensure!(figure(b, "fid-pass")?.1 == verdict, "verdict {verdict}");
    ensure!(b.dom()?.contains("syn-blackhole — compressed k=20"));

    // The small lab: topology (with its region link broken and a removed
    // node), timeline and logs.
    b.open(&format!("http://{addr}/#run=1&tab=timeline"), DESKTOP)?;
    let dom = b.dom()?;
    for node in ["isp", "home", "laptop", "server", "region-eu", "region-us"] {
        ensure!(
            dom.contains(&format!(r#"class="topo-node" data-node="{node}""#)),
            "node {node} not drawn"
        );
    }
    ensure!(
        dom.contains(r#"class="topo-node removed" data-node="phone""#),
        "removed phone greyed"
    );
    ensure!(dom.contains("removed at 11.0 s"), "the removal time");
    ensure!(
        dom.contains(r#"class="region-link" data-link="eu|us" data-state="broken""#),
        "the broken region link"
    );
    ensure!(dom.contains("NAT port-restricted · udp 30s/120s") && dom.contains("↑ 40ms loss 1%"));
    assert_eq!(count(b, r#".tl-ev[data-kind="tcp:rto"]"#)?, 6, "RTO ticks");
    assert_eq!(count(b, ".band")?, 2, "the fault and the step");
    let band =
        b.eval("(r => [r.dataset.from, r.dataset.to])(document.querySelector('.band-step'))")?;
    assert_eq!(
        band,
        serde_json::json!(["10", "12500"]),
        "step 1's band: start to end"
    );
    ensure!(dom.contains("curl: (28) Connection timed out"), "logs");
    // A node's detail: addresses, NAT, firewall, links, counters.
    b.open(
        &format!("http://{addr}/#run=1&tab=topology&node=laptop"),
        DESKTOP,
    )?;
    let detail = b.eval("document.querySelector('.node-detail').textContent")?;
    let detail = detail.as_str().unwrap_or_default();
    ensure!(
        detail.contains("10.0.1.2/24")
            && detail.contains("1500 / 2300")
            && detail.contains("0 / 1"),
        "laptop's detail: {detail}"
    );
    // Logs: the level filter and the search.
    b.open(
        &format!("http://{addr}/#run=1&tab=logs&level=warn&q=timed"),
        DESKTOP,
    )?;
    let levels =
        b.eval("[...document.querySelectorAll('table.log tbody tr')].map(r => r.dataset.level)")?;
    assert_eq!(
        levels,
        serde_json::json!(["WARN", "ERROR"]),
        "warn and above"
    );
    assert_eq!(
        b.eval("document.querySelector('#logs').dataset.hits")?,
        "1",
        "one match of 'timed'"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devtools_page_renders_a_bench_dir_and_a_lab_outdir_in_chromium() -> anyhow::Result<()> {
    let Some(chrome) = root_and_chromium()? else {
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
    let dirs = vec![bench.clone(), lab, big];
    let addr = start(dirs.clone(), "127.0.0.1".parse()?).await?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut b = browser(&chrome, "bench")?;
        check_bench_and_small_lab(&mut b, addr, &bench)?;
        // 100k events: the page loads a binned window.
        let t = Instant::now();
        b.open(&format!("http://{addr}/#run=2&tab=timeline"), DESKTOP)?;
        let load = t.elapsed();
        ensure!(b.dom()?.contains("100000 events"), "the total is shown");
        let marks = count(&mut b, ".tl-ev")?;
        ensure!(
            (1000..=8000).contains(&marks),
            "binned to at most a mark per node and pixel: {marks}"
        );
        println!(
            "DEVTOOLS-100K: navigation to rendered timeline {:.2} s, {marks} marks",
            load.as_secs_f64()
        );
        for run in 0..3 {
            fits_phone(&mut b, addr, run)?;
        }
        shoot(
            &mut b,
            &format!("http://{addr}/#run=0&tab=side"),
            "devtools-side-bench",
        )?;
        shoot(
            &mut b,
            &format!("http://{addr}/#run=0&tab=reports"),
            "devtools-reports",
        )?;
        shoot(
            &mut b,
            &format!("http://{addr}/#run=1&tab=logs&level=debug&q=timed"),
            "devtools-logs",
        )?;
        Ok(())
    })
    .await??;
    for d in dirs {
        std::fs::remove_dir_all(d)?;
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
    Ok(ip_here(&["-4", "-o", "addr", "show"])?
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
        ("/api/compare?base=0&run=7", 404),
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
