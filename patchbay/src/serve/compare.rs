//! Side by side of two lab runs: a run against its k = 1 baseline, both
//! from their `events.jsonl`, judged by the fidelity check of
//! `scenario/fidelity.rs` (same criteria as `patchbay bench`).
//!
//! What is compared, and said so in the answer:
//! - the time origin of each run is its first `step.start` (lab-file runs),
//!   or `lab.start`: the scenario's start, as bench traces count from their
//!   start mark. Events before it (building the lab) are counted, not timed;
//! - every event kind both runs have (UDP labs have steps, commands, node and
//!   region events; TCP telemetry is on only at k > 1 by default); a kind
//!   only one run has is listed, not compared.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::{Event, EventLog};
use crate::scenario::fidelity::{self, Fidelity};
use crate::scenario::trace::{Trace, TraceEvent};

/// The query: `/api/compare?base=0&run=1`.
#[derive(Debug, Deserialize)]
pub(crate) struct CompareQuery {
    /// The baseline run's id.
    pub base: usize,
    /// The compared run's id.
    pub run: usize,
}

/// One lane of the answer.
#[derive(Debug, Serialize)]
pub(crate) struct Lane {
    /// Wall seconds from the origin to the last event.
    pub wall_s: f64,
    /// Virtual ms of the origin on the run's own axis.
    pub origin_ms: f64,
    /// What the origin is (`step.start` of step 1, or `lab.start`).
    pub origin: String,
    /// Events before the origin (not compared).
    pub set_up: usize,
    /// The compared events, virtual ms from the origin.
    pub events: Vec<LaneEvent>,
}

/// An event of a lane.
#[derive(Debug, Serialize)]
pub(crate) struct LaneEvent {
    pub virtual_ms: f64,
    pub node: String,
    pub kind: String,
    pub detail: String,
}

/// The verdict, never at odds with the figures next to it.
#[derive(Debug, Serialize)]
pub(crate) struct Verdict {
    /// `PASS`, `FAIL` or `NO VERDICT`.
    pub text: &'static str,
    /// `None` when there is nothing to time.
    pub pass: Option<bool>,
    /// Why, one line per failed criterion (or the reason for no verdict).
    pub reasons: Vec<String>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    pub base: Lane,
    pub run: Lane,
    /// Kinds compared, with their count in the baseline.
    pub compared: BTreeMap<String, usize>,
    /// Kinds only the baseline / only the run has (not compared).
    pub only_base: BTreeMap<String, usize>,
    pub only_run: BTreeMap<String, usize>,
    /// Compared events with a relative error (baseline time >= 0.5 s).
    pub timed: usize,
    pub fidelity: Fidelity,
    pub verdict: Verdict,
    /// The criteria applied.
    pub criteria: Value,
}

/// Events of a log sorted by virtual time (telemetry is written late).
fn sorted(log: &EventLog) -> Vec<&(String, Event)> {
    let mut v: Vec<&(String, Event)> = log.events().iter().collect();
    v.sort_by(|a, b| {
        a.1.virtual_ms
            .total_cmp(&b.1.virtual_ms)
            .then(a.1.seq.cmp(&b.1.seq))
    });
    v
}

/// The origin of a run: its first `step.start`, else `lab.start`, else 0.
fn origin(events: &[&(String, Event)]) -> (f64, String) {
    let find = |k: &str| events.iter().find(|(l, _)| l == k);
    match (find("step.start"), find("lab.start")) {
        (Some((_, e)), _) => (e.virtual_ms, "the first step's start".into()),
        (None, Some((_, e))) => (e.virtual_ms, "lab.start".into()),
        (None, None) => (0.0, "0 (no step.start or lab.start)".into()),
    }
}

fn detail(e: &Event) -> String {
    let d = &e.data;
    if let Some(n) = d.get("step").and_then(Value::as_u64) {
        return format!("step {n}");
    }
    if let Some(argv) = d.get("argv").and_then(Value::as_array) {
        let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
        return words.join(" ");
    }
    match d {
        Value::Null => String::new(),
        v => v.to_string().chars().take(200).collect(),
    }
}

fn counts<'a>(events: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in events {
        *m.entry(k.to_string()).or_insert(0) += 1;
    }
    m
}

/// One run: its events from the origin on, and the kinds they have.
struct Side {
    lane: Lane,
    kinds: BTreeMap<String, usize>,
}

