//! The TCP retransmit and timeout scenario suite, with fidelity verification.
//!
//! Each scenario builds its own lab at time scale k, drives real kernel
//! sockets into a timeout, and returns a [`Trace`]: eBPF telemetry (RTO
//! fired, retransmit, TCP state change) plus the scenario's own observations
//! (`connect:ETIMEDOUT`, `nat:new-port`, `send:EHOSTUNREACH`, ...), on a
//! virtual time axis (wall time since the scenario's start mark × k).
//! [`verify`] runs a scenario at a baseline k (1) and at k and compares the
//! traces with [`fidelity::check`]. See `docs/fidelity.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), patchbay::scenario::ScenarioError> {
//! use patchbay::scenario::{Scenario, Size, verify};
//! let r = verify(Scenario::SynBlackhole, 20.0, 1.0, Size::Default).await?;
//! println!("{:.1}x faster, median error {:.1}%", r.speedup, r.fidelity.median * 100.0);
//! assert!(r.fidelity.pass);
//! # Ok(()) }
//! ```
//!
//! Requirements: root, Linux 5.15+ with eBPF `sock_ops` on cgroup v2 (for the
//! telemetry, also at k = 1), nftables (`nft`) for the blackhole faults and
//! NAT.

pub mod bench;
pub mod bench_dir;
pub mod fidelity;
pub mod modes;
mod net;
pub mod svg;
mod tcp;
pub mod trace;
pub mod virt;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::{native::Device, native::Lab, LabOpts};
pub use fidelity::{Fidelity, check};
pub use trace::{Trace, TraceEvent};

/// How big a scenario run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// A k = 1 baseline of roughly 10–60 s: used by the tests.
    Default,
    /// Realistic kernel defaults and timeouts (e.g. a 300 s NAT mapping
    /// timeout, `tcp_syn_retries=6`): minutes at k = 1, used by the benchmark.
    Realistic,
}

/// The scenarios of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// TCP connect to a peer whose inbound SYNs are dropped: SYN
    /// retransmissions back off until `ETIMEDOUT`.
    SynBlackhole,
    /// An established connection whose peer goes silent while the client
    /// writes: retransmissions back off until the connection errors.
    DataBlackhole,
    /// An idle connection with application-set keepalive; the peer vanishes
    /// and keepalive probes detect it.
    KeepaliveDeadPeer,
    /// A UDP client behind a NAT stays idle past the mapping timeout and
    /// talks again: a new mapped port.
    NatUdpExpiry,
    /// A peer on the same link disappears: neighbour resolution fails and the
    /// sender sees `EHOSTUNREACH`.
    NeighborFailure,
    /// A half-closed connection whose peer stays silent is reclaimed by the
    /// FIN-WAIT-2 timeout.
    FinTimeout,
    /// An application retry loop with its own backoff on the lab clock,
    /// interleaved with kernel SYN retransmissions.
    AppTimer,
}

impl Scenario {
    /// Every scenario, in the suite's order.
    pub const ALL: [Scenario; 7] = [
        Scenario::SynBlackhole,
        Scenario::DataBlackhole,
        Scenario::KeepaliveDeadPeer,
        Scenario::NatUdpExpiry,
        Scenario::NeighborFailure,
        Scenario::FinTimeout,
        Scenario::AppTimer,
    ];

