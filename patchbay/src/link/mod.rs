//! Link conditions: delay, jitter, loss, duplication, reordering and rate
//! limits on a node's interface, with named presets. Pure types and
//! validation, and their rendering into `tc` arguments; the kernel layer
//! applies them.
//!
//! Kernel requirements: rate limits alone use the `tbf` qdisc
//! (`CONFIG_NET_SCH_TBF`); anything else (delay, jitter, loss, duplication,
//! reordering) needs `netem` (`CONFIG_NET_SCH_NETEM`). Applying a condition
//! that needs netem on a kernel without it fails with
//! [`crate::Error::KernelFeature`].

mod tc;
pub mod units;

pub(crate) use tc::{TcCmd, qdisc_of, render_tc};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use units::UnitError;

/// Invalid link-condition input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A percentage outside 0..=100.
    #[error("{field} = {value}% is out of range: it must be between 0% and 100%")]
    PercentOutOfRange {
        /// `loss`, `duplicate`, `reorder` or `corrupt`.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// No preset by that name.
    #[error(
        "unknown link preset {0:?}: use one of lan, wifi, wifi-bad, 4g (mobile-4g, mobile), 3g (mobile-3g), satellite, satellite-geo, or a table of values"
    )]
    UnknownPreset(String),
    /// A queue depth without a rate limit to queue behind.
    #[error("queue needs a rate: the queue is the rate limiter's; set `rate` too")]
    QueueNeedsRate,
    /// Jitter or reordering needs a base delay.
    #[error("{0} needs a delay: set `delay` too (netem varies or reorders around a base delay)")]
    NeedsDelay(&'static str),
    /// A unit could not be parsed.
    #[error(transparent)]
    Unit(#[from] UnitError),
}

/// Named link presets. The numbers (one way, applied to each direction of
/// the link) are documented in `docs/nat-and-links.md` and on
/// [`Preset::condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Preset {
    /// Gigabit Ethernet: 1 gbit/s, no added delay (works without netem).
    Lan,
    /// Home Wi-Fi: 3 ms ± 2 ms, 0.2 % loss, 100 mbit/s.
    Wifi,
    /// LTE: 30 ms ± 10 ms, 0.5 % loss, 30 mbit/s.
    #[serde(rename = "4g")]
    FourG,
    /// UMTS: 100 ms ± 30 ms, 1 % loss, 2 mbit/s.
    #[serde(rename = "3g")]
    ThreeG,
    /// Geostationary satellite: 300 ms ± 20 ms, 0.5 % loss, 10 mbit/s.
    Satellite,
    /// Congested 2.4 GHz Wi-Fi (upstream's `WifiBad`): 40 ms ± 15 ms,
    /// 2 % loss, 20 mbit/s.
    WifiBad,
    /// Upstream's GEO satellite (`SatelliteGeo`): 300 ms ± 20 ms,
    /// 0.5 % loss, 25 mbit/s.
    SatelliteGeo,
}

impl Preset {
    /// Every preset, in a stable order.
    pub const ALL: [Preset; 7] = [
        Preset::Lan,
        Preset::Wifi,
        Preset::FourG,
        Preset::ThreeG,
        Preset::Satellite,
        Preset::WifiBad,
        Preset::SatelliteGeo,
    ];

    /// The preset's name as written in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Lan => "lan",
            Preset::Wifi => "wifi",
            Preset::FourG => "4g",
            Preset::ThreeG => "3g",
            Preset::Satellite => "satellite",
            Preset::WifiBad => "wifi-bad",
            Preset::SatelliteGeo => "satellite-geo",
        }
    }

    /// The preset's values (per direction).
    pub fn condition(self) -> LinkCondition {
        let ms = Duration::from_millis;
        let c = LinkCondition::default();
        match self {
            Preset::Lan => c.rate(1_000_000_000),
            Preset::Wifi => c.delay(ms(3)).jitter(ms(2)).loss(0.2).rate(100_000_000),
            Preset::FourG => c.delay(ms(30)).jitter(ms(10)).loss(0.5).rate(30_000_000),
            Preset::ThreeG => c.delay(ms(100)).jitter(ms(30)).loss(1.0).rate(2_000_000),
            Preset::Satellite => c.delay(ms(300)).jitter(ms(20)).loss(0.5).rate(10_000_000),
            Preset::WifiBad => c.delay(ms(40)).jitter(ms(15)).loss(2.0).rate(20_000_000),
            Preset::SatelliteGeo => c.delay(ms(300)).jitter(ms(20)).loss(0.5).rate(25_000_000),
        }
    }
}