/// A run's events from its origin on (all kinds), with the origin.
fn side(log: &EventLog) -> Side {
    let ev = sorted(log);
    let (o, origin) = origin(&ev);
    let events: Vec<LaneEvent> = ev
        .iter()
        .filter(|(_, e)| e.virtual_ms >= o)
        .map(|(l, e)| LaneEvent {
            virtual_ms: e.virtual_ms - o,
            node: e.node.clone().unwrap_or_else(|| "lab".into()),
            kind: l.clone(),
            detail: detail(e),
        })
        .collect();
    Side {
        kinds: counts(events.iter().map(|e| e.kind.as_str())),
        lane: Lane {
            wall_s: last_wall(log, o) / 1000.0,
            origin_ms: o,
            origin,
            set_up: ev.len() - events.len(),
            events,
        },
    }
}

fn trace(l: &Lane, scale: f64) -> Trace {
    Trace {
        scenario: String::new(),
        scale,
        wall: Duration::from_secs_f64(l.wall_s.max(0.0)),
        events: l
            .events
            .iter()
            .map(|e| TraceEvent {
                virtual_at: Duration::from_secs_f64(e.virtual_ms.max(0.0) / 1000.0),
                node: e.node.clone(),
                kind: e.kind.clone(),
                detail: e.detail.clone(),
            })
            .collect(),
    }
}

/// The verdict of `f`, with the failed criteria spelled out.
fn verdict(f: &Fidelity, timed: usize) -> Verdict {
    if f.events.is_empty() && f.sequence_match {
        return Verdict {
            text: "NO VERDICT",
            pass: None,
            reasons: vec!["no event both runs have after their origin".into()],
        };
    }
    let mut reasons = vec![];
    if let Some(m) = &f.first_mismatch {
        reasons.push(format!("the sequences differ: {m}"));
    }
    if timed == 0 {
        if reasons.is_empty() {
            return Verdict {
                text: "NO VERDICT",
                pass: None,
                reasons: vec![format!(
                    "every compared event is an anchor (before {} ms): nothing to time",
                    fidelity::ANCHOR.as_millis()
                )],
            };
        }
        reasons.push("no timed event".into());
    }
    if f.median > fidelity::MAX_MEDIAN_ERROR {
        reasons.push(format!(
            "median error {:.1}% > {:.0}%",
            f.median * 100.0,
            fidelity::MAX_MEDIAN_ERROR * 100.0
        ));
    }
    if f.max > fidelity::MAX_EVENT_ERROR {
        reasons.push(format!(
            "max error {:.1}% > {:.0}%",
            f.max * 100.0,
            fidelity::MAX_EVENT_ERROR * 100.0
        ));
    }
    Verdict {
        text: if f.pass { "PASS" } else { "FAIL" },
        pass: Some(f.pass),
        reasons,
    }
}

fn last_wall(log: &EventLog, o_virtual: f64) -> f64 {
    let wall_at_origin = log
        .events()
        .iter()
        .find(|(_, e)| e.virtual_ms >= o_virtual)
        .map_or(0.0, |(_, e)| e.wall_ms);
    let last = log
        .events()
        .iter()
        .map(|(_, e)| e.wall_ms)
        .fold(0.0, f64::max);
    (last - wall_at_origin).max(0.0)
}

