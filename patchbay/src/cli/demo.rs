//! `patchbay demo`: the built-in showcase. First a small lab and its
//! numbers, then the headline: timeout-heavy scenarios at real time and at
//! k = 20, with speedup and fidelity.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::{LabOpts, native::Lab};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Time scale of the compressed runs.
    #[arg(long, default_value_t = 20.0)]
    scale: f64,
    /// Only the small lab, without the real-time vs compressed comparison.
    #[arg(long)]
    quick: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.quick {
        // The headline scenarios drive nft; set the host up first, as
        // `cargo xtask test` does, instead of failing halfway through.
        super::setup::ensure(
            "demo",
            "`patchbay demo` needs",
            &super::setup::demo_tools(),
            true,
            "`patchbay demo` installs them itself",
        )?;
    }
    let t0 = Instant::now();
    let lab = Lab::with_opts(LabOpts::default().label("demo")).await?;
    let isp = lab.add_router("isp").build().await?;
    let home = lab.add_router("home").upstream(&isp).build().await?;
    let server = lab.add_device("server").iface("eth0", &isp).build().await?;
    let laptop = lab
        .add_device("laptop")
        .iface("eth0", &home)
        .build()
        .await?;
    let build = t0.elapsed();
    let sip = server
        .ip()
        .ok_or_else(|| anyhow::anyhow!("server has no address"))?;
    let listener = server
        .spawn(move |_| async move { std::net::TcpListener::bind((sip, 9000)) })?
        .await??;
    server.spawn(move |_| async move {
        listener.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (mut s, _) = l.accept().await?;
            tokio::task::spawn_local(async move {
                let mut b = [0u8; 64];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    })?;
    let (connect, mut rtts) = laptop
        .spawn(move |_| async move {
            let t = Instant::now();
            let mut s = tokio::net::TcpStream::connect((sip, 9000)).await?;
            let connect = t.elapsed();
            let mut rtts = vec![];
            let mut b = [0u8; 8];
            for _ in 0..20 {
                let t = Instant::now();
                s.write_all(b"ping1234").await?;
                s.read_exact(&mut b).await?;
                rtts.push(t.elapsed());
            }
            Ok::<_, std::io::Error>((connect, rtts))
        })?
        .await??;
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    let headline = if args.quick {
        vec![]
    } else {
        compare(args.scale, args.json).await?
    };
    let report = serde_json::json!({
        "lab": lab.id(),
        "nodes": lab.node_names(),
        "build_ms": ms(build),
        "tcp_connect_ms": ms(connect),
        "rtt_median_us": median.as_secs_f64() * 1e6,
        "laptop_ip": laptop.ip().map(|i| i.to_string()),
        "server_ip": sip.to_string(),
        "headline": headline.iter().map(|r| serde_json::json!({
            "scenario": r.scenario,
            "scale": r.scale,
            "baseline_wall_s": r.baseline.wall_s,
            "compressed_wall_s": r.compressed.wall_s,
            "speedup": r.speedup,
            "sequence_match": r.sequence_match,
            "timing_error": { "median": r.timing_error.median, "max": r.timing_error.max },
            "pass": r.pass,
        })).collect::<Vec<_>>(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "patchbay demo: a laptop behind a home router behind an ISP, and a server at the ISP"
        );
        println!(
            "  lab {} with {} nodes built in {:.1} ms",
            lab.id(),
            lab.node_names().len(),
            ms(build)
        );
        println!(
            "  laptop {} -> server {}: TCP connect {:.2} ms, median RTT {:.0} us over 20 round trips",
            laptop.ip().map(|i| i.to_string()).unwrap_or_default(),
            sip,
            ms(connect),
            median.as_secs_f64() * 1e6
        );
    }
    if !args.json && !headline.is_empty() {
        println!("\ncompressed vs real time, same kernel, same sockets:");
        for r in &headline {
            println!(
                "  {:<15} k={:<3} real {:>6.2} s  compressed {:>5.2} s  speedup {:>5.1}x  events {} {}  timing error median {:.1}% max {:.1}%  {}",
                r.scenario,
                r.scale,
                r.baseline.wall_s,
                r.compressed.wall_s,
                r.speedup,
                r.baseline.events,
                if r.sequence_match {
                    "(same sequence)"
                } else {
                    "(DIFFERENT sequence)"
                },
                r.timing_error.median * 100.0,
                r.timing_error.max * 100.0,
                if r.pass { "faithful" } else { "NOT faithful" }
            );
        }
        println!(
            "  nat-udp-expiry runs at k <= 10: conntrack counts whole seconds, so its 10 s timeout"
        );
        println!(
            "  cannot shrink below 1 s; with the realistic 300 s timeout it stays faithful up to k = 100."
        );
        println!(
            "  (patchbay verify SCENARIO --scale K for any scenario; patchbay bench for all of them)"
        );
    }
    // The demo is a showcase: its verdicts are printed, not turned into an
    // exit code (patchbay verify does that).
    Ok(ExitCode::SUCCESS)
}

/// The headline scenarios with the k each is shown at: syn-blackhole at
/// `k`; nat-udp-expiry at most at 10, the largest k its whole-second
/// conntrack timeout (10 s at the demo's size) stays faithful at.
fn headline_plan(k: f64) -> Vec<(crate::scenario::Scenario, f64)> {
    use crate::scenario::Scenario;
    vec![
        (Scenario::SynBlackhole, k),
        (Scenario::NatUdpExpiry, k.min(10.0)),
    ]
}

/// Runs the headline scenarios at k = 1 and compressed, with a spinner on a
/// terminal.
async fn compare(k: f64, quiet: bool) -> anyhow::Result<Vec<crate::scenario::VerifyResult>> {
    use std::io::IsTerminal;
    let bar = if !quiet && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let mut out = vec![];
    for (s, sk) in headline_plan(k) {
        let msg = format!("running {} at real time, then at k = {sk}", s.name());
        match &bar {
            Some(b) => b.set_message(msg),
            None if !quiet => eprintln!("  {msg}"),
            None => {}
        }
        out.push(crate::scenario::verify(s, sk, 1.0, crate::scenario::Size::Default).await?);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