    /// The CLI name, e.g. `syn-blackhole`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SynBlackhole => "syn-blackhole",
            Scenario::DataBlackhole => "data-blackhole",
            Scenario::KeepaliveDeadPeer => "keepalive-dead-peer",
            Scenario::NatUdpExpiry => "nat-udp-expiry",
            Scenario::NeighborFailure => "neighbor-failure",
            Scenario::FinTimeout => "fin-timeout",
            Scenario::AppTimer => "app-timer",
        }
    }

    /// One line on what the scenario does and at which sizes.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::SynBlackhole => {
                "connect() to a partitioned peer until ETIMEDOUT (syn_retries 2 / realistic 6)"
            }
            Scenario::DataBlackhole => {
                "write on an established connection whose peer went silent until ETIMEDOUT (tcp_retries2 5 / realistic 8)"
            }
            Scenario::KeepaliveDeadPeer => {
                "idle connection, app keepalive (10 s/10 s x1; realistic 60 s/20 s x3) detects a vanished peer"
            }
            Scenario::NatUdpExpiry => {
                "UDP behind a symmetric NAT idles past the mapping timeout (10 s; realistic 300 s): new mapped port"
            }
            Scenario::NeighborFailure => {
                "UDP to a vanished same-link peer: ARP resolution fails, EHOSTUNREACH (3 cycles of 5 probes; realistic 10)"
            }
            Scenario::FinTimeout => {
                "orphaned FIN-WAIT-2 reclaimed after tcp_fin_timeout (kernel default 60 s in both sizes)"
            }
            Scenario::AppTimer => {
                "app connect retry loop with lab-clock timeouts and backoff, kernel SYN retransmits inside"
            }
        }
    }

    /// Runs the scenario once at time scale `k`.
    pub async fn run(self, k: f64, size: Size) -> Result<Trace, ScenarioError> {
        match self {
            Scenario::SynBlackhole => tcp::syn_blackhole(k, size).await,
            Scenario::DataBlackhole => tcp::data_blackhole(k, size).await,
            Scenario::KeepaliveDeadPeer => tcp::keepalive_dead_peer(k, size).await,
            Scenario::NatUdpExpiry => net::nat_udp_expiry(k, size).await,
            Scenario::NeighborFailure => net::neighbor_failure(k, size).await,
            Scenario::FinTimeout => tcp::fin_timeout(k, size).await,
            Scenario::AppTimer => net::app_timer(k, size).await,
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = ScenarioError;
    fn from_str(s: &str) -> Result<Scenario, ScenarioError> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s.trim())
            .ok_or_else(|| ScenarioError::Unknown(s.to_string()))
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the scenario suite.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A scenario name that does not exist.
    #[error(
        "unknown scenario {0:?}: use one of syn-blackhole, data-blackhole, keepalive-dead-peer, nat-udp-expiry, neighbor-failure, fin-timeout, app-timer (`patchbay scenario list`)"
    )]
    Unknown(String),
    /// A lab operation failed.
    #[error("scenario {scenario}: {what}: {source}")]
    Lab {
        /// Scenario name.
        scenario: &'static str,
        /// What the scenario was doing.
        what: String,
        /// The lab's error.
        #[source]
        source: Box<crate::Error>,
    },
    /// A socket operation failed in a way the scenario does not expect.
    #[error("scenario {scenario}: {what}: {source}")]
    Io {
        /// Scenario name.
        scenario: &'static str,
        /// What the scenario was doing.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel did not behave as the scenario needs (e.g. a connect
    /// through a blackhole succeeded).
    #[error("scenario {scenario}: {what}")]
    Unexpected {
        /// Scenario name.
        scenario: &'static str,
        /// What happened.
        what: String,
    },
    /// The time scale is invalid (outside 1 ≤ k ≤ [`crate::compress::MAX_TIME_SCALE`]).
    #[error(transparent)]
    Scale(#[from] crate::compress::ScaleError),
    /// Running the scenario inside the User-Mode-Linux guest failed.
    #[error("scenario {scenario}: {what}: {source}")]
    Guest {
        /// Scenario name.
        scenario: &'static str,
        /// What the scenario was doing.
        what: String,
        /// The guest runner's error.
        #[source]
        source: Box<crate::vt::VtError>,
    },
}

/// Adds scenario context to lab results.
pub(crate) trait LabCtx<T> {
    fn lab(self, scenario: &'static str, what: &str) -> Result<T, ScenarioError>;
}

impl<T, E: Into<crate::Error>> LabCtx<T> for Result<T, E> {
    fn lab(self, scenario: &'static str, what: &str) -> Result<T, ScenarioError> {
        self.map_err(|e| ScenarioError::Lab {
            scenario,
            what: what.to_string(),
            source: Box::new(e.into()),
        })
    }
}

pub(crate) fn io_err(scenario: &'static str, what: &str, source: std::io::Error) -> ScenarioError {
    ScenarioError::Io {
        scenario,
        what: what.to_string(),
        source,
    }
}

pub(crate) fn unexpected(scenario: &'static str, what: impl Into<String>) -> ScenarioError {
    ScenarioError::Unexpected {
        scenario,
        what: what.into(),
    }
}

/// The name of an I/O error's errno (`ETIMEDOUT`, ...), for trace kinds.
pub fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(n) => format!("errno{n}"),
        None => format!("{:?}", e.kind()),
    }
}

