//! QEMU invocation: argument building (pure), accelerator choice, and a guest run with a
//! host-side wall-clock timeout.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::initramfs::{HOST_TAG, RESULTS_TAG};

/// QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// Accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// One guest boot.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// bzImage.
    pub kernel: PathBuf,
    /// initramfs (cpio newc).
    pub initrd: PathBuf,
    /// Writable share, mounted in the guest at the same path.
    pub results: PathBuf,
    /// Serial console log file.
    pub serial_log: PathBuf,
    /// Accelerator.
    pub accel: Accel,
    /// Guest RAM.
    pub mem_mib: u32,
}

/// Escapes a value for QEMU's `key=value,...` option syntax (commas are doubled).
fn opt_escape(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// QEMU's arguments for a guest.
pub fn qemu_args(g: &GuestSpec) -> Vec<String> {
    let (accel, cpu) = match g.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    [
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-smp",
        "1",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "-m".into(),
        g.mem_mib.to_string(),
        "-serial".into(),
        format!("file:{}", g.serial_log.display()),
        "-kernel".into(),
        g.kernel.display().to_string(),
        "-initrd".into(),
        g.initrd.display().to_string(),
        "-append".into(),
        "console=ttyS0 panic=-1 loglevel=4 rdinit=/init mitigations=off nokaslr".into(),
        "-virtfs".into(),
        format!(
            "local,path=/,mount_tag={HOST_TAG},security_model=none,readonly=on,multidevs=remap"
        ),
        "-virtfs".into(),
        format!(
            "local,path={},mount_tag={RESULTS_TAG},security_model=none,multidevs=remap",
            opt_escape(&g.results)
        ),
    ])
    .collect()
}

/// How a guest run ended.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// Wall time from spawn to exit (or kill).
    pub wall: Duration,
    /// Killed by the host-side timeout.
    pub timed_out: bool,
    /// QEMU's exit code (None when killed).
    pub exit_code: Option<i32>,
}

/// Boots a guest and waits for it, killing QEMU after `timeout`.
pub fn run_guest(g: &GuestSpec, timeout: Duration) -> Result<GuestRun> {
    let qemu_log = g.results.join("qemu.log");
    let log =
        File::create(&qemu_log).with_context(|| format!("creating {}", qemu_log.display()))?;
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(qemu_args(g))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the qemu log fd")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {QEMU}"))?;
    loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            return Ok(GuestRun {
                wall: start.elapsed(),
                timed_out: false,
                exit_code: status.code(),
            });
        }
        if start.elapsed() >= timeout {
            child.kill().context("killing qemu after the timeout")?;
            child.wait().context("reaping qemu")?;
            return Ok(GuestRun {
                wall: start.elapsed(),
                timed_out: true,
                exit_code: None,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Environment variable forcing the accelerator (`kvm` or `tcg`), skipping the probe.
pub const ACCEL_ENV: &str = "PATCHBAY_QEMU_ACCEL";
/// How long a KVM guest may take to boot to the "no root" panic.
const KVM_PROBE: Duration = Duration::from_secs(3);

/// Picks KVM when `/dev/kvm` can actually run a guest, else TCG. The probe boots `kernel`
/// with no initramfs and `panic=-1`: a working KVM reaches the panic and exits within
/// seconds (a nested PVM `/dev/kvm` opens but never gets there).
pub fn choose_accel(kernel: &Path, scratch: &Path) -> Result<Accel> {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) => bail!("{ACCEL_ENV}={other:?} is not valid; use kvm or tcg, or unset it"),
        Err(_) => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return Ok(Accel::Tcg);
    }
    let log = scratch.join("kvm-probe.log");
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(QEMU)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-smp",
            "1",
            "-m",
            "256",
            "-nodefaults",
        ])
        .args([
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "none",
            "-kernel",
        ])
        .arg(kernel)
        .args(["-append", "panic=-1 root=/dev/nonexistent"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().context("duplicating the probe log fd")?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("spawning {QEMU} for the KVM probe"))?;
    let start = Instant::now();
    while start.elapsed() < KVM_PROBE {
        if let Some(status) = child.try_wait().context("waiting for the KVM probe")? {
            return Ok(if status.success() {
                Accel::Kvm
            } else {
                Accel::Tcg
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().context("killing the KVM probe")?;
    child.wait().context("reaping the KVM probe")?;
    Ok(Accel::Tcg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_share_root_ro_and_results_rw() {
        let a = qemu_args(&GuestSpec {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            results: "/res/a,b".into(),
            serial_log: "/res/serial.log".into(),
            accel: Accel::Tcg,
            mem_mib: 1024,
        });
        let s = a.join(" ");
        assert!(s.contains("-accel tcg -cpu max -smp 1"));
        assert!(
            s.contains("path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        );
        assert!(s.contains("path=/res/a,,b,mount_tag=results"));
        assert!(s.contains("-m 1024"));
    }
}
