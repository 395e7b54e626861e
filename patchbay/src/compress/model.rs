//! A jiffy-aware model of kernel timers: HZ conversions and the timer wheel's rounding.
//!
//! Kernel TCP, neighbour and keepalive timers are `timer_list` timers on the timer wheel
//! (`kernel/time/timer.c`). The wheel has levels of 64 buckets; level `n` has a
//! granularity of `8^n` jiffies (`LVL_CLK_SHIFT = 3`, `LVL_BITS = 6`). A timer is put in
//! the level chosen by its distance from the base clock (`delta < LVL_START(n+1)` with
//! `LVL_START(n) = 63 << 3(n-1)`), and its expiry is rounded *up* to the next multiple of
//! that level's granularity, strictly after the requested jiffy (`calc_index()`: `(expires
//! >> shift) + 1`). So a timer never fires early and:
//! - a timer shorter than 63 jiffies fires exactly one jiffy late;
//! - a longer timer fires 1..=8^n jiffies late, depending on where the absolute expiry
//!   falls relative to the level's grid.
//!
//! Timers re-armed from a timer callback (TCP retransmits) are armed right after a tick
//! while the base clock is already one jiffy ahead (`base->clk = jiffies + 1`), so their
//! chains stay aligned on the grid. The first timer of a chain is armed from process
//! context at a random point inside a jiffy.

use serde::{Deserialize, Serialize};

/// `LVL_CLK_SHIFT` in `kernel/time/timer.c`: each wheel level is 8 times coarser.
pub const LVL_CLK_SHIFT: u32 = 3;
/// `LVL_BITS` in `kernel/time/timer.c`: 64 buckets per level.
pub const LVL_BITS: u32 = 6;
const LVL_SIZE: u64 = 1 << LVL_BITS;

/// Why a timer model could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// HZ outside what any Linux configuration uses.
    #[error(
        "kernel HZ {hz} is outside {min}..={max}: check how HZ was derived \
         (/proc/timer_list or CONFIG_HZ); `getconf CLK_TCK` is USER_HZ, not HZ"
    )]
    UnsupportedHz {
        /// The rejected value.
        hz: u32,
        /// Smallest accepted HZ.
        min: u32,
        /// Largest accepted HZ.
        max: u32,
    },
}

/// Where a timer is armed from; decides the base clock and the sub-jiffy phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArmContext {
    /// From a system call (connect, write): base clock = jiffies, random phase in the jiffy.
    Process,
    /// From a timer callback right after a tick: base clock = jiffies + 1, phase 0.
    Softirq,
}

/// Kernel timer arithmetic for one HZ value. Pure; needs nothing from the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JiffyModel {
    hz: u32,
}

impl JiffyModel {
    /// Smallest HZ accepted.
    pub const MIN_HZ: u32 = 24;
    /// Largest HZ accepted.
    pub const MAX_HZ: u32 = 10_000;

    /// A model for a kernel with this HZ (`CONFIG_HZ`, e.g. 250).
    pub fn new(hz: u32) -> Result<Self, ModelError> {
        if !(Self::MIN_HZ..=Self::MAX_HZ).contains(&hz) {
            return Err(ModelError::UnsupportedHz {
                hz,
                min: Self::MIN_HZ,
                max: Self::MAX_HZ,
            });
        }
        Ok(Self { hz })
    }

    /// The HZ this model uses.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// One jiffy in microseconds (4000 at HZ=250).
    pub fn jiffy_us(&self) -> f64 {
        1e6 / f64::from(self.hz)
    }

    /// One jiffy in milliseconds (4 at HZ=250).
    pub fn jiffy_ms(&self) -> f64 {
        1e3 / f64::from(self.hz)
    }

    /// `msecs_to_jiffies()`: rounds up.
    pub fn msecs_to_jiffies(&self, ms: u64) -> u64 {
        (ms * u64::from(self.hz)).div_ceil(1000)
    }

    /// `usecs_to_jiffies()`: rounds up.
    pub fn usecs_to_jiffies(&self, us: u64) -> u64 {
        (us * u64::from(self.hz)).div_ceil(1_000_000)
    }

    /// `jiffies_to_msecs()` (exact when HZ divides 1000, else rounded up like the kernel).
    pub fn jiffies_to_msecs(&self, jiffies: u64) -> u64 {
        (jiffies * 1000).div_ceil(u64::from(self.hz))
    }

