//! The `uml` kernel: the project's User-Mode-Linux kernel (`cargo xtask build-uml`) in time-travel mode
//! (`time-travel=inf-cpu`), driven through `patchbay vt`. Unlike the QEMU guests, which boot
//! once for the whole stage 2, it boots one short guest per step (the probe, then each test
//! binary): a boot costs well under a second, and each binary gets its own wall-clock guard,
//! since a busy loop never advances virtual time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::script::StepScript;

/// Label of the UML kernel on the command line and in the document.
pub const UML: &str = "uml";

/// Environment variable naming the UML `linux` binary (as in `patchbay::vt::UML_ENV`).
pub const UML_ENV: &str = "PATCHBAY_UML";

/// Wall-clock guard of one guest (one test binary). Generous: a binary that waits on timers
/// finishes in seconds of wall time; only a busy loop (which never advances virtual time)
/// or a hang reaches it. In-guest, each binary also has the per-binary timeout, in virtual
/// seconds.
pub const GUARD: Duration = Duration::from_secs(600);

/// What the `uml` kernel runs.
#[derive(Debug, Clone)]
pub struct UmlGuest {
    /// The UML `linux` binary.
    pub kernel: PathBuf,
    /// The `patchbay` binary with the `vt` subcommand.
    pub patchbay: String,
    /// Scripts in order (probe first), written as `<results>/<name>.sh`.
    pub steps: Vec<StepScript>,
}

/// How the steps went.
#[derive(Debug, Clone, Default)]
pub struct UmlRun {
    /// Host wall time of all steps, boots included.
    pub wall: Duration,
    /// The kernel's total timeout cut a step short or left steps unrun.
    pub timed_out: bool,
    /// The probe's guest did not run to the end (with `patchbay vt`'s message).
    pub probe_error: Option<String>,
}

/// Where the matrix looks for the UML kernel, in order: `explicit` (what `cargo xtask test`
/// just built), `$PATCHBAY_UML`, then the most recently built `<dir>/<version>-<hash>/linux`
/// over all `cache_dirs` (`target/uml` of `cargo xtask build-uml`, `~/.cache/patchbay/uml` of
/// `cargo xtask test`). The error is the reason the column is skipped.
pub fn find_kernel(
    explicit: Option<&Path>,
    env: Option<PathBuf>,
    cache_dirs: &[PathBuf],
) -> Result<PathBuf, String> {
    if let Some(p) = explicit.map(Path::to_path_buf).or(env) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{UML_ENV}={} is not a file; build the kernel with `cargo xtask build-uml`",
                p.display()
            ))
        };
    }
    if let Some(found) = newest(cache_dirs.iter().flat_map(|d| candidates(d)).collect()) {
        return Ok(found);
    }
    let searched: Vec<String> = cache_dirs
        .iter()
        .map(|d| format!("{}/*/linux", d.display()))
        .collect();
    Err(format!(
        "no UML kernel ({UML_ENV} unset, none in {}); build one with `cargo xtask build-uml`",
        searched.join(", ")
    ))
}

/// `(entry name, mtime, path)` of every `<dir>/<entry>/linux` file.
fn candidates(dir: &Path) -> Vec<(String, SystemTime, PathBuf)> {
    // A missing or unreadable directory simply holds no kernel.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let linux = e.path().join("linux");
            let meta = std::fs::metadata(&linux).ok().filter(|m| m.is_file())?;
            Some((name, meta.modified().ok()?, linux))
        })
        .collect()
}

/// The kernel version at the start of a cache entry name (`7.3.4-1~bpo13+1-<hash>` gives
/// `(7, 3, 4)`); `(0, 0, 0)` for names that do not start with one.
fn entry_version(name: &str) -> (u32, u32, u32) {
    let head = name.split(['-', '~', '+']).next().unwrap_or("");
    let mut n = head.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    )
}

