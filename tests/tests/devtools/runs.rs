//! The examples as `patchbay run --outdir` leaves them, in the page: every
//! step band spans its step, a k=1 and a k=10 run of a UDP lab compare
//! their events with a verdict that agrees with its figures, region links
//! carry their state, removed nodes stay greyed, and every view fits a
//! phone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use patchbay_tests::{patchbay_bin, skip, workspace};
use serde_json::Value;

use super::*;

/// Runs `patchbay run examples/<name>.toml --outdir <dir> [extra]`.
fn run_example(bin: &Path, name: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(bin)
        .arg("run")
        .arg(workspace().join("examples").join(format!("{name}.toml")))
        .arg("--outdir")
        .arg(dir)
        .args(extra)
        .output()?;
    ensure!(
        out.status.success(),
        "{name} {extra:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// step number → (virtual ms of its `step.start`, of its `step.end`).
fn steps_of(dir: &Path) -> anyhow::Result<BTreeMap<u64, (f64, f64)>> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("events.jsonl"))?.lines() {
        let e: Value = serde_json::from_str(line)?;
        let (Some(n), Some(t)) = (e["data"]["step"].as_u64(), e["virtual_ms"].as_f64()) else {
            continue;
        };
        match e["kind"].as_str() {
            Some("step.start") => {
                out.insert(n, (t, f64::NAN));
            }
            Some("step.end") => out.get_mut(&n).context("step.end before its start")?.1 = t,
            _ => {}
        }
    }
    Ok(out)
}

/// Every step band of the timeline is where its step's events are: its
/// data and its drawn edges (on the chart's own scale) span start to end.
fn check_bands(b: &mut Browser, url: &str, dir: &Path) -> anyhow::Result<usize> {
    let want = steps_of(dir)?;
    b.open(url, DESKTOP)?;
    let drawn = b.eval(
        "(() => { const t = S.timeline, v = t.view, W = t.width(), L = t.left();
          const x = ms => L + (W - L - 20) * (ms - v.from) / (v.to - v.from);
          return [...document.querySelectorAll('rect.band-step')].map(r => {
            const from = Number(r.dataset.from), to = Number(r.dataset.to);
            const x0 = Number(r.getAttribute('x')), x1 = x0 + Number(r.getAttribute('width'));
            return [Number(r.dataset.step), from, to, Math.abs(x0 - Math.max(L, x(from))), Math.abs(x1 - (x0 + Math.max(1, Math.min(W - 20, x(to)) - x0))), x0, x1, x(from), x(to), W, v.from, v.to];
          }); })()",
    )?;
    let drawn = drawn.as_array().context("bands")?;
    ensure!(
        drawn.len() == want.len(),
        "{url}: {} step bands for {} steps: {drawn:?}",
        drawn.len(),
        want.len()
    );
    for d in drawn {
        let n = d[0].as_u64().context("step")?;
        let (start, end) = want[&n];
        let f = |i: usize| d[i].as_f64().unwrap_or(f64::NAN);
        ensure!(
            (f(1) - start).abs() < 1e-6 && (f(2) - end).abs() < 1e-6,
            "{url}: step {n} band {}..{}, events {start}..{end}",
            f(1),
            f(2)
        );
        ensure!(
            f(3) < 0.5 && f(4) < 0.5,
            "{url}: step {n}'s band is drawn {} px / {} px off its start / end: {d:?}",
            f(3),
            f(4)
        );
    }
    Ok(drawn.len())
}

