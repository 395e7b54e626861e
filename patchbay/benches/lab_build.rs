//! Benchmark: build a lab until a first TCP connect succeeds, then tear it
//! down, for two sizes:
//!
//! - the small lab, 1 router + 10 devices (30 runs after 3 warm-up runs);
//! - the scale lab, 10 routers + 200 devices spread over them (5 runs after
//!   1 warm-up), with the build time per node.
//!
//! Reports medians and p90s; run with `cargo xtask bench` (or `cargo bench
//! -p patchbay --bench lab_build`). Needs root. `--json` prints one JSON
//! object. `PATCHBAY_BENCH_NO_PREWARM=1` turns neighbour pre-warming off,
//! `PATCHBAY_BENCH_TRACE=1` prints every run.

use std::time::{Duration, Instant};

use patchbay::native::Lab;

/// One lab shape.
struct Shape {
    routers: usize,
    devices: usize,
    warmup: usize,
    runs: usize,
}

const SMALL: Shape = Shape {
    routers: 1,
    devices: 10,
    warmup: 3,
    runs: 30,
};

const SCALE: Shape = Shape {
    routers: 10,
    devices: 200,
    warmup: 1,
    runs: 5,
};

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

struct Run {
    build: Duration,
    teardown: Duration,
    rss_kib: u64,
}

async fn one(shape: &Shape) -> anyhow::Result<Run> {
    let t0 = Instant::now();
    let prewarm = std::env::var_os("PATCHBAY_BENCH_NO_PREWARM").is_none();
    let lab =
        Lab::with_opts(patchbay::native::LabOpts::default().prewarm_neighbors(prewarm)).await?;
    let mut routers = Vec::with_capacity(shape.routers);
    for i in 0..shape.routers {
        routers.push(lab.add_router(&format!("r{i}")).build().await?);
    }
    let mut devs = Vec::with_capacity(shape.devices);
    for i in 0..shape.devices {
        devs.push(
            lab.add_device(&format!("d{i}"))
                .iface("eth0", &routers[i % shape.routers])
                .build()
                .await?,
        );
    }
    let t_built = t0.elapsed();
    // The last device connects to the first (across routers in the scale lab).
    let sip = devs[0].ip().expect("address");
    let l = devs[0]
        .spawn(move |_| async move { std::net::TcpListener::bind((sip, 80)) })?
        .await??;
    devs[shape.devices - 1]
        .spawn(move |_| async move { tokio::net::TcpStream::connect((sip, 80)).await })?
        .await??;
    let build = t0.elapsed();
    let rss_kib = rss_kib();
    drop(l);
    drop(devs);
    drop(routers);
    let t1 = Instant::now();
    drop(lab);
    let teardown = t1.elapsed();
    if std::env::var_os("PATCHBAY_BENCH_TRACE").is_some() {
        eprintln!("built {t_built:?} connected {build:?} teardown {teardown:?}");
    }
    Ok(Run {
        build,
        teardown,
        rss_kib,
    })
}

fn quantile(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 * q) as usize).min(v.len() - 1);
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Stats {
    build_median: Duration,
    build_p90: Duration,
    teardown_median: Duration,
    teardown_p90: Duration,
    rss_mib: f64,
}

fn measure(rt: &tokio::runtime::Runtime, shape: &Shape) -> anyhow::Result<Stats> {
    let mut runs = vec![];
    for i in 0..shape.warmup + shape.runs {
        let r = rt.block_on(one(shape))?;
        if i >= shape.warmup {
            runs.push(r);
        }
    }
    let builds: Vec<_> = runs.iter().map(|r| r.build).collect();
    let teardowns: Vec<_> = runs.iter().map(|r| r.teardown).collect();
    let rss = runs.iter().map(|r| r.rss_kib).max().unwrap_or(0);
    Ok(Stats {
        build_median: quantile(&builds, 0.5),
        build_p90: quantile(&builds, 0.9),
        teardown_median: quantile(&teardowns, 0.5),
        teardown_p90: quantile(&teardowns, 0.9),
        rss_mib: rss as f64 / 1024.0,
    })
}

fn main() -> anyhow::Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base_rss = rss_kib() as f64 / 1024.0;
    let small = measure(&rt, &SMALL)?;
    let scale = measure(&rt, &SCALE)?;
    let nodes = (SCALE.routers + SCALE.devices) as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "lab_build_first_connect",
                "lab": { "routers": SMALL.routers, "devices": SMALL.devices },
                "runs": SMALL.runs,
                "build_median_ms": ms(small.build_median),
                "build_p90_ms": ms(small.build_p90),
                "teardown_median_ms": ms(small.teardown_median),
                "teardown_p90_ms": ms(small.teardown_p90),
                "rss_mib": small.rss_mib,
                "rss_before_any_lab_mib": base_rss,
                "scale": {
                    "lab": { "routers": SCALE.routers, "devices": SCALE.devices },
                    "runs": SCALE.runs,
                    "build_median_ms": ms(scale.build_median),
                    "build_p90_ms": ms(scale.build_p90),
                    "build_per_node_ms": ms(scale.build_median) / nodes,
                    "teardown_median_ms": ms(scale.teardown_median),
                    "teardown_p90_ms": ms(scale.teardown_p90),
                    "rss_mib": scale.rss_mib,
                },
            })
        );
        return Ok(());
    }
    for (shape, s) in [(&SMALL, &small), (&SCALE, &scale)] {
        println!(
            "lab build ({} routers + {} devices) until first TCP connect, {} runs after {} warm-up:",
            shape.routers, shape.devices, shape.runs, shape.warmup
        );
        println!(
            "  build    median {:8.1} ms   p90 {:8.1} ms   per node {:.2} ms",
            ms(s.build_median),
            ms(s.build_p90),
            ms(s.build_median) / (shape.routers + shape.devices) as f64
        );
        println!(
            "  teardown median {:8.1} ms   p90 {:8.1} ms",
            ms(s.teardown_median),
            ms(s.teardown_p90)
        );
        println!(
            "  process RSS with the lab: {:.1} MiB (before any lab: {base_rss:.1} MiB)",
            s.rss_mib
        );
    }
    Ok(())
}
