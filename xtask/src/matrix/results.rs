//! Reading a results directory (written by stage 2) into a [`KernelReport`], and deciding
//! whether a kernel passed. The decision ([`KernelReport::failures`]) is pure.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::libtest::{self, BinaryReport, Outcome};

/// One test binary's result on one kernel.
#[derive(Debug, Clone, Default)]
pub struct BinResult {
    /// Exit code (None: the binary never finished, e.g. guest timeout).
    pub exit_code: Option<i32>,
    /// Parsed libtest output.
    pub report: BinaryReport,
    /// Run time by the guest's clock, in milliseconds (virtual time for `uml`).
    pub millis: Option<u64>,
    /// Host wall time of the binary's guest, boot included (`uml` only), in milliseconds.
    pub wall_millis: Option<u64>,
    /// Last lines of stderr (for the failure message).
    pub stderr_tail: String,
    /// Interfaces present in the root namespace after this binary but not before the tests.
    pub leaked_links: Vec<String>,
}

/// Everything the matrix learned about one kernel.
#[derive(Debug, Clone, Default)]
pub struct KernelReport {
    /// `5.10`, `6.1`, `6.12`, `host` or `uml`.
    pub label: String,
    /// `uname -r` as seen by the tests.
    pub release: Option<String>,
    /// Debian package (`native` for the host, the kernel binary for `uml`).
    pub package: String,
    /// `kvm`, `tcg`, `native` or `uml time-travel=inf-cpu`.
    pub accel: String,
    /// Host-side wall time (boot to poweroff, or the native run).
    pub wall: Duration,
    /// Killed by the host-side timeout.
    pub timed_out: bool,
    /// Infrastructure error before the tests could run (fetch, boot...).
    pub error: Option<String>,
    /// Why this kernel was not run at all (e.g. no UML kernel built); not a failure.
    pub skipped: Option<String>,
    /// Stage 2 wrote its `done` marker.
    pub finished: bool,
    /// Per test binary.
    pub binaries: BTreeMap<String, BinResult>,
    /// Which probe produced `features`.
    pub probe: String,
    /// Kernel features (flattened `key → value`).
    pub features: BTreeMap<String, String>,
    /// Compression mechanism per timer (from `patchbay doctor --json`, when available).
    pub compression: BTreeMap<String, String>,
}

