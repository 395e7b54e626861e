//! Jiffy-aware choices for the TCP timers: initial RTO, rto_min, rto_max, delayed ACK and
//! the give-up deadline (`TCP_USER_TIMEOUT`).

use serde::{Deserialize, Serialize};

use super::caps::{KernelCaps, SysctlDefaults};
use super::model::{ArmContext, JiffyModel};
use super::scale::TimeScale;
use super::schedule::{
    Deadline, EstablishedScenario, EventKind, Fidelity, Prediction, SynScenario, compare,
    predict_established, predict_syn,
};
use super::timers::{
    Mechanism, Status, TimerEntry, TimerInputs, Unit, entry, status_for, unsupported,
};

/// `tcp_rto_max_ms` and `TCP_RTO_MAX_MS` accept 1000..=120000 ms.
const RTO_MAX_FLOOR_MS: u64 = 1000;

/// The real-time (k = 1) TCP schedules a plan is measured against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpBaseline {
    /// SYN-to-blackhole scenario at k = 1.
    pub syn: SynScenario,
    /// Its predicted schedule.
    pub syn_prediction: Prediction,
    /// Established-blackhole scenario at k = 1.
    pub established: EstablishedScenario,
    /// Its predicted schedule.
    pub established_prediction: Prediction,
    /// `tcp_rto_min_us` default.
    pub rto_min_us: u64,
    /// `tcp_rto_max_ms` default.
    pub rto_max_ms: u64,
    /// The kernel's default give-up deadline in ms.
    pub deadline_ms: u64,
}

impl TcpBaseline {
    /// Builds the baseline from a fresh namespace's defaults and the lab's overrides.
    pub fn new(model: &JiffyModel, defaults: &SysctlDefaults, inputs: &TimerInputs) -> Self {
        let rto_min_us = defaults
            .get_u64("net/ipv4/tcp_rto_min_us")
            .unwrap_or(200_000);
        let rto_max_ms = defaults
            .get_u64("net/ipv4/tcp_rto_max_ms")
            .unwrap_or(120_000);
        let rto_max = model.msecs_to_jiffies(rto_max_ms);
        let syn_retries = inputs
            .syn_retries
            .or_else(|| {
                defaults
                    .get_u64("net/ipv4/tcp_syn_retries")
                    .map(|v| v as u32)
            })
            .unwrap_or(6);
        let linear_timeouts = defaults
            .get_u64("net/ipv4/tcp_syn_linear_timeouts")
            .map_or(0, |v| v as u32);
        let retries2 = inputs
            .tcp_retries2
            .or_else(|| defaults.get_u64("net/ipv4/tcp_retries2").map(|v| v as u32))
            .unwrap_or(15);
        let syn = SynScenario {
            initial_rto: model.tcp_timeout_init(),
            syn_retries,
            linear_timeouts,
            rto_max,
        };
        let established = EstablishedScenario {
            rto: connection_rto(
                model,
                model.usecs_to_jiffies(rto_min_us),
                inputs.rtt_us,
                rto_max,
            ),
            loss_probe: inputs.loss_probe,
            retries2,
            rto_max,
            deadline: Deadline::KernelDefault,
        };
        Self {
            syn_prediction: predict_syn(model, &syn),
            established_prediction: predict_established(model, &established),
            syn,
            established,
            rto_min_us,
            rto_max_ms,
            deadline_ms: model.tcp_model_timeout_ms(retries2, model.tcp_rto_min(), rto_max),
        }
    }
}

/// The RTO of a connection with a sub-jiffy RTT: `usecs_to_jiffies(srtt + rttvar)` with
/// `rttvar = max(2 x rtt, rto_min)`, bounded by the RTO maximum.
pub fn connection_rto(model: &JiffyModel, rto_min_jiffies: u64, rtt_us: u64, rto_max: u64) -> u64 {
    let rto_min_us = model.jiffies_to_usecs(rto_min_jiffies);
    let rto_us = rtt_us + (2 * rtt_us).max(rto_min_us);
    model.usecs_to_jiffies(rto_us).min(rto_max).max(1)
}

