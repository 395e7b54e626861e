//! The compression report: what each timer is in the lab, and how faithful that is.

use std::fmt;

use serde::Serialize;

use super::caps::KernelCaps;
use super::plan::{FaithfulK, Plan, TcpFidelity};
use super::timers::{Status, TimerEntry, Unit};

/// Summary of the largest faithful k.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FaithfulSummary {
    /// Largest faithful k for TCP.
    pub k: f64,
    /// For the SYN scenario alone.
    pub syn_k: f64,
    /// For the established scenario alone.
    pub established_k: f64,
}

/// What `patchbay doctor` and `lab.compression_report()` print: human table via
/// `Display`, JSON via serde.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CompressionReport {
    /// The time scale k.
    pub scale: f64,
    /// Kernel HZ.
    pub hz: u32,
    /// `uname -r`.
    pub kernel_release: String,
    /// `full` or `sysctl-only`.
    pub mode: String,
    /// The probed capabilities.
    pub(crate) caps: KernelCaps,
    /// Every timer.
    pub timers: Vec<TimerEntry>,
    /// Predicted TCP fidelity at this k.
    pub tcp_fidelity: TcpFidelity,
    /// Largest faithful k, if computed.
    pub largest_faithful_k: Option<FaithfulSummary>,
}

impl CompressionReport {
    /// Builds the report of `plan`.
    pub(crate) fn new(plan: &Plan, caps: &KernelCaps, faithful: Option<&FaithfulK>) -> Self {
        Self {
            scale: plan.scale().get(),
            hz: plan.hz(),
            kernel_release: caps.kernel_release.clone(),
            mode: if plan.sysctl_only() {
                "sysctl-only"
            } else {
                "full"
            }
            .to_string(),
            caps: caps.clone(),
            timers: plan.entries().to_vec(),
            tcp_fidelity: plan.tcp_fidelity().clone(),
            largest_faithful_k: faithful.map(|f| FaithfulSummary {
                k: f.k,
                syn_k: f.syn_k,
                established_k: f.established_k,
            }),
        }
    }

    /// Timers that are not compressed (unsupported), by name.
    pub fn not_compressed(&self) -> Vec<&str> {
        self.timers
            .iter()
            .filter(|t| matches!(t.status, Status::Unsupported { .. }))
            .map(|t| t.name.as_str())
            .collect()
    }
}

/// Formats a value with its unit; floats lose trailing zeros.
fn value(v: f64, unit: Unit) -> String {
    let mut text = if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    text.push_str(unit.suffix());
    text
}

