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

/// One `tc` command of a rendered condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcCmd {
    /// The arguments (without `tc`).
    pub args: Vec<String>,
    /// Whether a failure because the object is not there is fine (removing a child qdisc
    /// that a previous condition may or may not have left).
    pub may_be_absent: bool,
}

/// The handle of a netem root, so that a rate limiter can hang below it (`parent 1:1`).
const NETEM_HANDLE: &str = "1:";
/// The handle of the rate limiter below a netem root.
const CHILD_HANDLE: &str = "10:";

/// Bucket size for tbf: 10 ms worth of bytes, at least 8 KiB (more than
/// a few MTU-sized packets, so the bucket never starves a full frame).
fn burst_bytes(bps: u64) -> u64 {
    (bps / 8 / 100).max(8192)
}

fn pct(p: f64) -> String {
    format!("{p}%")
}

/// netem's Gilbert-Elliott arguments for a long-run loss of `loss_pct` percent in bursts of
/// mean length `burst` packets: a good state that never loses and a bad state that always
/// does. The mean stay in the bad state is 1/r, so r = 1/burst; the long-run loss is
/// p/(p+r), so p = r·L/(1-L).
fn gemodel(loss_pct: f64, burst: u32) -> [String; 3] {
    let l = (loss_pct / 100.0).clamp(0.0, 0.999);
    let r = 1.0 / f64::from(burst);
    let p = r * l / (1.0 - l);
    let f = |x: f64| format!("{:.4}%", x * 100.0);
    ["gemodel".into(), f(p), f(r)]
}

