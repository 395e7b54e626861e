//! Benchmark: build a lab of 1 router + 10 devices until a first TCP
//! connect succeeds, then tear it down. Reports medians; run with
//! `cargo xtask bench` (or `cargo bench -p patchbay --bench lab_build`).
//! Needs root. `--json` prints one JSON object.

use std::time::{Duration, Instant};

use patchbay::Lab;

const WARMUP: usize = 3;
const RUNS: usize = 30;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

async fn one() -> anyhow::Result<(Duration, Duration, u64)> {
    let t0 = Instant::now();
    let prewarm = std::env::var_os("PATCHBAY_BENCH_NO_PREWARM").is_none();
    let lab = Lab::with_opts(patchbay::LabOpts::default().prewarm_neighbors(prewarm)).await?;
    let r = lab.add_router("r").build().await?;
    let mut devs = Vec::with_capacity(10);
    for i in 0..10 {
        devs.push(
            lab.add_device(&format!("d{i}"))
                .iface("eth0", &r)
                .build()
                .await?,
        );
    }
    let t_built = t0.elapsed();
    let sip = devs[0].ip().expect("address");
    let l = devs[0]
        .spawn(move |_| async move { std::net::TcpListener::bind((sip, 80)) })?
        .await??;
    devs[9]
        .spawn(move |_| async move { tokio::net::TcpStream::connect((sip, 80)).await })?
        .await??;
    let build = t0.elapsed();
    if std::env::var_os("PATCHBAY_BENCH_TRACE").is_some() {
        eprintln!("built {:?} connected {:?}", t_built, build);
    }
    let rss = rss_kib();
    drop(l);
    drop(devs);
    drop(r);
    let t1 = Instant::now();
    drop(lab);
    Ok((build, t1.elapsed(), rss))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base_rss = rss_kib();
    let (mut builds, mut teardowns, mut rss) = (vec![], vec![], vec![]);
    for i in 0..WARMUP + RUNS {
        let (b, t, r) = rt.block_on(one())?;
        if i >= WARMUP {
            builds.push(b);
            teardowns.push(t);
            rss.push(r);
        }
    }
    let p90 = {
        let mut v = builds.clone();
        v.sort();
        v[v.len() * 9 / 10]
    };
    let (mb, mt) = (median(&mut builds), median(&mut teardowns));
    rss.sort();
    let peak_rss = rss[rss.len() - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "lab_build_1r10d_first_connect",
                "runs": RUNS,
                "build_median_ms": ms(mb),
                "build_p90_ms": ms(p90),
                "teardown_median_ms": ms(mt),
                "process_rss_with_lab_kib": peak_rss,
                "process_rss_before_kib": base_rss,
            })
        );
    } else {
        println!(
            "lab build (1 router + 10 devices) until first TCP connect, {RUNS} runs after {WARMUP} warm-up:"
        );
        println!(
            "  build    median {:7.1} ms   p90 {:7.1} ms",
            ms(mb),
            ms(p90)
        );
        println!("  teardown median {:7.1} ms", ms(mt));
        println!(
            "  process RSS with the lab: {:.1} MiB (before any lab: {:.1} MiB)",
            peak_rss as f64 / 1024.0,
            base_rss as f64 / 1024.0
        );
    }
    Ok(())
}
