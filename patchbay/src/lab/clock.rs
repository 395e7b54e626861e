//! The lab clock: virtual time for code under test.

use std::time::{Duration, Instant};

use crate::compress::TimeScale;

/// Virtual time of a lab: wall time since the lab started, times the lab's
/// time scale k. Kernel timers in a lab at k run k times faster; code that
/// takes its timeouts from this clock stays in step with them.
///
/// Processes spawned in a lab can build the same clock from their
/// environment with [`LabClock::from_env`].
#[derive(Debug, Clone, Copy)]
pub struct LabClock {
    start: Instant,
    scale: TimeScale,
}

/// `CLOCK_MONOTONIC` now, as a duration since boot.
pub(crate) fn monotonic_now() -> Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

impl LabClock {
    pub(crate) fn new(start: Instant, scale: TimeScale) -> Self {
        LabClock { start, scale }
    }

    /// The clock of the lab this process was spawned in, from
    /// `PATCHBAY_TIME_SCALE` and `PATCHBAY_CLOCK_START_NS`; `None` outside a
    /// lab (or when they do not hold a valid scale and instant).
    pub fn from_env() -> Option<LabClock> {
        let scale: TimeScale = std::env::var("PATCHBAY_TIME_SCALE").ok()?.parse().ok()?;
        let start_ns: u64 = std::env::var("PATCHBAY_CLOCK_START_NS")
            .ok()?
            .parse()
            .ok()?;
        let since = monotonic_now().checked_sub(Duration::from_nanos(start_ns))?;
        let start = Instant::now().checked_sub(since)?;
        Some(LabClock { start, scale })
    }

    /// The time scale k.
    pub(crate) fn scale(&self) -> TimeScale {
        self.scale
    }

    /// The wall-clock instant the lab started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Virtual time elapsed since the lab started.
    pub fn now(&self) -> Duration {
        self.to_virtual(self.start.elapsed())
    }

    /// The wall-clock duration of a virtual one.
    pub fn to_wall(self, virtual_time: Duration) -> Duration {
        self.scale.to_wall(virtual_time)
    }

    /// The virtual duration of a wall-clock one.
    pub fn to_virtual(self, wall: Duration) -> Duration {
        self.scale.to_virtual(wall)
    }

    /// Sleeps for a virtual duration.
    pub async fn sleep(&self, virtual_time: Duration) {
        tokio::time::sleep(self.to_wall(virtual_time)).await;
    }

    /// Blocking twin of [`LabClock::sleep`].
    pub fn sleep_sync(&self, virtual_time: Duration) {
        std::thread::sleep(self.to_wall(virtual_time));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways() {
        let c = LabClock::new(Instant::now(), TimeScale::new(20.0).expect("k"));
        assert_eq!(
            c.to_wall(Duration::from_secs(30)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            c.to_virtual(Duration::from_millis(1500)),
            Duration::from_secs(30)
        );
        assert!(c.now() < Duration::from_secs(1));
    }
}