/// Where the user timeout was placed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// `TCP_USER_TIMEOUT` in ms.
    pub user_timeout_ms: u64,
    /// Safe window (ms): after the last retransmission the baseline makes (plus a jiffy),
    /// before the next natural firing (minus a jiffy).
    pub window_ms: (f64, f64),
    /// False when the window is empty: the retransmission count may differ.
    pub safe: bool,
}

/// Places `TCP_USER_TIMEOUT` between retransmit firings so that the compressed connection
/// makes as many retransmissions as the baseline, as close as possible to the baseline's
/// failure time / k.
pub fn place_user_timeout(
    model: &JiffyModel,
    k: f64,
    compressed: &EstablishedScenario,
    baseline: &Prediction,
) -> Placement {
    let n = baseline.count(EventKind::Retransmit);
    let natural = predict_established(
        model,
        &EstablishedScenario {
            deadline: Deadline::Never {
                max_retransmits: n as u32 + 1,
            },
            ..*compressed
        },
    );
    let firings: Vec<_> = natural
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Retransmit)
        .collect();
    let jiffy = model.jiffy_ms();
    // The kernel counts the user timeout from the first RTO retransmission
    // (retrans_stamp, see simulate_established): the window and the target
    // are shifted from write-relative to stamp-relative times.
    let stamp_ms = firings.first().map_or(0.0, |e| e.expected_ms);
    let lo = match n {
        0 => jiffy,
        _ => firings
            .get(n - 1)
            .map_or(jiffy, |e| e.latest_ms + jiffy + 1.0),
    };
    let hi = firings
        .get(n)
        .map_or(f64::INFINITY, |e| e.earliest_ms - jiffy)
        - stamp_ms;
    let lo = (lo - stamp_ms).max(jiffy);
    let safe = lo <= hi;
    let clamp = |u: f64| if safe { u.clamp(lo, hi) } else { lo };
    let target = baseline.last().map_or(0.0, |e| e.expected_ms) / k;
    let mut u = clamp(target - stamp_ms);
    for _ in 0..4 {
        let p = predict_established(
            model,
            &EstablishedScenario {
                deadline: Deadline::UserTimeoutMs(u.round() as u64),
                ..*compressed
            },
        );
        let fail = p.last().map_or(u, |e| e.expected_ms);
        u = clamp(u - (fail - target));
    }
    // The natural firing that should expire jitters by a jiffy; placed right
    // at it, the deadline races it and sometimes allows one retransmission
    // too many. Two jiffies earlier, the kernel's clamp of the RTO timer to
    // the user timeout (tcp_clamp_rto_to_user_timeout) fires the last timer
    // just before the natural one and it expires there.
    let u = if safe { (u - 2.0 * jiffy).max(lo) } else { u };
    Placement {
        user_timeout_ms: (u.round() as u64).max(1),
        window_ms: (lo, hi),
        safe,
    }
}

/// The TCP part of a plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct TcpDecisions {
    pub entries: Vec<TimerEntry>,
    pub sysctls: Vec<(String, String)>,
    pub timeout_init_jiffies: u32,
    pub rto_min_us: u32,
    pub delack_max_us: u32,
    pub rto_max_ms: u32,
    pub user_timeout_ms: u32,
    pub syn: Option<Fidelity>,
    pub established: Option<Fidelity>,
}

