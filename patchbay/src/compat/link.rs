//! Upstream 0.7's link conditions (millisecond fields, `const` setters, named presets) and
//! their translation into the core's [`crate::native::LinkCondition`] (microseconds, bits/s).
//!
//! Translation, field by field: `latency_ms` → delay, `jitter_ms` → jitter, `loss_pct` →
//! loss, `loss_burst_pkts` → loss bursts (Gilbert-Elliott), `rate_kbit` → rate with a rate
//! limiter queue of `buffer_ms` (400 ms when unset, upstream's default), `reorder_pct`,
//! `duplicate_pct`, `corrupt_pct` as they are. Percentages are rounded to 6 decimals (they
//! are `f32` upstream).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rate limiter's queue depth when [`LinkCondition::buffer_ms`] is unset (upstream's).
const DEFAULT_BUFFER_MS: u32 = 400;
/// The mean loss burst [`LinkCondition::bursty_loss`] selects (upstream's).
const DEFAULT_LOSS_BURST_PKTS: u32 = 5;

/// Which side of a device interface a condition applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkDirection {
    /// Both directions.
    #[default]
    Both,
    /// What the device sends.
    Egress,
    /// What the device receives.
    Ingress,
}

impl LinkDirection {
    pub(crate) fn to_core(self) -> crate::Direction {
        match self {
            LinkDirection::Both => crate::Direction::Both,
            LinkDirection::Egress => crate::Direction::Out,
            LinkDirection::Ingress => crate::Direction::In,
        }
    }
}

/// A link impairment: rate, latency, jitter, loss (independent or bursty), reordering,
/// duplication, corruption. Presets and `const` setters as upstream's; applied by the core
/// with netem (delay, loss, …) and tbf (the rate limiter and its queue).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[non_exhaustive]
pub struct LinkCondition {
    /// Rate cap in kbit/s (`None`: uncapped).
    pub rate_kbit: Option<u32>,
    /// One-way latency in milliseconds.
    pub latency_ms: u32,
    /// Jitter in milliseconds.
    pub jitter_ms: u32,
    /// Loss in percent.
    pub loss_pct: f32,
    /// Mean loss burst in packets (`None`: independent loss).
    pub loss_burst_pkts: Option<u32>,
    /// The rate limiter's queue depth in milliseconds (`None`: 400 ms).
    pub buffer_ms: Option<u32>,
    /// Reordering in percent.
    pub reorder_pct: f32,
    /// Duplication in percent.
    pub duplicate_pct: f32,
    /// Corruption in percent.
    pub corrupt_pct: f32,
    /// A name for events and the web view (not part of equality).
    pub label: Option<&'static str>,
}

impl PartialEq for LinkCondition {
    fn eq(&self, o: &Self) -> bool {
        (
            self.rate_kbit,
            self.latency_ms,
            self.jitter_ms,
            self.loss_burst_pkts,
            self.buffer_ms,
        ) == (
            o.rate_kbit,
            o.latency_ms,
            o.jitter_ms,
            o.loss_burst_pkts,
            o.buffer_ms,
        ) && (
            self.loss_pct,
            self.reorder_pct,
            self.duplicate_pct,
            self.corrupt_pct,
        ) == (o.loss_pct, o.reorder_pct, o.duplicate_pct, o.corrupt_pct)
    }
}

