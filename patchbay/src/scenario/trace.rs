//! The event trace of one scenario run: kernel telemetry plus the scenario's
//! own observations, on the scenario's virtual time axis.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bpf::EventKind;
use crate::lab::{LabClock, LabEvent, monotonic_now};

/// One event of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Virtual time since the scenario's start mark (wall time × k).
    #[serde(with = "secs")]
    pub virtual_at: Duration,
    /// The node that saw it.
    pub node: String,
    /// What happened; compared between runs (e.g. `rto`, `state:SYN_SENT->CLOSE`,
    /// `connect:ETIMEDOUT`).
    pub kind: String,
    /// Free-form detail, not compared (e.g. the RTO in jiffies, which differs with k).
    pub detail: String,
}

/// The trace of one scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Scenario name.
    pub scenario: String,
    /// Time scale k of the run.
    pub scale: f64,
    /// Wall time from the start mark to the last observation.
    #[serde(with = "secs")]
    pub wall: Duration,
    /// Events, ordered by virtual time.
    pub events: Vec<TraceEvent>,
}

mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = <f64 as serde::Deserialize>::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Kernel TCP state names (`include/net/tcp_states.h`).
pub fn tcp_state_name(n: u32) -> &'static str {
    match n {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "?",
    }
}

/// Maps a telemetry event to a trace `(kind, detail)`, or `None` for events
/// that are not stable between runs: `timeout_init` (the kernel asks again
/// each time it recomputes the SYN deadline, a count that depends on timing),
/// `connect`/`established` callbacks (they mark the start, which is the
/// scenario's own anchor) and setsockopt rewrites (configuration, not
/// behaviour).
pub fn classify(kind: &EventKind) -> Option<(String, String)> {
    match *kind {
        EventKind::Rto {
            retransmits,
            rto_jiffies,
            expired,
        } => Some((
            if expired { "rto:expired" } else { "rto" }.to_string(),
            format!("retransmits={retransmits} rto={rto_jiffies} jiffies"),
        )),
        EventKind::Retrans { err, .. } => Some((
            if err == 0 { "retrans" } else { "retrans:err" }.to_string(),
            format!("err={err}"),
        )),
        EventKind::State { old, new } => Some((
            format!("state:{}->{}", tcp_state_name(old), tcp_state_name(new)),
            String::new(),
        )),
        _ => None,
    }
}

/// Collects a run's trace on the scenario's time axis: the origin is the
/// start mark (when the recorder is created), not the lab's start, so building
/// the lab (wall time, which would be × k in virtual time) does not count.
#[derive(Debug)]
pub struct Recorder {
    scenario: String,
    clock: LabClock,
    t0: Instant,
    /// The start mark on `CLOCK_MONOTONIC`, the clock of the telemetry.
    t0_mono: Duration,
    /// Half the time the two monotonic reads around `t0` took: the
    /// uncertainty of `t0_mono`.
    slack: Duration,
    obs: std::sync::Mutex<Vec<(Tie, TraceEvent)>>,
    last: std::sync::Mutex<Instant>,
}

impl Recorder {
    /// A recorder for `scenario` on a lab with `clock`; the start mark is now.
    pub fn new(scenario: &str, clock: LabClock) -> Self {
        let (now, t0_mono, slack) = bracket();
        Recorder {
            scenario: scenario.to_string(),
            clock,
            t0: now,
            t0_mono,
            slack,
            obs: std::sync::Mutex::new(vec![]),
            last: std::sync::Mutex::new(now),
        }
    }

    /// The start mark.
    pub fn start(&self) -> Instant {
        self.t0
    }

    /// Moves the start mark to `t0`, the instant a node triggered the
    /// scenario's fault itself (e.g. right before its write): the hand-off
    /// from the scenario to the node's worker thread then stays out of the
    /// trace, where k would multiply it. Call it before any observation.
    pub fn restart_at(&mut self, t0: Instant) {
        let (now, mono, slack) = bracket();
        self.t0_mono = mono.saturating_sub(now.saturating_duration_since(t0));
        self.slack = slack;
        self.t0 = t0;
        let last = self.last.get_mut().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(t0);
    }

    /// Virtual time since the start mark of a wall-clock instant.
    pub fn virtual_of(&self, t: Instant) -> Duration {
        self.clock.to_virtual(t.saturating_duration_since(self.t0))
    }

    /// Records an observation made at wall-clock instant `at`: the outcome of something the
    /// node did (a connect's error, a read's data), which follows the kernel events of the same
    /// instant.
    pub fn observe_at(&self, at: Instant, node: &str, kind: &str, detail: impl Into<String>) {
        self.push(Tie::Outcome, at, node, kind, detail.into());
    }

    /// Records, now, what a node is about to do (an attempt, a request): it precedes the kernel
    /// events of the same instant, which it causes.
    pub fn observe_intent(&self, node: &str, kind: &str, detail: impl Into<String>) {
        self.push(Tie::Intent, Instant::now(), node, kind, detail.into());
    }

    fn push(&self, tie: Tie, at: Instant, node: &str, kind: &str, detail: String) {
        let ev = TraceEvent {
            virtual_at: self.virtual_of(at),
            node: node.to_string(),
            kind: kind.to_string(),
            detail,
        };
        lock(&self.obs).push((tie, ev));
        let mut last = lock(&self.last);
        if at > *last {
            *last = at;
        }
    }

    /// Records an observation made now.
    pub fn observe(&self, node: &str, kind: &str, detail: impl Into<String>) {
        self.observe_at(Instant::now(), node, kind, detail);
    }

