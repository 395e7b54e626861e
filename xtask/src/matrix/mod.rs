//! `cargo xtask kernel-matrix`: the host-built `patchbay-tests` binaries (and the feature
//! probe) on Debian 5.10, 6.1 and 6.12 under QEMU, natively on the host kernel, and in the
//! project's User-Mode-Linux kernel in virtual time (`uml`); writes `docs/kernel-matrix.md`.
//!
//! Cache: kernels live in `$PATCHBAY_KERNEL_CACHE` (default `target/kernels`), results of
//! each run in `target/kernels/results/<run>/<kernel>/`.

pub(crate) mod apt;
mod build;
mod initramfs;
mod kernels;
mod libtest;
mod moddep;
mod qemu;
mod render;
mod results;
mod runner;
mod script;
mod uml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use build::{build_patchbay, build_test_bins, select_bins};
pub use results::KernelReport;
use runner::{Job, Target, prepare_guest, run_jobs};
use script::Stage2;
pub use uml::UML;

/// Environment variable overriding the kernel cache directory.
pub const CACHE_ENV: &str = "PATCHBAY_KERNEL_CACHE";
/// Label of the native (no VM) run.
pub const HOST: &str = "host";
const BUSYBOX: &str = "/bin/busybox";
const KEEP_RUNS: usize = 5;

/// Command-line arguments of `cargo xtask kernel-matrix`.
#[derive(Debug, Clone, clap::Args)]
pub struct KernelMatrixArgs {
    /// Kernels to run, comma separated: 5.10, 6.1, 6.12, host, uml (the UML kernel in
    /// virtual time; skipped when none is built).
    #[arg(long, value_delimiter = ',', default_value = "5.10,6.1,6.12,host")]
    pub kernels: Vec<String>,
    /// libtest filter passed to every test binary.
    #[arg(long)]
    pub filter: Option<String>,
    /// Host-side wall-clock timeout per kernel, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Do not rewrite docs/kernel-matrix.md.
    #[arg(long)]
    pub no_doc: bool,
    /// Timeout per test binary, in seconds (the binary is killed, the kernel run goes on).
    /// Under TCG, `compression` takes about 4 minutes on 6.1 and 6.12 (each process verifies
    /// the eBPF object, ~20 000 instructions with aya-log).
    #[arg(long, default_value_t = 480)]
    pub bin_timeout: u64,
    /// Guests booted at a time (the host run goes alongside).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Test binaries (integration test targets of patchbay-tests) to run, comma separated;
    /// default: the kernel-sensitive set `CI_BINS`; `all`: every target except those in
    /// `NOT_KERNEL_SENSITIVE` (the scenario suite then needs `--bin-timeout` of several minutes).
    #[arg(long, value_delimiter = ',')]
    pub bins: Vec<String>,
}

/// Integration test targets that do not depend on the running kernel, with the reason;
/// skipped unless named in `--bins`.
pub const NOT_KERNEL_SENSITIVE: &[(&str, &str)] = &[
    (
        "vt",
        "virtual-time tests boot their own UML kernel, independent of the host kernel",
    ),
    (
        "virtual_lab",
        "runs a lab inside its own UML kernel, independent of the host kernel",
    ),
];

/// The default binaries of the matrix (and what `cargo xtask test` runs): the
/// mechanisms whose availability differs between kernels (eBPF, sysctls,
/// netem, nftables), lean enough for CI under QEMU/TCG. The scenario suite
/// (minutes of real-time baselines) runs on the host only.
pub const CI_BINS: &[&str] = &[
    "matrix_guest",
    "links",
    "faults",
    "nat",
    "bpf_engine",
    "compression",
    "regions",
    "shaping",
];

/// Options of [`run_matrix`].
#[derive(Debug, Clone)]
pub struct MatrixOpts {
    /// Kernel labels (`5.10`, `6.1`, `6.12`, `host`, `uml`).
    pub kernels: Vec<String>,
    /// libtest filter.
    pub filter: Option<String>,
    /// Timeout per kernel.
    pub timeout: Duration,
    /// Timeout per test binary.
    pub bin_timeout: Duration,
    /// Write `docs/kernel-matrix.md`.
    pub write_doc: bool,
    /// Guests (and the host run) at a time.
    pub jobs: usize,
    /// RAM per guest.
    pub mem_mib: u32,
    /// Test binaries to run (empty: all kernel-sensitive ones).
    pub bins: Vec<String>,
    /// Workspace root (holds `Cargo.toml`, `target/`, `docs/`).
    pub workspace: PathBuf,
    /// The UML kernel for `uml`; `None`: `$PATCHBAY_UML`, else the newest built one.
    pub uml_kernel: Option<PathBuf>,
}

