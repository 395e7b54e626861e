//! Plan entries (one per timer), planning inputs, and the small scaling rules they share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{ArmContext, JiffyModel};
use super::scale::TimeScale;

/// Unit of a timer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unit {
    /// Kernel jiffies (1/HZ s).
    Jiffies,
    /// Nanoseconds.
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Whole seconds.
    Seconds,
    /// Bits per second.
    BitsPerSecond,
    /// A count (not a time; never scaled).
    Count,
}

impl Unit {
    /// Short suffix for tables.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Unit::Jiffies => "j",
            Unit::Nanoseconds => "ns",
            Unit::Microseconds => "us",
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
            Unit::BitsPerSecond => "bit/s",
            Unit::Count => "",
        }
    }
}

/// How a value reaches the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Mechanism {
    /// A per-namespace (or per-interface) sysctl, key relative to /proc/sys.
    Sysctl {
        /// e.g. `net/ipv4/tcp_rto_min_us`.
        key: String,
    },
    /// A field of the sock_ops program's per-netns settings.
    Bpf {
        /// Field name in [`super::plan::BpfTargets`].
        field: String,
    },
    /// A socket option (set by the cgroup/setsockopt program or by the application).
    Sockopt {
        /// e.g. `TCP_RTO_MAX_MS`.
        name: String,
    },
    /// A netem/tc qdisc parameter.
    Netem,
    /// An nftables object written by the NAT configuration.
    Nft {
        /// Which configuration value.
        what: String,
    },
    /// Nothing is applied.
    None,
}

impl Mechanism {
    /// Short text for tables.
    pub(crate) fn label(&self) -> String {
        match self {
            Mechanism::Sysctl { key } => format!("sysctl {key}"),
            Mechanism::Bpf { field } => format!("bpf {field}"),
            Mechanism::Sockopt { name } => format!("sockopt {name}"),
            Mechanism::Netem => "netem".to_string(),
            Mechanism::Nft { what } => format!("nft {what}"),
            Mechanism::None => "-".to_string(),
        }
    }
}

/// How faithfully a timer is compressed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Status {
    /// Applied = default / k exactly.
    Exact,
    /// Applied differs from default / k by `error_pct` (signed, in %) because of the unit's
    /// granularity or a deliberate jiffy-aware choice.
    Rounded {
        /// (applied - target) / target, in %.
        error_pct: f64,
    },
    /// A kernel limit stops the scaling; the timer runs at `effective_k` instead of k.
    Clamped {
        /// default / applied.
        effective_k: f64,
        /// Which limit.
        reason: String,
    },
    /// Not compressed on this kernel or in this mode: it runs at its real-time value.
    Unsupported {
        /// Why.
        reason: String,
    },
    /// Not a scalable timer by design (a count, or a fixed kernel constant).
    Fixed {
        /// Why.
        reason: String,
    },
}

impl Status {
    /// Short text for tables.
    pub(crate) fn label(&self) -> String {
        match self {
            Status::Exact => "exact".to_string(),
            Status::Rounded { error_pct } => format!("rounded ({error_pct:+.1}%)"),
            Status::Clamped {
                effective_k,
                reason,
            } => format!("clamped (effective k={effective_k:.1}: {reason})"),
            Status::Unsupported { reason } => format!("unsupported: {reason}"),
            Status::Fixed { reason } => format!("not scaled: {reason}"),
        }
    }

    /// True when the timer is compressed at all (exact, rounded or clamped).
    pub(crate) fn is_scaled(&self) -> bool {
        matches!(
            self,
            Status::Exact | Status::Rounded { .. } | Status::Clamped { .. }
        )
    }
}