impl fmt::Display for CompressionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "timer compression: k={} (HZ={}, kernel {}, mode {})",
            self.scale, self.hz, self.kernel_release, self.mode
        )?;
        let (s, e) = (&self.tcp_fidelity.syn, &self.tcp_fidelity.established);
        writeln!(
            f,
            "predicted TCP fidelity: SYN median {:.1}% max {:.1}%{}; established median {:.1}% \
             max {:.1}%{}",
            s.median_pct,
            s.max_pct,
            if s.sequence_match {
                ""
            } else {
                " (sequence differs)"
            },
            e.median_pct,
            e.max_pct,
            if e.sequence_match {
                ""
            } else {
                " (sequence differs)"
            },
        )?;
        if let Some(fk) = &self.largest_faithful_k {
            writeln!(
                f,
                "largest faithful k (TCP, 5% median / 15% max): {} (SYN {}, established {})",
                fk.k, fk.syn_k, fk.established_k
            )?;
        }
        writeln!(f)?;
        let header = [
            "TIMER",
            "DEFAULT",
            "TARGET",
            "APPLIED",
            "PRED.ERR",
            "MECHANISM",
            "STATUS",
        ];
        let rows: Vec<[String; 7]> = self
            .timers
            .iter()
            .map(|t| {
                let fixed = matches!(t.status, Status::Fixed { .. });
                [
                    t.name.clone(),
                    value(t.default as f64, t.unit),
                    if fixed {
                        "-".into()
                    } else {
                        value(t.target, t.unit)
                    },
                    value(t.applied as f64, t.unit),
                    t.predicted_error_pct
                        .map_or("-".to_string(), |p| format!("{p:.1}%")),
                    t.mechanism.label(),
                    t.status.label(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: [&str; 7]| -> fmt::Result {
            for (i, cell) in cells.iter().enumerate() {
                if i == 6 {
                    writeln!(f, "{cell}")?;
                } else if (1..=4).contains(&i) {
                    write!(f, "{cell:>w$}  ", w = widths[i])?;
                } else {
                    write!(f, "{cell:<w$}  ", w = widths[i])?;
                }
            }
            Ok(())
        };
        line(f, header)?;
        for row in &rows {
            line(
                f,
                [
                    &row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6],
                ],
            )?;
        }
        let notes: Vec<&TimerEntry> = self.timers.iter().filter(|t| !t.note.is_empty()).collect();
        if !notes.is_empty() {
            writeln!(f)?;
            for t in notes {
                writeln!(f, "{}: {}", t.name, t.note)?;
            }
        }
        let degraded: Vec<&TimerEntry> = self
            .timers
            .iter()
            .filter(|t| {
                matches!(
                    t.status,
                    Status::Clamped { .. } | Status::Unsupported { .. }
                ) && !t.affects.is_empty()
            })
            .collect();
        if !degraded.is_empty() {
            writeln!(f)?;
            for t in degraded {
                writeln!(
                    f,
                    "{} is {}: affects {}",
                    t.name,
                    if t.status.is_scaled() {
                        "clamped"
                    } else {
                        "not compressed"
                    },
                    t.affects.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::caps::SysctlDefaults;
    use super::super::plan::PlanError;
    use super::super::scale::TimeScale;
    use super::super::timers::TimerInputs;

    /// A markdown table of predicted errors at several k (used by `docs/compression.md`):
    /// chosen TCP values, predicted SYN/established fidelity (median/max %), and the predicted
    /// error of a few whole-unit timers.
    fn prediction_table(
        caps: &KernelCaps,
        defaults: &SysctlDefaults,
        inputs: &TimerInputs,
        ks: &[f64],
    ) -> Result<String, PlanError> {
        let mut out = String::from(
            "| k | initial RTO | SYN median/max (1-run bound) | rto_min | user timeout \
             | established median/max (1-run bound) | keepalive_intvl | udp conntrack \
             | neigh retrans |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for &k in ks {
            let Ok(scale) = TimeScale::new(k) else {
                continue;
            };
            let plan = Plan::compute(scale, caps, defaults, inputs)?;
            let applied = |name: &str| plan.entry(name).map_or(0, |e| e.applied);
            let err = |name: &str| {
                plan.entry(name)
                    .and_then(|e| e.predicted_error_pct)
                    .map_or("-".to_string(), |p| format!("{p:.1}%"))
            };
            let (s, e) = (&plan.tcp_fidelity().syn, &plan.tcp_fidelity().established);
            out.push_str(&format!(
                "| {k} | {} j | {:.1}% / {:.1}% ({:.1}%) | {} us | {} ms | {:.1}% / {:.1}% ({:.1}%) \
                 | {} | {} | {} |\n",
                applied("tcp.initial_rto"),
                s.median_pct,
                s.max_pct,
                s.worst_max_pct,
                applied("tcp.rto_min"),
                applied("tcp.user_timeout"),
                e.median_pct,
                e.max_pct,
                e.worst_max_pct,
                err("ipv4.tcp_keepalive_intvl"),
                err("netfilter.nf_conntrack_udp_timeout"),
                err("neigh.ipv4.retrans_time_ms (per interface)"),
            ));
        }
        Ok(out)
    }

    use super::*;
    use crate::compress::caps::BpfFeatures;

    fn report(k: f64, bpf: BpfFeatures) -> CompressionReport {
        let defaults = SysctlDefaults::linux_6_18();
        let caps = KernelCaps::given(250, "6.18.0", &defaults, bpf);
        let inputs = TimerInputs {
            syn_retries: Some(3),
            tcp_retries2: Some(5),
            ..TimerInputs::default()
        };
        let scale = TimeScale::new(k).expect("k");
        let plan = Plan::compute(scale, &caps, &defaults, &inputs).expect("plan");
        CompressionReport::new(&plan, &caps, None)
    }

    #[test]
    fn renders_aligned_table() {
        let text = report(20.0, BpfFeatures::all()).to_string();
        assert!(text.contains("k=20 (HZ=250"), "{text}");
        let header = text
            .lines()
            .find(|l| l.starts_with("TIMER"))
            .expect("header");
        let mech_col = header.find("MECHANISM").expect("column");
        let row = text
            .lines()
            .find(|l| l.starts_with("tcp.rto_min "))
            .expect("row");
        assert_eq!(
            row.find("sysctl net/ipv4/tcp_rto_min_us"),
            Some(mech_col),
            "{text}"
        );
        assert!(row.contains("16000us") || row.contains("8000us") || row.contains("4000us"));
    }

    #[test]
    fn json_has_every_timer_and_status() {
        let r = report(20.0, BpfFeatures::default());
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["scale"], 20.0);
        assert_eq!(
            json["timers"].as_array().map(Vec::len),
            Some(r.timers.len())
        );
        let statuses: Vec<&str> = json["timers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["status"]["kind"].as_str())
            .collect();
        assert!(statuses.contains(&"unsupported"));
        assert!(r.not_compressed().contains(&"tcp.initial_rto"));
        let text = r.to_string();
        assert!(
            text.contains("tcp.initial_rto is not compressed: affects syn-blackhole"),
            "{text}"
        );
    }

    /// Prints the table pasted into docs/compression.md and the k=20 report
    /// (`cargo test -p patchbay --lib compress::report -- --nocapture`).
    #[test]
    fn docs_prediction_table() {
        let defaults = SysctlDefaults::linux_6_18();
        let caps = KernelCaps::given(250, "6.18.0", &defaults, BpfFeatures::all());
        let inputs = TimerInputs {
            syn_retries: Some(3),
            tcp_retries2: Some(5),
            ..TimerInputs::default()
        };
        let table =
            prediction_table(&caps, &defaults, &inputs, &[5.0, 10.0, 20.0, 50.0]).expect("table");
        println!("{table}");
        assert_eq!(table.lines().count(), 6, "{table}");
        let faithful = Plan::largest_faithful_k(&caps, &defaults, &inputs).expect("faithful");
        let plan = Plan::compute(TimeScale::new(20.0).expect("k"), &caps, &defaults, &inputs)
            .expect("plan");
        println!("{}", CompressionReport::new(&plan, &caps, Some(&faithful)));
    }

    #[test]
    fn value_formatting() {
        assert_eq!(value(10.0, Unit::Milliseconds), "10ms");
        assert_eq!(value(1.5, Unit::Seconds), "1.5s");
        assert_eq!(value(3.0, Unit::Count), "3");
    }
}