/// A lab for a scenario: telemetry on (also at k = 1), time scale `k`.
pub(crate) async fn scenario_lab(
    scenario: &'static str,
    k: f64,
    opts: impl FnOnce(LabOpts) -> LabOpts,
) -> Result<Lab, ScenarioError> {
    let k = crate::compress::TimeScale::new(k)?;
    let o = opts(
        LabOpts::default()
            .label(scenario)
            .time_mode(crate::TimeMode::Compressed(k))
            .telemetry(true),
    );
    Lab::with_opts(o).await.lab(scenario, "creating the lab")
}

/// Two devices `c` and `s` on one router's LAN (same link).
pub(crate) async fn pair(
    lab: &Lab,
    scenario: &'static str,
) -> Result<(Device, Device, Ipv4Addr), ScenarioError> {
    let r = lab
        .add_router("r")
        .build()
        .await
        .lab(scenario, "building router r")?;
    let c = lab
        .add_device("c")
        .iface("eth0", &r)
        .build()
        .await
        .lab(scenario, "building device c")?;
    let s = lab
        .add_device("s")
        .iface("eth0", &r)
        .build()
        .await
        .lab(scenario, "building device s")?;
    let ip = s
        .ip()
        .ok_or_else(|| unexpected(scenario, "device s has no IPv4 address"))?;
    Ok((c, s, ip))
}

/// How long (wall) to wait for a scenario step that should take `virtual_s`
/// seconds of virtual time: three times that, plus 5 s of slack. A run that
/// hits it is recorded as a `timeout` event (and fails the fidelity check).
pub(crate) fn budget(k: f64, virtual_s: f64) -> Duration {
    Duration::from_secs_f64(3.0 * virtual_s / k + 5.0)
}

/// Lets the telemetry reader thread deliver the last events.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A time mode: how a run saves (or does not save) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// On the host kernel at k = 1: the baseline of the compressed mode.
    Real,
    /// On the host kernel, timers divided by k (the baseline runs at k = 1
    /// on the host).
    Compressed,
    /// Inside the User-Mode-Linux guest in time-travel mode (the baseline
    /// runs in the same guest with its clock in real time); see [`virt`].
    Virtual,
}

/// A [`Mode`] name that is none of `real`, `compressed`, `virtual`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: use real, compressed or virtual (comma-separated for bench --modes)")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, UnknownMode> {
        match s {
            "real" => Ok(Mode::Real),
            "compressed" => Ok(Mode::Compressed),
            "virtual" => Ok(Mode::Virtual),
            _ => Err(UnknownMode(s.to_string())),
        }
    }
}

/// One scenario's fidelity verdict: the baseline and compressed runs and
/// their comparison. Serialises to the JSON object `patchbay verify --json`
/// prints.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyResult {
    /// Scenario name.
    pub scenario: String,
    /// Compressed (host kernel, k) or virtual (UML guest in time-travel
    /// mode); in virtual mode `compressed` is the virtual run. Never `real`.
    pub mode: Mode,
    /// k of the compressed run.
    pub scale: f64,
    /// Size of both runs.
    pub size: Size,
    /// The baseline run.
    pub baseline: RunSummary,
    /// The compressed run.
    pub compressed: RunSummary,
    /// Baseline wall time / compressed wall time.
    pub speedup: f64,
    /// Whether the `(kind, node)` sequences are identical.
    pub sequence_match: bool,
    /// Median and max relative timing error.
    pub timing_error: TimingError,
    /// Virtual mode: the largest difference of an event's time between two
    /// virtual runs, in ms (virtual time is deterministic; this measures it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_max_abs_ms: Option<f64>,
    /// The verdict: identical sequence, median <= 5%, max <= 15%.
    pub pass: bool,
    /// The full comparison.
    pub fidelity: Fidelity,
    /// Timers of the compressed lab that are clamped or unsupported, with the
    /// scenarios they affect (from the compression report).
    pub clamped_timers: Vec<String>,
    /// Both traces.
    pub traces: [Trace; 2],
}

/// Summary of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// k of the run.
    pub scale: f64,
    /// Wall time of the run from its start mark, seconds.
    pub wall_s: f64,
    /// Number of trace events.
    pub events: usize,
    /// Wall time including building and tearing down the lab, seconds (when
    /// measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_wall_s: Option<f64>,
    /// Guest runs only: the run's duration on the guest clock, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_s: Option<f64>,
    /// Guest runs only: host wall time from starting UML to the guest
    /// starting the scenario, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_wall_s: Option<f64>,
}

