//! Thin probes that fill [`KernelCaps`] and [`SysctlDefaults`] from the running kernel.
//!
//! Read-only: nothing on the host changes. The sysctl defaults are read inside a *fresh*
//! network namespace created by a short-lived thread (`unshare(CLONE_NEWNET)`, which needs
//! CAP_SYS_ADMIN); the namespace disappears when the thread exits.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::caps::{BpfFeatures, HzSource, KernelCaps, NetnsSysctlCaps, SysctlDefaults};

/// Why probing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No method gave HZ.
    #[error(
        "could not determine the kernel's HZ ({attempts}); patchbay never uses \
         `getconf CLK_TCK`, which is USER_HZ. Run as root (for /proc/timer_list) or \
         provide /boot/config-$(uname -r) or /proc/config.gz"
    )]
    Hz {
        /// What was tried and what each attempt said.
        attempts: String,
    },
    /// A /proc or /sys file could not be read.
    #[error("reading {path} failed")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The probe thread could not create a network namespace.
    #[error(
        "unshare(CLONE_NEWNET) in the sysctl probe thread failed: reading a fresh \
         namespace's defaults needs CAP_SYS_ADMIN (run as root)"
    )]
    Unshare(#[source] nix::Error),
    /// The probe thread could not be started.
    #[error("spawning the sysctl probe thread failed")]
    Spawn(#[source] std::io::Error),
    /// The probe thread panicked.
    #[error("the sysctl probe thread panicked")]
    ThreadPanicked,
}

/// Probes HZ, the kernel release and a fresh namespace's sysctls; `bpf` comes from the
/// BPF loader's probe (use `BpfFeatures::default()` for none).
///
/// Requires root (CAP_SYS_ADMIN for the namespace; /proc/timer_list is root-only, with
/// kernel config files as fallback).
pub fn probe_kernel(bpf: BpfFeatures) -> Result<(KernelCaps, SysctlDefaults), ProbeError> {
    let (hz, hz_source) = probe_hz()?;
    let defaults = probe_netns_defaults()?;
    let caps = KernelCaps {
        hz,
        hz_source,
        kernel_release: kernel_release()?,
        sysctls: NetnsSysctlCaps::from_defaults(&defaults),
        bpf,
    };
    Ok((caps, defaults))
}

/// `uname -r`, from /proc/sys/kernel/osrelease.
pub fn kernel_release() -> Result<String, ProbeError> {
    read(Path::new("/proc/sys/kernel/osrelease")).map(|s| s.trim().to_string())
}

/// Derives HZ: measured from /proc/timer_list (jiffies against `now`, sampled 200 ms
/// apart), else `CONFIG_HZ` from /boot/config-$(uname -r), else from /proc/config.gz.
pub fn probe_hz() -> Result<(u32, HzSource), ProbeError> {
    let mut attempts = Vec::new();
    match measure_hz_from_timer_list() {
        Ok(hz) => return Ok((hz, HzSource::TimerList)),
        Err(e) => attempts.push(format!("/proc/timer_list: {e}")),
    }
    let release = kernel_release()?;
    let boot = PathBuf::from(format!("/boot/config-{release}"));
    match fs::read_to_string(&boot) {
        Ok(text) => match parse_config_hz(&text) {
            Some(hz) => return Ok((hz, HzSource::BootConfig)),
            None => attempts.push(format!("{}: no CONFIG_HZ line", boot.display())),
        },
        Err(e) => attempts.push(format!("{}: {e}", boot.display())),
    }
    match read_config_gz(Path::new("/proc/config.gz")) {
        Ok(text) => match parse_config_hz(&text) {
            Some(hz) => return Ok((hz, HzSource::ProcConfig)),
            None => attempts.push("/proc/config.gz: no CONFIG_HZ line".into()),
        },
        Err(e) => attempts.push(format!("/proc/config.gz: {e}")),
    }
    Err(ProbeError::Hz {
        attempts: attempts.join("; "),
    })
}

/// Why measuring HZ from /proc/timer_list failed (one of the attempts
/// [`ProbeError::Hz`] lists).
#[derive(Debug, thiserror::Error)]
enum TimerListError {
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error("no `now at` / `jiffies:` lines")]
    NoLines,
    #[error("samples {a:?} and {b:?} match no HZ")]
    NoMatch { a: (u64, u64), b: (u64, u64) },
}

