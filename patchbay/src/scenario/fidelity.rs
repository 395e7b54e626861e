//! The fidelity check: does a compressed run behave like the real-time one?
//!
//! Criteria (issue 5, never tuned): the sequence of `(kind, node)` must be
//! identical, and the per-event relative error of virtual time against the
//! baseline must have a median <= 5% and a max <= 15%.

use std::time::Duration;

use serde::Serialize;

use super::trace::Trace;

/// Median error limit (fraction).
pub const MAX_MEDIAN_ERROR: f64 = 0.05;
/// Max error limit (fraction).
pub const MAX_EVENT_ERROR: f64 = 0.15;
/// Events whose baseline time is below this are *anchors*: compared in the
/// sequence, but not in the timing statistics. A relative error against a
/// time near zero is meaningless (1 ms of wall-clock set-up work is 20 ms of
/// virtual time at k = 20, "infinitely" wrong against 0); the anchors' absolute
/// error is reported instead.
pub const ANCHOR: Duration = Duration::from_millis(500);

/// One compared event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventError {
    /// Kind of the event.
    pub kind: String,
    /// Node of the event.
    pub node: String,
    /// Baseline virtual time, seconds.
    pub baseline_s: f64,
    /// Compressed virtual time, seconds.
    pub compressed_s: f64,
    /// Relative error `|v_k - v_1| / v_1`; `None` for anchors (`v_1 < 0.5 s`).
    pub rel_error: Option<f64>,
}

/// Result of comparing two traces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fidelity {
    /// Whether the `(kind, node)` sequences are identical.
    pub sequence_match: bool,
    /// First difference of the sequences, if any (human readable).
    pub first_mismatch: Option<String>,
    /// Median relative error over the timed events (0 when there are none).
    pub median: f64,
    /// Max relative error over the timed events.
    pub max: f64,
    /// Max absolute error of the anchors, seconds of virtual time.
    pub anchor_max_abs_s: f64,
    /// Per matched event (up to the first mismatch).
    pub events: Vec<EventError>,
    /// Overall verdict.
    pub pass: bool,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Compares a compressed trace against its baseline.