/// Median and max relative timing error (fractions, 0.05 = 5%).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimingError {
    /// Median.
    pub median: f64,
    /// Max.
    pub max: f64,
    /// Largest absolute difference of an event's time between the two runs
    /// (anchors included), in milliseconds of virtual time.
    pub max_abs_ms: f64,
}

impl RunSummary {
    pub(crate) fn of(t: &Trace) -> Self {
        RunSummary {
            scale: t.scale,
            wall_s: t.wall.as_secs_f64(),
            events: t.events.len(),
            total_wall_s: None,
            virtual_s: None,
            boot_wall_s: None,
        }
    }
}

/// Compares two finished runs of `scenario`.
pub fn compare(scenario: Scenario, size: Size, baseline: Trace, compressed: Trace) -> VerifyResult {
    let fidelity = check(&baseline, &compressed);
    let speedup = baseline.wall.as_secs_f64() / compressed.wall.as_secs_f64().max(1e-6);
    VerifyResult {
        scenario: scenario.name().to_string(),
        mode: Mode::Compressed,
        scale: compressed.scale,
        size,
        baseline: RunSummary::of(&baseline),
        compressed: RunSummary::of(&compressed),
        speedup,
        sequence_match: fidelity.sequence_match,
        timing_error: TimingError {
            median: fidelity.median,
            max: fidelity.max,
            max_abs_ms: fidelity
                .events
                .iter()
                .map(|e| (e.compressed_s - e.baseline_s).abs() * 1000.0)
                .fold(0.0, f64::max),
        },
        pass: fidelity.pass,
        repeat_max_abs_ms: None,
        clamped_timers: vec![],
        traces: [baseline, compressed],
        fidelity,
    }
}

/// Timers the plan at `k` clamps or cannot compress that shape `scenario`
/// (from the compression report's `affects` lists).
pub async fn clamped_timers(scenario: Scenario, k: f64) -> Result<Vec<String>, ScenarioError> {
    use crate::compress::Status;
    let sc = scenario.name();
    let lab = Lab::with_opts(
        LabOpts::default()
            .label("report")
            .time_mode(crate::TimeMode::compressed(k)?),
    )
    .await
    .lab(sc, "creating a lab for the compression report")?;
    let report = lab
        .compression_report()
        .lab(sc, "computing the compression report")?;
    Ok(report
        .timers
        .iter()
        .filter(|t| {
            matches!(
                t.status,
                Status::Clamped { .. } | Status::Unsupported { .. }
            )
        })
        .filter(|t| t.affects.iter().any(|a| a == sc))
        .map(|t| format!("{}: {}", t.name, t.status.label()))
        .collect())
}

/// Runs `scenario` at `baseline_k` (normally 1) and at `k`, and compares.
pub async fn verify(
    scenario: Scenario,
    k: f64,
    baseline_k: f64,
    size: Size,
) -> Result<VerifyResult, ScenarioError> {
    let t = std::time::Instant::now();
    let b = scenario.run(baseline_k, size).await?;
    let bt = t.elapsed();
    let t = std::time::Instant::now();
    let c = scenario.run(k, size).await?;
    let ct = t.elapsed();
    let mut r = compare(scenario, size, b, c);
    r.baseline.total_wall_s = Some(bt.as_secs_f64());
    r.compressed.total_wall_s = Some(ct.as_secs_f64());
    r.clamped_timers = clamped_timers(scenario, k).await?;
    Ok(r)
}

/// The demo's headline: `syn-blackhole` and `nat-udp-expiry` (default size)
/// at k = 1 and at `k`. `progress` is called before each run with
/// (scenario, k of the run).
pub async fn headline(
    k: f64,
    mut progress: impl FnMut(Scenario, f64),
) -> Result<Vec<VerifyResult>, ScenarioError> {
    let mut out = vec![];
    for s in [Scenario::SynBlackhole, Scenario::NatUdpExpiry] {
        progress(s, 1.0);
        let b = s.run(1.0, Size::Default).await?;
        progress(s, k);
        let c = s.run(k, Size::Default).await?;
        out.push(compare(s, Size::Default, b, c));
    }
    Ok(out)
}
