//! Parser for libtest's human output (`--test-threads=1 --show-output` or `--nocapture`).
//!
//! Pure: takes the text a test binary wrote on stdout and returns one outcome per test, plus
//! the skip reasons printed by kernel-dependent tests as `PATCHBAY-SKIP: <reason>`.

use std::collections::BTreeMap;

/// Marker printed on stdout by a test that skipped because a kernel feature is missing.
pub const SKIP_MARKER: &str = "PATCHBAY-SKIP:";

/// Outcome of one test as seen by the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// libtest reported `ok` and the test printed no skip marker.
    Passed,
    /// libtest reported `ok` but the test printed `PATCHBAY-SKIP: <reason>`.
    Skipped(String),
    /// libtest reported `FAILED`.
    Failed,
    /// `#[ignore]`d test (reason from `#[ignore = "..."]` if any).
    Ignored(String),
}

/// Parsed output of one test binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryReport {
    /// Outcome per test name.
    pub tests: BTreeMap<String, Outcome>,
    /// Whether libtest printed its final `test result:` line (false: crash, abort, timeout).
    pub finished: bool,
}

impl BinaryReport {
    /// Counts (passed, failed, skipped, ignored).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for o in self.tests.values() {
            match o {
                Outcome::Passed => c.0 += 1,
                Outcome::Failed => c.1 += 1,
                Outcome::Skipped(_) => c.2 += 1,
                Outcome::Ignored(_) => c.3 += 1,
            }
        }
        c
    }
}

/// Parses libtest output. Lines may end in CRLF.
pub fn parse(stdout: &str) -> BinaryReport {
    let mut report = BinaryReport::default();
    let mut skips: BTreeMap<String, String> = BTreeMap::new();
    // Test whose `test NAME ... ` line is still waiting for its result (--nocapture).
    let mut pending: Option<String> = None;
    // Test whose captured output section (`---- NAME stdout ----`) we are in (--show-output).
    let mut section: Option<String> = None;
    for raw in stdout.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, result)) = rest.split_once(" ... ") {
                let name = name.trim().to_owned();
                match parse_result(result) {
                    Some(o) => {
                        report.tests.insert(name, o);
                        pending = None;
                    }
                    None => {
                        if let Some(idx) = result.find(SKIP_MARKER) {
                            let reason = result[idx + SKIP_MARKER.len()..].trim().to_owned();
                            skips.entry(name.clone()).or_insert(reason);
                        }
                        pending = Some(name);
                    }
                }
                section = None;
                continue;
            }
            if rest.starts_with("result: ") {
                report.finished = true;
                section = None;
                continue;
            }
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" ----"))
        {
            let name = name.strip_suffix(" stdout").unwrap_or(name);
            section = Some(name.to_owned());
            continue;
        }
        if let Some(idx) = line.find(SKIP_MARKER) {
            let reason = line[idx + SKIP_MARKER.len()..].trim().to_owned();
            if let Some(owner) = section.as_ref().or(pending.as_ref()) {
                skips.entry(owner.clone()).or_insert(reason);
            }
            // A marker with an owner still pending means the result comes on a later line.
            if let Some(p) = &pending
                && line.trim_end().ends_with(" ok")
            {
                report.tests.insert(p.clone(), Outcome::Passed);
                pending = None;
            }
            continue;
        }
        if let Some(p) = pending.clone() {
            // --nocapture: the result is printed at the end of the test's own output.
            let t = line.trim_end();
            for (suffix, outcome) in [("ok", Outcome::Passed), ("FAILED", Outcome::Failed)] {
                if t == suffix || t.ends_with(&format!(" {suffix}")) {
                    report.tests.insert(p.clone(), outcome);
                    pending = None;
                    break;
                }
            }
        }
        if line == "successes:" || line == "failures:" {
            section = None;
        }
    }
    for (name, reason) in skips {
        if let Some(o @ Outcome::Passed) = report.tests.get_mut(&name) {
            *o = Outcome::Skipped(reason);
        }
    }
    report
}

fn parse_result(result: &str) -> Option<Outcome> {
    match result.trim() {
        "ok" => Some(Outcome::Passed),
        "FAILED" => Some(Outcome::Failed),
        r => r
            .strip_prefix("ignored")
            .map(|rest| Outcome::Ignored(rest.trim_start_matches(',').trim().to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_OUTPUT: &str = "\nrunning 4 tests\r\ntest netem::delay ... ok\r\n\
test netem::loss ... FAILED\ntest veth::pair ... ok\ntest slow ... ignored, needs uml\n\n\
successes:\n\n---- netem::delay stdout ----\nPATCHBAY-SKIP: netem qdisc not available (CONFIG_NET_SCH_NETEM)\n\n\
---- veth::pair stdout ----\ncreated veth\n\nsuccesses:\n    netem::delay\n    veth::pair\n\n\
failures:\n\n---- netem::loss stdout ----\nthread 'netem::loss' panicked at tests/x.rs:3:5:\nboom\n\n\
failures:\n    netem::loss\n\n\
test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n";

    #[test]
    fn show_output_with_skip_fail_and_ignore() {
        let r = parse(SHOW_OUTPUT);
        assert!(r.finished);
        assert_eq!(
            r.tests["netem::delay"],
            Outcome::Skipped("netem qdisc not available (CONFIG_NET_SCH_NETEM)".into())
        );
        assert_eq!(r.tests["netem::loss"], Outcome::Failed);
        assert_eq!(r.tests["veth::pair"], Outcome::Passed);
        assert_eq!(r.tests["slow"], Outcome::Ignored("needs uml".into()));
        assert_eq!(r.counts(), (1, 1, 1, 1));
    }

    #[test]
    fn nocapture_interleaved_output() {
        let out = "running 2 tests\ntest a ... PATCHBAY-SKIP: no bpffs\nok\n\
test b ... some output\nmore\nok\n\ntest result: ok. 2 passed; 0 failed\n";
        let r = parse(out);
        assert_eq!(r.tests["a"], Outcome::Skipped("no bpffs".into()));
        assert_eq!(r.tests["b"], Outcome::Passed);
        assert!(r.finished);
    }

    #[test]
    fn crash_without_summary_is_unfinished() {
        let r = parse("running 1 test\ntest a ... ");
        assert!(!r.finished);
        assert!(r.tests.is_empty());
    }
}
