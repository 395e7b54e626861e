//! Link conditions with `tc` (iproute2), run through [`crate::cmd`].
//!
//! A rate limit alone becomes a `tbf` root qdisc (`CONFIG_NET_SCH_TBF`);
//! anything else a `netem` root qdisc carrying the rate too
//! (`CONFIG_NET_SCH_NETEM`, Linux 3.3+ for netem `rate`). A clean condition
//! removes the root qdisc. Changes use `tc qdisc replace`, so they apply at
//! runtime without a gap.

use crate::cmd::{self, CmdError};
use crate::link::units::{fmt_duration, fmt_rate};
use crate::link::{LinkCondition, LinkError};
use crate::netns::Netns;

/// A failed `tc` operation.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// The condition is invalid.
    #[error(transparent)]
    Invalid(#[from] LinkError),
    /// The kernel lacks the qdisc.
    #[error("the kernel has no `{kind}` qdisc ({config}): `{argv}` in {ns} said: {stderr}")]
    MissingQdisc {
        /// `netem` or `tbf`.
        kind: &'static str,
        /// The kernel option.
        config: &'static str,
        /// The command.
        argv: String,
        /// Namespace.
        ns: String,
        /// What tc said.
        stderr: String,
    },
    /// tc failed otherwise.
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

impl From<TcError> for crate::Error {
    fn from(e: TcError) -> crate::Error {
        match e {
            TcError::Invalid(l) => crate::Error::Link(l),
            TcError::MissingQdisc {
                kind: "netem",
                argv,
                ..
            } => crate::Error::KernelFeature {
                feature: "CONFIG_NET_SCH_NETEM (tc netem)".into(),
                hint: format!(
                    "`{argv}` failed: this kernel has no netem qdisc, so delay, jitter, loss, duplication and reordering are unavailable (rate limits alone still work via tbf); use a kernel with CONFIG_NET_SCH_NETEM=y or the netem module loaded"
                ),
            },
            TcError::MissingQdisc { config, argv, .. } => crate::Error::KernelFeature {
                feature: config.into(),
                hint: format!("`{argv}` failed: enable {config} in the kernel"),
            },
            TcError::Cmd(c) => crate::Error::Cmd(c),
        }
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
pub fn render_tc(dev: &str, c: &LinkCondition) -> Vec<String> {
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

/// Applies `c` to the egress of `dev` inside `ns`.
pub async fn apply(ns: &Netns, dev: &str, c: &LinkCondition) -> Result<(), TcError> {
    c.validate()?;
    let args = render_tc(dev, c);
    match cmd::run(ns, "tc", &args, None).await {
        Ok(_) => Ok(()),
        // Removing a root qdisc that is not there.
        Err(CmdError::Failed { stderr, .. })
            if c.is_clean() && stderr.contains("handle of zero") =>
        {
            Ok(())
        }
        Err(CmdError::Failed {
            argv, ns, stderr, ..
        }) if stderr.contains("qdisc kind is unknown") => {
            let (kind, config) = if c.needs_netem() {
                ("netem", "CONFIG_NET_SCH_NETEM")
            } else {
                ("tbf", "CONFIG_NET_SCH_TBF")
            };
            Err(TcError::MissingQdisc {
                kind,
                config,
                argv,
                ns,
                stderr,
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
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
    }
}
