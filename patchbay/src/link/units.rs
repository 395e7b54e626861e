//! Parsing of the human units used in configuration: durations (`"150ms"`,
//! `"1500us"`, `"2s"`), rates (`"10mbit"`, `"1gbit"`) and percentages
//! (`"0.5%"` or a bare number of percent). Pure functions, no kernel.
//!
//! The [`serde`] helpers in [`duration`], [`opt_duration`] and [`opt_rate`]
//! let configuration types embed these strings in TOML.

use std::time::Duration;

/// A value that could not be parsed, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// A negative duration such as `"-5ms"`.
    #[error("negative duration {0:?}: durations must be >= 0 (e.g. \"5ms\")")]
    NegativeDuration(String),
    /// Not a duration.
    #[error(
        "invalid duration {0:?}: write a number followed by a unit: ns, us, ms, s, m or h (e.g. \"150ms\", \"1500us\")"
    )]
    BadDuration(String),
    /// Not a rate.
    #[error(
        "invalid rate {0:?}: write a number followed by bit, kbit, mbit or gbit (per second), e.g. \"10mbit\""
    )]
    BadRate(String),
    /// Not a percentage.
    #[error("invalid percentage {0:?}: write a number of percent, e.g. \"0.5%\" or 0.5")]
    BadPercent(String),
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let n: f64 = num.parse().ok()?;
    n.is_finite().then_some((n, unit.trim()))
}

/// Parses a duration: `"150ms"`, `"1500us"`, `"2.5s"`, `"0"`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(UnitError::NegativeDuration(s.to_string()));
    }
    let bad = || UnitError::BadDuration(s.to_string());
    let (n, unit) = split_number(t).ok_or_else(bad)?;
    let nanos = match unit {
        "ns" => n,
        "us" | "µs" => n * 1e3,
        "ms" => n * 1e6,
        "s" => n * 1e9,
        "m" | "min" => n * 60e9,
        "h" => n * 3600e9,
        "" if n == 0.0 => 0.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Renders a duration in the largest unit that keeps it exact (`"1500us"`,
/// `"150ms"`, `"30s"`), as `tc` and `nft` accept it.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if !d.subsec_nanos().is_multiple_of(1000) {
        format!("{}ns", d.as_nanos())
    } else if us == 0 {
        "0us".into()
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// Parses a rate in bits per second: `"10mbit"`, `"1.5mbit"`, `"64kbit"`.
/// SI prefixes (1 kbit = 1000 bit), as `tc` uses them.
pub fn parse_rate(s: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::BadRate(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let (n, unit) = split_number(&t).ok_or_else(bad)?;
    let mult = match unit.trim_end_matches("ps").trim_end_matches("/s") {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(bad()),
    };
    let bps = (n * mult).round();
    if bps < 1.0 {
        return Err(bad());
    }
    Ok(bps as u64)
}

/// Renders a rate for `tc` in bits per second (`"10000000bit"`).
pub fn fmt_rate(bps: u64) -> String {
    format!("{bps}bit")
}

/// Parses a percentage: `"0.5%"`, `"0.5"`. Range is checked by the caller.
pub fn parse_percent(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    t.parse::<f64>()
        .ok()
        .filter(|p| p.is_finite())
        .ok_or_else(|| UnitError::BadPercent(s.to_string()))
}

/// Serde helper for a [`Duration`] written as a string (`"150ms"`).
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes as `"150ms"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_duration(*d))
    }

    /// Deserializes from `"150ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde helper for an `Option<Duration>` written as a string.
pub mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes `Some` as `"150ms"`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::fmt_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from `"150ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Serde helper for an `Option<u64>` rate in bit/s written as `"10mbit"`.
pub mod opt_rate {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` as `"<n>bit"`.
    pub fn serialize<S: Serializer>(r: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => s.serialize_str(&super::fmt_rate(*r)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes from `"10mbit"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rate(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Serde helper for a percentage written as `"0.5%"` or a bare number.
pub mod percent {
    use serde::Deserializer;
    use serde::de::{self, Visitor};

    struct V;
    impl Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a percentage such as \"0.5%\" or 0.5")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            super::parse_percent(v).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
    }

    /// Deserializes from `"0.5%"`, `"0.5"` or `0.5`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_render() {
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(matches!(
            parse_duration("-5ms"),
            Err(UnitError::NegativeDuration(_))
        ));
        assert!(matches!(
            parse_duration("5"),
            Err(UnitError::BadDuration(_))
        ));
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(UnitError::BadDuration(_))
        ));
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(fmt_duration(Duration::from_millis(150)), "150ms");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::ZERO), "0us");
    }

    #[test]
    fn rates_and_percentages_parse() {
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1.5Mbit"), Ok(1_500_000));
        assert_eq!(parse_rate("64kbit"), Ok(64_000));
        assert!(parse_rate("10mb").is_err());
        assert!(parse_rate("0mbit").is_err());
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert_eq!(parse_percent("3"), Ok(3.0));
        assert!(parse_percent("lots").is_err());
    }
}
