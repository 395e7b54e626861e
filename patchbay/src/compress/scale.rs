//! The validated time scale `k` and conversions between virtual and wall time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest accepted time scale.
///
/// At HZ=250 a jiffy is 4 ms, so at k = 1000 one jiffy of wall time is 4 s of virtual
/// time: every kernel timer shorter than that collapses to its minimum. Beyond that bound
/// nothing meaningful is left to compress; most TCP timers already clamp long before
/// (see `docs/compression.md`).
pub const MAX_TIME_SCALE: f64 = 1000.0;

/// Why a time scale was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// k was NaN.
    #[error(
        "time scale is NaN: pass a finite number between 1 and {MAX_TIME_SCALE} (1 = real time)"
    )]
    NaN,
    /// k was +inf or -inf.
    #[error(
        "time scale {0} is infinite: pass a finite number between 1 and {MAX_TIME_SCALE} (1 = real time)"
    )]
    Infinite(f64),
    /// k was 0.
    #[error(
        "time scale 0 would stop time: pass a number between 1 and {MAX_TIME_SCALE} (1 = real time)"
    )]
    Zero,
    /// k was negative.
    #[error(
        "time scale {0} is negative: pass a number between 1 and {MAX_TIME_SCALE} (1 = real time)"
    )]
    Negative(f64),
    /// 0 < k < 1: patchbay compresses time, it never stretches it.
    #[error(
        "time scale {0} is below 1: patchbay only compresses time (k >= 1); use 1 for real time"
    )]
    BelowOne(f64),
    /// k above [`MAX_TIME_SCALE`].
    #[error(
        "time scale {0} is above the supported bound {MAX_TIME_SCALE}: kernel timers run on jiffies \
         and collapse to their minimum long before that; pick a smaller k \
         (`patchbay doctor` prints the largest faithful k)"
    )]
    AboveBound(f64),
    /// The text could not be parsed as a number.
    #[error("time scale {text:?} is not a number: pass e.g. `20` or `12.5`")]
    Parse {
        /// The text that was given.
        text: String,
        /// The parser's complaint.
        #[source]
        source: std::num::ParseFloatError,
    },
}

/// A validated time scale `k`: kernel timers inside a lab run `k` times faster.
///
/// Invariant: `1 <= k <= MAX_TIME_SCALE`, finite. Virtual time = wall time x k.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct TimeScale(f64);

impl TimeScale {
    /// Real time (k = 1): nothing is compressed.
    pub(crate) const REAL_TIME: TimeScale = TimeScale(1.0);

    /// Validates `k`.
    pub fn new(k: f64) -> Result<Self, ScaleError> {
        if k.is_nan() {
            return Err(ScaleError::NaN);
        }
        if k.is_infinite() {
            return Err(ScaleError::Infinite(k));
        }
        if k == 0.0 {
            return Err(ScaleError::Zero);
        }
        if k < 0.0 {
            return Err(ScaleError::Negative(k));
        }
        if k < 1.0 {
            return Err(ScaleError::BelowOne(k));
        }
        if k > MAX_TIME_SCALE {
            return Err(ScaleError::AboveBound(k));
        }
        Ok(TimeScale(k))
    }

    /// The factor k.
    pub fn get(self) -> f64 {
        self.0
    }

    /// True for k = 1.
    pub(crate) fn is_real_time(self) -> bool {
        self.0 == 1.0
    }

    /// k x 1000, rounded, as carried in the eBPF settings map (`scale_milli`).
    pub(crate) fn milli(self) -> u32 {
        // k <= 1000, so k * 1000 <= 1e6 fits a u32.
        (self.0 * 1000.0).round() as u32
    }

    /// The wall-clock duration that corresponds to `virtual_time` in the lab.
    pub(crate) fn to_wall(self, virtual_time: Duration) -> Duration {
        virtual_time.div_f64(self.0)
    }

    /// The virtual duration that corresponds to `wall` of real time.
    pub(crate) fn to_virtual(self, wall: Duration) -> Duration {
        wall.mul_f64(self.0)
    }

    /// `value / k` as a float (the target of a timer whose real-time value is `value`).
    pub(crate) fn divide(self, value: f64) -> f64 {
        value / self.0
    }
}

impl Default for TimeScale {
    fn default() -> Self {
        Self::REAL_TIME
    }
}

impl TryFrom<f64> for TimeScale {
    type Error = ScaleError;

    fn try_from(k: f64) -> Result<Self, Self::Error> {
        Self::new(k)
    }
}

impl From<TimeScale> for f64 {
    fn from(k: TimeScale) -> f64 {
        k.0
    }
}

impl FromStr for TimeScale {
    type Err = ScaleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let k: f64 = text.trim().parse().map_err(|source| ScaleError::Parse {
            text: text.to_string(),
            source,
        })?;
        Self::new(k)
    }
}

impl fmt::Display for TimeScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_range() {
        for k in [1.0, 1.5, 20.0, MAX_TIME_SCALE] {
            assert_eq!(TimeScale::new(k).map(TimeScale::get), Ok(k));
        }
    }

    #[test]
    fn rejects_bad_values_with_typed_errors() {
        assert_eq!(TimeScale::new(0.0), Err(ScaleError::Zero));
        assert_eq!(TimeScale::new(-3.0), Err(ScaleError::Negative(-3.0)));
        assert_eq!(TimeScale::new(f64::NAN), Err(ScaleError::NaN));
        assert_eq!(
            TimeScale::new(f64::INFINITY),
            Err(ScaleError::Infinite(f64::INFINITY))
        );
        assert_eq!(TimeScale::new(0.5), Err(ScaleError::BelowOne(0.5)));
        assert_eq!(TimeScale::new(1000.5), Err(ScaleError::AboveBound(1000.5)));
        let err = "abc".parse::<TimeScale>().expect_err("not a number");
        assert!(err.to_string().contains("not a number"), "{err}");
        assert!(ScaleError::Zero.to_string().contains("between 1 and"));
    }

    #[test]
    fn converts_durations() {
        let k = TimeScale::new(20.0).expect("valid");
        assert_eq!(
            k.to_wall(Duration::from_secs(30)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            k.to_virtual(Duration::from_millis(1500)),
            Duration::from_secs(30)
        );
        assert_eq!(k.milli(), 20_000);
    }

    #[test]
    fn serde_validates() {
        let k: TimeScale = serde_json::from_str("12.5").expect("valid");
        assert_eq!(k.get(), 12.5);
        assert!(serde_json::from_str::<TimeScale>("0").is_err());
        assert_eq!(serde_json::to_string(&k).expect("serializes"), "12.5");
    }
}
