//! Lab options and the lab's time mode.

use crate::compress::{ScaleError, TimeScale};

/// How time runs in a lab: one choice, so that no two settings can conflict.
///
/// ```
/// use patchbay::{Lab, TimeMode};
/// # fn demo() -> Result<(), patchbay::compress::ScaleError> {
/// let real = Lab::builder();
/// let fast = Lab::builder().time_mode(TimeMode::compressed(20.0)?);
/// let exact = Lab::builder().time_mode(TimeMode::Virtual { seed: None });
/// # let _ = (real, fast, exact); Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum TimeMode {
    /// Wall-clock time, nothing compressed (the default).
    #[default]
    Real,
    /// Every kernel timer that shapes timeout-heavy scenarios runs k times faster inside the
    /// lab's namespaces only (see `docs/compression.md`). k > 1 needs root, cgroup v2 and
    /// eBPF `sock_ops` (Linux 5.15+); k = 1 is real time.
    Compressed(TimeScale),
    /// The lab runs inside patchbay's User-Mode-Linux kernel in time-travel mode
    /// (`patchbay vt -- <test binary>`, or the cargo runner in `docs/virtual-time.md`), where
    /// every timer of kernel and application runs on a virtual clock. Outside such a kernel,
    /// creating the lab fails with a message that says how to get there.
    Virtual {
        /// The seed the guest kernel must have been booted with (`patchbay vt --seed N`):
        /// with `Some(n)`, creating the lab fails when the guest runs another seed, so a
        /// test that relies on one replay cannot silently run another. `None` takes the
        /// guest's seed, whatever it is. The seed in effect is written to `run.json`.
        seed: Option<u64>,
    },
}

impl TimeMode {
    /// Compressed time at scale `k`, validated ([`TimeScale::new`]: 1 ≤ k ≤
    /// [`crate::compress::MAX_TIME_SCALE`]).
    pub fn compressed(k: f64) -> Result<TimeMode, ScaleError> {
        Ok(TimeMode::Compressed(TimeScale::new(k)?))
    }

    /// The scale kernel timers are divided by: k under [`TimeMode::Compressed`], 1 otherwise
    /// (under virtual time every timer is already exact).
    pub fn scale(self) -> TimeScale {
        match self {
            TimeMode::Compressed(k) => k,
            TimeMode::Real | TimeMode::Virtual { .. } => TimeScale::REAL_TIME,
        }
    }

    /// Whether the lab runs in virtual time.
    pub fn is_virtual(self) -> bool {
        matches!(self, TimeMode::Virtual { .. })
    }

    /// `"real"`, `"compressed"` (k > 1) or `"virtual"`, as written in `run.json`.
    pub fn name(self) -> &'static str {
        match self {
            TimeMode::Virtual { .. } => "virtual",
            m if m.scale().is_real_time() => "real",
            _ => "compressed",
        }
    }
}

/// Options of a lab. Build with [`LabOpts::default`] and the setters.
#[derive(Debug, Clone)]
pub struct LabOpts {
    pub(crate) label: Option<String>,
    pub(crate) prewarm_neighbors: bool,
    pub(crate) time: TimeMode,
    pub(crate) telemetry: Option<bool>,
    pub(crate) sysctl_only: bool,
    pub(crate) syn_retries: Option<u8>,
    pub(crate) retries2: Option<u8>,
    pub(crate) outdir: Option<std::path::PathBuf>,
    pub(crate) keep_artifacts: bool,
    pub(crate) bpf_log: Option<tracing::Level>,
}

impl Default for LabOpts {
    fn default() -> Self {
        LabOpts {
            label: None,
            prewarm_neighbors: true,
            time: TimeMode::Real,
            telemetry: None,
            sysctl_only: false,
            syn_retries: None,
            retries2: None,
            outdir: None,
            keep_artifacts: false,
            bpf_log: None,
        }
    }
}