fn measure_hz_from_timer_list() -> Result<u32, TimerListError> {
    let path = Path::new("/proc/timer_list");
    let sample = || -> Result<(u64, u64), TimerListError> {
        let text = fs::read_to_string(path)?;
        parse_timer_list(&text).ok_or(TimerListError::NoLines)
    };
    let a = sample()?;
    std::thread::sleep(Duration::from_millis(200));
    let b = sample()?;
    hz_from_samples(a, b).ok_or(TimerListError::NoMatch { a, b })
}

/// Extracts `(now_ns, jiffies)` from /proc/timer_list text.
pub fn parse_timer_list(text: &str) -> Option<(u64, u64)> {
    let now = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .trim()
            .parse()
            .ok()
    })?;
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies:")?.trim().parse().ok())?;
    Some((now, jiffies))
}

/// HZ from two `(now_ns, jiffies)` samples, snapped to a value Linux uses (within 5%).
pub fn hz_from_samples(a: (u64, u64), b: (u64, u64)) -> Option<u32> {
    let dns = b.0.checked_sub(a.0)?;
    let dj = b.1.checked_sub(a.1)?;
    if dns < 50_000_000 {
        return None;
    }
    let hz = dj as f64 * 1e9 / dns as f64;
    [100u32, 250, 300, 1000, 24, 32, 48, 64, 128, 200, 500, 1200]
        .into_iter()
        .find(|&c| (hz - f64::from(c)).abs() <= f64::from(c) * 0.05)
}

/// `CONFIG_HZ=<n>` from kernel config text.
pub fn parse_config_hz(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("CONFIG_HZ=")?.trim().parse().ok())
}

fn read_config_gz(path: &Path) -> std::io::Result<String> {
    let file = fs::File::open(path)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text)?;
    Ok(text)
}

/// Reads the timer-related sysctls of a fresh network namespace (never the host's own
/// values, never writing anything): `net/ipv4/tcp_*`, `net/netfilter/nf_conntrack_*`,
/// `net/ipv4/neigh/lo/*`, `net/ipv6/neigh/lo/*` and `net/ipv6/conf/default/*`.
///
/// Requires CAP_SYS_ADMIN.
pub fn probe_netns_defaults() -> Result<SysctlDefaults, ProbeError> {
    let handle = std::thread::Builder::new()
        .name("patchbay-sysctl-probe".into())
        .spawn(|| -> Result<SysctlDefaults, ProbeError> {
            // Only this thread moves; it exits right after, dropping the namespace.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(ProbeError::Unshare)?;
            read_defaults(Path::new("/proc/sys"))
        })
        .map_err(ProbeError::Spawn)?;
    handle.join().map_err(|_| ProbeError::ThreadPanicked)?
}

/// Reads the keys of interest below `root` (normally /proc/sys of a fresh namespace).
fn read_defaults(root: &Path) -> Result<SysctlDefaults, ProbeError> {
    let mut defaults = SysctlDefaults::default();
    type KeyFilter = fn(&str) -> bool;
    let dirs: [(&str, KeyFilter); 5] = [
        ("net/ipv4", |n| n.starts_with("tcp_")),
        ("net/netfilter", |n| n.starts_with("nf_conntrack_")),
        ("net/ipv4/neigh/lo", |_| true),
        ("net/ipv6/neigh/lo", |_| true),
        ("net/ipv6/conf/default", |n| {
            n.starts_with("router_solicitation") || n == "dad_transmits"
        }),
    ];
    for (dir, wanted) in dirs {
        let path = root.join(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            // Absent subsystem (no IPv6, no conntrack): simply no keys.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ProbeError::Read { path, source }),
        };
        for item in entries {
            let item = item.map_err(|source| ProbeError::Read {
                path: path.clone(),
                source,
            })?;
            let name = item.file_name().to_string_lossy().into_owned();
            let file = item.path();
            if !wanted(&name) || !file.is_file() || !readable(&file) {
                continue;
            }
            defaults
                .values
                .insert(format!("{dir}/{name}"), read(&file)?.trim().to_string());
        }
    }
    Ok(defaults)
}