/// The default of `(entry name, mtime, path)` candidates, `build-*` work directories aside:
/// the highest kernel version (as `patchbay::vt::find_uml_binary` picks), then the most
/// recently built; ties go to the larger path. Pure.
fn newest(mut found: Vec<(String, SystemTime, PathBuf)>) -> Option<PathBuf> {
    found.retain(|(name, _, _)| !name.starts_with("build-"));
    found
        .into_iter()
        .max_by(|a, b| (entry_version(&a.0), a.1, &a.2).cmp(&(entry_version(&b.0), b.1, &b.2)))
        .map(|(_, _, p)| p)
}

/// How the document names the kernel: by its cache entry (for `cargo xtask build-uml`,
/// `<Debian source version>-<hash of config fragment and patch>`), not the machine's path.
pub fn package_name(kernel: &Path) -> String {
    let entry = kernel.parent().and_then(Path::file_name).map_or_else(
        || kernel.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!("UML {entry}/linux")
}

/// The guard of the next step: [`GUARD`], cut to what is left of the kernel's `timeout`;
/// `None` when less than a second is left.
pub fn step_guard(timeout: Duration, elapsed: Duration) -> Option<Duration> {
    let left = timeout.saturating_sub(elapsed);
    (left >= Duration::from_secs(1)).then(|| left.min(GUARD))
}

/// Runs each step in its own guest (its log in `vt-<step>.log`), writes the host wall time of
/// each binary (`tests/<name>.wall_ms`), and fills in `tests/<name>.rc` (124 when the guard
/// fired) and `.err` (with `patchbay vt`'s message) for a guest that never finished its
/// script. Writes `done` when every step ran.
pub fn run(g: &UmlGuest, dir: &Path, timeout: Duration) -> Result<UmlRun> {
    let start = Instant::now();
    let mut out = UmlRun::default();
    let tests = dir.join("tests");
    std::fs::create_dir_all(&tests).with_context(|| format!("creating {}", tests.display()))?;
    for step in &g.steps {
        let Some(guard) = step_guard(timeout, start.elapsed()) else {
            out.timed_out = true;
            break;
        };
        let script = dir.join(format!("{}.sh", step.name));
        std::fs::write(&script, &step.text)
            .with_context(|| format!("writing {}", script.display()))?;
        let log = dir.join(format!("vt-{}.log", step.name));
        let t = Instant::now();
        let code = vt(g, dir, &script, guard, &log)?;
        let wall = t.elapsed();
        keep_vt_files(dir, &step.name)?;
        let fired = wall >= guard;
        if fired && guard < GUARD {
            out.timed_out = true;
        }
        let why = || {
            let what = if fired {
                format!("wall-clock guard of {} s fired", guard.as_secs())
            } else {
                format!("patchbay vt exited {code:?}")
            };
            format!("{what}: {}", tail(&log, 3))
        };
        if step.name == "probe" {
            if !dir.join("doctor.rc").exists() && !dir.join("probe.txt").exists() {
                out.probe_error = Some(format!("the probe's UML guest: {}", why()));
            }
            continue;
        }
        let file = |ext: &str| tests.join(format!("{}.{ext}", step.name));
        write(&file("wall_ms"), &format!("{}\n", wall.as_millis()))?;
        if !file("rc").exists() {
            let rc = if fired { 124 } else { code.unwrap_or(-1) };
            write(&file("rc"), &format!("{rc}\n"))?;
            let mut err = std::fs::read_to_string(file("err")).unwrap_or_default();
            err += &format!("UML guest: {}\n", why());
            write(&file("err"), &err)?;
        }
    }
    out.wall = start.elapsed();
    if !out.timed_out {
        write(
            &dir.join("stage2.ms"),
            &format!("{}\n", out.wall.as_millis()),
        )?;
        write(&dir.join("done"), "done\n")?;
    }
    Ok(out)
}

/// `patchbay vt --guard G --results-dir DIR -- /bin/sh SCRIPT`, output to `log`. The working
/// directory is the results directory, so a target directory under /tmp (hidden in the
/// guest) is exposed read-only. Returns the exit code (None: killed by a signal).
fn vt(g: &UmlGuest, dir: &Path, script: &Path, guard: Duration, log: &Path) -> Result<Option<i32>> {
    let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut c = Command::new(&g.patchbay);
    c.arg("vt")
        .arg("--guard")
        .arg(guard.as_secs().to_string())
        .arg("--results-dir")
        .arg(dir)
        .arg("--")
        .arg("/bin/sh")
        .arg(script)
        .current_dir(dir)
        // The guest gets exactly this environment (plus PATCHBAY_VT*); the script exports
        // the rest, as for the other kernels.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(UML_ENV, &g.kernel)
        .stdin(Stdio::null())
        .stdout(f.try_clone().context("duplicating the log fd")?)
        .stderr(f);
    if let Some(tmp) = std::env::var_os("TMPDIR") {
        c.env("TMPDIR", tmp);
    }
    let status = c
        .status()
        .with_context(|| format!("running {c:?} (log in {})", log.display()))?;
    Ok(status.code())
}

/// `patchbay vt` leaves the guest's `exit_code` and `uptime` (virtual seconds at command
/// start and end) in the results directory, and `stdout`/`stderr`, which the step's log
/// already holds: keep the first two per step, drop the others before the next guest.
fn keep_vt_files(dir: &Path, step: &str) -> Result<()> {
    for name in ["exit_code", "uptime", "stdout", "stderr"] {
        let from = dir.join(name);
        let res = if name == "stdout" || name == "stderr" {
            std::fs::remove_file(&from)
        } else {
            std::fs::rename(&from, dir.join(format!("vt-{step}.{name}")))
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("moving {}", from.display())),
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The last `n` non-empty lines of a log, joined.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(n)..].join(" | ")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_skips_build_dirs_and_prefers_the_latest() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let found = vec![
            ("6.1-aaa".into(), t(10), PathBuf::from("/c/6.1-aaa/linux")),
            (
                "build-6.1-bbb".into(),
                t(30),
                PathBuf::from("/c/build/linux"),
            ),
            ("6.1-bbb".into(), t(20), PathBuf::from("/c/6.1-bbb/linux")),
        ];
        assert_eq!(
            newest(found.clone()),
            Some(PathBuf::from("/c/6.1-bbb/linux"))
        );
        assert_eq!(newest(Vec::new()), None);
        let mut more = found;
        more.push((
            "7.3.4-1~bpo13+1-ccc".into(),
            t(5),
            PathBuf::from("/c/7.3/linux"),
        ));
        assert_eq!(newest(more), Some(PathBuf::from("/c/7.3/linux")));
        assert_eq!(entry_version("6.12.117-1~deb12u1-x"), (6, 12, 117));
    }

    #[test]
    fn missing_kernel_is_a_skip_reason_naming_build_uml() {
        let why = find_kernel(None, None, &[PathBuf::from("/nonexistent/uml")]).unwrap_err();
        assert!(why.contains("cargo xtask build-uml"), "{why}");
        assert!(why.contains("/nonexistent/uml/*/linux"), "{why}");
        let why = find_kernel(None, Some("/nonexistent/linux".into()), &[]).unwrap_err();
        assert!(
            why.contains("PATCHBAY_UML=/nonexistent/linux is not a file"),
            "{why}"
        );
        assert!(why.contains("cargo xtask build-uml"), "{why}");
    }

    #[test]
    fn package_is_the_cache_entry() {
        assert_eq!(
            package_name(Path::new("/root/.cache/patchbay/uml/6.1.172-1-31b8/linux")),
            "UML 6.1.172-1-31b8/linux"
        );
    }

    #[test]
    fn guard_is_cut_to_the_kernel_timeout() {
        let s = Duration::from_secs;
        assert_eq!(step_guard(s(900), s(0)), Some(GUARD));
        assert_eq!(step_guard(s(900), s(500)), Some(s(400)));
        assert_eq!(step_guard(s(900), Duration::from_millis(899_500)), None);
        assert_eq!(step_guard(s(900), s(1000)), None);
    }
}