/// Compares `run` (at time scale `k`) against `base` (k = 1).
pub(crate) fn compare(base: &EventLog, run: &EventLog, k: f64) -> Comparison {
    let (mut b, mut r) = (side(base), side(run));
    let b_kinds: BTreeSet<String> = b.kinds.keys().cloned().collect();
    let r_kinds: BTreeSet<String> = r.kinds.keys().cloned().collect();
    let both: BTreeSet<String> = b_kinds.intersection(&r_kinds).cloned().collect();
    for s in [&mut b, &mut r] {
        s.lane.events.retain(|e| both.contains(&e.kind));
    }
    let only = |s: &Side, other: &BTreeSet<String>| -> BTreeMap<String, usize> {
        s.kinds
            .iter()
            .filter(|(k, _)| !other.contains(*k))
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    };
    let f = fidelity::check(&trace(&b.lane, 1.0), &trace(&r.lane, k));
    let timed = f.events.iter().filter(|e| e.rel_error.is_some()).count();
    Comparison {
        compared: b
            .kinds
            .iter()
            .filter(|(k, _)| both.contains(*k))
            .map(|(k, n)| (k.clone(), *n))
            .collect(),
        only_base: only(&b, &r_kinds),
        only_run: only(&r, &b_kinds),
        timed,
        verdict: verdict(&f, timed),
        fidelity: f,
        criteria: serde_json::json!({
            "median": fidelity::MAX_MEDIAN_ERROR,
            "max": fidelity::MAX_EVENT_ERROR,
            "anchor_ms": fidelity::ANCHOR.as_millis() as u64,
        }),
        base: b.lane,
        run: r.lane,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn log_of(lines: &[(f64, Option<&str>, &str, &str)], k: f64) -> EventLog {
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, (t, node, kind, data))| {
                let node = node.map_or("null".to_string(), |n| format!("{n:?}"));
                format!(
                    r#"{{"seq":{i},"wall_ms":{},"virtual_ms":{t},"node":{node},"kind":"{kind}","data":{data}}}"#,
                    t / k
                ) + "\n"
            })
            .collect();
        let mut log = EventLog::new(std::path::PathBuf::new());
        log.ingest(text.as_bytes());
        log
    }

    /// A UDP lab (no TCP events at k = 1): steps and commands are compared
    /// from the first step's start, set-up is left out, and telemetry that
    /// only the k = 10 run has is listed, not compared.
    #[test]
    fn a_udp_lab_compares_steps_and_commands_from_the_first_step() {
        let base = log_of(
            &[
                (0.0, None, "lab.start", "{}"),
                (30.0, Some("client"), "node.added", "{}"),
                (100.0, None, "step.start", r#"{"step":1}"#),
                (
                    101.0,
                    Some("client"),
                    "cmd.start",
                    r#"{"argv":["python3"]}"#,
                ),
                (15_200.0, Some("client"), "cmd.exit", r#"{"step":1}"#),
                (15_201.0, Some("client"), "step.end", r#"{"step":1}"#),
            ],
            1.0,
        );
        let run = log_of(
            &[
                (0.0, None, "lab.start", "{}"),
                (300.0, Some("client"), "node.added", "{}"),
                (1000.0, None, "step.start", r#"{"step":1}"#),
                (
                    1010.0,
                    Some("client"),
                    "cmd.start",
                    r#"{"argv":["python3"]}"#,
                ),
                (16_500.0, Some("client"), "cmd.exit", r#"{"step":1}"#),
                (16_510.0, Some("client"), "step.end", r#"{"step":1}"#),
                (16_000.0, Some("client"), "tcp", r#"{"kind":"rto"}"#),
            ],
            10.0,
        );
        let c = compare(&base, &run, 10.0);
        assert_eq!(c.base.origin_ms, 100.0);
        assert_eq!(c.run.origin_ms, 1000.0);
        assert_eq!((c.base.set_up, c.run.set_up), (2, 2));
        assert_eq!(
            c.compared.keys().collect::<Vec<_>>(),
            ["cmd.exit", "cmd.start", "step.end", "step.start"]
        );
        assert_eq!(c.only_run.get("tcp:rto"), Some(&1));
        assert!(c.fidelity.sequence_match, "{:?}", c.fidelity);
        assert_eq!(c.timed, 2);
        // step.end: 15.510 s against 15.101 s.
        assert!(
            (c.fidelity.max - 409.0 / 15_101.0).abs() < 1e-9,
            "{}",
            c.fidelity.max
        );
        assert_eq!((c.verdict.text, c.verdict.pass), ("PASS", Some(true)));
    }

    #[test]
    fn the_verdict_names_what_failed_and_never_fails_on_nothing() {
        let only_set_up = log_of(&[(0.0, None, "lab.start", "{}")], 1.0);
        let c = compare(&only_set_up, &only_set_up, 10.0);
        assert_eq!((c.verdict.text, c.verdict.pass), ("NO VERDICT", None));
        let base = log_of(
            &[
                (0.0, None, "step.start", "{}"),
                (10_000.0, Some("a"), "step.end", "{}"),
            ],
            1.0,
        );
        let slow = log_of(
            &[
                (0.0, None, "step.start", "{}"),
                (13_000.0, Some("a"), "step.end", "{}"),
            ],
            10.0,
        );
        let c = compare(&base, &slow, 10.0);
        assert_eq!(c.verdict.text, "FAIL");
        assert!(
            c.verdict
                .reasons
                .iter()
                .any(|r| r.contains("median error 30.0% > 5%")),
            "{:?}",
            c.verdict.reasons
        );
    }
}