impl LabOpts {
    /// A label shown in thread names, the environment of spawned commands
    /// (`PATCHBAY_LAB`) and error messages.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Whether to install neighbour (ARP/NDP) entries at build time, so the
    /// first packet does not wait for resolution (default: on). Each LAN
    /// member (device interface or chained router uplink) and its gateway
    /// learn each other: linear in the lab's size, and bounded per lab to a
    /// quarter of the host's `gc_thresh3` (at most 256 entries per family),
    /// because the kernel's neighbour tables are shared by every namespace
    /// of the host. Siblings on a LAN, and members beyond the budget,
    /// resolve by ARP/NDP. The entries are ordinary `REACHABLE` ones, not
    /// permanent: they age, and a peer that vanishes still fails
    /// resolution. Turn this off to test resolution itself.
    pub fn prewarm_neighbors(mut self, on: bool) -> Self {
        self.prewarm_neighbors = on;
        self
    }

    /// How time runs in the lab (default [`TimeMode::Real`]).
    pub fn time_mode(mut self, mode: TimeMode) -> Self {
        self.time = mode;
        self
    }

    /// Collect eBPF TCP telemetry (RTO, retransmit and state events; see
    /// [`crate::native::Lab::tcp_events`]). Default: on when k > 1 (except in
    /// sysctl-only mode), off at k = 1. Needs eBPF.
    pub fn telemetry(mut self, on: bool) -> Self {
        self.telemetry = Some(on);
        self
    }

    /// Compress with per-namespace sysctls only, without eBPF (for hosts
    /// without BPF or cgroup v2). The compression report then marks the
    /// BPF-only timers (initial RTO, RTO bounds, give-up deadline) as not
    /// compressed.
    pub fn sysctl_only(mut self, on: bool) -> Self {
        self.sysctl_only = on;
        self
    }

    /// Sets `tcp_syn_retries` in every lab namespace (a count, never
    /// scaled); the compression plan uses it to place deadlines.
    pub fn tcp_syn_retries(mut self, n: u8) -> Self {
        self.syn_retries = Some(n);
        self
    }

    /// Turns on the eBPF programs' log records at `level` while the lab lives
    /// and forwards them to `tracing` with target `patchbay::bpf` (see
    /// [`crate::bpf::Engine::log`]): sockets of unregistered namespaces left
    /// alone, `bpf_setsockopt` refused by the kernel (with its errno). Takes
    /// effect only when the lab uses eBPF (k > 1 or telemetry). Default: off,
    /// unless `PATCHBAY_BPF_LOG` is set (e.g. `PATCHBAY_BPF_LOG=debug`).
    pub fn bpf_log(mut self, level: tracing::Level) -> Self {
        self.bpf_log = Some(level);
        self
    }

    /// Sets `tcp_retries2` in every lab namespace (a count, never scaled);
    /// it fixes the established give-up deadline the plan compresses.
    pub fn tcp_retries2(mut self, n: u8) -> Self {
        self.retries2 = Some(n);
        self
    }

    /// Writes the lab's run artifacts into `dir` (format in
    /// `docs/artifacts.md`): `run.json`, `topology.json`, `events.jsonl`,
    /// per-node logs of every spawned command, the compression report, and
    /// pcapng captures requested with [`crate::Node::capture`]. A previous
    /// run in `dir` is replaced; a non-empty directory that holds no run is
    /// refused. Retention: the directory is kept when the lab fails (dropped
    /// while panicking, or [`crate::native::Lab::fail`]), and removed on success
    /// unless [`LabOpts::keep_artifacts`] or `PATCHBAY_KEEP_ARTIFACTS` is set.
    pub fn outdir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.outdir = Some(dir.into());
        self
    }

    /// Keeps the output directory after a successful run too (default:
    /// only after a failure).
    pub fn keep_artifacts(mut self, on: bool) -> Self {
        self.keep_artifacts = on;
        self
    }
}