/// Chooses every TCP timer for scale `k`.
pub(crate) fn plan_tcp(
    model: &JiffyModel,
    k: TimeScale,
    caps: &KernelCaps,
    base: &TcpBaseline,
    inputs: &TimerInputs,
) -> TcpDecisions {
    let bpf_ok = !inputs.sysctl_only && caps.bpf.usable();
    let no_bpf = if inputs.sysctl_only {
        "sysctl-only mode (no BPF, opted in)"
    } else {
        "needs the sock_ops program (CAP_BPF/CAP_SYS_ADMIN, cgroup v2, netns cookie)"
    };
    let mut d = TcpDecisions::default();

    // --- rto_max: tcp_rto_max_ms, else TCP_RTO_MAX_MS via BPF, else unscaled.
    let rto_max_ms = plan_rto_max(k, caps, base, bpf_ok, no_bpf, &mut d);
    let rto_max = model.msecs_to_jiffies(rto_max_ms);

    // --- initial RTO (SYN), via the TIMEOUT_INIT reply.
    let syn_default = base.syn.initial_rto;
    let syn_rto = if bpf_ok && caps.bpf.timeout_init && !k.is_real_time() {
        let (rto, fid) = choose_initial_rto(model, k.get(), base, rto_max);
        let rounded = status_for(syn_default, k.divide(syn_default as f64), rto, rto, "");
        let mut e = entry(
            "tcp.initial_rto".into(),
            syn_default,
            k,
            rto,
            Unit::Jiffies,
            Mechanism::Bpf {
                field: "timeout_init_jiffies".into(),
            },
            rounded,
        );
        e.predicted_error_pct = Some(fid.max_pct);
        e.note = format!(
            "best reproduces the k=1 SYN schedule incl. wheel lateness: median {:.1}%, max {:.1}%",
            fid.median_pct, fid.max_pct
        );
        d.entries.push(e);
        d.timeout_init_jiffies = rto as u32;
        rto
    } else {
        d.entries.push(real_time_or_unsupported(
            "tcp.initial_rto",
            syn_default,
            k,
            Unit::Jiffies,
            "needs BPF_SOCK_OPS_TIMEOUT_INIT; SYN retransmits run in real time",
            no_bpf,
        ));
        syn_default
    };
    let syn = SynScenario {
        initial_rto: syn_rto,
        rto_max,
        ..base.syn
    };
    d.syn = Some(compare(
        &base.syn_prediction,
        &predict_syn(model, &syn),
        k.get(),
    ));

    // --- rto_min and the give-up deadline, chosen together.
    plan_rto_min_and_deadline(
        model, k, caps, base, inputs, rto_max, bpf_ok, no_bpf, &mut d,
    );

    // --- delayed ACK maximum.
    let delack_default_us = model.jiffies_to_usecs(model.tcp_delack_max());
    if bpf_ok && caps.bpf.delack_max && !k.is_real_time() {
        let nearest = model.best_jiffies(model.tcp_delack_max(), k.get(), ArmContext::Process);
        let applied_j = nearest.clamp(model.tcp_timeout_min(), model.tcp_delack_max());
        let applied = model.jiffies_to_usecs(applied_j);
        let status = status_for(
            delack_default_us,
            k.divide(delack_default_us as f64),
            applied,
            model.jiffies_to_usecs(nearest),
            "TCP_BPF_DELACK_MAX accepts 2 jiffies..200 ms",
        );
        let mut e = entry(
            "tcp.delack_max".into(),
            delack_default_us,
            k,
            applied,
            Unit::Microseconds,
            Mechanism::Bpf {
                field: "delack_max_us".into(),
            },
            status,
        );
        e.predicted_error_pct = Some(model.timer_error_pct(
            model.tcp_delack_max(),
            applied_j,
            k.get(),
            ArmContext::Process,
        ));
        e.note = "the 40 ms TCP_ATO_MIN is fixed; the delayed-ACK timeout is min(ato, delack_max)"
            .into();
        d.entries.push(e);
        d.delack_max_us = applied as u32;
    } else {
        d.entries.push(real_time_or_unsupported(
            "tcp.delack_max",
            delack_default_us,
            k,
            Unit::Microseconds,
            "needs bpf_setsockopt(TCP_BPF_DELACK_MAX)",
            no_bpf,
        ));
    }
    d
}

