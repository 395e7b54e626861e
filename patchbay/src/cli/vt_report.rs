//! What `patchbay vt` leaves for whoever runs a whole suite through it: one JSON line per run
//! (`--summary`) and the per-test directory of `--keep-writes` under nextest.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vt::{VtError, VtOutcome};
use anyhow::Context;
use serde::Serialize;

/// The marker file of a directory `--keep-writes` made for one nextest test: only such a
/// directory is emptied before the test's next run.
const KEEP_MARKER: &str = ".patchbay-vt-writes";

/// One line of `--summary`.
#[derive(Debug, Serialize)]
struct SummaryLine<'a> {
    /// `NEXTEST_TEST_NAME`, when nextest runs the command.
    test: Option<String>,
    /// `NEXTEST_BINARY_ID`.
    binary_id: Option<String>,
    /// `NEXTEST_TEST_PHASE` (`list` or `run`).
    phase: Option<String>,
    argv: Vec<String>,
    seed: Option<u64>,
    /// The command's exit code; `None` when the guest failed (see `error`).
    exit_code: Option<i32>,
    /// Host wall time of the whole run, boot and power-off included.
    wall_s: f64,
    /// Virtual time the command took.
    virtual_s: Option<f64>,
    /// Host wall time from starting UML to the command's start.
    boot_s: Option<f64>,
    error: Option<String>,
    warnings: &'a [String],
}

/// Appends the run's line to `file` (one `write` of a whole line, with `O_APPEND`, so that
/// parallel runners do not interleave).
pub fn append_summary(
    file: &Path,
    argv: &[OsString],
    result: &Result<VtOutcome, VtError>,
    wall: Duration,
) -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).ok();
    let (out, error) = match result {
        Ok(o) => (Some(o), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let line = SummaryLine {
        test: var("NEXTEST_TEST_NAME"),
        binary_id: var("NEXTEST_BINARY_ID"),
        phase: var("NEXTEST_TEST_PHASE"),
        argv: argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        seed: out.and_then(|o| o.seed),
        exit_code: out.map(|o| o.exit_code),
        wall_s: out.map_or(wall, |o| o.wall).as_secs_f64(),
        virtual_s: out.and_then(|o| o.virtual_elapsed).map(|d| d.as_secs_f64()),
        boot_s: out
            .and_then(|o| o.boot_to_command_wall)
            .map(|d| d.as_secs_f64()),
        error,
        warnings: out.map_or(&[], |o| &o.warnings),
    };
    let mut text = serde_json::to_string(&line)?;
    text.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("opening the summary file {}", file.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("appending to the summary file {}", file.display()))
}

/// The directory a run's writes go to: `dir` itself, or under nextest
/// `dir/<binary id>/<test name>`, emptied first if an earlier run of that test made it.
pub fn keep_writes_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let test = std::env::var("NEXTEST_TEST_NAME").ok();
    let binary = std::env::var("NEXTEST_BINARY_ID").ok();
    let Some(sub) = per_test_dir(binary.as_deref(), test.as_deref()) else {
        return Ok(dir.to_path_buf());
    };
    let path = dir.join(sub);
    if path.join(KEEP_MARKER).is_file() {
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("emptying {} for this run's writes", path.display()))?;
    } else if path.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "{} is not empty and was not made by --keep-writes: choose another directory",
            path.display()
        );
    }
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::write(path.join(KEEP_MARKER), "")
        .with_context(|| format!("marking {}", path.display()))?;
    Ok(path)
}

/// `<binary id>/<test name>` for a nextest test run (names with `/` are made safe).
fn per_test_dir(binary: Option<&str>, test: Option<&str>) -> Option<PathBuf> {
    let safe = |s: &str| s.replace('/', "_");
    let test = test?;
    Some(Path::new(&safe(binary.unwrap_or("tests"))).join(safe(test)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nextest_test_gets_its_own_directory() {
        assert_eq!(per_test_dir(None, None), None);
        assert_eq!(
            per_test_dir(Some("iroh::patchbay"), Some("nat::nat_none_x_none")),
            Some(PathBuf::from("iroh::patchbay/nat::nat_none_x_none"))
        );
        assert_eq!(
            per_test_dir(None, Some("a/b")),
            Some(PathBuf::from("tests/a_b"))
        );
    }
}
