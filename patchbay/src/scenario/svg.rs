//! SVG timelines: the baseline and a compressed trace on one virtual-time
//! axis, one lane each, so a reader sees at a glance whether they coincide.
//! Hand-written SVG (no plotting dependency); deterministic output.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::fidelity::Fidelity;
use super::trace::Trace;
use super::{Mode, VerifyResult};

const W: f64 = 960.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 30.0;
const LANE: f64 = 70.0;
const TOP: f64 = 60.0;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step for an axis of `span` seconds (about 8 ticks).
fn tick_step(span: f64) -> f64 {
    let raw = (span / 8.0).max(1e-3);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// What a timeline calls its two runs.
#[derive(Debug, Clone)]
pub struct Labels {
    /// The comparison, in the title (e.g. `k=1 vs k=20`).
    pub title: String,
    /// The two lanes (e.g. `baseline k=1`, `compressed k=20`).
    pub lanes: [String; 2],
    /// The subtitle after "virtual time (s); " (e.g. the wall times).
    pub subtitle: String,
}

impl Labels {
    /// Labels for a baseline and a compressed run.
    pub fn compressed(baseline: &Trace, compressed: &Trace) -> Self {
        Labels {
            title: format!("k={} vs k={}", baseline.scale, compressed.scale),
            lanes: [
                format!("baseline k={}", baseline.scale),
                format!("compressed k={}", compressed.scale),
            ],
            subtitle: format!(
                "wall: baseline {:.2} s, compressed {:.2} s",
                baseline.wall.as_secs_f64(),
                compressed.wall.as_secs_f64()
            ),
        }
    }

    /// Labels for a verify result in either mode.
    pub fn of(r: &VerifyResult) -> Self {
        let [b, c] = &r.traces;
        match r.mode {
            Mode::Real | Mode::Compressed => Labels::compressed(b, c),
            Mode::Virtual => Labels {
                title: "UML real clock vs virtual".into(),
                lanes: ["UML real clock".into(), "UML virtual".into()],
                subtitle: format!(
                    "host wall incl. boot: real clock {:.2} s, virtual {:.2} s",
                    r.baseline.wall_s, r.compressed.wall_s
                ),
            },
        }
    }
}

/// Renders the timeline of a verify result (either mode).
pub fn timeline_of(r: &VerifyResult) -> String {
    let [b, c] = &r.traces;
    timeline_with(b, c, &r.fidelity, &Labels::of(r))
}

/// Renders the timeline of `baseline` and `compressed` (with the fidelity
/// verdict in the title).
pub fn timeline(baseline: &Trace, compressed: &Trace, fidelity: &Fidelity) -> String {
    timeline_with(
        baseline,
        compressed,
        fidelity,
        &Labels::compressed(baseline, compressed),
    )
}

/// Renders a timeline with the given labels.
pub fn timeline_with(
    baseline: &Trace,
    compressed: &Trace,
    fidelity: &Fidelity,
    labels: &Labels,
) -> String {
    let lanes = [baseline, compressed];
    let span = lanes
        .iter()
        .flat_map(|t| t.events.iter().map(|e| e.virtual_at.as_secs_f64()))
        .fold(1.0, f64::max)
        * 1.05;
    let mut colors = BTreeMap::new();
    for t in lanes {
        for e in &t.events {
            let n = colors.len();
            colors
                .entry(e.kind.clone())
                .or_insert(PALETTE[n % PALETTE.len()]);
        }
    }
    let legend_rows = colors.len().div_ceil(3);
    let h = TOP + LANE * 2.0 + 50.0 + 20.0 * legend_rows as f64;
    let x = |s: f64| LEFT + (W - LEFT - RIGHT) * s / span;
    let mut b = String::new();
    // `write!` into a String cannot fail.
    let _ = writeln!(
        b,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(b, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let verdict = if fidelity.pass { "PASS" } else { "FAIL" };
    let _ = writeln!(
        b,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{} — {} — {verdict}</text>"#,
        esc(&baseline.scenario),
        esc(&labels.title),
    );
    let _ = writeln!(
        b,
        r##"<text x="{LEFT}" y="40" fill="#555">median {:.1}%, max {:.1}%, sequence {}; virtual time (s); {}</text>"##,
        fidelity.median * 100.0,
        fidelity.max * 100.0,
        if fidelity.sequence_match {
            "identical"
        } else {
            "differs"
        },
        esc(&labels.subtitle)
    );
    let axis_y = TOP + LANE * 2.0;
    let step = tick_step(span);
    let mut t = 0.0;
    while t <= span {
        let px = x(t);
        let _ = writeln!(
            b,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{axis_y}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            axis_y + 16.0,
            fmt_tick(t, step)
        );
        t += step;
    }
    for (i, tr) in lanes.iter().enumerate() {
        let y = TOP + LANE * i as f64 + LANE / 2.0;
        let label = &labels.lanes[i];
        let _ = writeln!(
            b,
            r##"<text x="10" y="{:.1}">{}</text><line x1="{LEFT}" y1="{y}" x2="{:.1}" y2="{y}" stroke="#999"/>"##,
            y + 4.0,
            esc(label),
            W - RIGHT
        );
        // Each kind gets its own band inside the lane, so events at the same
        // time (an RTO and its retransmission) stay visible side by side.
        let band = 44.0 / colors.len().max(1) as f64;
        for e in &tr.events {
            let c = colors.get(&e.kind).copied().unwrap_or("black");
            let slot = colors.keys().position(|k| *k == e.kind).unwrap_or(0) as f64;
            let top = y - 22.0 + slot * band;
            let px = x(e.virtual_at.as_secs_f64());
            let _ = writeln!(
                b,
                r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{c}" stroke-width="2"><title>{} {} @ {:.3} s {}</title></line>"#,
                top,
                top + band.max(4.0),
                esc(&e.node),
                esc(&e.kind),
                e.virtual_at.as_secs_f64(),
                esc(&e.detail)
            );
        }
    }
    let _ = writeln!(
        b,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{:.1}" y2="{axis_y}" stroke="#333"/>"##,
        W - RIGHT
    );
    for (i, (kind, c)) in colors.iter().enumerate() {
        let lx = LEFT + (i % 3) as f64 * 260.0;
        let ly = axis_y + 40.0 + 20.0 * (i / 3) as f64;
        let _ = writeln!(
            b,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{c}"/><text x="{:.1}" y="{ly}">{}</text>"#,
            ly - 10.0,
            lx + 18.0,
            esc(kind)
        );
    }
    let _ = writeln!(b, "</svg>");
    b
}

fn fmt_tick(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scenario::fidelity::check;
    use crate::scenario::trace::TraceEvent;

    #[test]
    fn renders_both_lanes_deterministically() {
        let t = |k: f64| Trace {
            scenario: "demo<&>".into(),
            scale: k,
            wall: Duration::from_secs(2),
            events: vec![
                TraceEvent {
                    virtual_at: Duration::from_millis(1024),
                    node: "c".into(),
                    kind: "rto".into(),
                    detail: String::new(),
                },
                TraceEvent {
                    virtual_at: Duration::from_millis(2048),
                    node: "c".into(),
                    kind: "connect:ETIMEDOUT".into(),
                    detail: String::new(),
                },
            ],
        };
        let (b, c) = (t(1.0), t(20.0));
        let f = check(&b, &c);
        let svg = timeline(&b, &c, &f);
        assert_eq!(svg, timeline(&b, &c, &f));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("demo&lt;&amp;&gt;") && svg.contains("PASS"));
        assert_eq!(svg.matches("stroke-width=\"2\"").count(), 4);
        assert_eq!(tick_step(11.0), 2.0);
    }
}
