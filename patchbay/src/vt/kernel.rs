//! What a UML kernel binary can do, probed from the binary itself: `linux --version` prints
//! its release, and `linux --help` lists one entry per boot option compiled in, so
//! `time-travel` appears only with `CONFIG_UML_TIME_TRAVEL_SUPPORT` and `seccomp=` only on
//! kernels with the seccomp-based process handling (7.x; not 6.1), `patchbay_seed=` and
//! `patchbay_vclock=` only on kernels built with patchbay's patches. Both exit at once, before
//! the kernel allocates memory or starts processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use super::{VtError, io};

/// The capabilities of one UML kernel binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UmlKernel {
    /// The binary.
    pub path: PathBuf,
    /// Its release (`linux --version`), e.g. `7.3.4`.
    pub release: String,
    /// Built with `CONFIG_UML_TIME_TRAVEL_SUPPORT` (needed for virtual time).
    pub time_travel: bool,
    /// Has the seccomp-based process handling (`seccomp=` boot option): guest syscalls are
    /// caught by a seccomp filter and a signal handler in each guest process instead of ptrace
    /// stops, which makes page faults and process start-up much cheaper.
    pub seccomp: bool,
    /// Takes `patchbay_seed=N` (`xtask/uml-seed.patch`): the guest's randomness comes from a
    /// stream depending on N alone, so a seeded run repeats (docs/determinism.md).
    pub seed: bool,
    /// A seeded guest's random stream depends on the seed alone: `xtask/uml-seed.patch` closes
    /// the random pool, so neither the build's time and host nor the microseconds by which the
    /// host moves the guest's clock reach it, and a seed replays on another machine's build of
    /// the same source. Seeded kernels built before that replay only on the machine, and in
    /// the environment, where the seed was drawn.
    pub reproducible: bool,
    /// Has the trap-free clock (`patchbay_vclock=`, `xtask/uml-vdso.patch`, 7.x kernels): under
    /// `time-travel=inf-cpu`, `clock_gettime` (realtime, monotonic, raw, boottime, TAI and the
    /// coarse clocks), `gettimeofday` and `time` in guest processes read the virtual clock from
    /// a page the kernel keeps current, through the vDSO, instead of trapping into the kernel
    /// (about 40 µs each on a 2-core host). The values are the syscall's to the nanosecond;
    /// such a read does not move the clock, except every 64th read of an unchanged clock,
    /// which makes the syscall so that a program spinning on the clock still sees it move
    /// (docs/virtual-time.md).
    pub fast_clock: bool,
}

impl UmlKernel {
    /// Why this kernel runs its guest processes under ptrace, or `None` when it uses seccomp
    /// under `mode`. (The command line's report.)
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn ptrace_reason(&self, mode: GuestProcesses) -> Option<String> {
        match mode {
            GuestProcesses::Ptrace => Some("ptrace was asked for".into()),
            GuestProcesses::Auto if !self.seccomp => Some(format!(
                "UML {} has no seccomp-based process handling (no `seccomp=` in `linux \
                 --help`; 7.x kernels have it: `cargo xtask build-uml --kernel 7.3`)",
                self.release
            )),
            GuestProcesses::Auto => None,
        }
    }
}

/// How the UML kernel runs guest processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum GuestProcesses {
    /// Seccomp (`seccomp=on`) when the kernel has it, else ptrace. If the host refuses the
    /// seccomp filter (e.g. inside a restrictive container) the run is repeated under ptrace.
    /// Caveat: the seccomp filter does not stop guest processes from reaching the UML kernel's
    /// memory; fine for test code the user runs anyway, not a boundary for hostile code.
    #[default]
    Auto,
    /// Always ptrace (`seccomp=off` where the kernel knows the option): each guest process is
    /// a ptraced host process, every syscall a ptrace stop. For comparisons.
    Ptrace,
}

/// In the `patchbay_seed=` help of kernels whose seeded random pool takes in nothing else.
const CLOSED_POOL: &str = "nothing else enters the random pool";

/// Probed kernels by path and modification time (a probe costs two short exec's).
static PROBED: Mutex<BTreeMap<(PathBuf, Option<SystemTime>), UmlKernel>> =
    Mutex::new(BTreeMap::new());