fn plan_rto_max(
    k: TimeScale,
    caps: &KernelCaps,
    base: &TcpBaseline,
    bpf_ok: bool,
    no_bpf: &str,
    d: &mut TcpDecisions,
) -> u64 {
    let default = base.rto_max_ms;
    let rounded = k.divide(default as f64).round() as u64;
    let applied = rounded.max(RTO_MAX_FLOOR_MS);
    let status = status_for(
        default,
        k.divide(default as f64),
        applied,
        rounded,
        "minimum 1000 ms",
    );
    let mechanism = if k.is_real_time() {
        Mechanism::None
    } else if caps.sysctls.tcp_rto_max_ms {
        let key = "net/ipv4/tcp_rto_max_ms".to_string();
        d.sysctls.push((key.clone(), applied.to_string()));
        Mechanism::Sysctl { key }
    } else if bpf_ok && caps.bpf.rto_max_ms_sockopt {
        d.rto_max_ms = applied as u32;
        Mechanism::Bpf {
            field: "rto_max_ms".into(),
        }
    } else {
        d.entries.push(unsupported(
            "tcp.rto_max",
            default,
            k,
            Unit::Milliseconds,
            &format!("no tcp_rto_max_ms sysctl (6.15+) and no TCP_RTO_MAX_MS sockopt ({no_bpf})"),
        ));
        return default;
    };
    let status = if k.is_real_time() {
        Status::Exact
    } else {
        status
    };
    d.entries.push(entry(
        "tcp.rto_max".into(),
        default,
        k,
        if k.is_real_time() { default } else { applied },
        Unit::Milliseconds,
        mechanism,
        status,
    ));
    if k.is_real_time() { default } else { applied }
}

/// Picks the initial RTO (jiffies) whose predicted SYN schedule best matches the baseline.
pub fn choose_initial_rto(
    model: &JiffyModel,
    k: f64,
    base: &TcpBaseline,
    rto_max: u64,
) -> (u64, Fidelity) {
    let naive = base.syn.initial_rto as f64 / k;
    let lo = ((naive * 0.7).floor() as u64).saturating_sub(1).max(1);
    let hi = (naive * 1.15).ceil() as u64 + 1;
    let mut best: Option<(u64, Fidelity)> = None;
    for rto in lo..=hi {
        let scn = SynScenario {
            initial_rto: rto,
            rto_max,
            ..base.syn
        };
        let fid = compare(&base.syn_prediction, &predict_syn(model, &scn), k);
        if best
            .as_ref()
            .is_none_or(|(_, b)| fid.badness() < b.badness())
        {
            best = Some((rto, fid));
        }
    }
    best.unwrap_or_else(|| {
        let fid = compare(&base.syn_prediction, &base.syn_prediction, 1.0);
        (base.syn.initial_rto, fid)
    })
}

