//! Durations in lab files: `"150ms"`, `"2s"` or plain seconds.

use std::time::Duration;

use crate::{InvalidLab, InvalidReason};

/// Parses durations like `1500us`, `150ms`, `2s`, `1.5s`, `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, InvalidLab> {
    let bad = |reason, msg: String| InvalidLab::new("duration", reason, msg);
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| {
        bad(
            InvalidReason::OutOfRange,
            format!("invalid duration {s:?}: expected e.g. \"150ms\", \"2s\""),
        )
    })?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad(
            InvalidReason::OutOfRange,
            format!("invalid duration {s:?}: must be a non-negative number with a unit"),
        ));
    }
    let secs = match unit.trim() {
        "ns" => v / 1e9,
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" | "" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => {
            return Err(bad(
                InvalidReason::Unknown,
                format!("invalid duration {s:?}: unknown unit {u:?} (use ns, us, ms, s, m, h)"),
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

pub(super) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Text(s)) => super::parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(Raw::Secs(v)) if v.is_finite() && v >= 0.0 => Ok(Some(Duration::from_secs_f64(v))),
            Some(Raw::Secs(v)) => Err(serde::de::Error::custom(format!(
                "invalid duration {v}: must be >= 0"
            ))),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1500us").unwrap(),
            Duration::from_micros(1500)
        );
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("abc").is_err());
    }
}
