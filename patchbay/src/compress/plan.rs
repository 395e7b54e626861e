//! The compression plan of one lab: every timer's applied value, mechanism and status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::caps::{KernelCaps, NeighFamily, SysctlDefaults};
use super::external::{ScaledConntrack, ScaledLink, scale_conntrack, scale_link};
use super::model::{JiffyModel, ModelError};
use super::scale::{MAX_TIME_SCALE, TimeScale};
use super::schedule::Fidelity;
use super::tcp::{TcpBaseline, plan_tcp};
use super::timers::{
    Mechanism, TimerEntry, TimerInputs, Unit, entry, fixed, scale_ms_jiffies, scale_whole,
    secs_error,
};
use crate::{LinkTiming, native::ConntrackTimeouts};

/// Why a plan could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The kernel caps carry an impossible HZ.
    #[error("cannot plan timer compression: {0}")]
    Model(#[from] ModelError),
}

/// Values for the sock_ops program's per-netns settings. Plain u32s, 0 = don't set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfTargets {
    /// Reply to `BPF_SOCK_OPS_TIMEOUT_INIT`, in jiffies.
    pub timeout_init_jiffies: u32,
    /// `TCP_BPF_RTO_MIN` in µs (0 when the `tcp_rto_min_us` sysctl does the job).
    pub rto_min_us: u32,
    /// `TCP_BPF_DELACK_MAX` in µs.
    pub delack_max_us: u32,
    /// `TCP_RTO_MAX_MS` (0 when the `tcp_rto_max_ms` sysctl does the job).
    pub rto_max_ms: u32,
    /// `TCP_USER_TIMEOUT` in ms for established sockets without their own.
    pub user_timeout_ms: u32,
    /// k x 1000, for scaling application-set socket options.
    pub scale_milli: u32,
}

/// Predicted fidelity of the TCP scenarios at the plan's k.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TcpFidelity {
    /// SYN to a blackhole.
    pub syn: Fidelity,
    /// Established connection, then blackhole.
    pub established: Fidelity,
}

/// A per-interface setting; the key is completed with the interface name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IfaceTemplate {
    /// `ipv4/neigh`, `ipv6/neigh` or `ipv6/conf`.
    dir: String,
    key: String,
    value: String,
}

/// The compression plan of one lab at one k. Pure data: compute it with
/// [`Plan::compute`], apply it with [`Plan::sysctls_for_netns`],
/// [`Plan::sysctls_for_iface`] and [`Plan::bpf`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    scale: TimeScale,
    hz: u32,
    sysctl_only: bool,
    entries: Vec<TimerEntry>,
    tcp: TcpFidelity,
    netns_sysctls: BTreeMap<String, String>,
    iface: Vec<IfaceTemplate>,
    bpf: BpfTargets,
    nat: BTreeMap<String, u64>,
}

/// Whole-second and ms sysctls of a namespace: (key, unit, minimum, maximum).
const NETNS_TIMERS: &[(&str, Unit, u64, Option<u64>)] = &[
    (
        "net/ipv4/tcp_keepalive_time",
        Unit::Seconds,
        1,
        Some(32_767),
    ),
    (
        "net/ipv4/tcp_keepalive_intvl",
        Unit::Seconds,
        1,
        Some(32_767),
    ),
    ("net/ipv4/tcp_fin_timeout", Unit::Seconds, 1, None),
    (
        "net/ipv4/tcp_comp_sack_delay_ns",
        Unit::Nanoseconds,
        1,
        None,
    ),
    ("net/ipv4/tcp_tw_reuse_delay", Unit::Milliseconds, 1, None),
    (
        "net/ipv6/conf/default/router_solicitation_delay",
        Unit::Seconds,
        1,
        None,
    ),
    (
        "net/ipv6/conf/default/router_solicitation_interval",
        Unit::Seconds,
        1,
        None,
    ),
    (
        "net/ipv6/conf/default/router_solicitation_max_interval",
        Unit::Seconds,
        1,
        None,
    ),
];