    /// `jiffies_to_usecs()`.
    pub fn jiffies_to_usecs(&self, jiffies: u64) -> u64 {
        (jiffies * 1_000_000).div_ceil(u64::from(self.hz))
    }

    /// Seconds to jiffies (sysctls handled by `proc_dointvec_jiffies`).
    pub fn secs_to_jiffies(&self, secs: u64) -> u64 {
        secs * u64::from(self.hz)
    }

    /// `TCP_RTO_MIN` (HZ/5, 200 ms), also the fixed base of the give-up deadline.
    pub fn tcp_rto_min(&self) -> u64 {
        u64::from(self.hz / 5)
    }

    /// `TCP_RTO_MAX` (120 s).
    pub fn tcp_rto_max(&self) -> u64 {
        120 * u64::from(self.hz)
    }

    /// `TCP_TIMEOUT_INIT` (1 s): the default initial RTO of a SYN.
    pub fn tcp_timeout_init(&self) -> u64 {
        u64::from(self.hz)
    }

    /// `TCP_TIMEOUT_MIN` (2 jiffies): lower bound of `TCP_BPF_RTO_MIN`/`TCP_BPF_DELACK_MAX`.
    pub fn tcp_timeout_min(&self) -> u64 {
        2
    }

    /// `TCP_DELACK_MAX` (HZ/5, 200 ms).
    pub fn tcp_delack_max(&self) -> u64 {
        u64::from(self.hz / 5)
    }

    /// `LVL_DEPTH`: 9 wheel levels for HZ > 100, else 8.
    pub fn wheel_depth(&self) -> u32 {
        if self.hz > 100 { 9 } else { 8 }
    }

    /// `LVL_START(n)`: the smallest delta that lands in level `n` (n >= 1).
    pub fn level_start(level: u32) -> u64 {
        (LVL_SIZE - 1) << ((level.saturating_sub(1)) * LVL_CLK_SHIFT)
    }

    /// `LVL_GRAN(n)`: granularity of level `n` in jiffies (8^n).
    pub fn granularity(level: u32) -> u64 {
        1 << (level * LVL_CLK_SHIFT)
    }

    /// The wheel level of a timer `delta` jiffies after the base clock.
    pub fn level_for_delta(&self, delta: u64) -> u32 {
        let depth = self.wheel_depth();
        (0..depth - 1)
            .find(|&level| delta < Self::level_start(level + 1))
            .unwrap_or(depth - 1)
    }

    /// The wheel level a timer of `timeout` jiffies lands in when armed in `ctx`.
    pub fn level_for_timeout(&self, timeout: u64, ctx: ArmContext) -> u32 {
        let delta = match ctx {
            ArmContext::Process => timeout,
            ArmContext::Softirq => timeout.saturating_sub(1),
        };
        self.level_for_delta(delta)
    }

    /// The jiffy at which a timer armed at jiffy `now` for `timeout` jiffies fires
    /// (`calc_wheel_index()` + `calc_index()`).
    pub fn fire_jiffy(&self, now: u64, timeout: u64, ctx: ArmContext) -> u64 {
        let clk = match ctx {
            ArmContext::Process => now,
            ArmContext::Softirq => now + 1,
        };
        let mut expires = now + timeout;
        if expires < clk {
            // `(long)delta < 0`: queued in the current bucket, runs at the next tick.
            return clk;
        }
        let depth = self.wheel_depth();
        let cutoff = Self::level_start(depth);
        let delta = expires - clk;
        let level = if delta >= cutoff {
            expires = clk + cutoff - Self::granularity(depth - 1);
            depth - 1
        } else {
            self.level_for_delta(delta)
        };
        let shift = level * LVL_CLK_SHIFT;
        ((expires >> shift) + 1) << shift
    }

    /// Expected delay in jiffies of a single timer, averaged over where the expiry falls on
    /// the level grid and (for process context) over the arming phase inside the jiffy.
    pub fn expected_delay_jiffies(&self, timeout: u64, ctx: ArmContext) -> f64 {
        let level = self.level_for_timeout(timeout, ctx);
        let gran = Self::granularity(level) as f64;
        let phase = match ctx {
            ArmContext::Process => 0.5,
            ArmContext::Softirq => 0.0,
        };
        timeout as f64 + (gran + 1.0) / 2.0 - phase
    }