impl FromStr for Preset {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        // Upstream patchbay's names are accepted as aliases.
        let alias = match s.trim().to_ascii_lowercase().as_str() {
            "mobile-4g" | "mobile" => Some(Preset::FourG),
            "mobile-3g" => Some(Preset::ThreeG),
            _ => None,
        };
        alias
            .or_else(|| {
                Preset::ALL
                    .into_iter()
                    .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            })
            .ok_or_else(|| LinkError::UnknownPreset(s.to_string()))
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The conditions of one direction of a link (a node interface's egress,
/// and the same on the peer's end). `LinkCondition::default()` is a clean
/// link (no qdisc).
///
/// In TOML either a preset name (`link = "wifi"`) or a table whose values
/// override an optional preset:
/// `link = { preset = "4g", delay = "1500us", loss = "2%", rate = "5mbit" }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LinkCondition {
    /// Added one-way delay (microsecond precision).
    #[serde(with = "units::duration")]
    pub delay: Duration,
    /// Random variation of the delay (± jitter), needs `delay`.
    #[serde(with = "units::duration")]
    pub jitter: Duration,
    /// Packet loss in percent (0..=100).
    pub loss: f64,
    /// Duplicated packets in percent (0..=100).
    pub duplicate: f64,
    /// Reordered packets in percent (0..=100): sent at once instead of
    /// after `delay`. Needs `delay`.
    pub reorder: f64,
    /// Corrupted packets in percent (0..=100): netem flips a random bit, so
    /// checksums fail and receivers drop the packet.
    pub corrupt: f64,
    /// Rate limit in bits per second.
    #[serde(with = "units::opt_rate", skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Mean length of a loss burst, in packets. `None` (or below 2): every packet is lost
    /// independently with probability `loss`. `Some(n)`: losses come in bursts of mean length
    /// `n` (the Gilbert-Elliott model, netem `loss gemodel`), as on radio links that fade,
    /// while the long-run rate stays `loss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_burst: Option<u32>,
    /// How long a packet may wait in the rate limiter's queue before it is dropped (a `tbf`
    /// queue of `latency` = this), so that a congested link loses packets the way a real
    /// bottleneck does. Only with `rate`. `None`: netem's own rate limiting (a deep queue),
    /// or 50 ms for a rate limit alone.
    #[serde(with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub queue: Option<Duration>,
}

/// The time-related part of a [`LinkCondition`], for timer compression:
/// at time scale k, delays and jitter are divided by k and rates multiplied
/// by k ([`LinkTiming::scaled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkTiming {
    /// One-way delay in microseconds.
    pub delay_us: u64,
    /// Jitter in microseconds.
    pub jitter_us: u64,
    /// Rate in bits per second, if limited.
    pub rate_bps: Option<u64>,
    /// The rate limiter's queue depth in microseconds, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_us: Option<u64>,
}

impl LinkTiming {
    /// Time runs `k` times faster: delay and jitter ÷ k, rate × k.
    pub fn scaled(self, k: crate::compress::TimeScale) -> LinkTiming {
        let k = k.get();
        LinkTiming {
            delay_us: (self.delay_us as f64 / k).round() as u64,
            jitter_us: (self.jitter_us as f64 / k).round() as u64,
            rate_bps: self
                .rate_bps
                .map(|r| (r as f64 * k).round().max(1.0) as u64),
            // The queue holds the same bytes: its time ÷ k at a rate × k.
            queue_us: self
                .queue_us
                .map(|q| ((q as f64 / k).round() as u64).max(1)),
        }
    }
}

impl LinkCondition {
    /// The values of a preset.
    pub fn preset(name: &str) -> Result<LinkCondition, LinkError> {
        Ok(name.parse::<Preset>()?.condition())
    }

