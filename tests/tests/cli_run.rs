//! `patchbay run` as users meet it: as an ordinary user (a user namespace,
//! and the sysctl-only way out at k > 1), with a program the lab file runs
//! missing (stopped before the build, naming the Debian package), and with
//! `--serve` on a port that is taken (no run directory left behind).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use patchbay_tests::*;

const NOBODY: u32 = 65534;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("patchbay-cli-{name}-{}", std::process::id()));
    if d.exists() {
        std::fs::remove_dir_all(&d)?;
    }
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A 0755 directory `nobody` can reach (a checkout under /root is not),
/// with the CLI and an example in it; removed on drop.
struct Kit {
    dir: PathBuf,
}

impl Kit {
    fn new(example: &str) -> Result<Kit> {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("nobody")?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(patchbay_bin()?, dir.join("patchbay"))?;
        std::fs::set_permissions(dir.join("patchbay"), std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(
            workspace().join("examples").join(example),
            dir.join(example),
        )?;
        Ok(Kit { dir })
    }

    /// `setpriv --reuid=65534 --regid=65534 --clear-groups patchbay ARGS`.
    fn run_as_nobody(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(self.dir.join("patchbay"))
            .args(args)
            .current_dir(&self.dir)
            .env_remove("TMPDIR")
            .output()
            .context("running setpriv (util-linux)")?;
        println!(
            "as nobody: patchbay {}: {}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        Ok(out)
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

/// Host processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
                == Some(uid)
        })
        .map(|s| s.lines().next().unwrap_or("").to_string())
        .collect()
}

/// An ordinary user runs a lab file: the CLI enters a user namespace before
/// its runtime starts, builds the NAT lab and passes; at k = 10 it refuses
/// before the build, naming `sysctl-only`, and passes with it.
#[test]
fn run_as_an_ordinary_user_and_the_sysctl_only_way_out() -> Result<()> {
    require_root!();
    let kit = Kit::new("nat-timeout.toml")?;
    let out = kit.run_as_nobody(&["run", "nat-timeout.toml"])?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if stderr.contains("user namespace") && !out.status.success() {
        skip(&format!(
            "this host forbids unprivileged user namespaces: {stderr}"
        ));
        return Ok(());
    }
    ensure!(
        out.status.success() && stdout.contains("all steps passed"),
        "k=1 as nobody: {stdout}{stderr}"
    );
    ensure!(
        stdout.contains("new mapping") || stdout.contains("ok"),
        "{stdout}"
    );

    let out = kit.run_as_nobody(&["run", "nat-timeout.toml", "--time-scale", "10"])?;
    let stderr = text(&out.stderr);
    ensure!(
        !out.status.success(),
        "k=10 needs eBPF, which nobody cannot attach"
    );
    ensure!(
        stderr.contains("sysctl-only = true") && stderr.contains("--sysctl-only"),
        "the refusal names the way out: {stderr}"
    );
    ensure!(
        !text(&out.stdout).contains("built in"),
        "refused before the build"
    );

    let out = kit.run_as_nobody(&[
        "run",
        "nat-timeout.toml",
        "--time-scale",
        "10",
        "--sysctl-only",
    ])?;
    ensure!(
        out.status.success() && text(&out.stdout).contains("all steps passed"),
        "k=10 sysctl-only as nobody: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let left = processes_of(NOBODY);
    ensure!(left.is_empty(), "processes of nobody left: {left:?}");
    Ok(())
}

/// A PATH with everything examples/dns.toml runs but `dig`.
fn path_without_dig(dir: &Path) -> Result<String> {
    for tool in ["getent", "sh"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .with_context(|| format!("{tool} is not installed"))?;
        std::os::unix::fs::symlink(found, dir.join(tool))?;
    }
    Ok(dir.display().to_string())
}

/// dns.toml runs `dig`: without it on PATH, the run stops before the build
/// and names the Debian package. Nothing is uninstalled: the PATH lacks it.
#[test]
fn a_missing_program_stops_the_run_before_the_build() -> Result<()> {
    let dir = scratch("nodig")?;
    let path = path_without_dig(&dir)?;
    let out = Command::new(patchbay_bin()?)
        .arg("run")
        .arg(workspace().join("examples/dns.toml"))
        .env("PATH", &path)
        .output()?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!("stdout: {stdout}\nstderr: {stderr}");
    ensure!(!out.status.success());
    ensure!(
        stderr.contains("`dig` (Debian package bind9-dnsutils; step 3 runs it)"),
        "names the program, the step and the package: {stderr}"
    );
    ensure!(
        stderr.contains("apt-get install -y bind9-dnsutils")
            && stderr.contains("--install-missing"),
        "says how to install it: {stderr}"
    );
    ensure!(
        stdout.is_empty() && !stderr.contains("step  1"),
        "nothing was built or run"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `run --serve` on a port that is taken fails before the lab, and leaves
/// no run directory: neither the one asked for nor a temporary one.
#[test]
fn serve_on_a_taken_port_leaves_no_run_directory() -> Result<()> {
    let tmp = scratch("serve-port")?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let outdir = tmp.join("run");
    for with_outdir in [true, false] {
        let mut c = Command::new(patchbay_bin()?);
        c.arg("run")
            .arg(workspace().join("examples/dns.toml"))
            .args(["--serve", "--serve-port", &port])
            .env("TMPDIR", &tmp);
        if with_outdir {
            c.arg("--outdir").arg(&outdir);
        }
        let out = c.output()?;
        let stderr = text(&out.stderr);
        println!("outdir {with_outdir}: {stderr}");
        ensure!(!out.status.success(), "the port is taken");
        ensure!(stderr.contains("cannot listen"), "{stderr}");
        let left: Vec<_> = std::fs::read_dir(&tmp)?
            .flatten()
            .map(|e| e.path())
            .collect();
        ensure!(left.is_empty(), "left behind: {left:?}");
    }
    drop(taken);
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