impl KernelReport {
    /// Reasons this kernel fails the matrix; empty means it passed.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.skipped.is_some() && self.error.is_none() {
            return f;
        }
        if let Some(e) = &self.error {
            f.push(e.clone());
        }
        if self.timed_out {
            f.push(format!("timeout after {:.0} s", self.wall.as_secs_f64()));
        } else if self.error.is_none() && !self.finished {
            f.push("stage 2 did not finish (see serial.log and stage2.log)".into());
        }
        for (name, b) in &self.binaries {
            let failed: Vec<&str> = b
                .report
                .tests
                .iter()
                .filter(|(_, o)| **o == Outcome::Failed)
                .map(|(n, _)| n.as_str())
                .collect();
            if !failed.is_empty() {
                f.push(format!("{name}: failed {}", failed.join(", ")));
            }
            if !b.leaked_links.is_empty() && self.label != super::HOST {
                f.push(format!(
                    "{name}: left interfaces in the root namespace: {}",
                    b.leaked_links.join(", ")
                ));
            }
            match b.exit_code {
                Some(0) if b.report.finished => {}
                Some(0) => f.push(format!("{name}: exited 0 without libtest's summary line")),
                Some(124) => f.push(format!("{name}: killed by the per-binary timeout")),
                Some(c) if failed.is_empty() => f.push(format!(
                    "{name}: exited {c} without a failing test: {}",
                    b.stderr_tail
                )),
                Some(_) => {}
                None if self.finished || !self.timed_out => f.push(format!("{name}: no exit code")),
                None => {}
            }
        }
        f
    }

    /// Totals (passed, failed, skipped, ignored) over all binaries.
    pub fn totals(&self) -> (usize, usize, usize, usize) {
        self.binaries.values().fold((0, 0, 0, 0), |t, b| {
            let c = b.report.counts();
            (t.0 + c.0, t.1 + c.1, t.2 + c.2, t.3 + c.3)
        })
    }
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A number written by stage 2 (`echo $?`), if the file exists.
fn parse_num<T: std::str::FromStr>(text: Option<String>, path: &Path) -> Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.map(|s| s.trim().parse::<T>())
        .transpose()
        .with_context(|| format!("{} does not hold a number", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// Fills `rep` from the files stage 2 wrote in `dir`.
pub fn collect(dir: &Path, bins: &[String], rep: &mut KernelReport) -> Result<()> {
    rep.finished = dir.join("done").exists();
    rep.release = read_opt(&dir.join("release"))?.map(|s| s.trim().to_owned());
    let tests = dir.join("tests");
    let base = link_names(&read_opt(&dir.join("links.base"))?.unwrap_or_default());
    for name in bins {
        let after =
            link_names(&read_opt(&tests.join(format!("{name}.links")))?.unwrap_or_default());
        let out = read_opt(&tests.join(format!("{name}.out")))?.unwrap_or_default();
        let err = read_opt(&tests.join(format!("{name}.err")))?.unwrap_or_default();
        let rc = read_opt(&tests.join(format!("{name}.rc")))?;
        let ms = read_opt(&tests.join(format!("{name}.ms")))?;
        let wall_ms = read_opt(&tests.join(format!("{name}.wall_ms")))?;
        rep.binaries.insert(
            name.clone(),
            BinResult {
                exit_code: parse_num(rc, &tests.join(format!("{name}.rc")))?,
                report: libtest::parse(&out),
                millis: parse_num(ms, &tests.join(format!("{name}.ms")))?,
                wall_millis: parse_num(wall_ms, &tests.join(format!("{name}.wall_ms")))?,
                stderr_tail: tail(&err, 3),
                leaked_links: after.difference(&base).cloned().collect(),
            },
        );
    }
    if let Some(json) = read_opt(&dir.join("doctor.json"))? {
        rep.probe = "patchbay doctor --json".into();
        let rc = read_opt(&dir.join("doctor.rc"))?.unwrap_or_default();
        rep.features
            .insert("doctor.exit".into(), rc.trim().to_owned());
        match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(v) => apply_doctor(&v, rep),
            Err(e) => {
                rep.features
                    .insert("doctor.json".into(), format!("unparsable: {e}"));
            }
        }
    } else if let Some(txt) = read_opt(&dir.join("probe.txt"))? {
        rep.probe = "placeholder probe (patchbay doctor not available yet)".into();
        rep.features = parse_probe(&txt);
    }
    Ok(())
}

/// Interface names from `ip -o link show` (`2: veth0@if3: <...> ...`).
pub fn link_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Parses the placeholder probe's `key=value` lines.
pub fn parse_probe(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Takes features and the compression report from doctor's JSON. Schema-tolerant: the
/// `compression` member may be a report with a `timers` list (entries with `name`,
/// `mechanism` and `status`, as in patchbay's `CompressionReport`), a map timer → mechanism
/// (string or object with `mechanism`), or a list of `{timer|name, mechanism}`; everything
/// else is flattened into features.
pub fn apply_doctor(v: &serde_json::Value, rep: &mut KernelReport) {
    use serde_json::Value;
    let Value::Object(map) = v else {
        flatten("doctor", v, &mut rep.features);
        return;
    };
    for (k, val) in map {
        if k != "compression" {
            flatten(k, val, &mut rep.features);
            continue;
        }
        let timers = match val {
            Value::Object(m) if m.get("timers").is_some_and(Value::is_array) => {
                for (mk, mv) in m {
                    if mk != "timers" && !mv.is_object() && !mv.is_array() {
                        rep.features.insert(format!("compression.{mk}"), scalar(mv));
                    }
                }
                m.get("timers").cloned().unwrap_or(Value::Null)
            }
            other => other.clone(),
        };
        match timers {
            Value::Object(timers) => {
                for (timer, m) in timers {
                    rep.compression.insert(timer.clone(), mechanism(&m));
                }
            }
            Value::Array(items) => {
                for it in &items {
                    let timer = it
                        .get("timer")
                        .or_else(|| it.get("name"))
                        .map_or_else(|| scalar(it), scalar);
                    rep.compression.insert(timer, mechanism(it));
                }
            }
            other => flatten(k, &other, &mut rep.features),
        }
    }
}

/// `mechanism` (and `status`, when present) of a timer entry, compactly.
fn mechanism(entry: &serde_json::Value) -> String {
    let Some(m) = entry.get("mechanism") else {
        return compact(entry);
    };
    match entry.get("status") {
        Some(st) => format!("{} ({})", compact(m), compact(st)),
        None => compact(m),
    }
}

/// One-line rendering of a JSON value: `Sysctl(key=net/ipv4/tcp_rto_min_us)`, or for
/// internally tagged enums `sysctl(key=net/ipv4/tcp_rto_min_us)`.
fn compact(v: &serde_json::Value) -> String {
    use serde_json::Value;
    if let Some(Value::String(kind)) = v.get("kind") {
        let rest: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "kind")
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect();
        return if rest.is_empty() {
            kind.clone()
        } else {
            format!("{kind}({})", rest.join(", "))
        };
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Object(m) if m.len() == 1 => {
            let (k, inner) = m
                .iter()
                .next()
                .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v));
            if inner.is_object() {
                format!("{k}({})", compact(inner))
            } else {
                format!("{k}={}", compact(inner))
            }
        }
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Flattens JSON into `a.b.c → value`. Arrays of objects with a `name` become `prefix.<name>`;
/// an `{ok, detail}` check renders as `yes: detail` / `no: detail`.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if let Some(Value::Bool(ok)) = m.get("ok") {
                let verdict = if *ok { "yes" } else { "no" };
                let detail = m.get("detail").map(scalar).unwrap_or_default();
                let text = if detail.is_empty() {
                    verdict.to_owned()
                } else {
                    format!("{verdict}: {detail}")
                };
                out.insert(prefix.to_owned(), text);
                return;
            }
            for (k, val) in m {
                flatten(&format!("{prefix}.{k}"), val, out);
            }
        }
        Value::Array(items)
            if items
                .iter()
                .all(|i| i.get("name").is_some_and(Value::is_string)) =>
        {
            for it in items {
                let name = it.get("name").map(scalar).unwrap_or_default();
                let mut rest = it.clone();
                if let Value::Object(m) = &mut rest {
                    m.remove("name");
                }
                flatten(&format!("{prefix}.{name}"), &rest, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), scalar(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(out: &str, rc: i32) -> BinResult {
        BinResult {
            exit_code: Some(rc),
            report: libtest::parse(out),
            ..Default::default()
        }
    }

    #[test]
    fn deliberately_failing_test_fails_the_kernel() {
        let out = "running 2 tests\ntest good ... ok\ntest deliberately_failing ... FAILED\n\n\
failures:\n\n---- deliberately_failing stdout ----\nthread panicked: assertion failed\n\n\
test result: FAILED. 1 passed; 1 failed; 0 ignored\n";
        let rep = KernelReport {
            finished: true,
            binaries: BTreeMap::from([("smoke".into(), bin(out, 101))]),
            ..Default::default()
        };
        assert_eq!(rep.failures(), ["smoke: failed deliberately_failing"]);
        assert_eq!(rep.totals(), (1, 1, 0, 0));
    }

    #[test]
    fn passing_and_skipping_kernel_passes() {
        let out = "test a ... ok\ntest b ... ok\n\nsuccesses:\n\n---- b stdout ----\n\
PATCHBAY-SKIP: no netem\n\ntest result: ok. 2 passed; 0 failed\n";
        let rep = KernelReport {
            finished: true,
            binaries: BTreeMap::from([("smoke".into(), bin(out, 0))]),
            ..Default::default()
        };
        assert!(rep.failures().is_empty(), "{:?}", rep.failures());
        assert_eq!(rep.totals(), (1, 0, 1, 0));
    }

    #[test]
    fn leaked_interfaces_fail_a_guest() {
        let base = link_names("1: lo: <LOOPBACK,UP> mtu 65536\n");
        let after = link_names("1: lo: <LOOPBACK,UP> mtu 65536\n5: wan@p1: <BROADCAST> mtu 1500\n");
        let leaked: Vec<String> = after.difference(&base).cloned().collect();
        assert_eq!(leaked, ["wan"]);
        let mut b = bin("test a ... ok\n\ntest result: ok.\n", 0);
        b.leaked_links = leaked;
        let rep = KernelReport {
            label: "6.1".into(),
            finished: true,
            binaries: BTreeMap::from([("lab".into(), b)]),
            ..Default::default()
        };
        assert_eq!(
            rep.failures(),
            ["lab: left interfaces in the root namespace: wan"]
        );
    }

    #[test]
    fn crash_timeout_and_unfinished_fail() {
        let crashed = KernelReport {
            finished: true,
            binaries: BTreeMap::from([("smoke".into(), bin("running 1 test\ntest a ... ", 134))]),
            ..Default::default()
        };
        assert!(crashed.failures()[0].contains("exited 134 without a failing test"));
        let timeout = KernelReport {
            timed_out: true,
            wall: Duration::from_secs(9),
            ..Default::default()
        };
        assert_eq!(timeout.failures(), ["timeout after 9 s"]);
        assert!(!KernelReport::default().failures().is_empty());
    }

    #[test]
    fn skipped_kernel_is_not_a_failure() {
        let rep = KernelReport {
            label: "uml".into(),
            skipped: Some("no UML kernel; build one with `cargo xtask build-uml`".into()),
            ..Default::default()
        };
        assert!(rep.failures().is_empty(), "{:?}", rep.failures());
        assert_eq!(rep.totals(), (0, 0, 0, 0));
    }

    #[test]
    fn doctor_json_features_and_compression() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"kernel":{"release":"6.1.0"},"sysctls":{"tcp_rto_min_us":false},
                "compression":{"rto_min":{"mechanism":"bpf TCP_BPF_RTO_MIN"},"syn":"sysctl"}}"#,
        )
        .unwrap();
        let mut rep = KernelReport::default();
        apply_doctor(&v, &mut rep);
        assert_eq!(rep.features["kernel.release"], "6.1.0");
        assert_eq!(rep.features["sysctls.tcp_rto_min_us"], "false");
        assert_eq!(rep.compression["rto_min"], "bpf TCP_BPF_RTO_MIN");
        assert_eq!(rep.compression["syn"], "sysctl");
        let v: serde_json::Value = serde_json::from_str(
            r#"{"checks":[{"name":"tc.netem","ok":false,"detail":"Unknown qdisc"},{"name":"veth","ok":true,"detail":""}]}"#,
        )
        .unwrap();
        apply_doctor(&v, &mut rep);
        assert_eq!(rep.features["checks.tc.netem"], "no: Unknown qdisc");
        assert_eq!(rep.features["checks.veth"], "yes");
        let v: serde_json::Value = serde_json::from_str(
            r#"{"compression":{"scale":10.0,"mode":"full","timers":[
                {"name":"tcp.rto_min","mechanism":{"Bpf":{"field":"rto_min_us"}},"status":"Exact"},
                {"name":"tcp.rto_max","mechanism":"None","status":"Unsupported"}]}}"#,
        )
        .unwrap();
        apply_doctor(&v, &mut rep);
        assert_eq!(
            rep.compression["tcp.rto_min"],
            "Bpf(field=rto_min_us) (Exact)"
        );
        assert_eq!(rep.compression["tcp.rto_max"], "None (Unsupported)");
        assert_eq!(rep.features["compression.mode"], "full");
        let v: serde_json::Value = serde_json::from_str(
            r#"{"compression":{"timers":[{"name":"tcp.initial_rto",
                "mechanism":{"kind":"bpf","field":"timeout_init_jiffies"},
                "status":{"kind":"rounded","error_pct":-4.0}}]}}"#,
        )
        .unwrap();
        apply_doctor(&v, &mut rep);
        assert_eq!(
            rep.compression["tcp.initial_rto"],
            "bpf(field=timeout_init_jiffies) (rounded(error_pct=-4.0))"
        );
    }
}
