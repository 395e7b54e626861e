//! What the suite asks of cargo-nextest, and what it reads back: the profiles, the test list
//! (`cargo nextest list --message-format json`) and the per-test results (JUnit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The profile of real-time runs.
pub const PROFILE_REAL: &str = "iroh-real";
/// The profile of virtual-time runs (one guest per test process).
pub const PROFILE_VT: &str = "iroh-vt";

/// The nextest configuration the suite runs with (`--config-file`; iroh's published crate has
/// none). Both profiles write JUnit to `<store>/<profile>/junit.xml`. A test that hangs is
/// killed after 5 min; in virtual time the guard of `patchbay vt` (300 s wall) ends a busy
/// guest first.
pub fn config(store: &Path) -> Result<String> {
    let store = store
        .to_str()
        .context("the nextest store dir is not UTF-8")?;
    let store = serde_json::to_string(store)?;
    Ok(format!(
        "# Written by `cargo xtask iroh-suite`.\n\
         [store]\n\
         dir = {store}\n\n\
         [profile.{PROFILE_REAL}]\n\
         fail-fast = false\n\
         slow-timeout = {{ period = \"60s\", terminate-after = 5 }}\n\
         [profile.{PROFILE_REAL}.junit]\n\
         path = \"junit.xml\"\n\n\
         [profile.{PROFILE_VT}]\n\
         fail-fast = false\n\
         slow-timeout = {{ period = \"60s\", terminate-after = 6 }}\n\
         [profile.{PROFILE_VT}.junit]\n\
         path = \"junit.xml\"\n"
    ))
}

/// One test of the listed binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The test's name (`nat::nat_none_x_none`).
    pub name: String,
    /// Marked `#[ignore]`.
    pub ignored: bool,
    /// Selected by the filter and `--run-ignored`.
    pub selected: bool,
}

/// The listed test binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestList {
    /// The binary's path.
    pub binary: PathBuf,
    /// The directory nextest runs it in (the package dir).
    pub cwd: PathBuf,
    /// Its tests, sorted by name.
    pub tests: Vec<Listed>,
}

/// Reads the output of `cargo nextest list --message-format json` for one test binary.
pub fn parse_list(json: &str) -> Result<TestList> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("cargo nextest list printed no JSON")?;
    let suites = v["rust-suites"]
        .as_object()
        .context("cargo nextest list: no rust-suites")?;
    let suite = suites
        .values()
        .next()
        .context("cargo nextest list found no test binary")?;
    let text = |k: &str| {
        suite[k]
            .as_str()
            .map(PathBuf::from)
            .with_context(|| format!("cargo nextest list: no {k}"))
    };
    let cases = suite["testcases"]
        .as_object()
        .context("cargo nextest list: no testcases")?;
    let tests = cases
        .iter()
        .map(|(name, case)| Listed {
            name: name.clone(),
            ignored: case["ignored"].as_bool().unwrap_or(false),
            selected: case["filter-match"]["status"] == "matches",
        })
        .collect();
    Ok(TestList {
        binary: text("binary-path")?,
        cwd: text("cwd")?,
        tests,
    })
}

/// How one test ended, as JUnit tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `passed`, or the failure's kind (`failed`, `timed out`, ...).
    pub status: String,
    /// Wall time in seconds, as nextest measured it.
    pub time_s: f64,
    /// The failure's message (first line), if it failed.
    pub message: Option<String>,
}

/// The test cases of nextest's JUnit report, by name.
pub fn parse_junit(xml: &str) -> Result<BTreeMap<String, Outcome>> {
    let doc = roxmltree::Document::parse(xml).context("nextest's JUnit report is not XML")?;
    let mut out = BTreeMap::new();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let name = case.attribute("name").context("a testcase without name")?;
        let time_s = case
            .attribute("time")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.0);
        let failure = case
            .children()
            .find(|c| c.has_tag_name("failure") || c.has_tag_name("error"));
        let (status, message) = match failure {
            None => ("passed".to_string(), None),
            Some(f) => {
                let kind = f.attribute("type").unwrap_or("failed");
                let status = if kind.contains("timeout") || kind.contains("timed out") {
                    "timed out"
                } else {
                    "failed"
                };
                (
                    status.to_string(),
                    f.attribute("message")
                        .map(|m| m.lines().next().unwrap_or("").to_string()),
                )
            }
        };
        out.insert(
            name.to_string(),
            Outcome {
                status,
                time_s,
                message,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_puts_the_store_where_the_report_is_read() {
        let c = config(Path::new("/c/ours-1/target/nextest")).expect("config");
        assert!(
            c.contains("[store]\ndir = \"/c/ours-1/target/nextest\"\n"),
            "{c}"
        );
        assert!(c.contains(&format!("[profile.{PROFILE_VT}.junit]")), "{c}");
    }

    #[test]
    fn the_list_names_the_binary_and_what_the_filter_selects() {
        let json = r#"{"rust-suites": {"iroh::patchbay": {
            "binary-path": "/t/debug/deps/patchbay-1", "cwd": "/w/iroh",
            "testcases": {
              "holepunch_simple": {"ignored": false, "filter-match": {"status": "matches"}},
              "nat::nat_strict_x_strict": {"ignored": true,
                 "filter-match": {"status": "mismatch", "reason": "ignored"}}}}}}"#;
        let l = parse_list(json).expect("parses");
        assert_eq!(l.binary, PathBuf::from("/t/debug/deps/patchbay-1"));
        assert_eq!(l.cwd, PathBuf::from("/w/iroh"));
        assert_eq!(
            l.tests,
            vec![
                Listed {
                    name: "holepunch_simple".into(),
                    ignored: false,
                    selected: true
                },
                Listed {
                    name: "nat::nat_strict_x_strict".into(),
                    ignored: true,
                    selected: false
                },
            ]
        );
        assert!(parse_list("{}").is_err());
    }

    #[test]
    fn junit_gives_each_outcome_and_time() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3"><testsuite name="iroh::patchbay" tests="3">
  <testcase name="a" classname="iroh::patchbay" time="1.500"/>
  <testcase name="b" classname="iroh::patchbay" time="2.0">
    <failure message="thread &apos;b&apos; panicked&#10;more" type="test failure with exit code 101">x</failure>
    <system-out>out</system-out>
  </testcase>
  <testcase name="c" classname="iroh::patchbay" time="300.0">
    <failure type="test timeout">x</failure>
  </testcase>
</testsuite></testsuites>"#;
        let r = parse_junit(xml).expect("parses");
        assert_eq!(r["a"].status, "passed");
        assert_eq!(r["a"].time_s, 1.5);
        assert_eq!(r["b"].status, "failed");
        assert_eq!(r["b"].message.as_deref(), Some("thread 'b' panicked"));
        assert_eq!(r["c"].status, "timed out");
    }
}