/// One timer of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TimerEntry {
    /// Timer name, e.g. `tcp.rto_min`.
    pub name: String,
    /// Real-time value.
    pub default: u64,
    /// default / k.
    pub target: f64,
    /// The value in effect in the lab (the default when unsupported).
    pub applied: u64,
    /// Unit of `default`, `target` and `applied`.
    pub unit: Unit,
    /// How it is applied.
    pub mechanism: Mechanism,
    /// How faithful.
    pub status: Status,
    /// Predicted timing error in % at this k, including jiffy rounding and wheel lateness
    /// (for TCP timers: the max per-event error of the scenario the timer shapes).
    pub predicted_error_pct: Option<f64>,
    /// Free-text explanation (why this value was chosen), empty if none.
    pub note: String,
    /// Fidelity-suite scenarios whose events this timer shapes (e.g. `syn-blackhole`), so a
    /// clamped or unsupported timer names the events it affects.
    pub affects: Vec<String>,
}

/// A timer owned by other configuration (e.g. a NAT mapping timeout) that the plan scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalTimer {
    /// Real-time value.
    pub default: u64,
    /// [`Unit::Seconds`] or [`Unit::Milliseconds`].
    pub unit: Unit,
    /// Smallest value the consumer accepts (e.g. 1 s for nft conntrack timeout policies).
    pub min: u64,
}

/// What the plan needs besides the kernel: scenario knobs and other configuration's timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerInputs {
    /// Typical round-trip time inside the lab in µs (veth: ~50-200). It adds a jiffy to
    /// the RTO when it is not a whole number of jiffies.
    pub rtt_us: u64,
    /// `tcp_syn_retries` the lab sets, if it overrides the namespace default.
    pub syn_retries: Option<u32>,
    /// `tcp_retries2` the lab sets, if it overrides the namespace default.
    pub tcp_retries2: Option<u32>,
    /// Tail loss probes enabled (`tcp_early_retrans` 3, the default).
    pub loss_probe: bool,
    /// Timeouts of the NAT configuration (fullcone map timeout, per-router conntrack
    /// overrides), by name; scaled, never replaced.
    pub nat_timeouts: BTreeMap<String, ExternalTimer>,
    /// Degraded mode the user opted into: no BPF even if the kernel has it.
    pub sysctl_only: bool,
}

impl Default for TimerInputs {
    fn default() -> Self {
        Self {
            rtt_us: 100,
            syn_retries: None,
            tcp_retries2: None,
            loss_probe: true,
            nat_timeouts: BTreeMap::new(),
            sysctl_only: false,
        }
    }
}

/// Builds an entry with target = default / k and no prediction.
pub(crate) fn entry(
    name: String,
    default: u64,
    k: TimeScale,
    applied: u64,
    unit: Unit,
    mechanism: Mechanism,
    status: Status,
) -> TimerEntry {
    TimerEntry {
        name,
        default,
        target: k.divide(default as f64),
        applied,
        unit,
        mechanism,
        status,
        predicted_error_pct: None,
        note: String::new(),
        affects: Vec::new(),
    }
}

/// An entry for a timer that stays at its default, with why.
pub(crate) fn unsupported(
    name: &str,
    default: u64,
    k: TimeScale,
    unit: Unit,
    reason: &str,
) -> TimerEntry {
    entry(
        name.to_string(),
        default,
        k,
        default,
        unit,
        Mechanism::None,
        Status::Unsupported {
            reason: reason.to_string(),
        },
    )
}

/// An entry for a count or fixed constant.
pub(crate) fn fixed(name: &str, value: u64, unit: Unit, reason: &str) -> TimerEntry {
    TimerEntry {
        name: name.to_string(),
        default: value,
        target: value as f64,
        applied: value,
        unit,
        mechanism: Mechanism::None,
        status: Status::Fixed {
            reason: reason.to_string(),
        },
        predicted_error_pct: None,
        note: String::new(),
        affects: Vec::new(),
    }
}

/// Scales a whole-unit value: round(default / k), clamped to `[min, max]`.
pub(crate) fn scale_whole(
    default: u64,
    k: TimeScale,
    min: u64,
    max: Option<u64>,
    limit: &str,
) -> (u64, Status) {
    if default == 0 {
        // 0 means "off" for these knobs; it stays off.
        return (0, Status::Exact);
    }
    let target = k.divide(default as f64);
    let rounded = target.round() as u64;
    let applied = rounded.max(min).min(max.unwrap_or(u64::MAX)).max(min);
    let status = status_for(default, target, applied, rounded, limit);
    (applied, status)
}