    /// Earliest and latest delay in jiffies of a single timer (see
    /// [`Self::expected_delay_jiffies`]).
    pub fn delay_bounds_jiffies(&self, timeout: u64, ctx: ArmContext) -> (f64, f64) {
        let level = self.level_for_timeout(timeout, ctx);
        let gran = Self::granularity(level) as f64;
        let t = timeout as f64;
        match ctx {
            ArmContext::Process => (t, t + gran),
            ArmContext::Softirq => (t + 1.0, t + gran),
        }
    }

    /// Predicted relative error (in %) of a timer of `applied` jiffies at scale `k`
    /// against the same timer at `default` jiffies in real time, both including the wheel's
    /// expected lateness: `|delay(applied) x k - delay(default)| / delay(default)`.
    pub fn timer_error_pct(&self, default: u64, applied: u64, k: f64, ctx: ArmContext) -> f64 {
        let base = self.expected_delay_jiffies(default, ctx);
        let scaled = self.expected_delay_jiffies(applied, ctx) * k;
        if base <= 0.0 {
            return 0.0;
        }
        (scaled - base).abs() / base * 100.0
    }

    /// The whole number of jiffies whose expected firing delay at scale `k` best matches
    /// the expected delay of a `default`-jiffy timer in real time, lateness included
    /// (unconstrained; callers clamp to the kernel's accepted range).
    pub fn best_jiffies(&self, default: u64, k: f64, ctx: ArmContext) -> u64 {
        let naive = default as f64 / k;
        let lo = ((naive * 0.9).floor() as u64).saturating_sub(2).max(1);
        let hi = (naive * 1.1).ceil() as u64 + 2;
        let error = |j: u64| self.timer_error_pct(default, j, k, ctx);
        (lo..=hi)
            .min_by(|&a, &b| error(a).total_cmp(&error(b)))
            .unwrap_or(lo)
    }

