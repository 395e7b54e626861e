//! The fidelity suite: every scenario at its default size, real time (k = 1)
//! against compressed (k = 10; syn-blackhole also k = 20), with the criteria
//! of `docs/fidelity.md` (identical event sequence, median error <= 5%, max
//! <= 15%). `timing_*` tests run in the serial nextest group.

use patchbay::scenario::{Scenario, Size, VerifyResult, fidelity};
use patchbay_tests::*;

/// Why the eBPF telemetry the traces need is unavailable, if it is.
fn bpf_unavailable() -> Option<&'static str> {
    if let Some(why) = root_unavailable() {
        return Some(why);
    }
    let caps = patchbay::bpf::probe();
    (!(caps.sock_ops && caps.engine && caps.ringbuf))
        .then_some("eBPF sock_ops telemetry (cgroup v2, ring buffer, Linux 5.15+) is unavailable")
}

fn report(r: &VerifyResult) {
    println!(
        "{} k={}: baseline {:.2} s ({} events), compressed {:.3} s ({} events), speedup {:.1}x, sequence {}, median {:.2}%, max {:.2}% -> {}",
        r.scenario,
        r.scale,
        r.baseline.wall_s,
        r.baseline.events,
        r.compressed.wall_s,
        r.compressed.events,
        r.speedup,
        r.sequence_match,
        r.timing_error.median * 100.0,
        r.timing_error.max * 100.0,
        if r.pass { "PASS" } else { "FAIL" }
    );
    for (b, c) in r.traces[0].events.iter().zip(&r.traces[1].events) {
        println!(
            "  {:>9.3} s {:>9.3} s  {} {}",
            b.virtual_at.as_secs_f64(),
            c.virtual_at.as_secs_f64(),
            b.node,
            b.kind
        );
    }
    if let Some(m) = &r.fidelity.first_mismatch {
        println!("  first mismatch: {m}");
        for (name, t) in ["baseline", "compressed"].iter().zip(&r.traces) {
            println!("  full {name} trace (k={}):", t.scale);
            for e in &t.events {
                println!(
                    "    {:>9.3} s  {} {} {}",
                    e.virtual_at.as_secs_f64(),
                    e.node,
                    e.kind,
                    e.detail
                );
            }
        }
    }
    for t in &r.clamped_timers {
        println!("  clamped/unsupported timer shaping this scenario: {t}");
    }
}

async fn faithful(s: Scenario, k: f64) -> anyhow::Result<()> {
    skip_if!(bpf_unavailable());
    let r = patchbay::scenario::verify(s, k, 1.0, Size::Default).await?;
    report(&r);
    assert!(
        r.baseline.events >= 2,
        "{s}: the baseline must have events to compare"
    );
    assert!(
        r.sequence_match,
        "{s} k={k}: event sequences differ: {:?}",
        r.fidelity.first_mismatch
    );
    assert!(
        r.pass,
        "{s} k={k}: median {:.2}% (limit 5%), max {:.2}% (limit 15%)",
        r.timing_error.median * 100.0,
        r.timing_error.max * 100.0
    );
    // Compression must also be worth it: at least half of k.
    assert!(
        r.speedup > k / 2.0,
        "{s} k={k}: speedup only {:.1}",
        r.speedup
    );
    Ok(())
}

#[tokio::test]
async fn timing_syn_blackhole_k10() -> anyhow::Result<()> {
    faithful(Scenario::SynBlackhole, 10.0).await
}

#[tokio::test]
async fn timing_syn_blackhole_k20() -> anyhow::Result<()> {
    faithful(Scenario::SynBlackhole, 20.0).await
}

#[tokio::test]
async fn timing_data_blackhole_k10() -> anyhow::Result<()> {
    faithful(Scenario::DataBlackhole, 10.0).await
}

#[tokio::test]
async fn timing_keepalive_dead_peer_k10() -> anyhow::Result<()> {
    faithful(Scenario::KeepaliveDeadPeer, 10.0).await
}

#[tokio::test]
async fn timing_nat_udp_expiry_k10() -> anyhow::Result<()> {
    faithful(Scenario::NatUdpExpiry, 10.0).await
}

#[tokio::test]
async fn timing_neighbor_failure_k10() -> anyhow::Result<()> {
    faithful(Scenario::NeighborFailure, 10.0).await
}

#[tokio::test]
async fn timing_fin_timeout_k10() -> anyhow::Result<()> {
    faithful(Scenario::FinTimeout, 10.0).await
}

#[tokio::test]
async fn timing_app_timer_k10() -> anyhow::Result<()> {
    faithful(Scenario::AppTimer, 10.0).await
}

/// The checker cannot pass vacuously: a real baseline trace with one event
/// dropped, or one time doubled, fails.
#[tokio::test]
async fn timing_checker_rejects_altered_traces() -> anyhow::Result<()> {
    skip_if!(bpf_unavailable());
    let base = Scenario::SynBlackhole.run(10.0, Size::Default).await?;
    assert!(base.events.len() >= 3, "trace too short: {base:?}");
    assert!(fidelity::check(&base, &base).pass, "a trace matches itself");
    let mut dropped = base.clone();
    dropped.events.remove(1);
    let f = fidelity::check(&base, &dropped);
    println!("dropped event: {f:?}");
    assert!(!f.pass && !f.sequence_match);
    let mut doubled = base.clone();
    let last = doubled.events.len() - 1;
    doubled.events[last].virtual_at *= 2;
    let f = fidelity::check(&base, &doubled);
    println!("doubled time: median {} max {}", f.median, f.max);
    assert!(!f.pass && f.max > 0.9);
    Ok(())
}