/// The side by side of the k=10 run against the k=1 one: events compared,
/// and a verdict that follows from the figures shown next to it.
fn check_side_by_side(b: &mut Browser, url: &str) -> anyhow::Result<String> {
    b.open(url, DESKTOP)?;
    let (verdict, median, max, seq, timed) = (
        figure(b, "fid-pass")?.1,
        figure(b, "fid-median")?.0.parse::<f64>()?,
        figure(b, "fid-max")?.0.parse::<f64>()?,
        figure(b, "fid-seq")?.1,
        figure(b, "fid-timed")?.0.parse::<usize>()?,
    );
    let compared = b.eval("document.querySelector('.compared').textContent")?;
    let compared = compared.as_str().unwrap_or_default().to_string();
    let ticks = count(b, ".sbs-ev")?;
    println!(
        "DEVTOOLS-SIDE: {verdict} median {median:.3} max {max:.3} {seq} timed {timed}, {ticks} ticks; {compared}"
    );
    ensure!(ticks > 0, "nothing drawn side by side");
    for kind in ["step.start", "step.end", "cmd.start", "cmd.exit"] {
        ensure!(
            compared.contains(kind),
            "{kind} is not compared: {compared}"
        );
    }
    let expected = if timed == 0 && seq == "identical" {
        "NO VERDICT"
    } else if seq == "identical" && timed > 0 && median <= 0.05 && max <= 0.15 {
        "PASS"
    } else {
        "FAIL"
    };
    ensure!(
        verdict == expected,
        "the verdict {verdict} contradicts its figures (median {median}, max {max}, {seq}, {timed} timed)"
    );
    let reasons =
        b.eval("[...document.querySelectorAll('ul.reasons li')].map(l => l.textContent)")?;
    ensure!(
        (verdict == "PASS") == reasons.as_array().is_none_or(Vec::is_empty),
        "a FAIL names its reasons, a PASS has none: {reasons}"
    );
    Ok(verdict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devtools_shows_the_examples_runs_in_chromium() -> anyhow::Result<()> {
    let Some(chrome) = root_and_chromium()? else {
        return Ok(());
    };
    let bin = patchbay_bin()?;
    let base = scratch("examples")?;
    // Each example that runs on this host; flaky-loss is a virtual-time lab.
    let mut runs: Vec<(String, PathBuf)> = vec![];
    for name in [
        "nat-timeout",
        "dns",
        "ipv6-nat64",
        "mobility",
        "mtu",
        "presets",
        "regions",
        "scale-20x500",
        "flaky-loss",
    ] {
        let dir = base.join(name);
        if name == "flaky-loss" && patchbay::vt::find_uml_binary().is_err() {
            skip("flaky-loss runs in virtual time: no UML kernel (cargo xtask build-uml)");
            continue;
        }
        run_example(&bin, name, &dir, &[])?;
        runs.push((name.to_string(), dir));
    }
    let k10 = base.join("nat-timeout-k10");
    run_example(&bin, "nat-timeout", &k10, &["--time-scale", "10"])?;
    runs.push(("nat-timeout-k10".into(), k10));
    let addr = start(
        runs.iter().map(|r| r.1.clone()).collect(),
        "127.0.0.1".parse()?,
    )
    .await?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let id = |name: &str| runs.iter().position(|r| r.0 == name).unwrap_or(usize::MAX);
        let mut b = browser(&chrome, "examples")?;
        for (i, (name, dir)) in runs.iter().enumerate() {
            let n = check_bands(&mut b, &format!("http://{addr}/#run={i}&tab=timeline"), dir)?;
            println!("DEVTOOLS-BANDS: {name}: {n} step bands span their steps");
        }
        check_side_by_side(&mut b, &format!("http://{addr}/#run={}&tab=side", id("nat-timeout-k10")))?;

        // Regions: the links with their state after break and restore.
        b.open(&format!("http://{addr}/#run={}&tab=topology", id("regions")), DESKTOP)?;
        let links = b.eval("[...document.querySelectorAll('.region-link')].map(g => [g.dataset.link, g.dataset.state, g.querySelector('title').textContent])")?;
        let links = links.as_array().context("region links")?;
        let state = |l: &str| links.iter().find(|x| x[0] == l).map(|x| (x[1].as_str().unwrap_or(""), x[2].as_str().unwrap_or("")));
        ensure!(state("asia|eu").is_some_and(|s| s.0 == "linked"), "{links:?}");
        ensure!(state("asia|us").is_some_and(|s| s.0 == "linked"), "{links:?}");
        let eu_us = state("eu|us").context("eu–us drawn")?;
        ensure!(
            eu_us.0 == "restored" && eu_us.1.contains("broken") && eu_us.1.contains("via asia"),
            "eu–us: {eu_us:?}"
        );
        // Mobility: the removed phone and cell stay, greyed, with the time.
        b.open(&format!("http://{addr}/#run={}&tab=topology", id("mobility")), DESKTOP)?;
        ensure!(count(&mut b, ".topo-node.removed")? == 2, "phone and cell removed");
        let dom = b.dom()?;
        ensure!(dom.contains("removed at "), "the removal time");
        // No edge passes through a box (edges run between rows).
        for name in ["mobility", "regions", "ipv6-nat64", "presets"] {
            b.open(&format!("http://{addr}/#run={}&tab=topology", id(name)), DESKTOP)?;
            let hits = b.eval(EDGES_THROUGH_BOXES)?;
            ensure!(hits.as_array().is_some_and(Vec::is_empty), "{name}: edges through boxes: {hits}");
        }
        for i in 0..runs.len() {
            fits_phone(&mut b, addr, i)?;
        }
        shoot(&mut b, &format!("http://{addr}/#run={}&tab=timeline", id("mobility")), "devtools-timeline")?;
        shoot(&mut b, &format!("http://{addr}/#run={}&tab=topology&node=phone", id("mobility")), "devtools-topology")?;
        shoot(&mut b, &format!("http://{addr}/#run={}&tab=topology", id("regions")), "devtools-regions")?;
        shoot(&mut b, &format!("http://{addr}/#run={}&tab=side", id("nat-timeout-k10")), "devtools-side-lab")?;
        Ok(())
    })
    .await??;
    std::fs::remove_dir_all(&base)?;
    Ok(())
}