/// Counts that are never scaled.
const COUNTS: &[&str] = &[
    "net/ipv4/tcp_syn_retries",
    "net/ipv4/tcp_syn_linear_timeouts",
    "net/ipv4/tcp_synack_retries",
    "net/ipv4/tcp_retries1",
    "net/ipv4/tcp_retries2",
    "net/ipv4/tcp_orphan_retries",
    "net/ipv4/tcp_keepalive_probes",
    "net/ipv6/conf/default/dad_transmits",
    "net/ipv6/conf/default/router_solicitations",
];

/// Per-device neighbour timers: (key, unit). ms keys are stored in jiffies by the kernel.
const NEIGH_TIMERS: &[(&str, Unit)] = &[
    ("base_reachable_time_ms", Unit::Milliseconds),
    ("retrans_time_ms", Unit::Milliseconds),
    ("delay_first_probe_time", Unit::Seconds),
    ("gc_stale_time", Unit::Seconds),
    ("interval_probe_time_ms", Unit::Milliseconds),
];

impl Plan {
    /// Computes the plan for a lab at scale `k`.
    ///
    /// `caps` and `defaults` come from [`super::probe::probe_kernel`] (defaults are the
    /// values of a *fresh* network namespace: the plan scales the namespace's own
    /// defaults). At k = 1 every timer is exact and nothing is written.
    pub fn compute(
        scale: TimeScale,
        caps: &KernelCaps,
        defaults: &SysctlDefaults,
        inputs: &TimerInputs,
    ) -> Result<Plan, PlanError> {
        let model = JiffyModel::new(caps.hz)?;
        let baseline = TcpBaseline::new(&model, defaults, inputs);
        Ok(Self::compute_with(
            scale, caps, defaults, inputs, &model, &baseline,
        ))
    }

