//! `patchbay run LAB.toml [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::labfile::{LabFile, RunReport, StepOutcome};
use anyhow::Context;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The lab description (see docs/toml.md).
    file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Override the file's `[lab] time-scale` (k; 1 = real time).
    #[arg(long, conflicts_with = "virtual_time")]
    time_scale: Option<crate::compress::TimeScale>,
    /// Run the lab in virtual time, inside a User-Mode-Linux kernel (the
    /// same as `[lab] time = "virtual"`).
    #[arg(long = "virtual")]
    virtual_time: bool,
    /// Write run artifacts (logs, events.jsonl, topology, captures) into
    /// this directory and keep it (see docs/artifacts.md).
    #[arg(long)]
    outdir: Option<PathBuf>,
    /// Seed of the virtual-time run (overrides `[lab] seed`): the same seed
    /// repeats the run byte for byte (docs/determinism.md).
    #[arg(long)]
    seed: Option<u64>,
    /// Wall-clock limit for a virtual-time run, in seconds.
    #[arg(long, default_value_t = 600)]
    guard: u64,
    /// Serve the run directory live on the devtools page while the lab runs
    /// (as `patchbay serve`; the page follows events.jsonl as it grows), and
    /// keep serving after the run until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Port for --serve; 0 picks a free one.
    #[arg(long, default_value_t = 8717, requires = "serve")]
    serve_port: u16,
    /// Compress by sysctls only, without eBPF (as `[lab] sysctl-only = true`):
    /// what an unprivileged user can run at k > 1 (docs/unprivileged.md).
    #[arg(long)]
    sysctl_only: bool,
    /// Install the Debian packages of the programs the lab runs that are
    /// missing (as root, with apt-get), instead of stopping before the build.
    #[arg(long)]
    install_missing: bool,
}

/// Whether this process made itself root of a user namespace (it was started
/// by an ordinary user).
static IN_USERNS: AtomicBool = AtomicBool::new(false);

/// Runs before the tokio runtime exists (a user namespace can only be
/// entered by a single-threaded process): an ordinary user's `patchbay run`
/// becomes root of a fresh user namespace, as docs/unprivileged.md
/// describes. Virtual-time runs are left alone: `patchbay vt` sets up its
/// own.
pub fn before_runtime(args: &RunArgs) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let file = LabFile::load(&args.file)?;
    if args.virtual_time || file.lab.time == Some(crate::labfile::TimeMode::Virtual) {
        return Ok(());
    }
    crate::native::init_userns().context(
        "running a lab as an ordinary user needs a user namespace (docs/unprivileged.md)",
    )?;
    IN_USERNS.store(true, Ordering::Relaxed);
    Ok(())
}

/// Why this run cannot go on without root, when the process runs as an
/// ordinary user in a user namespace: eBPF (compression at k > 1, or
/// telemetry) must be attached in the initial user namespace. The library
/// refuses the same; this says it in the lab file's words, before the build.
fn needs_root(file: &LabFile, time_scale: Option<crate::compress::TimeScale>) -> Option<String> {
    let k = time_scale
        .map(f64::from)
        .or(file.lab.time_scale)
        .unwrap_or(1.0);
    if k > 1.0 && !file.lab.sysctl_only {
        return Some(format!(
            "time scale {k} compresses TCP timers with eBPF sock_ops, which only root can attach, \
             and patchbay runs as an ordinary user here (in a user namespace). Run as root, or \
             compress by sysctls only: `sysctl-only = true` under [lab], or `--sysctl-only` (the \
             compression report then lists the timers that stay uncompressed: the initial RTO, \
             RTO min/max, delayed ACKs; docs/unprivileged.md)"
        ));
    }
    if file.lab.telemetry == Some(true) {
        return Some(
            "`telemetry = true` collects TCP events with eBPF, which only root can attach, and \
             patchbay runs as an ordinary user here (in a user namespace): run as root, or drop \
             `telemetry`"
                .into(),
        );
    }
    None
}

pub async fn run(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut file = LabFile::load(&args.file)?;
    file.lab.sysctl_only |= args.sysctl_only;
    // Before anything is built or created: missing programs, and what an
    // ordinary user cannot run.
    super::setup::ensure(
        "run",
        &format!("{} runs", args.file.display()),
        &super::setup::lab_tools(&file),
        args.install_missing,
        "`patchbay run --install-missing` installs them",
    )?;
    if IN_USERNS.load(Ordering::Relaxed)
        && let Some(why) = needs_root(&file, args.time_scale)
    {
        anyhow::bail!("{why}");
    }
    let live = match args.serve {
        true => Some(super::serve::live(args.outdir.clone(), args.serve_port).await?),
        false => None,
    };
    if let Some(live) = &live {
        // The lab writes its artifacts where the page reads them.
        args.outdir = Some(live.dir.clone());
    }
    let code = run_lab(&args, &file).await?;
    if let Some(live) = live {
        live.wait().await?;
    }
    Ok(code)
}