/// Edge segments (sampled) that fall inside a node's box other than their
/// own two ends.
const EDGES_THROUGH_BOXES: &str = "(() => {
  const boxes = [...document.querySelectorAll('.topo-node')].map(g => { const r = g.querySelector('rect');
    return [g.dataset.node, +r.getAttribute('x'), +r.getAttribute('y'), +r.getAttribute('width'), +r.getAttribute('height')]; });
  const out = [];
  document.querySelectorAll('.topo-edge').forEach(e => {
    const [from, to] = e.dataset.edge.split('>');
    const pts = e.getAttribute('points').split(' ').map(p => p.split(',').map(Number));
    for (let i = 1; i < pts.length; i++) for (let s = 0.02; s < 0.99; s += 0.02) {
      const x = pts[i-1][0] + (pts[i][0] - pts[i-1][0]) * s, y = pts[i-1][1] + (pts[i][1] - pts[i-1][1]) * s;
      boxes.forEach(([n, bx, by, bw, bh]) => { if (n !== from && n !== to && x > bx && x < bx + bw && y > by && y < by + bh) out.push(`${from}>${to} through ${n}`); });
    }
  });
  return [...new Set(out)];
})()";

/// A live run (`patchbay run --serve`) in its 15 s idle stretch: no event
/// arrives, and the timeline's axis still moves on with the run's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devtools_live_axis_moves_while_the_run_idles() -> anyhow::Result<()> {
    let Some(chrome) = root_and_chromium()? else {
        return Ok(());
    };
    let dir = scratch("live")?.join("run");
    let mut child = std::process::Command::new(patchbay_bin()?)
        .arg("run")
        .arg(workspace().join("examples/nat-timeout.toml"))
        .args(["--serve", "--serve-port", "0", "--outdir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use std::io::BufRead;
        let url = std::io::BufReader::new(stdout)
            .lines()
            .next()
            .context("the URL line")??;
        let mut b = browser(&chrome, "live")?;
        b.open(&format!("{url}#run=0&tab=timeline"), DESKTOP)?;
        let sample = "new Promise(r => setTimeout(r, 50)).then(() => [S.timeline ? S.timeline.view.to : null, S.lastSeq, S.run.run.status])";
        for _ in 0..5 {
            let a = b.eval(sample)?;
            std::thread::sleep(std::time::Duration::from_millis(2500));
            let z = b.eval(sample)?;
            println!("DEVTOOLS-LIVE: {a} then {z}");
            if a[1] != z[1] || a[0].is_null() || z[2] != "running" {
                continue; // an event arrived (or none yet): sample again
            }
            let moved = z[0].as_f64().unwrap_or(0.0) - a[0].as_f64().unwrap_or(0.0);
            ensure!(
                (1500.0..6000.0).contains(&moved),
                "the axis moved {moved} ms in 2.5 s of an idle live run"
            );
            return Ok(());
        }
        anyhow::bail!("no idle stretch of 2.5 s seen in the live run")
    })
    .await?;
    child.kill()?;
    child.wait()?;
    result?;
    std::fs::remove_dir_all(dir.parent().context("scratch")?)?;
    Ok(())
}
