//! Timer compression planning: which kernel timers a lab at time scale `k` runs `k` times
//! faster, through which mechanism, and how faithfully.
//!
//! Everything here except [`probe_kernel`] and [`probe_hz`] is pure and needs no root: a plan is computed from
//! plain data ([`KernelCaps`], [`SysctlDefaults`], [`TimerInputs`]) with a jiffy-aware
//! model of the kernel's timer wheel ([`JiffyModel`]), so applied values reproduce the
//! real-time behaviour (including the kernel's own rounding and lateness) rather than
//! naive `default / k`. See `docs/compression.md`.
//!
//! A test author meets this module through a lab's time mode and its report (the plan itself
//! is crate-private):
//! ```no_run
//! use patchbay::{Lab, TimeMode};
//! # async fn demo() -> anyhow::Result<()> {
//! let lab = Lab::builder().time_mode(TimeMode::compressed(20.0)?).build().await?;
//! // Which timers run 20 times faster, through which mechanism, and which do not.
//! println!("{}", lab.compression_report()?);
//! # Ok(()) }
//! ```

mod caps;
mod external;
mod model;
mod plan;
pub(crate) mod probe;
mod report;
mod scale;
mod schedule;
mod tcp;
mod timers;

// What a test author reads: the time scale and the compression report
// (`Lab::compression_report`). The planner, the jiffy model, the kernel
// capability probe and the scaling helpers are the lab's machinery.
pub use plan::TcpFidelity;
pub use report::{CompressionReport, FaithfulSummary};
pub use scale::{MAX_TIME_SCALE, ScaleError, TimeScale};
pub use schedule::Fidelity;
pub use timers::{Mechanism, Status, TimerEntry, Unit};

internal! {
    pub use caps::{BpfFeatures, HzSource, KernelCaps, NeighFamily, NetnsSysctlCaps, SysctlDefaults};
}
internal! {
    pub use external::{ScaledConntrack, ScaledLink, scale_conntrack, scale_link};
}
internal! {
    pub use model::{ArmContext, JiffyModel, ModelError};
}
internal! {
    pub use plan::{BpfTargets, FaithfulK, LADDER, LadderPoint, Plan, PlanError};
}
internal! {
    pub use probe::{ProbeError, probe_hz, probe_kernel};
}
internal! {
    pub use schedule::Prediction;
}
internal! {
    pub use timers::{ExternalTimer, TimerInputs};
}