impl From<KernelMatrixArgs> for MatrixOpts {
    fn from(a: KernelMatrixArgs) -> Self {
        Self {
            kernels: a.kernels,
            filter: a.filter,
            timeout: Duration::from_secs(a.timeout),
            bin_timeout: Duration::from_secs(a.bin_timeout),
            write_doc: !a.no_doc,
            jobs: a.jobs,
            mem_mib: 1024,
            bins: a.bins,
            workspace: workspace_root(),
            uml_kernel: None,
        }
    }
}

impl Default for MatrixOpts {
    /// All kernels, all kernel-sensitive binaries, 900 s per kernel (480 s per binary), 2 at a time, 1 GiB per
    /// guest, and no rewrite of `docs/kernel-matrix.md` (for `cargo xtask test`).
    fn default() -> Self {
        Self {
            kernels: ["5.10", "6.1", "6.12", HOST].map(String::from).to_vec(),
            filter: None,
            timeout: Duration::from_secs(900),
            bin_timeout: Duration::from_secs(480),
            write_doc: false,
            jobs: 2,
            mem_mib: 1024,
            bins: Vec::new(),
            workspace: workspace_root(),
            uml_kernel: None,
        }
    }
}

/// Why the matrix cannot run on this machine, if it cannot: it needs root (namespaces, apt)
/// and either QEMU with busybox-static and kmod already installed, or a Debian host to
/// install them with apt.
pub fn unavailable_reason() -> Option<String> {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "cannot read /proc/self/status to check for root: {e}"
            ));
        }
    };
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next());
    if uid != Some("0") {
        return Some("the kernel matrix needs root (network namespaces, apt installs)".into());
    }
    let have = |p: &str| Path::new(p).exists();
    if have("/usr/bin/qemu-system-x86_64") && have(BUSYBOX) && have("/usr/sbin/depmod") {
        return None;
    }
    if !have("/usr/bin/apt-get") {
        return Some(
            "qemu-system-x86_64, busybox-static and kmod are missing and there is no apt-get"
                .into(),
        );
    }
    None
}

/// Result of a matrix run.
#[derive(Debug, Clone)]
pub struct MatrixSummary {
    /// One report per kernel, in the requested order.
    pub kernels: Vec<KernelReport>,
    /// The document written, if any.
    pub doc: Option<PathBuf>,
    /// This run's results directory.
    pub results_dir: PathBuf,
    /// Wall time of the whole run.
    pub wall: Duration,
}

impl MatrixSummary {
    /// `kernel: reason` for every failure; empty when every kernel passed.
    pub fn failures(&self) -> Vec<String> {
        self.kernels
            .iter()
            .flat_map(|k| {
                k.failures()
                    .into_iter()
                    .map(move |f| format!("{}: {f}", k.label))
            })
            .collect()
    }
}

