//! Unit tests of the TCP timer plan.

use super::*;
use crate::compress::caps::BpfFeatures;

fn setup() -> (JiffyModel, SysctlDefaults, TimerInputs) {
    let inputs = TimerInputs {
        syn_retries: Some(3),
        tcp_retries2: Some(5),
        ..TimerInputs::default()
    };
    (
        JiffyModel::new(250).expect("hz"),
        SysctlDefaults::linux_6_18(),
        inputs,
    )
}

#[test]
fn baseline_uses_defaults_and_overrides() {
    let (m, d, i) = setup();
    let b = TcpBaseline::new(&m, &d, &i);
    assert_eq!(b.syn.initial_rto, 250);
    assert_eq!(b.syn.linear_timeouts, 4);
    assert_eq!(b.established.rto, 51);
    assert_eq!(b.deadline_ms, 12_600);
}

#[test]
fn picks_12_jiffies_at_k20() {
    let (m, d, i) = setup();
    let b = TcpBaseline::new(&m, &d, &i);
    let (rto, fid) = choose_initial_rto(&m, 20.0, &b, m.msecs_to_jiffies(6000));
    assert_eq!(rto, 12);
    assert!(fid.is_faithful(), "{fid:?}");
}

#[test]
fn user_timeout_lands_between_firings_at_k10() {
    let (m, d, i) = setup();
    let b = TcpBaseline::new(&m, &d, &i);
    let scn = EstablishedScenario {
        rto: connection_rto(&m, 4, i.rtt_us, 3000),
        rto_max: 3000,
        ..b.established
    };
    let p = place_user_timeout(&m, 10.0, &scn, &b.established_prediction);
    assert!(p.safe, "{p:?}");
    // 12600/k = 1260 ms lies in the window, like the measured run that kept the count.
    assert!(p.window_ms.0 < 1260.0 && 1260.0 < p.window_ms.1, "{p:?}");
    let u = p.user_timeout_ms as f64;
    assert!(p.window_ms.0 <= u && u <= p.window_ms.1, "{p:?}");
}

#[test]
fn plan_tcp_k10_matches_measured_choice() {
    let (m, d, i) = setup();
    let caps = KernelCaps::given(250, "6.18", &d, BpfFeatures::all());
    let b = TcpBaseline::new(&m, &d, &i);
    let k = TimeScale::new(10.0).expect("k");
    let t = plan_tcp(&m, k, &caps, &b, &i);
    // rto_min one jiffy below 200 ms / k (16 ms), like the measured improvement.
    assert!(
        t.sysctls
            .contains(&("net/ipv4/tcp_rto_min_us".into(), "16000".into())),
        "{:?}",
        t.sysctls
    );
    assert_eq!(t.timeout_init_jiffies, 25);
    let est = t.established.expect("established");
    assert!(est.is_faithful(), "{est:?}");
    assert!(t.user_timeout_ms > 1000 && t.user_timeout_ms < 1400);
}

#[test]
fn sysctl_only_marks_bpf_timers_unsupported() {
    let (m, d, mut i) = setup();
    i.sysctl_only = true;
    let caps = KernelCaps::given(250, "6.18", &d, BpfFeatures::all());
    let b = TcpBaseline::new(&m, &d, &i);
    let t = plan_tcp(&m, TimeScale::new(20.0).expect("k"), &caps, &b, &i);
    for name in ["tcp.initial_rto", "tcp.user_timeout", "tcp.delack_max"] {
        let e = t.entries.iter().find(|e| e.name == name).expect(name);
        assert!(matches!(e.status, Status::Unsupported { .. }), "{e:?}");
        assert_eq!(e.applied, e.default);
    }
    assert_eq!((t.timeout_init_jiffies, t.user_timeout_ms), (0, 0));
    assert!(!t.syn.expect("syn").is_faithful());
}

#[test]
fn bpf_rto_min_clamps_at_two_jiffies() {
    let (m, mut d, i) = setup();
    d.values.remove("net/ipv4/tcp_rto_min_us");
    let caps = KernelCaps::given(250, "6.6", &d, BpfFeatures::all());
    let b = TcpBaseline::new(&m, &d, &i);
    let t = plan_tcp(&m, TimeScale::new(100.0).expect("k"), &caps, &b, &i);
    assert_eq!(t.rto_min_us, 8000);
    let e = t
        .entries
        .iter()
        .find(|e| e.name == "tcp.rto_min")
        .expect("rto_min");
    assert!(
        matches!(e.status, Status::Clamped { effective_k, .. } if effective_k == 25.0),
        "{e:?}"
    );
}