    fn compute_with(
        k: TimeScale,
        caps: &KernelCaps,
        defaults: &SysctlDefaults,
        inputs: &TimerInputs,
        model: &JiffyModel,
        baseline: &TcpBaseline,
    ) -> Plan {
        let real = k.is_real_time();
        let tcp = plan_tcp(model, k, caps, baseline, inputs);
        let mut entries = tcp.entries;
        let mut netns_sysctls: BTreeMap<String, String> = tcp.sysctls.into_iter().collect();

        // Whole-unit namespace sysctls, then every conntrack timeout.
        let conntrack = defaults
            .conntrack_timeout_keys()
            .map(|key| (key, Unit::Seconds, 1, None));
        let table = NETNS_TIMERS
            .iter()
            .map(|&(key, unit, min, max)| (key, unit, min, max));
        for (key, unit, min, max) in table.chain(conntrack) {
            let Some(default) = defaults.get_u64(key) else {
                continue;
            };
            let limit = match unit {
                Unit::Seconds => "whole seconds",
                _ => "kernel minimum",
            };
            let (applied, status) = scale_whole(default, k, min, max, limit);
            let mut e = entry(
                display_name(key),
                default,
                k,
                applied,
                unit,
                Mechanism::Sysctl {
                    key: key.to_string(),
                },
                status,
            );
            e.predicted_error_pct = Some(match unit {
                Unit::Seconds => secs_error(model, default, applied, k),
                _ => rel_error(default, applied, k),
            });
            if !real {
                netns_sysctls.insert(key.to_string(), applied.to_string());
            }
            entries.push(e);
        }
        for key in COUNTS {
            // Negative counts mean "unlimited" (router_solicitations = -1): nothing to list.
            if let Some(value) = defaults.get_i64(key).and_then(|v| u64::try_from(v).ok()) {
                entries.push(fixed(
                    &display_name(key),
                    value,
                    Unit::Count,
                    "a count, not a time",
                ));
            }
        }

        // Per-interface neighbour timers (no neigh.default in a child namespace).
        let mut iface = Vec::new();
        for family in [NeighFamily::V4, NeighFamily::V6] {
            for &(key, unit) in NEIGH_TIMERS {
                let Some(default) = defaults.neigh(family, key) else {
                    continue;
                };
                let (applied, status, err) = match unit {
                    Unit::Milliseconds => {
                        // neigh_timer_handler() re-arms at least HZ/100 jiffies later.
                        let min_j = if key == "retrans_time_ms" {
                            u64::from(caps.hz / 100).max(1)
                        } else {
                            1
                        };
                        scale_ms_jiffies(model, default, k, min_j, "stored in jiffies, minimum")
                    }
                    _ => {
                        let (a, s) = scale_whole(default, k, 1, None, "whole seconds");
                        (a, s, secs_error(model, default, a, k))
                    }
                };
                let dir = format!("{}/neigh", family.dir());
                let mut e = entry(
                    format!("neigh.{}.{key} (per interface)", family.dir()),
                    default,
                    k,
                    applied,
                    unit,
                    Mechanism::Sysctl {
                        key: format!("net/{dir}/<iface>/{key}"),
                    },
                    status,
                );
                e.predicted_error_pct = Some(err);
                if key == "base_reachable_time_ms" {
                    e.note = "the kernel randomises reachable time in [base/2, 3 base/2)".into();
                }
                entries.push(e);
                iface.push(IfaceTemplate {
                    dir,
                    key: key.to_string(),
                    value: applied.to_string(),
                });
            }
        }
        for (key, _, _, _) in NETNS_TIMERS
            .iter()
            .filter(|t| t.0.starts_with("net/ipv6/conf/"))
        {
            if let (Some(name), Some(value)) =
                (key.rsplit('/').next(), netns_sysctls.get(*key).cloned())
            {
                iface.push(IfaceTemplate {
                    dir: "ipv6/conf".into(),
                    key: name.to_string(),
                    value,
                });
            }
        }

        // Timeouts of the NAT configuration: scaled, not replaced.
        let mut nat = BTreeMap::new();
        for (name, timer) in &inputs.nat_timeouts {
            let (applied, status) =
                scale_whole(timer.default, k, timer.min, None, "consumer minimum");
            let mut e = entry(
                format!("nat.{name}"),
                timer.default,
                k,
                applied,
                timer.unit,
                Mechanism::Nft { what: name.clone() },
                status,
            );
            e.predicted_error_pct = Some(rel_error(timer.default, applied, k));
            entries.push(e);
            nat.insert(name.clone(), applied);
        }

        entries.extend(fixed_constants(model));
        for e in &mut entries {
            e.affects = affected_scenarios(&e.name)
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        let bpf = BpfTargets {
            timeout_init_jiffies: tcp.timeout_init_jiffies,
            rto_min_us: tcp.rto_min_us,
            delack_max_us: tcp.delack_max_us,
            rto_max_ms: tcp.rto_max_ms,
            user_timeout_ms: tcp.user_timeout_ms,
            scale_milli: if real || inputs.sysctl_only {
                0
            } else {
                k.milli()
            },
        };
        let unknown =
            || super::schedule::compare(&baseline.syn_prediction, &baseline.syn_prediction, 1.0);
        Plan {
            scale: k,
            hz: caps.hz,
            sysctl_only: inputs.sysctl_only,
            entries,
            tcp: TcpFidelity {
                syn: tcp.syn.unwrap_or_else(unknown),
                established: tcp.established.unwrap_or_else(unknown),
            },
            netns_sysctls: if real { BTreeMap::new() } else { netns_sysctls },
            iface: if real { Vec::new() } else { iface },
            bpf: if real { BpfTargets::default() } else { bpf },
            nat,
        }
    }

    /// The time scale.
    pub fn scale(&self) -> TimeScale {
        self.scale
    }

    /// The HZ the plan was computed for.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// Whether the plan was computed in the sysctl-only degraded mode.
    pub fn sysctl_only(&self) -> bool {
        self.sysctl_only
    }

    /// Every timer, in report order.
    pub fn entries(&self) -> &[TimerEntry] {
        &self.entries
    }

    /// The entry of one timer.
    pub fn entry(&self, name: &str) -> Option<&TimerEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Predicted TCP fidelity at this k.
    pub fn tcp_fidelity(&self) -> &TcpFidelity {
        &self.tcp
    }

    /// Sysctls to write in every lab namespace (keys relative to /proc/sys). Empty at k = 1.
    /// Requires the per-netns sysctls reported in [`KernelCaps::sysctls`].
    pub fn sysctls_for_netns(&self) -> BTreeMap<String, String> {
        self.netns_sysctls.clone()
    }

    /// Sysctls to write for interface `name` in a lab namespace, after it exists (also for
    /// interfaces added later). Dots in the name become `/` as in /proc/sys. Empty at k = 1.
    pub fn sysctls_for_iface(&self, name: &str) -> BTreeMap<String, String> {
        let dev = name.replace('.', "/");
        self.iface
            .iter()
            .map(|t| (format!("net/{}/{dev}/{}", t.dir, t.key), t.value.clone()))
            .collect()
    }

    /// Values for the sock_ops program (0 = don't set). All zero at k = 1.
    pub fn bpf(&self) -> BpfTargets {
        self.bpf
    }

    /// The scaled value of a NAT timeout passed in [`TimerInputs::nat_timeouts`], in its
    /// own unit.
    pub fn nat_timeout(&self, name: &str) -> Option<u64> {
        self.nat.get(name).copied()
    }

    /// Scales one link's delay, jitter and rate (see [`scale_link`]).
    pub fn link(&self, name: &str, link: &LinkTiming) -> ScaledLink {
        scale_link(name, link, self.scale)
    }

    /// Scales a router's own conntrack timeouts (see [`scale_conntrack`]). Write the
    /// result's sysctls in that router's namespace *after* [`Plan::sysctls_for_netns`].
    pub fn conntrack(&self, router: &str, timeouts: &ConntrackTimeouts) -> ScaledConntrack {
        scale_conntrack(router, timeouts, self.scale)
    }

    /// The largest k whose predicted SYN and established retransmit schedules stay within
    /// 5% median / 15% max error of the predicted k = 1 schedules, with identical event
    /// sequences. Walks [`LADDER`] and stops at the first failure (so every smaller rung is
    /// faithful too).
    pub fn largest_faithful_k(
        caps: &KernelCaps,
        defaults: &SysctlDefaults,
        inputs: &TimerInputs,
    ) -> Result<FaithfulK, PlanError> {
        let model = JiffyModel::new(caps.hz)?;
        let baseline = TcpBaseline::new(&model, defaults, inputs);
        let mut out = FaithfulK {
            k: 1.0,
            syn_k: 1.0,
            established_k: 1.0,
            ladder: Vec::new(),
        };
        let (mut syn_ok, mut est_ok) = (true, true);
        for k in ladder() {
            let Ok(scale) = TimeScale::new(k) else { break };
            let tcp = plan_tcp(&model, scale, caps, &baseline, inputs);
            let (Some(syn), Some(established)) = (tcp.syn, tcp.established) else {
                break;
            };
            syn_ok &= syn.is_faithful();
            est_ok &= established.is_faithful();
            if syn_ok {
                out.syn_k = k;
            }
            if est_ok {
                out.established_k = k;
            }
            out.ladder.push(LadderPoint {
                k,
                syn,
                established,
            });
            if !syn_ok && !est_ok {
                break;
            }
        }
        out.k = out.syn_k.min(out.established_k);
        Ok(out)
    }
}

/// Result of [`Plan::largest_faithful_k`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaithfulK {
    /// Largest faithful k for TCP (both scenarios).
    pub k: f64,
    /// Largest faithful k for the SYN scenario alone.
    pub syn_k: f64,
    /// Largest faithful k for the established scenario alone.
    pub established_k: f64,
    /// Every rung evaluated, in order.
    pub ladder: Vec<LadderPoint>,
}

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LadderPoint {
    /// The scale.
    pub k: f64,
    /// SYN scenario fidelity.
    pub syn: Fidelity,
    /// Established scenario fidelity.
    pub established: Fidelity,
}