///
/// A trace without timed events cannot pass (the check must never pass
/// vacuously), nor can two empty traces.
pub fn check(baseline: &Trace, compressed: &Trace) -> Fidelity {
    let mut first_mismatch = None;
    let mut events = vec![];
    for (i, (b, c)) in baseline.events.iter().zip(&compressed.events).enumerate() {
        if (b.kind.as_str(), b.node.as_str()) != (c.kind.as_str(), c.node.as_str()) {
            first_mismatch = Some(format!(
                "event {i}: baseline {} on {} at {:.3} s, compressed {} on {} at {:.3} s",
                b.kind,
                b.node,
                b.virtual_at.as_secs_f64(),
                c.kind,
                c.node,
                c.virtual_at.as_secs_f64()
            ));
            break;
        }
        let (v1, vk) = (b.virtual_at.as_secs_f64(), c.virtual_at.as_secs_f64());
        events.push(EventError {
            kind: b.kind.clone(),
            node: b.node.clone(),
            baseline_s: v1,
            compressed_s: vk,
            rel_error: (b.virtual_at >= ANCHOR).then(|| (vk - v1).abs() / v1),
        });
    }
    if first_mismatch.is_none() && baseline.events.len() != compressed.events.len() {
        let (longer, which) = if baseline.events.len() > compressed.events.len() {
            (&baseline.events, "baseline")
        } else {
            (&compressed.events, "compressed")
        };
        let extra = &longer[events.len()];
        first_mismatch = Some(format!(
            "{which} has {} more event(s), first: {} on {} at {:.3} s",
            longer.len() - events.len(),
            extra.kind,
            extra.node,
            extra.virtual_at.as_secs_f64()
        ));
    }
    let mut errs: Vec<f64> = events.iter().filter_map(|e| e.rel_error).collect();
    let max = errs.iter().copied().fold(0.0, f64::max);
    let med = median(&mut errs);
    let anchor_max_abs_s = events
        .iter()
        .filter(|e| e.rel_error.is_none())
        .map(|e| (e.compressed_s - e.baseline_s).abs())
        .fold(0.0, f64::max);
    let sequence_match = first_mismatch.is_none();
    let pass =
        sequence_match && !errs.is_empty() && med <= MAX_MEDIAN_ERROR && max <= MAX_EVENT_ERROR;
    Fidelity {
        sequence_match,
        first_mismatch,
        median: med,
        max,
        anchor_max_abs_s,
        events,
        pass,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::scenario::trace::TraceEvent;

    fn ev(ms: u64, kind: &str) -> TraceEvent {
        TraceEvent {
            virtual_at: Duration::from_millis(ms),
            node: "c".into(),
            kind: kind.into(),
            detail: String::new(),
        }
    }

    /// A k=1 SYN blackhole trace as measured on this host (timer-wheel late).
    fn baseline() -> Trace {
        Trace {
            scenario: "syn-blackhole".into(),
            scale: 1.0,
            wall: Duration::from_millis(11_300),
            events: vec![
                ev(1024, "rto"),
                ev(2048, "rto"),
                ev(3072, "rto"),
                ev(4096, "rto"),
                ev(5120, "rto"),
                ev(7136, "rto"),
                ev(11_232, "rto:expired"),
                ev(11_232, "state:SYN_SENT->CLOSE"),
                ev(11_233, "connect:ETIMEDOUT"),
            ],
        }
    }

    fn scaled(t: &Trace, f: f64) -> Trace {
        let mut t = t.clone();
        t.scale = 20.0;
        for e in &mut t.events {
            e.virtual_at = e.virtual_at.mul_f64(f);
        }
        t
    }

    #[test]
    fn identical_traces_pass_with_zero_error() {
        let f = check(&baseline(), &baseline());
        assert!(f.pass && f.sequence_match, "{f:?}");
        assert_eq!((f.median, f.max), (0.0, 0.0));
    }

    #[test]
    fn small_uniform_error_passes_and_is_measured() {
        let f = check(&baseline(), &scaled(&baseline(), 1.03));
        assert!(f.pass, "{f:?}");
        assert!(
            (f.median - 0.03).abs() < 1e-3 && (f.max - 0.03).abs() < 1e-3,
            "{f:?}"
        );
    }

    #[test]
    fn a_dropped_event_fails() {
        let mut c = baseline();
        c.events.remove(3);
        let f = check(&baseline(), &c);
        assert!(!f.pass && !f.sequence_match, "{f:?}");
        // Events 3..=5 are all `rto`: the kinds first differ at index 5.
        assert!(f.first_mismatch.unwrap().starts_with("event 5"));
        let mut c = baseline();
        c.events.remove(7);
        let f = check(&baseline(), &c);
        assert!(
            f.first_mismatch
                .unwrap()
                .starts_with("event 7: baseline state:SYN_SENT->CLOSE")
        );
        let mut c = baseline();
        c.events.pop();
        let f = check(&baseline(), &c);
        assert!(!f.pass, "a missing last event fails too");
        assert!(f.first_mismatch.unwrap().contains("baseline has 1 more"));
    }

    #[test]
    fn a_doubled_time_fails() {
        let mut c = baseline();
        c.events[5].virtual_at *= 2;
        // Still sorted? 14.2 s is after 11.2 s: re-sort as a trace would be.
        c.events.sort_by_key(|e| e.virtual_at);
        let f = check(&baseline(), &c);
        assert!(!f.pass, "{f:?}");
        // Doubling one time in place (order kept) fails on the max criterion.
        let mut c = baseline();
        c.events[0].virtual_at *= 2;
        let f = check(&baseline(), &c);
        assert!(f.sequence_match && !f.pass, "{f:?}");
        assert!((f.max - 1.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn uniformly_doubled_times_fail_on_the_median() {
        let f = check(&baseline(), &scaled(&baseline(), 2.0));
        assert!(f.sequence_match && !f.pass, "{f:?}");
        assert!((f.median - 1.0).abs() < 1e-9);
    }

    #[test]
    fn anchors_are_excluded_from_the_statistics_but_empty_traces_fail() {
        let mut b = baseline();
        b.events.insert(0, ev(0, "state:ESTABLISHED->FIN_WAIT1"));
        let mut c = b.clone();
        c.events[0].virtual_at = Duration::from_millis(80);
        let f = check(&b, &c);
        assert!(f.pass, "{f:?}");
        assert!((f.anchor_max_abs_s - 0.08).abs() < 1e-9);
        let empty = Trace {
            events: vec![],
            ..baseline()
        };
        assert!(
            !check(&empty, &empty).pass,
            "nothing to compare never passes"
        );
    }
}