macro_rules! preset {
    ($(#[$doc:meta])* $name:ident, $label:literal, $rate:expr, $lat:expr, $jit:expr, $loss:expr, $burst:expr, $buf:expr) => {
        $(#[$doc])*
        pub const fn $name() -> Self {
            Self {
                rate_kbit: $rate,
                latency_ms: $lat,
                jitter_ms: $jit,
                loss_pct: $loss,
                loss_burst_pkts: $burst,
                buffer_ms: $buf,
                label: Some($label),
                ..Self::new()
            }
        }
    };
}

impl LinkCondition {
    /// An unimpaired link.
    pub const fn new() -> Self {
        Self {
            rate_kbit: None,
            latency_ms: 0,
            jitter_ms: 0,
            loss_pct: 0.0,
            loss_burst_pkts: None,
            buffer_ms: None,
            reorder_pct: 0.0,
            duplicate_pct: 0.0,
            corrupt_pct: 0.0,
            label: None,
        }
    }

    preset!(
        /// Wired LAN: 1 ms one way.
        lan, "lan", None, 1, 0, 0.0, None, None
    );
    preset!(
        /// Good 5 GHz Wi-Fi: 200 Mbit, 4 ms ± 2 ms, 0.1 % bursty loss, 15 ms queue.
        wifi, "wifi", Some(200_000), 4, 2, 0.1, Some(5), Some(15)
    );
    preset!(
        /// Congested 2.4 GHz Wi-Fi: 25 Mbit, 25 ms ± 15 ms, 1.5 % bursty loss, 60 ms queue.
        wifi_bad, "wifi-bad", Some(25_000), 25, 15, 1.5, Some(8), Some(60)
    );
    preset!(
        /// LTE with good signal: 40 Mbit, 25 ms ± 10 ms, 0.3 % bursty loss, 100 ms queue.
        mobile_4g, "mobile-4g", Some(40_000), 25, 10, 0.3, Some(6), Some(100)
    );
    preset!(
        /// 3G: 3 Mbit, 80 ms ± 25 ms, 0.5 % bursty loss, 250 ms queue.
        mobile_3g, "mobile-3g", Some(3_000), 80, 25, 0.5, Some(6), Some(250)
    );
    preset!(
        /// Low-earth-orbit satellite: 100 Mbit, 22 ms ± 10 ms, 0.5 % bursty loss, 50 ms queue.
        satellite, "satellite", Some(100_000), 22, 10, 0.5, Some(4), Some(50)
    );
    preset!(
        /// Geostationary satellite: 25 Mbit, 300 ms ± 20 ms, 0.3 % bursty loss, 600 ms queue.
        satellite_geo, "satellite-geo", Some(25_000), 300, 20, 0.3, Some(4), Some(600)
    );

    /// The preset of a name (`lan`, `wifi`, `wifi-bad`, `mobile-4g`/`mobile`, `mobile-3g`,
    /// `satellite`, `satellite-geo`).
    pub fn from_preset_name(name: &str) -> Option<Self> {
        Some(match name {
            "lan" => Self::lan(),
            "wifi" => Self::wifi(),
            "wifi-bad" => Self::wifi_bad(),
            "mobile-4g" | "mobile" => Self::mobile_4g(),
            "mobile-3g" => Self::mobile_3g(),
            "satellite" => Self::satellite(),
            "satellite-geo" => Self::satellite_geo(),
            _ => return None,
        })
    }

    /// Rate cap in kbit/s.
    pub const fn rate_kbit(mut self, kbit: u32) -> Self {
        self.rate_kbit = Some(kbit);
        self
    }

    /// Rate cap in Mbit/s.
    pub const fn rate_mbit(mut self, mbit: u32) -> Self {
        self.rate_kbit = Some(mbit * 1_000);
        self
    }

    /// No rate cap.
    pub const fn uncapped(mut self) -> Self {
        self.rate_kbit = None;
        self
    }

    /// One-way latency.
    pub const fn latency_ms(mut self, ms: u32) -> Self {
        self.latency_ms = ms;
        self
    }

    /// Jitter.
    pub const fn jitter_ms(mut self, ms: u32) -> Self {
        self.jitter_ms = ms;
        self
    }

    /// Latency from a round-trip time (half of it each way), and a queue of one round trip
    /// if none is set yet.
    pub const fn rtt_ms(mut self, rtt: u32) -> Self {
        self.latency_ms = rtt / 2;
        if self.buffer_ms.is_none() {
            self.buffer_ms = Some(rtt);
        }
        self
    }

    /// Bursty loss of `pct` percent, in bursts of 5 packets on average.
    pub const fn bursty_loss(mut self, pct: f32) -> Self {
        self.loss_pct = pct;
        self.loss_burst_pkts = Some(DEFAULT_LOSS_BURST_PKTS);
        self
    }

    /// Independent loss of `pct` percent.
    pub const fn random_loss(mut self, pct: f32) -> Self {
        self.loss_pct = pct;
        self.loss_burst_pkts = None;
        self
    }

    /// Loss percentage (the loss model stays).
    pub const fn loss_pct(mut self, pct: f32) -> Self {
        self.loss_pct = pct;
        self
    }

    /// Mean loss burst in packets (bursty loss).
    pub const fn loss_burst_pkts(mut self, pkts: u32) -> Self {
        self.loss_burst_pkts = Some(pkts);
        self
    }

    /// The rate limiter's queue depth.
    pub const fn buffer_ms(mut self, ms: u32) -> Self {
        self.buffer_ms = Some(ms);
        self
    }

    /// Reordering percentage.
    pub const fn reorder_pct(mut self, pct: f32) -> Self {
        self.reorder_pct = pct;
        self
    }

    /// Duplication percentage.
    pub const fn duplicate_pct(mut self, pct: f32) -> Self {
        self.duplicate_pct = pct;
        self
    }

    /// Corruption percentage.
    pub const fn corrupt_pct(mut self, pct: f32) -> Self {
        self.corrupt_pct = pct;
        self
    }

    /// A name for events and the web view.
    pub const fn label(mut self, label: &'static str) -> Self {
        self.label = Some(label);
        self
    }

    /// The core condition (see the module docs for the translation).
    pub(crate) fn to_core(self) -> crate::native::LinkCondition {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let pct = |v: f32| (f64::from(v) * 1e6).round() / 1e6;
        let mut c = crate::native::LinkCondition::default()
            .delay(ms(self.latency_ms))
            .jitter(ms(self.jitter_ms))
            .loss(pct(self.loss_pct))
            .duplicate(pct(self.duplicate_pct))
            .reorder(pct(self.reorder_pct))
            .corrupt(pct(self.corrupt_pct));
        c.loss_burst = self.loss_burst_pkts;
        if let Some(k) = self.rate_kbit {
            let buffer = self.buffer_ms.unwrap_or(DEFAULT_BUFFER_MS).max(1);
            c = c.rate(u64::from(k) * 1000).queue(ms(buffer));
        }
        c
    }
}

impl<'de> Deserialize<'de> for LinkCondition {
    /// A preset name, or a table of the fields (without `label`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Table(Fields),
        }
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct Fields {
            rate_kbit: Option<u32>,
            latency_ms: u32,
            jitter_ms: u32,
            loss_pct: f32,
            loss_burst_pkts: Option<u32>,
            buffer_ms: Option<u32>,
            reorder_pct: f32,
            duplicate_pct: f32,
            corrupt_pct: f32,
        }
        match Raw::deserialize(d)? {
            Raw::Name(n) => LinkCondition::from_preset_name(&n).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown link condition preset {n:?}: use lan, wifi, wifi-bad, mobile-4g, mobile-3g, satellite or satellite-geo"
                ))
            }),
            Raw::Table(f) => Ok(LinkCondition {
                rate_kbit: f.rate_kbit,
                latency_ms: f.latency_ms,
                jitter_ms: f.jitter_ms,
                loss_pct: f.loss_pct,
                loss_burst_pkts: f.loss_burst_pkts,
                buffer_ms: f.buffer_ms,
                reorder_pct: f.reorder_pct,
                duplicate_pct: f.duplicate_pct,
                corrupt_pct: f.corrupt_pct,
                label: None,
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// As in iroh's degrade ladder: a `const` array of conditions.
    const LADDER: &[LinkCondition] = &[
        LinkCondition::new()
            .rate_mbit(8)
            .rtt_ms(90)
            .jitter_ms(15)
            .loss_pct(2.0)
            .loss_burst_pkts(8),
        LinkCondition::new()
            .rate_mbit(100)
            .rtt_ms(16)
            .bursty_loss(0.1)
            .label("good-wifi"),
    ];

    #[test]
    fn translates_every_field() {
        let c = LADDER[0].to_core();
        assert_eq!(c.delay, Duration::from_millis(45));
        assert_eq!(c.jitter, Duration::from_millis(15));
        assert_eq!(c.loss, 2.0);
        assert_eq!(c.loss_burst, Some(8));
        assert_eq!(c.rate, Some(8_000_000));
        assert_eq!(
            c.queue,
            Some(Duration::from_millis(90)),
            "rtt_ms sizes the queue"
        );
        let w = LADDER[1].to_core();
        assert_eq!(w.loss, 0.1, "f32 percentages are rounded");
        assert_eq!(w.loss_burst, Some(5));
        c.validate().unwrap();
        let plain = LinkCondition::new().rate_kbit(500).to_core();
        assert_eq!(plain.queue, Some(Duration::from_millis(400)));
        assert!(LinkCondition::new().to_core().is_clean());
    }

    #[test]
    fn presets_and_toml_as_upstream() {
        assert_eq!(
            LinkCondition::from_preset_name("mobile"),
            Some(LinkCondition::mobile_4g())
        );
        assert_eq!(LinkCondition::wifi().rtt_ms(80).buffer_ms, Some(15));
        assert_eq!(LinkCondition::wifi().label, Some("wifi"));
        #[derive(Deserialize)]
        struct D {
            c: LinkCondition,
        }
        let d: D = toml::from_str("c = \"wifi-bad\"").unwrap();
        assert_eq!(d.c, LinkCondition::wifi_bad());
        let d: D = toml::from_str("c = { latency_ms = 20, loss_pct = 1.5 }").unwrap();
        assert_eq!(d.c, LinkCondition::new().latency_ms(20).loss_pct(1.5));
        assert!(toml::from_str::<D>("c = \"dialup\"").is_err());
    }
}