/// The rungs of [`Plan::largest_faithful_k`]: the fidelity suite's ladder (5, 10, 15, 20,
/// 25, 30, 40, 50, 75, 100), extended below and above. Jiffy quantization makes fidelity
/// non-monotonic between rungs (e.g. 51/k jiffies of RTO is a near-integer at k = 17 but
/// not at k = 13), so the search walks rungs and does not bisect.
pub const LADDER: &[f64] = &[
    2.0,
    3.0,
    4.0,
    5.0,
    10.0,
    15.0,
    20.0,
    25.0,
    30.0,
    40.0,
    50.0,
    75.0,
    100.0,
    150.0,
    200.0,
    300.0,
    500.0,
    MAX_TIME_SCALE,
];

fn ladder() -> impl Iterator<Item = f64> {
    LADDER.iter().copied()
}

/// Scenarios of the fidelity suite (issue 5) whose events a timer shapes.
pub fn affected_scenarios(timer: &str) -> &'static [&'static str] {
    const TABLE: &[(&str, &[&str])] = &[
        ("tcp.initial_rto", &["syn-blackhole", "app-timer"]),
        ("tcp.rto_max", &["syn-blackhole", "data-blackhole"]),
        ("tcp.rto_min", &["data-blackhole", "fin-timeout"]),
        ("tcp.user_timeout", &["data-blackhole"]),
        ("ipv4.tcp_keepalive_", &["keepalive-dead-peer"]),
        ("ipv4.tcp_fin_timeout", &["fin-timeout"]),
        ("netfilter.nf_conntrack_udp_timeout", &["nat-udp-expiry"]),
        ("nat.", &["nat-udp-expiry"]),
        ("neigh.", &["neighbor-failure"]),
        ("tcp.time_wait", &["fin-timeout"]),
    ];
    TABLE
        .iter()
        .find(|(prefix, _)| timer.starts_with(prefix))
        .map_or(&[], |(_, scenarios)| scenarios)
}