#[expect(clippy::too_many_arguments, reason = "internal step of plan_tcp")]
fn plan_rto_min_and_deadline(
    model: &JiffyModel,
    k: TimeScale,
    caps: &KernelCaps,
    base: &TcpBaseline,
    inputs: &TimerInputs,
    rto_max: u64,
    bpf_ok: bool,
    no_bpf: &str,
    d: &mut TcpDecisions,
) {
    let default_j = model.usecs_to_jiffies(base.rto_min_us);
    let use_sysctl = caps.sysctls.tcp_rto_min_us;
    let use_bpf = !use_sysctl && bpf_ok && caps.bpf.rto_min;
    let with_ut = bpf_ok && caps.bpf.user_timeout;
    let (min_j, limit) = if use_sysctl {
        (1, "tcp_rto_min_us rounds up to whole jiffies")
    } else {
        (
            model.tcp_timeout_min(),
            "TCP_BPF_RTO_MIN accepts 2 jiffies..200 ms",
        )
    };
    let naive = k.divide(default_j as f64);
    let scaled = !k.is_real_time() && (use_sysctl || use_bpf);
    let candidates: Vec<u64> = if scaled {
        let lo = (naive.floor() as u64).saturating_sub(2).max(min_j);
        let hi = (naive.ceil() as u64 + 1).min(default_j).max(lo);
        (lo..=hi).collect()
    } else {
        vec![default_j]
    };
    let mut best: Option<(u64, Option<Placement>, Fidelity)> = None;
    for &rto_min_j in &candidates {
        let mut scn = EstablishedScenario {
            rto: connection_rto(model, rto_min_j, inputs.rtt_us, rto_max),
            rto_max,
            ..base.established
        };
        let placement = (with_ut && !k.is_real_time())
            .then(|| place_user_timeout(model, k.get(), &scn, &base.established_prediction));
        if let Some(p) = placement {
            scn.deadline = Deadline::UserTimeoutMs(p.user_timeout_ms);
        }
        let fid = compare(
            &base.established_prediction,
            &predict_established(model, &scn),
            k.get(),
        );
        if best
            .as_ref()
            .is_none_or(|(_, _, b)| fid.badness() < b.badness())
        {
            best = Some((rto_min_j, placement, fid));
        }
    }
    let Some((rto_min_j, placement, fid)) = best else {
        return;
    };
    let default_us = base.rto_min_us;
    if scaled {
        let applied_us = model.jiffies_to_usecs(rto_min_j);
        let target_us = k.divide(default_us as f64);
        let status = if target_us < model.jiffies_to_usecs(min_j) as f64 {
            Status::Clamped {
                effective_k: default_us as f64 / applied_us as f64,
                reason: limit.to_string(),
            }
        } else {
            status_for(default_us, target_us, applied_us, applied_us, limit)
        };
        let mechanism = if use_sysctl {
            let key = "net/ipv4/tcp_rto_min_us".to_string();
            d.sysctls.push((key.clone(), applied_us.to_string()));
            Mechanism::Sysctl { key }
        } else {
            d.rto_min_us = applied_us as u32;
            Mechanism::Bpf {
                field: "rto_min_us".into(),
            }
        };
        let mut e = entry(
            "tcp.rto_min".into(),
            default_us,
            k,
            applied_us,
            Unit::Microseconds,
            mechanism,
            status,
        );
        e.predicted_error_pct = Some(fid.max_pct);
        e.note = format!(
            "{rto_min_j} jiffy(ies), chosen for fidelity, not default/k: the RTT adds a jiffy to the \
             RTO and short timers fire a jiffy late; established schedule median {:.1}%, max {:.1}%",
            fid.median_pct, fid.max_pct
        );
        d.entries.push(e);
    } else {
        d.entries.push(real_time_or_unsupported(
            "tcp.rto_min",
            default_us,
            k,
            Unit::Microseconds,
            "no tcp_rto_min_us sysctl (6.11+) and no TCP_BPF_RTO_MIN",
            no_bpf,
        ));
    }
    match placement {
        Some(p) => {
            let mut e = entry(
                "tcp.user_timeout".into(),
                base.deadline_ms,
                k,
                p.user_timeout_ms,
                Unit::Milliseconds,
                Mechanism::Bpf {
                    field: "user_timeout_ms".into(),
                },
                status_for(
                    base.deadline_ms,
                    k.divide(base.deadline_ms as f64),
                    p.user_timeout_ms,
                    p.user_timeout_ms,
                    "",
                ),
            );
            e.predicted_error_pct = Some(fid.max_pct);
            e.note = if p.safe {
                format!(
                    "default deadline (200 ms base x tcp_retries2={}) / k, placed between \
                     retransmit firings ({:.0}..{:.0} ms) so the retransmit count stays {}",
                    base.established.retries2,
                    p.window_ms.0,
                    p.window_ms.1,
                    base.established_prediction.count(EventKind::Retransmit)
                )
            } else {
                "no gap between retransmit firings at this k: the retransmit count may differ"
                    .to_string()
            };
            d.entries.push(e);
            d.user_timeout_ms = p.user_timeout_ms.min(u64::from(u32::MAX)) as u32;
        }
        None => d.entries.push(real_time_or_unsupported(
            "tcp.user_timeout",
            base.deadline_ms,
            k,
            Unit::Milliseconds,
            "needs bpf_setsockopt(TCP_USER_TIMEOUT); the give-up deadline stays \
             200 ms base x tcp_retries2 in real time",
            no_bpf,
        )),
    }
    d.established = Some(fid);
}

/// At k = 1 a timer is trivially exact; otherwise it is unsupported for `reason`.
fn real_time_or_unsupported(
    name: &str,
    default: u64,
    k: TimeScale,
    unit: Unit,
    reason: &str,
    why_no_bpf: &str,
) -> TimerEntry {
    if k.is_real_time() {
        return entry(
            name.into(),
            default,
            k,
            default,
            unit,
            Mechanism::None,
            Status::Exact,
        );
    }
    unsupported(name, default, k, unit, &format!("{reason} ({why_no_bpf})"))
}

#[cfg(test)]
mod tests;