/// Whether a sysctl file has any read permission bit (some are write-only).
fn readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o444 != 0)
}

fn read(path: &Path) -> Result<String, ProbeError> {
    fs::read_to_string(path).map_err(|source| ProbeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timer_list() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 434189149993 nsecs\n\n\
                    cpu: 0\n  .idle_jiffies   : 4295000763\njiffies: 4295001028\n";
        assert_eq!(
            parse_timer_list(text),
            Some((434_189_149_993, 4_295_001_028))
        );
        assert_eq!(parse_timer_list("nothing"), None);
    }

    #[test]
    fn derives_hz_from_two_samples() {
        let a = (1_000_000_000, 10_000);
        assert_eq!(hz_from_samples(a, (1_200_000_000, 10_050)), Some(250));
        assert_eq!(hz_from_samples(a, (1_200_000_000, 10_051)), Some(250));
        assert_eq!(hz_from_samples(a, (1_200_000_000, 10_200)), Some(1000));
        assert_eq!(hz_from_samples(a, (1_200_000_000, 10_020)), Some(100));
        // Too short an interval, or garbage: no answer rather than a wrong one.
        assert_eq!(hz_from_samples(a, (1_010_000_000, 10_003)), None);
        assert_eq!(hz_from_samples(a, (1_200_000_000, 10_035)), None);
    }

    #[test]
    fn parses_config_hz() {
        assert_eq!(
            parse_config_hz("CONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(parse_config_hz("# CONFIG_HZ is not set\n"), None);
    }

    #[test]
    fn reads_defaults_from_a_tree() {
        let dir = std::env::temp_dir().join(format!("patchbay-probe-test-{}", std::process::id()));
        let mk = |rel: &str, v: &str| {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, v).expect("write");
        };
        mk("net/ipv4/tcp_rto_min_us", "200000\n");
        mk("net/ipv4/ip_forward", "0\n");
        mk("net/netfilter/nf_conntrack_udp_timeout", "30\n");
        mk("net/ipv4/neigh/lo/retrans_time_ms", "1000\n");
        let d = read_defaults(&dir).expect("read");
        fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(d.get_u64("net/ipv4/tcp_rto_min_us"), Some(200_000));
        assert!(!d.contains("net/ipv4/ip_forward"));
        assert_eq!(
            d.get_u64("net/netfilter/nf_conntrack_udp_timeout"),
            Some(30)
        );
        assert!(NetnsSysctlCaps::from_defaults(&d).neigh_per_device);
    }

    /// Reads the real kernel (root only); prints PATCHBAY-SKIP otherwise.
    #[test]
    fn probes_this_kernel() {
        if !nix::unistd::Uid::effective().is_root() {
            println!("PATCHBAY-SKIP: probing the kernel needs root");
            return;
        }
        let (caps, defaults) = probe_kernel(BpfFeatures::default()).expect("probe");
        assert!(caps.hz >= 24, "{caps:?}");
        assert!(
            defaults.contains("net/ipv4/tcp_syn_retries"),
            "{defaults:?}"
        );
        // The probe must not have touched this thread's namespace.
        let host = fs::read_to_string("/proc/sys/net/ipv4/tcp_syn_retries").expect("read");
        assert!(!host.trim().is_empty());
        println!(
            "probed HZ={} via {:?}, {} sysctls",
            caps.hz,
            caps.hz_source,
            defaults.values.len()
        );
    }
}