    /// Builds the trace from the observations and the lab's telemetry.
    /// `keep` selects the telemetry events that belong to the scenario
    /// (e.g. by port); events before the start mark are dropped.
    pub fn finish(&self, telemetry: &[LabEvent], keep: impl Fn(&LabEvent) -> bool) -> Trace {
        let mut events = lock(&self.obs).clone();
        for e in telemetry.iter().filter(|e| keep(e)) {
            // On the telemetry's own clock, against the bracketed mark; an
            // event inside the mark's uncertainty counts as at the mark.
            let since = match e.tcp.monotonic.checked_sub(self.t0_mono) {
                Some(d) => d,
                None if self.t0_mono - e.tcp.monotonic <= self.slack => Duration::ZERO,
                None => continue,
            };
            if let Some((kind, detail)) = classify(&e.tcp.kind) {
                let ev = TraceEvent {
                    virtual_at: self.clock.to_virtual(since),
                    node: e.node.clone(),
                    kind,
                    detail,
                };
                events.push((Tie::Kernel, ev));
            }
        }
        // Stable sort: events with equal times and ties keep their recording order.
        events.sort_by_key(|(tie, e)| (e.virtual_at, *tie));
        let events: Vec<TraceEvent> = events.into_iter().map(|(_, e)| e).collect();
        let last = *lock(&self.last);
        Trace {
            scenario: self.scenario.clone(),
            scale: self.clock.scale().get(),
            wall: last.saturating_duration_since(self.t0),
            events,
        }
    }
}

/// Where an observation goes among events of the same instant. Ties are the rule in virtual
/// time with the trap-free clock, where a guest process runs in zero time: a connect that
/// fails with `ETIMEDOUT` reads the very nanosecond the kernel's RTO expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tie {
    /// What a node is about to do: before the kernel's events it causes.
    Intent,
    /// The kernel's telemetry.
    Kernel,
    /// What a node saw happen: after the kernel's events that caused it.
    Outcome,
}

/// `Instant::now()` and its `CLOCK_MONOTONIC` value (the same clock on
/// Linux, but two reads): the midpoint of monotonic reads taken just before
/// and after, with half their distance as the uncertainty. Exact in a UML
/// guest in virtual time, where each clock read advances time by 256 ns;
/// tens of ns on a host; up to a syscall (~50 us) in a real-clock guest.
/// The narrowest of a few tries: a thread preempted between the reads would
/// widen the bracket to milliseconds, and events that far before the mark
/// (a connection's handshake) would count as at the mark.
fn bracket() -> (Instant, Duration, Duration) {
    let once = || {
        let a = monotonic_now();
        let now = Instant::now();
        let b = monotonic_now();
        let half = b.saturating_sub(a) / 2;
        (now, a + half, half)
    };
    let mut best = once();
    for _ in 0..4 {
        let t = once();
        if t.2 < best.2 {
            best = t;
        }
    }
    best
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a telemetry event concerns a socket with local or remote `port`.
pub fn on_port(e: &LabEvent, port: u16) -> bool {
    [e.tcp.local, e.tcp.remote]
        .iter()
        .flatten()
        .any(|a| a.port() == port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TcpEvent;

    #[test]
    fn unstable_kinds_are_dropped() {
        assert!(classify(&EventKind::TimeoutInit { jiffies: 25 }).is_none());
        assert!(classify(&EventKind::Connect).is_none());
        let (k, _) = classify(&EventKind::State { old: 2, new: 7 }).unwrap_or_default();
        assert_eq!(k, "state:SYN_SENT->CLOSE");
        let (k, d) = classify(&EventKind::Rto {
            retransmits: 1,
            rto_jiffies: 50,
            expired: false,
        })
        .unwrap_or_default();
        assert_eq!(
            (k.as_str(), d.as_str()),
            ("rto", "retransmits=1 rto=50 jiffies")
        );
    }

    /// With the trap-free guest clock a process runs in zero virtual time: its outcome, the
    /// kernel event that caused it and the intent before it share one instant, and the trace
    /// must still read in causal order.
    #[test]
    fn ties_order_intent_kernel_outcome() {
        let t0 = Instant::now();
        let rec = Recorder {
            scenario: "syn-blackhole".into(),
            clock: LabClock::new(t0, crate::compress::TimeScale::REAL_TIME),
            t0,
            t0_mono: Duration::from_secs(100),
            slack: Duration::ZERO,
            obs: std::sync::Mutex::new(vec![]),
            last: std::sync::Mutex::new(t0),
        };
        let at = t0 + Duration::from_secs(7);
        rec.observe_at(at, "c", "connect:ETIMEDOUT", "");
        rec.push(Tie::Intent, at, "c", "app:attempt", String::new());
        let expired = LabEvent {
            at: Duration::from_secs(7),
            virtual_at: Duration::from_secs(7),
            node: "c".into(),
            tcp: TcpEvent {
                monotonic: Duration::from_secs(107),
                netns_cookie: 1,
                local: None,
                remote: None,
                kind: EventKind::Rto {
                    retransmits: 5,
                    rto_jiffies: 200,
                    expired: true,
                },
                state: 2,
                total_retrans: 5,
                srtt_us: 0,
                snd_cwnd: 10,
            },
        };
        let trace = rec.finish(&[expired], |_| true);
        let kinds: Vec<&str> = trace.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["app:attempt", "rto:expired", "connect:ETIMEDOUT"]);
        assert!(trace.events.iter().all(|e| e.virtual_at == Duration::from_secs(7)));
    }
}
