//! Running the kernels: guests (QEMU, and the UML kernel's run of short guests) `jobs` at a
//! time, the host natively alongside, each with a wall-clock timeout, then collecting each
//! results directory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::initramfs;
use super::kernels;
use super::moddep;
use super::qemu;
use super::results::{self, KernelReport};
use super::uml::{self, UmlGuest};
use super::{BUSYBOX, MatrixOpts, run_checked};

/// One kernel to run.
pub(super) struct Job {
    pub(super) rep: KernelReport,
    pub(super) dir: PathBuf,
    pub(super) target: Target,
}

/// Where a kernel's stage 2 runs.
pub(super) enum Target {
    /// Natively, on the host kernel.
    Native,
    /// In one QEMU guest: the cached kernel and its initramfs.
    Qemu(kernels::CachedKernel, PathBuf),
    /// In UML guests in virtual time, one per step.
    Uml(UmlGuest),
}

/// Runs the guests `opts.jobs` at a time and the native host run alongside them (most lab
/// tests wait on timers rather than burn CPU, so the host run costs the guests little).
pub(super) fn run_jobs(
    jobs: Vec<Job>,
    opts: &MatrixOpts,
    accel: qemu::Accel,
    bins: &[String],
) -> Vec<KernelReport> {
    let (native, guests): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| matches!(j.target, Target::Native));
    let queue = Mutex::new(guests.into_iter().collect::<VecDeque<_>>());
    let done = Mutex::new(Vec::new());
    let finish = |rep: KernelReport| {
        let (p, f, sk, _) = rep.totals();
        let verdict = if rep.failures().is_empty() {
            "pass"
        } else {
            "FAIL"
        };
        println!(
            "kernel-matrix: {} ({}) {verdict} in {:.1} s: {p} passed, {f} failed, {sk} skipped",
            rep.label,
            rep.release.as_deref().unwrap_or("?"),
            rep.wall.as_secs_f64()
        );
        done.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rep);
    };
    std::thread::scope(|s| {
        for job in native {
            s.spawn(|| finish(run_job(job, opts, accel, bins)));
        }
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| {
                loop {
                    let Some(job) = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front()
                    else {
                        break;
                    };
                    finish(run_job(job, opts, accel, bins));
                }
            });
        }
    });
    done.into_inner().unwrap_or_else(PoisonError::into_inner)
}

fn run_job(job: Job, opts: &MatrixOpts, accel: qemu::Accel, bins: &[String]) -> KernelReport {
    let Job {
        mut rep,
        dir,
        target,
    } = job;
    let outcome = match target {
        Target::Qemu(k, initrd) => {
            rep.accel = format!("{accel:?}").to_lowercase();
            let g = qemu::GuestSpec {
                kernel: k.boot_image(),
                initrd,
                results: dir.clone(),
                serial_log: dir.join("serial.log"),
                accel,
                mem_mib: opts.mem_mib,
            };
            qemu::run_guest(&g, opts.timeout).and_then(|r| match r.exit_code {
                Some(0) | None => Ok((r.wall, r.timed_out)),
                Some(c) => bail!("qemu exited {c}: {}", tail_of(&dir.join("qemu.log"))),
            })
        }
        Target::Uml(g) => uml::run(&g, &dir, opts.timeout).map(|r| {
            if let Some(e) = r.probe_error {
                rep.error = Some(e);
            }
            (r.wall, r.timed_out)
        }),
        Target::Native => run_native(&dir, opts.timeout),
    };
    match outcome {
        Ok((wall, timed_out)) => {
            rep.wall = wall;
            rep.timed_out = timed_out;
        }
        Err(e) => rep.error = Some(format!("{e:#}")),
    }
    if let Err(e) = results::collect(&dir, bins, &mut rep) {
        rep.error = Some(format!("collecting results from {}: {e:#}", dir.display()));
    }
    rep
}

/// The last lines of a log file, for error messages.
fn tail_of(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | "),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs stage 2 natively in its own process group; kills the group after `timeout`.
fn run_native(dir: &Path, timeout: Duration) -> Result<(Duration, bool)> {
    use std::os::unix::process::CommandExt;
    let log_path = dir.join("stage2.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let start = Instant::now();
    let mut child = Command::new("/bin/sh")
        .arg(dir.join("stage2.sh"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log fd")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("spawning the native stage 2")?;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the native stage 2")? {
            std::fs::write(
                dir.join("stage2.rc"),
                format!("{}\n", status.code().unwrap_or(-1)),
            )
            .context("writing stage2.rc")?;
            return Ok((start.elapsed(), false));
        }
        if start.elapsed() >= timeout {
            let pgid = format!("-{}", child.id());
            run_checked(Command::new("kill").args(["-KILL", "--", &pgid]))?;
            child.wait().context("reaping the native stage 2")?;
            return Ok((start.elapsed(), true));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Builds the guest's initramfs (early modules, init, module helper) in its results dir.
pub(super) fn prepare_guest(
    k: kernels::CachedKernel,
    dir: &Path,
    stage2: &Path,
) -> Result<(kernels::CachedKernel, PathBuf)> {
    let mods_dir = k.modules_dir();
    let read = |f: &str| {
        std::fs::read_to_string(mods_dir.join(f))
            .with_context(|| format!("reading {f} of {}", k.release))
    };
    let dep = moddep::ModDep::parse(&read("modules.dep")?);
    let builtin = moddep::parse_builtin(&read("modules.builtin")?);
    let order = dep
        .load_order(initramfs::EARLY_MODULES, &builtin)
        .map_err(|e| anyhow::anyhow!("{e} (kernel {})", k.release))?;
    let mut modules = Vec::new();
    for rel in &order {
        let name = format!(
            "{}.ko",
            rel.rsplit('/')
                .next()
                .unwrap_or(rel)
                .split(".ko")
                .next()
                .unwrap_or(rel)
        );
        modules.push((name, read_module(&mods_dir.join(rel))?));
    }
    let params = initramfs::InitParams {
        tree: k.root.display().to_string(),
        results: dir.display().to_string(),
        stage2: stage2.display().to_string(),
        modules: modules.iter().map(|(n, _)| n.clone()).collect(),
    };
    let initrd = dir.join("initramfs.cpio");
    initramfs::build(&initrd, Path::new(BUSYBOX), &params, &modules)?;
    Ok((k, initrd))
}

/// Reads a module, decompressing `.ko.xz` / `.ko.zst` with the host's `xz` / `zstd`.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return std::fs::read(path).with_context(|| format!("reading {name}"));
    };
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {name}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}