/// Probes `binary` (cached per path and modification time).
pub fn probe(binary: &Path) -> Result<UmlKernel, VtError> {
    let mtime = std::fs::metadata(binary)
        .map_err(io("reading the UML kernel", binary))?
        .modified()
        .ok();
    let key = (binary.to_path_buf(), mtime);
    if let Some(k) = PROBED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(k.clone());
    }
    let version = run_option(binary, "--version")?;
    let help = run_option(binary, "--help")?;
    let kernel = parse(binary, &version, &help)?;
    PROBED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, kernel.clone());
    Ok(kernel)
}

fn run_option(binary: &Path, option: &str) -> Result<String, VtError> {
    let out = Command::new(binary)
        .arg(option)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| VtError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads the release and the options out of `--version` and `--help` output.
fn parse(binary: &Path, version: &str, help: &str) -> Result<UmlKernel, VtError> {
    let release = version
        .split_whitespace()
        .next()
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| VtError::NotUml {
            binary: binary.to_path_buf(),
        })?
        .to_string();
    let has = |opt: &str| help.lines().any(|l| l.trim_start().starts_with(opt));
    if !has("mem=") {
        return Err(VtError::NotUml {
            binary: binary.to_path_buf(),
        });
    }
    Ok(UmlKernel {
        path: binary.to_path_buf(),
        release,
        time_travel: has("time-travel"),
        seccomp: has("seccomp="),
        seed: has("patchbay_seed="),
        reproducible: has("patchbay_seed=") && help.contains(CLOSED_POOL),
        fast_clock: has("patchbay_vclock="),
    })
}

/// The kernel version at the start of a cache entry name (`7.3.4-1~bpo13+1-<hash>` gives
/// `(7, 3, 4)`); `(0, 0, 0)` for names that do not start with one.
pub(crate) fn entry_version(name: &str) -> (u32, u32, u32) {
    let head = name.split(['-', '~', '+']).next().unwrap_or("");
    let mut n = head.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP_73: &str = "User Mode Linux v7.3.4\n\tavailable at http://user-mode-linux.sourceforge.net/\n\n\
        mem=<Amount of desired ram>\n    This controls how much ...\n\n\
        time-travel\n    This option just enables basic time travel mode...\n\n\
        seccomp=<on/auto/off>\n    Configure whether or not SECCOMP is used.\n\n\
        patchbay_seed=<n>\n    Take the kernel's randomness from a deterministic stream seeded with n\n    \
        instead of the host's getrandom(); nothing else enters the random pool\n\n\
        patchbay_vclock=off\n    In time-travel=inf-cpu mode, the vDSO reads the clock from a page the\n";

    #[test]
    fn options_are_read_from_help() {
        let k = parse(Path::new("/k"), "7.3.4\n", HELP_73).expect("parses");
        assert_eq!(k.release, "7.3.4");
        assert!(k.time_travel && k.seccomp && k.seed && k.reproducible && k.fast_clock);
        let open_pool = HELP_73.replace("nothing else enters", "and");
        let k = parse(Path::new("/k"), "7.3.4\n", &open_pool).expect("parses");
        assert!(k.seed && !k.reproducible);
        assert_eq!(k.ptrace_reason(GuestProcesses::Auto), None);
        assert!(k.ptrace_reason(GuestProcesses::Ptrace).is_some());
        let help_61 = HELP_73
            .replace("seccomp=", "nosysemu")
            .replace("patchbay_seed=", "uml_dir=")
            .replace("patchbay_vclock=", "virtio_uml.device=");
        let k = parse(Path::new("/k"), "6.1.192\n", &help_61).expect("parses");
        assert!(k.time_travel && !k.seccomp && !k.seed && !k.fast_clock);
        let why = k.ptrace_reason(GuestProcesses::Auto).expect("ptrace");
        assert!(why.contains("6.1.192") && why.contains("seccomp"), "{why}");
        let plain = HELP_73.replace("time-travel", "xterm");
        assert!(
            !parse(Path::new("/k"), "7.3.4", &plain)
                .expect("parses")
                .time_travel
        );
    }

    #[test]
    fn a_non_uml_binary_is_named() {
        let err = parse(Path::new("/bin/true"), "", "").expect_err("not UML");
        assert!(err.to_string().contains("/bin/true"), "{err}");
    }

    #[test]
    fn entry_versions_order_kernels() {
        assert_eq!(entry_version("7.3.4-1~bpo13+1-0123"), (7, 3, 4));
        assert_eq!(entry_version("6.12.117-1~deb12u1-x"), (6, 12, 117));
        assert!(entry_version("7.3.4-1-a") > entry_version("6.12.117-1-b"));
        assert_eq!(entry_version("junk"), (0, 0, 0));
    }
}