    /// Sets the one-way delay.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, d: Duration) -> Self {
        self.jitter = d;
        self
    }

    /// Sets the loss in percent.
    pub fn loss(mut self, percent: f64) -> Self {
        self.loss = percent;
        self
    }

    /// Sets the duplication in percent.
    pub fn duplicate(mut self, percent: f64) -> Self {
        self.duplicate = percent;
        self
    }

    /// Sets the reordering in percent.
    pub fn reorder(mut self, percent: f64) -> Self {
        self.reorder = percent;
        self
    }

    /// Sets the corruption in percent.
    pub fn corrupt(mut self, percent: f64) -> Self {
        self.corrupt = percent;
        self
    }

    /// Sets the rate limit in bits per second.
    pub fn rate(mut self, bps: u64) -> Self {
        self.rate = Some(bps);
        self
    }

    /// Makes losses come in bursts of mean length `packets` (see
    /// [`LinkCondition::loss_burst`]).
    pub fn loss_burst(mut self, packets: u32) -> Self {
        self.loss_burst = Some(packets);
        self
    }

    /// Sets the rate limiter's queue depth (see [`LinkCondition::queue`]).
    pub fn queue(mut self, d: Duration) -> Self {
        self.queue = Some(d);
        self
    }

    /// Checks ranges and dependencies, naming the bad field.
    pub fn validate(&self) -> Result<(), LinkError> {
        for (field, value) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=100.0).contains(&value) {
                return Err(LinkError::PercentOutOfRange { field, value });
            }
        }
        if self.delay.is_zero() {
            if !self.jitter.is_zero() {
                return Err(LinkError::NeedsDelay("jitter"));
            }
            if self.reorder > 0.0 {
                return Err(LinkError::NeedsDelay("reorder"));
            }
        }
        if self.rate == Some(0) {
            return Err(LinkError::Unit(UnitError::BadRate("0".into())));
        }
        if self.queue.is_some() && self.rate.is_none() {
            return Err(LinkError::QueueNeedsRate);
        }
        Ok(())
    }

    /// Whether this condition needs `netem` (anything but a rate limit).
    pub(crate) fn needs_netem(&self) -> bool {
        !self.delay.is_zero()
            || !self.jitter.is_zero()
            || self.loss > 0.0
            || self.duplicate > 0.0
            || self.reorder > 0.0
            || self.corrupt > 0.0
    }

    /// Whether this is a clean link (nothing to shape).
    pub fn is_clean(&self) -> bool {
        !self.needs_netem() && self.rate.is_none()
    }

    /// The time-related values.
    pub(crate) fn timing(&self) -> LinkTiming {
        LinkTiming {
            delay_us: self.delay.as_micros() as u64,
            jitter_us: self.jitter.as_micros() as u64,
            rate_bps: self.rate,
            queue_us: self.queue.map(|q| q.as_micros() as u64),
        }
    }

    /// A copy with the time-related values replaced.
    pub(crate) fn with_timing(&self, t: LinkTiming) -> LinkCondition {
        LinkCondition {
            delay: Duration::from_micros(t.delay_us),
            jitter: Duration::from_micros(t.jitter_us),
            rate: t.rate_bps,
            queue: t.queue_us.map(Duration::from_micros),
            ..self.clone()
        }
    }
}

impl FromStr for LinkCondition {
    type Err = LinkError;
    /// A preset name.
    fn from_str(s: &str) -> Result<Self, LinkError> {
        LinkCondition::preset(s)
    }
}

/// The table form in TOML: an optional base preset plus overrides.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Table {
    preset: Option<String>,
    #[serde(default, with = "units::opt_duration")]
    delay: Option<Duration>,
    #[serde(default, with = "units::opt_duration")]
    jitter: Option<Duration>,
    #[serde(default, deserialize_with = "opt_percent")]
    loss: Option<f64>,
    #[serde(default, deserialize_with = "opt_percent")]
    duplicate: Option<f64>,
    #[serde(default, deserialize_with = "opt_percent")]
    reorder: Option<f64>,
    #[serde(default, deserialize_with = "opt_percent")]
    corrupt: Option<f64>,
    #[serde(default, with = "units::opt_rate")]
    rate: Option<u64>,
    #[serde(default)]
    loss_burst: Option<u32>,
    #[serde(default, with = "units::opt_duration")]
    queue: Option<Duration>,
}

fn opt_percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    units::percent::deserialize(d).map(Some)
}

impl Table {
    fn into_condition(self) -> Result<LinkCondition, LinkError> {
        let mut c = match &self.preset {
            Some(p) => LinkCondition::preset(p)?,
            None => LinkCondition::default(),
        };
        c.delay = self.delay.unwrap_or(c.delay);
        c.jitter = self.jitter.unwrap_or(c.jitter);
        c.loss = self.loss.unwrap_or(c.loss);
        c.duplicate = self.duplicate.unwrap_or(c.duplicate);
        c.reorder = self.reorder.unwrap_or(c.reorder);
        c.corrupt = self.corrupt.unwrap_or(c.corrupt);
        c.rate = self.rate.or(c.rate);
        c.loss_burst = self.loss_burst.or(c.loss_burst);
        c.queue = self.queue.or(c.queue);
        c.validate()?;
        Ok(c)
    }
}

impl<'de> Deserialize<'de> for LinkCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LinkCondition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a link preset name (lan, wifi, wifi-bad, 4g, 3g, satellite, satellite-geo) or a table")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LinkCondition, E> {
                LinkCondition::preset(v).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LinkCondition, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                t.into_condition().map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