/// Status of `applied` against `target` (`rounded` = the unclamped choice).
pub(crate) fn status_for(
    default: u64,
    target: f64,
    applied: u64,
    rounded: u64,
    limit: &str,
) -> Status {
    if applied != rounded {
        return Status::Clamped {
            effective_k: if applied == 0 {
                1.0
            } else {
                default as f64 / applied as f64
            },
            reason: limit.to_string(),
        };
    }
    if (applied as f64 - target).abs() < 1e-9 {
        Status::Exact
    } else {
        Status::Rounded {
            error_pct: (applied as f64 - target) / target * 100.0,
        }
    }
}

/// Scales a millisecond value stored by the kernel in jiffies: the whole number of jiffies
/// that best reproduces the real-time firing including wheel lateness
/// ([`JiffyModel::best_jiffies`], at least `min_jiffies`), written back in ms, with the
/// predicted error.
pub(crate) fn scale_ms_jiffies(
    model: &JiffyModel,
    default_ms: u64,
    k: TimeScale,
    min_jiffies: u64,
    limit: &str,
) -> (u64, Status, f64) {
    if default_ms == 0 {
        return (0, Status::Exact, 0.0);
    }
    let target_ms = k.divide(default_ms as f64);
    let default_j = model.msecs_to_jiffies(default_ms);
    let best = model.best_jiffies(default_j, k.get(), ArmContext::Softirq);
    let applied_j = best.max(min_jiffies);
    let applied_ms = model.jiffies_to_msecs(applied_j);
    let best_ms = model.jiffies_to_msecs(best);
    let status = status_for(default_ms, target_ms, applied_ms, best_ms, limit);
    let err = model.timer_error_pct(default_j, applied_j, k.get(), ArmContext::Softirq);
    (applied_ms, status, err)
}

/// Predicted error of a whole-second timer (a jiffies timer of `secs x HZ`).
pub(crate) fn secs_error(model: &JiffyModel, default_s: u64, applied_s: u64, k: TimeScale) -> f64 {
    model.timer_error_pct(
        model.secs_to_jiffies(default_s),
        model.secs_to_jiffies(applied_s),
        k.get(),
        ArmContext::Softirq,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: f64) -> TimeScale {
        TimeScale::new(v).expect("valid")
    }

    #[test]
    fn whole_seconds_round_and_clamp() {
        assert_eq!(scale_whole(60, k(20.0), 1, None, "s"), (3, Status::Exact));
        let (applied, status) = scale_whole(75, k(20.0), 1, None, "s");
        assert_eq!(applied, 4);
        assert!(
            matches!(status, Status::Rounded { error_pct } if (error_pct - 6.666).abs() < 0.01)
        );
        let (applied, status) = scale_whole(30, k(100.0), 1, None, "whole seconds");
        assert_eq!(applied, 1);
        assert!(matches!(status, Status::Clamped { effective_k, .. } if effective_k == 30.0));
    }

    #[test]
    fn zero_stays_off() {
        assert_eq!(scale_whole(0, k(20.0), 1, None, "s"), (0, Status::Exact));
    }

    #[test]
    fn ms_in_jiffies_reports_rounding() {
        let m = JiffyModel::new(250).expect("valid");
        let (ms, status, _) = scale_ms_jiffies(&m, 1000, k(20.0), 2, "HZ/100");
        assert_eq!(ms, 48);
        assert!(matches!(status, Status::Rounded { .. }));
        let (ms, status, _) = scale_ms_jiffies(&m, 1000, k(500.0), 2, "HZ/100");
        assert_eq!(ms, 8);
        assert!(matches!(status, Status::Clamped { .. }));
    }
}