/// `net/ipv4/tcp_fin_timeout` -> `ipv4.tcp_fin_timeout`.
fn display_name(key: &str) -> String {
    key.strip_prefix("net/").unwrap_or(key).replace('/', ".")
}

fn rel_error(default: u64, applied: u64, k: TimeScale) -> f64 {
    if default == 0 {
        return 0.0;
    }
    (applied as f64 * k.get() - default as f64).abs() / default as f64 * 100.0
}

/// Kernel constants that no sysctl or socket option reaches.
fn fixed_constants(model: &JiffyModel) -> Vec<TimerEntry> {
    let hz = u64::from(model.hz());
    vec![
        fixed(
            "tcp.ato_min (TCP_ATO_MIN)",
            model.jiffies_to_msecs(hz / 25),
            Unit::Milliseconds,
            "compile-time constant; delayed ACKs never fire sooner than this",
        ),
        fixed(
            "tcp.time_wait (TCP_TIMEWAIT_LEN)",
            60,
            Unit::Seconds,
            "compile-time constant; TIME_WAIT lasts 60 s of wall time",
        ),
        fixed(
            "tcp.deadline_base (TCP_RTO_MIN)",
            model.jiffies_to_msecs(model.tcp_rto_min()),
            Unit::Milliseconds,
            "the default give-up deadline is computed from this fixed base; compressed via \
             tcp.user_timeout instead",
        ),
    ]
}

#[cfg(test)]
mod tests;