    /// The kernel's default give-up deadline in ms for an established connection
    /// (`tcp_model_timeout()`, used by `retransmits_timed_out()` when no
    /// `TCP_USER_TIMEOUT` is set): exponential backoff from `rto_base` jiffies
    /// (`TCP_RTO_MIN`, the fixed 200 ms base) up to `rto_max`, then linear, for `boundary`
    /// (`tcp_retries2`) retransmissions.
    pub fn tcp_model_timeout_ms(&self, boundary: u32, rto_base: u64, rto_max: u64) -> u64 {
        let rto_base = rto_base.max(1);
        let thresh = (rto_max / rto_base).max(1).ilog2();
        let jiffies = if boundary <= thresh {
            ((2u64 << boundary) - 1) * rto_base
        } else {
            ((2u64 << thresh) - 1) * rto_base + u64::from(boundary - thresh) * rto_max
        };
        self.jiffies_to_msecs(jiffies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hz250() -> JiffyModel {
        JiffyModel::new(250).expect("valid HZ")
    }

    #[test]
    fn rejects_absurd_hz() {
        assert!(JiffyModel::new(0).is_err());
        assert!(JiffyModel::new(1_000_000).is_err());
        let err = JiffyModel::new(0).expect_err("invalid");
        assert!(err.to_string().contains("CLK_TCK"));
    }

    #[test]
    fn conversions_round_up() {
        let m = hz250();
        assert_eq!(m.msecs_to_jiffies(1000), 250);
        assert_eq!(m.msecs_to_jiffies(1), 1);
        assert_eq!(m.msecs_to_jiffies(13), 4);
        assert_eq!(m.usecs_to_jiffies(16_000), 4);
        assert_eq!(m.usecs_to_jiffies(16_001), 5);
        assert_eq!(m.jiffies_to_msecs(51), 204);
        assert_eq!(m.tcp_rto_min(), 50);
    }

    #[test]
    fn wheel_levels_match_timer_c() {
        let m = hz250();
        assert_eq!(JiffyModel::level_start(1), 63);
        assert_eq!(JiffyModel::level_start(2), 504);
        assert_eq!(JiffyModel::level_start(3), 4032);
        assert_eq!(m.level_for_delta(62), 0);
        assert_eq!(m.level_for_delta(63), 1);
        assert_eq!(m.level_for_delta(503), 1);
        assert_eq!(m.level_for_delta(504), 2);
        assert_eq!(m.wheel_depth(), 9);
        assert_eq!(JiffyModel::new(100).expect("valid").wheel_depth(), 8);
    }

    #[test]
    fn short_timers_fire_one_jiffy_late() {
        let m = hz250();
        for n in 1..63 {
            assert_eq!(
                m.fire_jiffy(1000, n, ArmContext::Softirq),
                1000 + n + 1,
                "n={n}"
            );
        }
        // A timer of 0 from a callback runs at the next tick.
        assert_eq!(m.fire_jiffy(1000, 0, ArmContext::Softirq), 1001);
    }

    #[test]
    fn long_timers_round_up_to_level_grid() {
        let m = hz250();
        // 250 jiffies lands in level 1 (granularity 8): next multiple of 8 after expiry.
        assert_eq!(m.fire_jiffy(1000, 250, ArmContext::Softirq), 1256);
        assert_eq!(m.fire_jiffy(1006, 250, ArmContext::Softirq), 1264);
        // An expiry exactly on the grid still moves one full granule later.
        assert_eq!(m.fire_jiffy(1006, 250, ArmContext::Process), 1264);
        // 1000 jiffies lands in level 2 (granularity 64).
        let fire = m.fire_jiffy(1024, 1000, ArmContext::Softirq);
        assert_eq!(fire % 64, 0);
        assert!(fire > 2024 && fire <= 2024 + 64);
        // Never early, never later than one granule.
        for now in 0..200 {
            for n in [5, 70, 600, 5000] {
                let fire = m.fire_jiffy(now, n, ArmContext::Process);
                let gran = JiffyModel::granularity(m.level_for_delta(n));
                assert!(fire > now + n && fire <= now + n + gran);
            }
        }
    }

    /// Measured fact: the real-time SYN backoff fires at 1.024 s, 2.016 s, 4.096 s instead
    /// of 1, 2, 4 s once the chain is aligned on the 8-jiffy grid (which it is after the
    /// first level-1 timer fired).
    #[test]
    fn reproduces_measured_k1_syn_backoff_intervals() {
        let m = hz250();
        let aligned = 8 * 1000; // a jiffy on which a level-1 timer fired
        let one = m.fire_jiffy(aligned, 250, ArmContext::Softirq) - aligned;
        assert_eq!(one as f64 * m.jiffy_ms(), 1024.0);
        let two = m.fire_jiffy(aligned, 500, ArmContext::Softirq) - aligned;
        assert_eq!(two as f64 * m.jiffy_ms(), 2016.0);
        // 4 s lands in level 2 (64-jiffy grid): 4.096 s when the chain sits on that grid,
        // 4.004..4.256 s otherwise.
        let aligned64 = 64 * 1000;
        let four = m.fire_jiffy(aligned64, 1000, ArmContext::Softirq) - aligned64;
        assert_eq!(four as f64 * m.jiffy_ms(), 4096.0);
        let (lo, hi) = m.delay_bounds_jiffies(1000, ArmContext::Softirq);
        assert!(lo * 4.0 <= 4096.0 && 4096.0 <= hi * 4.0);
    }

    #[test]
    fn expected_delay_includes_lateness() {
        let m = hz250();
        assert_eq!(m.expected_delay_jiffies(12, ArmContext::Softirq), 13.0);
        assert_eq!(m.expected_delay_jiffies(12, ArmContext::Process), 12.5);
        assert_eq!(m.expected_delay_jiffies(250, ArmContext::Softirq), 254.5);
        assert!(m.timer_error_pct(250, 12, 20.0, ArmContext::Softirq) < 3.0);
        // Delayed ACK (50 jiffies, armed from process context) at k=20: 2 jiffies fire
        // 2.5 jiffies later on average, x20 = 50, like the real 50.5; 3 would be 40% off.
        assert_eq!(m.best_jiffies(50, 20.0, ArmContext::Process), 2);
        // Neighbour retransmit (250 jiffies, level 1, +4.5 on average) at k=20: 12 jiffies.
        assert_eq!(m.best_jiffies(250, 20.0, ArmContext::Softirq), 12);
    }

    #[test]
    fn model_timeout_matches_kernel_defaults() {
        let m = hz250();
        // tcp_retries2=15, 200 ms base, 120 s max: 924.6 s.
        assert_eq!(m.tcp_model_timeout_ms(15, 50, m.tcp_rto_max()), 924_600);
        // tcp_retries2=5: 63 x 200 ms = 12.6 s.
        assert_eq!(m.tcp_model_timeout_ms(5, 50, m.tcp_rto_max()), 12_600);
        // tcp_rto_max_ms=1000 shortens it (measured 4.67 s total with rto_min lowered).
        assert_eq!(m.tcp_model_timeout_ms(5, 50, 250), 4_400);
    }
}
