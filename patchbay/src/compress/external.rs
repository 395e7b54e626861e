//! Timers owned by other configuration: link timing (netem/tc) and a router's conntrack
//! timeouts. These adapters reuse the owners' own types and scaling hooks
//! ([`crate::LinkTiming::scaled`], [`crate::native::ConntrackTimeouts::map_durations`]) so there is
//! one way to scale each value, and add the report entries.

use std::time::Duration;

use serde::Serialize;

use super::scale::TimeScale;
use super::timers::{Mechanism, Status, TimerEntry, Unit, entry, status_for};
use crate::{LinkTiming, native::ConntrackTimeouts};

/// A scaled link and the report entries describing it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaledLink {
    /// Values to configure.
    pub timing: LinkTiming,
    /// One entry per parameter.
    pub entries: Vec<TimerEntry>,
}

/// Scales a link: delay and jitter / k, rate x k so that bytes per virtual second are
/// preserved (via [`LinkTiming::scaled`]), with µs rounding reported.
pub fn scale_link(name: &str, link: &LinkTiming, k: TimeScale) -> ScaledLink {
    let timing = link.scaled(k);
    let mut entries = Vec::new();
    for (what, default, applied) in [
        ("delay", link.delay_us, timing.delay_us),
        ("jitter", link.jitter_us, timing.jitter_us),
    ] {
        let target = k.divide(default as f64);
        entries.push(entry(
            format!("link.{name}.{what}"),
            default,
            k,
            applied,
            Unit::Microseconds,
            Mechanism::Netem,
            status_for(default, target, applied, applied, ""),
        ));
    }
    if let (Some(default), Some(applied)) = (link.rate_bps, timing.rate_bps) {
        let target = default as f64 * k.get();
        let mut e = entry(
            format!("link.{name}.rate"),
            default,
            k,
            applied,
            Unit::BitsPerSecond,
            Mechanism::Netem,
            if (applied as f64 - target).abs() < 0.5 {
                Status::Exact
            } else {
                Status::Rounded {
                    error_pct: (applied as f64 - target) / target * 100.0,
                }
            },
        );
        e.target = target;
        e.note = "rate x k keeps bytes per virtual second".to_string();
        entries.push(e);
    }
    if let (Some(default), Some(applied)) = (link.queue_us, timing.queue_us) {
        let target = k.divide(default as f64);
        let mut e = entry(
            format!("link.{name}.queue"),
            default,
            k,
            applied,
            Unit::Microseconds,
            Mechanism::Netem,
            status_for(default, target, applied, applied, ""),
        );
        e.note = "queue time / k at rate x k keeps the queue's bytes".to_string();
        entries.push(e);
    }
    ScaledLink { timing, entries }
}

/// A router's scaled conntrack timeouts and their report entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaledConntrack {
    /// Values to configure (render with [`ConntrackTimeouts::to_sysctls`]; the nft
    /// endpoint-independent map timeout with [`ConntrackTimeouts::eim_map`]).
    pub timeouts: ConntrackTimeouts,
    /// One entry per timeout.
    pub entries: Vec<TimerEntry>,
}

