//! Rendering a [`LinkCondition`] into `tc` arguments: pure and deterministic,
//! applied by the kernel layer (`sys::tc`).

use super::LinkCondition;
use super::units::{fmt_duration, fmt_rate};
use crate::sys::tc::Qdisc;

/// The root qdisc [`render_tc`] installs for `c` (or removes).
pub(crate) fn qdisc_of(c: &LinkCondition) -> Qdisc {
    if c.is_clean() {
        Qdisc::Clean
    } else if c.needs_netem() {
        Qdisc::Netem
    } else {
        Qdisc::Tbf
    }
}

/// Bucket size for tbf: 10 ms worth of bytes, at least 8 KiB (more than
/// a few MTU-sized packets, so the bucket never starves a full frame).
fn burst_bytes(bps: u64) -> u64 {
    (bps / 8 / 100).max(8192)
}

fn pct(p: f64) -> String {
    format!("{p}%")
}

/// The `tc` arguments (without `tc`) that put `c` on `dev`'s egress.
/// Deterministic; the condition must be valid.
pub(crate) fn render_tc(dev: &str, c: &LinkCondition) -> Vec<String> {
    let mut a: Vec<String> = ["qdisc", "replace", "dev", dev, "root"]
        .into_iter()
        .map(String::from)
        .collect();
    if c.is_clean() {
        a[1] = "del".into();
        return a;
    }
    if !c.needs_netem() {
        let rate = c.rate.unwrap_or(u64::MAX);
        a.extend([
            "tbf".into(),
            "rate".into(),
            fmt_rate(rate),
            "burst".into(),
            burst_bytes(rate).to_string(),
            "latency".into(),
            "50ms".into(),
        ]);
        return a;
    }
    a.push("netem".into());
    // Deep enough for a satellite link at gigabit rates.
    a.extend(["limit".into(), "100000".into()]);
    if !c.delay.is_zero() {
        a.extend(["delay".into(), fmt_duration(c.delay)]);
        if !c.jitter.is_zero() {
            a.push(fmt_duration(c.jitter));
        }
    }
    for (name, v) in [
        ("loss", c.loss),
        ("duplicate", c.duplicate),
        ("reorder", c.reorder),
        ("corrupt", c.corrupt),
    ] {
        if v > 0.0 {
            a.extend([name.into(), pct(v)]);
        }
    }
    if let Some(r) = c.rate {
        a.extend(["rate".into(), fmt_rate(r)]);
    }
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::link::LinkCondition;
    use crate::link::Preset;
    use std::time::Duration;

    #[test]
    fn renders_tbf_netem_and_delete() {
        let j = |v: Vec<String>| v.join(" ");
        assert_eq!(
            j(render_tc(
                "eth0",
                &LinkCondition::default().rate(10_000_000)
            )),
            "qdisc replace dev eth0 root tbf rate 10000000bit burst 12500 latency 50ms"
        );
        let c = LinkCondition::default()
            .delay(Duration::from_micros(1500))
            .jitter(Duration::from_micros(200))
            .loss(0.5)
            .reorder(5.0)
            .rate(2_000_000);
        assert_eq!(
            j(render_tc("eth0", &c)),
            "qdisc replace dev eth0 root netem limit 100000 delay 1500us 200us loss 0.5% reorder 5% rate 2000000bit"
        );
        assert_eq!(
            j(render_tc("p3", &LinkCondition::default())),
            "qdisc del dev p3 root"
        );
        assert!(j(render_tc("eth0", &Preset::Satellite.condition())).contains("delay 300ms 20ms"));
        assert_eq!(
            j(render_tc("eth0", &LinkCondition::default().corrupt(1.5))),
            "qdisc replace dev eth0 root netem limit 100000 corrupt 1.5%"
        );
        assert!(
            j(render_tc(
                "eth0",
                &"wifi-bad".parse::<Preset>().unwrap().condition()
            ))
            .contains("delay 40ms 15ms loss 2% rate 20000000bit")
        );
        assert_eq!("mobile-4g".parse::<Preset>().unwrap(), Preset::FourG);
        assert_eq!("mobile-3g".parse::<Preset>().unwrap(), Preset::ThreeG);
        assert_eq!(
            "satellite-geo".parse::<Preset>().unwrap().condition().rate,
            Some(25_000_000)
        );
        assert!(LinkCondition::default().corrupt(101.0).validate().is_err());
    }
}
