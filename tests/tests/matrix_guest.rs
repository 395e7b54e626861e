//! Smoke tests for the kernel matrix's guest environment (`cargo xtask kernel-matrix`).
//!
//! Each test works in a fresh network namespace made by `unshare -n` (needs root and
//! CAP_SYS_ADMIN), so the host's own namespace is never touched. A missing kernel feature is
//! reported with `PATCHBAY-SKIP: <reason>`.

use std::process::Command;

/// Runs a shell snippet in a fresh network namespace; returns (success, stdout, stderr).
fn in_fresh_netns(script: &str) -> (bool, String, String) {
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", script])
        .output()
        .expect("spawning unshare (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether tc/ip's error says the kernel lacks the feature (rather than a real failure).
fn kernel_lacks(stderr: &str) -> bool {
    let e = stderr.to_lowercase();
    e.contains("unknown") || e.contains("not supported") || e.contains("no such file")
}

#[test]
fn netem_qdisc_in_fresh_netns() {
    let (ok, out, err) = in_fresh_netns(
        "ip link set lo up && tc qdisc add dev lo root netem delay 1ms && tc qdisc show dev lo",
    );
    if !ok && kernel_lacks(&err) {
        println!(
            "PATCHBAY-SKIP: netem qdisc unavailable (CONFIG_NET_SCH_NETEM): {}",
            err.trim()
        );
        return;
    }
    assert!(ok, "tc qdisc add netem failed: {err}");
    assert!(
        out.contains("netem") && out.contains("delay 1ms"),
        "unexpected qdisc: {out}"
    );
}

#[test]
fn veth_pair_in_fresh_netns() {
    let (ok, out, err) = in_fresh_netns(
        "ip link add pb0 type veth peer name pb1 && ip link set pb0 up && ip link set pb1 up \
         && ip -o link show pb1",
    );
    if !ok && kernel_lacks(&err) {
        println!(
            "PATCHBAY-SKIP: veth unavailable (CONFIG_VETH): {}",
            err.trim()
        );
        return;
    }
    assert!(ok, "creating a veth pair failed: {err}");
    assert!(out.contains("pb1@pb0"), "unexpected link: {out}");
}

#[test]
fn deliberate_failure_when_asked() {
    if std::env::var_os("PATCHBAY_MATRIX_SELFTEST_FAIL").is_none() {
        println!(
            "PATCHBAY-SKIP: self-test of the matrix's failure path; set \
             PATCHBAY_MATRIX_SELFTEST_FAIL=1 to make it fail"
        );
        return;
    }
    panic!("deliberate failure (PATCHBAY_MATRIX_SELFTEST_FAIL is set)");
}
