//! `patchbay verify --mode virtual` end to end: a scenario in the
//! User-Mode-Linux guest in virtual time against a real-clock run on the
//! same guest kernel. Needs root and the kernel of `cargo xtask build-uml`;
//! skips with the reason otherwise.

use std::path::Path;

use patchbay::scenario::{Mode, Scenario, Size, virt};

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces inside the guest's private mount namespace)".into());
    }
    patchbay::vt::find_uml_binary()
        .err()
        .map(|e| format!("no UML kernel ({e}); build it with `cargo xtask build-uml`"))
}

/// Timing-sensitive (the baseline runs in real time): serial nextest group.
#[tokio::test]
async fn timing_virtual_syn_blackhole_matches_a_real_clock_guest_run() {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let cli = Path::new(env!("CARGO_BIN_EXE_patchbay"));
    let r = virt::verify_virtual(cli, Scenario::SynBlackhole, Size::Default)
        .await
        .expect("virtual verify");
    println!(
        "real clock {:.2} s, virtual {:.3} s (boot {:?} s), speedup {:.1}x, max dt {:.1} ms, repeat dt {:?} ms",
        r.baseline.wall_s,
        r.compressed.wall_s,
        r.compressed.boot_wall_s,
        r.speedup,
        r.timing_error.max_abs_ms,
        r.repeat_max_abs_ms
    );
    assert_eq!(r.mode, Mode::Virtual);
    assert!(r.sequence_match, "{:?}", r.fidelity.first_mismatch);
    assert!(r.pass, "{:?}", r.fidelity);
    // The guest clock runs the whole scenario (about 7 s) in virtual time.
    let virt_s = r.compressed.virtual_s.expect("guest clock duration");
    assert!(
        virt_s > 5.0,
        "virtual run lasted {virt_s} s on the guest clock"
    );
    assert!(r.speedup > 3.0, "speedup {}", r.speedup);
    // Virtual time is deterministic: a second run repeats every event time.
    let repeat = r.repeat_max_abs_ms.expect("repeat measured");
    assert!(
        repeat <= 1.0,
        "a second virtual run differed by {repeat} ms"
    );
}