/// Entry point of the subcommand: runs the matrix, prints a summary, fails if a kernel did.
pub fn run(args: KernelMatrixArgs) -> Result<()> {
    let s = run_matrix(&args.into())?;
    let failures = s.failures();
    if !failures.is_empty() {
        bail!("kernel matrix failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Runs the matrix: installs missing host tools, fetches kernels, builds the test binaries,
/// boots the guests (2 at a time) and runs the host natively, collects results, and writes
/// `docs/kernel-matrix.md` unless told not to. Kernel failures are in the summary, not `Err`.
pub fn run_matrix(opts: &MatrixOpts) -> Result<MatrixSummary> {
    let start = Instant::now();
    let labels = validate_labels(&opts.kernels)?;
    let root = opts.workspace.clone();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let cache = std::env::var_os(CACHE_ENV).map_or_else(|| target.join("kernels"), PathBuf::from);
    let cache =
        std::path::absolute(&cache).with_context(|| format!("resolving {}", cache.display()))?;
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    let results_root = target.join("kernels/results");
    let run_dir = results_root.join(run_id.to_string());
    let vm_labels: Vec<&String> = labels.iter().filter(|l| *l != HOST && *l != UML).collect();
    for p in [&cache, &run_dir, &root] {
        check_path(p)?;
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    if !vm_labels.is_empty() {
        apt::ensure_host_tools(&cache.join("apt"))?;
    }
    let t = Instant::now();
    let mut fetched = BTreeMap::new();
    for label in &vm_labels {
        let k = kernels::spec(label).and_then(|spec| kernels::ensure(&cache, spec));
        fetched.insert(
            label.to_string(),
            k.map_err(|e| format!("fetching the kernel: {e:#}")),
        );
    }
    println!(
        "kernel-matrix: kernels ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The KVM probe (a few seconds) overlaps the build of the test binaries.
    let probe_kernel = fetched
        .values()
        .find_map(|k| k.as_ref().ok())
        .map(|k| k.boot_image());
    let probe_dir = run_dir.clone();
    let accel_probe = std::thread::spawn(move || match probe_kernel {
        Some(k) => qemu::choose_accel(&k, &probe_dir),
        None => Ok(qemu::Accel::Tcg),
    });
    let t = Instant::now();
    let built = build_test_bins(&root)
        .and_then(|all| select_bins(all, &opts.bins))
        .and_then(|bins| Ok((bins, build_patchbay(&root)?)));
    // Join the probe before any early return, so its QEMU never outlives us.
    let accel = accel_probe
        .join()
        .map_err(|_| anyhow::anyhow!("the KVM probe thread panicked"))??;
    let (bins, patchbay) = built?;
    let doctor = patchbay.as_ref().and_then(|p| p.with("doctor"));
    println!(
        "kernel-matrix: {} test binaries, probe: {}, built in {:.1} s",
        bins.len(),
        if doctor.is_some() {
            "patchbay doctor --json"
        } else {
            "placeholder"
        },
        t.elapsed().as_secs_f64()
    );

    let mut reports: Vec<KernelReport> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for label in &labels {
        let dir = run_dir.join(label);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let stage2 = Stage2 {
            results: dir.display().to_string(),
            bins: bins.clone(),
            filter: opts.filter.clone(),
            doctor: doctor.clone(),
            env: forwarded_env(),
            bin_timeout_secs: opts.bin_timeout.as_secs(),
        };
        let stage2_path = dir.join("stage2.sh");
        std::fs::write(&stage2_path, script::stage2_script(&stage2))
            .with_context(|| format!("writing {}", stage2_path.display()))?;
        let mut rep = KernelReport {
            label: label.clone(),
            ..Default::default()
        };
        if label == HOST {
            rep.package = "native".into();
            rep.accel = "native".into();
            jobs.push(Job {
                rep,
                dir,
                target: Target::Native,
            });
            continue;
        }
        if label == UML {
            rep.accel = "uml time-travel=inf-cpu".into();
            let vt = patchbay.as_ref().and_then(|p| p.with("vt"));
            match (uml_kernel(opts, &target), vt) {
                (Err(why), _) => {
                    println!("kernel-matrix: {UML} skipped: {why}");
                    rep.skipped = Some(why);
                    reports.push(rep);
                }
                (Ok(_), None) => {
                    rep.error = Some("the patchbay binary has no `vt` subcommand".into());
                    reports.push(rep);
                }
                (Ok(kernel), Some(patchbay)) => {
                    rep.package = uml::package_name(&kernel);
                    let steps = script::step_scripts(&stage2);
                    jobs.push(Job {
                        rep,
                        dir,
                        target: Target::Uml(uml::UmlGuest {
                            kernel,
                            patchbay,
                            steps,
                        }),
                    });
                }
            }
            continue;
        }
        let prepared = match fetched.remove(label.as_str()) {
            Some(Ok(k)) => prepare_guest(k, &dir, &stage2_path)
                .map_err(|e| format!("preparing the guest: {e:#}")),
            Some(Err(e)) => Err(e),
            None => Err("kernel was not fetched".to_owned()),
        };
        match prepared {
            Ok((k, initrd)) => {
                rep.package = k.package.clone();
                jobs.push(Job {
                    rep,
                    dir,
                    target: Target::Qemu(k, initrd),
                });
            }
            Err(e) => {
                rep.error = Some(e);
                reports.push(rep);
            }
        }
    }
    if !vm_labels.is_empty() {
        println!("kernel-matrix: accelerator {accel:?}");
    }

    let bin_names: Vec<String> = bins.iter().map(|b| b.name.clone()).collect();
    reports.extend(run_jobs(jobs, opts, accel, &bin_names));
    let order: BTreeMap<&String, usize> = labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
    reports.sort_by_key(|r| order.get(&r.label).copied().unwrap_or(usize::MAX));

    let doc = if opts.write_doc {
        let mut command = format!("cargo xtask kernel-matrix --kernels {}", labels.join(","));
        let mut notes = Vec::new();
        if opts.bins.is_empty() {
            for (n, why) in NOT_KERNEL_SENSITIVE {
                notes.push(format!("`{n}` not run: {why}."));
            }
        } else {
            command += &format!(" --bins {}", opts.bins.join(","));
        }
        notes.push(format!(
            "A kernel fails when a test fails, a binary crashes or runs over {} s, the guest \
             times out ({} s), or a binary leaves interfaces in the guest's root namespace.",
            opts.bin_timeout.as_secs(),
            opts.timeout.as_secs()
        ));
        let meta = render::RenderMeta {
            command,
            filter: opts.filter.clone(),
            notes,
        };
        let path = root.join("docs/kernel-matrix.md");
        std::fs::write(&path, render::render(&meta, &reports))
            .with_context(|| format!("writing {}", path.display()))?;
        Some(path)
    } else {
        None
    };
    prune_runs(&results_root)?;
    let summary = MatrixSummary {
        kernels: reports,
        doc,
        results_dir: run_dir,
        wall: start.elapsed(),
    };
    print_summary(&summary);
    Ok(summary)
}

fn validate_labels(kernels: &[String]) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for k in kernels {
        let k = k.trim();
        if k != HOST && k != UML {
            kernels::spec(k)?;
        }
        if seen.insert(k.to_owned()) {
            out.push(k.to_owned());
        }
    }
    if out.is_empty() {
        bail!("--kernels is empty; use e.g. --kernels 5.10,6.1,6.12,host,uml");
    }
    Ok(out)
}

/// Directories the guest mounts fresh filesystems over, hiding the host's files there.
/// `/tmp` is not among them: the guest sees the host's `/tmp` through the read-only root
/// share with the tmpfs overlay on top (writes stay in the guest), so a checkout in `/tmp`
/// works.
const HIDDEN_IN_GUEST: &[&str] = &["/run", "/dev", "/proc", "/sys"];

/// Paths end up in QEMU options and must be visible in the guest through the host-root
/// share: refuse whitespace and directories the guest covers with its own mounts.
fn check_path(p: &Path) -> Result<()> {
    if p.display().to_string().chars().any(char::is_whitespace) {
        bail!(
            "path {} contains whitespace; set {CACHE_ENV} / CARGO_TARGET_DIR to a path without",
            p.display()
        );
    }
    if let Some(h) = HIDDEN_IN_GUEST.iter().find(|h| p.starts_with(h)) {
        bail!(
            "path {} is under {h}, which the guest mounts over (its files would be invisible \
             there); put the workspace, CARGO_TARGET_DIR and {CACHE_ENV} elsewhere",
            p.display()
        );
    }
    Ok(())
}

/// The UML kernel: [`MatrixOpts::uml_kernel`], `$PATCHBAY_UML`, else the newest one built
/// by `cargo xtask build-uml` (`<target>/uml`) or `cargo xtask test` (its cache). The error
/// is why `uml` is skipped.
fn uml_kernel(opts: &MatrixOpts, target: &Path) -> std::result::Result<PathBuf, String> {
    uml::find_kernel(
        opts.uml_kernel.as_deref(),
        std::env::var_os(uml::UML_ENV).map(PathBuf::from),
        &[target.join("uml"), crate::cache::cache_dir("uml")],
    )
}

/// The workspace root this xtask was built from.
pub fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_owned()
}

fn forwarded_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("PATCHBAY_") && k != CACHE_ENV && k != qemu::ACCEL_ENV)
        .collect()
}

/// Runs a command; error names the argv, exit status and stderr. Returns stdout.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let argv = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {argv}"))?;
    if !out.status.success() {
        bail!(
            "{argv} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn prune_runs(results_root: &Path) -> Result<()> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(results_root)
        .with_context(|| format!("listing {}", results_root.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", results_root.display()))?;
    runs.sort();
    let excess = runs.len().saturating_sub(KEEP_RUNS);
    for old in &runs[..excess] {
        std::fs::remove_dir_all(old).with_context(|| format!("pruning {}", old.display()))?;
    }
    Ok(())
}

fn print_summary(s: &MatrixSummary) {
    println!("kernel-matrix: results in {}", s.results_dir.display());
    println!(
        "{:<6} {:<28} {:>6} {:>6} {:>6} {:>8}  result",
        "kernel", "release", "pass", "fail", "skip", "wall"
    );
    for k in &s.kernels {
        let (p, f, sk, _) = k.totals();
        let verdict = if !k.failures().is_empty() {
            "FAIL"
        } else if k.skipped.is_some() {
            "skipped"
        } else {
            "pass"
        };
        println!(
            "{:<6} {:<28} {p:>6} {f:>6} {sk:>6} {:>7.1}s  {verdict}",
            k.label,
            k.release.as_deref().unwrap_or("?"),
            k.wall.as_secs_f64()
        );
    }
    for f in s.failures() {
        println!("  {f}");
    }
    if let Some(d) = &s.doc {
        println!("kernel-matrix: wrote {}", d.display());
    }
    println!("kernel-matrix: total {:.1} s", s.wall.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_hidden_in_the_guest_are_refused() {
        assert!(check_path(Path::new("/work/main/target/kernels")).is_ok());
        let err = check_path(Path::new("/run/kc")).unwrap_err().to_string();
        assert!(err.contains("under /run"), "{err}");
        assert!(
            check_path(Path::new("/tmp/ci/target")).is_ok(),
            "a checkout in /tmp works"
        );
        assert!(check_path(Path::new("/work/my dir")).is_err());
        assert!(check_path(Path::new("/tmpfoo/x")).is_ok());
    }
}