/// Scales a router's conntrack timeouts: the sysctls to whole seconds (at least 1 s, as
/// [`ConntrackTimeouts::to_sysctls`] renders them), the nft mapping timeout to whole
/// milliseconds (at least 1 ms). Scaled, never replaced.
pub fn scale_conntrack(router: &str, t: &ConntrackTimeouts, k: TimeScale) -> ScaledConntrack {
    let eim_ms = |d: Duration| ((d.as_secs_f64() * 1000.0 / k.get()).round() as u64).max(1);
    let mut scaled = t.map_durations(|d| d.div_f64(k.get()));
    scaled.eim_map = t.eim_map.map(|d| Duration::from_millis(eim_ms(d)));
    let before = t.to_sysctls();
    let after = scaled.to_sysctls();
    let mut entries = Vec::new();
    for (key, default) in &before {
        let (Ok(default), Some(Ok(applied))) = (
            default.parse::<u64>(),
            after.get(key).map(|v| v.parse::<u64>()),
        ) else {
            continue;
        };
        let target = k.divide(default as f64);
        let short = key.rsplit('/').next().unwrap_or(key);
        entries.push(entry(
            format!("nat.{router}.{short}"),
            default,
            k,
            applied,
            Unit::Seconds,
            Mechanism::Sysctl { key: key.clone() },
            status_for(
                default,
                target,
                applied,
                target.round() as u64,
                "whole seconds",
            ),
        ));
    }
    let default_ms = t.eim_map().as_millis() as u64;
    let applied_ms = scaled.eim_map().as_millis() as u64;
    let target = k.divide(default_ms as f64);
    entries.push(entry(
        format!("nat.{router}.eim_map"),
        default_ms,
        k,
        applied_ms,
        Unit::Milliseconds,
        Mechanism::Nft {
            what: "endpoint-independent mapping timeout".into(),
        },
        status_for(
            default_ms,
            target,
            applied_ms,
            target.round() as u64,
            "1 ms",
        ),
    ));
    for e in &mut entries {
        e.affects = vec!["nat-udp-expiry".to_string()];
    }
    ScaledConntrack {
        timeouts: scaled,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: f64) -> TimeScale {
        TimeScale::new(v).expect("valid")
    }

    #[test]
    fn links_scale_delay_down_and_rate_up() {
        let link = LinkTiming {
            delay_us: 50_000,
            jitter_us: 3,
            rate_bps: Some(1_000_000),
            queue_us: None,
        };
        let s = scale_link("wan", &link, k(20.0));
        assert_eq!(s.timing.delay_us, 2_500);
        assert_eq!(s.timing.rate_bps, Some(20_000_000));
        assert_eq!(s.entries[0].status, Status::Exact);
        // 0.15 µs of jitter cannot be expressed: reported, not hidden.
        assert!(
            matches!(s.entries[1].status, Status::Rounded { .. }),
            "{:?}",
            s.entries[1]
        );
        assert_eq!(s.entries[2].status, Status::Exact);
        let none = scale_link("lan", &LinkTiming::default(), k(20.0));
        assert_eq!(none.timing, LinkTiming::default());
        assert_eq!(none.entries.len(), 2);
    }

    #[test]
    fn conntrack_scaled_not_replaced() {
        let t = ConntrackTimeouts {
            eim_map: Some(Duration::from_secs(300)),
            ..ConntrackTimeouts::default()
        };
        let s = scale_conntrack("home", &t, k(60.0));
        assert_eq!(s.timeouts.eim_map(), Duration::from_secs(5));
        let sysctls = s.timeouts.to_sysctls();
        assert_eq!(
            sysctls["net/netfilter/nf_conntrack_udp_timeout_stream"],
            "2"
        );
        let udp = s
            .entries
            .iter()
            .find(|e| e.name == "nat.home.nf_conntrack_udp_timeout")
            .expect("udp entry");
        // 30 s / 60 = 0.5 s rounds to 1 s: +100%.
        assert!(matches!(udp.status, Status::Rounded { error_pct } if error_pct == 100.0));
        // 10 s / 60 rounds to 0: held at 1 s, effective k 10.
        let close = s
            .entries
            .iter()
            .find(|e| e.name == "nat.home.nf_conntrack_tcp_timeout_close")
            .expect("close entry");
        assert!(
            matches!(close.status, Status::Clamped { effective_k, .. } if effective_k == 10.0),
            "{close:?}"
        );
        let eim = s.entries.last().expect("eim entry");
        assert_eq!((eim.applied, eim.status.clone()), (5000, Status::Exact));
        assert_eq!(eim.affects, vec!["nat-udp-expiry".to_string()]);
    }
}