fn tbf(rate: u64, latency: &str) -> [String; 7] {
    [
        "tbf".into(),
        "rate".into(),
        fmt_rate(rate),
        "burst".into(),
        burst_bytes(rate).to_string(),
        "latency".into(),
        latency.into(),
    ]
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The `tc` commands (without `tc`) that put `c` on `dev`'s egress, in order.
/// Deterministic; the condition must be valid.
///
/// - clean: the root qdisc is removed;
/// - a rate limit alone: a `tbf` root (queue `c.queue`, default 50 ms);
/// - anything else: a `netem` root (handle 1:) carrying delay, jitter, loss (Gilbert-Elliott
///   when `c.loss_burst` is 2 or more), duplication, reordering and corruption; a rate limit
///   rides in netem itself, or, with a queue depth, in a `tbf` child (1:1) whose `latency` is
///   that depth. A child a previous condition left is removed first.
pub(crate) fn render_tc(dev: &str, c: &LinkCondition) -> Vec<TcCmd> {
    let cmd = |args, may_be_absent| TcCmd {
        args,
        may_be_absent,
    };
    if c.is_clean() {
        return vec![cmd(args(&["qdisc", "del", "dev", dev, "root"]), false)];
    }
    let mut a = args(&["qdisc", "replace", "dev", dev, "root"]);
    if !c.needs_netem() {
        let rate = c.rate.unwrap_or(u64::MAX);
        let latency = c.queue.map_or_else(|| "50ms".to_string(), fmt_duration);
        a.extend(tbf(rate, &latency));
        return vec![cmd(a, false)];
    }
    a.extend(args(&["handle", NETEM_HANDLE, "netem"]));
    // Deep enough for a satellite link at gigabit rates.
    a.extend(["limit".into(), "100000".into()]);
    if !c.delay.is_zero() {
        a.extend(["delay".into(), fmt_duration(c.delay)]);
        if !c.jitter.is_zero() {
            a.push(fmt_duration(c.jitter));
        }
    }
    if c.loss > 0.0 {
        a.push("loss".into());
        match c.loss_burst {
            Some(b) if b >= 2 => a.extend(gemodel(c.loss, b)),
            _ => a.push(pct(c.loss)),
        }
    }
    for (name, v) in [
        ("duplicate", c.duplicate),
        ("reorder", c.reorder),
        ("corrupt", c.corrupt),
    ] {
        if v > 0.0 {
            a.extend([name.into(), pct(v)]);
        }
    }
    let child = format!("{}1", NETEM_HANDLE);
    let remove_child = cmd(
        args(&[
            "qdisc",
            "del",
            "dev",
            dev,
            "parent",
            &child,
            "handle",
            CHILD_HANDLE,
        ]),
        true,
    );
    match (c.rate, c.queue) {
        (Some(r), Some(q)) => {
            let mut t = args(&[
                "qdisc",
                "replace",
                "dev",
                dev,
                "parent",
                &child,
                "handle",
                CHILD_HANDLE,
            ]);
            t.extend(tbf(r, &fmt_duration(q)));
            vec![cmd(a, false), cmd(t, false)]
        }
        (rate, _) => {
            if let Some(r) = rate {
                a.extend(["rate".into(), fmt_rate(r)]);
            }
            vec![cmd(a, false), remove_child]
        }
    }
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
        let j = |v: Vec<super::TcCmd>| {
            v.into_iter()
                .map(|c| c.args.join(" "))
                .collect::<Vec<_>>()
                .join(" ; ")
        };
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
            "qdisc replace dev eth0 root handle 1: netem limit 100000 delay 1500us 200us loss 0.5% reorder 5% rate 2000000bit ; qdisc del dev eth0 parent 1:1 handle 10:"
        );
        assert_eq!(
            j(render_tc("p3", &LinkCondition::default())),
            "qdisc del dev p3 root"
        );
        assert!(j(render_tc("eth0", &Preset::Satellite.condition())).contains("delay 300ms 20ms"));
        assert_eq!(
            j(render_tc("eth0", &LinkCondition::default().corrupt(1.5))),
            "qdisc replace dev eth0 root handle 1: netem limit 100000 corrupt 1.5% ; qdisc del dev eth0 parent 1:1 handle 10:"
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

    #[test]
    fn bursty_loss_renders_gemodel_with_the_long_run_rate() {
        let c = LinkCondition::default().loss(2.0).loss_burst(8);
        let cmds = render_tc("eth0", &c);
        let a = cmds[0].args.join(" ");
        assert!(a.contains("loss gemodel 0.2551% 12.5000%"), "{a}");
        // p/(p+r) is the long-run loss rate.
        let (p, r) = (0.002551_f64, 0.125_f64);
        assert!((p / (p + r) - 0.02).abs() < 1e-4);
        // A burst of 1 is independent loss.
        let one = render_tc("eth0", &LinkCondition::default().loss(2.0).loss_burst(1));
        assert!(one[0].args.join(" ").contains("loss 2%"));
        assert!(cmds[1].may_be_absent);
    }

    #[test]
    fn a_queue_puts_a_tbf_below_netem_or_sets_the_tbf_latency() {
        let j = |v: &[super::TcCmd]| {
            v.iter()
                .map(|c| c.args.join(" "))
                .collect::<Vec<_>>()
                .join(" ; ")
        };
        let c = LinkCondition::default()
            .delay(Duration::from_millis(45))
            .rate(8_000_000)
            .queue(Duration::from_millis(90));
        let cmds = render_tc("eth0", &c);
        assert_eq!(
            j(&cmds),
            "qdisc replace dev eth0 root handle 1: netem limit 100000 delay 45ms ; qdisc replace dev eth0 parent 1:1 handle 10: tbf rate 8000000bit burst 10000 latency 90ms"
        );
        assert!(!cmds[1].may_be_absent);
        let alone = LinkCondition::default()
            .rate(8_000_000)
            .queue(Duration::from_millis(90));
        assert_eq!(
            j(&render_tc("eth0", &alone)),
            "qdisc replace dev eth0 root tbf rate 8000000bit burst 10000 latency 90ms"
        );
        assert!(
            LinkCondition::default()
                .queue(Duration::from_millis(5))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn queue_scales_with_the_time_scale() {
        let c = LinkCondition::default()
            .rate(1_000_000)
            .queue(Duration::from_millis(400));
        let t = c
            .timing()
            .scaled(crate::compress::TimeScale::new(10.0).expect("k"));
        assert_eq!(t.queue_us, Some(40_000));
        assert_eq!(t.rate_bps, Some(10_000_000));
        assert_eq!(c.with_timing(t).queue, Some(Duration::from_millis(40)));
    }
}