async fn run_lab(args: &RunArgs, file: &LabFile) -> anyhow::Result<ExitCode> {
    let wants_virtual =
        args.virtual_time || file.lab.time == Some(crate::labfile::TimeMode::Virtual);
    let seed = args.seed.or(file.lab.seed);
    anyhow::ensure!(
        seed.is_none() || wants_virtual,
        "a seed (--seed or [lab] seed) applies to virtual time only: add --virtual or \
         [lab] time = \"virtual\", or drop the seed"
    );
    if wants_virtual && std::env::var_os("PATCHBAY_VT").is_none() {
        return reexec_in_vt(args, file, seed);
    }
    let json = args.json;
    let o = crate::labfile::RunOverrides {
        time_scale: args.time_scale,
        virtual_time: wants_virtual,
        outdir: args.outdir.clone(),
    };
    let report = crate::labfile::run(file, o, |s| {
        if !json {
            eprintln!(
                "  step {:>2} {:<5} {}",
                s.step,
                s.kind,
                if s.ok { "ok" } else { "FAILED" }
            );
        }
    })
    .await
    .with_context(|| format!("building the lab of {}", args.file.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", render(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(r: &RunReport) -> String {
    let rows: Vec<Vec<String>> = r.steps.iter().map(row).collect();
    let mut s = format!("lab {} built in {:.3} s\n", r.lab, r.build_s);
    s.push_str(&super::table::render(
        &[
            "step",
            "kind",
            "node",
            "exit",
            "wall s",
            "virtual s",
            "result",
        ],
        &rows,
    ));
    for st in r.steps.iter().filter(|s| !s.ok) {
        s.push_str(&format!(
            "\nstep {} failed: {}",
            st.step,
            st.error.as_deref().unwrap_or("?")
        ));
    }
    s.push_str(if r.ok {
        "\nall steps passed"
    } else {
        "\nFAILED"
    });
    s
}

fn row(s: &StepOutcome) -> Vec<String> {
    vec![
        s.step.to_string(),
        s.kind.to_string(),
        s.node.clone().unwrap_or_default(),
        s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        format!("{:.3}", s.wall_s),
        format!("{:.3}", s.virtual_s),
        if s.ok { "ok".into() } else { "FAILED".into() },
    ]
}

/// Runs this same command inside the UML kernel (which sets PATCHBAY_VT, so
/// the inner run does not re-execute again).
///
/// The run's artifact directory (`--outdir`, or `[lab] outdir`) is created on the host and
/// given to the guest as its writable results directory, so the lab's artifacts land on the
/// host; the guest's own `stdout`, `stderr` and `exit_code` files join them there.
fn reexec_in_vt(args: &RunArgs, file: &LabFile, seed: Option<u64>) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let outdir = match args.outdir.as_ref().or(file.lab.outdir.as_ref()) {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("creating the output directory {}", d.display()))?;
            Some(
                d.canonicalize()
                    .with_context(|| format!("resolving {}", d.display()))?,
            )
        }
        None => None,
    };
    // A file's own outdir without `keep` is removed after a run that passed, as outside a guest.
    let remove_on_success = args.outdir.is_none() && outdir.is_some() && !file.lab.keep;
    // The absolute path: the guest exposes it read-only even under /tmp, /run or /var/tmp
    // (which it otherwise covers with a fresh tmpfs).
    let file = std::path::absolute(&args.file)
        .with_context(|| format!("resolving {}", args.file.display()))?;
    let mut argv: Vec<std::ffi::OsString> = vec![exe.clone().into(), "run".into(), file.into()];
    if args.json {
        argv.push("--json".into());
    }
    if let Some(d) = &outdir {
        argv.push("--outdir".into());
        argv.push(d.clone().into());
    }
    argv.push("--virtual".into());
    let opts = crate::vt::VtOpts {
        guard: std::time::Duration::from_secs(args.guard),
        env: super::vt::forwarded_env(),
        seed,
        results_dir: outdir.clone(),
        // The step lines and the table as the guest prints them, not all at the end.
        echo: true,
        ..Default::default()
    };
    let out = crate::vt::run(&argv, &opts)?;
    if let Some(d) = outdir.filter(|_| remove_on_success && out.exit_code == 0) {
        std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    }
    if let Some(s) = out.seed {
        // The same guest command: `--json` and `--outdir` change what the run does.
        let mut replay = format!("{} run {}", exe.display(), args.file.display());
        if args.json {
            replay.push_str(" --json");
        }
        if let Some(d) = &args.outdir {
            replay.push_str(&format!(" --outdir {}", d.display()));
        }
        replay.push_str(&format!(" --virtual --seed {s}"));
        super::vt::print_replay(Some(s), seed.is_none(), out.exit_code != 0, &replay);
    }
    Ok(ExitCode::from(
        u8::try_from(out.exit_code.clamp(0, 255)).unwrap_or(1),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_user_is_told_about_sysctl_only_at_k_above_1() {
        let parse = |t: &str| LabFile::parse(t, std::path::Path::new("x.toml")).unwrap();
        let plain = parse("[lab]\nlabel = \"x\"\n");
        assert_eq!(needs_root(&plain, None), None);
        let why = needs_root(&plain, Some(crate::compress::TimeScale::new(10.0).unwrap())).unwrap();
        assert!(
            why.contains("sysctl-only = true") && why.contains("--sysctl-only"),
            "{why}"
        );
        let k10 = parse("[lab]\ntime-scale = 10\n");
        assert!(needs_root(&k10, None).is_some());
        assert_eq!(
            needs_root(&k10, Some(crate::compress::TimeScale::REAL_TIME)),
            None
        );
        let sysctl = parse("[lab]\ntime-scale = 10\nsysctl-only = true\n");
        assert_eq!(needs_root(&sysctl, None), None);
        let tele = parse("[lab]\ntelemetry = true\n");
        assert!(needs_root(&tele, None).unwrap().contains("telemetry"));
    }
}
